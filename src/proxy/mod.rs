//! Drivers: how baton prepares, starts, checks and stops one kind of proxy.
//!
//! The state machine decides *when*; a [`Proxy`] knows *how* for its kind. The shell
//! (`app::shell`) is written once against this trait. A driver is built once,
//! complete, by `app` from its plain settings and the resources it needs (reaper,
//! stats segment, listener set, metrics receiver): there is no second phase.

pub mod envoy;
pub mod generic;

use std::future::Future;
use std::net::SocketAddr;
use std::process::Command;

use crate::bootstrap::CertPair;
use crate::supervisor::{CertInfo, DriverKind, FailureReason, Launch};

/// A preflight that did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreflightError {
    /// Which check failed.
    pub reason: FailureReason,
    /// What the operator needs to know.
    pub message: String,
}

impl PreflightError {
    /// A failure of `reason`.
    pub fn new(reason: FailureReason, message: impl Into<String>) -> Self {
        PreflightError {
            reason,
            message: message.into(),
        }
    }
}

/// What a passed preflight produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Prepared {
    /// sha256 of the configuration the epoch will run with, hex.
    pub config_digest: Option<String>,
    /// The `--cert` pairs it will serve, as checked.
    pub certs: Vec<CertInfo>,
}

/// What an in-place certificate rotation did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotated {
    /// The `--cert` pairs the serving epoch serves now, as checked.
    pub certs: Vec<CertInfo>,
    /// `false` when they are the ones it served already (nothing was handed over).
    pub changed: bool,
}

/// Check every `--cert` pair (parses, key matches, valid now, chain in order); what
/// each leaf holds, for the epoch's record, the log and the expiry metrics.
pub fn check_certs(pairs: &[CertPair]) -> Result<Vec<CertInfo>, PreflightError> {
    let now = std::time::SystemTime::now();
    pairs
        .iter()
        .map(|pair| {
            crate::certs::check_pair(&pair.cert, &pair.key, now)
                .map(|summary| cert_info(pair, summary))
                .map_err(|e| PreflightError::new(FailureReason::Cert, e.to_string()))
        })
        .collect()
}

/// What the core records of `pair`, whose leaf `summary` describes.
pub fn cert_info(pair: &CertPair, summary: crate::certs::CertSummary) -> CertInfo {
    CertInfo {
        path: pair.cert.display().to_string(),
        subject: summary.subject,
        serial: summary.serial,
        not_before: unix_seconds(summary.not_before),
        not_after: unix_seconds(summary.not_after),
    }
}

/// Seconds since the Unix epoch, negative before it.
fn unix_seconds(t: std::time::SystemTime) -> i64 {
    match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_secs()).map_or(i64::MIN, |s| -s),
    }
}

/// One kind of proxy, as the shell drives it.
pub trait Proxy: Send + Sync + 'static {
    /// Which handover protocol the state machine must follow.
    fn kind(&self) -> DriverKind;

    /// Check and produce everything epoch `epoch` needs, without touching any running
    /// epoch. A configuration whose digest is in `trusted` already served: the
    /// proxy's own validation of it may be skipped (every other check runs).
    fn preflight(
        &self,
        epoch: u32,
        trusted: &[String],
    ) -> impl Future<Output = Result<Prepared, PreflightError>> + Send;

    /// The digest of the configuration a restart would run with now (the same as
    /// [`Prepared::config_digest`] for the same inputs), without writing or starting
    /// anything; `None` if the driver cannot tell (the proxy reads its own files).
    fn inputs_digest(&self) -> Option<String>;

    /// The inputs may have changed and a preflight will follow: prepare what can be
    /// prepared now (Envoy: validate the bootstrap as it renders now), so that the
    /// preflight finds it done. Never fails; the preflight reports problems.
    fn warm(&self) -> impl Future<Output = ()> + Send;

    /// The command line of one epoch; `Err` if it cannot be built (the epoch fails to
    /// spawn).
    fn command(&self, launch: &Launch) -> Result<Command, String>;

    /// Resolve when the epoch is ready, or with why not once `--ready-timeout` passed.
    fn wait_ready(
        &self,
        launch: &Launch,
        pid: u32,
    ) -> impl Future<Output = Result<(), String>> + Send;

    /// A newer epoch serves: tell this one to drain (generic driver).
    fn drain(&self, epoch: u32, pid: u32);

    /// Envoy: make the serving epoch's listeners drain gracefully while it goes on
    /// serving what it has (`POST /drain`, shutdown).
    fn drain_listeners(&self, epoch: u32, pid: u32) -> impl Future<Output = ()> + Send;

    /// Whether [`Proxy::active_connections`] can ever answer.
    fn counts_connections(&self) -> bool;

    /// The serving epoch's active downstream connections, when the driver can count
    /// them and the proxy answers.
    fn active_connections(&self) -> impl Future<Output = Option<u64>> + Send;

    /// The epoch is gone: remove its files, free what it held.
    fn cleanup(&self, epoch: u32);

    /// Envoy: clear a stuck "initialising" flag of `chain`.
    fn repair_chain(&self, chain: u32) -> Result<(), String>;

    /// Envoy: no epoch of `chain` runs any more.
    fn release_chain(&self, chain: u32);

    /// Envoy: answer the child of the dead epoch at `restart_epoch` of `chain` in its
    /// place (see `proxy::envoy::stand_in`).
    fn stand_in(&self, chain: u32, restart_epoch: u32) -> Result<(), String>;

    /// Envoy's admin address, whose stats the status server merges.
    fn admin_addr(&self) -> Option<SocketAddr>;

    /// `--cert-rotation sds`: check the `--cert` pairs and hand those that changed to
    /// the serving epoch in place, then confirm it serves them. On `Err` the serving
    /// epoch serves what it did before.
    fn rotate(&self) -> impl Future<Output = Result<Rotated, PreflightError>> + Send;
}
