//! What the core counts, from the reports it makes: the one place the counting
//! rules live (the shell only publishes these numbers).

use std::collections::BTreeMap;

use super::action::Report;
use super::event::{FailureReason, Millis, Trigger};

/// Totals since baton started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counts {
    /// Restarts started after the first epoch: triggered ones and crash recoveries.
    pub restarts: u64,
    /// File-triggered restarts that put a new epoch into service.
    pub rotations: u64,
    /// Deaths of the serving epoch.
    pub crashes: u64,
    /// New epochs refused or failed, by reason.
    pub failures: BTreeMap<FailureReason, u64>,
    /// Trigger → serving of the last restart after the first epoch.
    pub last_restart_ms: Option<Millis>,
    /// Times a watched path could not be watched.
    pub watch_errors: u64,
}

impl Counts {
    /// Count what `report` says happened.
    pub(super) fn record(&mut self, report: &Report) {
        match report {
            Report::RestartStarted { epoch, .. } if *epoch > 0 => self.restarts += 1,
            Report::Serving {
                epoch,
                trigger,
                restart_ms,
                ..
            } if *epoch > 0 => {
                self.last_restart_ms = Some(*restart_ms);
                if *trigger == Some(Trigger::FileChange) {
                    self.rotations += 1;
                }
            }
            Report::RestartFailed { reason, .. } => *self.failures.entry(*reason).or_default() += 1,
            Report::Crashed { .. } => self.crashes += 1,
            Report::WatchFailed { .. } => self.watch_errors += 1,
            _ => {}
        }
    }

    /// Failures of `reason` so far.
    pub fn failures_of(&self, reason: FailureReason) -> u64 {
        self.failures.get(&reason).copied().unwrap_or(0)
    }
}
