//! Who may change baton's state over HTTP: loopback peers only.
//!
//! The status address may be opened to the pod network so a kubelet can probe
//! readiness; restarting, draining or stopping the proxy must still need a shell in
//! the pod (a `kubectl exec`, a lifecycle hook), never just network reach.
//!
//! **Invariant:** a peer is loopback when its address, with an IPv4-mapped IPv6
//! address (`::ffff:127.0.0.1`, what a dual-stack socket reports) read as IPv4, is in
//! 127.0.0.0/8 or is `::1`. Nothing else passes, including the deprecated
//! IPv4-compatible form `::127.0.0.1`.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// `true` when `ip` is a loopback address (see the module invariant).
pub fn is_loopback(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

/// Extractor that admits only loopback peers and answers 403 to everyone else.
///
/// Needs the peer address, so the router must be served with
/// `into_make_service_with_connect_info::<SocketAddr>()` (or given
/// `MockConnectInfo` in tests); without it the request fails with 500 rather than
/// being let through.
#[derive(Debug, Clone, Copy)]
pub struct LoopbackPeer(pub SocketAddr);

impl<S: Send + Sync> FromRequestParts<S> for LoopbackPeer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let ConnectInfo(peer) = ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if is_loopback(peer.ip()) {
            Ok(LoopbackPeer(peer))
        } else {
            tracing::warn!(%peer, path = %parts.uri.path(), "refused a mutating request from a non-loopback peer");
            Err((
                StatusCode::FORBIDDEN,
                "forbidden: this endpoint answers loopback peers only\n",
            )
                .into_response())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_in_any_spelling_are_loopback() {
        let table = [
            ("127.0.0.1", true),
            ("127.1.2.3", true),
            ("127.255.255.255", true),
            ("::1", true),
            ("::ffff:127.0.0.1", true),
            ("::ffff:127.9.9.9", true),
            ("0.0.0.0", false),
            ("10.0.0.1", false),
            ("128.0.0.1", false),
            ("::", false),
            ("::2", false),
            ("::ffff:10.0.0.1", false),
            ("::127.0.0.1", false),
            ("fe80::1", false),
        ];
        for (text, expected) in table {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(is_loopback(ip), expected, "{text}");
        }
    }
}
