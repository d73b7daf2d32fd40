//! The Envoy driver: native hot restart.
//!
//! Per epoch: render the bootstrap into `envoy-rev<N>.json`, check it with
//! `envoy --mode validate`, start Envoy with `--restart-epoch`, and call it ready once
//! its admin API reports `LIVE` **and** `listener_manager.workers_started` = 1 for
//! exactly that restart epoch (the parent answers on the same port until the child
//! takes the admin socket over).
//!
//! **Invariant:** a chain is one base id. Epoch 0 of a chain picks a free base id
//! itself (`--use-dynamic-base-id --base-id-path F`, so two batons on one host never
//! collide) unless `--base-id` fixes the first chain's; later epochs read `F`.

mod admin;
mod args;
mod chains;
mod proxy;
pub mod statsd;
mod validate;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

pub use admin::{Admin, AdminError};
pub use args::EnvoyOptions;
pub use chains::Chains;
pub use proxy::EnvoyProxy;

use crate::bootstrap::{self, TemplateSource, Values};
use crate::proxy::PreflightError;
use crate::supervisor::{FailureReason, Launch};
use crate::sys::Reaper;

/// How often readiness is polled while an epoch starts.
const READY_POLL: Duration = Duration::from_millis(20);
/// A single admin request must answer within this.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Where an epoch's bootstrap comes from.
#[derive(Debug, Clone)]
pub enum BootstrapPlan {
    /// A template rendered with values, re-read for every epoch.
    Template {
        /// Embedded name or file.
        source: TemplateSource,
        /// Everything the template may use.
        values: Values,
    },
    /// `--custom-config`: a static file copied as-is for every epoch.
    Custom(PathBuf),
}

/// Everything the Envoy driver needs, validated.
#[derive(Debug, Clone)]
pub struct EnvoyDriver {
    /// The `envoy` executable.
    pub binary: PathBuf,
    /// How to produce each epoch's bootstrap.
    pub bootstrap: BootstrapPlan,
    /// Where `envoy-rev<N>.json` and base id files go.
    pub config_dir: PathBuf,
    /// Envoy's admin address (loopback), for readiness and drain.
    pub admin: SocketAddr,
    /// Flags passed to every epoch.
    pub options: EnvoyOptions,
    /// How long an epoch may take to become ready.
    pub ready_timeout: Duration,
    /// `--cert` pairs, checked before every restart.
    pub certs: Vec<bootstrap::CertPair>,
    /// Where and how often every epoch sends its counters to baton (see [`statsd`]);
    /// `None` until baton has bound its receiver, and in `baton render`.
    pub stats_sink: Option<StatsSink>,
}

/// baton's statsd receiver, as the bootstrap names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSink {
    /// UDP port on 127.0.0.1.
    pub port: u16,
    /// `stats_flush_interval`.
    pub flush: Duration,
}

impl EnvoyDriver {
    /// Path of the bootstrap of `epoch`.
    pub fn config_path(&self, epoch: u32) -> PathBuf {
        match &self.bootstrap {
            BootstrapPlan::Custom(path) if !is_json(path) => {
                self.config_dir.join(format!("envoy-rev{epoch}.yaml"))
            }
            _ => bootstrap::epoch_config_path(&self.config_dir, epoch),
        }
    }

    /// Produce this epoch's bootstrap file; does not validate it with Envoy.
    pub fn write_bootstrap(&self, epoch: u32) -> Result<PathBuf, PreflightError> {
        let rendered = match &self.bootstrap {
            BootstrapPlan::Template { source, values } => bootstrap::render(source, values)
                .map_err(|e| PreflightError::new(FailureReason::Template, e.to_string()))?,
            BootstrapPlan::Custom(path) => read_custom(path)?,
        };
        let rendered = match (self.stats_sink, rendered.json.is_object()) {
            (Some(sink), true) => {
                let mut json = rendered.json;
                statsd::add_sink(&mut json, sink.port, sink.flush);
                bootstrap::Rendered::from_json(json)
            }
            _ => rendered,
        };
        let written = bootstrap::write_epoch_config(&self.config_dir, epoch, &rendered)
            .map_err(|e| PreflightError::new(FailureReason::Template, e.to_string()))?;
        let wanted = self.config_path(epoch);
        if written != wanted {
            std::fs::rename(&written, &wanted).map_err(|e| {
                PreflightError::new(
                    FailureReason::Template,
                    format!(
                        "renaming {} to {}: {e}",
                        written.display(),
                        wanted.display()
                    ),
                )
            })?;
        }
        Ok(wanted)
    }

    /// Render, write and validate the bootstrap of `epoch` without touching any
    /// running epoch. On failure the file is removed again.
    pub async fn preflight(&self, reaper: &Reaper, epoch: u32) -> Result<PathBuf, PreflightError> {
        let path = self.write_bootstrap(epoch)?;
        let checked = validate::run(reaper, &self.binary, &path, &self.options).await;
        if let Err(message) = checked {
            self.remove_bootstrap(epoch);
            return Err(PreflightError::new(FailureReason::Config, message));
        }
        Ok(path)
    }

    /// `envoy --hot-restart-version`.
    pub async fn hot_restart_version(&self, reaper: &Reaper) -> Result<String, String> {
        validate::hot_restart_version(reaper, &self.binary).await
    }

    /// Remove the bootstrap of an epoch that is gone.
    pub fn remove_bootstrap(&self, epoch: u32) {
        let path = self.config_path(epoch);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "could not remove bootstrap")
            }
        }
    }

    /// The command line of one epoch.
    pub fn command(&self, launch: &Launch, base_id: &chains::BaseIdArgs) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(args::epoch_args(
            &self.config_path(launch.epoch),
            launch.restart_epoch,
            base_id,
            &self.options,
        ));
        cmd
    }

    /// An admin client for this Envoy.
    pub fn admin(&self) -> Admin {
        Admin::new(self.admin, ADMIN_TIMEOUT)
    }

    /// Wait until `epoch` (started with `restart_epoch`) is `LIVE` with its workers
    /// started, or `--ready-timeout` passes.
    pub async fn wait_ready(&self, epoch: u32, restart_epoch: u32) -> Result<(), String> {
        let admin = self.admin();
        let config = self.config_path(epoch);
        let config = config.to_string_lossy();
        let deadline = Instant::now() + self.ready_timeout;
        let mut last = String::from("admin API not answering yet");
        loop {
            match ready_once(&admin, restart_epoch, &config).await {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(seen) => last = seen,
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "not ready within {} ({last})",
                    humantime::format_duration(self.ready_timeout)
                ));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }
}

/// One readiness probe: `Ok(true)` when ready, `Err(what was seen)` otherwise.
async fn ready_once(admin: &Admin, restart_epoch: u32, config: &str) -> Result<bool, String> {
    let info = admin.server_info().await.map_err(|e| e.to_string())?;
    let options = &info.command_line_options;
    // Until the new epoch takes the admin socket over, its parent answers.
    if options.restart_epoch != restart_epoch || options.config_path != config {
        return Err(format!(
            "admin answered by restart epoch {} ({})",
            options.restart_epoch, options.config_path
        ));
    }
    if info.state != "LIVE" {
        return Err(format!("state {}", info.state));
    }
    match admin.stat("listener_manager.workers_started").await {
        Ok(Some(1)) => Ok(true),
        Ok(other) => Err(format!("LIVE, workers_started {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}

fn is_json(path: &std::path::Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}

/// `--custom-config`: used as-is; JSON is parsed here so errors name line and
/// column, YAML is left to `envoy --mode validate`.
fn read_custom(path: &std::path::Path) -> Result<bootstrap::Rendered, PreflightError> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        PreflightError::new(
            FailureReason::Template,
            format!("--custom-config {}: {e}", path.display()),
        )
    })?;
    if is_json(path) {
        let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            PreflightError::new(
                FailureReason::Template,
                format!(
                    "--custom-config {}: not JSON at line {} column {}: {e}",
                    path.display(),
                    e.line(),
                    e.column()
                ),
            )
        })?;
        return Ok(bootstrap::Rendered { text, json });
    }
    Ok(bootstrap::Rendered {
        text,
        json: serde_json::Value::Null,
    })
}
