//! The Envoy driver: native hot restart.
//!
//! Per epoch: render the bootstrap into `envoy-rev<N>.json` (with baton's metrics
//! sink added, see [`sink`]), check it with `envoy --mode validate`, start Envoy
//! with `--restart-epoch`, and call it ready once its admin API reports `LIVE`
//! **and** `listener_manager.workers_started` = 1 for exactly that restart epoch
//! (the parent answers on the same port until the child takes the admin socket
//! over).
//!
//! **Invariant:** a chain is one base id. Epoch 0 of a chain picks a free base id
//! itself (`--use-dynamic-base-id --base-id-path F`, so two batons on one host never
//! collide) unless `--base-id` fixes the first chain's; later epochs read `F`.
//!
//! Code map: [`Settings`] (plain data from `config`) · `epoch_files` (each epoch's
//! bootstrap file, shared with `baton render`) · `driver` ([`EnvoyProxy`], the
//! [`crate::proxy::Proxy`] implementation) · `readiness` · `admin` · `args` ·
//! `chains` · `stand_in` (answering for a dead parent) · [`sds`] (the SDS resources
//! of `--cert-rotation sds`) · `rotation` (an in-place rotation, confirmed) · [`sink`] (what baton adds
//! to every bootstrap) · [`metrics_service`] (baton's receiver) · [`counters`]
//! (Envoy's counters carried across epochs) · `leftovers` · `validate` ·
//! `validations` (bootstraps that passed, validations running, warm-ups).

mod admin;
mod args;
mod chains;
pub mod counters;
mod driver;
mod epoch_files;
pub mod leftovers;
pub mod metrics_service;
mod readiness;
mod rotation;
pub mod sds;
pub mod sink;
mod stand_in;
mod validate;
mod validations;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use args::EnvoyOptions;
pub use driver::EnvoyProxy;
pub use epoch_files::EpochFiles;
pub use validate::{hot_restart_version, validate};

use crate::bootstrap::{BootstrapPlan, CertPair, SdsSecret};

/// Everything the Envoy driver needs, validated: plain data, no resources.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `envoy` executable.
    pub binary: PathBuf,
    /// How to produce each epoch's bootstrap.
    pub bootstrap: BootstrapPlan,
    /// Where `envoy-rev<N>.json` and base id files go.
    pub config_dir: PathBuf,
    /// Envoy's admin address (loopback), for readiness and drain.
    pub admin: SocketAddr,
    /// Flags passed to every epoch.
    pub options: EnvoyOptions,
    /// How long an epoch may take to become ready.
    pub ready_timeout: Duration,
    /// `--cert` pairs, checked before every restart.
    pub certs: Vec<CertPair>,
    /// `--cert-rotation sds`: the SDS secret of each pair of `certs`, in order, which
    /// every bootstrap must name; empty under `--cert-rotation restart`.
    pub sds: Vec<SdsSecret>,
    /// How often every epoch sends its counters to baton (`stats_flush_interval`).
    pub stats_flush: Duration,
    /// `--base-id` of the first chain; `None`: Envoy picks a free one.
    pub base_id: Option<u64>,
}
