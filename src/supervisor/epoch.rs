//! One epoch as the core knows it, live or gone, and the one enum of its phases.

use serde::{Deserialize, Serialize};

use super::event::{CertInfo, Millis, ProcessExit, Trigger};

/// Where an epoch is in its life. The status endpoint shows the same values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Its configuration is being rendered and validated; no process yet.
    Preparing,
    /// Its process runs and is not ready yet.
    Starting,
    /// It is the newest ready epoch and takes the traffic.
    Serving,
    /// A newer epoch took over (or `POST /drain`); it finishes what it has.
    Draining,
    /// It failed to start and is being killed.
    Failing,
    /// baton sent it SIGTERM or SIGKILL.
    Stopping,
    /// Its process is gone.
    Exited,
}

impl Phase {
    /// Stable lowercase name for logs and the status endpoint.
    pub fn label(self) -> &'static str {
        match self {
            Phase::Preparing => "preparing",
            Phase::Starting => "starting",
            Phase::Serving => "serving",
            Phase::Draining => "draining",
            Phase::Failing => "failing",
            Phase::Stopping => "stopping",
            Phase::Exited => "exited",
        }
    }

    /// A restart is under way while an epoch is in one of these: it prepares, starts,
    /// or is being removed after a failed start (its restart epoch is still taken).
    pub fn in_flight(self) -> bool {
        matches!(self, Phase::Preparing | Phase::Starting | Phase::Failing)
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// One epoch. Read it through [`super::State`]; only [`super::step`] changes it.
/// Times are [`Millis`] on the shell's clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Epoch {
    /// baton's epoch number.
    pub number: u32,
    /// Hot-restart chain (0 for the generic driver).
    pub chain: u32,
    /// Envoy's `--restart-epoch` (the epoch number for the generic driver).
    pub restart_epoch: u32,
    /// Process id, once spawned.
    pub pid: Option<u32>,
    /// Life stage.
    pub phase: Phase,
    /// What asked for it; `None` for the first epoch and crash recoveries.
    pub trigger: Option<Trigger>,
    /// sha256 of its configuration, once its preflight passed.
    pub config_digest: Option<String>,
    /// The `--cert` pairs it serves, as its preflight checked them.
    pub certs: Vec<CertInfo>,
    /// When the first trigger it answers arrived.
    pub requested_at: Millis,
    /// When its process was spawned.
    pub spawned_at: Option<Millis>,
    /// When it started serving.
    pub ready_at: Option<Millis>,
    /// When its process ended.
    pub exited_at: Option<Millis>,
    /// How its process ended.
    pub exit: Option<ProcessExit>,
    /// Its preflight has read (or is reading) its inputs: a trigger from now on
    /// needs a follow-up restart instead of joining this one.
    pub inputs_read: bool,
    /// Envoy: it has drained for the drain period; a restart no longer cuts it short.
    pub drain_settled: bool,
}

impl Epoch {
    /// A new epoch in [`Phase::Preparing`].
    pub(super) fn preparing(
        number: u32,
        chain: u32,
        trigger: Option<Trigger>,
        requested_at: Millis,
    ) -> Self {
        Epoch {
            number,
            chain,
            restart_epoch: 0,
            pid: None,
            phase: Phase::Preparing,
            trigger,
            config_digest: None,
            certs: Vec::new(),
            requested_at,
            spawned_at: None,
            ready_at: None,
            exited_at: None,
            exit: None,
            inputs_read: false,
            drain_settled: false,
        }
    }
}
