//! stackhost: a Kubernetes controller for Cluster Stacks that runs every provider-specific step as a
//! sandboxed WebAssembly component.

pub mod cli;
pub mod plugin;
pub mod oci;
