//! The core's invariants, checked after every step of generated histories.
//!
//! A [`World`] plays the shell faithfully: it only reports what the actions asked
//! for (a preflight's outcome after `Preflight`, `Spawned` after `Spawn`, readiness
//! after `WatchReady`, a fired timer after `Schedule`, never before its time), but
//! in any order and at any moment; processes die whenever the history says so, and
//! triggers, drains, shutdowns and forwarded signals arrive at random. After every
//! step the invariants of ARCHITECTURE.md are checked; at the end the world settles
//! (every outcome delivered, every timer fired) and the liveness invariants are
//! checked: nothing is left half-started, a follow-up that was asked for ran, and a
//! shutdown ends in `Exit` with no epoch left.
//!
//! `BATON_PROPTEST_CASES` sets the number of histories (default 2,000).

use proptest::prelude::*;

use super::state::Stage;
use super::*;

const CASES_ENV: &str = "BATON_PROPTEST_CASES";

fn cases() -> u32 {
    std::env::var(CASES_ENV)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000)
}

#[derive(Debug, Clone)]
enum Move {
    Trigger(u8),
    Preflight {
        pick: usize,
        pass: bool,
        reason: u8,
    },
    Spawn {
        pick: usize,
        ok: bool,
    },
    Readiness {
        pick: usize,
        ready: bool,
    },
    Exit {
        pick: usize,
        code: i32,
        signal: bool,
    },
    Timer {
        pick: usize,
    },
    /// Answer an input check: the inputs unchanged, changed, or unknown.
    Check {
        pick: usize,
        answer: u8,
    },
    ConnectionsGone,
    Repair {
        ok: bool,
    },
    Drain,
    Shutdown,
    Forward,
    /// The file watcher loses (`false`) or regains (`true`) a watch.
    Watch(bool),
    /// A `--cert` file changed under `--cert-rotation sds`.
    RotationRequest,
    /// An in-place rotation the core asked for ends: served (changed or not), or
    /// refused for a reason.
    RotationOutcome {
        pick: usize,
        ok: bool,
        changed: bool,
        reason: u8,
    },
    Wait(u64),
}

/// A move of a history. `long_waits`: time may jump past every drain period;
/// without, histories stay within companion windows and triggers come often.
fn a_move(long_waits: bool) -> impl Strategy<Value = Move> {
    let (trigger, wait) = if long_waits {
        (3, 0u64..80_000)
    } else {
        (8, 0u64..30)
    };
    prop_oneof![
        trigger => (0u8..4).prop_map(Move::Trigger),
        4 => (any::<usize>(), prop::bool::weighted(0.8), 0u8..5)
            .prop_map(|(pick, pass, reason)| Move::Preflight { pick, pass, reason }),
        4 => (any::<usize>(), prop::bool::weighted(0.9))
            .prop_map(|(pick, ok)| Move::Spawn { pick, ok }),
        4 => (any::<usize>(), prop::bool::weighted(0.8))
            .prop_map(|(pick, ready)| Move::Readiness { pick, ready }),
        3 => (any::<usize>(), 0i32..3, any::<bool>())
            .prop_map(|(pick, code, signal)| Move::Exit { pick, code, signal }),
        4 => any::<usize>().prop_map(|pick| Move::Timer { pick }),
        2 => (any::<usize>(), 0u8..3).prop_map(|(pick, answer)| Move::Check { pick, answer }),
        1 => any::<bool>().prop_map(|ok| Move::Repair { ok }),
        1 => Just(Move::ConnectionsGone),
        1 => Just(Move::Drain),
        1 => Just(Move::Shutdown),
        1 => Just(Move::Forward),
        1 => any::<bool>().prop_map(Move::Watch),
        2 => Just(Move::RotationRequest),
        2 => (any::<usize>(), prop::bool::weighted(0.7), any::<bool>(), 0u8..5)
            .prop_map(|(pick, ok, changed, reason)| Move::RotationOutcome { pick, ok, changed, reason }),
        3 => wait.prop_map(Move::Wait),
    ]
}

fn a_policy() -> impl Strategy<Value = Policy> {
    (
        any::<bool>(),
        0u64..50,
        any::<bool>(),
        0u32..4,
        0usize..4,
        any::<bool>(),
    )
        .prop_map(
            |(envoy, gather, checks_inputs, crash_budget, max_draining, exit_on_zero)| Policy {
                driver: if envoy {
                    DriverKind::Envoy
                } else {
                    DriverKind::Generic
                },
                gather,
                checks_inputs,
                crash_budget,
                backoff: Backoff {
                    base: 1_000,
                    cap: 8_000,
                },
                stable_after: 60_000,
                drain_deadline: 70_000,
                drain_period: 45_000,
                max_draining,
                termination_drain: 5_000,
                exit_on_zero_after: exit_on_zero.then_some(2_000),
                kill_grace: 5_000,
                drain_signal: 10,
            },
        )
}

#[derive(Debug)]
struct Proc {
    epoch: u32,
    pid: u32,
    watching: bool,
    stopped: Option<StopSignal>,
}

/// The shell and the processes, as the history plays them.
struct World {
    s: State,
    now: Millis,
    preflights: Vec<u32>,
    checks: Vec<u32>,
    /// A file trigger was folded into the pending follow-up.
    folded_file: bool,
    spawns: Vec<Launch>,
    procs: Vec<Proc>,
    timers: Vec<(Millis, Event)>,
    repairs: Vec<u32>,
    /// In-place rotations asked for and not abandoned: (rotation, epoch).
    rotations: Vec<(u64, u32)>,
    connection_watches: usize,
    /// Epochs whose preflight wrote their files (as the Envoy driver does before it
    /// reports a pass), until a `Cleanup` removes them.
    files: std::collections::BTreeSet<u32>,
    next_pid: u32,
    exit: Option<i32>,
}

impl World {
    fn new(policy: Policy) -> Self {
        World {
            s: State::new(policy),
            now: 0,
            preflights: Vec::new(),
            checks: Vec::new(),
            folded_file: false,
            spawns: Vec::new(),
            procs: Vec::new(),
            timers: Vec::new(),
            repairs: Vec::new(),
            rotations: Vec::new(),
            connection_watches: 0,
            files: std::collections::BTreeSet::new(),
            next_pid: 1000,
            exit: None,
        }
    }

    fn feed(&mut self, event: Event) -> Result<(), TestCaseError> {
        let before = self.s.clone();
        let actions = step(&mut self.s, self.now, event.clone());
        check_step(&before, &self.s, &event, &actions)?;
        // A follow-up is covered only by a check that found the epoch's own
        // digest, and never when a file trigger (a known change) was folded into it.
        for a in &actions {
            if let Action::Report(Report::Covered { epoch, .. }) = a {
                prop_assert!(!self.folded_file, "a file trigger was covered: {event:?}");
                let theirs = before
                    .epochs()
                    .iter()
                    .find(|e| e.number == *epoch)
                    .and_then(|e| e.config_digest.clone());
                let Event::InputsChecked {
                    epoch: checked,
                    digest,
                } = &event
                else {
                    return Err(TestCaseError::fail(format!("covered by {event:?}")));
                };
                prop_assert_eq!(checked, epoch);
                prop_assert!(
                    digest.is_some() && *digest == theirs,
                    "{event:?} vs {theirs:?}"
                );
            }
        }
        if self.s.pending.is_none() {
            self.folded_file = false;
        } else if event == Event::RestartRequested(Trigger::FileChange) {
            self.folded_file = true;
        }
        for action in actions {
            self.carry_out(action)?;
        }
        check_state(&self.s)
    }

    fn carry_out(&mut self, action: Action) -> Result<(), TestCaseError> {
        prop_assert!(self.exit.is_none(), "{action:?} after Exit");
        match action {
            Action::Preflight {
                epoch, serving_pid, ..
            } => {
                // The memory check compares with the process that serves now.
                prop_assert_eq!(serving_pid, self.s.serving().and_then(|e| e.pid));
                self.preflights.push(epoch);
            }
            Action::Spawn(launch) => self.spawns.push(launch),
            Action::WatchReady { epoch, pid } => {
                let p = self.procs.iter_mut().find(|p| p.pid == pid);
                let p =
                    p.ok_or_else(|| TestCaseError::fail(format!("watch of unknown pid {pid}")))?;
                prop_assert_eq!(p.epoch, epoch);
                p.watching = true;
            }
            Action::Stop { pid, signal, .. } => {
                if let Some(p) = self.procs.iter_mut().find(|p| p.pid == pid) {
                    p.stopped = Some(match (p.stopped, signal) {
                        (Some(StopSignal::Kill), _) => StopSignal::Kill,
                        (_, s) => s,
                    });
                }
            }
            Action::Schedule { after, event } => self.timers.push((self.now + after, event)),
            Action::RepairChain { chain } => self.repairs.push(chain),
            Action::Exit { code } => self.exit = Some(code),
            Action::WatchConnections { .. } => self.connection_watches += 1,
            Action::Cleanup { epoch } => {
                self.files.remove(&epoch);
            }
            Action::Rotate { rotation, epoch } => {
                // Only the serving epoch is rotated, and one rotation at a time.
                prop_assert_eq!(self.s.serving().map(|e| e.number), Some(epoch));
                prop_assert!(
                    self.rotations.is_empty(),
                    "two rotations: {:?}",
                    self.rotations
                );
                self.rotations.push((rotation, epoch));
            }
            Action::AbandonRotation { rotation } => {
                self.rotations.retain(|(r, _)| *r != rotation);
            }
            Action::CheckInputs { epoch } => self.checks.push(epoch),
            Action::Drain { .. }
            | Action::Warm
            | Action::DrainListeners { .. }
            | Action::Forward { .. }
            | Action::ReleaseChain { .. }
            | Action::StandIn { .. }
            | Action::Report(_) => {}
        }
        Ok(())
    }

    fn play(&mut self, m: Move) -> Result<(), TestCaseError> {
        match m {
            Move::Trigger(t) => {
                let trigger = [
                    Trigger::Signal,
                    Trigger::FileChange,
                    Trigger::CertChange,
                    Trigger::Api,
                ][t as usize];
                self.feed(Event::RestartRequested(trigger))
            }
            Move::Preflight { pick, pass, reason } => {
                let Some(epoch) = take(&mut self.preflights, pick) else {
                    return Ok(());
                };
                if pass {
                    self.files.insert(epoch);
                }
                self.feed(if pass {
                    Event::PreflightPassed {
                        epoch,
                        config_digest: Some(format!("digest-{epoch}")),
                        certs: Vec::new(),
                    }
                } else {
                    Event::PreflightFailed {
                        epoch,
                        reason: FailureReason::ALL[reason as usize],
                        message: "generated".into(),
                    }
                })
            }
            Move::Spawn { pick, ok } => {
                let Some(launch) = take(&mut self.spawns, pick) else {
                    return Ok(());
                };
                if !ok {
                    return self.feed(Event::SpawnFailed {
                        epoch: launch.epoch,
                        message: "generated".into(),
                        code: 1,
                    });
                }
                self.next_pid += 1;
                let pid = self.next_pid;
                self.procs.push(Proc {
                    epoch: launch.epoch,
                    pid,
                    watching: false,
                    stopped: None,
                });
                self.feed(Event::Spawned {
                    epoch: launch.epoch,
                    pid,
                })
            }
            Move::Readiness { pick, ready } => {
                let watching: Vec<usize> = (0..self.procs.len())
                    .filter(|&i| self.procs[i].watching)
                    .collect();
                let Some(&i) = watching.get(pick % watching.len().max(1)) else {
                    return Ok(());
                };
                self.procs[i].watching = false;
                let epoch = self.procs[i].epoch;
                self.feed(if ready {
                    Event::Ready { epoch }
                } else {
                    Event::NotReady {
                        epoch,
                        message: "generated".into(),
                    }
                })
            }
            Move::Exit { pick, code, signal } => {
                let status = if signal {
                    ProcessExit::Signal(9)
                } else {
                    ProcessExit::Code(code)
                };
                self.exit_proc(pick, status)
            }
            Move::Timer { pick } => {
                let due: Vec<usize> = (0..self.timers.len())
                    .filter(|&i| self.timers[i].0 <= self.now)
                    .collect();
                let Some(&i) = due.get(pick % due.len().max(1)) else {
                    return Ok(());
                };
                let (_, event) = self.timers.remove(i);
                self.feed(event)
            }
            Move::Check { pick, answer } => {
                let Some(epoch) = take(&mut self.checks, pick) else {
                    return Ok(());
                };
                let digest = match answer {
                    0 => self.digest_of(epoch),
                    1 => Some("changed".into()),
                    _ => None,
                };
                self.feed(Event::InputsChecked { epoch, digest })
            }
            Move::Repair { ok } => {
                let Some(chain) = take(&mut self.repairs, 0) else {
                    return Ok(());
                };
                self.feed(if ok {
                    Event::ChainRepaired { chain }
                } else {
                    Event::ChainRepairFailed {
                        chain,
                        why: "generated".into(),
                    }
                })
            }
            Move::ConnectionsGone => {
                if self.connection_watches == 0 {
                    return Ok(());
                }
                self.connection_watches -= 1;
                self.feed(Event::ConnectionsDrained)
            }
            Move::Drain => self.feed(Event::DrainRequested),
            Move::Shutdown => self.feed(Event::ShutdownRequested),
            Move::Forward => self.feed(Event::Forward { signal: 10 }),
            Move::Watch(restored) => self.feed(if restored {
                Event::WatchRestored
            } else {
                Event::WatchFailed {
                    message: "generated".into(),
                }
            }),
            Move::RotationRequest => self.feed(Event::RotationRequested),
            Move::RotationOutcome {
                pick,
                ok,
                changed,
                reason,
            } => {
                let Some((rotation, _)) = take(&mut self.rotations, pick) else {
                    return Ok(());
                };
                self.feed(rotation_outcome(rotation, ok, changed, reason))
            }
            Move::Wait(ms) => {
                self.now += ms;
                Ok(())
            }
        }
    }

    /// The digest the core knows for `epoch`: the inputs unchanged.
    fn digest_of(&self, epoch: u32) -> Option<String> {
        self.s
            .epochs()
            .iter()
            .find(|e| e.number == epoch)
            .and_then(|e| e.config_digest.clone())
    }

    fn exit_proc(&mut self, pick: usize, status: ProcessExit) -> Result<(), TestCaseError> {
        let Some(p) = take(&mut self.procs, pick) else {
            return Ok(());
        };
        self.feed(Event::Exited {
            epoch: p.epoch,
            status,
            last_words: None,
        })
    }

    /// Deliver every outstanding outcome the friendly way and fire every timer,
    /// until nothing is outstanding. `false` if that did not end.
    fn settle(&mut self) -> Result<bool, TestCaseError> {
        for _ in 0..10_000 {
            if self.exit.is_some() {
                return Ok(true);
            }
            if let Some(epoch) = take(&mut self.preflights, 0) {
                self.files.insert(epoch);
                self.feed(Event::PreflightPassed {
                    epoch,
                    config_digest: None,
                    certs: Vec::new(),
                })?;
            } else if let Some(epoch) = take(&mut self.checks, 0) {
                let digest = self.digest_of(epoch);
                self.feed(Event::InputsChecked { epoch, digest })?;
            } else if !self.spawns.is_empty() {
                self.play(Move::Spawn { pick: 0, ok: true })?;
            } else if let Some(chain) = take(&mut self.repairs, 0) {
                self.feed(Event::ChainRepaired { chain })?;
            } else if let Some((rotation, _)) = take(&mut self.rotations, 0) {
                self.feed(rotation_outcome(rotation, true, true, 0))?;
            } else if self.connection_watches > 0 {
                self.play(Move::ConnectionsGone)?;
            } else if let Some(i) = self.procs.iter().position(|p| p.stopped.is_some()) {
                let status = match self.procs[i].stopped {
                    Some(StopSignal::Kill) => ProcessExit::Signal(9),
                    _ => ProcessExit::Signal(15),
                };
                self.exit_proc(i, status)?;
            } else if let Some(i) = self.procs.iter().position(|p| p.watching) {
                self.play(Move::Readiness {
                    pick: i,
                    ready: true,
                })?;
            } else if let Some(i) = (0..self.timers.len()).min_by_key(|&i| self.timers[i].0) {
                let (due, event) = self.timers.remove(i);
                self.now = self.now.max(due);
                self.feed(event)?;
            } else {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// The outcome of rotation `rotation`: served (its certificate's serial names the
/// rotation) or refused for one of the reasons a rotation can fail with.
fn rotation_outcome(rotation: u64, ok: bool, changed: bool, reason: u8) -> Event {
    if ok {
        Event::RotationDone {
            rotation,
            certs: vec![CertInfo {
                path: "/c/tls.crt".into(),
                subject: "CN=x".into(),
                serial: format!("{rotation:X}"),
                not_before: 0,
                not_after: 1,
            }],
            changed,
        }
    } else {
        Event::RotationFailed {
            rotation,
            reason: [FailureReason::Cert, FailureReason::Config][usize::from(reason) % 2],
            message: "generated".into(),
        }
    }
}

/// Remove and return the element at `pick` (modulo the length), if any.
fn take<T>(items: &mut Vec<T>, pick: usize) -> Option<T> {
    if items.is_empty() {
        return None;
    }
    let i = pick % items.len();
    Some(items.remove(i))
}

/// Invariants of one step: what it may do to the epoch that was serving, and how a
/// new epoch is started.
fn check_step(
    before: &State,
    after: &State,
    event: &Event,
    actions: &[Action],
) -> Result<(), TestCaseError> {
    // A failed new epoch never touches the serving one: only these events may make
    // the serving epoch stop serving, or signal it.
    if let Some(serving) = before.serving() {
        let (s, pid) = (serving.number, serving.pid);
        // Once shutting down, epochs stop newest first: another epoch's exit is what
        // lets the serving one be stopped.
        let allowed = before.shutting_down()
            || match event {
                Event::Ready { epoch } => *epoch != s,
                Event::Exited { epoch, .. } => *epoch == s,
                Event::ShutdownRequested
                | Event::ShutdownDrainElapsed
                | Event::ShutdownKillDeadline
                | Event::MinimumDrainElapsed
                | Event::ConnectionsDrained => true,
                // A drain on request stops nothing: Envoy's listeners drain, a generic
                // proxy gets no signal until shutdown.
                Event::DrainRequested => {
                    for a in actions {
                        let ok = match a {
                            Action::Stop { epoch, .. } | Action::Drain { epoch, .. } => *epoch != s,
                            Action::DrainListeners { .. } => {
                                before.policy.driver == DriverKind::Envoy
                            }
                            _ => true,
                        };
                        prop_assert!(ok, "a drain request led to {:?}", a);
                    }
                    true
                }
                _ => false,
            };
        if !allowed {
            prop_assert_eq!(
                after.serving().map(|e| e.number),
                Some(s),
                "{:?} took epoch {} out of service",
                event,
                s
            );
            for a in actions {
                let hits = match a {
                    Action::Stop { epoch, .. }
                    | Action::Drain { epoch, .. }
                    | Action::DrainListeners { epoch, .. } => *epoch == s,
                    Action::Forward { pid: p, .. } => Some(*p) != pid,
                    _ => false,
                };
                prop_assert!(!hits, "{:?} led to {:?} on serving epoch {}", event, a, s);
            }
        }
    }
    // A refused rotation changes nothing about the serving epoch; a served one gives
    // it exactly the pairs confirmed.
    if let (Event::RotationFailed { .. }, Some(serving)) = (event, before.serving()) {
        prop_assert_eq!(
            after.serving().map(|e| &e.certs),
            Some(&serving.certs),
            "a refused rotation changed the serving epoch's certificates"
        );
    }
    // Once drained on request or shutting down, nothing new starts and no exit is
    // a crash.
    if before.stage != Stage::Running && before.stage != Stage::Idle {
        prop_assert!(
            !actions.iter().any(|a| matches!(
                a,
                Action::Preflight { .. } | Action::Spawn(_) | Action::Rotate { .. }
            )),
            "{:?} started an epoch in {:?}: {:?}",
            event,
            before.stage,
            actions
        );
        prop_assert_eq!(after.counts().crashes, before.counts().crashes);
    }
    let spawns: Vec<&Launch> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Spawn(l) => Some(l),
            _ => None,
        })
        .collect();
    prop_assert!(spawns.len() <= 1, "two spawns in one step: {:?}", actions);
    for launch in spawns {
        // Never two epochs starting at once.
        let others_starting = after
            .epochs()
            .iter()
            .filter(|e| e.number != launch.epoch && e.phase == Phase::Starting)
            .count();
        prop_assert_eq!(
            others_starting,
            0,
            "spawned {:?} beside a starting epoch",
            launch
        );
        prop_assert!(
            before.epochs().iter().all(|e| e.number <= launch.epoch),
            "epoch numbers must grow: {:?}",
            launch
        );
        if after.policy.driver == DriverKind::Envoy {
            // --restart-epoch is exactly (highest running of the chain) + 1, or 0 for
            // a chain no running epoch belongs to.
            let highest = after
                .epochs()
                .iter()
                .filter(|e| e.chain == launch.chain && e.pid.is_some())
                .map(|e| e.restart_epoch)
                .max();
            prop_assert_eq!(
                launch.restart_epoch,
                highest.map_or(0, |h| h + 1),
                "{:?} among {:?}",
                launch,
                after.epochs()
            );
        }
    }
    Ok(())
}

/// Invariants that hold in every state.
fn check_state(s: &State) -> Result<(), TestCaseError> {
    let count = |phases: &[Phase]| {
        s.epochs()
            .iter()
            .filter(|e| phases.contains(&e.phase))
            .count()
    };
    prop_assert!(
        count(&[Phase::Serving]) <= 1,
        "two serving: {:?}",
        s.epochs()
    );
    // At most one restart in flight.
    prop_assert!(
        count(&[Phase::Preparing, Phase::Starting]) <= 1,
        "two restarts in flight: {:?}",
        s.epochs()
    );
    prop_assert!(s.epochs().iter().all(|e| e.phase != Phase::Exited));
    prop_assert!(s.history().count() <= HISTORY);
    if s.readiness().is_ok() {
        prop_assert!(s.serving().is_some());
    }
    let mut numbers: Vec<u32> = s.epochs().iter().map(|e| e.number).collect();
    numbers.dedup();
    prop_assert_eq!(numbers.len(), s.epochs().len(), "duplicate epoch numbers");
    // The restarts by cause add up to the total, and a restart is timed only once it
    // serves, so there are never more durations than restarts.
    let counts = s.counts();
    prop_assert_eq!(
        counts.restarts_by_cause.values().sum::<u64>(),
        counts.restarts
    );
    let durations = &counts.restart_durations;
    prop_assert_eq!(durations.buckets.iter().sum::<u64>(), durations.count);
    prop_assert!(durations.count <= counts.restarts);
    prop_assert!(counts.rotations <= durations.count);
    // A rotation and a restart are never under way together, and a rotation is of
    // the serving epoch.
    if let Some(r) = s.rotation {
        prop_assert!(
            !s.in_flight(),
            "a rotation beside a restart: {:?}",
            s.epochs()
        );
        prop_assert_eq!(s.serving().map(|e| e.number), Some(r.epoch));
    }
    prop_assert!(counts.sds_rotations <= s.rotations_begun);
    Ok(())
}

fn run_history(policy: Policy, moves: Vec<Move>) -> Result<(), TestCaseError> {
    let mut w = World::new(policy);
    w.feed(Event::Start)?;
    for m in moves {
        if w.exit.is_some() {
            break;
        }
        w.play(m)?;
    }
    prop_assert!(w.settle()?, "the world did not settle");
    if w.exit.is_none() {
        // Every spawned epoch is eventually serving or gone, and a follow-up that
        // was asked for has run.
        for e in w.s.epochs() {
            prop_assert!(
                e.phase == Phase::Serving,
                "epoch {} left {:?} once everything settled: {:?}",
                e.number,
                e.phase,
                w.s.epochs()
            );
        }
        prop_assert!(w.s.pending.is_none(), "a follow-up restart never ran");
        if w.s.stage == Stage::Running {
            prop_assert!(
                w.s.rotation_pending.is_none() && w.s.rotation.is_none(),
                "a rotation asked for never ran"
            );
        }
        // No epoch's files outlive it.
        for epoch in &w.files {
            prop_assert!(
                w.s.epochs().iter().any(|e| e.number == *epoch),
                "files of epoch {} left once everything settled: {:?}",
                epoch,
                w.s.epochs()
            );
        }
        // Shutdown always ends.
        w.feed(Event::ShutdownRequested)?;
        prop_assert!(w.settle()?, "shutdown did not settle");
    }
    prop_assert!(
        w.exit.is_some(),
        "no Exit after shutdown: {:?}",
        w.s.epochs()
    );
    prop_assert!(
        w.s.epochs().is_empty(),
        "epochs left at exit: {:?}",
        w.s.epochs()
    );
    prop_assert!(w.procs.is_empty(), "processes left at exit: {:?}", w.procs);
    // Files of a preflight still running at exit are the app's exit sweep's.
    prop_assert!(w.files.is_empty(), "files left at exit: {:?}", w.files);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        max_shrink_iters: 20_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn invariants_hold_through_generated_histories(
        policy in a_policy(),
        moves in prop::collection::vec(a_move(true), 0..80),
    ) {
        run_history(policy, moves)?;
    }

    #[test]
    fn invariants_hold_through_bursts_of_companion_triggers(
        policy in a_policy(),
        moves in prop::collection::vec(a_move(false), 0..80),
    ) {
        run_history(policy, moves)?;
    }
}
