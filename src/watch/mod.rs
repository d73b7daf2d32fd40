//! Turns file-system activity into "the content of the watched set changed", once per
//! real change.
//!
//! How, and why each step:
//! - **Directories are watched, not files**, non-recursively: the parent of each watched
//!   file, and each watched directory together with its parent. Kubernetes swaps a
//!   `..data` symlink and editors or cert-manager replace files by rename, so a watch
//!   on the file itself goes silent after the first swap; a recursive watch would
//!   follow `..data` into the timestamped directories and report every change twice.
//!   Any event in a watched directory counts, whatever its name: in a symlink swap the
//!   names are `..data_tmp` and `..data`, never the watched file.
//! - **Access events are ignored** except close-after-write: the proxy reading its
//!   certificate — and this module hashing it — must not cause anything.
//! - **Bursts are debounced** ([`debounce`]): act after `quiet` without events, never
//!   later than `cap` after the burst's first event.
//! - **Content decides** ([`digest`]): the set is re-hashed and a [`Change`] is sent only
//!   when some digest differs from the last one seen. `touch`, a read, or rewriting
//!   identical bytes is no change; a file that vanishes is no change until it returns
//!   with different content.
//! - **A hint before the decision** ([`WatchConfig::settling`]): once a burst has been
//!   still for [`HINT_AFTER`] (well before `quiet`), a hint says "content may have
//!   changed", so a consumer can start slow preparations (Envoy's validation of the
//!   bootstrap) while the quiet period runs. Not a decision: nothing is hashed for it.
//!
//! **Invariant:** the watches are in place before the baseline digests are taken, so
//! any change to content made after [`spawn`] returns is reported.
//! **Invariant:** one burst yields at most one [`Change`]; a burst whose content ends
//! up as it started yields none. At most one hint per burst.
//! **Invariant:** a watch cannot die silently ([`arm`]): a watched directory that is
//! removed is watched through its nearest existing ancestor until it is created
//! again, then watched itself again (every burst re-arms the watches by path, which
//! also follows a directory replaced by rename); a directory that cannot be watched
//! is reported as [`Notice::Failed`], retried every [`RETRY_FAILED`], and
//! [`Notice::Restored`] once it is watched again.

mod arm;
pub mod debounce;
pub mod digest;
mod wait;

#[cfg(test)]
mod tests;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode};
use notify::{EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use debounce::Debounce;
pub use digest::{digest_set, Digest};
pub use wait::{wait_for, WaitError};

/// Default quiet period: act once the watched directories have been still this long.
pub const DEFAULT_QUIET: Duration = Duration::from_millis(100);
/// Default cap: act at the latest this long after the first event of a burst.
pub const DEFAULT_CAP: Duration = Duration::from_secs(2);
/// While a directory cannot be watched, try again this often.
pub const RETRY_FAILED: Duration = Duration::from_secs(5);
/// A burst still this long gets its hint (when that is shorter than the quiet period):
/// a Kubernetes `..data` swap or an editor's save is over within a millisecond or two.
pub const HINT_AFTER: Duration = Duration::from_millis(5);

/// What to watch and how to debounce it.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// Files and directories whose content is watched (see [`digest`] for what a
    /// directory's content is). Reported back in [`Change::changed`] exactly as given.
    pub paths: Vec<PathBuf>,
    /// Act after this long without events.
    pub quiet: Duration,
    /// Act at the latest this long after the first event of a burst, even if events
    /// keep coming. A cap shorter than `quiet` simply wins.
    pub cap: Duration,
    /// Where hints go: a burst has been still for [`HINT_AFTER`], content may have
    /// changed (not checked). `None`: no hints.
    pub settling: Option<mpsc::UnboundedSender<()>>,
}

impl WatchConfig {
    /// Watch `paths` with [`DEFAULT_QUIET`] and [`DEFAULT_CAP`].
    pub fn new(paths: Vec<PathBuf>) -> Self {
        Self {
            paths,
            quiet: DEFAULT_QUIET,
            cap: DEFAULT_CAP,
            settling: None,
        }
    }
}

/// The content of some watched paths changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The watched paths whose content changed, as given in [`WatchConfig::paths`], in
    /// that order. Never empty.
    pub changed: Vec<PathBuf>,
    /// When the first event of the burst was seen.
    pub first_event_at: Instant,
    /// When the new digests were known; `decided_at - first_event_at` is the
    /// detection latency.
    pub decided_at: Instant,
}

/// What the watcher reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// The content of some watched paths changed.
    Changed(Change),
    /// A directory cannot be watched: changes there go unnoticed until
    /// [`Notice::Restored`].
    Failed(String),
    /// Every directory is watched again.
    Restored,
}

/// Why watching could not start. Nothing here is retriable by waiting: the caller
/// reports it and exits (a missing directory should have been waited for with
/// [`wait_for`] first).
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// [`spawn`] was called outside a tokio runtime.
    #[error("the file watcher needs a tokio runtime")]
    NoRuntime,
    /// The inotify instance could not be created (per-user instance limit reached?).
    #[error("cannot start the file watcher: {0}")]
    Watcher(#[source] notify::Error),
    /// A directory could not be watched (missing, or the inotify watch limit is reached).
    #[error("cannot watch {}: {source}", dir.display())]
    Watch {
        /// The directory.
        dir: PathBuf,
        /// What inotify said.
        #[source]
        source: notify::Error,
    },
}

/// A running watcher. Dropping it stops watching; the [`Change`] sender is dropped
/// with it, so the receiver then sees the channel close.
#[derive(Debug)]
pub struct WatchHandle {
    task: JoinHandle<()>,
}

impl Drop for WatchHandle {
    fn drop(&mut self) {
        // The task owns the inotify watcher: aborting it drops both.
        self.task.abort();
    }
}

/// Start watching `config.paths`; every content change is sent on `tx` as a
/// [`Notice::Changed`], and a watch that fails later as [`Notice::Failed`].
///
/// Must be called inside a tokio runtime (a current-thread one is fine): inotify's
/// thread feeds a channel and the debounce loop is a task on that runtime. Hashing
/// runs on the blocking pool, so a large watched directory does not stall the
/// runtime. Takes the baseline digests before returning (blocking, briefly). The
/// watcher stops when the handle is dropped or when `tx`'s receiver is gone.
pub fn spawn(
    config: WatchConfig,
    tx: mpsc::UnboundedSender<Notice>,
) -> Result<WatchHandle, WatchError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| WatchError::NoRuntime)?;
    let (events_tx, events) = mpsc::unbounded_channel();
    let watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let counts = match &res {
            Ok(event) => is_content_event(&event.kind) || event.need_rescan(),
            // The event stream is unreliable (queue overflow, …): re-hashing is the
            // safe answer, since only a real difference is reported.
            Err(e) => {
                tracing::warn!(error = %e, "file watcher error; re-checking content");
                true
            }
        };
        if counts {
            // Fails only once the loop is gone, when nobody cares any more.
            let _ = events_tx.send(Instant::now());
        }
    })
    .map_err(WatchError::Watcher)?;

    let mut watcher = watcher;
    let dirs = dirs_to_watch(&config.paths);
    for dir in &dirs {
        watcher
            .watch(dir, RecursiveMode::NonRecursive)
            .map_err(|source| WatchError::Watch {
                dir: dir.clone(),
                source,
            })?;
    }
    // Every directory is watched now: this only records it.
    let mut arming = arm::Arming::new(dirs.clone());
    for t in arming.arm(&mut watcher) {
        tracing::warn!(?t, "file watch changed while starting");
    }
    // After the watches, so nothing between the two steps can go unnoticed.
    let baseline = digest_set(&config.paths);
    tracing::debug!(dirs = ?dirs, "watching");

    let task = runtime.spawn(run(
        Loop {
            watcher,
            arming,
            paths: config.paths,
            baseline,
            debounce: Debounce::new(config.quiet, config.cap),
            tx,
            hint: Hint {
                to: config.settling.filter(|_| HINT_AFTER < config.quiet),
                due: None,
                given: false,
            },
        },
        events,
    ));
    Ok(WatchHandle { task })
}

/// Whether an event can mean different content. Opening, reading and closing a file
/// opened read-only cannot; everything else (create, write, rename, delete, attribute
/// change, close after write, unknown) might.
pub fn is_content_event(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The directories to watch for `paths`: each file's parent, each directory and its
/// parent. Sorted, without duplicates.
pub fn dirs_to_watch(paths: &[PathBuf]) -> Vec<PathBuf> {
    let mut dirs = BTreeSet::new();
    for path in paths {
        if path.is_dir() {
            dirs.insert(path.clone());
        }
        match path.parent() {
            // `tls.crt` has the parent "", which inotify cannot watch: it means ".".
            Some(parent) if parent.as_os_str().is_empty() => {
                dirs.insert(PathBuf::from("."));
            }
            Some(parent) => {
                dirs.insert(parent.to_path_buf());
            }
            None => {}
        }
    }
    dirs.into_iter().collect()
}

struct Loop {
    watcher: RecommendedWatcher,
    arming: arm::Arming,
    paths: Vec<PathBuf>,
    baseline: Vec<Digest>,
    debounce: Debounce,
    tx: mpsc::UnboundedSender<Notice>,
    hint: Hint,
}

/// The burst's one hint: due [`HINT_AFTER`] after its latest event.
struct Hint {
    to: Option<mpsc::UnboundedSender<()>>,
    due: Option<Instant>,
    given: bool,
}

impl Hint {
    fn event(&mut self, at: Instant) {
        if self.to.is_some() && !self.given {
            let due = at + HINT_AFTER;
            self.due = Some(self.due.map_or(due, |d| d.max(due)));
        }
    }

    fn fire(&mut self, now: Instant) {
        if self.due.is_some_and(|due| due <= now) {
            self.due = None;
            self.given = true;
            if let Some(to) = &self.to {
                let _ = to.send(());
            }
        }
    }

    /// The burst is over: the next one gets its own hint.
    fn reset(&mut self) {
        self.due = None;
        self.given = false;
    }
}

/// Drained per wake-up at most, so that an event storm cannot keep the loop from
/// checking the cap.
const MAX_DRAIN: usize = 4096;

enum Wake {
    Event(Instant),
    Deadline,
    Closed,
}

async fn run(mut state: Loop, mut events: mpsc::UnboundedReceiver<Instant>) {
    let mut retry_at = None;
    loop {
        let due = [state.debounce.deadline(), retry_at, state.hint.due]
            .into_iter()
            .flatten()
            .min();
        let wake = match due {
            None => events.recv().await.map_or(Wake::Closed, Wake::Event),
            Some(due) => tokio::select! {
                event = events.recv() => event.map_or(Wake::Closed, Wake::Event),
                () = tokio::time::sleep_until(due.into()) => Wake::Deadline,
            },
        };
        match wake {
            Wake::Event(at) => state.event(at),
            Wake::Deadline => {}
            Wake::Closed => return,
        }
        // Events already queued happened before now: a decision that ignored them
        // would act in the middle of a burst whenever this task ran late.
        for _ in 0..MAX_DRAIN {
            match events.try_recv() {
                Ok(at) => state.event(at),
                Err(mpsc::error::TryRecvError::Empty) => break,
                Err(mpsc::error::TryRecvError::Disconnected) => return,
            }
        }
        let now = Instant::now();
        state.hint.fire(now);
        let first = state
            .debounce
            .fire(now)
            .or_else(|| retry_at.filter(|at| *at <= now).map(|_| now));
        if let Some(first) = first {
            state.hint.reset();
            if !state.settle(first).await {
                return;
            }
            retry_at = state
                .arming
                .failing()
                .then(|| Instant::now() + RETRY_FAILED);
        }
    }
}

impl Loop {
    fn event(&mut self, at: Instant) {
        self.debounce.event(at);
        self.hint.event(at);
    }

    /// Re-hash after a burst that started at `first`; send a [`Change`] if content
    /// changed. Returns false when the receiver is gone and the loop should end.
    async fn settle(&mut self, first: Instant) -> bool {
        self.rearm();
        let paths = self.paths.clone();
        let fresh = match tokio::task::spawn_blocking(move || digest_set(&paths)).await {
            Ok(fresh) => fresh,
            // Only when the runtime shuts down: nothing left to report to.
            Err(_) => return false,
        };
        let changed = digest::fold_changes(&mut self.baseline, &fresh);
        let decided_at = Instant::now();
        if changed.is_empty() {
            tracing::debug!("file events without a content change");
            return !self.tx.is_closed();
        }
        let change = Change {
            changed: changed.iter().map(|&i| self.paths[i].clone()).collect(),
            first_event_at: first,
            decided_at,
        };
        tracing::debug!(changed = ?change.changed, latency = ?decided_at - first, "content changed");
        self.tx.send(Notice::Changed(change)).is_ok()
    }

    /// Watch every directory again by path. A directory replaced by rename keeps the
    /// old inode's watch, which goes silent; watching the path again arms the new one
    /// (and is a no-op when nothing was replaced). A removed one is watched through
    /// its ancestor until it returns.
    fn rearm(&mut self) {
        for transition in self.arming.arm(&mut self.watcher) {
            match transition {
                arm::Transition::Gone { dir, watching } => tracing::warn!(
                    dir = %dir.display(),
                    watching = %watching.display(),
                    "watched directory is gone; watching its nearest ancestor until it returns"
                ),
                arm::Transition::Back { dir } => tracing::info!(
                    dir = %dir.display(),
                    "watched directory is back; watching it again"
                ),
                arm::Transition::Failed { message } => {
                    let _ = self.tx.send(Notice::Failed(message));
                }
                arm::Transition::Restored => {
                    let _ = self.tx.send(Notice::Restored);
                }
            }
        }
    }
}
