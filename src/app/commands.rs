//! Status-server commands as events, and their answers from what the core decided.

use tokio::sync::oneshot;

use crate::status::{Command, RestartReply};
use crate::supervisor::{Action, Event, Report, State, Trigger};

/// Where the answer to a status-server command goes once `step` has decided.
pub(super) enum Reply {
    Restart(oneshot::Sender<RestartReply>),
    Drain(oneshot::Sender<String>),
    Quit(oneshot::Sender<String>),
}

/// The event a command stands for, and where its answer goes.
pub(super) fn event_of(command: Command) -> (Event, Option<Reply>) {
    match command {
        Command::Restart { reply } => (
            Event::RestartRequested(Trigger::Api),
            Some(Reply::Restart(reply)),
        ),
        Command::Drain { reply } => (Event::DrainRequested, Some(Reply::Drain(reply))),
        Command::Quit { reply } => (Event::ShutdownRequested, Some(Reply::Quit(reply))),
    }
}

impl Reply {
    /// Answer from what the state machine decided.
    pub fn send(self, actions: &[Action], state: &State) {
        match self {
            Reply::Restart(tx) => {
                let _ = tx.send(restart_reply(actions, state));
            }
            Reply::Drain(tx) => {
                let text = actions
                    .iter()
                    .find_map(|a| match a {
                        Action::Report(Report::Drained {
                            serving: Some(epoch),
                        }) => Some(format!(
                            "draining: not ready from now on; epoch {epoch} serves what it has"
                        )),
                        Action::Report(Report::Drained { serving: None }) => {
                            Some("draining: not ready from now on; no epoch serves".into())
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| {
                        if state.shutting_down() {
                            "shutting down already".into()
                        } else {
                            "draining already, or nothing serves to drain".into()
                        }
                    });
                let _ = tx.send(text);
            }
            Reply::Quit(tx) => {
                let _ = tx.send("shutting down".into());
            }
        }
    }
}

fn restart_reply(actions: &[Action], state: &State) -> RestartReply {
    let found = actions.iter().find_map(|a| match a {
        Action::Report(Report::RestartStarted { epoch, .. }) => Some(RestartReply {
            accepted: true,
            coalesced: false,
            epoch: Some(*epoch),
            detail: format!("started epoch {epoch}"),
        }),
        Action::Report(Report::Joined { epoch, .. }) => Some(RestartReply {
            accepted: true,
            coalesced: true,
            epoch: Some(*epoch),
            detail: format!("joined the restart of epoch {epoch}"),
        }),
        Action::Report(Report::Coalesced { .. }) => Some(RestartReply {
            accepted: true,
            coalesced: true,
            epoch: None,
            detail: "coalesced into the restart in flight".into(),
        }),
        Action::Report(Report::Deferred { draining, .. }) => Some(RestartReply {
            accepted: true,
            coalesced: true,
            epoch: None,
            detail: format!("deferred until epoch {draining} has drained"),
        }),
        Action::Report(Report::Ignored { why, .. }) => Some(RestartReply {
            accepted: false,
            coalesced: false,
            epoch: None,
            detail: format!("ignored: {why}"),
        }),
        _ => None,
    });
    found.unwrap_or_else(|| RestartReply {
        accepted: false,
        coalesced: false,
        epoch: None,
        detail: if state.shutting_down() {
            "shutting down: not restarting".into()
        } else {
            "not started yet".into()
        },
    })
}
