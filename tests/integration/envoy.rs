//! `baton envoy` end to end with the real Envoy.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::json;

use super::harness::*;
use super::load::{hot_restarts_under_load, Load};

const START: Duration = Duration::from_secs(30);

/// What baton logs once it has repaired a chain a failed epoch left flagged.
const CHAIN_REPAIRED: &str = "cleared the 'initialising' flag a failed epoch left in Envoy's shared memory; hot restarts continue";

#[test]
fn hot_restart_serves_from_the_new_epoch_and_retires_the_old_one() {
    let (mut baton, _upstream, port) = EnvoySetup::new().start("standalone", &[]);
    assert_eq!(get(port), Ok(200));
    let cfg = baton.config_dir();
    let rev0 = cfg.join("envoy-rev0.json");
    assert!(rev0.exists(), "envoy-rev0.json missing while epoch 0 runs");

    baton.signal(Signal::SIGHUP);
    let serving = baton.wait_serving(1, START);
    assert_eq!(serving["replaced"], json!([0]));
    assert_eq!(get(port), Ok(200));
    let started = baton
        .find("epoch started", &[("epoch", json!(1))])
        .expect("start record of epoch 1");
    assert_eq!(started["restart_epoch"], json!(1));

    let exit0 = baton.wait_for("epoch exited", &[("epoch", json!(0))], START);
    assert_eq!(exit0["status"], json!("exit code 0"));
    assert_eq!(exit0["role"], json!("draining"));
    eventually("envoy-rev0.json removed", START, || {
        (!rev0.exists()).then_some(())
    });
    let rev1 = cfg.join("envoy-rev1.json");
    let base_id: u64 = std::fs::read_to_string(cfg.join("base-id.0"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let shm = std::path::PathBuf::from(format!("/dev/shm/envoy_shared_memory_{}", base_id * 10));
    assert!(
        shm.exists(),
        "expected Envoy's segment at {}",
        shm.display()
    );
    let mode = std::fs::metadata(&rev1)
        .expect("envoy-rev1.json")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert_eq!(get(port), Ok(200));

    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
    assert!(
        baton.leftovers().is_empty(),
        "processes left: {:?}",
        baton.leftovers()
    );
    assert!(!rev1.exists(), "envoy-rev1.json left behind");
    assert!(
        !shm.exists(),
        "Envoy's shared memory left behind: {}",
        shm.display()
    );
    assert!(!cfg.join("base-id.0").exists(), "base id file left behind");
    assert!(get(port).is_err(), "something still listens after shutdown");
}

#[test]
fn broken_template_or_invalid_config_keeps_the_serving_epoch() {
    let setup = EnvoySetup::new();
    let template = setup.path("standalone.json");
    std::fs::write(&template, standalone_template()).unwrap();
    let (mut baton, _upstream, port) = setup.start(template.to_str().unwrap(), &[]);

    // A template error: an undefined variable.
    std::fs::write(
        &template,
        standalone_template().replace("{{ upstream|host|tojson }}", "{{ no_such_value|tojson }}"),
    )
    .unwrap();
    baton.signal(Signal::SIGHUP);
    let refused = baton.wait_refused(&[("reason", json!("template"))], START);
    let error = refusal_error(&refused);
    assert!(error.contains("no_such_value"), "{error}");
    assert_eq!(get(port), Ok(200));
    baton.wait_epochs("one template failure", |e| {
        e["restart_failures"]["template"] == json!(1)
    });
    baton.assert_only_serving(0);

    // JSON that Envoy refuses: a route to a cluster that does not exist.
    std::fs::write(
        &template,
        standalone_template().replace("\"cluster\": \"upstream\"", "\"cluster\": \"nowhere\""),
    )
    .unwrap();
    baton.signal(Signal::SIGHUP);
    let refused = baton.wait_refused(&[("reason", json!("config"))], START);
    assert!(refusal_error(&refused).contains("nowhere"), "{refused}");
    assert_eq!(get(port), Ok(200));
    baton.wait_epochs("one config failure", |e| {
        e["restart_failures"]["config"] == json!(1)
    });
    baton.assert_only_serving(0);
    assert!(
        baton
            .find("epoch started", &[("epoch", json!(1))])
            .is_none(),
        "a bad config was started"
    );

    // Fixed again: the next trigger restarts.
    std::fs::write(&template, standalone_template()).unwrap();
    baton.signal(Signal::SIGHUP);
    baton.wait_serving(1, START);
    assert_eq!(get(port), Ok(200));
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
}

#[test]
fn no_request_fails_across_five_hot_restarts() {
    let (mut baton, upstream, port) = EnvoySetup::new().start("standalone", &[]);
    let tally = hot_restarts_under_load(&mut baton, port, 5, 200);
    eprintln!(
        "load across 5 hot restarts: {} ok, {} errors, {} stale keep-alive retries; upstream saw {}",
        tally.ok,
        tally.errors,
        tally.stale_retries,
        upstream.served.load(std::sync::atomic::Ordering::Relaxed)
    );
    assert_eq!(tally.errors, 0, "failed requests: {:?}", tally.samples);
    assert!(
        tally.ok > 1000,
        "too little load to mean anything: {}",
        tally.ok
    );
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
}

#[test]
fn sighup_during_startup_is_deferred_until_epoch_zero_is_ready() {
    let (mut baton, _upstream, port, ()) = EnvoySetup::new().start_with(
        |setup, ports| setup.args(ports, "standalone", &[]),
        |baton| {
            baton.wait_for("epoch started", &[("epoch", json!(0))], START);
            baton.signal(Signal::SIGHUP);
            baton.signal(Signal::SIGHUP);
        },
    );
    baton.wait_serving(1, START);
    assert_eq!(get(port), Ok(200));
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
    // Both SIGHUPs (if they arrived before epoch 0 was ready) became one restart.
    assert!(
        baton
            .find("epoch started", &[("epoch", json!(2))])
            .is_none(),
        "SIGHUPs were not coalesced"
    );
}

/// Template text whose first listener binds `port` (held by someone else).
fn with_blocked_listener(port: u16) -> String {
    let listener = format!(
        "\"listeners\": [{{\"name\": \"blocked\", \"address\": {{\"socket_address\": {{\"address\": \"127.0.0.1\", \"port_value\": {port}}}}}, \"filter_chains\": [{{\"filters\": [{{\"name\": \"envoy.filters.network.tcp_proxy\", \"typed_config\": {{\"@type\": \"type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy\", \"stat_prefix\": \"b\", \"cluster\": \"upstream\"}}}}]}}]}},"
    );
    standalone_template().replacen("\"listeners\": [", &listener, 1)
}

#[test]
fn a_new_epoch_that_dies_after_attaching_does_not_stop_later_hot_restarts() {
    let setup = EnvoySetup::new();
    let template = setup.path("standalone.json");
    std::fs::write(&template, standalone_template()).unwrap();
    // Something else holds this port, so an epoch that also listens there passes
    // `--mode validate`, attaches to the chain, and then fails to bind.
    let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let blocked = blocker.local_addr().unwrap().port();
    let (mut baton, _upstream, port) = setup.start(template.to_str().unwrap(), &[]);
    let load = Load::start(port, 4, 200_000, Duration::from_secs(90));
    eventually("load to flow", START, || (load.ok() > 50).then_some(()));

    // The template is watched: each write is the trigger (a SIGHUP beside it would
    // become a follow-up, since the file trigger comes after the restart read it).
    std::fs::write(&template, with_blocked_listener(blocked)).unwrap();
    baton.wait_refused(&[("epoch", json!(1))], START);
    baton.wait_for(CHAIN_REPAIRED, &[("chain", json!(0))], START);
    assert_eq!(get(port), Ok(200));
    baton.assert_only_serving(0);

    // The fix: the next hot restart continues the same chain, without a lost request.
    std::fs::write(&template, standalone_template()).unwrap();
    baton.wait_serving(2, START);
    let started = baton.find("epoch started", &[("epoch", json!(2))]).unwrap();
    assert_eq!(started["restart_epoch"], json!(1), "{started}");
    assert_eq!(started["chain"], json!(0), "{started}");
    let before = load.ok();
    eventually("requests through epoch 2", START, || {
        (load.ok() > before + 200).then_some(())
    });
    baton.wait_for(
        "epoch exited",
        &[("epoch", json!(0)), ("status", json!("exit code 0"))],
        START,
    );
    let tally = load.stop();
    eprintln!(
        "repair under load: {} ok, {} errors, {} stale retries",
        tally.ok, tally.errors, tally.stale_retries
    );
    assert_eq!(tally.errors, 0, "failed requests: {:?}", tally.samples);
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
    drop(blocker);
}

#[test]
fn serving_epoch_killed_is_replaced_at_once_by_a_fresh_chain() {
    let (mut baton, _upstream, port) = EnvoySetup::new().start("standalone", &[]);
    let serving = baton.wait_serving(0, START);
    let pid = serving["pid"].as_i64().unwrap() as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let crash = baton.wait_for(
        "serving epoch crashed; restarting it",
        &[("epoch", json!(0))],
        START,
    );
    assert_eq!(crash["status"], json!("killed by signal 9"));
    baton.wait_serving(1, START);
    let started = baton.find("epoch started", &[("epoch", json!(1))]).unwrap();
    assert_eq!(
        (started["restart_epoch"].clone(), started["chain"].clone()),
        (json!(0), json!(1))
    );
    let epochs = baton.wait_epochs("epoch 1 serving", |e| epochs_in(e, "serving") == [1]);
    assert_eq!(epochs["crashes_total"], json!(1), "{epochs}");
    assert_eq!(get(port), Ok(200));
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
    assert!(baton.leftovers().is_empty());
}

#[test]
fn orphans_of_the_proxy_are_reaped() {
    // A wrapper that leaves an orphan behind, then becomes Envoy.
    let setup = EnvoySetup::new();
    let wrapper = setup.path("envoy-wrapper.sh");
    let marker = setup.path("orphan.pid");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n( sleep 0.2 & echo $! > {} ) \nexec {} \"$@\"\n",
            marker.display(),
            envoy_binary().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (mut baton, _upstream, _port, ()) = setup.start_with(
        |setup, ports| {
            let mut args = setup.args(ports, "standalone", &[]);
            let at = args.iter().position(|a| a == "--envoy-binary").unwrap();
            args[at + 1] = wrapper.display().to_string();
            args
        },
        |_| (),
    );
    let orphan: i32 = eventually("orphan pid", START, || {
        std::fs::read_to_string(&marker).ok()?.trim().parse().ok()
    });
    // Once it has exited, it must not linger as a zombie below baton.
    eventually("orphan reaped", START, || {
        (!std::path::Path::new(&format!("/proc/{orphan}")).exists()).then_some(())
    });
    assert!(zombie_children(baton.pid()).is_empty());
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
}

/// A static Envoy config (no template) listening on `ports`.
fn static_yaml(ports: &Ports) -> String {
    format!(
        "admin:\n  address: {{ socket_address: {{ address: 127.0.0.1, port_value: {admin} }} }}\n\
         static_resources:\n  listeners:\n  - name: l\n    address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }}\n\
         \x20   filter_chains:\n    - filters:\n      - name: envoy.filters.network.http_connection_manager\n\
         \x20       typed_config:\n          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager\n\
         \x20         stat_prefix: custom\n          route_config:\n            virtual_hosts:\n            - name: all\n              domains: [\"*\"]\n\
         \x20             routes: [{{ match: {{ prefix: / }}, direct_response: {{ status: 200 }} }}]\n\
         \x20         http_filters:\n          - name: envoy.filters.http.router\n\
         \x20           typed_config: {{ \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router }}\n",
        admin = ports.admin,
        port = ports.listen
    )
}

#[test]
fn a_static_yaml_custom_config_is_used_as_is_and_hot_restarts() {
    let setup = EnvoySetup::new();
    let yaml = setup.path("envoy.yaml");
    let (mut baton, _upstream, port, ()) = setup.start_with(
        |setup, ports| {
            // The file names the ports: written again for every attempt.
            std::fs::write(&yaml, static_yaml(ports)).unwrap();
            let mut args = setup.args(ports, "standalone", &[]);
            // Replace the template with the static file.
            let at = args.iter().position(|a| a == "--template").unwrap();
            args.splice(
                at..at + 2,
                ["--custom-config".to_string(), yaml.display().to_string()],
            );
            args
        },
        |_| (),
    );
    assert_eq!(get(port), Ok(200));
    assert!(baton.config_dir().join("envoy-rev0.yaml").exists());
    baton.signal(Signal::SIGHUP);
    baton.wait_serving(1, START);
    assert_eq!(get(port), Ok(200));
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
}

/// The harness itself: a port taken between choosing it and Envoy binding it makes
/// the start try again with fresh ports, and the first attempt leaves nothing behind.
#[test]
fn a_listener_port_taken_before_envoy_binds_it_is_retried_with_fresh_ports() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = held.local_addr().unwrap().port();
    let mut attempts = 0;
    let (mut baton, _upstream, port, ()) = EnvoySetup::new().start_with(
        |setup, ports| {
            attempts += 1;
            if attempts == 1 {
                ports.listen = taken;
            }
            setup.args(ports, "standalone", &[])
        },
        |_| (),
    );
    assert_eq!(attempts, 2);
    assert_ne!(port, taken);
    assert_eq!(get(port), Ok(200));
    let first = std::fs::read_to_string(baton.dir().join("baton.attempt-1.log")).unwrap();
    let needle = format!("cannot bind '127.0.0.1:{taken}': Address already in use");
    assert!(first.contains(&needle), "{first}");
    // The first attempt's baton was stopped by SIGTERM, so it cleaned up after itself.
    let stopped = first
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|r| matches(&r, Message::Exactly("baton exiting"), &[]));
    assert!(stopped, "{first}");
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
    assert!(baton.leftovers().is_empty(), "{:?}", baton.leftovers());
    drop(held);
}

#[test]
fn a_draining_epoch_killed_like_an_oom_kill_does_not_take_the_serving_one_with_it() {
    // Long enough that epoch 0 is still draining (its child still talks to it) when
    // it is killed, and that its child would have aborted within the 15 s that follow.
    let (mut baton, _upstream, port, ()) = EnvoySetup::new().start_with(
        |setup, ports| {
            let mut args = setup.args(ports, "standalone", &[]);
            for (flag, value) in [
                ("--drain-duration", "10s"),
                ("--parent-shutdown-duration", "25s"),
                ("--stats-flush-interval", "1s"),
            ] {
                let at = args.iter().position(|a| a == flag).unwrap();
                args[at + 1] = value.into();
            }
            args
        },
        |_| (),
    );
    let load = Load::start(port, 4, 2_000_000, Duration::from_secs(120));
    eventually("load to flow", START, || (load.ok() > 200).then_some(()));
    baton.signal(Signal::SIGHUP);
    baton.wait_serving(1, START);
    let parent = baton.wait_epochs("epoch 0 draining", |r| epochs_in(r, "draining") == vec![0]);
    let parent_pid = parent["epochs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["number"] == json!(0))
        .and_then(|e| e["pid"].as_i64())
        .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(parent_pid as i32),
        Signal::SIGKILL,
    )
    .unwrap();
    baton.wait_for(
        "a draining epoch died while its child still talked to it; baton answers for it so the serving epoch does not abort",
        &[("epoch", json!(0)), ("child", json!(1))],
        START,
    );
    // Unanswered, its child would block at its next stats flush and abort ten
    // seconds later. Answered, it goes on asking for stats (once a second) until its
    // parent shutdown time, ~20 s after the kill, then terminates the stand-in.
    let done = baton.wait_for(
        "the dead parent's child terminated it; stand-in done",
        &[("restart_epoch", json!(0))],
        Duration::from_secs(60),
    );
    assert!(done["answered"].as_u64().unwrap() >= 10, "{done}");
    baton.assert_only_serving(1);
    // The next SIGHUP restarts in the same chain.
    baton.signal(Signal::SIGHUP);
    baton.wait_serving(2, START);
    let tally = load.stop();
    eprintln!(
        "draining epoch killed: {} requests, {} failed over the kill, 15 s and a restart",
        tally.ok, tally.errors
    );
    assert_eq!(tally.errors, 0, "failed requests: {:?}", tally.samples);
    let report = baton.epochs();
    assert_eq!(report["crashes_total"], json!(0), "{report}");
    let started = baton.find("epoch started", &[("epoch", json!(2))]).unwrap();
    assert_eq!(
        started["chain"],
        json!(0),
        "a new chain was needed: {started}"
    );
    assert_eq!(started["restart_epoch"], json!(2), "{started}");
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
    assert!(baton.leftovers().is_empty(), "left {:?}", baton.leftovers());
}
