//! Faults around a restart that are not the new epoch's fault: too little memory
//! for a second proxy, a watched path that cannot be watched.

use super::*;

fn refused_for_memory(epoch: u32) -> Event {
    E::PreflightFailed {
        epoch,
        reason: FailureReason::Memory,
        message: "limit 100 MiB, 90 MiB in use, needs 20 MiB".into(),
    }
}

#[test]
fn the_preflight_knows_the_serving_process_whose_memory_a_newcomer_needs() {
    let mut sim = Sim::new(policy(DriverKind::Envoy));
    assert_eq!(
        sim.step(E::Start).last(),
        Some(&preflight(0, None)),
        "nothing serves at start: nothing to compare with"
    );
    sim.bring_up(0, 100, 10);
    assert_eq!(
        sim.step(E::RestartRequested(Trigger::Signal)).last(),
        Some(&preflight(1, Some(100)))
    );
}

#[test]
fn memory_refusal_keeps_the_serving_epoch_and_the_next_trigger_tries_again() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.step(E::RestartRequested(Trigger::Signal));
    let refused = sim.step(refused_for_memory(1));
    assert_eq!(
        refused,
        vec![
            A::Cleanup { epoch: 1 },
            epoch_refused(
                1,
                FailureReason::Memory,
                "limit 100 MiB, 90 MiB in use, needs 20 MiB"
            )
        ]
    );
    assert_eq!(sim.phases(), vec![(0, Phase::Serving)]);
    assert_eq!(sim.s.counts().failures_of(FailureReason::Memory), 1);
    assert!(sim.s.last_error().is_some_and(|e| e.contains("memory")));
    assert_eq!(
        sim.step(E::RestartRequested(Trigger::FileChange)).last(),
        Some(&preflight(1, Some(100)))
    );
}

#[test]
fn memory_is_not_a_configuration_problem() {
    assert!(!FailureReason::Memory.is_config_problem());
    assert_eq!(FailureReason::Memory.label(), "memory");
    assert!(FailureReason::ALL.contains(&FailureReason::Memory));
}

#[test]
fn a_memory_refusal_while_nothing_serves_is_retried_after_the_backoff() {
    // The shell checks nothing when nothing serves; should a refusal arrive anyway
    // (the serving epoch died meanwhile), it is a failed recovery, not exit 78.
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.step(E::RestartRequested(Trigger::Signal));
    sim.step(killed(0, 9));
    let a = sim.step(refused_for_memory(1));
    assert!(!a.iter().any(|a| matches!(a, A::Exit { .. })), "{a:?}");
    assert!(
        a.iter().any(|a| matches!(
            a,
            A::Schedule {
                event: E::BackoffElapsed { .. },
                ..
            }
        )),
        "{a:?}"
    );
}

#[test]
fn a_watch_failure_is_reported_counted_and_shown_until_the_watch_is_back() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    let failed = sim.step(E::WatchFailed {
        message: "cannot watch /certs: no space left".into(),
    });
    assert_eq!(
        failed,
        vec![A::Report(Report::WatchFailed {
            message: "cannot watch /certs: no space left".into()
        })]
    );
    assert_eq!(sim.s.counts().watch_errors, 1);
    assert_eq!(
        sim.s.watch_error(),
        Some("cannot watch /certs: no space left")
    );
    assert!(sim.s.last_error().is_some_and(|e| e.contains("/certs")));
    assert_eq!(sim.phases(), vec![(0, Phase::Serving)], "serving untouched");

    assert_eq!(
        sim.step(E::WatchRestored),
        vec![A::Report(Report::WatchRestored)]
    );
    assert_eq!(sim.s.watch_error(), None);
    assert_eq!(sim.s.counts().watch_errors, 1, "the count stays");
    assert_eq!(sim.step(E::WatchRestored), vec![], "restored once");
}
