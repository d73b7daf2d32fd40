//! `baton envoy` in a pod: Envoy serves TLS on the pod IP from a secret volume
//! (the standalone template), the app container is its upstream.

use std::path::PathBuf;
use std::time::Duration;

use super::kubelet::{terminate, ProbeSpec, Prober, Termination};
use super::sandbox::Pod;
use super::secret::{make_pair, SecretVolume};
use super::traffic::{served_serial, tls_request_in_background, Wrk};
use super::{
    assert_in_flight_answered, baton_command, epochs, report_termination, wait_only_serving,
    APP_PORT, START,
};
use crate::harness::{envoy_binary, eventually};

/// Envoy's listener in the pod.
const LISTEN_PORT: u16 = 8443;
/// `terminationGracePeriodSeconds`, preStop included.
const GRACE: Duration = Duration::from_secs(15);

fn envoy_args(secret: &SecretVolume) -> Vec<String> {
    let args = [
        "envoy",
        "--envoy-binary",
        &envoy_binary().display().to_string(),
        "--template",
        "standalone",
        "--var",
        &format!("listen_port={LISTEN_PORT}"),
        "--var",
        "listen_address=0.0.0.0",
        "--var",
        &format!("upstream=127.0.0.1:{APP_PORT}"),
        "--cert",
        &secret.cert_arg(),
        "--concurrency",
        "1",
        "--stats-flush-interval",
        "250ms",
        "--drain-duration",
        "1s",
        "--parent-shutdown-duration",
        "2s",
        "--exit-on-zero-active-connections",
        "--minimum-drain-duration",
        "1s",
        "--termination-drain-duration",
        "8s",
    ];
    args.iter().map(|s| s.to_string()).collect()
}

/// The certificate's serial as openssl prints it.
fn serial(n: usize) -> String {
    format!("{:X}", 0x1001 * (n as u32 + 1))
}

/// A pod with the app, the secret volume holding the first of its certificate
/// pairs, and baton, Ready through the probes.
struct EnvoyPod {
    pod: Pod,
    secret: SecretVolume,
    /// (certificate, key); pair `n` has serial [`serial`]`(n)`.
    pairs: Vec<(PathBuf, PathBuf)>,
    prober: Prober,
}

impl EnvoyPod {
    fn ready(pairs: usize) -> Self {
        let mut pod = Pod::new();
        let certs = pod.path("certs");
        std::fs::create_dir(&certs).unwrap();
        let pairs: Vec<_> = (0..pairs)
            .map(|n| make_pair(&certs, &format!("c{n}"), 0x1001 * (n as u32 + 1)))
            .collect();
        let mut secret = SecretVolume::new(pod.path("secret"));
        secret.write_tls(&pairs[0].0, &pairs[0].1);
        pod.start_app();
        pod.start_baton(&envoy_args(&secret), &[]);
        let prober = Prober::start(pod.status_addr(), ProbeSpec::default());
        prober.wait_ready(true, START);
        assert_eq!(served_serial(pod.addr(LISTEN_PORT)), Some(serial(0)));
        EnvoyPod {
            pod,
            secret,
            pairs,
            prober,
        }
    }
}

fn wait_serial(pod: &Pod, n: usize) {
    let tls = pod.addr(LISTEN_PORT);
    eventually(&format!("serial {} served", serial(n)), START, || {
        (served_serial(tls) == Some(serial(n))).then_some(())
    });
}

#[test]
fn envoy_pod_is_ready_rotates_under_load_and_terminates_leaving_nothing() {
    let EnvoyPod {
        mut pod,
        mut secret,
        pairs,
        prober,
    } = EnvoyPod::ready(4);
    let tls = pod.addr(LISTEN_PORT);
    // Envoy's hot-restart segment is in the pod's own /dev/shm: what the check after
    // termination looks at.
    let shm = pod.shm();
    assert!(
        shm.iter().any(|e| e.starts_with("envoy_shared_memory_")),
        "{shm:?}"
    );

    // Three rotations the way the kubelet writes a secret, under load.
    let mut wrk = Wrk::start(&format!("https://{tls}/"), 4, Duration::from_secs(60));
    for (n, (cert, key)) in pairs.iter().enumerate().skip(1) {
        secret.write_tls(cert, key);
        wait_only_serving(&pod, n as u64);
        wait_serial(&pod, n);
    }
    assert!(wrk.running(), "the load ended before the rotations did");
    let load = wrk.stop();
    eprintln!(
        "envoy pod: 3 rotations under load: {} requests (each a new TLS connection), {} failed",
        load.requests, load.failed
    );
    assert_eq!(load.failed, 0, "{}", load.text);
    assert!(load.requests >= 100, "too little load:\n{}", load.text);
    assert_eq!(
        prober.transitions().len(),
        1,
        "readiness dropped during a rotation: {}",
        prober.describe()
    );

    // Termination, with requests in flight.
    let slow: Vec<_> = (0..4)
        .map(|_| tls_request_in_background(tls, "/slow", Duration::from_secs(20)))
        .collect();
    eventually("4 slow requests reached the app", START, || {
        (pod.app_log().matches("slow start").count() >= 4).then_some(())
    });
    // The manifest's preStop: drain, then a second for the endpoints to catch up.
    let pre_stop = vec![
        "sh".to_string(),
        "-c".to_string(),
        format!("{} drain && sleep 1", baton_command()),
    ];
    let t = terminate(&mut pod, &pre_stop, GRACE);
    report_termination("envoy pod", &t, &prober);
    assert_termination_drained(&t, &prober);
    assert_in_flight_answered(slow, &t);
    drop(prober);
    let left = pod.teardown();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// preStop succeeded, readiness turned 503 (seen by the probes) before SIGTERM, and
/// baton exited 0 on its own within the grace period.
fn assert_termination_drained(t: &Termination, prober: &Prober) {
    assert_eq!(t.pre_stop.code, Some(0), "preStop: {}", t.pre_stop.output);
    let first_503 = prober
        .results()
        .into_iter()
        .find(|r| r.at >= t.pre_stop_at && r.outcome == Ok(503));
    assert!(
        first_503.is_some_and(|r| r.at < t.sigterm_at),
        "no 503 probe between preStop and SIGTERM: {}",
        prober.describe()
    );
    let (at, ready) = *prober.transitions().last().unwrap();
    assert!(
        !ready && at < t.sigterm_at,
        "the pod was still Ready at SIGTERM: {}",
        prober.describe()
    );
    assert!(!t.killed, "baton outlived the grace period ({GRACE:?})");
    assert_eq!(t.exit_code, Some(0));
}

#[test]
fn envoy_pod_follows_its_secret_volume_removed_and_recreated() {
    let EnvoyPod {
        mut pod,
        mut secret,
        pairs,
        prober,
    } = EnvoyPod::ready(2);
    let tls = pod.addr(LISTEN_PORT);
    let mut wrk = Wrk::start(&format!("https://{tls}/"), 4, Duration::from_secs(60));
    secret.recreate_tls(&pairs[1].0, &pairs[1].1);
    wait_only_serving(&pod, 1);
    wait_serial(&pod, 1);
    assert!(wrk.running(), "the load ended before the rotation did");
    let load = wrk.stop();
    eprintln!(
        "envoy pod: secret volume removed and recreated under load: {} requests, {} failed",
        load.requests, load.failed
    );
    assert_eq!(load.failed, 0, "{}", load.text);
    assert_eq!(epochs(&pod)["crashes_total"], 0);

    let t = terminate(&mut pod, &[baton_command(), "drain".into()], GRACE);
    report_termination("envoy pod (recreated secret)", &t, &prober);
    assert_eq!(t.pre_stop.code, Some(0), "preStop: {}", t.pre_stop.output);
    assert!(!t.killed, "baton outlived the grace period ({GRACE:?})");
    assert_eq!(t.exit_code, Some(0));
    drop(prober);
    let left = pod.teardown();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn envoy_pod_container_restarted_after_a_sigkill_serves_again_in_the_same_pod() {
    let EnvoyPod {
        mut pod,
        secret,
        prober,
        ..
    } = EnvoyPod::ready(1);
    // The OOM killer (or a grace period run out): no chance to clean up.
    pod.baton().signal(nix::sys::signal::Signal::SIGKILL);
    eventually("baton killed", START, || pod.baton().try_exit());
    prober.wait_ready(false, START);
    // Envoy's segment of the killed instance stays in the pod's /dev/shm.
    let stale = pod.shm();
    assert_eq!(stale.len(), 1, "{stale:?}");
    // The kubelet restarts the container in the same pod: same network, /dev/shm
    // and volumes.
    pod.start_baton(&envoy_args(&secret), &[]);
    prober.wait_ready(true, START);
    assert_eq!(served_serial(pod.addr(LISTEN_PORT)), Some(serial(0)));
    let t = terminate(&mut pod, &[baton_command(), "drain".into()], GRACE);
    report_termination("envoy pod (restarted container)", &t, &prober);
    assert_eq!(t.exit_code, Some(0));
    drop(prober);
    let left = pod.teardown();
    // The restarted baton found the killed one's files in the same config dir
    // (`$TMPDIR/baton-1`: PID 1 in every container) and removed them with the
    // segment they name, as no live process used it: nothing is left.
    assert!(left.other.is_empty(), "left behind: {left:#?}");
    assert!(left.shm.is_empty(), "left behind: {left:#?}");
}
