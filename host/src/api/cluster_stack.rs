//! The ClusterStack kind (`csk`): which releases of one provider/name/Kubernetes minor to keep.
//!
//! Fields, defaults and printer columns are upstream's (cso-behaviour.md §1.2). Upstream's validating
//! webhook is replaced by schema patterns and CEL rules, which also fixes quirks: versions are validated
//! on update too (#230), Kubernetes majors may have several digits (§9.17), and provider and name are
//! rejected up front when they contain `-` (they could never be parsed back from a release tag).

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;
use super::source::ReleaseSourceSpec;

/// Desired state of a ClusterStack.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "clusterstack.x-k8s.io",
    version = "v1alpha1",
    kind = "ClusterStack",
    namespaced,
    shortname = "csk",
    status = "ClusterStackStatus",
    derive = "PartialEq",
    doc = "ClusterStack keeps the releases of one cluster stack (provider, name, Kubernetes minor) available as ClusterClasses.",
    printcolumn = r#"{"name": "Provider", "type": "string", "jsonPath": ".spec.provider"}"#,
    printcolumn = r#"{"name": "ClusterStack", "type": "string", "jsonPath": ".spec.name"}"#,
    printcolumn = r#"{"name": "K8s", "type": "string", "jsonPath": ".spec.kubernetesVersion"}"#,
    printcolumn = r#"{"name": "Channel", "type": "string", "jsonPath": ".spec.channel"}"#,
    printcolumn = r#"{"name": "Autosubscribe", "type": "string", "jsonPath": ".spec.autoSubscribe"}"#,
    printcolumn = r#"{"name": "Usable", "type": "string", "jsonPath": ".status.usableVersions"}"#,
    printcolumn = r#"{"name": "Latest", "type": "string", "jsonPath": ".status.latestRelease"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].reason"}"#,
    printcolumn = r#"{"name": "Message", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStackSpec {
    /// Provider name, e.g. `docker`, `openstack`: the first segment of release and ClusterClass names.
    /// Unless `noProvider` is set, the ProviderPlugin of this name in the same namespace serves the
    /// provider-specific steps.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]+$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("provider is immutable"))]
    pub provider: String,
    /// Cluster stack name, e.g. `ferrol`, `scs`.
    #[schemars(length(min = 1, max = 63), regex(pattern = r"^[a-z0-9]+$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("name is immutable"))]
    pub name: String,
    /// Kubernetes `<major>.<minor>`, e.g. `"1.32"`.
    #[schemars(length(max = 16), regex(pattern = r"^[1-9][0-9]*\.(0|[1-9][0-9]*)$"))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("kubernetesVersion is immutable"))]
    pub kubernetes_version: String,
    /// Release channel that autoSubscribe follows.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message("channel is immutable"))]
    pub channel: Channel,
    /// Versions that must be available, in dot form: `v1`, `v1-alpha.1`, `v0-sha.hipstsw`. At most 50:
    /// each one is a ClusterStackRelease the controller keeps reconciling.
    #[serde(default)]
    #[schemars(
        length(max = 50),
        inner(
            length(max = 63),
            regex(pattern = r"^v[0-9]+(-[A-Za-z0-9_]+\.[A-Za-z0-9_]+)?$")
        )
    )]
    #[x_kube(validation = Rule::new("self.all(v, !v.contains('-stable.'))").message("write stable versions without a suffix (v1, not v1-stable.1)"))]
    pub versions: Vec<String>,
    /// Follow the newest release of the channel in the source.
    #[serde(default = "default_true")]
    pub auto_subscribe: bool,
    /// No provider-specific step: no ProviderPlugin and no provider objects are needed.
    #[serde(default)]
    pub no_provider: bool,
    /// Upstream's reference to a provider `<X>ClusterStackReleaseTemplate`. Accepted so existing
    /// manifests keep working; with stackhost the ProviderPlugin named `spec.provider` is used instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_ref: Option<ObjectReference>,
    /// Release source for this ClusterStack; the controller's default source when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ReleaseSourceSpec>,
}

fn default_true() -> bool {
    true
}

/// The release channel of a ClusterStack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Releases `vN`.
    #[default]
    Stable,
    /// Releases `vN-<word>.<patch>`, including hash releases `v0-sha.<hash>`.
    Custom,
}

/// Observed state of a ClusterStack.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStackStatus {
    /// `"<latest ready release, dot form> | <its Kubernetes version>"`, e.g. `docker-ferrol-1-27-v2 | v1.27.3`.
    #[serde(default)]
    pub latest_release: String,
    /// One entry per release kept by the last reconcile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub summary: Vec<ClusterStackReleaseSummary>,
    /// Comma-separated dot-form versions of the ready releases, e.g. `v1, v2`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub usable_versions: String,
    /// Conditions, with a `Ready` summary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Summary of one ClusterStackRelease in the ClusterStack status.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStackReleaseSummary {
    /// Version in dash form, e.g. `v1` or `v0-sha-hipstsw`.
    pub name: String,
    /// Whether the release is ready.
    pub ready: bool,
    /// Where the release is in its lifecycle.
    pub phase: ClusterStackReleasePhase,
    /// The reason it is not ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Phases of a ClusterStackRelease, with upstream's strings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ClusterStackReleasePhase {
    /// Not started.
    #[default]
    #[serde(rename = "")]
    None,
    /// Fetching the release assets.
    #[serde(rename = "downloading release assets")]
    DownloadingReleaseAssets,
    /// The provider step (plugin) runs.
    #[serde(rename = "provider-specific work")]
    ProviderSpecificWork,
    /// Applying the rendered cluster-class objects.
    #[serde(rename = "applying objects")]
    ApplyingObjects,
    /// Ready.
    #[serde(rename = "done")]
    Done,
}
