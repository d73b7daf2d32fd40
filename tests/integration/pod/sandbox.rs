//! The pod: its sandbox, its containers, and the guard that removes all of it.
//!
//! As a container runtime lays a pod out:
//! - the **sandbox** ("pause") holds the pod's network namespace and a mount
//!   namespace with the pod's own `/dev/shm` (a tmpfs, as every pod gets one: Envoy's
//!   hot-restart segment lives there, and two pods never see each other's);
//! - each **container** joins them and runs as PID 1 of a PID namespace of its own
//!   (`unshare --pid --fork --mount-proc`): the app (an HTTP server on the pod's
//!   loopback, the proxy's upstream) and baton.
//!
//! **Invariant:** [`Pod`]'s `Drop` kills every process in the pod's network
//! namespace, deletes the veth pair and the namespace and removes the pod's files,
//! also when a test fails; [`Pod::teardown`] does the same and reports anything that
//! was left to clean (what the tests assert empty).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::net::PodNetwork;
use super::procs;
use super::{APP_PORT, START, STATUS_PORT};
use crate::harness::eventually;

/// What the pause process runs: mount the pod's `/dev/shm`, say so, then block on
/// stdin, so it also ends when the test process dies and the pipe closes.
const PAUSE: &str = "mount -t tmpfs -o size=64m,mode=1777 pod-shm /dev/shm && echo up && exec cat";

/// A container: a process as PID 1 of its own PID namespace, inside the pod.
pub struct Container {
    name: &'static str,
    unshare: Child,
    /// The host's pid of the container's PID 1.
    pub pid: i32,
    /// Its PID namespace's inode.
    pub pid_ns: u64,
    pub log: PathBuf,
    /// Its environment beyond the test's (an exec in it gets the same).
    env: Vec<(String, String)>,
    exit: Option<ExitStatus>,
}

impl Container {
    fn start(
        name: &'static str,
        sandbox: i32,
        command: &[String],
        env: &[(String, String)],
        log: PathBuf,
    ) -> Self {
        let file = std::fs::File::create(&log).expect("container log");
        let sandbox = sandbox.to_string();
        let unshare = Command::new("nsenter")
            .args(["-t", &sandbox, "-n", "-m", "--"])
            .args(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc"])
            .args(command)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("nsenter/unshare (util-linux)");
        let parent = unshare.id() as i32;
        let mut container = Container {
            name,
            unshare,
            pid: 0,
            pid_ns: 0,
            log,
            env: env.to_vec(),
            exit: None,
        };
        // unshare forks the container's PID 1 after creating the namespace.
        let (pid, pid_ns) = eventually(&format!("{name}: PID 1 started"), START, || {
            if let Some(status) = container.try_exit() {
                let log = std::fs::read_to_string(&container.log).unwrap_or_default();
                panic!("the {name} container exited at start ({status}):\n{log}");
            }
            let pid = *procs::children(parent).first()?;
            Some((pid, procs::ns_inode(pid, "pid")?))
        });
        assert_ne!(
            Some(pid_ns),
            procs::ns_inode(parent, "pid"),
            "{name}: no PID namespace"
        );
        container.pid = pid;
        container.pid_ns = pid_ns;
        container
    }

    /// Its exit status, once PID 1 has exited (unshare passes the code on).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.unshare.try_wait().ok().flatten();
        }
        self.exit
    }

    pub fn signal(&self, sig: Signal) {
        kill(Pid::from_raw(self.pid), sig)
            .unwrap_or_else(|e| panic!("{} (pid {}): {sig}: {e}", self.name, self.pid));
    }

    /// SIGKILL PID 1 and reap. The kernel kills the rest of the PID namespace, and
    /// PID 1 is gone (so unshare exits) only once all of it is.
    fn kill(&mut self) {
        if self.try_exit().is_some() {
            return;
        }
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.try_exit().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if self.exit.is_none() {
            let _ = self.unshare.kill();
            self.exit = self.unshare.wait().ok();
        }
    }

    /// Processes still in its PID namespace.
    pub fn processes(&self) -> Vec<i32> {
        procs::in_namespace("pid", self.pid_ns)
    }
}

/// The result of a command run inside the baton container's namespaces.
#[derive(Debug)]
pub struct Exec {
    /// Exit code (`None`: killed, or out of time).
    pub code: Option<i32>,
    pub output: String,
    pub took: Duration,
}

/// What baton left behind, found by [`Pod::teardown`].
#[derive(Debug, Default)]
pub struct Leftovers {
    /// Entries of the pod's `/dev/shm` once baton had exited.
    pub shm: Vec<String>,
    /// Everything else: processes, files in its TMPDIR, a namespace or veth that
    /// would not go, the pod's directory.
    pub other: Vec<String>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.shm.is_empty() && self.other.is_empty()
    }
}

/// A pod: network, sandbox, app and baton containers.
pub struct Pod {
    pub net: PodNetwork,
    dir: Option<tempfile::TempDir>,
    dir_path: PathBuf,
    sandbox: Option<Child>,
    sandbox_pid: i32,
    app: Option<Container>,
    baton: Option<Container>,
    torn_down: bool,
}

impl Pod {
    /// The network and the sandbox, no container yet.
    pub fn new() -> Self {
        let net = PodNetwork::create();
        let dir = tempfile::Builder::new()
            .prefix("baton-pod-")
            .tempdir()
            .expect("pod dir");
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        let mut sandbox = Command::new(super::net::ip_binary())
            .args(["netns", "exec", &net.netns])
            .args(["unshare", "--mount", "--propagation", "private"])
            .args(["sh", "-c", PAUSE])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("ip netns exec");
        let sandbox_pid = sandbox.id() as i32;
        let mut pod = Pod {
            dir_path: dir.path().to_path_buf(),
            net,
            dir: Some(dir),
            sandbox: None,
            sandbox_pid,
            app: None,
            baton: None,
            torn_down: false,
        };
        // The pause process ends (EOF) if the mount fails.
        let mut line = String::new();
        let stdout = sandbox.stdout.take().unwrap();
        let _ = BufReader::new(stdout).read_line(&mut line);
        pod.sandbox = Some(sandbox);
        assert_eq!(line.trim(), "up", "pod sandbox did not start");
        assert_eq!(
            procs::ns_inode(sandbox_pid, "net"),
            Some(pod.net.inode),
            "sandbox not in the pod network"
        );
        pod
    }

    /// `pod IP:port`, as seen from outside.
    pub fn addr(&self, port: u16) -> SocketAddr {
        SocketAddr::from((self.net.pod_ip, port))
    }

    /// baton's status server, as the kubelet reaches it.
    pub fn status_addr(&self) -> SocketAddr {
        self.addr(STATUS_PORT)
    }

    /// A path in the pod's own directory (on the host).
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir_path.join(name)
    }

    /// The app container: `tests/fixtures/pod_app.py` on `127.0.0.1:APP_PORT` inside
    /// the pod, up when this returns.
    pub fn start_app(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pod_app.py");
        let command = vec![
            "python3".to_string(),
            script.display().to_string(),
            format!("127.0.0.1:{APP_PORT}"),
        ];
        let log = self.path("app.log");
        self.app = Some(Container::start(
            "app",
            self.sandbox_pid,
            &command,
            &[],
            log.clone(),
        ));
        eventually("app container listening", START, || {
            std::fs::read_to_string(&log)
                .ok()?
                .contains("listening")
                .then_some(())
        });
    }

    /// Lines the app container logged (`slow start`: a slow request reached it).
    pub fn app_log(&self) -> String {
        std::fs::read_to_string(self.path("app.log")).unwrap_or_default()
    }

    /// The baton container: `baton --log-format json ARGS` as PID 1, with the
    /// downward-API variables a pod spec gives it and `extra_env`.
    pub fn start_baton(&mut self, args: &[String], extra_env: &[(&str, &str)]) {
        let mut command = vec![
            env!("CARGO_BIN_EXE_baton").to_string(),
            "--log-format".into(),
            "json".into(),
            "--log-level".into(),
            "debug".into(),
        ];
        command.extend(args.iter().cloned());
        let path = std::env::var("PATH").unwrap_or_default();
        let mut env: Vec<(String, String)> = vec![
            // The container's /tmp: baton's private files (config dir, sockets).
            ("TMPDIR".into(), self.path("tmp").display().to_string()),
            ("PATH".into(), format!("{path}:/usr/sbin:/sbin")),
            ("POD_NAME".into(), self.net.netns.clone()),
            ("POD_NAMESPACE".into(), "default".into()),
            ("INSTANCE_IP".into(), self.net.pod_ip.to_string()),
        ];
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string())),
        );
        let log = self.path("baton.log");
        self.baton = Some(Container::start(
            "baton",
            self.sandbox_pid,
            &command,
            &env,
            log,
        ));
    }

    pub fn baton(&mut self) -> &mut Container {
        self.baton.as_mut().expect("baton container started")
    }

    /// Run `command` inside the baton container's namespaces (network, PID, mount),
    /// with the container's environment, as the kubelet runs an exec hook; killed
    /// after `timeout`.
    pub fn exec(&mut self, command: &[String], timeout: Duration) -> Exec {
        let baton = self.baton();
        let target = baton.pid.to_string();
        let env = baton.env.clone();
        let started = Instant::now();
        let mut child = Command::new("nsenter")
            .args(["-t", &target, "-n", "-p", "-m", "--"])
            .args(command)
            .envs(env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("nsenter");
        let deadline = started + timeout;
        let code = loop {
            if let Some(status) = child.try_wait().expect("wait exec") {
                break status.code();
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let took = started.elapsed();
        let out = child.wait_with_output().map(|o| {
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        });
        Exec {
            code,
            output: out.unwrap_or_default(),
            took,
        }
    }

    /// Entries of the pod's `/dev/shm`, seen through the sandbox.
    pub fn shm(&self) -> Vec<String> {
        std::fs::read_dir(format!("/proc/{}/root/dev/shm", self.sandbox_pid))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_else(|e| vec![format!("(pod /dev/shm unreadable: {e})")])
    }

    /// Stop everything and report what had to be cleaned up after baton: processes
    /// left in its PID namespace or the pod's network, `/dev/shm` entries, files in
    /// its TMPDIR, a namespace or veth that would not go, a directory not removed.
    /// Empty when baton left nothing behind.
    pub fn teardown(mut self) -> Leftovers {
        self.cleanup()
    }

    fn cleanup(&mut self) -> Leftovers {
        let mut found = Leftovers::default();
        if self.torn_down {
            return found;
        }
        self.torn_down = true;
        let left = &mut found.other;
        if let Some(mut baton) = self.baton.take() {
            if baton.try_exit().is_none() {
                left.push("baton still running at teardown".into());
                baton.kill();
            }
            let procs = baton.processes();
            if !procs.is_empty() {
                left.push(format!(
                    "processes left in baton's PID namespace: {procs:?}"
                ));
                procs::kill_namespace("pid", baton.pid_ns, Duration::from_secs(5));
            }
            found.shm = self.shm();
            let tmp: Vec<_> = std::fs::read_dir(self.path("tmp"))
                .map(|d| {
                    d.flatten()
                        .map(|e| e.path().display().to_string())
                        .collect()
                })
                .unwrap_or_default();
            if !tmp.is_empty() {
                left.push(format!("left in baton's TMPDIR: {tmp:?}"));
            }
        }
        // The app and the sandbox are the harness's own: the kubelet removes them.
        if let Some(mut app) = self.app.take() {
            app.kill();
        }
        if let Some(mut sandbox) = self.sandbox.take() {
            drop(sandbox.stdin.take());
            let _ = sandbox.kill();
            let _ = sandbox.wait();
        }
        let stray = procs::in_namespace("net", self.net.inode);
        if !stray.is_empty() {
            left.push(format!("processes left in the pod network: {stray:?}"));
            let undying = procs::kill_namespace("net", self.net.inode, Duration::from_secs(5));
            if !undying.is_empty() {
                left.push(format!("processes that would not die: {undying:?}"));
            }
        }
        left.extend(self.net.remove());
        if self.net.exists_netns() {
            left.push(format!("network namespace {} still listed", self.net.netns));
        }
        if self.net.exists_link() {
            left.push(format!("veth {} still there", self.net.host_if));
        }
        if let Some(dir) = self.dir.take() {
            if let Err(e) = dir.close() {
                left.push(format!("{}: {e}", self.dir_path.display()));
            }
        }
        if self.dir_path.exists() {
            left.push(format!("{} still there", self.dir_path.display()));
        }
        found
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.torn_down {
            for (name, file) in [("baton", "baton.log"), ("app", "app.log")] {
                let text = std::fs::read_to_string(self.path(file)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("--- last lines of the {name} container's log ---");
                for line in &lines[lines.len().saturating_sub(40)..] {
                    eprintln!("{line}");
                }
            }
        }
        let left = self.cleanup();
        if !left.is_empty() {
            eprintln!("pod cleanup: {left:#?}");
        }
    }
}
