//! Requests from the status server to the shell, each with a one-shot reply channel.
//!
//! **Invariant:** the shell answers every command as soon as the supervisor has
//! *decided* (a restart started, coalesced, deferred or refused), never after the
//! work is done: a restart takes seconds and the HTTP caller should not wait for it.
//! A command dropped without a reply reads as "baton is going away" (HTTP 503).

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

/// What the status server asks of the shell.
#[derive(Debug)]
pub enum Command {
    /// `POST /restart`: a hot restart with trigger "api".
    Restart {
        /// Where the shell says what became of it.
        reply: oneshot::Sender<RestartReply>,
    },
    /// `POST /drain`: drain the serving epoch without exiting (a `preStop` hook), and
    /// report not ready from then on.
    Drain {
        /// One line saying what happens (`draining epoch 3`).
        reply: oneshot::Sender<String>,
    },
    /// `POST /quitquitquit`: graceful shutdown, as SIGTERM.
    Quit {
        /// One line saying what happens (`shutting down`).
        reply: oneshot::Sender<String>,
    },
}

/// What became of a `POST /restart`; sent back as its JSON body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartReply {
    /// A restart will happen for it: started now, joined the one about to read its
    /// inputs, or queued as the one follow-up. `false`: refused (drained, shutting
    /// down), and `detail` says why.
    pub accepted: bool,
    /// The request was folded into the restart already in flight.
    pub coalesced: bool,
    /// The epoch this restart started, when it started one now.
    pub epoch: Option<u32>,
    /// One line for humans: `started epoch 4`, `coalesced into the restart of epoch 4`,
    /// `deferred until epoch 2 has drained`, `shutting down: not restarting`.
    pub detail: String,
}
