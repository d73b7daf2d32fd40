//! Segment samples as Prometheus text or JSON, for `GET /stats/segment`,
//! `/stats/prometheus` and `baton stats`.
//!
//! Names are made Prometheus-safe (`[a-zA-Z0-9_:]`, other bytes become `_`, a leading
//! digit gets a `_` prefix). Counters keep their name as given plus `_total` unless
//! it already ends so; gauges keep it as given. The text is prometheus-client's.

use std::collections::HashSet;

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

use super::layout::Kind;
use super::segment::Sample;

/// Prefix of baton's own metrics in the segment.
pub const BATON_PREFIX: &str = "baton.";

/// A sample as JSON.
#[derive(Debug, Serialize)]
pub struct JsonSample<'a> {
    /// Name as stored.
    pub name: &'a str,
    /// `counter` or `gauge`.
    pub kind: &'static str,
    /// Counter total or summed gauge.
    pub value: i128,
}

/// The samples as a JSON array.
pub fn to_json(samples: &[Sample]) -> String {
    let list: Vec<JsonSample<'_>> = samples
        .iter()
        .map(|s| JsonSample {
            name: &s.name,
            kind: kind_label(s.kind),
            value: s.value,
        })
        .collect();
    serde_json::to_string_pretty(&list).unwrap_or_else(|_| "[]".into()) + "\n"
}

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    }
}

/// Register `samples` in `registry` (prometheus-client encodes them): a counter as
/// `<name>_total`, a gauge as `<name>`, names made Prometheus-safe. A sample is left
/// out when its family name starts with one of `reserved` (namespaces others own in
/// the same scrape) or is already in `families` (two names that sanitise alike); the
/// name of every family registered is added to `families`.
pub fn register<'a>(
    registry: &mut Registry,
    samples: impl IntoIterator<Item = &'a Sample>,
    reserved: &[&str],
    families: &mut HashSet<String>,
) {
    for s in samples {
        let name = prometheus_name(&s.name);
        let help = format!("stats segment: {}", s.name);
        // prometheus-client adds `_total` to a counter's name.
        let (family, base) = match s.kind {
            Kind::Counter => {
                let base = name.strip_suffix("_total").unwrap_or(&name).to_string();
                (format!("{base}_total"), base)
            }
            Kind::Gauge => (name.clone(), name),
        };
        if reserved.iter().any(|r| family.starts_with(r)) || !families.insert(family.clone()) {
            tracing::debug!(name = %s.name, family, "segment metric left out of the scrape");
            continue;
        }
        match s.kind {
            // A counter's total is a u64 and a gauge's sum an i64, by construction.
            Kind::Counter => registry.register(base, help, ConstCounter::new(s.value as u64)),
            Kind::Gauge => registry.register(base, help, ConstGauge::new(s.value as i64)),
        }
    }
}

/// The samples as Prometheus text (version 0.0.4), every one of them (baton's own
/// included): `GET /stats/segment?format=prometheus` and `baton stats`.
pub fn to_prometheus(samples: &[Sample]) -> String {
    let mut registry = Registry::default();
    register(&mut registry, samples, &[], &mut HashSet::new());
    let mut text = String::new();
    // Writing into a String cannot fail, and counters and gauges always encode.
    let _ = prometheus_text::encode(&mut text, &registry);
    text
}

/// `envoy.http.ingress_http.downstream_rq_total` → `envoy_http_ingress_http_downstream_rq_total`.
pub fn prometheus_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(name: &str, kind: Kind, value: i128) -> Sample {
        Sample {
            name: name.into(),
            kind,
            value,
        }
    }

    #[test]
    fn prometheus_text_has_safe_names_and_types() {
        let samples = [
            sample(
                "envoy.http.ingress_http.downstream_rq_total",
                Kind::Counter,
                7,
            ),
            sample("requests", Kind::Counter, 3),
            sample("9lives-gauge", Kind::Gauge, -2),
        ];
        let text = to_prometheus(&samples);
        for line in [
            "# TYPE envoy_http_ingress_http_downstream_rq_total counter",
            "envoy_http_ingress_http_downstream_rq_total 7",
            "# TYPE requests_total counter",
            "requests_total 3",
            "# TYPE _9lives_gauge gauge",
            "_9lives_gauge -2",
            "# HELP requests_total stats segment: requests.",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing in:\n{text}"
            );
        }
    }

    #[test]
    fn reserved_and_colliding_families_are_left_out() {
        let samples = [
            sample("baton_restarts", Kind::Counter, 1),
            sample("a.b", Kind::Counter, 2),
            sample("a_b_total", Kind::Counter, 3),
            sample("a_b_total", Kind::Gauge, 4),
            sample("c", Kind::Gauge, 5),
        ];
        let mut registry = Registry::default();
        let mut families = HashSet::new();
        register(&mut registry, &samples, &["baton_"], &mut families);
        let mut text = String::new();
        prometheus_text::encode(&mut text, &registry).unwrap();
        let values: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(values, ["a_b_total 2", "c 5"], "{text}");
        assert_eq!(
            families,
            HashSet::from(["a_b_total".to_string(), "c".to_string()])
        );
    }

    #[test]
    fn json_lists_name_kind_and_value() {
        let json: serde_json::Value =
            serde_json::from_str(&to_json(&[sample("a.b", Kind::Gauge, 5)])).unwrap();
        assert_eq!(
            json,
            serde_json::json!([{"name": "a.b", "kind": "gauge", "value": 5}])
        );
    }
}
