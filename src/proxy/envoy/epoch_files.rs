//! Each epoch's bootstrap file: produced from the plan, with baton's statsd sink
//! added, written atomically as `envoy-rev<N>.json` (mode 0600) and removed when the
//! epoch is gone. `baton render` writes exactly what `baton envoy` would.

use std::path::PathBuf;

use super::statsd;
use super::Settings;
use crate::bootstrap::{self, BootstrapPlan};
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
    sink: statsd::Sink,
}

impl EpochFiles {
    /// Files from `settings`, whose sink points at baton's statsd receiver on
    /// `statsd_port` (0 where no receiver runs, as in `baton render`).
    pub fn new(settings: &Settings, statsd_port: u16) -> Self {
        EpochFiles {
            plan: settings.bootstrap.clone(),
            dir: settings.config_dir.clone(),
            sink: statsd::Sink {
                port: statsd_port,
                flush: settings.stats_flush,
            },
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
            statsd::add_sink(&mut json, self.sink);
            rendered = bootstrap::Rendered::from_json(json);
        }
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
