//! Test support shared by process tests: the real python3, a child that is always
//! killed, and reading a child's output with a deadline.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// How long any single wait in a test may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// The python3 interpreter itself, not a wrapper script (pyenv shims are bash scripts
/// whose own fds would blur what the epoch received).
pub fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 is needed by the process tests");
        PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
    })
}

/// A spawned child (leader of its own process group) whose group is killed on drop,
/// with its stdout lines arriving on a channel.
pub struct Guard {
    pub child: Child,
    lines: mpsc::Receiver<String>,
}

impl Guard {
    /// Spawn `cmd` with stdout piped.
    pub fn spawn(cmd: &mut Command) -> Guard {
        let mut child = cmd.stdout(Stdio::piped()).spawn().expect("spawn");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Guard { child, lines }
    }

    /// The next stdout line, or a panic at the deadline.
    pub fn line(&self) -> String {
        self.lines
            .recv_timeout(DEADLINE)
            .expect("child printed nothing before the deadline")
    }

    /// Read `KEY=VALUE` lines into a map, up to and including the line of `until_key`.
    pub fn report(&self, until_key: &str) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        loop {
            let line = self.line();
            let (k, v) = line.split_once('=').unwrap_or((line.as_str(), ""));
            map.insert(k.to_string(), v.to_string());
            if k == until_key {
                return map;
            }
        }
    }

    /// Wait for the child to exit (polling, with the deadline).
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < end,
                "child did not exit before the deadline"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        // Only while the leader is unreaped: its pid (= the group id) cannot be reused.
        if let Ok(None) = self.child.try_wait() {
            let _ = killpg(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL);
        }
        let _ = self.child.wait();
    }
}
