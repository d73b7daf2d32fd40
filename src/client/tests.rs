//! The client commands against the real status server, served in-process on
//! 127.0.0.1:0, with a fake shell answering commands.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::http::Request;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower::util::MapRequestLayer;

use super::*;
use crate::status::{self, Command, EpochStatus, Readiness, Snapshot, StatusState};
use crate::supervisor::Phase;

/// A status server with no supervisor behind it: the test plays the shell.
struct Baton {
    addr: SocketAddr,
    snapshots: watch::Sender<Snapshot>,
    commands: Option<mpsc::UnboundedReceiver<Command>>,
    /// One message per `GET /healthz/ready` the server received.
    readiness_polls: mpsc::UnboundedReceiver<()>,
}

async fn start_baton() -> Baton {
    let mut first = Snapshot::starting("generic", SystemTime::now());
    first.readiness = Readiness::not_ready("starting: epoch 0 not ready yet");
    let (snapshots, receiver) = watch::channel(first);
    let (sender, commands) = mpsc::unbounded_channel();
    let (polled, readiness_polls) = mpsc::unbounded_channel();
    let count_polls = MapRequestLayer::new(move |request: Request<Body>| {
        if request.uri().path() == "/healthz/ready" {
            let _ = polled.send(());
        }
        request
    });
    let app = status::router(StatusState::new(receiver, sender))
        .layer(count_polls)
        .into_make_service_with_connect_info::<SocketAddr>();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Baton {
        addr,
        snapshots,
        commands: Some(commands),
        readiness_polls,
    }
}

/// An address where nothing listens any more.
async fn closed_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test]
async fn restart_reports_the_epoch_baton_started_and_exits_0() {
    // Through `status::serve` itself: it must attach the peer address, or the
    // loopback check could not pass.
    let (_snapshots, receiver) = watch::channel(Snapshot::starting("generic", SystemTime::now()));
    let (sender, mut commands) = mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(status::serve(listener, StatusState::new(receiver, sender)));
    tokio::spawn(async move {
        while let Some(command) = commands.recv().await {
            if let Command::Restart { reply } = command {
                let _ = reply.send(RestartReply {
                    accepted: true,
                    coalesced: false,
                    epoch: Some(1),
                    detail: "started epoch 1".into(),
                });
            }
        }
    });
    let reply = request_restart(addr).await.unwrap();
    assert_eq!(reply.epoch, Some(1));
    assert_eq!(restart(addr).await, EXIT_OK);
}

#[tokio::test]
async fn restart_fails_cleanly_naming_the_address_when_nothing_listens() {
    let addr = closed_addr().await;
    let err = request_restart(addr).await.unwrap_err();
    assert!(matches!(err, ClientError::Unreachable(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains(&addr.to_string()), "{message}");
    assert!(message.contains("not reachable"), "{message}");
    assert_eq!(restart(addr).await, EXIT_FAILURE);
}

#[tokio::test]
async fn restart_exits_1_when_baton_is_shutting_down() {
    let mut baton = start_baton().await;
    drop(baton.commands.take());
    let err = request_restart(baton.addr).await.unwrap_err();
    assert!(
        matches!(err, ClientError::Refused { status, .. } if status == StatusCode::SERVICE_UNAVAILABLE),
        "{err:?}"
    );
    assert_eq!(restart(baton.addr).await, EXIT_FAILURE);
}

#[tokio::test]
async fn restart_exits_1_saying_why_when_no_restart_will_happen() {
    let (_snapshots, receiver) = watch::channel(Snapshot::starting("generic", SystemTime::now()));
    let (sender, mut commands) = mpsc::unbounded_channel();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(status::serve(listener, StatusState::new(receiver, sender)));
    tokio::spawn(async move {
        while let Some(command) = commands.recv().await {
            if let Command::Restart { reply } = command {
                let _ = reply.send(RestartReply {
                    accepted: false,
                    coalesced: false,
                    epoch: None,
                    detail: "ignored: the proxy was drained on request".into(),
                });
            }
        }
    });
    let err = match request_restart(addr).await {
        Ok(reply) if !reply.accepted => describe_restart(&reply),
        other => panic!("expected a refusal, got {other:?}"),
    };
    assert!(err.contains("drained on request"), "{err}");
    assert_eq!(restart(addr).await, EXIT_FAILURE);
}

#[test]
fn a_status_address_on_every_interface_is_reached_on_loopback() {
    let any: SocketAddr = "0.0.0.0:15020".parse().unwrap();
    assert_eq!(reachable(any), "127.0.0.1:15020".parse().unwrap());
    let any6: SocketAddr = "[::]:1".parse().unwrap();
    assert_eq!(reachable(any6), "[::1]:1".parse().unwrap());
    let given: SocketAddr = "10.0.0.2:15020".parse().unwrap();
    assert_eq!(reachable(given), given);
}

#[test]
fn restart_outcomes_read_as_one_line() {
    let reply = |coalesced, epoch: Option<u32>, detail: &str| RestartReply {
        accepted: epoch.is_some() || coalesced,
        coalesced,
        epoch,
        detail: detail.into(),
    };
    assert_eq!(
        describe_restart(&reply(false, Some(4), "")),
        "restart started: epoch 4"
    );
    assert_eq!(
        describe_restart(&reply(true, None, "restart of epoch 4 in flight")),
        "coalesced into the restart in flight (restart of epoch 4 in flight)"
    );
    assert_eq!(
        describe_restart(&reply(false, None, "deferred until epoch 2 has drained")),
        "restart not started (deferred until epoch 2 has drained)"
    );
}

#[tokio::test]
async fn wait_times_out_with_the_last_reason_baton_gave() {
    let baton = start_baton().await;
    let err = wait_ready(baton.addr, Duration::from_millis(300))
        .await
        .unwrap_err();
    let ClientError::NotReady { reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(reason, "starting: epoch 0 not ready yet");
    assert!(
        err.to_string().starts_with("not ready after 300ms"),
        "{err}"
    );
    assert_eq!(
        wait(baton.addr, Duration::from_millis(200)).await,
        EXIT_FAILURE
    );
}

#[tokio::test]
async fn wait_exits_0_once_the_snapshot_turns_ready() {
    let mut baton = start_baton().await;
    let waiting = tokio::spawn(wait(baton.addr, Duration::from_secs(30)));
    // Let it see "not ready" twice, so the ready answer is one it polled for.
    for _ in 0..2 {
        baton.readiness_polls.recv().await.unwrap();
    }
    assert!(!waiting.is_finished());
    baton
        .snapshots
        .send_modify(|s| s.readiness = Readiness::Ready);
    assert_eq!(waiting.await.unwrap(), EXIT_OK);
}

#[tokio::test]
async fn wait_keeps_polling_an_unreachable_baton_until_the_timeout() {
    let addr = closed_addr().await;
    let err = wait_ready(addr, Duration::from_millis(250))
        .await
        .unwrap_err();
    let ClientError::NotReady { reason, .. } = &err else {
        panic!("{err:?}")
    };
    assert!(reason.contains("not reachable"), "{reason}");
    assert!(reason.contains(&addr.to_string()), "{reason}");
}

#[tokio::test]
async fn status_reads_the_epochs_of_a_running_baton() {
    let baton = start_baton().await;
    let serving = EpochStatus {
        number: 0,
        pid: Some(4242),
        state: Phase::Serving,
        trigger: None,
        started_at: Some(SystemTime::now()),
        ready_at: Some(SystemTime::now()),
        exited_at: None,
        config_digest: None,
        exit_status: None,
        restart_epoch: 0,
        chain: 0,
        certs: Vec::new(),
    };
    baton.snapshots.send_modify(|s| {
        s.epochs = vec![serving.clone()];
        s.readiness = Readiness::Ready;
    });
    let report = fetch_epochs(baton.addr).await.unwrap();
    assert_eq!(report.epochs.len(), 1);
    assert_eq!(report.epochs[0].pid, Some(4242));
    assert!(render_status(&report).contains("4242"));
    assert_eq!(status(baton.addr).await, EXIT_OK);
}

#[tokio::test]
async fn status_exits_1_when_nothing_listens() {
    assert_eq!(status(closed_addr().await).await, EXIT_FAILURE);
}
