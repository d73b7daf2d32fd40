//! One integration-test binary (fast linking); modules by subject.

mod container;
mod envoy;
mod faults;
mod generic;
mod harness;
mod lifecycle;
mod load;
mod manifests;
mod memory;
mod pid1;
mod pod;
mod prometheus;
mod render;
mod rotation;
mod sds;
mod stats;
mod status;
