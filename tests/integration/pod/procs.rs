//! Processes as the host sees them, by parent and by namespace (from /proc).

use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

fn pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Field `n` after the command name in /proc/PID/stat (0 = state, 1 = ppid).
fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1.to_string();
    after.split_whitespace().nth(n).map(str::to_string)
}

/// Whether `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    stat_field(pid, 0).is_some_and(|state| state != "Z")
}

/// The children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    pids()
        .into_iter()
        .filter(|p| stat_field(*p, 1).and_then(|pp| pp.parse().ok()) == Some(pid))
        .collect()
}

/// The inode of `pid`'s namespace of `kind` (`net`, `pid`, `mnt`).
pub fn ns_inode(pid: i32, kind: &str) -> Option<u64> {
    let link = std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).ok()?;
    let link = link.to_str()?;
    link.strip_prefix(&format!("{kind}:["))?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Live processes in the namespace of `kind` with `inode`.
pub fn in_namespace(kind: &str, inode: u64) -> Vec<i32> {
    pids()
        .into_iter()
        .filter(|p| ns_inode(*p, kind) == Some(inode) && alive(*p))
        .collect()
}

/// SIGKILL every live process in the namespace, until none is left or `timeout`.
/// Returns those that would not go.
pub fn kill_namespace(kind: &str, inode: u64, timeout: Duration) -> Vec<i32> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let left = in_namespace(kind, inode);
        if left.is_empty() || std::time::Instant::now() >= deadline {
            return left;
        }
        for pid in &left {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
