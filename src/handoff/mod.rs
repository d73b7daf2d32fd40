//! The listener set of the generic driver, and what an epoch receives.
//!
//! baton binds every `--listen` socket once ([`ListenerSet::bind`]) and hands the same
//! sockets to every epoch, following systemd's socket-activation convention, so a new
//! epoch serves on the very sockets the old one drains from and no connection is
//! refused during a restart. An epoch is started as
//! `/proc/self/exe __exec-shim -- COMMAND ARGS…` ([`shim_command`], [`exec_shim`]) and
//! prepared with [`prepare()`]; see [`mod@env`] for the exact fds and variables it receives.
//!
//! Code map: [`spec`] parses `--listen` (pure) · [`bind`] owns the sockets ·
//! [`mod@env`] computes environment and arguments (pure) · [`mod@prepare`] does the fd
//! handoff between fork and exec · [`shim`] sets `LISTEN_PID` in the final process.
//!
//! **Boundary:** one of the few modules with `unsafe` (the `pre_exec` hook and the
//! ownership of fresh fds); each block carries a `// SAFETY:` line.

pub mod bind;
pub mod env;
pub mod prepare;
pub mod shim;
pub mod spec;

#[cfg(test)]
mod tests;
#[cfg(test)]
pub(crate) mod testutil;

pub use bind::ListenerSet;
pub use env::substitute_epoch;
pub use prepare::{prepare, ExtraFd};
pub use shim::{exec_shim, shim_command, shim_exit_code, EXEC_SHIM_ARG, SELF_EXE};
pub use spec::{check_distinct_names, ListenAddr, ListenSpec};
