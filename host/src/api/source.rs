//! Where a ClusterStack's releases come from, when it does not use the process default.
//!
//! Upstream chose the source once per process from environment variables (issue #36 asks for a
//! per-ClusterStack source); here `spec.source` may name one, and the process default applies otherwise.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// A release source. Exactly one of `oci` and `github` is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("[has(self.oci), has(self.github)].filter(x, x).size() == 1").message("set exactly one of source.oci and source.github"))]
pub struct ReleaseSourceSpec {
    /// An OCI repository holding one artifact per release tag (as published by csctl).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oci: Option<OciSourceSpec>,
    /// A GitHub repository whose releases carry the release assets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github: Option<GitHubSourceSpec>,
}

/// An OCI repository, e.g. `registry.scs.community/kaas/cluster-stacks`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OciSourceSpec {
    /// Repository reference without tag: `<registry>/<path>`.
    #[schemars(length(min = 1, max = 1024))]
    pub repository: String,
    /// Secret in the ClusterStack's namespace with `username`/`password` or `token` keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_name: Option<String>,
    /// Talk plain HTTP to the registry (local test registries only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure: bool,
}

/// A GitHub repository with release assets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GitHubSourceSpec {
    /// Organisation or user, e.g. `SovereignCloudStack`.
    #[schemars(length(min = 1, max = 100))]
    pub owner: String,
    /// Repository, e.g. `cluster-stacks`.
    #[schemars(length(min = 1, max = 100))]
    pub repository: String,
    /// API base URL; default `https://api.github.com` (set it for GitHub Enterprise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Secret in the ClusterStack's namespace with a `token` key (optional; raises rate limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_name: Option<String>,
}
