//! File triggers: wait for watched files at startup, then turn each real content
//! change into one `RestartRequested(FileChange)`, after an optional jitter.

use std::time::Duration;

use tokio::sync::mpsc::{self, UnboundedSender};

use crate::config::Supervision;
use crate::supervisor::{Event, Trigger};
use crate::watch::{self, WatchConfig, WatchHandle};

/// Wait up to `--cert-wait` for the certificates and `--watch` paths to exist (a
/// secret volume may be filled moments after the pod starts), saying what is
/// awaited when the wait begins and every 10 s.
pub async fn wait_for_files(s: &Supervision) -> Result<(), watch::WaitError> {
    if s.wait_for.is_empty() {
        return Ok(());
    }
    watch::wait_for(&s.wait_for, s.cert_wait, |missing, left| {
        tracing::info!(
            missing = ?missing,
            left_s = left.as_secs(),
            "waiting for certificates and watched files to appear (--cert-wait)"
        )
    })
    .await
}

/// Start the watcher; `None` when nothing is watched. Dropping the handle stops it.
/// `warm` runs when a burst of file events has settled, before the debounce decides:
/// the driver prepares the next preflight during the quiet period.
pub fn watch_files(
    s: &Supervision,
    events: UnboundedSender<Event>,
    warm: impl Fn() + Send + 'static,
) -> anyhow::Result<Option<WatchHandle>> {
    if s.watched.is_empty() {
        return Ok(None);
    }
    let (tx, mut changes) = mpsc::unbounded_channel();
    let (hints_tx, mut hints) = mpsc::unbounded_channel();
    let mut config = WatchConfig::new(s.watched.clone());
    config.quiet = s.debounce;
    config.cap = s.debounce_cap;
    config.settling = Some(hints_tx);
    let handle = watch::spawn(config, tx)?;
    tokio::spawn(async move {
        while hints.recv().await.is_some() {
            warm();
        }
    });
    tracing::info!(paths = ?s.watched, "watching files");
    let jitter = s.restart_jitter;
    tokio::spawn(async move {
        while let Some(change) = changes.recv().await {
            let detect_ms = change
                .decided_at
                .duration_since(change.first_event_at)
                .as_millis() as u64;
            let delay = random_up_to(jitter);
            tracing::info!(
                changed = ?change.changed,
                detect_ms,
                jitter_ms = delay.as_millis() as u64,
                "watched content changed"
            );
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if events
                .send(Event::RestartRequested(Trigger::FileChange))
                .is_err()
            {
                break;
            }
        }
    });
    Ok(Some(handle))
}

/// A uniformly random duration in `[0, max]` (`--restart-jitter`).
fn random_up_to(max: Duration) -> Duration {
    if max.is_zero() {
        return Duration::ZERO;
    }
    let nanos = max.as_nanos().min(u128::from(u64::MAX)) as u64;
    Duration::from_nanos(rand::random_range(0..=nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_its_bound() {
        assert_eq!(random_up_to(Duration::ZERO), Duration::ZERO);
        for _ in 0..100 {
            assert!(random_up_to(Duration::from_millis(5)) <= Duration::from_millis(5));
        }
    }
}
