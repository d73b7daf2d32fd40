//! One integration-test binary (fast linking); modules by subject.

mod envoy;
mod faults;
mod generic;
mod harness;
mod load;
mod memory;
mod pid1;
mod render;
mod rotation;
mod stats;
mod status;
