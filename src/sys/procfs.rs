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

/// The processes that map `path` (`/proc/PID/maps`) or run with it as an argument
/// (`/proc/PID/cmdline`). Processes whose files cannot be read (another user's)
/// are not seen.
pub fn users_of(path: &Path) -> Vec<u32> {
    let wanted = path.as_os_str().as_encoded_bytes();
    pids()
        .into_iter()
        .filter(|pid| {
            let mapped = std::fs::read(format!("/proc/{pid}/maps"))
                .is_ok_and(|maps| maps_mention(&maps, wanted));
            mapped
                || std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == wanted))
        })
        .collect()
}

/// Whether a `/proc/PID/maps` text maps `path` (its last column; a deleted file
/// reads `path (deleted)`).
pub fn maps_mention(maps: &[u8], path: &[u8]) -> bool {
    maps.split(|b| *b == b'\n').any(|line| {
        line.windows(path.len())
            .position(|w| w == path)
            .is_some_and(|at| {
                let rest = &line[at + path.len()..];
                rest.is_empty() || rest == b" (deleted)"
            })
    })
}

/// The names of the abstract unix sockets bound in this network namespace
/// (`@name`, without the NUL padding `/proc/net/unix` shows as `@`).
pub fn abstract_sockets() -> Vec<String> {
    std::fs::read_to_string("/proc/net/unix")
        .map(|text| parse_abstract_sockets(&text))
        .unwrap_or_default()
}

/// The abstract names in the text of `/proc/net/unix`.
pub fn parse_abstract_sockets(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(7))
        .filter(|name| name.starts_with('@'))
        .map(|name| name.trim_end_matches('@').to_string())
        .collect()
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
    fn maps_mention_a_path_only_as_a_whole_mapping() {
        let maps = b"7f64-7f65 rw-s 00000000 00:1b 219    /dev/shm/envoy_shared_memory_120\n\
                     7f66-7f67 rw-s 00000000 00:1b 220    /dev/shm/envoy_shared_memory_130 (deleted)\n";
        assert!(maps_mention(maps, b"/dev/shm/envoy_shared_memory_120"));
        assert!(maps_mention(maps, b"/dev/shm/envoy_shared_memory_130"));
        assert!(!maps_mention(maps, b"/dev/shm/envoy_shared_memory_12"));
        assert!(!maps_mention(maps, b"/dev/shm/envoy_shared_memory_1"));
    }

    #[test]
    fn abstract_socket_names_lose_their_padding() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000090: 00000002 00000000 00000000 0002 01 3416111 @envoy_domain_socket_child_1938123580@@@@\n\
            00000000b4: 00000002 00000000 00010000 0001 01 6033141 /var/run/docker.sock\n\
            000000001a: 00000003 00000000 00000000 0001 03 6033163\n";
        assert_eq!(
            parse_abstract_sockets(text),
            vec!["@envoy_domain_socket_child_1938123580".to_string()]
        );
    }

    #[test]
    fn this_process_uses_its_own_executable() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        assert!(users_of(&exe).contains(&std::process::id()));
        assert!(users_of(Path::new("/no/such/file")).is_empty());
    }

    #[test]
    fn this_process_leads_no_group_of_strangers() {
        let me = std::process::id();
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let pgid = stat_pgrp(&stat).unwrap();
        assert!(group_members(pgid).contains(&me));
    }
}
