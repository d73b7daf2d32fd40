//! In-place certificate rotation (`--cert-rotation sds`): a changed `--cert` pair is
//! handed to the serving epoch through the SDS resources baton writes, after the same
//! checks a restart runs, with no new epoch. The shell confirms through Envoy's admin
//! `/certs` that the new pairs are served before the rotation counts as done.
//!
//! **Invariant:** one change reaches the proxy at a time: a rotation begins only
//! while an epoch serves and no restart is in flight, and no restart begins while a
//! rotation is under way (`restart` defers it); requests that arrive meanwhile become
//! one follow-up rotation. A rotation never waits for a drain period: it starts no
//! process, so it cannot cut an old epoch's drain short.
//! **Invariant:** a failed rotation changes nothing the core knows about the serving
//! epoch: its certificates stay those it served, the failure is counted by reason and
//! kept as the last error.

use super::action::{Action, Report};
use super::event::{CertInfo, FailureReason, Millis};
use super::state::{BackoffTimer, Rotation, Stage, State};

/// A `--cert` pair changed: rotate now, or as soon as a rotation can begin.
pub(super) fn on_requested(state: &mut State, now: Millis, out: &mut Vec<Action>) {
    match state.stage {
        Stage::Running => {}
        Stage::Drained => {
            out.push(Action::Report(Report::RotationIgnored {
                why: "the proxy was drained on request",
            }));
            return;
        }
        _ => return,
    }
    let why = if state.rotating() {
        Some("another rotation is in progress; this one follows it")
    } else if state.in_flight() {
        Some("a restart is in progress; the rotation follows it")
    } else if state.serving().is_none() || state.backoff != BackoffTimer::Unarmed {
        Some("no epoch serves; the rotation follows once one does")
    } else {
        None
    };
    match why {
        Some(why) => {
            state.rotation_pending.get_or_insert(now);
            out.push(Action::Report(Report::RotationWaits { why }));
        }
        None => begin(state, now, out),
    }
}

/// Begin the follow-up rotation if one was asked for and nothing stands in its way.
/// `true` if it began. (Called by `restart::resume`, which checks the stage, the
/// restart in flight and the backoff.)
pub(super) fn begin_pending(state: &mut State, out: &mut Vec<Action>) -> bool {
    if state.rotating() || state.serving().is_none() {
        return false;
    }
    match state.rotation_pending.take() {
        Some(since) => {
            begin(state, since, out);
            true
        }
        None => false,
    }
}

fn begin(state: &mut State, since: Millis, out: &mut Vec<Action>) {
    let Some(epoch) = state.serving().map(|e| e.number) else {
        return;
    };
    state.rotations_begun += 1;
    let id = state.rotations_begun;
    state.rotation = Some(Rotation { id, epoch, since });
    out.push(Action::Report(Report::RotationStarted {
        rotation: id,
        epoch,
    }));
    out.push(Action::Rotate {
        rotation: id,
        epoch,
    });
}

/// The rotation's epoch serves the pairs now: they become its certificates. A stale
/// outcome (an abandoned rotation's) is ignored.
pub(super) fn on_done(
    state: &mut State,
    rotation: u64,
    certs: Vec<CertInfo>,
    changed: bool,
    now: Millis,
    out: &mut Vec<Action>,
) {
    let Some(r) = take_current(state, rotation) else {
        return;
    };
    let serials = certs.iter().map(|c| c.serial.clone()).collect();
    if let Some(i) = state.find(r.epoch) {
        state.epochs[i].certs = certs;
    }
    state.last_error = None;
    out.push(Action::Report(Report::Rotated {
        rotation,
        epoch: r.epoch,
        serials,
        changed,
        rotation_ms: now.saturating_sub(r.since),
    }));
}

/// The rotation was refused or not served: the serving epoch keeps what it had.
pub(super) fn on_failed(
    state: &mut State,
    rotation: u64,
    reason: FailureReason,
    message: String,
    out: &mut Vec<Action>,
) {
    let Some(r) = take_current(state, rotation) else {
        return;
    };
    state.last_error = Some(format!(
        "epoch {}: certificate rotation: {reason}: {message}",
        r.epoch
    ));
    out.push(Action::Report(Report::RotationFailed {
        rotation,
        epoch: r.epoch,
        reason,
        message,
    }));
}

fn take_current(state: &mut State, rotation: u64) -> Option<Rotation> {
    match state.rotation {
        Some(r) if r.id == rotation => state.rotation.take(),
        _ => None,
    }
}

/// `epoch`'s process ended: a rotation of it is abandoned, and (unless the proxy was
/// drained on request) asked for again so that whatever serves next gets the pair (a new epoch starts from the SDS
/// resources as they are; the retry finds nothing to do if the pair got there).
pub(super) fn on_epoch_gone(state: &mut State, epoch: u32, out: &mut Vec<Action>) {
    if let Some(r) = state.rotation.filter(|r| r.epoch == epoch) {
        state.rotation = None;
        if state.stage == Stage::Running {
            state.rotation_pending.get_or_insert(r.since);
        }
        out.push(Action::AbandonRotation { rotation: r.id });
    }
}

/// Shutdown: nothing rotates any more.
pub(super) fn abandon(state: &mut State, out: &mut Vec<Action>) {
    state.rotation_pending = None;
    if let Some(r) = state.rotation.take() {
        out.push(Action::AbandonRotation { rotation: r.id });
    }
}
