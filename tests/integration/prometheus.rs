//! baton's scrape as Prometheus and its tools see it, against the real Envoy: Debian's
//! `promtool` parses it, every family and series appears once, baton's own plumbing is
//! not in it; a real Prometheus server scraping every second through hot restarts under
//! load stores Envoy's labelled counters without a reset and equal to the client's
//! count; the certificate expiry gauges follow a rotation.

use std::collections::HashSet;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::Signal;
use serde_json::Value;

use super::harness::*;
use super::stats::scraped;

const START: Duration = Duration::from_secs(30);
/// Envoy's own labelled series of the ingress listener's requests.
const INGRESS_RQ: &str =
    r#"envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="ingress_http"}"#;
const UPSTREAM_RQ: &str = r#"envoy_cluster_upstream_rq_total{envoy_cluster_name="upstream"}"#;

/// SIGTERM once the old epochs are gone, and a clean exit. (Terminating a draining
/// parent and its child at the same moment can leave the child blocked in Envoy's
/// hot-restart stats RPC until SIGKILL: shutdown's business, not these tests'.)
fn shut_down(baton: &mut Baton) {
    let status = baton.status_port;
    eventually("old epochs gone", START, || {
        (scraped(status, "baton_epochs_running")? == 1).then_some(())
    });
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
}

fn scrape(status: u16) -> String {
    let (code, text) = http(status, "GET", "/stats/prometheus").expect("scrape");
    assert_eq!(code, 200, "{text}");
    text
}

/// `promtool check metrics` on `text`: its exit code and findings. Exit 3 means lint
/// findings only (Envoy's names break Prometheus's naming conventions: counters
/// without `_total`, `_ms` units, no HELP); a parse error is exit 1.
fn promtool(text: &str) -> (i32, String) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (scripts/install-test-deps installs Debian's prometheus)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let findings = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), findings)
}

/// Every family is described once, every series (name and labels) appears once.
fn assert_each_family_and_series_once(text: &str) {
    let (mut families, mut series) = (HashSet::new(), HashSet::new());
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(families.insert(name.to_string()), "{name} described twice");
        } else if !line.starts_with('#') && !line.is_empty() {
            let (id, _) = line.rsplit_once(' ').expect(line);
            assert!(series.insert(id.to_string()), "series {id} twice");
        }
    }
}

#[test]
fn scrape_parses_with_promtool_and_has_each_family_and_series_once() {
    let (mut baton, _upstream, port) = EnvoySetup::new().start("standalone", &[]);
    let status = baton.status_port;
    baton.wait_serving(0, START);
    for _ in 0..20 {
        assert_eq!(get(port), Ok(200));
    }
    baton.signal(Signal::SIGHUP);
    baton.wait_serving(1, START);
    for _ in 0..10 {
        assert_eq!(get(port), Ok(200));
    }
    // Epoch 0 drains now: the moment a carried series and Envoy's could both show.
    let text = scrape(status);
    let (code, findings) = promtool(&text);
    eprintln!(
        "promtool: exit {code}, {} findings",
        findings.lines().count()
    );
    assert!(code == 0 || code == 3, "promtool exit {code}:\n{findings}");
    // A parse error reads `error while linting: text format parsing error …`; lint
    // findings start with the metric's name.
    assert!(
        !findings.lines().any(|l| l.starts_with("error")),
        "promtool could not parse it:\n{findings}"
    );
    let baton_findings: Vec<&str> = findings
        .lines()
        .filter(|l| l.starts_with("baton_"))
        .collect();
    assert!(baton_findings.is_empty(), "{baton_findings:?}");
    assert_each_family_and_series_once(&text);
    for plumbing in ["baton_metrics_service", "baton_statsd"] {
        assert!(!text.contains(plumbing), "{plumbing} exported");
    }
    assert!(!text.contains("envoy_http_ingress_http_downstream_rq_total"));
    for line in [
        "baton_restarts_total{trigger=\"signal\"} 1",
        "baton_restart_duration_seconds_count 1",
        "baton_envoy_stats_up 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing");
    }
    eventually("the 30 requests carried", START, || {
        (scraped(status, INGRESS_RQ)? == 30).then_some(())
    });
    shut_down(&mut baton);
}

/// A Prometheus server (Debian's) on loopback scraping one baton every second, killed
/// on drop; its data lives in its own temp dir.
struct PrometheusServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl PrometheusServer {
    /// Start on a port chosen free; a port taken meanwhile (Prometheus exits at once)
    /// is retried with another, as the harness does for baton's own ports.
    fn start(baton_status: u16) -> Self {
        for _ in 0..3 {
            if let Some(server) = Self::try_start(baton_status, Ports::choose().listen) {
                return server;
            }
        }
        panic!("prometheus could not listen on a port chosen free, three times");
    }

    fn try_start(baton_status: u16, port: u16) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
                 scrape_configs:\n  - job_name: baton\n    metrics_path: /stats/prometheus\n\
                 \x20   static_configs:\n      - targets: ['127.0.0.1:{baton_status}']\n"
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("prometheus (scripts/install-test-deps installs Debian's prometheus)");
        let mut server = PrometheusServer { child, port, dir };
        let up = eventually("prometheus ready or gone", START, || {
            if server.child.try_wait().ok().flatten().is_some() {
                return Some(false);
            }
            (http(port, "GET", "/-/ready").ok()?.0 == 200).then_some(true)
        });
        up.then_some(server)
    }

    /// The one value of an instant query, if it has exactly one.
    fn value(&self, query: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", percent_encode(query));
        let (code, body) = http(self.port, "GET", &path).ok()?;
        assert_eq!(code, 200, "{query}: {body}");
        let json: Value = serde_json::from_str(&body).ok()?;
        let result = json["data"]["result"].as_array()?;
        match result.as_slice() {
            [one] => one["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// A counter of Prometheus's own (`/metrics`), summed over its series.
    fn own_counter(&self, name: &str) -> f64 {
        let (_, text) = http(self.port, "GET", "/metrics").expect("prometheus /metrics");
        text.lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.path().join("prometheus.log"));
            eprintln!("--- prometheus log ---\n{}", log.unwrap_or_default());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A steady load that leaves the machine room to scrape: `workers` threads, each a
/// new connection per request and a 2 ms pause between requests (thousands of
/// requests a second; a saturating load starves the 1 s scrapes of CPU on a 2-core
/// machine, which is not what this test is about). Returns (ok, errors).
struct PacedLoad {
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<(u64, u64)>>,
    ok: Arc<AtomicU64>,
}

impl PacedLoad {
    fn start(port: u16, workers: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let threads = (0..workers)
            .map(|_| {
                let (stop, ok) = (stop.clone(), ok.clone());
                std::thread::spawn(move || {
                    let (mut mine, mut errors) = (0, 0);
                    let deadline = Instant::now() + Duration::from_secs(120);
                    while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                        match get(port) {
                            Ok(200) => {
                                mine += 1;
                                ok.fetch_add(1, Ordering::Relaxed);
                            }
                            _ => errors += 1,
                        }
                        std::thread::sleep(Duration::from_millis(2));
                    }
                    (mine, errors)
                })
            })
            .collect();
        PacedLoad { stop, threads, ok }
    }

    fn ok(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    fn stop(mut self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .drain(..)
            .map(|t| t.join().unwrap())
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d))
    }
}

impl Drop for PacedLoad {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[test]
fn prometheus_stores_envoys_labelled_counters_exactly_through_five_hot_restarts_under_load() {
    let (mut baton, _upstream, port) = EnvoySetup::new().start("standalone", &[]);
    let status = baton.status_port;
    baton.wait_serving(0, START);
    let prometheus = PrometheusServer::start(status);
    eventually("prometheus scraping baton", START, || {
        (prometheus.value("up{job=\"baton\"}")? == 1.0).then_some(())
    });
    let began = Instant::now();
    let load = PacedLoad::start(port, 4);
    for epoch in 1..=5 {
        let before = load.ok();
        baton.signal(Signal::SIGHUP);
        baton.wait_serving(epoch, START);
        eventually("requests through the new epoch", START, || {
            (load.ok() > before + 100).then_some(())
        });
    }
    let (sent, errors) = load.stop();
    assert_eq!(errors, 0, "requests failed across the hot restarts");
    eventually("baton's scrape to count every request", START, || {
        (scraped(status, INGRESS_RQ)? == sent).then_some(())
    });
    let stored = eventually("prometheus to store the last value", START, || {
        let v = prometheus.value(INGRESS_RQ)? as u64;
        (v == sent).then_some(v)
    });
    let elapsed = began.elapsed().as_secs_f64();
    // The scrapes since the first one seen, restarts included.
    let scrapes = prometheus
        .value(&format!(
            "count_over_time(up{{job=\"baton\"}}[{}s])",
            elapsed as u64
        ))
        .unwrap();
    let lowest_up = prometheus
        .value("min_over_time(up{job=\"baton\"}[10m])")
        .unwrap();
    let resets = prometheus
        .value(&format!("resets({INGRESS_RQ}[10m])"))
        .unwrap();
    let upstream_resets = prometheus
        .value(&format!("resets({UPSTREAM_RQ}[10m])"))
        .unwrap();
    let duplicates =
        prometheus.own_counter("prometheus_target_scrapes_sample_duplicate_timestamp_total");
    let slowest = prometheus
        .value(&format!(
            "max_over_time(scrape_duration_seconds{{job=\"baton\"}}[{}s])",
            elapsed as u64
        ))
        .unwrap_or(f64::NAN);
    eprintln!(
        "prometheus over {elapsed:.1}s and 5 hot restarts: {scrapes} scrapes (slowest {slowest:.3}s), \
         min(up) {lowest_up}, client {sent} ok, stored {stored}, resets {resets} / {upstream_resets}, \
         duplicate samples {duplicates}"
    );
    assert_eq!(lowest_up, 1.0, "a scrape failed (slowest {slowest:.3}s)");
    // Every second, give or take a busy machine.
    assert!(
        scrapes >= elapsed / 2.0,
        "{scrapes} scrapes in {elapsed:.1}s"
    );
    assert_eq!(resets, 0.0, "Prometheus saw the counter go backwards");
    assert_eq!(upstream_resets, 0.0);
    assert_eq!(duplicates, 0.0, "duplicate series in a scrape");
    shut_down(&mut baton);
}

/// A self-signed EC pair for localhost valid `days` days, with `serial`, in `dir`.
fn make_pair(dir: &Path, serial: u32, days: u32) {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args([
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-subj",
            "/CN=localhost",
        ])
        .arg("-keyout")
        .arg(dir.join("tls.key"))
        .arg("-out")
        .arg(dir.join("tls.crt"))
        .args([
            "-set_serial",
            &serial.to_string(),
            "-days",
            &days.to_string(),
        ])
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `notBefore` and `notAfter` of a certificate, in Unix seconds, as openssl reads them.
fn validity(cert: &Path) -> (i64, i64) {
    let out = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-startdate",
            "-enddate",
            "-dateopt",
            "iso_8601",
            "-in",
        ])
        .arg(cert)
        .output()
        .expect("openssl");
    let text = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        let line = text.lines().find_map(|l| l.strip_prefix(key)).expect(key);
        let t = humantime::parse_rfc3339_weak(line.trim()).expect(line);
        t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
    };
    (field("notBefore="), field("notAfter="))
}

/// A Kubernetes-style secret: `..gen<N>/tls.{crt,key}`, `..data -> ..gen<N>`, and
/// `tls.crt -> ..data/tls.crt`; `rotate` swaps `..data` in one rename.
fn secret(dir: &Path, generation: u32, serial: u32, days: u32) -> PathBuf {
    let gen = dir.join(format!("..gen{generation}"));
    make_pair(&gen, serial, days);
    let tmp = dir.join("..data_tmp");
    symlink(format!("..gen{generation}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for file in ["tls.crt", "tls.key"] {
        if !dir.join(file).exists() {
            symlink(format!("..data/{file}"), dir.join(file)).unwrap();
        }
    }
    gen.join("tls.crt")
}

fn gauge(text: &str, series: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn cert_expiry_gauges_equal_not_after_and_follow_a_rotation() {
    let setup = EnvoySetup::new();
    let dir = setup.path("secret");
    let first = secret(&dir, 1, 0xA1, 30);
    let cert = dir.join("tls.crt");
    let cert_arg = format!("{}:{}", cert.display(), dir.join("tls.key").display());
    let (mut baton, _upstream, _port) = setup.start("standalone", &["--cert", &cert_arg]);
    let status = baton.status_port;
    baton.wait_serving(0, START);
    let expiry = format!(
        "baton_cert_expiry_timestamp_seconds{{cert=\"{}\"}}",
        cert.display()
    );
    let start = format!(
        "baton_cert_not_before_timestamp_seconds{{cert=\"{}\"}}",
        cert.display()
    );
    let (not_before, not_after) = validity(&first);
    let text = scrape(status);
    assert_eq!(gauge(&text, &expiry), Some(not_after), "{text}");
    assert_eq!(gauge(&text, &start), Some(not_before));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((not_after - now - 30 * 86_400).abs() < 120, "30 days left");

    let second = secret(&dir, 2, 0xB2, 90);
    baton.wait_serving(1, START);
    let (_, rotated) = validity(&second);
    let text = eventually("the gauge to follow the rotation", START, || {
        let text = scrape(status);
        (gauge(&text, &expiry) == Some(rotated)).then_some(text)
    });
    assert!(rotated > not_after);
    for line in [
        "baton_restarts_total{trigger=\"cert\"} 1",
        "baton_restarts_total{trigger=\"file\"} 0",
        "baton_rotations_total 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing in:\n{text}"
        );
    }
    // The serving pair in /epochs and in `baton status`.
    let (_, body) = http(status, "GET", "/epochs").unwrap();
    let epochs: Value = serde_json::from_str(&body).unwrap();
    let serving = epochs["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["state"] == "serving")
        .expect("a serving epoch");
    assert_eq!(serving["certs"][0]["serial"], "B2");
    assert_eq!(serving["certs"][0]["subject"], "CN=localhost");
    assert_eq!(serving["certs"][0]["not_after"], rotated);
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["status", "--status-addr", &format!("127.0.0.1:{status}")])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains(&format!(
            "cert {}: CN=localhost, serial B2, expires ",
            cert.display()
        )),
        "{table}"
    );
    assert!(
        table.contains("(in 89d 23h)") || table.contains("(in 90d 0h)"),
        "{table}"
    );
    shut_down(&mut baton);
}
