//! The owner side: baton creates the segment, registers and clears epochs, counts its
//! own metrics and reads everything back.
//!
//! **Invariant:** a lane-table entry names at most one live epoch, and a lane is
//! zeroed in every slot before it is handed to an epoch and again when the epoch is
//! cleared, so a gauge's sum only ever contains contributions of live epochs and of
//! baton (lane 0).

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, Release};
use std::sync::Arc;

use super::child::{Counter, Gauge, Stats};
use super::error::{SegmentError, StatsError};
use super::layout::{self, Kind, SlotState, LANES};
use super::mapping::{Mapping, MEMFD_NAME};

/// A stats segment: created by baton, or attached by a reader.
pub struct Segment {
    fd: OwnedFd,
    map: Arc<Mapping>,
    owner: Stats,
}

/// One metric as read from the segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    /// Its name (1 to 95 printable ASCII bytes).
    pub name: String,
    /// Counter or gauge.
    pub kind: Kind,
    /// A counter's total (`u64`) or a gauge's sum over live epochs and baton (`i64`
    /// arithmetic, wrapping), losslessly.
    pub value: i128,
}

impl Segment {
    /// Create a segment of `slots` slots (`--stats-slots`, default
    /// [`layout::DEFAULT_SLOTS`]): a sealed, close-on-exec memfd named `baton-stats`,
    /// mapped and initialised, its magic written last.
    pub fn create(slots: u32) -> Result<Segment, SegmentError> {
        Segment::create_with_hook(slots, |_| {})
    }

    /// [`Segment::create`], running `before_magic` once everything but the magic is in
    /// place (tests attach there and must be refused).
    pub(crate) fn create_with_hook(
        slots: u32,
        before_magic: impl FnOnce(BorrowedFd<'_>),
    ) -> Result<Segment, SegmentError> {
        let (fd, map) = Mapping::create(slots, before_magic)?;
        Ok(Segment::new(fd, map))
    }

    /// Attach to an existing segment, validating its header.
    pub fn attach(fd: OwnedFd) -> Result<Segment, SegmentError> {
        let map = Mapping::attach(fd.as_fd())?;
        Ok(Segment::new(fd, map))
    }

    /// Attach by path, typically `/proc/<pid>/fd/<n>` (`baton stats --pid`). The file
    /// is opened read-write (the mapping is shared and writable); opening another
    /// process's fd needs the same user (or `CAP_SYS_PTRACE`).
    pub fn open_path(path: &Path) -> Result<Segment, SegmentError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| SegmentError::Open {
                path: path.to_path_buf(),
                source,
            })?;
        Segment::attach(OwnedFd::from(file))
    }

    /// Attach to the segment a running baton (or any epoch) holds: the first fd of
    /// process `pid` that links to `/memfd:baton-stats`.
    pub fn open_pid(pid: u32) -> Result<Segment, SegmentError> {
        let dir = Path::new("/proc").join(pid.to_string()).join("fd");
        let open_err = |source| SegmentError::Open {
            path: dir.clone(),
            source,
        };
        let prefix = format!("/memfd:{MEMFD_NAME}");
        let mut fds: Vec<u32> = std::fs::read_dir(&dir)
            .map_err(open_err)?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        fds.sort_unstable();
        let found = fds.into_iter().map(|n| dir.join(n.to_string())).find(|p| {
            std::fs::read_link(p).is_ok_and(|t| {
                let t = t.to_string_lossy();
                t == prefix || t.starts_with(&format!("{prefix} "))
            })
        });
        Segment::open_path(&found.ok_or(SegmentError::NotFound { pid })?)
    }

    fn new(fd: OwnedFd, map: Mapping) -> Segment {
        let map = Arc::new(map);
        Segment {
            fd,
            owner: Stats::owner(Arc::clone(&map)),
            map,
        }
    }

    /// The memfd, to hand to epochs (close-on-exec here; the spawner duplicates it
    /// into the child, e.g. `ExtraFd::new(child::ENV_STATS_FD, &segment)`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Number of slots.
    pub fn slots(&self) -> u32 {
        self.map.slots()
    }

    /// A counter for baton's own metrics: the same counter an epoch gets by name.
    pub fn counter(&self, name: &str) -> Result<Counter, StatsError> {
        self.owner.counter(name)
    }

    /// baton's own contribution (lane 0) to the gauge `name`; never cleared.
    pub fn gauge(&self, name: &str) -> Result<Gauge, StatsError> {
        self.owner.gauge(name)
    }

    /// How many handle requests failed with [`StatsError::Full`], in any process.
    pub fn full_errors(&self) -> u64 {
        self.map.full_errors().load(Relaxed)
    }

    /// Give epoch `epoch` a gauge lane; call before spawning it. Idempotent: if the
    /// epoch already has a lane, that lane is zeroed and kept. Returns the lane.
    /// Fails with [`SegmentError::NoFreeLane`] when 15 epochs hold one: the epoch can
    /// still be started (its counters work; its gauges fail with
    /// [`StatsError::NoGaugeLane`]).
    pub fn begin_epoch(&self, epoch: u32) -> Result<usize, SegmentError> {
        let tag = u64::from(epoch) + 1;
        if let Some(lane) = self.lane_of(epoch) {
            self.zero_lane(lane);
            return Ok(lane);
        }
        for lane in 1..LANES {
            let owner = self.map.lane_owner(lane);
            if owner.load(Acquire) != 0 {
                continue;
            }
            // Zero before publishing: the epoch starts from nothing even if a stray
            // process of an earlier owner wrote after that owner was cleared.
            self.zero_lane(lane);
            if owner.compare_exchange(0, tag, AcqRel, Acquire).is_ok() {
                return Ok(lane);
            }
        }
        Err(SegmentError::NoFreeLane { epoch })
    }

    /// Drop epoch `epoch`'s gauge contributions and free its lane; call once the
    /// epoch's whole process group is gone (a process still writing would leave its
    /// last writes behind until the lane is reused, which zeroes it again). Returns
    /// whether the epoch had a lane.
    pub fn clear_epoch(&self, epoch: u32) -> bool {
        let Some(lane) = self.lane_of(epoch) else {
            return false;
        };
        self.zero_lane(lane);
        self.map.lane_owner(lane).store(0, Release);
        true
    }

    /// The mapping, for tests that look at slots directly.
    #[cfg(test)]
    pub(crate) fn mapping(&self) -> &Mapping {
        &self.map
    }

    fn lane_of(&self, epoch: u32) -> Option<usize> {
        let tag = u64::from(epoch) + 1;
        (1..LANES).find(|&l| self.map.lane_owner(l).load(Acquire) == tag)
    }

    /// Zero lane `lane` of every slot ever claimed (counters never use lanes 1..).
    fn zero_lane(&self, lane: usize) {
        for index in 0..self.map.slots() {
            if SlotState::of(self.map.tag(index).load(Acquire)) != SlotState::Empty {
                self.map.value(index, lane).store(0, Relaxed);
            }
        }
    }

    /// Every Ready metric, sorted by name: counters' totals, gauges summed over every
    /// lane. Slots with an unknown kind or an invalid name are skipped; slots with the
    /// same name and kind (impossible with this module's claim rule, possible in a
    /// damaged segment) are summed.
    pub fn snapshot(&self) -> Vec<Sample> {
        let mut merged: BTreeMap<(String, Kind), i128> = BTreeMap::new();
        for index in 0..self.map.slots() {
            if SlotState::of(self.map.tag(index).load(Acquire)) != SlotState::Ready {
                continue;
            }
            let Some(kind) = Kind::from_word(self.map.kind(index).load(Relaxed)) else {
                continue;
            };
            let Some(name) = layout::decode_name(&self.map.name_words(index)) else {
                continue;
            };
            let value = match kind {
                Kind::Counter => i128::from(self.map.value(index, 0).load(Relaxed)),
                Kind::Gauge => i128::from(
                    (0..LANES)
                        .map(|l| self.map.value(index, l).load(Relaxed) as i64)
                        .fold(0i64, i64::wrapping_add),
                ),
            };
            let sum = merged.entry((name, kind)).or_default();
            *sum = match kind {
                Kind::Counter => i128::from((*sum as u64).wrapping_add(value as u64)),
                Kind::Gauge => i128::from((*sum as i64).wrapping_add(value as i64)),
            };
        }
        merged
            .into_iter()
            .map(|((name, kind), value)| Sample { name, kind, value })
            .collect()
    }
}

impl AsFd for Segment {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd()
    }
}

impl std::fmt::Debug for Segment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Segment")
            .field("fd", &self.fd)
            .field("slots", &self.map.slots())
            .finish()
    }
}
