//! `GET /stats/prometheus`: baton's own metrics, encoded from the current snapshot,
//! followed in envoy mode by Envoy's own `/stats/prometheus`, so one scrape of one
//! target sees both.
//!
//! **Invariant:** the body is valid Prometheus text exposition (version 0.0.4), the
//! format Envoy speaks: no OpenMetrics `# EOF` marker anywhere, every part ends with a
//! newline, and baton's names (`baton_*`) cannot collide with Envoy's (`envoy_*`).
//! **Invariant:** an Envoy that does not answer within the timeout costs the scrape
//! that long at most and never fails it: baton's part is still served, with
//! `baton_envoy_stats_up 0`.

use std::net::SocketAddr;
use std::time::{Duration, UNIX_EPOCH};

use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;

use super::snapshot::Snapshot;
use crate::http_client;
use crate::stats::export::{to_prometheus, BATON_PREFIX};
use crate::stats::Sample;

/// The `Content-Type` of the combined body.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The whole body of `GET /stats/prometheus` for `snapshot` and the samples of the
/// stats segment (baton's own, already encoded from the snapshot, are left out).
pub async fn scrape(snapshot: &Snapshot, segment: &[Sample], envoy_timeout: Duration) -> Vec<u8> {
    let envoy = match snapshot.envoy_admin {
        Some(admin) => Some(fetch_envoy(admin, envoy_timeout).await),
        None => None,
    };
    let mut body = encode_baton(snapshot, envoy.as_ref().map(Option::is_some)).into_bytes();
    let others = segment.iter().filter(|s| !s.name.starts_with(BATON_PREFIX));
    body.extend_from_slice(to_prometheus(others).as_bytes());
    if let Some(Some(text)) = envoy {
        body.extend_from_slice(&text);
        if !text.ends_with(b"\n") {
            body.push(b'\n');
        }
    }
    body
}

/// Envoy's exposition, or `None` when it did not answer 200 in time.
async fn fetch_envoy(admin: SocketAddr, timeout: Duration) -> Option<Bytes> {
    match http_client::request(admin, Method::GET, "/stats/prometheus", timeout).await {
        Ok((StatusCode::OK, body)) => Some(body),
        Ok((status, _)) => {
            // Debug, not warn: Prometheus scrapes every few seconds and an Envoy
            // that is restarting or down is already reported by readiness.
            tracing::debug!(%admin, %status, "envoy stats: unexpected status");
            None
        }
        Err(e) => {
            tracing::debug!(error = %e, "envoy stats unavailable");
            None
        }
    }
}

/// baton's metrics for `snapshot` in Prometheus text format. `envoy_up` is `None`
/// outside envoy mode, else whether Envoy's stats were fetched.
pub fn encode_baton(snapshot: &Snapshot, envoy_up: Option<bool>) -> String {
    let registry = registry(snapshot, envoy_up);
    let mut text = String::new();
    // Writing into a String cannot fail, and every metric type used here encodes.
    if let Err(e) = prometheus_text::encode(&mut text, &registry) {
        tracing::error!(error = %e, "cannot encode baton's metrics");
    }
    text
}

fn registry(snapshot: &Snapshot, envoy_up: Option<bool>) -> Registry {
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
        "Hot restarts started",
        ConstCounter::new(snapshot.restarts_total),
    );
    // `Family` constructs its members empty, which `ConstCounter` cannot be; the
    // registry is built fresh for every scrape, so counting up from zero sets it.
    let failures = Family::<[(&'static str, String); 1], Counter>::default();
    for (reason, count) in &snapshot.restart_failures {
        failures
            .get_or_create(&[("reason", reason.clone())])
            .inc_by(*count);
    }
    r.register(
        "restart_failures",
        "Restarts that did not put a new epoch into service, by reason",
        failures,
    );
    r.register(
        "rotations",
        "Certificate rotations that led to a restart",
        ConstCounter::new(snapshot.rotations_total),
    );
    r.register(
        "proxy_crashes",
        "Times the serving epoch died",
        ConstCounter::new(snapshot.crashes_total),
    );
    r.register(
        "watch_errors",
        "Times a watched path could not be watched (its changes went unnoticed)",
        ConstCounter::new(snapshot.watch_errors_total),
    );
    if let Some(ms) = snapshot.last_restart_duration_ms {
        let seconds = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        // u64 milliseconds to f64 loses precision only past 2^53 ms.
        seconds.set(ms as f64 / 1000.0);
        r.register(
            "restart_duration_seconds",
            "Duration of the last successful restart, request to ready",
            seconds,
        );
    }
    if let Ok(since) = snapshot.started_at.duration_since(UNIX_EPOCH) {
        r.register(
            "start_time_seconds",
            "When baton started, in seconds since the Unix epoch",
            ConstGauge::new(since.as_secs_f64()),
        );
    }
    if let Some(up) = envoy_up {
        r.register(
            "envoy_stats_up",
            "1 when Envoy's own stats were appended to this scrape, else 0",
            ConstGauge::new(i64::from(up)),
        );
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::SystemTime;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::starting("generic", SystemTime::UNIX_EPOCH);
        s.restarts_total = 3;
        s.restart_failures.insert("config".into(), 2);
        s.crashes_total = 1;
        s.last_restart_duration_ms = Some(1500);
        s
    }

    #[test]
    fn baton_metrics_are_prometheus_text_without_eof() {
        let text = encode_baton(&snapshot(), None);
        for line in [
            "# TYPE baton_restarts_total counter",
            "baton_restarts_total 3",
            "baton_restart_failures_total{reason=\"config\"} 2",
            "baton_proxy_crashes_total 1",
            "baton_restart_duration_seconds 1.5",
            "baton_ready 0",
            "baton_epochs_running 0",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
        assert!(!text.contains("# EOF"), "{text}");
        assert!(!text.contains("envoy_stats_up"), "{text}");
        assert!(!text.contains("baton_epoch "), "no epoch serves: {text}");
    }

    #[test]
    fn envoy_mode_reports_whether_envoy_stats_were_appended() {
        assert!(encode_baton(&snapshot(), Some(false))
            .lines()
            .any(|l| l == "baton_envoy_stats_up 0"));
        assert!(encode_baton(&snapshot(), Some(true))
            .lines()
            .any(|l| l == "baton_envoy_stats_up 1"));
    }
}
