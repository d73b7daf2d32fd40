//! What the kubelet does to a pod, as it does it: readiness probes from the node,
//! and termination (preStop exec, SIGTERM, SIGKILL after the grace period).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::sandbox::{Exec, Pod};
use super::traffic;

/// A readiness probe's settings (`readinessProbe.httpGet`), period scaled down.
#[derive(Debug, Clone, Copy)]
pub struct ProbeSpec {
    pub period: Duration,
    /// `timeoutSeconds`: the kubelet's default is 1 s.
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Default for ProbeSpec {
    fn default() -> Self {
        ProbeSpec {
            period: Duration::from_millis(100),
            timeout: Duration::from_secs(1),
            success_threshold: 1,
            failure_threshold: 3,
        }
    }
}

/// One probe: when it was sent, and the status or why there was none.
#[derive(Debug, Clone)]
pub struct ProbeResult {
    pub at: Instant,
    pub outcome: Result<u16, String>,
}

impl ProbeResult {
    /// The kubelet's rule: 200 ≤ status < 400 is success.
    pub fn success(&self) -> bool {
        matches!(self.outcome, Ok(code) if (200..400).contains(&code))
    }
}

#[derive(Debug, Default)]
struct ProbeLog {
    results: Vec<ProbeResult>,
    /// (when, Ready) each time the pod's Ready condition changed.
    transitions: Vec<(Instant, bool)>,
}

/// The pod's Ready condition as the kubelet derives it from probe results: false
/// at first; flips after `success_threshold` successes (or `failure_threshold`
/// failures) in a row.
#[derive(Debug)]
struct ReadyCondition {
    spec: ProbeSpec,
    ready: bool,
    /// Results in a row equal to the last one.
    run: u32,
    last: Option<bool>,
}

impl ReadyCondition {
    fn new(spec: ProbeSpec) -> Self {
        ReadyCondition {
            spec,
            ready: false,
            run: 0,
            last: None,
        }
    }

    /// Take one probe result; the new condition if it flipped.
    fn observe(&mut self, success: bool) -> Option<bool> {
        self.run = if self.last == Some(success) {
            self.run + 1
        } else {
            1
        };
        self.last = Some(success);
        let threshold = if success {
            self.spec.success_threshold
        } else {
            self.spec.failure_threshold
        };
        (success != self.ready && self.run >= threshold).then(|| {
            self.ready = success;
            success
        })
    }
}

/// `GET /healthz/ready` to the pod IP from outside, every period, with the
/// kubelet's threshold logic: not Ready until `success_threshold` successes in a
/// row, then not Ready again after `failure_threshold` failures in a row.
pub struct Prober {
    log: Arc<Mutex<ProbeLog>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub started: Instant,
}

impl Prober {
    pub fn start(target: SocketAddr, spec: ProbeSpec) -> Self {
        let log = Arc::new(Mutex::new(ProbeLog::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let thread = {
            let (log, stop) = (log.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut condition = ReadyCondition::new(spec);
                let mut next = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    let at = Instant::now();
                    let result = ProbeResult {
                        at,
                        outcome: probe(target, spec.timeout),
                    };
                    let flip = condition.observe(result.success());
                    let mut log = log.lock().unwrap();
                    log.results.push(result);
                    if let Some(ready) = flip {
                        log.transitions.push((at, ready));
                    }
                    drop(log);
                    // A ticker: a slow probe does not shift the ones after it.
                    next += spec.period;
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    } else {
                        next = now;
                    }
                }
            })
        };
        Prober {
            log,
            stop,
            thread: Some(thread),
            started,
        }
    }

    /// Wait until the pod's Ready condition is `want`; when it became so.
    pub fn wait_ready(&self, want: bool, timeout: Duration) -> Instant {
        crate::harness::eventually(&format!("pod Ready={want} (probes)"), timeout, || {
            let log = self.log.lock().unwrap();
            match log.transitions.last() {
                Some((at, r)) if *r == want => Some(*at),
                None if !want => Some(self.started),
                _ => None,
            }
        })
    }

    pub fn transitions(&self) -> Vec<(Instant, bool)> {
        self.log.lock().unwrap().transitions.clone()
    }

    pub fn results(&self) -> Vec<ProbeResult> {
        self.log.lock().unwrap().results.clone()
    }

    /// The transitions as `+1.234s Ready` lines, from the prober's start.
    pub fn describe(&self) -> String {
        self.transitions()
            .iter()
            .map(|(at, r)| {
                let t = at.duration_since(self.started).as_secs_f64();
                format!("+{t:.3}s {}", if *r { "Ready" } else { "NotReady" })
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One probe as the kubelet sends it: a new connection, `Connection: close`.
fn probe(target: SocketAddr, timeout: Duration) -> Result<u16, String> {
    let headers = "user-agent: kube-probe/1.31\r\naccept: */*\r\n";
    traffic::request(target, "GET", "/healthz/ready", headers, timeout).map(|(code, _)| code)
}

/// What happened when the kubelet terminated the pod.
#[derive(Debug)]
pub struct Termination {
    /// When the preStop hook started.
    pub pre_stop_at: Instant,
    pub pre_stop: Exec,
    /// When SIGTERM was sent.
    pub sigterm_at: Instant,
    /// From SIGTERM to the container's exit (or to SIGKILL's effect).
    pub sigterm_to_exit: Duration,
    /// The container's exit code (`None`: killed by a signal).
    pub exit_code: Option<i32>,
    /// Whether the grace period ran out and SIGKILL was sent.
    pub killed: bool,
}

/// Terminate the baton container as the kubelet does: run the preStop exec in the
/// container's namespaces (to completion, within the grace period), then SIGTERM
/// PID 1, then SIGKILL once `grace` (counted from the start, preStop included) is
/// over.
pub fn terminate(pod: &mut Pod, pre_stop: &[String], grace: Duration) -> Termination {
    let pre_stop_at = Instant::now();
    let deadline = pre_stop_at + grace;
    let pre_stop = pod.exec(pre_stop, grace);
    let sigterm_at = Instant::now();
    pod.baton().signal(Signal::SIGTERM);
    let mut killed = false;
    let status = loop {
        if let Some(status) = pod.baton().try_exit() {
            break status;
        }
        if !killed && Instant::now() >= deadline {
            killed = true;
            pod.baton().signal(Signal::SIGKILL);
        }
        assert!(
            Instant::now() < deadline + Duration::from_secs(10),
            "baton survived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    Termination {
        pre_stop_at,
        pre_stop,
        sigterm_at,
        sigterm_to_exit: sigterm_at.elapsed(),
        exit_code: status.code(),
        killed,
    }
}

#[test]
fn ready_condition_follows_the_kubelets_thresholds() {
    let mut c = ReadyCondition::new(ProbeSpec::default());
    let flips: Vec<_> = [
        false, true, true, false, false, true, false, false, false, false,
    ]
    .into_iter()
    .map(|success| c.observe(success))
    .collect();
    // Ready on the first success; two failures in a row are not enough, three are.
    assert_eq!(
        flips,
        [
            None,
            Some(true),
            None,
            None,
            None,
            None,
            None,
            None,
            Some(false),
            None
        ]
    );
}
