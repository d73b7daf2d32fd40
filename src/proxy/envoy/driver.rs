//! [`EnvoyProxy`]: the Envoy driver behind the [`Proxy`] trait, built once and
//! complete, with the state that outlives one epoch (chains).

use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use super::admin::Admin;
use super::chains::Chains;
use super::epoch_files::EpochFiles;
use super::sds::Secrets;
use super::validations::Validations;
use super::{args, readiness, rotation, validate, Settings};
use crate::proxy::{check_certs, PreflightError, Prepared, Proxy, Rotated};
use crate::supervisor::{DriverKind, FailureReason, Launch};
use crate::sys::envoy_shm::KNOWN_HOT_RESTART_VERSION;
use crate::sys::Reaper;

/// How long past the parent shutdown time a stand-in waits for the terminate request.
const STAND_IN_MARGIN: Duration = Duration::from_secs(10);
/// A single admin request must answer within this.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// The Envoy driver and its chains.
pub struct EnvoyProxy {
    settings: Settings,
    files: EpochFiles,
    reaper: Reaper,
    chains: Mutex<Chains>,
    /// `envoy --hot-restart-version`, asked once at start; `None` if it failed (a
    /// broken chain then cannot be repaired in place).
    hot_restart_version: Option<String>,
    /// `--cert-rotation sds`: the SDS resources the `--cert` pairs reach Envoy by.
    secrets: Option<Secrets>,
    /// Bootstraps `envoy --mode validate` passed, and the validations running.
    validations: Validations,
    /// The digests of configurations that served, as the last preflight was told.
    served: Mutex<Vec<String>>,
}

impl EnvoyProxy {
    /// The driver for `settings`: epochs send their counters to baton's receiver on
    /// `sink_port`, and helper commands run through `reaper`.
    pub fn new(
        settings: Settings,
        reaper: Reaper,
        sink_port: u16,
        hot_restart_version: Option<String>,
    ) -> Self {
        let files = EpochFiles::new(&settings, sink_port);
        let chains = Chains::new(&settings.config_dir, settings.base_id);
        let secrets = (!settings.sds.is_empty())
            .then(|| Secrets::new(settings.certs.clone(), settings.sds.clone()));
        EnvoyProxy {
            settings,
            files,
            reaper,
            chains: Mutex::new(chains),
            hot_restart_version,
            secrets,
            validations: Validations::default(),
            served: Mutex::new(Vec::new()),
        }
    }

    /// `envoy --mode validate` on `path`, unless a file of the same bytes passed or
    /// is being validated; `Ok(true)` if it ran (or was awaited) for this call.
    async fn ensure_valid(&self, path: &std::path::Path, digest: &str) -> Result<bool, String> {
        let known = self.validations.known(digest);
        let s = &self.settings;
        self.validations
            .ensure(digest, || {
                validate::validate(&self.reaper, &s.binary, path, &s.options)
            })
            .await
            .map(|()| !known)
    }

    fn chains(&self) -> MutexGuard<'_, Chains> {
        self.chains.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn admin(&self) -> Admin {
        Admin::new(self.settings.admin, ADMIN_TIMEOUT)
    }
}

impl Proxy for EnvoyProxy {
    fn kind(&self) -> DriverKind {
        DriverKind::Envoy
    }

    async fn preflight(&self, epoch: u32, trusted: &[String]) -> Result<Prepared, PreflightError> {
        // With SDS the epoch starts with the pairs baton holds (and has just put in
        // their resources, which the validator needs to find); changed `--cert` files
        // reach it by a rotation.
        let certs = match &self.secrets {
            Some(secrets) => secrets.prepare()?,
            None => check_certs(&self.settings.certs)?,
        };
        *self.served.lock().unwrap_or_else(|e| e.into_inner()) = trusted.to_vec();
        let (path, bootstrap) = self.files.write(epoch)?;
        let digest = bootstrap.digest;
        // A bootstrap byte for byte the same as one that reached LIVE passed this
        // check then; running it again (60-100 ms, and a third Envoy's memory) would
        // protect nothing. Files it names are checked by the new epoch's own start,
        // whose failure leaves the serving epoch untouched.
        if trusted.contains(&digest) {
            tracing::info!(
                epoch,
                "bootstrap identical to one that served: envoy --mode validate skipped"
            );
        } else {
            match self.ensure_valid(&path, &digest).await {
                Ok(true) => {}
                Ok(false) => tracing::info!(
                    epoch,
                    "bootstrap validated ahead (while the restart waited): envoy --mode validate not run again"
                ),
                Err(message) => {
                    self.files.remove(epoch);
                    return Err(PreflightError::new(FailureReason::Config, message));
                }
            }
        }
        Ok(Prepared {
            config_digest: Some(digest),
            certs,
        })
    }

    fn inputs_digest(&self) -> Option<String> {
        self.files.render().ok().map(|b| b.digest)
    }

    async fn warm(&self) {
        let Ok(bootstrap) = self.files.render() else {
            // The preflight reports a template that does not render.
            return;
        };
        let served = self
            .served
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&bootstrap.digest);
        if served || self.validations.known(&bootstrap.digest) {
            return;
        }
        let Ok(path) = self.files.write_scratch(&bootstrap) else {
            return;
        };
        let outcome = self.ensure_valid(&path, &bootstrap.digest).await;
        self.files.remove_scratch(&path);
        tracing::debug!(ok = outcome.is_ok(), "bootstrap validated ahead");
    }

    fn command(&self, launch: &Launch) -> Result<Command, String> {
        let base_id = self.chains().args_for(launch.chain, launch.restart_epoch)?;
        let mut cmd = Command::new(&self.settings.binary);
        cmd.args(args::epoch_args(
            &self.files.path(launch.epoch),
            launch.restart_epoch,
            &base_id,
            &self.settings.options,
        ));
        Ok(cmd)
    }

    async fn wait_ready(&self, launch: &Launch, _pid: u32) -> Result<(), String> {
        let config = self.files.path(launch.epoch);
        readiness::wait_ready(
            &self.admin(),
            launch.restart_epoch,
            &config.to_string_lossy(),
            self.settings.ready_timeout,
        )
        .await?;
        // The serials `baton status` shows are what Envoy says it serves, not assumed.
        if let Some(secrets) = &self.secrets {
            let held = secrets.held();
            rotation::confirm(&self.admin(), &held, rotation::CONFIRM_TIMEOUT)
                .await
                .map_err(|why| {
                    format!("live, but not serving the certificates of its SDS resources: {why}")
                })?;
        }
        Ok(())
    }

    fn drain(&self, epoch: u32, pid: u32) {
        // Envoy drains its parent itself; the state machine never asks for this.
        tracing::debug!(epoch, pid, "drain request ignored by the envoy driver");
    }

    async fn drain_listeners(&self, epoch: u32, _pid: u32) {
        if let Err(e) = self.admin().drain_listeners_gracefully().await {
            tracing::warn!(epoch, error = %e, "could not drain listeners");
        }
    }

    fn counts_connections(&self) -> bool {
        true
    }

    async fn active_connections(&self) -> Option<u64> {
        match self.admin().active_downstream_connections().await {
            Ok(n) => Some(n),
            Err(e) => {
                tracing::debug!(error = %e, "cannot count active connections");
                None
            }
        }
    }

    fn cleanup(&self, epoch: u32) {
        self.files.remove(epoch);
    }

    fn repair_chain(&self, chain: u32) -> Result<(), String> {
        match self.hot_restart_version.as_deref() {
            Some(KNOWN_HOT_RESTART_VERSION) => self.chains().repair(chain),
            Some(v) => Err(format!(
                "hot restart version {v} is not the known {KNOWN_HOT_RESTART_VERSION}"
            )),
            None => Err("hot restart version unknown".into()),
        }
    }

    fn release_chain(&self, chain: u32) {
        self.chains().release(chain);
    }

    fn stand_in(&self, chain: u32, restart_epoch: u32) -> Result<(), String> {
        let base_id = self
            .chains()
            .base_id(chain)
            .ok_or_else(|| format!("base id of chain {chain} unknown"))?;
        // The child terminates its parent at its parent shutdown time at the latest.
        let at_most = self.settings.options.parent_shutdown + STAND_IN_MARGIN;
        super::stand_in::spawn(base_id, restart_epoch, at_most).map_err(|e| e.to_string())
    }

    fn admin_addr(&self) -> Option<SocketAddr> {
        Some(self.settings.admin)
    }

    async fn rotate(&self) -> Result<Rotated, PreflightError> {
        match &self.secrets {
            Some(secrets) => rotation::rotate(secrets, &self.admin()).await,
            None => Err(PreflightError::new(
                FailureReason::Cert,
                "in-place rotation needs --cert-rotation sds",
            )),
        }
    }
}
