//! The ClusterAddon kind (`caddon`): the addons of one Cluster (upstream §1.4), kept so existing
//! manifests and tooling keep working.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::{Condition, Resource};

/// Finalizer of ClusterAddons (upstream's string).
pub const CLUSTER_ADDON_FINALIZER: &str = "clusteraddon.clusterstack.x-k8s.io";

/// Desired state of a ClusterAddon.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "clusterstack.x-k8s.io",
    version = "v1alpha1",
    kind = "ClusterAddon",
    namespaced,
    shortname = "caddon",
    status = "ClusterAddonStatus",
    derive = "PartialEq",
    doc = "ClusterAddon tracks the cluster addons applied to one Cluster.",
    printcolumn = r#"{"name": "Cluster", "type": "string", "jsonPath": ".metadata.ownerReferences[?(@.kind==\"Cluster\")].name"}"#,
    printcolumn = r#"{"name": "Hook", "type": "string", "jsonPath": ".spec.hook"}"#,
    printcolumn = r#"{"name": "Ready", "type": "boolean", "jsonPath": ".status.ready"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].reason"}"#,
    printcolumn = r#"{"name": "Message", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAddonSpec {
    /// ClusterClass (dot form) whose addons were last applied; empty when never applied.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cluster_stack: String,
    /// Cluster-addon version last applied (dash form).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Lifecycle hook in progress: ``, `AfterControlPlaneInitialized` or `BeforeClusterUpgrade`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hook: String,
    /// The Cluster API Cluster (upstream's webhook rules as CEL: kind Cluster, name and kind immutable).
    #[x_kube(validation = Rule::new("self.kind == 'Cluster'").message("clusterRef.kind must be Cluster"))]
    #[x_kube(validation = Rule::new("self.name == oldSelf.name && self.kind == oldSelf.kind").message("clusterRef name and kind are immutable"))]
    pub cluster_ref: ObjectReference,
}

/// Observed state of a ClusterAddon.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAddonStatus {
    /// Objects applied in the workload cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Resource>,
    /// Stages of the running hook (multi-stage addons).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<StageStatus>,
    /// ClusterClass whose stages `stages` are running (multi-stage addons); empty when none run. With
    /// `stages` it lets a restarted controller resume the run exactly where it stopped.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub applying_cluster_stack: String,
    /// Whether the addons of the current class are applied.
    #[serde(default)]
    pub ready: bool,
    /// Conditions, with a `Ready` summary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// One stage of a multi-stage addon hook.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StageStatus {
    /// Chart directory name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `apply` or `delete`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub action: String,
    /// `Pending`, `waitingForPreCondition`, `applyingOrDeleting`, `waitingForPostCondition` or `done`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub phase: String,
    /// Objects this stage applied (or deleted) in the workload cluster, with their sync status.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<Resource>,
}
