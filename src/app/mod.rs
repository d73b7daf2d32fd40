//! Wiring: settings in, a running supervisor (or a rendered bootstrap) out.
//!
//! The loop, top-down: wait for the watched files, start the status server and the
//! watcher, then feed every event (signals, child exits, timers, file changes,
//! status-server commands) through `step` and let the shell act on the result.

mod metrics;
mod render;
mod shell;
mod triggers;

pub use render::render;

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::{mpsc, watch};

use crate::config::{EnvoySettings, RunSettings, Supervision};
use crate::proxy::envoy::EnvoyProxy;
use crate::proxy::Proxy;
use crate::stats::Segment;
use crate::status::{self, Command, RestartReply, StatusState};
use crate::supervisor::{step, Action, Event, Report, State, Trigger};
use crate::sys::{self, Reaper};

use metrics::BatonMetrics;
use shell::Shell;

/// Supervise Envoy until shutdown; returns baton's exit code.
pub fn run_envoy(settings: EnvoySettings) -> anyhow::Result<i32> {
    let owned_dir = settings.owned_config_dir.clone();
    let config_dir = settings.driver.config_dir.clone();
    let supervision = settings.supervision.clone();
    let code = run(supervision, move || {
        std::fs::create_dir_all(&config_dir)
            .with_context(|| format!("creating --config-dir {}", config_dir.display()))?;
        tracing::info!(
            envoy = %settings.driver.binary.display(),
            config_dir = %config_dir.display(),
            admin = %settings.driver.admin,
            "baton supervising envoy"
        );
        EnvoyProxy::new(
            settings.driver,
            settings.base_id,
            settings.stats_flush_interval,
        )
        .context("binding the statsd receiver for Envoy's counters")
    });
    if let Some(dir) = owned_dir {
        let _ = std::fs::remove_dir_all(dir);
    }
    code
}

/// Supervise any proxy on sockets baton holds until shutdown; returns the exit code.
pub fn run_generic(settings: RunSettings) -> anyhow::Result<i32> {
    let runtime_dir = settings.proxy.runtime_dir.clone();
    // Only notify sockets live there.
    if settings.proxy.ready == crate::ready::ReadySpec::Notify {
        std::fs::create_dir_all(&runtime_dir)
            .with_context(|| format!("creating {}", runtime_dir.display()))?;
    }
    for listener in settings.proxy.listeners.listeners() {
        tracing::info!(listener = %listener.spec().name, address = %listener.local_addr(), "holding listener");
    }
    tracing::info!(command = ?settings.proxy.command, ready = %settings.proxy.ready, "baton supervising");
    let code = run(settings.supervision, move || Ok(settings.proxy));
    let _ = std::fs::remove_dir_all(runtime_dir);
    code
}

/// Run the supervisor loop for the proxy `make` builds (inside the runtime).
fn run<P: Proxy>(
    supervision: Supervision,
    make: impl FnOnce() -> anyhow::Result<P>,
) -> anyhow::Result<i32> {
    if let Err(e) = sys::become_subreaper() {
        tracing::warn!(error = %e, "cannot become a child subreaper; orphans will not be reaped here");
    }
    // One thread: see the PDEATHSIG invariant in `shell`.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let proxy = make()?;
        supervise(proxy, supervision).await
    })
}

async fn supervise<P: Proxy>(proxy: P, supervision: Supervision) -> anyhow::Result<i32> {
    let (events, mut inbox) = mpsc::unbounded_channel();
    let reaper = Reaper::new();
    reaper.start().context("listening for SIGCHLD")?;
    sys::signals::forward_to(events.clone()).context("installing signal handlers")?;

    let stats =
        Arc::new(Segment::create(supervision.stats_slots).context("creating the stats segment")?);
    let metrics =
        BatonMetrics::new(&stats).context("claiming baton's metrics in the stats segment")?;
    let mut state = State::new(supervision.policy.clone());
    let mut shell = Shell::new(proxy, reaper, events.clone(), metrics);
    let (snapshots, snapshot_rx) = watch::channel(shell.snapshot(&state));
    let (commands_tx, mut commands) = mpsc::unbounded_channel();
    let _server = match supervision.status_addr {
        Some(addr) => {
            let state = StatusState::new(snapshot_rx, commands_tx).with_segment(stats.clone());
            Some(start_status_server(addr, state).await?)
        }
        None => None,
    };
    if let Err(e) = triggers::wait_for_files(&supervision).await {
        tracing::error!("{e}");
        return Ok(crate::supervisor::state::EXIT_CONFIG);
    }
    let _watcher = triggers::watch_files(&supervision, events.clone())?;
    if let Err(e) = shell.start(&stats).await {
        anyhow::bail!("starting the driver: {e}");
    }

    let _ = events.send(Event::Start);
    loop {
        let (event, reply) = tokio::select! {
            Some(event) = inbox.recv() => (event, None),
            Some(command) = commands.recv() => command_event(command),
        };
        tracing::trace!(?event, "event");
        shell.note_event(&event);
        let actions = step(&mut state, event);
        if let Some(reply) = reply {
            reply.send(&actions, &state);
        }
        for action in actions {
            if let Some(code) = shell.execute(action) {
                tracing::info!(code, "baton exiting");
                return Ok(code);
            }
        }
        shell.update_gauges(&state);
        snapshots.send_replace(shell.snapshot(&state));
    }
}

async fn start_status_server(
    addr: SocketAddr,
    state: StatusState,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("--status-addr {addr}: cannot listen"))?;
    tracing::info!(%addr, "status server listening");
    Ok(tokio::spawn(async move {
        if let Err(e) = status::serve(listener, state).await {
            tracing::error!(error = %e, "status server stopped");
        }
    }))
}

/// Where the answer to a status-server command goes once `step` has decided.
enum Reply {
    Restart(tokio::sync::oneshot::Sender<RestartReply>),
    Drain(tokio::sync::oneshot::Sender<String>),
    Quit(tokio::sync::oneshot::Sender<String>),
}

fn command_event(command: Command) -> (Event, Option<Reply>) {
    match command {
        Command::Restart { reply } => (
            Event::RestartRequested(Trigger::Api),
            Some(Reply::Restart(reply)),
        ),
        Command::Drain { reply } => (Event::DrainRequested, Some(Reply::Drain(reply))),
        Command::Quit { reply } => (Event::ShutdownRequested, Some(Reply::Quit(reply))),
    }
}

impl Reply {
    /// Answer from what the state machine decided.
    fn send(self, actions: &[Action], state: &State) {
        match self {
            Reply::Restart(tx) => {
                let _ = tx.send(restart_reply(actions, state));
            }
            Reply::Drain(tx) => {
                let text = actions
                    .iter()
                    .find_map(|a| match a {
                        Action::DrainForShutdown { epoch, .. } => {
                            Some(format!("draining epoch {epoch}"))
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| "nothing to drain".into());
                let _ = tx.send(text);
            }
            Reply::Quit(tx) => {
                let _ = tx.send("shutting down".into());
            }
        }
    }
}

fn restart_reply(actions: &[Action], state: &State) -> RestartReply {
    let found = actions.iter().find_map(|a| match a {
        Action::Report(Report::RestartStarted { epoch, .. }) => Some(RestartReply {
            coalesced: false,
            epoch: Some(*epoch),
            detail: format!("started epoch {epoch}"),
        }),
        Action::Report(Report::Joined { epoch, .. }) => Some(RestartReply {
            coalesced: true,
            epoch: Some(*epoch),
            detail: format!("joined the restart of epoch {epoch}"),
        }),
        Action::Report(Report::Coalesced { .. }) => Some(RestartReply {
            coalesced: true,
            epoch: None,
            detail: "coalesced into the restart in flight".into(),
        }),
        Action::Report(Report::Deferred { draining, .. }) => Some(RestartReply {
            coalesced: true,
            epoch: None,
            detail: format!("deferred until epoch {draining} has drained"),
        }),
        Action::Report(Report::Ignored { why, .. }) => Some(RestartReply {
            coalesced: false,
            epoch: None,
            detail: format!("ignored: {why}"),
        }),
        _ => None,
    });
    found.unwrap_or_else(|| RestartReply {
        coalesced: false,
        epoch: None,
        detail: if state.shutting_down() {
            "shutting down: not restarting".into()
        } else {
            "not started yet".into()
        },
    })
}
