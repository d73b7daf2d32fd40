//! What an epoch writes: each line relayed to baton's own output (see
//! [`crate::logging::proxy_line`]) and the last few kept, so that a failure message
//! can say what the proxy said before it died (Envoy's bind error, the exec shim's
//! missing command).

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncBufReadExt;
use tokio::net::unix::pipe;
use tokio::sync::watch;

use crate::logging::{self, Stream};

/// Lines kept per epoch.
const TAIL: usize = 20;
/// A longer line is cut (and relayed in pieces): a runaway writer cannot make baton
/// buffer without bound.
const MAX_LINE: usize = 16 * 1024;
/// The longest failure cause quoted.
const MAX_CAUSE: usize = 400;

/// The relay of one epoch's output.
pub(super) struct Relay {
    tail: Arc<Mutex<VecDeque<String>>>,
    /// Counts the streams that reached end of file.
    closed: watch::Receiver<usize>,
    streams: usize,
}

impl Relay {
    /// Relay `child`'s piped stdout and stderr (whichever it has).
    pub fn start(epoch: u32, pid: u32, child: &mut Child) -> Relay {
        let tail = Arc::new(Mutex::new(VecDeque::with_capacity(TAIL)));
        let (done, closed) = watch::channel(0usize);
        let done = Arc::new(done);
        let mut streams = 0;
        let pipes: [(Option<OwnedFd>, Stream); 2] = [
            (child.stdout.take().map(OwnedFd::from), Stream::Stdout),
            (child.stderr.take().map(OwnedFd::from), Stream::Stderr),
        ];
        for (fd, stream) in pipes {
            let Some(fd) = fd else { continue };
            let Ok(receiver) = pipe::Receiver::from_owned_fd(fd) else {
                continue;
            };
            streams += 1;
            let (tail, done) = (tail.clone(), done.clone());
            tokio::spawn(async move {
                read_lines(receiver, epoch, pid, stream, &tail).await;
                done.send_modify(|n| *n += 1);
            });
        }
        Relay {
            tail,
            closed,
            streams,
        }
    }

    /// Once the process has exited: what it said last that may explain why, after
    /// its streams end (at most `wait`: a child it left behind may hold them).
    pub async fn last_words(mut self, wait: Duration) -> Option<String> {
        let streams = self.streams;
        let _ = tokio::time::timeout(wait, self.closed.wait_for(|n| *n >= streams)).await;
        let tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        cause(tail.iter().map(String::as_str))
    }
}

async fn read_lines(
    receiver: pipe::Receiver,
    epoch: u32,
    pid: u32,
    stream: Stream,
    tail: &Mutex<VecDeque<String>>,
) {
    let mut reader = tokio::io::BufReader::new(receiver);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let mut limited = (&mut reader).take(MAX_LINE as u64);
        match limited.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        logging::proxy_line(epoch, pid, stream, line);
        let mut tail = tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.len() == TAIL {
            tail.pop_front();
        }
        tail.push_back(line.to_string());
    }
}

use tokio::io::AsyncReadExt;

/// The line that most likely says why a process failed: the last one that reads
/// like an error, else the last non-empty one; cut to [`MAX_CAUSE`].
fn cause<'a>(lines: impl DoubleEndedIterator<Item = &'a str> + Clone) -> Option<String> {
    const MARKERS: [&str; 9] = [
        "error",
        "critical",
        "cannot",
        "fail",
        "not found",
        "no such",
        "denied",
        "refused",
        "in use",
    ];
    let reads_like_error = |l: &str| {
        let lower = l.to_ascii_lowercase();
        MARKERS.iter().any(|m| lower.contains(m))
    };
    let found = lines
        .clone()
        .rev()
        .find(|l| reads_like_error(l))
        .or_else(|| lines.rev().find(|l| !l.trim().is_empty()))?;
    let found = found.trim();
    Some(match found.char_indices().nth(MAX_CAUSE) {
        Some((cut, _)) => format!("{}…", &found[..cut]),
        None => found.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cause_is_the_last_line_that_reads_like_an_error() {
        let lines = [
            "[info][main] starting",
            "[critical][main] error initializing configuration: cannot bind '127.0.0.1:15000': Address already in use",
            "[info][main] exiting",
        ];
        assert_eq!(cause(lines.iter().copied()).as_deref(), Some(lines[1]));
        assert_eq!(cause(["a", "b", ""].iter().copied()).as_deref(), Some("b"));
        assert_eq!(cause(std::iter::empty()), None);
        let long = "x".repeat(1000);
        assert_eq!(
            cause([long.as_str()].iter().copied())
                .unwrap()
                .chars()
                .count(),
            MAX_CAUSE + 1
        );
    }
}
