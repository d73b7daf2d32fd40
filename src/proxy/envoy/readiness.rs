//! When an Envoy epoch is ready: its own admin API (not its parent's, which answers
//! on the same port until the child takes it over) reports `LIVE` with its workers
//! started.

use std::time::{Duration, Instant};

use super::admin::Admin;

/// How often readiness is polled while an epoch starts.
const READY_POLL: Duration = Duration::from_millis(20);

/// Wait until the Envoy started with `restart_epoch` on `config` is ready, or
/// `timeout` passes.
pub async fn wait_ready(
    admin: &Admin,
    restart_epoch: u32,
    config: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let Err(seen) = ready_once(admin, restart_epoch, config).await else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "not ready within {} ({seen})",
                humantime::format_duration(timeout)
            ));
        }
        tokio::time::sleep(READY_POLL).await;
    }
}

/// One readiness probe: `Err(what was seen)` unless ready.
async fn ready_once(admin: &Admin, restart_epoch: u32, config: &str) -> Result<(), String> {
    let info = admin.server_info().await.map_err(|e| e.to_string())?;
    let options = &info.command_line_options;
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
        Ok(Some(1)) => Ok(()),
        Ok(other) => Err(format!("LIVE, workers_started {other:?}")),
        Err(e) => Err(e.to_string()),
    }
}
