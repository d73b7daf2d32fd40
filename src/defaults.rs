//! Every default of baton's interface in one place: clap shows these in `--help`
//! and the code uses the same constants, so a default cannot drift.

use std::time::Duration;

/// `--status-addr` of `baton envoy|run`: every interface, port 15020 (as Istio's
/// agent), so the kubelet's probes reach it on the pod IP.
pub const STATUS_ADDR: &str = "0.0.0.0:15020";
/// `--status-addr` of the client commands (`baton restart|drain|wait|status|stats`).
pub const STATUS_CLIENT_ADDR: &str = "127.0.0.1:15020";
/// `baton wait --timeout`.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// `--debounce`: act once the watched directories have been still this long.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// `--debounce-cap`: act at the latest this long after the first event of a burst.
pub const DEBOUNCE_CAP: Duration = Duration::from_secs(2);
/// `--restart-jitter`.
pub const RESTART_JITTER: Duration = Duration::ZERO;
/// `--cert-wait`.
pub const CERT_WAIT: Duration = Duration::from_secs(120);
/// `--drain-duration`.
pub const DRAIN_DURATION: Duration = Duration::from_secs(45);
/// `--parent-shutdown-duration`.
pub const PARENT_SHUTDOWN_DURATION: Duration = Duration::from_secs(60);
/// `--termination-drain-duration`.
pub const TERMINATION_DRAIN_DURATION: Duration = Duration::from_secs(5);
/// `--minimum-drain-duration` (Istio's `MINIMUM_DRAIN_DURATION`).
pub const MINIMUM_DRAIN_DURATION: Duration = Duration::from_secs(5);
/// `--ready-timeout`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// `--stats-slots`.
pub const STATS_SLOTS: u32 = crate::stats::DEFAULT_SLOTS;
/// `--crash-budget`.
pub const CRASH_BUDGET: u32 = 5;
/// `--crash-backoff`: the delay before the second retry; doubles up to
/// [`BACKOFF_CAP`].
pub const CRASH_BACKOFF: Duration = Duration::from_secs(1);
/// `--stats-flush-interval`.
pub const STATS_FLUSH_INTERVAL: Duration = Duration::from_secs(5);
/// `--cert-rotation`: a hot restart, as before SDS was offered.
pub const CERT_ROTATION: &str = "restart";
/// `--memory-check`.
pub const MEMORY_CHECK: &str = "on";
/// `--max-draining`.
pub const MAX_DRAINING: usize = 32;
/// `--admin-port`.
pub const ADMIN_PORT: u16 = 15000;
/// `--service-cluster`.
pub const SERVICE_CLUSTER: &str = "baton";
/// `--discovery-address`.
pub const DISCOVERY_ADDRESS: &str = "istiod.istio-system.svc:15012";
/// `--template`.
pub const TEMPLATE: &str = "envoy_bootstrap";
/// `--envoy-binary`.
pub const ENVOY_BINARY: &str = "envoy";
/// `--proxy-log-level`.
pub const PROXY_LOG_LEVEL: &str = "warning";
/// `--local-address-ip-version`.
pub const IP_VERSION: &str = "v4";
/// `--ready`.
pub const READY: &str = "delay:1s";
/// `--drain-signal`.
pub const DRAIN_SIGNAL: &str = "SIGTERM";
/// Envoy's `--concurrency` when the container has no CPU limit (Istio's default).
pub const CONCURRENCY_WITHOUT_CPU_LIMIT: u32 = 2;
/// `--log-level`.
pub const LOG_LEVEL: &str = "info";

/// Largest delay between crash recoveries.
pub const BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Serving this long resets the crash count.
pub const STABLE_AFTER: Duration = Duration::from_secs(60);
/// Time between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// Margin past Envoy's own parent shutdown before baton steps in.
pub const DRAIN_DEADLINE_MARGIN: Duration = Duration::from_secs(10);
/// How long a triggered restart waits for companion triggers before reading its
/// inputs (a SIGHUP and a `POST /restart` from one deploy step are one restart).
pub const GATHER: Duration = Duration::from_millis(25);

/// A duration as `--help` shows it and clap parses it back (`100ms`, `2m`).
pub fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_round_trip_through_their_help_text() {
        for d in [
            DEBOUNCE,
            DEBOUNCE_CAP,
            RESTART_JITTER,
            CERT_WAIT,
            DRAIN_DURATION,
            WAIT_TIMEOUT,
        ] {
            assert_eq!(crate::cli::duration(&human(d)), Ok(d), "{}", human(d));
        }
    }
}
