//! baton's own metrics, kept in the stats segment so they outlive every epoch and a
//! `baton stats --pid` sees them too. Names start with [`BATON_PREFIX`]. The numbers
//! are the core's ([`crate::supervisor::Counts`]); this only publishes them.

use crate::stats::export::BATON_PREFIX;
use crate::stats::{Counter, Gauge, Segment, StatsError};
use crate::supervisor::{FailureReason, Phase, State};

/// Handles on baton's metrics in the segment.
pub(super) struct BatonMetrics {
    epoch: Gauge,
    epochs_running: Gauge,
    restarts: Counter,
    rotations: Counter,
    sds_rotations: Counter,
    crashes: Counter,
    restart_duration_ms: Gauge,
    watch_errors: Counter,
    failures: Vec<(FailureReason, Counter)>,
}

impl BatonMetrics {
    /// Claim baton's slots in `segment`.
    pub fn new(segment: &Segment) -> Result<Self, StatsError> {
        let name = |n: &str| format!("{BATON_PREFIX}{n}");
        let failures = FailureReason::ALL
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
            sds_rotations: segment.counter(&name("sds_rotations"))?,
            crashes: segment.counter(&name("proxy_crashes"))?,
            restart_duration_ms: segment.gauge(&name("restart_duration_ms"))?,
            watch_errors: segment.counter(&name("watch_errors"))?,
            failures,
        })
    }

    /// Bring the segment up to date with the core's counts and epochs.
    pub fn publish(&self, state: &State) {
        let counts = state.counts();
        advance(&self.restarts, counts.restarts);
        advance(&self.rotations, counts.rotations);
        advance(&self.sds_rotations, counts.sds_rotations);
        advance(&self.crashes, counts.crashes);
        advance(&self.watch_errors, counts.watch_errors);
        for (reason, counter) in &self.failures {
            advance(counter, counts.failures_of(*reason));
        }
        if let Some(ms) = counts.last_restart_ms {
            self.restart_duration_ms
                .set(i64::try_from(ms).unwrap_or(i64::MAX));
        }
        self.epoch
            .set(state.serving().map_or(-1, |e| i64::from(e.number)));
        let running = state
            .epochs()
            .iter()
            .filter(|e| e.pid.is_some() && e.phase != Phase::Exited)
            .count();
        self.epochs_running.set(running as i64);
    }
}

/// Counters only go up: add what the core counted since the last publish.
fn advance(counter: &Counter, total: u64) {
    let published = counter.get();
    if total > published {
        counter.add(total - published);
    }
}
