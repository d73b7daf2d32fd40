//! Validated settings: the raw command line ([`crate::cli`]) plus the pod's
//! environment become what the supervisor runs with. Every problem is collected and
//! reported at once, each naming its flag (exit 64).
//!
//! The environment is read through [`Env`] so tests never touch the real one.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::bootstrap::{self, CertPair, TemplateSource, Values};
use nix::sys::signal::Signal;

use crate::cli::{BootstrapArgs, EnvoyArgs, RunArgs, StatusAddr, SupervisionArgs, TriggerArgs};
use crate::handoff::{ListenSpec, ListenerSet};
use crate::proxy::envoy::{BootstrapPlan, EnvoyDriver, EnvoyOptions};
use crate::proxy::generic::GenericProxy;
use crate::ready::ReadySpec;
use crate::supervisor::{Backoff, DriverKind, Policy};

/// Pod identity variables, as Kubernetes' downward API sets them for Istio.
pub const ENV_INSTANCE_IP: &str = "INSTANCE_IP";
/// See [`ENV_INSTANCE_IP`].
pub const ENV_POD_NAME: &str = "POD_NAME";
/// See [`ENV_INSTANCE_IP`].
pub const ENV_POD_NAMESPACE: &str = "POD_NAMESPACE";

/// Used when the pod variables are missing (outside Kubernetes).
pub const DEFAULT_INSTANCE_IP: &str = "127.0.0.1";
/// See [`DEFAULT_INSTANCE_IP`].
pub const DEFAULT_POD_NAMESPACE: &str = "default";
/// Largest delay between crash recoveries.
pub const DEFAULT_BACKOFF_CAP: Duration = Duration::from_secs(30);
/// Serving this long resets the crash count.
pub const DEFAULT_STABLE_AFTER: Duration = Duration::from_secs(60);
/// Time between SIGTERM and SIGKILL.
pub const DEFAULT_KILL_GRACE: Duration = Duration::from_secs(5);
/// Generic driver: old epochs draining at once before the oldest is killed early.
pub const DEFAULT_MAX_DRAINING: usize = 32;
/// Margin past Envoy's own parent shutdown before baton steps in.
pub const DRAIN_DEADLINE_MARGIN: Duration = Duration::from_secs(10);

/// Read access to the environment.
pub trait Env {
    /// One variable, `None` when unset or not UTF-8.
    fn var(&self, name: &str) -> Option<String>;
    /// All variables.
    fn vars(&self) -> Vec<(String, String)>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
}

/// A fixed environment, for tests.
#[derive(Debug, Default, Clone)]
pub struct MapEnv(pub BTreeMap<String, String>);

impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.0.get(name).cloned()
    }
    fn vars(&self) -> Vec<(String, String)> {
        self.0.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }
}

/// Everything that was wrong with the command line, one problem per entry.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct ConfigError {
    /// Each names its flag and what is wrong.
    pub problems: Vec<String>,
}

/// The bootstrap inputs, validated.
#[derive(Debug, Clone)]
pub struct BootstrapSettings {
    /// Template or static file.
    pub plan: BootstrapPlan,
    /// Where epochs' files go.
    pub config_dir: PathBuf,
    /// `true` when baton chose (and so removes) `config_dir`.
    pub owns_config_dir: bool,
    /// The admin port the bootstrap uses.
    pub admin_port: u16,
    /// `--cert` pairs, checked before every restart.
    pub certs: Vec<CertPair>,
}

/// What every driver's supervisor runs with besides the driver itself.
#[derive(Debug, Clone)]
pub struct Supervision {
    /// The state machine's knobs.
    pub policy: Policy,
    /// Status server address, `None` for `--status-addr off`.
    pub status_addr: Option<SocketAddr>,
    /// Files and directories whose content changes trigger a restart.
    pub watched: Vec<PathBuf>,
    /// Quiet period of the file watcher.
    pub debounce: Duration,
    /// Longest a burst of file events can delay a restart.
    pub debounce_cap: Duration,
    /// Random delay up to this before a file-triggered restart.
    pub restart_jitter: Duration,
    /// How long to wait at startup for watched files to exist.
    pub cert_wait: Duration,
    /// Slots of the stats segment.
    pub stats_slots: u32,
}

/// Settings of `baton envoy`.
#[derive(Debug, Clone)]
pub struct EnvoySettings {
    /// The driver, ready to use.
    pub driver: EnvoyDriver,
    /// How often epochs send their counters to baton.
    pub stats_flush_interval: Duration,
    /// Timing, triggers, status server.
    pub supervision: Supervision,
    /// `--base-id`.
    pub base_id: Option<u64>,
    /// Remove this directory on exit.
    pub owned_config_dir: Option<PathBuf>,
}

/// Validate `baton envoy`'s arguments.
pub fn envoy_settings(args: &EnvoyArgs, env: &dyn Env) -> Result<EnvoySettings, ConfigError> {
    let mut problems = Vec::new();
    let bootstrap = bootstrap_settings(&args.bootstrap, env, &mut problems);
    let binary = resolve_binary("--envoy-binary", &args.envoy_binary, env, &mut problems);
    let s = &args.supervision;
    if s.ready_timeout.is_zero() {
        problems.push("--ready-timeout must be more than 0".into());
    }
    if args.stats_flush_interval.is_zero() {
        problems.push("--stats-flush-interval must be more than 0".into());
    }
    let drain_and_flush = whole_seconds(s.drain_duration) + args.stats_flush_interval;
    if s.parent_shutdown_duration < drain_and_flush {
        problems.push(format!(
            "--parent-shutdown-duration ({}) must be at least --drain-duration plus \
             --stats-flush-interval ({}), so an old epoch's last counters reach baton",
            humantime::format_duration(s.parent_shutdown_duration),
            humantime::format_duration(drain_and_flush)
        ));
    }
    let (Some(bootstrap), Some(binary), true) = (bootstrap, binary, problems.is_empty()) else {
        return Err(ConfigError { problems });
    };
    let mut watched = args.triggers.watch.clone();
    watched.extend(
        bootstrap
            .certs
            .iter()
            .flat_map(|p| [p.cert.clone(), p.key.clone()]),
    );
    match &bootstrap.plan {
        BootstrapPlan::Template {
            source: TemplateSource::File(path),
            ..
        }
        | BootstrapPlan::Custom(path) => watched.push(path.clone()),
        BootstrapPlan::Template { .. } => {}
    }
    // A restart terminates the grandparent: let it drain and flush its counters first.
    let handover = Handover {
        drain_period: drain_and_flush,
        max_draining: DEFAULT_MAX_DRAINING,
    };
    let supervision = supervision(DriverKind::Envoy, s, handover, &args.triggers, watched);
    let options = EnvoyOptions {
        drain_time: s.drain_duration,
        parent_shutdown: s.parent_shutdown_duration,
        service_cluster: args.bootstrap.service_cluster.clone(),
        service_node: service_node(&args.bootstrap, env),
        ip_version: args.local_address_ip_version.clone(),
        log_level: args.proxy_log_level.clone(),
        concurrency: args.bootstrap.concurrency,
        skip_parent_stats: false,
        extra: args.extra.clone(),
    };
    let driver = EnvoyDriver {
        binary,
        admin: SocketAddr::from((Ipv4Addr::LOCALHOST, bootstrap.admin_port)),
        config_dir: bootstrap.config_dir.clone(),
        bootstrap: bootstrap.plan,
        certs: bootstrap.certs,
        stats_sink: None,
        options,
        ready_timeout: s.ready_timeout,
    };
    Ok(EnvoySettings {
        stats_flush_interval: args.stats_flush_interval,
        driver,
        supervision,
        base_id: args.base_id,
        owned_config_dir: bootstrap.owns_config_dir.then_some(bootstrap.config_dir),
    })
}

/// Timing, triggers and the status server, common to every driver.
fn supervision(
    driver: DriverKind,
    s: &SupervisionArgs,
    handover: Handover,
    t: &TriggerArgs,
    watched: Vec<PathBuf>,
) -> Supervision {
    Supervision {
        policy: policy(driver, s, handover),
        status_addr: match t.status_addr {
            StatusAddr::Off => None,
            StatusAddr::At(addr) => Some(addr),
        },
        watched,
        debounce: t.debounce,
        debounce_cap: t.debounce_cap.max(t.debounce),
        restart_jitter: t.restart_jitter,
        cert_wait: t.cert_wait,
        stats_slots: s.stats_slots,
    }
}

/// Settings of `baton run`.
pub struct RunSettings {
    /// The driver, with its listeners bound.
    pub proxy: GenericProxy,
    /// Timing, triggers, status server.
    pub supervision: Supervision,
}

/// Validate `baton run`'s arguments and bind its listeners.
pub fn run_settings(args: &RunArgs, env: &dyn Env) -> Result<RunSettings, ConfigError> {
    let mut problems = Vec::new();
    let s = &args.supervision;
    let specs: Vec<ListenSpec> = args
        .listen
        .iter()
        .filter_map(|l| {
            ListenSpec::parse(l)
                .map_err(|e| problems.push(e.to_string()))
                .ok()
        })
        .collect();
    if let Err(e) = crate::handoff::check_distinct_names(&specs) {
        problems.push(e.to_string());
    }
    let ready = ReadySpec::parse(&args.ready)
        .map_err(|e| problems.push(e.to_string()))
        .ok();
    match &ready {
        Some(ReadySpec::Delay(d)) if *d >= s.ready_timeout => problems.push(format!(
            "--ready {}: the delay is not shorter than --ready-timeout ({})",
            args.ready,
            humantime::format_duration(s.ready_timeout)
        )),
        Some(ReadySpec::Tcp { addr }) if probes_a_listener(addr, &specs) => problems.push(format!(
            "--ready {}: that is a --listen socket baton holds; a connect succeeds before the \
                 proxy accepts, so it proves nothing (use notify or http:)",
            args.ready
        )),
        _ => {}
    }
    let drain_signal = parse_signal(&args.drain_signal)
        .map_err(|e| problems.push(e))
        .ok();
    let certs = cert_pairs(&args.certs, &mut problems);
    if s.ready_timeout.is_zero() {
        problems.push("--ready-timeout must be more than 0".into());
    }
    if !problems.is_empty() {
        return Err(ConfigError { problems });
    }
    // Bound last: only a command line that is otherwise right takes the ports.
    let listeners = ListenerSet::bind(&specs).map_err(|e| ConfigError {
        problems: vec![e.to_string()],
    })?;
    let mut watched = args.triggers.watch.clone();
    watched.extend(certs.iter().flat_map(|p| [p.cert.clone(), p.key.clone()]));
    let tmp = env.var("TMPDIR").unwrap_or_else(|| "/tmp".into());
    let runtime_dir = Path::new(&tmp).join(format!("baton-{}-run", std::process::id()));
    let (Some(ready), Some(drain_signal)) = (ready, drain_signal) else {
        unreachable!("parsed above, or a problem was reported")
    };
    Ok(RunSettings {
        proxy: GenericProxy::new(
            args.command.clone(),
            listeners,
            ready,
            s.ready_timeout,
            drain_signal,
            args.preflight.clone(),
            certs,
            runtime_dir,
        ),
        supervision: supervision(
            DriverKind::Generic,
            s,
            Handover {
                drain_period: s.drain_duration,
                max_draining: args.max_draining,
            },
            &args.triggers,
            watched,
        ),
    })
}

/// Whether a `tcp:` readiness target is the port of a `--listen` TCP socket.
fn probes_a_listener(addr: &str, specs: &[ListenSpec]) -> bool {
    let port = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok());
    specs.iter().any(|l| match (&l.addr, port) {
        (crate::handoff::ListenAddr::Tcp(a), Some(p)) => a.port() == p,
        _ => false,
    })
}

/// `SIGUSR1`, `USR1` or `10`.
fn parse_signal(s: &str) -> Result<Signal, String> {
    let upper = s.to_ascii_uppercase();
    let named = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    named
        .parse::<Signal>()
        .or_else(|_| {
            s.parse::<i32>()
                .map_err(|_| ())
                .and_then(|n| Signal::try_from(n).map_err(|_| ()))
        })
        .map_err(|_| {
            format!("--drain-signal {s}: not a signal name like SIGTERM, SIGUSR1, SIGQUIT")
        })
}

/// Envoy takes drain times in whole seconds (rounded up).
fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

fn millis(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

/// The driver-specific parts of the policy.
#[derive(Debug, Clone, Copy)]
pub struct Handover {
    /// How long an old epoch gets before another restart may cut it short.
    pub drain_period: Duration,
    /// Old epochs draining at once (generic driver).
    pub max_draining: usize,
}

/// The state machine's knobs from the timing flags.
pub fn policy(driver: DriverKind, s: &SupervisionArgs, handover: Handover) -> Policy {
    let ms = millis;
    let drain_deadline = match driver {
        DriverKind::Envoy => s.parent_shutdown_duration + DRAIN_DEADLINE_MARGIN,
        DriverKind::Generic => s.parent_shutdown_duration,
    };
    Policy {
        driver,
        crash_budget: s.crash_budget,
        backoff: Backoff {
            base: ms(s.crash_backoff),
            cap: ms(DEFAULT_BACKOFF_CAP.max(s.crash_backoff)),
        },
        stable_after: ms(DEFAULT_STABLE_AFTER),
        drain_deadline: ms(drain_deadline),
        drain_period: ms(handover.drain_period),
        max_draining: handover.max_draining,
        termination_drain: ms(s.termination_drain_duration),
        kill_grace: ms(DEFAULT_KILL_GRACE),
    }
}

/// Validate the bootstrap inputs; problems are appended, `None` if any.
pub fn bootstrap_settings(
    args: &BootstrapArgs,
    env: &dyn Env,
    problems: &mut Vec<String>,
) -> Option<BootstrapSettings> {
    let before = problems.len();
    let mut vars = BTreeMap::new();
    for arg in &args.vars {
        match bootstrap::parse_var(arg) {
            Ok((k, v)) => {
                if vars.insert(k.clone(), v).is_some() {
                    problems.push(format!("--var {arg}: {k} is given twice"));
                }
            }
            Err(e) => problems.push(format!("--var {arg}: {e}")),
        }
    }
    let certs = cert_pairs(&args.certs, problems);
    let (config_dir, owns_config_dir) = match &args.config_dir {
        Some(dir) => (dir.clone(), false),
        None => (default_config_dir(env), true),
    };
    let values = Values {
        node_id: service_node(args, env),
        cluster: args.service_cluster.clone(),
        admin_port: args.admin_port,
        discovery_address: args.discovery_address.clone(),
        metadata: bootstrap::metadata_from_env(env.vars()),
        config_dir: config_dir.clone(),
        certs: certs.clone(),
        concurrency: args.concurrency,
        vars,
    };
    if problems.len() == before {
        if let Err(e) = values.validate() {
            problems.push(e.to_string());
        }
    }
    let plan = match &args.custom_config {
        Some(path) => BootstrapPlan::Custom(path.clone()),
        None => BootstrapPlan::Template {
            source: TemplateSource::parse(&args.template),
            values,
        },
    };
    (problems.len() == before).then_some(BootstrapSettings {
        plan,
        config_dir,
        owns_config_dir,
        admin_port: args.admin_port,
        certs,
    })
}

/// Every `--cert CERT:KEY` that parses; each one that does not is a problem.
fn cert_pairs(raw: &[String], problems: &mut Vec<String>) -> Vec<CertPair> {
    raw.iter()
        .filter_map(|pair| parse_cert_pair(pair).map_err(|e| problems.push(e)).ok())
        .collect()
}

fn parse_cert_pair(pair: &str) -> Result<CertPair, String> {
    match pair.split_once(':') {
        Some((cert, key)) if !cert.is_empty() && !key.is_empty() => Ok(CertPair {
            cert: PathBuf::from(cert),
            key: PathBuf::from(key),
        }),
        _ => Err(format!(
            "--cert {pair}: expected CERT:KEY, two PEM file paths separated by a colon"
        )),
    }
}

/// `--service-node`, or Istio's sidecar node id from the pod's environment.
pub fn service_node(args: &BootstrapArgs, env: &dyn Env) -> String {
    if let Some(node) = &args.service_node {
        return node.clone();
    }
    let ip = env
        .var(ENV_INSTANCE_IP)
        .unwrap_or_else(|| DEFAULT_INSTANCE_IP.into());
    let ns = env
        .var(ENV_POD_NAMESPACE)
        .unwrap_or_else(|| DEFAULT_POD_NAMESPACE.into());
    let pod = env
        .var(ENV_POD_NAME)
        .or_else(|| env.var("HOSTNAME"))
        .unwrap_or_else(|| "baton".into());
    format!("sidecar~{ip}~{pod}.{ns}~{ns}.svc.cluster.local")
}

/// A private directory per baton, so two on one host never share `envoy-rev0.json`.
fn default_config_dir(env: &dyn Env) -> PathBuf {
    let tmp = env.var("TMPDIR").unwrap_or_else(|| "/tmp".into());
    Path::new(&tmp).join(format!("baton-{}", std::process::id()))
}

/// Find an executable: a path is taken as given, a bare name is looked up on PATH.
pub fn resolve_binary(
    flag: &str,
    binary: &Path,
    env: &dyn Env,
    problems: &mut Vec<String>,
) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if binary.components().count() > 1 {
        if executable(binary) {
            return Some(binary.to_path_buf());
        }
        problems.push(format!(
            "{flag} {}: not an executable file",
            binary.display()
        ));
        return None;
    }
    let path = env.var("PATH").unwrap_or_default();
    let found = std::env::split_paths(&path)
        .map(|dir| dir.join(binary))
        .find(|candidate| executable(candidate));
    if found.is_none() {
        problems.push(format!(
            "{flag} {}: not found on PATH (give a path, or install it)",
            binary.display()
        ));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn env(pairs: &[(&str, &str)]) -> MapEnv {
        MapEnv(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn envoy_args(extra: &[&str]) -> EnvoyArgs {
        let mut argv = vec!["baton", "envoy", "--envoy-binary", "/bin/true"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Envoy(args) => *args,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn service_node_follows_istio_from_the_pod_environment() {
        let args = envoy_args(&[]);
        let e = env(&[
            ("INSTANCE_IP", "10.1.2.3"),
            ("POD_NAME", "web-1"),
            ("POD_NAMESPACE", "shop"),
        ]);
        assert_eq!(
            service_node(&args.bootstrap, &e),
            "sidecar~10.1.2.3~web-1.shop~shop.svc.cluster.local"
        );
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_its_flag() {
        let args = envoy_args(&[
            "--var",
            "node_id=x",
            "--cert",
            "only-one-path",
            "--drain-duration",
            "2m",
            "--parent-shutdown-duration",
            "1m",
        ]);
        let err = envoy_settings(&args, &env(&[])).unwrap_err();
        let text = err.to_string();
        assert_eq!(err.problems.len(), 3, "{text}");
        for needle in [
            "--var node_id=x",
            "--cert only-one-path",
            "--drain-duration",
        ] {
            assert!(text.contains(needle), "missing {needle} in {text}");
        }
    }

    #[test]
    fn missing_binary_names_the_flag() {
        let mut problems = Vec::new();
        let found = resolve_binary(
            "--envoy-binary",
            Path::new("surely-not-a-binary-here"),
            &env(&[("PATH", "/nonexistent")]),
            &mut problems,
        );
        assert!(found.is_none());
        assert!(
            problems[0].starts_with("--envoy-binary surely-not-a-binary-here: not found on PATH")
        );
    }

    #[test]
    fn istio_meta_variables_become_node_metadata() {
        let args = envoy_args(&[]);
        let e = env(&[("ISTIO_META_CLUSTER_ID", "east"), ("OTHER", "x")]);
        let settings = envoy_settings(&args, &e).unwrap();
        let BootstrapPlan::Template { values, .. } = settings.driver.bootstrap else {
            panic!("expected a template")
        };
        assert_eq!(
            values.metadata.get("CLUSTER_ID").map(String::as_str),
            Some("east")
        );
        assert_eq!(values.metadata.len(), 1);
    }

    #[test]
    fn default_config_dir_is_private_and_owned() {
        let settings = envoy_settings(&envoy_args(&[]), &env(&[("TMPDIR", "/x")])).unwrap();
        let dir = settings.owned_config_dir.unwrap();
        assert_eq!(
            dir,
            PathBuf::from(format!("/x/baton-{}", std::process::id()))
        );
    }
}
