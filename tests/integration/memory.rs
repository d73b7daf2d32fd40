//! Memory headroom under a real memory cgroup: the test moves baton (and so every
//! process it starts) into a child of its own cgroup v1 memory controller, lets
//! epoch 0 serve, then lowers the limit until one Envoy fits and two do not.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::{json, Value};

use super::harness::*;
use super::load::Load;

const START: Duration = Duration::from_secs(30);

/// A memory cgroup of its own below the test's, removed on drop (its processes
/// killed first).
pub struct MemoryCgroup {
    dir: PathBuf,
}

impl MemoryCgroup {
    /// A new child of this process's cgroup v1 memory controller.
    pub fn create() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
        let path = own
            .lines()
            .find_map(|l| {
                let mut parts = l.splitn(3, ':');
                let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
                controllers
                    .split(',')
                    .any(|c| c == "memory")
                    .then_some(path)
            })
            .expect("these tests need a cgroup v1 memory controller (see /proc/self/cgroup)");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let (root, point) = mountinfo
            .lines()
            .find_map(|l| {
                let (head, tail) = l.split_once(" - ")?;
                let head: Vec<&str> = head.split(' ').collect();
                let tail: Vec<&str> = tail.split(' ').collect();
                (tail.first() == Some(&"cgroup") && tail.get(2)?.split(',').any(|o| o == "memory"))
                    .then(|| (head[3].to_string(), head[4].to_string()))
            })
            .expect("the memory controller is mounted");
        let relative = Path::new(path).strip_prefix(&root).unwrap();
        let dir = Path::new(&point).join(relative).join(format!(
            "baton-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir(&dir)
            .unwrap_or_else(|e| panic!("creating memory cgroup {}: {e}", dir.display()));
        MemoryCgroup { dir }
    }

    /// Make `cmd` move itself into this cgroup before it execs, so everything it
    /// starts is charged here from its first page.
    pub fn enter_on_exec(&self, cmd: &mut Command) {
        let procs = std::fs::OpenOptions::new()
            .write(true)
            .open(self.dir.join("cgroup.procs"))
            .expect("cgroup.procs");
        // SAFETY: between fork and exec only write(2) runs, on an fd opened before.
        unsafe {
            cmd.pre_exec(move || (&procs).write_all(b"0"));
        }
    }

    fn read(&self, file: &str) -> String {
        std::fs::read_to_string(self.dir.join(file)).unwrap()
    }

    fn stat(&self, key: &str) -> u64 {
        self.read("memory.stat")
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or(0)
    }

    /// Usage less inactive page cache, as baton computes it.
    pub fn working_set(&self) -> u64 {
        let usage: u64 = self.read("memory.usage_in_bytes").trim().parse().unwrap();
        usage.saturating_sub(self.stat("total_inactive_file"))
    }

    /// `None` lifts the limit.
    pub fn set_limit(&self, bytes: Option<u64>) {
        let value = bytes.map_or("-1".to_string(), |b| b.to_string());
        std::fs::write(self.dir.join("memory.limit_in_bytes"), value).unwrap();
    }

    /// Processes the kernel's OOM killer killed in this cgroup.
    pub fn oom_kills(&self) -> u64 {
        self.read("memory.oom_control")
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill ")?.parse().ok())
            .unwrap_or(0)
    }

    fn procs(&self) -> Vec<i32> {
        self.read("cgroup.procs")
            .lines()
            .filter_map(|l| l.parse().ok())
            .collect()
    }
}

impl Drop for MemoryCgroup {
    fn drop(&mut self) {
        // Only processes this test started are in here (baton and its children).
        for pid in self.procs() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::fs::remove_dir(&self.dir).is_err() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Resident anonymous memory of a process, in bytes.
fn rss_anon(pid: u64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| {
            let kb: u64 = l
                .strip_prefix("RssAnon:")?
                .trim()
                .strip_suffix(" kB")?
                .trim()
                .parse()
                .ok()?;
            Some(kb * 1024)
        })
        .unwrap()
}

fn oom_score_adj(pid: u64) -> Option<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/oom_score_adj"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Baton started inside `cg`, on the standalone template.
fn start_in(cg: &MemoryCgroup, extra: &[&str]) -> (Baton, Upstream, u16) {
    let setup = EnvoySetup::new();
    let ports = Ports::choose();
    let args = setup.args(&ports, "standalone", extra);
    let EnvoySetup { upstream, dir } = setup;
    let mut baton = Baton::launch_prepared(dir, &args, &[], |cmd| cg.enter_on_exec(cmd));
    baton.status_port = ports.status;
    (baton, upstream, ports.listen)
}

fn epochs(status_port: u16) -> Value {
    let (_, body) = http(status_port, "GET", "/epochs").unwrap();
    serde_json::from_str(&body).unwrap()
}

/// The config dir holds no bootstrap, temp or base-id file.
fn assert_config_dir_clean(dir: &Path) {
    let left: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(left.is_empty(), "left in {}: {left:?}", dir.display());
}

#[test]
fn a_restart_that_does_not_fit_the_memory_limit_is_refused_and_no_request_fails() {
    let cg = MemoryCgroup::create();
    let (mut baton, _upstream, port) = start_in(&cg, &[]);
    let serving = baton.wait_serving(0, START);
    let pid = serving["pid"].as_u64().unwrap();
    let load = Load::start(port, 4, 1_000_000, Duration::from_secs(120));
    eventually("load to flow", START, || (load.ok() > 500).then_some(()));

    // One Envoy fits (it runs), a second does not: half of one more.
    let envoy = rss_anon(pid);
    let limit = (cg.working_set() + envoy / 2) / 4096 * 4096;
    cg.set_limit(Some(limit));
    baton.signal(Signal::SIGHUP);
    let refused = baton.wait_refused(&[("epoch", json!(1)), ("reason", json!("memory"))], START);
    let figures = baton
        .find("memory check refused the restart", &[])
        .expect("the refusal's figures");
    let before = load.ok();
    eventually("requests after the refusal", START, || {
        (load.ok() > before + 3000).then_some(())
    });
    let tally = load.stop();

    let message = refused["message"].as_str().unwrap();
    eprintln!(
        "memory cgroup limit {limit} bytes (serving Envoy RssAnon {envoy}); baton logged {figures}; \
         load: {} ok, {} failed",
        tally.ok, tally.errors
    );
    assert!(message.contains("not enough memory to start"), "{message}");
    assert!(
        message.contains(&format!("{:.1} MiB limit", limit as f64 / 1048576.0)),
        "{message}"
    );
    assert_eq!(figures["limit_bytes"], json!(limit));
    assert!(figures["needed_bytes"].as_u64().unwrap() > figures["serving_bytes"].as_u64().unwrap());
    assert_eq!(tally.errors, 0, "failed requests: {:?}", tally.samples);
    assert_eq!(cg.oom_kills(), 0, "the kernel killed something");
    assert!(alive(pid as i32), "the serving epoch died");
    assert!(baton
        .find("epoch started", &[("epoch", json!(1))])
        .is_none());
    let report = epochs(baton.status_port);
    assert_eq!(report["restart_failures"]["memory"], json!(1), "{report}");
    assert!(
        report["last_error"]
            .as_str()
            .unwrap()
            .contains("not enough memory"),
        "{report}"
    );
    assert_eq!(report["epochs"][0]["state"], json!("serving"));
    let (_, metrics) = http(baton.status_port, "GET", "/stats/prometheus").unwrap();
    assert!(
        metrics.contains("baton_restart_failures_total{reason=\"memory\"} 1"),
        "{metrics}"
    );

    // The next trigger tries again; with room, it goes through.
    cg.set_limit(None);
    baton.signal(Signal::SIGHUP);
    baton.wait_serving(1, START);
    let segments = segments_of(&baton.config_dir());
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
    assert_config_dir_clean(&baton.config_dir());
    for s in segments {
        assert!(!s.exists(), "{} left", s.display());
    }
    assert_eq!(baton.leftovers(), Vec::<i32>::new());
}

#[test]
fn a_newcomer_is_the_oom_killer_s_first_choice_and_the_serving_epoch_is_not() {
    let cg = MemoryCgroup::create();
    let (mut baton, _upstream, _port) = start_in(&cg, &["--memory-check", "off"]);
    let serving = baton.wait_serving(0, START)["pid"].as_u64().unwrap();
    let own = oom_score_adj(baton.pid() as u64).unwrap();
    assert_eq!(oom_score_adj(serving), Some(own), "serving: baton's score");
    baton.signal(Signal::SIGHUP);
    // The validator, then the new epoch, each while it is not serving.
    let newcomer = eventually("a newcomer below baton", START, || {
        descendants(baton.pid())
            .into_iter()
            .map(|p| p as u64)
            .find(|p| *p != serving && oom_score_adj(*p).is_some())
    });
    assert_eq!(oom_score_adj(newcomer), Some(1000), "newcomer {newcomer}");
    let next = baton.wait_serving(1, START)["pid"].as_u64().unwrap();
    assert_eq!(oom_score_adj(next), Some(own), "serving now: baton's score");
    baton.signal(Signal::SIGTERM);
    assert_eq!(baton.wait_exit(START), Some(0));
}

/// The hot-restart segments the base-id files of `dir` name.
pub fn segments_of(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("base-id."))
        .filter_map(|e| {
            std::fs::read_to_string(e.path())
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map(|id| PathBuf::from(format!("/dev/shm/envoy_shared_memory_{}", id * 10)))
        .collect()
}
