//! Readiness of a generic epoch: `--ready notify|tcp:HOST:PORT|http:URL|exec:CMD|delay:DUR`.
//!
//! baton starts epoch N+1, waits until it is ready (bounded by `--ready-timeout`), and
//! only then drains epoch N. Kinds, best first:
//!
//! | kind | ready when | note |
//! | --- | --- | --- |
//! | `notify` | a process of the epoch's group sends `READY=1` to `NOTIFY_SOCKET` | sd_notify servers, HAProxy `-Ws`; the exact moment the proxy says so |
//! | `http:URL` | `GET URL` answers 2xx | a health endpoint the new epoch itself serves |
//! | `exec:CMD` | `sh -c CMD` exits 0 | run through baton's reaper |
//! | `tcp:HOST:PORT` | a TCP connect succeeds | **not** for a `--listen` port: baton holds that socket, so the kernel completes the handshake before the proxy accepts; use it for a separate port (stats, health) |
//! | `delay:DUR` | DUR after start | last resort |
//!
//! Polling kinds retry every 50 ms ([`probe::POLL_INTERVAL`]); every wait fails at its
//! deadline with the last failure in the message. **Boundary:** no I/O in [`spec`];
//! the shell races [`wait_ready`] with the epoch's exit.

pub mod notify;
pub mod probe;
pub mod spec;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::process::Command;

use tokio::time::Instant;

pub use notify::{NotifySocket, ENV_NOTIFY_SOCKET};
pub use probe::{wait_delay, wait_exec, wait_http, wait_tcp};
pub use spec::ReadySpec;

/// What [`wait_ready`] needs to know about the epoch it waits for.
#[derive(Debug, Clone, Copy)]
pub struct EpochProbe<'a> {
    /// When the epoch was started (`delay:` counts from here).
    pub started: Instant,
    /// The epoch's process group id (its pid: baton starts it as a group leader).
    pub pgid: u32,
    /// The epoch's notify socket; required for `notify`, unused otherwise.
    pub notify: Option<&'a NotifySocket>,
}

/// Wait until the epoch is ready according to `spec`, or fail at `deadline` with the
/// reason (`"--ready <spec>: <last failure>"`). `run_exec` runs one `exec:` attempt
/// (see [`wait_exec`]); it is unused for the other kinds.
pub async fn wait_ready<R, Fut>(
    spec: &ReadySpec,
    epoch: EpochProbe<'_>,
    deadline: Instant,
    run_exec: R,
) -> Result<(), String>
where
    R: FnMut(Command) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let result = match spec {
        ReadySpec::Notify => match epoch.notify {
            Some(socket) => socket.wait(epoch.pgid, deadline).await,
            None => Err("no notify socket was created for this epoch".to_string()),
        },
        ReadySpec::Tcp { addr } => wait_tcp(addr, deadline).await,
        ReadySpec::Http(target) => wait_http(target, deadline).await,
        ReadySpec::Exec { command } => wait_exec(command, deadline, run_exec).await,
        ReadySpec::Delay(delay) => wait_delay(epoch.started, *delay, deadline).await,
    };
    result.map_err(|e| format!("--ready {spec}: {e}"))
}
