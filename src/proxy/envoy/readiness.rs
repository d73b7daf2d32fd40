//! When an Envoy epoch is ready: its own admin API (not its parent's, which answers
//! on the same port until the child takes it over) reports `LIVE` with its workers
//! started.
//!
//! Three gauges are polled first (`server.hot_restart_epoch`, `server.state`,
//! `listener_manager.workers_started`: 40 bytes); `/server_info`, which names the
//! process exactly (`--restart-epoch` and `-c`, unique per baton epoch, across
//! chains too), is asked only once they say ready: it is 125 KB of JSON that the
//! starting Envoy's main thread builds (3 ms a request, measured) while it also
//! initialises.

use std::time::{Duration, Instant};

use super::admin::Admin;

/// How often readiness is polled while an epoch starts.
const READY_POLL: Duration = Duration::from_millis(10);
/// The gauges that say "this restart epoch is live with its workers running".
const GAUGES: [&str; 3] = [
    "server.hot_restart_epoch",
    "server.state",
    "listener_manager.workers_started",
];
/// `server.state` of a live server (then DRAINING 1, PRE_INITIALIZING 2,
/// INITIALIZING 3).
const LIVE: u64 = 0;

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
    let gauges = admin.stats(&GAUGES).await.map_err(|e| e.to_string())?;
    let gauge = |name: &str| gauges.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    let epoch = gauge(GAUGES[0]);
    if epoch != Some(u64::from(restart_epoch)) {
        return Err(format!("admin answered by restart epoch {epoch:?}"));
    }
    match (gauge(GAUGES[1]), gauge(GAUGES[2])) {
        (Some(LIVE), Some(1)) => {}
        (state, workers) => {
            return Err(format!(
                "server.state {state:?} (0 is LIVE), workers_started {workers:?}"
            ))
        }
    }
    // Which process exactly: an epoch of an abandoned chain may have the same restart
    // epoch and share the port.
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
    Ok(())
}
