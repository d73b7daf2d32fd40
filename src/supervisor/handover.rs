//! A new epoch serves: the epochs it replaces drain, and are stopped if they
//! overstay.
//!
//! Envoy drains and terminates its parent itself; baton only keeps a deadline as a
//! safety net and never signals the parent before it. The generic driver's old epoch
//! gets the drain signal from baton and is killed at the deadline.

use super::action::{Action, Report, StopSignal};
use super::epoch::Phase;
use super::event::{Event, Millis};
use super::policy::DriverKind;
use super::restart;
use super::shutdown::stop;
use super::state::{Stage, State};

pub(super) fn on_ready(state: &mut State, epoch: u32, now: Millis, out: &mut Vec<Action>) {
    let Some(i) = state.find(epoch) else { return };
    if state.epochs[i].phase != Phase::Starting || state.stage != Stage::Running {
        return;
    }
    let e = &mut state.epochs[i];
    e.phase = Phase::Serving;
    e.ready_at = Some(now);
    let new_chain = e.chain;
    let pid = e.pid.unwrap_or(0);
    let trigger = e.trigger;
    let restart_ms = now.saturating_sub(e.requested_at);
    let startup_ms = now.saturating_sub(e.spawned_at.unwrap_or(now));
    let digest = e.config_digest.clone();
    state.trust(digest);
    state.ever_served = true;
    state.last_error = None;

    let policy = state.policy.clone();
    let mut replaced = Vec::new();
    for e in state.epochs.iter_mut() {
        if e.number == epoch || e.phase != Phase::Serving {
            continue;
        }
        e.phase = Phase::Draining;
        replaced.push(e.number);
        let old = e.number;
        match policy.driver {
            DriverKind::Generic => {
                if let Some(pid) = e.pid {
                    out.push(Action::Drain { epoch: old, pid });
                }
                out.push(schedule(
                    policy.drain_deadline,
                    Event::DrainDeadline { epoch: old },
                ));
            }
            DriverKind::Envoy if e.chain == new_chain => {
                out.push(schedule(
                    policy.drain_period,
                    Event::DrainSettled { epoch: old },
                ));
                out.push(schedule(
                    policy.drain_deadline,
                    Event::DrainDeadline { epoch: old },
                ));
            }
            // An epoch of an abandoned chain shares the port (SO_REUSEPORT) with the
            // new chain; nobody else will ever stop it.
            DriverKind::Envoy => {
                out.push(schedule(
                    policy.drain_period,
                    Event::DrainDeadline { epoch: old },
                ));
            }
        }
    }
    if policy.driver == DriverKind::Generic {
        kill_beyond_cap(state, out);
    }
    out.push(Action::Report(Report::Serving {
        epoch,
        pid,
        replaced,
        trigger,
        restart_ms,
        startup_ms,
    }));
    restart::resume(state, now, out);
}

fn schedule(after: Millis, event: Event) -> Action {
    Action::Schedule { after, event }
}

/// Generic driver: at most `max_draining` old epochs drain at once; the oldest
/// beyond that are killed early.
fn kill_beyond_cap(state: &mut State, out: &mut Vec<Action>) {
    let mut draining: Vec<usize> = (0..state.epochs.len())
        .filter(|&i| state.epochs[i].phase == Phase::Draining)
        .collect();
    while draining.len() > state.policy.max_draining {
        stop(&mut state.epochs[draining.remove(0)], StopSignal::Kill, out);
    }
}

pub(super) fn on_drain_settled(state: &mut State, epoch: u32, now: Millis, out: &mut Vec<Action>) {
    if let Some(i) = state.find(epoch) {
        state.epochs[i].drain_settled = true;
        restart::resume(state, now, out);
    }
}

pub(super) fn on_drain_deadline(state: &mut State, epoch: u32, out: &mut Vec<Action>) {
    let Some(i) = state.find(epoch) else { return };
    let kill_grace = state.policy.kill_grace;
    let driver = state.policy.driver;
    let e = &mut state.epochs[i];
    if e.pid.is_none() {
        return;
    }
    match (e.phase, driver) {
        (Phase::Draining, DriverKind::Envoy) => {
            stop(e, StopSignal::Term, out);
            out.push(schedule(kill_grace, Event::DrainDeadline { epoch }));
        }
        (Phase::Draining, DriverKind::Generic) | (Phase::Stopping, _) => {
            stop(e, StopSignal::Kill, out);
        }
        _ => {}
    }
}
