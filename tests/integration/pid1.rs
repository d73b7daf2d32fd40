//! baton as PID 1 of its own PID namespace (`unshare --pid --fork`), as in a container:
//! it reaps orphans, shuts down on SIGTERM, and exits with the proxy's code.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::harness::*;

const START: Duration = Duration::from_secs(30);

/// A listener on a port baton chooses (nothing connects to it here).
const ANY_PORT: &str = "http=tcp://127.0.0.1:0";

/// `unshare … baton run …` with baton as PID 1; killed (with its namespace) on drop.
struct Pid1 {
    unshare: Child,
    _dir: tempfile::TempDir,
}

impl Pid1 {
    fn start(dir: tempfile::TempDir, baton_args: &[&str]) -> Self {
        let log = std::fs::File::create(dir.path().join("baton.log")).unwrap();
        let unshare = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "--mount-proc"])
            .arg(env!("CARGO_BIN_EXE_baton"))
            .args(baton_args)
            .env("TMPDIR", dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("unshare (util-linux)");
        Pid1 { unshare, _dir: dir }
    }

    /// baton's pid as seen from here: the child of `unshare`.
    fn baton(&self) -> i32 {
        eventually("baton started under unshare", START, || {
            descendants(self.unshare.id() as i32).first().copied()
        })
    }

    fn wait_exit(&mut self) -> Option<i32> {
        eventually("baton to exit", START, || {
            self.unshare.try_wait().ok().flatten()
        })
        .code()
    }
}

impl Drop for Pid1 {
    fn drop(&mut self) {
        // --kill-child takes the whole namespace down with unshare.
        let _ = self.unshare.kill();
        let _ = self.unshare.wait();
    }
}

fn run_args<'a>(listen: &'a str, extra: &[&'a str], script: &'a str) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--listen",
        listen,
        "--status-addr",
        "off",
        "--ready",
        "delay:100ms",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["--", "sh", "-c", script]);
    args
}

#[test]
fn as_pid_1_baton_reaps_orphans_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("orphan.pid");
    // The proxy leaves an orphan (re-parented to PID 1, baton) that exits soon after.
    let script = format!(
        "(sleep 0.3 & echo $! > {}) ; exec sleep 60",
        marker.display()
    );
    let mut pid1 = Pid1::start(
        dir,
        &run_args(
            ANY_PORT,
            &["--termination-drain-duration", "100ms"],
            &script,
        ),
    );
    let baton = pid1.baton();
    // The orphan's pid inside the namespace; find it from here by its parent: baton.
    eventually("orphan written", START, || {
        std::fs::read_to_string(&marker)
            .ok()
            .filter(|s| !s.trim().is_empty())
    });
    eventually("the orphan gone, not left a zombie", START, || {
        let zombies = zombie_children(baton);
        let sleeps_left = descendants(baton).into_iter().filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.starts_with("sleep\u{0}0.3"))
        });
        (zombies.is_empty() && sleeps_left.count() == 0).then_some(())
    });
    kill(Pid::from_raw(baton), Signal::SIGTERM).unwrap();
    // The proxy (sleep) dies of baton's SIGTERM: a clean stop, exit 0.
    assert_eq!(pid1.wait_exit(), Some(0));
}

#[test]
fn as_pid_1_baton_exits_with_the_proxys_code_after_its_crash_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mut pid1 = Pid1::start(
        dir,
        &run_args(ANY_PORT, &["--crash-budget", "0"], "sleep 0.5; exit 7"),
    );
    assert_eq!(pid1.wait_exit(), Some(7));
}
