//! An in-process Kubernetes API emulator for tests and `stackhost sandbox`.
//!
//! [`Cluster::start`] serves the Kubernetes REST API on 127.0.0.1 with the semantics kubectl and kube-rs rely on:
//! discovery, OpenAPI, CRUD with resourceVersion preconditions, list/watch, the status subresource, all four
//! PATCH types including server-side apply, finalizers and garbage collection, and CRD schema validation with
//! CEL rules. Several clusters can run in one process.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kube::api::{Api, PostParams};
//!
//! let cluster = kube_emulator::Cluster::start().await?;
//! cluster.write_kubeconfig("/tmp/emulator.kubeconfig")?; // for kubectl
//! let api: Api<ConfigMap> = Api::default_namespaced(cluster.client()?);
//! let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": "demo"}}))?;
//! api.create(&PostParams::default(), &cm).await?;
//! cluster.shutdown().await?;
//! # Ok(())
//! # }
//! ```

pub mod admission;
pub mod api;
pub mod apply;
pub mod auth;
pub mod cel;
pub mod cluster;
pub mod cluster_api;
pub mod conversion;
pub mod delete;
pub mod discovery;
pub mod error;
pub mod gc;
pub mod gnostic;
pub mod kinds;
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
pub mod typed;
pub mod validation;
pub mod watch;

pub use cluster::{Cluster, ClusterError, ClusterOptions};
pub use error::ApiError;
