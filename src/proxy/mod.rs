//! Drivers: how baton prepares, starts, checks and stops one kind of proxy.
//!
//! The state machine decides *when*; a driver knows *how* for its proxy.

pub mod envoy;
