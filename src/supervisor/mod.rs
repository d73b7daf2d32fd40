//! The epoch supervisor: a pure state machine and the vocabulary it speaks.
//!
//! Everything that can happen to baton — a trigger, a finished preflight, a child's
//! exit, a timer — arrives as one [`Event`]; [`step`] updates the [`State`] and
//! answers with the [`Action`]s the shell must carry out. The core does no I/O and
//! reads no clock: time arrives inside events (`at`) and timers are actions the shell
//! schedules and later reports back as events.
//!
//! **Invariant:** at most one restart is in flight (an epoch preparing or starting);
//! triggers that arrive meanwhile are coalesced into one follow-up.
//! **Invariant:** a new epoch is only started when no epoch is initialising, which for
//! Envoy also guarantees `--restart-epoch` is exactly (highest running) + 1.
//! **Invariant:** a failed new epoch never touches the serving one.

mod action;
mod backoff;
mod event;
pub mod state;

pub use action::{Action, Launch, Report, StopSignal};
pub use backoff::Backoff;
pub use event::{Event, FailureReason, Millis, ProcessExit, Trigger};
pub use state::{step, DriverKind, EpochState, EpochView, Policy, State};

#[cfg(test)]
mod tests;
