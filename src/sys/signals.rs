//! Signals baton listens to, and what PID 1 must do about orphans.
//!
//! | signal            | meaning for baton                                   |
//! |-------------------|-----------------------------------------------------|
//! | SIGHUP            | hot restart                                         |
//! | SIGTERM, SIGINT   | graceful shutdown; a second one hurries it          |
//! | SIGUSR1, SIGUSR2, SIGWINCH | forwarded to the serving epoch             |
//! | SIGCHLD           | reap every child (see [`super::reaper`])            |

use std::io;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc::UnboundedSender;

use crate::supervisor::{Event, Trigger};

/// Make orphans of our descendants re-parent to baton when it is not PID 1, so they
/// are reaped here rather than leaking as zombies of some distant init.
pub fn become_subreaper() -> io::Result<()> {
    if std::process::id() == 1 {
        return Ok(());
    }
    nix::sys::prctl::set_child_subreaper(true).map_err(io::Error::from)
}

/// `SIGTERM` for 15, and so on; the number itself for unknown ones.
pub fn signal_name(n: i32) -> String {
    Signal::try_from(n)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| n.to_string())
}

/// Turn the signals in the table above (all but SIGCHLD) into events.
pub fn forward_to(events: UnboundedSender<Event>) -> io::Result<()> {
    let table: [(SignalKind, fn() -> Event); 6] = [
        (SignalKind::hangup(), || {
            Event::RestartRequested(Trigger::Signal)
        }),
        (SignalKind::terminate(), || Event::ShutdownRequested),
        (SignalKind::interrupt(), || Event::ShutdownRequested),
        (SignalKind::user_defined1(), || Event::Forward {
            signal: Signal::SIGUSR1 as i32,
        }),
        (SignalKind::user_defined2(), || Event::Forward {
            signal: Signal::SIGUSR2 as i32,
        }),
        (SignalKind::window_change(), || Event::Forward {
            signal: Signal::SIGWINCH as i32,
        }),
    ];
    for (kind, make) in table {
        let mut stream = signal(kind)?;
        let events = events.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if events.send(make()).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}
