//! The CPUs this process may use: the CFS quota of its cgroups (v2 `cpu.max`, v1
//! `cpu.cfs_quota_us` / `cpu.cfs_period_us`) and its affinity mask. Envoy's
//! `--concurrency` defaults from it (a container limited to 1.5 CPUs gets 2 workers,
//! not one per core of the node).
//!
//! Neither `std::thread::available_parallelism` nor `num_cpus` says whether a limit
//! exists (both fold it into one number, rounded down), and "no limit" must give
//! Istio's default instead; so the files are read here, by pure parsers over their
//! text and one function that finds them.
//!
//! The cgroup directories come from `/proc/self/cgroup` placed under the mounts of
//! `/proc/self/mountinfo` (inside a container the mount's root is the container's own
//! cgroup). Every level from the process's cgroup up to the mount is read and the
//! tightest quota wins: a limit set on a parent (a pod, a systemd slice) binds too.

use std::path::{Path, PathBuf};

/// A CFS bandwidth limit: `quota_us` of CPU time per `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    /// CPU time allowed per period, in microseconds.
    pub quota_us: u64,
    /// The period, in microseconds (never 0).
    pub period_us: u64,
}

impl CpuQuota {
    /// Whole CPUs the quota allows, rounded up and at least 1 (1.5 CPUs: 2).
    pub fn cores(&self) -> u32 {
        let cores = self.quota_us.div_ceil(self.period_us).max(1);
        u32::try_from(cores).unwrap_or(u32::MAX)
    }

    /// The quota in CPUs, as a person reads it (`1.5`).
    pub fn cpus(&self) -> f64 {
        self.quota_us as f64 / self.period_us as f64
    }
}

/// A limit and the file it was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CpuLimit {
    /// The quota.
    pub quota: CpuQuota,
    /// `cpu.max` or `cpu.cfs_quota_us`, for the start log.
    pub file: PathBuf,
}

/// The CPUs this process may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cpus {
    /// The tightest quota of its cgroups; `None` when none is set.
    pub limit: Option<CpuLimit>,
    /// Cores it may run on (its affinity mask), at least 1.
    pub cores: u32,
}

/// v2 `cpu.max`: `max 100000` (no limit) or `150000 100000`.
pub fn parse_cpu_max(text: &str) -> Result<Option<CpuQuota>, String> {
    let mut fields = text.split_whitespace();
    let (Some(quota), Some(period), None) = (fields.next(), fields.next(), fields.next()) else {
        return Err(format!("expected 'QUOTA PERIOD', found '{}'", text.trim()));
    };
    let period = parse_period(period)?;
    if quota == "max" {
        return Ok(None);
    }
    let quota_us = quota
        .parse()
        .map_err(|_| format!("quota '{quota}' is neither 'max' nor a number"))?;
    Ok(Some(CpuQuota {
        quota_us,
        period_us: period,
    }))
}

/// v1 `cpu.cfs_quota_us` (`-1`: no limit) and `cpu.cfs_period_us`.
pub fn parse_cfs(quota: &str, period: &str) -> Result<Option<CpuQuota>, String> {
    let quota: i64 = quota
        .trim()
        .parse()
        .map_err(|_| format!("cfs_quota_us '{}' is not a number", quota.trim()))?;
    let period = parse_period(period.trim())?;
    Ok(u64::try_from(quota).ok().map(|quota_us| CpuQuota {
        quota_us,
        period_us: period,
    }))
}

fn parse_period(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(0) | Err(_) => Err(format!("period '{text}' is not a positive number")),
        Ok(p) => Ok(p),
    }
}

/// The cgroup paths of `/proc/self/cgroup`: the v2 one (`0::/path`) and the v1 one
/// of the `cpu` controller (`4:cpu,cpuacct:/path`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ProcCgroup {
    /// The unified hierarchy's path.
    pub v2: Option<String>,
    /// The v1 `cpu` controller's path.
    pub v1_cpu: Option<String>,
}

/// Parse `/proc/self/cgroup`.
pub fn parse_proc_cgroup(text: &str) -> ProcCgroup {
    let mut found = ProcCgroup::default();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if id == "0" && controllers.is_empty() {
            found.v2 = Some(path.to_string());
        } else if controllers.split(',').any(|c| c == "cpu") {
            found.v1_cpu = Some(path.to_string());
        }
    }
    found
}

/// A cgroup mount of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The cgroup path the mount shows at its mount point.
    pub root: String,
    /// Where it is mounted.
    pub mount_point: PathBuf,
    /// `true` for cgroup2; `false` for a v1 mount holding the `cpu` controller.
    pub v2: bool,
}

/// The cgroup2 mounts and the v1 mounts of the `cpu` controller in `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut mounts = Vec::new();
    for line in text.lines() {
        // `id parent major:minor root mount-point options [optional…] - fstype source super-options`
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = before.split(' ').collect();
        let after: Vec<&str> = after.split(' ').collect();
        let (Some(root), Some(point), Some(fstype)) = (fields.get(3), fields.get(4), after.first())
        else {
            continue;
        };
        let v2 = match *fstype {
            "cgroup2" => true,
            "cgroup"
                if after
                    .get(2)
                    .is_some_and(|o| o.split(',').any(|o| o == "cpu")) =>
            {
                false
            }
            _ => continue,
        };
        mounts.push(CgroupMount {
            root: unescape(root),
            mount_point: PathBuf::from(unescape(point)),
            v2,
        });
    }
    mounts
}

/// mountinfo writes a space, tab, newline and backslash as `\040`, `\011`, `\012`, `\134`.
fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut rest = field;
    while let Some(i) = rest.find('\\') {
        out.push_str(&rest[..i]);
        let code = rest
            .get(i + 1..i + 4)
            .and_then(|o| u8::from_str_radix(o, 8).ok());
        match code {
            Some(byte) => {
                out.push(char::from(byte));
                rest = &rest[i + 4..];
            }
            None => {
                out.push('\\');
                rest = &rest[i + 1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// The directories of a cgroup under its mount, from the process's own up to the
/// mount point; empty when the path is not under the mount's root.
pub fn cgroup_dirs(mount: &CgroupMount, path: &str) -> Vec<PathBuf> {
    let root = mount.root.trim_end_matches('/');
    let Some(relative) = path.strip_prefix(root) else {
        return Vec::new();
    };
    if !relative.is_empty() && !relative.starts_with('/') {
        return Vec::new();
    }
    let mut dir = mount.mount_point.clone();
    let mut dirs = vec![dir.clone()];
    for part in relative.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
        dirs.push(dir.clone());
    }
    dirs.reverse();
    dirs
}

/// The tightest quota among `candidates` (fewest CPUs).
fn tightest(candidates: impl IntoIterator<Item = CpuLimit>) -> Option<CpuLimit> {
    candidates.into_iter().min_by(|a, b| {
        let (a, b) = (a.quota, b.quota);
        (u128::from(a.quota_us) * u128::from(b.period_us))
            .cmp(&(u128::from(b.quota_us) * u128::from(a.period_us)))
    })
}

/// Read the quota files of one cgroup directory; `None` when it has none or no limit.
fn limit_in(dir: &Path, v2: bool) -> Option<CpuLimit> {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok();
    let (quota, file) = if v2 {
        (parse_cpu_max(&read("cpu.max")?), dir.join("cpu.max"))
    } else {
        let quota = read("cpu.cfs_quota_us")?;
        let period = read("cpu.cfs_period_us")?;
        (parse_cfs(&quota, &period), dir.join("cpu.cfs_quota_us"))
    };
    // A file that does not parse sets no limit we could honour.
    Some(CpuLimit {
        quota: quota.ok()??,
        file,
    })
}

/// The CPU limit of this process's cgroups (the tightest, if several), `None` when
/// there is none or the cgroup files cannot be read.
pub fn cpu_limit() -> Option<CpuLimit> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let paths = parse_proc_cgroup(&cgroup);
    let limits = parse_mountinfo(&mountinfo)
        .into_iter()
        .filter_map(|mount| {
            let path = if mount.v2 { &paths.v2 } else { &paths.v1_cpu };
            path.as_ref().map(|p| (cgroup_dirs(&mount, p), mount.v2))
        })
        .flat_map(|(dirs, v2)| dirs.into_iter().filter_map(move |d| limit_in(&d, v2)))
        .collect::<Vec<_>>();
    tightest(limits)
}

/// Cores this process may run on: its affinity mask (a cpuset too), at least 1.
pub fn affinity_cores() -> u32 {
    use nix::sched::{sched_getaffinity, CpuSet};
    use nix::unistd::Pid;
    let count = sched_getaffinity(Pid::from_raw(0))
        .map(|set| {
            (0..CpuSet::count())
                .filter(|&i| set.is_set(i).unwrap_or(false))
                .count()
        })
        .unwrap_or(1);
    u32::try_from(count).unwrap_or(u32::MAX).max(1)
}

/// This process's CPUs: the limit of its cgroups and the cores it may run on.
pub fn cpus() -> Cpus {
    Cpus {
        limit: cpu_limit(),
        cores: affinity_cores(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quota(quota_us: u64, period_us: u64) -> Option<CpuQuota> {
        Some(CpuQuota {
            quota_us,
            period_us,
        })
    }

    #[test]
    fn cpu_max_is_a_quota_or_max() {
        assert_eq!(parse_cpu_max("max 100000\n"), Ok(None));
        assert_eq!(
            parse_cpu_max("150000 100000\n"),
            Ok(quota(150_000, 100_000))
        );
        for bad in ["", "max", "150000 0", "lots 100000", "1 2 3"] {
            assert!(parse_cpu_max(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn cfs_quota_minus_one_is_no_limit() {
        assert_eq!(parse_cfs("-1\n", "100000\n"), Ok(None));
        assert_eq!(parse_cfs("50000\n", "100000\n"), Ok(quota(50_000, 100_000)));
        assert!(parse_cfs("x", "100000").unwrap_err().contains("'x'"));
        assert!(parse_cfs("1", "0").is_err());
    }

    #[test]
    fn cores_round_up_and_are_at_least_one() {
        let cores = |q, p| quota(q, p).unwrap().cores();
        assert_eq!(cores(150_000, 100_000), 2);
        assert_eq!(cores(100_000, 100_000), 1);
        assert_eq!(cores(400_000, 100_000), 4);
        assert_eq!(cores(10_000, 100_000), 1);
        assert_eq!(cores(1, 100_000), 1);
    }

    #[test]
    fn proc_cgroup_gives_the_unified_and_the_v1_cpu_paths() {
        let hybrid = "9:name=systemd:/docker/abc\n4:cpu,cpuacct:/docker/abc\n0::/docker/abc\n";
        assert_eq!(
            parse_proc_cgroup(hybrid),
            ProcCgroup {
                v2: Some("/docker/abc".into()),
                v1_cpu: Some("/docker/abc".into())
            }
        );
        // cpuacct alone is not the cpu controller.
        let v1 = "3:cpuacct:/a\n1:cpu:/b\n";
        assert_eq!(parse_proc_cgroup(v1).v1_cpu.as_deref(), Some("/b"));
        assert_eq!(parse_proc_cgroup("0::/\n").v2.as_deref(), Some("/"));
    }

    #[test]
    fn mountinfo_gives_cgroup2_and_v1_cpu_mounts_only() {
        let text = "\
81 80 0:45 / /sys/fs/cgroup rw,nosuid - tmpfs tmpfs rw,mode=755
82 81 0:29 /docker/abc /sys/fs/cgroup/cpu ro,nosuid - cgroup cgroup rw,cpu
83 81 0:30 /docker/abc /sys/fs/cgroup/cpuacct ro,nosuid - cgroup cgroup rw,cpuacct
84 81 0:31 / /sys/fs/cgroup/unified rw shared:9 - cgroup2 cgroup2 rw
85 81 0:32 / /sys/fs/cgroup/with\\040space rw - cgroup cgroup rw,cpu,cpuacct
";
        assert_eq!(
            parse_mountinfo(text),
            vec![
                CgroupMount {
                    root: "/docker/abc".into(),
                    mount_point: "/sys/fs/cgroup/cpu".into(),
                    v2: false
                },
                CgroupMount {
                    root: "/".into(),
                    mount_point: "/sys/fs/cgroup/unified".into(),
                    v2: true
                },
                CgroupMount {
                    root: "/".into(),
                    mount_point: "/sys/fs/cgroup/with space".into(),
                    v2: false
                },
            ]
        );
    }

    #[test]
    fn cgroup_dirs_run_from_the_process_up_to_the_mount() {
        let host = CgroupMount {
            root: "/".into(),
            mount_point: "/sys/fs/cgroup".into(),
            v2: true,
        };
        assert_eq!(
            cgroup_dirs(&host, "/kubepods/pod1/c1"),
            [
                "/sys/fs/cgroup/kubepods/pod1/c1",
                "/sys/fs/cgroup/kubepods/pod1",
                "/sys/fs/cgroup/kubepods",
                "/sys/fs/cgroup"
            ]
            .map(PathBuf::from)
        );
        // Inside a container the mount's root is the container's own cgroup.
        let container = CgroupMount {
            root: "/docker/abc".into(),
            ..host.clone()
        };
        assert_eq!(
            cgroup_dirs(&container, "/docker/abc"),
            vec![PathBuf::from("/sys/fs/cgroup")]
        );
        assert!(cgroup_dirs(&container, "/docker/abcd").is_empty());
        assert!(cgroup_dirs(&container, "/other").is_empty());
    }

    #[test]
    fn the_tightest_limit_wins() {
        let limit = |q, p, f: &str| CpuLimit {
            quota: quota(q, p).unwrap(),
            file: f.into(),
        };
        let found = tightest([
            limit(400_000, 100_000, "pod"),
            limit(75_000, 50_000, "container"),
            limit(200_000, 100_000, "slice"),
        ]);
        assert_eq!(found.unwrap().file, PathBuf::from("container"));
        assert_eq!(tightest([]), None);
    }

    #[test]
    fn this_process_has_at_least_one_core() {
        assert!(affinity_cores() >= 1);
    }
}
