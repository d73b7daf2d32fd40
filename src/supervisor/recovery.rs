//! When a process ends, and when a new epoch fails: who is affected, what is
//! retried, and when baton gives up.
//!
//! **Invariant:** a failed new epoch never touches the serving one; only the serving
//! epoch's own death is a crash, recovered with backoff up to the crash budget.

use super::action::{Action, Report, StopSignal};
use super::chain;
use super::epoch::{Epoch, Phase};
use super::event::{Event, FailureReason, Millis, ProcessExit};
use super::restart;
use super::shutdown;
use super::state::{BackoffTimer, Stage, State};
use crate::exit;

const SIGTERM: i32 = 15;

pub(super) fn on_exited(
    state: &mut State,
    epoch: u32,
    status: ProcessExit,
    now: Millis,
    out: &mut Vec<Action>,
) {
    let Some(i) = state.find(epoch) else { return };
    let gone = state.retire(i, now, status);
    out.push(Action::Report(Report::Exited {
        epoch,
        pid: gone.pid.unwrap_or(0),
        status,
        role: gone.phase,
        ran_ms: now.saturating_sub(gone.spawned_at.unwrap_or(now)),
    }));
    out.push(Action::Cleanup { epoch });
    chain::on_epoch_gone(state, gone.chain, out);

    if !state.supervising() {
        if state.serving_at_shutdown == Some(epoch) {
            state.exit_code = Some(shutdown_exit_code(status));
        }
        shutdown::finish_if_empty(state, out);
        return;
    }
    match gone.phase {
        Phase::Starting => {
            chain::repair_or_abandon(state, gone.chain, out);
            start_failed(
                state,
                epoch,
                FailureReason::Exited,
                format!("exited before becoming ready ({status})"),
                Some(status),
                now,
                out,
            );
        }
        // It was asked to drain (a preStop hook): leaving is what it should do.
        Phase::Serving if state.stage == Stage::Drained => {}
        Phase::Serving => on_crash(state, gone, status, now, out),
        Phase::Failing => {
            chain::repair_or_abandon(state, gone.chain, out);
            restart::resume(state, now, out);
        }
        _ => restart::resume(state, now, out),
    }
}

/// A clean stop of the serving epoch is the SIGTERM baton sent it.
fn shutdown_exit_code(status: ProcessExit) -> i32 {
    match status {
        ProcessExit::Signal(SIGTERM) => exit::OK,
        other => other.exit_code(),
    }
}

fn on_crash(
    state: &mut State,
    gone: Epoch,
    status: ProcessExit,
    now: Millis,
    out: &mut Vec<Action>,
) {
    if let Some(ready_at) = gone.ready_at {
        if now.saturating_sub(ready_at) >= state.policy.stable_after {
            state.crashes = 0;
        }
    }
    chain::abandon(state, "its serving epoch crashed", out);
    state.last_error = Some(format!("epoch {} crashed: {status}", gone.number));
    recover(
        state,
        gone.number,
        status.exit_code(),
        Some(status),
        now,
        out,
    );
}

/// Nothing serves: try again after the backoff, or give up past the budget.
fn recover(
    state: &mut State,
    epoch: u32,
    give_up_code: i32,
    status: Option<ProcessExit>,
    now: Millis,
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
        shutdown::terminate_all(state, out);
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
        // Unless a restart is in flight already: that one becomes the recovery.
        restart::resume(state, now, out);
    } else {
        state.generations += 1;
        let generation = state.generations;
        state.backoff = BackoffTimer::Armed { generation };
        out.push(Action::Schedule {
            after: delay,
            event: Event::BackoffElapsed { generation },
        });
    }
}

pub(super) fn on_backoff_elapsed(
    state: &mut State,
    generation: u64,
    now: Millis,
    out: &mut Vec<Action>,
) {
    if state.backoff == (BackoffTimer::Armed { generation }) {
        state.backoff = BackoffTimer::Unarmed;
        restart::resume(state, now, out);
    }
}

pub(super) fn on_preflight_failed(
    state: &mut State,
    epoch: u32,
    reason: FailureReason,
    message: String,
    now: Millis,
    out: &mut Vec<Action>,
) {
    // A preflight may fail after it wrote files (the memory check after the
    // validator does): they go, whether the epoch is still known or was dropped.
    let Some(i) = state.find(epoch) else {
        out.push(Action::Cleanup { epoch });
        return;
    };
    if state.epochs[i].phase == Phase::Preparing {
        state.epochs.remove(i);
        out.push(Action::Cleanup { epoch });
        start_failed(state, epoch, reason, message, None, now, out);
    }
}

pub(super) fn on_spawn_failed(
    state: &mut State,
    epoch: u32,
    message: String,
    now: Millis,
    out: &mut Vec<Action>,
) {
    let Some(i) = state.find(epoch) else { return };
    let aborted = state.epochs.remove(i).phase == Phase::Stopping;
    // Its preflight wrote its files; no process will exit to have them removed.
    out.push(Action::Cleanup { epoch });
    if aborted {
        shutdown::finish_if_empty(state, out);
    } else {
        start_failed(state, epoch, FailureReason::Spawn, message, None, now, out);
    }
}

pub(super) fn on_not_ready(
    state: &mut State,
    epoch: u32,
    message: String,
    now: Millis,
    out: &mut Vec<Action>,
) {
    let Some(i) = state.find(epoch) else { return };
    let e = &mut state.epochs[i];
    if e.phase != Phase::Starting {
        return;
    }
    e.phase = Phase::Failing;
    if let Some(pid) = e.pid {
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
        now,
        out,
    );
}

/// A new epoch did not make it. If another serves, it keeps serving and only a new
/// trigger (or one that arrived meanwhile) tries again. If none serves, this is a
/// failed start or recovery.
pub(super) fn start_failed(
    state: &mut State,
    epoch: u32,
    reason: FailureReason,
    message: String,
    status: Option<ProcessExit>,
    now: Millis,
    out: &mut Vec<Action>,
) {
    state.last_error = Some(format!("epoch {epoch}: {reason}: {message}"));
    out.push(Action::Report(Report::RestartFailed {
        epoch,
        reason,
        message,
    }));
    if state.stage != Stage::Running {
        shutdown::finish_if_empty(state, out);
        return;
    }
    if state.serving_index().is_some() {
        restart::resume(state, now, out);
        return;
    }
    if !state.ever_served && reason.is_config_problem() {
        state.exit_code = Some(exit::CONFIG);
        shutdown::terminate_all(state, out);
        return;
    }
    let code = match (reason, status) {
        (_, Some(status)) => status.exit_code(),
        (r, None) if r.is_config_problem() => exit::CONFIG,
        _ => exit::FAILURE,
    };
    recover(state, epoch, code, status, now, out);
}
