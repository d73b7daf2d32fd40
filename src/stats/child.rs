//! The epoch side: what a Rust proxy started by baton uses to count (re-exported by
//! the main crate as `baton::child`).
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let stats = baton::stats::child::Stats::from_env()?;
//! let requests = stats.counter("proxy_requests_total")?;
//! let active = stats.gauge("proxy_active_connections")?;
//! requests.inc();
//! active.inc();
//! # Ok(()) }
//! ```
//!
//! **Invariant:** [`Counter`] and [`Gauge`] point straight at their word in the
//! mapping; `inc`, `add`, `set`, `dec` are one atomic instruction each, with no lock,
//! no allocation and no syscall. The mapping lives as long as any handle (an `Arc`).

use std::ffi::OsString;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::{Acquire, Relaxed};
use std::sync::Arc;

use nix::libc;

use super::claim;
use super::error::SegmentError;
use super::error::{AttachError, EnvProblem, StatsError};
use super::layout::{Kind, LANES};
use super::mapping::Mapping;

/// The variable carrying the segment's fd number.
pub const ENV_STATS_FD: &str = "BATON_STATS_FD";
/// The variable carrying the epoch number.
pub const ENV_EPOCH: &str = "BATON_EPOCH";

/// An attachment to baton's stats segment, as one epoch (or as baton itself).
#[derive(Clone)]
pub struct Stats {
    map: Arc<Mapping>,
    epoch: Option<u32>,
    lane: Option<usize>,
}

impl Stats {
    /// Attach from `BATON_STATS_FD` and `BATON_EPOCH`, as set by baton. The fd is
    /// duplicated, not taken over: fd `BATON_STATS_FD` stays as it is. Every missing
    /// or malformed variable is reported at once.
    pub fn from_env() -> Result<Stats, AttachError> {
        Stats::from_lookup(|var| std::env::var_os(var))
    }

    /// [`Stats::from_env`] with the environment given as a lookup function.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<OsString>) -> Result<Stats, AttachError> {
        let mut problems = Vec::new();
        let fd = parse_var(&lookup, ENV_STATS_FD, &mut problems);
        let epoch = parse_var(&lookup, ENV_EPOCH, &mut problems);
        let (Some(fd), Some(epoch)) = (fd, epoch) else {
            return Err(AttachError::Env(problems));
        };
        let Ok(fd) = i32::try_from(fd) else {
            return Err(AttachError::Env(vec![EnvProblem::Invalid {
                var: ENV_STATS_FD,
                value: fd.to_string(),
                reason: "not an fd number",
            }]));
        };
        let owned = dup_raw(fd).map_err(|source| AttachError::Fd { fd, source })?;
        Stats::attach(owned.as_fd(), epoch).map_err(|source| AttachError::Segment { fd, source })
    }

    /// Attach to the segment behind `fd` as epoch `epoch` (the fd may be closed
    /// afterwards). Gauges need the lane baton registered for the epoch; counters work
    /// without one.
    pub fn attach(fd: BorrowedFd<'_>, epoch: u32) -> Result<Stats, SegmentError> {
        let map = Mapping::attach(fd)?;
        let tag = u64::from(epoch) + 1;
        let lane = (1..LANES).find(|&l| map.lane_owner(l).load(Acquire) == tag);
        Ok(Stats {
            map: Arc::new(map),
            epoch: Some(epoch),
            lane,
        })
    }

    /// baton's own view: gauges go to lane 0.
    pub(crate) fn owner(map: Arc<Mapping>) -> Stats {
        Stats {
            map,
            epoch: None,
            lane: Some(0),
        }
    }

    /// The epoch this attachment counts for (`None` for baton itself).
    pub fn epoch(&self) -> Option<u32> {
        self.epoch
    }

    /// The counter `name`, created (zero) if no epoch has used it yet; every epoch
    /// asking for `name` gets the same counter. Resolve handles once, at start: this
    /// walks the segment.
    pub fn counter(&self, name: &str) -> Result<Counter, StatsError> {
        let index = claim::find_or_claim(&self.map, name, Kind::Counter)?;
        Ok(Counter {
            cell: self.map.value_ptr(index, 0),
            _map: Arc::clone(&self.map),
        })
    }

    /// This epoch's contribution to the gauge `name` (created if needed). Readers see
    /// the sum over live epochs; the contribution is dropped when baton clears the
    /// epoch after it exits.
    pub fn gauge(&self, name: &str) -> Result<Gauge, StatsError> {
        let lane = self.lane.ok_or(StatsError::NoGaugeLane {
            epoch: self.epoch.unwrap_or_default(),
        })?;
        let index = claim::find_or_claim(&self.map, name, Kind::Gauge)?;
        Ok(Gauge {
            cell: self.map.value_ptr(index, lane),
            _map: Arc::clone(&self.map),
        })
    }
}

impl fmt::Debug for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stats")
            .field("epoch", &self.epoch)
            .field("lane", &self.lane)
            .field("slots", &self.map.slots())
            .finish()
    }
}

/// A monotonic counter shared by every epoch. Cheap to clone.
#[derive(Clone)]
pub struct Counter {
    cell: NonNull<AtomicU64>,
    _map: Arc<Mapping>,
}

impl Counter {
    /// Add 1.
    #[inline]
    pub fn inc(&self) {
        self.cell().fetch_add(1, Relaxed);
    }

    /// Add `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.cell().fetch_add(n, Relaxed);
    }

    /// The current total, over every epoch.
    pub fn get(&self) -> u64 {
        self.cell().load(Relaxed)
    }

    #[inline]
    fn cell(&self) -> &AtomicU64 {
        // SAFETY: `cell` points at an aligned word inside the mapping (checked when
        // the handle was made), and `_map` keeps the mapping alive as long as `self`.
        unsafe { self.cell.as_ref() }
    }
}

/// This epoch's contribution to a gauge. Cheap to clone; clones share the
/// contribution.
#[derive(Clone)]
pub struct Gauge {
    cell: NonNull<AtomicU64>,
    _map: Arc<Mapping>,
}

impl Gauge {
    /// Set this epoch's contribution to `v`.
    #[inline]
    pub fn set(&self, v: i64) {
        self.cell().store(v as u64, Relaxed);
    }

    /// Add 1 to this epoch's contribution.
    #[inline]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Subtract 1 from this epoch's contribution.
    #[inline]
    pub fn dec(&self) {
        self.add(-1);
    }

    /// Add `d` (possibly negative) to this epoch's contribution (wrapping).
    #[inline]
    pub fn add(&self, d: i64) {
        // Two's complement: adding the bits of a negative i64 subtracts.
        self.cell().fetch_add(d as u64, Relaxed);
    }

    /// This epoch's contribution (not the sum over epochs).
    pub fn get(&self) -> i64 {
        self.cell().load(Relaxed) as i64
    }

    #[inline]
    fn cell(&self) -> &AtomicU64 {
        // SAFETY: as for `Counter::cell`: an aligned word inside the mapping that
        // `_map` keeps alive.
        unsafe { self.cell.as_ref() }
    }
}

// SAFETY: the pointer is only ever used as `&AtomicU64`, which is Send and Sync, and
// the Arc keeping its mapping alive is Send and Sync too.
unsafe impl Send for Counter {}
// SAFETY: see `Send for Counter`.
unsafe impl Sync for Counter {}
// SAFETY: see `Send for Counter`.
unsafe impl Send for Gauge {}
// SAFETY: see `Send for Counter`.
unsafe impl Sync for Gauge {}

impl fmt::Debug for Counter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Counter").field(&self.get()).finish()
    }
}

impl fmt::Debug for Gauge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Gauge").field(&self.get()).finish()
    }
}

/// Read `var` as a `u32`, recording a problem if it is missing or malformed.
fn parse_var(
    lookup: &impl Fn(&str) -> Option<OsString>,
    var: &'static str,
    problems: &mut Vec<EnvProblem>,
) -> Option<u32> {
    let Some(value) = lookup(var) else {
        problems.push(EnvProblem::Missing(var));
        return None;
    };
    let parsed = value.to_str().and_then(|s| s.parse::<u32>().ok());
    if parsed.is_none() {
        problems.push(EnvProblem::Invalid {
            var,
            value: value.to_string_lossy().into_owned(),
            reason: "expected a non-negative integer",
        });
    }
    parsed
}

/// Duplicate fd number `fd` (close-on-exec) without taking ownership of it.
fn dup_raw(fd: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on any integer is memory safe: it fails with
    // EBADF if `fd` is not open, and otherwise only creates a new fd.
    let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if dup < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `dup` is a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(dup) })
}
