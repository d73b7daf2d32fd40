//! baton's receiver for Envoy's `metrics_service` sink ([`super::sink`]): a gRPC
//! server on loopback implementing `envoy.service.metrics.v3.MetricsService`, whose
//! one client-streaming method carries, at every flush of every epoch, its counter
//! deltas as Prometheus `MetricFamily` messages. The deltas of counter families are
//! added to [`EnvoyCounters`]; gauges and histograms are ignored (the scrape shows the
//! serving epoch's own), and so is every series of baton's own sink cluster.
//!
//! The messages are declared here by hand with prost, with only the fields baton
//! reads: the wire format is Envoy's (`envoy/service/metrics/v3/metrics_service.proto`
//! and Prometheus's `io/prometheus/client/metrics.proto`), and prost skips every
//! field it does not know. No `.proto` compiler is needed to build baton.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use tonic::codegen::{http, Body, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{ClientStreamingService, Grpc, NamedService};
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status, Streaming};

use super::counters::{prometheus_name, sanitize, EnvoyCounters, SeriesKey};
use super::sink::CLUSTER;

/// The gRPC service Envoy's sink calls.
const SERVICE: &str = "envoy.service.metrics.v3.MetricsService";
/// Its one method.
const METHOD_PATH: &str = "/envoy.service.metrics.v3.MetricsService/StreamMetrics";
/// Envoy sends every metric at every flush in one message: tens of MB for a
/// mesh-sized sidecar. The peer is an Envoy baton configured, on loopback.
const MAX_MESSAGE: usize = 512 << 20;
/// Flow-control windows large enough for one flush to cross in a few round trips.
const WINDOW: u32 = 16 << 20;
/// Envoy's label for a cluster's name, as its tag extraction names it.
const CLUSTER_TAG: &str = "envoy.cluster_name";

/// `envoy.service.metrics.v3.StreamMetricsMessage`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamMetricsMessage {
    /// `envoy_metrics = 2`.
    #[prost(message, repeated, tag = "2")]
    pub envoy_metrics: Vec<MetricFamily>,
}

/// `envoy.service.metrics.v3.StreamMetricsResponse` (empty).
#[derive(Clone, PartialEq, prost::Message)]
pub struct StreamMetricsResponse {}

/// `io.prometheus.client.MetricFamily`: its name, type and metrics.
#[derive(Clone, PartialEq, prost::Message)]
pub struct MetricFamily {
    /// The tag-extracted name (`http.downstream_rq_total`).
    #[prost(string, tag = "1")]
    pub name: String,
    /// `io.prometheus.client.MetricType`: 0 is `COUNTER`.
    #[prost(int32, tag = "3")]
    pub kind: i32,
    /// One per series.
    #[prost(message, repeated, tag = "4")]
    pub metric: Vec<Metric>,
}

/// `io.prometheus.client.MetricType.COUNTER`.
pub const COUNTER: i32 = 0;

/// `io.prometheus.client.Metric`: labels and, for a counter, its value.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Metric {
    /// The tags.
    #[prost(message, repeated, tag = "1")]
    pub label: Vec<LabelPair>,
    /// Set for counters: the delta since the last flush.
    #[prost(message, optional, tag = "3")]
    pub counter: Option<CounterValue>,
}

/// `io.prometheus.client.LabelPair`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct LabelPair {
    /// Tag name (`envoy.cluster_name`).
    #[prost(string, tag = "1")]
    pub name: String,
    /// Tag value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `io.prometheus.client.Counter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct CounterValue {
    /// The value: a delta, with `report_counters_as_deltas`.
    #[prost(double, tag = "1")]
    pub value: f64,
}

/// The counter deltas of one flush, keyed as Envoy's Prometheus exposition names
/// the series; series of baton's sink cluster are left out.
pub fn counter_deltas(message: &StreamMetricsMessage) -> Vec<(SeriesKey, u64)> {
    let mut deltas = Vec::new();
    for family in message.envoy_metrics.iter().filter(|f| f.kind == COUNTER) {
        let name = prometheus_name(&family.name);
        for metric in &family.metric {
            let Some(counter) = &metric.counter else {
                continue;
            };
            if metric
                .label
                .iter()
                .any(|l| l.name == CLUSTER_TAG && l.value == CLUSTER)
            {
                continue;
            }
            let labels: Vec<(String, &str)> = metric
                .label
                .iter()
                .map(|l| (sanitize(&l.name), l.value.as_str()))
                .collect();
            let key = SeriesKey::new(&name, labels.iter().map(|(n, v)| (n.as_str(), *v)));
            // Deltas are whole numbers sent as doubles: exact below 2^53 per flush.
            deltas.push((key, counter.value.max(0.0) as u64));
        }
    }
    deltas
}

/// baton's receiver: bound on loopback before any bootstrap names its port.
pub struct Receiver {
    listener: std::net::TcpListener,
}

impl Receiver {
    /// Bind on 127.0.0.1, a port of the kernel's choosing.
    pub fn bind() -> std::io::Result<Self> {
        let listener = std::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        Ok(Receiver { listener })
    }

    /// The port bootstraps send to.
    pub fn port(&self) -> u16 {
        self.listener.local_addr().map_or(0, |a| a.port())
    }

    /// Serve Envoy's streams until the runtime ends, adding every counter delta to
    /// `counters`. Call from within the runtime.
    pub fn spawn(self, counters: Arc<EnvoyCounters>) -> std::io::Result<()> {
        self.listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let server = tonic::transport::Server::builder()
            .initial_stream_window_size(WINDOW)
            .initial_connection_window_size(WINDOW)
            .http2_keepalive_interval(Some(Duration::from_secs(30)));
        tokio::spawn(async move {
            let service = MetricsService { counters };
            if let Err(e) = server.serve_with_incoming(service, incoming).await {
                tracing::warn!(error = %e, "metrics service receiver failed; Envoy counters stop being carried");
            }
        });
        Ok(())
    }
}

/// The tower service behind the server: one route, the streaming method.
#[derive(Debug, Clone)]
struct MetricsService {
    counters: Arc<EnvoyCounters>,
}

impl NamedService for MetricsService {
    const NAME: &'static str = SERVICE;
}

impl<B> Service<http::Request<B>> for MetricsService
where
    B: Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path() != METHOD_PATH {
            return Box::pin(async {
                Ok(Status::unimplemented("baton serves StreamMetrics only").into_http())
            });
        }
        let method = StreamMetrics {
            counters: self.counters.clone(),
        };
        Box::pin(async move {
            let mut grpc = Grpc::new(tonic::codec::ProstCodec::default())
                .apply_max_message_size_config(Some(MAX_MESSAGE), None);
            Ok(grpc.client_streaming(method, request).await)
        })
    }
}

/// One epoch's stream: every message is one flush.
struct StreamMetrics {
    counters: Arc<EnvoyCounters>,
}

impl ClientStreamingService<StreamMetricsMessage> for StreamMetrics {
    type Response = StreamMetricsResponse;
    type Future = BoxFuture<Response<StreamMetricsResponse>, Status>;

    fn call(&mut self, request: Request<Streaming<StreamMetricsMessage>>) -> Self::Future {
        let counters = self.counters.clone();
        Box::pin(async move {
            let mut stream = request.into_inner();
            loop {
                match stream.message().await {
                    Ok(Some(message)) => {
                        let began = std::time::Instant::now();
                        let deltas = counter_deltas(&message);
                        let series = deltas.len();
                        counters.add_all(deltas);
                        // What a flush costs baton (`scripts/bench scrape`).
                        tracing::debug!(
                            families = message.envoy_metrics.len(),
                            series,
                            apply_us = began.elapsed().as_micros() as u64,
                            "envoy flush carried"
                        );
                    }
                    Ok(None) => break,
                    Err(status) => {
                        // Envoy closing its stream as it exits; nothing is lost that
                        // was not already sent.
                        tracing::debug!(%status, "metrics stream ended");
                        break;
                    }
                }
            }
            Ok(Response::new(StreamMetricsResponse {}))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn label(name: &str, value: &str) -> LabelPair {
        LabelPair {
            name: name.into(),
            value: value.into(),
        }
    }

    fn counter(labels: Vec<LabelPair>, value: f64) -> Metric {
        Metric {
            label: labels,
            counter: Some(CounterValue { value }),
        }
    }

    #[test]
    fn counter_families_become_deltas_under_envoys_prometheus_names() {
        let message = StreamMetricsMessage {
            envoy_metrics: vec![
                MetricFamily {
                    name: "cluster.upstream_rq_total".into(),
                    kind: COUNTER,
                    metric: vec![
                        counter(vec![label(CLUSTER_TAG, "upstream")], 7.0),
                        counter(vec![label(CLUSTER_TAG, CLUSTER)], 3.0),
                    ],
                },
                MetricFamily {
                    name: "server.live".into(),
                    kind: 1,
                    metric: vec![counter(vec![], 1.0)],
                },
            ],
        };
        // Through the wire format, as Envoy sends it.
        let decoded = StreamMetricsMessage::decode(message.encode_to_vec().as_slice()).unwrap();
        assert_eq!(
            counter_deltas(&decoded),
            vec![(
                SeriesKey::new(
                    "envoy_cluster_upstream_rq_total",
                    [("envoy_cluster_name", "upstream")]
                ),
                7
            )]
        );
    }
}
