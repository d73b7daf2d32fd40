//! The byte layout of the stats segment, as constants and pure functions.
//!
//! ```text
//! header (256 bytes)                          slot i (256 bytes) at 256 + 256 * i
//!   0  magic        u64  "BATNSTAT", last       0  tag    u64  hash | state
//!   8  version      u32  LAYOUT_VERSION         8  kind   u32  1 counter, 2 gauge
//!  12  slot count   u32                        16  name   96 bytes, NUL padded
//!  16  total size   u64  bytes, = memfd size  112  (reserved)
//!  24  slot size    u32  SLOT_SIZE            128  values 16 × u64: one per lane
//!  28  lanes        u32  LANES
//!  32  full errors  u64  counter
//!  64  lane owners  16 × u64: 0 free, epoch + 1, or OWNER_LANE_TAG
//! ```
//!
//! Every word is naturally aligned and only ever accessed atomically. A slot's `tag`
//! packs the name's hash (high 62 bits) with its state (low 2 bits), so a claimer can
//! tell "someone is claiming *my* name" from "someone is claiming another name"
//! before the name itself is visible.
//!
//! **Invariant:** a name is 1 to [`MAX_NAME_LEN`] printable ASCII bytes (`!` to `~`),
//! stored NUL padded; the reader applies the same rule, so whatever it returns needs
//! no escaping beyond what the exposition format itself requires.

/// `"BATNSTAT"`, as it reads in a hex dump of the segment.
pub const MAGIC: u64 = u64::from_ne_bytes(*b"BATNSTAT");
/// The layout version this build writes and reads.
pub const LAYOUT_VERSION: u32 = 1;
/// Bytes before slot 0.
pub const HEADER_SIZE: usize = 256;
/// Bytes per slot.
pub const SLOT_SIZE: usize = 256;
/// Per-slot values: lane 0 is baton's own (and every counter's), lanes 1.. go to epochs.
pub const LANES: usize = 16;
/// Bytes reserved for a name, including at least one NUL.
pub const NAME_BYTES: usize = 96;
/// Longest accepted name, in bytes.
pub const MAX_NAME_LEN: usize = NAME_BYTES - 1;
/// Default number of slots (`--stats-slots`).
pub const DEFAULT_SLOTS: u32 = 4096;
/// Most slots a segment may have (256 MiB of address space; memfd pages are only
/// allocated when touched).
pub const MAX_SLOTS: u32 = 1 << 20;

pub(crate) const OFF_MAGIC: usize = 0;
pub(crate) const OFF_VERSION: usize = 8;
pub(crate) const OFF_SLOT_COUNT: usize = 12;
pub(crate) const OFF_TOTAL_SIZE: usize = 16;
pub(crate) const OFF_SLOT_SIZE: usize = 24;
pub(crate) const OFF_LANES: usize = 28;
pub(crate) const OFF_FULL_ERRORS: usize = 32;
pub(crate) const OFF_LANE_TABLE: usize = 64;

pub(crate) const SLOT_TAG: usize = 0;
pub(crate) const SLOT_KIND: usize = 8;
pub(crate) const SLOT_NAME: usize = 16;
pub(crate) const SLOT_VALUES: usize = 128;
pub(crate) const NAME_WORDS: usize = NAME_BYTES / 8;

/// Lane-table entry of lane 0, which belongs to baton itself.
pub(crate) const OWNER_LANE_TAG: u64 = u64::MAX;

const _: () = assert!(OFF_LANE_TABLE + 8 * LANES <= HEADER_SIZE);
const _: () = assert!(SLOT_NAME + NAME_BYTES <= SLOT_VALUES);
const _: () = assert!(SLOT_VALUES + 8 * LANES == SLOT_SIZE);
const _: () = assert!(NAME_BYTES % 8 == 0);

/// The state in a slot tag's low two bits. Slots move `Empty → Claiming → Ready` or
/// `Claiming → Tombstone`, never back to `Empty`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SlotState {
    Empty = 0,
    Claiming = 1,
    Ready = 2,
    Tombstone = 3,
}

impl SlotState {
    pub(crate) fn of(tag: u64) -> SlotState {
        match tag & 0b11 {
            0 => SlotState::Empty,
            1 => SlotState::Claiming,
            2 => SlotState::Ready,
            _ => SlotState::Tombstone,
        }
    }
}

/// The tag of a slot holding (or being claimed for) a name with hash `hash`.
pub(crate) fn tag(hash: u64, state: SlotState) -> u64 {
    (hash & !0b11) | state as u64
}

/// Whether `tag` carries the hash bits of `hash`.
pub(crate) fn same_hash(tag: u64, hash: u64) -> bool {
    tag & !0b11 == hash & !0b11
}

/// What a slot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Monotonic, shared by every epoch: increments from any epoch add up.
    Counter = 1,
    /// One contribution per epoch (and one for baton), summed when read; an epoch's
    /// contribution disappears when baton clears it.
    Gauge = 2,
}

impl Kind {
    pub(crate) fn from_word(word: u32) -> Option<Kind> {
        match word {
            1 => Some(Kind::Counter),
            2 => Some(Kind::Gauge),
            _ => None,
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        })
    }
}

/// A valid name, NUL padded into the words stored in a slot, with its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct EncodedName {
    pub(crate) words: [u64; NAME_WORDS],
    pub(crate) hash: u64,
}

/// Encode `name`, or say why it is not a valid name.
pub(crate) fn encode_name(name: &str) -> Result<EncodedName, &'static str> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err("empty");
    }
    if bytes.len() > MAX_NAME_LEN {
        return Err("longer than 95 bytes");
    }
    if !bytes.iter().all(u8::is_ascii_graphic) {
        return Err("only printable ASCII without spaces (`!` to `~`) is allowed");
    }
    let mut padded = [0u8; NAME_BYTES];
    padded[..bytes.len()].copy_from_slice(bytes);
    let mut words = [0u64; NAME_WORDS];
    for (word, chunk) in words.iter_mut().zip(padded.chunks_exact(8)) {
        *word = u64::from_ne_bytes(chunk.try_into().unwrap_or_default());
    }
    Ok(EncodedName {
        words,
        hash: fnv1a(bytes),
    })
}

/// Decode the words of a slot's name. `None` unless it is exactly what
/// [`encode_name`] writes: valid characters, then at least one NUL, then only NULs.
pub(crate) fn decode_name(words: &[u64; NAME_WORDS]) -> Option<String> {
    let mut bytes = [0u8; NAME_BYTES];
    for (chunk, word) in bytes.chunks_exact_mut(8).zip(words) {
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    let len = bytes.iter().position(|&b| b == 0)?;
    let (name, padding) = bytes.split_at(len);
    let valid = !name.is_empty()
        && name.iter().all(u8::is_ascii_graphic)
        && padding.iter().all(|&b| b == 0);
    // ASCII graphic bytes are valid UTF-8.
    valid.then(|| String::from_utf8_lossy(name).into_owned())
}

/// FNV-1a, 64 bits: stable across builds and processes (std's hasher is seeded).
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Total bytes of a segment with `slots` slots.
pub(crate) fn total_size(slots: u32) -> u64 {
    HEADER_SIZE as u64 + SLOT_SIZE as u64 * u64::from(slots)
}

/// Byte offset of slot `index`.
pub(crate) fn slot_offset(index: u32) -> usize {
    HEADER_SIZE + SLOT_SIZE * index as usize
}

/// The header words a reader checks, as read (magic with Acquire, first).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawHeader {
    pub(crate) magic: u64,
    pub(crate) version: u32,
    pub(crate) slot_count: u32,
    pub(crate) total_size: u64,
    pub(crate) slot_size: u32,
    pub(crate) lanes: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_invalid_ones_are_refused() {
        for name in ["a", "baton_restarts_total", "http.rq_2xx", &"x".repeat(95)] {
            let encoded = encode_name(name).unwrap();
            assert_eq!(decode_name(&encoded.words).as_deref(), Some(name));
        }
        for name in ["", &"x".repeat(96), "with space", "nul\0", "é", "tab\t"] {
            assert!(encode_name(name).is_err(), "{name:?} accepted");
        }
    }

    #[test]
    fn stored_names_without_nul_or_with_garbage_after_it_are_refused() {
        let mut words = encode_name("ok").unwrap().words;
        words[1] = 0x4141; // "AA" after the terminating NUL
        assert_eq!(decode_name(&words), None);
        let full = [u64::from_ne_bytes(*b"xxxxxxxx"); NAME_WORDS];
        assert_eq!(decode_name(&full), None, "no NUL terminator");
        assert_eq!(decode_name(&[0; NAME_WORDS]), None, "empty name");
    }

    #[test]
    fn tags_keep_state_and_hash_apart() {
        let h = fnv1a(b"n");
        let t = tag(h, SlotState::Claiming);
        assert_eq!(SlotState::of(t), SlotState::Claiming);
        assert!(same_hash(t, h));
        assert!(!same_hash(t, fnv1a(b"m")));
        assert_ne!(
            tag(0, SlotState::Claiming),
            0,
            "a claimed slot never looks empty"
        );
    }
}
