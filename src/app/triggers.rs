//! File triggers: wait for watched files at startup, then turn each real content
//! change into one `RestartRequested`, after an optional jitter (`CertChange` when a
//! file of a `--cert` pair changed, a rotation; `FileChange` otherwise), and a watch
//! that fails (or is back) into `WatchFailed` (`WatchRestored`).
//!
//! Under `--cert-rotation sds` a change of `--cert` files is a `RotationRequested`
//! instead, sent at once (an in-place rotation starts no process, so there is
//! nothing to spread); a change that also touched other files restarts as well,
//! after the rotation (the core runs one change at a time, in the order sent).

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::mpsc::{self, UnboundedSender};

use crate::config::Supervision;
use crate::supervisor::{Event, Trigger};
use crate::watch::{self, Notice, WatchConfig, WatchHandle};

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
    let cert_files = s.cert_files.clone();
    let in_place = s.certs_in_place;
    tokio::spawn(async move {
        while let Some(notice) = changes.recv().await {
            let event = match notice {
                Notice::Changed(change) => {
                    let detect_ms = change
                        .decided_at
                        .duration_since(change.first_event_at)
                        .as_millis() as u64;
                    let (rotation, restart) = events_of(&change.changed, &cert_files, in_place);
                    let delay = if restart.is_some() {
                        random_up_to(jitter)
                    } else {
                        Duration::ZERO
                    };
                    tracing::info!(
                        changed = ?change.changed,
                        detect_ms,
                        jitter_ms = delay.as_millis() as u64,
                        "watched content changed"
                    );
                    if let Some(rotation) = rotation {
                        if events.send(rotation).is_err() {
                            break;
                        }
                    }
                    if !delay.is_zero() {
                        tokio::time::sleep(delay).await;
                    }
                    restart
                }
                Notice::Failed(message) => Some(Event::WatchFailed { message }),
                Notice::Restored => Some(Event::WatchRestored),
            };
            if let Some(event) = event {
                if events.send(event).is_err() {
                    break;
                }
            }
        }
    });
    Ok(Some(handle))
}

/// What a change of `changed` asks for: an in-place rotation (`certs_in_place` and a
/// `--cert` file changed) and/or a restart (`CertChange` when a `--cert` file changed
/// and rotations restart, `FileChange` when any other file changed).
fn events_of(
    changed: &[PathBuf],
    cert_files: &[PathBuf],
    certs_in_place: bool,
) -> (Option<Event>, Option<Event>) {
    let certs = changed.iter().any(|p| cert_files.contains(p));
    if !certs_in_place {
        return (
            None,
            Some(Event::RestartRequested(trigger_of(changed, cert_files))),
        );
    }
    let others = changed.iter().any(|p| !cert_files.contains(p));
    (
        certs.then_some(Event::RotationRequested),
        others.then_some(Event::RestartRequested(Trigger::FileChange)),
    )
}

/// A rotation when any changed path is a `--cert` file, else a file change.
fn trigger_of(changed: &[PathBuf], cert_files: &[PathBuf]) -> Trigger {
    if changed.iter().any(|p| cert_files.contains(p)) {
        Trigger::CertChange
    } else {
        Trigger::FileChange
    }
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
    fn a_changed_cert_file_is_a_rotation_and_anything_else_a_file_change() {
        let certs = [PathBuf::from("/c/tls.crt"), PathBuf::from("/c/tls.key")];
        let tpl = PathBuf::from("/etc/tpl.json");
        assert_eq!(
            trigger_of(&[tpl.clone(), certs[1].clone()], &certs),
            Trigger::CertChange
        );
        assert_eq!(trigger_of(&[tpl], &certs), Trigger::FileChange);
    }

    #[test]
    fn with_sds_a_cert_change_rotates_in_place_and_other_files_still_restart() {
        let certs = [PathBuf::from("/c/tls.crt"), PathBuf::from("/c/tls.key")];
        let tpl = PathBuf::from("/etc/tpl.json");
        let rotate = Some(Event::RotationRequested);
        let file = Some(Event::RestartRequested(Trigger::FileChange));
        let cert = Some(Event::RestartRequested(Trigger::CertChange));
        assert_eq!(events_of(&certs, &certs, true), (rotate.clone(), None));
        assert_eq!(
            events_of(std::slice::from_ref(&tpl), &certs, true),
            (None, file.clone())
        );
        assert_eq!(
            events_of(&[certs[0].clone(), tpl.clone()], &certs, true),
            (rotate, file.clone())
        );
        assert_eq!(events_of(&certs, &certs, false), (None, cert));
        assert_eq!(events_of(&[tpl], &certs, false), (None, file));
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        assert_eq!(random_up_to(Duration::ZERO), Duration::ZERO);
        for _ in 0..100 {
            assert!(random_up_to(Duration::from_millis(5)) <= Duration::from_millis(5));
        }
    }
}
