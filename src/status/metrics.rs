//! `GET /stats/prometheus`: one scrape, one target. baton's own metrics (encoded by
//! prometheus-client from the current snapshot), then the stats segment's (a proxy's
//! own counters and gauges, also through prometheus-client), then in envoy mode
//! Envoy's own `/stats/prometheus` with each counter carried across hot restarts
//! ([`super::envoy_text`]).
//!
//! **Invariant:** the body is valid Prometheus text exposition (version 0.0.4), the
//! format Envoy speaks: no OpenMetrics `# EOF` marker, every family described once
//! and in one block. `baton_*` is baton's namespace and, in envoy mode, `envoy_*` is
//! Envoy's: the segment gets neither, and a later part never repeats a family an
//! earlier one wrote.
//! **Invariant:** an Envoy that does not answer within the timeout costs the scrape
//! that long at most and never fails it: baton's part is still served, with
//! `baton_envoy_stats_up 0`. The timeout fits the scraper's own
//! (`X-Prometheus-Scrape-Timeout-Seconds`), so `up` stays 1 while a hot-restarting
//! Envoy is slow to answer on its admin port; Envoy's last answer, if it is at most
//! [`REUSE_FOR`] old, stands in for it (counters still carried, so still current),
//! and Envoy's series do not vanish from that scrape.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::registry::Registry;

use super::envoy_text;
use super::registry::{registry, ScrapeFacts};
use super::snapshot::Snapshot;
use crate::http_client;
use crate::proxy::envoy::counters::EnvoyCounters;
use crate::stats::export;
use crate::stats::Sample;

/// The `Content-Type` of the combined body.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// How old Envoy's last answer may be to stand in for one it did not give in time:
/// a hot restart keeps Envoy's admin port busy for a second or two.
pub const REUSE_FOR: Duration = Duration::from_secs(10);

/// Envoy's last answer to `/stats/prometheus` and when it came.
#[derive(Debug, Clone, Default)]
pub struct LastEnvoy(Arc<Mutex<Option<(Instant, Bytes)>>>);

impl LastEnvoy {
    fn keep(&self, text: &Bytes) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), text.clone()));
    }

    fn recent(&self) -> Option<Bytes> {
        let last = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &*last {
            Some((at, text)) if at.elapsed() <= REUSE_FOR => Some(text.clone()),
            _ => None,
        }
    }
}

/// How long to wait for Envoy: `limit`, or less when the scraper gives up sooner
/// (its timeout less a fifth, for baton's own part and the transfer).
pub fn envoy_budget(limit: Duration, scraper_timeout: Option<Duration>) -> Duration {
    match scraper_timeout {
        Some(timeout) => limit
            .min(timeout.mul_f64(0.8))
            .max(Duration::from_millis(50)),
        None => limit,
    }
}

/// The whole body of `GET /stats/prometheus` for `snapshot`, the samples of the
/// stats segment (baton's own, already encoded from the snapshot, are left out) and,
/// in envoy mode, Envoy's counters carried across epochs.
pub async fn scrape(
    snapshot: &Snapshot,
    segment: &[Sample],
    carried: Option<&EnvoyCounters>,
    envoy_timeout: Duration,
    last: &LastEnvoy,
) -> String {
    let began = Instant::now();
    let envoy = match snapshot.envoy_admin {
        Some(admin) => Some(fetch_envoy(admin, envoy_timeout).await),
        None => None,
    };
    let fetched = began.elapsed();
    let facts = ScrapeFacts {
        envoy_up: envoy.as_ref().map(Option::is_some),
        carried_series: carried.map(EnvoyCounters::len),
    };
    let envoy = match envoy {
        Some(Some(text)) => {
            last.keep(&text);
            Some(text)
        }
        Some(None) => last.recent(),
        None => None,
    };
    let mut families = HashSet::new();
    let mut body = encode_baton(snapshot, facts, segment, &mut families);
    if let Some(text) = envoy {
        envoy_text::merge(
            &String::from_utf8_lossy(&text),
            carried,
            &mut families,
            &mut body,
        );
    }
    // What a scrape costs baton beside waiting for Envoy (`scripts/bench scrape`).
    tracing::debug!(
        envoy_fetch_us = fetched.as_micros() as u64,
        own_us = (began.elapsed() - fetched).as_micros() as u64,
        bytes = body.len(),
        "scrape served"
    );
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

/// baton's metrics for `snapshot` and the segment's, in Prometheus text format;
/// every family written is added to `families`.
pub fn encode_baton(
    snapshot: &Snapshot,
    facts: ScrapeFacts,
    segment: &[Sample],
    families: &mut HashSet<String>,
) -> String {
    let mut text = encode(&registry(snapshot, facts));
    families.extend(described(&text));
    let mut reserved = vec!["baton_"];
    if snapshot.envoy_admin.is_some() {
        reserved.push("envoy_");
    }
    // baton's own entries of the segment are the registry's, already written.
    let proxies = segment
        .iter()
        .filter(|s| !s.name.starts_with(export::BATON_PREFIX));
    let mut others = Registry::default();
    export::register(&mut others, proxies, &reserved, families);
    text.push_str(&encode(&others));
    text
}

fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail, and every metric type used here encodes.
    if let Err(e) = prometheus_text::encode(&mut text, registry) {
        tracing::error!(error = %e, "cannot encode baton's metrics");
    }
    text
}

/// The names of the families `text` describes.
fn described(text: &str) -> impl Iterator<Item = String> + '_ {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split(' ').next())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Kind;
    use crate::supervisor::CertInfo;
    use std::time::SystemTime;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::starting("generic", SystemTime::UNIX_EPOCH);
        s.restarts_total = 3;
        s.restarts_by_trigger.insert("signal".into(), 2);
        s.restarts_by_trigger.insert("cert".into(), 1);
        s.restart_failures.insert("config".into(), 2);
        s.crashes_total = 1;
        s.restart_durations.observe(1500);
        s.restart_durations.observe(200);
        s
    }

    fn baton_text(snapshot: &Snapshot, facts: ScrapeFacts, segment: &[Sample]) -> String {
        encode_baton(snapshot, facts, segment, &mut HashSet::new())
    }

    #[test]
    fn baton_metrics_are_prometheus_text_without_eof() {
        let text = baton_text(&snapshot(), ScrapeFacts::default(), &[]);
        for line in [
            "# TYPE baton_restarts_total counter",
            "baton_restarts_total{trigger=\"signal\"} 2",
            "baton_restarts_total{trigger=\"cert\"} 1",
            "baton_restart_failures_total{reason=\"config\"} 2",
            "baton_proxy_crashes_total 1",
            "# TYPE baton_restart_duration_seconds histogram",
            "baton_restart_duration_seconds_bucket{le=\"0.25\"} 1",
            "baton_restart_duration_seconds_bucket{le=\"2.5\"} 2",
            "baton_restart_duration_seconds_bucket{le=\"+Inf\"} 2",
            "baton_restart_duration_seconds_sum 1.7",
            "baton_restart_duration_seconds_count 2",
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
        assert!(!text.contains("cert_expiry"), "no pair: {text}");
    }

    #[test]
    fn envoy_mode_reports_whether_envoy_stats_were_appended() {
        let up = |envoy_up| {
            let facts = ScrapeFacts {
                envoy_up: Some(envoy_up),
                carried_series: Some(12),
            };
            baton_text(&snapshot(), facts, &[])
        };
        assert!(up(false).lines().any(|l| l == "baton_envoy_stats_up 0"));
        assert!(up(true).lines().any(|l| l == "baton_envoy_stats_up 1"));
        assert!(up(true)
            .lines()
            .any(|l| l == "baton_envoy_carried_series 12"));
    }

    #[test]
    fn certificates_of_the_serving_epoch_have_expiry_gauges() {
        use crate::status::EpochStatus;
        use crate::supervisor::Phase;
        let mut s = snapshot();
        s.epochs = vec![EpochStatus {
            number: 1,
            pid: Some(7),
            state: Phase::Serving,
            trigger: None,
            started_at: None,
            ready_at: None,
            exited_at: None,
            config_digest: None,
            exit_status: None,
            restart_epoch: 1,
            chain: 0,
            certs: vec![CertInfo {
                path: "/certs/tls.crt".into(),
                subject: "CN=example.com".into(),
                serial: "1A".into(),
                not_before: 1_700_000_000,
                not_after: 1_800_000_000,
            }],
        }];
        let text = baton_text(&s, ScrapeFacts::default(), &[]);
        for line in [
            "# TYPE baton_cert_expiry_timestamp_seconds gauge",
            "baton_cert_expiry_timestamp_seconds{cert=\"/certs/tls.crt\"} 1800000000",
            "baton_cert_not_before_timestamp_seconds{cert=\"/certs/tls.crt\"} 1700000000",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
    }

    #[test]
    fn segment_metrics_follow_baton_s_without_taking_its_names() {
        let sample = |name: &str, kind, value| Sample {
            name: name.into(),
            kind,
            value,
        };
        let segment = [
            sample("baton.restarts", Kind::Counter, 9),
            sample("baton_ready", Kind::Gauge, 5),
            sample("requests", Kind::Counter, 4),
            sample("connections", Kind::Gauge, 2),
        ];
        let text = baton_text(&snapshot(), ScrapeFacts::default(), &segment);
        assert!(text.lines().any(|l| l == "requests_total 4"), "{text}");
        assert!(text.lines().any(|l| l == "connections 2"), "{text}");
        assert!(text.lines().any(|l| l == "baton_ready 0"), "{text}");
        assert!(!text.contains(" 9\n") && !text.contains(" 5\n"), "{text}");
    }
}
