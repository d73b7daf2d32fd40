//! baton's exit codes, in one place. The README's table lists the same.
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | clean shutdown (the serving epoch stopped on baton's SIGTERM counts as clean) |
//! | 1 | baton itself failed at run time, or a client command's request failed |
//! | 64 | usage error: a flag or environment variable is wrong (sysexits `EX_USAGE`) |
//! | 78 | the configuration cannot be used: template, bootstrap, certificate, preflight (sysexits `EX_CONFIG`) |
//! | 126 | the proxy command exists but cannot be executed (shell convention) |
//! | 127 | the proxy command was not found (shell convention) |
//! | 128+n | the proxy died of signal n |
//! | other | the proxy's own exit code, when it crashed past `--crash-budget` |

/// Success.
pub const OK: i32 = 0;
/// A run-time failure with no better code.
pub const FAILURE: i32 = 1;
/// Command-line usage error (sysexits `EX_USAGE`).
pub const USAGE: i32 = 64;
/// A configuration that cannot be used (sysexits `EX_CONFIG`).
pub const CONFIG: i32 = 78;
/// The command exists but could not be executed.
pub const CANNOT_EXECUTE: i32 = 126;
/// The command was not found.
pub const NOT_FOUND: i32 = 127;

/// The shell convention for a process killed by signal `n`.
pub const fn signalled(n: i32) -> i32 {
    128 + n
}

/// An exit code as a process can return it (clamped to 0..=255).
pub fn to_process(code: i32) -> std::process::ExitCode {
    std::process::ExitCode::from(code.clamp(0, 255) as u8)
}
