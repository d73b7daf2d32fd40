//! Preparing an epoch's `Command`: its fds, its environment, a clean process state.
//!
//! In the child, between fork and exec, only async-signal-safe calls run (`dup2`,
//! `fcntl`, `close_range`, `sigprocmask`, `sigaction`, `getrlimit`): no allocation, no
//! locks, no `set_var`.
//!
//! **Invariant:** after exec the child has exactly fds 0, 1, 2 and `3 .. 3 + n`
//! (listeners, then extra fds), none of them close-on-exec; every other fd baton had
//! is closed by the exec.
//! **Race avoided:** an fd that must go to slot `k` may itself sit at another slot
//! (baton's own listener at fd 4 must become fd 3 while fd 3 must become fd 4). So
//! the parent first duplicates every source above the highest slot
//! (`F_DUPFD_CLOEXEC` with a minimum), and the child only copies from there down.
//! **Caveat:** std reports exec failures through a close-on-exec pipe that may sit in
//! a slot; if it does, a failed exec of the *shim* is seen as a child exiting 1 instead
//! of a spawn error. The shim is baton's own image, and the shim itself reports a
//! failed exec of COMMAND with exit 127/126.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::fcntl::{fcntl, FcntlArg};
use nix::libc;
use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};

use super::bind::ListenerSet;
use super::env::{epoch_env, ENV_LISTEN_PID, FIRST_FD};

/// An fd handed to an epoch after the listeners, announced in the environment variable
/// `env` (e.g. `BATON_STATS_FD` for the stats segment).
#[derive(Debug, Clone, Copy)]
pub struct ExtraFd<'a> {
    /// The environment variable that carries the fd number.
    pub env: &'a str,
    /// The fd; it is duplicated, so it only needs to live during [`prepare()`].
    pub fd: BorrowedFd<'a>,
}

impl<'a> ExtraFd<'a> {
    /// An extra fd announced as `env`.
    pub fn new(env: &'a str, fd: &'a impl AsFd) -> Self {
        ExtraFd {
            env,
            fd: fd.as_fd(),
        }
    }
}

/// Environment variables baton's own environment may carry that must not leak into an
/// epoch: a `LISTEN_PID` of baton (the shim sets the epoch's own) and the
/// `NOTIFY_SOCKET` of baton's supervisor (`--ready notify` sets the epoch's own).
const SCRUBBED: [&str; 2] = [ENV_LISTEN_PID, "NOTIFY_SOCKET"];

/// Prepare `cmd` (normally built by [`super::shim_command`]) to start epoch `epoch`:
/// the set's listeners at fds 3, 4, … in `--listen` order, then `extra`; the
/// environment of [`super::epoch_env`]; its own process group; an empty signal mask and
/// default signal dispositions; no other inherited fd.
///
/// The fds are duplicated now (close-on-exec in baton) and owned by `cmd`: spawn it,
/// then drop it to close the duplicates. Add `NOTIFY_SOCKET` after this call.
/// Fails only if the duplicates cannot be made (fd limit reached).
pub fn prepare(
    cmd: &mut Command,
    set: &ListenerSet,
    extra: &[ExtraFd<'_>],
    epoch: u32,
) -> io::Result<()> {
    let total = set.len() + extra.len();
    let first_free = FIRST_FD + i32::try_from(total).map_err(io::Error::other)?;
    let sources = set
        .listeners()
        .iter()
        .map(|l| l.fd())
        .chain(extra.iter().map(|e| e.fd));
    let dups = sources
        .map(|fd| dup_at_least(fd, first_free))
        .collect::<io::Result<Vec<OwnedFd>>>()?;

    for name in SCRUBBED {
        cmd.env_remove(name);
    }
    let names: Vec<&str> = set
        .listeners()
        .iter()
        .map(|l| l.spec().name.as_str())
        .collect();
    let extra_names: Vec<&str> = extra.iter().map(|e| e.env).collect();
    cmd.envs(epoch_env(&names, &extra_names, epoch));
    cmd.process_group(0);

    // SAFETY: the closure runs in the child between fork and exec. It calls only
    // async-signal-safe functions (sigprocmask, sigaction, dup2, fcntl, close_range,
    // getrlimit), allocates nothing (it iterates a Vec built before fork and a static
    // signal array), and the fds it reads are owned by the closure, so still open.
    unsafe {
        cmd.pre_exec(move || {
            signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)?;
            for sig in Signal::iterator() {
                if sig != Signal::SIGKILL && sig != Signal::SIGSTOP {
                    // Ignored signals survive exec; handled ones reset anyway.
                    let _ = signal::signal(sig, SigHandler::SigDfl);
                }
            }
            for (slot, fd) in (FIRST_FD..).zip(&dups) {
                place(fd.as_raw_fd(), slot)?;
            }
            cloexec_from(first_free)
        })
    };
    Ok(())
}

/// Duplicate `fd` to a new close-on-exec fd numbered `min` or above.
fn dup_at_least(fd: BorrowedFd<'_>, min: RawFd) -> io::Result<OwnedFd> {
    let raw = fcntl(fd, FcntlArg::F_DUPFD_CLOEXEC(min))?;
    // SAFETY: F_DUPFD_CLOEXEC succeeded, so `raw` is a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// In the child: copy `src` to `slot` and make `slot` survive exec. `dup2(n, n)` would
/// not clear close-on-exec, so the flag is cleared explicitly in every case.
fn place(src: RawFd, slot: RawFd) -> io::Result<()> {
    if src != slot {
        // SAFETY: dup2 on two valid fd numbers; it closes whatever the child had at
        // `slot`, which is the point (see the module's caveat).
        if unsafe { libc::dup2(src, slot) } == -1 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: plain fcntl on an fd number the child owns.
    if unsafe { libc::fcntl(slot, libc::F_SETFD, 0) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// In the child: make every fd from `first` up close-on-exec. They are not closed here
/// so std's exec-error pipe keeps working until exec. close_range(2) with
/// CLOSE_RANGE_CLOEXEC needs Linux 5.11; older kernels get a loop up to RLIMIT_NOFILE.
fn cloexec_from(first: RawFd) -> io::Result<()> {
    let first = first as libc::c_uint;
    // SAFETY: close_range only changes fd flags; no memory is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass, which lives on this stack.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == -1 {
        return Err(io::Error::last_os_error());
    }
    // An "unlimited" soft limit is capped: fds that high are not opened by baton.
    let end = limit.rlim_cur.min(1 << 20) as libc::c_uint;
    for fd in first..end {
        // SAFETY: fcntl on an fd number; EBADF for closed numbers is expected and ignored.
        unsafe { libc::fcntl(fd as RawFd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}
