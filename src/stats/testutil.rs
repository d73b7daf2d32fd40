//! Helpers for the stats tests: segments made from bytes, and slot inspection.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

use super::layout::{self, SlotState};
use super::Segment;

/// A memfd holding exactly `bytes`, sealed like baton's when `seal`.
pub(crate) fn memfd_with(bytes: &[u8], seal: bool) -> OwnedFd {
    let fd = memfd_create(
        "baton-stats-test",
        MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING,
    )
    .unwrap();
    let file = File::from(fd);
    file.set_len(bytes.len() as u64).unwrap();
    file.write_all_at(bytes, 0).unwrap();
    let fd = OwnedFd::from(file);
    if seal {
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW;
        fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).unwrap();
    }
    fd
}

/// A copy of the segment's bytes (read through the fd, not the mapping).
pub(crate) fn bytes_of(segment: &Segment) -> Vec<u8> {
    let file = File::from(segment.fd().try_clone_to_owned().unwrap());
    let mut bytes = vec![0u8; layout::total_size(segment.slots()) as usize];
    file.read_exact_at(&mut bytes, 0).unwrap();
    bytes
}

/// Overwrite bytes of the segment behind `fd` at `offset`.
pub(crate) fn write_at(fd: impl AsFd, offset: usize, bytes: &[u8]) {
    let file = File::from(fd.as_fd().try_clone_to_owned().unwrap());
    file.write_all_at(bytes, offset as u64).unwrap();
}

/// Indices of the slots in `state` whose name is `name`.
pub(crate) fn slots_named(segment: &Segment, name: &str, state: SlotState) -> Vec<u32> {
    let map = segment.mapping();
    (0..map.slots())
        .filter(|&i| {
            SlotState::of(map.tag(i).load(std::sync::atomic::Ordering::Acquire)) == state
                && layout::decode_name(&map.name_words(i)).as_deref() == Some(name)
        })
        .collect()
}
