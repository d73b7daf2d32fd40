//! Operating-system duties: one reaper for every child, spawning with a clean
//! slate (a newcomer's OOM score included), signals, `/proc`, and what PID 1 owes
//! the processes below it.
//!
//! **Boundary:** this is one of the few places with `unsafe` (the `pre_exec` hook);
//! each block carries a `// SAFETY:` line.

mod capture;
pub mod cgroup_cpu;
pub mod envoy_shm;
pub mod oom;
pub mod procfs;
pub mod reaper;
pub mod signals;
pub mod spawn;

pub use capture::capture;
pub use reaper::Reaper;
pub use signals::{become_subreaper, signal_name};
