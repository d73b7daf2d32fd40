//! Companion triggers (a SIGHUP and a `POST /restart` from one deploy step): with a
//! driver that checks its inputs, a triggered restart reads them at once, and a
//! companion within the window is covered by it when the inputs did not change.

use super::*;

const WINDOW: Millis = 25;

/// Envoy, checking inputs, epoch 0 serving with digest "d0"; a SIGHUP at t=100
/// started epoch 1, whose preflight is running.
fn restarting() -> Sim {
    let mut sim = Sim::new(Policy {
        gather: WINDOW,
        checks_inputs: true,
        ..policy(DriverKind::Envoy)
    });
    sim.step(E::Start);
    sim.step(digest_passed(0, "d0"));
    sim.at(10, E::Spawned { epoch: 0, pid: 100 });
    sim.at(10, E::Ready { epoch: 0 });
    // No gather wait: the preflight reads the inputs at once.
    assert_eq!(
        sim.at(100, E::RestartRequested(Trigger::Signal)),
        vec![
            started(1, Some(Trigger::Signal)),
            A::Preflight {
                epoch: 1,
                serving_pid: Some(100),
                trusted: vec!["d0".into()]
            }
        ]
    );
    sim
}

fn digest_passed(epoch: u32, digest: &str) -> Event {
    E::PreflightPassed {
        epoch,
        config_digest: Some(digest.into()),
        certs: Vec::new(),
    }
}

fn checked(epoch: u32, digest: Option<&str>) -> Event {
    E::InputsChecked {
        epoch,
        digest: digest.map(String::from),
    }
}

/// Epoch 1 serves from t=200, and epoch 0 has had its drain period: the actions of
/// that last step (a follow-up would start there).
fn settle(sim: &mut Sim) -> Vec<Action> {
    sim.at(200, E::Spawned { epoch: 1, pid: 101 });
    sim.at(200, E::Ready { epoch: 1 });
    sim.at(45_200, E::DrainSettled { epoch: 0 })
}

#[test]
fn a_companion_during_the_preflight_is_covered_once_the_inputs_prove_unchanged() {
    let mut sim = restarting();
    assert_eq!(
        sim.at(105, E::RestartRequested(Trigger::Api)),
        vec![
            A::Warm,
            A::Report(Report::Coalesced {
                trigger: Trigger::Api
            })
        ]
    );
    // Its check runs once the epoch's digest is known.
    assert_eq!(
        sim.at(110, digest_passed(1, "d1")),
        vec![launch(1, 0, 1), A::CheckInputs { epoch: 1 }]
    );
    assert_eq!(
        sim.at(111, checked(1, Some("d1"))),
        vec![A::Report(Report::Covered {
            trigger: Trigger::Api,
            epoch: 1
        })]
    );
    assert!(!has_preflight(&settle(&mut sim)));
    assert_eq!(sim.s.counts().restarts, 1);
}

#[test]
fn a_companion_while_the_epoch_starts_is_checked_at_once() {
    let mut sim = restarting();
    sim.at(102, digest_passed(1, "d1"));
    assert_eq!(
        sim.at(120, E::RestartRequested(Trigger::Signal)),
        vec![
            A::Warm,
            A::CheckInputs { epoch: 1 },
            A::Report(Report::Coalesced {
                trigger: Trigger::Signal
            })
        ]
    );
    sim.step(checked(1, Some("d1")));
    assert!(!has_preflight(&settle(&mut sim)));
}

#[test]
fn changed_inputs_make_the_companion_a_follow_up() {
    for answer in [Some("d2"), None] {
        let mut sim = restarting();
        sim.at(102, digest_passed(1, "d1"));
        sim.at(120, E::RestartRequested(Trigger::Api));
        assert_eq!(sim.step(checked(1, answer)), vec![]);
        let follow_up = settle(&mut sim);
        assert!(
            follow_up.contains(&started(2, Some(Trigger::Api))),
            "{follow_up:?}"
        );
    }
}

#[test]
fn a_trigger_after_the_window_or_from_a_file_needs_its_own_restart() {
    for (at, trigger) in [
        (100 + WINDOW + 1, Trigger::Signal),
        (110, Trigger::FileChange),
    ] {
        let mut sim = restarting();
        sim.at(102, digest_passed(1, "d1"));
        let actions = sim.at(at, E::RestartRequested(trigger));
        assert!(
            !actions.contains(&A::CheckInputs { epoch: 1 }),
            "{actions:?}"
        );
        let follow_up = settle(&mut sim);
        assert!(
            follow_up.contains(&started(2, Some(trigger))),
            "{follow_up:?}"
        );
    }
}

#[test]
fn one_changed_answer_among_several_companions_keeps_the_follow_up() {
    let mut sim = restarting();
    sim.at(102, digest_passed(1, "d1"));
    sim.at(105, E::RestartRequested(Trigger::Api));
    sim.at(110, E::RestartRequested(Trigger::Signal));
    assert_eq!(sim.step(checked(1, Some("d1"))), vec![]);
    assert_eq!(sim.step(checked(1, Some("d9"))), vec![]);
    assert!(settle(&mut sim).contains(&started(2, Some(Trigger::Signal))));
}

#[test]
fn a_follow_up_waits_for_an_unanswered_check_and_a_failed_epoch_covers_nothing() {
    // Generic driver (no drain period to wait for): the follow-up would start the
    // moment epoch 1 serves, but its check may still cancel it.
    let mut sim = Sim::new(Policy {
        gather: WINDOW,
        checks_inputs: true,
        ..policy(DriverKind::Generic)
    });
    sim.step(E::Start);
    sim.bring_up(0, 100, 10);
    sim.at(100, E::RestartRequested(Trigger::Signal));
    sim.at(102, digest_passed(1, "d1"));
    sim.at(103, E::Spawned { epoch: 1, pid: 101 });
    sim.at(110, E::RestartRequested(Trigger::Api));
    let ready = sim.at(150, E::Ready { epoch: 1 });
    assert!(!has_preflight(&ready), "{ready:?}");
    let answered = sim.step(checked(1, Some("other")));
    assert!(
        answered.contains(&started(2, Some(Trigger::Api))),
        "{answered:?}"
    );

    // The epoch that would cover it fails: the follow-up runs as the next attempt.
    let mut sim = restarting();
    sim.at(105, E::RestartRequested(Trigger::Api));
    let failed = sim.at(
        110,
        E::PreflightFailed {
            epoch: 1,
            reason: FailureReason::Config,
            message: "bad".into(),
        },
    );
    assert!(has_preflight(&failed), "{failed:?}");
}
