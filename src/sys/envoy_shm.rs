//! Envoy's hot-restart shared memory: just enough to repair a stuck chain.
//!
//! Envoy (hot restart version 11) keeps a 104-byte segment per base id at
//! `/dev/shm/envoy_shared_memory_<base_id*10>`:
//! `{ u64 size; u64 version; pthread_mutex_t log_lock; pthread_mutex_t access_log_lock;
//! atomic<u64> flags; }`. A new epoch sets `flags` bit 0 (INITIALIZING) when it attaches
//! and clears it once its workers start; one that dies in between leaves it set, and
//! Envoy refuses every later hot restart on that base id ("previous envoy process is
//! still initializing"). Once that epoch is gone baton clears the bit, so the chain
//! goes on with a normal, lossless hot restart.
//!
//! **Invariant:** the segment is touched only when its header says exactly the layout
//! above (size 104, version 11) and the Envoy binary reports hot restart version
//! `11.104`; anything else is refused and the caller falls back to a new chain.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

/// The hot restart version (`envoy --hot-restart-version`) whose layout this knows.
pub const KNOWN_HOT_RESTART_VERSION: &str = "11.104";
const SEGMENT_SIZE: usize = 104;
const LAYOUT_VERSION: u64 = 11;
const FLAGS_OFFSET: usize = 96;
const FLAG_INITIALIZING: u64 = 0x1;

/// Why a segment was not repaired.
#[derive(Debug, thiserror::Error)]
pub enum RepairError {
    /// Opening or mapping failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The segment is not the layout baton knows.
    #[error("{path}: unknown layout (size field {size}, version field {version}, {len} bytes)")]
    Layout {
        path: PathBuf,
        size: u64,
        version: u64,
        len: usize,
    },
}

/// Where Envoy keeps the segment of `base_id`.
pub fn segment_path(base_id: u64) -> PathBuf {
    PathBuf::from(format!("/dev/shm/envoy_shared_memory_{}", base_id * 10))
}

/// Why a segment must stay: some process still uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InUse {
    /// These processes map it.
    Mapped(Vec<u32>),
    /// An Envoy of its base id still holds its hot-restart socket (a process of
    /// another user, whose mappings cannot be read).
    Socket(String),
}

impl std::fmt::Display for InUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            InUse::Mapped(pids) => write!(f, "mapped by pid {pids:?}"),
            InUse::Socket(name) => write!(f, "its Envoy still holds socket {name}"),
        }
    }
}

/// Whether the segment of `base_id` is in use: mapped by a process, or its base id
/// still held by a live Envoy's hot-restart socket
/// (`@envoy_domain_socket_<role>_<base_id*10+epoch>`). `None`: nobody uses it and
/// it may be removed.
pub fn in_use(base_id: u64) -> Option<InUse> {
    let users = super::procfs::users_of(&segment_path(base_id));
    if !users.is_empty() {
        return Some(InUse::Mapped(users));
    }
    super::procfs::abstract_sockets()
        .into_iter()
        .find(|name| socket_base_id(name) == Some(base_id))
        .map(InUse::Socket)
}

/// The base id an Envoy hot-restart socket name belongs to.
fn socket_base_id(name: &str) -> Option<u64> {
    let rest = name.strip_prefix("@envoy_domain_socket_")?;
    let (_, id) = rest.rsplit_once('_')?;
    Some(id.parse::<u64>().ok()? / 10)
}

/// Clear the INITIALIZING flag. Returns whether it was set. Call only when no epoch
/// of the chain is initialising.
pub fn clear_initializing(path: &Path) -> Result<bool, RepairError> {
    let io = |source| RepairError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)?;
    // SAFETY: the mapping is of a shared-memory file that other processes (Envoy)
    // change concurrently; it is only accessed through the atomic below and two plain
    // reads of header words that Envoy writes once, before any epoch can be running.
    let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(io)?;
    let word = |at: usize| u64::from_ne_bytes(map[at..at + 8].try_into().unwrap_or_default());
    let (size, version) = if map.len() == SEGMENT_SIZE {
        (word(0), word(8))
    } else {
        (0, 0)
    };
    if map.len() != SEGMENT_SIZE || size != SEGMENT_SIZE as u64 || version != LAYOUT_VERSION {
        return Err(RepairError::Layout {
            path: path.to_path_buf(),
            size,
            version,
            len: map.len(),
        });
    }
    let flags = map[FLAGS_OFFSET..FLAGS_OFFSET + 8].as_mut_ptr() as *const AtomicU64;
    // SAFETY: offset 96 of a page-aligned mapping is 8-byte aligned, the 8 bytes lie
    // inside the 104-byte mapping, and Envoy itself uses this word as an
    // std::atomic<uint64_t>, so concurrent atomic access is sound.
    let previous = unsafe { &*flags }.fetch_and(!FLAG_INITIALIZING, Ordering::SeqCst);
    Ok(previous & FLAG_INITIALIZING != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(size: u64, version: u64, flags: u64) -> tempfile::NamedTempFile {
        let mut bytes = vec![0u8; SEGMENT_SIZE];
        bytes[0..8].copy_from_slice(&size.to_ne_bytes());
        bytes[8..16].copy_from_slice(&version.to_ne_bytes());
        bytes[96..104].copy_from_slice(&flags.to_ne_bytes());
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        file
    }

    fn flags_of(path: &Path) -> u64 {
        let bytes = std::fs::read(path).unwrap();
        u64::from_ne_bytes(bytes[96..104].try_into().unwrap())
    }

    #[test]
    fn hot_restart_sockets_name_their_base_id() {
        assert_eq!(
            socket_base_id("@envoy_domain_socket_child_1938123580"),
            Some(193812358)
        );
        assert_eq!(
            socket_base_id("@envoy_domain_socket_udp_parent_1938123581"),
            Some(193812358)
        );
        assert_eq!(socket_base_id("@other_socket_12"), None);
    }

    #[test]
    fn a_segment_nobody_uses_is_not_in_use() {
        // No Envoy uses a base id this large.
        assert_eq!(in_use(u64::MAX / 100), None);
    }

    #[test]
    fn stuck_initializing_flag_is_cleared_and_other_bits_kept() {
        let f = segment(104, 11, 0b101);
        assert!(clear_initializing(f.path()).unwrap());
        assert_eq!(flags_of(f.path()), 0b100);
        assert!(!clear_initializing(f.path()).unwrap());
    }

    #[test]
    fn unknown_layout_is_refused_untouched() {
        for (size, version) in [(104, 12), (200, 11)] {
            let f = segment(size, version, 1);
            assert!(matches!(
                clear_initializing(f.path()),
                Err(RepairError::Layout { .. })
            ));
            assert_eq!(flags_of(f.path()), 1);
        }
        let short = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(short.path(), [0u8; 16]).unwrap();
        assert!(matches!(
            clear_initializing(short.path()),
            Err(RepairError::Layout { .. })
        ));
    }
}
