//! `baton render`: the bootstrap an epoch would get, checked, printed or written.
//! It goes through the same [`EpochFiles`] as `baton envoy`, so what is printed is
//! what an epoch runs with (the metrics receiver's port shows as 0: it is chosen at run
//! time). Under `--cert-rotation sds` the printed bootstrap names the SDS resources in
//! `--config-dir`, where `baton envoy` writes them; `--validate-with` checks a copy
//! that names resources written (from the checked `--cert` pairs) into a scratch
//! directory instead, since Envoy's validator wants them to exist and nothing of a
//! real config dir is touched.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::bootstrap::{BootstrapPlan, SdsSecret};
use crate::config::RenderSettings;
use crate::exit;
use crate::proxy::envoy::sds::Secrets;
use crate::proxy::envoy::{validate, EpochFiles, Settings};
use crate::sys::Reaper;

/// Render (and with `--validate-with`, validate) the bootstrap. Returns the exit code.
pub fn render(mut settings: RenderSettings) -> anyhow::Result<i32> {
    for note in &settings.notes {
        eprintln!("baton render: {note}");
    }
    // Render into a scratch directory so nothing of a real config dir is touched.
    let scratch = std::env::temp_dir().join(format!("baton-render-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let shown = settings.driver.clone();
    settings.driver.config_dir = scratch.clone();
    let result = if shown.sds.is_empty() {
        produce(&settings)
    } else {
        produce_sds(&settings, shown)
    };
    let _ = std::fs::remove_dir_all(&scratch);
    match result {
        Ok(()) => Ok(exit::OK),
        Err(message) => {
            eprintln!("baton render: {message}");
            Ok(exit::CONFIG)
        }
    }
}

fn produce(settings: &RenderSettings) -> Result<(), String> {
    let files = EpochFiles::new(&settings.driver, 0);
    let (path, _) = files.write(0).map_err(|e| e.message)?;
    if settings.validate {
        validate_file(settings, &path)?;
    }
    let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    output(settings, &text)
}

/// `--cert-rotation sds`: print the bootstrap as `shown` (the real config dir) names
/// its SDS resources; validate the same with resources in the scratch directory.
fn produce_sds(settings: &RenderSettings, shown: Settings) -> Result<(), String> {
    let scratch = &settings.driver.config_dir;
    let text = {
        let dir = scratch_subdir(scratch, "shown")?;
        let mut shown = shown;
        shown.config_dir = dir;
        let files = EpochFiles::new(&shown, 0);
        let (path, _) = files.write(0).map_err(|e| e.message)?;
        std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?
    };
    if settings.validate {
        let mut checked = settings.driver.clone();
        checked.sds = (0..checked.sds.len())
            .map(|i| SdsSecret::of(scratch, i))
            .collect();
        if let BootstrapPlan::Template { values, .. } = &mut checked.bootstrap {
            values.sds = checked.sds.clone();
        }
        // Lives until the validator ran: dropping it removes the resources.
        let secrets = Secrets::new(checked.certs.clone(), checked.sds.clone());
        secrets.prepare().map_err(|e| e.message)?;
        let (path, _) = EpochFiles::new(&checked, 0)
            .write(0)
            .map_err(|e| e.message)?;
        validate_file(settings, &path)?;
        drop(secrets);
    }
    output(settings, &text)
}

/// A directory inside the scratch directory.
fn scratch_subdir(scratch: &Path, name: &str) -> Result<PathBuf, String> {
    let dir = scratch.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(dir)
}

fn validate_file(settings: &RenderSettings, path: &Path) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        let reaper = Reaper::start().map_err(|e| e.to_string())?;
        let d = &settings.driver;
        validate(&reaper, &d.binary, path, &d.options).await
    })
}

fn output(settings: &RenderSettings, text: &[u8]) -> Result<(), String> {
    match &settings.output {
        Some(out) => {
            std::fs::write(out, text).map_err(|e| format!("--output {}: {e}", out.display()))
        }
        None => std::io::stdout()
            .write_all(text)
            .map_err(|e| format!("standard output: {e}")),
    }
}
