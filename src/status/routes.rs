//! The handlers behind each route of the status server (listed in the module doc of
//! [`crate::status`]).
//!
//! **Invariant:** a handler never holds the snapshot borrow across an `.await`, so
//! the shell's next publish is never blocked by a slow client or a slow Envoy.
//! **Invariant:** a mutating handler acts only once its whole request, body
//! included, has been read: `Bytes` is its last extractor, so a malformed or
//! oversized body is answered (400/413) before anything is asked of the shell.
//! **Invariant:** a mutating handler waits for the shell's decision at most
//! [`StatusState::reply_timeout`]; a shell that is gone or silent reads as 503.

use std::time::{Duration, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use tokio::sync::oneshot;

use super::command::{Command, RestartReply};
use super::loopback::LoopbackPeer;
use super::metrics;
use super::snapshot::{EpochsReport, Readiness};
use super::StatusState;

/// `GET /healthz/ready`.
pub(super) async fn ready(State(state): State<StatusState>) -> Response {
    match &state.snapshots.borrow().readiness {
        Readiness::Ready => (StatusCode::OK, "ready\n").into_response(),
        Readiness::NotReady { reason } => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{}\n", one_line(reason)),
        )
            .into_response(),
    }
}

/// `GET /epochs`.
pub(super) async fn epochs(State(state): State<StatusState>) -> Json<EpochsReport> {
    Json(EpochsReport::new(
        &state.snapshots.borrow(),
        SystemTime::now(),
    ))
}

/// `GET /stats/prometheus`.
pub(super) async fn prometheus(State(state): State<StatusState>, headers: HeaderMap) -> Response {
    let snapshot = state.snapshots.borrow().clone();
    let segment = state
        .segment
        .as_ref()
        .map(|s| s.snapshot())
        .unwrap_or_default();
    let carried = state.envoy_counters.as_deref();
    let budget = metrics::envoy_budget(state.envoy_stats_timeout, scrape_timeout(&headers));
    let body = metrics::scrape(&snapshot, &segment, carried, budget, &state.last_envoy).await;
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

/// The scraper's own timeout, as Prometheus announces it with every scrape.
fn scrape_timeout(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get("x-prometheus-scrape-timeout-seconds")?;
    let seconds: f64 = value.to_str().ok()?.trim().parse().ok()?;
    Duration::try_from_secs_f64(seconds).ok()
}

/// The format asked of `GET /stats/segment`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct SegmentQuery {
    format: Option<String>,
}

/// `GET /stats/segment`.
pub(super) async fn segment(
    State(state): State<StatusState>,
    axum::extract::Query(query): axum::extract::Query<SegmentQuery>,
) -> Response {
    let Some(segment) = &state.segment else {
        return (StatusCode::NOT_FOUND, "no stats segment\n").into_response();
    };
    let samples = segment.snapshot();
    match query.format.as_deref() {
        None | Some("json") => (
            [(header::CONTENT_TYPE, "application/json")],
            crate::stats::export::to_json(&samples),
        )
            .into_response(),
        Some("prometheus") => (
            [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
            crate::stats::export::to_prometheus(&samples),
        )
            .into_response(),
        Some(other) => (
            StatusCode::BAD_REQUEST,
            format!("format={other}: expected json or prometheus\n"),
        )
            .into_response(),
    }
}

/// `POST /restart`.
pub(super) async fn restart(
    LoopbackPeer(peer): LoopbackPeer,
    State(state): State<StatusState>,
    _body: Bytes,
) -> Response {
    tracing::info!(%peer, "restart requested over HTTP");
    match ask(&state, |reply| Command::Restart { reply }).await {
        Ok(reply) => (StatusCode::ACCEPTED, Json::<RestartReply>(reply)).into_response(),
        Err(refusal) => refusal,
    }
}

/// `POST /drain`.
pub(super) async fn drain(
    LoopbackPeer(peer): LoopbackPeer,
    State(state): State<StatusState>,
    _body: Bytes,
) -> Response {
    tracing::info!(%peer, "drain requested over HTTP");
    text_reply(ask(&state, |reply| Command::Drain { reply }).await)
}

/// `POST /quitquitquit`.
pub(super) async fn quit(
    LoopbackPeer(peer): LoopbackPeer,
    State(state): State<StatusState>,
    _body: Bytes,
) -> Response {
    tracing::info!(%peer, "shutdown requested over HTTP");
    text_reply(ask(&state, |reply| Command::Quit { reply }).await)
}

fn text_reply(answer: Result<String, Response>) -> Response {
    match answer {
        Ok(text) => (StatusCode::ACCEPTED, format!("{}\n", one_line(&text))).into_response(),
        Err(refusal) => refusal,
    }
}

/// Send a command to the shell and wait for its decision; the `Err` is the 503 to
/// answer when the shell is gone or silent.
async fn ask<T>(
    state: &StatusState,
    command: impl FnOnce(oneshot::Sender<T>) -> Command,
) -> Result<T, Response> {
    let (reply, answer) = oneshot::channel();
    if state.commands.send(command(reply)).is_err() {
        return Err(unavailable(
            "baton is shutting down: its supervisor is gone",
        ));
    }
    match tokio::time::timeout(state.reply_timeout, answer).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_)) => Err(unavailable(
            "baton is shutting down: the request was dropped unanswered",
        )),
        Err(_) => Err(unavailable(format!(
            "baton's supervisor did not answer within {}",
            humantime::format_duration(state.reply_timeout)
        ))),
    }
}

fn unavailable(reason: impl AsRef<str>) -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!("{}\n", one_line(reason.as_ref())),
    )
        .into_response()
}

/// Reasons come from error messages that may span lines; probes and hooks show one.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
