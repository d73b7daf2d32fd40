//! Memory headroom before a restart: a hot restart runs a second proxy (and for
//! Envoy a third, short-lived one: `envoy --mode validate`) beside the serving one.
//! In a container whose memory limit holds one proxy but not two, the kernel's OOM
//! killer would pick a victim, and the serving epoch is a likely one.
//!
//! So before the preflight runs the validator, and again before a new epoch is
//! spawned, baton reads its cgroup's limit and working set ([`cgroup`]) and
//! estimates what the newcomer needs from what the serving epoch holds itself: the
//! anonymous and shared memory of its process group (file pages, the binary's
//! among them, are shared with the newcomer and charged once). A restart fits when
//!
//! ```text
//! working set + serving epoch's memory + margin <= limit
//! margin = max(10% of the serving epoch's memory, 8 MiB)
//! ```
//!
//! A restart that does not fit is refused like any bad change (`reason="memory"`,
//! the figures in the message): the serving epoch keeps serving, and the next
//! trigger tries again. `--memory-check off` turns this off; whatever is decided
//! here, a newcomer is still the OOM killer's first choice (`sys::oom`).
//!
//! **Invariant:** no limit, no serving epoch, or a cgroup that cannot be read is
//! never a refusal: a check that cannot tell does not stand in the way.

pub mod cgroup;

#[cfg(test)]
mod tests;

use std::fmt;

use cgroup::{Cgroup, Reading};

/// Never less margin than this.
pub const MARGIN_MIN: u64 = 8 << 20;
/// The margin as a share of the estimate, in percent.
pub const MARGIN_PERCENT: u64 = 10;

/// The memory check of one baton: where its cgroup is, found once.
#[derive(Debug, Clone)]
pub struct MemoryCheck {
    cgroup: Cgroup,
}

/// The numbers a decision was made on, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Figures {
    /// The cgroup's limit.
    pub limit: u64,
    /// What is in use and cannot simply be reclaimed.
    pub working_set: u64,
    /// What the serving epoch's processes hold themselves: what a newcomer needs.
    pub serving: u64,
    /// Kept free on top.
    pub margin: u64,
}

impl Figures {
    /// The figures for `reading` and the serving epoch's `serving` bytes; `None`
    /// when there is no limit.
    pub fn of(reading: Reading, serving: u64) -> Option<Self> {
        Some(Figures {
            limit: reading.limit?,
            working_set: reading.working_set(),
            serving,
            margin: (serving / 100 * MARGIN_PERCENT).max(MARGIN_MIN),
        })
    }

    /// What is left under the limit.
    pub fn free(&self) -> u64 {
        self.limit.saturating_sub(self.working_set)
    }

    /// What a newcomer needs, margin included.
    pub fn needed(&self) -> u64 {
        self.serving + self.margin
    }

    /// Whether a newcomer fits beside what runs.
    pub fn fits(&self) -> bool {
        self.needed() <= self.free()
    }
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} free of the {} limit ({} in use), a new proxy needs about {} (the serving epoch holds {}, plus a {} margin)",
            mib(self.free()),
            mib(self.limit),
            mib(self.working_set),
            mib(self.needed()),
            mib(self.serving),
            mib(self.margin),
        )
    }
}

/// Why a restart must not start now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoom {
    /// The numbers.
    pub figures: Figures,
    /// The cgroup directory they come from.
    pub cgroup: String,
    /// What was about to start (`the validator and a new epoch`, `a new epoch`).
    pub what: &'static str,
}

impl fmt::Display for NoRoom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "not enough memory to start {} beside the serving epoch: {} (cgroup {})",
            self.what, self.figures, self.cgroup
        )
    }
}

impl MemoryCheck {
    /// baton's own memory cgroup, from `/proc/self`; `None` (logged) when there is
    /// none to read, or it has no limit now and no file to read one from.
    pub fn detect() -> Option<Self> {
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        let Some(cgroup) = cgroup::locate(&proc_cgroup, &mountinfo) else {
            tracing::info!("memory check: no memory cgroup found; restarts are not checked");
            return None;
        };
        match cgroup::read(&cgroup) {
            Ok(reading) => {
                tracing::info!(
                    cgroup = %cgroup.dir.display(),
                    version = ?cgroup.version,
                    limit = %reading.limit.map_or("none".into(), mib),
                    working_set = %mib(reading.working_set()),
                    "memory check: before every restart, a second proxy must fit under the limit"
                );
                Some(MemoryCheck { cgroup })
            }
            Err(e) => {
                tracing::warn!(error = %e, "memory check: cannot read the memory cgroup; restarts are not checked");
                None
            }
        }
    }

    /// Is there room to start `what` beside the epoch whose process group is
    /// `serving_pgid`? `Ok(None)` when nothing can be compared (no limit, the
    /// serving epoch is gone, the cgroup cannot be read right now).
    pub fn room_for(
        &self,
        serving_pgid: u32,
        what: &'static str,
    ) -> Result<Option<Figures>, NoRoom> {
        let reading = match cgroup::read(&self.cgroup) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "memory check skipped: cannot read the memory cgroup");
                return Ok(None);
            }
        };
        if reading.limit.is_none() {
            // Nothing to compare with: spare the walk of `/proc`.
            return Ok(None);
        }
        let Some(serving) = group_memory(serving_pgid) else {
            return Ok(None);
        };
        let Some(figures) = Figures::of(reading, serving) else {
            return Ok(None);
        };
        if figures.fits() {
            Ok(Some(figures))
        } else {
            Err(NoRoom {
                figures,
                cgroup: self.cgroup.dir.display().to_string(),
                what,
            })
        }
    }
}

/// The anonymous and shared memory the processes of group `pgid` hold; `None` when
/// the group has no process any more.
pub fn group_memory(pgid: u32) -> Option<u64> {
    use crate::sys::procfs;
    let members = procfs::group_members(pgid);
    if members.is_empty() {
        return None;
    }
    Some(
        members
            .into_iter()
            .filter_map(procfs::status_of)
            .map(|status| {
                procfs::status_bytes(&status, "RssAnon").unwrap_or(0)
                    + procfs::status_bytes(&status, "RssShmem").unwrap_or(0)
            })
            .sum(),
    )
}

/// Bytes as MiB with one decimal, as people read memory limits.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}
