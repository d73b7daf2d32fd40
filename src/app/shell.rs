//! The imperative shell around the state machine: it runs each [`Action`] through a
//! [`Proxy`] and turns every outcome (a finished preflight, a child's exit, a fired
//! timer) back into an [`Event`]. It keeps no facts about epochs: those are the
//! core's.
//!
//! **Invariant:** every proxy is spawned from the runtime's one thread (a
//! current-thread runtime on the main thread). Envoy sets `PR_SET_PDEATHSIG`, which
//! fires when the *thread* that forked it exits, so spawning from a pool thread that
//! may retire would kill it.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::AbortHandle;

use super::output::Relay;
use super::reports;
use crate::memory::MemoryCheck;
use crate::proxy::{PreflightError, Prepared, Proxy};
use crate::supervisor::{Action, CertInfo, Event, FailureReason, Launch, Millis, StopSignal};
use crate::sys::spawn::clean_slate;
use crate::sys::{signal_name, Reaper};

/// How long an exited epoch's output may take to end (a child it left behind may
/// hold the pipe) before its exit is reported.
const LAST_WORDS_WAIT: Duration = Duration::from_millis(250);
/// How often the serving epoch's connections are counted while waiting for none.
const CONNECTIONS_POLL: Duration = Duration::from_secs(1);

/// baton's monotonic clock, and the wall-clock time it started at.
#[derive(Debug, Clone, Copy)]
pub(super) struct Clock {
    start: Instant,
    wall: SystemTime,
}

impl Clock {
    pub fn start() -> Self {
        Clock {
            start: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// Milliseconds since baton started: the time of an event.
    pub fn now(&self) -> Millis {
        self.start.elapsed().as_millis() as Millis
    }

    /// When baton started, on the wall clock.
    pub fn started_at(&self) -> SystemTime {
        self.wall
    }
}

/// Runs actions for one proxy.
pub(super) struct Shell<P: Proxy> {
    proxy: Arc<P>,
    reaper: Reaper,
    events: UnboundedSender<Event>,
    /// Readiness watches in progress, aborted when their epoch is gone.
    ready_watches: HashMap<u32, AbortHandle>,
    /// Launches spawned, for their readiness watch.
    launches: HashMap<u32, Launch>,
    /// In-place rotations under way, aborted when abandoned.
    rotations: HashMap<u64, AbortHandle>,
    /// `--memory-check`: `None` when off or when there is no cgroup to read.
    memory: Option<Arc<MemoryCheck>>,
}

impl<P: Proxy> Shell<P> {
    /// A shell that reports outcomes on `events`, and checks memory headroom
    /// with `memory` before every restart.
    pub fn new(
        proxy: P,
        reaper: Reaper,
        events: UnboundedSender<Event>,
        memory: Option<MemoryCheck>,
    ) -> Self {
        Shell {
            proxy: Arc::new(proxy),
            reaper,
            events,
            ready_watches: HashMap::new(),
            launches: HashMap::new(),
            rotations: HashMap::new(),
            memory: memory.map(Arc::new),
        }
    }

    /// Starts the driver's warm-up (in the background) each time it is called.
    pub fn warmer(&self) -> impl Fn() + Send + 'static {
        let proxy = self.proxy.clone();
        move || {
            let proxy = proxy.clone();
            tokio::spawn(async move { proxy.warm().await });
        }
    }

    fn send(&self, event: Event) {
        // The loop only stops receiving once it exits; late events are moot then.
        let _ = self.events.send(event);
    }

    /// Carry out one action. `Some(code)` means: leave with this exit code.
    pub fn execute(&mut self, action: Action) -> Option<i32> {
        match action {
            Action::Preflight {
                epoch,
                serving_pid,
                trusted,
            } => self.preflight(epoch, serving_pid, trusted),
            Action::CheckInputs { epoch } => {
                let digest = self.proxy.inputs_digest();
                self.send(Event::InputsChecked { epoch, digest });
            }
            Action::Warm => self.warmer()(),
            Action::Spawn(launch) => self.spawn(launch),
            Action::WatchReady { epoch, pid } => self.watch_ready(epoch, pid),
            Action::Drain { epoch, pid } => self.proxy.drain(epoch, pid),
            Action::Stop { epoch, pid, signal } => {
                let sig = match signal {
                    StopSignal::Term => Signal::SIGTERM,
                    StopSignal::Kill => Signal::SIGKILL,
                };
                tracing::info!(epoch, pid, signal = %sig, "stopping epoch");
                if let Err(e) = killpg(Pid::from_raw(pid as i32), sig) {
                    tracing::debug!(epoch, pid, error = %e, "signal not delivered");
                }
            }
            Action::DrainListeners { epoch, pid } => {
                tracing::info!(epoch, pid, "draining the serving epoch's listeners");
                let proxy = self.proxy.clone();
                tokio::spawn(async move { proxy.drain_listeners(epoch, pid).await });
            }
            Action::WatchConnections { epoch } => self.watch_connections(epoch),
            Action::Forward { pid, signal } => {
                tracing::info!(pid, signal = %signal_name(signal), "forwarding signal");
                if let Ok(sig) = Signal::try_from(signal) {
                    let _ = kill(Pid::from_raw(pid as i32), sig);
                }
            }
            Action::Schedule { after, event } => {
                let events = self.events.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(after)).await;
                    let _ = events.send(event);
                });
            }
            Action::Cleanup { epoch } => {
                if let Some(watch) = self.ready_watches.remove(&epoch) {
                    watch.abort();
                }
                self.launches.remove(&epoch);
                self.proxy.cleanup(epoch);
            }
            Action::RepairChain { chain } => {
                self.send(match self.proxy.repair_chain(chain) {
                    Ok(()) => Event::ChainRepaired { chain },
                    Err(why) => Event::ChainRepairFailed { chain, why },
                });
            }
            Action::StandIn {
                chain,
                restart_epoch,
            } => {
                if let Err(e) = self.proxy.stand_in(chain, restart_epoch) {
                    tracing::error!(
                        chain,
                        restart_epoch,
                        "cannot stand in for the dead parent; its child may abort: {e}"
                    );
                }
            }
            Action::ReleaseChain { chain } => {
                tracing::debug!(chain, "releasing hot-restart chain");
                self.proxy.release_chain(chain);
            }
            Action::Rotate { rotation, epoch } => self.rotate(rotation, epoch),
            Action::AbandonRotation { rotation } => {
                if let Some(task) = self.rotations.remove(&rotation) {
                    tracing::debug!(rotation, "certificate rotation abandoned");
                    task.abort();
                }
            }
            Action::Report(report) => reports::log(&report),
            Action::Exit { code } => return Some(code),
        }
        None
    }

    fn preflight(&mut self, epoch: u32, serving_pid: Option<u32>, trusted: Vec<String>) {
        let proxy = self.proxy.clone();
        let events = self.events.clone();
        let memory = self.memory.clone().zip(serving_pid);
        tokio::spawn(async move {
            let event = match preflight(&*proxy, epoch, &trusted, memory).await {
                Ok(prepared) => {
                    log_certs(epoch, &prepared.certs);
                    Event::PreflightPassed {
                        epoch,
                        config_digest: prepared.config_digest,
                        certs: prepared.certs,
                    }
                }
                Err(e) => Event::PreflightFailed {
                    epoch,
                    reason: e.reason,
                    message: e.message,
                },
            };
            let _ = events.send(event);
        });
    }

    /// Hand the `--cert` pairs to the serving epoch in place and report the outcome.
    /// The driver keeps its SDS resources consistent at every await point, so an
    /// abandoned rotation may be aborted anywhere.
    fn rotate(&mut self, rotation: u64, epoch: u32) {
        self.rotations.retain(|_, task| !task.is_finished());
        let proxy = self.proxy.clone();
        let events = self.events.clone();
        let task = tokio::spawn(async move {
            let event = match proxy.rotate().await {
                Ok(rotated) => {
                    if rotated.changed {
                        log_certs(epoch, &rotated.certs);
                    }
                    Event::RotationDone {
                        rotation,
                        certs: rotated.certs,
                        changed: rotated.changed,
                    }
                }
                Err(e) => Event::RotationFailed {
                    rotation,
                    reason: e.reason,
                    message: e.message,
                },
            };
            let _ = events.send(event);
        });
        self.rotations.insert(rotation, task.abort_handle());
    }

    fn spawn(&mut self, launch: Launch) {
        let epoch = launch.epoch;
        let mut cmd = match self.proxy.command(&launch) {
            Ok(cmd) => cmd,
            Err(message) => {
                let code = crate::exit::FAILURE;
                return self.send(Event::SpawnFailed {
                    epoch,
                    message,
                    code,
                });
            }
        };
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        clean_slate(&mut cmd);
        let mut spawned = match self.reaper.spawn(&mut cmd) {
            Ok(s) => s,
            Err(e) => {
                let program = cmd.get_program().to_string_lossy().into_owned();
                let message = format!("cannot start {program}: {e}");
                let code = match e.kind() {
                    std::io::ErrorKind::NotFound => crate::exit::NOT_FOUND,
                    std::io::ErrorKind::PermissionDenied => crate::exit::CANNOT_EXECUTE,
                    _ => crate::exit::FAILURE,
                };
                return self.send(Event::SpawnFailed {
                    epoch,
                    message,
                    code,
                });
            }
        };
        let pid = spawned.pid;
        tracing::info!(
            epoch,
            pid,
            restart_epoch = launch.restart_epoch,
            chain = launch.chain,
            "epoch started"
        );
        self.launches.insert(epoch, launch);
        let relay = Relay::start(epoch, pid, &mut spawned.child);
        let events = self.events.clone();
        tokio::spawn(async move {
            if let Ok(status) = spawned.exit.await {
                let last_words = relay.last_words(LAST_WORDS_WAIT).await;
                let _ = events.send(Event::Exited {
                    epoch,
                    status,
                    last_words,
                });
            }
        });
        self.send(Event::Spawned { epoch, pid });
    }

    /// Count the serving epoch's active connections until there are none (drivers
    /// that cannot count never answer: the termination drain period ends it).
    fn watch_connections(&mut self, epoch: u32) {
        let proxy = self.proxy.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            loop {
                match proxy.active_connections().await {
                    Some(0) => {
                        tracing::info!(epoch, "no active connection left");
                        let _ = events.send(Event::ConnectionsDrained);
                        return;
                    }
                    Some(n) => {
                        tracing::debug!(epoch, active = n, "waiting for connections to close")
                    }
                    None if !proxy.counts_connections() => return,
                    None => {}
                }
                tokio::time::sleep(CONNECTIONS_POLL).await;
            }
        });
    }

    fn watch_ready(&mut self, epoch: u32, pid: u32) {
        let Some(launch) = self.launches.get(&epoch).cloned() else {
            return;
        };
        let proxy = self.proxy.clone();
        let events = self.events.clone();
        let task = tokio::spawn(async move {
            let event = match proxy.wait_ready(&launch, pid).await {
                Ok(()) => {
                    // It serves now: a newcomer, not it, is the OOM killer's choice.
                    crate::sys::oom::settle(pid);
                    Event::Ready { epoch }
                }
                Err(message) => Event::NotReady { epoch, message },
            };
            let _ = events.send(event);
        });
        self.ready_watches.insert(epoch, task.abort_handle());
    }
}

/// The driver's preflight, between two memory checks when an epoch serves: before
/// it (the validator is about to run) and after it (the new epoch is about to).
async fn preflight<P: Proxy>(
    proxy: &P,
    epoch: u32,
    trusted: &[String],
    memory: Option<(Arc<MemoryCheck>, u32)>,
) -> Result<Prepared, PreflightError> {
    if let Some((check, serving)) = &memory {
        room(check, *serving, epoch, "the validator and a new epoch").await?;
    }
    let prepared = proxy.preflight(epoch, trusted).await?;
    if let Some((check, serving)) = &memory {
        room(check, *serving, epoch, "a new epoch").await?;
    }
    Ok(prepared)
}

/// One memory check, off the runtime's thread (it walks `/proc`).
async fn room(
    check: &Arc<MemoryCheck>,
    serving: u32,
    epoch: u32,
    what: &'static str,
) -> Result<(), PreflightError> {
    let check = check.clone();
    let verdict = tokio::task::spawn_blocking(move || check.room_for(serving, what)).await;
    match verdict {
        Ok(Ok(Some(f))) => {
            tracing::info!(
                epoch,
                limit_bytes = f.limit,
                working_set_bytes = f.working_set,
                needed_bytes = f.needed(),
                "memory check passed: {what} fits ({f})"
            );
            Ok(())
        }
        Ok(Ok(None)) => Ok(()),
        Ok(Err(no_room)) => {
            let f = no_room.figures;
            tracing::warn!(
                epoch,
                limit_bytes = f.limit,
                working_set_bytes = f.working_set,
                serving_bytes = f.serving,
                needed_bytes = f.needed(),
                "memory check refused the restart"
            );
            Err(PreflightError::new(
                FailureReason::Memory,
                no_room.to_string(),
            ))
        }
        // Only when the runtime shuts down.
        Err(_) => Ok(()),
    }
}

/// One line per `--cert` pair an epoch is about to serve.
fn log_certs(epoch: u32, certs: &[CertInfo]) {
    for cert in certs {
        tracing::info!(
            epoch,
            cert = %cert.path,
            serial = %cert.serial,
            subject = %cert.subject,
            not_after = cert.not_after,
            "certificate passed its checks"
        );
    }
}
