//! The imperative shell around the state machine: it runs each [`Action`] through a
//! [`Proxy`] and turns every outcome (a finished preflight, a child's exit, a fired
//! timer) back into an [`Event`]. It also keeps what the status server shows.
//!
//! **Invariant:** every proxy is spawned from the runtime's one thread (a
//! current-thread runtime on the main thread). Envoy sets `PR_SET_PDEATHSIG`, which
//! fires when the *thread* that forked it exits, so spawning from a pool thread that
//! may retire would kill it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc::UnboundedSender;
use tokio::task::AbortHandle;

use super::metrics::BatonMetrics;
use crate::proxy::Proxy;
use crate::stats::Segment;
use crate::status::{EpochPhase, EpochStatus, Readiness, Snapshot};
use crate::supervisor::{
    Action, EpochState, Event, Launch, Millis, ProcessExit, Report, State, StopSignal, Trigger,
};
use crate::sys::spawn::clean_slate;
use crate::sys::{signal_name, Reaper};

/// How long a restart waits for companion triggers before reading its inputs.
const GATHER: Duration = Duration::from_millis(25);

/// Exited epochs kept for `GET /epochs`.
const HISTORY: usize = 8;

/// What the shell remembers of an epoch it started.
struct Record {
    trigger: Option<Trigger>,
    launch: Option<Launch>,
    requested: Instant,
    spawned: Option<Instant>,
    started_at: Option<SystemTime>,
    ready_at: Option<SystemTime>,
    config_digest: Option<String>,
    ready_watch: Option<AbortHandle>,
}

/// Runs actions for one proxy.
pub struct Shell<P: Proxy> {
    proxy: Arc<P>,
    reaper: Reaper,
    events: UnboundedSender<Event>,
    clock: Instant,
    started_at: SystemTime,
    records: HashMap<u32, Record>,
    history: VecDeque<EpochStatus>,
    metrics: BatonMetrics,
    last_restart_ms: Option<u64>,
}

impl<P: Proxy> Shell<P> {
    /// A shell that reports outcomes on `events` and counts in `metrics`.
    pub fn new(
        proxy: P,
        reaper: Reaper,
        events: UnboundedSender<Event>,
        metrics: BatonMetrics,
    ) -> Self {
        Shell {
            proxy: Arc::new(proxy),
            reaper,
            events,
            clock: Instant::now(),
            started_at: SystemTime::now(),
            records: HashMap::new(),
            history: VecDeque::new(),
            metrics,
            last_restart_ms: None,
        }
    }

    /// The driver's one-time start-up work.
    pub async fn start(&self, stats: &Arc<Segment>) -> Result<(), String> {
        self.proxy.start(&self.reaper, stats).await
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
            Action::DrainForShutdown { epoch, pid } => {
                tracing::info!(epoch, pid, "draining the serving epoch's listeners");
                let proxy = self.proxy.clone();
                tokio::spawn(async move { proxy.drain_for_shutdown(epoch, pid).await });
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
                self.proxy.cleanup(epoch);
            }
            Action::RepairChain { chain } => {
                self.send(match self.proxy.repair_chain(chain) {
                    Ok(()) => Event::ChainRepaired { chain },
                    Err(why) => Event::ChainRepairFailed { chain, why },
                });
            }
            Action::ReleaseChain { chain } => {
                tracing::debug!(chain, "releasing hot-restart chain");
                self.proxy.release_chain(chain);
            }
            Action::Report(report) => self.report(report),
            Action::Exit { code } => return Some(code),
        }
        None
    }

    fn record(&mut self, epoch: u32) -> &mut Record {
        self.records.entry(epoch).or_insert_with(|| Record {
            trigger: None,
            launch: None,
            requested: Instant::now(),
            spawned: None,
            started_at: None,
            ready_at: None,
            config_digest: None,
            ready_watch: None,
        })
    }

    fn preflight(&mut self, epoch: u32) {
        self.record(epoch);
        let proxy = self.proxy.clone();
        let reaper = self.reaper.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            if epoch > 0 {
                // Triggers that arrive this close together (a SIGHUP and a POST
                // /restart from one deploy step) are one restart.
                tokio::time::sleep(GATHER).await;
            }
            let _ = events.send(Event::PreflightBegun { epoch });
            let event = match proxy.preflight(&reaper, epoch).await {
                Ok(prepared) => {
                    for note in &prepared.notes {
                        tracing::info!(epoch, "{note}");
                    }
                    Event::PreflightPassed {
                        epoch,
                        config_digest: prepared.config_digest,
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

    fn spawn(&mut self, launch: Launch) {
        let epoch = launch.epoch;
        let mut cmd = match self.proxy.command(&launch) {
            Ok(cmd) => cmd,
            Err(message) => return self.send(Event::SpawnFailed { epoch, message }),
        };
        cmd.stdin(std::process::Stdio::null());
        clean_slate(&mut cmd);
        let spawned = match self.reaper.spawn(&mut cmd) {
            Ok(s) => s,
            Err(e) => {
                let program = cmd.get_program().to_string_lossy().into_owned();
                let message = format!("cannot start {program}: {e}");
                return self.send(Event::SpawnFailed { epoch, message });
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
        let record = self.record(epoch);
        record.launch = Some(launch);
        record.spawned = Some(Instant::now());
        record.started_at = Some(SystemTime::now());
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

    fn watch_ready(&mut self, epoch: u32, pid: u32) {
        let Some(launch) = self.records.get(&epoch).and_then(|r| r.launch.clone()) else {
            return;
        };
        let proxy = self.proxy.clone();
        let events = self.events.clone();
        let clock = self.clock;
        let task = tokio::spawn(async move {
            let event = match proxy.wait_ready(&launch, pid).await {
                Ok(()) => Event::Ready {
                    epoch,
                    at: clock.elapsed().as_millis() as Millis,
                },
                Err(message) => Event::NotReady { epoch, message },
            };
            let _ = events.send(event);
        });
        self.record(epoch).ready_watch = Some(task.abort_handle());
    }

    fn report(&mut self, report: Report) {
        match report {
            Report::Joined { trigger, epoch } => {
                tracing::info!(%trigger, epoch, "joined the restart that is about to start")
            }
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
            Report::RestartStarted { epoch, trigger } => {
                if epoch > 0 {
                    self.metrics.restarts.inc();
                }
                self.record(epoch).trigger = trigger;
                match trigger {
                    Some(trigger) => tracing::info!(epoch, %trigger, "hot restart requested"),
                    None => tracing::info!(epoch, "starting epoch"),
                }
            }
            Report::Serving {
                epoch,
                pid,
                replaced,
            } => {
                let record = self.record(epoch);
                record.ready_at = Some(SystemTime::now());
                let restart_ms = record.requested.elapsed().as_millis() as u64;
                let startup_ms = record.spawned.map(millis).unwrap_or(0);
                let trigger = record.trigger;
                if epoch > 0 {
                    self.last_restart_ms = Some(restart_ms);
                    self.metrics.restart_duration_ms.set(restart_ms as i64);
                }
                if trigger == Some(Trigger::FileChange) {
                    self.metrics.rotations.inc();
                }
                tracing::info!(
                    epoch,
                    pid,
                    ?replaced,
                    restart_ms,
                    startup_ms,
                    "epoch ready and serving"
                );
            }
            Report::RestartFailed {
                epoch,
                reason,
                message,
            } => {
                self.metrics.failure(reason);
                tracing::error!(
                    epoch,
                    %reason,
                    "new epoch refused; the serving epoch (if any) keeps serving: {message}"
                )
            }
            Report::Crashed {
                epoch,
                status,
                crashes,
                retry_in,
            } => {
                self.metrics.crashes.inc();
                match retry_in {
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
                }
            }
            Report::Exited {
                epoch,
                pid,
                status,
                role,
            } => {
                let ran_ms = self.records.get(&epoch).and_then(|r| r.spawned).map(millis).unwrap_or(0);
                tracing::info!(epoch, pid, %status, role, ran_ms, "epoch exited");
                self.remember_exit(epoch, pid, status);
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

    /// Keep the digest with the record too, for the history once the epoch is gone.
    pub fn note_event(&mut self, event: &Event) {
        if let Event::PreflightPassed {
            epoch,
            config_digest,
        } = event
        {
            self.record(*epoch).config_digest = config_digest.clone();
        }
    }

    fn remember_exit(&mut self, epoch: u32, pid: u32, status: ProcessExit) {
        let record = self.records.get(&epoch);
        let launch = record.and_then(|r| r.launch.clone());
        self.history.push_back(EpochStatus {
            number: epoch,
            pid: Some(pid),
            state: EpochPhase::Exited,
            started_at: record.and_then(|r| r.started_at),
            ready_at: record.and_then(|r| r.ready_at),
            exited_at: Some(SystemTime::now()),
            config_digest: record.and_then(|r| r.config_digest.clone()),
            exit_status: Some(status.to_string()),
            restart_epoch: launch.as_ref().map_or(0, |l| l.restart_epoch),
            chain: launch.as_ref().map_or(0, |l| l.chain),
        });
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
    }

    /// Bring baton's gauges in the stats segment up to date with the state machine.
    pub fn update_gauges(&self, state: &State) {
        let serving = state.serving().map_or(-1, |e| i64::from(e.number));
        self.metrics.epoch.set(serving);
        let running = state.epochs().iter().filter(|e| e.pid.is_some()).count();
        self.metrics.epochs_running.set(running as i64);
    }

    /// What the status server shows, from the state machine and the shell's records.
    pub fn snapshot(&self, state: &State) -> Snapshot {
        let mut epochs: Vec<EpochStatus> = self.history.iter().cloned().collect();
        for view in state.epochs() {
            let record = self.records.get(&view.number);
            epochs.push(EpochStatus {
                number: view.number,
                pid: view.pid,
                state: phase(view.state),
                started_at: record.and_then(|r| r.started_at),
                ready_at: record.and_then(|r| r.ready_at),
                exited_at: None,
                config_digest: view.config_digest.clone(),
                exit_status: None,
                restart_epoch: view.restart_epoch,
                chain: view.chain,
            });
        }
        Snapshot {
            readiness: match state.readiness() {
                Ok(()) => Readiness::Ready,
                Err(reason) => Readiness::not_ready(reason),
            },
            epochs,
            last_error: state.last_error().map(str::to_string),
            restarts_total: self.metrics.restarts.get(),
            restart_failures: self.metrics.failures(),
            crashes_total: self.metrics.crashes.get(),
            rotations_total: self.metrics.rotations.get(),
            last_restart_duration_ms: self.last_restart_ms,
            started_at: self.started_at,
            driver: match self.proxy.kind() {
                crate::supervisor::DriverKind::Envoy => "envoy".into(),
                crate::supervisor::DriverKind::Generic => "generic".into(),
            },
            envoy_admin: self.proxy.admin_addr(),
        }
    }
}

fn phase(state: EpochState) -> EpochPhase {
    match state {
        EpochState::Preparing => EpochPhase::Preparing,
        EpochState::Starting => EpochPhase::Starting,
        EpochState::Serving => EpochPhase::Serving,
        EpochState::Draining => EpochPhase::Draining,
        EpochState::Failing => EpochPhase::Failing,
        EpochState::Stopping => EpochPhase::Stopping,
    }
}

/// Milliseconds since `t`, as a plain number for structured logs.
fn millis(t: Instant) -> u64 {
    t.elapsed().as_millis() as u64
}
