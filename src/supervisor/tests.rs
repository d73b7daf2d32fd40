//! The state machine as a specification: sequences of events and the exact actions
//! they must produce.

use super::*;
use Action as A;
use Event as E;

fn policy(driver: DriverKind) -> Policy {
    Policy {
        driver,
        crash_budget: 2,
        backoff: Backoff {
            base: 1000,
            cap: 8000,
        },
        stable_after: 60_000,
        drain_deadline: 70_000,
        drain_period: 45_000,
        max_draining: 2,
        termination_drain: 5_000,
        kill_grace: 5_000,
    }
}

/// Feed events one by one; return the actions of the last event only.
fn run(state: &mut State, events: Vec<Event>) -> Vec<Action> {
    let mut last = Vec::new();
    for e in events {
        last = step(state, e);
    }
    last
}

fn launch(epoch: u32, chain: u32, restart_epoch: u32) -> Action {
    A::Spawn(Launch {
        epoch,
        chain,
        restart_epoch,
    })
}

fn started(epoch: u32, trigger: Option<Trigger>) -> Action {
    A::Report(Report::RestartStarted { epoch, trigger })
}

fn passed(epoch: u32) -> Event {
    E::PreflightPassed {
        epoch,
        config_digest: None,
    }
}

/// Events that bring epoch `n` from preflight to serving with process id `pid`.
fn bring_up(n: u32, pid: u32, at: Millis) -> Vec<Event> {
    vec![
        passed(n),
        E::Spawned { epoch: n, pid, at },
        E::Ready { epoch: n, at },
    ]
}

/// A supervisor with epoch 0 (pid 100) serving.
fn serving_envoy() -> State {
    let mut s = State::new(policy(DriverKind::Envoy));
    let mut events = vec![E::Start];
    events.extend(bring_up(0, 100, 10));
    run(&mut s, events);
    s
}

fn exited(epoch: u32, code: i32, at: Millis) -> Event {
    E::Exited {
        epoch,
        status: ProcessExit::Code(code),
        at,
    }
}

/// Epoch 0 crashes, epoch 1 comes up and crashes soon after: a backoff is armed.
fn crashed_twice() -> State {
    let mut s = serving_envoy();
    run(&mut s, vec![exited(0, 1, 100)]);
    run(&mut s, bring_up(1, 101, 200));
    run(&mut s, vec![exited(1, 1, 300)]);
    s
}

fn states(s: &State) -> Vec<(u32, EpochState)> {
    s.epochs().iter().map(|e| (e.number, e.state)).collect()
}

#[test]
fn startup_prepares_spawns_watches_and_serves_epoch_zero() {
    let mut s = State::new(policy(DriverKind::Envoy));
    assert_eq!(
        step(&mut s, E::Start),
        vec![started(0, None), A::Preflight { epoch: 0 }]
    );
    assert_eq!(step(&mut s, passed(0)), vec![launch(0, 0, 0)]);
    assert_eq!(
        step(
            &mut s,
            E::Spawned {
                epoch: 0,
                pid: 100,
                at: 1
            }
        ),
        vec![A::WatchReady { epoch: 0, pid: 100 }]
    );
    assert_eq!(
        step(&mut s, E::Ready { epoch: 0, at: 2 }),
        vec![A::Report(Report::Serving {
            epoch: 0,
            pid: 100,
            replaced: vec![]
        })]
    );
    assert_eq!(states(&s), vec![(0, EpochState::Serving)]);
}

#[test]
fn envoy_hot_restart_uses_the_next_restart_epoch_and_lets_envoy_drain_the_parent() {
    let mut s = serving_envoy();
    assert_eq!(
        step(&mut s, E::RestartRequested(Trigger::Signal)),
        vec![started(1, Some(Trigger::Signal)), A::Preflight { epoch: 1 }]
    );
    assert_eq!(step(&mut s, passed(1)), vec![launch(1, 0, 1)]);
    run(
        &mut s,
        vec![E::Spawned {
            epoch: 1,
            pid: 101,
            at: 20,
        }],
    );
    assert_eq!(
        step(&mut s, E::Ready { epoch: 1, at: 30 }),
        vec![
            A::ScheduleDrainSettled {
                epoch: 0,
                after: 45_000
            },
            A::ScheduleDrainDeadline {
                epoch: 0,
                after: 70_000
            },
            A::Report(Report::Serving {
                epoch: 1,
                pid: 101,
                replaced: vec![0]
            }),
        ]
    );
    assert_eq!(
        states(&s),
        vec![(0, EpochState::Draining), (1, EpochState::Serving)]
    );
    // The parent leaves by itself: only bookkeeping follows.
    assert_eq!(
        step(
            &mut s,
            E::Exited {
                epoch: 0,
                status: ProcessExit::Code(0),
                at: 40
            }
        ),
        vec![
            A::Report(Report::Exited {
                epoch: 0,
                pid: 100,
                status: ProcessExit::Code(0),
                role: "draining"
            }),
            A::Cleanup { epoch: 0 },
        ]
    );
}

#[test]
fn restart_epoch_is_one_above_the_highest_running_even_after_parents_exit() {
    let mut s = serving_envoy();
    let mut events = vec![E::RestartRequested(Trigger::Signal)];
    events.extend(bring_up(1, 101, 20));
    events.push(E::Exited {
        epoch: 0,
        status: ProcessExit::Code(0),
        at: 30,
    });
    events.push(E::RestartRequested(Trigger::Signal));
    run(&mut s, events);
    assert_eq!(step(&mut s, passed(2)), vec![launch(2, 0, 2)]);
}

#[test]
fn triggers_before_the_preflight_reads_its_inputs_join_that_restart() {
    let mut s = serving_envoy();
    run(&mut s, vec![E::RestartRequested(Trigger::Signal)]);
    assert_eq!(
        step(&mut s, E::RestartRequested(Trigger::Api)),
        vec![A::Report(Report::Joined {
            trigger: Trigger::Api,
            epoch: 1
        })]
    );
    run(&mut s, vec![E::PreflightBegun { epoch: 1 }]);
    let mut events = bring_up(1, 101, 20);
    events.push(E::DrainSettled { epoch: 0 });
    let after = run(&mut s, events);
    assert!(
        !after.iter().any(|a| matches!(a, A::Preflight { .. })),
        "no follow-up expected: {after:?}"
    );
}

#[test]
fn restart_while_one_is_in_flight_is_coalesced_into_one_follow_up() {
    let mut s = serving_envoy();
    run(
        &mut s,
        vec![
            E::RestartRequested(Trigger::Signal),
            E::PreflightBegun { epoch: 1 },
        ],
    );
    for trigger in [Trigger::Signal, Trigger::Api, Trigger::FileChange] {
        assert_eq!(
            step(&mut s, E::RestartRequested(trigger)),
            vec![A::Report(Report::Coalesced { trigger })]
        );
    }
    run(&mut s, bring_up(1, 101, 20));
    // Exactly one follow-up, with the last trigger, once epoch 1 serves and epoch 0
    // has had its drain period.
    let mut actions = step(&mut s, E::DrainSettled { epoch: 0 });
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
            A::Preflight { epoch: 2 }
        ]
    );
    let mut events = bring_up(2, 102, 30);
    events.push(E::DrainSettled { epoch: 1 });
    let after = run(&mut s, events);
    assert!(
        !after.iter().any(|a| matches!(a, A::Preflight { .. })),
        "{after:?}"
    );
}

#[test]
fn envoy_restart_while_the_old_epoch_drains_waits_for_its_drain_period() {
    let mut s = serving_envoy();
    let mut events = vec![E::RestartRequested(Trigger::Signal)];
    events.extend(bring_up(1, 101, 20));
    run(&mut s, events);
    // Starting epoch 2 now would make Envoy terminate epoch 0 mid-drain.
    assert_eq!(
        step(&mut s, E::RestartRequested(Trigger::FileChange)),
        vec![A::Report(Report::Deferred {
            trigger: Trigger::FileChange,
            draining: 0
        })]
    );
    assert_eq!(
        step(&mut s, E::DrainSettled { epoch: 0 }),
        vec![
            started(2, Some(Trigger::FileChange)),
            A::Preflight { epoch: 2 }
        ]
    );
}

#[test]
fn deferred_restart_starts_when_the_draining_epoch_exits_early() {
    let mut s = serving_envoy();
    let mut events = vec![E::RestartRequested(Trigger::Signal)];
    events.extend(bring_up(1, 101, 20));
    events.push(E::RestartRequested(Trigger::Api));
    run(&mut s, events);
    let actions = step(
        &mut s,
        E::Exited {
            epoch: 0,
            status: ProcessExit::Code(0),
            at: 30,
        },
    );
    assert_eq!(actions.last(), Some(&A::Preflight { epoch: 2 }));
}

#[test]
fn restart_while_the_previous_epoch_initialises_is_deferred_until_it_is_ready() {
    let mut s = State::new(policy(DriverKind::Envoy));
    run(
        &mut s,
        vec![
            E::Start,
            passed(0),
            E::Spawned {
                epoch: 0,
                pid: 100,
                at: 1,
            },
        ],
    );
    assert_eq!(
        step(&mut s, E::RestartRequested(Trigger::Signal)),
        vec![A::Report(Report::Coalesced {
            trigger: Trigger::Signal
        })]
    );
    let actions = step(&mut s, E::Ready { epoch: 0, at: 5 });
    assert_eq!(actions.last(), Some(&A::Preflight { epoch: 1 }));
}

#[test]
fn failed_preflight_keeps_the_old_epoch_serving_and_reports_why() {
    let mut s = serving_envoy();
    run(&mut s, vec![E::RestartRequested(Trigger::Signal)]);
    let actions = step(
        &mut s,
        E::PreflightFailed {
            epoch: 1,
            reason: FailureReason::Config,
            message: "unknown cluster".into(),
        },
    );
    assert_eq!(
        actions,
        vec![A::Report(Report::RestartFailed {
            epoch: 1,
            reason: FailureReason::Config,
            message: "unknown cluster".into()
        })]
    );
    assert_eq!(states(&s), vec![(0, EpochState::Serving)]);
    assert_eq!(s.last_error(), Some("epoch 1: config: unknown cluster"));
    // The next trigger tries again, with the same epoch number.
    assert_eq!(
        step(&mut s, E::RestartRequested(Trigger::Signal)).last(),
        Some(&A::Preflight { epoch: 1 })
    );
}

#[test]
fn new_epoch_that_exits_during_start_keeps_the_old_serving_and_repairs_the_chain() {
    let mut s = serving_envoy();
    run(
        &mut s,
        vec![
            E::RestartRequested(Trigger::Signal),
            passed(1),
            E::Spawned {
                epoch: 1,
                pid: 101,
                at: 20,
            },
        ],
    );
    let actions = step(
        &mut s,
        E::Exited {
            epoch: 1,
            status: ProcessExit::Code(1),
            at: 25,
        },
    );
    assert_eq!(
        actions,
        vec![
            A::Report(Report::Exited {
                epoch: 1,
                pid: 101,
                status: ProcessExit::Code(1),
                role: "starting"
            }),
            A::Cleanup { epoch: 1 },
            A::RepairChain { chain: 0 },
            A::Report(Report::RestartFailed {
                epoch: 1,
                reason: FailureReason::Exited,
                message: "exited before becoming ready (exit code 1)".into()
            }),
        ]
    );
    assert_eq!(states(&s), vec![(0, EpochState::Serving)]);
    // A trigger during the repair waits for it.
    assert_eq!(
        step(&mut s, E::RestartRequested(Trigger::Signal)),
        vec![A::Report(Report::Coalesced {
            trigger: Trigger::Signal
        })]
    );
    let repaired = step(&mut s, E::ChainRepaired { chain: 0 });
    assert_eq!(repaired.last(), Some(&A::Preflight { epoch: 2 }));
    // The chain goes on: restart epoch 1 again (exactly highest running + 1).
    assert_eq!(step(&mut s, passed(2)), vec![launch(2, 0, 1)]);
}

#[test]
fn chain_that_cannot_be_repaired_is_replaced_by_a_new_chain_and_the_old_retired() {
    let mut s = serving_envoy();
    run(
        &mut s,
        vec![
            E::RestartRequested(Trigger::Signal),
            passed(1),
            E::Spawned {
                epoch: 1,
                pid: 101,
                at: 20,
            },
            E::Exited {
                epoch: 1,
                status: ProcessExit::Code(1),
                at: 25,
            },
        ],
    );
    let failed = step(
        &mut s,
        E::ChainRepairFailed {
            chain: 0,
            why: "unknown layout".into(),
        },
    );
    assert!(failed.contains(&A::Report(Report::ChainAbandoned {
        chain: 0,
        why: "its shared memory could not be repaired"
    })));
    run(&mut s, vec![E::RestartRequested(Trigger::Signal)]);
    // Epoch 0 of a new chain, overlapping the old one on SO_REUSEPORT listeners.
    assert_eq!(step(&mut s, passed(2)), vec![launch(2, 1, 0)]);
    run(
        &mut s,
        vec![E::Spawned {
            epoch: 2,
            pid: 102,
            at: 30,
        }],
    );
    // The old chain's epoch is retired after the drain period: nobody else stops it.
    assert_eq!(
        step(&mut s, E::Ready { epoch: 2, at: 40 })[0],
        A::ScheduleDrainDeadline {
            epoch: 0,
            after: 45_000
        }
    );
    assert_eq!(
        step(&mut s, E::DrainDeadline { epoch: 0 }),
        vec![
            A::Stop {
                epoch: 0,
                pid: 100,
                signal: StopSignal::Term
            },
            A::ScheduleDrainDeadline {
                epoch: 0,
                after: 5_000
            },
        ]
    );
    let gone = step(
        &mut s,
        E::Exited {
            epoch: 0,
            status: ProcessExit::Code(0),
            at: 50,
        },
    );
    assert!(gone.contains(&A::ReleaseChain { chain: 0 }), "{gone:?}");
}

#[test]
fn a_restart_waits_while_a_failed_epoch_is_still_being_killed() {
    let mut s = serving_envoy();
    run(
        &mut s,
        vec![
            E::RestartRequested(Trigger::Api),
            passed(1),
            E::Spawned {
                epoch: 1,
                pid: 101,
                at: 20,
            },
            E::NotReady {
                epoch: 1,
                message: "slow".into(),
            },
        ],
    );
    // Epoch 1 still holds restart epoch 1 until it is gone.
    assert_eq!(
        step(&mut s, E::RestartRequested(Trigger::Signal)),
        vec![A::Report(Report::Coalesced {
            trigger: Trigger::Signal
        })]
    );
    let exit = step(
        &mut s,
        E::Exited {
            epoch: 1,
            status: ProcessExit::Signal(9),
            at: 30,
        },
    );
    assert!(exit.contains(&A::RepairChain { chain: 0 }), "{exit:?}");
    assert_eq!(
        step(&mut s, E::ChainRepaired { chain: 0 }).last(),
        Some(&A::Preflight { epoch: 2 })
    );
}

#[test]
fn new_epoch_that_never_becomes_ready_is_killed_and_the_old_keeps_serving() {
    let mut s = serving_envoy();
    run(
        &mut s,
        vec![
            E::RestartRequested(Trigger::Api),
            passed(1),
            E::Spawned {
                epoch: 1,
                pid: 101,
                at: 20,
            },
        ],
    );
    let actions = step(
        &mut s,
        E::NotReady {
            epoch: 1,
            message: "not ready within 60s".into(),
        },
    );
    assert_eq!(
        actions[0],
        A::Stop {
            epoch: 1,
            pid: 101,
            signal: StopSignal::Kill
        }
    );
    assert!(actions.contains(&A::Report(Report::RestartFailed {
        epoch: 1,
        reason: FailureReason::NotReady,
        message: "not ready within 60s".into()
    })));
    assert_eq!(
        states(&s),
        vec![(0, EpochState::Serving), (1, EpochState::Failing)]
    );
    // A late "ready" from the killed epoch changes nothing.
    assert_eq!(step(&mut s, E::Ready { epoch: 1, at: 30 }), vec![]);
    let exit = step(
        &mut s,
        E::Exited {
            epoch: 1,
            status: ProcessExit::Signal(9),
            at: 31,
        },
    );
    assert!(
        !exit
            .iter()
            .any(|a| matches!(a, A::Report(Report::RestartFailed { .. }))),
        "reported twice: {exit:?}"
    );
    assert_eq!(states(&s), vec![(0, EpochState::Serving)]);
}

#[test]
fn serving_epoch_crash_restarts_at_once_then_backs_off_then_exits_with_its_code() {
    let mut s = serving_envoy();
    // First crash: immediate restart in a new chain.
    let first = step(
        &mut s,
        E::Exited {
            epoch: 0,
            status: ProcessExit::Signal(11),
            at: 100,
        },
    );
    assert!(first.contains(&A::Report(Report::Crashed {
        epoch: 0,
        status: ProcessExit::Signal(11),
        crashes: 1,
        retry_in: Some(0)
    })));
    assert_eq!(first.last(), Some(&A::Preflight { epoch: 1 }));
    assert_eq!(step(&mut s, passed(1)), vec![launch(1, 1, 0)]);
    run(
        &mut s,
        vec![
            E::Spawned {
                epoch: 1,
                pid: 101,
                at: 110,
            },
            E::Ready { epoch: 1, at: 120 },
        ],
    );
    // Second crash soon after: back off.
    let second = step(
        &mut s,
        E::Exited {
            epoch: 1,
            status: ProcessExit::Code(3),
            at: 200,
        },
    );
    assert_eq!(
        second.last(),
        Some(&A::ScheduleBackoff {
            generation: 1,
            after: 1000
        })
    );
    assert_eq!(
        step(&mut s, E::BackoffElapsed { generation: 1 }).last(),
        Some(&A::Preflight { epoch: 2 })
    );
    run(
        &mut s,
        vec![
            passed(2),
            E::Spawned {
                epoch: 2,
                pid: 102,
                at: 1300,
            },
            E::Ready { epoch: 2, at: 1310 },
        ],
    );
    // Third crash exceeds the budget of 2: exit with the proxy's code.
    let third = step(
        &mut s,
        E::Exited {
            epoch: 2,
            status: ProcessExit::Code(3),
            at: 1400,
        },
    );
    assert_eq!(third.last(), Some(&A::Exit { code: 3 }));
}

#[test]
fn an_epoch_that_served_long_enough_resets_the_crash_count() {
    let mut s = crashed_twice();
    assert_eq!(s.crashes(), 2);
    run(&mut s, vec![E::BackoffElapsed { generation: 1 }]);
    run(&mut s, bring_up(2, 102, 1_500));
    let late = step(&mut s, exited(2, 1, 100_000));
    assert_eq!(s.crashes(), 1);
    assert_eq!(late.last(), Some(&A::Preflight { epoch: 3 }));
}

#[test]
fn crash_backoff_timer_from_an_earlier_crash_is_ignored() {
    let mut s = crashed_twice();
    assert_eq!(step(&mut s, E::BackoffElapsed { generation: 0 }), vec![]);
}

#[test]
fn bad_config_at_startup_exits_78_without_retrying() {
    let mut s = State::new(policy(DriverKind::Envoy));
    run(&mut s, vec![E::Start]);
    let actions = step(
        &mut s,
        E::PreflightFailed {
            epoch: 0,
            reason: FailureReason::Template,
            message: "undefined variable".into(),
        },
    );
    assert_eq!(actions.last(), Some(&A::Exit { code: 78 }));
}

#[test]
fn shutdown_drains_the_serving_epoch_then_terminates_then_kills() {
    let mut s = serving_envoy();
    assert_eq!(
        step(&mut s, E::ShutdownRequested),
        vec![
            A::DrainForShutdown { epoch: 0, pid: 100 },
            A::ScheduleShutdownDrain { after: 5_000 },
        ]
    );
    assert_eq!(step(&mut s, E::RestartRequested(Trigger::Signal)), vec![]);
    assert_eq!(
        step(&mut s, E::ShutdownDrainElapsed),
        vec![
            A::Stop {
                epoch: 0,
                pid: 100,
                signal: StopSignal::Term
            },
            A::ScheduleShutdownKill { after: 5_000 },
        ]
    );
    assert_eq!(
        step(&mut s, E::ShutdownKillDeadline),
        vec![A::Stop {
            epoch: 0,
            pid: 100,
            signal: StopSignal::Kill
        }]
    );
    let exit = step(
        &mut s,
        E::Exited {
            epoch: 0,
            status: ProcessExit::Signal(15),
            at: 9,
        },
    );
    assert_eq!(exit.last(), Some(&A::Exit { code: 0 }));
}

#[test]
fn a_second_shutdown_request_skips_the_drain() {
    let mut s = serving_envoy();
    run(&mut s, vec![E::ShutdownRequested]);
    assert_eq!(
        step(&mut s, E::ShutdownRequested)[0],
        A::Stop {
            epoch: 0,
            pid: 100,
            signal: StopSignal::Term
        }
    );
}

#[test]
fn shutdown_during_a_restart_kills_the_new_epoch_and_exits_with_the_serving_code() {
    let mut s = serving_envoy();
    run(
        &mut s,
        vec![
            E::RestartRequested(Trigger::Signal),
            passed(1),
            E::Spawned {
                epoch: 1,
                pid: 101,
                at: 20,
            },
        ],
    );
    assert_eq!(
        step(&mut s, E::ShutdownRequested),
        vec![
            A::DrainForShutdown { epoch: 0, pid: 100 },
            A::Stop {
                epoch: 1,
                pid: 101,
                signal: StopSignal::Kill
            },
            A::ScheduleShutdownDrain { after: 5_000 },
        ]
    );
    // The killed newcomer is not a failed restart to retry.
    let a = step(
        &mut s,
        E::Exited {
            epoch: 1,
            status: ProcessExit::Signal(9),
            at: 21,
        },
    );
    assert!(
        !a.iter()
            .any(|a| matches!(a, A::Preflight { .. } | A::Exit { .. })),
        "{a:?}"
    );
    run(&mut s, vec![E::ShutdownDrainElapsed]);
    let a = step(
        &mut s,
        E::Exited {
            epoch: 0,
            status: ProcessExit::Code(0),
            at: 30,
        },
    );
    assert_eq!(a.last(), Some(&A::Exit { code: 0 }));
}

#[test]
fn shutdown_while_a_preflight_runs_discards_it() {
    let mut s = serving_envoy();
    run(
        &mut s,
        vec![E::RestartRequested(Trigger::Signal), E::ShutdownRequested],
    );
    assert_eq!(step(&mut s, passed(1)), vec![]);
    assert_eq!(states(&s), vec![(0, EpochState::Serving)]);
}

#[test]
fn shutdown_between_spawn_and_its_report_still_kills_the_process() {
    let mut s = serving_envoy();
    run(
        &mut s,
        vec![
            E::RestartRequested(Trigger::Signal),
            passed(1),
            E::ShutdownRequested,
        ],
    );
    assert_eq!(
        step(
            &mut s,
            E::Spawned {
                epoch: 1,
                pid: 101,
                at: 20
            }
        ),
        vec![A::Stop {
            epoch: 1,
            pid: 101,
            signal: StopSignal::Kill
        }]
    );
}

#[test]
fn shutdown_with_nothing_running_exits_at_once() {
    let mut s = State::new(policy(DriverKind::Envoy));
    run(&mut s, vec![E::Start]);
    assert_eq!(
        step(&mut s, E::ShutdownRequested),
        vec![A::Exit { code: 0 }]
    );
}

#[test]
fn signals_are_forwarded_to_the_serving_epoch_only() {
    let mut s = serving_envoy();
    run(
        &mut s,
        vec![
            E::RestartRequested(Trigger::Signal),
            passed(1),
            E::Spawned {
                epoch: 1,
                pid: 101,
                at: 5,
            },
        ],
    );
    assert_eq!(
        step(&mut s, E::Forward { signal: 10 }),
        vec![A::Forward {
            pid: 100,
            signal: 10
        }]
    );
}

#[test]
fn generic_driver_drains_the_old_epoch_itself_and_kills_it_at_the_deadline() {
    let mut s = State::new(policy(DriverKind::Generic));
    let mut events = vec![E::Start];
    events.extend(bring_up(0, 100, 10));
    events.push(E::RestartRequested(Trigger::Signal));
    events.extend(bring_up(1, 101, 20));
    let actions = run(&mut s, events);
    assert_eq!(
        actions[..2],
        [
            A::Drain { epoch: 0, pid: 100 },
            A::ScheduleDrainDeadline {
                epoch: 0,
                after: 70_000
            }
        ]
    );
    assert_eq!(
        step(&mut s, E::DrainDeadline { epoch: 0 }),
        vec![A::Stop {
            epoch: 0,
            pid: 100,
            signal: StopSignal::Kill
        }]
    );
}

#[test]
fn readiness_says_why_not_until_an_epoch_serves() {
    let mut s = State::new(policy(DriverKind::Envoy));
    run(&mut s, vec![E::Start, passed(0)]);
    assert_eq!(s.readiness(), Err("starting: epoch 0 not ready yet".into()));
    run(
        &mut s,
        vec![
            E::Spawned {
                epoch: 0,
                pid: 100,
                at: 1,
            },
            E::Ready { epoch: 0, at: 2 },
        ],
    );
    assert_eq!(s.readiness(), Ok(()));
    // A restart in progress does not make baton unready.
    run(&mut s, vec![E::RestartRequested(Trigger::Api), passed(1)]);
    assert_eq!(s.readiness(), Ok(()));
    run(&mut s, vec![E::ShutdownRequested]);
    assert_eq!(s.readiness(), Err("shutting down".into()));
}

#[test]
fn crash_backoff_is_not_ready() {
    let s = crashed_twice();
    assert_eq!(s.readiness(), Err("crash backoff after 2 crash(es)".into()));
}

#[test]
fn drain_request_drains_the_serving_epoch_and_ignores_later_restarts() {
    let mut s = serving_envoy();
    assert_eq!(
        step(&mut s, E::DrainRequested),
        vec![A::DrainForShutdown { epoch: 0, pid: 100 }]
    );
    assert_eq!(s.readiness(), Err("draining (POST /drain)".into()));
    assert_eq!(step(&mut s, E::DrainRequested), vec![]);
    assert_eq!(
        step(&mut s, E::RestartRequested(Trigger::Api)),
        vec![A::Report(Report::Ignored {
            trigger: Trigger::Api,
            why: "the proxy was drained on request"
        })]
    );
}

#[test]
fn generic_driver_kills_the_oldest_drainer_beyond_the_cap() {
    let mut s = State::new(policy(DriverKind::Generic));
    let mut events = vec![E::Start];
    events.extend(bring_up(0, 100, 10));
    for n in 1..=2 {
        events.push(E::RestartRequested(Trigger::Signal));
        events.extend(bring_up(n, 100 + n, 10 + u64::from(n)));
    }
    run(&mut s, events);
    assert_eq!(
        states(&s),
        vec![
            (0, EpochState::Draining),
            (1, EpochState::Draining),
            (2, EpochState::Serving)
        ]
    );
    run(
        &mut s,
        vec![
            E::RestartRequested(Trigger::Signal),
            passed(3),
            E::Spawned {
                epoch: 3,
                pid: 103,
                at: 20,
            },
        ],
    );
    let actions = step(&mut s, E::Ready { epoch: 3, at: 21 });
    assert!(
        actions.contains(&A::Stop {
            epoch: 0,
            pid: 100,
            signal: StopSignal::Kill
        }),
        "{actions:?}"
    );
    assert_eq!(s.epochs()[0].state, EpochState::Stopping);
}
