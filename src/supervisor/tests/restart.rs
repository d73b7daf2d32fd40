//! Restarts: from trigger to a new serving epoch, coalescing, and new epochs that
//! fail while the old one keeps serving.

use super::*;

#[test]
fn startup_prepares_spawns_watches_and_serves_epoch_zero() {
    let mut sim = Sim::new(policy(DriverKind::Envoy));
    assert_eq!(
        sim.step(E::Start),
        vec![started(0, None), preflight(0, None)]
    );
    assert_eq!(sim.step(passed(0)), vec![launch(0, 0, 0)]);
    assert_eq!(
        sim.at(1, E::Spawned { epoch: 0, pid: 100 }),
        vec![A::WatchReady { epoch: 0, pid: 100 }]
    );
    assert_eq!(
        sim.at(3, E::Ready { epoch: 0 }),
        vec![A::Report(Report::Serving {
            epoch: 0,
            pid: 100,
            replaced: vec![],
            trigger: None,
            restart_ms: 3,
            startup_ms: 2,
        })]
    );
    assert_eq!(sim.phases(), vec![(0, Phase::Serving)]);
}

#[test]
fn envoy_hot_restart_uses_the_next_restart_epoch_and_lets_envoy_drain_the_parent() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    assert_eq!(
        sim.at(20, E::RestartRequested(Trigger::Signal)),
        vec![started(1, Some(Trigger::Signal)), preflight(1, Some(100))]
    );
    assert_eq!(sim.step(passed(1)), vec![launch(1, 0, 1)]);
    sim.at(25, E::Spawned { epoch: 1, pid: 101 });
    assert_eq!(
        sim.at(30, E::Ready { epoch: 1 }),
        vec![
            schedule(45_000, E::DrainSettled { epoch: 0 }),
            schedule(70_000, E::DrainDeadline { epoch: 0 }),
            A::Report(Report::Serving {
                epoch: 1,
                pid: 101,
                replaced: vec![0],
                trigger: Some(Trigger::Signal),
                restart_ms: 10,
                startup_ms: 5,
            }),
        ]
    );
    assert_eq!(
        sim.phases(),
        vec![(0, Phase::Draining), (1, Phase::Serving)]
    );
    // The parent leaves by itself: only bookkeeping follows.
    assert_eq!(
        sim.at(40, exited(0, 0)),
        vec![
            A::Report(Report::Exited {
                epoch: 0,
                pid: 100,
                status: ProcessExit::Code(0),
                role: Phase::Draining,
                ran_ms: 30,
            }),
            A::Cleanup { epoch: 0 },
        ]
    );
    let gone: Vec<_> = sim
        .s
        .history()
        .map(|e| (e.number, e.phase, e.exited_at))
        .collect();
    assert_eq!(gone, vec![(0, Phase::Exited, Some(40))]);
    assert_eq!(sim.s.counts().restarts, 1);
    assert_eq!(sim.s.counts().restarts_of(RestartCause::Signal), 1);
    assert_eq!(sim.s.counts().last_restart_ms, Some(10));
    assert_eq!(sim.s.counts().restart_durations.count, 1);
    assert_eq!(sim.s.counts().restart_durations.sum_ms, 10);
}

#[test]
fn cert_rotation_is_a_cert_restart_and_a_rotation_and_its_epoch_keeps_the_pair_checked() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.at(20, E::RestartRequested(Trigger::CertChange));
    let pair = CertInfo {
        path: "/certs/tls.crt".into(),
        subject: "CN=example.com".into(),
        serial: "1A".into(),
        not_before: 1_700_000_000,
        not_after: 1_800_000_000,
    };
    sim.step(E::PreflightPassed {
        epoch: 1,
        config_digest: None,
        certs: vec![pair.clone()],
    });
    sim.at(30, E::Spawned { epoch: 1, pid: 101 });
    sim.at(30, E::Ready { epoch: 1 });
    let counts = sim.s.counts();
    assert_eq!(counts.restarts_of(RestartCause::Cert), 1);
    assert_eq!(counts.restarts_of(RestartCause::File), 0);
    assert_eq!(counts.rotations, 1);
    assert_eq!(sim.s.serving().map(|e| e.certs.clone()), Some(vec![pair]));
}

#[test]
fn restart_epoch_is_one_above_the_highest_running_even_after_parents_exit() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.step(E::RestartRequested(Trigger::Signal));
    sim.bring_up(1, 101, 20);
    sim.run(vec![exited(0, 0), E::RestartRequested(Trigger::Signal)]);
    assert_eq!(sim.step(passed(2)), vec![launch(2, 0, 2)]);
}

#[test]
fn triggers_within_the_gather_window_join_the_restart_they_find() {
    let mut sim = Sim::new(Policy {
        gather: 25,
        ..policy(DriverKind::Envoy)
    });
    sim.step(E::Start);
    sim.bring_up(0, 100, 10);
    assert_eq!(
        sim.at(100, E::RestartRequested(Trigger::Signal)),
        vec![
            started(1, Some(Trigger::Signal)),
            schedule(25, E::GatherElapsed { epoch: 1 }),
        ]
    );
    assert_eq!(
        sim.at(110, E::RestartRequested(Trigger::Api)),
        vec![A::Report(Report::Joined {
            trigger: Trigger::Api,
            epoch: 1
        })]
    );
    assert_eq!(
        sim.at(125, E::GatherElapsed { epoch: 1 }),
        vec![preflight(1, Some(100))]
    );
    // From now on the inputs are read: a trigger needs a follow-up.
    assert_eq!(
        sim.step(E::RestartRequested(Trigger::Api)),
        vec![
            A::Warm,
            A::Report(Report::Coalesced {
                trigger: Trigger::Api
            })
        ]
    );
    // The first epoch and crash recoveries do not wait.
    let mut fresh = Sim::new(Policy {
        gather: 25,
        ..policy(DriverKind::Envoy)
    });
    assert_eq!(fresh.step(E::Start).last(), Some(&preflight(0, None)));
}

#[test]
fn a_stale_gather_timer_does_nothing() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    assert_eq!(sim.step(E::GatherElapsed { epoch: 0 }), vec![]);
    assert_eq!(sim.step(E::GatherElapsed { epoch: 7 }), vec![]);
}

#[test]
fn restart_while_one_is_in_flight_is_coalesced_into_one_follow_up() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.at(100, E::RestartRequested(Trigger::Signal));
    for (at, trigger) in [
        (110, Trigger::Signal),
        (120, Trigger::Api),
        (130, Trigger::FileChange),
    ] {
        assert_eq!(
            sim.at(at, E::RestartRequested(trigger)),
            vec![A::Warm, A::Report(Report::Coalesced { trigger })]
        );
    }
    sim.bring_up(1, 101, 200);
    // Exactly one follow-up, with the last trigger, once epoch 1 serves and epoch 0
    // has had its drain period.
    let mut actions = sim.at(300, E::DrainSettled { epoch: 0 });
    actions.retain(|a| {
        matches!(
            a,
            A::Preflight { .. } | A::Report(Report::RestartStarted { .. })
        )
    });
    assert_eq!(
        actions,
        vec![
            started(2, Some(Trigger::FileChange)),
            preflight(2, Some(101))
        ]
    );
    // Its duration counts from the first trigger it answers.
    let ready = sim.bring_up(2, 102, 400);
    assert!(ready.contains(&A::Report(Report::Serving {
        epoch: 2,
        pid: 102,
        replaced: vec![1],
        trigger: Some(Trigger::FileChange),
        restart_ms: 290,
        startup_ms: 0,
    })));
    let after = sim.step(E::DrainSettled { epoch: 1 });
    assert!(!has_preflight(&after), "{after:?}");
    assert_eq!(sim.s.counts().rotations, 1);
}

#[test]
fn envoy_restart_while_the_old_epoch_drains_waits_for_its_drain_period() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.step(E::RestartRequested(Trigger::Signal));
    sim.bring_up(1, 101, 20);
    // Starting epoch 2 now would make Envoy terminate epoch 0 mid-drain.
    assert_eq!(
        sim.step(E::RestartRequested(Trigger::FileChange)),
        vec![
            A::Warm,
            A::Report(Report::Deferred {
                trigger: Trigger::FileChange,
                draining: 0
            })
        ]
    );
    assert_eq!(
        sim.step(E::DrainSettled { epoch: 0 }),
        vec![
            started(2, Some(Trigger::FileChange)),
            preflight(2, Some(101))
        ]
    );
}

#[test]
fn deferred_restart_starts_when_the_draining_epoch_exits_early() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.step(E::RestartRequested(Trigger::Signal));
    sim.bring_up(1, 101, 20);
    sim.step(E::RestartRequested(Trigger::Api));
    let actions = sim.at(30, exited(0, 0));
    assert_eq!(actions.last(), Some(&preflight(2, Some(101))));
}

#[test]
fn restart_while_the_previous_epoch_initialises_is_deferred_until_it_is_ready() {
    let mut sim = Sim::new(policy(DriverKind::Envoy));
    sim.run(vec![E::Start, passed(0), E::Spawned { epoch: 0, pid: 100 }]);
    assert_eq!(
        sim.step(E::RestartRequested(Trigger::Signal)),
        vec![
            A::Warm,
            A::Report(Report::Coalesced {
                trigger: Trigger::Signal
            })
        ]
    );
    let actions = sim.at(5, E::Ready { epoch: 0 });
    assert_eq!(actions.last(), Some(&preflight(1, Some(100))));
}

#[test]
fn failed_preflight_keeps_the_old_epoch_serving_and_reports_why() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.step(E::RestartRequested(Trigger::Signal));
    let actions = sim.step(E::PreflightFailed {
        epoch: 1,
        reason: FailureReason::Config,
        message: "unknown cluster".into(),
    });
    assert_eq!(
        actions,
        vec![
            A::Cleanup { epoch: 1 },
            epoch_refused(1, FailureReason::Config, "unknown cluster")
        ]
    );
    assert_eq!(sim.phases(), vec![(0, Phase::Serving)]);
    assert_eq!(sim.s.last_error(), Some("epoch 1: config: unknown cluster"));
    assert_eq!(sim.s.counts().failures_of(FailureReason::Config), 1);
    // The next trigger tries again, with the same epoch number.
    assert_eq!(
        sim.step(E::RestartRequested(Trigger::Signal)).last(),
        Some(&preflight(1, Some(100)))
    );
}

#[test]
fn new_epoch_that_never_becomes_ready_is_killed_and_the_old_keeps_serving() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.run(vec![
        E::RestartRequested(Trigger::Api),
        passed(1),
        E::Spawned { epoch: 1, pid: 101 },
    ]);
    let actions = sim.step(E::NotReady {
        epoch: 1,
        message: "not ready within 60s".into(),
    });
    assert_eq!(actions[0], stop(1, 101, StopSignal::Kill));
    assert!(actions.contains(&epoch_refused(
        1,
        FailureReason::NotReady,
        "not ready within 60s"
    )));
    assert_eq!(sim.phases(), vec![(0, Phase::Serving), (1, Phase::Failing)]);
    // A late "ready" from the killed epoch changes nothing.
    assert_eq!(sim.step(E::Ready { epoch: 1 }), vec![]);
    let exit = sim.step(killed(1, 9));
    assert!(
        !exit
            .iter()
            .any(|a| matches!(a, A::Report(Report::RestartFailed { .. }))),
        "reported twice: {exit:?}"
    );
    assert_eq!(sim.phases(), vec![(0, Phase::Serving)]);
}

#[test]
fn spawn_failure_of_a_new_epoch_keeps_the_old_serving_and_removes_its_files() {
    let mut sim = Sim::serving(DriverKind::Generic);
    sim.run(vec![E::RestartRequested(Trigger::Api), passed(1)]);
    let actions = sim.step(E::SpawnFailed {
        epoch: 1,
        message: "no such file".into(),
        code: 127,
    });
    assert_eq!(
        actions,
        vec![
            A::Cleanup { epoch: 1 },
            epoch_refused(1, FailureReason::Spawn, "no such file")
        ]
    );
    assert_eq!(sim.phases(), vec![(0, Phase::Serving)]);
}

#[test]
fn signals_are_forwarded_to_the_serving_epoch_only() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.run(vec![
        E::RestartRequested(Trigger::Signal),
        passed(1),
        E::Spawned { epoch: 1, pid: 101 },
    ]);
    assert_eq!(
        sim.step(E::Forward { signal: 10 }),
        vec![A::Forward {
            pid: 100,
            signal: 10
        }]
    );
}

#[test]
fn generic_driver_drains_the_old_epoch_itself_and_kills_it_at_the_deadline() {
    let mut sim = Sim::serving(DriverKind::Generic);
    sim.step(E::RestartRequested(Trigger::Signal));
    let actions = sim.bring_up(1, 101, 20);
    assert_eq!(
        actions[..2],
        [
            A::Drain { epoch: 0, pid: 100 },
            schedule(70_000, E::DrainDeadline { epoch: 0 }),
        ]
    );
    assert_eq!(
        sim.step(E::DrainDeadline { epoch: 0 }),
        vec![stop(0, 100, StopSignal::Kill)]
    );
}

#[test]
fn generic_driver_kills_the_oldest_drainer_beyond_the_cap() {
    let mut sim = Sim::serving(DriverKind::Generic);
    for n in 1..=2 {
        sim.step(E::RestartRequested(Trigger::Signal));
        sim.bring_up(n, 100 + n, 10 + u64::from(n));
    }
    assert_eq!(
        sim.phases(),
        vec![
            (0, Phase::Draining),
            (1, Phase::Draining),
            (2, Phase::Serving)
        ]
    );
    sim.run(vec![
        E::RestartRequested(Trigger::Signal),
        passed(3),
        E::Spawned { epoch: 3, pid: 103 },
    ]);
    let actions = sim.step(E::Ready { epoch: 3 });
    assert!(
        actions.contains(&stop(0, 100, StopSignal::Kill)),
        "{actions:?}"
    );
    assert_eq!(sim.s.epochs()[0].phase, Phase::Stopping);
}

#[test]
fn readiness_says_why_not_until_an_epoch_serves() {
    let mut sim = Sim::new(policy(DriverKind::Envoy));
    assert_eq!(sim.s.readiness(), Err("starting: no epoch yet".into()));
    sim.run(vec![E::Start, passed(0)]);
    assert_eq!(
        sim.s.readiness(),
        Err("starting: epoch 0 not ready yet".into())
    );
    sim.run(vec![
        E::Spawned { epoch: 0, pid: 100 },
        E::Ready { epoch: 0 },
    ]);
    assert_eq!(sim.s.readiness(), Ok(()));
    // A restart in progress does not make baton unready.
    sim.run(vec![E::RestartRequested(Trigger::Api), passed(1)]);
    assert_eq!(sim.s.readiness(), Ok(()));
    sim.step(E::ShutdownRequested);
    assert_eq!(sim.s.readiness(), Err("shutting down".into()));
}

#[test]
fn history_keeps_the_last_exited_epochs_only() {
    let mut sim = Sim::serving(DriverKind::Generic);
    for n in 1..=(HISTORY as u32 + 3) {
        sim.step(E::RestartRequested(Trigger::Signal));
        sim.bring_up(n, 100 + n, 10 * u64::from(n));
        sim.step(exited(n - 1, 0));
    }
    let numbers: Vec<u32> = sim.s.history().map(|e| e.number).collect();
    assert_eq!(numbers.len(), HISTORY);
    assert_eq!(numbers.last(), Some(&(HISTORY as u32 + 2)));
    assert!(sim
        .s
        .history()
        .all(|e| e.phase == Phase::Exited && e.exit.is_some()));
}

#[test]
fn a_configuration_that_served_is_trusted_by_later_preflights() {
    let mut sim = Sim::new(policy(DriverKind::Envoy));
    sim.step(E::Start);
    sim.step(E::PreflightPassed {
        epoch: 0,
        config_digest: Some("abc".into()),
        certs: vec![],
    });
    // Not yet: it has not served.
    sim.step(E::Spawned { epoch: 0, pid: 100 });
    sim.step(E::Ready { epoch: 0 });
    assert_eq!(
        sim.step(E::RestartRequested(Trigger::Signal)),
        vec![
            started(1, Some(Trigger::Signal)),
            A::Preflight {
                epoch: 1,
                serving_pid: Some(100),
                trusted: vec!["abc".into()]
            }
        ]
    );
    // A configuration that failed to start is never trusted.
    sim.step(E::PreflightPassed {
        epoch: 1,
        config_digest: Some("bad".into()),
        certs: vec![],
    });
    sim.step(E::Spawned { epoch: 1, pid: 101 });
    sim.step(exited(1, 1));
    sim.step(E::RestartRequested(Trigger::Signal));
    let retry = sim.step(E::ChainRepaired { chain: 0 });
    assert!(
        retry.contains(&A::Preflight {
            epoch: 2,
            serving_pid: Some(100),
            trusted: vec!["abc".into()]
        }),
        "{retry:?}"
    );
}

#[test]
fn file_triggers_were_debounced_already_and_skip_the_gather_window() {
    let mut sim = Sim::new(Policy {
        gather: 25,
        ..policy(DriverKind::Envoy)
    });
    sim.step(E::Start);
    sim.bring_up(0, 100, 10);
    assert_eq!(
        sim.step(E::RestartRequested(Trigger::FileChange)),
        vec![
            started(1, Some(Trigger::FileChange)),
            preflight(1, Some(100))
        ]
    );
}
