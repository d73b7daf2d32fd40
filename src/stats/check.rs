//! The check a reader makes before trusting a segment's header: magic, version,
//! geometry, size and slot count, against the length of what it mapped.
//!
//! **Invariant:** a reader indexes slots only with the count this returned.

use super::error::SegmentError;
use super::layout::{total_size, RawHeader, LANES, LAYOUT_VERSION, MAGIC, MAX_SLOTS, SLOT_SIZE};

/// Check a header against the length of the mapping it was read from; on success the
/// slot count, which then fits in `len` bytes.
pub(super) fn check_header(h: &RawHeader, len: u64) -> Result<u32, SegmentError> {
    if h.magic != MAGIC {
        return Err(SegmentError::BadMagic { found: h.magic });
    }
    if h.version != LAYOUT_VERSION {
        return Err(SegmentError::UnsupportedVersion { found: h.version });
    }
    if h.slot_size as usize != SLOT_SIZE || h.lanes as usize != LANES {
        return Err(SegmentError::UnsupportedGeometry {
            slot_size: h.slot_size,
            lanes: h.lanes,
        });
    }
    if h.total_size != len {
        return Err(SegmentError::SizeMismatch {
            header: h.total_size,
            actual: len,
        });
    }
    if h.slot_count == 0 || h.slot_count > MAX_SLOTS || total_size(h.slot_count) != len {
        return Err(SegmentError::SlotCountMismatch {
            slots: h.slot_count,
            size: len,
        });
    }
    Ok(h.slot_count)
}
