//! `baton run` end to end: a socket-activated server, HAProxy and nginx on sockets
//! baton holds.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use super::harness::*;
use super::load::hot_restarts_under_load;

const START: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn example(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(path)
}

/// Let baton choose the listener's port; [`Baton::listener_port`] tells which.
const ANY_PORT: u16 = 0;

/// `baton run` arguments common to these tests, with a listener `http` on `port`.
fn run_args(port: u16, status: u16, extra: &[&str], command: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--listen".into(),
        format!("http=tcp://127.0.0.1:{port}"),
        "--status-addr".into(),
        format!("127.0.0.1:{status}"),
        "--parent-shutdown-duration".into(),
        "3s".into(),
        "--termination-drain-duration".into(),
        "1s".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args.push("--".into());
    args.extend(command.iter().map(|s| s.to_string()));
    args
}

/// A socket-activated test server whose behaviour per epoch is read from a file.
struct Activated {
    baton: Baton,
    port: u16,
    mode: PathBuf,
}

impl Activated {
    fn start(mode: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mode_file = dir.path().join("mode");
        std::fs::write(&mode_file, mode).unwrap();
        let script = fixture("socket_server.py");
        let mut baton = Baton::start_listening(dir, &[], |ports| {
            run_args(
                ANY_PORT,
                ports.status,
                extra,
                &[
                    "python3",
                    script.to_str().unwrap(),
                    mode_file.to_str().unwrap(),
                ],
            )
        });
        let port = baton.listener_port("http");
        Activated {
            baton,
            port,
            mode: mode_file,
        }
    }

    fn report(&self) -> Value {
        let (code, body) = http(self.port, "GET", "/").expect("GET /");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).expect("JSON report")
    }

    fn next_epoch_does(&self, mode: &str) {
        std::fs::write(&self.mode, mode).unwrap();
    }
}

#[test]
fn socket_activated_server_gets_the_listener_and_its_own_listen_pid() {
    let mut s = Activated::start("serve", &["--ready", "notify"]);
    s.baton.wait_serving(0, START);
    let report = s.report();
    let env = &report["env"];
    assert_eq!(
        env["LISTEN_PID"],
        json!(report["pid"].to_string()),
        "{report}"
    );
    assert_eq!(env["LISTEN_FDS"], json!("1"));
    assert_eq!(env["LISTEN_FDNAMES"], json!("http"));
    assert_eq!(env["BATON_FD_HTTP"], json!("3"));
    assert_eq!(env["NGINX"], json!("3;"));
    assert_eq!(env["BATON_EPOCH"], json!("0"));
    let fds = report["fds"].as_object().unwrap();
    assert!(
        fds["3"].as_str().unwrap().starts_with("socket:"),
        "{report}"
    );
    // Python itself may open a few fds of its own; none may be one of baton's.
    for (fd, target) in fds {
        assert!(
            fd == "3" || !target.as_str().unwrap_or("").starts_with("socket:"),
            "unexpected inherited socket at fd {fd}: {report}"
        );
    }

    s.baton.signal(Signal::SIGHUP);
    s.baton.wait_serving(1, START);
    let again = eventually("epoch 1 answers", START, || {
        let r = s.report();
        (r["env"]["BATON_EPOCH"] == json!("1")).then_some(r)
    });
    assert_eq!(again["env"]["LISTEN_PID"], json!(again["pid"].to_string()));
    // The old epoch was told to drain (SIGTERM) and left.
    let exit = s
        .baton
        .wait_for("epoch exited", &[("epoch", json!(0))], START);
    assert_eq!(exit["status"], json!("exit code 0"), "{exit}");
    s.baton.signal(Signal::SIGTERM);
    assert_eq!(s.baton.wait_exit(START), Some(0));
    assert!(s.baton.leftovers().is_empty(), "{:?}", s.baton.leftovers());
}

#[test]
fn failing_preflight_keeps_the_serving_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let veto = dir.path().join("veto");
    let check = format!("test ! -e {}", veto.display());
    let mut s = Activated::start("serve", &["--ready", "delay:200ms", "--preflight", &check]);
    s.baton.wait_serving(0, START);
    std::fs::write(&veto, "no").unwrap();
    s.baton.signal(Signal::SIGHUP);
    let refused = s
        .baton
        .wait_refused(&[("reason", json!("preflight"))], START);
    assert!(refusal_error(&refused).contains("--preflight"), "{refused}");
    assert_eq!(s.report()["env"]["BATON_EPOCH"], json!("0"));
    s.baton.assert_only_serving(0);
    std::fs::remove_file(&veto).unwrap();
    s.baton.signal(Signal::SIGHUP);
    s.baton.wait_serving(1, START);
    s.baton.signal(Signal::SIGTERM);
    assert_eq!(s.baton.wait_exit(START), Some(0));
}

#[test]
fn new_epoch_that_exits_at_once_keeps_the_old_one_serving() {
    let mut s = Activated::start("serve", &["--ready", "notify"]);
    s.baton.wait_serving(0, START);
    s.next_epoch_does("exit");
    s.baton.signal(Signal::SIGHUP);
    let refused = s.baton.wait_refused(&[("epoch", json!(1))], START);
    assert_eq!(refused["reason"], json!("exited"), "{refused}");
    assert_eq!(s.report()["env"]["BATON_EPOCH"], json!("0"));
    s.baton.assert_only_serving(0);
    let (_, ready) = http(s.baton.status_port, "GET", "/healthz/ready").unwrap();
    assert_eq!(ready.trim(), "ready");
    s.baton.signal(Signal::SIGTERM);
    assert_eq!(s.baton.wait_exit(START), Some(0));
}

#[test]
fn new_epoch_that_never_becomes_ready_is_killed_and_the_old_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("epoch-{epoch}-may-be-ready");
    let ready = format!("exec:test -e {}", gate.display());
    std::fs::write(dir.path().join("epoch-0-may-be-ready"), "").unwrap();
    let mut s = Activated::start("serve", &["--ready", &ready, "--ready-timeout", "1s"]);
    s.baton.wait_serving(0, START);
    s.baton.signal(Signal::SIGHUP);
    let refused = s.baton.wait_refused(&[("epoch", json!(1))], START);
    assert_eq!(refused["reason"], json!("not_ready"), "{refused}");
    let killed = s
        .baton
        .wait_for("epoch exited", &[("epoch", json!(1))], START);
    assert_eq!(killed["status"], json!("killed by signal 9"));
    assert_eq!(s.report()["env"]["BATON_EPOCH"], json!("0"));
    s.baton.assert_only_serving(0);
    s.baton.signal(Signal::SIGTERM);
    assert_eq!(s.baton.wait_exit(START), Some(0));
}

#[test]
fn a_proxy_that_binds_its_own_port_is_detected_and_refused() {
    let mut s = Activated::start("serve", &["--ready", "notify"]);
    s.baton.wait_serving(0, START);
    s.next_epoch_does("own-port");
    s.baton.signal(Signal::SIGHUP);
    let refused = s.baton.wait_refused(&[("epoch", json!(1))], START);
    let error = refusal_error(&refused);
    assert!(error.contains("holds the listener(s) http"), "{error}");
    assert_eq!(s.report()["env"]["BATON_EPOCH"], json!("0"));
    s.baton.assert_only_serving(0);
    s.baton.signal(Signal::SIGTERM);
    assert_eq!(s.baton.wait_exit(START), Some(0));
}

/// Ten hot restarts under load; every old epoch drains and exits; nothing is left.
/// `announces_close`: the proxy closes a draining keep-alive connection only after an
/// answer that says so (HAProxy's `idle-close-on-response`), so no client request may
/// meet a closed connection; nginx closes them without notice (counted, as a client
/// retries those).
fn ten_restarts_under_load(mut baton: Baton, port: u16, what: &str, announces_close: bool) {
    baton.wait_serving(0, START);
    let tally = hot_restarts_under_load(&mut baton, port, 10, 200);
    let mut lingered = 0;
    for epoch in 0..10u64 {
        let exit = baton.wait_for("epoch exited", &[("epoch", json!(epoch))], START);
        // With `idle-close-on-response` a draining HAProxy waits for each idle keep-alive
        // connection's next request, so a connection that stays idle keeps it until
        // `--parent-shutdown-duration` (3 s here) ends it: documented, and harmless as
        // long as no request fails (asserted below). Anything else must drain and exit.
        let ended_by_parent_shutdown = announces_close
            && exit["role"] == json!("stopping")
            && exit["status"] == json!("killed by signal 9")
            && exit["ran_ms"].as_u64().is_some_and(|ms| ms >= 3_000);
        if ended_by_parent_shutdown {
            lingered += 1;
        } else {
            assert_eq!(exit["role"], json!("draining"), "{what}: {exit}");
        }
    }
    eprintln!(
        "{what}: 10 hot restarts under load: {} ok, {} errors, {} stale keep-alive retries, \
         {lingered} old epochs ended by the parent shutdown",
        tally.ok, tally.errors, tally.stale_retries
    );
    assert_eq!(
        tally.errors, 0,
        "{what}: failed requests: {:?}",
        tally.samples
    );
    if announces_close {
        assert_eq!(
            tally.stale_retries, 0,
            "{what}: keep-alive connections closed under a request"
        );
    }
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
    assert!(
        baton.leftovers().is_empty(),
        "{what}: left behind {:?}",
        baton.leftovers()
    );
}

#[test]
fn haproxy_example_serves_through_ten_hot_restarts_without_a_failed_request() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = example("haproxy/haproxy.cfg");
    let cfg = cfg.to_str().unwrap();
    let check = format!("haproxy -c -q -f {cfg}");
    let upstream_addr = upstream.addr();
    // HAProxy serves on the socket baton holds (`fd@`): baton chooses the port.
    let mut baton = Baton::start_listening(dir, &[("UPSTREAM", &upstream_addr)], |ports| {
        run_args(
            ANY_PORT,
            ports.status,
            &[
                "--ready",
                "notify",
                "--drain-signal",
                "SIGUSR1",
                "--preflight",
                &check,
            ],
            &["haproxy", "-Ws", "-f", cfg],
        )
    });
    let port = baton.listener_port("http");
    ten_restarts_under_load(baton, port, "haproxy", true);
}

#[test]
fn nginx_example_serves_through_ten_hot_restarts_without_a_failed_request() {
    let dir = tempfile::tempdir().unwrap();
    let example = std::fs::read_to_string(example("nginx/nginx.conf")).unwrap();
    let cfg = dir.path().join("nginx.conf");
    let pid = dir.path().join("nginx.{epoch}.pid");
    let (cfg, pid) = (cfg.to_str().unwrap(), pid.to_str().unwrap());
    let check = format!(
        "nginx -t -q -c {cfg} -g 'pid {};'",
        dir.path().join("check.pid").display()
    );
    let ready = format!("exec:test -s {pid}");
    let pid_directive = format!("pid {pid};");
    // nginx adopts baton's socket only when its `listen` names the same address, so
    // the port is chosen first and written into the config (again on a retry: baton
    // fails to bind a port taken meanwhile).
    let mut baton = Baton::start_listening(dir, &[], |ports| {
        let listen = format!("127.0.0.1:{}", ports.listen);
        std::fs::write(cfg, example.replace("127.0.0.1:8080", &listen)).unwrap();
        run_args(
            ports.listen,
            ports.status,
            &[
                "--ready",
                &ready,
                "--drain-signal",
                "SIGQUIT",
                "--preflight",
                &check,
            ],
            &["nginx", "-c", cfg, "-g", &pid_directive],
        )
    });
    let port = baton.listener_port("http");
    ten_restarts_under_load(baton, port, "nginx", false);
}

#[test]
fn usr1_usr2_and_winch_reach_the_serving_epoch_only() {
    let mut s = Activated::start("serve", &["--ready", "notify"]);
    s.baton.wait_serving(0, START);
    s.baton.signal(Signal::SIGHUP);
    s.baton.wait_serving(1, START);
    for sig in [Signal::SIGUSR1, Signal::SIGUSR2, Signal::SIGWINCH] {
        s.baton.signal(sig);
    }
    let log = s.mode.with_extension("signals");
    let got = eventually("three signals noted", START, || {
        let text = std::fs::read_to_string(&log).ok()?;
        (text.lines().count() >= 3).then_some(text)
    });
    let mut lines: Vec<&str> = got.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, vec!["1 SIGUSR1", "1 SIGUSR2", "1 SIGWINCH"], "{got}");
    s.baton.signal(Signal::SIGTERM);
    assert_eq!(s.baton.wait_exit(START), Some(0));
}

/// The harness itself: a status port taken between choosing it and baton binding it
/// makes the start try again with fresh ports.
#[test]
fn a_status_port_taken_before_baton_binds_it_is_retried_with_fresh_ports() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mode = dir.path().join("mode");
    std::fs::write(&mode, "serve").unwrap();
    let script = fixture("socket_server.py");
    let mut attempts = 0;
    let mut baton = Baton::start_listening(dir, &[], |ports| {
        attempts += 1;
        if attempts == 1 {
            ports.status = taken;
        }
        let command = ["python3", script.to_str().unwrap(), mode.to_str().unwrap()];
        run_args(ANY_PORT, ports.status, &["--ready", "notify"], &command)
    });
    assert_eq!(attempts, 2);
    assert_ne!(baton.status_port, taken);
    let first = std::fs::read_to_string(baton.dir().join("baton.attempt-1.log")).unwrap();
    let needle = format!("--status-addr 127.0.0.1:{taken}: cannot listen");
    assert!(first.contains(&needle), "{first}");
    baton.wait_serving(0, START);
    baton.assert_only_serving(0);
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
    drop(held);
}
