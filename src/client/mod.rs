//! The client side of the status server: what `baton restart`, `baton wait` and
//! `baton status` do. Each command is an async function returning the process exit
//! code and printing its outcome (stdout) or the failure (stderr); the fallible
//! cores beneath them return [`ClientError`] for callers that want to branch.
//!
//! | command | request | exit 0 | exit 1 |
//! | --- | --- | --- | --- |
//! | [`restart`] | `POST /restart` | a restart will happen (started, joined, coalesced, deferred) | baton unreachable, or no restart (drained, shutting down) |
//! | [`drain`] | `POST /drain` | baton drains (or did already) | baton unreachable or refused |
//! | [`wait`] | `GET /healthz/ready` every 100ms | ready before the timeout | timeout; the last reason is printed |
//! | [`status`] | `GET /epochs` | table printed | baton unreachable or refused |
//!
//! **Invariant:** every request has a deadline, so no command hangs on a wedged
//! baton; `wait` returns within its timeout plus one poll's worth.

mod table;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::time::Duration;

use hyper::{Method, StatusCode};
use tokio::time::Instant;

use crate::http_client::{self, HttpError};
use crate::status::{EpochsReport, RestartReply};

pub use table::render_status;

/// Exit code of a command that did what was asked.
pub const EXIT_OK: i32 = crate::exit::OK;
/// Exit code of a command that could not (unreachable, refused, not ready in time).
pub const EXIT_FAILURE: i32 = crate::exit::FAILURE;

/// Run a client command on a small runtime of its own.
pub fn run(command: impl std::future::Future<Output = i32>) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(command))
}

/// How often [`wait`] asks whether baton is ready.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Budget of one request. Longer than the server's own wait for the supervisor's
/// decision ([`crate::status::DEFAULT_REPLY_TIMEOUT`]), so its 503 arrives first.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// Budget of one readiness poll: short, so a wedged baton cannot eat a `wait`.
const POLL_TIMEOUT: Duration = Duration::from_secs(1);

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answered at the status address (the error names it).
    #[error("baton is not reachable (is it running, and is --status-addr right?): {0}")]
    Unreachable(#[source] HttpError),
    /// baton answered, but not with success.
    #[error("baton refused: {status}: {message}")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The body baton sent, trimmed.
        message: String,
    },
    /// baton answered 2xx with a body that does not parse.
    #[error("unexpected answer from baton: {0}")]
    Unexpected(String),
    /// baton answered, and no restart will happen for this request.
    #[error("{0}")]
    NotStarted(String),
    /// `wait` ran out of time.
    #[error("not ready after {}: {reason}", humantime::format_duration(*.waited))]
    NotReady {
        /// The timeout that ran out.
        waited: Duration,
        /// The last reason baton gave (or why it could not be asked).
        reason: String,
    },
}

/// `baton restart`: ask for a hot restart and print what baton decided; exit 1
/// when no restart will happen for it (baton says why).
pub async fn restart(addr: SocketAddr) -> i32 {
    report(request_restart(addr).await.and_then(|reply| {
        if reply.accepted {
            Ok(describe_restart(&reply))
        } else {
            Err(ClientError::NotStarted(describe_restart(&reply)))
        }
    }))
}

/// `baton drain`: readiness 503 at once; the serving epoch finishes what it has.
/// What a Kubernetes preStop hook runs (exit 0 also when baton drains already).
pub async fn drain(addr: SocketAddr) -> i32 {
    report(
        call(addr, Method::POST, "/drain")
            .await
            .map(|body| String::from_utf8_lossy(&body).trim().to_string()),
    )
}

/// The address to connect to for a status address: a server listening on every
/// interface (`0.0.0.0`, `::`) is reached on loopback, where its mutating routes
/// answer.
pub fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        std::net::IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, addr.port()))
        }
        std::net::IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port()))
        }
        _ => addr,
    }
}

/// `baton wait`: block until baton reports ready, at most `timeout`.
pub async fn wait(addr: SocketAddr, timeout: Duration) -> i32 {
    report(
        wait_ready(addr, timeout)
            .await
            .map(|()| "ready".to_string()),
    )
}

/// `baton status`: print the epochs table.
pub async fn status(addr: SocketAddr) -> i32 {
    report(fetch_epochs(addr).await.map(|r| render_status(&r)))
}

/// `baton stats`: print the stats segment of a running baton, read through its
/// status server, or with `pid` straight from `/proc/<pid>/fd`.
pub async fn stats(addr: SocketAddr, pid: Option<u32>, prometheus: bool) -> i32 {
    let outcome = match pid {
        Some(pid) => crate::stats::Segment::open_pid(pid)
            .map(|segment| {
                let samples = segment.snapshot();
                if prometheus {
                    crate::stats::export::to_prometheus(&samples)
                } else {
                    crate::stats::export::to_json(&samples)
                }
            })
            .map_err(|e| ClientError::Unexpected(format!("--pid {pid}: {e}"))),
        None => {
            let path = if prometheus {
                "/stats/segment?format=prometheus"
            } else {
                "/stats/segment?format=json"
            };
            call(addr, Method::GET, path)
                .await
                .map(|body| String::from_utf8_lossy(&body).into_owned())
        }
    };
    report(outcome)
}

fn report(outcome: Result<String, ClientError>) -> i32 {
    match outcome {
        Ok(text) => {
            println!("{}", text.trim_end());
            EXIT_OK
        }
        Err(e) => {
            eprintln!("baton: {e}");
            EXIT_FAILURE
        }
    }
}

/// `POST /restart` and parse baton's decision.
pub async fn request_restart(addr: SocketAddr) -> Result<RestartReply, ClientError> {
    let body = call(addr, Method::POST, "/restart").await?;
    serde_json::from_slice(&body).map_err(|e| ClientError::Unexpected(e.to_string()))
}

/// One line for a restart decision.
pub fn describe_restart(reply: &RestartReply) -> String {
    let headline = match (reply.epoch, reply.coalesced) {
        (Some(epoch), _) => format!("restart started: epoch {epoch}"),
        (None, true) => "coalesced into the restart in flight".to_string(),
        (None, false) if reply.accepted => "restart queued".to_string(),
        (None, false) => "restart not started".to_string(),
    };
    if reply.detail.is_empty() {
        headline
    } else {
        format!("{headline} ({})", reply.detail)
    }
}

/// `GET /epochs` and parse it.
pub async fn fetch_epochs(addr: SocketAddr) -> Result<EpochsReport, ClientError> {
    let body = call(addr, Method::GET, "/epochs").await?;
    serde_json::from_slice(&body).map_err(|e| ClientError::Unexpected(e.to_string()))
}

/// Poll `GET /healthz/ready` every [`POLL_INTERVAL`] until it answers 200 or
/// `timeout` has passed. An unreachable baton is polled like a not-ready one: a
/// `postStart` hook may run before baton has bound its port.
pub async fn wait_ready(addr: SocketAddr, timeout: Duration) -> Result<(), ClientError> {
    let deadline = Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        // At least a few milliseconds, so even a zero timeout asks once.
        let budget = remaining.clamp(Duration::from_millis(50), POLL_TIMEOUT);
        let reason = match http_client::request(addr, Method::GET, "/healthz/ready", budget).await {
            Ok((StatusCode::OK, _)) => return Ok(()),
            Ok((status, body)) => body_text(status, &body),
            Err(e) => ClientError::Unreachable(e).to_string(),
        };
        let now = Instant::now();
        if now >= deadline {
            return Err(ClientError::NotReady {
                waited: timeout,
                reason,
            });
        }
        tokio::time::sleep(POLL_INTERVAL.min(deadline - now)).await;
    }
}

/// One request whose answer must be 2xx; the body of it.
async fn call(
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> Result<hyper::body::Bytes, ClientError> {
    let (status, body) = http_client::request(addr, method, path, REQUEST_TIMEOUT)
        .await
        .map_err(ClientError::Unreachable)?;
    if !status.is_success() {
        return Err(ClientError::Refused {
            status,
            message: body_text(status, &body),
        });
    }
    Ok(body)
}

/// A body as one trimmed line, or the status when the body is empty.
fn body_text(status: StatusCode, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        status.to_string()
    } else {
        text.to_string()
    }
}
