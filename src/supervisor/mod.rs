//! The epoch supervisor: a pure state machine and the vocabulary it speaks.
//!
//! Everything that can happen to baton — a trigger, a finished preflight, a child's
//! exit, a timer — arrives as one [`Event`] with the time it happened; [`step`]
//! updates the [`State`] and answers with the [`Action`]s the shell must carry out.
//! The core does no I/O and reads no clock: time arrives with events, and a timer is
//! an [`Action::Schedule`] the shell later reports back as the event it carries.
//! The core owns every fact about the epochs (phases, times, history, counts); the
//! status server's snapshot is derived from [`State`], never mirrored.
//!
//! Code map: [`step`] dispatches · `restart` (trigger → gather → preflight → spawn)
//! · `handover` (a new epoch serves, old ones drain) · `chain` (Envoy's hot-restart
//! chains) · `recovery` (exits, crashes, backoff) · `rotation` (certificates
//! handed to the serving epoch in place, `--cert-rotation sds`) · `shutdown` (drain
//! on request, termination) · `state` / `epoch` / `counts` (the memory) · `policy` (the knobs).
//!
//! **Invariant:** at most one restart is in flight (an epoch preparing, starting or
//! failing); triggers that arrive meanwhile are coalesced into one follow-up.
//! **Invariant:** a new epoch is only started when no epoch is initialising, which for
//! Envoy also guarantees `--restart-epoch` is exactly (highest running) + 1.
//! **Invariant:** a failed new epoch never touches the serving one.
//! **Invariant:** an in-place rotation and a restart are never under way together.
//! **Invariant:** every spawned epoch is eventually serving, stopped or exited, and a
//! shutdown always ends in `Exit`.
//! These are checked after every step of generated histories (`proptests`).

mod action;
mod backoff;
mod chain;
mod counts;
mod epoch;
mod event;
mod handover;
mod policy;
mod recovery;
mod restart;
mod rotation;
mod shutdown;
mod state;
mod step;

pub use action::{Action, Launch, Report, StopSignal};
pub use backoff::Backoff;
pub use counts::{RestartCause, RestartDurations, RESTART_BUCKETS_MS};
pub use epoch::{Epoch, Phase};
pub use event::{CertInfo, Event, FailureReason, Millis, ProcessExit, Trigger};
pub use policy::{DriverKind, Policy};
pub use state::State;
#[cfg(test)]
pub use state::HISTORY;
pub use step::step;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;
