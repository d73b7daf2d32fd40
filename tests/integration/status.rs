//! The status server and the client commands against a running baton and real Envoy.

use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use super::harness::*;

const START: Duration = Duration::from_secs(30);

/// An Envoy wrapper that takes `delay` before becoming Envoy, so "starting" lasts.
fn slow_envoy(setup: &EnvoySetup, delay: &str) -> String {
    let wrapper = setup.path("slow-envoy.sh");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nsleep {delay}\nexec {} \"$@\"\n",
            envoy_binary().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper.display().to_string()
}

fn ready(port: u16) -> Result<(u16, String), String> {
    http(port, "GET", "/healthz/ready")
}

#[test]
fn readiness_is_503_while_starting_then_200_and_stays_200_through_a_restart() {
    let setup = EnvoySetup::new();
    let wrapper = slow_envoy(&setup, "0.5");
    // The first answer of the status server, while Envoy is not even started.
    let (mut baton, _upstream, _port, (code, body)) = setup.start_with(
        |setup, ports| {
            let mut args = setup.args(ports, "standalone", &[]);
            let at = args.iter().position(|a| a == "--envoy-binary").unwrap();
            args[at + 1] = wrapper.clone();
            args
        },
        |baton| {
            let status = baton.status_port;
            eventually("status server up", START, || ready(status).ok())
        },
    );
    let status = baton.status_port;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("starting"), "{body}");
    eventually("ready", START, || {
        (ready(status).ok()?.0 == 200).then_some(())
    });

    // Through a hot restart readiness never drops.
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                seen.push(ready(status).map(|(c, _)| c));
                std::thread::sleep(Duration::from_millis(10));
            }
            seen
        })
    };
    let (code, body) = http(status, "POST", "/restart").unwrap();
    assert_eq!(code, 202, "{body}");
    baton.wait_serving(1, START);
    baton.wait_for("epoch exited", &[("epoch", json!(0))], START);
    stop.store(true, Ordering::Relaxed);
    let seen = poller.join().unwrap();
    assert!(seen.len() > 10, "too few probes: {}", seen.len());
    assert!(
        seen.iter().all(|r| r == &Ok(200)),
        "readiness dropped: {seen:?}"
    );
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
}

#[test]
fn epochs_endpoint_reflects_a_hot_restart() {
    let (mut baton, _upstream, _port) = EnvoySetup::new().start("standalone", &[]);
    let status = baton.status_port;
    let (code, body) = http(status, "POST", "/restart").unwrap();
    assert_eq!(code, 202);
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["coalesced"], json!(false), "{reply}");
    baton.wait_serving(1, START);
    let (code, body) = http(status, "GET", "/epochs").unwrap();
    assert_eq!(code, 200);
    let epochs: Value = serde_json::from_str(&body).unwrap();
    let list = epochs["epochs"].as_array().expect("epochs list");
    let state_of = |n: u64| {
        list.iter()
            .find(|e| e["number"] == json!(n))
            .map(|e| e["state"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(state_of(1).as_deref(), Some("serving"), "{epochs}");
    assert!(
        matches!(state_of(0).as_deref(), Some("draining" | "exited")),
        "{epochs}"
    );
    let digest = list.iter().find(|e| e["number"] == json!(1)).unwrap()["config_digest"].clone();
    assert_eq!(
        digest.as_str().map(str::len),
        Some(64),
        "sha256 hex expected: {epochs}"
    );

    let (code, out, err) = run_baton(&["status", "--status-addr", &format!("127.0.0.1:{status}")]);
    assert_eq!(code, 0, "{err}");
    // Its table has a row for epoch 1 that says it serves.
    assert!(
        out.lines().any(|row| {
            let cells: Vec<&str> = row.split_whitespace().collect();
            cells.first() == Some(&"1") && cells.contains(&"serving")
        }),
        "{out}"
    );
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
}

#[test]
fn restart_request_and_sighup_together_give_one_restart() {
    let (mut baton, _upstream, _port) = EnvoySetup::new().start("standalone", &[]);
    let status = baton.status_port;
    baton.signal(Signal::SIGHUP);
    let (code, _) = http(status, "POST", "/restart").unwrap();
    assert_eq!(code, 202);
    baton.wait_serving(1, START);
    // Epoch 0 has drained and gone: any follow-up restart would have started by now.
    baton.wait_for("epoch exited", &[("epoch", json!(0))], START);
    assert_eq!(
        baton.count("hot restart requested", &[]),
        1,
        "{:?}",
        baton.records()
    );
    assert!(baton
        .find("epoch started", &[("epoch", json!(2))])
        .is_none());
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
}

#[test]
fn prometheus_endpoint_merges_baton_and_envoy_metrics() {
    let (mut baton, _upstream, _port) = EnvoySetup::new().start("standalone", &[]);
    let (code, body) = http(baton.status_port, "GET", "/stats/prometheus").unwrap();
    assert_eq!(code, 200);
    for trigger in ["signal", "file", "cert", "http", "crash"] {
        let series = format!("baton_restarts_total{{trigger=\"{trigger}\"}}");
        assert_eq!(
            prometheus_sample(&body, &series),
            Some(0.0),
            "{series}: {body}"
        );
    }
    assert_eq!(prometheus_sample(&body, "baton_ready"), Some(1.0), "{body}");
    assert_eq!(
        prometheus_sample(&body, "envoy_server_live"),
        Some(1.0),
        "{body}"
    );
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
}

#[test]
fn drain_makes_baton_unready_and_quitquitquit_shuts_it_down() {
    let (mut baton, _upstream, port) = EnvoySetup::new().start("standalone", &[]);
    let status = baton.status_port;
    let (code, body) = http(status, "POST", "/drain").unwrap();
    assert_eq!(code, 202, "{body}");
    let (code, body) = ready(status).unwrap();
    assert_eq!(code, 503);
    assert!(body.contains("draining"), "{body}");
    // Draining is graceful: requests are still answered during the drain period.
    assert_eq!(get(port), Ok(200));
    let (code, _) = http(status, "POST", "/quitquitquit").unwrap();
    assert_eq!(code, 202);
    assert_eq!(baton.wait_exit(START), Some(0));
}

#[test]
fn baton_wait_returns_0_once_ready_and_1_on_timeout() {
    // `baton wait` from the start, and what /epochs said the moment it returned.
    let (mut baton, _upstream, _port, ((code, out, err), epochs)) = EnvoySetup::new().start_with(
        |setup, ports| setup.args(ports, "standalone", &[]),
        |baton| {
            let addr = format!("127.0.0.1:{}", baton.status_port);
            let waited = run_baton(&["wait", "--status-addr", &addr, "--timeout", "30s"]);
            (waited, baton.epochs())
        },
    );
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(epochs["readiness"]["status"], json!("ready"), "{epochs}");
    assert_eq!(epochs_in(&epochs, "serving"), vec![0], "{epochs}");
    assert!(baton.find(SERVING, &[("epoch", json!(0))]).is_some());
    // Bound and never listening: connections are refused for as long as it is held.
    let closed = ClosedPort::new();
    let nobody = closed.addr();
    let (code, _, err) = run_baton(&["wait", "--status-addr", &nobody, "--timeout", "300ms"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = run_baton(&["restart", "--status-addr", &nobody]);
    assert_eq!(code, 1);
    assert!(err.contains(&nobody), "{err}");
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
}
