//! Faults around restarts, end to end with the real Envoy: a certificate directory
//! removed and created again, a shutdown while an epoch prepares, a baton killed
//! outright (what it leaves, and what the next one removes).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::json;

use super::harness::*;
use super::load::Load;
use super::memory::segments_of;
use super::rotation::{make_pair, served_serial};

const START: Duration = Duration::from_secs(30);

/// Baton's files in a config dir.
fn baton_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains("envoy-rev") || n.starts_with("base-id."))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Put `cert`/`key` into `dir` as `tls.crt`/`tls.key`, each by rename (no reader
/// sees half a file).
fn install(dir: &Path, cert: &Path, key: &Path) {
    for (from, name) in [(cert, "tls.crt"), (key, "tls.key")] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::copy(from, &tmp).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

/// TLS load by wrk for `secs`, killed on drop.
struct Wrk(Option<std::process::Child>);

impl Wrk {
    fn start(port: u16, secs: u32) -> Self {
        let child = Command::new("wrk")
            .args([
                "-t1",
                "-c8",
                &format!("-d{secs}s"),
                &format!("https://127.0.0.1:{port}/"),
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wrk (scripts/install-test-deps installs it)");
        Wrk(Some(child))
    }

    /// Wait for the end; the requests it made. Fails on any error it saw.
    fn finish(mut self) -> u64 {
        let out = self.0.take().unwrap().wait_with_output().unwrap();
        let out = String::from_utf8_lossy(&out.stdout).into_owned();
        eprintln!("{out}");
        assert!(!out.contains("Socket errors"), "wrk saw errors:\n{out}");
        assert!(!out.contains("Non-2xx"), "wrk saw failed requests:\n{out}");
        out.split_once(" requests in")
            .and_then(|(head, _)| head.split_whitespace().last()?.parse().ok())
            .expect("wrk summary")
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn a_certificate_directory_removed_and_recreated_is_served_and_watched_again() {
    let setup = EnvoySetup::new();
    let pairs = setup.path("pairs");
    std::fs::create_dir(&pairs).unwrap();
    let (c1, k1) = make_pair(&pairs, "one", 0x1001, 1);
    let (c2, k2) = make_pair(&pairs, "two", 0x2002, 1);
    let (c3, k3) = make_pair(&pairs, "three", 0x3003, 1);
    let certs = setup.path("certs");
    std::fs::create_dir(&certs).unwrap();
    install(&certs, &c1, &k1);
    let cert_arg = format!(
        "{}:{}",
        certs.join("tls.crt").display(),
        certs.join("tls.key").display()
    );
    let (mut baton, _upstream, port) = setup.start("standalone", &["--cert", &cert_arg]);
    let status = baton.status_port;
    baton.wait_serving(0, START);
    assert_eq!(served_serial(port).as_deref(), Some("1001"));
    let wrk = Wrk::start(port, 12);

    // What some secret-sync tools do: the directory goes, then a new one comes.
    std::fs::remove_dir_all(&certs).unwrap();
    baton.wait_for(
        "watched directory is gone; watching its nearest ancestor until it returns",
        &[("dir", json!(certs.display().to_string()))],
        START,
    );
    std::fs::create_dir(&certs).unwrap();
    install(&certs, &c2, &k2);
    let recreated = Instant::now();
    eventually("serial 2002 served", START, || {
        (served_serial(port).as_deref() == Some("2002")).then_some(())
    });
    let to_new_serial = recreated.elapsed();
    baton.wait_for("watched directory is back; watching it again", &[], START);

    // A later rotation in the recreated directory is seen too.
    install(&certs, &c3, &k3);
    eventually("serial 3003 served", START, || {
        (served_serial(port).as_deref() == Some("3003")).then_some(())
    });
    let requests = wrk.finish();
    eprintln!(
        "directory recreated -> new serial served in {to_new_serial:?}; {requests} TLS requests, none failed"
    );

    for epoch in [1, 2] {
        let restart = baton
            .find("hot restart requested", &[("epoch", json!(epoch))])
            .unwrap_or_else(|| panic!("no restart for epoch {epoch}"));
        assert_eq!(restart["trigger"], json!("cert-change"));
    }
    assert!(
        baton
            .find_record(Message::StartsWith(""), &[("trigger", json!("signal"))])
            .is_none(),
        "nothing but the files triggered a restart"
    );
    let (_, epochs) = http(status, "GET", "/epochs").unwrap();
    let epochs: serde_json::Value = serde_json::from_str(&epochs).unwrap();
    assert_eq!(epochs["watch_error"], json!(null), "{epochs}");
    assert_eq!(epochs["watch_errors_total"], json!(0), "{epochs}");
    let (_, metrics) = http(status, "GET", "/stats/prometheus").unwrap();
    assert!(metrics.contains("baton_watch_errors_total 0"), "{metrics}");
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
    assert_eq!(baton_files(&baton.config_dir()), Vec::<String>::new());
}

/// An Envoy whose `--mode validate` waits (up to 20 s, with no child process) while
/// the file `hold` exists in `dir`: a preflight that is still running when the test
/// wants it to be.
fn held_validator(dir: &Path) -> PathBuf {
    let fifo = dir.join("hold.fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let script = dir.join("envoy-held");
    std::fs::write(
        &script,
        format!(
            "#!/bin/bash\n\
             if [[ \" $* \" == *\" --mode validate \"* && -e {hold} ]]; then read -r -t 20 <> {fifo}; fi\n\
             exec {envoy} \"$@\"\n",
            hold = dir.join("hold").display(),
            fifo = fifo.display(),
            envoy = envoy_binary().display(),
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// `baton envoy` arguments with `binary` as Envoy.
fn args_with_binary(setup: &EnvoySetup, ports: &Ports, binary: &Path) -> Vec<String> {
    let mut args = setup.args(ports, "standalone", &[]);
    let at = args.iter().position(|a| a == "--envoy-binary").unwrap();
    args[at + 1] = binary.display().to_string();
    args
}

fn start(setup: EnvoySetup, ports: &Ports, args: &[String]) -> Baton {
    let mut baton = Baton::launch(setup.dir, args, &[]);
    baton.status_port = ports.status;
    baton
}

#[test]
fn sigterm_while_the_first_epoch_prepares_leaves_nothing_behind() {
    let setup = EnvoySetup::new();
    let envoy = held_validator(setup.dir.path());
    std::fs::write(setup.path("hold"), "").unwrap();
    let ports = Ports::choose();
    let args = args_with_binary(&setup, &ports, &envoy);
    let mut baton = start(setup, &ports, &args);
    let cfg = baton.config_dir();
    eventually("epoch 0's bootstrap written", START, || {
        cfg.join("envoy-rev0.json").exists().then_some(())
    });
    baton.remember_descendants();
    let asked = Instant::now();
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "the held validator kept baton waiting {:?}",
        asked.elapsed()
    );
    assert!(
        baton.find("epoch started", &[]).is_none(),
        "it prepared only"
    );
    assert_eq!(baton_files(&cfg), Vec::<String>::new());
    assert_eq!(
        baton.leftovers(),
        Vec::<i32>::new(),
        "the validator outlived baton"
    );
}

#[test]
fn sigterm_while_a_restart_prepares_leaves_nothing_behind() {
    let setup = EnvoySetup::new();
    let dir = setup.dir.path().to_path_buf();
    let envoy = held_validator(&dir);
    // A template file: a changed bootstrap is validated (an unchanged one that
    // served before would not be), and writing the file is the trigger.
    let template = dir.join("standalone.json");
    std::fs::write(&template, standalone_template()).unwrap();
    let ports = Ports::choose();
    let mut args = args_with_binary(&setup, &ports, &envoy);
    let at = args.iter().position(|a| a == "--template").unwrap();
    args[at + 1] = template.display().to_string();
    let mut baton = start(setup, &ports, &args);
    baton.wait_serving(0, START);
    let cfg = baton.config_dir();
    let segments = segments_of(&cfg);
    assert_eq!(segments.len(), 1);
    std::fs::write(dir.join("hold"), "").unwrap();
    std::fs::write(
        &template,
        standalone_template().replace("\"ingress_http\"", "\"ingress_http_v2\""),
    )
    .unwrap();
    eventually("epoch 1's bootstrap written", START, || {
        cfg.join("envoy-rev1.json").exists().then_some(())
    });
    baton.remember_descendants();
    baton.signal(Signal::SIGTERM);
    // Dropped with the restart at once, not at exit.
    eventually("epoch 1's bootstrap removed", START, || {
        (!cfg.join("envoy-rev1.json").exists()).then_some(())
    });
    assert!(
        baton.child.try_wait().unwrap().is_none(),
        "removed only as baton exited"
    );
    assert_eq!(baton.wait_exit(START), Some(0));
    assert!(baton
        .find("epoch started", &[("epoch", json!(1))])
        .is_none());
    assert_eq!(baton_files(&cfg), Vec::<String>::new());
    assert!(!segments[0].exists(), "{} left", segments[0].display());
    assert_eq!(baton.leftovers(), Vec::<i32>::new());
}

#[test]
fn a_new_baton_removes_what_a_killed_one_left_but_not_a_segment_in_use() {
    // A baton killed outright leaves its files and Envoy's segment.
    let (mut killed, _up1, _port1) = EnvoySetup::new().start("standalone", &[]);
    killed.wait_serving(0, START);
    killed.remember_descendants();
    let cfg = killed.config_dir();
    let stale = segments_of(&cfg);
    killed.child.kill().unwrap();
    killed.child.wait().unwrap();
    eventually("its Envoy to die with it", START, || {
        killed.leftovers().is_empty().then_some(())
    });
    assert_eq!(baton_files(&cfg), vec!["base-id.0", "envoy-rev0.json"]);
    assert!(stale[0].exists());

    // Another baton lives on this host; say the killed one had used its base id
    // once (dynamic base ids are reused once free).
    let (mut live, _up2, live_port) = EnvoySetup::new().start("standalone", &[]);
    live.wait_serving(0, START);
    let live_segment = segments_of(&live.config_dir()).remove(0);
    let live_id = std::fs::read_to_string(live.config_dir().join("base-id.0")).unwrap();
    std::fs::write(cfg.join("base-id.1"), &live_id).unwrap();

    // The next baton on the same config dir.
    let setup = EnvoySetup::new();
    let ports = Ports::choose();
    let mut args = setup.args(&ports, "standalone", &[]);
    let at = args.iter().position(|a| a == "--config-dir").unwrap();
    args[at + 1] = cfg.display().to_string();
    let mut next = start(setup, &ports, &args);
    let swept = next.wait_for("starting: removed files left behind", &[], START);
    let removed: Vec<String> = swept["removed"]
        .as_array()
        .expect("removed as a JSON array")
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    let removed = removed.join(" ");
    for gone in [
        cfg.join("envoy-rev0.json"),
        cfg.join("base-id.0"),
        stale[0].clone(),
    ] {
        assert!(
            removed.contains(&gone.display().to_string()),
            "{gone:?} not in {removed}"
        );
    }
    assert!(!stale[0].exists());
    let kept = next.wait_for_record(
        Message::StartsWith("starting: left in place: "),
        &[("path", json!(live_segment.display().to_string()))],
        START,
    );
    assert!(
        kept["message"].as_str().unwrap().contains("in use"),
        "{kept}"
    );
    assert!(live_segment.exists(), "a live Envoy's segment was removed");
    assert!(cfg.join("base-id.1").exists(), "the way to find it went");
    next.wait_serving(0, START);
    assert_eq!(get(live_port), Ok(200), "the other baton still serves");

    for baton in [&mut next, &mut live] {
        baton.signal(Signal::SIGTERM);
        assert_eq!(baton.wait_exit(START), Some(0));
        assert_eq!(baton.leftovers(), Vec::<i32>::new());
    }
    assert!(
        !live_segment.exists(),
        "the live baton cleans up after itself"
    );
    // Only the file this test planted is left.
    assert_eq!(baton_files(&cfg), vec!["base-id.1"]);
}

#[test]
fn a_storm_of_sighups_under_load_is_a_few_restarts_and_no_failed_request() {
    let (mut baton, _upstream, port) = EnvoySetup::new().start("standalone", &[]);
    let load = Load::start(port, 4, 1_000_000, Duration::from_secs(120));
    eventually("load to flow", START, || (load.ok() > 200).then_some(()));
    for _ in 0..50 {
        baton.signal(Signal::SIGHUP);
    }
    // One restart in flight plus one follow-up for everything that came meanwhile.
    baton.wait_serving(1, START);
    let settled = baton.wait_epochs("the storm to settle", |r| {
        epochs_in(r, "serving").len() == 1
            && epochs_in(r, "starting").is_empty()
            && epochs_in(r, "preparing").is_empty()
    });
    let restarts = baton.count("hot restart requested", &[]);
    assert!(
        (1..=2).contains(&restarts),
        "50 SIGHUPs gave {restarts} restarts: {settled}"
    );
    let before = load.ok();
    eventually("requests after the storm", START, || {
        (load.ok() > before + 500).then_some(())
    });
    let tally = load.stop();
    eprintln!(
        "SIGHUP storm: 50 signals, {restarts} restarts, {} requests, {} failed",
        tally.ok, tally.errors
    );
    assert_eq!(tally.errors, 0, "failed requests: {:?}", tally.samples);
    assert!(baton.refusals().is_empty(), "{:?}", baton.refusals());
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
    assert!(baton.leftovers().is_empty(), "left {:?}", baton.leftovers());
    assert_eq!(baton_files(&baton.config_dir()), Vec::<String>::new());
}
