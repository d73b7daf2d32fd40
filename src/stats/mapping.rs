//! The memfd and its mapping: the only place that turns bytes of shared memory into
//! Rust references.
//!
//! **Invariant:** every access goes through [`Mapping::at`], which checks that the
//! word lies inside the mapping and is aligned, and yields an atomic (`AtomicU32` or
//! `AtomicU64`); no `&[u8]` or `&mut` ever points into the segment, since other
//! processes write it concurrently. The slot count used for indexing is the one
//! validated at attach time and kept here, never re-read from shared memory.
//! **Invariant:** the memfd is sealed against shrinking (and growing) before it is
//! mapped, and a reader refuses an fd without that seal, so the mapping can never
//! lose its pages under us (which would be a SIGBUS, not an error).

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use memmap2::MmapRaw;
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

use super::check;
use super::error::SegmentError;
use super::layout::{self, RawHeader, LANES, NAME_WORDS};

/// The name of the memfd, as `/proc/<pid>/fd/<n>` shows it: `/memfd:baton-stats (deleted)`.
pub const MEMFD_NAME: &str = "baton-stats";

/// A mapped, validated segment. Shared (`Arc`) by every handle that points into it.
pub(crate) struct Mapping {
    raw: MmapRaw,
    slots: u32,
}

/// A type the segment's words may be viewed as: valid for every bit pattern, and
/// safe to share between threads (and processes) because it is atomic.
trait Word {}
impl Word for AtomicU32 {}
impl Word for AtomicU64 {}

impl Mapping {
    /// Create a sealed memfd of `slots` slots and initialise it; `before_magic` runs
    /// after everything but the magic is written (tests observe the half-made state).
    pub(crate) fn create(
        slots: u32,
        before_magic: impl FnOnce(BorrowedFd<'_>),
    ) -> Result<(OwnedFd, Mapping), SegmentError> {
        if slots == 0 || slots > layout::MAX_SLOTS {
            return Err(SegmentError::InvalidSlotCount(slots));
        }
        let total = layout::total_size(slots);
        let create = |e: nix::Error| SegmentError::Create(e.into());
        let fd = memfd_create(
            MEMFD_NAME,
            MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
        )
        .map_err(create)?;
        let file = File::from(fd);
        file.set_len(total).map_err(SegmentError::Create)?;
        let fd = OwnedFd::from(file);
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).map_err(create)?;
        let map = Mapping {
            raw: MmapRaw::map_raw(fd.as_raw_fd()).map_err(SegmentError::Map)?,
            slots,
        };
        // The memfd is zero-filled: every slot is Empty, every lane free, no errors.
        map.u32_at(layout::OFF_VERSION)
            .store(layout::LAYOUT_VERSION, Ordering::Relaxed);
        map.u32_at(layout::OFF_SLOT_COUNT)
            .store(slots, Ordering::Relaxed);
        map.u64_at(layout::OFF_TOTAL_SIZE)
            .store(total, Ordering::Relaxed);
        map.u32_at(layout::OFF_SLOT_SIZE)
            .store(layout::SLOT_SIZE as u32, Ordering::Relaxed);
        map.u32_at(layout::OFF_LANES)
            .store(LANES as u32, Ordering::Relaxed);
        map.lane_owner(0)
            .store(layout::OWNER_LANE_TAG, Ordering::Relaxed);
        before_magic(fd.as_fd());
        // Last, Release: a reader that sees the magic (Acquire) sees all of the above.
        map.u64_at(layout::OFF_MAGIC)
            .store(layout::MAGIC, Ordering::Release);
        Ok((fd, map))
    }

    /// Map and validate the segment behind `fd` (it may be closed afterwards).
    pub(crate) fn attach(fd: BorrowedFd<'_>) -> Result<Mapping, SegmentError> {
        let map_err = |e: nix::Error| SegmentError::Map(e.into());
        let seals =
            SealFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GET_SEALS).map_err(map_err)?);
        if !seals.contains(SealFlag::F_SEAL_SHRINK) {
            return Err(SegmentError::NotSealed);
        }
        let len = nix::sys::stat::fstat(fd).map_err(map_err)?.st_size;
        let len = u64::try_from(len).unwrap_or(0);
        if len < layout::HEADER_SIZE as u64 || len > layout::total_size(layout::MAX_SLOTS) {
            return Err(SegmentError::BadLength { len });
        }
        let raw = MmapRaw::map_raw(fd.as_raw_fd()).map_err(SegmentError::Map)?;
        if raw.len() as u64 != len {
            return Err(SegmentError::BadLength {
                len: raw.len() as u64,
            });
        }
        // Slots are not indexed until the header is checked.
        let map = Mapping { raw, slots: 0 };
        let header = RawHeader {
            magic: map.u64_at(layout::OFF_MAGIC).load(Ordering::Acquire),
            version: map.u32_at(layout::OFF_VERSION).load(Ordering::Relaxed),
            slot_count: map.u32_at(layout::OFF_SLOT_COUNT).load(Ordering::Relaxed),
            total_size: map.u64_at(layout::OFF_TOTAL_SIZE).load(Ordering::Relaxed),
            slot_size: map.u32_at(layout::OFF_SLOT_SIZE).load(Ordering::Relaxed),
            lanes: map.u32_at(layout::OFF_LANES).load(Ordering::Relaxed),
        };
        let slots = check::check_header(&header, len)?;
        Ok(Mapping { slots, ..map })
    }

    /// Number of slots (validated).
    pub(crate) fn slots(&self) -> u32 {
        self.slots
    }

    /// The word of type `T` at byte `offset`.
    ///
    /// Panics if it is not inside the mapping or not aligned: a bug in this module,
    /// never a property of the segment's contents (offsets come from constants and
    /// indices checked against the validated geometry).
    fn at<T: Word>(&self, offset: usize) -> &T {
        let size = std::mem::size_of::<T>();
        assert!(
            offset % std::mem::align_of::<T>() == 0
                && offset
                    .checked_add(size)
                    .is_some_and(|end| end <= self.raw.len()),
            "stats segment access out of bounds: {size} bytes at {offset}"
        );
        // SAFETY: the word lies inside the live mapping (checked above; the mapping is
        // sealed against shrinking and lives as long as `self`), the mapping is
        // page-aligned so the offset's alignment is the pointer's, and T is an atomic
        // integer: valid for any bits and only accessed atomically by every writer.
        unsafe { &*self.raw.as_ptr().add(offset).cast::<T>() }
    }

    pub(crate) fn u64_at(&self, offset: usize) -> &AtomicU64 {
        self.at(offset)
    }

    pub(crate) fn u32_at(&self, offset: usize) -> &AtomicU32 {
        self.at(offset)
    }

    /// The header's `full_errors` counter.
    pub(crate) fn full_errors(&self) -> &AtomicU64 {
        self.u64_at(layout::OFF_FULL_ERRORS)
    }

    /// Lane table entry `lane`.
    pub(crate) fn lane_owner(&self, lane: usize) -> &AtomicU64 {
        assert!(lane < LANES, "lane {lane} out of range");
        self.u64_at(layout::OFF_LANE_TABLE + 8 * lane)
    }

    fn slot_offset(&self, index: u32) -> usize {
        assert!(index < self.slots, "slot {index} out of range");
        layout::slot_offset(index)
    }

    /// Slot `index`'s tag (hash | state).
    pub(crate) fn tag(&self, index: u32) -> &AtomicU64 {
        self.u64_at(self.slot_offset(index) + layout::SLOT_TAG)
    }

    /// Slot `index`'s kind word.
    pub(crate) fn kind(&self, index: u32) -> &AtomicU32 {
        self.u32_at(self.slot_offset(index) + layout::SLOT_KIND)
    }

    /// Slot `index`'s name word `word`.
    pub(crate) fn name_word(&self, index: u32, word: usize) -> &AtomicU64 {
        assert!(word < NAME_WORDS, "name word {word} out of range");
        self.u64_at(self.slot_offset(index) + layout::SLOT_NAME + 8 * word)
    }

    /// Slot `index`'s name words (Relaxed; read them after an Acquire of the tag).
    pub(crate) fn name_words(&self, index: u32) -> [u64; NAME_WORDS] {
        std::array::from_fn(|w| self.name_word(index, w).load(Ordering::Relaxed))
    }

    /// Slot `index`'s value in lane `lane`.
    pub(crate) fn value(&self, index: u32, lane: usize) -> &AtomicU64 {
        assert!(lane < LANES, "lane {lane} out of range");
        self.u64_at(self.slot_offset(index) + layout::SLOT_VALUES + 8 * lane)
    }

    /// A pointer to slot `index`'s value in lane `lane`, valid while `self` lives.
    pub(crate) fn value_ptr(&self, index: u32, lane: usize) -> NonNull<AtomicU64> {
        NonNull::from(self.value(index, lane))
    }
}
