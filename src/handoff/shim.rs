//! The exec shim: how an epoch gets a correct `LISTEN_PID`.
//!
//! `LISTEN_PID` must equal the pid of the process that finally runs COMMAND (gunicorn
//! and sd_listen_fds ignore the sockets otherwise; gunicorn then silently binds its own
//! port). baton cannot know that pid before fork, and setting environment variables
//! between fork and exec is not async-signal-safe. So an epoch is started as
//!
//! ```text
//! /proc/self/exe __exec-shim -- COMMAND ARGS…
//! ```
//!
//! baton re-executes itself; the fresh, single-threaded process reads its own pid,
//! and `execvp`s COMMAND with `LISTEN_PID=<pid>` added. exec keeps the pid, the fds
//! prepared by [`super::prepare()`] (they are not close-on-exec) and the signal state.
//!
//! **Contract for `main`:** call [`exec_shim`] before anything else (before logging,
//! before a runtime starts threads) when `argv[1] == EXEC_SHIM_ARG`:
//!
//! ```text
//! let args: Vec<OsString> = std::env::args_os().collect();
//! if args.get(1).is_some_and(|a| a == EXEC_SHIM_ARG) {
//!     let err = exec_shim(&args[2..]);
//!     eprintln!("baton: cannot run {:?}: {err}", args.get(3));
//!     return exit::to_process(shim_exit_code(&err));
//! }
//! ```

use std::ffi::OsString;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::env::{substitute_epoch, ENV_LISTEN_PID};

/// `argv[1]` that puts baton in exec-shim mode. Not a user-facing subcommand.
pub const EXEC_SHIM_ARG: &str = "__exec-shim";

/// The shim executable to use from baton: its own image. In the forked child this
/// names the same binary even if baton's file on disk was replaced or deleted since.
pub const SELF_EXE: &str = "/proc/self/exe";

/// `argv[0]` the shim runs under (visible in `ps` until COMMAND replaces it).
const SHIM_ARGV0: &str = "baton";

/// Build the command line of one epoch: `shim_exe __exec-shim -- COMMAND ARGS…`, with
/// `{epoch}` replaced in COMMAND and ARGS. `command` must not be empty (the caller's
/// configuration guarantees it; an empty one gives a shim that fails with exit 127).
pub fn shim_command(shim_exe: &Path, command: &[OsString], epoch: u32) -> Command {
    let mut cmd = Command::new(shim_exe);
    cmd.arg0(SHIM_ARGV0).arg(EXEC_SHIM_ARG).arg("--");
    cmd.args(command.iter().map(|a| substitute_epoch(a, epoch)));
    cmd
}

/// Run in shim mode: `args` are the arguments after [`EXEC_SHIM_ARG`] (`-- COMMAND
/// ARGS…`; the `--` is optional). Sets `LISTEN_PID` to this process's pid and
/// `execvp`s COMMAND. Returns only on failure.
///
/// Must run while the process is single-threaded (first thing in `main`).
pub fn exec_shim(args: &[OsString]) -> io::Error {
    let args = match args.first() {
        Some(first) if first == "--" => &args[1..],
        _ => args,
    };
    let Some((program, rest)) = args.split_first() else {
        return io::Error::new(
            io::ErrorKind::NotFound,
            "exec shim: no COMMAND after `__exec-shim --`",
        );
    };
    // Command::exec builds the environment in this (single-threaded) process and
    // calls execvp; it also resets the signal mask and SIGPIPE that Rust's runtime set.
    Command::new(program)
        .args(rest)
        .env(ENV_LISTEN_PID, std::process::id().to_string())
        .exec()
}

/// Exit status for a failed shim, as shells and tini use it: 127 when COMMAND was not
/// found, 126 when it was found but could not be executed.
pub fn shim_exit_code(err: &io::Error) -> i32 {
    if err.kind() == io::ErrorKind::NotFound {
        crate::exit::NOT_FOUND
    } else {
        crate::exit::CANNOT_EXECUTE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shim_command_wraps_the_command_and_substitutes_the_epoch() {
        let command: Vec<OsString> = ["nginx", "-g", "pid /run/nginx.{epoch}.pid;"]
            .iter()
            .map(OsString::from)
            .collect();
        let cmd = shim_command(Path::new(SELF_EXE), &command, 4);
        assert_eq!(cmd.get_program(), SELF_EXE);
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(
            args,
            [EXEC_SHIM_ARG, "--", "nginx", "-g", "pid /run/nginx.4.pid;"]
        );
    }

    #[test]
    fn shim_without_a_command_fails_as_not_found() {
        let err = exec_shim(&[OsString::from("--")]);
        assert_eq!(shim_exit_code(&err), 127);
    }

    #[test]
    fn shim_exit_codes_follow_the_shell_convention() {
        assert_eq!(
            shim_exit_code(&io::Error::from(io::ErrorKind::NotFound)),
            127
        );
        assert_eq!(
            shim_exit_code(&io::Error::from(io::ErrorKind::PermissionDenied)),
            126
        );
    }
}
