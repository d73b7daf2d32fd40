//! Reading `/proc`: the processes of a process group and the sizes their status
//! reports. Parsing is separate from reading, so it is tested on fixed text.

use std::path::Path;

/// Every process id listed in `/proc` right now.
pub fn pids() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// The processes whose process group is `pgid` (an epoch is spawned as the leader
/// of its own group, so its helpers and workers are found by its pid).
pub fn group_members(pgid: u32) -> Vec<u32> {
    pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| stat_pgrp(&stat))
                == Some(pgid)
        })
        .collect()
}

/// The process group in the text of `/proc/PID/stat`: the third field after the
/// command name, which is in parentheses and may itself hold spaces and `)`.
pub fn stat_pgrp(stat: &str) -> Option<u32> {
    let (_, after) = stat.rsplit_once(')')?;
    after.split_whitespace().nth(2)?.parse().ok()
}

/// A size field of `/proc/PID/status` (`RssAnon:   14900 kB`), in bytes.
pub fn status_bytes(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let mut words = rest.split_whitespace();
        let value: u64 = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") => Some(value * 1024),
            None => Some(value),
            Some(_) => None,
        }
    })
}

/// `/proc/PID/status` of `pid`, if it still exists.
pub fn status_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_group_is_read_after_a_command_name_with_spaces_and_parens() {
        let stat = "4242 (envoy (x) y) S 1 4240 4240 0 -1 4194560 2030 0 0 0";
        assert_eq!(stat_pgrp(stat), Some(4240));
        assert_eq!(stat_pgrp("garbage"), None);
    }

    #[test]
    fn status_sizes_are_bytes() {
        let status = "Name:\tenvoy\nVmRSS:\t   66732 kB\nRssAnon:\t   14900 kB\nRssShmem:\t       4 kB\nThreads:\t12\n";
        assert_eq!(status_bytes(status, "RssAnon"), Some(14900 * 1024));
        assert_eq!(status_bytes(status, "RssShmem"), Some(4096));
        assert_eq!(status_bytes(status, "Threads"), Some(12));
        assert_eq!(status_bytes(status, "Rss"), None, "a prefix is not a field");
        assert_eq!(status_bytes(status, "VmSwap"), None);
    }

    #[test]
    fn this_process_leads_no_group_of_strangers() {
        let me = std::process::id();
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let pgid = stat_pgrp(&stat).unwrap();
        assert!(group_members(pgid).contains(&me));
    }
}
