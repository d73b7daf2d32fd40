//! Writing each epoch's bootstrap as `<dir>/envoy-rev<N>.json` (and, through
//! [`write_private`], other private files Envoy reads, such as SDS resources).
//!
//! Invariant: the file at [`epoch_config_path`] is either absent or complete, never partial —
//! Envoy may be started on it at any moment — and it is created with mode 0600 (no window in
//! which another user could open it), because it names key files and may embed `--var` secrets.
//! It is not fsynced: it is read at once by the Envoy started on it and rendered afresh after a
//! crash of the machine, so durability buys nothing, and the two fsyncs cost 5 ms per restart
//! (a third of baton's own overhead) on a busy disk.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Rendered, WriteError};

/// Distinguishes temp files of concurrent writers within one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// `<dir>/envoy-rev<epoch>.<ext>` (`json`, or `yaml` for a static YAML bootstrap:
/// Envoy tells the formats apart by the extension).
pub fn epoch_config_path(dir: &Path, epoch: u32, ext: &str) -> PathBuf {
    dir.join(format!("envoy-rev{epoch}.{ext}"))
}

/// Atomically writes `rendered.text` to `target` (an [`epoch_config_path`]),
/// replacing any previous file, creating its directory if missing.
pub fn write_epoch_config(target: &Path, rendered: &Rendered) -> Result<(), WriteError> {
    write_private(target, rendered.text.as_bytes())
}

/// Atomically writes `bytes` to `target` with mode 0600 from creation (temp file in the
/// same directory, then rename over `target`), creating the directory if missing.
pub fn write_private(target: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(err("create directory", dir))?;
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Same directory as the target, so rename(2) is atomic; pid + counter keep concurrent
    // writers (two batons sharing a dir, or two threads) off each other's temp file.
    let temp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let written = write_new(&temp, bytes)
        .map_err(err("write", &temp))
        .and_then(|()| fs::rename(&temp, target).map_err(err("rename to", target)));
    if let Err(e) = written {
        // Best effort: the original error is what the operator needs to see.
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok(())
}

/// Removes an epoch's file; a file that is already gone is not an error.
pub fn remove_epoch_config(path: &Path) -> Result<(), WriteError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(WriteError {
            action: "remove",
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Adapts an `io::Error` into a [`WriteError`] about `path`.
fn err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> WriteError {
    let path = path.to_path_buf();
    move |source| WriteError {
        action,
        path,
        source,
    }
}

fn write_new(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn rendered(n: u32) -> Rendered {
        Rendered::from_json(serde_json::json!({ "n": n }))
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn writes_rendered_text_to_envoy_rev_n_with_mode_0600_and_no_temp_left() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = rendered(7);
        let path = epoch_config_path(dir.path(), 7, "json");
        write_epoch_config(&path, &r).expect("write");
        assert_eq!(path, dir.path().join("envoy-rev7.json"));
        assert_eq!(fs::read_to_string(&path).expect("read"), r.text);
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(names(dir.path()), ["envoy-rev7.json"]);
    }

    #[test]
    fn replacing_a_world_readable_file_leaves_mode_0600() {
        // The temp file is created 0600; a pre-existing world-readable file is replaced, not
        // rewritten in place, so it cannot keep its old mode.
        let dir = tempfile::tempdir().expect("tempdir");
        let path = epoch_config_path(dir.path(), 1, "json");
        fs::write(&path, "old").expect("seed");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        write_epoch_config(&path, &rendered(1)).expect("write");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn overwrite_replaces_content_and_creates_missing_dir() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("a/b");
        let path = epoch_config_path(&dir, 3, "json");
        write_epoch_config(&path, &rendered(1)).expect("first");
        write_epoch_config(&path, &rendered(2)).expect("second");
        assert_eq!(fs::read_to_string(path).expect("read"), rendered(2).text);
        assert_eq!(names(&dir), ["envoy-rev3.json"]);
    }

    #[test]
    fn failed_write_reports_the_path_and_leaves_nothing() {
        let base = tempfile::tempdir().expect("tempdir");
        // A file where the directory should be: creating the directory fails.
        let dir = base.path().join("file");
        fs::write(&dir, "").expect("seed");
        let err = write_epoch_config(&epoch_config_path(&dir, 0, "json"), &rendered(0))
            .expect_err("not a dir");
        assert_eq!(err.path, dir);
        assert_eq!(names(base.path()), ["file"]);
    }

    #[test]
    fn remove_ignores_missing_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = epoch_config_path(dir.path(), 2, "yaml");
        write_epoch_config(&path, &rendered(2)).expect("write");
        assert_eq!(names(dir.path()), ["envoy-rev2.yaml"]);
        remove_epoch_config(&path).expect("remove");
        remove_epoch_config(&path).expect("remove again");
        assert!(names(dir.path()).is_empty());
    }
}
