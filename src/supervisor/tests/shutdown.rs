//! Drain on request and graceful shutdown.

use super::*;

#[test]
fn shutdown_drains_the_serving_epoch_then_terminates_then_kills() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    assert_eq!(
        sim.step(E::ShutdownRequested),
        vec![
            A::DrainListeners { epoch: 0, pid: 100 },
            schedule(5_000, E::ShutdownDrainElapsed),
        ]
    );
    assert_eq!(sim.step(E::RestartRequested(Trigger::Signal)), vec![]);
    assert_eq!(
        sim.step(E::ShutdownDrainElapsed),
        vec![
            stop(0, 100, StopSignal::Term),
            schedule(5_000, E::ShutdownKillDeadline),
        ]
    );
    assert_eq!(
        sim.step(E::ShutdownKillDeadline),
        vec![stop(0, 100, StopSignal::Kill)]
    );
    let exit = sim.step(killed(0, 15));
    assert_eq!(exit.last(), Some(&A::Exit { code: 0 }));
}

#[test]
fn a_second_shutdown_request_skips_the_drain() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.step(E::ShutdownRequested);
    assert_eq!(
        sim.step(E::ShutdownRequested)[0],
        stop(0, 100, StopSignal::Term)
    );
}

#[test]
fn shutdown_during_a_restart_kills_the_new_epoch_and_exits_with_the_serving_code() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.run(vec![
        E::RestartRequested(Trigger::Signal),
        passed(1),
        E::Spawned { epoch: 1, pid: 101 },
    ]);
    assert_eq!(
        sim.step(E::ShutdownRequested),
        vec![
            stop(1, 101, StopSignal::Kill),
            A::DrainListeners { epoch: 0, pid: 100 },
            schedule(5_000, E::ShutdownDrainElapsed),
        ]
    );
    // The killed newcomer is not a failed restart to retry.
    let a = sim.step(killed(1, 9));
    assert!(
        !a.iter()
            .any(|a| matches!(a, A::Preflight { .. } | A::Exit { .. })),
        "{a:?}"
    );
    sim.step(E::ShutdownDrainElapsed);
    let a = sim.step(exited(0, 0));
    assert_eq!(a.last(), Some(&A::Exit { code: 0 }));
}

#[test]
fn shutdown_while_a_preflight_runs_discards_it_and_its_files() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.step(E::RestartRequested(Trigger::Signal));
    assert_eq!(
        sim.step(E::ShutdownRequested)[0],
        A::Cleanup { epoch: 1 },
        "what the preflight wrote so far goes"
    );
    // What it wrote after the drop goes when its outcome arrives.
    assert_eq!(sim.step(passed(1)), vec![A::Cleanup { epoch: 1 }]);
    assert_eq!(sim.phases(), vec![(0, Phase::Serving)]);
}

#[test]
fn drain_request_while_a_preflight_runs_removes_what_it_wrote() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.step(E::RestartRequested(Trigger::Signal));
    let drained = sim.step(E::DrainRequested);
    assert!(drained.contains(&A::Cleanup { epoch: 1 }), "{drained:?}");
    assert_eq!(sim.step(passed(1)), vec![A::Cleanup { epoch: 1 }]);
}

#[test]
fn shutdown_between_spawn_and_its_report_still_kills_the_process() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.run(vec![
        E::RestartRequested(Trigger::Signal),
        passed(1),
        E::ShutdownRequested,
    ]);
    assert_eq!(
        sim.step(E::Spawned { epoch: 1, pid: 101 }),
        vec![stop(1, 101, StopSignal::Kill)]
    );
}

#[test]
fn shutdown_with_nothing_running_exits_at_once() {
    let mut sim = Sim::new(policy(DriverKind::Envoy));
    sim.step(E::Start);
    assert_eq!(
        sim.step(E::ShutdownRequested),
        vec![A::Cleanup { epoch: 0 }, A::Exit { code: 0 }]
    );
}

#[test]
fn drain_request_drains_the_serving_epoch_and_ignores_later_restarts() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    assert_eq!(
        sim.step(E::DrainRequested),
        vec![
            A::DrainListeners { epoch: 0, pid: 100 },
            A::Report(Report::Drained { serving: Some(0) })
        ]
    );
    assert_eq!(sim.s.readiness(), Err("draining (POST /drain)".into()));
    assert_eq!(sim.step(E::DrainRequested), vec![]);
    assert_eq!(
        sim.step(E::RestartRequested(Trigger::Api)),
        vec![A::Report(Report::Ignored {
            trigger: Trigger::Api,
            why: "the proxy was drained on request"
        })]
    );
}

#[test]
fn a_drain_request_sends_a_generic_proxy_no_signal_and_its_exit_is_no_crash() {
    let mut sim = Sim::serving(DriverKind::Generic);
    assert_eq!(
        sim.step(E::DrainRequested),
        vec![A::Report(Report::Drained { serving: Some(0) })]
    );
    // The proxy leaves by itself (HAProxy after a soft stop): not a crash, nothing
    // restarts, baton waits for SIGTERM.
    let exit = sim.step(exited(0, 0));
    assert_eq!(
        exit,
        vec![
            A::Report(Report::Exited {
                epoch: 0,
                pid: 100,
                status: ProcessExit::Code(0),
                role: Phase::Serving,
                ran_ms: 0,
            }),
            A::Cleanup { epoch: 0 },
        ]
    );
    assert_eq!(sim.s.counts().crashes, 0);
    assert_eq!(sim.step(E::ShutdownRequested), vec![A::Exit { code: 0 }]);
}

#[test]
fn a_drain_request_aborts_a_restart_in_flight() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.run(vec![
        E::RestartRequested(Trigger::Signal),
        passed(1),
        E::Spawned { epoch: 1, pid: 101 },
    ]);
    let drain = sim.step(E::DrainRequested);
    assert_eq!(drain[0], stop(1, 101, StopSignal::Kill));
    assert_eq!(sim.step(E::Ready { epoch: 1 }), vec![]);
    assert_eq!(sim.s.serving().map(|e| e.number), Some(0));
}

#[test]
fn shutdown_of_a_generic_proxy_sends_the_drain_signal_once_even_after_a_drain_request() {
    let mut sim = Sim::serving(DriverKind::Generic);
    sim.step(E::DrainRequested);
    assert_eq!(
        sim.step(E::ShutdownRequested),
        vec![
            A::Drain { epoch: 0, pid: 100 },
            schedule(5_000, E::ShutdownDrainElapsed),
        ]
    );
    // It leaves when its connections are done: baton exits 0 at once.
    assert_eq!(sim.step(killed(0, 15)).last(), Some(&A::Exit { code: 0 }));
}

#[test]
fn exit_on_zero_connections_watches_after_the_minimum_drain() {
    let mut sim = Sim::new(Policy {
        exit_on_zero_after: Some(2_000),
        ..policy(DriverKind::Envoy)
    });
    sim.step(E::Start);
    sim.bring_up(0, 100, 10);
    assert_eq!(
        sim.step(E::ShutdownRequested),
        vec![
            A::DrainListeners { epoch: 0, pid: 100 },
            schedule(5_000, E::ShutdownDrainElapsed),
            schedule(2_000, E::MinimumDrainElapsed),
        ]
    );
    assert_eq!(
        sim.step(E::MinimumDrainElapsed),
        vec![A::WatchConnections { epoch: 0 }]
    );
    let stop_now = sim.step(E::ConnectionsDrained);
    assert_eq!(stop_now[0], stop(0, 100, StopSignal::Term));
    // The bound still holds, and a late timer changes nothing.
    assert_eq!(sim.step(E::ShutdownDrainElapsed), vec![]);
    assert_eq!(sim.step(killed(0, 15)).last(), Some(&A::Exit { code: 0 }));
}

#[test]
fn a_generic_proxy_leaving_by_its_drain_signal_at_shutdown_exits_0() {
    // HAProxy's master reports its worker's death by SIGUSR1 (10) as 138.
    for status in [
        ProcessExit::Code(138),
        ProcessExit::Signal(10),
        ProcessExit::Code(143),
    ] {
        let mut sim = Sim::serving(DriverKind::Generic);
        sim.step(E::ShutdownRequested);
        let exit = sim.step(E::Exited {
            epoch: 0,
            status,
            last_words: None,
        });
        assert_eq!(exit.last(), Some(&A::Exit { code: 0 }), "{status}");
    }
    let mut sim = Sim::serving(DriverKind::Generic);
    sim.step(E::ShutdownRequested);
    assert_eq!(sim.step(exited(0, 3)).last(), Some(&A::Exit { code: 3 }));
}

#[test]
fn envoy_epochs_are_stopped_newest_first_so_a_child_never_waits_on_a_stopping_parent() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.step(E::RestartRequested(Trigger::Signal));
    sim.bring_up(1, 101, 20);
    sim.step(E::ShutdownRequested);
    // Only the child first: it asks its parent for stats on its way out.
    assert_eq!(
        sim.step(E::ShutdownDrainElapsed),
        vec![
            stop(1, 101, StopSignal::Term),
            schedule(5_000, E::ShutdownKillDeadline),
        ]
    );
    // Then the parent, once the child is gone.
    let child_gone = sim.step(killed(1, 15));
    assert!(
        child_gone.contains(&stop(0, 100, StopSignal::Term)),
        "{child_gone:?}"
    );
    assert_eq!(sim.step(exited(0, 0)).last(), Some(&A::Exit { code: 0 }));
    // The kill deadline still covers everyone at once.
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.step(E::RestartRequested(Trigger::Signal));
    sim.bring_up(1, 101, 20);
    sim.run(vec![E::ShutdownRequested, E::ShutdownDrainElapsed]);
    assert_eq!(
        sim.step(E::ShutdownKillDeadline),
        vec![
            stop(0, 100, StopSignal::Kill),
            stop(1, 101, StopSignal::Kill)
        ]
    );
}
