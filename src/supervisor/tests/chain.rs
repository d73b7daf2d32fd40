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
            A::Report(Report::RestartFailed {
                epoch: 1,
                reason: FailureReason::Exited,
                message: "exited before becoming ready (exit code 1)".into()
            }),
        ]
    );
    assert_eq!(sim.phases(), vec![(0, Phase::Serving)]);
    // A trigger during the repair waits for it.
    assert_eq!(
        sim.step(E::RestartRequested(Trigger::Signal)),
        vec![A::Report(Report::Coalesced {
            trigger: Trigger::Signal
        })]
    );
    let repaired = sim.step(E::ChainRepaired { chain: 0 });
    assert_eq!(
        repaired.last(),
        Some(&A::Preflight {
            epoch: 2,
            serving_pid: Some(100)
        })
    );
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
        vec![A::Report(Report::Coalesced {
            trigger: Trigger::Signal
        })]
    );
    let exit = sim.step(killed(1, 9));
    assert!(exit.contains(&A::RepairChain { chain: 0 }), "{exit:?}");
    assert_eq!(
        sim.step(E::ChainRepaired { chain: 0 }).last(),
        Some(&A::Preflight {
            epoch: 2,
            serving_pid: Some(100)
        })
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
