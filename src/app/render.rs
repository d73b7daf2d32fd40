//! `baton render`: the bootstrap an epoch would get, checked, printed or written.

use std::io::Write;

use anyhow::Context;

use crate::cli::RenderArgs;
use crate::config::{self, ConfigError, Env};
use crate::proxy::envoy::{EnvoyDriver, EnvoyOptions, StatsSink};

/// `--stats-flush-interval`'s default, shown by `baton render`.
const RENDER_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_secs(5);
use crate::supervisor::state::EXIT_CONFIG;
use crate::sys::Reaper;

/// Render (and with `--validate-with`, validate) the bootstrap. Returns the exit code.
pub fn render(args: &RenderArgs, env: &dyn Env) -> anyhow::Result<i32> {
    let mut problems = Vec::new();
    let settings = config::bootstrap_settings(&args.bootstrap, env, &mut problems);
    let validator = args
        .validate_with
        .as_ref()
        .and_then(|b| config::resolve_binary("--validate-with", b, env, &mut problems));
    let Some(settings) = settings.filter(|_| problems.is_empty()) else {
        return Err(ConfigError { problems }.into());
    };
    // Render into a scratch directory so nothing of a real config dir is touched.
    let scratch = tempfile_dir()?;
    let driver = EnvoyDriver {
        binary: validator.clone().unwrap_or_default(),
        bootstrap: settings.plan,
        config_dir: scratch.clone(),
        admin: ([127, 0, 0, 1], settings.admin_port).into(),
        options: EnvoyOptions {
            drain_time: Default::default(),
            parent_shutdown: Default::default(),
            service_cluster: args.bootstrap.service_cluster.clone(),
            service_node: config::service_node(&args.bootstrap, env),
            ip_version: "v4".into(),
            log_level: "error".into(),
            concurrency: args.bootstrap.concurrency,
            skip_parent_stats: false,
            extra: Vec::new(),
        },
        ready_timeout: Default::default(),
        certs: Vec::new(),
        // What `baton envoy` adds, so it is visible here; the real port is chosen when
        // baton runs.
        stats_sink: Some(StatsSink {
            port: 0,
            flush: RENDER_FLUSH_INTERVAL,
        }),
    };
    let result = produce(&driver, validator.is_some(), args);
    let _ = std::fs::remove_dir_all(&scratch);
    match result {
        Ok(()) => Ok(0),
        Err(message) => {
            eprintln!("baton render: {message}");
            Ok(EXIT_CONFIG)
        }
    }
}

fn produce(driver: &EnvoyDriver, validate: bool, args: &RenderArgs) -> Result<(), String> {
    let path = if validate {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        runtime.block_on(async {
            let reaper = Reaper::new();
            reaper.start().map_err(|e| e.to_string())?;
            driver.preflight(&reaper, 0).await.map_err(|e| e.message)
        })?
    } else {
        driver.write_bootstrap(0).map_err(|e| e.message)?
    };
    let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    match &args.output {
        Some(out) => {
            std::fs::write(out, &text).map_err(|e| format!("--output {}: {e}", out.display()))
        }
        None => std::io::stdout()
            .write_all(&text)
            .map_err(|e| format!("standard output: {e}")),
    }
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("baton-render-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
