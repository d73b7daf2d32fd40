//! Envoy's counters carried across epochs: per labelled series, the sum of every
//! delta any epoch reported through baton's sink ([`super::sink`]).
//!
//! A series is named as Envoy's own `/stats/prometheus` names it: `envoy_` and the
//! tag-extracted name, sanitised, with the tags as labels ([`SeriesKey`]), so the
//! scrape can swap the value of each counter Envoy exports for the carried total.
//!
//! Kept in baton's memory, not in the stats segment: nothing but baton writes them,
//! the segment lives exactly as long as baton anyway, and a labelled series name
//! (Istio's cluster names alone run to 60 bytes) does not fit the segment's 95-byte
//! names. The table grows with the series, without a configured limit.
//!
//! **Invariant:** the value exported for a series never goes backwards (see
//! [`Reader::value`]).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

/// A series as Envoy's Prometheus exposition names it, in one canonical text:
/// `name{label="value",…}` with the labels sorted by name and values escaped as the
/// exposition format escapes them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SeriesKey(String);

impl SeriesKey {
    /// The key of `name` with `labels` (unescaped values, in any order).
    pub fn new<'a>(name: &str, labels: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut labels: Vec<(&str, &str)> = labels.into_iter().collect();
        labels.sort_unstable();
        let mut key = String::with_capacity(name.len() + 32 * labels.len() + 2);
        key.push_str(name);
        key.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                key.push(',');
            }
            key.push_str(label);
            key.push_str("=\"");
            for c in value.chars() {
                match c {
                    '\\' => key.push_str("\\\\"),
                    '"' => key.push_str("\\\""),
                    '\n' => key.push_str("\\n"),
                    c => key.push(c),
                }
            }
            key.push('"');
        }
        key.push('}');
        SeriesKey(key)
    }

    /// The key as text.
    #[cfg(test)]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Envoy's Prometheus name for a tag-extracted stat name:
/// `http.downstream_rq_total` → `envoy_http_downstream_rq_total`.
pub fn prometheus_name(tag_extracted: &str) -> String {
    format!("envoy_{}", sanitize(tag_extracted))
}

/// Envoy's sanitising of names and label names: every byte outside `[a-zA-Z0-9_]`
/// becomes `_`.
pub fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

/// The carried totals, shared by the receiver (writer) and the status server.
#[derive(Debug, Default)]
pub struct EnvoyCounters {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    totals: HashMap<SeriesKey, u64>,
    /// Values served for series nothing was carried for yet (see [`Reader::value`]).
    floors: HashMap<SeriesKey, u64>,
}

impl EnvoyCounters {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add each `(series, delta)`; one lock for a whole flush.
    pub fn add_all(&self, deltas: impl IntoIterator<Item = (SeriesKey, u64)>) {
        let mut inner = self.lock();
        for (key, delta) in deltas {
            if delta == 0 && inner.totals.contains_key(&key) {
                continue;
            }
            let total = inner.totals.entry(key).or_insert(0);
            *total = total.saturating_add(delta);
        }
    }

    /// How many series are carried.
    pub fn len(&self) -> usize {
        self.lock().totals.len()
    }

    /// The carried total of one series, if any epoch reported it.
    #[cfg(test)]
    pub fn total(&self, key: &SeriesKey) -> Option<u64> {
        self.lock().totals.get(key).copied()
    }

    /// Read values for one scrape, holding the table for its duration.
    pub fn reader(&self) -> Reader<'_> {
        Reader { inner: self.lock() }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The table, held for one scrape.
pub struct Reader<'a> {
    inner: MutexGuard<'a, Inner>,
}

impl Reader<'_> {
    /// The value to export for `key`, whose serving epoch shows `live` itself.
    ///
    /// The carried total, which includes every epoch's increments up to its last
    /// flush. A series nothing was carried for yet (it appeared after the last flush)
    /// shows the serving epoch's own value, which is then remembered as a floor: the
    /// first flush may carry a little less (increments between Envoy's flush and the
    /// scrape), and a counter must not go backwards in between. The floor is dropped
    /// once the carried total reaches it.
    pub fn value(&mut self, key: SeriesKey, live: u64) -> u64 {
        let inner = &mut *self.inner;
        match (
            inner.totals.get(&key).copied(),
            inner.floors.get(&key).copied(),
        ) {
            (Some(total), None) => total,
            (Some(total), Some(floor)) if total >= floor => {
                inner.floors.remove(&key);
                total
            }
            (Some(_), Some(floor)) => floor,
            (None, floor) => {
                let value = floor.unwrap_or(0).max(live);
                if value > 0 {
                    inner.floors.insert(key, value);
                }
                value
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str, labels: &[(&str, &str)]) -> SeriesKey {
        SeriesKey::new(name, labels.iter().copied())
    }

    #[test]
    fn keys_sort_labels_and_escape_values() {
        let k = key("envoy_x", &[("b", "say \"hi\"\n"), ("a", "back\\slash")]);
        assert_eq!(k.as_str(), r#"envoy_x{a="back\\slash",b="say \"hi\"\n"}"#);
        assert_eq!(
            k,
            key("envoy_x", &[("a", "back\\slash"), ("b", "say \"hi\"\n")])
        );
        assert_eq!(key("envoy_y", &[]).as_str(), "envoy_y{}");
    }

    #[test]
    fn names_are_sanitised_as_envoy_does() {
        assert_eq!(
            prometheus_name("http.downstream_rq_total"),
            "envoy_http_downstream_rq_total"
        );
        assert_eq!(sanitize("envoy.cluster_name"), "envoy_cluster_name");
        assert_eq!(sanitize("a-b:c"), "a_b_c");
    }

    #[test]
    fn deltas_add_up_per_series() {
        let counters = EnvoyCounters::new();
        let a = key("envoy_a", &[("l", "1")]);
        let b = key("envoy_a", &[("l", "2")]);
        counters.add_all([(a.clone(), 3), (b.clone(), 1)]);
        counters.add_all([(a.clone(), 4), (b.clone(), 0)]);
        assert_eq!(counters.total(&a), Some(7));
        assert_eq!(counters.total(&b), Some(1));
        assert_eq!(counters.len(), 2);
    }

    #[test]
    fn a_series_not_carried_yet_shows_its_live_value_and_never_goes_backwards() {
        let counters = EnvoyCounters::new();
        let a = key("envoy_a", &[]);
        assert_eq!(counters.reader().value(a.clone(), 0), 0);
        assert_eq!(counters.reader().value(a.clone(), 10), 10);
        // The first flush carried less than was shown: the shown value holds.
        counters.add_all([(a.clone(), 8)]);
        assert_eq!(counters.reader().value(a.clone(), 12), 10);
        counters.add_all([(a.clone(), 4)]);
        assert_eq!(counters.reader().value(a.clone(), 0), 12);
        // The floor is gone: from now on the carried total alone.
        assert_eq!(counters.reader().value(a.clone(), 100), 12);
    }
}
