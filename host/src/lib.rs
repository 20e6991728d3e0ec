//! stackhost: a Kubernetes controller for Cluster Stacks that runs every provider-specific step as a
//! sandboxed WebAssembly component.

pub mod api;
pub mod apply;
pub mod cli;
pub mod harness;
pub mod oci;
pub mod plugin;
pub mod release;
pub mod render;
