//! The state machine proper: `step(&mut State, Event) -> Vec<Action>`.

use super::action::{Action, Launch, Report, StopSignal};
use super::backoff::Backoff;
use super::event::{Event, FailureReason, Millis, ProcessExit, Trigger};

/// Exit code for a configuration that cannot be used (sysexits `EX_CONFIG`).
pub const EXIT_CONFIG: i32 = 78;
/// Exit code when baton itself fails for a reason that has no better code.
pub const EXIT_FAILURE: i32 = 1;
const SIGTERM: i32 = 15;

/// How the proxy hands over from one epoch to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// Envoy's native hot restart: the new epoch drains and terminates its parent
    /// itself. Epochs form chains (one base id each); `--restart-epoch` counts within
    /// a chain.
    Envoy,
    /// baton holds the sockets; it sends the old epoch the drain signal and kills it
    /// after the parent shutdown period.
    Generic,
}

/// The knobs of the state machine, all durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Which handover protocol applies.
    pub driver: DriverKind,
    /// Consecutive crashes (or failed recoveries) tolerated; one more and baton exits.
    pub crash_budget: u32,
    /// Delay between recovery attempts.
    pub backoff: Backoff,
    /// An epoch that served this long before crashing resets the crash count.
    pub stable_after: Millis,
    /// How long an epoch may drain before baton steps in. Envoy: its parent
    /// shutdown time plus a margin (Envoy terminates its own parents); generic: the
    /// parent shutdown duration, after which the group is killed.
    pub drain_deadline: Millis,
    /// Envoy: how long an old epoch is given to drain. A hot restart within that
    /// time would cut its drain short (Envoy terminates the grandparent when a new
    /// child starts), so it waits; an epoch of an abandoned chain is sent SIGTERM
    /// after it.
    pub drain_period: Millis,
    /// Generic driver: at most this many old epochs drain at once; beyond it the
    /// oldest is killed early.
    pub max_draining: usize,
    /// How long a graceful shutdown drains before SIGTERM.
    pub termination_drain: Millis,
    /// How long after SIGTERM a process gets before SIGKILL.
    pub kill_grace: Millis,
}

/// Where an epoch is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochState {
    /// Its configuration is being rendered and validated; no process yet.
    Preparing,
    /// Its process runs and is not ready yet.
    Starting,
    /// It is the newest ready epoch and takes the traffic.
    Serving,
    /// A newer epoch took over; it finishes what it has.
    Draining,
    /// It failed to start and is being killed.
    Failing,
    /// baton sent it SIGTERM or SIGKILL.
    Stopping,
}

impl EpochState {
    /// Stable lowercase name for logs and the status endpoint.
    pub fn label(self) -> &'static str {
        match self {
            EpochState::Preparing => "preparing",
            EpochState::Starting => "starting",
            EpochState::Serving => "serving",
            EpochState::Draining => "draining",
            EpochState::Failing => "failing",
            EpochState::Stopping => "stopping",
        }
    }
}

/// A read-only view of one live epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochView {
    /// baton's epoch number.
    pub number: u32,
    /// Hot-restart chain.
    pub chain: u32,
    /// Envoy's `--restart-epoch`.
    pub restart_epoch: u32,
    /// Process id, once spawned.
    pub pid: Option<u32>,
    /// Life stage.
    pub state: EpochState,
    /// sha256 of its configuration, once its preflight passed.
    pub config_digest: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Shutdown: the serving epoch drains its listeners.
    ShutdownDraining,
    /// Shutdown: everything got SIGTERM.
    ShutdownTerminating,
    /// Shutdown: everything got SIGKILL.
    ShutdownKilling,
    /// `Exit` was emitted.
    Done,
}

#[derive(Debug, Clone)]
struct Epoch {
    number: u32,
    chain: u32,
    restart_epoch: u32,
    pid: Option<u32>,
    state: EpochState,
    ready_at: Option<Millis>,
    drain_settled: bool,
    config_digest: Option<String>,
    inputs_read: bool,
}

/// The supervisor's whole memory. Created with [`State::new`], changed only by [`step`].
#[derive(Debug, Clone)]
pub struct State {
    policy: Policy,
    started: bool,
    epochs: Vec<Epoch>,
    next_epoch: u32,
    chain: u32,
    chain_usable: bool,
    chain_repairing: bool,
    pending: Option<Trigger>,
    crashes: u32,
    backoff_generation: u64,
    backoff_armed: bool,
    ever_served: bool,
    phase: Phase,
    serving_at_shutdown: Option<u32>,
    drained: bool,
    exit_code: Option<i32>,
    last_error: Option<String>,
}

impl State {
    /// A supervisor that has not started anything yet; send it [`Event::Start`].
    pub fn new(policy: Policy) -> Self {
        State {
            policy,
            started: false,
            epochs: Vec::new(),
            next_epoch: 0,
            chain: 0,
            chain_usable: false,
            chain_repairing: false,
            pending: None,
            crashes: 0,
            backoff_generation: 0,
            backoff_armed: false,
            ever_served: false,
            phase: Phase::Running,
            serving_at_shutdown: None,
            drained: false,
            exit_code: None,
            last_error: None,
        }
    }

    /// The live epochs, oldest first.
    pub fn epochs(&self) -> Vec<EpochView> {
        self.epochs
            .iter()
            .map(|e| EpochView {
                number: e.number,
                chain: e.chain,
                restart_epoch: e.restart_epoch,
                pid: e.pid,
                state: e.state,
                config_digest: e.config_digest.clone(),
            })
            .collect()
    }

    /// The epoch taking traffic, if any.
    pub fn serving(&self) -> Option<EpochView> {
        self.epochs()
            .into_iter()
            .find(|e| e.state == EpochState::Serving)
    }

    /// The last restart or recovery failure, for the status endpoint.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Consecutive crashes counted against the budget.
    pub fn crashes(&self) -> u32 {
        self.crashes
    }

    /// `Ok` when an epoch serves and takes traffic; otherwise why not, in a few words
    /// (the body of a 503 from `/healthz/ready`).
    pub fn readiness(&self) -> Result<(), String> {
        if self.phase != Phase::Running {
            return Err("shutting down".into());
        }
        if !self.started {
            return Err("starting: no epoch yet".into());
        }
        if self.drained {
            return Err("draining (POST /drain)".into());
        }
        if self.serving_index().is_some() {
            return Ok(());
        }
        if self.backoff_armed {
            return Err(format!("crash backoff after {} crash(es)", self.crashes));
        }
        match self.epochs.iter().find(|e| e.state != EpochState::Failing) {
            Some(e) if !self.ever_served => {
                Err(format!("starting: epoch {} not ready yet", e.number))
            }
            Some(e) => Err(format!("recovering: epoch {} not ready yet", e.number)),
            None => Err("no epoch serving".into()),
        }
    }

    /// `true` once shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        self.phase != Phase::Running
    }

    fn find(&self, number: u32) -> Option<usize> {
        self.epochs.iter().position(|e| e.number == number)
    }

    /// A restart is under way: an epoch prepares, starts, or is being removed after a
    /// failed start (its restart epoch is still taken), or the chain is being repaired.
    fn in_flight(&self) -> bool {
        self.chain_repairing
            || self.epochs.iter().any(|e| {
                matches!(
                    e.state,
                    EpochState::Preparing | EpochState::Starting | EpochState::Failing
                )
            })
    }

    /// Envoy: an epoch of the current chain that is still within its drain period.
    /// Starting a new epoch now would make Envoy terminate it early.
    fn drain_in_progress(&self) -> Option<u32> {
        if self.policy.driver != DriverKind::Envoy || !self.chain_usable {
            return None;
        }
        self.epochs
            .iter()
            .find(|e| e.chain == self.chain && e.state == EpochState::Draining && !e.drain_settled)
            .map(|e| e.number)
    }

    fn serving_index(&self) -> Option<usize> {
        self.epochs
            .iter()
            .position(|e| e.state == EpochState::Serving)
    }
}

/// Advance the supervisor by one event. Pure: the same state and event always give
/// the same actions.
pub fn step(state: &mut State, event: Event) -> Vec<Action> {
    let mut out = Vec::new();
    match event {
        Event::Start => {
            if !state.started {
                state.started = true;
                begin_restart(state, None, &mut out);
            }
        }
        Event::RestartRequested(trigger) => on_restart_requested(state, trigger, &mut out),
        Event::PreflightBegun { epoch } => {
            if let Some(i) = state.find(epoch) {
                state.epochs[i].inputs_read = true;
            }
        }
        Event::PreflightPassed {
            epoch,
            config_digest,
        } => on_preflight_passed(state, epoch, config_digest, &mut out),
        Event::PreflightFailed {
            epoch,
            reason,
            message,
        } => {
            if let Some(i) = state.find(epoch) {
                if state.epochs[i].state == EpochState::Preparing {
                    state.epochs.remove(i);
                    start_failed(state, epoch, reason, message, None, &mut out);
                }
            }
        }
        Event::Spawned { epoch, pid, at: _ } => on_spawned(state, epoch, pid, &mut out),
        Event::SpawnFailed { epoch, message } => {
            if let Some(i) = state.find(epoch) {
                state.epochs.remove(i);
                start_failed(state, epoch, FailureReason::Spawn, message, None, &mut out);
            }
        }
        Event::Ready { epoch, at } => on_ready(state, epoch, at, &mut out),
        Event::NotReady { epoch, message } => {
            if let Some(i) = state.find(epoch) {
                if state.epochs[i].state == EpochState::Starting {
                    state.epochs[i].state = EpochState::Failing;
                    if let Some(pid) = state.epochs[i].pid {
                        out.push(Action::Stop {
                            epoch,
                            pid,
                            signal: StopSignal::Kill,
                        });
                    }
                    start_failed(
                        state,
                        epoch,
                        FailureReason::NotReady,
                        message,
                        None,
                        &mut out,
                    );
                }
            }
        }
        Event::Exited { epoch, status, at } => on_exited(state, epoch, status, at, &mut out),
        Event::BackoffElapsed { generation } => {
            if state.backoff_armed
                && generation == state.backoff_generation
                && state.phase == Phase::Running
            {
                state.backoff_armed = false;
                let trigger = state.pending.take();
                begin_restart(state, trigger, &mut out);
            }
        }
        Event::ChainRepaired { chain } => {
            if chain == state.chain && state.chain_repairing {
                state.chain_repairing = false;
                out.push(Action::Report(Report::ChainRepaired { chain }));
                try_pending(state, &mut out);
            }
        }
        Event::ChainRepairFailed { chain, why } => {
            if chain == state.chain && state.chain_repairing {
                state.chain_repairing = false;
                out.push(Action::Report(Report::ChainRepairFailed { chain, why }));
                abandon_chain(state, "its shared memory could not be repaired", &mut out);
                try_pending(state, &mut out);
            }
        }
        Event::DrainSettled { epoch } => {
            if let Some(i) = state.find(epoch) {
                state.epochs[i].drain_settled = true;
                try_pending(state, &mut out);
            }
        }
        Event::DrainDeadline { epoch } => on_drain_deadline(state, epoch, &mut out),
        Event::ShutdownRequested => on_shutdown_requested(state, &mut out),
        Event::DrainRequested => {
            if state.phase == Phase::Running && !state.drained {
                state.drained = true;
                state.pending = None;
                if let Some(i) = state.serving_index() {
                    if let Some(pid) = state.epochs[i].pid {
                        out.push(Action::DrainForShutdown {
                            epoch: state.epochs[i].number,
                            pid,
                        });
                    }
                }
            }
        }
        Event::ShutdownDrainElapsed => {
            if state.phase == Phase::ShutdownDraining {
                terminate_all(state, &mut out);
            }
        }
        Event::ShutdownKillDeadline => {
            if state.phase == Phase::ShutdownTerminating {
                kill_all(state, &mut out);
            }
        }
        Event::Forward { signal } => {
            if let Some(pid) = state.serving_index().and_then(|i| state.epochs[i].pid) {
                out.push(Action::Forward { pid, signal });
            }
        }
    }
    out
}

fn on_restart_requested(state: &mut State, trigger: Trigger, out: &mut Vec<Action>) {
    if state.phase != Phase::Running || !state.started {
        return;
    }
    if state.drained {
        out.push(Action::Report(Report::Ignored {
            trigger,
            why: "the proxy was drained on request",
        }));
        return;
    }
    // A preflight that has not read its inputs yet will see whatever this trigger
    // is about: the trigger joins it, no follow-up needed.
    if let Some(e) = state
        .epochs
        .iter()
        .find(|e| e.state == EpochState::Preparing && !e.inputs_read)
    {
        out.push(Action::Report(Report::Joined {
            trigger,
            epoch: e.number,
        }));
        return;
    }
    if state.in_flight() || state.backoff_armed {
        // One restart at a time; everything that arrives meanwhile is one follow-up.
        state.pending = Some(trigger);
        out.push(Action::Report(Report::Coalesced { trigger }));
        return;
    }
    if let Some(draining) = state.drain_in_progress() {
        state.pending = Some(trigger);
        out.push(Action::Report(Report::Deferred { trigger, draining }));
        return;
    }
    begin_restart(state, Some(trigger), out);
}

/// Start the follow-up restart if one waits and nothing stands in its way.
fn try_pending(state: &mut State, out: &mut Vec<Action>) {
    if state.phase != Phase::Running
        || state.pending.is_none()
        || state.in_flight()
        || state.backoff_armed
        || state.drain_in_progress().is_some()
    {
        return;
    }
    let trigger = state.pending.take();
    begin_restart(state, trigger, out);
}

fn begin_restart(state: &mut State, trigger: Option<Trigger>, out: &mut Vec<Action>) {
    let epoch = state.next_epoch;
    state.epochs.push(Epoch {
        number: epoch,
        chain: state.chain,
        restart_epoch: 0,
        pid: None,
        state: EpochState::Preparing,
        ready_at: None,
        drain_settled: false,
        config_digest: None,
        inputs_read: false,
    });
    out.push(Action::Report(Report::RestartStarted { epoch, trigger }));
    out.push(Action::Preflight { epoch });
}

fn on_preflight_passed(
    state: &mut State,
    epoch: u32,
    config_digest: Option<String>,
    out: &mut Vec<Action>,
) {
    let Some(i) = state.find(epoch) else { return };
    if state.epochs[i].state != EpochState::Preparing {
        return;
    }
    if state.phase != Phase::Running {
        state.epochs.remove(i);
        return;
    }
    let (chain, restart_epoch) = place_in_chain(state);
    let e = &mut state.epochs[i];
    e.chain = chain;
    e.restart_epoch = restart_epoch;
    e.state = EpochState::Starting;
    e.config_digest = config_digest;
    state.next_epoch = epoch + 1;
    out.push(Action::Spawn(Launch {
        epoch,
        chain,
        restart_epoch,
    }));
}

/// Envoy: extend the current chain while it has a healthy serving epoch, with
/// `--restart-epoch` exactly one above the highest running; otherwise open a new
/// chain at restart epoch 0.
fn place_in_chain(state: &mut State) -> (u32, u32) {
    if state.policy.driver == DriverKind::Generic {
        return (0, state.next_epoch);
    }
    let chain = state.chain;
    let serving_in_chain = state
        .epochs
        .iter()
        .any(|e| e.chain == chain && e.state == EpochState::Serving);
    if state.chain_usable && !state.chain_repairing && serving_in_chain {
        let highest = state
            .epochs
            .iter()
            .filter(|e| e.chain == chain && e.pid.is_some())
            .map(|e| e.restart_epoch)
            .max()
            .unwrap_or(0);
        return (chain, highest + 1);
    }
    // Epoch numbers are consumed only by spawns: any spawn used up the current chain.
    if state.next_epoch > 0 {
        state.chain += 1;
    }
    state.chain_usable = true;
    (state.chain, 0)
}

/// Envoy: a new epoch of the current chain died after it may have attached to the
/// chain's shared memory, leaving it flagged "initialising" (every later hot restart
/// would be refused). With an epoch of the chain still serving, ask the shell to
/// repair the flag; otherwise the chain is done.
fn repair_or_abandon(state: &mut State, chain: u32, out: &mut Vec<Action>) {
    if state.policy.driver != DriverKind::Envoy || chain != state.chain || !state.chain_usable {
        return;
    }
    let serving = state
        .epochs
        .iter()
        .any(|e| e.chain == chain && e.state == EpochState::Serving);
    if serving {
        state.chain_repairing = true;
        out.push(Action::RepairChain { chain });
    } else {
        abandon_chain(state, "a new epoch died and none of the chain serves", out);
    }
}

fn abandon_chain(state: &mut State, why: &'static str, out: &mut Vec<Action>) {
    if state.policy.driver == DriverKind::Envoy && state.chain_usable {
        state.chain_usable = false;
        out.push(Action::Report(Report::ChainAbandoned {
            chain: state.chain,
            why,
        }));
    }
}

fn on_spawned(state: &mut State, epoch: u32, pid: u32, out: &mut Vec<Action>) {
    let Some(i) = state.find(epoch) else { return };
    state.epochs[i].pid = Some(pid);
    if state.phase != Phase::Running || state.epochs[i].state == EpochState::Stopping {
        state.epochs[i].state = EpochState::Stopping;
        out.push(Action::Stop {
            epoch,
            pid,
            signal: StopSignal::Kill,
        });
        return;
    }
    out.push(Action::WatchReady { epoch, pid });
}

fn on_ready(state: &mut State, epoch: u32, at: Millis, out: &mut Vec<Action>) {
    let Some(i) = state.find(epoch) else { return };
    if state.epochs[i].state != EpochState::Starting || state.phase != Phase::Running {
        return;
    }
    let new_chain = state.epochs[i].chain;
    let pid = state.epochs[i].pid.unwrap_or(0);
    state.epochs[i].state = EpochState::Serving;
    state.epochs[i].ready_at = Some(at);
    state.ever_served = true;
    state.last_error = None;

    let mut replaced = Vec::new();
    for e in state.epochs.iter_mut() {
        if e.number == epoch || e.state != EpochState::Serving {
            continue;
        }
        e.state = EpochState::Draining;
        replaced.push(e.number);
        match state.policy.driver {
            DriverKind::Generic => {
                if let Some(pid) = e.pid {
                    out.push(Action::Drain {
                        epoch: e.number,
                        pid,
                    });
                }
                out.push(Action::ScheduleDrainDeadline {
                    epoch: e.number,
                    after: state.policy.drain_deadline,
                });
            }
            // Envoy drains and terminates its parent itself; baton only keeps a
            // deadline as a safety net and never signals the parent before it.
            DriverKind::Envoy if e.chain == new_chain => {
                out.push(Action::ScheduleDrainSettled {
                    epoch: e.number,
                    after: state.policy.drain_period,
                });
                out.push(Action::ScheduleDrainDeadline {
                    epoch: e.number,
                    after: state.policy.drain_deadline,
                });
            }
            // An epoch of an abandoned chain shares the port (SO_REUSEPORT) with the
            // new chain; nobody else will ever stop it.
            DriverKind::Envoy => {
                out.push(Action::ScheduleDrainDeadline {
                    epoch: e.number,
                    after: state.policy.drain_period,
                });
            }
        }
    }
    if state.policy.driver == DriverKind::Generic {
        let mut draining: Vec<usize> = (0..state.epochs.len())
            .filter(|&i| state.epochs[i].state == EpochState::Draining)
            .collect();
        while draining.len() > state.policy.max_draining {
            let e = &mut state.epochs[draining.remove(0)];
            e.state = EpochState::Stopping;
            if let Some(pid) = e.pid {
                out.push(Action::Stop {
                    epoch: e.number,
                    pid,
                    signal: StopSignal::Kill,
                });
            }
        }
    }
    out.push(Action::Report(Report::Serving {
        epoch,
        pid,
        replaced,
    }));
    try_pending(state, out);
}

fn on_exited(
    state: &mut State,
    epoch: u32,
    status: ProcessExit,
    at: Millis,
    out: &mut Vec<Action>,
) {
    let Some(i) = state.find(epoch) else { return };
    let gone = state.epochs.remove(i);
    let role = gone.state.label();
    out.push(Action::Report(Report::Exited {
        epoch,
        pid: gone.pid.unwrap_or(0),
        status,
        role,
    }));
    out.push(Action::Cleanup { epoch });
    if state.policy.driver == DriverKind::Envoy
        && !state
            .epochs
            .iter()
            .any(|e| e.chain == gone.chain && e.state != EpochState::Preparing)
    {
        if gone.chain == state.chain {
            state.chain_usable = false;
        }
        out.push(Action::ReleaseChain { chain: gone.chain });
    }

    if state.phase != Phase::Running {
        if state.serving_at_shutdown == Some(epoch) {
            state.exit_code = Some(shutdown_exit_code(status));
        }
        finish_if_empty(state, out);
        return;
    }
    match gone.state {
        EpochState::Starting => {
            repair_or_abandon(state, gone.chain, out);
            start_failed(
                state,
                epoch,
                FailureReason::Exited,
                format!("exited before becoming ready ({status})"),
                Some(status),
                out,
            );
        }
        EpochState::Serving => on_crash(state, gone, status, at, out),
        EpochState::Failing => {
            repair_or_abandon(state, gone.chain, out);
            try_pending(state, out);
        }
        _ => try_pending(state, out),
    }
}

/// A clean stop of the serving epoch is the SIGTERM baton sent it.
fn shutdown_exit_code(status: ProcessExit) -> i32 {
    match status {
        ProcessExit::Signal(SIGTERM) => 0,
        other => other.exit_code(),
    }
}

fn on_crash(
    state: &mut State,
    gone: Epoch,
    status: ProcessExit,
    at: Millis,
    out: &mut Vec<Action>,
) {
    if let Some(ready_at) = gone.ready_at {
        if at.saturating_sub(ready_at) >= state.policy.stable_after {
            state.crashes = 0;
        }
    }
    abandon_chain(state, "its serving epoch crashed", out);
    state.last_error = Some(format!("epoch {} crashed: {status}", gone.number));
    recover(state, gone.number, status.exit_code(), Some(status), out);
}

/// Nothing serves: try again after the backoff, or give up past the budget.
fn recover(
    state: &mut State,
    epoch: u32,
    give_up_code: i32,
    status: Option<ProcessExit>,
    out: &mut Vec<Action>,
) {
    state.crashes += 1;
    if state.crashes > state.policy.crash_budget {
        out.push(Action::Report(Report::Crashed {
            epoch,
            status: status.unwrap_or(ProcessExit::Code(give_up_code)),
            crashes: state.crashes,
            retry_in: None,
        }));
        state.exit_code = Some(give_up_code);
        terminate_all(state, out);
        return;
    }
    let delay = state.policy.backoff.delay(state.crashes);
    if let Some(status) = status {
        out.push(Action::Report(Report::Crashed {
            epoch,
            status,
            crashes: state.crashes,
            retry_in: Some(delay),
        }));
    }
    if delay == 0 {
        let trigger = state.pending.take();
        begin_restart(state, trigger, out);
    } else {
        state.backoff_generation += 1;
        state.backoff_armed = true;
        out.push(Action::ScheduleBackoff {
            generation: state.backoff_generation,
            after: delay,
        });
    }
}

/// A new epoch did not make it. If another serves, it keeps serving and only a new
/// trigger (or one that arrived meanwhile) tries again. If none serves, this is a
/// failed start or recovery.
fn start_failed(
    state: &mut State,
    epoch: u32,
    reason: FailureReason,
    message: String,
    status: Option<ProcessExit>,
    out: &mut Vec<Action>,
) {
    state.last_error = Some(format!("epoch {epoch}: {reason}: {message}"));
    out.push(Action::Report(Report::RestartFailed {
        epoch,
        reason,
        message,
    }));
    if state.phase != Phase::Running {
        finish_if_empty(state, out);
        return;
    }
    if state.serving_index().is_some() {
        try_pending(state, out);
        return;
    }
    if !state.ever_served && reason.is_config_problem() {
        state.exit_code = Some(EXIT_CONFIG);
        terminate_all(state, out);
        return;
    }
    let code = match (reason, status) {
        (_, Some(status)) => status.exit_code(),
        (r, None) if r.is_config_problem() => EXIT_CONFIG,
        _ => EXIT_FAILURE,
    };
    recover(state, epoch, code, status, out);
}

fn on_drain_deadline(state: &mut State, epoch: u32, out: &mut Vec<Action>) {
    let Some(i) = state.find(epoch) else { return };
    let e = &mut state.epochs[i];
    let Some(pid) = e.pid else { return };
    match (e.state, state.policy.driver) {
        (EpochState::Draining, DriverKind::Envoy) => {
            e.state = EpochState::Stopping;
            out.push(Action::Stop {
                epoch,
                pid,
                signal: StopSignal::Term,
            });
            out.push(Action::ScheduleDrainDeadline {
                epoch,
                after: state.policy.kill_grace,
            });
        }
        (EpochState::Draining, DriverKind::Generic) | (EpochState::Stopping, _) => {
            e.state = EpochState::Stopping;
            out.push(Action::Stop {
                epoch,
                pid,
                signal: StopSignal::Kill,
            });
        }
        _ => {}
    }
}

fn on_shutdown_requested(state: &mut State, out: &mut Vec<Action>) {
    match state.phase {
        Phase::Running => {}
        // A second request hurries the shutdown along.
        Phase::ShutdownDraining => return terminate_all(state, out),
        Phase::ShutdownTerminating => return kill_all(state, out),
        Phase::ShutdownKilling | Phase::Done => return,
    }
    state.phase = Phase::ShutdownDraining;
    state.pending = None;
    state.backoff_armed = false;
    state.epochs.retain(|e| e.state != EpochState::Preparing);
    let mut draining_serving = false;
    for e in state.epochs.iter_mut() {
        let Some(pid) = e.pid else {
            // Spawn requested, pid not reported yet: `on_spawned` kills it.
            e.state = EpochState::Stopping;
            continue;
        };
        match e.state {
            EpochState::Starting | EpochState::Failing => {
                e.state = EpochState::Stopping;
                out.push(Action::Stop {
                    epoch: e.number,
                    pid,
                    signal: StopSignal::Kill,
                });
            }
            EpochState::Serving => {
                state.serving_at_shutdown = Some(e.number);
                draining_serving = true;
                out.push(Action::DrainForShutdown {
                    epoch: e.number,
                    pid,
                });
            }
            _ => {}
        }
    }
    if draining_serving {
        out.push(Action::ScheduleShutdownDrain {
            after: state.policy.termination_drain,
        });
    } else if state.epochs.is_empty() {
        finish_if_empty(state, out);
    } else {
        terminate_all(state, out);
    }
}

fn terminate_all(state: &mut State, out: &mut Vec<Action>) {
    state.phase = Phase::ShutdownTerminating;
    state.pending = None;
    state.backoff_armed = false;
    state.epochs.retain(|e| e.state != EpochState::Preparing);
    for e in state.epochs.iter_mut() {
        e.state = EpochState::Stopping;
        if let Some(pid) = e.pid {
            out.push(Action::Stop {
                epoch: e.number,
                pid,
                signal: StopSignal::Term,
            });
        }
    }
    if state.epochs.is_empty() {
        finish_if_empty(state, out);
    } else {
        out.push(Action::ScheduleShutdownKill {
            after: state.policy.kill_grace,
        });
    }
}

fn kill_all(state: &mut State, out: &mut Vec<Action>) {
    state.phase = Phase::ShutdownKilling;
    for e in state.epochs.iter() {
        if let Some(pid) = e.pid {
            out.push(Action::Stop {
                epoch: e.number,
                pid,
                signal: StopSignal::Kill,
            });
        }
    }
}

fn finish_if_empty(state: &mut State, out: &mut Vec<Action>) {
    if state.phase == Phase::Running || state.phase == Phase::Done {
        return;
    }
    if state.epochs.is_empty() {
        state.phase = Phase::Done;
        out.push(Action::Exit {
            code: state.exit_code.unwrap_or(0),
        });
    }
}
