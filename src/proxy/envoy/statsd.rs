//! Envoy's counters across epochs, through a statsd sink pointing at baton.
//!
//! Envoy no longer keeps stats in shared memory: a hot-restarted child starts its
//! counters at zero and copies only the parent's increments since the parent's last
//! flush, so the counters an Envoy exports drop at every restart. baton adds a
//! statsd sink to every epoch's bootstrap (`127.0.0.1:<port>` on UDP, flushed every
//! `--stats-flush-interval`) and passes `--skip-hot-restart-parent-stats`: each epoch
//! then reports exactly its own increments, as deltas, and baton adds them up.
//!
//! **Invariant (exactness):** a parent's last increments reach baton if its child
//! merges them before the parent is terminated: baton waits `--drain-duration` plus
//! one flush interval before a restart that would terminate it, and requires
//! `--parent-shutdown-duration` ≥ both; on SIGTERM Envoy flushes its sinks. Only an
//! epoch that is killed (SIGKILL, crash) loses its last flush interval.

use std::time::Duration;

use serde_json::{json, Value};

/// The cluster baton adds for its sink.
pub const CLUSTER: &str = "baton_statsd";

/// The counter deltas of statsd text: `name:value|c` lines (Envoy's sink sends one
/// metric per line). Gauges, timers and malformed lines are skipped.
pub fn counter_deltas(datagram: &[u8]) -> Vec<(&str, u64)> {
    let Ok(text) = std::str::from_utf8(datagram) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (name, rest) = line.rsplit_once(':')?;
            let (value, kind) = rest.split_once('|')?;
            // `|c` possibly followed by a sample rate or tags (`|@0.5`, `|#k:v`).
            if kind.split('|').next()? != "c" || name.is_empty() {
                return None;
            }
            Some((name, value.parse().ok()?))
        })
        .collect()
}

/// Add baton's statsd sink (and its cluster) and the flush interval to a JSON
/// bootstrap.
pub fn add_sink(bootstrap: &mut Value, port: u16, flush: Duration) {
    let Some(root) = bootstrap.as_object_mut() else {
        return;
    };
    let sink = json!({
        "name": "envoy.stat_sinks.statsd",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.config.metrics.v3.StatsdSink",
            "tcp_cluster_name": CLUSTER
        }
    });
    let cluster = json!({
        "name": CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": CLUSTER,
            "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": {
                "socket_address": { "address": "127.0.0.1", "port_value": port }
            } } }] }]
        }
    });
    push(root, "stats_sinks", sink);
    let statics = root.entry("static_resources").or_insert_with(|| json!({}));
    if let Some(statics) = statics.as_object_mut() {
        push(statics, "clusters", cluster);
    }
    root.insert(
        "stats_flush_interval".into(),
        Value::String(format!("{:.3}s", flush.as_secs_f64())),
    );
}

fn push(object: &mut serde_json::Map<String, Value>, key: &str, item: Value) {
    match object.get_mut(key).and_then(Value::as_array_mut) {
        Some(list) => list.push(item),
        None => {
            object.insert(key.into(), Value::Array(vec![item]));
        }
    }
}

/// Where carried counter deltas go (the stats segment, in baton).
pub type DeltaSink = std::sync::Arc<dyn Fn(&str, u64) + Send + Sync>;

/// Accept Envoy's statsd connections on `listener` until the runtime ends, adding
/// every counter delta to `sink`.
pub fn spawn_receiver(listener: std::net::TcpListener, sink: DeltaSink) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(read_lines(stream, sink.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "statsd receiver failed; Envoy counters stop being carried");
                    break;
                }
            }
        }
    });
    Ok(())
}

/// One epoch's statsd stream: whole lines only (a flush may span reads).
async fn read_lines(stream: tokio::net::TcpStream, sink: DeltaSink) {
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        for (name, delta) in counter_deltas(line.as_bytes()) {
            sink(name, delta);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_lines_are_read_and_everything_else_skipped() {
        let datagram = b"envoy.http.ingress_http.downstream_rq_total:7|c\n\
            envoy.server.live:1|g\n\
            envoy.cluster.up.upstream_rq_time:3|ms\n\
            garbage\n\
            envoy.a:b:2|c\n\
            envoy.sampled:3|c|@0.5\n\
            envoy.bad:x|c";
        assert_eq!(
            counter_deltas(datagram),
            vec![
                ("envoy.http.ingress_http.downstream_rq_total", 7),
                ("envoy.a:b", 2),
                ("envoy.sampled", 3),
            ]
        );
        assert!(counter_deltas(&[0xff, 0xfe]).is_empty());
    }

    #[test]
    fn sink_is_appended_and_flush_interval_set() {
        let mut b = json!({"stats_sinks": [{"name": "theirs"}], "stats_flush_interval": "10s"});
        add_sink(&mut b, 9125, Duration::from_millis(250));
        assert_eq!(b["stats_sinks"].as_array().unwrap().len(), 2);
        assert_eq!(
            b["stats_sinks"][1]["typed_config"]["tcp_cluster_name"],
            CLUSTER
        );
        let cluster = &b["static_resources"]["clusters"][0];
        assert_eq!(cluster["name"], CLUSTER);
        let address =
            &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
        assert_eq!(address["socket_address"]["port_value"], 9125);
        assert_eq!(b["stats_flush_interval"], "0.250s");
        let mut empty = json!({});
        add_sink(&mut empty, 1, Duration::from_secs(5));
        assert_eq!(empty["stats_sinks"].as_array().unwrap().len(), 1);
        assert_eq!(empty["stats_flush_interval"], "5.000s");
    }
}
