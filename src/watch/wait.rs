//! Waiting for the watched files to exist before the first epoch starts.
//!
//! A sidecar often starts before the volume that holds its certificates is populated
//! (a Secret created by cert-manager moments later, an init container still copying).
//! baton waits for them, up to `--cert-wait`, rather than starting a proxy that would
//! fail on a missing file.
//!
//! This polls instead of watching: the parent directories may not exist yet either,
//! and a poll every [`POLL_INTERVAL`] is cheap and has no corner cases.

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

/// How often [`wait_for`] looks again.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

/// The watched files did not all appear in time.
#[derive(Debug, thiserror::Error)]
#[error("timed out after {waited:?} waiting for {}", list(missing))]
pub struct WaitError {
    /// The paths still missing at the deadline, in the order they were given.
    pub missing: Vec<PathBuf>,
    /// How long was waited.
    pub waited: Duration,
}

fn list(paths: &[PathBuf]) -> String {
    let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    names.join(", ")
}

/// How often a wait says what it still waits for.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Wait until every path exists (through symlinks: a dangling link is missing), or
/// fail after `timeout` naming the ones that are still missing. Returns at once when
/// they all exist already. `report` is told what is missing when the wait begins and
/// every [`REPORT_EVERY`] after.
pub async fn wait_for(
    paths: &[PathBuf],
    timeout: Duration,
    mut report: impl FnMut(&[PathBuf], Duration),
) -> Result<(), WaitError> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut next_report = start;
    loop {
        let missing: Vec<PathBuf> = paths.iter().filter(|p| !p.exists()).cloned().collect();
        if missing.is_empty() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(WaitError {
                missing,
                waited: now - start,
            });
        }
        if now >= next_report {
            report(&missing, deadline - now);
            next_report = now + REPORT_EVERY;
        }
        tokio::time::sleep_until(deadline.min(now + POLL_INTERVAL)).await;
    }
}
