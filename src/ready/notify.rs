//! `--ready notify`: a per-epoch `NOTIFY_SOCKET` served by baton.
//!
//! Each epoch gets its own unix datagram socket (`<dir>/notify-<epoch>.sock`), passed as
//! `NOTIFY_SOCKET`. The socket has `SO_PASSCRED`, so the kernel attaches the sender's
//! pid to every datagram (`SCM_CREDENTIALS`); it is set before the epoch starts, so no
//! datagram arrives without it.
//!
//! **Invariant:** only `READY=1` from a process of the epoch's own process group
//! (baton starts each epoch as a group leader, so pgid = the epoch's pid) makes the epoch
//! ready. `RELOADING=1` (HAProxy `-Ws` sends it before `READY=1`) and `STOPPING=1` are
//! not readiness; other lines (`STATUS=`, `MAINPID=`…) are ignored.
//! **Race:** a helper that sends `READY=1` and exits at once may be reaped before its
//! group is looked up; it is then not credited (systemd has the same race with
//! `systemd-notify`). A message from the group leader itself is always credited.

use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{
    self, sockopt, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr,
    UnixCredentials,
};
use nix::unistd::{getpgid, Pid};
use tokio::io::Interest;
use tokio::time::{timeout_at, Instant};

/// The environment variable that tells the epoch where to send `READY=1`.
pub const ENV_NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// Longest socket path: `sockaddr_un.sun_path` is 108 bytes with the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;
/// Largest notification read (systemd accepts up to its pipe size; one page is ample).
const MAX_MESSAGE: usize = 4096;

/// What one notification datagram says, as far as readiness is concerned.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Notification {
    /// A `READY=1` line.
    pub ready: bool,
    /// A `RELOADING=1` line.
    pub reloading: bool,
    /// A `STOPPING=1` line.
    pub stopping: bool,
    /// The text of a `STATUS=` line.
    pub status: Option<String>,
}

impl Notification {
    /// Read the newline-separated `KEY=VALUE` lines of one datagram.
    pub fn parse(datagram: &[u8]) -> Notification {
        let mut n = Notification::default();
        for line in String::from_utf8_lossy(datagram).lines() {
            match line.split_once('=') {
                Some(("READY", "1")) => n.ready = true,
                Some(("RELOADING", "1")) => n.reloading = true,
                Some(("STOPPING", "1")) => n.stopping = true,
                Some(("STATUS", text)) => n.status = Some(text.to_string()),
                _ => {}
            }
        }
        n
    }
}

/// One epoch's notify socket. The socket file is removed on drop.
#[derive(Debug)]
pub struct NotifySocket {
    sock: std::os::unix::net::UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    /// Bind `<dir>/notify-<epoch>.sock` (replacing a leftover of the same name) before
    /// the epoch starts. `dir` is baton's private runtime directory; the epoch's user must
    /// be able to reach it. Fails if the path exceeds [`MAX_SOCKET_PATH`] bytes.
    pub fn bind_in(dir: &Path, epoch: u32) -> io::Result<NotifySocket> {
        let path = dir.join(format!("notify-{epoch}.sock"));
        let len = path.as_os_str().len();
        if len > MAX_SOCKET_PATH {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "NOTIFY_SOCKET path {} is {len} bytes; unix socket paths are limited to {MAX_SOCKET_PATH}: use a shorter runtime directory",
                    path.display()
                ),
            ));
        }
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let fd: OwnedFd = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        socket::setsockopt(&fd, sockopt::PassCred, &true)?;
        socket::bind(fd.as_raw_fd(), &UnixAddr::new(path.as_path())?)?;
        Ok(NotifySocket {
            sock: fd.into(),
            path,
        })
    }

    /// The socket's path: set `NOTIFY_SOCKET` ([`ENV_NOTIFY_SOCKET`]) to it on the epoch.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Resolve when a process of process group `pgid` sends `READY=1`, or fail at
    /// `deadline` with what was last seen. Needs a tokio runtime with I/O enabled. The
    /// caller races this with the epoch's exit (an epoch that dies is not waited for).
    pub async fn wait(&self, pgid: u32, deadline: Instant) -> Result<(), String> {
        let sock = self
            .sock
            .try_clone()
            .and_then(tokio::net::UnixDatagram::from_std)
            .map_err(|e| format!("{ENV_NOTIFY_SOCKET} {}: {e}", self.path.display()))?;
        let pgid = pgid as i32;
        let mut last = String::from("nothing received");
        let outcome = timeout_at(deadline, async {
            loop {
                let (text, sender) = match receive(&sock).await {
                    Ok(got) => got,
                    Err(e) => return Err(format!("receive: {e}")),
                };
                let note = Notification::parse(&text);
                match sender {
                    Some(pid) if same_group(pid, pgid) => {
                        if note.ready {
                            return Ok(());
                        }
                        if note.reloading {
                            last = format!("RELOADING=1 from pid {pid}, no READY=1 yet");
                        }
                        if let Some(status) = note.status {
                            tracing::debug!(pid, %status, "epoch status");
                        }
                    }
                    Some(pid) => {
                        tracing::warn!(pid, pgid, "notification from outside the epoch ignored");
                        last =
                            format!("message from pid {pid}, not in process group {pgid}, ignored");
                    }
                    None => last = "message without sender credentials ignored".to_string(),
                }
            }
        })
        .await;
        match outcome {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no READY=1 from process group {pgid} by the deadline ({last})"
            )),
        }
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One datagram and the pid the kernel says sent it.
async fn receive(sock: &tokio::net::UnixDatagram) -> io::Result<(Vec<u8>, Option<i32>)> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let (len, pid) = sock
        .async_io(Interest::READABLE, || {
            let mut cmsg = nix::cmsg_space!(UnixCredentials);
            let mut iov = [IoSliceMut::new(&mut buf)];
            // Any SCM_RIGHTS a sender adds do not fit the buffer: the kernel drops them.
            let msg = socket::recvmsg::<()>(
                sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            )?;
            let pid = msg.cmsgs()?.find_map(|c| match c {
                ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
                _ => None,
            });
            Ok((msg.bytes, pid))
        })
        .await?;
    buf.truncate(len);
    Ok((buf, pid))
}

fn same_group(pid: i32, pgid: i32) -> bool {
    pid == pgid || getpgid(Some(Pid::from_raw(pid))).is_ok_and(|g| g.as_raw() == pgid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_equals_one_is_readiness() {
        for (datagram, ready) in [
            (&b"READY=1"[..], true),
            (b"STATUS=warming up\nREADY=1\n", true),
            (b"RELOADING=1", false),
            (b"READY=0", false),
            (b"STOPPING=1", false),
            (b"MAINPID=42", false),
            (b"READY=1x", false),
            (b"", false),
        ] {
            assert_eq!(Notification::parse(datagram).ready, ready, "{datagram:?}");
        }
    }

    #[test]
    fn reloading_stopping_and_status_are_recognised() {
        let n = Notification::parse(b"RELOADING=1\nSTOPPING=1\nSTATUS=draining");
        assert!(n.reloading && n.stopping && !n.ready);
        assert_eq!(n.status.as_deref(), Some("draining"));
    }

    #[test]
    fn too_long_a_socket_path_is_refused_with_the_limit() {
        let dir = PathBuf::from(format!("/tmp/{}", "d".repeat(100)));
        let err = NotifySocket::bind_in(&dir, 1).unwrap_err().to_string();
        assert!(err.contains("limited to 107"), "{err}");
    }
}
