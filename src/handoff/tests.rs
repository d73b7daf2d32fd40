//! Process tests: a real epoch (python3 running `testdata/report_fds.py`) reports what
//! it received. LISTEN_PID is covered by the exec-shim test, which needs a binary that
//! runs the shim (see `tests/` of the crate).

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;

use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};

use super::testutil::{python, Guard};
use super::*;

const REPORT: &str = include_str!("testdata/report_fds.py");

fn epoch_command(serve: bool) -> Command {
    let mut cmd = Command::new(python());
    cmd.args(["-c", REPORT]);
    if serve {
        cmd.arg("serve");
    }
    cmd
}

fn tcp(set: &ListenerSet, i: usize) -> SocketAddr {
    match set.local_addr(i) {
        Some(ListenAddr::Tcp(a)) => *a,
        other => panic!("listener {i} is not tcp: {other:?}"),
    }
}

fn greeting(addr: SocketAddr) -> String {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(super::testutil::DEADLINE))
        .unwrap();
    let mut text = String::new();
    conn.read_to_string(&mut text).unwrap();
    text
}

#[test]
fn epoch_receives_listeners_then_extra_fds_from_three_inheritable_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let specs = [
        "web=tcp://127.0.0.1:0".to_string(),
        "dns=udp://127.0.0.1:0".to_string(),
        format!("admin=unix://{}", dir.path().join("admin.sock").display()),
    ]
    .map(|s| ListenSpec::parse(&s).unwrap());
    let set = ListenerSet::bind(&specs).unwrap();
    let stats = tempfile::tempfile().unwrap();
    // An fd baton holds without close-on-exec must not reach the epoch either.
    let (_leak_r, _leak_w) = nix::unistd::pipe().unwrap();

    let mut cmd = epoch_command(true);
    prepare(&mut cmd, &set, &[ExtraFd::new("BATON_STATS_FD", &stats)], 2).unwrap();
    let epoch = Guard::spawn(&mut cmd);
    let got = epoch.report("SigIgn");

    assert_eq!(
        got["fds"],
        "3:sock:inherit,4:sock:inherit,5:sock:inherit,6:other:inherit"
    );
    assert_eq!(got["env.LISTEN_FDS"], "3");
    assert_eq!(got["env.LISTEN_FDNAMES"], "web:dns:admin");
    assert_eq!(got["env.BATON_FD_WEB"], "3");
    assert_eq!(got["env.BATON_FD_DNS"], "4");
    assert_eq!(got["env.BATON_FD_ADMIN"], "5");
    assert_eq!(got["env.BATON_STATS_FD"], "6");
    assert_eq!(got["env.NGINX"], "3;4;5;");
    assert_eq!(got["env.BATON_EPOCH"], "2");
    assert!(
        !got.contains_key("env.LISTEN_PID"),
        "only the shim sets LISTEN_PID"
    );
    assert_eq!(
        got["pgid"], got["pid"],
        "the epoch leads its own process group"
    );

    assert_eq!(greeting(tcp(&set, 0)), "epoch 2");
    assert_eq!(epoch.line(), "served");
}

#[test]
fn epoch_starts_with_an_empty_signal_mask_and_default_dispositions() {
    let set = ListenerSet::bind(&[ListenSpec::parse("a=tcp://127.0.0.1:0").unwrap()]).unwrap();
    // SIGWINCH's default action is "ignore", so ignoring it here harms no other test;
    // blocking SIGUSR2 only affects this test's thread.
    // SAFETY: SIG_IGN installs no handler code.
    unsafe { signal::signal(Signal::SIGWINCH, SigHandler::SigIgn) }.unwrap();
    let mut blocked = SigSet::empty();
    blocked.add(Signal::SIGUSR2);
    signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&blocked), None).unwrap();

    let mut cmd = epoch_command(false);
    prepare(&mut cmd, &set, &[], 0).unwrap();
    let epoch = Guard::spawn(&mut cmd);
    signal::pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&blocked), None).unwrap();
    let got = epoch.report("SigIgn");

    assert_eq!(u64::from_str_radix(&got["SigBlk"], 16).unwrap(), 0);
    let ignored = u64::from_str_radix(&got["SigIgn"], 16).unwrap();
    let winch = 1u64 << (Signal::SIGWINCH as i32 - 1);
    assert_eq!(ignored & winch, 0, "SIGWINCH still ignored: {ignored:#x}");
}

#[test]
fn one_listener_set_serves_two_epochs_in_turn_and_holds_connections_between_them() {
    let set = ListenerSet::bind(&[ListenSpec::parse("web=tcp://127.0.0.1:0").unwrap()]).unwrap();
    let addr = tcp(&set, 0);

    let mut cmd = epoch_command(true);
    prepare(&mut cmd, &set, &[], 0).unwrap();
    let mut first = Guard::spawn(&mut cmd);
    drop(cmd);
    assert_eq!(greeting(addr), "epoch 0");
    assert!(first.wait().success());

    // No epoch runs now: the connection waits in the backlog baton holds.
    let mut waiting = TcpStream::connect(addr).unwrap();
    waiting
        .set_read_timeout(Some(super::testutil::DEADLINE))
        .unwrap();

    let mut cmd = epoch_command(true);
    prepare(&mut cmd, &set, &[], 1).unwrap();
    let mut second = Guard::spawn(&mut cmd);
    let mut text = String::new();
    waiting.read_to_string(&mut text).unwrap();
    assert_eq!(text, "epoch 1");
    assert!(second.wait().success());
}

#[test]
fn prepare_keeps_its_own_duplicates_so_the_set_only_needs_to_outlive_the_call() {
    let set = ListenerSet::bind(&[ListenSpec::parse("web=tcp://127.0.0.1:0").unwrap()]).unwrap();
    let mut cmd = epoch_command(false);
    let extra = tempfile::tempfile().unwrap();
    prepare(&mut cmd, &set, &[ExtraFd::new("X_FD", &extra)], 0).unwrap();
    drop(extra);
    let epoch = Guard::spawn(&mut cmd);
    let got = epoch.report("SigIgn");
    assert_eq!(got["fds"], "3:sock:inherit,4:other:inherit");
    drop(set);
}

#[test]
fn baton_supervisor_variables_do_not_leak_into_an_epoch() {
    let set = ListenerSet::bind(&[]).unwrap();
    let mut cmd = epoch_command(false);
    cmd.env("LISTEN_PID", "1")
        .env("NOTIFY_SOCKET", "/run/systemd/notify");
    prepare(&mut cmd, &set, &[], 0).unwrap();
    let epoch = Guard::spawn(&mut cmd);
    let got = epoch.report("SigIgn");
    assert!(!got.contains_key("env.LISTEN_PID"));
    assert!(!got.contains_key("env.NOTIFY_SOCKET"));
    assert_eq!(got["env.LISTEN_FDS"], "0");
    assert_eq!(got["fds"], "");
}
