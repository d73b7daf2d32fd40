//! Keeping a watch on every wanted directory, whatever happens to it.
//!
//! A directory that is removed takes its inotify watch with it; when it is created
//! again nothing watches the new one, so every later change there would go
//! unnoticed. So while a wanted directory is missing, its nearest existing ancestor
//! is watched instead: creating the directory again is an event there, the next
//! re-arm watches the directory itself again and drops the ancestor. A directory
//! that exists but cannot be watched (the inotify watch limit, no permission) is a
//! failure, reported once when it starts and once when every watch is back.
//!
//! **Invariant:** after [`Arming::arm`] every wanted directory, or the nearest
//! ancestor of one that is missing, is watched or reported as failing; a
//! directory that appeared while arming is armed before `arm` returns, so the
//! content read afterwards cannot miss a change made after it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use notify::{RecursiveMode, Watcher};

/// What arming needs of a watcher (a fake in tests).
pub trait Watches {
    /// Watch `dir`, non-recursively.
    fn watch(&mut self, dir: &Path) -> Result<(), notify::Error>;
    /// Stop watching `dir`; it may already be gone.
    fn unwatch(&mut self, dir: &Path);
}

impl<W: Watcher> Watches for W {
    fn watch(&mut self, dir: &Path) -> Result<(), notify::Error> {
        Watcher::watch(self, dir, RecursiveMode::NonRecursive)
    }

    fn unwatch(&mut self, dir: &Path) {
        // A watch removed with its directory is not known any more: nothing to do.
        let _ = Watcher::unwatch(self, dir);
    }
}

/// Something worth telling the operator after arming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// A wanted directory is gone; `watching` (an ancestor) is watched until it returns.
    Gone { dir: PathBuf, watching: PathBuf },
    /// A directory that was gone is back and watched again.
    Back { dir: PathBuf },
    /// A directory could not be watched: changes there go unnoticed.
    Failed { message: String },
    /// Every directory that could not be watched is watched again.
    Restored,
}

/// The watches of a set of wanted directories.
#[derive(Debug)]
pub struct Arming {
    wanted: Vec<PathBuf>,
    /// What is watched now.
    watched: BTreeSet<PathBuf>,
    /// Wanted directories that are missing, with the ancestor watched instead.
    gone: BTreeMap<PathBuf, PathBuf>,
    /// Directories whose watch failed, with why.
    failing: BTreeMap<PathBuf, String>,
}

/// Arming again this many times at most when directories keep appearing meanwhile.
const ROUNDS: usize = 4;

impl Arming {
    /// Nothing armed yet.
    pub fn new(wanted: Vec<PathBuf>) -> Self {
        Arming {
            wanted,
            watched: BTreeSet::new(),
            gone: BTreeMap::new(),
            failing: BTreeMap::new(),
        }
    }

    /// Whether some directory could not be watched (worth retrying later).
    pub fn failing(&self) -> bool {
        !self.failing.is_empty()
    }

    /// Watch every wanted directory, or the nearest existing ancestor of one that is
    /// missing; returns what changed since the last time.
    pub fn arm(&mut self, watcher: &mut impl Watches) -> Vec<Transition> {
        let mut targets = self.targets();
        let mut errors = BTreeMap::new();
        for _ in 0..ROUNDS {
            errors.clear();
            for target in targets.values().collect::<BTreeSet<_>>() {
                if let Err(e) = watcher.watch(target) {
                    errors.insert(
                        target.clone(),
                        format!("cannot watch {}: {e}", target.display()),
                    );
                }
            }
            // A directory created while this ran may have been armed through its
            // ancestor too late to see its own files: arm it directly, again.
            let again = self.targets();
            if again == targets {
                break;
            }
            targets = again;
        }
        let now: BTreeSet<PathBuf> = targets.values().cloned().collect();
        for stale in self.watched.difference(&now) {
            watcher.unwatch(stale);
        }
        self.watched = now;
        let mut out = Vec::new();
        let gone: BTreeMap<PathBuf, PathBuf> = targets
            .into_iter()
            .filter(|(dir, target)| dir != target)
            .collect();
        for (dir, watching) in &gone {
            if self.gone.get(dir) != Some(watching) {
                out.push(Transition::Gone {
                    dir: dir.clone(),
                    watching: watching.clone(),
                });
            }
        }
        for dir in self.gone.keys() {
            if !gone.contains_key(dir) {
                out.push(Transition::Back { dir: dir.clone() });
            }
        }
        self.gone = gone;
        for (dir, message) in &errors {
            if self.failing.get(dir) != Some(message) {
                out.push(Transition::Failed {
                    message: message.clone(),
                });
            }
        }
        if errors.is_empty() && !self.failing.is_empty() {
            out.push(Transition::Restored);
        }
        self.failing = errors;
        out
    }

    /// For each wanted directory, what to watch: itself, or its nearest existing
    /// ancestor while it is missing.
    fn targets(&self) -> BTreeMap<PathBuf, PathBuf> {
        self.wanted
            .iter()
            .map(|dir| (dir.clone(), nearest_existing(dir)))
            .collect()
    }
}

/// `dir` if it is a directory, else its nearest ancestor that is (`.` for a relative
/// path none of whose ancestors exist).
pub fn nearest_existing(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|a| !a.as_os_str().is_empty() && a.is_dir())
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Watches what exists, fails on the directories it is told to.
    #[derive(Default)]
    struct Fake {
        refuse: BTreeSet<PathBuf>,
        watching: BTreeSet<PathBuf>,
    }

    impl Watches for Fake {
        fn watch(&mut self, dir: &Path) -> Result<(), notify::Error> {
            if self.refuse.contains(dir) {
                return Err(notify::Error::new(notify::ErrorKind::MaxFilesWatch));
            }
            self.watching.insert(dir.to_path_buf());
            Ok(())
        }

        fn unwatch(&mut self, dir: &Path) {
            self.watching.remove(dir);
        }
    }

    #[test]
    fn a_removed_directory_is_watched_through_its_parent_until_it_returns() {
        let tmp = tempfile::tempdir().unwrap();
        let certs = tmp.path().join("certs");
        std::fs::create_dir(&certs).unwrap();
        let mut fake = Fake::default();
        let mut arming = Arming::new(vec![certs.clone()]);
        assert_eq!(arming.arm(&mut fake), vec![]);
        assert_eq!(fake.watching, BTreeSet::from([certs.clone()]));

        std::fs::remove_dir(&certs).unwrap();
        assert_eq!(
            arming.arm(&mut fake),
            vec![Transition::Gone {
                dir: certs.clone(),
                watching: tmp.path().to_path_buf()
            }]
        );
        assert_eq!(fake.watching, BTreeSet::from([tmp.path().to_path_buf()]));
        assert_eq!(arming.arm(&mut fake), vec![], "said once");

        std::fs::create_dir(&certs).unwrap();
        assert_eq!(
            arming.arm(&mut fake),
            vec![Transition::Back { dir: certs.clone() }]
        );
        assert_eq!(
            fake.watching,
            BTreeSet::from([certs]),
            "the parent is dropped"
        );
    }

    #[test]
    fn a_deeper_loss_is_watched_from_the_nearest_ancestor_that_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let certs = tmp.path().join("a/b/certs");
        assert_eq!(nearest_existing(&certs), tmp.path());
        assert_eq!(nearest_existing(Path::new("no/such/dir")), Path::new("."));
        std::fs::create_dir_all(&certs).unwrap();
        assert_eq!(nearest_existing(&certs), certs);
    }

    #[test]
    fn a_watch_that_cannot_be_armed_fails_once_and_is_restored_once() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let mut fake = Fake {
            refuse: BTreeSet::from([dir.clone()]),
            ..Fake::default()
        };
        let mut arming = Arming::new(vec![dir.clone()]);
        let failed = arming.arm(&mut fake);
        assert!(
            matches!(&failed[..], [Transition::Failed { message }] if message.contains(&dir.display().to_string())),
            "{failed:?}"
        );
        assert!(arming.failing());
        assert_eq!(arming.arm(&mut fake), vec![], "reported once");
        fake.refuse.clear();
        assert_eq!(arming.arm(&mut fake), vec![Transition::Restored]);
        assert!(!arming.failing());
        assert_eq!(arming.arm(&mut fake), vec![]);
    }
}
