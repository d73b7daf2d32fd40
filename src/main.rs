//! The `baton` executable: parse, validate, run, exit with a documented code.

use std::process::ExitCode;

use clap::Parser;

use baton::cli::{Cli, Command};
use baton::config::{self, ConfigError, ProcessEnv};
use baton::{app, logging};

/// Run a client command (`restart`, `wait`, `status`) on a small runtime.
fn client_command(command: impl std::future::Future<Output = i32>) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    Ok(runtime.block_on(command))
}

/// Command-line usage error (sysexits `EX_USAGE`).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    // Exec-shim mode first, while the process is single-threaded: it only sets
    // LISTEN_PID and becomes the epoch's COMMAND (see `baton::handoff::shim`).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args
        .get(1)
        .is_some_and(|a| a == baton::handoff::EXEC_SHIM_ARG)
    {
        let err = baton::handoff::exec_shim(&args[2..]);
        eprintln!("baton: {err}");
        return ExitCode::from(baton::handoff::shim_exit_code(&err));
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(e) = logging::init(&cli.log) {
        eprintln!("baton: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let result = match &cli.command {
        Command::Render(args) => app::render(args, &ProcessEnv),
        Command::Restart(args) => client_command(baton::client::restart(args.status_addr)),
        Command::Wait(args) => {
            client_command(baton::client::wait(args.client.status_addr, args.timeout))
        }
        Command::Status(args) => client_command(baton::client::status(args.status_addr)),
        Command::Stats(args) => client_command(baton::client::stats(
            args.client.status_addr,
            args.pid,
            args.format == baton::cli::StatsFormat::Prometheus,
        )),
        Command::Envoy(args) => match config::envoy_settings(args, &ProcessEnv) {
            Ok(settings) => app::run_envoy(settings),
            Err(e) => Err(e.into()),
        },
        Command::Run(args) => match config::run_settings(args, &ProcessEnv) {
            Ok(settings) => app::run_generic(settings),
            Err(e) => Err(e.into()),
        },
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) if e.is::<ConfigError>() => {
            eprintln!("baton: invalid command line:\n{e}");
            ExitCode::from(EXIT_USAGE)
        }
        Err(e) => {
            eprintln!("baton: {e:#}");
            ExitCode::FAILURE
        }
    }
}
