//! Readiness probes against real peers: python3 senders in their own process groups for
//! `notify`, local servers for `tcp:`/`http:`, `sh` for `exec:`.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::spec::HttpTarget;
use super::*;
use crate::handoff::testutil::{python, Guard};

/// A sd_notify speaker. Modes: `ready` (send READY=1), `reload` (RELOADING=1, then
/// READY=1 after a line on stdin), `member` (a forked process of the same group sends
/// READY=1), `idle` (send nothing). It prints `sent`/`up` and then waits on stdin, so it
/// is alive whenever baton looks at its process group.
const NOTIFIER: &str = r#"
import os, socket, sys
def send(msg):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(msg.encode(), os.environ["NOTIFY_SOCKET"])
    s.close()
    print("sent", flush=True)
mode = sys.argv[1]
if mode == "ready":
    send("READY=1")
elif mode == "reload":
    send("RELOADING=1")
    sys.stdin.readline()
    send("READY=1")
elif mode == "member":
    pid = os.fork()
    if pid == 0:
        send("READY=1")
        sys.stdin.readline()
        os._exit(0)
    os.waitpid(pid, 0)
    sys.exit(0)
else:
    print("up", flush=True)
sys.stdin.readline()
"#;

fn soon(ms: u64) -> Instant {
    Instant::now() + Duration::from_millis(ms)
}

fn far() -> Instant {
    Instant::now() + crate::handoff::testutil::DEADLINE
}

/// Start a notifier as the leader of its own process group, like an epoch.
fn notifier(socket: &NotifySocket, mode: &str) -> Guard {
    Guard::spawn(
        Command::new(python())
            .args(["-c", NOTIFIER, mode])
            .env(ENV_NOTIFY_SOCKET, socket.path())
            .stdin(Stdio::piped())
            .process_group(0),
    )
}

#[tokio::test]
async fn ready_from_the_epoch_leader_makes_the_epoch_ready() {
    let dir = tempfile::tempdir().unwrap();
    let socket = NotifySocket::bind_in(dir.path(), 0).unwrap();
    let epoch = notifier(&socket, "ready");
    assert_eq!(epoch.line(), "sent");
    socket.wait(epoch.child.id(), far()).await.unwrap();
}

#[tokio::test]
async fn ready_from_another_process_of_the_epochs_group_is_credited() {
    let dir = tempfile::tempdir().unwrap();
    let socket = NotifySocket::bind_in(dir.path(), 1).unwrap();
    let epoch = notifier(&socket, "member");
    assert_eq!(epoch.line(), "sent");
    socket.wait(epoch.child.id(), far()).await.unwrap();
}

#[tokio::test]
async fn ready_from_a_process_of_another_group_is_not_credited() {
    let dir = tempfile::tempdir().unwrap();
    let socket = NotifySocket::bind_in(dir.path(), 2).unwrap();
    let epoch = notifier(&socket, "idle");
    assert_eq!(epoch.line(), "up");
    let outsider = notifier(&socket, "ready");
    assert_eq!(outsider.line(), "sent");

    // The outsider's datagram is already queued: it is read and refused.
    let err = socket.wait(epoch.child.id(), soon(300)).await.unwrap_err();
    assert!(err.contains("no READY=1 from process group"), "{err}");
    assert!(
        err.contains(&format!("pid {}", outsider.child.id())) && err.contains("ignored"),
        "{err}"
    );
}

#[tokio::test]
async fn reloading_is_not_readiness_but_the_ready_that_follows_is() {
    let dir = tempfile::tempdir().unwrap();
    let socket = NotifySocket::bind_in(dir.path(), 3).unwrap();
    let mut epoch = notifier(&socket, "reload");
    assert_eq!(epoch.line(), "sent");
    let err = socket.wait(epoch.child.id(), soon(300)).await.unwrap_err();
    assert!(err.contains("RELOADING=1"), "{err}");

    writeln!(epoch.child.stdin.as_mut().unwrap()).unwrap();
    assert_eq!(epoch.line(), "sent");
    socket.wait(epoch.child.id(), far()).await.unwrap();
}

#[tokio::test]
async fn notify_socket_file_is_removed_with_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = NotifySocket::bind_in(dir.path(), 4).unwrap();
    let path = socket.path().to_path_buf();
    assert!(path.exists());
    drop(socket);
    assert!(!path.exists());
}

#[tokio::test]
async fn tcp_is_ready_once_something_listens_and_reports_the_refusal_otherwise() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = listener.local_addr().unwrap().to_string();
    wait_tcp(&open, far()).await.unwrap();

    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let err = wait_tcp(&closed, soon(200)).await.unwrap_err();
    assert!(err.contains(&format!("connect {closed}")), "{err}");
    assert!(err.contains("refused"), "{err}");
}

/// A server answering each request with the next status of `statuses` (the last one
/// repeats); returns its address and a request counter.
async fn http_server(statuses: &'static [u16]) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let count = Arc::new(AtomicUsize::new(0));
    let seen = count.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let n = seen.fetch_add(1, Ordering::SeqCst);
            let status = statuses[n.min(statuses.len() - 1)];
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf).await;
            let answer = format!("HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n");
            let _ = conn.write_all(answer.as_bytes()).await;
        }
    });
    (addr, count)
}

#[tokio::test]
async fn http_retries_until_a_2xx_answer() {
    let (addr, count) = http_server(&[503, 503, 204]).await;
    let spec = ReadySpec::parse(&format!("http:http://{addr}/ready")).unwrap();
    let ReadySpec::Http(target) = spec else {
        panic!("http spec expected")
    };
    wait_http(&target, far()).await.unwrap();
    assert_eq!(count.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn http_failure_names_the_url_and_the_last_status() {
    let (addr, _) = http_server(&[500]).await;
    let target = HttpTarget {
        authority: addr.clone(),
        path: "/ready".into(),
    };
    let err = wait_http(&target, soon(200)).await.unwrap_err();
    assert!(
        err.contains(&format!("GET http://{addr}/ready: status 500")),
        "{err}"
    );
}

/// Run one exec attempt with std, polling for its exit; killed if dropped.
async fn run_attempt(mut cmd: Command) -> Result<(), String> {
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(cmd.spawn().map_err(|e| e.to_string())?);
    loop {
        if let Some(status) = child.0.try_wait().map_err(|e| e.to_string())? {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("{status}"))
            };
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn exec_retries_until_the_command_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready");
    let command = format!("test -e '{}'", flag.display());
    let attempts = AtomicUsize::new(0);
    wait_exec(&command, far(), |cmd| {
        // The flag appears only after the first attempt failed.
        if attempts.fetch_add(1, Ordering::SeqCst) == 1 {
            std::fs::write(&flag, "").unwrap();
        }
        run_attempt(cmd)
    })
    .await
    .unwrap();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn exec_failure_reports_the_last_exit_status() {
    let err = wait_exec("exit 3", soon(200), run_attempt)
        .await
        .unwrap_err();
    assert!(err.contains("exit status: 3"), "{err}");
}

#[tokio::test]
async fn delay_is_ready_after_its_duration_and_refuses_one_beyond_the_deadline() {
    let start = Instant::now();
    wait_delay(start, Duration::from_millis(100), far())
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(100));

    let err = wait_delay(Instant::now(), Duration::from_secs(60), soon(100))
        .await
        .unwrap_err();
    assert!(err.contains("ends after the ready timeout"), "{err}");
}

#[tokio::test]
async fn wait_ready_dispatches_and_prefixes_errors_with_the_flag() {
    let epoch = EpochProbe {
        started: Instant::now(),
        pgid: std::process::id(),
        notify: None,
    };
    let err = wait_ready(&ReadySpec::Notify, epoch, far(), run_attempt)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        "--ready notify: no notify socket was created for this epoch"
    );

    let spec = ReadySpec::parse("exec:true").unwrap();
    wait_ready(&spec, epoch, far(), run_attempt).await.unwrap();
    let spec = ReadySpec::parse("delay:10ms").unwrap();
    wait_ready(&spec, epoch, far(), run_attempt).await.unwrap();
}
