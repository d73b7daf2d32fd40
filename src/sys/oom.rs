//! Which process the kernel kills first when memory runs out: never the serving
//! epoch while a newcomer exists.
//!
//! A hot restart briefly runs two proxies (three with `envoy --mode validate`). If
//! the container's memory cannot hold them, the kernel's OOM killer picks the process
//! with the highest badness: roughly its resident memory, plus `oom_score_adj`
//! thousandths of the limit. The serving epoch, grown with traffic, is usually the
//! largest, so left alone the kernel kills it and the newcomer (which then has no
//! parent to take over from) follows: an outage. So every child baton starts begins
//! at [`NEWCOMER`], the highest score, and an epoch is brought down to baton's own
//! score when it becomes ready to serve ([`settle`]). An unprivileged process may
//! raise a score, and lower one back to what it inherited, which is all this does.
//!
//! **Invariant:** the hook that raises the score runs between fork and exec and
//! does only async-signal-safe work (open, write, close of a static path).

use std::os::unix::process::CommandExt;
use std::process::Command;

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;

/// The score of a newcomer: the highest there is, so that a newcomer is the kernel's
/// first choice whatever its size.
pub const NEWCOMER: &str = "1000";

/// Start `cmd` as a newcomer: its `oom_score_adj` is [`NEWCOMER`] from its first
/// instruction. Failing to set it (no `/proc`) does not stop the start.
pub fn newcomer(cmd: &mut Command) -> &mut Command {
    // SAFETY: runs between fork and exec; open(2), write(2) and close(2) of a
    // static path and a static buffer are async-signal-safe, nothing is allocated.
    unsafe {
        cmd.pre_exec(|| {
            let path = c"/proc/self/oom_score_adj";
            if let Ok(fd) = open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty()) {
                let _ = nix::unistd::write(&fd, NEWCOMER.as_bytes());
            }
            Ok(())
        })
    };
    cmd
}

/// The `oom_score_adj` of `pid` (`self` for baton).
pub fn score_of(pid: &str) -> Option<i16> {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The epoch whose group leader is `pgid` now serves: bring every process of its
/// group down to baton's own score, below any newcomer's. Best effort: a process
/// that is gone or refuses is logged and skipped.
pub fn settle(pgid: u32) {
    let Some(own) = score_of("self") else { return };
    for pid in super::procfs::group_members(pgid) {
        let path = format!("/proc/{pid}/oom_score_adj");
        if let Err(e) = std::fs::write(&path, own.to_string()) {
            tracing::debug!(pid, error = %e, "cannot lower oom_score_adj of the serving epoch");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newcomer_starts_at_the_top_score_and_settles_to_baton_s() {
        let own = score_of("self").expect("own score");
        let mut cmd = Command::new("sleep");
        cmd.arg("30").process_group(0);
        newcomer(&mut cmd);
        let mut child = cmd.spawn().expect("sleep");
        let pid = child.id();
        assert_eq!(score_of(&pid.to_string()), NEWCOMER.parse().ok());
        settle(pid);
        assert_eq!(score_of(&pid.to_string()), Some(own));
        let _ = child.kill();
        let _ = child.wait();
    }
}
