//! Envoy's counters across epochs, through a statsd sink pointing at baton.
//!
//! Envoy no longer keeps stats in shared memory: a hot-restarted child starts its
//! counters at zero and copies only the parent's increments since the parent's last
//! flush, so the counters an Envoy exports drop at every restart. baton adds a
//! statsd sink to every epoch's bootstrap (`127.0.0.1:<port>` on UDP, flushed every
//! `--stats-flush-interval`) and passes `--skip-hot-restart-parent-stats`: each epoch
//! then reports exactly its own increments, as deltas, and baton adds them up.
//!
//! **Invariant (exactness):** an epoch's last increments reach baton if it flushes
//! after them: on SIGTERM Envoy flushes its sinks, and a parent that its child
//! terminates has, by then, drained for `--drain-duration` and flushed at least once
//! more, because baton waits `--drain-duration` + the flush interval before a restart
//! that would terminate it and requires `--parent-shutdown-duration` ≥ both. Only an
//! epoch that is killed (SIGKILL, crash) loses its last flush interval.

use std::time::Duration;

use serde_json::{json, Value};

/// The counter deltas of one statsd datagram: `name:value|c` lines (Envoy's sink
/// sends one metric per line). Gauges, timers and malformed lines are skipped.
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

/// Add baton's statsd sink and flush interval to a JSON bootstrap.
pub fn add_sink(bootstrap: &mut Value, port: u16, flush: Duration) {
    let Some(root) = bootstrap.as_object_mut() else {
        return;
    };
    let sink = json!({
        "name": "envoy.stat_sinks.statsd",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.config.metrics.v3.StatsdSink",
            "address": { "socket_address": { "address": "127.0.0.1", "port_value": port, "protocol": "UDP" } }
        }
    });
    match root.get_mut("stats_sinks").and_then(Value::as_array_mut) {
        Some(sinks) => sinks.push(sink),
        None => {
            root.insert("stats_sinks".into(), Value::Array(vec![sink]));
        }
    }
    root.insert(
        "stats_flush_interval".into(),
        Value::String(format!("{:.3}s", flush.as_secs_f64())),
    );
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
            b["stats_sinks"][1]["typed_config"]["address"]["socket_address"]["port_value"],
            9125
        );
        assert_eq!(b["stats_flush_interval"], "0.250s");
        let mut empty = json!({});
        add_sink(&mut empty, 1, Duration::from_secs(5));
        assert_eq!(empty["stats_sinks"].as_array().unwrap().len(), 1);
        assert_eq!(empty["stats_flush_interval"], "5.000s");
    }
}

/// Where carried counter deltas go (the stats segment, in baton).
pub type DeltaSink = std::sync::Arc<dyn Fn(&str, u64) + Send + Sync>;

/// Receive statsd datagrams on `socket` until the runtime ends, adding every counter
/// delta to `sink`.
pub fn spawn_receiver(socket: std::net::UdpSocket, sink: DeltaSink) -> std::io::Result<()> {
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    tokio::spawn(async move {
        // Envoy's statsd sink sends datagrams of at most a few KiB.
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match socket.recv(&mut buf).await {
                Ok(n) => {
                    for (name, delta) in counter_deltas(&buf[..n]) {
                        sink(name, delta);
                    }
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
