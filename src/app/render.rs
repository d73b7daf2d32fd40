//! `baton render`: the bootstrap an epoch would get, checked, printed or written.
//! It goes through the same [`EpochFiles`] as `baton envoy`, so what is printed is
//! what an epoch runs with (the statsd port shows as 0: it is chosen at run time).

use std::io::Write;

use anyhow::Context;

use crate::config::RenderSettings;
use crate::exit;
use crate::proxy::envoy::{validate, EpochFiles};
use crate::sys::Reaper;

/// Render (and with `--validate-with`, validate) the bootstrap. Returns the exit code.
pub fn render(mut settings: RenderSettings) -> anyhow::Result<i32> {
    for note in &settings.notes {
        eprintln!("baton render: {note}");
    }
    // Render into a scratch directory so nothing of a real config dir is touched.
    let scratch = std::env::temp_dir().join(format!("baton-render-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    settings.driver.config_dir = scratch.clone();
    let result = produce(&settings);
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
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let reaper = Reaper::start().map_err(|e| e.to_string())?;
            let d = &settings.driver;
            validate(&reaper, &d.binary, &path, &d.options).await
        })?;
    }
    let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    match &settings.output {
        Some(out) => {
            std::fs::write(out, &text).map_err(|e| format!("--output {}: {e}", out.display()))
        }
        None => std::io::stdout()
            .write_all(&text)
            .map_err(|e| format!("standard output: {e}")),
    }
}
