//! baton's own metrics, as a prometheus-client registry built from one [`Snapshot`]:
//! the README's metrics table, name for name. Built fresh for every scrape, so every
//! value is a constant of the snapshot.

use std::time::UNIX_EPOCH;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::snapshot::Snapshot;
use crate::supervisor::{RestartDurations, RESTART_BUCKETS_MS};

/// One label, as the families here use it.
type Label = [(&'static str, String); 1];

/// What the scrape knows beside the snapshot.
#[derive(Debug, Clone, Copy, Default)]
pub struct ScrapeFacts {
    /// Envoy mode: whether Envoy's own stats were fetched for this scrape.
    pub envoy_up: Option<bool>,
    /// Envoy mode with carrying: how many Envoy counter series are carried.
    pub carried_series: Option<usize>,
}

/// baton's metrics for `snapshot`, under the prefix `baton_`.
pub fn registry(snapshot: &Snapshot, facts: ScrapeFacts) -> Registry {
    let mut r = Registry::with_prefix("baton");
    if let Some(serving) = snapshot.serving() {
        r.register(
            "epoch",
            "Number of the serving epoch (absent while none serves)",
            ConstGauge::new(i64::from(serving.number)),
        );
    }
    r.register(
        "epochs_running",
        "Epoch processes alive (serving, starting, draining or stopping)",
        ConstGauge::new(i64::try_from(snapshot.running()).unwrap_or(i64::MAX)),
    );
    r.register(
        "ready",
        "1 when an epoch serves and is ready, else 0",
        ConstGauge::new(i64::from(snapshot.readiness.is_ready())),
    );
    r.register(
        "restarts",
        "Hot restarts started, by trigger: signal (SIGHUP), file (a --watch file), cert (a --cert pair), http (POST /restart), crash (recovery after the serving epoch died)",
        counters("trigger", &snapshot.restarts_by_trigger),
    );
    r.register(
        "restart_failures",
        "New epochs refused or failed, by reason; the serving epoch kept serving",
        counters("reason", &snapshot.restart_failures),
    );
    r.register(
        "rotations",
        "File-triggered restarts (a --watch file or a --cert pair changed) that put a new epoch into service",
        ConstCounter::new(snapshot.rotations_total),
    );
    r.register(
        "sds_rotations",
        "--cert-rotation sds: certificate rotations handed to the serving epoch in place (no restart) and confirmed served by Envoy's /certs",
        ConstCounter::new(snapshot.sds_rotations_total.unwrap_or(0)),
    );
    r.register(
        "proxy_crashes",
        "Deaths of the serving epoch",
        ConstCounter::new(snapshot.crashes_total),
    );
    r.register(
        "watch_errors",
        "Times a watched path could not be watched (its changes went unnoticed until it could)",
        ConstCounter::new(snapshot.watch_errors_total),
    );
    r.register(
        "restart_duration_seconds",
        "Restarts from trigger to the new epoch serving",
        DurationHistogram(snapshot.restart_durations.clone()),
    );
    let certs = snapshot.served_certs();
    if !certs.is_empty() {
        let expiry = Family::<Label, Gauge>::default();
        let start = Family::<Label, Gauge>::default();
        for cert in certs {
            let label = [("cert", cert.path.clone())];
            expiry.get_or_create(&label).set(cert.not_after);
            start.get_or_create(&label).set(cert.not_before);
        }
        r.register(
            "cert_expiry_timestamp_seconds",
            "notAfter of each --cert certificate the serving epoch serves (started with, or rotated to in place), in Unix seconds",
            expiry,
        );
        r.register(
            "cert_not_before_timestamp_seconds",
            "notBefore of each --cert certificate the serving epoch serves (started with, or rotated to in place), in Unix seconds",
            start,
        );
    }
    if let Ok(since) = snapshot.started_at.duration_since(UNIX_EPOCH) {
        r.register(
            "start_time_seconds",
            "When baton started, in seconds since the Unix epoch",
            ConstGauge::new(since.as_secs_f64()),
        );
    }
    if let Some(up) = facts.envoy_up {
        r.register(
            "envoy_stats_up",
            "1 when Envoy answered for this scrape in time, else 0 (its last answer, at most 10s old, may stand in)",
            ConstGauge::new(i64::from(up)),
        );
    }
    if let Some(series) = facts.carried_series {
        r.register(
            "envoy_carried_series",
            "Envoy counter series whose totals baton carries across hot restarts",
            ConstGauge::new(i64::try_from(series).unwrap_or(i64::MAX)),
        );
    }
    r
}

/// A counter family with one label, from totals by label value.
fn counters<'a>(
    label: &'static str,
    totals: impl IntoIterator<Item = (&'a String, &'a u64)>,
) -> Family<Label, Counter> {
    // `Family` constructs its members empty, which `ConstCounter` cannot be; the
    // registry is built fresh for every scrape, so counting up from zero sets it.
    let family = Family::<Label, Counter>::default();
    for (value, total) in totals {
        family
            .get_or_create(&[(label, value.clone())])
            .inc_by(*total);
    }
    family
}

/// The core's restart durations, encoded as a Prometheus histogram in seconds.
#[derive(Debug)]
struct DurationHistogram(RestartDurations);

impl EncodeMetric for DurationHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let d = &self.0;
        let mut buckets: Vec<(f64, u64)> = RESTART_BUCKETS_MS
            .iter()
            .zip(&d.buckets)
            .map(|(bound, count)| (*bound as f64 / 1000.0, *count))
            .collect();
        buckets.push((f64::INFINITY, d.buckets[RESTART_BUCKETS_MS.len()]));
        // Millisecond sums stay exact in f64 up to 2^53 ms.
        let sum = d.sum_ms as f64 / 1000.0;
        encoder.encode_histogram::<NoLabelSet>(sum, d.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}
