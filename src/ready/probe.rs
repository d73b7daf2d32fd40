//! Polling probes (`tcp:`, `http:`, `exec:`) and `delay:`.
//!
//! A probe is tried at once, then every [`POLL_INTERVAL`] until it succeeds or the
//! deadline (`--ready-timeout` after the epoch started) passes; the error then carries
//! the last failure. **Invariant:** no attempt outlives the deadline (each runs under
//! `timeout_at(deadline)` and at most [`ATTEMPT_TIMEOUT`]).

use std::future::Future;
use std::process::{Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout_at, Instant};

use super::spec::HttpTarget;

/// Pause between two attempts of a polling probe.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Longest single attempt (a black-holed connect must not eat the whole budget).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
/// Most bytes read while looking for the status line of an HTTP answer.
const MAX_STATUS_LINE: usize = 8 * 1024;

/// Retry `attempt` every [`POLL_INTERVAL`] until it returns `Ok` or `deadline` passes.
/// The error is `"not ready by the deadline: <last failure>"`.
pub async fn poll<F, Fut>(deadline: Instant, mut attempt: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut last = String::from("no attempt finished");
    loop {
        let started = Instant::now();
        if started >= deadline {
            return Err(format!("not ready by the deadline: {last}"));
        }
        let bound = deadline.min(started + ATTEMPT_TIMEOUT);
        match timeout_at(bound, attempt()).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => last = e,
            Err(_) => last = format!("attempt still running after {:?}", bound - started),
        }
        sleep_until(deadline.min(started + POLL_INTERVAL)).await;
    }
}

/// `tcp:HOST:PORT`: ready when a connect succeeds (the connection is closed at once).
pub async fn wait_tcp(addr: &str, deadline: Instant) -> Result<(), String> {
    poll(deadline, || async move {
        TcpStream::connect(addr)
            .await
            .map(drop)
            .map_err(|e| format!("connect {addr}: {e}"))
    })
    .await
}

/// `http:URL`: ready when `GET` answers 2xx. One request per attempt, HTTP/1.1 with
/// `Connection: close`; only the status line is read.
pub async fn wait_http(target: &HttpTarget, deadline: Instant) -> Result<(), String> {
    poll(deadline, || async move {
        match http_status(target).await {
            Ok(code) if (200..300).contains(&code) => Ok(()),
            Ok(code) => Err(format!("GET {target}: status {code}")),
            Err(e) => Err(format!("GET {target}: {e}")),
        }
    })
    .await
}

async fn http_status(target: &HttpTarget) -> std::io::Result<u16> {
    let mut conn = TcpStream::connect(&target.authority).await?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: baton-ready\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    conn.write_all(request.as_bytes()).await?;
    let mut head = Vec::new();
    let mut chunk = [0u8; 1024];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < MAX_STATUS_LINE {
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&chunk[..n]);
    }
    parse_status_line(&head).ok_or_else(|| {
        let shown = String::from_utf8_lossy(&head[..head.len().min(80)]).into_owned();
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("not an HTTP answer: {shown:?}"),
        )
    })
}

/// The status code of `HTTP/1.x NNN …`.
fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\r').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split(' ');
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

/// The command an `exec:CMD` attempt runs: `sh -c CMD`, stdin from `/dev/null`.
pub fn exec_command(command: &str) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(command).stdin(Stdio::null());
    cmd
}

/// `exec:CMD`: ready when an attempt exits 0. `run` starts one attempt (through
/// baton's reaper) and resolves to `Ok` on exit 0, `Err(description)` otherwise.
/// An attempt still running at [`ATTEMPT_TIMEOUT`] or at the deadline is abandoned by
/// dropping its future: `run` must kill the process (group) when dropped.
pub async fn wait_exec<R, Fut>(command: &str, deadline: Instant, mut run: R) -> Result<(), String>
where
    R: FnMut(Command) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    poll(deadline, || run(exec_command(command))).await
}

/// `delay:DUR`: ready once `start + delay` is reached. A delay that ends after the
/// deadline fails at once (configuration should refuse `delay` ≥ `--ready-timeout`).
pub async fn wait_delay(start: Instant, delay: Duration, deadline: Instant) -> Result<(), String> {
    let at = start + delay;
    if at > deadline {
        return Err(format!(
            "delay {} ends after the ready timeout",
            humantime::format_duration(delay)
        ));
    }
    sleep_until(at).await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_strictly() {
        for (head, expected) in [
            (&b"HTTP/1.1 200 OK\r\n"[..], Some(200)),
            (b"HTTP/1.0 503 Service Unavailable\r\nx", Some(503)),
            (b"HTTP/1.1 204\r\n", Some(204)),
            (b"HTTP/1.1 20", None),
            (b"SSH-2.0-OpenSSH\r\n", None),
            (b"", None),
        ] {
            assert_eq!(parse_status_line(head), expected, "{head:?}");
        }
    }

    #[test]
    fn exec_attempts_run_the_command_through_sh() {
        let cmd = exec_command("test -f /ready && exit 0");
        assert_eq!(cmd.get_program(), "sh");
        let args: Vec<_> = cmd.get_args().collect();
        assert_eq!(args, ["-c", "test -f /ready && exit 0"]);
    }
}
