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

/// Condition types (upstream's strings, cso-behaviour.md §1.6) plus the ones stackhost adds.
pub mod types {
    /// Release assets fetched and validated (upstream Go const `ClusterStackReleaseAssetsReadyCondition`).
    pub const CLUSTER_STACK_RELEASE_DOWNLOADED: &str = "ClusterStackReleaseDownloaded";
    /// The provider step is done (here: the plugin's node images are ready).
    pub const PROVIDER_CLUSTER_STACK_RELEASE_READY: &str = "ProviderClusterStackReleaseReady";
    /// The cluster-class chart is applied.
    pub const HELM_CHART_APPLIED: &str = "HelmChartApplied";
    /// The release source can be reached.
    pub const ASSETS_CLIENT_API_AVAILABLE: &str = "AssetsClientAPIAvailable";
    /// Listing releases in the source worked.
    pub const RELEASES_SYNCED: &str = "ReleasesSynced";
    /// ClusterStackReleases created or updated.
    pub const CLUSTER_STACK_RELEASES_SYNCED: &str = "ClusterStackReleasesSynced";
    /// At least one release is ready.
    pub const CLUSTER_STACK_RELEASE_AVAILABLE: &str = "ClusterStackReleaseAvailable";
    /// stackhost: the ProviderPlugin's component is resolved, verified and compiled.
    pub const PLUGIN_LOADED: &str = "PluginLoaded";
    /// stackhost: every capability the plugin's `info()` asks for is granted by its ProviderPlugin.
    pub const CAPABILITIES_GRANTED: &str = "CapabilitiesGranted";
    /// stackhost: the plugin's `patch-cluster-class` step succeeded.
    pub const CLUSTER_CLASS_PATCHED: &str = "ClusterClassPatched";
}

/// The condition of a type, if present.
pub fn find<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of a type is present and True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == ConditionStatus::True)
}

/// Whether the condition of a type is present and False.
pub fn is_false(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == ConditionStatus::False)
}

/// A True condition.
pub fn true_condition(type_: &str) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: ConditionStatus::True,
        ..Default::default()
    }
}

/// A False condition with severity, reason and message.
pub fn false_condition(
    type_: &str,
    severity: ConditionSeverity,
    reason: &str,
    message: impl Into<String>,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: ConditionStatus::False,
        severity: Some(severity),
        reason: Some(reason.to_owned()),
        message: Some(message.into()),
        last_transition_time: None,
    }
}

/// Sets a condition, keeping `lastTransitionTime` when the status does not change (Cluster API
/// `conditions.Set`); conditions stay sorted with `Ready` first, then by type.
pub fn set(conditions: &mut Vec<Condition>, mut new: Condition, now: &Time) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            new.last_transition_time = if old.status == new.status {
                old.last_transition_time.clone()
            } else {
                Some(now.clone())
            };
            *old = new;
        }
        None => {
            new.last_transition_time = Some(now.clone());
            conditions.push(new);
        }
    }
    conditions.sort_by(|a, b| (a.type_ != READY, &a.type_).cmp(&(b.type_ != READY, &b.type_)));
}

/// Removes a condition (upstream deletes some conditions on success, e.g. `HelmChartTemplated`).
pub fn remove(conditions: &mut Vec<Condition>, type_: &str) {
    conditions.retain(|c| c.type_ != type_);
}

fn severity_rank(c: &Condition) -> u8 {
    match c.severity {
        Some(ConditionSeverity::Error) => 0,
        Some(ConditionSeverity::Warning) => 1,
        Some(ConditionSeverity::Info) | None => 2,
    }
}

/// Computes the `Ready` summary from all other conditions (Cluster API `conditions.SetSummary`):
/// True when every other condition is True; otherwise False with the reason, message and severity of
/// the most severe False condition (the first such by type order on ties); Unknown when nothing is
/// False but something is Unknown.
pub fn set_summary(conditions: &mut Vec<Condition>, now: &Time) {
    let others: Vec<&Condition> = conditions.iter().filter(|c| c.type_ != READY).collect();
    let worst_false = others
        .iter()
        .filter(|c| c.status == ConditionStatus::False)
        .min_by(|a, b| {
            severity_rank(a)
                .cmp(&severity_rank(b))
                .then_with(|| a.type_.cmp(&b.type_))
        });
    let summary = match worst_false {
        Some(c) => Condition {
            type_: READY.to_owned(),
            last_transition_time: None,
            ..(*c).clone()
        },
        None => match others.iter().find(|c| c.status == ConditionStatus::Unknown) {
            Some(c) => Condition {
                type_: READY.to_owned(),
                status: ConditionStatus::Unknown,
                severity: None,
                reason: c.reason.clone(),
                message: c.message.clone(),
                last_transition_time: None,
            },
            None => true_condition(READY),
        },
    };
    set(conditions, summary, now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("timestamp"))
    }

    #[test]
    fn transition_time_changes_only_with_the_status() {
        let mut cs = Vec::new();
        set(
            &mut cs,
            false_condition(types::HELM_CHART_APPLIED, ConditionSeverity::Info, "Ongoing", "a"),
            &at(1),
        );
        set(
            &mut cs,
            false_condition(
                types::HELM_CHART_APPLIED,
                ConditionSeverity::Warning,
                "Ongoing",
                "b",
            ),
            &at(2),
        );
        assert_eq!(cs[0].last_transition_time, Some(at(1)));
        assert_eq!(cs[0].message.as_deref(), Some("b"));
        set(&mut cs, true_condition(types::HELM_CHART_APPLIED), &at(3));
        assert_eq!(cs[0].last_transition_time, Some(at(3)));
        assert!(is_true(&cs, types::HELM_CHART_APPLIED));
        remove(&mut cs, types::HELM_CHART_APPLIED);
        assert!(cs.is_empty());
    }

    #[test]
    fn summary_takes_the_most_severe_false_condition() {
        let mut cs = vec![];
        set(
            &mut cs,
            true_condition(types::CLUSTER_STACK_RELEASE_DOWNLOADED),
            &at(1),
        );
        set_summary(&mut cs, &at(1));
        assert!(is_true(&cs, READY));
        assert_eq!(cs[0].type_, READY, "Ready sorts first");

        set(
            &mut cs,
            false_condition(
                types::PROVIDER_CLUSTER_STACK_RELEASE_READY,
                ConditionSeverity::Info,
                "ProcessOngoing",
                "waiting",
            ),
            &at(2),
        );
        set(
            &mut cs,
            false_condition(
                types::HELM_CHART_APPLIED,
                ConditionSeverity::Error,
                "FailedToApplyObjects",
                "denied",
            ),
            &at(2),
        );
        set_summary(&mut cs, &at(2));
        let ready = find(&cs, READY).expect("ready");
        assert_eq!(
            (
                ready.status,
                ready.severity,
                ready.reason.as_deref(),
                ready.message.as_deref()
            ),
            (
                ConditionStatus::False,
                Some(ConditionSeverity::Error),
                Some("FailedToApplyObjects"),
                Some("denied")
            )
        );
        assert_eq!(ready.last_transition_time, Some(at(2)));
    }
}
