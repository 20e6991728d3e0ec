//! Conditions and the applied-object record shared by every kind.
//!
//! The shapes are Cluster API's `v1beta1.Condition` (with `severity`) and upstream's `Resource`, so
//! tools that read upstream status (kubectl columns, `clusterctl describe`) keep working.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The summary condition every kind carries; the printer columns show its reason and message.
pub const READY: &str = "Ready";

/// A Cluster API style condition (`type`, `status`, `severity`, `reason`, `message`, `lastTransitionTime`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    /// Condition type, e.g. `Ready`, `ClusterStackReleaseDownloaded`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: ConditionStatus,
    /// How bad a False condition is; empty when the condition is True.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub severity: Option<ConditionSeverity>,
    /// CamelCase machine-readable reason for the last transition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Human-readable details, saying what to do where possible.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// Status of a condition.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionStatus {
    /// The condition holds.
    True,
    /// The condition does not hold.
    False,
    /// Not known yet.
    #[default]
    Unknown,
}

/// Severity of a False condition (Cluster API semantics).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConditionSeverity {
    /// Needs a user's action.
    Error,
    /// Might resolve itself, but worth a look.
    Warning,
    /// Work in progress.
    Info,
}

/// Sync status of one applied object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum ResourceStatus {
    /// The last apply of the object succeeded.
    #[serde(rename = "synced")]
    Synced,
    /// The last apply or delete failed; `error` says why.
    #[serde(rename = "not-synced")]
    NotSynced,
}

/// One object applied from a rendered chart, as listed in `status.resources` (upstream `Resource`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Resource {
    /// API group, empty for the core group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// API version without the group.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// Kind.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    /// Namespace, empty for cluster-scoped objects.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// `synced` or `not-synced`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<ResourceStatus>,
    /// The error of the last failed apply or delete.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
}
