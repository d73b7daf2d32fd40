//! Crashes of the serving epoch: recovery, backoff, the budget, and start-up
//! failures.

use super::*;

/// Epoch 0 crashes, epoch 1 comes up and crashes soon after: a backoff is armed.
fn crashed_twice() -> Sim {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.at(100, exited(0, 1));
    sim.bring_up(1, 101, 200);
    sim.at(300, exited(1, 1));
    sim
}

#[test]
fn serving_epoch_crash_restarts_at_once_then_backs_off_then_exits_with_its_code() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    // First crash: immediate restart in a new chain.
    let first = sim.at(100, killed(0, 11));
    assert!(first.contains(&A::Report(Report::Crashed {
        epoch: 0,
        status: ProcessExit::Signal(11),
        crashes: 1,
        retry_in: Some(0)
    })));
    assert_eq!(first.last(), Some(&preflight(1, None)));
    assert_eq!(sim.step(passed(1)), vec![launch(1, 1, 0)]);
    sim.at(110, E::Spawned { epoch: 1, pid: 101 });
    sim.at(120, E::Ready { epoch: 1 });
    // Second crash soon after: back off.
    let second = sim.at(200, exited(1, 3));
    assert_eq!(
        second.last(),
        Some(&schedule(1000, E::BackoffElapsed { generation: 1 }))
    );
    assert_eq!(
        sim.at(1200, E::BackoffElapsed { generation: 1 }).last(),
        Some(&preflight(2, None))
    );
    sim.step(passed(2));
    sim.at(1300, E::Spawned { epoch: 2, pid: 102 });
    sim.at(1310, E::Ready { epoch: 2 });
    // Third crash exceeds the budget of 2: exit with the proxy's code.
    let third = sim.at(1400, exited(2, 3));
    assert_eq!(third.last(), Some(&A::Exit { code: 3 }));
    assert_eq!(sim.s.counts().crashes, 3);
    // Both recoveries are restarts caused by a crash.
    assert_eq!(sim.s.counts().restarts_of(RestartCause::Crash), 2);
    assert_eq!(sim.s.counts().restarts, 2);
}

#[test]
fn an_epoch_that_served_long_enough_resets_the_crash_count() {
    let mut sim = crashed_twice();
    assert_eq!(sim.s.crashes(), 2);
    sim.step(E::BackoffElapsed { generation: 1 });
    sim.bring_up(2, 102, 1_500);
    let late = sim.at(100_000, exited(2, 1));
    assert_eq!(sim.s.crashes(), 1);
    assert_eq!(late.last(), Some(&preflight(3, None)));
}

#[test]
fn crash_backoff_timer_from_an_earlier_crash_is_ignored() {
    let mut sim = crashed_twice();
    assert_eq!(sim.step(E::BackoffElapsed { generation: 0 }), vec![]);
}

#[test]
fn crash_backoff_is_not_ready() {
    let sim = crashed_twice();
    assert_eq!(
        sim.s.readiness(),
        Err("crash backoff after 2 crash(es)".into())
    );
}

#[test]
fn a_trigger_during_the_backoff_becomes_the_recovery() {
    let mut sim = crashed_twice();
    assert_eq!(
        sim.step(E::RestartRequested(Trigger::FileChange)),
        vec![
            A::Warm,
            A::Report(Report::Coalesced {
                trigger: Trigger::FileChange
            })
        ]
    );
    assert_eq!(
        sim.step(E::BackoffElapsed { generation: 1 }),
        vec![started(2, Some(Trigger::FileChange)), preflight(2, None)]
    );
}

#[test]
fn bad_config_at_startup_exits_78_without_retrying() {
    let mut sim = Sim::new(policy(DriverKind::Envoy));
    sim.step(E::Start);
    let actions = sim.step(E::PreflightFailed {
        epoch: 0,
        reason: FailureReason::Template,
        message: "undefined variable".into(),
    });
    assert_eq!(actions.last(), Some(&A::Exit { code: 78 }));
}

#[test]
fn an_epoch_that_exits_before_it_ever_served_ends_baton_at_once_with_its_code() {
    let mut sim = Sim::new(policy(DriverKind::Envoy));
    sim.run(vec![E::Start, passed(0), E::Spawned { epoch: 0, pid: 100 }]);
    let actions = sim.step(E::Exited {
        epoch: 0,
        status: ProcessExit::Code(1),
        last_words: Some("cannot bind '127.0.0.1:15000': Address already in use".into()),
    });
    assert!(
        actions.contains(&A::Report(Report::GivingUp {
            code: 1,
            why: "epoch 0 never served (exited): exited before becoming ready (exit code 1): \
                  cannot bind '127.0.0.1:15000': Address already in use"
                .into()
        })),
        "{actions:?}"
    );
    assert_eq!(actions.last(), Some(&A::Exit { code: 1 }));
    assert_eq!(
        sim.s.counts().crashes,
        0,
        "a start-up failure is not a crash"
    );
}

#[test]
fn a_missing_command_at_start_up_exits_127() {
    let mut sim = Sim::new(policy(DriverKind::Envoy));
    sim.run(vec![E::Start, passed(0)]);
    let actions = sim.step(E::SpawnFailed {
        epoch: 0,
        message: "cannot start /missing/envoy: No such file or directory".into(),
        code: 127,
    });
    assert_eq!(actions.last(), Some(&A::Exit { code: 127 }));
    // Under `baton run` the exec shim is what fails to find the command: exit 127.
    let mut sim = Sim::new(policy(DriverKind::Generic));
    sim.run(vec![E::Start, passed(0), E::Spawned { epoch: 0, pid: 100 }]);
    assert_eq!(
        sim.step(exited(0, 127)).last(),
        Some(&A::Exit { code: 127 })
    );
}

#[test]
fn an_epoch_never_ready_at_start_up_ends_baton_with_1() {
    let mut sim = Sim::new(policy(DriverKind::Envoy));
    sim.run(vec![E::Start, passed(0), E::Spawned { epoch: 0, pid: 100 }]);
    let actions = sim.step(E::NotReady {
        epoch: 0,
        message: "not ready within 60s".into(),
    });
    assert!(
        actions.contains(&stop(0, 100, StopSignal::Kill)),
        "{actions:?}"
    );
    // It exits once killed; then baton does.
    assert_eq!(sim.step(killed(0, 9)).last(), Some(&A::Exit { code: 1 }));
}
