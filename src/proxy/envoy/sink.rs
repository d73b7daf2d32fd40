//! What baton adds to every epoch's bootstrap so that Envoy's counters outlive hot
//! restarts: Envoy's `metrics_service` stats sink, pointing at baton's receiver
//! ([`super::metrics_service`]) through a static HTTP/2 cluster.
//!
//! Why this sink: a hot-restarted child starts its counters from the increments its
//! parent had not flushed yet, so the counters an Envoy exports drop at every
//! restart. A sink that reports counters *as deltas* sees every increment exactly
//! once: a parent stops flushing its sinks once its child starts, and the child
//! merges the parent's unflushed increments into its own counters (measured: 184,829
//! of 184,829 requests across 20 hot restarts). `emit_tags_as_labels` makes Envoy
//! send each counter under its tag-extracted name with its tags as labels — exactly
//! the series of its own `/stats/prometheus` — so baton can carry the labelled series
//! dashboards query instead of the dotted stat names. (The TCP statsd sink sends
//! dotted names only; the DogStatsD sink has tags but speaks UDP, which lost 4% of
//! the counts under load.)
//!
//! **Invariant (exactness):** a parent's last increments reach baton if its child
//! merges them before the parent is terminated: baton waits `--drain-duration` plus
//! one flush interval before a restart that would terminate it, and requires
//! `--parent-shutdown-duration` ≥ both. Only an epoch that is killed (SIGKILL, crash)
//! loses its last flush interval.

use std::time::Duration;

use serde_json::{json, Value};

/// The cluster baton adds for its sink. Envoy's own series of this cluster are
/// baton's plumbing, not the user's traffic: they are never exported.
pub const CLUSTER: &str = "baton_metrics_service";

/// Where every epoch sends its counters, and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sink {
    /// baton's receiver: TCP port on 127.0.0.1.
    pub port: u16,
    /// The bootstrap's `stats_flush_interval`.
    pub flush: Duration,
}

/// Add baton's sink (and its cluster) and the flush interval to a JSON bootstrap.
pub fn add_sink(bootstrap: &mut Value, sink: Sink) {
    let Sink { port, flush } = sink;
    let Some(root) = bootstrap.as_object_mut() else {
        return;
    };
    let sink = json!({
        "name": "envoy.stat_sinks.metrics_service",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.config.metrics.v3.MetricsServiceConfig",
            "transport_api_version": "V3",
            "grpc_service": { "envoy_grpc": { "cluster_name": CLUSTER } },
            "report_counters_as_deltas": true,
            "emit_tags_as_labels": true,
            // baton reads counters only; summaries are the smallest way to send
            // histograms, which Envoy cannot be told to leave out.
            "histogram_emit_mode": "SUMMARY"
        }
    });
    let cluster = json!({
        "name": CLUSTER,
        "type": "STATIC",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": { "http2_protocol_options": {} }
            }
        },
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_is_appended_with_its_http2_cluster_and_flush_interval() {
        let mut b = json!({"stats_sinks": [{"name": "theirs"}], "stats_flush_interval": "10s"});
        add_sink(
            &mut b,
            Sink {
                port: 9125,
                flush: Duration::from_millis(250),
            },
        );
        let sinks = b["stats_sinks"].as_array().unwrap();
        assert_eq!(sinks.len(), 2);
        let config = &sinks[1]["typed_config"];
        assert_eq!(
            config["grpc_service"]["envoy_grpc"]["cluster_name"],
            CLUSTER
        );
        assert_eq!(config["report_counters_as_deltas"], true);
        assert_eq!(config["emit_tags_as_labels"], true);
        let cluster = &b["static_resources"]["clusters"][0];
        assert_eq!(cluster["name"], CLUSTER);
        let options = &cluster["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        assert!(options["explicit_http_config"]["http2_protocol_options"].is_object());
        let address =
            &cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"];
        assert_eq!(address["socket_address"]["port_value"], 9125);
        assert_eq!(b["stats_flush_interval"], "0.250s");
        let mut empty = json!({});
        add_sink(
            &mut empty,
            Sink {
                port: 1,
                flush: Duration::from_secs(5),
            },
        );
        assert_eq!(empty["stats_sinks"].as_array().unwrap().len(), 1);
        assert_eq!(empty["stats_flush_interval"], "5.000s");
    }
}
