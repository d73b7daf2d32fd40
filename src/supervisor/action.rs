//! Outputs of the state machine: what the shell must do.

use super::epoch::Phase;
use super::event::{Event, FailureReason, Millis, ProcessExit, Trigger};

/// Which signal to send when stopping a process group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: ask politely.
    Term,
    /// SIGKILL: no more waiting.
    Kill,
}

/// Everything the shell needs to start one epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// baton's epoch number: unique, increasing, names `envoy-rev<N>.json`.
    pub epoch: u32,
    /// The hot-restart chain (Envoy: one base id). Always 0 for the generic driver.
    pub chain: u32,
    /// Envoy's `--restart-epoch`: 0 for the first epoch of a chain.
    pub restart_epoch: u32,
}

/// Something worth telling the operator; the shell logs it. What is counted is
/// counted by the core itself ([`super::Counts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A trigger arrived before the restart in flight read its inputs: that restart
    /// covers it.
    Joined { trigger: Trigger, epoch: u32 },
    /// A trigger was folded into the restart already in flight.
    Coalesced { trigger: Trigger },
    /// The triggers folded into the follow-up were companions of `epoch`, and the
    /// inputs are still what it read: it covers them, no follow-up runs.
    Covered { trigger: Trigger, epoch: u32 },
    /// A restart waits until `draining` has had its drain period.
    Deferred { trigger: Trigger, draining: u32 },
    /// A restart request that will not be acted on.
    Ignored { trigger: Trigger, why: &'static str },
    /// A restart was requested; it starts now.
    RestartStarted {
        epoch: u32,
        trigger: Option<Trigger>,
    },
    /// `epoch` now serves; `replaced` are the epochs it took over from.
    Serving {
        epoch: u32,
        pid: u32,
        replaced: Vec<u32>,
        /// What asked for it (`None`: the first epoch, or a crash recovery).
        trigger: Option<Trigger>,
        /// From the first trigger to serving.
        restart_ms: Millis,
        /// From spawn to serving.
        startup_ms: Millis,
    },
    /// A new epoch was refused or failed; the serving one (if any) is untouched.
    RestartFailed {
        epoch: u32,
        reason: FailureReason,
        message: String,
    },
    /// `POST /drain`: readiness is 503 from now on; `serving` (if any) goes on
    /// serving what it has until SIGTERM.
    Drained { serving: Option<u32> },
    /// baton gives up and exits with `code`: the epoch that failed never served,
    /// or the crash budget ran out.
    GivingUp { code: i32, why: String },
    /// Envoy: the serving epoch was terminated by its starting child before baton
    /// saw the child ready; the child takes over when it is.
    HandedOverEarly { epoch: u32, child: u32 },
    /// A draining epoch died (killed, out of memory) while its child still needed
    /// it; baton stands in for it.
    ParentDied {
        epoch: u32,
        status: ProcessExit,
        child: u32,
    },
    /// The serving epoch died.
    Crashed {
        epoch: u32,
        status: ProcessExit,
        crashes: u32,
        retry_in: Option<Millis>,
    },
    /// An epoch's process ended (any cause).
    Exited {
        epoch: u32,
        pid: u32,
        status: ProcessExit,
        /// What it was when it ended.
        role: Phase,
        /// How long its process ran.
        ran_ms: Millis,
    },
    /// The chain's shared memory was repaired after a failed epoch.
    ChainRepaired { chain: u32 },
    /// The repair did not work; a new chain follows.
    ChainRepairFailed { chain: u32, why: String },
    /// The hot-restart chain can no longer be extended; the next epoch starts a new one.
    ChainAbandoned { chain: u32, why: &'static str },
    /// A watched path cannot be watched: a rotation there would go unnoticed.
    WatchFailed { message: String },
    /// The file watcher watches every path again after a failure.
    WatchRestored,
    /// An in-place certificate rotation of the serving `epoch` begins.
    RotationStarted { rotation: u64, epoch: u32 },
    /// A rotation cannot begin now; it follows once it can.
    RotationWaits { why: &'static str },
    /// A rotation request that will not be acted on.
    RotationIgnored { why: &'static str },
    /// A restart waits for the rotation in progress (one change at a time).
    WaitsForRotation { trigger: Trigger },
    /// `epoch` serves the pairs of the rotation in place; `changed`: `false` when
    /// they were the ones it already served.
    Rotated {
        rotation: u64,
        epoch: u32,
        serials: Vec<String>,
        changed: bool,
        /// From the first request to Envoy confirming the new pairs.
        rotation_ms: Millis,
    },
    /// A rotation was refused or not served; `epoch` keeps serving what it had.
    RotationFailed {
        rotation: u64,
        epoch: u32,
        reason: FailureReason,
        message: String,
    },
}

/// One instruction for the shell. Each is small and independent; the shell runs them
/// in order and reports results back as events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Render and validate the configuration of `epoch`, then answer
    /// `PreflightPassed` or `PreflightFailed`. `serving_pid` is the process of the
    /// epoch that serves meanwhile, whose memory tells what a second proxy needs
    /// (`None`: nothing serves, nothing to compare with). `trusted`: digests of
    /// configurations that already reached serving; one of them again needs no
    /// proxy validation (every other check still runs).
    Preflight {
        epoch: u32,
        serving_pid: Option<u32>,
        trusted: Vec<String>,
    },
    /// A follow-up will read the inputs later: the driver may prepare now what its
    /// preflight will need (Envoy: validate the bootstrap as it renders now), so the
    /// wait for the restart in flight or a drain overlaps that work. No answer.
    Warm,
    /// Read the inputs as they are now and answer `InputsChecked` with the digest of
    /// the configuration a restart would run with (`None`: the driver cannot tell).
    /// Nothing is written or started.
    CheckInputs { epoch: u32 },
    /// Start the process; answer `Spawned` or `SpawnFailed`, and later `Exited`.
    Spawn(Launch),
    /// Watch readiness of the started epoch, bounded by `--ready-timeout`; answer
    /// `Ready` or `NotReady`.
    WatchReady { epoch: u32, pid: u32 },
    /// Generic driver: send the drain signal to the old epoch's process group.
    Drain { epoch: u32, pid: u32 },
    /// Send `signal` to the process group of `epoch`.
    Stop {
        epoch: u32,
        pid: u32,
        signal: StopSignal,
    },
    /// Envoy: make the serving epoch's listeners drain gracefully (stop accepting,
    /// ask clients to close) while it goes on serving what it has.
    DrainListeners { epoch: u32, pid: u32 },
    /// Shutdown with `--exit-on-zero-active-connections`: watch the serving epoch's
    /// active downstream connections; answer `ConnectionsDrained` once there are
    /// none.
    WatchConnections { epoch: u32 },
    /// Pass a signal on to a process.
    Forward { pid: u32, signal: i32 },
    /// Feed `event` back into `step` after `after` ms.
    Schedule { after: Millis, event: Event },
    /// The epoch is gone, or was dropped while it prepared (its preflight may still
    /// be writing): remove its files (`envoy-rev<N>.json`).
    Cleanup { epoch: u32 },
    /// Envoy: clear the "initialising" flag a dead new epoch left in the chain's
    /// shared memory; answer `ChainRepaired` or `ChainRepairFailed`.
    RepairChain { chain: u32 },
    /// No epoch of `chain` runs any more: release what the chain held (base id file,
    /// Envoy's shared memory).
    ReleaseChain { chain: u32 },
    /// Envoy: the draining epoch at `restart_epoch` of `chain` died while its child
    /// still talks to it (stats requests, then terminate): answer the child in its
    /// place, so the child does not block and abort on a dead parent.
    StandIn { chain: u32, restart_epoch: u32 },
    /// `--cert-rotation sds`: check the `--cert` pairs and hand them to the serving
    /// `epoch` in place (its SDS resources), then confirm it serves them; answer
    /// `RotationDone` or `RotationFailed` with `rotation`.
    Rotate { rotation: u64, epoch: u32 },
    /// Rotation `rotation` no longer matters (its epoch is gone, or baton shuts
    /// down): stop it wherever it is; no outcome is expected.
    AbandonRotation { rotation: u64 },
    /// Tell the operator.
    Report(Report),
    /// Leave with this exit code.
    Exit { code: i32 },
}
