//! stackhost: a Kubernetes controller for Cluster Stacks whose provider steps run as sandboxed Wasm components.

pub mod api;
pub mod apply;
pub mod release;
pub mod render;
