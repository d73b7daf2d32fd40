//! A real child process as an epoch: this test binary re-executes itself, running
//! only [`child_epoch_helper`], with the memfd at fd 3 and `BATON_STATS_FD=3`, exactly
//! as baton's handoff lays it out.

use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::libc;

use super::child::{Stats, ENV_EPOCH, ENV_STATS_FD};
use super::layout::SlotState;
use super::testutil::slots_named;
use super::Segment;

/// Set only in the re-executed child.
const ENV_HELPER: &str = "BATON_STATS_TEST_HELPER";
const INCREMENTS: u64 = 20_000;
const RACE_NAMES: usize = 300;

/// In the child only: count as an epoch from the environment.
#[test]
fn child_epoch_helper() {
    if std::env::var_os(ENV_HELPER).is_none() {
        return;
    }
    let stats = Stats::from_env().expect("attach from the environment");
    // Rendezvous with the parent, so both claim the same names at the same time.
    stats.counter("proc_child_ready").unwrap().inc();
    let requests = stats.counter("proc_requests_total").unwrap();
    for i in 0..RACE_NAMES {
        stats.counter(&format!("proc_race_{i}")).unwrap().inc();
    }
    for _ in 0..INCREMENTS {
        requests.inc();
    }
    stats.gauge("proc_active").unwrap().set(7);
    stats.counter("proc_child_done").unwrap().inc();
}

/// Kills the child if the test fails before reaping it.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    /// Wait for the child's exit and output; SIGKILL it after `deadline`.
    fn wait_with_output(mut self, deadline: Duration) -> Output {
        let child = self.0.take().unwrap();
        let (tx, rx) = mpsc::channel::<()>();
        let pid = child.id();
        let watchdog = std::thread::spawn(move || {
            if rx.recv_timeout(deadline).is_err() {
                // SAFETY: kill(2) is memory safe; `pid` is our child, not yet reaped
                // (wait_with_output is still blocked on it).
                unsafe { libc::kill(pid as i32, libc::SIGKILL) };
            }
        });
        let output = child.wait_with_output().unwrap();
        let _ = tx.send(());
        watchdog.join().unwrap();
        output
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Wait until `cond` holds; panic after `deadline`.
fn wait_until(deadline: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    while !cond() {
        assert!(
            Instant::now() < until,
            "condition not met within {deadline:?}"
        );
        std::thread::yield_now();
    }
}

fn spawn_epoch(segment: &Segment, epoch: u32) -> KillOnDrop {
    let test_name = format!(
        "{}::child_epoch_helper",
        module_path!().split_once("::").map_or("", |(_, rest)| rest)
    );
    let source = segment.fd().as_raw_fd();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([
        test_name.as_str(),
        "--exact",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ENV_HELPER, "1")
    .env(ENV_STATS_FD, "3")
    .env(ENV_EPOCH, epoch.to_string())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    // SAFETY: runs between fork and exec and calls only async-signal-safe functions
    // (dup2, fcntl) on an fd number copied before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let placed = if source == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(source, 3)
            };
            if placed < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    KillOnDrop(Some(cmd.spawn().unwrap()))
}

#[test]
fn counters_from_a_child_process_and_baton_add_up_exactly() {
    let segment = Segment::create(4096).unwrap();
    segment.begin_epoch(1).unwrap();
    let child = spawn_epoch(&segment, 1);
    let ready = segment.counter("proc_child_ready").unwrap();
    wait_until(Duration::from_secs(30), || ready.get() == 1);

    // Claim and count the same names concurrently with the child.
    let requests = segment.counter("proc_requests_total").unwrap();
    for i in 0..RACE_NAMES {
        segment.counter(&format!("proc_race_{i}")).unwrap().inc();
    }
    for _ in 0..INCREMENTS {
        requests.inc();
    }

    let output = child.wait_with_output(Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let value = |name: &str| segment.counter(name).unwrap().get();
    assert_eq!(value("proc_child_done"), 1);
    assert_eq!(value("proc_requests_total"), 2 * INCREMENTS);
    for i in 0..RACE_NAMES {
        let name = format!("proc_race_{i}");
        assert_eq!(
            slots_named(&segment, &name, SlotState::Ready).len(),
            1,
            "{name}"
        );
        assert_eq!(value(&name), 2, "{name}");
    }
    let active = || {
        segment
            .snapshot()
            .into_iter()
            .find(|s| s.name == "proc_active")
    };
    assert_eq!(
        active().map(|s| s.value),
        Some(7),
        "kept until baton clears it"
    );
    segment.clear_epoch(1);
    assert_eq!(active().map(|s| s.value), Some(0));
}
