//! The errors of the stats segment: one enum per kind of caller.
//!
//! [`SegmentError`]: creating or attaching a segment (baton at start is fatal; a
//! reader such as `baton stats --pid` reports it). [`StatsError`]: getting a counter or
//! gauge handle (never fatal: the proxy goes on without that metric).
//! [`AttachError`]: [`super::child::Stats::from_env`] in an epoch.

use std::io;
use std::path::PathBuf;

use super::layout::{Kind, LANES, LAYOUT_VERSION, MAX_SLOTS, SLOT_SIZE};

/// Why a segment could not be created, attached or registered with an epoch.
#[derive(Debug, thiserror::Error)]
pub enum SegmentError {
    /// `memfd_create`, `ftruncate` or sealing failed.
    #[error("creating the stats memfd: {0}")]
    Create(#[source] io::Error),
    /// Opening a segment by path (e.g. `/proc/<pid>/fd/<n>`) failed.
    #[error("opening the stats segment {path}: {source}")]
    Open {
        /// The path that was opened.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// No stats memfd among the fds of a process.
    #[error("process {pid} holds no baton stats segment (no fd links to /memfd:baton-stats)")]
    NotFound {
        /// The process searched.
        pid: u32,
    },
    /// Reading the size or seals of the fd, or mapping it, failed.
    #[error("mapping the stats segment: {0}")]
    Map(#[source] io::Error),
    /// The requested slot count is 0 or too large.
    #[error("invalid stats slot count {0}: must be 1 to {MAX_SLOTS}")]
    InvalidSlotCount(u32),
    /// The fd can still shrink, so a read could fault (SIGBUS): it is not a segment
    /// baton made (baton seals its memfd against shrinking and growing).
    #[error("the stats fd is not sealed against shrinking: not a baton stats segment")]
    NotSealed,
    /// The file is smaller than a header, or absurdly large.
    #[error("a stats segment of {len} bytes is impossible")]
    BadLength {
        /// Its length.
        len: u64,
    },
    /// The first word is not the magic: a foreign file, or a segment whose creation
    /// has not finished.
    #[error("bad magic {found:#018x}: not a baton stats segment")]
    BadMagic {
        /// The first word as read.
        found: u64,
    },
    /// A layout version this build does not read.
    #[error("unsupported stats layout version {found} (this build reads {LAYOUT_VERSION})")]
    UnsupportedVersion {
        /// The version as read.
        found: u32,
    },
    /// Slot size or lane count differ from this build's.
    #[error(
        "unsupported stats geometry: slot size {slot_size}, {lanes} lanes \
         (this build: {SLOT_SIZE}, {LANES})"
    )]
    UnsupportedGeometry {
        /// Slot size as read.
        slot_size: u32,
        /// Lane count as read.
        lanes: u32,
    },
    /// The header's total size is not the size of the segment.
    #[error("stats header says {header} bytes but the segment has {actual}")]
    SizeMismatch {
        /// Size in the header.
        header: u64,
        /// Size of the memfd.
        actual: u64,
    },
    /// The header's slot count does not fill the segment exactly.
    #[error("stats header says {slots} slots, which do not fill {size} bytes")]
    SlotCountMismatch {
        /// Slot count as read.
        slots: u32,
        /// Size of the segment.
        size: u64,
    },
    /// Every epoch lane is held by a live epoch.
    #[error("no free gauge lane for epoch {epoch}: {} epochs already hold one", LANES - 1)]
    NoFreeLane {
        /// The epoch that was being registered.
        epoch: u32,
    },
}

/// Why a counter or gauge handle was not given.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The name breaks the naming rule (1 to 95 printable ASCII bytes, no spaces).
    #[error("invalid stat name {name:?}: {reason}")]
    InvalidName {
        /// The name asked for.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// Every slot is taken; counted in the header's `full_errors`.
    #[error("stats segment full ({slots} slots): no slot for {name:?}")]
    Full {
        /// The name asked for.
        name: String,
        /// The segment's slot count.
        slots: u32,
    },
    /// The name exists with the other kind.
    #[error("stat {name:?} is a {existing}, not a {requested}")]
    KindMismatch {
        /// The name asked for.
        name: String,
        /// The kind it has.
        existing: Kind,
        /// The kind asked for.
        requested: Kind,
    },
    /// This epoch holds no gauge lane (baton did not register it, or had none free);
    /// its counters still work.
    #[error("epoch {epoch} has no gauge lane in the stats segment")]
    NoGaugeLane {
        /// The epoch.
        epoch: u32,
    },
}

/// Why [`super::child::Stats::from_env`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// Variables missing or malformed, all of them.
    #[error("{}", join(.0))]
    Env(Vec<EnvProblem>),
    /// The fd in `BATON_STATS_FD` is not open (or cannot be duplicated).
    #[error("BATON_STATS_FD={fd}: {source}")]
    Fd {
        /// The fd number.
        fd: i32,
        /// What the OS said.
        source: io::Error,
    },
    /// The fd is open but not a usable segment.
    #[error("BATON_STATS_FD={fd}: {source}")]
    Segment {
        /// The fd number.
        fd: i32,
        /// Why it was refused.
        source: SegmentError,
    },
}

/// One problem with one environment variable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvProblem {
    /// Not set: the process was not started by baton (or baton runs without stats).
    #[error("{0} is not set (not started by baton?)")]
    Missing(&'static str),
    /// Set, but not what baton writes.
    #[error("{var}={value:?}: {reason}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// Its value (lossily decoded).
        value: String,
        /// What was expected.
        reason: &'static str,
    },
}

fn join(problems: &[EnvProblem]) -> String {
    let texts: Vec<String> = problems.iter().map(ToString::to_string).collect();
    texts.join("; ")
}
