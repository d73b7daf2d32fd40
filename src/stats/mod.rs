//! The stats segment: shared memory that baton owns and every epoch inherits, so
//! counters never go backwards across hot restarts.
//!
//! **Shape.** baton creates one memfd (`memfd_create("baton-stats", MFD_CLOEXEC)`),
//! sizes it, seals it against shrinking and growing, maps it and writes the header,
//! the magic last. A memfd has no path: nothing is left in `/dev/shm` whatever way
//! baton dies, and only processes given the fd (or allowed to ptrace baton, through
//! `/proc/<pid>/fd/<n>`) can reach it. Each epoch receives it as an extra fd, announced
//! by `BATON_STATS_FD`, next to `BATON_EPOCH`. Layout: see [`layout`].
//!
//! **Slots.** Named slots hold a counter or a gauge. A name gets its slot the first
//! time any process asks for it, without a lock held across processes; concurrent
//! claimers of one name always end on one slot (the rule is in [`mod@claim`]). Slots
//! are never freed. A full segment is an error ([`StatsError::Full`]) counted in the
//! header (`full_errors`), never a crash.
//!
//! **Counters** use one word per slot shared by everybody: increments from any epoch
//! (and from baton) add up, and since the memory outlives every epoch, a counter only
//! grows.
//!
//! **Gauges** are per-epoch contributions. Each slot has 16 value *lanes*; lane 0 is
//! baton's own, lanes 1 to 15 are lent to live epochs through a lane table in the
//! header (`epoch + 1` per lane, 0 when free). An epoch writes only its lane; a reader
//! sums all lanes. When an epoch exits, baton zeroes its lane in every slot and frees
//! it ([`Segment::clear_epoch`]), so a drained epoch leaves no active connections
//! behind. Chosen over one slot per (name, epoch) because the slot count stays the
//! number of names and nothing needs freeing; the price is 128 bytes per slot
//! (untouched memfd pages cost nothing) and at most 15 epochs with gauges at once.
//!
//! **Reading is defensive.** An attacher checks the seal, the length, the magic
//! (Acquire), the version, the geometry, the size in the header against the memfd's,
//! and that the slot count fills it exactly; then it indexes only with that validated
//! count, and skips slots whose state, kind or name is not one this module writes.
//!
//! **Contract for baton's shell.**
//! 1. At start: `Segment::create(stats_slots)`; failure is fatal (exit 1).
//! 2. Before spawning epoch `n`: `segment.begin_epoch(n)` (on `NoFreeLane`, log it and
//!    spawn anyway), and hand `ExtraFd::new(child::ENV_STATS_FD, &segment)` to
//!    `handoff::prepare` (`BATON_EPOCH` is already set there).
//! 3. Once epoch `n`'s process group is gone (drained, crashed, failed to become
//!    ready): `segment.clear_epoch(n)`. `begin_epoch`/`clear_epoch` from one thread.
//! 4. baton's own metrics: resolve `segment.counter(..)` / `segment.gauge(..)` handles
//!    once at start. `/stats/prometheus`: `segment.snapshot()`. `baton stats --pid P`:
//!    `Segment::open_pid(P)` (or `open_path("/proc/P/fd/N")`).
//!
//! Code map: [`layout`] (bytes and pure checks) · `mapping` (memfd and the only
//! pointer arithmetic) · [`mod@claim`] (name → slot) · [`child`] (epoch API) ·
//! [`segment`] (owner API) · [`error`].
//!
//! **Boundary:** one of the few modules with `unsafe` (turning mapped words into
//! atomics, and the handles' raw pointers); each block carries a `// SAFETY:` line.

mod check;
pub mod child;
mod claim;
mod error;
pub(crate) mod export;
mod layout;
mod mapping;
mod segment;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod process_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod testutil;

pub use child::{Counter, Gauge, Stats};
pub use error::{AttachError, EnvProblem, SegmentError, StatsError};
pub use layout::{Kind, DEFAULT_SLOTS};
pub use mapping::MEMFD_NAME;
pub use segment::{Sample, Segment};
