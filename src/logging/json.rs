//! One JSON object per event: `timestamp`, `level`, `message`, then the fields,
//! numbers as numbers and lists as arrays (a field whose debug form is a JSON array
//! — `[0, 1]`, `["/a", "/b"]` — is written as that array).

use std::fmt;
use std::time::SystemTime;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

/// The JSON event format.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut fields = Map::new();
        fields.insert("timestamp".into(), timestamp());
        fields.insert("level".into(), event.metadata().level().as_str().into());
        // Placed here so it stays third whatever order the fields are recorded in.
        fields.insert("message".into(), Value::Null);
        event.record(&mut Fields(&mut fields));
        writeln!(writer, "{}", Value::Object(fields))
    }
}

/// A JSON object of these pairs, stamped with the time, as one line's text.
pub fn object<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    let mut map = Map::new();
    map.insert("timestamp".into(), timestamp());
    for (k, v) in pairs {
        map.insert(k.into(), v);
    }
    Value::Object(map)
}

fn timestamp() -> Value {
    humantime::format_rfc3339_micros(SystemTime::now())
        .to_string()
        .into()
}

struct Fields<'a>(&'a mut Map<String, Value>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0.insert(field.name().into(), value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        let value = if field.name() != "message" && text.starts_with('[') {
            match serde_json::from_str::<Value>(&text) {
                Ok(list @ Value::Array(_)) => list,
                _ => Value::String(text),
            }
        } else {
            Value::String(text)
        };
        self.0.insert(field.name().into(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Captures what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn events_are_one_object_with_numbers_and_lists_as_json() {
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let replaced = vec![0u32, 1];
            let paths = vec![std::path::PathBuf::from("/a b"), "/c".into()];
            tracing::info!(epoch = 2u32, ?replaced, changed = ?paths, ok = true, "epoch ready and serving");
            tracing::warn!(what = %"text", "second");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect(l))
            .collect();
        assert_eq!(lines.len(), 2, "{text}");
        let first = &lines[0];
        let keys: Vec<&str> = first
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(&keys[..3], ["timestamp", "level", "message"]);
        assert_eq!(first["message"], "epoch ready and serving");
        assert_eq!(first["level"], "INFO");
        assert_eq!(first["epoch"], 2);
        assert_eq!(first["replaced"], serde_json::json!([0, 1]));
        assert_eq!(first["changed"], serde_json::json!(["/a b", "/c"]));
        assert_eq!(first["ok"], true);
        assert_eq!(lines[1]["what"], "text");
    }
}
