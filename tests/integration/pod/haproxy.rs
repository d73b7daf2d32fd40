//! `baton run` + HAProxy in a pod (`examples/haproxy`): a drain (the preStop hook)
//! leaves the serving epoch serving until SIGTERM.

use std::path::Path;
use std::time::{Duration, Instant};

use super::kubelet::{terminate, ProbeSpec, Prober};
use super::sandbox::Pod;
use super::traffic::{get_ok, request, Load};
use super::{
    assert_in_flight_answered, baton_command, epochs, report_termination, wait_only_serving,
    APP_PORT, START,
};
use crate::harness::eventually;

/// HAProxy's listener (a socket baton holds) in the pod.
const LISTEN_PORT: u16 = 8080;
/// `terminationGracePeriodSeconds`, preStop included.
const GRACE: Duration = Duration::from_secs(15);
/// Requests sent after the drain.
const AFTER_DRAIN: u64 = 1000;

fn haproxy_args() -> Vec<String> {
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/haproxy/haproxy.cfg");
    let cfg = cfg.display().to_string();
    let args = [
        "run",
        "--listen",
        &format!("http=tcp://0.0.0.0:{LISTEN_PORT}"),
        "--ready",
        "notify",
        "--drain-signal",
        "SIGUSR1",
        "--preflight",
        &format!("haproxy -c -q -f {cfg}"),
        "--parent-shutdown-duration",
        "3s",
        "--termination-drain-duration",
        "8s",
        "--",
        "haproxy",
        "-Ws",
        "-f",
        &cfg,
    ];
    args.iter().map(|s| s.to_string()).collect()
}

/// The serving epoch's `(number, pid)` in `/epochs`.
fn serving(pod: &Pod) -> (u64, u64) {
    let report = wait_only_serving(pod, 0);
    let epoch = &report["epochs"][0];
    (
        epoch["number"].as_u64().unwrap(),
        epoch["pid"].as_u64().unwrap(),
    )
}

#[test]
fn haproxy_pod_keeps_serving_on_the_same_epoch_after_a_drain_then_terminates_cleanly() {
    let mut pod = Pod::new();
    pod.start_app();
    let upstream = format!("127.0.0.1:{APP_PORT}");
    pod.start_baton(&haproxy_args(), &[("UPSTREAM", &upstream)]);
    let prober = Prober::start(pod.status_addr(), ProbeSpec::default());
    prober.wait_ready(true, START);
    let http = pod.addr(LISTEN_PORT);
    let before = serving(&pod);

    let drain = pod.exec(&[baton_command(), "drain".into()], Duration::from_secs(10));
    assert_eq!(drain.code, Some(0), "baton drain: {}", drain.output);
    prober.wait_ready(false, START);

    let load = Load::start(http, 2, AFTER_DRAIN, Duration::from_secs(30)).finish();
    eprintln!(
        "haproxy pod: after baton drain: {} requests ok, {} failed in {:?} (new connection each)",
        load.ok, load.failed, load.elapsed
    );
    assert_eq!(load.failed, 0, "failed requests: {:?}", load.samples);
    assert_eq!(load.ok, AFTER_DRAIN);
    let report = epochs(&pod);
    assert_eq!(serving(&pod), before, "another epoch serves: {report}");
    assert_eq!(report["crashes_total"], 0, "{report}");
    assert_eq!(report["restarts_total"], 0, "{report}");
    assert_eq!(report["readiness"]["status"], "not_ready", "{report}");
    let metrics = get_ok(pod.status_addr(), "/stats/prometheus");
    assert!(
        metrics.lines().any(|l| l == "baton_proxy_crashes_total 0"),
        "{metrics}"
    );
    assert_eq!(
        prober.transitions().len(),
        2,
        "readiness came back after the drain: {}",
        prober.describe()
    );

    // Termination, with requests in flight.
    let slow: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let outcome = request(http, "GET", "/slow", "", Duration::from_secs(20));
                (outcome.map(|(code, _)| code), Instant::now())
            })
        })
        .collect();
    eventually("2 slow requests reached the app", START, || {
        (pod.app_log().matches("slow start").count() >= 2).then_some(())
    });
    let t = terminate(&mut pod, &[baton_command(), "drain".into()], GRACE);
    report_termination("haproxy pod", &t, &prober);
    assert_eq!(t.pre_stop.code, Some(0), "preStop: {}", t.pre_stop.output);
    assert!(!t.killed, "baton outlived the grace period ({GRACE:?})");
    assert_eq!(t.exit_code, Some(0));
    assert_in_flight_answered(slow, &t);
    drop(prober);
    let left = pod.teardown();
    assert!(left.is_empty(), "left behind: {left:#?}");
}
