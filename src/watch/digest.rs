//! Content digests of the watched set, and the rule that decides what counts as a change.
//!
//! A file's digest is the SHA-256 of its bytes, read through symlinks. A directory's
//! digest covers its *visible* regular files — names not starting with `.`, so a
//! Kubernetes volume's `..data` and `..2026_…` entries are skipped while its
//! `tls.crt -> ..data/tls.crt` links are followed — sorted by name, each contributing
//! its name and its content digest.
//!
//! **Invariant:** a path that cannot be read is [`Digest::Absent`], and an absent digest
//! is never a change by itself: a file caught between delete and re-create, or a
//! half-mounted volume, must not trigger a restart onto nothing. Only content that
//! differs from the last content seen is a change.

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// The content digest of one watched path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Digest {
    /// The path does not exist, or cannot be read right now.
    Absent,
    /// SHA-256 of the file's bytes, or of a directory's visible files.
    Present([u8; 32]),
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Digest::Absent => f.write_str("absent"),
            Digest::Present(bytes) => f.write_str(&hex::encode(bytes)),
        }
    }
}

/// Digest every path, in order. Never fails: unreadable paths are [`Digest::Absent`].
pub fn digest_set(paths: &[PathBuf]) -> Vec<Digest> {
    paths.iter().map(|p| digest_path(p)).collect()
}

/// Digest one file or directory (see the module doc for what a directory covers).
pub fn digest_path(path: &Path) -> Digest {
    let result = match fs::metadata(path) {
        Ok(meta) if meta.is_dir() => digest_dir(path),
        Ok(_) => digest_file(path),
        Err(e) => Err(e),
    };
    match result {
        Ok(bytes) => Digest::Present(bytes),
        Err(e) => {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot read watched path");
            }
            Digest::Absent
        }
    }
}

/// Fold fresh digests into `baseline` and return the indices of the paths that changed.
///
/// A present digest that differs from the baseline is a change and becomes the new
/// baseline. An absent one leaves the baseline alone, so a file that disappears and
/// returns with the same bytes is no change at all.
pub fn fold_changes(baseline: &mut [Digest], fresh: &[Digest]) -> Vec<usize> {
    let mut changed = Vec::new();
    for (i, (old, new)) in baseline.iter_mut().zip(fresh).enumerate() {
        if let Digest::Present(_) = new {
            if old != new {
                *old = *new;
                changed.push(i);
            }
        }
    }
    changed
}

fn digest_file(path: &Path) -> io::Result<[u8; 32]> {
    let mut file = fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().into())
}

fn digest_dir(dir: &Path) -> io::Result<[u8; 32]> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        if !name.as_encoded_bytes().starts_with(b".") {
            names.push(name);
        }
    }
    names.sort();
    let mut hasher = Sha256::new();
    for name in names {
        let path = dir.join(&name);
        // Follows symlinks: a Kubernetes volume's visible names are links into `..data`.
        match fs::metadata(&path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => continue,
            // Deleted or dangling since `read_dir`: not part of the content right now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        }
        let content = match digest_file(&path) {
            Ok(content) => content,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        // Length-prefixed so that no two different listings hash the same bytes.
        let name = name.as_encoded_bytes();
        hasher.update((name.len() as u64).to_le_bytes());
        hasher.update(name);
        hasher.update(content);
    }
    Ok(hasher.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(n: u8) -> Digest {
        Digest::Present([n; 32])
    }

    #[test]
    fn absent_is_not_a_change_and_keeps_the_baseline() {
        let mut baseline = vec![present(1)];
        assert!(fold_changes(&mut baseline, &[Digest::Absent]).is_empty());
        assert_eq!(baseline, vec![present(1)]);
    }

    #[test]
    fn returning_with_the_same_content_is_not_a_change() {
        let mut baseline = vec![present(1)];
        fold_changes(&mut baseline, &[Digest::Absent]);
        assert!(fold_changes(&mut baseline, &[present(1)]).is_empty());
    }

    #[test]
    fn different_content_is_a_change_and_becomes_the_baseline() {
        let mut baseline = vec![present(1), present(2)];
        assert_eq!(
            fold_changes(&mut baseline, &[present(1), present(3)]),
            vec![1]
        );
        assert_eq!(baseline, vec![present(1), present(3)]);
        assert!(fold_changes(&mut baseline, &[present(1), present(3)]).is_empty());
    }

    #[test]
    fn a_path_absent_at_start_changes_when_it_appears() {
        let mut baseline = vec![Digest::Absent];
        assert_eq!(fold_changes(&mut baseline, &[present(1)]), vec![0]);
    }

    #[test]
    fn directory_digest_ignores_hidden_names_and_follows_links() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        fs::create_dir(dir.join("..2026_a")).unwrap();
        fs::write(dir.join("..2026_a/tls.crt"), "one").unwrap();
        std::os::unix::fs::symlink("..2026_a", dir.join("..data")).unwrap();
        std::os::unix::fs::symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
        let before = digest_path(dir);

        fs::write(dir.join(".hidden"), "ignored").unwrap();
        assert_eq!(digest_path(dir), before, "hidden names are not content");

        fs::write(dir.join("..2026_a/tls.crt"), "two").unwrap();
        assert_ne!(digest_path(dir), before, "linked file content is content");
    }

    #[test]
    fn directory_digest_depends_on_names_not_just_contents() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        fs::write(a.path().join("x"), "same").unwrap();
        fs::write(b.path().join("y"), "same").unwrap();
        assert_ne!(digest_path(a.path()), digest_path(b.path()));
    }

    #[test]
    fn missing_path_is_absent() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(digest_path(&tmp.path().join("nope")), Digest::Absent);
    }
}
