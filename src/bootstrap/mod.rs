//! Envoy bootstrap: select a template, render it with the supervisor's values, check the result
//! is JSON, and write one `envoy-rev<N>.json` per epoch.
//!
//! Flow: [`TemplateSource`] + [`Values`] → [`render`] → [`Rendered`] → [`write_epoch_config`].
//!
//! Invariants:
//! - Rendering is strict: any undefined variable is an error naming template, line and variable;
//!   nothing half-rendered ever reaches disk.
//! - Output of [`render`] is always valid JSON (it is parsed before being returned), but it is not
//!   validated against Envoy's schema: that is `envoy --mode validate`'s job in preflight.
//! - A file template is re-read on every render, so each epoch sees the file's current content.
//! - An epoch's file appears complete or not at all (temp file + fsync + rename), mode 0600 from
//!   creation, because it names key files and may carry secrets passed through `--var`.
//!
//! Boundary: no process environment is read here; callers pass `ISTIO_META_*` pairs through
//! [`metadata_from_env`], which keeps tests hermetic.
//!
//! The template variables and custom filters are listed in `bootstrap-templates/README.md`.

#![forbid(unsafe_code)]

mod error;
mod filters;
mod plan;
mod render;
mod template;
mod values;
mod write;

#[cfg(test)]
mod golden_tests;

pub use error::{RenderError, WriteError};
pub use plan::BootstrapPlan;
pub use render::{render, Rendered};
pub use template::TemplateSource;
pub use values::{metadata_from_env, parse_var, CertPair, SdsSecret, Values};
pub use write::{epoch_config_path, remove_epoch_config, write_epoch_config, write_private};
