//! baton in a pod, with a kubelet-faithful harness: the Kubernetes lifecycle end to
//! end against the real Envoy and HAProxy.
//!
//! What the harness reproduces, and where:
//!
//! - [`net`]: the pod's network namespace, joined to the test's by a veth pair with
//!   private /30 addresses that exist only inside that pair; the pod has no route
//!   anywhere else.
//! - [`sandbox`]: the pod sandbox (a "pause" process holding the pod's private
//!   `/dev/shm`, as the container runtime gives every pod its own), the app container
//!   (an HTTP server on the pod's loopback) and the baton container: baton as PID 1
//!   of its own PID namespace. Its guard's `Drop` removes every process, the veth and
//!   the namespace, also when a test fails.
//! - [`kubelet`]: what the kubelet does to a pod: readiness probes from outside every
//!   100 ms with its threshold logic, the preStop exec inside the container's
//!   namespaces, then SIGTERM, then SIGKILL after the grace period.
//! - [`secret`]: a secret volume written the way the kubelet's atomic writer does it.
//! - [`traffic`]: load sent to the pod IP from outside, one new connection per
//!   request.
//!
//! The tests: [`envoy`] (`baton envoy` serving TLS from the secret volume) and
//! [`haproxy`] (`baton run` + HAProxy).

mod envoy;
mod haproxy;
mod kubelet;
mod net;
mod procs;
mod sandbox;
mod secret;
mod traffic;

use std::time::Duration;

/// Where the app container listens, on the pod's loopback (the proxy's upstream).
pub const APP_PORT: u16 = 9000;
/// baton's status server: its default, `0.0.0.0:15020`, so the probes reach it.
pub const STATUS_PORT: u16 = 15020;
/// Budget for anything to come up (a proxy start, a rotation).
pub const START: Duration = Duration::from_secs(30);

/// The baton binary under test, as a command inside the pod.
pub fn baton_command() -> String {
    env!("CARGO_BIN_EXE_baton").to_string()
}

/// `GET /epochs` from outside the pod.
pub fn epochs(pod: &sandbox::Pod) -> serde_json::Value {
    let body = traffic::get_ok(pod.status_addr(), "/epochs");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("/epochs: {e}: {body}"))
}

/// Wait until epoch `n` serves and every other epoch has exited.
pub fn wait_only_serving(pod: &sandbox::Pod, n: u64) -> serde_json::Value {
    crate::harness::eventually(&format!("epoch {n} serving alone"), START, || {
        let report = epochs(pod);
        let alone = report["epochs"].as_array()?.iter().all(|e| {
            if e["number"] == n {
                e["state"] == "serving"
            } else {
                e["state"] == "exited"
            }
        });
        let present = report["epochs"]
            .as_array()?
            .iter()
            .any(|e| e["number"] == n);
        (alone && present).then_some(report)
    })
}

/// Every request that was in flight at SIGTERM (each thread returns its outcome and
/// when it ended) was answered 200, and ended after SIGTERM.
pub fn assert_in_flight_answered<E: std::fmt::Debug + PartialEq>(
    slow: Vec<std::thread::JoinHandle<(Result<u16, E>, std::time::Instant)>>,
    t: &kubelet::Termination,
) {
    for request in slow {
        let (outcome, done) = request.join().unwrap();
        assert_eq!(
            outcome,
            Ok(200),
            "a request in flight at termination failed"
        );
        assert!(
            done > t.sigterm_at,
            "the slow request was not in flight at SIGTERM"
        );
    }
}

/// The figures of a termination, for the test's output.
pub fn report_termination(what: &str, t: &kubelet::Termination, prober: &kubelet::Prober) {
    eprintln!(
        "{what}: preStop took {:?} (exit {:?}); SIGTERM -> exit {:?}, exit code {:?}{}; probes: {}",
        t.pre_stop.took,
        t.pre_stop.code,
        t.sigterm_to_exit,
        t.exit_code,
        if t.killed { ", SIGKILLed" } else { "" },
        prober.describe()
    );
}
