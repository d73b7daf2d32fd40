//! `step`: one event in, the actions it calls for out. Each event is handled by the
//! module of its concept; what the reports say happened is counted here, once.

use super::action::{Action, Report};
use super::event::{Event, Millis};
use super::state::State;
use super::{chain, handover, recovery, restart, rotation, shutdown};

/// Advance the supervisor by one event that happened at `now` (ms on the shell's
/// monotonic clock). Pure: the same state, time and event always give the same
/// actions.
pub fn step(state: &mut State, now: Millis, event: Event) -> Vec<Action> {
    let mut out = Vec::new();
    let out_ = &mut out;
    match event {
        Event::Start => restart::on_start(state, now, out_),
        Event::RestartRequested(trigger) => restart::on_trigger(state, trigger, now, out_),
        Event::GatherElapsed { epoch } => restart::on_gathered(state, epoch, out_),
        Event::PreflightPassed {
            epoch,
            config_digest,
            certs,
        } => restart::on_preflight_passed(state, epoch, config_digest, certs, out_),
        Event::InputsChecked { epoch, digest } => {
            restart::on_inputs_checked(state, epoch, digest, now, out_)
        }
        Event::PreflightFailed {
            epoch,
            reason,
            message,
        } => recovery::on_preflight_failed(state, epoch, reason, message, now, out_),
        Event::Spawned { epoch, pid } => restart::on_spawned(state, epoch, pid, now, out_),
        Event::SpawnFailed {
            epoch,
            message,
            code,
        } => recovery::on_spawn_failed(state, epoch, message, code, now, out_),
        Event::Ready { epoch } => handover::on_ready(state, epoch, now, out_),
        Event::NotReady { epoch, message } => {
            recovery::on_not_ready(state, epoch, message, now, out_)
        }
        Event::Exited {
            epoch,
            status,
            last_words,
        } => recovery::on_exited(state, epoch, status, last_words, now, out_),
        Event::BackoffElapsed { generation } => {
            recovery::on_backoff_elapsed(state, generation, now, out_)
        }
        Event::ChainRepaired { chain } => {
            if chain::on_repair_done(state, chain, None, out_) {
                restart::resume(state, now, out_);
            }
        }
        Event::ChainRepairFailed { chain, why } => {
            if chain::on_repair_done(state, chain, Some(why), out_) {
                restart::resume(state, now, out_);
            }
        }
        Event::DrainSettled { epoch } => handover::on_drain_settled(state, epoch, now, out_),
        Event::DrainDeadline { epoch } => handover::on_drain_deadline(state, epoch, out_),
        Event::DrainRequested => shutdown::on_drain_requested(state, out_),
        Event::ShutdownRequested => shutdown::on_shutdown_requested(state, out_),
        Event::ShutdownDrainElapsed => shutdown::on_drain_elapsed(state, out_),
        Event::MinimumDrainElapsed => shutdown::on_minimum_drain_elapsed(state, out_),
        Event::ConnectionsDrained => shutdown::on_connections_drained(state, out_),
        Event::ShutdownKillDeadline => shutdown::on_kill_deadline(state, out_),
        Event::Forward { signal } => {
            if let Some(pid) = state.serving().and_then(|e| e.pid) {
                out_.push(Action::Forward { pid, signal });
            }
        }
        Event::WatchFailed { message } => {
            state.watch_error = Some(message.clone());
            state.last_error = Some(format!("file watch: {message}"));
            out_.push(Action::Report(Report::WatchFailed { message }));
        }
        Event::WatchRestored => {
            if state.watch_error.take().is_some() {
                out_.push(Action::Report(Report::WatchRestored));
            }
        }
        Event::RotationRequested => rotation::on_requested(state, now, out_),
        Event::RotationDone {
            rotation,
            certs,
            changed,
        } => {
            rotation::on_done(state, rotation, certs, changed, now, out_);
            restart::resume(state, now, out_);
        }
        Event::RotationFailed {
            rotation,
            reason,
            message,
        } => {
            rotation::on_failed(state, rotation, reason, message, out_);
            restart::resume(state, now, out_);
        }
    }
    for action in &out {
        if let Action::Report(report) = action {
            state.counts.record(report);
        }
    }
    out
}
