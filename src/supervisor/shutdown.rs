//! Draining on request (a preStop hook) and shutting down, as Kubernetes expects:
//!
//! - A drain on request turns readiness 503 at once and aborts a restart in flight;
//!   the serving epoch goes on serving what it has (Envoy: its listeners drain
//!   gracefully; the generic driver's epoch gets no signal until SIGTERM). Nothing
//!   restarts after it, and no exit after it is a crash.
//! - Shutdown drains the serving epoch (Envoy: listeners; generic: the drain
//!   signal), and ends as soon as every epoch has exited; with
//!   `--exit-on-zero-active-connections`, also as soon as the serving epoch has no
//!   active connection after `--minimum-drain-duration`; at the latest after
//!   `--termination-drain-duration`: then SIGTERM, then SIGKILL.
//!
//! **Invariant:** shutdown always ends: every stage has a timer, and `Exit` follows
//! as soon as no epoch is left.

use super::action::{Action, Report, StopSignal};
use super::epoch::{Epoch, Phase};
use super::event::Event;
use super::policy::DriverKind;
use super::rotation;
use super::state::{BackoffTimer, Stage, State};

pub(super) fn on_drain_requested(state: &mut State, out: &mut Vec<Action>) {
    if state.stage != Stage::Running {
        return;
    }
    state.stage = Stage::Drained;
    state.pending = None;
    // A rotation under way finishes (the serving epoch goes on serving); none
    // follows it.
    state.rotation_pending = None;
    state.backoff = BackoffTimer::Unarmed;
    abort_in_flight(state, out);
    let serving = state
        .serving_index()
        .map(|i| (state.epochs[i].number, state.epochs[i].pid));
    if let (DriverKind::Envoy, Some((epoch, Some(pid)))) = (state.policy.driver, serving) {
        out.push(Action::DrainListeners { epoch, pid });
    }
    out.push(Action::Report(Report::Drained {
        serving: serving.map(|(epoch, _)| epoch),
    }));
}

pub(super) fn on_shutdown_requested(state: &mut State, out: &mut Vec<Action>) {
    match state.stage {
        Stage::Idle | Stage::Running | Stage::Drained => {}
        // A second request hurries the shutdown along.
        Stage::ShutdownDraining => return terminate_all(state, out),
        Stage::ShutdownTerminating => return kill_all(state, out),
        Stage::ShutdownKilling | Stage::Done => return,
    }
    let drained_already = state.stage == Stage::Drained;
    state.stage = Stage::ShutdownDraining;
    state.pending = None;
    state.backoff = BackoffTimer::Unarmed;
    rotation::abandon(state, out);
    abort_in_flight(state, out);
    let serving = state
        .serving_index()
        .and_then(|i| Some((state.epochs[i].number, state.epochs[i].pid?)));
    if let Some((epoch, pid)) = serving {
        state.serving_at_shutdown = Some(epoch);
        match state.policy.driver {
            DriverKind::Envoy if !drained_already => {
                out.push(Action::DrainListeners { epoch, pid })
            }
            DriverKind::Envoy => {}
            DriverKind::Generic => out.push(Action::Drain { epoch, pid }),
        }
        out.push(Action::Schedule {
            after: state.policy.termination_drain,
            event: Event::ShutdownDrainElapsed,
        });
        if let Some(after) = state.policy.exit_on_zero_after {
            out.push(Action::Schedule {
                after,
                event: Event::MinimumDrainElapsed,
            });
        }
    } else if state.epochs.is_empty() {
        finish_if_empty(state, out);
    } else {
        terminate_all(state, out);
    }
}

/// A restart in flight will not be finished: a preparing epoch is dropped, a
/// starting or failing one killed (one whose spawn is not reported yet is killed
/// when it is).
fn abort_in_flight(state: &mut State, out: &mut Vec<Action>) {
    drop_preparing(state, out);
    for e in state.epochs.iter_mut() {
        if matches!(e.phase, Phase::Starting | Phase::Failing) {
            stop(e, StopSignal::Kill, out);
        }
    }
}

/// Forget the epochs still preparing; their preflight may already have written
/// files, which `Cleanup` removes (a file written after it is removed when the
/// preflight's late outcome arrives, or at exit).
fn drop_preparing(state: &mut State, out: &mut Vec<Action>) {
    state.epochs.retain(|e| {
        let preparing = e.phase == Phase::Preparing;
        if preparing {
            out.push(Action::Cleanup { epoch: e.number });
        }
        !preparing
    });
}

pub(super) fn on_drain_elapsed(state: &mut State, out: &mut Vec<Action>) {
    if state.stage == Stage::ShutdownDraining {
        terminate_all(state, out);
    }
}

/// `--minimum-drain-duration` is over: watch the serving epoch's connections.
pub(super) fn on_minimum_drain_elapsed(state: &mut State, out: &mut Vec<Action>) {
    if state.stage != Stage::ShutdownDraining {
        return;
    }
    match state.serving_index() {
        Some(i) => out.push(Action::WatchConnections {
            epoch: state.epochs[i].number,
        }),
        None => terminate_all(state, out),
    }
}

/// No active connection is left: the drain is done.
pub(super) fn on_connections_drained(state: &mut State, out: &mut Vec<Action>) {
    if state.stage == Stage::ShutdownDraining {
        terminate_all(state, out);
    }
}

pub(super) fn on_kill_deadline(state: &mut State, out: &mut Vec<Action>) {
    if state.stage == Stage::ShutdownTerminating {
        kill_all(state, out);
    }
}

pub(super) fn terminate_all(state: &mut State, out: &mut Vec<Action>) {
    state.stage = Stage::ShutdownTerminating;
    state.pending = None;
    state.backoff = BackoffTimer::Unarmed;
    rotation::abandon(state, out);
    drop_preparing(state, out);
    match state.policy.driver {
        DriverKind::Generic => {
            for e in state.epochs.iter_mut() {
                stop(e, StopSignal::Term, out);
            }
        }
        DriverKind::Envoy => stop_newest(state, out),
    }
    if state.epochs.is_empty() {
        finish_if_empty(state, out);
    } else {
        out.push(Action::Schedule {
            after: state.policy.kill_grace,
            event: Event::ShutdownKillDeadline,
        });
    }
}

/// Envoy: SIGTERM the newest epoch not asked yet, when none is stopping. A stopping
/// child flushes its stats and asks its parent for theirs on the way out; a parent
/// stopped at the same moment never answers and the child would hang until SIGKILL.
/// So epochs stop one at a time, newest first, each parent after its child.
pub(super) fn stop_newest(state: &mut State, out: &mut Vec<Action>) {
    if state
        .epochs
        .iter()
        .any(|e| e.phase == Phase::Stopping && e.pid.is_some())
    {
        return;
    }
    // Not yet spawned (the spawn not reported): `on_spawned` kills it.
    for e in state.epochs.iter_mut().filter(|e| e.pid.is_none()) {
        e.phase = Phase::Stopping;
    }
    if let Some(e) = state
        .epochs
        .iter_mut()
        .filter(|e| e.pid.is_some())
        .max_by_key(|e| e.number)
    {
        stop(e, StopSignal::Term, out);
    }
}

fn kill_all(state: &mut State, out: &mut Vec<Action>) {
    state.stage = Stage::ShutdownKilling;
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

/// Exit once shutting down and no epoch is left.
pub(super) fn finish_if_empty(state: &mut State, out: &mut Vec<Action>) {
    if state.supervising() || matches!(state.stage, Stage::Idle | Stage::Done) {
        return;
    }
    if state.epochs.is_empty() {
        state.stage = Stage::Done;
        out.push(Action::Exit {
            code: state.exit_code.unwrap_or(crate::exit::OK),
        });
    }
}

/// Mark `e` stopping and, once it has a process, ask for `signal` to it. One not
/// spawned yet is killed when its spawn is reported.
pub(super) fn stop(e: &mut Epoch, signal: StopSignal, out: &mut Vec<Action>) {
    e.phase = Phase::Stopping;
    if let Some(pid) = e.pid {
        out.push(Action::Stop {
            epoch: e.number,
            pid,
            signal,
        });
    }
}
