//! CRD types of the `clusterstack.x-k8s.io/v1alpha1` group, no I/O.
//!
//! ClusterStack, ClusterStackRelease and ClusterAddon keep upstream's fields, printer columns and
//! conditions so existing manifests keep working; ProviderPlugin is new. Validation that upstream did
//! in webhooks lives in the schema (patterns) and in `x-kubernetes-validations` CEL rules.
//! [`crds_yaml`] renders all four; `crds/` in the repository holds its output.

mod cluster_addon;
mod cluster_stack;
mod cluster_stack_release;
pub mod condition;
mod limits;
mod provider_plugin;
mod source;

pub use cluster_addon::{
    ClusterAddon, ClusterAddonSpec, ClusterAddonStatus, StageStatus, CLUSTER_ADDON_FINALIZER,
};
pub use cluster_stack::{
    Channel, ClusterStack, ClusterStackReleasePhase, ClusterStackReleaseSummary, ClusterStackSpec,
    ClusterStackStatus,
};
pub use cluster_stack_release::{
    ClusterStackRelease, ClusterStackReleaseSpec, ClusterStackReleaseStatus, CLUSTER_STACK_RELEASE_FINALIZER,
};
pub use condition::{Condition, ConditionSeverity, ConditionStatus, Resource, ResourceStatus};
pub use limits::{parse_deadline, parse_memory, LimitError};
pub use provider_plugin::{
    CaBundleSource, CallStatistics, Capabilities, CapabilityReport, LocalKeyRef, PluginLimits,
    ProviderPlugin, ProviderPluginSpec, ProviderPluginStatus, SecretGrant, SecretKeyRef, Verification,
};
pub use source::{GitHubSourceSpec, OciSourceSpec, ReleaseSourceSpec};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of all kinds here.
pub const GROUP: &str = "clusterstack.x-k8s.io";
/// The only version.
pub const VERSION: &str = "v1alpha1";

/// The four CRDs, in a stable order (the order of `crds/`).
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        ClusterStack::crd(),
        ClusterStackRelease::crd(),
        ClusterAddon::crd(),
        ProviderPlugin::crd(),
    ]
}

/// File name of a CRD in `crds/`: `<group>_<plural>.yaml`, as controller-gen names them.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}_{}.yaml", crd.spec.group, crd.spec.names.plural)
}

/// One CRD as a YAML document (without a leading `---`).
pub fn crd_yaml(crd: &CustomResourceDefinition) -> String {
    // Serialising a CRD built from our own types cannot fail: it is plain data with string keys.
    serde_yaml::to_string(crd).unwrap_or_else(|e| format!("# cannot serialise CRD: {e}\n"))
}

/// All four CRDs as one multi-document YAML stream (`stackhost crds`).
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| format!("---\n{}", crd_yaml(crd)))
        .collect()
}

/// Which ProviderPlugin serves a ClusterStack: none in noProvider mode, else the one named like
/// `spec.provider` in the ClusterStack's namespace.
pub fn provider_plugin_name(spec: &ClusterStackSpec) -> Option<&str> {
    if spec.no_provider {
        None
    } else {
        Some(spec.provider.as_str())
    }
}

#[cfg(test)]
mod tests;
