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
    /// The same restarts by what caused them; adds up to `restarts`.
    pub restarts_by_cause: BTreeMap<RestartCause, u64>,
    /// File-triggered restarts (a `--watch` path or a `--cert` pair changed) that put
    /// a new epoch into service.
    pub rotations: u64,
    /// `--cert-rotation sds`: rotations that changed what the serving epoch serves,
    /// in place (no restart), confirmed by the proxy.
    pub sds_rotations: u64,
    /// Deaths of the serving epoch.
    pub crashes: u64,
    /// New epochs refused or failed, and in-place rotations refused or not served,
    /// by reason.
    pub failures: BTreeMap<FailureReason, u64>,
    /// Trigger → serving of the last restart after the first epoch.
    pub last_restart_ms: Option<Millis>,
    /// Times a watched path could not be watched.
    pub watch_errors: u64,
    /// Trigger → serving of every restart after the first epoch.
    pub restart_durations: RestartDurations,
}

impl Counts {
    /// Count what `report` says happened.
    pub(super) fn record(&mut self, report: &Report) {
        match report {
            Report::RestartStarted { epoch, trigger } if *epoch > 0 => {
                self.restarts += 1;
                *self
                    .restarts_by_cause
                    .entry(RestartCause::of(*trigger))
                    .or_default() += 1;
            }
            Report::Serving {
                epoch,
                trigger,
                restart_ms,
                ..
            } if *epoch > 0 => {
                self.last_restart_ms = Some(*restart_ms);
                self.restart_durations.observe(*restart_ms);
                if trigger.is_some_and(Trigger::is_file) {
                    self.rotations += 1;
                }
            }
            Report::RestartFailed { reason, .. } | Report::RotationFailed { reason, .. } => {
                *self.failures.entry(*reason).or_default() += 1
            }
            Report::Rotated { changed: true, .. } => self.sds_rotations += 1,
            Report::Crashed { .. } => self.crashes += 1,
            Report::WatchFailed { .. } => self.watch_errors += 1,
            _ => {}
        }
    }

    /// Failures of `reason` so far.
    pub fn failures_of(&self, reason: FailureReason) -> u64 {
        self.failures.get(&reason).copied().unwrap_or(0)
    }

    /// Restarts caused by `cause` so far.
    pub fn restarts_of(&self, cause: RestartCause) -> u64 {
        self.restarts_by_cause.get(&cause).copied().unwrap_or(0)
    }
}

/// What caused a restart: the `trigger` label of `baton_restarts_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RestartCause {
    /// SIGHUP.
    Signal,
    /// A `--watch` path, the template or the static bootstrap changed.
    File,
    /// A `--cert` pair changed.
    Cert,
    /// `POST /restart` (`baton restart`).
    Http,
    /// Nothing asked: the serving epoch died and this one replaces it.
    Crash,
}

impl RestartCause {
    /// Every cause, so each series exists from the start.
    pub const ALL: [RestartCause; 5] = [
        RestartCause::Signal,
        RestartCause::File,
        RestartCause::Cert,
        RestartCause::Http,
        RestartCause::Crash,
    ];

    /// The cause of a restart asked for by `trigger` (`None`: a crash recovery).
    pub fn of(trigger: Option<Trigger>) -> Self {
        match trigger {
            Some(Trigger::Signal) => RestartCause::Signal,
            Some(Trigger::FileChange) => RestartCause::File,
            Some(Trigger::CertChange) => RestartCause::Cert,
            Some(Trigger::Api) => RestartCause::Http,
            None => RestartCause::Crash,
        }
    }

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            RestartCause::Signal => "signal",
            RestartCause::File => "file",
            RestartCause::Cert => "cert",
            RestartCause::Http => "http",
            RestartCause::Crash => "crash",
        }
    }
}

/// Upper bounds of the restart-duration buckets, in milliseconds: an Envoy hot
/// restart takes a few hundred ms; one that waits for a drain period, a minute.
pub const RESTART_BUCKETS_MS: [Millis; 11] = [
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000,
];

/// A histogram of restart durations, as plain numbers.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RestartDurations {
    /// Observations per bucket of [`RESTART_BUCKETS_MS`] (not cumulative); the last
    /// entry counts those above every bound.
    pub buckets: [u64; RESTART_BUCKETS_MS.len() + 1],
    /// Sum of every observation.
    pub sum_ms: Millis,
    /// Number of observations.
    pub count: u64,
}

impl RestartDurations {
    /// Count one restart of `ms`.
    pub fn observe(&mut self, ms: Millis) {
        let bucket = RESTART_BUCKETS_MS
            .iter()
            .position(|&bound| ms <= bound)
            .unwrap_or(RESTART_BUCKETS_MS.len());
        self.buckets[bucket] += 1;
        self.sum_ms = self.sum_ms.saturating_add(ms);
        self.count += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_the_first_bucket_that_holds_them() {
        let mut d = RestartDurations::default();
        for ms in [0, 100, 101, 300_000, 300_001] {
            d.observe(ms);
        }
        assert_eq!(d.buckets[0], 2);
        assert_eq!(d.buckets[1], 1);
        assert_eq!(d.buckets[RESTART_BUCKETS_MS.len() - 1], 1);
        assert_eq!(d.buckets[RESTART_BUCKETS_MS.len()], 1);
        assert_eq!(d.count, 5);
        assert_eq!(d.sum_ms, 600_202);
    }

    #[test]
    fn every_trigger_has_its_cause_and_no_trigger_is_a_crash() {
        let causes: Vec<&str> = [
            Some(Trigger::Signal),
            Some(Trigger::FileChange),
            Some(Trigger::CertChange),
            Some(Trigger::Api),
            None,
        ]
        .into_iter()
        .map(|t| RestartCause::of(t).label())
        .collect();
        assert_eq!(causes, ["signal", "file", "cert", "http", "crash"]);
    }
}
