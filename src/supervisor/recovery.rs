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
use super::rotation;
use super::shutdown;
use super::state::{BackoffTimer, Stage, State};
use crate::exit;

const SIGTERM: i32 = 15;

pub(super) fn on_exited(
    state: &mut State,
    epoch: u32,
    status: ProcessExit,
    last_words: Option<String>,
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
    rotation::on_epoch_gone(state, epoch, out);

    if !state.supervising() {
        if state.serving_at_shutdown == Some(epoch) {
            state.exit_code = Some(shutdown_exit_code(status, state.policy.drain_signal));
        }
        if state.stage == Stage::ShutdownTerminating
            && state.policy.driver == super::DriverKind::Envoy
        {
            shutdown::stop_newest(state, out);
        }
        shutdown::finish_if_empty(state, out);
        return;
    }
    match gone.phase {
        Phase::Starting => {
            chain::repair_or_abandon(state, gone.chain, out);
            let said = last_words.map_or_else(String::new, |w| format!(": {w}"));
            start_failed(
                state,
                epoch,
                FailureReason::Exited,
                format!("exited before becoming ready ({status}){said}"),
                Some(status.exit_code()),
                now,
                out,
            );
        }
        // It was asked to drain (a preStop hook): leaving is what it should do.
        Phase::Serving if state.stage == Stage::Drained => {}
        // Envoy: its child terminated it (`--parent-shutdown-time-s` ran out before
        // baton saw the child ready). The child holds the listeners: a handover, not
        // a crash.
        Phase::Serving if terminated_by_its_child(state, &gone, status) => {
            out.push(Action::Report(Report::HandedOverEarly {
                epoch,
                child: state
                    .epochs
                    .iter()
                    .find(|e| e.chain == gone.chain && e.phase == Phase::Starting)
                    .map_or(epoch, |e| e.number),
            }));
        }
        Phase::Serving => on_crash(state, gone, status, now, out),
        Phase::Failing => {
            chain::repair_or_abandon(state, gone.chain, out);
            restart::resume(state, now, out);
        }
        Phase::Draining => {
            chain::stand_in_if_needed(state, &gone, status, out);
            restart::resume(state, now, out);
        }
        _ => restart::resume(state, now, out),
    }
}

/// A clean stop of the serving epoch is the SIGTERM or drain signal baton sent it,
/// whether the process died of it or reported it as 128+n (a master process passing
/// on its worker's end, as HAProxy's does).
fn shutdown_exit_code(status: ProcessExit, drain_signal: i32) -> i32 {
    let clean = [SIGTERM, drain_signal];
    match status {
        ProcessExit::Signal(n) if clean.contains(&n) => exit::OK,
        ProcessExit::Code(c) if clean.iter().any(|&n| c == exit::signalled(n)) => exit::OK,
        other => other.exit_code(),
    }
}

fn terminated_by_its_child(state: &State, gone: &Epoch, status: ProcessExit) -> bool {
    state.policy.driver == super::DriverKind::Envoy
        && status == ProcessExit::Code(0)
        && state.epochs.iter().any(|e| {
            e.chain == gone.chain
                && e.phase == Phase::Starting
                && e.restart_epoch > gone.restart_epoch
        })
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
        give_up(
            state,
            give_up_code,
            format!("{} crash(es) in a row, past --crash-budget", state.crashes),
            out,
        );
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
    code: i32,
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
        start_failed(
            state,
            epoch,
            FailureReason::Spawn,
            message,
            Some(code),
            now,
            out,
        );
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
/// trigger (or one that arrived meanwhile) tries again. If none ever served, this
/// is a start-up failure: baton exits at once naming the cause (a bad
/// configuration 78; a process that could not start or exited its code, 127 for a
/// missing command; otherwise 1). If one served before, this is a failed recovery.
pub(super) fn start_failed(
    state: &mut State,
    epoch: u32,
    reason: FailureReason,
    message: String,
    code: Option<i32>,
    now: Millis,
    out: &mut Vec<Action>,
) {
    state.last_error = Some(format!("epoch {epoch}: {reason}: {message}"));
    out.push(Action::Report(Report::RestartFailed {
        epoch,
        reason,
        message: message.clone(),
    }));
    if state.stage != Stage::Running {
        shutdown::finish_if_empty(state, out);
        return;
    }
    if state.serving_index().is_some() {
        restart::resume(state, now, out);
        return;
    }
    let code = match (reason.is_config_problem(), code) {
        (true, _) => exit::CONFIG,
        (false, Some(code)) if code != exit::OK => code,
        (false, _) => exit::FAILURE,
    };
    if !state.ever_served {
        let why = format!("epoch {epoch} never served ({reason}): {message}");
        give_up(state, code, why, out);
        return;
    }
    recover(state, epoch, code, None, now, out);
}

/// Stop everything and exit with `code`, saying why.
fn give_up(state: &mut State, code: i32, why: String, out: &mut Vec<Action>) {
    out.push(Action::Report(Report::GivingUp { code, why }));
    state.exit_code = Some(code);
    shutdown::terminate_all(state, out);
}
