//! Where the container's memory limit is, and what it says: cgroup v2
//! (`memory.max`, `memory.current`) or v1 (`memory.limit_in_bytes`,
//! `memory.usage_in_bytes`).
//!
//! The cgroup of a process is its `memory` line of `/proc/self/cgroup` (v1) or its
//! `0::` line (v2); the directory is that path below the matching mount of
//! `/proc/self/mountinfo`, less the mount's own root (a container sees its cgroup
//! mounted as `/`). v1 is preferred when it has a memory controller: on a hybrid
//! host the v2 tree holds no memory controller at all.
//!
//! **Invariant:** "no limit" (v1's huge value, v2's `max`, no file on the way up)
//! is `None`, never a number to compare with.

use std::io;
use std::path::{Path, PathBuf};

/// Which cgroup interface holds the memory controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// cgroup v1: `memory.limit_in_bytes`, `memory.usage_in_bytes`.
    V1,
    /// cgroup v2: `memory.max`, `memory.current`.
    V2,
}

/// A memory cgroup directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// v1 or v2.
    pub version: Version,
    /// The cgroup's directory.
    pub dir: PathBuf,
    /// The mount point it lies under: v2 limits are looked up from `dir` to here
    /// (a parent's `memory.max` binds its children too).
    pub top: PathBuf,
}

/// What the cgroup says right now, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    /// The limit, `None` when there is none.
    pub limit: Option<u64>,
    /// Memory charged to the cgroup, page cache included.
    pub usage: u64,
    /// Page cache not used lately: reclaimed before anything is killed.
    pub inactive_file: u64,
}

impl Reading {
    /// What the kernel cannot simply reclaim: usage less the inactive page cache
    /// (the kubelet's "working set").
    pub fn working_set(&self) -> u64 {
        self.usage.saturating_sub(self.inactive_file)
    }
}

/// v1 reports "no limit" as the largest page-aligned `i64`; anything this large
/// is no limit.
const V1_UNLIMITED: u64 = 1 << 62;

/// The memory cgroup of the process whose `/proc/PID/cgroup` and
/// `/proc/PID/mountinfo` are given; `None` when neither interface is found.
pub fn locate(proc_cgroup: &str, mountinfo: &str) -> Option<Cgroup> {
    let mounts: Vec<Mount> = mountinfo.lines().filter_map(Mount::parse).collect();
    let mut v2_path = None;
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.split(',').any(|c| c == "memory") {
            let mount = mounts.iter().find(|m| {
                m.fstype == "cgroup" && m.super_options.split(',').any(|o| o == "memory")
            });
            if let Some(m) = mount {
                return m.resolve(path).map(|dir| Cgroup {
                    version: Version::V1,
                    dir,
                    top: m.point.clone(),
                });
            }
        } else if id == "0" && controllers.is_empty() {
            v2_path = Some(path);
        }
    }
    let path = v2_path?;
    let m = mounts.iter().find(|m| m.fstype == "cgroup2")?;
    m.resolve(path).map(|dir| Cgroup {
        version: Version::V2,
        dir,
        top: m.point.clone(),
    })
}

/// Read the limit and the usage of `cgroup`. An error names the file.
pub fn read(cgroup: &Cgroup) -> io::Result<Reading> {
    match cgroup.version {
        Version::V1 => {
            let stat = read_file(&cgroup.dir.join("memory.stat"))?;
            let own = number(&cgroup.dir.join("memory.limit_in_bytes"))?;
            // A parent's limit binds too; v1 reports the tightest as this field.
            let hierarchical = stat_field(&stat, "hierarchical_memory_limit").unwrap_or(own);
            let limit = own.min(hierarchical);
            Ok(Reading {
                limit: (limit < V1_UNLIMITED).then_some(limit),
                usage: number(&cgroup.dir.join("memory.usage_in_bytes"))?,
                inactive_file: stat_field(&stat, "total_inactive_file")
                    .or_else(|| stat_field(&stat, "inactive_file"))
                    .unwrap_or(0),
            })
        }
        Version::V2 => {
            let stat = read_file(&cgroup.dir.join("memory.stat"))?;
            Ok(Reading {
                limit: v2_limit(&cgroup.dir, &cgroup.top),
                usage: number(&cgroup.dir.join("memory.current"))?,
                inactive_file: stat_field(&stat, "inactive_file").unwrap_or(0),
            })
        }
    }
}

/// The tightest `memory.max` from `dir` up to `top`; `None` if all say `max` (the
/// root cgroup has no such file).
pub fn v2_limit(dir: &Path, top: &Path) -> Option<u64> {
    let mut tightest: Option<u64> = None;
    for d in dir.ancestors() {
        if let Ok(text) = std::fs::read_to_string(d.join("memory.max")) {
            if let Some(limit) = parse_max(&text) {
                tightest = Some(tightest.map_or(limit, |t| t.min(limit)));
            }
        }
        if d == top {
            break;
        }
    }
    tightest
}

/// `max` is no limit; otherwise a number of bytes.
pub fn parse_max(text: &str) -> Option<u64> {
    match text.trim() {
        "max" => None,
        n => n.parse().ok(),
    }
}

/// `key value` lines of `memory.stat`.
pub fn stat_field(stat: &str, key: &str) -> Option<u64> {
    stat.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn read_file(path: &Path) -> io::Result<String> {
    std::fs::read_to_string(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn number(path: &Path) -> io::Result<u64> {
    let text = read_file(path)?;
    text.trim().parse().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {text:?} is not a number: {e}", path.display()),
        )
    })
}

/// One line of `/proc/PID/mountinfo`, the fields this needs.
#[derive(Debug)]
struct Mount {
    /// The directory of the mounted filesystem that is mounted here.
    root: PathBuf,
    point: PathBuf,
    fstype: String,
    super_options: String,
}

impl Mount {
    /// `36 35 98:0 /root /point rw,noatime master:1 - cgroup cgroup rw,memory`:
    /// optional fields end at `-`.
    fn parse(line: &str) -> Option<Mount> {
        let (head, tail) = line.split_once(" - ")?;
        let head: Vec<&str> = head.split(' ').collect();
        let tail: Vec<&str> = tail.split(' ').collect();
        Some(Mount {
            root: PathBuf::from(unescape(head.get(3)?)),
            point: PathBuf::from(unescape(head.get(4)?)),
            fstype: (*tail.first()?).to_string(),
            super_options: tail.get(2).copied().unwrap_or_default().to_string(),
        })
    }

    /// The directory of cgroup `path` under this mount, if the mount shows it.
    fn resolve(&self, path: &str) -> Option<PathBuf> {
        let relative = Path::new(path).strip_prefix(&self.root).ok()?;
        Some(self.point.join(relative))
    }
}

/// mountinfo writes a space as `\040` (and tab, newline, backslash likewise).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let code = (bytes[i] == b'\\')
            .then(|| bytes.get(i + 1..i + 4))
            .flatten()
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match code {
            Some(code) => {
                out.push(code);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}
