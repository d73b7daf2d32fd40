//! baton's status server: readiness for Kubernetes, metrics for Prometheus, epochs
//! for humans, and a loopback-only control surface.
//!
//! | route | method | answer |
//! | --- | --- | --- |
//! | `/healthz/ready` | GET | 200 `ready` when an epoch serves and is ready; 503 with a one-line reason otherwise |
//! | `/stats/prometheus` | GET | baton's `baton_*` metrics, the stats segment (a proxy's own metrics), then (envoy mode) Envoy's own `/stats/prometheus` with its counters carried across epochs; Prometheus text 0.0.4, each family once |
//! | `/stats/segment` | GET | the whole stats segment; `?format=json` (default) or `?format=prometheus` |
//! | `/epochs` | GET | JSON [`EpochsReport`]: readiness, epochs (oldest first), last error, counters |
//! | `/restart` | POST, loopback | 202 JSON [`RestartReply`]: started, coalesced, deferred or refused |
//! | `/drain` | POST, loopback | 202 text: the serving epoch drains, baton keeps running, readiness turns 503 |
//! | `/quitquitquit` | POST, loopback | 202 text: graceful shutdown, as SIGTERM |
//!
//! Other methods on these paths get 405; the mutating routes answer 403 to peers that
//! are not loopback ([`is_loopback`]) and 503 when the shell is gone or does not
//! decide within [`DEFAULT_REPLY_TIMEOUT`].
//!
//! **Boundary:** the loop publishes a [`Snapshot`] (derived from the core's state)
//! on a `watch` channel after every event and reads [`Command`]s from an unbounded
//! `mpsc` channel; this module reads nothing else of baton.
//! **Invariant:** the server runs in its own task and only reads the latest snapshot,
//! so it answers while a restart is in progress or the proxy hangs.

mod command;
mod envoy_text;
mod loopback;
mod metrics;
mod registry;
mod routes;
mod server;
mod snapshot;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

use crate::proxy::envoy::counters::EnvoyCounters;
use crate::stats::Segment;

pub use command::{Command, RestartReply};
pub use snapshot::{EpochStatus, EpochsReport, Readiness, Snapshot, Static};

/// How long `/stats/prometheus` waits for Envoy's own stats at most. Below
/// Prometheus's default 10s scrape timeout, with room for baton's part; a scraper
/// that says it gives up sooner (`X-Prometheus-Scrape-Timeout-Seconds`) gets less.
pub const DEFAULT_ENVOY_STATS_TIMEOUT: Duration = Duration::from_secs(3);

/// Largest request body accepted (the routes take none; a hook may send a little).
pub const MAX_BODY: usize = 4096;

/// How long a mutating route waits for the shell's decision before answering 503.
/// The shell decides within one event-loop turn; this only bounds a wedged shell.
pub const DEFAULT_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers share: the shell's latest snapshot and its command inbox.
#[derive(Debug, Clone)]
pub struct StatusState {
    snapshots: watch::Receiver<Snapshot>,
    commands: mpsc::UnboundedSender<Command>,
    envoy_stats_timeout: Duration,
    reply_timeout: Duration,
    segment: Option<Arc<Segment>>,
    envoy_counters: Option<Arc<EnvoyCounters>>,
    /// Envoy's last answer, for a scrape it does not answer in time.
    last_envoy: metrics::LastEnvoy,
}

impl StatusState {
    /// State reading snapshots from `snapshots` and sending commands to `commands`,
    /// with the default timeouts.
    pub fn new(
        snapshots: watch::Receiver<Snapshot>,
        commands: mpsc::UnboundedSender<Command>,
    ) -> Self {
        StatusState {
            snapshots,
            commands,
            envoy_stats_timeout: DEFAULT_ENVOY_STATS_TIMEOUT,
            reply_timeout: DEFAULT_REPLY_TIMEOUT,
            segment: None,
            envoy_counters: None,
            last_envoy: metrics::LastEnvoy::default(),
        }
    }

    /// Export the stats segment too (`/stats/segment`, and in `/stats/prometheus`).
    pub fn with_segment(mut self, segment: Arc<Segment>) -> Self {
        self.segment = Some(segment);
        self
    }

    /// Show Envoy's counters with the totals carried across epochs.
    pub fn with_envoy_counters(mut self, counters: Arc<EnvoyCounters>) -> Self {
        self.envoy_counters = Some(counters);
        self
    }

    /// Wait at most `timeout` for Envoy's stats on each scrape.
    #[cfg(test)]
    pub fn with_envoy_stats_timeout(mut self, timeout: Duration) -> Self {
        self.envoy_stats_timeout = timeout;
        self
    }

    /// Wait at most `timeout` for the shell to decide on a command.
    #[cfg(test)]
    pub fn with_reply_timeout(mut self, timeout: Duration) -> Self {
        self.reply_timeout = timeout;
        self
    }
}

/// The status server's routes (see the module doc). Serve it with the peer address
/// attached, as [`serve`] does: the mutating routes need it. A mutating request's
/// body (expected empty, at most [`MAX_BODY`] bytes) is read completely before
/// anything is done: a malformed one is answered 400 and changes nothing.
pub fn router(state: StatusState) -> Router {
    Router::new()
        .route("/healthz/ready", get(routes::ready))
        .route("/stats/prometheus", get(routes::prometheus))
        .route("/epochs", get(routes::epochs))
        .route("/stats/segment", get(routes::segment))
        .route("/restart", post(routes::restart))
        .route("/drain", post(routes::drain))
        .route("/quitquitquit", post(routes::quit))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

/// Serve [`router`] on `listener` until the task is aborted or accepting fails
/// for good (see [`server`] for the timeouts and the connection cap). Run it in a
/// task of its own.
pub async fn serve(listener: TcpListener, state: StatusState) -> std::io::Result<()> {
    server::serve(listener, router(state), server::HEADER_READ_TIMEOUT).await
}
