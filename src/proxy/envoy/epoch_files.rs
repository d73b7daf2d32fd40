//! Each epoch's bootstrap file: produced from the plan, with baton's metrics
//! sink added, written atomically as `envoy-rev<N>.json` (mode 0600) and removed when the
//! epoch is gone. `baton render` writes exactly what `baton envoy` would.

use std::path::PathBuf;

use super::sink;
use super::Settings;
use crate::bootstrap::{self, BootstrapPlan, SdsSecret};
use crate::proxy::PreflightError;
use crate::supervisor::FailureReason;

/// A bootstrap as an epoch would get it, and the sha256 of its bytes (hex).
pub struct Bootstrap {
    rendered: bootstrap::Rendered,
    /// The digest epochs are compared by.
    pub digest: String,
}

/// The bootstrap files of one baton's epochs.
#[derive(Debug, Clone)]
pub struct EpochFiles {
    plan: BootstrapPlan,
    dir: PathBuf,
    sink: sink::Sink,
    /// `--cert-rotation sds`: the secrets every bootstrap must name.
    sds: Vec<SdsSecret>,
}

impl EpochFiles {
    /// Files from `settings`, whose sink points at baton's receiver on `sink_port`
    /// (0 where no receiver runs, as in `baton render`).
    pub fn new(settings: &Settings, sink_port: u16) -> Self {
        EpochFiles {
            plan: settings.bootstrap.clone(),
            dir: settings.config_dir.clone(),
            sink: sink::Sink {
                port: sink_port,
                flush: settings.stats_flush,
            },
            sds: settings.sds.clone(),
        }
    }

    /// Path of the bootstrap of `epoch`.
    pub fn path(&self, epoch: u32) -> PathBuf {
        let ext = if self.plan.is_json() { "json" } else { "yaml" };
        bootstrap::epoch_config_path(&self.dir, epoch, ext)
    }

    /// The bootstrap an epoch would get now, with baton's sink.
    fn produce(&self) -> Result<bootstrap::Rendered, PreflightError> {
        let mut rendered = self.plan.produce().map_err(|e| failed(&e))?;
        // A YAML static bootstrap is used as-is: it gets no sink.
        if rendered.json.is_object() {
            let mut json = rendered.json;
            sink::add_sink(&mut json, self.sink);
            rendered = bootstrap::Rendered::from_json(json);
        }
        self.check_sds(&rendered.text)?;
        Ok(rendered)
    }

    /// The bootstrap an epoch would get now and its digest, not written anywhere.
    pub fn render(&self) -> Result<Bootstrap, PreflightError> {
        let rendered = self.produce()?;
        let digest = digest(&rendered);
        Ok(Bootstrap { rendered, digest })
    }

    /// Produce and write this epoch's bootstrap; does not validate it with Envoy.
    pub fn write(&self, epoch: u32) -> Result<(PathBuf, Bootstrap), PreflightError> {
        let bootstrap = self.render()?;
        let path = self.path(epoch);
        bootstrap::write_epoch_config(&path, &bootstrap.rendered).map_err(|e| failed(&e))?;
        Ok((path, bootstrap))
    }

    /// Write a bootstrap to be validated ahead of any epoch, under a name of its
    /// own (`envoy-warm-<digest>`); remove it with [`EpochFiles::remove_scratch`].
    pub fn write_scratch(&self, bootstrap: &Bootstrap) -> Result<PathBuf, PreflightError> {
        let ext = if self.plan.is_json() { "json" } else { "yaml" };
        let short = &bootstrap.digest[..bootstrap.digest.len().min(16)];
        let path = self.dir.join(format!("envoy-warm-{short}.{ext}"));
        bootstrap::write_epoch_config(&path, &bootstrap.rendered).map_err(|e| failed(&e))?;
        Ok(path)
    }

    /// Remove a file [`EpochFiles::write_scratch`] wrote.
    pub fn remove_scratch(&self, path: &std::path::Path) {
        if let Err(e) = bootstrap::remove_epoch_config(path) {
            tracing::warn!(error = %e, "could not remove bootstrap");
        }
    }

    /// Under `--cert-rotation sds` a pair reaches Envoy only through its SDS resource:
    /// a bootstrap that does not name one would never serve it, and every rotation of
    /// it would fail to be confirmed. Said once, at the first epoch, instead.
    fn check_sds(&self, text: &str) -> Result<(), PreflightError> {
        let missing: Vec<String> = self
            .sds
            .iter()
            .filter(|s| !text.contains(&*s.path.to_string_lossy()))
            .map(|s| format!("{} ({})", s.name, s.path.display()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(PreflightError::new(
            FailureReason::Config,
            format!(
                "--cert-rotation sds: the bootstrap does not name the SDS resource of every \
                 --cert pair, so Envoy would never serve it: {} (reference each as \
                 `tls_certificate_sds_secret_configs` with `path_config_source`, as the \
                 embedded templates do for the first pair through `tls.sds`; see \
                 bootstrap-templates/README.md)",
                missing.join(", ")
            ),
        ))
    }

    /// Remove the bootstrap of an epoch that is gone.
    pub fn remove(&self, epoch: u32) {
        if let Err(e) = bootstrap::remove_epoch_config(&self.path(epoch)) {
            tracing::warn!(error = %e, "could not remove bootstrap");
        }
    }
}

fn failed(e: &dyn std::fmt::Display) -> PreflightError {
    PreflightError::new(FailureReason::Template, e.to_string())
}

/// sha256 of the bytes written, hex: the same as the digest of the file.
fn digest(rendered: &bootstrap::Rendered) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(rendered.text.as_bytes()))
}
