//! One reaper for every child, orphans included.
//!
//! A `waitpid(-1)` reaper and per-child waits (`tokio::process`, `std`'s `wait`)
//! steal each other's statuses. So baton has exactly one: it collects every status on
//! SIGCHLD and hands each to the waiter registered for that pid; statuses of unknown
//! pids (orphans re-parented to us as PID 1 or subreaper) are simply dropped.
//!
//! **Invariant:** a child is spawned and registered under the same lock the reaper
//! holds while it calls `waitpid`, so a child that dies at once can never be reaped
//! before its waiter exists.

use std::collections::HashMap;
use std::io;
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::sync::oneshot;

use crate::supervisor::ProcessExit;

/// Resolves to the child's exit status once the reaper has collected it.
pub type ExitWaiter = oneshot::Receiver<ProcessExit>;

/// Shared handle to the process-wide reaper, reaping on every SIGCHLD from the
/// moment it exists ([`Reaper::start`] is the only way to get one). Cheap to clone.
#[derive(Clone)]
pub struct Reaper {
    waiters: Arc<Mutex<HashMap<i32, oneshot::Sender<ProcessExit>>>>,
}

/// A child that was started through the reaper.
pub struct Spawned {
    /// Its process id (also its process group id when spawned with `process_group(0)`).
    pub pid: u32,
    /// Completes with its exit status.
    pub exit: ExitWaiter,
    /// The `std` handle, for the pipes only: never call its `wait`.
    pub child: std::process::Child,
}

impl Reaper {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<ProcessExit>>> {
        // A panic while holding this lock leaves a plain map behind: still usable.
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start `cmd` and register its waiter atomically with respect to [`Reaper::reap`].
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Spawned> {
        let mut waiters = self.lock();
        let child = cmd.spawn()?;
        let pid = child.id();
        let (tx, rx) = oneshot::channel();
        waiters.insert(pid as i32, tx);
        Ok(Spawned {
            pid,
            exit: rx,
            child,
        })
    }

    /// Collect every status that is ready without blocking; deliver the ones that
    /// have a waiter. Returns how many orphans (pids nobody waits for) were reaped.
    fn reap(&self) -> usize {
        let mut waiters = self.lock();
        let mut orphans = 0;
        loop {
            let (pid, exit) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ProcessExit::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ProcessExit::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid failed");
                    break;
                }
            };
            match waiters.remove(&pid.as_raw()) {
                // The waiter may have lost interest; nothing to do then.
                Some(tx) => drop(tx.send(exit)),
                None => {
                    orphans += 1;
                    tracing::debug!(pid = pid.as_raw(), %exit, "reaped orphan");
                }
            }
        }
        orphans
    }

    /// A reaper reaping on every SIGCHLD until the runtime ends; call it inside a
    /// tokio runtime, before the first spawn, so no SIGCHLD is missed (a missed one
    /// is harmless anyway: the next reap collects everything pending).
    pub fn start() -> io::Result<Reaper> {
        use tokio::signal::unix::{signal, SignalKind};
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Reaper {
            waiters: Arc::default(),
        };
        let reaping = reaper.clone();
        tokio::spawn(async move {
            loop {
                reaping.reap();
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });
        Ok(reaper)
    }
}
