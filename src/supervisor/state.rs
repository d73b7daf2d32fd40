//! The supervisor's whole memory, and the questions the shell and the status server
//! ask of it. Only [`super::step`] changes it.

use std::collections::VecDeque;

use super::counts::Counts;
use super::epoch::{Epoch, Phase};
use super::event::{Millis, Trigger};
use super::policy::{DriverKind, Policy};

/// Exited epochs kept for the status endpoint.
pub const HISTORY: usize = 8;

/// Where baton as a whole is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stage {
    /// `Start` has not arrived yet.
    Idle,
    /// Supervising: restarts, recoveries, handovers.
    Running,
    /// `POST /drain`: the serving epoch drains; restarts are ignored from now on.
    Drained,
    /// Shutdown: the serving epoch drains its listeners.
    ShutdownDraining,
    /// Shutdown: everything got SIGTERM.
    ShutdownTerminating,
    /// Shutdown: everything got SIGKILL.
    ShutdownKilling,
    /// `Exit` was emitted.
    Done,
}

/// Envoy: what the next epoch can do with the current hot-restart chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ChainStatus {
    /// There is none that can be extended: the next epoch opens a new chain.
    NeedsNew,
    /// The next epoch extends it (while one of its epochs serves).
    Open,
    /// A failed epoch left its shared memory flagged "initialising"; the shell is
    /// clearing the flag, and no epoch starts until it answers.
    Repairing,
}

/// The crash backoff timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BackoffTimer {
    /// No recovery is waiting.
    Unarmed,
    /// A recovery starts when `BackoffElapsed { generation }` arrives; timers of
    /// other generations are stale.
    Armed { generation: u64 },
}

/// A trigger waiting for the restart in flight (or a drain period) to finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Pending {
    /// The latest trigger (for the log).
    pub trigger: Trigger,
    /// When the first of the folded triggers arrived (a restart's duration counts
    /// from there).
    pub since: Millis,
    /// Every trigger folded here is a companion of this epoch (it came within its
    /// window, after its inputs were read): if the inputs are still what the epoch
    /// read, it covers them and no follow-up runs. Decided by `InputsChecked`.
    pub covered_by: Option<u32>,
    /// Input checks asked for and not answered yet.
    pub checks: u32,
    /// A check is owed once the covering epoch's digest is known (its preflight has
    /// not passed yet).
    pub check_due: bool,
}

impl Pending {
    /// A trigger that asks for a restart of its own.
    pub fn new(trigger: Trigger, since: Millis) -> Self {
        Pending {
            trigger,
            since,
            covered_by: None,
            checks: 0,
            check_due: false,
        }
    }
}

/// The companion window of a triggered restart: triggers until `until` belong to
/// `epoch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Window {
    pub epoch: u32,
    pub until: Millis,
}

/// An in-place certificate rotation under way (`--cert-rotation sds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Rotation {
    /// Its number, which its outcome carries back.
    pub id: u64,
    /// The serving epoch it rotates.
    pub epoch: u32,
    /// When the first request it answers arrived.
    pub since: Millis,
}

/// The supervisor's whole memory. Created with [`State::new`], changed only by
/// [`super::step`].
#[derive(Debug, Clone)]
pub struct State {
    pub(super) policy: Policy,
    pub(super) stage: Stage,
    /// Live epochs (a process exists, or is being prepared), oldest first.
    pub(super) epochs: Vec<Epoch>,
    /// The last [`HISTORY`] epochs whose process exited, oldest first.
    pub(super) history: VecDeque<Epoch>,
    pub(super) next_epoch: u32,
    pub(super) chain: u32,
    pub(super) chain_status: ChainStatus,
    pub(super) pending: Option<Pending>,
    /// The companion window of the latest triggered restart.
    pub(super) window: Option<Window>,
    /// Consecutive crashes and failed recoveries, against the budget.
    pub(super) crashes: u32,
    pub(super) backoff: BackoffTimer,
    pub(super) generations: u64,
    pub(super) ever_served: bool,
    pub(super) serving_at_shutdown: Option<u32>,
    pub(super) exit_code: Option<i32>,
    pub(super) last_error: Option<String>,
    /// Why a watched path is not watched, until the watcher says it is again.
    pub(super) watch_error: Option<String>,
    pub(super) counts: Counts,
    /// Digests of the last [`TRUSTED`] configurations that reached serving.
    pub(super) served_digests: VecDeque<String>,
    /// The in-place rotation under way, if any.
    pub(super) rotation: Option<Rotation>,
    /// A rotation asked for while one could not begin: when the first such request
    /// arrived.
    pub(super) rotation_pending: Option<Millis>,
    /// Rotations begun so far (numbers them).
    pub(super) rotations_begun: u64,
}

/// Configurations remembered as having served.
pub const TRUSTED: usize = 8;

impl State {
    /// A supervisor that has not started anything yet; send it `Event::Start`.
    pub fn new(policy: Policy) -> Self {
        State {
            policy,
            stage: Stage::Idle,
            epochs: Vec::new(),
            history: VecDeque::new(),
            next_epoch: 0,
            chain: 0,
            chain_status: ChainStatus::NeedsNew,
            pending: None,
            window: None,
            crashes: 0,
            backoff: BackoffTimer::Unarmed,
            generations: 0,
            ever_served: false,
            serving_at_shutdown: None,
            exit_code: None,
            last_error: None,
            watch_error: None,
            counts: Counts::default(),
            served_digests: VecDeque::new(),
            rotation: None,
            rotation_pending: None,
            rotations_begun: 0,
        }
    }

    /// The live epochs, oldest first.
    pub fn epochs(&self) -> &[Epoch] {
        &self.epochs
    }

    /// The last few epochs whose process exited, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &Epoch> {
        self.history.iter()
    }

    /// The epoch taking traffic, if any.
    pub fn serving(&self) -> Option<&Epoch> {
        self.epochs.iter().find(|e| e.phase == Phase::Serving)
    }

    /// What was counted so far.
    pub fn counts(&self) -> &Counts {
        &self.counts
    }

    /// The last restart or recovery failure, for the status endpoint.
    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    /// Why a watched path is not watched right now, if one is not.
    pub fn watch_error(&self) -> Option<&str> {
        self.watch_error.as_deref()
    }

    /// `true` once shutdown has begun.
    pub fn shutting_down(&self) -> bool {
        !matches!(self.stage, Stage::Idle | Stage::Running | Stage::Drained)
    }

    /// `Ok` when an epoch serves and takes traffic; otherwise why not, in a few words
    /// (the body of a 503 from `/healthz/ready`).
    pub fn readiness(&self) -> Result<(), String> {
        match self.stage {
            Stage::Idle => return Err("starting: no epoch yet".into()),
            Stage::Drained => return Err("draining (POST /drain)".into()),
            Stage::Running => {}
            _ => return Err("shutting down".into()),
        }
        if self.serving().is_some() {
            return Ok(());
        }
        if self.backoff != BackoffTimer::Unarmed {
            return Err(format!("crash backoff after {} crash(es)", self.crashes));
        }
        match self.epochs.iter().find(|e| e.phase != Phase::Failing) {
            Some(e) if !self.ever_served => {
                Err(format!("starting: epoch {} not ready yet", e.number))
            }
            Some(e) => Err(format!("recovering: epoch {} not ready yet", e.number)),
            None => Err("no epoch serving".into()),
        }
    }

    /// Consecutive crashes counted against the budget.
    #[cfg(test)]
    pub(super) fn crashes(&self) -> u32 {
        self.crashes
    }

    /// Supervising epochs: started and not shutting down (a drain on request
    /// included: its epochs are still supervised).
    pub(super) fn supervising(&self) -> bool {
        matches!(self.stage, Stage::Running | Stage::Drained)
    }

    pub(super) fn find(&self, number: u32) -> Option<usize> {
        self.epochs.iter().position(|e| e.number == number)
    }

    pub(super) fn serving_index(&self) -> Option<usize> {
        self.epochs.iter().position(|e| e.phase == Phase::Serving)
    }

    /// A restart is under way: an epoch prepares, starts, or is being removed after
    /// a failed start, or the chain is being repaired.
    pub(super) fn in_flight(&self) -> bool {
        self.chain_status == ChainStatus::Repairing
            || self.epochs.iter().any(|e| e.phase.in_flight())
    }

    /// An in-place certificate rotation is under way: no restart begins until it
    /// is over (one change reaches the proxy at a time).
    pub(super) fn rotating(&self) -> bool {
        self.rotation.is_some()
    }

    /// Envoy: an epoch of the current chain that is still within its drain period.
    /// Starting a new epoch now would make Envoy terminate it early.
    pub(super) fn drain_in_progress(&self) -> Option<u32> {
        if self.policy.driver != DriverKind::Envoy || self.chain_status != ChainStatus::Open {
            return None;
        }
        self.epochs
            .iter()
            .find(|e| e.chain == self.chain && e.phase == Phase::Draining && !e.drain_settled)
            .map(|e| e.number)
    }

    /// Fold a trigger into the one follow-up restart. A trigger that is not a
    /// companion of the restart in flight makes the follow-up necessary.
    pub(super) fn defer(&mut self, trigger: Trigger, now: Millis) -> &mut Pending {
        let since = self.pending.map_or(now, |p| p.since);
        let pending = self.pending.get_or_insert(Pending::new(trigger, since));
        pending.trigger = trigger;
        pending.covered_by = None;
        pending
    }

    /// The epoch that may still cover the pending follow-up: alive, and not failed.
    pub(super) fn covering(&self) -> Option<u32> {
        let n = self.pending?.covered_by?;
        let e = &self.epochs[self.find(n)?];
        matches!(e.phase, Phase::Preparing | Phase::Starting | Phase::Serving).then_some(n)
    }

    /// Remember that a configuration reached serving.
    pub(super) fn trust(&mut self, digest: Option<String>) {
        let Some(digest) = digest else { return };
        self.served_digests.retain(|d| *d != digest);
        self.served_digests.push_back(digest);
        while self.served_digests.len() > TRUSTED {
            self.served_digests.pop_front();
        }
    }

    /// Move an epoch whose process ended into the history.
    pub(super) fn retire(&mut self, index: usize, now: Millis, exit: super::ProcessExit) -> Epoch {
        let gone = self.epochs.remove(index);
        let mut kept = gone.clone();
        kept.phase = Phase::Exited;
        kept.exited_at = Some(now);
        kept.exit = Some(exit);
        self.history.push_back(kept);
        while self.history.len() > HISTORY {
            self.history.pop_front();
        }
        gone
    }
}
