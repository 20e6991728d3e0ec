//! An in-process Kubernetes API emulator for tests and `stackhost sandbox`.
//!
//! [`Cluster::start`] serves the Kubernetes REST API on 127.0.0.1 with the semantics kubectl and kube-rs rely on:
//! discovery, OpenAPI, CRUD with resourceVersion preconditions, list/watch, the status subresource, all four
//! PATCH types including server-side apply, finalizers and garbage collection, and CRD schema validation with
//! CEL rules. Several clusters can run in one process.

pub mod api;
pub mod apply;
pub mod cel;
pub mod cluster;
pub mod discovery;
pub mod error;
pub mod gc;
pub mod meta;
pub mod openapi;
pub mod patch;
pub mod proto;
pub mod resource;
pub mod select;
pub mod server;
pub mod store;
pub mod table;
pub mod tls;
pub mod validation;
pub mod watch;

pub use cluster::{Cluster, ClusterError, ClusterOptions};
pub use error::ApiError;
