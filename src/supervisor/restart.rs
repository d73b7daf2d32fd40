//! A restart from trigger to running process: coalescing, the companion window, the
//! preflight and the spawn. (A new epoch that fails is `recovery`'s.)
//!
//! **Invariant:** at most one restart is in flight; a trigger that arrives meanwhile
//! joins it (its inputs are not read yet), is covered by it (a companion within its
//! window, and the inputs it read are unchanged), or becomes the one follow-up.

use super::action::{Action, Launch, Report, StopSignal};
use super::chain;
use super::epoch::{Epoch, Phase};
use super::event::{CertInfo, Event, Millis, Trigger};
use super::rotation;
use super::state::{BackoffTimer, Pending, Stage, State, Window};

pub(super) fn on_start(state: &mut State, now: Millis, out: &mut Vec<Action>) {
    if state.stage == Stage::Idle {
        state.stage = Stage::Running;
        begin(state, None, now, out);
    }
}

pub(super) fn on_trigger(state: &mut State, trigger: Trigger, now: Millis, out: &mut Vec<Action>) {
    match state.stage {
        Stage::Running => {}
        Stage::Drained => {
            out.push(Action::Report(Report::Ignored {
                trigger,
                why: "the proxy was drained on request",
            }));
            return;
        }
        _ => return,
    }
    // A preflight that has not read its inputs yet will see whatever this trigger
    // is about: the trigger joins it, no follow-up needed.
    if let Some(e) = state
        .epochs
        .iter()
        .find(|e| e.phase == Phase::Preparing && !e.inputs_read)
    {
        out.push(Action::Report(Report::Joined {
            trigger,
            epoch: e.number,
        }));
        return;
    }
    if state.in_flight() || state.backoff != BackoffTimer::Unarmed {
        // One restart at a time; everything that arrives meanwhile is one follow-up.
        fold(state, trigger, now, out);
        out.push(Action::Report(Report::Coalesced { trigger }));
        return;
    }
    if state.rotating() {
        // One change reaches the proxy at a time; the restart starts from the
        // certificates the rotation leaves served.
        state.defer(trigger, now);
        out.push(Action::Report(Report::WaitsForRotation { trigger }));
        return;
    }
    if let Some(draining) = state.drain_in_progress() {
        fold(state, trigger, now, out);
        out.push(Action::Report(Report::Deferred { trigger, draining }));
        return;
    }
    begin(state, Some(Pending::new(trigger, now)), now, out);
}

/// Fold a trigger into the follow-up. A signal or API trigger within the window of
/// the restart in flight, whose inputs were read already, is its companion: the
/// driver is asked whether the inputs are still what that restart read (once its
/// digest is known), and if so no follow-up runs. A file trigger never is: the file
/// that changed may be one the proxy reads by path, which no digest of baton's covers.
fn fold(state: &mut State, trigger: Trigger, now: Millis, out: &mut Vec<Action>) {
    let companion = state
        .window
        .filter(|w| now <= w.until && state.policy.checks_inputs && !trigger.is_file())
        .and_then(|w| state.find(w.epoch))
        .map(|i| &state.epochs[i])
        .filter(|e| matches!(e.phase, Phase::Preparing | Phase::Starting | Phase::Serving))
        .map(|e| (e.number, e.config_digest.is_some()));
    let fresh = state.pending.is_none();
    let before = state.pending.and_then(|p| p.covered_by);
    out.push(Action::Warm);
    let pending = state.defer(trigger, now);
    let Some((epoch, digest_known)) = companion else {
        return;
    };
    if !fresh && before != Some(epoch) {
        return;
    }
    pending.covered_by = Some(epoch);
    if digest_known {
        pending.checks += 1;
        out.push(Action::CheckInputs { epoch });
    } else {
        pending.check_due = true;
    }
}

/// The driver answered a `CheckInputs` for `epoch`: `digest` is what a restart would
/// run with now. The follow-up is covered when every check found the epoch's own.
pub(super) fn on_inputs_checked(
    state: &mut State,
    epoch: u32,
    digest: Option<String>,
    now: Millis,
    out: &mut Vec<Action>,
) {
    let covering = state.covering();
    let theirs = state
        .find(epoch)
        .and_then(|i| state.epochs[i].config_digest.clone());
    let Some(pending) = state.pending.as_mut() else {
        return;
    };
    if pending.covered_by != Some(epoch) {
        return;
    }
    pending.checks = pending.checks.saturating_sub(1);
    if covering != Some(epoch) || digest.is_none() || digest != theirs {
        pending.covered_by = None;
    } else if pending.checks == 0 && !pending.check_due {
        let trigger = pending.trigger;
        state.pending = None;
        out.push(Action::Report(Report::Covered { trigger, epoch }));
    }
    resume(state, now, out);
}

/// Start the next change if one is due and nothing stands in its way: a recovery
/// when nothing serves, else a follow-up rotation in place (it waits for no drain),
/// else the follow-up restart a trigger asked for (once the previous epoch's drain
/// period allows it, and no input check may still cancel it).
pub(super) fn resume(state: &mut State, now: Millis, out: &mut Vec<Action>) {
    if state.stage != Stage::Running
        || state.in_flight()
        || state.rotating()
        || state.backoff != BackoffTimer::Unarmed
    {
        return;
    }
    if state.covering().is_some() {
        return;
    }
    let recovering = state.serving().is_none();
    if !recovering && rotation::begin_pending(state, out) {
        return;
    }
    if !recovering && (state.pending.is_none() || state.drain_in_progress().is_some()) {
        return;
    }
    let cause = state.pending.take();
    begin(state, cause, now, out);
}

/// A new epoch starts preparing, and a triggered one opens its companion window.
/// It reads its inputs at once, unless it was asked for by a signal or the API and
/// the driver cannot check inputs: then it waits the window out first, so that
/// companions join it. The first epoch, recoveries and file triggers (debounced
/// already) always read at once.
pub(super) fn begin(state: &mut State, cause: Option<Pending>, now: Millis, out: &mut Vec<Action>) {
    let epoch = state.next_epoch;
    let trigger = cause.map(|c| c.trigger);
    let since = cause.map_or(now, |c| c.since);
    state
        .epochs
        .push(Epoch::preparing(epoch, state.chain, trigger, since));
    out.push(Action::Report(Report::RestartStarted { epoch, trigger }));
    if trigger.is_some() {
        state.window = Some(Window {
            epoch,
            until: now + state.policy.gather,
        });
    }
    let gathers =
        matches!(trigger, Some(Trigger::Signal | Trigger::Api)) && !state.policy.checks_inputs;
    if gathers && state.policy.gather > 0 {
        out.push(Action::Schedule {
            after: state.policy.gather,
            event: Event::GatherElapsed { epoch },
        });
    } else {
        read_inputs(state, epoch, out);
    }
}

/// The gather window is over: the preflight reads the inputs now.
pub(super) fn on_gathered(state: &mut State, epoch: u32, out: &mut Vec<Action>) {
    read_inputs(state, epoch, out);
}

fn read_inputs(state: &mut State, epoch: u32, out: &mut Vec<Action>) {
    let Some(i) = state.find(epoch) else { return };
    let serving_pid = state.serving().and_then(|e| e.pid);
    let trusted: Vec<String> = state.served_digests.iter().cloned().collect();
    let e = &mut state.epochs[i];
    if e.phase == Phase::Preparing && !e.inputs_read {
        e.inputs_read = true;
        out.push(Action::Preflight {
            epoch,
            serving_pid,
            trusted,
        });
    }
}

pub(super) fn on_preflight_passed(
    state: &mut State,
    epoch: u32,
    config_digest: Option<String>,
    certs: Vec<CertInfo>,
    out: &mut Vec<Action>,
) {
    let Some(i) = state.find(epoch) else {
        // Dropped while it prepared (a drain or shutdown): what its preflight wrote
        // since the drop must go too.
        out.push(Action::Cleanup { epoch });
        return;
    };
    if state.epochs[i].phase != Phase::Preparing {
        return;
    }
    if state.stage != Stage::Running {
        state.epochs.remove(i);
        out.push(Action::Cleanup { epoch });
        return;
    }
    let (chain, restart_epoch) = chain::place(state);
    let e = &mut state.epochs[i];
    e.chain = chain;
    e.restart_epoch = restart_epoch;
    e.phase = Phase::Starting;
    e.config_digest = config_digest;
    e.certs = certs;
    state.next_epoch = epoch + 1;
    out.push(Action::Spawn(Launch {
        epoch,
        chain,
        restart_epoch,
    }));
    // Companions that came while the preflight ran: their check can run now.
    if let Some(p) = state.pending.as_mut() {
        if p.covered_by == Some(epoch) && p.check_due {
            p.check_due = false;
            p.checks += 1;
            out.push(Action::CheckInputs { epoch });
        }
    }
}

pub(super) fn on_spawned(
    state: &mut State,
    epoch: u32,
    pid: u32,
    now: Millis,
    out: &mut Vec<Action>,
) {
    let Some(i) = state.find(epoch) else { return };
    let e = &mut state.epochs[i];
    e.pid = Some(pid);
    e.spawned_at = Some(now);
    if e.phase == Phase::Stopping {
        // Aborted (shutdown, drain) between the spawn and its report.
        e.phase = Phase::Stopping;
        out.push(Action::Stop {
            epoch,
            pid,
            signal: StopSignal::Kill,
        });
        return;
    }
    out.push(Action::WatchReady { epoch, pid });
}
