//! The pod lifecycle through the real binary: start-up mistakes that end baton at
//! once naming the culprit, drain on request, termination, and JSON logs.

use std::net::TcpListener;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use super::harness::*;
use super::load::Load;

const START: Duration = Duration::from_secs(30);

/// The record of baton giving up, once it has exited.
fn giving_up(baton: &Baton) -> Value {
    baton
        .records()
        .into_iter()
        .find(|r| {
            r["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("baton gives up: "))
        })
        .expect("a 'baton gives up' record")
}

/// `args` with the status server off: a test of a failing start needs no status
/// port that another process could take meanwhile.
fn status_off(mut args: Vec<String>) -> Vec<String> {
    let at = args.iter().position(|a| a == "--status-addr").unwrap();
    args[at + 1] = "off".into();
    args
}

/// A start-up failure is not a crash loop: one epoch started, none crashed.
fn assert_no_retry(baton: &Baton) {
    assert_eq!(baton.count("epoch started", &[]), 1, "retried");
    assert_eq!(
        baton.count("serving epoch crashed; restarting it", &[]),
        0,
        "a start-up failure was counted as a crash"
    );
}

#[test]
fn envoy_listener_port_in_use_ends_baton_at_once_naming_the_address() {
    let setup = EnvoySetup::new();
    let ports = Ports::choose();
    let taken = TcpListener::bind(("127.0.0.1", ports.listen)).unwrap();
    let port = ports.listen;
    let args = status_off(setup.args(&ports, "standalone", &[]));
    let mut baton = Baton::launch(setup.dir, &args, &[]);
    assert_eq!(baton.wait_exit(START), Some(1));
    let record = giving_up(&baton);
    let message = record["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("127.0.0.1:{port}")),
        "the address is not named: {message}"
    );
    assert_eq!(record["code"], json!(1));
    assert_no_retry(&baton);
    drop(taken);
}

#[test]
fn envoy_admin_port_in_use_ends_baton_at_once_naming_the_address() {
    let setup = EnvoySetup::new();
    let ports = Ports::choose();
    let taken = TcpListener::bind(("127.0.0.1", ports.admin)).unwrap();
    let admin = ports.admin;
    let args = status_off(setup.args(&ports, "standalone", &[]));
    let mut baton = Baton::launch(setup.dir, &args, &[]);
    assert_eq!(baton.wait_exit(START), Some(1));
    let message = giving_up(&baton)["message"].as_str().unwrap().to_string();
    assert!(message.contains(&admin.to_string()), "{message}");
    assert_no_retry(&baton);
    drop(taken);
}

#[test]
fn a_missing_command_under_baton_run_exits_127_naming_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = [
        "run",
        "--listen",
        "http=tcp://127.0.0.1:0",
        "--status-addr",
        "off",
        "--",
        "/nonexistent/proxy-binary",
        "-f",
        "x",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut baton = Baton::launch(dir, &args, &[]);
    assert_eq!(baton.wait_exit(START), Some(127));
    let message = giving_up(&baton)["message"].as_str().unwrap().to_string();
    assert!(message.contains("/nonexistent/proxy-binary"), "{message}");
    assert_no_retry(&baton);
}

#[test]
fn a_missing_template_exits_78_at_once_naming_it() {
    let setup = EnvoySetup::new();
    let typo = setup.path("typo.json");
    let args = status_off(setup.args(
        &Ports::choose(),
        typo.to_str().unwrap(),
        &["--cert-wait", "2m"],
    ));
    let mut baton = Baton::launch(setup.dir, &args, &[]);
    assert_eq!(baton.wait_exit(START), Some(78));
    let message = giving_up(&baton)["message"].as_str().unwrap().to_string();
    assert!(message.contains("typo.json"), "{message}");
    assert!(
        baton
            .find(
                "waiting for certificates and watched files to appear (--cert-wait)",
                &[]
            )
            .is_none(),
        "a template is not a file to wait for"
    );
}

#[test]
fn a_missing_certificate_is_waited_for_saying_what_is_awaited() {
    let setup = EnvoySetup::new();
    let (cert, key) = (setup.path("tls.crt"), setup.path("tls.key"));
    let pair = format!("{}:{}", cert.display(), key.display());
    let args = status_off(setup.args(
        &Ports::choose(),
        "standalone",
        &["--cert", &pair, "--cert-wait", "300ms"],
    ));
    let mut baton = Baton::launch(setup.dir, &args, &[]);
    assert_eq!(baton.wait_exit(START), Some(78));
    let waiting = baton
        .find(
            "waiting for certificates and watched files to appear (--cert-wait)",
            &[],
        )
        .expect("a line saying what baton waits for");
    let missing = waiting["missing"]
        .as_array()
        .expect("missing as a JSON array");
    assert!(
        missing.contains(&json!(cert.display().to_string())),
        "{waiting}"
    );
}

#[test]
fn json_logs_are_one_object_per_line_including_the_proxys_own_output() {
    let (mut baton, _upstream, _port) =
        EnvoySetup::new().start("standalone", &["--proxy-log-level", "info"]);
    baton.wait_serving(0, START);
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
    let text = std::fs::read_to_string(&baton.log).unwrap();
    let mut proxy_lines = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let record: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        if record["source"] == json!("proxy") {
            proxy_lines += 1;
            assert_eq!(record["epoch"], json!(0), "{record}");
            assert!(record["pid"].is_u64(), "{record}");
        }
    }
    assert!(proxy_lines > 0, "no line of Envoy's own was relayed");
    let serving = baton.find("epoch ready and serving", &[]).unwrap();
    assert_eq!(
        serving["replaced"],
        json!([]),
        "a list field as a JSON array"
    );
}

#[test]
fn sigterm_with_exit_on_zero_connections_ends_as_soon_as_envoy_is_idle() {
    // The termination drain bound is long: only the idle check can end it early.
    let (mut baton, _upstream, port, ()) = EnvoySetup::new().start_with(
        |setup, ports| {
            let mut args = setup.args(
                ports,
                "standalone",
                &[
                    "--exit-on-zero-active-connections",
                    "--minimum-drain-duration",
                    "500ms",
                ],
            );
            let at = args
                .iter()
                .position(|a| a == "--termination-drain-duration")
                .unwrap();
            args[at + 1] = "2m".into();
            args
        },
        |_| (),
    );
    assert_eq!(get(port), Ok(200));
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(Duration::from_secs(60)), Some(0));
    assert!(baton.find("no active connection left", &[]).is_some());
    assert!(baton.leftovers().is_empty(), "left {:?}", baton.leftovers());
}

#[test]
fn drain_durations_istio_accepts_start_with_a_flush_that_fits() {
    let (code, out, err) = run_baton(&[
        "render",
        "--template",
        "standalone",
        "--var",
        "listen_port=8080",
        "--var",
        "upstream=127.0.0.1:9000",
        "--drain-duration",
        "5s",
        "--parent-shutdown-duration",
        "6s",
    ]);
    assert_eq!(code, 0, "{err}");
    let json: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["stats_flush_interval"], json!("1.000s"));
    assert!(
        err.contains("--stats-flush-interval not given: 1s"),
        "{err}"
    );
    let (code, _, err) = run_baton(&[
        "render",
        "--template",
        "standalone",
        "--var",
        "listen_port=1",
        "--var",
        "upstream=127.0.0.1:2",
        "--drain-duration",
        "60s",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("--parent-shutdown-duration not given"),
        "{err}"
    );
}

#[test]
fn a_drained_haproxy_keeps_serving_with_no_signal_and_no_crash_until_sigterm() {
    let upstream = Upstream::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/haproxy/haproxy.cfg");
    let cfg = cfg.to_str().unwrap().to_string();
    let upstream_addr = upstream.addr();
    let mut baton = Baton::start_listening(dir, &[("UPSTREAM", &upstream_addr)], |ports| {
        [
            "run",
            "--listen",
            "http=tcp://127.0.0.1:0",
            "--status-addr",
            &format!("127.0.0.1:{}", ports.status),
            "--ready",
            "notify",
            "--drain-signal",
            "SIGUSR1",
            "--termination-drain-duration",
            "5s",
            "--",
            "haproxy",
            "-Ws",
            "-f",
            &cfg,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    });
    let (port, status) = (baton.listener_port("http"), baton.status_port);
    let status_addr = format!("127.0.0.1:{status}");
    baton.wait_serving(0, START);

    let (code, out, err) = run_baton(&["drain", "--status-addr", &status_addr]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("epoch 0 serves what it has"), "{out}");
    let (code, body) = http(status, "GET", "/healthz/ready").unwrap();
    assert_eq!((code, body.trim()), (503, "draining (POST /drain)"));

    let load = Load::start(port, 4, 2_000, Duration::from_secs(20));
    eventually("2,000 requests through the drained proxy", START, || {
        (load.ok() >= 2_000).then_some(())
    });
    let tally = load.stop();
    assert!(tally.ok > 0);
    assert_eq!(
        tally.errors, 0,
        "failed requests after a drain: {:?}",
        tally.samples
    );

    let (_, body) = http(status, "GET", "/epochs").unwrap();
    let epochs: Value = serde_json::from_str(&body).unwrap();
    let serving: Vec<&Value> = epochs["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["state"] == json!("serving"))
        .collect();
    assert_eq!(serving.len(), 1, "{epochs}");
    assert_eq!(serving[0]["number"], json!(0), "{epochs}");
    assert_eq!(epochs["crashes_total"], json!(0), "{epochs}");
    let (_, metrics) = http(status, "GET", "/stats/prometheus").unwrap();
    assert!(
        metrics.lines().any(|l| l == "baton_proxy_crashes_total 0"),
        "{metrics}"
    );
    // After a drain no restart happens, and the client says so.
    let (code, _, err) = run_baton(&["restart", "--status-addr", &status_addr]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("drained on request"), "{err}");

    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
    assert!(baton.leftovers().is_empty(), "left {:?}", baton.leftovers());
}
