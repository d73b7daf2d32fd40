//! The knobs of the state machine: which handover protocol, and every duration.

use super::backoff::Backoff;
use super::event::Millis;

/// How the proxy hands over from one epoch to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// Envoy's native hot restart: the new epoch drains and terminates its parent
    /// itself. Epochs form chains (one base id each); `--restart-epoch` counts within
    /// a chain.
    Envoy,
    /// baton holds the sockets; it sends the old epoch the drain signal and kills it
    /// after the parent shutdown period.
    Generic,
}

impl DriverKind {
    /// `envoy` or `generic`, as the status endpoint shows it.
    pub fn label(self) -> &'static str {
        match self {
            DriverKind::Envoy => "envoy",
            DriverKind::Generic => "generic",
        }
    }
}

/// The knobs of the state machine, all durations in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Which handover protocol applies.
    pub driver: DriverKind,
    /// The companion window: a trigger this soon after a triggered restart began is
    /// part of it (a SIGHUP and a `POST /restart` from one deploy step are one
    /// restart), as long as that restart's inputs are still what it reads.
    pub gather: Millis,
    /// The driver can tell whether the inputs changed (Envoy: the digest of the
    /// bootstrap it would render now). A triggered restart then reads its inputs at
    /// once, and a companion that comes after the read joins only if they did not
    /// change (`CheckInputs`). Without it (generic driver: the proxy reads files baton
    /// does not know), a triggered restart waits out the window before reading its
    /// inputs. Files a bootstrap names by path (certificates) are not in its digest:
    /// those baton watches raise file triggers of their own, which are never covered.
    pub checks_inputs: bool,
    /// Consecutive crashes (or failed recoveries) tolerated; one more and baton exits.
    pub crash_budget: u32,
    /// Delay between recovery attempts.
    pub backoff: Backoff,
    /// An epoch that served this long before crashing resets the crash count.
    pub stable_after: Millis,
    /// How long an epoch may drain before baton steps in. Envoy: its parent
    /// shutdown time plus a margin (Envoy terminates its own parents); generic: the
    /// parent shutdown duration, after which the group is killed.
    pub drain_deadline: Millis,
    /// Envoy: how long an old epoch is given to drain. A hot restart within that
    /// time would cut its drain short (Envoy terminates the grandparent when a new
    /// child starts), so it waits; an epoch of an abandoned chain is sent SIGTERM
    /// after it.
    pub drain_period: Millis,
    /// Generic driver: at most this many old epochs drain at once; beyond it the
    /// oldest is killed early.
    pub max_draining: usize,
    /// How long a graceful shutdown drains at most before SIGTERM.
    pub termination_drain: Millis,
    /// `--exit-on-zero-active-connections`: on shutdown, after this long, stop as soon
    /// as the serving epoch has no active connection (within `termination_drain`).
    pub exit_on_zero_after: Option<Millis>,
    /// How long after SIGTERM a process gets before SIGKILL.
    pub kill_grace: Millis,
    /// The signal that asks an epoch to drain (generic: `--drain-signal`; Envoy:
    /// SIGTERM). An epoch that leaves by it during shutdown leaves cleanly.
    pub drain_signal: i32,
}
