//! What a baton leaves in `--config-dir` and `/dev/shm` when it cannot clean up
//! after itself (SIGKILL, OOM kill, a node crash), removed by the next baton on the
//! same directory before it starts, and by every baton when it exits (a preflight
//! still writing when the shutdown came cannot leave its file behind).
//!
//! What counts: `envoy-rev<N>.json|yaml` (each epoch's bootstrap) and
//! `envoy-warm-<digest>.json|yaml` (one validated ahead of its epoch), the SDS resources of
//! `--cert-rotation sds` (`sds-cert-<N>.json`, which hold private keys), the temp files
//! of both (`.<name>.<pid>.<n>.tmp`), `base-id.<chain>` and the hot-restart segment
//! each one names (`/dev/shm/envoy_shared_memory_<base_id*10>`).
//!
//! **Invariant:** nothing in use is removed. A segment mapped by a live process, or
//! whose base id a live Envoy's hot-restart socket still holds, stays with its
//! base-id file (another baton on this host may have picked the same base id since);
//! a bootstrap a live process runs with (and then every SDS resource, which that
//! Envoy may still reload), or a temp file a live writer other than this baton owns,
//! stays too. What stays is logged with its reason.

use std::path::{Path, PathBuf};

use crate::sys::{envoy_shm, procfs};

/// What a sweep did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Swept {
    /// Removed.
    pub removed: Vec<PathBuf>,
    /// Left in place, with why.
    pub kept: Vec<(PathBuf, String)>,
}

/// One of baton's files in the config dir.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Leftover {
    /// An epoch's bootstrap.
    Bootstrap,
    /// An SDS resource (`--cert-rotation sds`).
    Secret,
    /// A bootstrap being written by the process `pid`.
    Temp { pid: u32 },
    /// A chain's base id file.
    BaseId,
}

/// Which of baton's files `name` is, if any.
fn classify(name: &str) -> Option<Leftover> {
    let epoch_file = |stem: &str| {
        let (rev, ext) = stem.rsplit_once('.')?;
        let named = match rev.strip_prefix("envoy-rev") {
            Some(digits) => is_number(digits),
            // A bootstrap validated ahead of its epoch (`envoy-warm-<digest>`).
            None => rev
                .strip_prefix("envoy-warm-")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_hexdigit())),
        };
        (matches!(ext, "json" | "yaml") && named).then_some(Leftover::Bootstrap)
    };
    let secret = |stem: &str| {
        let digits = stem.strip_prefix("sds-cert-")?.strip_suffix(".json")?;
        is_number(digits).then_some(Leftover::Secret)
    };
    let ours = |stem: &str| epoch_file(stem).or_else(|| secret(stem));
    if let Some(n) = name.strip_prefix("base-id.") {
        return is_number(n).then_some(Leftover::BaseId);
    }
    if let Some(temp) = name.strip_prefix('.').and_then(|t| t.strip_suffix(".tmp")) {
        // <name>.<pid>.<counter>
        let mut parts = temp.rsplitn(3, '.');
        let (counter, pid, stem) = (parts.next()?, parts.next()?, parts.next()?);
        ours(stem)?;
        return is_number(counter)
            .then(|| pid.parse().ok())
            .flatten()
            .map(|pid| Leftover::Temp { pid });
    }
    ours(name)
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Remove what no live process uses of baton's files in `dir`, and the hot-restart
/// segments their base-id files name. A missing `dir` holds nothing.
pub fn sweep(dir: &Path) -> Swept {
    let mut swept = Swept::default();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return swept;
    };
    let me = std::process::id();
    let mut found: Vec<(PathBuf, Leftover)> = entries
        .flatten()
        .filter_map(|e| Some((e.path(), e.file_name().to_str().and_then(classify)?)))
        .collect();
    // Secrets last: whether one stays depends on the bootstraps.
    found.sort_by_key(|(_, kind)| *kind == Leftover::Secret);
    let mut envoy_runs: Option<String> = None;
    for (path, kind) in found {
        let keep = match kind {
            Leftover::Bootstrap => {
                let users = procfs::users_of(&path);
                let why = (!users.is_empty()).then(|| format!("pid {users:?} runs with it"));
                if why.is_some() {
                    envoy_runs = Some(format!(
                        "an Envoy still runs with {} and may reload it",
                        path.display()
                    ));
                }
                why
            }
            Leftover::Secret => envoy_runs.clone(),
            // This baton writes no file while it sweeps: its own are stale.
            Leftover::Temp { pid } if pid != me && alive(pid) => {
                Some(format!("pid {pid} may still be writing it"))
            }
            Leftover::Temp { .. } => None,
            Leftover::BaseId => sweep_segment(&path, &mut swept),
        };
        match keep {
            Some(why) => swept.kept.push((path, why)),
            None => remove(path, &mut swept),
        }
    }
    swept
}

/// The segment `base_id_file` names goes unless it is in use; then the file stays
/// too, as the way to find it. Returns why the file must stay.
fn sweep_segment(base_id_file: &Path, swept: &mut Swept) -> Option<String> {
    let text = std::fs::read_to_string(base_id_file).ok()?;
    // Envoy writes it as it starts: an empty or partial file names no segment.
    let base_id: u64 = text.trim().parse().ok()?;
    let segment = envoy_shm::segment_path(base_id);
    match envoy_shm::in_use(base_id) {
        Some(why) => {
            let why = format!("{} is in use: {why}", segment.display());
            swept.kept.push((segment, why.clone()));
            Some(why)
        }
        None => {
            if segment.exists() {
                remove(segment, swept);
            }
            None
        }
    }
}

fn remove(path: PathBuf, swept: &mut Swept) {
    match std::fs::remove_file(&path) {
        Ok(()) => swept.removed.push(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => swept.kept.push((path, format!("cannot remove: {e}"))),
    }
}

fn alive(pid: u32) -> bool {
    procfs::status_of(pid).is_some()
}

/// Sweep `dir` and log what was removed and what was left, saying `when`.
pub fn sweep_and_log(dir: &Path, when: &'static str) {
    let swept = sweep(dir);
    if !swept.removed.is_empty() {
        tracing::info!(
            config_dir = %dir.display(),
            removed = ?swept.removed,
            "{when}: removed files left behind"
        );
    }
    for (path, why) in &swept.kept {
        tracing::warn!(path = %path.display(), "{when}: left in place: {why}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_baton_s_own_files_are_recognised() {
        assert_eq!(classify("envoy-rev12.json"), Some(Leftover::Bootstrap));
        assert_eq!(classify("envoy-rev0.yaml"), Some(Leftover::Bootstrap));
        assert_eq!(
            classify("envoy-warm-0123abcd4567ef89.json"),
            Some(Leftover::Bootstrap)
        );
        assert_eq!(classify("base-id.3"), Some(Leftover::BaseId));
        assert_eq!(
            classify(".envoy-rev4.json.4242.7.tmp"),
            Some(Leftover::Temp { pid: 4242 })
        );
        assert_eq!(classify("sds-cert-0.json"), Some(Leftover::Secret));
        assert_eq!(
            classify(".sds-cert-1.json.4242.0.tmp"),
            Some(Leftover::Temp { pid: 4242 })
        );
        for other in [
            "envoy-rev.json",
            "envoy-revX.json",
            "envoy-rev1.txt",
            "envoy-warm-.json",
            "envoy-warm-xyz.json",
            "my-envoy.yaml",
            "base-id.",
            "base-id.x",
            ".envoy-rev4.json.tmp",
            ".envoy-rev4.json.x.7.tmp",
            "sds-cert-.json",
            "sds-cert-0.yaml",
            "sds-certs-0.json",
            "tls.crt",
        ] {
            assert_eq!(classify(other), None, "{other}");
        }
    }

    #[test]
    fn stale_files_go_and_other_files_stay() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let dead = u32::MAX; // no process has it
        for name in [
            "envoy-rev0.json".to_string(),
            "envoy-rev3.yaml".to_string(),
            format!(".envoy-rev4.json.{dead}.0.tmp"),
            format!(".envoy-rev5.json.{}.0.tmp", std::process::id()),
            "base-id.0".to_string(),
            "base-id.1".to_string(),
            "sds-cert-0.json".to_string(),
            format!(".sds-cert-1.json.{dead}.3.tmp"),
            "user-notes.txt".to_string(),
        ] {
            std::fs::write(d.join(name), "").unwrap();
        }
        // A base id no Envoy uses, whose segment is already gone.
        std::fs::write(d.join("base-id.1"), format!("{}\n", u64::MAX / 100)).unwrap();
        let swept = sweep(d);
        assert!(swept.kept.is_empty(), "{:?}", swept.kept);
        assert_eq!(swept.removed.len(), 8, "{:?}", swept.removed);
        let left: Vec<_> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left, vec!["user-notes.txt"]);
    }

    #[test]
    fn a_temp_file_of_a_live_writer_stays() {
        let dir = tempfile::tempdir().unwrap();
        // Pid 1 is alive and is not this test.
        let temp = dir.path().join(".envoy-rev1.json.1.0.tmp");
        std::fs::write(&temp, "").unwrap();
        let swept = sweep(dir.path());
        assert!(swept.removed.is_empty());
        assert_eq!(swept.kept.len(), 1);
        assert!(temp.exists());
    }

    #[test]
    fn a_missing_directory_holds_nothing() {
        assert_eq!(sweep(Path::new("/no/such/dir")), Swept::default());
    }
}
