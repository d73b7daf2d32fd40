//! Validated settings: the raw command line ([`crate::cli`]) plus the pod's
//! environment become plain data the rest of baton runs with. Nothing here binds a
//! socket, starts a process or builds a driver: [`crate::app`] does that, once.
//! Every problem is collected and reported at once, each naming its flag (exit 64).
//!
//! Code map: `env` (the environment, read through [`Env`] so tests never touch the
//! real one) · `bootstrap` (template, values, certificates) · `envoy` (`baton envoy`
//! and `baton render`) · `concurrency` (Envoy's workers from the CPU limit) · `run`
//! (`baton run`) · `supervision` (timing, triggers, the status server, the state
//! machine's policy) · `binary` (finding executables).

mod binary;
mod bootstrap;
mod concurrency;
mod env;
mod envoy;
mod run;
mod supervision;
mod timing;

pub use binary::resolve_binary;
#[cfg(test)]
pub use env::MapEnv;
pub use env::{Env, ProcessEnv};
pub use envoy::{envoy_settings, render_settings, EnvoySettings, RenderSettings};
pub use run::{run_settings, RunSettings};
pub use supervision::Supervision;

/// Everything that was wrong with the command line, one problem per entry.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.join("\n"))]
pub struct ConfigError {
    /// Each names its flag and what is wrong.
    pub problems: Vec<String>,
}

/// Collects problems; `finish` turns them into a [`ConfigError`] if there are any.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<String>);

impl Problems {
    pub fn push(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    /// The value of `result`, or `None` with its error recorded.
    pub fn check<T, E: std::fmt::Display>(&mut self, result: Result<T, E>) -> Option<T> {
        result.map_err(|e| self.push(e.to_string())).ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Take over the problems of `other`.
    pub fn extend(&mut self, other: Problems) {
        self.0.extend(other.0);
    }

    /// The error, whatever was recorded (at least one problem is named).
    pub fn into_error(self) -> ConfigError {
        let mut problems = self.0;
        if problems.is_empty() {
            problems.push("invalid command line".into());
        }
        ConfigError { problems }
    }

    /// `Ok(value)` when nothing was wrong.
    pub fn finish<T>(self, value: impl FnOnce() -> T) -> Result<T, ConfigError> {
        if self.0.is_empty() {
            Ok(value())
        } else {
            Err(ConfigError { problems: self.0 })
        }
    }
}
