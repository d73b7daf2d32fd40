//! A keep-alive HTTP/1.1 load generator for the benchmarks (`scripts/bench`): it counts
//! like wrk and also keeps a timeline (answers and errors per bucket), which wrk cannot.
//!
//! ```text
//! loadgen --port P [--connections 16] [--threads 1] [--connection-close]
//!         [--timeline FILE] [--bucket-ms 100] [--timeout-ms 2000]
//! ```
//!
//! Runs until SIGINT or SIGTERM, then prints wrk's summary lines (`N requests in Xs`,
//! `Socket errors: connect a, read b, write c, timeout d`, `Non-2xx or 3xx responses: n`).
//! Every connection sends its next `GET /` as soon as the previous answer is complete,
//! as wrk does. Counted as errors, as wrk counts them: a connect that fails (retried
//! after 1 ms, where wrk retries at once), a write that fails, a connection that ends
//! (EOF or reset) while an answer is awaited — a keep-alive connection the server closes
//! while the next request is on its way — and an answer later than `--timeout-ms` (the
//! connection is then replaced). An answer with `Connection: close` ends its connection
//! without an error. Only loopback addresses are used.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Default)]
struct Counts {
    ok: u64,
    non2xx: u64,
    connect: u64,
    read: u64,
    write: u64,
    timeout: u64,
    /// Per bucket: answers (any status), errors (all kinds and non-2xx).
    answers: Vec<u64>,
    errors: Vec<u64>,
}

struct Shared {
    start: Instant,
    bucket: Duration,
    stop: AtomicBool,
    counts: Mutex<Counts>,
}

#[derive(Clone, Copy)]
enum Outcome {
    Answer { success: bool },
    Connect,
    Read,
    Write,
    Timeout,
}

impl Shared {
    fn record(&self, outcome: Outcome) {
        let slot = (self.start.elapsed().as_millis() / self.bucket.as_millis().max(1)) as usize;
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        if c.answers.len() <= slot {
            c.answers.resize(slot + 1, 0);
            c.errors.resize(slot + 1, 0);
        }
        let error = match outcome {
            Outcome::Answer { success } => {
                c.answers[slot] += 1;
                if success {
                    c.ok += 1;
                } else {
                    c.non2xx += 1;
                }
                !success
            }
            Outcome::Connect => {
                c.connect += 1;
                true
            }
            Outcome::Read => {
                c.read += 1;
                true
            }
            Outcome::Write => {
                c.write += 1;
                true
            }
            Outcome::Timeout => {
                c.timeout += 1;
                true
            }
        };
        if error {
            c.errors[slot] += 1;
        }
    }
}

struct Options {
    port: u16,
    connections: usize,
    threads: usize,
    close: bool,
    timeline: Option<String>,
    bucket: Duration,
    timeout: Duration,
}

fn options() -> Result<Options, String> {
    let mut o = Options {
        port: 0,
        connections: 16,
        threads: 1,
        close: false,
        timeline: None,
        bucket: Duration::from_millis(100),
        timeout: Duration::from_secs(2),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| v.parse::<u64>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--port" => o.port = number(value()?)? as u16,
            "--connections" => o.connections = number(value()?)? as usize,
            "--threads" => o.threads = number(value()?)?.max(1) as usize,
            "--connection-close" => o.close = true,
            "--timeline" => o.timeline = Some(value()?),
            "--bucket-ms" => o.bucket = Duration::from_millis(number(value()?)?.max(1)),
            "--timeout-ms" => o.timeout = Duration::from_millis(number(value()?)?),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    if o.port == 0 {
        return Err("--port is required".into());
    }
    Ok(o)
}

/// One answer read off `stream` into `buf` (which may hold the start of the next one).
/// `Ok(Some((status, keep_alive)))`, `Ok(None)` at EOF, `Err` on a reset or garbage.
async fn read_answer(
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<(u16, bool)>> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = std::str::from_utf8(&buf[..end]).map_err(|_| bad("head not UTF-8"))?;
            let mut lines = head.split("\r\n");
            let status: u16 = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| bad("no status line"))?;
            let mut length = 0usize;
            let mut keep_alive = true;
            for line in lines {
                let Some((name, value)) = line.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().map_err(|_| bad("length"))?,
                    "connection" => keep_alive = !value.eq_ignore_ascii_case("close"),
                    "transfer-encoding" => return Err(bad("chunked answers are not supported")),
                    _ => {}
                }
            }
            let total = end + 4 + length;
            while buf.len() < total {
                if fill(stream, buf).await? == 0 {
                    return Ok(None);
                }
            }
            buf.drain(..total);
            return Ok(Some((status, keep_alive)));
        }
        if fill(stream, buf).await? == 0 {
            return Ok(None);
        }
    }
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 16 * 1024];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

async fn connection(shared: Arc<Shared>, o: Arc<Options>) {
    let request = format!(
        "GET / HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{}\r\n",
        o.port,
        if o.close { "Connection: close\r\n" } else { "" }
    );
    while !shared.stop.load(Ordering::Relaxed) {
        let mut stream = match TcpStream::connect(("127.0.0.1", o.port)).await {
            Ok(s) => s,
            Err(_) => {
                shared.record(Outcome::Connect);
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut buf = Vec::with_capacity(4096);
        while !shared.stop.load(Ordering::Relaxed) {
            if stream.write_all(request.as_bytes()).await.is_err() {
                shared.record(Outcome::Write);
                break;
            }
            match tokio::time::timeout(o.timeout, read_answer(&mut stream, &mut buf)).await {
                Err(_) => {
                    shared.record(Outcome::Timeout);
                    break;
                }
                Ok(Err(_)) | Ok(Ok(None)) => {
                    // The stop flag is checked first: a connection cut by our own
                    // shutdown is not the server's error.
                    if !shared.stop.load(Ordering::Relaxed) {
                        shared.record(Outcome::Read);
                    }
                    break;
                }
                Ok(Ok(Some((status, keep_alive)))) => {
                    shared.record(Outcome::Answer {
                        success: (200..400).contains(&status),
                    });
                    if !keep_alive {
                        break;
                    }
                }
            }
        }
    }
}

fn main() {
    let o = match options() {
        Ok(o) => Arc::new(o),
        Err(e) => {
            eprintln!("loadgen: {e}");
            std::process::exit(64);
        }
    };
    let started_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let shared = Arc::new(Shared {
        start: Instant::now(),
        bucket: o.bucket,
        stop: AtomicBool::new(false),
        counts: Mutex::new(Counts::default()),
    });
    // The handlers exist before any load runs, so an early SIGINT is not fatal.
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let (mut int, mut term) = signals.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        (
            signal(SignalKind::interrupt()).expect("SIGINT handler"),
            signal(SignalKind::terminate()).expect("SIGTERM handler"),
        )
    });
    let threads: Vec<_> = (0..o.threads)
        .map(|t| {
            let (shared, o) = (shared.clone(), o.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime");
                rt.block_on(async {
                    let mine = (t..o.connections).step_by(o.threads).count();
                    let tasks: Vec<_> = (0..mine)
                        .map(|_| tokio::spawn(connection(shared.clone(), o.clone())))
                        .collect();
                    while !shared.stop.load(Ordering::Relaxed) {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    // Answers in flight at the stop are neither counted nor errors.
                    for task in tasks {
                        task.abort();
                    }
                });
            })
        })
        .collect();
    signals.block_on(async {
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
    });
    shared.stop.store(true, Ordering::Relaxed);
    let elapsed = shared.start.elapsed();
    for t in threads {
        let _ = t.join();
    }
    let c = shared.counts.lock().unwrap_or_else(|e| e.into_inner());
    let requests = c.ok + c.non2xx;
    println!(
        "{requests} requests in {:.2}s, {} connections",
        elapsed.as_secs_f64(),
        o.connections
    );
    println!(
        "  Socket errors: connect {}, read {}, write {}, timeout {}",
        c.connect, c.read, c.write, c.timeout
    );
    if c.non2xx > 0 {
        println!("  Non-2xx or 3xx responses: {}", c.non2xx);
    }
    println!(
        "Requests/sec: {:.2}",
        requests as f64 / elapsed.as_secs_f64()
    );
    if let Some(path) = &o.timeline {
        let json = format!(
            "{{\"start_unix\": {started_unix:.6}, \"bucket_ms\": {}, \"answers\": {:?}, \"errors\": {:?}}}\n",
            o.bucket.as_millis(),
            c.answers,
            c.errors
        );
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("loadgen: {path}: {e}");
            std::process::exit(1);
        }
    }
}
