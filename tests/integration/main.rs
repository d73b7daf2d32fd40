//! One integration-test binary (fast linking); modules by subject.

mod container;
mod envoy;
mod generic;
mod harness;
mod lifecycle;
mod load;
mod manifests;
mod pid1;
mod render;
mod rotation;
mod stats;
mod status;
