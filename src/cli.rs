//! The command line as typed: clap definitions only. Nothing here does I/O; values are
//! checked for shape (a duration parses, a pair has a colon) and everything that
//! needs the filesystem or the environment happens in [`crate::config`].
//!
//! Every option also reads a `BATON_*` environment variable, so a container spec can
//! set them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::defaults::{self, human};

/// baton: a proxy supervisor with hot restart.
#[derive(Debug, Parser)]
#[command(name = "baton", version = crate::version::VERSION, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
    /// Logging options, valid for every command.
    #[command(flatten)]
    pub log: LogArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Supervise Envoy with native hot restart.
    Envoy(Box<EnvoyArgs>),
    /// Supervise any proxy on listening sockets baton holds.
    Run(Box<RunArgs>),
    /// Render and check the bootstrap, print it (or write --output), exit.
    Render(Box<RenderArgs>),
    /// Ask a running baton for a hot restart.
    Restart(ClientArgs),
    /// Make a running baton drain: readiness 503 at once, the serving epoch keeps
    /// serving what it has (a Kubernetes preStop hook; no curl needed).
    Drain(ClientArgs),
    /// Block until the proxy is ready (a Kubernetes postStart hook).
    Wait(WaitArgs),
    /// Show the epochs of a running baton.
    Status(ClientArgs),
    /// Print the stats segment of a running baton.
    Stats(StatsArgs),
    /// Print baton's version and commit, and Envoy's version when it can be asked.
    Version(VersionArgs),
}

/// `baton version`.
#[derive(Debug, Args)]
pub struct VersionArgs {
    /// Ask this Envoy for its version [default: `envoy` on PATH, if there is one].
    #[arg(long, env = "BATON_ENVOY_BINARY")]
    pub envoy_binary: Option<PathBuf>,
}

/// `baton stats`.
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Ask this baton's status server.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Read the segment of baton process PID directly (`/proc/PID/fd`), no server needed.
    #[arg(long, conflicts_with = "status_addr")]
    pub pid: Option<u32>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatsFormat::Prometheus)]
    pub format: StatsFormat,
}

/// `baton stats --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatsFormat {
    /// Prometheus text.
    Prometheus,
    /// A JSON array of `{name, kind, value}`.
    Json,
}

/// Where a running baton's status server listens.
#[derive(Debug, Args)]
pub struct ClientArgs {
    /// The status server of the baton to talk to.
    #[arg(long, env = "BATON_STATUS_ADDR", default_value = defaults::STATUS_CLIENT_ADDR)]
    pub status_addr: SocketAddr,
}

/// `baton wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The baton to wait for.
    #[command(flatten)]
    pub client: ClientArgs,
    /// Give up (exit 1) after this long.
    #[arg(long, env = "BATON_WAIT_TIMEOUT", default_value = human(defaults::WAIT_TIMEOUT), value_parser = duration)]
    pub timeout: Duration,
}

/// What triggers restarts besides SIGHUP, and the status server.
#[derive(Debug, Args)]
pub struct TriggerArgs {
    /// A file or directory whose content changes trigger a hot restart (repeatable).
    #[arg(
        long = "watch",
        env = "BATON_WATCH",
        value_name = "PATH",
        value_delimiter = ','
    )]
    pub watch: Vec<PathBuf>,
    /// Quiet period after the last file event before acting on it.
    #[arg(long, env = "BATON_DEBOUNCE", default_value = human(defaults::DEBOUNCE), value_parser = duration)]
    pub debounce: Duration,
    /// Act at the latest this long after the first file event of a burst.
    #[arg(long, env = "BATON_DEBOUNCE_CAP", default_value = human(defaults::DEBOUNCE_CAP), value_parser = duration)]
    pub debounce_cap: Duration,
    /// Wait a random time up to this before a file-triggered restart (spreads a fleet).
    #[arg(long, env = "BATON_RESTART_JITTER", default_value = human(defaults::RESTART_JITTER), value_parser = duration)]
    pub restart_jitter: Duration,
    /// How long to wait at startup for watched files and certificates to appear.
    #[arg(long, env = "BATON_CERT_WAIT", default_value = human(defaults::CERT_WAIT), value_parser = duration)]
    pub cert_wait: Duration,
    /// Status server address (`off` disables it).
    #[arg(long, env = "BATON_STATUS_ADDR", default_value = defaults::STATUS_ADDR, value_parser = status_addr)]
    pub status_addr: StatusAddr,
}

/// `--status-addr`: an address, or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusAddr {
    /// No status server.
    Off,
    /// Listen here.
    At(SocketAddr),
}

fn status_addr(s: &str) -> Result<StatusAddr, String> {
    if s == "off" {
        return Ok(StatusAddr::Off);
    }
    s.parse()
        .map(StatusAddr::At)
        .map_err(|_| format!("'{s}' is not HOST:PORT (an IP address and a port) or 'off'"))
}

/// How baton itself logs.
#[derive(Debug, Args)]
pub struct LogArgs {
    /// Log line format.
    #[arg(long, global = true, env = "BATON_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log level or filter directives (`info`, `baton=debug`).
    #[arg(long, global = true, env = "BATON_LOG_LEVEL", default_value = defaults::LOG_LEVEL)]
    pub log_level: String,
}

/// Log line formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where the bootstrap comes from and what goes into it.
#[derive(Debug, Args)]
pub struct BootstrapArgs {
    /// Template: an embedded name (`envoy_bootstrap`, `standalone`) or a file path.
    #[arg(long, env = "BATON_TEMPLATE", default_value = defaults::TEMPLATE)]
    pub template: String,
    /// Extra template value KEY=VALUE (repeatable; a string named KEY in the template).
    #[arg(long = "var", env = "BATON_VAR", value_name = "KEY=VALUE")]
    pub vars: Vec<String>,
    /// Static bootstrap file used as-is for every epoch (no templating).
    #[arg(long, env = "BATON_CUSTOM_CONFIG", conflicts_with = "template")]
    pub custom_config: Option<PathBuf>,
    /// Directory for `envoy-rev<N>.json` [default: a private directory under $TMPDIR].
    #[arg(long, env = "BATON_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// Envoy admin port on 127.0.0.1.
    #[arg(long, env = "BATON_ADMIN_PORT", default_value_t = defaults::ADMIN_PORT)]
    pub admin_port: u16,
    /// Envoy `--service-cluster` and the node's cluster.
    #[arg(long, env = "BATON_SERVICE_CLUSTER", default_value = defaults::SERVICE_CLUSTER)]
    pub service_cluster: String,
    /// Envoy `--service-node` and the node id
    /// [default: sidecar~$INSTANCE_IP~$POD_NAME.$POD_NAMESPACE~$POD_NAMESPACE.svc.cluster.local].
    #[arg(long, env = "BATON_SERVICE_NODE")]
    pub service_node: Option<String>,
    /// xDS server host:port (empty: none).
    #[arg(long, env = "BATON_DISCOVERY_ADDRESS", default_value = defaults::DISCOVERY_ADDRESS)]
    pub discovery_address: String,
    /// Envoy worker threads (`--concurrency`) [default: the container's CPU limit
    /// rounded up, at most the cores; 2 without a limit, as Istio].
    #[arg(long, env = "BATON_CONCURRENCY")]
    pub concurrency: Option<u32>,
    /// How often every epoch sends its counters to baton (which carries them across
    /// epochs); also the bootstrap's `stats_flush_interval` [default: 5s, or what fits
    /// between --drain-duration and --parent-shutdown-duration].
    #[arg(long, env = "BATON_STATS_FLUSH_INTERVAL", value_parser = duration)]
    pub stats_flush_interval: Option<Duration>,
    /// Certificates.
    #[command(flatten)]
    pub certs: CertArgs,
    /// How a changed --cert pair reaches Envoy, once it passed its checks: `restart`
    /// (a hot restart onto it) or `sds` (handed to the serving epoch in place through
    /// an SDS resource baton writes; no restart, no second process).
    #[arg(long, env = "BATON_CERT_ROTATION", value_enum, default_value = defaults::CERT_ROTATION)]
    pub cert_rotation: CertRotation,
}

/// `--cert-rotation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CertRotation {
    /// A hot restart onto the new pair (any change, any proxy).
    Restart,
    /// In place, through SDS (Envoy, certificates only).
    Sds,
}

/// `--cert`, for every command that runs or renders a proxy.
#[derive(Debug, Args)]
pub struct CertArgs {
    /// Certificate and key PEM files CERT:KEY (repeatable): watched, checked before
    /// every restart (PEM parses, key matches, validity, chain), and given to the
    /// template.
    #[arg(
        long = "cert",
        env = "BATON_CERTS",
        value_name = "CERT:KEY",
        value_delimiter = ','
    )]
    pub certs: Vec<String>,
}

/// How epochs drain: after a hot restart, and on shutdown.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// How long an old epoch drains after a hot restart.
    #[arg(long, env = "BATON_DRAIN_DURATION", default_value = human(defaults::DRAIN_DURATION), value_parser = duration)]
    pub drain_duration: Duration,
    /// When an old epoch is stopped after a hot restart, drained or not [default:
    /// 60s, or --drain-duration plus one stats flush if that is longer].
    #[arg(long, env = "BATON_PARENT_SHUTDOWN_DURATION", value_parser = duration)]
    pub parent_shutdown_duration: Option<Duration>,
    /// How long the serving epoch drains on SIGTERM, at most, before it is stopped.
    #[arg(long, env = "BATON_TERMINATION_DRAIN_DURATION", default_value = human(defaults::TERMINATION_DRAIN_DURATION), value_parser = duration)]
    pub termination_drain_duration: Duration,
    /// On SIGTERM, stop as soon as Envoy has no active downstream connection (after
    /// --minimum-drain-duration), as Istio's EXIT_ON_ZERO_ACTIVE_CONNECTIONS.
    #[arg(long, env = "BATON_EXIT_ON_ZERO_ACTIVE_CONNECTIONS")]
    pub exit_on_zero_active_connections: bool,
    /// With --exit-on-zero-active-connections: drain at least this long first.
    #[arg(long, env = "BATON_MINIMUM_DRAIN_DURATION", default_value = human(defaults::MINIMUM_DRAIN_DURATION), value_parser = duration)]
    pub minimum_drain_duration: Duration,
}

/// Timing of epochs.
#[derive(Debug, Args)]
pub struct SupervisionArgs {
    /// Drain periods.
    #[command(flatten)]
    pub drain: DrainArgs,
    /// How long a new epoch may take to become ready.
    #[arg(long, env = "BATON_READY_TIMEOUT", default_value = human(defaults::READY_TIMEOUT), value_parser = duration)]
    pub ready_timeout: Duration,
    /// Slots of the shared-memory stats segment (one per metric name).
    #[arg(long, env = "BATON_STATS_SLOTS", default_value_t = defaults::STATS_SLOTS)]
    pub stats_slots: u32,
    /// Consecutive crashes of the serving epoch tolerated before baton exits.
    #[arg(long, env = "BATON_CRASH_BUDGET", default_value_t = defaults::CRASH_BUDGET)]
    pub crash_budget: u32,
    /// Backoff after the second crash in a row; doubles up to 30s.
    #[arg(long, env = "BATON_CRASH_BACKOFF", default_value = human(defaults::CRASH_BACKOFF), value_parser = duration)]
    pub crash_backoff: Duration,
    /// Refuse a restart when the container's memory limit cannot hold a second proxy.
    #[arg(long, env = "BATON_MEMORY_CHECK", value_enum, default_value = defaults::MEMORY_CHECK)]
    pub memory_check: Switch,
}

/// A feature turned `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Switch {
    /// Enabled.
    On,
    /// Disabled.
    Off,
}

/// `baton envoy`.
#[derive(Debug, Args)]
pub struct EnvoyArgs {
    /// Bootstrap inputs.
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    /// Epoch timing.
    #[command(flatten)]
    pub supervision: SupervisionArgs,
    /// Watched files and the status server.
    #[command(flatten)]
    pub triggers: TriggerArgs,
    /// The Envoy executable (a name on PATH or a path).
    #[arg(long, env = "BATON_ENVOY_BINARY", default_value = defaults::ENVOY_BINARY)]
    pub envoy_binary: PathBuf,
    /// Base id of the first hot-restart chain [default: a free one chosen by Envoy].
    #[arg(long, env = "BATON_BASE_ID")]
    pub base_id: Option<u64>,
    /// Envoy's log level (`-l`).
    #[arg(long, env = "BATON_PROXY_LOG_LEVEL", default_value = defaults::PROXY_LOG_LEVEL)]
    pub proxy_log_level: String,
    /// Envoy's `--local-address-ip-version`.
    #[arg(long, env = "BATON_LOCAL_ADDRESS_IP_VERSION", default_value = defaults::IP_VERSION, value_parser = ["v4", "v6"])]
    pub local_address_ip_version: String,
    /// Extra arguments passed to every Envoy epoch after baton's own.
    #[arg(last = true, value_name = "EXTRA_ENVOY_ARGS")]
    pub extra: Vec<String>,
}

/// `baton run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Epoch timing.
    #[command(flatten)]
    pub supervision: SupervisionArgs,
    /// Watched files and the status server.
    #[command(flatten)]
    pub triggers: TriggerArgs,
    /// A socket baton binds once and hands to every epoch: NAME=tcp://HOST:PORT,
    /// udp://HOST:PORT or unix:///PATH (repeatable; fds 3, 4, … in this order).
    #[arg(
        long = "listen",
        env = "BATON_LISTEN",
        value_name = "NAME=URL",
        value_delimiter = ','
    )]
    pub listen: Vec<String>,
    /// When a new epoch counts as ready: notify, tcp:HOST:PORT, http:URL, exec:CMD, delay:DUR.
    #[arg(long, env = "BATON_READY", default_value = defaults::READY)]
    pub ready: String,
    /// Signal that tells an old epoch to drain (SIGUSR1 suits HAProxy, SIGQUIT nginx).
    #[arg(long, env = "BATON_DRAIN_SIGNAL", default_value = defaults::DRAIN_SIGNAL)]
    pub drain_signal: String,
    /// Old epochs that may drain at once; beyond it the oldest is killed early.
    #[arg(long, env = "BATON_MAX_DRAINING", default_value_t = defaults::MAX_DRAINING)]
    pub max_draining: usize,
    /// Command run with `sh -c` before every restart; non-zero keeps the serving epoch.
    #[arg(long, env = "BATON_PREFLIGHT", value_name = "CMD")]
    pub preflight: Option<String>,
    /// Certificates.
    #[command(flatten)]
    pub certs: CertArgs,
    /// The proxy's command line; `{epoch}` is replaced by the epoch number.
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<std::ffi::OsString>,
}

/// `baton render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// Bootstrap inputs.
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    /// Drain periods (they shape what baton adds to the bootstrap).
    #[command(flatten)]
    pub drain: DrainArgs,
    /// Write the bootstrap here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Also check it with `envoy --mode validate` using this Envoy binary.
    #[arg(long, env = "BATON_VALIDATE_WITH", value_name = "ENVOY_BINARY")]
    pub validate_with: Option<PathBuf>,
}

/// Human durations: `45s`, `1m`, `250ms`.
pub fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration like 45s, 1m, 250ms: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn status_addr_is_an_address_or_off() {
        assert_eq!(status_addr("off"), Ok(StatusAddr::Off));
        assert_eq!(
            status_addr("127.0.0.1:1"),
            Ok(StatusAddr::At(([127, 0, 0, 1], 1).into()))
        );
        assert!(status_addr("localhost")
            .unwrap_err()
            .contains("'localhost'"));
    }

    #[test]
    fn durations_are_human() {
        assert_eq!(duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        assert!(duration("soon").unwrap_err().contains("soon"));
    }

    #[test]
    fn memory_check_is_on_unless_turned_off() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["baton", "envoy"];
            argv.extend_from_slice(extra);
            let Command::Envoy(args) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("not envoy")
            };
            args.supervision.memory_check
        };
        assert_eq!(parse(&[]), Switch::On);
        assert_eq!(parse(&["--memory-check", "off"]), Switch::Off);
        assert!(Cli::try_parse_from(["baton", "envoy", "--memory-check", "maybe"]).is_err());
    }

    #[test]
    fn cert_rotation_restarts_unless_sds_is_asked_for() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["baton", "render"];
            argv.extend_from_slice(extra);
            let Command::Render(args) = Cli::try_parse_from(argv).unwrap().command else {
                panic!("not render")
            };
            args.bootstrap.cert_rotation
        };
        assert_eq!(parse(&[]), CertRotation::Restart);
        assert_eq!(parse(&["--cert-rotation", "sds"]), CertRotation::Sds);
        assert!(Cli::try_parse_from(["baton", "envoy", "--cert-rotation", "swap"]).is_err());
    }

    #[test]
    fn extra_envoy_args_follow_the_double_dash() {
        let cli =
            Cli::try_parse_from(["baton", "envoy", "--admin-port", "1", "--", "--foo", "bar"])
                .unwrap();
        let Command::Envoy(args) = cli.command else {
            panic!("not envoy")
        };
        assert_eq!(args.extra, vec!["--foo", "bar"]);
        assert_eq!(args.bootstrap.admin_port, 1);
    }
}
