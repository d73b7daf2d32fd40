//! Inputs of the state machine.

use std::fmt;

/// Milliseconds on the shell's monotonic clock (since baton started).
pub type Millis = u64;

/// What asked for a restart. Kept for reporting and for the status endpoint.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// SIGHUP.
    Signal,
    /// The content of a `--watch` path (or the template, or the static bootstrap)
    /// changed.
    FileChange,
    /// A file of a `--cert` pair changed: a certificate rotation.
    CertChange,
    /// `POST /restart` or `baton restart`.
    Api,
}

impl Trigger {
    /// A watched file changed (debounced already). It may be one the proxy reads by
    /// path, so no digest of baton's tells whether it changed again.
    pub fn is_file(self) -> bool {
        matches!(self, Trigger::FileChange | Trigger::CertChange)
    }

    /// Stable lowercase name for logs and the status endpoint.
    pub fn label(self) -> &'static str {
        match self {
            Trigger::Signal => "signal",
            Trigger::FileChange => "file-change",
            Trigger::CertChange => "cert-change",
            Trigger::Api => "api",
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// One `--cert` pair as a preflight checked it: what an epoch serves. Plain data for
/// the status server (`/epochs`, `baton status`, the expiry metrics).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertInfo {
    /// The certificate file, as given to `--cert`.
    pub path: String,
    /// The leaf's subject (`CN=example.com, O=Example`).
    pub subject: String,
    /// The leaf's serial in upper-case hex, as `openssl x509 -serial` prints it.
    pub serial: String,
    /// Start of the leaf's validity window, Unix seconds.
    pub not_before: i64,
    /// End of the leaf's validity window (notAfter), Unix seconds.
    pub not_after: i64,
}

/// Why a new epoch was not put into service. The label of
/// `restart_failures{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum FailureReason {
    /// The template did not render or the result is not JSON.
    Template,
    /// The proxy's own validation (`envoy --mode validate`) refused the config.
    Config,
    /// A `--cert` pair failed its checks.
    Cert,
    /// A user `--preflight` command failed.
    Preflight,
    /// The container's memory would not hold a second proxy beside the serving one.
    Memory,
    /// The process could not be started at all.
    Spawn,
    /// It did not become ready within `--ready-timeout`.
    NotReady,
    /// It exited before becoming ready.
    Exited,
}

impl FailureReason {
    /// Every reason, so each `restart_failures` series exists from the start.
    pub const ALL: [FailureReason; 8] = [
        FailureReason::Template,
        FailureReason::Config,
        FailureReason::Cert,
        FailureReason::Preflight,
        FailureReason::Memory,
        FailureReason::Spawn,
        FailureReason::NotReady,
        FailureReason::Exited,
    ];

    /// Stable lowercase label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            FailureReason::Template => "template",
            FailureReason::Config => "config",
            FailureReason::Cert => "cert",
            FailureReason::Preflight => "preflight",
            FailureReason::Memory => "memory",
            FailureReason::Spawn => "spawn",
            FailureReason::NotReady => "not_ready",
            FailureReason::Exited => "exited",
        }
    }

    /// Failures found before a process exists: the configuration itself is bad.
    /// (`Memory` is found before too, but is the container's state, not the
    /// configuration's: it passes when the next trigger finds room.)
    pub fn is_config_problem(self) -> bool {
        matches!(
            self,
            FailureReason::Template
                | FailureReason::Config
                | FailureReason::Cert
                | FailureReason::Preflight
        )
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// How a child process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessExit {
    /// `exit(code)`.
    Code(i32),
    /// Killed by signal number `n`.
    Signal(i32),
}

impl ProcessExit {
    /// The shell convention: the code itself, or 128+n when killed by signal n.
    pub fn exit_code(self) -> i32 {
        match self {
            ProcessExit::Code(c) => c,
            ProcessExit::Signal(n) => crate::exit::signalled(n),
        }
    }

    /// `true` for `exit(0)`.
    pub fn success(self) -> bool {
        self == ProcessExit::Code(0)
    }
}

impl fmt::Display for ProcessExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcessExit::Code(c) => write!(f, "exit code {c}"),
            ProcessExit::Signal(n) => write!(f, "killed by signal {n}"),
        }
    }
}

/// One input of [`step`](super::step). The shell turns signals, child exits,
/// finished jobs and fired timers into these; the time it happened travels beside
/// it, as `step`'s `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// baton has started: bring up the first epoch.
    Start,
    /// Something asked for a hot restart.
    RestartRequested(Trigger),
    /// The gather window of `epoch` is over: companion triggers have had their
    /// chance to join; its preflight reads its inputs now.
    GatherElapsed { epoch: u32 },
    /// The preflight of `epoch` (render, validate, checks) passed.
    PreflightPassed {
        epoch: u32,
        /// sha256 of the configuration it will run with.
        config_digest: Option<String>,
        /// The `--cert` pairs it will serve, as checked.
        certs: Vec<CertInfo>,
    },
    /// The answer to `CheckInputs { epoch }`: the digest of the configuration a
    /// restart would run with now (`None`: the driver cannot tell).
    InputsChecked { epoch: u32, digest: Option<String> },
    /// The preflight of `epoch` failed; nothing was started.
    PreflightFailed {
        epoch: u32,
        reason: FailureReason,
        message: String,
    },
    /// The process of `epoch` exists.
    Spawned { epoch: u32, pid: u32 },
    /// The process of `epoch` could not be started; `code` as a shell would exit
    /// (127 not found, 126 not executable, 1 otherwise).
    SpawnFailed {
        epoch: u32,
        message: String,
        code: i32,
    },
    /// `epoch` reported ready.
    Ready { epoch: u32 },
    /// `epoch` did not become ready in time (its process may still run).
    NotReady { epoch: u32, message: String },
    /// The process of `epoch` ended. `last_words`: the last lines it wrote, when
    /// they may say why (for failure messages).
    Exited {
        epoch: u32,
        status: ProcessExit,
        last_words: Option<String>,
    },
    /// The crash backoff timer with this generation fired.
    BackoffElapsed { generation: u64 },
    /// The chain's "initialising" flag was cleared; hot restarts may continue.
    ChainRepaired { chain: u32 },
    /// The chain could not be repaired; the next epoch opens a new one.
    ChainRepairFailed { chain: u32, why: String },
    /// A draining epoch has had its drain period.
    DrainSettled { epoch: u32 },
    /// A draining epoch should have been gone by now.
    DrainDeadline { epoch: u32 },
    /// `POST /drain`: drain the serving epoch without exiting (a preStop hook); later
    /// restarts are ignored, since the pod is going away.
    DrainRequested,
    /// SIGTERM, SIGINT or an API call asked baton to stop. A second one hurries.
    ShutdownRequested,
    /// The termination drain period is over.
    ShutdownDrainElapsed,
    /// `--minimum-drain-duration` has passed since shutdown began.
    MinimumDrainElapsed,
    /// The serving epoch reports no active downstream connections.
    ConnectionsDrained,
    /// Processes still running after the final grace period get SIGKILL.
    ShutdownKillDeadline,
    /// A signal to pass on to the serving epoch (SIGUSR1, SIGUSR2, SIGWINCH).
    Forward { signal: i32 },
    /// A watched path can no longer be watched: its changes go unnoticed until
    /// `WatchRestored`.
    WatchFailed { message: String },
    /// Every watched path is watched again.
    WatchRestored,
    /// `--cert-rotation sds`: a file of a `--cert` pair changed; hand the pair to the
    /// serving epoch in place, without a restart.
    RotationRequested,
    /// The serving epoch serves the pairs of rotation `rotation` (Envoy's admin
    /// `/certs` confirmed them). `changed`: `false` when they were already served.
    RotationDone {
        rotation: u64,
        certs: Vec<CertInfo>,
        changed: bool,
    },
    /// Rotation `rotation` was refused (a pair failed its checks) or not served in
    /// time; the serving epoch keeps serving what it had.
    RotationFailed {
        rotation: u64,
        reason: FailureReason,
        message: String,
    },
}
