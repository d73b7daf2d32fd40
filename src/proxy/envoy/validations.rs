//! Which bootstraps `envoy --mode validate` passed, and the validations running now.
//!
//! A validation costs a third Envoy's start (60-100 ms, and its memory). A warm-up
//! (a file burst settling, a trigger that waits for a drain) validates the inputs as
//! they are before a preflight asks; the preflight then finds its bytes passed, or
//! waits for the validation already running on them instead of starting a second.
//!
//! **Invariant:** a digest is recorded as passed only after `envoy --mode validate`
//! accepted a file of exactly those bytes. A failure is never remembered: the next
//! preflight validates again and reports what Envoy says.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::Mutex;

use tokio::sync::watch;

/// Passed digests remembered.
const KEEP: usize = 8;

/// The validations of one driver.
#[derive(Default)]
pub struct Validations {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    passed: VecDeque<String>,
    /// Digest → `true` once passed, `false` once failed; a dropped sender means it
    /// was abandoned.
    running: HashMap<String, watch::Receiver<Option<bool>>>,
}

/// Removes a running validation's entry however it ends (also when its task is
/// dropped), and tells whoever waits for it.
struct Running<'a> {
    owner: &'a Validations,
    digest: String,
    tx: watch::Sender<Option<bool>>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut inner = self.owner.lock();
        inner.running.remove(&self.digest);
        if *self.tx.borrow() == Some(true) {
            inner.passed.retain(|d| *d != self.digest);
            inner.passed.push_back(self.digest.clone());
            while inner.passed.len() > KEEP {
                inner.passed.pop_front();
            }
        }
    }
}

impl Validations {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `true` if a file of these bytes passed, or one is being validated now.
    pub fn known(&self, digest: &str) -> bool {
        let inner = self.lock();
        inner.passed.iter().any(|d| d == digest) || inner.running.contains_key(digest)
    }

    /// Make sure the bytes with `digest` pass validation: `Ok` at once if they did,
    /// the outcome of the validation running on them if one is, else `run()`'s.
    /// A validation that another caller started and that failed or was abandoned is
    /// not taken as an answer: this caller then runs its own.
    pub async fn ensure<F, Fut>(&self, digest: &str, run: F) -> Result<(), String>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        loop {
            let next = {
                let mut inner = self.lock();
                if inner.passed.iter().any(|d| d == digest) {
                    return Ok(());
                }
                match inner.running.get(digest) {
                    Some(rx) => Next::Wait(rx.clone()),
                    None => {
                        let (tx, rx) = watch::channel(None);
                        inner.running.insert(digest.to_string(), rx);
                        Next::Run(tx)
                    }
                }
            };
            match next {
                Next::Run(tx) => {
                    let running = Running {
                        owner: self,
                        digest: digest.to_string(),
                        tx,
                    };
                    let outcome = run().await;
                    running.tx.send_replace(Some(outcome.is_ok()));
                    return outcome;
                }
                Next::Wait(mut rx) => {
                    if let Ok(outcome) = rx.wait_for(Option::is_some).await {
                        if *outcome == Some(true) {
                            return Ok(());
                        }
                    }
                    // Failed or abandoned: once its entry is gone, run our own.
                    tokio::task::yield_now().await;
                }
            }
        }
    }
}

enum Next {
    Run(watch::Sender<Option<bool>>),
    Wait(watch::Receiver<Option<bool>>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn passed_bytes_are_not_validated_again_and_a_failure_is_not_remembered() {
        runtime().block_on(async {
            let v = Validations::default();
            let runs = AtomicU32::new(0);
            let ok = || async {
                runs.fetch_add(1, Ordering::SeqCst);
                Ok(())
            };
            assert_eq!(v.ensure("a", ok).await, Ok(()));
            assert_eq!(v.ensure("a", ok).await, Ok(()));
            assert_eq!(runs.load(Ordering::SeqCst), 1);
            assert!(v.known("a"));

            let bad = || async {
                runs.fetch_add(1, Ordering::SeqCst);
                Err("unknown cluster".to_string())
            };
            assert_eq!(v.ensure("b", bad).await, Err("unknown cluster".into()));
            assert_eq!(v.ensure("b", bad).await, Err("unknown cluster".into()));
            assert_eq!(runs.load(Ordering::SeqCst), 3);
            assert!(!v.known("b"));
        });
    }

    #[test]
    fn a_second_caller_waits_for_the_validation_running_on_the_same_bytes() {
        runtime().block_on(async {
            let v = Arc::new(Validations::default());
            let runs = Arc::new(AtomicU32::new(0));
            let (release, gate) = tokio::sync::oneshot::channel::<()>();
            let gate = Arc::new(tokio::sync::Mutex::new(Some(gate)));
            let first = {
                let (v, runs, gate) = (v.clone(), runs.clone(), gate.clone());
                tokio::spawn(async move {
                    v.ensure("a", || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        if let Some(g) = gate.lock().await.take() {
                            let _ = g.await;
                        }
                        Ok(())
                    })
                    .await
                })
            };
            // Let the first one start and block on the gate.
            while !v.known("a") {
                tokio::task::yield_now().await;
            }
            let second = {
                let (v, runs) = (v.clone(), runs.clone());
                tokio::spawn(async move {
                    v.ensure("a", || async {
                        runs.fetch_add(1, Ordering::SeqCst);
                        Ok(())
                    })
                    .await
                })
            };
            tokio::task::yield_now().await;
            release.send(()).unwrap();
            assert_eq!(first.await.unwrap(), Ok(()));
            assert_eq!(second.await.unwrap(), Ok(()));
            assert_eq!(runs.load(Ordering::SeqCst), 1);
        });
    }

    #[test]
    fn an_abandoned_validation_leaves_nothing_behind() {
        runtime().block_on(async {
            let v = Validations::default();
            let never = || std::future::pending::<Result<(), String>>();
            let abandoned =
                tokio::time::timeout(std::time::Duration::from_millis(5), v.ensure("a", never))
                    .await;
            assert!(abandoned.is_err());
            assert!(!v.known("a"));
            assert_eq!(v.ensure("a", || async { Ok(()) }).await, Ok(()));
        });
    }
}
