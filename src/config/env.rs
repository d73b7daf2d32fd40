//! The pod's environment, read through [`Env`] so tests never touch the real one,
//! and what baton derives from it (Istio's node id, private directories). The CPUs
//! the container may use are part of it (Envoy's default `--concurrency`).

use std::path::{Path, PathBuf};

use crate::cli::BootstrapArgs;
use crate::sys::cgroup_cpu::{self, Cpus};

/// Pod identity variables, as Kubernetes' downward API sets them for Istio.
pub const ENV_INSTANCE_IP: &str = "INSTANCE_IP";
/// See [`ENV_INSTANCE_IP`].
pub const ENV_POD_NAME: &str = "POD_NAME";
/// See [`ENV_INSTANCE_IP`].
pub const ENV_POD_NAMESPACE: &str = "POD_NAMESPACE";

/// Used when the pod variables are missing (outside Kubernetes).
pub const DEFAULT_INSTANCE_IP: &str = "127.0.0.1";
/// See [`DEFAULT_INSTANCE_IP`].
pub const DEFAULT_POD_NAMESPACE: &str = "default";

/// Read access to the environment.
pub trait Env {
    /// One variable, `None` when unset or not UTF-8.
    fn var(&self, name: &str) -> Option<String>;
    /// All variables.
    fn vars(&self) -> Vec<(String, String)>;
    /// The CPUs this process may use: its cgroup's limit and its cores.
    fn cpus(&self) -> Cpus;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn vars(&self) -> Vec<(String, String)> {
        std::env::vars().collect()
    }
    fn cpus(&self) -> Cpus {
        cgroup_cpu::cpus()
    }
}

/// A fixed environment, for tests: variables, and 2 cores without a CPU limit
/// unless [`MapEnv::with_cpus`] says otherwise.
#[cfg(test)]
#[derive(Debug, Clone)]
pub struct MapEnv {
    vars: std::collections::BTreeMap<String, String>,
    cpus: Cpus,
}

#[cfg(test)]
impl Default for MapEnv {
    fn default() -> Self {
        MapEnv::of(&[])
    }
}

#[cfg(test)]
impl MapEnv {
    /// An environment of these pairs.
    pub fn of(pairs: &[(&str, &str)]) -> Self {
        MapEnv {
            vars: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cpus: Cpus {
                limit: None,
                cores: 2,
            },
        }
    }

    /// The same environment on these CPUs.
    pub fn with_cpus(self, cpus: Cpus) -> Self {
        MapEnv { cpus, ..self }
    }
}

#[cfg(test)]
impl Env for MapEnv {
    fn var(&self, name: &str) -> Option<String> {
        self.vars.get(name).cloned()
    }
    fn vars(&self) -> Vec<(String, String)> {
        self.vars
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
    fn cpus(&self) -> Cpus {
        self.cpus.clone()
    }
}

/// `--service-node`, or Istio's sidecar node id from the pod's environment.
pub fn service_node(args: &BootstrapArgs, env: &dyn Env) -> String {
    if let Some(node) = &args.service_node {
        return node.clone();
    }
    let ip = env
        .var(ENV_INSTANCE_IP)
        .unwrap_or_else(|| DEFAULT_INSTANCE_IP.into());
    let ns = env
        .var(ENV_POD_NAMESPACE)
        .unwrap_or_else(|| DEFAULT_POD_NAMESPACE.into());
    let pod = env
        .var(ENV_POD_NAME)
        .or_else(|| env.var("HOSTNAME"))
        .unwrap_or_else(|| "baton".into());
    format!("sidecar~{ip}~{pod}.{ns}~{ns}.svc.cluster.local")
}

/// A private path per baton process under `$TMPDIR`, so two batons on one host
/// never share a file: `baton-<pid><suffix>`.
pub(super) fn private_tmp(env: &dyn Env, suffix: &str) -> PathBuf {
    let tmp = env.var("TMPDIR").unwrap_or_else(|| "/tmp".into());
    Path::new(&tmp).join(format!("baton-{}{suffix}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn service_node_follows_istio_from_the_pod_environment() {
        let Command::Envoy(args) = Cli::try_parse_from(["baton", "envoy"]).unwrap().command else {
            panic!("not envoy")
        };
        let e = MapEnv::of(&[
            ("INSTANCE_IP", "10.1.2.3"),
            ("POD_NAME", "web-1"),
            ("POD_NAMESPACE", "shop"),
        ]);
        assert_eq!(
            service_node(&args.bootstrap, &e),
            "sidecar~10.1.2.3~web-1.shop~shop.svc.cluster.local"
        );
    }
}
