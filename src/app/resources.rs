//! What every supervisor acquires once, before its driver is built: the reaper,
//! signal handlers, the stats segment with baton's metrics in it, and the status
//! server's socket.

use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use super::metrics::BatonMetrics;
use crate::config::Supervision;
use crate::stats::Segment;
use crate::supervisor::Event;
use crate::sys::{self, Reaper};

/// The resources of one supervisor.
pub(super) struct Resources {
    /// Reaps every child; the only way baton waits for processes.
    pub reaper: Reaper,
    /// The stats segment every epoch inherits.
    pub stats: Arc<Segment>,
    /// baton's own metrics in the segment.
    pub metrics: BatonMetrics,
    /// Where signals, timers and outcomes send their events.
    pub events: UnboundedSender<Event>,
    /// The loop's end of `events`.
    pub inbox: UnboundedReceiver<Event>,
    /// The status server's socket, bound; `None` for `--status-addr off`.
    pub status_listener: Option<TcpListener>,
}

impl Resources {
    /// Acquire everything, in the runtime; the first failure names what failed.
    pub async fn acquire(supervision: &Supervision) -> anyhow::Result<Self> {
        if let Err(e) = sys::become_subreaper() {
            tracing::warn!(error = %e, "cannot become a child subreaper; orphans will not be reaped here");
        }
        let reaper = Reaper::start().context("listening for SIGCHLD")?;
        let (events, inbox) = mpsc::unbounded_channel();
        sys::signals::forward_to(events.clone()).context("installing signal handlers")?;
        let stats = Arc::new(
            Segment::create(supervision.stats_slots).context("creating the stats segment")?,
        );
        let metrics =
            BatonMetrics::new(&stats).context("claiming baton's metrics in the stats segment")?;
        let status_listener = match supervision.status_addr {
            Some(addr) => {
                let listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("--status-addr {addr}: cannot listen"))?;
                let bound = listener.local_addr().unwrap_or(addr);
                tracing::info!(addr = %bound, "status server listening");
                Some(listener)
            }
            None => None,
        };
        Ok(Resources {
            reaper,
            stats,
            metrics,
            events,
            inbox,
            status_listener,
        })
    }
}
