//! The imperative shell around the state machine for the Envoy driver: it runs each
//! [`Action`] and turns every outcome (a finished preflight, a child's exit, a fired
//! timer) back into an [`Event`].
//!
//! **Invariant:** every Envoy is spawned from the runtime's one thread (a
//! current-thread runtime on the main thread). Envoy sets `PR_SET_PDEATHSIG`, which
//! fires when the *thread* that forked it exits, so spawning from a pool thread that
//! may retire would kill it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::AbortHandle;

use crate::proxy::envoy::{Chains, EnvoyDriver};
use crate::supervisor::{Action, Event, Launch, Millis, Report, StopSignal};
use crate::sys::spawn::clean_slate;
use crate::sys::{signal_name, Reaper};

/// What the shell remembers of an epoch it started.
struct Record {
    pid: Option<u32>,
    launch: Option<Launch>,
    requested: Instant,
    spawned: Option<Instant>,
    ready_watch: Option<AbortHandle>,
}

/// Runs actions for the Envoy driver.
pub struct Shell {
    driver: Arc<EnvoyDriver>,
    reaper: Reaper,
    chains: Arc<Mutex<Chains>>,
    events: UnboundedSender<Event>,
    clock: Instant,
    records: HashMap<u32, Record>,
    hot_restart_version: Option<String>,
}

impl Shell {
    /// A shell that reports outcomes on `events`.
    pub fn new(
        driver: EnvoyDriver,
        base_id: Option<u64>,
        reaper: Reaper,
        events: UnboundedSender<Event>,
    ) -> Self {
        let chains = Chains::new(&driver.config_dir, base_id);
        Shell {
            driver: Arc::new(driver),
            reaper,
            chains: Arc::new(Mutex::new(chains)),
            events,
            clock: Instant::now(),
            records: HashMap::new(),
            hot_restart_version: None,
        }
    }

    /// Ask the Envoy binary for its hot restart version once, before any epoch: it
    /// decides whether a stuck chain can be repaired in place.
    pub async fn learn_hot_restart_version(&mut self) {
        match self.driver.hot_restart_version(&self.reaper).await {
            Ok(v) => {
                tracing::debug!(version = %v, "envoy hot restart version");
                self.hot_restart_version = Some(v);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read envoy's hot restart version"),
        }
    }

    fn repair_chain(&mut self, chain: u32) {
        let known = crate::sys::envoy_shm::KNOWN_HOT_RESTART_VERSION;
        let result = match self.hot_restart_version.as_deref() {
            Some(v) if v == known => lock(&self.chains).repair(chain),
            Some(v) => Err(format!("hot restart version {v} is not the known {known}")),
            None => Err("hot restart version unknown".into()),
        };
        self.send(match result {
            Ok(()) => Event::ChainRepaired { chain },
            Err(why) => Event::ChainRepairFailed { chain, why },
        });
    }

    fn now(&self) -> Millis {
        self.clock.elapsed().as_millis() as Millis
    }

    fn send(&self, event: Event) {
        // The loop only stops receiving once it exits; late events are moot then.
        let _ = self.events.send(event);
    }

    fn later(&self, after: Millis, event: Event) {
        let events = self.events.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(after)).await;
            let _ = events.send(event);
        });
    }

    /// Carry out one action. `Some(code)` means: leave with this exit code.
    pub fn execute(&mut self, action: Action) -> Option<i32> {
        match action {
            Action::Preflight { epoch } => self.preflight(epoch),
            Action::Spawn(launch) => self.spawn(launch),
            Action::WatchReady { epoch, pid: _ } => self.watch_ready(epoch),
            Action::Drain { epoch, pid } => {
                // Envoy drains its parent itself; the state machine never asks for this.
                tracing::debug!(epoch, pid, "drain request ignored by the envoy driver");
            }
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
            Action::DrainForShutdown { epoch, pid } => {
                let admin = self.driver.admin();
                tracing::info!(epoch, pid, "draining listeners before shutdown");
                tokio::spawn(async move {
                    if let Err(e) = admin.drain_listeners_gracefully().await {
                        tracing::warn!(epoch, error = %e, "could not drain listeners");
                    }
                });
            }
            Action::Forward { pid, signal } => {
                tracing::info!(pid, signal = %signal_name(signal), "forwarding signal");
                if let Ok(sig) = Signal::try_from(signal) {
                    let _ = kill(Pid::from_raw(pid as i32), sig);
                }
            }
            Action::ScheduleBackoff { generation, after } => {
                self.later(after, Event::BackoffElapsed { generation })
            }
            Action::ScheduleDrainSettled { epoch, after } => {
                self.later(after, Event::DrainSettled { epoch })
            }
            Action::ScheduleDrainDeadline { epoch, after } => {
                self.later(after, Event::DrainDeadline { epoch })
            }
            Action::ScheduleShutdownDrain { after } => {
                self.later(after, Event::ShutdownDrainElapsed)
            }
            Action::ScheduleShutdownKill { after } => {
                self.later(after, Event::ShutdownKillDeadline)
            }
            Action::Cleanup { epoch } => {
                if let Some(record) = self.records.remove(&epoch) {
                    if let Some(watch) = record.ready_watch {
                        watch.abort();
                    }
                }
                self.driver.remove_bootstrap(epoch);
            }
            Action::RepairChain { chain } => self.repair_chain(chain),
            Action::ReleaseChain { chain } => {
                tracing::debug!(chain, "releasing hot-restart chain");
                lock(&self.chains).release(chain);
            }
            Action::Report(report) => self.report(report),
            Action::Exit { code } => return Some(code),
        }
        None
    }

    fn preflight(&mut self, epoch: u32) {
        self.records.insert(
            epoch,
            Record {
                pid: None,
                launch: None,
                requested: Instant::now(),
                spawned: None,
                ready_watch: None,
            },
        );
        let driver = self.driver.clone();
        let reaper = self.reaper.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let event = match driver.preflight(&reaper, epoch).await {
                Ok(_) => Event::PreflightPassed { epoch },
                Err(e) => Event::PreflightFailed {
                    epoch,
                    reason: e.reason,
                    message: e.message,
                },
            };
            let _ = events.send(event);
        });
    }

    fn spawn(&mut self, launch: Launch) {
        let epoch = launch.epoch;
        let base_id = match lock(&self.chains).args_for(launch.chain, launch.restart_epoch) {
            Ok(args) => args,
            Err(message) => return self.send(Event::SpawnFailed { epoch, message }),
        };
        let mut cmd = self.driver.command(&launch, &base_id);
        cmd.stdin(std::process::Stdio::null());
        clean_slate(&mut cmd);
        let spawned = match self.reaper.spawn(&mut cmd) {
            Ok(s) => s,
            Err(e) => {
                let message = format!("cannot start {}: {e}", self.driver.binary.display());
                return self.send(Event::SpawnFailed { epoch, message });
            }
        };
        let pid = spawned.pid;
        tracing::info!(
            epoch,
            pid,
            restart_epoch = launch.restart_epoch,
            chain = launch.chain,
            config = %self.driver.config_path(epoch).display(),
            "epoch started"
        );
        let record = self.records.entry(epoch).or_insert_with(|| Record {
            pid: None,
            launch: None,
            requested: Instant::now(),
            spawned: None,
            ready_watch: None,
        });
        record.pid = Some(pid);
        record.launch = Some(launch);
        record.spawned = Some(Instant::now());
        let events = self.events.clone();
        let clock = self.clock;
        tokio::spawn(async move {
            if let Ok(status) = spawned.exit.await {
                let at = clock.elapsed().as_millis() as Millis;
                let _ = events.send(Event::Exited { epoch, status, at });
            }
        });
        self.send(Event::Spawned {
            epoch,
            pid,
            at: self.now(),
        });
    }

    fn watch_ready(&mut self, epoch: u32) {
        let Some(record) = self.records.get_mut(&epoch) else {
            return;
        };
        let Some(launch) = record.launch.clone() else {
            return;
        };
        let driver = self.driver.clone();
        let events = self.events.clone();
        let clock = self.clock;
        let task = tokio::spawn(async move {
            let event = match driver.wait_ready(epoch, launch.restart_epoch).await {
                Ok(()) => Event::Ready {
                    epoch,
                    at: clock.elapsed().as_millis() as Millis,
                },
                Err(message) => Event::NotReady { epoch, message },
            };
            let _ = events.send(event);
        });
        record.ready_watch = Some(task.abort_handle());
    }

    fn report(&mut self, report: Report) {
        match report {
            Report::Coalesced { trigger } => {
                tracing::info!(%trigger, "restart already in progress; folded into one follow-up")
            }
            Report::Ignored { trigger, why } => {
                tracing::info!(%trigger, "restart request ignored: {why}")
            }
            Report::Deferred { trigger, draining } => tracing::info!(
                %trigger,
                draining,
                "restart waits until the previous epoch has drained (a restart now would cut its drain short)"
            ),
            Report::RestartStarted { epoch, trigger } => match trigger {
                Some(trigger) => tracing::info!(epoch, %trigger, "hot restart requested"),
                None => tracing::info!(epoch, "starting epoch"),
            },
            Report::Serving {
                epoch,
                pid,
                replaced,
            } => {
                let record = self.records.get(&epoch);
                let since_request = record.map(|r| millis(r.requested)).unwrap_or(0);
                let since_spawn = record.and_then(|r| r.spawned).map(millis).unwrap_or(0);
                tracing::info!(
                    epoch,
                    pid,
                    ?replaced,
                    restart_ms = since_request,
                    startup_ms = since_spawn,
                    "epoch ready and serving"
                );
            }
            Report::RestartFailed {
                epoch,
                reason,
                message,
            } => tracing::error!(
                epoch,
                %reason,
                "new epoch refused; the serving epoch (if any) keeps serving: {message}"
            ),
            Report::Crashed {
                epoch,
                status,
                crashes,
                retry_in,
            } => match retry_in {
                Some(ms) => tracing::error!(
                    epoch,
                    %status,
                    crashes,
                    retry_in_ms = ms,
                    "serving epoch crashed; restarting it"
                ),
                None => tracing::error!(
                    epoch,
                    %status,
                    crashes,
                    "serving epoch crashed too often; giving up"
                ),
            },
            Report::Exited {
                epoch,
                pid,
                status,
                role,
            } => {
                let ran_ms = self
                    .records
                    .get(&epoch)
                    .and_then(|r| r.spawned)
                    .map(millis)
                    .unwrap_or(0);
                tracing::info!(epoch, pid, %status, role, ran_ms, "epoch exited");
            }
            Report::ChainRepaired { chain } => tracing::warn!(
                chain,
                "cleared the 'initialising' flag a failed epoch left in Envoy's shared memory; hot restarts continue"
            ),
            Report::ChainRepairFailed { chain, why } => {
                tracing::warn!(chain, "cannot repair the hot-restart chain: {why}")
            }
            Report::ChainAbandoned { chain, why } => tracing::warn!(
                chain,
                "hot-restart chain can no longer be extended ({why}); the next epoch starts a new chain"
            ),
        }
    }
}

/// Milliseconds since `t`, as a plain number for structured logs.
fn millis(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}

fn lock(chains: &Mutex<Chains>) -> std::sync::MutexGuard<'_, Chains> {
    chains.lock().unwrap_or_else(|e| e.into_inner())
}
