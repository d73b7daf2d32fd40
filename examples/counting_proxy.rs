//! A tiny HTTP/1.1 server for `baton run`, counting its requests with `baton::child`.
//!
//! It serves on the listener baton hands it (fd 3, `LISTEN_FDS`), answers every
//! request `200 ok`, and counts each one in the stats segment as `requests` (a
//! counter shared by every epoch) and its open connections as `connections` (a
//! gauge, per epoch). On SIGTERM it stops accepting, answers what is in flight with
//! `connection: close`, and exits once its connections are gone.
//!
//! ```sh
//! baton run --listen http=tcp://127.0.0.1:8080 --ready delay:200ms -- \
//!     target/debug/examples/counting_proxy
//! ```

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use baton::child::{Counter, Stats};

static DRAINING: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: nix::libc::c_int) {
    DRAINING.store(true, Ordering::SeqCst);
}

fn main() {
    if std::env::var("LISTEN_FDS").as_deref() != Ok("1") {
        eprintln!("counting_proxy: expected one listener from baton (LISTEN_FDS=1)");
        std::process::exit(2);
    }
    let stats = match Stats::from_env() {
        Ok(stats) => stats,
        Err(e) => {
            eprintln!("counting_proxy: {e}");
            std::process::exit(2);
        }
    };
    let (requests, connections) = match (stats.counter("requests"), stats.gauge("connections")) {
        (Ok(r), Ok(c)) => (r, c),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("counting_proxy: {e}");
            std::process::exit(2);
        }
    };
    // SAFETY: fd 3 is the listener baton passed (LISTEN_FDS=1); nothing else owns it.
    let listener = TcpListener::from(unsafe { OwnedFd::from_raw_fd(3) });
    // SAFETY: the handler only stores into an atomic, which is async-signal-safe.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGTERM,
            nix::sys::signal::SigHandler::Handler(on_sigterm),
        );
    }
    listener
        .set_nonblocking(true)
        .expect("listener non-blocking");
    let active = Arc::new(AtomicUsize::new(0));
    while !DRAINING.load(Ordering::SeqCst) {
        match listener.accept() {
            Ok((stream, _)) => {
                let (requests, connections, active) =
                    (requests.clone(), connections.clone(), active.clone());
                active.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || {
                    connections.inc();
                    serve(stream, &requests);
                    connections.dec();
                    active.fetch_sub(1, Ordering::SeqCst);
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(2));
            }
            Err(e) => eprintln!("counting_proxy: accept: {e}"),
        }
    }
    // Stop accepting: what waits in the backlog goes to the next epoch.
    drop(listener);
    while active.load(Ordering::SeqCst) > 0 {
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn serve(stream: TcpStream, requests: &Counter) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(s) => s,
        Err(_) => return,
    });
    let mut writer = stream;
    loop {
        // Read one request head; on an idle timeout, leave if draining.
        let mut saw_line = false;
        let mut client_closes = false;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => return,
                Ok(_) if line == "\r\n" && saw_line => break,
                Ok(_) => {
                    saw_line = saw_line || line != "\r\n";
                    let lower = line.to_ascii_lowercase();
                    client_closes |= lower.starts_with("connection:") && lower.contains("close");
                }
                Err(e)
                    if !saw_line
                        && matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                {
                    if DRAINING.load(Ordering::SeqCst) {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
        requests.inc();
        let close = client_closes || DRAINING.load(Ordering::SeqCst);
        let reply = if close {
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
        } else {
            "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
        };
        if writer.write_all(reply.as_bytes()).is_err() || close {
            return;
        }
    }
}
