//! Plugins and cluster-stack releases as OCI artifacts.
//!
//! Owns everything between a reference such as `registry.example/plugins/openstack:v1` and
//! verified bytes on disk:
//! - [`registry`]: a registry client over `oci-client` with retries, timeouts, size caps,
//!   mirrors and the plain-HTTP policy;
//! - [`auth`]: credentials (anonymous, basic, bearer, Docker `config.json`, Kubernetes
//!   `dockerconfigjson` Secrets);
//! - [`artifact`]: the CNCF Wasm artifact format and the world check before download;
//! - [`signature`]: cosign's keyed scheme (ECDSA P-256, `sha256-<digest>.sig` tags);
//! - [`cache`]: a content-addressed on-disk cache, verified on read;
//! - [`layout`]: OCI image layout directories and tarballs for air-gapped installs;
//! - [`release`]: cluster-stack release artifacts (csctl's layout);
//! - [`fetch`]: the pipeline the controller uses: resolve, check, verify, download;
//! - [`cli`]: the `stackhost plugin|key|release|oci` subcommands built on the above.
//!
//! Every reference is resolved to a manifest digest first; that digest pins what is cached,
//! verified and handed to the plugin runtime.

pub mod artifact;
pub mod auth;
pub mod cache;
pub mod cli;
pub mod digest;
pub mod error;
pub mod fetch;
pub mod layout;
pub mod manifest;
pub mod registry;
pub mod release;
pub mod signature;
pub mod source;

pub use error::{OciError, Result};
