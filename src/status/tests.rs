//! The routes, exercised in-process through `tower::ServiceExt::oneshot` with the
//! peer address injected, and a fake shell answering on the command channel.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::body::Body;
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{header, Method, Request, StatusCode};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tower::ServiceExt;

use super::*;
use crate::supervisor::Phase;

const LOOPBACK: &str = "127.0.0.1:40000";
const REMOTE: &str = "10.1.2.3:40000";

struct Harness {
    snapshots: watch::Sender<Snapshot>,
    commands: mpsc::UnboundedReceiver<Command>,
    state: StatusState,
}

fn harness() -> Harness {
    let (snapshots, receiver) = watch::channel(Snapshot::starting("generic", SystemTime::now()));
    let (sender, commands) = mpsc::unbounded_channel();
    Harness {
        snapshots,
        commands,
        state: StatusState::new(receiver, sender),
    }
}

async fn call(state: &StatusState, method: Method, path: &str, peer: &str) -> (StatusCode, String) {
    let peer: SocketAddr = peer.parse().unwrap();
    let request = Request::builder()
        .method(method)
        .uri(path)
        .body(Body::empty())
        .unwrap();
    let response = router(state.clone())
        .layer(MockConnectInfo(peer))
        .oneshot(request)
        .await
        .unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// A fake shell: answers every command the way a running baton would.
fn answer_commands(mut commands: mpsc::UnboundedReceiver<Command>) {
    tokio::spawn(async move {
        while let Some(command) = commands.recv().await {
            match command {
                Command::Restart { reply } => {
                    let _ = reply.send(RestartReply {
                        accepted: true,
                        coalesced: false,
                        epoch: Some(4),
                        detail: "started epoch 4".into(),
                    });
                }
                Command::Drain { reply } => {
                    let _ = reply.send("draining epoch 3".into());
                }
                Command::Quit { reply } => {
                    let _ = reply.send("shutting down".into());
                }
            }
        }
    });
}

fn epoch(number: u32, state: Phase) -> EpochStatus {
    EpochStatus {
        number,
        pid: Some(100 + number),
        state,
        trigger: None,
        started_at: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
        ready_at: None,
        exited_at: None,
        config_digest: Some(format!("sha256:{number}")),
        exit_status: None,
        restart_epoch: number,
        chain: 0,
        certs: Vec::new(),
    }
}

#[tokio::test]
async fn readiness_is_503_with_the_reason_until_the_snapshot_says_ready() {
    let h = harness();
    h.snapshots.send_modify(|s| {
        s.readiness = Readiness::not_ready("starting: epoch 0\nnot ready yet");
    });
    assert_eq!(
        call(&h.state, Method::GET, "/healthz/ready", REMOTE).await,
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "starting: epoch 0 not ready yet\n".to_string()
        )
    );
    h.snapshots.send_modify(|s| s.readiness = Readiness::Ready);
    assert_eq!(
        call(&h.state, Method::GET, "/healthz/ready", REMOTE).await,
        (StatusCode::OK, "ready\n".to_string())
    );
}

#[tokio::test]
async fn epochs_lists_epochs_oldest_first_with_the_last_error() {
    let h = harness();
    h.snapshots.send_modify(|s| {
        s.epochs = vec![epoch(2, Phase::Draining), epoch(3, Phase::Serving)];
        s.last_error = Some("epoch 4: config: unknown cluster".into());
        s.readiness = Readiness::Ready;
    });
    let (status, body) = call(&h.state, Method::GET, "/epochs", REMOTE).await;
    assert_eq!(status, StatusCode::OK);
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["last_error"], "epoch 4: config: unknown cluster");
    assert_eq!(json["readiness"]["status"], "ready");
    assert_eq!(json["epochs"][0]["number"], 2);
    assert_eq!(json["epochs"][0]["state"], "draining");
    assert_eq!(
        json["epochs"][1],
        serde_json::json!({
            "number": 3, "pid": 103, "state": "serving", "trigger": null,
            "started_at": "2023-11-14T22:13:20.000Z", "ready_at": null, "exited_at": null,
            "config_digest": "sha256:3", "exit_status": null, "restart_epoch": 3, "chain": 0,
            "certs": []
        })
    );
    let report: EpochsReport = serde_json::from_str(&body).unwrap();
    assert_eq!(report.epochs, h.snapshots.borrow().epochs);
}

#[tokio::test]
async fn restart_from_loopback_answers_202_with_the_shells_decision() {
    let h = harness();
    answer_commands(h.commands);
    let (status, body) = call(&h.state, Method::POST, "/restart", LOOPBACK).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let reply: RestartReply = serde_json::from_str(&body).unwrap();
    assert_eq!(
        reply,
        RestartReply {
            accepted: true,
            coalesced: false,
            epoch: Some(4),
            detail: "started epoch 4".into()
        }
    );
}

#[tokio::test]
async fn drain_and_quit_answer_202_with_the_shells_line() {
    let h = harness();
    answer_commands(h.commands);
    assert_eq!(
        call(&h.state, Method::POST, "/drain", "[::1]:5").await,
        (StatusCode::ACCEPTED, "draining epoch 3\n".to_string())
    );
    assert_eq!(
        call(
            &h.state,
            Method::POST,
            "/quitquitquit",
            "[::ffff:127.0.0.1]:5"
        )
        .await,
        (StatusCode::ACCEPTED, "shutting down\n".to_string())
    );
}

#[tokio::test]
async fn mutating_routes_refuse_non_loopback_peers_without_telling_the_shell() {
    let mut h = harness();
    for path in ["/restart", "/drain", "/quitquitquit"] {
        let (status, _) = call(&h.state, Method::POST, path, REMOTE).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path}");
    }
    assert!(
        h.commands.try_recv().is_err(),
        "a command reached the shell"
    );
}

#[tokio::test]
async fn mutating_routes_accept_post_only() {
    let h = harness();
    for path in ["/restart", "/drain", "/quitquitquit"] {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let (status, _) = call(&h.state, method.clone(), path, LOOPBACK).await;
            assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        }
    }
}

#[tokio::test]
async fn mutating_routes_answer_503_when_the_shell_is_gone() {
    let h = harness();
    drop(h.commands);
    for path in ["/restart", "/drain", "/quitquitquit"] {
        let (status, body) = call(&h.state, Method::POST, path, LOOPBACK).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert!(body.contains("shutting down"), "{body}");
    }
}

#[tokio::test]
async fn restart_answers_503_when_the_shell_drops_the_request_unanswered() {
    let mut h = harness();
    tokio::spawn(async move {
        while let Some(command) = h.commands.recv().await {
            drop(command);
        }
    });
    let (status, _) = call(&h.state, Method::POST, "/restart", LOOPBACK).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn restart_answers_503_when_the_shell_does_not_decide_in_time() {
    let h = harness();
    // The receiver stays alive and never reads: a wedged shell.
    let _wedged = h.commands;
    let state = h.state.with_reply_timeout(Duration::from_millis(50));
    let (status, body) = call(&state, Method::POST, "/restart", LOOPBACK).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.contains("did not answer within 50ms"), "{body}");
}

/// A fake Envoy admin answering `/stats/prometheus` with `text`.
async fn fake_envoy_admin(text: &'static str) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new().route("/stats/prometheus", get(move || async move { text }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Prometheus text checks that matter when two expositions are concatenated: no
/// OpenMetrics EOF, no family described twice, every sample line `name[{…}] value`.
fn assert_valid_exposition(text: &str) {
    assert!(text.ends_with('\n'), "no final newline");
    let mut described = HashSet::new();
    for line in text.lines() {
        assert_ne!(line, "# EOF", "EOF marker inside:\n{text}");
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let name = rest.split(' ').next().unwrap();
            assert!(described.insert(name.to_string()), "{name} typed twice");
        } else if !line.starts_with('#') {
            let (_, value) = line.rsplit_once(' ').expect(line);
            assert!(value.parse::<f64>().is_ok(), "bad sample: {line}");
        }
    }
}

const ENVOY_TEXT: &str = "# TYPE envoy_server_live gauge\nenvoy_server_live{} 1";

#[tokio::test]
async fn prometheus_serves_baton_metrics_then_envoys_own() {
    let h = harness();
    let admin = fake_envoy_admin(ENVOY_TEXT).await;
    h.snapshots.send_modify(|s| {
        s.driver = "envoy".into();
        s.envoy_admin = Some(admin);
        s.restarts_total = 7;
        s.restarts_by_trigger.insert("signal".into(), 7);
        s.epochs = vec![epoch(5, Phase::Serving)];
        s.readiness = Readiness::Ready;
    });
    let request = Request::get("/stats/prometheus")
        .body(Body::empty())
        .unwrap();
    let response = router(h.state.clone()).oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert_valid_exposition(&text);
    let lines: Vec<&str> = text.lines().collect();
    for line in [
        "baton_restarts_total{trigger=\"signal\"} 7",
        "baton_epoch 5",
        "baton_epochs_running 1",
        "baton_ready 1",
        "baton_envoy_stats_up 1",
        "envoy_server_live{} 1",
    ] {
        assert!(lines.contains(&line), "{line:?} missing in:\n{text}");
    }
    assert!(
        text.ends_with(&format!("{ENVOY_TEXT}\n")),
        "Envoy's part comes last"
    );
}

#[tokio::test]
async fn prometheus_serves_baton_metrics_when_envoy_is_down() {
    let h = harness();
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    h.snapshots.send_modify(|s| s.envoy_admin = Some(closed));
    let (status, text) = call(&h.state, Method::GET, "/stats/prometheus", REMOTE).await;
    assert_eq!(status, StatusCode::OK);
    assert_valid_exposition(&text);
    assert!(
        text.lines().any(|l| l == "baton_envoy_stats_up 0"),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l == "baton_proxy_crashes_total 0"),
        "{text}"
    );
}

#[tokio::test]
async fn prometheus_gives_up_on_a_hung_envoy_after_the_timeout() {
    let h = harness();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung = listener.local_addr().unwrap();
    // Accepts, then never answers.
    let _hold = tokio::spawn(async move {
        let (_socket, _) = listener.accept().await.unwrap();
        std::future::pending::<()>().await;
    });
    h.snapshots.send_modify(|s| s.envoy_admin = Some(hung));
    let state = h.state.with_envoy_stats_timeout(Duration::from_millis(100));
    let (status, text) = call(&state, Method::GET, "/stats/prometheus", REMOTE).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        text.lines().any(|l| l == "baton_envoy_stats_up 0"),
        "{text}"
    );
}

#[tokio::test]
async fn generic_mode_has_no_envoy_part() {
    let h = harness();
    let (_, text) = call(&h.state, Method::GET, "/stats/prometheus", REMOTE).await;
    assert_valid_exposition(&text);
    assert!(!text.contains("envoy"), "{text}");
}

/// The real server on a loopback port, with a short header timeout.
async fn serve_for_test(state: StatusState, header_timeout: Duration) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server::serve(listener, router(state), header_timeout));
    addr
}

/// Everything the server sends until it closes the connection (or 5 s pass).
async fn read_until_closed(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the server kept the connection open");
    String::from_utf8_lossy(&buf).into_owned()
}

#[tokio::test]
async fn an_idle_connection_is_closed_after_the_header_timeout() {
    let h = harness();
    let addr = serve_for_test(h.state, Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_until_closed(&mut idle).await, "");
    assert!(started.elapsed() >= Duration::from_millis(200));
    // A keep-alive connection that goes idle after a request is closed too.
    let mut kept = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::AsyncWriteExt;
    kept.write_all(b"GET /healthz/ready HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until_closed(&mut kept).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
}

#[tokio::test]
async fn a_malformed_body_is_refused_before_anything_is_done() {
    let mut h = harness();
    let addr = serve_for_test(h.state.clone(), Duration::from_secs(5)).await;
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /drain HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\nZZ\r\nnot a chunk\r\n",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert!(
        h.commands.try_recv().is_err(),
        "the drain was carried out despite the malformed request"
    );
    // A well-formed one still works.
    answer_commands(h.commands);
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            b"POST /drain HTTP/1.1\r\nhost: x\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    let answer = read_until_closed(&mut stream).await;
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
}

/// A loopback address that accepts connections and never answers.
async fn hung_envoy_admin() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hung = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    hung
}

async fn scrape_with_timeout_header(state: &StatusState, seconds: &str) -> String {
    let request = Request::get("/stats/prometheus")
        .header("X-Prometheus-Scrape-Timeout-Seconds", seconds)
        .body(Body::empty())
        .unwrap();
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
    String::from_utf8(body.to_vec()).unwrap()
}

#[tokio::test]
async fn prometheus_answers_within_the_scrapers_own_timeout() {
    let h = harness();
    let hung = hung_envoy_admin().await;
    h.snapshots.send_modify(|s| s.envoy_admin = Some(hung));
    // The default wait for Envoy is 3s; the scraper gives up after 0.25s.
    let began = std::time::Instant::now();
    let text = scrape_with_timeout_header(&h.state, "0.25").await;
    assert!(
        began.elapsed() < Duration::from_millis(250),
        "{:?}",
        began.elapsed()
    );
    assert!(
        text.lines().any(|l| l == "baton_envoy_stats_up 0"),
        "{text}"
    );
}

#[tokio::test]
async fn envoys_last_answer_stands_in_while_it_is_slow() {
    let h = harness();
    let admin = fake_envoy_admin(ENVOY_TEXT).await;
    h.snapshots.send_modify(|s| s.envoy_admin = Some(admin));
    let first = scrape_with_timeout_header(&h.state, "1").await;
    assert!(first.contains("envoy_server_live{} 1\n"), "{first}");
    // Envoy's admin port is busy (a hot restart): the last answer, with
    // `baton_envoy_stats_up 0`, keeps Envoy's series in the scrape.
    let hung = hung_envoy_admin().await;
    h.snapshots.send_modify(|s| s.envoy_admin = Some(hung));
    let second = scrape_with_timeout_header(&h.state, "0.2").await;
    assert_valid_exposition(&second);
    assert!(second.contains("envoy_server_live{} 1\n"), "{second}");
    assert!(
        second.lines().any(|l| l == "baton_envoy_stats_up 0"),
        "{second}"
    );
}

#[test]
fn the_wait_for_envoy_fits_the_scrapers_timeout() {
    let limit = Duration::from_secs(3);
    assert_eq!(metrics::envoy_budget(limit, None), limit);
    assert_eq!(
        metrics::envoy_budget(limit, Some(Duration::from_secs(1))),
        Duration::from_millis(800)
    );
    assert_eq!(
        metrics::envoy_budget(limit, Some(Duration::from_secs(10))),
        limit
    );
    assert_eq!(
        metrics::envoy_budget(limit, Some(Duration::ZERO)),
        Duration::from_millis(50)
    );
}
