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

impl ClusterStackRelease {
    /// The entry of this release in its ClusterStack's `status.summary` (upstream
    /// `internal/clusterstackrelease/util.go`): `name` is the version in dash form (the whole object
    /// name when it is not a release tag), `phase` follows the step conditions.
    pub fn summary(&self) -> super::ClusterStackReleaseSummary {
        use super::condition::{find, is_false, is_true, types, ConditionStatus, READY};
        use super::ClusterStackReleasePhase as Phase;
        let object_name = self.metadata.name.clone().unwrap_or_default();
        let name = crate::release::ReleaseName::parse_tag(&object_name)
            .map(|r| r.version.dash())
            .unwrap_or(object_name);
        let conditions = self
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        let ready_condition = find(conditions, READY);
        if ready_condition.is_some_and(|c| c.status == ConditionStatus::True) {
            return super::ClusterStackReleaseSummary {
                name,
                ready: true,
                phase: Phase::Done,
                message: None,
            };
        }
        let message = ready_condition
            .filter(|c| c.status == ConditionStatus::False)
            .and_then(|c| c.reason.clone());
        let phase = if is_true(conditions, types::PROVIDER_CLUSTER_STACK_RELEASE_READY) {
            Phase::ApplyingObjects
        } else if is_true(conditions, types::CLUSTER_STACK_RELEASE_DOWNLOADED) {
            Phase::ProviderSpecificWork
        } else if is_false(conditions, types::CLUSTER_STACK_RELEASE_DOWNLOADED) {
            Phase::DownloadingReleaseAssets
        } else {
            Phase::None
        };
        super::ClusterStackReleaseSummary {
            name,
            ready: false,
            phase,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::condition::{false_condition, true_condition, types, ConditionSeverity, READY};
    use crate::api::ClusterStackReleasePhase as Phase;

    fn csr(name: &str, conditions: Vec<Condition>) -> ClusterStackRelease {
        let mut c = ClusterStackRelease::new(name, ClusterStackReleaseSpec::default());
        c.status = Some(ClusterStackReleaseStatus {
            conditions,
            ..Default::default()
        });
        c
    }

    #[test]
    fn summary_phases_follow_upstream() {
        let not_ready = || false_condition(READY, ConditionSeverity::Info, "ProcessOngoing", "waiting");
        let cases = [
            (vec![], Phase::None, None),
            (
                vec![
                    not_ready(),
                    false_condition(
                        types::CLUSTER_STACK_RELEASE_DOWNLOADED,
                        ConditionSeverity::Info,
                        "ReleaseAssetsNotDownloadedYet",
                        "",
                    ),
                ],
                Phase::DownloadingReleaseAssets,
                Some("ProcessOngoing"),
            ),
            (
                vec![
                    not_ready(),
                    true_condition(types::CLUSTER_STACK_RELEASE_DOWNLOADED),
                ],
                Phase::ProviderSpecificWork,
                Some("ProcessOngoing"),
            ),
            (
                vec![
                    true_condition(types::CLUSTER_STACK_RELEASE_DOWNLOADED),
                    true_condition(types::PROVIDER_CLUSTER_STACK_RELEASE_READY),
                ],
                Phase::ApplyingObjects,
                None,
            ),
        ];
        for (conditions, phase, message) in cases {
            let s = csr("docker-ferrol-1-27-v0-sha-hipstsw", conditions).summary();
            assert_eq!(
                (s.name.as_str(), s.ready, s.phase, s.message.as_deref()),
                ("v0-sha-hipstsw", false, phase, message)
            );
        }
        let done = csr("docker-ferrol-1-27-v2", vec![true_condition(READY)]).summary();
        assert_eq!(
            (done.name.as_str(), done.ready, done.phase),
            ("v2", true, Phase::Done)
        );
    }
}
