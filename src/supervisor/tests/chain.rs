//! Envoy's hot-restart chains: repair in place after a failed epoch, or a new chain.

use super::*;

#[test]
fn new_epoch_that_exits_during_start_keeps_the_old_serving_and_repairs_the_chain() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.run(vec![E::RestartRequested(Trigger::Signal), passed(1)]);
    sim.at(20, E::Spawned { epoch: 1, pid: 101 });
    let actions = sim.at(25, exited(1, 1));
    assert_eq!(
        actions,
        vec![
            A::Report(Report::Exited {
                epoch: 1,
                pid: 101,
                status: ProcessExit::Code(1),
                role: Phase::Starting,
                ran_ms: 5,
            }),
            A::Cleanup { epoch: 1 },
            A::RepairChain { chain: 0 },
            epoch_refused(
                1,
                FailureReason::Exited,
                "exited before becoming ready (exit code 1)"
            ),
        ]
    );
    assert_eq!(sim.phases(), vec![(0, Phase::Serving)]);
    // A trigger during the repair waits for it.
    assert_eq!(
        sim.step(E::RestartRequested(Trigger::Signal)),
        vec![
            A::Warm,
            A::Report(Report::Coalesced {
                trigger: Trigger::Signal
            })
        ]
    );
    let repaired = sim.step(E::ChainRepaired { chain: 0 });
    assert_eq!(repaired.last(), Some(&preflight(2, Some(100))));
    // The chain goes on: restart epoch 1 again (exactly highest running + 1).
    assert_eq!(sim.step(passed(2)), vec![launch(2, 0, 1)]);
}

#[test]
fn chain_that_cannot_be_repaired_is_replaced_by_a_new_chain_and_the_old_retired() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.run(vec![
        E::RestartRequested(Trigger::Signal),
        passed(1),
        E::Spawned { epoch: 1, pid: 101 },
        exited(1, 1),
    ]);
    let failed = sim.step(E::ChainRepairFailed {
        chain: 0,
        why: "unknown layout".into(),
    });
    assert!(failed.contains(&A::Report(Report::ChainAbandoned {
        chain: 0,
        why: "its shared memory could not be repaired"
    })));
    sim.step(E::RestartRequested(Trigger::Signal));
    // Epoch 0 of a new chain, overlapping the old one on SO_REUSEPORT listeners.
    assert_eq!(sim.step(passed(2)), vec![launch(2, 1, 0)]);
    sim.step(E::Spawned { epoch: 2, pid: 102 });
    // The old chain's epoch is retired after the drain period: nobody else stops it.
    assert_eq!(
        sim.step(E::Ready { epoch: 2 })[0],
        schedule(45_000, E::DrainDeadline { epoch: 0 })
    );
    assert_eq!(
        sim.step(E::DrainDeadline { epoch: 0 }),
        vec![
            stop(0, 100, StopSignal::Term),
            schedule(5_000, E::DrainDeadline { epoch: 0 }),
        ]
    );
    let gone = sim.step(exited(0, 0));
    assert!(gone.contains(&A::ReleaseChain { chain: 0 }), "{gone:?}");
}

#[test]
fn a_restart_waits_while_a_failed_epoch_is_still_being_killed() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.run(vec![
        E::RestartRequested(Trigger::Api),
        passed(1),
        E::Spawned { epoch: 1, pid: 101 },
        E::NotReady {
            epoch: 1,
            message: "slow".into(),
        },
    ]);
    // Epoch 1 still holds restart epoch 1 until it is gone.
    assert_eq!(
        sim.step(E::RestartRequested(Trigger::Signal)),
        vec![
            A::Warm,
            A::Report(Report::Coalesced {
                trigger: Trigger::Signal
            })
        ]
    );
    let exit = sim.step(killed(1, 9));
    assert!(exit.contains(&A::RepairChain { chain: 0 }), "{exit:?}");
    assert_eq!(
        sim.step(E::ChainRepaired { chain: 0 }).last(),
        Some(&preflight(2, Some(100)))
    );
}

#[test]
fn a_repair_answer_for_another_chain_or_none_in_progress_is_ignored() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    assert_eq!(sim.step(E::ChainRepaired { chain: 0 }), vec![]);
    assert_eq!(
        sim.step(E::ChainRepairFailed {
            chain: 3,
            why: "x".into()
        }),
        vec![]
    );
    sim.step(E::RestartRequested(Trigger::Signal));
    assert_eq!(sim.step(passed(1)), vec![launch(1, 0, 1)]);
}

#[test]
fn a_parent_terminated_by_its_starting_child_is_a_handover_not_a_crash() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.run(vec![
        E::RestartRequested(Trigger::Signal),
        passed(1),
        E::Spawned { epoch: 1, pid: 101 },
    ]);
    // --parent-shutdown-duration ran out before baton saw epoch 1 ready.
    let gone = sim.step(exited(0, 0));
    assert!(
        gone.contains(&A::Report(Report::HandedOverEarly { epoch: 0, child: 1 })),
        "{gone:?}"
    );
    assert!(!has_preflight(&gone), "no recovery restart: {gone:?}");
    assert_eq!(sim.s.counts().crashes, 0);
    let ready = sim.step(E::Ready { epoch: 1 });
    assert!(
        ready.contains(&A::Report(Report::Serving {
            epoch: 1,
            pid: 101,
            replaced: vec![],
            trigger: Some(Trigger::Signal),
            restart_ms: 0,
            startup_ms: 0,
        })),
        "{ready:?}"
    );
    // A crash of the parent (not exit 0) stays a crash.
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.run(vec![
        E::RestartRequested(Trigger::Signal),
        passed(1),
        E::Spawned { epoch: 1, pid: 101 },
    ]);
    sim.step(killed(0, 11));
    assert_eq!(sim.s.counts().crashes, 1);
}

#[test]
fn a_killed_draining_parent_is_stood_in_for_and_nothing_else_happens() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.step(E::RestartRequested(Trigger::Signal));
    sim.bring_up(1, 101, 20);
    let killed_parent = sim.step(killed(0, 9));
    assert_eq!(
        killed_parent,
        vec![
            A::Report(Report::Exited {
                epoch: 0,
                pid: 100,
                status: ProcessExit::Signal(9),
                role: Phase::Draining,
                ran_ms: 10,
            }),
            A::Cleanup { epoch: 0 },
            A::Report(Report::ParentDied {
                epoch: 0,
                status: ProcessExit::Signal(9),
                child: 1,
            }),
            A::StandIn {
                chain: 0,
                restart_epoch: 0
            },
        ]
    );
    assert_eq!(sim.s.counts().crashes, 0);
    // The next trigger restarts at once, in the same chain.
    sim.step(E::RestartRequested(Trigger::Signal));
    assert_eq!(sim.step(passed(2)), vec![launch(2, 0, 2)]);
    // A parent that left by itself (its child's terminate request) needs nobody.
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.step(E::RestartRequested(Trigger::Signal));
    sim.bring_up(1, 101, 20);
    assert!(!sim
        .step(exited(0, 0))
        .iter()
        .any(|a| matches!(a, A::StandIn { .. })));
}
