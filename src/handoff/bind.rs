//! The listener set: every `--listen` socket, bound once and held for baton's lifetime.
//!
//! **Invariant:** baton never closes a listening socket while it runs; every epoch
//! receives duplicates of the same sockets, so connections that arrive between two
//! epochs wait in the kernel backlog instead of being refused.
//! **Invariant:** the held fds are close-on-exec in baton; only [`super::prepare()`]
//! makes copies inheritable, in the child, between fork and exec.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, UnixAddr,
};
use thiserror::Error;

use super::spec::{check_distinct_names, ListenAddr, ListenSpec, ListenSpecError};

/// Listen backlog for stream listeners: the system maximum (`SOMAXCONN`, capped by
/// `net.core.somaxconn`), so the gap between two epochs is absorbed by the kernel.
const BACKLOG: Backlog = Backlog::MAXCONN;

/// Why a listener could not be bound. Every variant names the `--listen` value.
#[derive(Debug, Error)]
pub enum BindError {
    /// Two listeners share a name (ignoring case).
    #[error(transparent)]
    Spec(#[from] ListenSpecError),
    /// The address is taken (by another process, or another `--listen`).
    #[error("--listen {listen}: address in use")]
    AddrInUse {
        /// The `--listen` value as typed.
        listen: String,
    },
    /// The address is not one of this host's (or not allowed to us).
    #[error("--listen {listen}: address not available on this host")]
    AddrNotAvailable {
        /// The `--listen` value as typed.
        listen: String,
    },
    /// Binding needs a privilege baton lacks (a port below 1024, a directory's mode).
    #[error("--listen {listen}: permission denied")]
    PermissionDenied {
        /// The `--listen` value as typed.
        listen: String,
    },
    /// A unix listener's path holds something that is not a socket: never replaced.
    #[error("--listen {listen}: {} exists and is not a socket; refusing to replace it", path.display())]
    NotASocket {
        /// The `--listen` value as typed.
        listen: String,
        /// The path that is in the way.
        path: PathBuf,
    },
    /// Any other failure of a system call.
    #[error("--listen {listen}: {op}: {source}")]
    Io {
        /// The `--listen` value as typed.
        listen: String,
        /// The operation that failed (`socket`, `bind`, `listen`…).
        op: &'static str,
        /// The system's error.
        source: io::Error,
    },
}

/// One bound socket of the set.
#[derive(Debug)]
pub struct Listener {
    spec: ListenSpec,
    fd: OwnedFd,
    local: ListenAddr,
    /// For unix listeners: the socket file's (device, inode) right after bind, so that
    /// drop removes it only if it is still ours.
    unix_file: Option<(u64, u64)>,
}

impl Listener {
    /// The `--listen` it came from.
    pub fn spec(&self) -> &ListenSpec {
        &self.spec
    }

    /// The address actually bound (port 0 resolved to the real port).
    pub fn local_addr(&self) -> &ListenAddr {
        &self.local
    }

    /// The socket. It stays open, and owned by the set, for as long as the set lives.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let (ListenAddr::Unix(path), Some(id)) = (&self.local, self.unix_file) {
            if file_id(path) == Some(id) {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// Every `--listen` socket, in `--listen` order (which is also fd order in an epoch).
#[derive(Debug)]
pub struct ListenerSet {
    listeners: Vec<Listener>,
}

impl ListenerSet {
    /// Bind each spec once. Stops at the first failure; sockets bound before it are closed.
    pub fn bind(specs: &[ListenSpec]) -> Result<ListenerSet, BindError> {
        check_distinct_names(specs)?;
        let listeners = specs.iter().map(bind_one).collect::<Result<_, _>>()?;
        Ok(ListenerSet { listeners })
    }

    /// The listeners in `--listen` order.
    pub fn listeners(&self) -> &[Listener] {
        &self.listeners
    }

    /// How many listeners (the child's `LISTEN_FDS`).
    pub fn len(&self) -> usize {
        self.listeners.len()
    }

    /// The real bound address of listener `i` (port 0 resolved), if it exists.
    #[cfg(test)]
    pub fn local_addr(&self, i: usize) -> Option<&ListenAddr> {
        self.listeners.get(i).map(|l| &l.local)
    }
}

fn bind_one(spec: &ListenSpec) -> Result<Listener, BindError> {
    let io_err = |op: &'static str| {
        move |e: Errno| classify(spec, op, io::Error::from_raw_os_error(e as i32))
    };
    match &spec.addr {
        ListenAddr::Tcp(addr) | ListenAddr::Udp(addr) => {
            let stream = matches!(spec.addr, ListenAddr::Tcp(_));
            let family = if addr.is_ipv4() {
                AddressFamily::Inet
            } else {
                AddressFamily::Inet6
            };
            let ty = if stream {
                SockType::Stream
            } else {
                SockType::Datagram
            };
            let fd = socket::socket(family, ty, SockFlag::SOCK_CLOEXEC, None)
                .map_err(io_err("socket"))?;
            socket::setsockopt(&fd, sockopt::ReuseAddr, &true)
                .map_err(io_err("setsockopt SO_REUSEADDR"))?;
            socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(*addr)).map_err(io_err("bind"))?;
            if stream {
                socket::listen(&fd, BACKLOG).map_err(io_err("listen"))?;
            }
            let bound: SockaddrStorage =
                socket::getsockname(fd.as_raw_fd()).map_err(io_err("getsockname"))?;
            let real = inet_addr(&bound).ok_or_else(|| {
                classify(spec, "getsockname", io::Error::other("not an inet address"))
            })?;
            let local = if stream {
                ListenAddr::Tcp(real)
            } else {
                ListenAddr::Udp(real)
            };
            Ok(Listener {
                spec: spec.clone(),
                fd,
                local,
                unix_file: None,
            })
        }
        ListenAddr::Unix(path) => {
            clear_stale_socket(spec, path)?;
            let fd = socket::socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
            .map_err(io_err("socket"))?;
            let addr = UnixAddr::new(path.as_path()).map_err(io_err("socket address"))?;
            socket::bind(fd.as_raw_fd(), &addr).map_err(io_err("bind"))?;
            socket::listen(&fd, BACKLOG).map_err(io_err("listen"))?;
            Ok(Listener {
                spec: spec.clone(),
                fd,
                local: ListenAddr::Unix(path.clone()),
                unix_file: file_id(path),
            })
        }
    }
}

/// A socket file left behind by a dead process is removed; a live one (something
/// accepts connections on it) is "address in use"; anything else is never touched.
fn clear_stale_socket(spec: &ListenSpec, path: &Path) -> Result<(), BindError> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(classify(spec, "stat", e)),
    };
    if !meta.file_type().is_socket() {
        return Err(BindError::NotASocket {
            listen: spec.raw.clone(),
            path: path.to_path_buf(),
        });
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Err(BindError::AddrInUse {
            listen: spec.raw.clone(),
        }),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => std::fs::remove_file(path)
            .or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            })
            .map_err(|e| classify(spec, "remove stale socket", e)),
        Err(e) => Err(classify(spec, "probe existing socket", e)),
    }
}

fn classify(spec: &ListenSpec, op: &'static str, source: io::Error) -> BindError {
    let listen = spec.raw.clone();
    match source.raw_os_error().map(Errno::from_raw) {
        Some(Errno::EADDRINUSE) => BindError::AddrInUse { listen },
        Some(Errno::EADDRNOTAVAIL) => BindError::AddrNotAvailable { listen },
        Some(Errno::EACCES) | Some(Errno::EPERM) => BindError::PermissionDenied { listen },
        _ => BindError::Io { listen, op, source },
    }
}

fn inet_addr(addr: &SockaddrStorage) -> Option<std::net::SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(std::net::SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| std::net::SocketAddr::V6((*v6).into()))
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, TcpListener, TcpStream};

    fn spec(s: &str) -> ListenSpec {
        ListenSpec::parse(s).unwrap()
    }

    fn tcp_port(set: &ListenerSet, i: usize) -> SocketAddr {
        match set.local_addr(i) {
            Some(ListenAddr::Tcp(a)) => *a,
            other => panic!("listener {i} is not tcp: {other:?}"),
        }
    }

    #[test]
    fn port_zero_reports_the_real_port_and_accepts_connections() {
        let set =
            ListenerSet::bind(&[spec("a=tcp://127.0.0.1:0"), spec("b=udp://127.0.0.1:0")]).unwrap();
        let addr = tcp_port(&set, 0);
        assert_ne!(addr.port(), 0);
        // The handshake completes into the held backlog even though nobody accepts.
        TcpStream::connect(addr).unwrap();
        match set.local_addr(1) {
            Some(ListenAddr::Udp(a)) => assert_ne!(a.port(), 0),
            other => panic!("{other:?}"),
        }
        assert_eq!(set.len(), 2);
        assert!(set.local_addr(2).is_none());
    }

    #[test]
    fn ipv6_loopback_binds() {
        // Hosts without IPv6 report "address not available": still a clear error.
        match ListenerSet::bind(&[spec("v6=tcp://[::1]:0")]) {
            Ok(set) => {
                assert!(matches!(set.local_addr(0), Some(ListenAddr::Tcp(a)) if a.is_ipv6()))
            }
            Err(e) => assert!(matches!(e, BindError::AddrNotAvailable { .. }), "{e}"),
        }
    }

    #[test]
    fn port_in_use_is_an_error_naming_the_listener() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let value = format!("http=tcp://{}", taken.local_addr().unwrap());
        let err = ListenerSet::bind(&[spec(&value)]).unwrap_err();
        assert!(matches!(err, BindError::AddrInUse { .. }));
        assert_eq!(err.to_string(), format!("--listen {value}: address in use"));
    }

    #[test]
    fn the_same_address_twice_is_address_in_use_for_the_second() {
        let first = ListenerSet::bind(&[spec("a=tcp://127.0.0.1:0")]).unwrap();
        let addr = tcp_port(&first, 0);
        let err = ListenerSet::bind(&[spec(&format!("b=tcp://{addr}"))]).unwrap_err();
        assert!(err.to_string().starts_with("--listen b=tcp://"), "{err}");
    }

    #[test]
    fn names_colliding_ignoring_case_are_refused_before_binding() {
        let err = ListenerSet::bind(&[spec("a=tcp://127.0.0.1:0"), spec("A=tcp://127.0.0.1:0")])
            .unwrap_err();
        assert!(matches!(err, BindError::Spec(_)), "{err}");
    }

    #[test]
    fn unix_listener_replaces_a_stale_socket_and_removes_its_file_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.sock");
        // A socket file whose listener is gone: stale.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let set = ListenerSet::bind(&[spec(&format!("s=unix://{}", path.display()))]).unwrap();
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        drop(set);
        assert!(!path.exists());
    }

    #[test]
    fn unix_listener_refuses_to_clobber_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("precious");
        std::fs::write(&path, "data").unwrap();
        let value = format!("s=unix://{}", path.display());
        let err = ListenerSet::bind(&[spec(&value)]).unwrap_err();
        assert!(matches!(err, BindError::NotASocket { .. }), "{err}");
        assert!(err.to_string().starts_with(&format!("--listen {value}: ")));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
    }

    #[test]
    fn unix_listener_on_a_live_socket_is_address_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.sock");
        let _live = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let err = ListenerSet::bind(&[spec(&format!("s=unix://{}", path.display()))]).unwrap_err();
        assert!(matches!(err, BindError::AddrInUse { .. }), "{err}");
    }

    #[test]
    fn held_sockets_are_close_on_exec_in_baton() {
        let set = ListenerSet::bind(&[spec("a=tcp://127.0.0.1:0")]).unwrap();
        let flags =
            nix::fcntl::fcntl(set.listeners()[0].fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & nix::libc::FD_CLOEXEC, 0);
    }
}
