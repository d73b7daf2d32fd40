//! What every driver's supervisor runs with besides the driver itself: the state
//! machine's policy, the file triggers and the status server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{StatusAddr, SupervisionArgs, Switch, TriggerArgs};
use crate::defaults;
use crate::supervisor::{Backoff, DriverKind, Policy};

use super::Problems;

/// Timing, triggers, the status server and the stats segment.
#[derive(Debug, Clone)]
pub struct Supervision {
    /// The state machine's knobs.
    pub policy: Policy,
    /// Status server address, `None` for `--status-addr off`.
    pub status_addr: Option<SocketAddr>,
    /// Files and directories whose content changes trigger a restart.
    pub watched: Vec<PathBuf>,
    /// What must exist before the first epoch starts (waited for up to
    /// `cert_wait`): the `--cert` files and `--watch` paths. A template or static
    /// bootstrap file is not waited for: a missing one is a configuration error.
    pub wait_for: Vec<PathBuf>,
    /// The files of `--cert` pairs among them: a change there is a certificate
    /// rotation (`trigger="cert"`), elsewhere a file change (`trigger="file"`).
    pub cert_files: Vec<PathBuf>,
    /// `--cert-rotation sds`: a rotation is handed to the serving epoch in place
    /// (`RotationRequested`) instead of restarting.
    pub certs_in_place: bool,
    /// Quiet period of the file watcher.
    pub debounce: Duration,
    /// Longest a burst of file events can delay a restart.
    pub debounce_cap: Duration,
    /// Random delay up to this before a file-triggered restart.
    pub restart_jitter: Duration,
    /// How long to wait at startup for watched files to exist.
    pub cert_wait: Duration,
    /// Slots of the stats segment.
    pub stats_slots: u32,
    /// Check the memory limit before every restart (`--memory-check`).
    pub memory_check: bool,
}

/// The driver-specific parts of the policy.
#[derive(Debug, Clone, Copy)]
pub(super) struct Handover {
    /// Which protocol.
    pub driver: DriverKind,
    /// How long an old epoch gets before another restart may cut it short.
    pub drain_period: Duration,
    /// When an old epoch is stopped after a handover.
    pub parent_shutdown: Duration,
    /// Old epochs draining at once (generic driver).
    pub max_draining: usize,
    /// The signal that asks an epoch to drain.
    pub drain_signal: i32,
}

/// The files baton watches, in the three roles they play.
pub(super) struct Watching {
    /// Every path whose content changes trigger a restart.
    pub watched: Vec<PathBuf>,
    /// Those that must exist before the first epoch starts.
    pub wait_for: Vec<PathBuf>,
    /// Those that belong to `--cert` pairs (a change there is a rotation).
    pub cert_files: Vec<PathBuf>,
    /// A rotation goes to the serving epoch in place (`--cert-rotation sds`).
    pub certs_in_place: bool,
}

/// Validate the timing flags and build the supervision settings.
pub(super) fn supervision(
    s: &SupervisionArgs,
    t: &TriggerArgs,
    handover: Handover,
    watching: Watching,
    problems: &mut Problems,
) -> Supervision {
    if s.ready_timeout.is_zero() {
        problems.push("--ready-timeout must be more than 0");
    }
    Supervision {
        policy: policy(s, handover),
        status_addr: match t.status_addr {
            StatusAddr::Off => None,
            StatusAddr::At(addr) => Some(addr),
        },
        watched: watching.watched,
        wait_for: watching.wait_for,
        cert_files: watching.cert_files,
        certs_in_place: watching.certs_in_place,
        debounce: t.debounce,
        debounce_cap: t.debounce_cap.max(t.debounce),
        restart_jitter: t.restart_jitter,
        cert_wait: t.cert_wait,
        stats_slots: s.stats_slots,
        memory_check: s.memory_check == Switch::On,
    }
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// The state machine's knobs from the timing flags.
fn policy(s: &SupervisionArgs, handover: Handover) -> Policy {
    let ms = millis;
    let drain = &s.drain;
    let drain_deadline = match handover.driver {
        DriverKind::Envoy => handover.parent_shutdown + defaults::DRAIN_DEADLINE_MARGIN,
        DriverKind::Generic => handover.parent_shutdown,
    };
    Policy {
        driver: handover.driver,
        gather: ms(defaults::GATHER),
        // baton renders Envoy's bootstrap itself, so a companion trigger can be checked
        // against it instead of waited for.
        checks_inputs: handover.driver == DriverKind::Envoy,
        crash_budget: s.crash_budget,
        backoff: Backoff {
            base: ms(s.crash_backoff),
            cap: ms(defaults::BACKOFF_CAP.max(s.crash_backoff)),
        },
        stable_after: ms(defaults::STABLE_AFTER),
        drain_deadline: ms(drain_deadline),
        drain_period: ms(handover.drain_period),
        max_draining: handover.max_draining,
        termination_drain: ms(drain.termination_drain_duration),
        exit_on_zero_after: drain
            .exit_on_zero_active_connections
            .then(|| ms(drain.minimum_drain_duration)),
        kill_grace: ms(defaults::KILL_GRACE),
        drain_signal: handover.drain_signal,
    }
}
