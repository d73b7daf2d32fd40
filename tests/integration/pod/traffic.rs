//! Traffic to the pod IP from the test's namespace, as a Service's clients send it:
//! one new connection per request. Plain HTTP from here; TLS through `wrk` (load)
//! and `openssl s_client` (single requests, the served certificate).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One request on a new connection: status and body, or what went wrong
/// (connect refused, reset, timeout, no status line).
pub fn request(
    target: SocketAddr,
    method: &str,
    path: &str,
    headers: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    let mut s =
        TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("connect: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {target}\r\n{headers}content-length: 0\r\nconnection: close\r\n\r\n"
    );
    s.write_all(request.as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    read_response(&mut s)
}

/// One HTTP/1.1 response from `r`: status and body, complete once `content-length`
/// bytes of body are in (or at EOF without one). A client has its answer then,
/// whenever the server closes the connection.
fn read_response(r: &mut impl Read) -> Result<(u16, String), String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some(response) = complete_response(&buf) {
            return response;
        }
        match r.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read: {e}")),
        }
    }
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    if content_length(head).is_some() {
        return Err(format!("closed before the whole body: {head:?}"));
    }
    Ok((status(head)?, body.to_string()))
}

/// The response in `buf` once its headers and `content-length` body are in.
fn complete_response(buf: &[u8]) -> Option<Result<(u16, String), String>> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&buf[..end]);
    let body = &buf[end + 4..];
    let length = content_length(&head)?;
    (body.len() >= length).then(|| {
        let body = String::from_utf8_lossy(&body[..length]).into_owned();
        status(&head).map(|code| (code, body))
    })
}

fn content_length(head: &str) -> Option<usize> {
    head.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse().ok())?
    })
}

fn status(head: &str) -> Result<u16, String> {
    head.strip_prefix("HTTP/1.")
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            format!(
                "no HTTP status in {:?}",
                head.chars().take(80).collect::<String>()
            )
        })
}

/// `GET path` on the pod's status server (or any plain HTTP port): 200 and the body.
pub fn get_ok(target: SocketAddr, path: &str) -> String {
    match request(target, "GET", path, "", Duration::from_secs(5)) {
        Ok((200, body)) => body,
        other => panic!("GET {target}{path}: {other:?}"),
    }
}

/// Totals of a plain-HTTP load.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub ok: u64,
    pub failed: u64,
    /// The first few failures, for the assertion message.
    pub samples: Vec<String>,
    pub elapsed: Duration,
}

/// A bounded plain-HTTP load: `workers` threads, each request on a new connection,
/// until `max_requests` in all or `max_time`, or [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    tally: Arc<Mutex<Tally>>,
    threads: Vec<JoinHandle<()>>,
    started: Instant,
}

impl Load {
    pub fn start(
        target: SocketAddr,
        workers: usize,
        max_requests: u64,
        max_time: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let started = Instant::now();
        let deadline = started + max_time;
        let sent = Arc::new(AtomicU64::new(0));
        let threads = (0..workers)
            .map(|_| {
                let (stop, tally, sent) = (stop.clone(), tally.clone(), sent.clone());
                std::thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed)
                        && Instant::now() < deadline
                        && sent.fetch_add(1, Ordering::SeqCst) < max_requests
                    {
                        let outcome = request(target, "GET", "/", "", Duration::from_secs(15));
                        let mut t = tally.lock().unwrap();
                        match outcome {
                            Ok((200, _)) => t.ok += 1,
                            other => {
                                t.failed += 1;
                                if t.samples.len() < 10 {
                                    t.samples.push(format!("{other:?}"));
                                }
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            tally,
            threads,
            started,
        }
    }

    /// Wait until the load has ended by itself (count or time); the totals.
    pub fn finish(mut self) -> Tally {
        self.join()
    }

    fn join(&mut self) -> Tally {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let mut tally = self.tally.lock().unwrap().clone();
        tally.elapsed = self.started.elapsed();
        tally
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.join();
    }
}

/// What `wrk` reported.
#[derive(Debug)]
pub struct WrkSummary {
    pub requests: u64,
    /// Socket errors (connect, read, write, timeout) plus non-2xx/3xx answers.
    pub failed: u64,
    pub text: String,
}

/// TLS load with `wrk`, `Connection: close` on every request, so every request is
/// a new connection and a new handshake. Bounded by `max_time`; [`Wrk::stop`] ends
/// it earlier (SIGINT: wrk prints its summary).
pub struct Wrk {
    child: Option<Child>,
}

impl Wrk {
    pub fn start(url: &str, connections: u32, max_time: Duration) -> Self {
        let child = Command::new("wrk")
            .args(["-t1", &format!("-c{connections}")])
            .arg(format!("-d{}s", max_time.as_secs()))
            // A request fails on an error or a reset, not on a slow answer from a
            // busy test machine: the timeout is a patient client's.
            .args(["--timeout", "15s", "-H", "Connection: close", url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("wrk (scripts/install-test-deps installs it)");
        Wrk { child: Some(child) }
    }

    /// Whether it still runs (the load covered everything so far).
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn stop(mut self) -> WrkSummary {
        let child = self.child.take().expect("wrk");
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
        let out = child.wait_with_output().expect("wrk output");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let requests = text
            .split_once(" requests in")
            .and_then(|(head, _)| head.split_whitespace().last()?.parse().ok())
            .unwrap_or_else(|| panic!("no wrk summary in:\n{text}"));
        // `Socket errors: connect 0, read 0, write 0, timeout 0` (only when any).
        let socket_errors: u64 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Socket errors:"))
            .map(|counts| {
                counts
                    .split(',')
                    .filter_map(|kv| kv.split_whitespace().nth(1)?.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0);
        let non_2xx: u64 = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        let failed = socket_errors + non_2xx;
        WrkSummary {
            requests,
            failed,
            text,
        }
    }
}

impl Drop for Wrk {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A request over TLS in a thread of its own (`openssl s_client`, bounded by
/// `timeout`): its status, and when the whole answer was in.
pub fn tls_request_in_background(
    target: SocketAddr,
    path: &str,
    timeout: Duration,
) -> JoinHandle<(Result<u16, String>, Instant)> {
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n");
    std::thread::spawn(move || {
        let mut child = Command::new("timeout")
            .arg(format!("{}", timeout.as_secs_f64()))
            .args(["openssl", "s_client", "-quiet", "-servername", "localhost"])
            .args(["-connect", &target.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("openssl (scripts/install-test-deps installs it)");
        // -quiet keeps reading after stdin's end, until the server closes.
        let sent = child.stdin.take().unwrap().write_all(request.as_bytes());
        let outcome = sent
            .map_err(|e| format!("openssl stdin: {e}"))
            .and_then(|()| read_response(child.stdout.as_mut().unwrap()))
            .map(|(code, _)| code);
        let done = Instant::now();
        // SIGTERM: `timeout` passes it on to openssl.
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let _ = child.wait();
        (outcome, done)
    })
}

/// The serial (hex, as openssl prints it) of the certificate served at `target`.
pub fn served_serial(target: SocketAddr) -> Option<String> {
    crate::harness::served_serial_at(target)
}
