//! baton: a proxy supervisor with hot restart, the entrypoint of a sidecar.
//!
//! Bird's-eye view, top-down (the flow of [`main`]):
//! 1. `cli` parses the command line as typed; `config` turns it and the pod's
//!    environment into validated, plain settings (every problem at once, naming its
//!    flag), binding nothing.
//! 2. `app` acquires the resources once (reaper, stats segment, status socket,
//!    listener set or metrics receiver), builds the driver from `proxy` complete, and
//!    runs the loop: the pure state machine in `supervisor` decides, the shell in
//!    `app` acts (spawns, signals, timers) and reports outcomes back as events; the
//!    status server (`status`) shows a snapshot derived from the core's state.
//! 3. For each epoch the driver renders the bootstrap (`bootstrap`), validates it,
//!    starts the proxy and watches it become ready.
//! 4. `sys` does the operating-system duties: one reaper for every child, clean
//!    spawning, signals, subreaping.
//!
//! The promise: no request fails because of a hot restart, and a bad change never
//! takes down the epoch that serves.
//!
//! The public API is what a proxy needs from baton ([`child`], the stats segment)
//! and what baton's own test binaries drive; everything else is private to the
//! crate, so the compiler reports what is unused.

#![deny(unsafe_code)]

mod app;
mod bootstrap;
mod certs;
mod cli;
mod client;
mod config;
mod defaults;
mod exit;
#[allow(unsafe_code)]
mod handoff;
mod http_client;
mod logging;
mod memory;
mod proxy;
mod ready;
#[allow(unsafe_code)]
pub mod stats;
mod status;
mod supervisor;
#[allow(unsafe_code)]
mod sys;
mod version;
mod watch;

use std::process::ExitCode;

use clap::Parser;

pub use stats::child;
pub use supervisor::ProcessExit;
pub use sys::Reaper;

use cli::{Cli, Command};
use config::{ConfigError, ProcessEnv};

/// The `baton` executable: parse, validate, run, exit with a documented code
/// (the table is in the `exit` module and the README).
pub fn main() -> ExitCode {
    // Exec-shim mode first, while the process is single-threaded: it only sets
    // LISTEN_PID and becomes the epoch's COMMAND (see `handoff::shim`).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == handoff::EXEC_SHIM_ARG) {
        let err = handoff::exec_shim(&args[2..]);
        // `__exec-shim -- COMMAND …`: name the command, as a shell would.
        let command = args[2..].iter().find(|a| *a != "--");
        match command {
            Some(c) => eprintln!("baton: cannot run {}: {err}", c.to_string_lossy()),
            None => eprintln!("baton: no command to run: {err}"),
        }
        return exit::to_process(handoff::shim_exit_code(&err));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return exit::to_process(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    if let Err(e) = logging::init(&cli.log) {
        eprintln!("baton: {e}");
        return exit::to_process(exit::USAGE);
    }
    let result = match cli.command {
        Command::Envoy(args) => config::envoy_settings(&args, &ProcessEnv)
            .map_err(anyhow::Error::from)
            .and_then(app::run_envoy),
        Command::Run(args) => config::run_settings(&args, &ProcessEnv)
            .map_err(anyhow::Error::from)
            .and_then(app::run_generic),
        Command::Render(args) => config::render_settings(&args, &ProcessEnv)
            .map_err(anyhow::Error::from)
            .and_then(app::render),
        Command::Restart(args) => client::run(client::restart(client::reachable(args.status_addr))),
        Command::Drain(args) => client::run(client::drain(client::reachable(args.status_addr))),
        Command::Wait(args) => client::run(client::wait(
            client::reachable(args.client.status_addr),
            args.timeout,
        )),
        Command::Status(args) => client::run(client::status(client::reachable(args.status_addr))),
        Command::Stats(args) => client::run(client::stats(
            client::reachable(args.client.status_addr),
            args.pid,
            args.format == cli::StatsFormat::Prometheus,
        )),
        Command::Version(args) => version::run(args.envoy_binary.as_deref()),
    };
    match result {
        Ok(code) => exit::to_process(code),
        Err(e) if e.is::<ConfigError>() => {
            eprintln!("baton: invalid command line:\n{e}");
            exit::to_process(exit::USAGE)
        }
        Err(e) => {
            eprintln!("baton: {e:#}");
            exit::to_process(exit::FAILURE)
        }
    }
}
