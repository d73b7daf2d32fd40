//! Segment samples as Prometheus text or JSON, for `GET /stats/segment`,
//! `/stats/prometheus` and `baton stats`.
//!
//! Names are made Prometheus-safe (`[a-zA-Z0-9_:]`, other bytes become `_`, a leading
//! digit gets a `_` prefix). Counters keep their name as given plus `_total` unless
//! it already ends so; gauges keep it as given.

use std::fmt::Write;

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

/// The samples as Prometheus text (version 0.0.4), one `# TYPE` line each.
pub fn to_prometheus<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> String {
    let mut text = String::new();
    for s in samples {
        let mut name = prometheus_name(&s.name);
        let kind = match s.kind {
            Kind::Counter => {
                if !name.ends_with("_total") {
                    name.push_str("_total");
                }
                "counter"
            }
            Kind::Gauge => "gauge",
        };
        // Writing into a String cannot fail.
        let _ = writeln!(text, "# TYPE {name} {kind}\n{name} {}", s.value);
    }
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
        assert_eq!(
            to_prometheus(&samples),
            "# TYPE envoy_http_ingress_http_downstream_rq_total counter\n\
             envoy_http_ingress_http_downstream_rq_total 7\n\
             # TYPE requests_total counter\nrequests_total 3\n\
             # TYPE _9lives_gauge gauge\n_9lives_gauge -2\n"
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
