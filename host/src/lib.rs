//! stackhost: a Kubernetes controller for Cluster Stacks that runs every provider-specific step as a
//! sandboxed WebAssembly component.

pub mod addon;
pub mod api;
pub mod apply;
pub mod cli;
pub mod controller;
pub mod harness;
pub mod hooks;
pub mod migrate;
pub mod oci;
pub mod plugin;
pub mod release;
pub mod render;
pub mod run;
pub mod sandbox;
