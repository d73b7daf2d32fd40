//! Wiring: settings in, a running supervisor (or a rendered bootstrap) out.

mod render;
mod shell;

pub use render::render;

use anyhow::Context;
use tokio::sync::mpsc;

use crate::config::EnvoySettings;
use crate::supervisor::{step, Event, State};
use crate::sys::{self, Reaper};

/// Supervise Envoy until shutdown; returns baton's exit code.
pub fn run_envoy(settings: EnvoySettings) -> anyhow::Result<i32> {
    if let Err(e) = sys::become_subreaper() {
        tracing::warn!(error = %e, "cannot become a child subreaper; orphans will not be reaped here");
    }
    // One thread: see the PDEATHSIG invariant in `shell`.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let owned_dir = settings.owned_config_dir.clone();
    let code = runtime.block_on(supervise(settings));
    if let Some(dir) = owned_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    code
}

async fn supervise(settings: EnvoySettings) -> anyhow::Result<i32> {
    let (events, mut inbox) = mpsc::unbounded_channel();
    let reaper = Reaper::new();
    reaper.start().context("listening for SIGCHLD")?;
    sys::signals::forward_to(events.clone()).context("installing signal handlers")?;
    std::fs::create_dir_all(&settings.driver.config_dir).with_context(|| {
        format!(
            "creating --config-dir {}",
            settings.driver.config_dir.display()
        )
    })?;
    tracing::info!(
        envoy = %settings.driver.binary.display(),
        config_dir = %settings.driver.config_dir.display(),
        admin = %settings.driver.admin,
        "baton supervising envoy"
    );
    let mut state = State::new(settings.policy.clone());
    let mut shell = shell::Shell::new(settings.driver, settings.base_id, reaper, events.clone());
    shell.learn_hot_restart_version().await;
    let _ = events.send(Event::Start);
    while let Some(event) = inbox.recv().await {
        tracing::trace!(?event, "event");
        for action in step(&mut state, event) {
            if let Some(code) = shell.execute(action) {
                tracing::info!(code, "baton exiting");
                return Ok(code);
            }
        }
    }
    anyhow::bail!("event channel closed unexpectedly")
}
