//! [`EnvoyProxy`]: the Envoy driver behind the [`Proxy`] trait, with the state that
//! outlives one epoch (chains, the binary's hot restart version).

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::chains::Chains;
use super::{statsd, EnvoyDriver, StatsSink};
use crate::proxy::{check_certs, file_digest, PreflightError, Prepared, Proxy};
use crate::stats::{Counter, Segment};
use crate::supervisor::{DriverKind, Launch};
use crate::sys::envoy_shm::KNOWN_HOT_RESTART_VERSION;
use crate::sys::Reaper;

/// The Envoy driver and its chains.
pub struct EnvoyProxy {
    driver: EnvoyDriver,
    chains: Mutex<Chains>,
    hot_restart_version: Mutex<Option<String>>,
    statsd: Mutex<Option<TcpListener>>,
}

impl EnvoyProxy {
    /// A driver whose first chain uses `base_id` when given; every epoch sends its
    /// counters to a TCP port bound here every `flush`.
    pub fn new(
        mut driver: EnvoyDriver,
        base_id: Option<u64>,
        flush: Duration,
    ) -> std::io::Result<Self> {
        let statsd = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        driver.stats_sink = Some(StatsSink {
            port: statsd.local_addr()?.port(),
            flush,
        });
        let chains = Chains::new(&driver.config_dir, base_id);
        Ok(EnvoyProxy {
            driver,
            chains: Mutex::new(chains),
            hot_restart_version: Mutex::new(None),
            statsd: Mutex::new(Some(statsd)),
        })
    }

    /// The settings.
    pub fn driver(&self) -> &EnvoyDriver {
        &self.driver
    }

    fn chains(&self) -> MutexGuard<'_, Chains> {
        self.chains.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Proxy for EnvoyProxy {
    fn kind(&self) -> DriverKind {
        DriverKind::Envoy
    }

    async fn start(&self, reaper: &Reaper, stats: &Arc<Segment>) -> Result<(), String> {
        let socket = self.statsd.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(socket) = socket {
            statsd::spawn_receiver(socket, carry_into(stats.clone()))
                .map_err(|e| format!("statsd receiver: {e}"))?;
        }
        match self.driver.hot_restart_version(reaper).await {
            Ok(v) => {
                tracing::debug!(version = %v, "envoy hot restart version");
                *self
                    .hot_restart_version
                    .lock()
                    .unwrap_or_else(|e| e.into_inner()) = Some(v);
            }
            Err(e) => tracing::warn!(error = %e, "cannot read envoy's hot restart version"),
        }
        Ok(())
    }

    async fn preflight(&self, reaper: &Reaper, epoch: u32) -> Result<Prepared, PreflightError> {
        let notes = check_certs(&self.driver.certs)?;
        let path = self.driver.preflight(reaper, epoch).await?;
        Ok(Prepared {
            config_digest: file_digest(&path),
            notes,
        })
    }

    fn command(&self, launch: &Launch) -> Result<Command, String> {
        let base_id = self.chains().args_for(launch.chain, launch.restart_epoch)?;
        Ok(self.driver.command(launch, &base_id))
    }

    async fn wait_ready(&self, launch: &Launch, _pid: u32) -> Result<(), String> {
        self.driver
            .wait_ready(launch.epoch, launch.restart_epoch)
            .await
    }

    fn drain(&self, epoch: u32, pid: u32) {
        // Envoy drains its parent itself; the state machine never asks for this.
        tracing::debug!(epoch, pid, "drain request ignored by the envoy driver");
    }

    async fn drain_for_shutdown(&self, epoch: u32, _pid: u32) {
        if let Err(e) = self.driver.admin().drain_listeners_gracefully().await {
            tracing::warn!(epoch, error = %e, "could not drain listeners");
        }
    }

    fn cleanup(&self, epoch: u32) {
        self.driver.remove_bootstrap(epoch);
    }

    fn repair_chain(&self, chain: u32) -> Result<(), String> {
        let version = self
            .hot_restart_version
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match version.as_deref() {
            Some(KNOWN_HOT_RESTART_VERSION) => self.chains().repair(chain),
            Some(v) => Err(format!(
                "hot restart version {v} is not the known {KNOWN_HOT_RESTART_VERSION}"
            )),
            None => Err("hot restart version unknown".into()),
        }
    }

    fn release_chain(&self, chain: u32) {
        self.chains().release(chain);
    }

    fn admin_addr(&self) -> Option<SocketAddr> {
        Some(self.driver.admin)
    }
}

/// Add each counter delta to the segment counter of the same name, resolving each
/// name once.
fn carry_into(stats: Arc<Segment>) -> statsd::DeltaSink {
    let handles: Mutex<HashMap<String, Counter>> = Mutex::new(HashMap::new());
    Arc::new(move |name: &str, delta: u64| {
        let mut handles = handles.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(counter) = handles.get(name) {
            return counter.add(delta);
        }
        match stats.counter(name) {
            Ok(counter) => {
                counter.add(delta);
                handles.insert(name.to_string(), counter);
            }
            Err(e) => tracing::debug!(name, error = %e, "envoy counter not carried"),
        }
    })
}
