//! Serving the status routes to the network: HTTP/1.1, one task per connection,
//! each request told its peer address (the mutating routes need it).
//!
//! **Invariant:** a connection that does not send a complete request head within
//! [`HEADER_READ_TIMEOUT`] is closed — idle keep-alive ones included — and at most
//! [`MAX_CONNECTIONS`] are open at once (more are closed on accept), so a probe
//! storm or a slow client cannot exhaust baton's file descriptors.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// A request head must arrive within this (a kubelet probe sends it at once).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Connections served at once; beyond it a new one is closed at once.
pub const MAX_CONNECTIONS: usize = 256;

/// Serve `router` on `listener` until the task is aborted; a request head must
/// arrive within `header_timeout` ([`HEADER_READ_TIMEOUT`] in baton).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    header_timeout: Duration,
) -> std::io::Result<()> {
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) if is_transient(&e) => {
                // Out of descriptors or a connection reset before accept: wait a
                // moment rather than spin, and keep serving.
                tracing::warn!(error = %e, "status server: accept failed; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "status server: too many connections; closing a new one");
            continue;
        };
        let router = router.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                router.clone().oneshot(req)
            });
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, error = %e, "status server: connection ended");
            }
            drop(permit);
        });
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || matches!(
        e.raw_os_error(),
        Some(nix::libc::EMFILE | nix::libc::ENFILE | nix::libc::ENOBUFS | nix::libc::ENOMEM)
    )
}
