//! `baton envoy` and `baton render`: the Envoy driver's settings.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{BootstrapArgs, DrainArgs, EnvoyArgs, RenderArgs};
use crate::defaults;
use crate::proxy::envoy::{EnvoyOptions, Settings as EnvoyDriverSettings};
use crate::supervisor::DriverKind;

use super::binary::resolve_into;
use super::bootstrap::{bootstrap_settings, BootstrapSettings};
use super::env::{service_node, Env};
use super::supervision::{supervision, Handover};
use super::{ConfigError, Problems, Supervision};

/// Settings of `baton envoy`.
#[derive(Debug, Clone)]
pub struct EnvoySettings {
    /// The driver's settings.
    pub driver: EnvoyDriverSettings,
    /// Timing, triggers, status server.
    pub supervision: Supervision,
    /// Remove this directory on exit (baton chose it).
    pub owned_config_dir: Option<PathBuf>,
}

/// Settings of `baton render`.
#[derive(Debug, Clone)]
pub struct RenderSettings {
    /// What `baton envoy` would run with, as far as the bootstrap goes.
    pub driver: EnvoyDriverSettings,
    /// Check the bootstrap with `envoy --mode validate` (the driver's binary).
    pub validate: bool,
    /// Where to write it; standard output when `None`.
    pub output: Option<PathBuf>,
}

/// Validate `baton envoy`'s arguments.
pub fn envoy_settings(args: &EnvoyArgs, env: &dyn Env) -> Result<EnvoySettings, ConfigError> {
    let mut problems = Problems::default();
    let bootstrap = bootstrap_settings(&args.bootstrap, env, &mut problems);
    let binary = resolve_into("--envoy-binary", &args.envoy_binary, env, &mut problems);
    let drain_period = drain_period(&args.bootstrap, &args.supervision.drain, &mut problems);
    let (Some(bootstrap), Some(binary)) = (bootstrap, binary) else {
        return Err(problems.into_error());
    };
    let mut watched = args.triggers.watch.clone();
    watched.extend(bootstrap.watched());
    let cert_files = bootstrap.cert_files();
    // A restart terminates the grandparent: let it drain and flush its counters first.
    let handover = Handover {
        driver: DriverKind::Envoy,
        drain_period,
        max_draining: defaults::MAX_DRAINING,
    };
    let supervision = supervision(
        &args.supervision,
        &args.triggers,
        handover,
        watched,
        cert_files,
        &mut problems,
    );
    let options = EnvoyOptions {
        drain_time: args.supervision.drain.drain_duration,
        parent_shutdown: args.supervision.drain.parent_shutdown_duration,
        service_cluster: args.bootstrap.service_cluster.clone(),
        service_node: service_node(&args.bootstrap, env),
        ip_version: args.local_address_ip_version.clone(),
        log_level: args.proxy_log_level.clone(),
        concurrency: args.bootstrap.concurrency,
        extra: args.extra.clone(),
    };
    let owned_config_dir = bootstrap
        .owns_config_dir
        .then(|| bootstrap.config_dir.clone());
    let driver = EnvoyDriverSettings {
        ready_timeout: args.supervision.ready_timeout,
        base_id: args.base_id,
        ..driver_settings(binary, bootstrap, &args.bootstrap, options)
    };
    problems.finish(|| EnvoySettings {
        driver,
        supervision,
        owned_config_dir,
    })
}

/// Validate `baton render`'s arguments: the same bootstrap `baton envoy` would
/// produce from them.
pub fn render_settings(args: &RenderArgs, env: &dyn Env) -> Result<RenderSettings, ConfigError> {
    let mut problems = Problems::default();
    let bootstrap = bootstrap_settings(&args.bootstrap, env, &mut problems);
    let validator = args
        .validate_with
        .as_ref()
        .and_then(|b| resolve_into("--validate-with", b, env, &mut problems));
    drain_period(&args.bootstrap, &args.drain, &mut problems);
    let Some(bootstrap) = bootstrap else {
        return Err(problems.into_error());
    };
    let options = EnvoyOptions {
        drain_time: args.drain.drain_duration,
        parent_shutdown: args.drain.parent_shutdown_duration,
        service_cluster: args.bootstrap.service_cluster.clone(),
        service_node: service_node(&args.bootstrap, env),
        ip_version: defaults::IP_VERSION.into(),
        log_level: "error".into(),
        concurrency: args.bootstrap.concurrency,
        extra: Vec::new(),
    };
    let validate = validator.is_some();
    let binary = validator.unwrap_or_else(|| defaults::ENVOY_BINARY.into());
    let driver = driver_settings(binary, bootstrap, &args.bootstrap, options);
    problems.finish(|| RenderSettings {
        driver,
        validate,
        output: args.output.clone(),
    })
}

fn driver_settings(
    binary: PathBuf,
    bootstrap: BootstrapSettings,
    args: &BootstrapArgs,
    options: EnvoyOptions,
) -> EnvoyDriverSettings {
    EnvoyDriverSettings {
        binary,
        admin: SocketAddr::from((Ipv4Addr::LOCALHOST, args.admin_port)),
        config_dir: bootstrap.config_dir,
        bootstrap: bootstrap.plan,
        certs: bootstrap.certs,
        options,
        ready_timeout: defaults::READY_TIMEOUT,
        stats_flush: args.stats_flush_interval,
        base_id: None,
    }
}

/// How long an old epoch is given before a restart may cut it short: its drain
/// plus one stats flush (its last counters reach baton through its child).
fn drain_period(bootstrap: &BootstrapArgs, drain: &DrainArgs, problems: &mut Problems) -> Duration {
    let flush = bootstrap.stats_flush_interval;
    if flush.is_zero() {
        problems.push("--stats-flush-interval must be more than 0");
    }
    let drain_and_flush = whole_seconds(drain.drain_duration) + flush;
    if drain.parent_shutdown_duration < drain_and_flush {
        problems.push(format!(
            "--parent-shutdown-duration ({}) must be at least --drain-duration plus \
             --stats-flush-interval ({}), so an old epoch's last counters reach baton",
            humantime::format_duration(drain.parent_shutdown_duration),
            humantime::format_duration(drain_and_flush)
        ));
    }
    drain_and_flush
}

/// Envoy takes drain times in whole seconds (rounded up).
fn whole_seconds(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bootstrap::BootstrapPlan;
    use crate::cli::{Cli, Command};
    use crate::config::MapEnv;
    use clap::Parser;

    fn envoy_args(extra: &[&str]) -> EnvoyArgs {
        let mut argv = vec!["baton", "envoy", "--envoy-binary", "/bin/true"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Envoy(args) => *args,
            other => panic!("unexpected {other:?}"),
        }
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
        let err = envoy_settings(&args, &MapEnv::default()).unwrap_err();
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
    fn istio_meta_variables_become_node_metadata() {
        let e = MapEnv::of(&[("ISTIO_META_CLUSTER_ID", "east"), ("OTHER", "x")]);
        let settings = envoy_settings(&envoy_args(&[]), &e).unwrap();
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
        let settings = envoy_settings(&envoy_args(&[]), &MapEnv::of(&[("TMPDIR", "/x")])).unwrap();
        let dir = settings.owned_config_dir.unwrap();
        assert_eq!(
            dir,
            PathBuf::from(format!("/x/baton-{}", std::process::id()))
        );
        assert_eq!(settings.driver.config_dir, dir);
    }

    #[test]
    fn render_and_envoy_agree_on_what_shapes_the_bootstrap() {
        let flags = ["--stats-flush-interval", "2s", "--admin-port", "9901"];
        let envoy = envoy_settings(&envoy_args(&flags), &MapEnv::default()).unwrap();
        let mut argv = vec!["baton", "render"];
        argv.extend_from_slice(&flags);
        let Command::Render(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not render")
        };
        let render = render_settings(&args, &MapEnv::default()).unwrap();
        assert_eq!(render.driver.stats_flush, envoy.driver.stats_flush);
        assert_eq!(render.driver.admin, envoy.driver.admin);
        assert!(!render.validate);
    }
}
