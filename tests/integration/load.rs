//! A bounded HTTP load on loopback that counts every failed request.
//!
//! Half the workers open a new connection per request (they see refused or reset
//! connections), half keep connections alive the way real clients do: they honour
//! `connection: close`, and re-send a request only when a *reused* idle connection
//! turns out to be closed before any byte of the answer (the one case HTTP/1.1
//! clients retry). Such retries are counted apart and reported.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Totals of a finished load.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    pub ok: u64,
    pub errors: u64,
    pub stale_retries: u64,
    pub samples: Vec<String>,
}

#[derive(Default)]
struct Shared {
    ok: AtomicU64,
    errors: AtomicU64,
    stale: AtomicU64,
    samples: Mutex<Vec<String>>,
}

impl Shared {
    fn error(&self, e: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut s = self.samples.lock().unwrap();
        if s.len() < 10 {
            s.push(e);
        }
    }
}

/// A running load; `stop` ends it and returns the tally.
pub struct Load {
    stop: Arc<AtomicBool>,
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    /// `workers` threads against `127.0.0.1:port`, each stopping after `max_requests`
    /// or `max_time`, whichever comes first.
    pub fn start(port: u16, workers: usize, max_requests: u64, max_time: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Shared::default());
        let threads = (0..workers)
            .map(|i| {
                let (stop, shared) = (stop.clone(), shared.clone());
                std::thread::spawn(move || {
                    let deadline = Instant::now() + max_time;
                    let keep_alive = i % 2 == 1;
                    let mut conn: Option<(BufReader<TcpStream>, u32)> = None;
                    let mut sent = 0;
                    while !stop.load(Ordering::Relaxed)
                        && sent < max_requests
                        && Instant::now() < deadline
                    {
                        sent += 1;
                        if keep_alive {
                            keep_alive_request(port, &mut conn, &shared);
                        } else {
                            match super::harness::get(port) {
                                Ok(200) => drop(shared.ok.fetch_add(1, Ordering::Relaxed)),
                                Ok(code) => shared.error(format!("status {code}")),
                                Err(e) => shared.error(e),
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            shared,
            threads,
        }
    }

    /// Requests answered 200 so far.
    pub fn ok(&self) -> u64 {
        self.shared.ok.load(Ordering::Relaxed)
    }

    /// End the load and collect the totals.
    pub fn stop(mut self) -> Tally {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        Tally {
            ok: self.shared.ok.load(Ordering::Relaxed),
            errors: self.shared.errors.load(Ordering::Relaxed),
            stale_retries: self.shared.stale.load(Ordering::Relaxed),
            samples: self.shared.samples.lock().unwrap().clone(),
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

enum Outcome {
    Ok {
        close: bool,
    },
    /// Nothing at all came back on a reused connection.
    Stale,
    Failed(String),
}

fn keep_alive_request(port: u16, conn: &mut Option<(BufReader<TcpStream>, u32)>, shared: &Shared) {
    for _attempt in 0..2 {
        if conn.is_none() {
            match TcpStream::connect(("127.0.0.1", port)) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
                    *conn = Some((BufReader::new(s), 0));
                }
                Err(e) => return shared.error(format!("connect: {e}")),
            }
        }
        let (reader, uses) = conn.as_mut().expect("connection");
        let reused = *uses > 0;
        *uses += 1;
        match exchange(reader) {
            Outcome::Ok { close } => {
                shared.ok.fetch_add(1, Ordering::Relaxed);
                if close {
                    *conn = None;
                }
                return;
            }
            Outcome::Stale if reused => {
                shared.stale.fetch_add(1, Ordering::Relaxed);
                *conn = None;
            }
            Outcome::Stale => {
                *conn = None;
                return shared.error("connection closed before any response".into());
            }
            Outcome::Failed(e) => {
                *conn = None;
                return shared.error(e);
            }
        }
    }
    shared.error("stale connection twice in a row".into());
}

fn exchange(reader: &mut BufReader<TcpStream>) -> Outcome {
    if reader
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .is_err()
    {
        return Outcome::Stale;
    }
    let mut status = String::new();
    match reader.read_line(&mut status) {
        Ok(0) => return Outcome::Stale,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Outcome::Stale,
        Err(e) => return Outcome::Failed(format!("read status: {e}")),
        Ok(_) => {}
    }
    let code = match super::harness::parse_status(status.as_bytes()) {
        Ok(c) => c,
        Err(e) => return Outcome::Failed(e),
    };
    let (mut length, mut close) = (0usize, false);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) => return Outcome::Failed("eof in headers".into()),
            Err(e) => return Outcome::Failed(format!("read headers: {e}")),
            Ok(_) => {}
        }
        if line == "\r\n" {
            break;
        }
        let lower = line.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        if lower.starts_with("connection:") && lower.contains("close") {
            close = true;
        }
    }
    let mut body = vec![0; length];
    if let Err(e) = reader.read_exact(&mut body) {
        return Outcome::Failed(format!("read body: {e}"));
    }
    if code != 200 {
        return Outcome::Failed(format!("status {code}"));
    }
    Outcome::Ok { close }
}

/// Put `port` under load, hot-restart `baton` `restarts` times by SIGHUP (each time
/// waiting for the new epoch to serve and `per_epoch` requests to go through it),
/// and return the tally. Epoch numbers are expected to count up from 1.
pub fn hot_restarts_under_load(
    baton: &mut super::harness::Baton,
    port: u16,
    restarts: u64,
    per_epoch: u64,
) -> Tally {
    use super::harness::eventually;
    let deadline = Duration::from_secs(30);
    let load = Load::start(port, 4, 2_000_000, Duration::from_secs(180));
    eventually("load to flow", deadline, || {
        (load.ok() > per_epoch).then_some(())
    });
    for epoch in 1..=restarts {
        let before = load.ok();
        baton.signal(nix::sys::signal::Signal::SIGHUP);
        baton.wait_serving(epoch, deadline);
        eventually("requests through the new epoch", deadline, || {
            (load.ok() > before + per_epoch).then_some(())
        });
    }
    load.stop()
}
