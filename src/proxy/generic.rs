//! The generic driver: any proxy binary, on listening sockets baton holds.
//!
//! baton binds the `--listen` sockets once and hands the same ones to every epoch
//! (systemd socket activation, see [`crate::handoff`]); the socket never closes, so
//! its accept queue survives every restart. A new epoch must be ready (`--ready`)
//! before the old one gets `--drain-signal`; the old one is killed after
//! `--parent-shutdown-duration`.
//!
//! **Invariant:** an epoch is ready only if, besides its readiness probe, one of its
//! processes holds every listener baton passed. A proxy that closed them and bound
//! its own port would otherwise take the traffic of a port baton keeps accepting on.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::bootstrap::CertPair;
use crate::handoff::{self, ExtraFd, ListenSpec, ListenerSet};
use crate::proxy::{check_certs, PreflightError, Prepared, Proxy, Rotated};
use crate::ready::{self, EpochProbe, NotifySocket, ReadySpec};
use crate::stats::{child, Segment};
use crate::supervisor::{DriverKind, FailureReason, Launch};
use crate::sys::Reaper;

/// Everything the generic driver needs, validated: plain data, no resources.
#[derive(Debug, Clone)]
pub struct Settings {
    /// COMMAND and its arguments (`{epoch}` is replaced per epoch).
    pub command: Vec<OsString>,
    /// The sockets every epoch receives, to be bound once by baton.
    pub listen: Vec<ListenSpec>,
    /// When an epoch counts as ready.
    pub ready: ReadySpec,
    /// How long it may take.
    pub ready_timeout: Duration,
    /// Sent to an old epoch's process group once a new one serves.
    pub drain_signal: Signal,
    /// `--preflight`: run with `sh -c` before every restart.
    pub preflight: Option<String>,
    /// `--cert` pairs checked before every restart.
    pub certs: Vec<CertPair>,
    /// Where per-epoch notify sockets live (a private directory baton removes).
    pub runtime_dir: PathBuf,
}

/// The generic driver, with the resources it runs on.
pub struct GenericProxy {
    settings: Settings,
    listeners: ListenerSet,
    reaper: Reaper,
    stats: Arc<Segment>,
    notify: Mutex<HashMap<u32, Arc<NotifySocket>>>,
}

impl GenericProxy {
    /// The driver for `settings`, handing `listeners` and the stats segment to every
    /// epoch and running helper commands through `reaper`.
    pub fn new(
        settings: Settings,
        listeners: ListenerSet,
        reaper: Reaper,
        stats: Arc<Segment>,
    ) -> Self {
        GenericProxy {
            settings,
            listeners,
            reaper,
            stats,
            notify: Mutex::new(HashMap::new()),
        }
    }

    fn notify_sockets(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Arc<NotifySocket>>> {
        self.notify.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn signal_group(&self, epoch: u32, pid: u32, signal: Signal) {
        tracing::info!(epoch, pid, %signal, "signalling epoch");
        if let Err(e) = killpg(Pid::from_raw(pid as i32), signal) {
            tracing::debug!(epoch, pid, error = %e, "signal not delivered");
        }
    }

    /// Socket inodes of the listeners, for the "does the epoch hold them" check.
    fn listener_inodes(&self) -> Vec<(String, u64)> {
        self.listeners
            .listeners()
            .iter()
            .filter_map(|l| {
                let stat = nix::sys::stat::fstat(l.fd().as_fd()).ok()?;
                Some((l.spec().name.clone(), stat.st_ino))
            })
            .collect()
    }
}

/// Run `sh -c command` through the reaper with the listeners an epoch would get (a
/// config check such as `haproxy -c` inspects `fd@3`); `Err` carries its output.
async fn run_shell(
    reaper: &Reaper,
    listeners: &ListenerSet,
    epoch: u32,
    command: &str,
    what: &str,
) -> Result<(), String> {
    let command = handoff::substitute_epoch(command.as_ref(), epoch)
        .to_string_lossy()
        .into_owned();
    let mut cmd = Command::new("sh");
    cmd.args(["-c", &command])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    handoff::prepare(&mut cmd, listeners, &[], epoch).map_err(|e| format!("{what}: {e}"))?;
    crate::sys::spawn::clean_slate(&mut cmd);
    let (status, output) = crate::sys::capture(reaper, &mut cmd, Duration::from_secs(60)).await?;
    if status.success() {
        Ok(())
    } else {
        let output = output.trim();
        Err(format!(
            "{what} `{command}` failed ({status}){}",
            if output.is_empty() {
                String::new()
            } else {
                format!(": {output}")
            }
        ))
    }
}

impl Proxy for GenericProxy {
    fn kind(&self) -> DriverKind {
        DriverKind::Generic
    }

    async fn preflight(&self, epoch: u32, _trusted: &[String]) -> Result<Prepared, PreflightError> {
        let certs = check_certs(&self.settings.certs)?;
        if let Some(command) = &self.settings.preflight {
            run_shell(&self.reaper, &self.listeners, epoch, command, "--preflight")
                .await
                .map_err(|e| PreflightError::new(FailureReason::Preflight, e))?;
        }
        Ok(Prepared {
            config_digest: None,
            certs,
        })
    }

    fn inputs_digest(&self) -> Option<String> {
        // The proxy reads its own configuration; baton cannot tell if it changed.
        None
    }

    async fn warm(&self) {}

    fn command(&self, launch: &Launch) -> Result<Command, String> {
        let epoch = launch.epoch;
        let mut cmd =
            handoff::shim_command(handoff::SELF_EXE.as_ref(), &self.settings.command, epoch);
        // Without a gauge lane the epoch's counters still work; say so and go on.
        if let Err(e) = self.stats.begin_epoch(epoch) {
            tracing::warn!(epoch, error = %e, "no gauge lane for this epoch in the stats segment");
        }
        let extra = [ExtraFd::new(child::ENV_STATS_FD, self.stats.as_ref())];
        handoff::prepare(&mut cmd, &self.listeners, &extra, epoch)
            .map_err(|e| format!("preparing the listeners for epoch {epoch}: {e}"))?;
        if self.settings.ready == ReadySpec::Notify {
            let socket = NotifySocket::bind_in(&self.settings.runtime_dir, epoch)
                .map_err(|e| format!("notify socket for epoch {epoch}: {e}"))?;
            cmd.env(ready::ENV_NOTIFY_SOCKET, socket.path());
            self.notify_sockets().insert(epoch, Arc::new(socket));
        }
        Ok(cmd)
    }

    async fn wait_ready(&self, launch: &Launch, pid: u32) -> Result<(), String> {
        let now = tokio::time::Instant::now();
        let notify = self.notify_sockets().get(&launch.epoch).cloned();
        let probe = EpochProbe {
            started: now,
            pgid: pid,
            notify: notify.as_deref(),
        };
        let run_exec = |mut cmd: Command| {
            let reaper = self.reaper.clone();
            async move {
                cmd.stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let spawned = reaper.spawn(&mut cmd).map_err(|e| e.to_string())?;
                match spawned.exit.await {
                    Ok(status) if status.success() => Ok(()),
                    Ok(status) => Err(status.to_string()),
                    Err(_) => Err("probe vanished".to_string()),
                }
            }
        };
        let spec = match &self.settings.ready {
            ReadySpec::Exec { command } => ReadySpec::Exec {
                command: handoff::substitute_epoch(command.as_ref(), launch.epoch)
                    .to_string_lossy()
                    .into_owned(),
            },
            other => other.clone(),
        };
        let deadline = now + self.settings.ready_timeout;
        ready::wait_ready(&spec, probe, deadline, run_exec).await?;
        let missing = missing_listeners(pid, &self.listener_inodes());
        if !missing.is_empty() {
            return Err(format!(
                "ready, but no process of the epoch holds the listener(s) {} baton passed: \
                 it may have closed them and bound its own socket",
                missing.join(", ")
            ));
        }
        Ok(())
    }

    fn drain(&self, epoch: u32, pid: u32) {
        self.signal_group(epoch, pid, self.settings.drain_signal);
    }

    async fn drain_listeners(&self, epoch: u32, pid: u32) {
        // The core never asks: a generic proxy gets no signal until shutdown, when
        // it gets `--drain-signal` (`Action::Drain`).
        tracing::debug!(
            epoch,
            pid,
            "listener drain not applicable to the generic driver"
        );
    }

    fn counts_connections(&self) -> bool {
        false
    }

    async fn active_connections(&self) -> Option<u64> {
        None
    }

    fn cleanup(&self, epoch: u32) {
        self.notify_sockets().remove(&epoch);
        // Its gauge lane goes back to the pool: an exited epoch contributes nothing.
        self.stats.clear_epoch(epoch);
    }

    fn repair_chain(&self, _chain: u32) -> Result<(), String> {
        Err("the generic driver has no hot-restart chain".into())
    }

    fn release_chain(&self, _chain: u32) {}

    fn stand_in(&self, _chain: u32, _restart_epoch: u32) -> Result<(), String> {
        Err("the generic driver has no hot-restart parent".into())
    }

    fn admin_addr(&self) -> Option<std::net::SocketAddr> {
        None
    }

    async fn rotate(&self) -> Result<Rotated, PreflightError> {
        // The core asks for this only under `baton envoy --cert-rotation sds`.
        Err(PreflightError::new(
            FailureReason::Cert,
            "in-place rotation needs Envoy's SDS (baton envoy --cert-rotation sds)",
        ))
    }
}

/// Names of the listeners none of the processes in group `pgid` holds.
fn missing_listeners(pgid: u32, listeners: &[(String, u64)]) -> Vec<String> {
    let held = group_socket_inodes(pgid);
    listeners
        .iter()
        .filter(|(_, inode)| !held.contains(inode))
        .map(|(name, _)| name.clone())
        .collect()
}

/// Socket inodes held by every process of process group `pgid`.
fn group_socket_inodes(pgid: u32) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return inodes;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the command name: state ppid pgrp ...
        let pgrp = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|p| p.parse::<u32>().ok());
        if pgrp != Some(pgid) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let target = target.to_string_lossy();
                if let Some(inode) = target
                    .strip_prefix("socket:[")
                    .and_then(|t| t.strip_suffix(']'))
                {
                    if let Ok(inode) = inode.parse() {
                        inodes.insert(inode);
                    }
                }
            }
        }
    }
    inodes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_that_holds_the_socket_is_found_and_one_that_does_not_is_reported() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let inode = nix::sys::stat::fstat(listener.as_fd()).unwrap().st_ino;
        let own_group = nix::unistd::getpgrp().as_raw() as u32;
        let listeners = vec![("http".to_string(), inode)];
        assert!(missing_listeners(own_group, &listeners).is_empty());
        assert_eq!(
            missing_listeners(u32::MAX - 1, &listeners),
            vec!["http".to_string()]
        );
    }
}
