//! baton: a proxy supervisor with hot restart, the entrypoint of a sidecar.
//!
//! Bird's-eye view, top-down:
//! 1. [`cli`] parses the command line as typed; [`config`] turns it and the pod's
//!    environment into validated settings (every problem at once, naming its flag).
//! 2. [`app`] wires a supervisor: the pure state machine in [`supervisor`] decides,
//!    the shell in `app` acts (spawns, signals, timers) and reports outcomes back as
//!    events.
//! 3. For each epoch the driver in [`proxy`] renders the bootstrap ([`bootstrap`]),
//!    validates it, starts the proxy and watches it become ready.
//! 4. [`sys`] does the operating-system duties: one reaper for every child, clean
//!    spawning, signals, subreaping.
//!
//! The promise: no request fails because of a hot restart, and a bad change never
//! takes down the epoch that serves.

pub mod app;
pub mod bootstrap;
pub mod certs;
pub mod cli;
pub mod client;
pub mod config;
pub mod handoff;
pub mod http_client;
pub mod logging;
pub mod proxy;
pub mod ready;
pub mod stats;
pub mod status;
pub mod supervisor;
pub mod sys;
pub mod watch;

pub use stats::child;
