//! `baton run`: the generic driver's settings. The `--listen` sockets are parsed
//! here and bound by [`crate::app`].

use nix::sys::signal::Signal;

use crate::cli::RunArgs;
use crate::defaults;
use crate::handoff::{self, ListenAddr, ListenSpec};
use crate::proxy::generic::Settings as GenericDriverSettings;
use crate::ready::ReadySpec;
use crate::supervisor::DriverKind;

use super::bootstrap::{cert_files, cert_pairs};
use super::env::{private_tmp, Env};
use super::supervision::{supervision, Handover, Watching};
use super::{ConfigError, Problems, Supervision};

/// Settings of `baton run`.
#[derive(Debug, Clone)]
pub struct RunSettings {
    /// The driver's settings.
    pub driver: GenericDriverSettings,
    /// Timing, triggers, status server.
    pub supervision: Supervision,
}

/// Validate `baton run`'s arguments.
pub fn run_settings(args: &RunArgs, env: &dyn Env) -> Result<RunSettings, ConfigError> {
    let mut problems = Problems::default();
    let s = &args.supervision;
    let listen: Vec<ListenSpec> = args
        .listen
        .iter()
        .filter_map(|l| problems.check(ListenSpec::parse(l)))
        .collect();
    problems.check(handoff::check_distinct_names(&listen));
    let ready = problems.check(ReadySpec::parse(&args.ready));
    match &ready {
        Some(ReadySpec::Delay(d)) if *d >= s.ready_timeout => problems.push(format!(
            "--ready {}: the delay is not shorter than --ready-timeout ({})",
            args.ready,
            humantime::format_duration(s.ready_timeout)
        )),
        Some(ReadySpec::Tcp { addr }) if probes_a_listener(addr, &listen) => {
            problems.push(format!(
                "--ready {}: that is a --listen socket baton holds; a connect succeeds before the \
                 proxy accepts, so it proves nothing (use notify or http:)",
                args.ready
            ))
        }
        _ => {}
    }
    let drain_signal = problems.check(parse_signal(&args.drain_signal));
    let certs = cert_pairs(&args.certs, &mut problems);
    let cert_files = cert_files(&certs);
    let mut watched = args.triggers.watch.clone();
    watched.extend(cert_files.iter().cloned());
    let handover = Handover {
        driver: DriverKind::Generic,
        drain_period: s.drain.drain_duration,
        parent_shutdown: s
            .drain
            .parent_shutdown_duration
            .unwrap_or(defaults::PARENT_SHUTDOWN_DURATION),
        max_draining: args.max_draining,
        drain_signal: drain_signal.map_or(Signal::SIGTERM as i32, |s| s as i32),
    };
    let supervision = supervision(
        s,
        &args.triggers,
        handover,
        Watching {
            wait_for: watched.clone(),
            watched,
            cert_files,
            certs_in_place: false,
        },
        &mut problems,
    );
    let (Some(ready), Some(drain_signal)) = (ready, drain_signal) else {
        return Err(problems.into_error());
    };
    problems.finish(|| RunSettings {
        driver: GenericDriverSettings {
            command: args.command.clone(),
            listen,
            ready,
            ready_timeout: s.ready_timeout,
            drain_signal,
            preflight: args.preflight.clone(),
            certs,
            runtime_dir: private_tmp(env, "-run"),
        },
        supervision,
    })
}

/// Whether a `tcp:` readiness target is the port of a `--listen` TCP socket.
fn probes_a_listener(addr: &str, specs: &[ListenSpec]) -> bool {
    let port = addr
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse::<u16>().ok());
    specs.iter().any(|l| match (&l.addr, port) {
        (ListenAddr::Tcp(a), Some(p)) => a.port() == p,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use crate::config::MapEnv;
    use clap::Parser;

    fn run_args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["baton", "run"];
        argv.extend_from_slice(extra);
        argv.extend_from_slice(&["--", "true"]);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Run(args) => *args,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn signals_parse_by_name_short_name_or_number() {
        assert_eq!(parse_signal("SIGUSR1"), Ok(Signal::SIGUSR1));
        assert_eq!(parse_signal("quit"), Ok(Signal::SIGQUIT));
        assert_eq!(parse_signal("15"), Ok(Signal::SIGTERM));
        assert!(parse_signal("SIGNOPE")
            .unwrap_err()
            .starts_with("--drain-signal SIGNOPE"));
    }

    #[test]
    fn settings_bind_nothing_and_name_every_problem() {
        let err = run_settings(
            &run_args(&[
                "--listen",
                "http=tcp://127.0.0.1:1",
                "--listen",
                "http=tcp://127.0.0.1:2",
                "--ready",
                "tcp:127.0.0.1:1",
                "--drain-signal",
                "NOPE",
            ]),
            &MapEnv::default(),
        )
        .unwrap_err();
        let text = err.to_string();
        for needle in ["http", "--ready tcp:127.0.0.1:1", "--drain-signal NOPE"] {
            assert!(text.contains(needle), "missing {needle} in {text}");
        }
        // Plain data: a port in use does not matter until baton runs.
        let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = busy.local_addr().unwrap().port();
        let listen = format!("http=tcp://127.0.0.1:{port}");
        let settings = run_settings(&run_args(&["--listen", &listen]), &MapEnv::default()).unwrap();
        assert_eq!(settings.driver.listen.len(), 1);
    }
}
