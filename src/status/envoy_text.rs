//! Envoy's own `/stats/prometheus`, made fit for baton's scrape: each counter's
//! value swapped for the total carried across epochs, the series of baton's sink
//! cluster left out, and any family already in the scrape skipped.
//!
//! Everything else passes through as Envoy wrote it — names, labels, gauges and
//! histograms of the serving epoch — so dashboards and alerts written against Envoy
//! (Istio's among them) query the same series. Lines are rewritten only where a
//! value changes; the text is never re-encoded.
//!
//! **Invariant:** every family of the output is described once, and only families
//! not in `taken` are written (their names are added to it).

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt::Write;

use crate::proxy::envoy::counters::{EnvoyCounters, Reader, SeriesKey};
use crate::proxy::envoy::sink::CLUSTER;

/// Envoy's label for a cluster's name in its Prometheus exposition.
const CLUSTER_LABEL: &str = "envoy_cluster_name";

/// Append Envoy's exposition `text` to `out`, counters from `carried` when Envoy's
/// counters are carried (`None`: Envoy's own values, as with a YAML bootstrap that
/// gets no sink).
pub fn merge(
    text: &str,
    carried: Option<&EnvoyCounters>,
    taken: &mut HashSet<String>,
    out: &mut String,
) {
    let mut reader = carried.map(EnvoyCounters::reader);
    let mut family = Family::default();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let name = words.next().unwrap_or_default();
            family = Family::new(name, words.next().unwrap_or("untyped"), taken, line);
            continue;
        }
        if line.starts_with('#') || line.trim().is_empty() {
            // HELP lines (Envoy writes none) and blank separators are not kept.
            continue;
        }
        let Some(sample) = parse_sample(line) else {
            tracing::debug!(line, "envoy stats: unparsed line left out");
            continue;
        };
        if !family.owns(sample.name) {
            // A sample without a TYPE line of its own: its own untyped family.
            family = Family::new(sample.name, "untyped", taken, "");
        }
        if family.skip || sample.label(CLUSTER_LABEL) == Some(CLUSTER) {
            continue;
        }
        family.describe(out);
        match (&mut reader, family.kind.as_str()) {
            (Some(reader), "counter") => write_counter(reader, &sample, line, out),
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
}

fn write_counter(reader: &mut Reader<'_>, sample: &Sample<'_>, line: &str, out: &mut String) {
    let live = sample
        .value
        .parse::<u64>()
        .unwrap_or_else(|_| sample.value.parse::<f64>().map_or(0, |v| v.max(0.0) as u64));
    let key = SeriesKey::new(
        sample.name,
        sample.labels.iter().map(|(k, v)| (*k, v.as_ref())),
    );
    let value = reader.value(key, live);
    out.push_str(&line[..sample.value_at]);
    // Writing into a String cannot fail.
    let _ = writeln!(out, "{value}");
}

/// The family the lines being read belong to.
#[derive(Debug, Default)]
struct Family {
    name: String,
    kind: String,
    /// Its `# TYPE` line, until its first sample is written.
    header: Option<String>,
    /// Already in the scrape: leave every line of it out.
    skip: bool,
}

impl Family {
    fn new(name: &str, kind: &str, taken: &mut HashSet<String>, header: &str) -> Self {
        let skip = !taken.insert(name.to_string());
        if skip {
            tracing::debug!(name, "envoy stats: family already in the scrape, left out");
        }
        Family {
            name: name.to_string(),
            kind: kind.to_string(),
            header: (!header.is_empty()).then(|| header.to_string()),
            skip,
        }
    }

    /// Whether a sample named `name` belongs to this family.
    fn owns(&self, name: &str) -> bool {
        let Some(suffix) = name.strip_prefix(self.name.as_str()) else {
            return false;
        };
        match self.kind.as_str() {
            "histogram" => matches!(suffix, "" | "_bucket" | "_sum" | "_count"),
            "summary" => matches!(suffix, "" | "_sum" | "_count"),
            _ => suffix.is_empty(),
        }
    }

    /// Write the `# TYPE` line before the first sample written; a family whose every
    /// sample is left out is not described at all.
    fn describe(&mut self, out: &mut String) {
        if let Some(header) = self.header.take() {
            out.push_str(&header);
            out.push('\n');
        }
    }
}

/// One sample line: `name{label="value",…} value [timestamp]`.
#[derive(Debug, PartialEq)]
struct Sample<'a> {
    name: &'a str,
    /// Label names and unescaped values, in the order written.
    labels: Vec<(&'a str, Cow<'a, str>)>,
    /// Where the value starts in the line.
    value_at: usize,
    /// The value as written.
    value: &'a str,
}

impl Sample<'_> {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_ref())
    }
}

/// Parse a sample line of the text exposition format; `None` if it is not one.
fn parse_sample(line: &str) -> Option<Sample<'_>> {
    let bytes = line.as_bytes();
    let name_end = bytes
        .iter()
        .position(|&b| !(b.is_ascii_alphanumeric() || b == b'_' || b == b':'))
        .unwrap_or(bytes.len());
    if name_end == 0 {
        return None;
    }
    let name = &line[..name_end];
    let mut labels = Vec::new();
    let mut at = name_end;
    if bytes.get(at) == Some(&b'{') {
        at += 1;
        loop {
            while bytes.get(at).is_some_and(|b| *b == b',' || *b == b' ') {
                at += 1;
            }
            if bytes.get(at) == Some(&b'}') {
                at += 1;
                break;
            }
            let eq = at + line[at..].find('=')?;
            let label = line[at..eq].trim();
            if bytes.get(eq + 1) != Some(&b'"') {
                return None;
            }
            let (value, end) = quoted(line, eq + 2)?;
            labels.push((label, value));
            at = end;
        }
    }
    let rest = &line[at..];
    let trimmed = rest.trim_start();
    if trimmed.len() == rest.len() && !rest.is_empty() {
        // No space between the name (or labels) and the value.
        return None;
    }
    let value_at = at + (rest.len() - trimmed.len());
    let value = trimmed.split_whitespace().next()?;
    Some(Sample {
        name,
        labels,
        value_at,
        value,
    })
}

/// The label value starting at `start` (just after its opening quote), unescaped, and
/// the index just after its closing quote.
fn quoted(line: &str, start: usize) -> Option<(Cow<'_, str>, usize)> {
    let bytes = line.as_bytes();
    let mut i = start;
    let mut owned: Option<String> = None;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                let value = match owned {
                    Some(s) => Cow::Owned(s),
                    None => Cow::Borrowed(&line[start..i]),
                };
                return Some((value, i + 1));
            }
            b'\\' => {
                let buf = owned.get_or_insert_with(|| line[start..i].to_string());
                let escaped = line[i + 1..].chars().next()?;
                match escaped {
                    'n' => buf.push('\n'),
                    '\\' | '"' => buf.push(escaped),
                    other => {
                        buf.push('\\');
                        buf.push(other);
                    }
                }
                i += 1 + escaped.len_utf8();
            }
            _ => {
                let c = line[i..].chars().next()?;
                if let Some(buf) = owned.as_mut() {
                    buf.push(c);
                }
                i += c.len_utf8();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn merged(text: &str, carried: Option<&EnvoyCounters>, taken: &[&str]) -> String {
        let mut taken: HashSet<String> = taken.iter().map(|s| s.to_string()).collect();
        let mut out = String::new();
        merge(text, carried, &mut taken, &mut out);
        out
    }

    #[test]
    fn sample_lines_parse_with_escaped_labels_and_spacing() {
        let s = parse_sample(r#"envoy_x{a="1",b="say \"hi\"\\n"} 42"#).unwrap();
        assert_eq!(s.name, "envoy_x");
        assert_eq!(s.label("a"), Some("1"));
        assert_eq!(s.label("b"), Some("say \"hi\"\\n"));
        assert_eq!(s.value, "42");
        let s = parse_sample("envoy_y{} 7 1700000000").unwrap();
        assert_eq!((s.labels.len(), s.value), (0, "7"));
        let s = parse_sample("up 1").unwrap();
        assert_eq!((s.name, &"up 1"[s.value_at..]), ("up", "1"));
        assert_eq!(parse_sample("envoy_z{a=\"1} 3"), None);
        assert_eq!(parse_sample("{a=\"1\"} 3"), None);
        assert_eq!(parse_sample("envoy_w{a=\"1\"}3"), None);
        assert_eq!(parse_sample("envoy_v"), None);
        let s = parse_sample("x{a=\"\\é\",b=\"ü\"} 2").unwrap();
        assert_eq!((s.label("a"), s.label("b")), (Some("\\é"), Some("ü")));
    }

    #[test]
    fn no_line_makes_the_parser_panic() {
        let pieces = [
            "x", "{", "}", "a", "=", "\"", "\\", "é", ",", " ", "1", "\n",
        ];
        // Every line of up to five pieces.
        let mut lines = vec![String::new()];
        for _ in 0..5 {
            lines = lines
                .iter()
                .flat_map(|l| pieces.iter().map(move |p| format!("{l}{p}")))
                .collect();
            for line in &lines {
                let _ = parse_sample(line);
            }
        }
    }

    const ENVOY: &str = "# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name=\"baton_metrics_service\"} 9
envoy_cluster_upstream_rq_total{envoy_cluster_name=\"upstream\"} 10

# TYPE envoy_cluster_retry counter
envoy_cluster_retry{envoy_cluster_name=\"upstream\"} 0

# TYPE envoy_server_live gauge
envoy_server_live{} 1

# TYPE envoy_cluster_baton_only counter
envoy_cluster_baton_only{envoy_cluster_name=\"baton_metrics_service\"} 1

# TYPE envoy_cluster_upstream_cx_connect_ms histogram
envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name=\"upstream\",le=\"0.5\"} 1
envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name=\"upstream\",le=\"+Inf\"} 1
envoy_cluster_upstream_cx_connect_ms_sum{envoy_cluster_name=\"upstream\"} 0.25
envoy_cluster_upstream_cx_connect_ms_count{envoy_cluster_name=\"upstream\"} 1
";

    #[test]
    fn counters_show_carried_totals_and_the_sink_cluster_is_left_out() {
        let carried = EnvoyCounters::new();
        carried.add_all([(
            SeriesKey::new(
                "envoy_cluster_upstream_rq_total",
                [("envoy_cluster_name", "upstream")],
            ),
            30,
        )]);
        let out = merged(ENVOY, Some(&carried), &[]);
        assert_eq!(
            out,
            "# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name=\"upstream\"} 30
# TYPE envoy_cluster_retry counter
envoy_cluster_retry{envoy_cluster_name=\"upstream\"} 0
# TYPE envoy_server_live gauge
envoy_server_live{} 1
# TYPE envoy_cluster_upstream_cx_connect_ms histogram
envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name=\"upstream\",le=\"0.5\"} 1
envoy_cluster_upstream_cx_connect_ms_bucket{envoy_cluster_name=\"upstream\",le=\"+Inf\"} 1
envoy_cluster_upstream_cx_connect_ms_sum{envoy_cluster_name=\"upstream\"} 0.25
envoy_cluster_upstream_cx_connect_ms_count{envoy_cluster_name=\"upstream\"} 1
"
        );
    }

    #[test]
    fn without_carrying_envoys_values_pass_through() {
        let out = merged(ENVOY, None, &[]);
        assert!(
            out.contains("envoy_cluster_upstream_rq_total{envoy_cluster_name=\"upstream\"} 10\n")
        );
        assert!(!out.contains(CLUSTER), "{out}");
    }

    #[test]
    fn a_family_already_in_the_scrape_is_left_out_whole() {
        let out = merged(
            ENVOY,
            None,
            &["envoy_server_live", "envoy_cluster_upstream_cx_connect_ms"],
        );
        assert!(!out.contains("envoy_server_live"), "{out}");
        assert!(!out.contains("connect_ms"), "{out}");
        // An untyped sample repeating a family seen before is left out too.
        let out = merged("# TYPE a counter\na 1\nb 2\na 3\n", None, &[]);
        assert_eq!(out, "# TYPE a counter\na 1\nb 2\n");
    }
}
