//! The memory check on fixture files: v1 as this kind of host shows it, v2 as a
//! Kubernetes node does, and the decision on their figures.

use std::path::{Path, PathBuf};

use super::cgroup::{self, Cgroup, Reading, Version};
use super::*;

const MIB: u64 = 1 << 20;

fn fixture(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/memory/testdata")
        .join(path)
}

fn text(path: &str) -> String {
    std::fs::read_to_string(fixture(path)).unwrap()
}

#[test]
fn v1_memory_line_wins_on_a_hybrid_host() {
    let found = cgroup::locate(&text("v1/cgroup"), &text("v1/mountinfo")).unwrap();
    assert_eq!(
        found,
        Cgroup {
            version: Version::V1,
            dir: PathBuf::from("/sys/fs/cgroup/memory/process_api/e4ef42fb"),
            top: PathBuf::from("/sys/fs/cgroup/memory"),
        }
    );
}

#[test]
fn v2_line_is_found_below_the_cgroup2_mount() {
    let found = cgroup::locate(&text("v2/cgroup"), &text("v2/mountinfo")).unwrap();
    assert_eq!(found.version, Version::V2);
    assert_eq!(found.dir, PathBuf::from("/sys/fs/cgroup/kubepods/pod1/ctr"));
    assert_eq!(found.top, PathBuf::from("/sys/fs/cgroup"));
}

#[test]
fn a_container_sees_its_own_cgroup_mounted_as_the_root() {
    // cgroup v1 in a container: the mount's root is the container's cgroup.
    let mountinfo = "35 31 0:32 /kubepods/burstable/pod9/c1 /sys/fs/cgroup/memory ro - cgroup cgroup rw,memory\n";
    let found = cgroup::locate("7:memory:/kubepods/burstable/pod9/c1\n", mountinfo).unwrap();
    assert_eq!(found.dir, PathBuf::from("/sys/fs/cgroup/memory"));
    // cgroup v2 with a private cgroup namespace: `0::/` at a mount of `/`.
    let mountinfo = "905 900 0:26 / /sys/fs/cgroup ro - cgroup2 cgroup2 rw\n";
    let found = cgroup::locate("0::/\n", mountinfo).unwrap();
    assert_eq!(found.dir, PathBuf::from("/sys/fs/cgroup"));
}

#[test]
fn escaped_mount_points_are_unescaped() {
    let mountinfo = "35 31 0:32 / /mnt/cgroup\\040mem rw - cgroup cgroup rw,memory\n";
    let found = cgroup::locate("4:memory:/a\n", mountinfo).unwrap();
    assert_eq!(found.dir, PathBuf::from("/mnt/cgroup mem/a"));
}

#[test]
fn no_memory_controller_means_no_cgroup() {
    let mountinfo = "32 31 0:29 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
    assert_eq!(cgroup::locate("1:cpu:/x\n", mountinfo), None);
    // A memory line whose hierarchy is not mounted cannot be read either.
    assert_eq!(cgroup::locate("4:memory:/x\n", mountinfo), None);
    // A cgroup outside what the mount shows cannot be read.
    let mountinfo = "35 31 0:32 /other /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
    assert_eq!(cgroup::locate("4:memory:/mine\n", mountinfo), None);
}

#[test]
fn v1_limit_is_the_tightest_of_its_own_and_its_parents() {
    let cg = Cgroup {
        version: Version::V1,
        dir: fixture("v1/cg"),
        top: fixture("v1"),
    };
    let reading = cgroup::read(&cg).unwrap();
    assert_eq!(
        reading,
        Reading {
            limit: Some(90 * MIB),
            usage: 70 * MIB,
            inactive_file: 10 * MIB,
        }
    );
    assert_eq!(reading.working_set(), 60 * MIB);
}

#[test]
fn v1_huge_limit_is_no_limit() {
    let cg = Cgroup {
        version: Version::V1,
        dir: fixture("v1-unlimited/cg"),
        top: fixture("v1-unlimited"),
    };
    assert_eq!(cgroup::read(&cg).unwrap().limit, None);
}

#[test]
fn v2_limit_is_the_tightest_memory_max_up_to_the_mount() {
    let cg = Cgroup {
        version: Version::V2,
        dir: fixture("v2/fs/kubepods/pod1/ctr"),
        top: fixture("v2/fs"),
    };
    let reading = cgroup::read(&cg).unwrap();
    assert_eq!(
        reading,
        Reading {
            limit: Some(256 * MIB),
            usage: 192 * MIB,
            inactive_file: 32 * MIB,
        }
    );
    // Only `max` all the way up: no limit.
    assert_eq!(
        cgroup::v2_limit(&fixture("v2/fs/kubepods"), &fixture("v2/fs")),
        None
    );
    assert_eq!(cgroup::parse_max("max\n"), None);
    assert_eq!(cgroup::parse_max("1048576\n"), Some(MIB));
}

#[test]
fn an_unreadable_cgroup_file_is_an_error_naming_it() {
    let cg = Cgroup {
        version: Version::V2,
        dir: fixture("v2/fs/kubepods"),
        top: fixture("v2/fs"),
    };
    let err = cgroup::read(&cg).unwrap_err().to_string();
    assert!(err.contains("kubepods/memory.stat"), "{err}");
}

#[test]
fn a_second_proxy_fits_only_with_its_margin() {
    let reading = |limit, usage| Reading {
        limit: Some(limit),
        usage,
        inactive_file: 0,
    };
    // 100 MiB serving: 10 MiB margin, 110 needed.
    let fits = Figures::of(reading(400 * MIB, 290 * MIB), 100 * MIB).unwrap();
    assert_eq!(fits.margin, 10 * MIB);
    assert!(fits.fits(), "{fits}");
    let tight = Figures::of(reading(400 * MIB, 291 * MIB), 100 * MIB).unwrap();
    assert!(!tight.fits(), "{tight}");
    // A small proxy still keeps 8 MiB free.
    let small = Figures::of(reading(100 * MIB, 80 * MIB), 15 * MIB).unwrap();
    assert_eq!(small.margin, MARGIN_MIN);
    assert!(!small.fits(), "{small}");
    // Over the limit already (page cache not reclaimed yet) is no room, no panic.
    let over = Figures::of(reading(100 * MIB, 120 * MIB), 15 * MIB).unwrap();
    assert_eq!(over.free(), 0);
    assert!(!over.fits());
    // No limit: nothing to compare.
    let unlimited = Reading {
        limit: None,
        usage: 1,
        inactive_file: 0,
    };
    assert_eq!(Figures::of(unlimited, 15 * MIB), None);
}

#[test]
fn a_refusal_states_its_figures_in_mib() {
    let refusal = NoRoom {
        figures: Figures {
            limit: 100 * MIB,
            working_set: 85 * MIB,
            serving: 15 * MIB,
            margin: 8 * MIB,
        },
        cgroup: "/sys/fs/cgroup/memory/x".into(),
        what: "a new epoch",
    };
    assert_eq!(
        refusal.to_string(),
        "not enough memory to start a new epoch beside the serving epoch: 15.0 MiB free of \
         the 100.0 MiB limit (85.0 MiB in use), a new proxy needs about 23.0 MiB (the serving \
         epoch holds 15.0 MiB, plus a 8.0 MiB margin) (cgroup /sys/fs/cgroup/memory/x)"
    );
}

#[test]
fn a_serving_group_that_is_gone_has_no_memory_to_compare() {
    // No process has this pid, let alone leads a group.
    assert_eq!(group_memory(u32::MAX), None);
    let me = std::fs::read_to_string("/proc/self/stat").unwrap();
    let pgid = crate::sys::procfs::stat_pgrp(&me).unwrap();
    assert!(group_memory(pgid).unwrap() > 0);
}
