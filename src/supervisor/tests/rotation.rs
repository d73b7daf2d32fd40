//! In-place rotations (`--cert-rotation sds`): one at a time, never beside a restart,
//! counted apart from restarts, and a refusal that leaves the serving epoch as it was.

use super::*;

fn pair(serial: &str) -> CertInfo {
    CertInfo {
        path: "/certs/tls.crt".into(),
        subject: "CN=example.com".into(),
        serial: serial.into(),
        not_before: 1_700_000_000,
        not_after: 1_800_000_000,
    }
}

fn rotate(rotation: u64, epoch: u32) -> Vec<Action> {
    vec![
        A::Report(Report::RotationStarted { rotation, epoch }),
        A::Rotate { rotation, epoch },
    ]
}

fn done(rotation: u64, serial: &str) -> Event {
    E::RotationDone {
        rotation,
        certs: vec![pair(serial)],
        changed: true,
    }
}

fn refused(rotation: u64, message: &str) -> Event {
    E::RotationFailed {
        rotation,
        reason: FailureReason::Cert,
        message: message.into(),
    }
}

fn waits(why: &'static str) -> Action {
    A::Report(Report::RotationWaits { why })
}

#[test]
fn a_rotation_hands_the_pair_to_the_serving_epoch_and_is_no_restart() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    assert_eq!(sim.at(20, E::RotationRequested), rotate(1, 0));
    assert_eq!(
        sim.at(32, done(1, "2002")),
        vec![A::Report(Report::Rotated {
            rotation: 1,
            epoch: 0,
            serials: vec!["2002".into()],
            changed: true,
            rotation_ms: 12,
        })]
    );
    assert_eq!(sim.phases(), vec![(0, Phase::Serving)]);
    assert_eq!(sim.s.serving().unwrap().certs, vec![pair("2002")]);
    let counts = sim.s.counts();
    assert_eq!(
        (counts.sds_rotations, counts.restarts, counts.rotations),
        (1, 0, 0)
    );
}

#[test]
fn a_rotation_does_not_wait_for_the_previous_epochs_drain_but_a_restart_does() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.step(E::RestartRequested(Trigger::Signal));
    sim.bring_up(1, 101, 20);
    // Epoch 0 drains for 45 s; a rotation goes at once.
    assert_eq!(sim.at(30, E::RotationRequested), rotate(1, 1));
    // A restart meanwhile waits for the rotation (and then for the drain).
    assert_eq!(
        sim.step(E::RestartRequested(Trigger::Signal)),
        vec![A::Report(Report::WaitsForRotation {
            trigger: Trigger::Signal
        })]
    );
    let after = sim.at(40, done(1, "2002"));
    assert!(
        !has_preflight(&after),
        "the drain period still holds it: {after:?}"
    );
    let settled = sim.at(45_020, E::DrainSettled { epoch: 0 });
    assert_eq!(
        settled,
        vec![started(2, Some(Trigger::Signal)), preflight(2, Some(101))]
    );
}

#[test]
fn requests_during_a_rotation_become_one_follow_up_rotation() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.at(20, E::RotationRequested);
    let why = "another rotation is in progress; this one follows it";
    assert_eq!(sim.at(21, E::RotationRequested), vec![waits(why)]);
    assert_eq!(sim.at(22, E::RotationRequested), vec![waits(why)]);
    let after = sim.at(30, done(1, "2002"));
    assert_eq!(&after[1..], rotate(2, 0).as_slice());
    let last = sim.at(50, done(2, "3003"));
    assert!(
        matches!(
            &last[..],
            [A::Report(Report::Rotated {
                rotation: 2,
                rotation_ms: 29,
                ..
            })]
        ),
        "timed from the first request it answers: {last:?}"
    );
}

#[test]
fn a_rotation_asked_for_during_a_restart_follows_the_new_epoch() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.at(20, E::RestartRequested(Trigger::FileChange));
    let why = "a restart is in progress; the rotation follows it";
    assert_eq!(sim.at(21, E::RotationRequested), vec![waits(why)]);
    sim.step(passed(1));
    sim.at(25, E::Spawned { epoch: 1, pid: 101 });
    let ready = sim.at(30, E::Ready { epoch: 1 });
    assert_eq!(&ready[ready.len() - 2..], rotate(1, 1).as_slice());
}

#[test]
fn a_refused_rotation_keeps_what_is_served_counts_and_is_the_last_error() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.at(20, E::RotationRequested);
    sim.at(30, done(1, "1001"));
    sim.at(40, E::RotationRequested);
    assert_eq!(
        sim.at(41, refused(2, "tls.crt: expired")),
        vec![A::Report(Report::RotationFailed {
            rotation: 2,
            epoch: 0,
            reason: FailureReason::Cert,
            message: "tls.crt: expired".into(),
        })]
    );
    assert_eq!(sim.s.serving().unwrap().certs, vec![pair("1001")]);
    assert_eq!(sim.s.counts().failures_of(FailureReason::Cert), 1);
    assert_eq!(sim.s.counts().sds_rotations, 1);
    assert_eq!(
        sim.s.last_error(),
        Some("epoch 0: certificate rotation: cert: tls.crt: expired")
    );
    assert!(sim.s.readiness().is_ok());
    // The next good pair is served, and clears the error.
    sim.at(50, E::RotationRequested);
    sim.at(51, done(3, "3003"));
    assert_eq!(sim.s.last_error(), None);
    assert_eq!(sim.s.serving().unwrap().certs, vec![pair("3003")]);
}

#[test]
fn an_unchanged_pair_is_recorded_but_not_counted() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.at(20, E::RotationRequested);
    sim.step(E::RotationDone {
        rotation: 1,
        certs: vec![pair("1001")],
        changed: false,
    });
    assert_eq!(sim.s.counts().sds_rotations, 0);
    assert_eq!(sim.s.serving().unwrap().certs, vec![pair("1001")]);
}

#[test]
fn the_serving_epoch_dying_abandons_its_rotation_and_the_recovery_gets_it_after() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.at(20, E::RotationRequested);
    let crash = sim.at(25, killed(0, 9));
    assert!(
        crash.contains(&A::AbandonRotation { rotation: 1 }),
        "{crash:?}"
    );
    // Recovery starts at once, not after the rotation.
    assert!(has_preflight(&crash), "{crash:?}");
    // The abandoned rotation's late outcome changes nothing.
    assert_eq!(sim.at(26, done(1, "2002")), vec![]);
    let ready = sim.bring_up(1, 101, 40);
    assert_eq!(&ready[ready.len() - 2..], rotate(2, 1).as_slice());
}

#[test]
fn drains_and_shutdowns_stop_rotations() {
    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.at(20, E::RotationRequested);
    sim.at(21, E::RotationRequested);
    sim.step(E::DrainRequested);
    // The rotation under way finishes; the follow-up and new requests do not run.
    assert_eq!(
        sim.step(E::RotationRequested),
        vec![A::Report(Report::RotationIgnored {
            why: "the proxy was drained on request"
        })]
    );
    assert_eq!(sim.at(30, done(1, "2002")).len(), 1);
    assert_eq!(sim.s.serving().unwrap().certs, vec![pair("2002")]);

    let mut sim = Sim::serving(DriverKind::Envoy);
    sim.at(20, E::RotationRequested);
    let shutdown = sim.step(E::ShutdownRequested);
    assert!(
        shutdown.contains(&A::AbandonRotation { rotation: 1 }),
        "{shutdown:?}"
    );
    assert_eq!(sim.step(E::RotationRequested), vec![]);
}
