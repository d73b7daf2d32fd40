//! `--cert-rotation sds`, end to end with the real Envoy serving TLS from a `--cert`
//! pair through the SDS resource baton writes (the standalone template): rotations in
//! place under TLS load, refusals that keep the old certificate served, a SIGHUP that
//! still hot-restarts onto the pair served, and `baton render`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use super::harness::*;
use super::rotation::{make_pair, served_serial, ChildGuard, Secret};

const START: Duration = Duration::from_secs(30);
const SDS: [&str; 2] = ["--cert-rotation", "sds"];
/// The fixed start of a refused rotation's message; the error text follows it.
const ROTATION_REFUSED: &str =
    "certificate rotation refused; the serving epoch keeps serving its certificate: ";
const ROTATED: &str = "certificate rotated in place: envoy serves the new pair";

/// Handshakes see `serial`, within a deadline.
fn wait_serial(port: u16, serial: &str) {
    eventually(&format!("serial {serial} served"), START, || {
        (served_serial(port).as_deref() == Some(serial)).then_some(())
    });
}

/// `n` pairs `c0`… with serials `base`, `base + 1`…, valid for a day.
fn pairs(dir: &Path, n: u32, base: u32) -> Vec<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(dir).unwrap();
    (0..n)
        .map(|i| make_pair(dir, &format!("c{i}"), base + i, 1))
        .collect()
}

/// Wait for rotation `n` to be served in place.
fn wait_rotated(baton: &mut Baton, n: u64) -> Value {
    baton.wait_for(ROTATED, &[("rotation", json!(n))], START)
}

/// Wait for the refusal of rotation `n`; its error text.
fn wait_rotation_refused(baton: &mut Baton, n: u64) -> (Value, String) {
    let record = baton.wait_for_record(
        Message::StartsWith(ROTATION_REFUSED),
        &[("rotation", json!(n))],
        START,
    );
    let message = record["message"].as_str().unwrap_or_default();
    let error = message.strip_prefix(ROTATION_REFUSED).unwrap().to_string();
    (record, error)
}

/// The serial of the first certificate of the serving epoch in `/epochs`.
fn epochs_serial(report: &Value) -> Option<String> {
    let serving = report["epochs"]
        .as_array()?
        .iter()
        .find(|e| e["state"] == json!("serving"))?;
    serving["certs"][0]["serial"].as_str().map(str::to_string)
}

fn metric(baton: &Baton, series: &str) -> Option<f64> {
    let (_, text) = http(baton.status_port, "GET", "/stats/prometheus").unwrap();
    prometheus_sample(&text, series)
}

/// `baton status` against this baton: its output.
fn status(baton: &Baton) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["status", "--status-addr"])
        .arg(format!("127.0.0.1:{}", baton.status_port))
        .output()
        .expect("baton status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sds_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.to_string_lossy().contains("sds-cert"))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn five_secret_swaps_are_served_in_place_under_tls_load_with_no_restart_and_no_failed_handshake() {
    let setup = EnvoySetup::new();
    let pairs = pairs(&setup.path("certs"), 6, 0x100);
    let mut secret = Secret::new(setup.path("secret"), &pairs[0].0, &pairs[0].1);
    let cert_arg = secret.cert_arg();
    let mut args = vec!["--cert", cert_arg.as_str()];
    args.extend(SDS);
    let (mut baton, _upstream, port) = setup.start("standalone", &args);
    assert_eq!(served_serial(port).as_deref(), Some("0100"));
    let resource = baton.config_dir().join("sds-cert-0.json");
    let mode = std::fs::metadata(&resource).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "it holds the private key");

    // Every request a new TLS handshake ("Connection: close"); bounded by -d.
    let wrk = Command::new("wrk")
        .args(["-t1", "-c8", "-d6s", "-H", "Connection: close"])
        .arg(format!("https://127.0.0.1:{port}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("wrk (scripts/install-test-deps installs it)");
    let wrk = ChildGuard(Some(wrk));
    for (n, (cert, key)) in pairs.iter().enumerate().skip(1) {
        secret.swap(cert, key);
        wait_rotated(&mut baton, n as u64);
        wait_serial(port, &format!("{:04X}", 0x100 + n));
    }
    let out = wrk.wait();
    eprintln!("wrk over 5 in-place rotations:\n{out}");
    let requests: u64 = out
        .split_once(" requests in")
        .and_then(|(head, _)| head.split_whitespace().last()?.parse().ok())
        .expect("wrk summary");
    assert!(!out.contains("Socket errors"), "wrk saw errors:\n{out}");
    assert!(!out.contains("Non-2xx"), "wrk saw failed requests:\n{out}");
    assert!(requests > 1000, "too little load: {requests}");

    // No restart: epoch 0 serves the last pair, as Envoy's /certs confirmed it.
    assert!(baton.find("hot restart requested", &[]).is_none());
    baton.assert_only_serving(0);
    let report = baton.epochs();
    assert_eq!(epochs_serial(&report).as_deref(), Some("0105"), "{report}");
    assert_eq!(report["sds_rotations_total"], json!(5), "{report}");
    assert_eq!(metric(&baton, "baton_sds_rotations_total"), Some(5.0));
    let cert_restarts = "baton_restarts_total{trigger=\"cert\"}";
    assert_eq!(metric(&baton, cert_restarts), Some(0.0));
    let text = status(&baton);
    assert!(text.contains(", serial 0105, "), "{text}");
    assert!(
        text.contains("rotated in place through SDS (5 so far)"),
        "{text}"
    );

    let config_dir = baton.config_dir();
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
    assert_eq!(
        sds_files(&config_dir),
        Vec::<PathBuf>::new(),
        "key left behind"
    );
}

#[test]
fn bad_pairs_are_refused_in_place_while_the_old_certificate_keeps_being_served() {
    let setup = EnvoySetup::new();
    let certs = setup.path("certs");
    let good = pairs(&certs, 2, 0x1111);
    let (expired, expired_key) = make_pair(&certs, "expired", 0x3333, -1);
    // A copy caught half-way: the first half of a good certificate.
    let half = certs.join("half.crt");
    let whole = std::fs::read_to_string(&good[1].0).unwrap();
    std::fs::write(&half, &whole[..whole.len() / 2]).unwrap();
    let mut secret = Secret::new(setup.path("secret"), &good[0].0, &good[0].1);
    let cert_arg = secret.cert_arg();
    let mut args = vec!["--cert", cert_arg.as_str()];
    args.extend(SDS);
    let (mut baton, _upstream, port) = setup.start("standalone", &args);

    let cases: [(&str, &Path, &Path, &str); 3] = [
        (
            "half-finished rotation: new certificate, old key",
            &good[1].0,
            &good[0].1,
            "does not match",
        ),
        ("expired certificate", &expired, &expired_key, "expired"),
        (
            "half-written certificate file",
            &half,
            &good[1].1,
            "tls.crt: missing \"-----END CERTIFICATE-----\"",
        ),
    ];
    for (n, (what, cert, key, needle)) in cases.into_iter().enumerate() {
        secret.swap(cert, key);
        let (refused, error) = wait_rotation_refused(&mut baton, n as u64 + 1);
        assert_eq!(refused["reason"], json!("cert"), "{what}: {refused}");
        assert!(error.contains(needle), "{what}: {error}");
        assert_eq!(
            served_serial(port).as_deref(),
            Some("1111"),
            "{what}: the old certificate must be served"
        );
        let failures = json!(n + 1);
        let report = baton.wait_epochs(what, |e| e["restart_failures"]["cert"] == failures);
        let last_error = report["last_error"].as_str().unwrap_or_default();
        assert!(
            last_error.contains(needle),
            "{what}: not in /epochs: {report}"
        );
        assert_eq!(epochs_serial(&report).as_deref(), Some("1111"), "{report}");
        baton.assert_only_serving(0);
    }

    secret.swap(&good[1].0, &good[1].1);
    wait_rotated(&mut baton, 4);
    wait_serial(port, "1112");
    let report = baton.wait_epochs("the good pair", |e| e["last_error"].is_null());
    assert_eq!(epochs_serial(&report).as_deref(), Some("1112"), "{report}");
    let cert_failures = "baton_restart_failures_total{reason=\"cert\"}";
    assert_eq!(metric(&baton, cert_failures), Some(3.0));
    assert_eq!(metric(&baton, "baton_sds_rotations_total"), Some(1.0));
    assert!(baton
        .find("epoch started", &[("epoch", json!(1))])
        .is_none());
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
}

#[test]
fn a_sighup_or_a_watched_file_in_sds_mode_hot_restarts_onto_the_pair_served() {
    let setup = EnvoySetup::new();
    let certs = setup.path("certs");
    let good = pairs(&certs, 2, 0x0A01);
    let mut secret = Secret::new(setup.path("secret"), &good[0].0, &good[0].1);
    let cert_arg = secret.cert_arg();
    let watched = setup.path("watched.txt");
    std::fs::write(&watched, "v1").unwrap();
    let watch_arg = watched.display().to_string();
    let mut args = vec!["--cert", cert_arg.as_str(), "--watch", watch_arg.as_str()];
    args.extend(SDS);
    let (mut baton, _upstream, port) = setup.start("standalone", &args);

    secret.swap(&good[1].0, &good[1].1);
    wait_rotated(&mut baton, 1);
    // A half-finished pair on disk is refused; it does not hold up a restart, which
    // starts from the pair served, not from the files.
    secret.swap(&good[0].0, &good[1].1);
    wait_rotation_refused(&mut baton, 2);

    baton.signal(Signal::SIGHUP);
    baton.wait_serving(1, START);
    let restart = baton
        .find("hot restart requested", &[("epoch", json!(1))])
        .unwrap();
    assert_eq!(restart["trigger"], json!("signal"));
    wait_serial(port, "0A02");
    let report = baton.wait_epochs("epoch 1 serving", |e| epochs_in(e, "serving") == [1]);
    assert_eq!(epochs_serial(&report).as_deref(), Some("0A02"), "{report}");
    assert_eq!(
        metric(&baton, "baton_restarts_total{trigger=\"signal\"}"),
        Some(1.0)
    );

    // A watched file is no certificate: it restarts, onto the same pair.
    std::fs::write(&watched, "v2").unwrap();
    baton.wait_serving(2, START);
    let restart = baton
        .find("hot restart requested", &[("epoch", json!(2))])
        .unwrap();
    assert_eq!(restart["trigger"], json!("file-change"));
    wait_serial(port, "0A02");
    let report = baton.wait_epochs("epoch 2 serving", |e| epochs_in(e, "serving") == [2]);
    assert_eq!(epochs_serial(&report).as_deref(), Some("0A02"), "{report}");
    assert_eq!(report["sds_rotations_total"], json!(1), "{report}");
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
}

#[test]
fn a_bootstrap_that_does_not_name_the_sds_resource_is_refused_at_start() {
    let setup = EnvoySetup::new();
    let (cert, key) = make_pair(&setup.path(""), "only", 0x77, 1);
    // The standalone template as it was before SDS: the pair by file name.
    let template = setup.path("files.json");
    let text = standalone_template().replace("{%- if tls.sds %}", "{% if false %}");
    std::fs::write(&template, text).unwrap();
    let ports = Ports::choose();
    let cert_arg = format!("{}:{}", cert.display(), key.display());
    let mut extra = vec!["--cert", cert_arg.as_str()];
    extra.extend(SDS);
    let args = setup.args(&ports, template.to_str().unwrap(), &extra);
    let mut baton = Baton::launch(setup.dir, &args, &[]);
    assert_eq!(baton.wait_exit(START), Some(78));
    let refused = baton.wait_refused(&[("reason", json!("config"))], START);
    let error = refusal_error(&refused);
    assert!(
        error.contains("--cert-rotation sds: the bootstrap does not name the SDS resource")
            && error.contains("baton-cert-0"),
        "{error}"
    );
}

#[test]
fn render_names_the_sds_resource_in_the_config_dir_and_validates_a_copy() {
    let envoy = envoy_binary();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = make_pair(dir.path(), "r", 0x55, 1);
    let config_dir = dir.path().join("not-touched");
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "render",
            "--template",
            "standalone",
            "--cert-rotation",
            "sds",
        ])
        .args([
            "--var",
            "listen_port=8443",
            "--var",
            "upstream=127.0.0.1:9000",
        ])
        .arg("--cert")
        .arg(format!("{}:{}", cert.display(), key.display()))
        .arg("--config-dir")
        .arg(&config_dir)
        .arg("--validate-with")
        .arg(&envoy)
        .env_remove("BATON_TEMPLATE")
        .output()
        .expect("baton render");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let json: Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let tls = &json["static_resources"]["listeners"][0]["filter_chains"][0]["transport_socket"]
        ["typed_config"]["common_tls_context"];
    let sds = &tls["tls_certificate_sds_secret_configs"][0];
    assert_eq!(sds["name"], json!("baton-cert-0"));
    let path = config_dir.join("sds-cert-0.json");
    assert_eq!(
        sds["sds_config"]["path_config_source"]["path"],
        json!(path.to_str().unwrap()),
        "{tls}"
    );
    assert!(tls.get("tls_certificates").is_none(), "{tls}");
    assert!(!config_dir.exists(), "render wrote into the config dir");
}
