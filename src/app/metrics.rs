//! baton's own metrics, kept in the stats segment so they outlive every epoch and a
//! `baton stats --pid` sees them too. Names start with [`BATON_PREFIX`].

use std::collections::BTreeMap;

use crate::stats::export::BATON_PREFIX;
use crate::stats::{Counter, Gauge, Segment, StatsError};
use crate::supervisor::FailureReason;

/// Every failure reason, so each `restart_failures` series exists from the start.
const REASONS: [FailureReason; 7] = [
    FailureReason::Template,
    FailureReason::Config,
    FailureReason::Cert,
    FailureReason::Preflight,
    FailureReason::Spawn,
    FailureReason::NotReady,
    FailureReason::Exited,
];

/// Handles on baton's metrics in the segment.
pub struct BatonMetrics {
    /// Number of the serving epoch.
    pub epoch: Gauge,
    /// Epoch processes alive.
    pub epochs_running: Gauge,
    /// Hot restarts started.
    pub restarts: Counter,
    /// File-triggered restarts that put a new epoch into service.
    pub rotations: Counter,
    /// Deaths of the serving epoch.
    pub crashes: Counter,
    /// Trigger → ready of the last restart.
    pub restart_duration_ms: Gauge,
    failures: Vec<(FailureReason, Counter)>,
}

impl BatonMetrics {
    /// Claim baton's slots in `segment`.
    pub fn new(segment: &Segment) -> Result<Self, StatsError> {
        let name = |n: &str| format!("{BATON_PREFIX}{n}");
        let failures = REASONS
            .iter()
            .map(|r| {
                Ok((
                    *r,
                    segment.counter(&name(&format!("restart_failures.{}", r.label())))?,
                ))
            })
            .collect::<Result<_, StatsError>>()?;
        Ok(BatonMetrics {
            epoch: segment.gauge(&name("epoch"))?,
            epochs_running: segment.gauge(&name("epochs_running"))?,
            restarts: segment.counter(&name("restarts"))?,
            rotations: segment.counter(&name("rotations"))?,
            crashes: segment.counter(&name("proxy_crashes"))?,
            restart_duration_ms: segment.gauge(&name("restart_duration_ms"))?,
            failures,
        })
    }

    /// Count a refused restart.
    pub fn failure(&self, reason: FailureReason) {
        if let Some((_, c)) = self.failures.iter().find(|(r, _)| *r == reason) {
            c.inc();
        }
    }

    /// Refused restarts by reason label.
    pub fn failures(&self) -> BTreeMap<String, u64> {
        self.failures
            .iter()
            .map(|(r, c)| (r.label().to_string(), c.get()))
            .collect()
    }
}
