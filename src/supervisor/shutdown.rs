//! Draining on request (a preStop hook) and shutting down: drain the serving epoch,
//! then SIGTERM everything, then SIGKILL, then exit.
//!
//! **Invariant:** shutdown always ends: every stage has a timer, and `Exit` follows
//! as soon as no epoch is left.

use super::action::{Action, StopSignal};
use super::epoch::Phase;
use super::event::Event;
use super::state::{BackoffTimer, Stage, State};

pub(super) fn on_drain_requested(state: &mut State, out: &mut Vec<Action>) {
    if state.stage != Stage::Running {
        return;
    }
    state.stage = Stage::Drained;
    state.pending = None;
    state.backoff = BackoffTimer::Unarmed;
    abort_in_flight(state, out);
    if let Some(i) = state.serving_index() {
        if let Some(pid) = state.epochs[i].pid {
            out.push(Action::DrainForShutdown {
                epoch: state.epochs[i].number,
                pid,
            });
        }
    }
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
    abort_in_flight(state, out);
    let serving = state
        .serving_index()
        .and_then(|i| Some((state.epochs[i].number, state.epochs[i].pid?)));
    if let Some((epoch, pid)) = serving {
        state.serving_at_shutdown = Some(epoch);
        if !drained_already {
            out.push(Action::DrainForShutdown { epoch, pid });
        }
        out.push(Action::Schedule {
            after: state.policy.termination_drain,
            event: Event::ShutdownDrainElapsed,
        });
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
        if !matches!(e.phase, Phase::Starting | Phase::Failing) {
            continue;
        }
        e.phase = Phase::Stopping;
        if let Some(pid) = e.pid {
            out.push(Action::Stop {
                epoch: e.number,
                pid,
                signal: StopSignal::Kill,
            });
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

pub(super) fn on_kill_deadline(state: &mut State, out: &mut Vec<Action>) {
    if state.stage == Stage::ShutdownTerminating {
        kill_all(state, out);
    }
}

pub(super) fn terminate_all(state: &mut State, out: &mut Vec<Action>) {
    state.stage = Stage::ShutdownTerminating;
    state.pending = None;
    state.backoff = BackoffTimer::Unarmed;
    drop_preparing(state, out);
    for e in state.epochs.iter_mut() {
        e.phase = Phase::Stopping;
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
        out.push(Action::Schedule {
            after: state.policy.kill_grace,
            event: Event::ShutdownKillDeadline,
        });
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
