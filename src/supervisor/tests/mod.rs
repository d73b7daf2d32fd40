//! The state machine as a specification: sequences of events and the exact actions
//! they must produce. One module per concept, as the core itself is split.

mod chain;
mod companion;
mod crash;
mod faults;
mod restart;
mod rotation;
mod shutdown;

pub(super) use super::Action as A;
pub(super) use super::Event as E;
use super::*;

pub(super) fn policy(driver: DriverKind) -> Policy {
    Policy {
        driver,
        gather: 0,
        checks_inputs: false,
        crash_budget: 2,
        backoff: Backoff {
            base: 1000,
            cap: 8000,
        },
        stable_after: 60_000,
        drain_deadline: 70_000,
        drain_period: 45_000,
        max_draining: 2,
        termination_drain: 5_000,
        exit_on_zero_after: None,
        kill_grace: 5_000,
        drain_signal: 10,
    }
}

/// A state machine and the time its next event happens at.
pub(super) struct Sim {
    pub s: State,
    pub now: Millis,
}

impl Sim {
    pub fn new(policy: Policy) -> Self {
        Sim {
            s: State::new(policy),
            now: 0,
        }
    }

    /// Epoch 0 (pid 100) serving since t=10.
    pub fn serving(driver: DriverKind) -> Self {
        let mut sim = Sim::new(policy(driver));
        sim.step(E::Start);
        sim.bring_up(0, 100, 10);
        sim
    }

    /// Feed one event at the current time.
    pub fn step(&mut self, event: Event) -> Vec<Action> {
        step(&mut self.s, self.now, event)
    }

    /// Feed one event at time `now` (the clock moves there).
    pub fn at(&mut self, now: Millis, event: Event) -> Vec<Action> {
        self.now = now;
        self.step(event)
    }

    /// Feed events one by one; the actions of the last one.
    pub fn run(&mut self, events: Vec<Event>) -> Vec<Action> {
        let mut last = Vec::new();
        for e in events {
            last = self.step(e);
        }
        last
    }

    /// Preflight passes, the process spawns at `at`, and it is ready at `at`.
    pub fn bring_up(&mut self, n: u32, pid: u32, at: Millis) -> Vec<Action> {
        self.step(passed(n));
        self.at(at, E::Spawned { epoch: n, pid });
        self.at(at, E::Ready { epoch: n })
    }

    pub fn phases(&self) -> Vec<(u32, Phase)> {
        self.s
            .epochs()
            .iter()
            .map(|e| (e.number, e.phase))
            .collect()
    }
}

pub(super) fn launch(epoch: u32, chain: u32, restart_epoch: u32) -> Action {
    A::Spawn(Launch {
        epoch,
        chain,
        restart_epoch,
    })
}

pub(super) fn started(epoch: u32, trigger: Option<Trigger>) -> Action {
    A::Report(Report::RestartStarted { epoch, trigger })
}

/// The preflight of `epoch` while `serving_pid` serves, with no configuration
/// trusted yet (the tests' epochs have no digest unless they say so).
pub(super) fn preflight(epoch: u32, serving_pid: Option<u32>) -> Action {
    A::Preflight {
        epoch,
        serving_pid,
        trusted: vec![],
    }
}

pub(super) fn passed(epoch: u32) -> Event {
    E::PreflightPassed {
        epoch,
        config_digest: None,
        certs: Vec::new(),
    }
}

pub(super) fn exited(epoch: u32, code: i32) -> Event {
    E::Exited {
        epoch,
        status: ProcessExit::Code(code),
        last_words: None,
    }
}

pub(super) fn killed(epoch: u32, signal: i32) -> Event {
    E::Exited {
        epoch,
        status: ProcessExit::Signal(signal),
        last_words: None,
    }
}

/// The report of a new epoch refused.
pub(super) fn epoch_refused(epoch: u32, reason: FailureReason, message: &str) -> Action {
    Action::Report(Report::RestartFailed {
        epoch,
        reason,
        message: message.into(),
    })
}

pub(super) fn schedule(after: Millis, event: Event) -> Action {
    A::Schedule { after, event }
}

pub(super) fn stop(epoch: u32, pid: u32, signal: StopSignal) -> Action {
    A::Stop { epoch, pid, signal }
}

pub(super) fn has_preflight(actions: &[Action]) -> bool {
    actions.iter().any(|a| matches!(a, A::Preflight { .. }))
}
