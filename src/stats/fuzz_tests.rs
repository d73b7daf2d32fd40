//! The reader against hostile bytes: whatever the segment holds, attaching,
//! snapshotting and looking names up never panic, never index outside the mapping
//! (every access is bounds-checked and would panic), and never return a name the
//! writer could not have written.

use proptest::prelude::*;

use super::layout::{self, HEADER_SIZE, LANES, SLOT_SIZE};
use super::testutil::{bytes_of, memfd_with};
use super::{Kind, Segment};

/// A header that passes every check, for `slots` slots.
fn valid_header(slots: u32) -> Vec<u8> {
    let mut h = vec![0u8; HEADER_SIZE];
    h[0..8].copy_from_slice(&layout::MAGIC.to_ne_bytes());
    h[8..12].copy_from_slice(&layout::LAYOUT_VERSION.to_ne_bytes());
    h[12..16].copy_from_slice(&slots.to_ne_bytes());
    h[16..24].copy_from_slice(&layout::total_size(slots).to_ne_bytes());
    h[24..28].copy_from_slice(&(SLOT_SIZE as u32).to_ne_bytes());
    h[28..32].copy_from_slice(&(LANES as u32).to_ne_bytes());
    h
}

/// A populated segment's bytes: counters, gauges in several lanes.
fn populated() -> Vec<u8> {
    let segment = Segment::create(8).unwrap();
    segment.counter("fuzz_requests").unwrap().add(3);
    segment.gauge("fuzz_active").unwrap().set(-1);
    segment.begin_epoch(1).unwrap();
    let epoch = super::Stats::attach(segment.fd(), 1).unwrap();
    epoch.gauge("fuzz_active").unwrap().set(5);
    epoch.counter("fuzz_other").unwrap().inc();
    bytes_of(&segment)
}

/// Attach to `bytes` and use everything a reader and a writer can.
fn exercise(bytes: &[u8]) {
    let Ok(segment) = Segment::attach(memfd_with(bytes, true)) else {
        return;
    };
    for sample in segment.snapshot() {
        assert!(
            layout::encode_name(&sample.name).is_ok(),
            "{:?}",
            sample.name
        );
        assert!(matches!(sample.kind, Kind::Counter | Kind::Gauge));
    }
    // Lookups walk damaged slots too; they may fail, but must end.
    if let Ok(c) = segment.counter("fuzz_requests") {
        c.inc();
    }
    let _ = segment.gauge("fuzz_active").map(|g| g.dec());
    let _ = segment.begin_epoch(2);
    segment.clear_epoch(1);
    let _ = segment.snapshot();
}

proptest! {
    #[test]
    fn random_bytes_never_panic_the_reader(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        exercise(&bytes);
    }

    #[test]
    fn random_slots_behind_a_valid_header_never_panic_the_reader(
        slots in 1u32..6,
        body in prop::collection::vec(any::<u8>(), 5 * SLOT_SIZE),
    ) {
        let mut bytes = valid_header(slots);
        bytes.extend_from_slice(&body[..slots as usize * SLOT_SIZE]);
        exercise(&bytes);
    }

    #[test]
    fn mutated_valid_segments_never_panic_the_reader(
        mutations in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..24),
        truncate_to in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut bytes = populated();
        for (at, byte) in mutations {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Some(len) = truncate_to {
            bytes.truncate(len.index(bytes.len()));
        }
        exercise(&bytes);
    }
}
