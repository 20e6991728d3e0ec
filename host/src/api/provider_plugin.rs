//! The ProviderPlugin kind (`pp`, new): which Wasm component serves a provider's steps, how it is
//! verified, what it may use, and how it is doing.
//!
//! A ClusterStack with `noProvider: false` uses the ProviderPlugin named like its `spec.provider` in
//! its own namespace. Capabilities are deny-by-default: the plugin gets exactly what is listed here.

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::condition::Condition;

/// Desired state of a ProviderPlugin.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[kube(
    group = "clusterstack.x-k8s.io",
    version = "v1alpha1",
    kind = "ProviderPlugin",
    namespaced,
    shortname = "pp",
    status = "ProviderPluginStatus",
    derive = "PartialEq",
    doc = "ProviderPlugin names the sandboxed WebAssembly component that runs a provider's steps.",
    printcolumn = r#"{"name": "Image", "type": "string", "jsonPath": ".spec.image"}"#,
    printcolumn = r#"{"name": "Digest", "type": "string", "jsonPath": ".status.resolvedDigest", "priority": 1}"#,
    printcolumn = r#"{"name": "Verified By", "type": "string", "jsonPath": ".status.verifiedBy"}"#,
    printcolumn = r#"{"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].status"}"#,
    printcolumn = r#"{"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name": "Reason", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].reason"}"#,
    printcolumn = r#"{"name": "Message", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].message"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ProviderPluginSpec {
    /// OCI reference of the component: `<registry>/<repository>:<tag>` or `...@sha256:<digest>`.
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new("!self.contains(' ') && self.contains('/')").message("image must be an OCI reference like registry.example/plugins/openstack:1.0"))]
    pub image: String,
    /// How the component's signature is checked; required so running unsigned code is a visible choice.
    pub verification: Verification,
    /// Per-call resource limits.
    #[serde(default)]
    pub limits: PluginLimits,
    /// What the plugin may use; everything else is denied.
    #[serde(default)]
    pub capabilities: Capabilities,
    /// Free-form configuration handed to the plugin as JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_json_object")]
    pub config: Option<serde_json::Value>,
    /// Talk plain HTTP to the registry (local test registries only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_registry: bool,
}

fn free_json_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "description": "Free-form configuration handed to the plugin as JSON."
    })
}

/// Signature verification: cosign public keys from Secrets, or an explicit opt-out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.keys) && size(self.keys) > 0) != (has(self.allowUnsigned) && self.allowUnsigned)").message("set verification.keys or verification.allowUnsigned: true (not both)"))]
pub struct Verification {
    /// Public keys (PEM) in Secrets; a signature by any of them is accepted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<SecretKeyRef>,
    /// Run the component without a signature check.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_unsigned: bool,
}

/// One key of one Secret.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Secret name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Secret namespace: the ProviderPlugin's own (the default). Any other namespace is refused, so a
    /// ProviderPlugin cannot read or probe Secrets outside its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Key in the Secret's data, e.g. `cosign.pub`.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Limits applied to every call of the plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginLimits {
    /// Wasm fuel per call (roughly instructions); the controller's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub fuel: Option<u64>,
    /// Linear memory cap as a quantity, e.g. `64Mi`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[1-9][0-9]*(Ki|Mi|Gi)?$"))]
    pub memory: Option<String>,
    /// Wall-clock deadline per call as a duration, e.g. `30s`, `2m`, `1m30s`, `500ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub deadline: Option<String>,
}

/// Capabilities granted to the plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Capabilities {
    /// Hosts the plugin may reach over HTTP(S): `host`, `host:port` or `*.domain`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(inner(regex(pattern = r"^(\*\.)?[A-Za-z0-9.-]+(:[0-9]+)?$")))]
    pub http_hosts: Vec<String>,
    /// Secret keys the plugin may read, in the namespace of the release it works on.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretGrant>,
    /// CA certificates (PEM) the plugin's outbound HTTPS trusts besides the public roots, for
    /// endpoints with a private CA (e.g. the `cacert` of an OpenStack `clouds.yaml` Secret). Read
    /// from the ProviderPlugin's namespace when the plugin is loaded (new digest or spec change).
    #[serde(default, rename = "httpCABundle", skip_serializing_if = "Option::is_none")]
    pub http_ca_bundle: Option<CaBundleSource>,
}

/// Where a PEM bundle of CA certificates is: one key of a ConfigMap (e.g. a trust-manager bundle)
/// or of a Secret, in the ProviderPlugin's namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.configMap) != has(self.secret)").message("httpCABundle: set exactly one of configMap or secret"))]
pub struct CaBundleSource {
    /// A ConfigMap key holding PEM certificates, e.g. `{name: corporate-ca, key: ca.crt}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<LocalKeyRef>,
    /// A Secret key holding PEM certificates, e.g. `{name: openstack, key: cacert}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<LocalKeyRef>,
}

impl CaBundleSource {
    /// `ConfigMap ns/name key k` or `Secret ns/name key k`, for messages.
    pub fn describe(&self, namespace: &str) -> String {
        match (&self.config_map, &self.secret) {
            (Some(r), _) => format!("ConfigMap {namespace}/{} key `{}`", r.name, r.key),
            (None, Some(r)) => format!("Secret {namespace}/{} key `{}`", r.name, r.key),
            (None, None) => "nothing (set configMap or secret)".to_string(),
        }
    }
}

/// One key of an object in the same namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalKeyRef {
    /// Object name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Key in the object's data.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// Keys of one Secret a plugin may read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretGrant {
    /// Secret name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// Keys of the Secret; all keys when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<String>,
}

/// Observed state of a ProviderPlugin.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProviderPluginStatus {
    /// Digest (`sha256:...`) the image resolved to and that now serves calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_digest: Option<String>,
    /// Which key verified the signature (`<namespace>/<secret>/<key>`), or `unsigned (allowUnsigned)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified_by: Option<String>,
    /// Interfaces the component imports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub imports: Vec<String>,
    /// Interfaces the component exports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<String>,
    /// What the serving plugin's `info()` asks for, and what of it the spec does not grant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<CapabilityReport>,
    /// Why the last resolve/verify/compile failed; the last good digest keeps serving meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_load_error: Option<String>,
    /// Call counters since the controller started serving this digest.
    #[serde(default)]
    pub calls: CallStatistics,
    /// Generation of the spec the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions, with a `Ready` summary.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The capabilities a plugin asks for (its `info()`) against the ProviderPlugin's grants.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CapabilityReport {
    /// What `info()` lists: `log`, `http`, `secrets`, `state`.
    #[serde(default)]
    pub requested: Vec<String>,
    /// Requested but not granted: each call of these gets the typed `denied` error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub not_granted: Vec<String>,
}

/// Call counters of a plugin.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CallStatistics {
    /// Calls made.
    #[serde(default)]
    pub total: u64,
    /// Calls that returned an error value.
    #[serde(default)]
    pub errors: u64,
    /// Calls that trapped, ran out of fuel or memory, or missed the deadline.
    #[serde(default)]
    pub traps: u64,
    /// Fuel consumed by all calls.
    #[serde(default)]
    pub fuel_consumed: u64,
}
