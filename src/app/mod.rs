//! Wiring: settings in, a running supervisor (or a rendered bootstrap) out.
//!
//! The flow, top-down, for both drivers:
//! 1. **settings** (plain data from [`crate::config`]);
//! 2. **resources**, acquired once ([`Resources`]): the runtime's reaper, signal
//!    handlers, the stats segment and baton's metrics in it, the status server's
//!    socket; plus each driver's own (the listener set, the metrics receiver);
//! 3. **the driver**, built once and complete from both;
//! 4. **the loop** ([`supervise`]): every event goes through the pure
//!    [`crate::supervisor::step`]; the [`Shell`] carries out the actions; the status
//!    server's snapshot is derived from the core's state after every event.

mod commands;
mod metrics;
mod output;
mod render;
mod reports;
mod resources;
mod shell;
mod triggers;

pub use render::render;

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::config::{EnvoySettings, RunSettings, Supervision};
use crate::exit;
use crate::handoff::ListenerSet;
use crate::proxy::envoy::counters::EnvoyCounters;
use crate::proxy::envoy::{self, metrics_service, EnvoyProxy};
use crate::proxy::generic::GenericProxy;
use crate::proxy::Proxy;
use crate::ready::ReadySpec;
use crate::status::{self, Snapshot, StatusState};
use crate::supervisor::{step, Event, State};

use resources::Resources;
use shell::{Clock, Shell};

/// Supervise Envoy until shutdown; returns baton's exit code.
pub fn run_envoy(settings: EnvoySettings) -> anyhow::Result<i32> {
    let EnvoySettings {
        driver,
        supervision,
        owned_config_dir,
        notes,
    } = settings;
    for note in notes {
        tracing::info!("{note}");
    }
    std::fs::create_dir_all(&driver.config_dir)
        .with_context(|| format!("creating --config-dir {}", driver.config_dir.display()))?;
    let config_dir = driver.config_dir.clone();
    // A baton killed before it could clean up left its files and Envoy's segments.
    envoy::leftovers::sweep_and_log(&config_dir, "starting");
    let code = in_runtime(async move {
        let resources = Resources::acquire(&supervision).await?;
        let receiver = metrics_service::Receiver::bind()
            .context("binding the metrics receiver for Envoy's counters")?;
        let version = match envoy::hot_restart_version(&resources.reaper, &driver.binary).await {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read envoy's hot restart version");
                None
            }
        };
        tracing::info!(
            envoy = %driver.binary.display(),
            config_dir = %driver.config_dir.display(),
            admin = %driver.admin,
            concurrency = driver.options.concurrency,
            hot_restart_version = version.as_deref().unwrap_or("unknown"),
            "baton supervising envoy"
        );
        let port = receiver.port();
        let counters = Arc::new(EnvoyCounters::new());
        receiver
            .spawn(counters.clone())
            .context("starting the metrics receiver")?;
        // A YAML static bootstrap gets no sink: its counters are Envoy's own.
        let carried = driver.bootstrap.is_json().then_some(counters);
        let proxy = EnvoyProxy::new(driver, resources.reaper.clone(), port, version);
        supervise(proxy, resources, supervision, carried).await
    });
    // The runtime is gone, every task with it: a preflight that was still writing
    // when the shutdown came has written its last file.
    envoy::leftovers::sweep_and_log(&config_dir, "exiting");
    if let Some(dir) = owned_config_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    code
}

/// Supervise any proxy on sockets baton holds until shutdown; returns the exit code.
pub fn run_generic(settings: RunSettings) -> anyhow::Result<i32> {
    let RunSettings {
        driver,
        supervision,
    } = settings;
    let runtime_dir = driver.runtime_dir.clone();
    // Only notify sockets live there.
    if driver.ready == ReadySpec::Notify {
        std::fs::create_dir_all(&runtime_dir)
            .with_context(|| format!("creating {}", runtime_dir.display()))?;
    }
    let code = ListenerSet::bind(&driver.listen)
        .context("--listen: cannot bind")
        .and_then(|listeners| {
            for l in listeners.listeners() {
                tracing::info!(listener = %l.spec().name, address = %l.local_addr(), "holding listener");
            }
            tracing::info!(command = ?driver.command, ready = %driver.ready, "baton supervising");
            in_runtime(async move {
                let resources = Resources::acquire(&supervision).await?;
                let proxy = GenericProxy::new(
                    driver,
                    listeners,
                    resources.reaper.clone(),
                    resources.stats.clone(),
                );
                supervise(proxy, resources, supervision, None).await
            })
        });
    let _ = std::fs::remove_dir_all(runtime_dir);
    code
}

/// Run `work` on the runtime baton supervises from: one thread, the main one (see
/// the spawning invariant in `shell`).
fn in_runtime(work: impl std::future::Future<Output = anyhow::Result<i32>>) -> anyhow::Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(work)
}

/// The supervisor loop: feed every event through `step`, carry out the actions,
/// publish what the status server shows; until an `Exit` action. `envoy_counters`:
/// Envoy's counters carried across epochs, for the scrape.
async fn supervise<P: Proxy>(
    proxy: P,
    resources: Resources,
    supervision: Supervision,
    envoy_counters: Option<Arc<EnvoyCounters>>,
) -> anyhow::Result<i32> {
    let Resources {
        reaper,
        stats,
        metrics,
        events,
        mut inbox,
        status_listener,
    } = resources;
    let clock = Clock::start();
    let mut state = State::new(supervision.policy.clone());
    let info = status::Static {
        driver: proxy.kind(),
        envoy_admin: proxy.admin_addr(),
        started_at: clock.started_at(),
        certs_in_place: supervision.certs_in_place,
    };
    let (snapshots, snapshot_rx) = watch::channel(Snapshot::of(&state, &info));
    let (commands_tx, mut commands) = mpsc::unbounded_channel();
    let _server = status_listener.map(|listener| {
        let mut state = StatusState::new(snapshot_rx, commands_tx).with_segment(stats.clone());
        if let Some(counters) = envoy_counters {
            state = state.with_envoy_counters(counters);
        }
        tokio::spawn(async move {
            if let Err(e) = status::serve(listener, state).await {
                tracing::error!(error = %e, "status server stopped");
            }
        })
    });
    if let Err(e) = triggers::wait_for_files(&supervision).await {
        tracing::error!("{e}");
        return Ok(exit::CONFIG);
    }
    let memory = if supervision.memory_check {
        crate::memory::MemoryCheck::detect()
    } else {
        tracing::info!("memory check off (--memory-check off)");
        None
    };
    let mut shell = Shell::new(proxy, reaper, events.clone(), memory);
    let _watcher = triggers::watch_files(&supervision, events.clone(), shell.warmer())?;

    let _ = events.send(Event::Start);
    loop {
        let (event, reply) = tokio::select! {
            Some(event) = inbox.recv() => (event, None),
            Some(command) = commands.recv() => commands::event_of(command),
        };
        tracing::trace!(?event, "event");
        let actions = step(&mut state, clock.now(), event);
        if let Some(reply) = reply {
            reply.send(&actions, &state);
        }
        for action in actions {
            if let Some(code) = shell.execute(action) {
                tracing::info!(code, "baton exiting");
                return Ok(code);
            }
        }
        metrics.publish(&state);
        snapshots.send_replace(Snapshot::of(&state, &info));
    }
}
