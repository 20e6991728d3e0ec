//! The ClusterStackRelease kind (`cskr`): one release tag, fetched, prepared by the provider plugin,
//! rendered and applied. Its name is the release tag in dash form (`docker-ferrol-1-27-v1`).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::{Condition, Resource};
use super::source::ReleaseSourceSpec;

/// Finalizer of ClusterStackReleases (upstream's string).
pub const CLUSTER_STACK_RELEASE_FINALIZER: &str = "clusterstackrelease.clusterstack.x-k8s.io";

/// Desired state of a ClusterStackRelease; normally written by the ClusterStack controller.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "clusterstack.x-k8s.io",
    version = "v1alpha1",
    kind = "ClusterStackRelease",
    namespaced,
    shortname = "cskr",
    status = "ClusterStackReleaseStatus",
    derive = "PartialEq",
    doc = "ClusterStackRelease is one release of a cluster stack, named by its release tag.",
    printcolumn = r#"{"name": "K8s Version", "type": "string", "jsonPath": ".status.kubernetesVersion"}"#,
    printcolumn = r#"{"name": "Ready", "type": "boolean", "jsonPath": ".status.ready"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].reason"}"#,
    printcolumn = r#"{"name": "Message", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStackReleaseSpec {
    /// Upstream's reference to the `<X>ClusterStackRelease` provider object (kept for compatibility).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_ref: Option<ObjectReference>,
    /// Name of the ProviderPlugin (same namespace) that runs the provider steps; absent in noProvider mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_plugin: Option<String>,
    /// Release source, copied from the ClusterStack; the controller's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ReleaseSourceSpec>,
}

/// Observed state of a ClusterStackRelease.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStackReleaseStatus {
    /// Objects applied from the cluster-class chart, with their sync status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Resource>,
    /// `metadata.yaml` `versions.kubernetes`, e.g. `v1.27.3`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubernetes_version: Option<String>,
    /// Set once the chart is applied; cleared again when a later step fails (upstream never cleared it).
    #[serde(default)]
    pub ready: bool,
    /// Digest of the plugin that prepared this release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin_digest: Option<String>,
    /// Conditions per step, with a `Ready` summary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
