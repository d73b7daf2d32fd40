//! Counters that never go backwards: the stats segment across epochs of `baton run`
//! (a Rust proxy counting with `baton::child`), and Envoy's counters carried by baton.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use super::harness::*;
use super::load::hot_restarts_under_load;

const START: Duration = Duration::from_secs(30);

/// `target/<profile>/examples/counting_proxy`: `scripts/test` builds it first
/// (`cargo build --examples`; `cargo test` alone only leaves hashed copies, some of
/// which are test harnesses).
fn counting_proxy() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = dir.join("examples").join("counting_proxy");
    assert!(
        path.is_file(),
        "{} missing: run scripts/test, or `cargo build --examples` first",
        path.display()
    );
    path
}

/// `baton stats` of a running baton, as JSON samples.
fn baton_stats(args: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("stats")
        .args(args)
        .args(["--format", "json"])
        .output()
        .expect("baton stats");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("JSON samples")
}

fn value_of(samples: &[Value], name: &str) -> Option<i64> {
    samples
        .iter()
        .find(|s| s["name"] == json!(name))
        .and_then(|s| s["value"].as_i64())
}

#[test]
fn child_counters_add_up_exactly_across_twenty_hot_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = counting_proxy();
    let mut baton = Baton::start_listening(dir, &[], |ports| {
        [
            "run",
            "--listen",
            "http=tcp://127.0.0.1:0",
            "--status-addr",
            &format!("127.0.0.1:{}", ports.status),
            "--ready",
            "delay:150ms",
            "--parent-shutdown-duration",
            "5s",
            "--",
            proxy.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    });
    let (port, status) = (baton.listener_port("http"), baton.status_port);
    baton.wait_serving(0, START);
    let tally = hot_restarts_under_load(&mut baton, port, 20, 100);
    assert_eq!(tally.errors, 0, "{:?}", tally.samples);
    let addr = format!("127.0.0.1:{status}");
    let samples = baton_stats(&["--status-addr", &addr]);
    let counted = value_of(&samples, "requests").expect("requests counter");
    eprintln!(
        "child counter across 20 restarts: client {} ok, segment {counted}",
        tally.ok
    );
    assert_eq!(counted as u64, tally.ok);
    // The same segment, read straight from baton's fds.
    let by_pid = baton_stats(&["--pid", &baton.pid().to_string()]);
    assert_eq!(value_of(&by_pid, "requests"), Some(counted));
    assert_eq!(value_of(&by_pid, "baton.restarts"), Some(20));
    // Drained epochs left no connections behind in the gauge.
    eventually("old epochs gone", START, || {
        let s = baton_stats(&["--status-addr", &addr]);
        (value_of(&s, "baton.epochs_running") == Some(1)).then_some(())
    });
    let s = baton_stats(&["--status-addr", &addr]);
    assert_eq!(value_of(&s, "connections"), Some(0), "{s:?}");
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
}

/// The value of the series `name{labels}` (labels exactly as written) in the scrape.
pub fn scraped(status_port: u16, series: &str) -> Option<u64> {
    let (_, text) = http(status_port, "GET", "/stats/prometheus").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn envoy_counters_carry_across_twenty_hot_restarts_exactly() {
    let (mut baton, _upstream, port) = EnvoySetup::new().start("standalone", &[]);
    let status = baton.status_port;
    let tally = hot_restarts_under_load(&mut baton, port, 20, 100);
    assert_eq!(tally.errors, 0, "{:?}", tally.samples);
    // Envoy's own labelled series, as dashboards query it.
    let series = r#"envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="ingress_http"}"#;
    // Epochs flush every 250ms; the last increments arrive within a few flushes.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let carried = loop {
        let v = scraped(status, series).unwrap_or(0);
        if v >= tally.ok || std::time::Instant::now() > deadline {
            break v;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "envoy counter across 20 restarts: client {} ok, carried {carried}",
        tally.ok
    );
    assert_eq!(carried, tally.ok);
    let (_, metrics) = http(status, "GET", "/stats/prometheus").unwrap();
    // Once, under Envoy's name and labels: no unlabelled copy.
    assert_eq!(
        metrics
            .matches("downstream_rq_total{envoy_http_conn_manager_prefix=\"ingress_http\"}")
            .count(),
        1
    );
    assert!(!metrics.contains("envoy_http_ingress_http_downstream_rq_total"));
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
}
