//! A minimal HTTP/1.1 client for loopback services baton talks to: Envoy's admin API
//! (readiness, stats) and a running baton's status server (`baton restart`, `wait`,
//! `status`).
//!
//! One request per connection, empty request body, whole response body in memory.
//!
//! **Invariant:** every request is bounded by its timeout as a whole — connect,
//! exchange and body — so a hung peer can stall a caller for at most that long.
//! **Invariant:** no connection task outlives its request: the task that drives the
//! connection is aborted when the request finishes, fails or is dropped.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Why a request produced no answer. Callers branch on [`HttpError::Connect`]
/// ("nothing listens there") versus the rest ("something answered badly or late").
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Nothing listens at `addr`, or the connection could not be made.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// Where we tried to connect.
        addr: SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// The HTTP exchange failed after connecting (peer closed, malformed answer).
    #[error("HTTP exchange with {addr} failed: {source}")]
    Http {
        /// The peer.
        addr: SocketAddr,
        /// hyper's account of it.
        source: hyper::Error,
    },
    /// No complete answer within the timeout.
    #[error("{addr} did not answer within {}", humantime::format_duration(*.timeout))]
    Timeout {
        /// The peer.
        addr: SocketAddr,
        /// The budget that ran out.
        timeout: Duration,
    },
    /// The request could not be built (for example a path that is not a valid URI).
    #[error("invalid request to {addr}{path}: {detail}")]
    InvalidRequest {
        /// The peer.
        addr: SocketAddr,
        /// The path as given.
        path: String,
        /// What is wrong with it.
        detail: String,
    },
}

/// Send one request with an empty body to `addr` and return the status and the whole
/// body. `path` is the request target (`/stats/prometheus`, `/ready?x=1`). The whole
/// exchange gives up after `timeout`.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), HttpError> {
    match tokio::time::timeout(timeout, exchange(addr, method, path)).await {
        Ok(result) => result,
        Err(_) => Err(HttpError::Timeout { addr, timeout }),
    }
}

async fn exchange(
    addr: SocketAddr,
    method: Method,
    path: &str,
) -> Result<(StatusCode, Bytes), HttpError> {
    // Build the request first: a bad path should not cost a connection.
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::<Bytes>::new())
        .map_err(|e| HttpError::InvalidRequest {
            addr,
            path: path.to_string(),
            detail: e.to_string(),
        })?;
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|source| HttpError::Connect { addr, source })?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| HttpError::Http { addr, source })?;
    // Dropped on every path out of here, including the caller's timeout dropping
    // this future mid-exchange.
    let _driver = AbortOnDrop(tokio::spawn(conn));
    let response = sender
        .send_request(request)
        .await
        .map_err(|source| HttpError::Http { addr, source })?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|source| HttpError::Http { addr, source })?
        .to_bytes();
    Ok((status, body))
}

/// Aborts the task when dropped (a plain `JoinHandle` detaches instead).
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    #[tokio::test]
    async fn a_plain_answer_yields_status_and_body() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = socket.read(&mut buf).await.unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            socket
                .write_all(b"HTTP/1.1 418 I'm a teapot\r\ncontent-length: 5\r\n\r\nshort")
                .await
                .unwrap();
            String::from_utf8(seen).unwrap()
        });
        let (status, body) = request(addr, Method::POST, "/brew?now", Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!((status.as_u16(), &body[..]), (418, &b"short"[..]));
        let head = server.await.unwrap();
        assert!(head.starts_with("POST /brew?now HTTP/1.1\r\n"), "{head}");
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error_naming_the_address() {
        let addr = closed_port().await;
        let err = request(addr, Method::GET, "/", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains(&addr.to_string()));
    }

    #[tokio::test]
    async fn a_peer_that_never_answers_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // Accept and hold the connection open without answering.
        let _holder = tokio::spawn(async move {
            let (socket, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(socket);
        });
        let err = request(addr, Method::GET, "/", Duration::from_millis(100))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::Timeout { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn an_invalid_path_is_refused_before_connecting() {
        let addr = closed_port().await;
        let err = request(addr, Method::GET, "not a path", Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(err, HttpError::InvalidRequest { .. }), "{err:?}");
    }
}
