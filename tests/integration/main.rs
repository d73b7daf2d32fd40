//! One integration-test binary (fast linking); modules by subject.

mod envoy;
mod generic;
mod harness;
mod load;
mod pid1;
mod prometheus;
mod render;
mod rotation;
mod stats;
mod status;
