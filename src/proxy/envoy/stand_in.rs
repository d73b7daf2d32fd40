//! Standing in for a dead parent Envoy, so that its child keeps serving.
//!
//! A hot-restarted Envoy talks to its parent until it terminates it: on every stats
//! flush it asks for the parent's stats and waits for the answer, and at
//! `--parent-shutdown-time-s` it sends a terminate request. If the parent is gone
//! (SIGKILL, an OOM kill), each `sendmsg` to it fails with ECONNREFUSED; the child
//! retries once a second with its main thread blocked (admin, xDS and stats stall),
//! and after ten tries it aborts — taking the serving epoch down with its dead
//! parent (measured: 10 s after the kill).
//!
//! So baton binds the dead parent's socket and answers in its place: an empty
//! stats reply to each stats request (the child merges nothing: the dead parent's
//! unflushed counts are lost either way), and it stops at the terminate request.
//! The protocol (Envoy's `source/server/hot_restart.proto`, over unix datagram
//! sockets in the abstract namespace): each message is an 8-byte big-endian length
//! followed by a serialized `HotRestartMessage`; the child's requests are
//! `request { stats {} }` (`0a 02 1a 00`) and `request { terminate {} }`
//! (`0a 02 2a 00`); the reply `reply { stats {} }` is `12 02 1a 00`. Addresses are
//! `envoy_domain_socket_{parent|child}_{id}` padded with zero bytes to the whole
//! `sun_path`, where `id` is the base id times ten, as Envoy's 32-bit int, plus the
//! restart epoch modulo 3. Checked against Envoy 1.40 (hot restart version 11).

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// `sun_path` is 108 bytes; Envoy's abstract names fill all but the leading zero.
const NAME_LEN: usize = 107;

const STATS_REQUEST: [u8; 4] = [0x0a, 0x02, 0x1a, 0x00];
const TERMINATE_REQUEST: [u8; 4] = [0x0a, 0x02, 0x2a, 0x00];
const EMPTY_STATS_REPLY: [u8; 4] = [0x12, 0x02, 0x1a, 0x00];
/// `didnt_recognize_your_last_message: true`, what a parent answers to the unknown.
const NOT_RECOGNIZED_REPLY: [u8; 2] = [0x18, 0x01];

/// The numeric part of the socket names of restart epoch `restart_epoch` in the
/// chain of `base_id`.
fn socket_id(base_id: u64, restart_epoch: u32) -> u64 {
    // Envoy scales the base id by 10 in 32 bits and passes it on as an `int`, which
    // becomes a u64 again: large base ids wrap and sign-extend, as they do in Envoy.
    let scaled = (base_id.wrapping_mul(10) as u32) as i32 as i64 as u64;
    scaled.wrapping_add(u64::from(restart_epoch % 3))
}

fn address(role: &str, id: u64) -> io::Result<SocketAddr> {
    let mut name = format!("envoy_domain_socket_{role}_{id}").into_bytes();
    name.resize(NAME_LEN, 0);
    SocketAddr::from_abstract_name(name)
}

/// What the stand-in does with one message from the child.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Send this body back.
    Reply(&'static [u8]),
    /// The child terminated its parent: nothing more will come.
    Done,
}

fn answer(message: &[u8]) -> Answer {
    let body = message.get(8..).unwrap_or_default();
    match body {
        b if b == STATS_REQUEST => Answer::Reply(&EMPTY_STATS_REPLY),
        b if b == TERMINATE_REQUEST => Answer::Done,
        _ => Answer::Reply(&NOT_RECOGNIZED_REPLY),
    }
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u64).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Bind the socket of the dead parent (restart epoch `restart_epoch` of the chain of
/// `base_id`) and answer its child, on a thread of its own, until the child sends
/// terminate or `at_most` passes. Fails if the address cannot be bound (the parent
/// is not gone after all).
pub fn spawn(base_id: u64, restart_epoch: u32, at_most: Duration) -> io::Result<()> {
    let parent = address("parent", socket_id(base_id, restart_epoch))?;
    let child = address("child", socket_id(base_id, restart_epoch + 1))?;
    let socket = UnixDatagram::bind_addr(&parent)?;
    std::thread::Builder::new()
        .name(format!("stand-in-{restart_epoch}"))
        .spawn(
            move || match answer_until_terminated(&socket, &child, at_most) {
                Ok(answered) => tracing::info!(
                    restart_epoch,
                    answered,
                    "the dead parent's child terminated it; stand-in done"
                ),
                Err(e) => {
                    tracing::warn!(restart_epoch, error = %e, "stand-in for a dead parent stopped")
                }
            },
        )?;
    Ok(())
}

/// Answer every message until terminate; how many were answered.
fn answer_until_terminated(
    socket: &UnixDatagram,
    child: &SocketAddr,
    at_most: Duration,
) -> io::Result<u64> {
    let deadline = std::time::Instant::now() + at_most;
    let mut buf = vec![0u8; 64 * 1024];
    let mut answered = 0;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "no terminate request in time",
            ));
        }
        socket.set_read_timeout(Some(left))?;
        let n = socket.recv(&mut buf)?;
        match answer(&buf[..n]) {
            Answer::Done => return Ok(answered),
            Answer::Reply(body) => {
                socket.send_to_addr(&framed(body), child)?;
                answered += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_ids_follow_envoys_arithmetic() {
        // Seen on a running chain (`ss -xl`): base id 256967749, restart epochs 0 and 1.
        assert_eq!(socket_id(256_967_749, 0), 18_446_744_071_984_261_810);
        assert_eq!(socket_id(256_967_749, 1), 18_446_744_071_984_261_811);
        // Seen too: base id 196720150 (no wrap), epoch 0; epoch 3 reuses slot 0.
        assert_eq!(socket_id(196_720_150, 0), 1_967_201_500);
        assert_eq!(socket_id(196_720_150, 3), 1_967_201_500);
    }

    #[test]
    fn stats_requests_get_an_empty_stats_reply_and_terminate_ends_it() {
        let stats = framed(&STATS_REQUEST);
        assert_eq!(stats, [0, 0, 0, 0, 0, 0, 0, 4, 0x0a, 0x02, 0x1a, 0x00]);
        assert_eq!(answer(&stats), Answer::Reply(&EMPTY_STATS_REPLY));
        assert_eq!(answer(&framed(&TERMINATE_REQUEST)), Answer::Done);
        assert_eq!(
            answer(&framed(&[0x0a, 0x02, 0x22, 0x00])),
            Answer::Reply(&NOT_RECOGNIZED_REPLY)
        );
        assert_eq!(answer(b"short"), Answer::Reply(&NOT_RECOGNIZED_REPLY));
    }

    #[test]
    fn a_child_asking_for_stats_is_answered_until_it_terminates() {
        // A fake child on the socket Envoy's child of restart epoch 1 would use, with a
        // base id no real chain here has.
        let base_id = 4_000_000_000 + u64::from(std::process::id());
        let child =
            UnixDatagram::bind_addr(&address("child", socket_id(base_id, 1)).unwrap()).unwrap();
        child
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        spawn(base_id, 0, Duration::from_secs(10)).unwrap();
        let parent = address("parent", socket_id(base_id, 0)).unwrap();
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            child
                .send_to_addr(&framed(&STATS_REQUEST), &parent)
                .unwrap();
            let n = child.recv(&mut buf).expect("an answer in time");
            assert_eq!(&buf[..n], framed(&EMPTY_STATS_REPLY).as_slice());
        }
        child
            .send_to_addr(&framed(&TERMINATE_REQUEST), &parent)
            .unwrap();
        // Once done, the parent's address is free again.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while UnixDatagram::bind_addr(&parent).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "the stand-in did not let go of the address"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
