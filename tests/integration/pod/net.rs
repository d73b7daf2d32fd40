//! The pod network: a named network namespace (`ip netns`) joined to the test's own
//! by a veth pair, with a /30 whose two addresses exist only on that pair.
//!
//! **Invariant:** names and addresses come from one block number, and the kernel
//! refuses a second veth of the same name, so two pods (of this test run or of an
//! overlapping one) never share a namespace, an interface or an address. The pod
//! gets no default route: it can reach nothing but the host end of its pair.

use std::net::Ipv4Addr;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// /30 blocks in 10.200.0.0/13 (10.200.0.0 – 10.207.255.255).
const BLOCKS: u32 = 1 << 17;
/// Blocks each process may use before it walks into the next process's range.
const BLOCKS_PER_PROCESS: u32 = 32;

static NEXT: AtomicU32 = AtomicU32::new(0);

/// iproute2's `ip`: on PATH, or in the sbin directories a non-login PATH lacks.
pub fn ip_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join("ip"))
        .find(|ip| ip.is_file())
        .unwrap_or_else(|| PathBuf::from("ip"))
}

/// `ip ARGS`: Ok, or the error with what `ip` said.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new(ip_binary())
        .args(args)
        .output()
        .map_err(|e| format!("ip {args:?}: {e} (iproute2: scripts/install-test-deps)"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip_output(args: &[&str]) -> String {
    Command::new(ip_binary())
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// A pod's network namespace and veth pair; both deleted on drop.
#[derive(Debug)]
pub struct PodNetwork {
    /// The namespace's name (`ip netns list`).
    pub netns: String,
    /// The test side of the pair.
    pub host_if: String,
    /// The pod side of the pair (inside the namespace).
    pub pod_if: String,
    pub host_ip: Ipv4Addr,
    pub pod_ip: Ipv4Addr,
    /// The namespace's inode: processes in it link `/proc/PID/ns/net` to `net:[inode]`.
    pub inode: u64,
    removed: bool,
}

impl PodNetwork {
    /// A new namespace and pair, up and addressed.
    pub fn create() -> Self {
        let pid = std::process::id();
        let mut errors = Vec::new();
        for _ in 0..BLOCKS_PER_PROCESS {
            let n = NEXT.fetch_add(1, Ordering::SeqCst);
            let block = ((pid % (BLOCKS / BLOCKS_PER_PROCESS)) * BLOCKS_PER_PROCESS
                + n % BLOCKS_PER_PROCESS)
                % BLOCKS;
            match Self::try_block(block, &format!("baton-pod-{pid}-{n}")) {
                Ok(net) => return net,
                // Taken by another pod: the next block.
                Err(e) if e.contains("exists") || e.contains("in use") => errors.push(e),
                Err(e) => panic!(
                    "cannot build a pod network (the pod tests need root: network \
                     namespaces, veth pairs, mounts): {e}"
                ),
            }
        }
        panic!("no free pod network: {errors:#?}");
    }

    fn try_block(block: u32, netns: &str) -> Result<Self, String> {
        let base = u32::from(Ipv4Addr::new(10, 200, 0, 0)) + block * 4;
        let (host_ip, pod_ip) = (Ipv4Addr::from(base + 1), Ipv4Addr::from(base + 2));
        let host_if = format!("bp{block:05x}a");
        let pod_if = format!("bp{block:05x}b");
        // Claims the block: fails if another pod holds these names.
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", &pod_if,
        ])?;
        let mut net = PodNetwork {
            netns: netns.to_string(),
            host_if,
            pod_if,
            host_ip,
            pod_ip,
            inode: 0,
            removed: false,
        };
        let prefix = format!("{host_ip}/30");
        if !ip_output(&["-o", "-4", "addr", "show", "to", &prefix]).is_empty() {
            return Err(format!("{prefix} is already in use here"));
        }
        net.configure()?;
        Ok(net)
    }

    fn configure(&mut self) -> Result<(), String> {
        let (ns, host_if, pod_if) = (&self.netns, &self.host_if, &self.pod_if);
        let host_addr = format!("{}/30", self.host_ip);
        let pod_addr = format!("{}/30", self.pod_ip);
        ip(&["netns", "add", ns])?;
        self.inode = std::fs::metadata(format!("/run/netns/{ns}"))
            .map_err(|e| format!("/run/netns/{ns}: {e}"))?
            .ino();
        ip(&["link", "set", pod_if, "netns", ns])?;
        ip(&["addr", "add", &host_addr, "dev", host_if])?;
        ip(&["link", "set", host_if, "up"])?;
        ip(&["-n", ns, "addr", "add", &pod_addr, "dev", pod_if])?;
        ip(&["-n", ns, "link", "set", pod_if, "up"])?;
        ip(&["-n", ns, "link", "set", "lo", "up"])
    }

    /// Delete the pair (both ends at once) and the namespace; what could not be.
    pub fn remove(&mut self) -> Vec<String> {
        if self.removed {
            return Vec::new();
        }
        self.removed = true;
        let mut problems = Vec::new();
        // Deleting the host end takes the peer with it, synchronously (a namespace's
        // own teardown would free its devices only later, asynchronously).
        if self.exists_link() {
            if let Err(e) = ip(&["link", "del", &self.host_if]) {
                problems.push(e);
            }
        }
        if self.exists_netns() {
            if let Err(e) = ip(&["netns", "del", &self.netns]) {
                problems.push(e);
            }
        }
        problems
    }

    /// Whether `ip netns list` still shows the namespace.
    pub fn exists_netns(&self) -> bool {
        ip_output(&["netns", "list"])
            .lines()
            .any(|l| l.split_whitespace().next() == Some(self.netns.as_str()))
    }

    /// Whether `ip link` still shows the host end.
    pub fn exists_link(&self) -> bool {
        ip_output(&["-o", "link", "show"]).lines().any(|l| {
            l.split(':').nth(1).map(|n| n.trim().split('@').next()) == Some(Some(&self.host_if))
        })
    }
}

impl Drop for PodNetwork {
    fn drop(&mut self) {
        for problem in self.remove() {
            eprintln!("pod network cleanup: {problem}");
        }
    }
}
