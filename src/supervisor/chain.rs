//! Envoy's hot-restart chains: which chain and `--restart-epoch` a new epoch gets,
//! and what happens to a chain when one of its epochs fails.
//!
//! **Invariant:** `--restart-epoch` is exactly one above the highest running epoch of
//! the chain; a chain whose shared memory may be flagged "initialising" is repaired
//! (or abandoned) before anything else starts.

use super::action::{Action, Report};
use super::epoch::Phase;
use super::policy::DriverKind;
use super::state::{ChainStatus, State};

/// Envoy: extend the current chain while it has a healthy serving epoch, with
/// `--restart-epoch` exactly one above the highest running; otherwise open a new
/// chain at restart epoch 0. The generic driver has one chain and counts epochs.
pub(super) fn place(state: &mut State) -> (u32, u32) {
    if state.policy.driver == DriverKind::Generic {
        return (0, state.next_epoch);
    }
    let chain = state.chain;
    let serving_in_chain = state
        .epochs
        .iter()
        .any(|e| e.chain == chain && e.phase == Phase::Serving);
    if state.chain_status == ChainStatus::Open && serving_in_chain {
        let highest = state
            .epochs
            .iter()
            .filter(|e| e.chain == chain && e.pid.is_some())
            .map(|e| e.restart_epoch)
            .max()
            .unwrap_or(0);
        return (chain, highest + 1);
    }
    // Epoch numbers are consumed only by spawns: any spawn used up the current chain.
    if state.next_epoch > 0 {
        state.chain += 1;
    }
    state.chain_status = ChainStatus::Open;
    (state.chain, 0)
}

/// Envoy: a new epoch of the current chain died after it may have attached to the
/// chain's shared memory, leaving it flagged "initialising" (every later hot restart
/// would be refused). With an epoch of the chain still serving, ask the shell to
/// repair the flag; otherwise the chain is done.
pub(super) fn repair_or_abandon(state: &mut State, chain: u32, out: &mut Vec<Action>) {
    if state.policy.driver != DriverKind::Envoy
        || chain != state.chain
        || state.chain_status != ChainStatus::Open
    {
        return;
    }
    let serving = state
        .epochs
        .iter()
        .any(|e| e.chain == chain && e.phase == Phase::Serving);
    if serving {
        state.chain_status = ChainStatus::Repairing;
        out.push(Action::RepairChain { chain });
    } else {
        abandon(state, "a new epoch died and none of the chain serves", out);
    }
}

/// The current chain cannot be extended any more; the next epoch opens a new one.
pub(super) fn abandon(state: &mut State, why: &'static str, out: &mut Vec<Action>) {
    if state.policy.driver == DriverKind::Envoy && state.chain_status != ChainStatus::NeedsNew {
        state.chain_status = ChainStatus::NeedsNew;
        out.push(Action::Report(Report::ChainAbandoned {
            chain: state.chain,
            why,
        }));
    }
}

/// The shell answered a repair: `true` when it was the one in progress (a restart
/// that waited for it may go ahead now).
pub(super) fn on_repair_done(
    state: &mut State,
    chain: u32,
    failure: Option<String>,
    out: &mut Vec<Action>,
) -> bool {
    if chain != state.chain || state.chain_status != ChainStatus::Repairing {
        return false;
    }
    match failure {
        None => {
            state.chain_status = ChainStatus::Open;
            out.push(Action::Report(Report::ChainRepaired { chain }));
        }
        Some(why) => {
            out.push(Action::Report(Report::ChainRepairFailed { chain, why }));
            abandon(state, "its shared memory could not be repaired", out);
        }
    }
    true
}

/// Envoy: a draining epoch that did not leave by itself (exit 0 after its child's
/// terminate request) died while its child still asks it for stats and will ask it
/// to terminate; answered by nobody, the child's main thread blocks and it aborts
/// 10 s later. The shell stands in for the dead parent.
pub(super) fn stand_in_if_needed(
    state: &State,
    gone: &super::Epoch,
    status: super::ProcessExit,
    out: &mut Vec<Action>,
) {
    if state.policy.driver != DriverKind::Envoy || status.success() {
        return;
    }
    let child = state.epochs.iter().find(|e| {
        e.chain == gone.chain
            && e.restart_epoch == gone.restart_epoch + 1
            && matches!(e.phase, Phase::Serving | Phase::Draining)
    });
    if let Some(child) = child {
        out.push(Action::Report(Report::ParentDied {
            epoch: gone.number,
            status,
            child: child.number,
        }));
        out.push(Action::StandIn {
            chain: gone.chain,
            restart_epoch: gone.restart_epoch,
        });
    }
}

/// An epoch of `chain` exited: when none of the chain runs any more, the shell
/// releases what it held.
pub(super) fn on_epoch_gone(state: &mut State, chain: u32, out: &mut Vec<Action>) {
    if state.policy.driver != DriverKind::Envoy
        || state
            .epochs
            .iter()
            .any(|e| e.chain == chain && e.phase != Phase::Preparing)
    {
        return;
    }
    if chain == state.chain {
        state.chain_status = ChainStatus::NeedsNew;
    }
    out.push(Action::ReleaseChain { chain });
}
