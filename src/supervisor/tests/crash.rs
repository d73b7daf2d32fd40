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
    assert_eq!(first.last(), Some(&A::Preflight { epoch: 1 }));
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
        Some(&A::Preflight { epoch: 2 })
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
    assert_eq!(late.last(), Some(&A::Preflight { epoch: 3 }));
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
        vec![A::Report(Report::Coalesced {
            trigger: Trigger::FileChange
        })]
    );
    assert_eq!(
        sim.step(E::BackoffElapsed { generation: 1 }),
        vec![
            started(2, Some(Trigger::FileChange)),
            A::Preflight { epoch: 2 }
        ]
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
