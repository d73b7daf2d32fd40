//! The watcher against real inotify, in a unique temp dir per test.
//!
//! Positive waits have a deadline; "no notification" is a bounded negative check of
//! `quiet * 5`, always followed by a real change that must be seen, so a dead watcher
//! cannot pass a negative test.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc::{self, UnboundedReceiver};
use tokio::time::timeout;

use super::*;

const QUIET: Duration = Duration::from_millis(100);
const DEADLINE: Duration = Duration::from_secs(10);

struct Harness {
    rx: UnboundedReceiver<Notice>,
    _handle: WatchHandle,
}

impl Harness {
    fn start(paths: &[PathBuf]) -> Self {
        Self::start_with(paths, QUIET, DEFAULT_CAP)
    }

    fn start_with(paths: &[PathBuf], quiet: Duration, cap: Duration) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let config = WatchConfig {
            paths: paths.to_vec(),
            quiet,
            cap,
            settling: None,
        };
        let handle = spawn(config, tx).expect("watcher starts");
        Self {
            rx,
            _handle: handle,
        }
    }

    async fn expect_change(&mut self) -> Change {
        match timeout(DEADLINE, self.rx.recv()).await {
            Ok(Some(Notice::Changed(change))) => change,
            Ok(Some(other)) => panic!("expected a change, got {other:?}"),
            Ok(None) => panic!("watcher stopped"),
            Err(_) => panic!("no change within {DEADLINE:?}"),
        }
    }

    async fn expect_none(&mut self) {
        if let Ok(change) = timeout(QUIET * 5, self.rx.recv()).await {
            panic!("unexpected notification: {change:?}");
        }
    }

    /// Exactly one change: one arrives, then nothing more for the negative window.
    async fn expect_exactly_one(&mut self) -> Change {
        let change = self.expect_change().await;
        self.expect_none().await;
        change
    }
}

fn write(path: &Path, content: &str) {
    fs::write(path, content).expect("write test file");
}

/// A Kubernetes secret volume: `tls.crt -> ..data/tls.crt`, `..data -> ..<stamp>`.
fn k8s_volume(dir: &Path, stamp: &str, content: &str) -> PathBuf {
    let data = dir.join(stamp);
    fs::create_dir(&data).unwrap();
    write(&data.join("tls.crt"), content);
    symlink(stamp, dir.join("..data")).unwrap();
    symlink("..data/tls.crt", dir.join("tls.crt")).unwrap();
    dir.join("tls.crt")
}

/// What kubelet's atomic writer does on an update.
fn k8s_swap(dir: &Path, old_stamp: &str, new_stamp: &str, content: &str) {
    let data = dir.join(new_stamp);
    fs::create_dir(&data).unwrap();
    write(&data.join("tls.crt"), content);
    symlink(new_stamp, dir.join("..data_tmp")).unwrap();
    fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    fs::remove_dir_all(dir.join(old_stamp)).unwrap();
}

#[tokio::test(flavor = "current_thread")]
async fn kubernetes_symlink_swap_is_one_change() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = k8s_volume(tmp.path(), "..2026_01", "old");
    let mut h = Harness::start(std::slice::from_ref(&cert));

    k8s_swap(tmp.path(), "..2026_01", "..2026_02", "new");
    let change = h.expect_exactly_one().await;
    assert_eq!(change.changed, vec![cert.clone()]);

    // The watch survives the swap: a second rotation is seen too.
    k8s_swap(tmp.path(), "..2026_02", "..2026_03", "newer");
    h.expect_exactly_one().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_burst_gets_one_hint_before_its_change() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = k8s_volume(tmp.path(), "..2026_01", "old");
    let (tx, mut changes) = mpsc::unbounded_channel();
    let (hint_tx, mut hints) = mpsc::unbounded_channel();
    let mut config = WatchConfig::new(vec![cert.clone()]);
    config.settling = Some(hint_tx);
    let _handle = spawn(config, tx).expect("watcher starts");

    for (old, new) in [("..2026_01", "..2026_02"), ("..2026_02", "..2026_03")] {
        let swapped = std::time::Instant::now();
        k8s_swap(tmp.path(), old, new, new);
        timeout(DEADLINE, hints.recv())
            .await
            .expect("a hint within the deadline")
            .expect("watcher running");
        assert!(
            changes.try_recv().is_err(),
            "the hint comes before the decision"
        );
        let notice = timeout(DEADLINE, changes.recv()).await.unwrap().unwrap();
        let Notice::Changed(change) = notice else {
            panic!("expected a change, got {notice:?}");
        };
        assert_eq!(change.changed, vec![cert.clone()]);
        assert!(swapped.elapsed() >= DEFAULT_QUIET);
        assert!(hints.try_recv().is_err(), "one hint per burst");
    }
}

#[tokio::test(flavor = "current_thread")]
async fn kubernetes_swap_to_identical_content_is_no_change() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = k8s_volume(tmp.path(), "..2026_01", "same");
    let mut h = Harness::start(std::slice::from_ref(&cert));

    k8s_swap(tmp.path(), "..2026_01", "..2026_02", "same");
    h.expect_none().await;

    k8s_swap(tmp.path(), "..2026_02", "..2026_03", "different");
    h.expect_exactly_one().await;
}

#[tokio::test(flavor = "current_thread")]
async fn rename_replace_is_one_change_and_the_watch_survives_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("tls.crt");
    write(&cert, "old");
    let mut h = Harness::start(std::slice::from_ref(&cert));

    let staged = tmp.path().join(".tls.crt.tmp");
    write(&staged, "new");
    fs::rename(&staged, &cert).unwrap();
    assert_eq!(h.expect_exactly_one().await.changed, vec![cert.clone()]);

    write(&cert, "newer");
    h.expect_exactly_one().await;
}

#[tokio::test(flavor = "current_thread")]
async fn in_place_rewrite_is_one_change() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("tls.crt");
    write(&cert, "old");
    let mut h = Harness::start(std::slice::from_ref(&cert));

    write(&cert, "new");
    let change = h.expect_exactly_one().await;
    let latency = change.decided_at - change.first_event_at;
    assert!(
        latency >= QUIET,
        "decided before the quiet period: {latency:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn touch_read_and_identical_rewrite_are_no_change() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("tls.crt");
    write(&cert, "content");
    let mut h = Harness::start(std::slice::from_ref(&cert));

    let file = fs::File::options().write(true).open(&cert).unwrap();
    file.set_modified(SystemTime::now() + Duration::from_secs(60))
        .unwrap();
    drop(file);
    h.expect_none().await;

    for _ in 0..100 {
        fs::read(&cert).unwrap();
    }
    h.expect_none().await;

    write(&cert, "content");
    h.expect_none().await;

    write(&cert, "changed");
    h.expect_exactly_one().await;
}

#[tokio::test(flavor = "current_thread")]
async fn burst_of_a_thousand_writes_is_one_change() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("tls.crt");
    write(&cert, "start");
    let mut h = Harness::start(std::slice::from_ref(&cert));

    for i in 0..1_000 {
        write(&cert, &format!("version {i}"));
    }
    let last_write = std::time::Instant::now();
    let change = h.expect_exactly_one().await;
    // The writes queued their events while this runtime was busy: the decision must
    // still count the last of them, not fire on the first one's stale deadline.
    assert!(
        change.decided_at >= last_write + QUIET,
        "decided {:?} after the last write",
        change.decided_at.saturating_duration_since(last_write)
    );
}

#[tokio::test(flavor = "current_thread")]
async fn writes_that_never_pause_are_reported_by_the_cap() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("tls.crt");
    write(&cert, "start");
    // A quiet period far above the writer's pace: a machine busy enough to stall the
    // writer for the whole quiet period would end the burst early (seen at 100 ms).
    let (quiet, cap) = (Duration::from_millis(300), Duration::from_millis(800));
    let mut h = Harness::start_with(std::slice::from_ref(&cert), quiet, cap);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (stop, cert) = (stop.clone(), cert.clone());
        // A steady writer, paced well inside the quiet period: the workload, not a
        // synchronisation.
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && i < 100_000 {
                write(&cert, &format!("version {i}"));
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let change = h.expect_change().await;
    let still_writing = !writer.is_finished();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();

    assert!(still_writing, "the change must come while writes continue");
    let latency = change.decided_at - change.first_event_at;
    assert!(
        latency >= cap && latency < cap + Duration::from_secs(1),
        "decided {latency:?} after the first event, cap {cap:?}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_removed_and_recreated_directory_is_watched_again() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("certs");
    fs::create_dir(&certs).unwrap();
    let (cert, key) = (certs.join("tls.crt"), certs.join("tls.key"));
    write(&cert, "cert 1");
    write(&key, "key 1");
    let mut h = Harness::start(&[cert.clone(), key.clone()]);

    // As some secret-sync tools do: the directory goes, for longer than the quiet
    // period (so a burst settles while it is missing), then comes back.
    fs::remove_dir_all(&certs).unwrap();
    h.expect_none().await;
    fs::create_dir(&certs).unwrap();
    write(&cert, "cert 2");
    write(&key, "key 2");
    let change = h.expect_change().await;
    h.expect_none().await;
    assert_eq!(change.changed, vec![cert.clone(), key.clone()]);

    // A later rotation in the recreated directory is seen too.
    write(&cert, "cert 3");
    assert_eq!(h.expect_exactly_one().await.changed, vec![cert]);
}

#[tokio::test(flavor = "current_thread")]
async fn a_directory_recreated_several_levels_deep_is_watched_again() {
    let tmp = tempfile::tempdir().unwrap();
    let certs = tmp.path().join("secrets/tls/current");
    fs::create_dir_all(&certs).unwrap();
    let cert = certs.join("tls.crt");
    write(&cert, "one");
    let mut h = Harness::start(std::slice::from_ref(&cert));

    fs::remove_dir_all(tmp.path().join("secrets")).unwrap();
    h.expect_none().await;
    // Each level appears in its own burst, so the watch climbs down one at a time.
    fs::create_dir(tmp.path().join("secrets")).unwrap();
    h.expect_none().await;
    fs::create_dir_all(&certs).unwrap();
    h.expect_none().await;
    write(&cert, "two");
    assert_eq!(h.expect_exactly_one().await.changed, vec![cert.clone()]);
    write(&cert, "three");
    assert_eq!(h.expect_exactly_one().await.changed, vec![cert]);
}

#[tokio::test(flavor = "current_thread")]
async fn removed_file_is_no_change_until_it_returns_with_new_content() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("tls.crt");
    write(&cert, "old");
    let mut h = Harness::start(std::slice::from_ref(&cert));

    fs::remove_file(&cert).unwrap();
    h.expect_none().await;

    write(&cert, "old");
    h.expect_none().await;

    fs::remove_file(&cert).unwrap();
    h.expect_none().await;
    write(&cert, "new");
    h.expect_exactly_one().await;
}

#[tokio::test(flavor = "current_thread")]
async fn new_file_in_watched_directory_is_one_change() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("static");
    fs::create_dir(&dir).unwrap();
    write(&dir.join("index.html"), "hello");
    let mut h = Harness::start(std::slice::from_ref(&dir));

    write(&dir.join("new.html"), "new");
    assert_eq!(h.expect_exactly_one().await.changed, vec![dir.clone()]);

    write(&dir.join(".hidden"), "not content");
    h.expect_none().await;
}

#[tokio::test(flavor = "current_thread")]
async fn watched_directory_replaced_by_rename_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("static");
    fs::create_dir(&dir).unwrap();
    write(&dir.join("index.html"), "v1");
    let mut h = Harness::start(std::slice::from_ref(&dir));

    let staged = tmp.path().join("static.new");
    fs::create_dir(&staged).unwrap();
    write(&staged.join("index.html"), "v2");
    fs::remove_dir_all(&dir).unwrap();
    fs::rename(&staged, &dir).unwrap();
    h.expect_exactly_one().await;

    // The new directory is watched, not only the one that was replaced.
    write(&dir.join("index.html"), "v3");
    h.expect_exactly_one().await;
}

#[tokio::test(flavor = "current_thread")]
async fn only_the_changed_paths_are_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("tls.crt");
    let key = tmp.path().join("tls.key");
    write(&cert, "cert");
    write(&key, "key");
    let mut h = Harness::start(&[cert.clone(), key.clone()]);

    write(&key, "new key");
    assert_eq!(h.expect_exactly_one().await.changed, vec![key]);
}

#[tokio::test(flavor = "current_thread")]
async fn dropping_the_handle_closes_the_channel() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("tls.crt");
    write(&cert, "x");
    let Harness { mut rx, _handle } = Harness::start(std::slice::from_ref(&cert));
    drop(_handle);
    match timeout(DEADLINE, rx.recv()).await {
        Ok(None) => {}
        other => panic!("expected the channel to close, got {other:?}"),
    }
}

#[test]
fn spawn_outside_a_runtime_is_an_error_not_a_panic() {
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = spawn(WatchConfig::new(vec![PathBuf::from("x")]), tx).unwrap_err();
    assert!(matches!(err, WatchError::NoRuntime));
}

#[tokio::test(flavor = "current_thread")]
async fn missing_directory_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("nope/tls.crt");
    let (tx, _rx) = mpsc::unbounded_channel();
    let err = spawn(WatchConfig::new(vec![cert]), tx).unwrap_err();
    assert!(
        err.to_string()
            .contains(&tmp.path().join("nope").display().to_string()),
        "{err}"
    );
}

#[test]
fn files_are_watched_through_their_parent_and_directories_also_directly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("static");
    fs::create_dir(&dir).unwrap();
    let dirs = dirs_to_watch(&[
        tmp.path().join("tls.crt"),
        tmp.path().join("tls.key"),
        dir.clone(),
        PathBuf::from("relative.crt"),
    ]);
    let mut expected = vec![tmp.path().to_path_buf(), dir, PathBuf::from(".")];
    expected.sort();
    assert_eq!(dirs, expected);
}

#[test]
fn reads_are_not_content_events_but_close_after_write_is() {
    use notify::event::{CreateKind, ModifyKind};
    assert!(!is_content_event(&EventKind::Access(AccessKind::Read)));
    assert!(!is_content_event(&EventKind::Access(AccessKind::Open(
        AccessMode::Any
    ))));
    assert!(!is_content_event(&EventKind::Access(AccessKind::Close(
        AccessMode::Read
    ))));
    assert!(is_content_event(&EventKind::Access(AccessKind::Close(
        AccessMode::Write
    ))));
    assert!(is_content_event(&EventKind::Create(CreateKind::File)));
    assert!(is_content_event(&EventKind::Modify(ModifyKind::Any)));
}

#[tokio::test(flavor = "current_thread")]
async fn wait_for_returns_when_the_file_appears_during_the_wait() {
    let tmp = tempfile::tempdir().unwrap();
    let cert = tmp.path().join("tls.crt");
    let paths = [cert.clone()];
    let reported = std::cell::RefCell::new(Vec::new());
    let wait = wait_for(&paths, DEADLINE, |missing, _| {
        reported.borrow_mut().push(missing.to_vec())
    });
    tokio::pin!(wait);
    // Poll once so the first check has seen the file missing.
    tokio::select! {
        biased;
        res = &mut wait => panic!("finished before the file existed: {res:?}"),
        () = std::future::ready(()) => {}
    }
    write(&cert, "x");
    timeout(DEADLINE, wait)
        .await
        .expect("within the deadline")
        .expect("file appeared");
    // What it waits for is said once at the start (then every REPORT_EVERY).
    assert_eq!(*reported.borrow(), vec![vec![cert]]);
}

#[tokio::test(flavor = "current_thread")]
async fn wait_for_times_out_naming_the_missing_files() {
    let tmp = tempfile::tempdir().unwrap();
    let present = tmp.path().join("tls.crt");
    let missing = tmp.path().join("tls.key");
    write(&present, "x");
    let err = wait_for(
        &[present, missing.clone()],
        Duration::from_millis(200),
        |_, _| {},
    )
    .await
    .unwrap_err();
    assert_eq!(err.missing, vec![missing.clone()]);
    assert!(
        err.to_string().contains(&missing.display().to_string()),
        "{err}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn wait_for_treats_a_dangling_symlink_as_missing() {
    let tmp = tempfile::tempdir().unwrap();
    let link = tmp.path().join("tls.crt");
    symlink("..data/tls.crt", &link).unwrap();
    let err = wait_for(
        std::slice::from_ref(&link),
        Duration::from_millis(100),
        |_, _| {},
    )
    .await
    .unwrap_err();
    assert_eq!(err.missing, vec![link]);
}
