//! A small client for Envoy's admin API, which baton uses to see an epoch become
//! ready and to drain listeners on shutdown. Loopback only, short timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::body::Bytes;
use hyper::{Method, StatusCode};
use serde::Deserialize;

use crate::http_client::{self, HttpError};

/// Why an admin request did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No answer: nothing listens yet, the exchange broke, or it timed out.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The answer was not what Envoy sends.
    #[error("admin {addr}{path}: {detail}")]
    Unexpected {
        addr: SocketAddr,
        path: String,
        detail: String,
    },
}

/// The admin endpoint of one Envoy.
#[derive(Debug, Clone, Copy)]
pub struct Admin {
    addr: SocketAddr,
    timeout: Duration,
}

/// The parts of `GET /server_info` baton reads.
#[derive(Debug, Clone, Deserialize)]
pub struct ServerInfo {
    /// `PRE_INITIALIZING`, `INITIALIZING`, `LIVE` or `DRAINING`.
    pub state: String,
    /// How the answering process was started.
    pub command_line_options: CommandLineOptions,
}

/// The command line of the answering Envoy, as it reports it.
#[derive(Debug, Clone, Deserialize)]
pub struct CommandLineOptions {
    /// Its `--restart-epoch`.
    #[serde(default)]
    pub restart_epoch: u32,
    /// Its `-c`: baton gives every epoch its own file, so this names the epoch even
    /// across chains (`base_id` reads 0 under `--use-dynamic-base-id`).
    #[serde(default)]
    pub config_path: String,
}

/// One certificate Envoy serves, from `GET /certs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedCert {
    /// Its serial in hex, as Envoy prints it (lower case, no sign padding).
    pub serial: String,
    /// Its notAfter in Unix seconds, when Envoy's `expiration_time` parses.
    pub not_after: Option<i64>,
}

/// `GET /certs`: every TLS context and the certificates it serves.
#[derive(Debug, Deserialize)]
struct CertsReply {
    #[serde(default)]
    certificates: Vec<CertsContext>,
}

#[derive(Debug, Deserialize)]
struct CertsContext {
    #[serde(default)]
    cert_chain: Vec<CertDetails>,
}

#[derive(Debug, Deserialize)]
struct CertDetails {
    #[serde(default)]
    serial_number: String,
    #[serde(default)]
    expiration_time: Option<String>,
}

impl Admin {
    /// An admin client for `addr` whose requests give up after `timeout`.
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Admin { addr, timeout }
    }

    /// Send one request with an empty body; return status and body.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
    ) -> Result<(StatusCode, Bytes), AdminError> {
        Ok(http_client::request(self.addr, method, path, self.timeout).await?)
    }

    /// `GET /server_info`.
    pub async fn server_info(&self) -> Result<ServerInfo, AdminError> {
        let body = self.get_ok("/server_info").await?;
        serde_json::from_slice(&body).map_err(|e| self.unexpected("/server_info", e.to_string()))
    }

    /// Several counters or gauges in one `GET /stats?filter=^(a|b)$`; names that
    /// Envoy does not report are absent.
    pub async fn stats(&self, names: &[&str]) -> Result<Vec<(String, u64)>, AdminError> {
        let alternatives: Vec<String> = names.iter().map(|n| n.replace('.', "\\.")).collect();
        let path = format!("/stats?filter=^({})$", alternatives.join("|"));
        let body = self.get_ok(&path).await?;
        let text = String::from_utf8_lossy(&body);
        Ok(names
            .iter()
            .filter_map(|n| parse_stat(&text, n).map(|v| (n.to_string(), v)))
            .collect())
    }

    /// `GET /certs`: the certificates every TLS context of Envoy serves now.
    pub async fn served_certs(&self) -> Result<Vec<ServedCert>, AdminError> {
        let body = self.get_ok("/certs").await?;
        parse_certs(&body).map_err(|e| self.unexpected("/certs", e))
    }

    /// Active downstream connections of every listener but the admin's (as Istio's
    /// agent counts them for `EXIT_ON_ZERO_ACTIVE_CONNECTIONS`).
    pub async fn active_downstream_connections(&self) -> Result<u64, AdminError> {
        let path = "/stats?usedonly&filter=^listener\\..*downstream_cx_active$";
        let body = self.get_ok(path).await?;
        Ok(sum_active(&String::from_utf8_lossy(&body)))
    }

    /// `POST /drain_listeners?graceful`: stop accepting after the drain period and
    /// ask clients to close, without exiting.
    pub async fn drain_listeners_gracefully(&self) -> Result<(), AdminError> {
        let path = "/drain_listeners?graceful";
        let (status, body) = self.request(Method::POST, path).await?;
        if status != StatusCode::OK {
            return Err(self.unexpected(
                path,
                format!("{status}: {}", String::from_utf8_lossy(&body)),
            ));
        }
        Ok(())
    }

    async fn get_ok(&self, path: &str) -> Result<Bytes, AdminError> {
        let (status, body) = self.request(Method::GET, path).await?;
        if status != StatusCode::OK {
            return Err(self.unexpected(path, format!("HTTP {status}")));
        }
        Ok(body)
    }

    fn unexpected(&self, path: &str, detail: String) -> AdminError {
        AdminError::Unexpected {
            addr: self.addr,
            path: path.to_string(),
            detail,
        }
    }
}

/// The sum of `listener.<name>.downstream_cx_active` over listeners other than the
/// admin's (per-worker copies only ever add to a non-zero sum).
fn sum_active(text: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.split_once(':'))
        .filter(|(key, _)| {
            let key = key.trim();
            key.starts_with("listener.")
                && key.ends_with(".downstream_cx_active")
                && !key.starts_with("listener.admin.")
        })
        .filter_map(|(_, value)| value.trim().parse::<u64>().ok())
        .sum()
}

fn parse_certs(body: &[u8]) -> Result<Vec<ServedCert>, String> {
    let reply: CertsReply = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    Ok(reply
        .certificates
        .into_iter()
        .flat_map(|context| context.cert_chain)
        .map(|c| ServedCert {
            serial: c.serial_number,
            not_after: c
                .expiration_time
                .and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .and_then(|d| i64::try_from(d.as_secs()).ok()),
        })
        .collect())
}

/// Find `name: value` in Envoy's plain-text stats output.
fn parse_stat(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        (key.trim() == name)
            .then(|| value.trim().parse().ok())
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_connections_leave_out_the_admin_listener() {
        let text = "listener.0.0.0.0_8080.downstream_cx_active: 3\n\
                    listener.0.0.0.0_8080.worker_0.downstream_cx_active: 3\n\
                    listener.admin.downstream_cx_active: 1\n\
                    http.admin.downstream_cx_active: 1\n";
        assert_eq!(sum_active(text), 6);
        assert_eq!(sum_active("listener.admin.downstream_cx_active: 2\n"), 0);
    }

    #[test]
    fn stat_is_found_by_exact_name() {
        let text = "listener_manager.workers_started: 1\nlistener_manager.workers_started_x: 7\n";
        assert_eq!(
            parse_stat(text, "listener_manager.workers_started"),
            Some(1)
        );
        assert_eq!(parse_stat(text, "listener_manager.other"), None);
    }

    #[test]
    fn certs_lists_every_served_certificate_with_its_serial_and_expiry() {
        // As Envoy 1.40 answers for a listener with an SDS secret and a cluster.
        let body = br#"{"certificates":[
            {"ca_cert":[],"cert_chain":[{"path":"<inline>","serial_number":"1001",
             "subject_alt_names":[],"days_until_expiration":"0",
             "valid_from":"2026-11-29T22:54:55Z","expiration_time":"2026-11-30T22:54:55Z"}]},
            {"ca_cert":[],"cert_chain":[{"path":"/c.pem","serial_number":"0abc"}]}]}"#;
        let served = parse_certs(body).unwrap();
        assert_eq!(
            served,
            vec![
                ServedCert {
                    serial: "1001".into(),
                    not_after: Some(1_796_079_295),
                },
                ServedCert {
                    serial: "0abc".into(),
                    not_after: None,
                },
            ]
        );
        assert_eq!(parse_certs(b"{}").unwrap(), vec![]);
        assert!(parse_certs(b"not json").is_err());
    }

    #[test]
    fn server_info_names_the_answering_epoch() {
        let text = r#"{"state":"LIVE","command_line_options":{"restart_epoch":2,"base_id":"0","config_path":"/d/envoy-rev7.json"}}"#;
        let info: ServerInfo = serde_json::from_str(text).unwrap();
        let o = &info.command_line_options;
        assert_eq!(
            (info.state.as_str(), o.restart_epoch, o.config_path.as_str()),
            ("LIVE", 2, "/d/envoy-rev7.json")
        );
    }
}
