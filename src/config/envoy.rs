//! `baton envoy` and `baton render`: the Envoy driver's settings.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::cli::{BootstrapArgs, EnvoyArgs, RenderArgs};
use crate::defaults;
use crate::proxy::envoy::{EnvoyOptions, Settings as EnvoyDriverSettings};
use crate::supervisor::DriverKind;

use super::binary::resolve_into;
use super::bootstrap::{bootstrap_settings, cert_files, BootstrapSettings};
use super::concurrency::Concurrency;
use super::env::{service_node, Env};
use super::supervision::{supervision, Handover, Watching};
use super::timing::envoy_timing;
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
    /// What baton derived from the flags (for the start log).
    pub notes: Vec<String>,
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
    /// What baton derived from the flags (printed on stderr).
    pub notes: Vec<String>,
}

/// Validate `baton envoy`'s arguments.
pub fn envoy_settings(args: &EnvoyArgs, env: &dyn Env) -> Result<EnvoySettings, ConfigError> {
    let mut problems = Problems::default();
    let bootstrap = bootstrap_settings(&args.bootstrap, env, &mut problems);
    let binary = resolve_into("--envoy-binary", &args.envoy_binary, env, &mut problems);
    let timing = envoy_timing(
        &args.supervision.drain,
        args.bootstrap.stats_flush_interval,
        &mut problems,
    );
    let (Some(bootstrap), Some(binary)) = (bootstrap, binary) else {
        return Err(problems.into_error());
    };
    let cert_files = cert_files(&bootstrap.certs);
    let certs_in_place = !bootstrap.sds.is_empty();
    let mut wait_for = args.triggers.watch.clone();
    wait_for.extend(cert_files.iter().cloned());
    let mut watched = wait_for.clone();
    watched.extend(bootstrap.bootstrap_file());
    // A restart terminates the grandparent: let it drain and flush its counters first.
    let handover = Handover {
        driver: DriverKind::Envoy,
        drain_period: timing.drain_period(),
        parent_shutdown: timing.parent_shutdown,
        max_draining: defaults::MAX_DRAINING,
        drain_signal: nix::sys::signal::Signal::SIGTERM as i32,
    };
    let supervision = supervision(
        &args.supervision,
        &args.triggers,
        handover,
        Watching {
            watched,
            wait_for,
            cert_files,
            certs_in_place,
        },
        &mut problems,
    );
    let options = EnvoyOptions {
        drain_time: timing.drain,
        parent_shutdown: timing.parent_shutdown,
        service_cluster: args.bootstrap.service_cluster.clone(),
        service_node: service_node(&args.bootstrap, env),
        ip_version: args.local_address_ip_version.clone(),
        log_level: args.proxy_log_level.clone(),
        concurrency: Some(bootstrap.concurrency.workers),
        extra: args.extra.clone(),
    };
    let mut notes = timing.notes;
    notes.push(concurrency_note(&bootstrap.concurrency));
    let owned_config_dir = bootstrap
        .owns_config_dir
        .then(|| bootstrap.config_dir.clone());
    let driver = EnvoyDriverSettings {
        ready_timeout: args.supervision.ready_timeout,
        base_id: args.base_id,
        ..driver_settings(binary, bootstrap, &args.bootstrap, options, timing.flush)
    };
    problems.finish(|| EnvoySettings {
        driver,
        supervision,
        owned_config_dir,
        notes,
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
    let timing = envoy_timing(
        &args.drain,
        args.bootstrap.stats_flush_interval,
        &mut problems,
    );
    let Some(bootstrap) = bootstrap else {
        return Err(problems.into_error());
    };
    let options = EnvoyOptions {
        drain_time: timing.drain,
        parent_shutdown: timing.parent_shutdown,
        service_cluster: args.bootstrap.service_cluster.clone(),
        service_node: service_node(&args.bootstrap, env),
        ip_version: defaults::IP_VERSION.into(),
        log_level: "error".into(),
        concurrency: Some(bootstrap.concurrency.workers),
        extra: Vec::new(),
    };
    let mut notes = timing.notes;
    notes.push(concurrency_note(&bootstrap.concurrency));
    let validate = validator.is_some();
    let binary = validator.unwrap_or_else(|| defaults::ENVOY_BINARY.into());
    let driver = driver_settings(binary, bootstrap, &args.bootstrap, options, timing.flush);
    problems.finish(|| RenderSettings {
        driver,
        validate,
        output: args.output.clone(),
        notes,
    })
}

/// The start log's line about Envoy's workers.
fn concurrency_note(c: &Concurrency) -> String {
    format!("--concurrency {}: {}", c.workers, c.reason)
}

fn driver_settings(
    binary: PathBuf,
    bootstrap: BootstrapSettings,
    args: &BootstrapArgs,
    options: EnvoyOptions,
    stats_flush: Duration,
) -> EnvoyDriverSettings {
    EnvoyDriverSettings {
        binary,
        admin: SocketAddr::from((Ipv4Addr::LOCALHOST, args.admin_port)),
        config_dir: bootstrap.config_dir,
        bootstrap: bootstrap.plan,
        certs: bootstrap.certs,
        sds: bootstrap.sds,
        options,
        ready_timeout: defaults::READY_TIMEOUT,
        stats_flush,
        base_id: None,
    }
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
    fn sds_names_one_secret_per_pair_in_the_config_dir_and_needs_a_pair() {
        let pairs = ["--cert", "/c/a.crt:/c/a.key", "--cert", "/c/b.crt:/c/b.key"];
        let mut flags = vec!["--cert-rotation", "sds", "--config-dir", "/run/baton"];
        flags.extend_from_slice(&pairs);
        let settings = envoy_settings(&envoy_args(&flags), &MapEnv::default()).unwrap();
        let secrets: Vec<(String, PathBuf)> = settings
            .driver
            .sds
            .iter()
            .map(|s| (s.name.clone(), s.path.clone()))
            .collect();
        assert_eq!(
            secrets,
            vec![
                ("baton-cert-0".into(), "/run/baton/sds-cert-0.json".into()),
                ("baton-cert-1".into(), "/run/baton/sds-cert-1.json".into()),
            ]
        );
        assert!(settings.supervision.certs_in_place);
        let BootstrapPlan::Template { values, .. } = &settings.driver.bootstrap else {
            panic!("expected a template")
        };
        assert_eq!(values.sds, settings.driver.sds);

        let restart = envoy_settings(&envoy_args(&pairs), &MapEnv::default()).unwrap();
        assert!(restart.driver.sds.is_empty() && !restart.supervision.certs_in_place);

        let err = envoy_settings(&envoy_args(&["--cert-rotation", "sds"]), &MapEnv::default())
            .unwrap_err();
        assert_eq!(
            err.problems,
            vec!["--cert-rotation sds: no --cert pair to hand to Envoy"]
        );
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
    fn concurrency_defaults_to_the_cpu_limit_for_envoy_and_the_template() {
        use crate::sys::cgroup_cpu::{CpuLimit, CpuQuota, Cpus};
        let one_and_a_half = MapEnv::default().with_cpus(Cpus {
            limit: Some(CpuLimit {
                quota: CpuQuota {
                    quota_us: 150_000,
                    period_us: 100_000,
                },
                file: "/sys/fs/cgroup/cpu.max".into(),
            }),
            cores: 16,
        });
        let settings = envoy_settings(&envoy_args(&[]), &one_and_a_half).unwrap();
        assert_eq!(settings.driver.options.concurrency, Some(2));
        let BootstrapPlan::Template { values, .. } = &settings.driver.bootstrap else {
            panic!("expected a template")
        };
        assert_eq!(values.concurrency, Some(2));
        assert!(settings.notes.contains(
            &"--concurrency 2: CPU limit 1.5 (/sys/fs/cgroup/cpu.max), rounded up".into()
        ));

        let given = envoy_settings(&envoy_args(&["--concurrency", "3"]), &one_and_a_half).unwrap();
        assert_eq!(given.driver.options.concurrency, Some(3));
    }

    #[test]
    fn render_and_envoy_agree_on_what_shapes_the_bootstrap() {
        let flags = [
            "--drain-duration",
            "5s",
            "--parent-shutdown-duration",
            "7s",
            "--admin-port",
            "9901",
        ];
        let envoy = envoy_settings(&envoy_args(&flags), &MapEnv::default()).unwrap();
        let mut argv = vec!["baton", "render"];
        argv.extend_from_slice(&flags);
        let Command::Render(args) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not render")
        };
        let render = render_settings(&args, &MapEnv::default()).unwrap();
        assert_eq!(render.driver.stats_flush, envoy.driver.stats_flush);
        assert_eq!(render.driver.stats_flush, Duration::from_secs(2));
        assert_eq!(render.notes, envoy.notes);
        assert_eq!(render.driver.admin, envoy.driver.admin);
        assert!(!render.validate);
    }
}
