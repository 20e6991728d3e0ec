//! Resource types the cluster serves: the built-in kinds and the kinds that CustomResourceDefinitions add.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult, Cause};

/// Built-in kinds with behaviour of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// core/v1 Namespace.
    Namespace,
    /// core/v1 Secret.
    Secret,
    /// core/v1 ConfigMap.
    ConfigMap,
    /// core/v1 Event, also served as events.k8s.io/v1 from the same storage.
    Event,
    /// coordination.k8s.io/v1 Lease.
    Lease,
    /// apiextensions.k8s.io/v1 CustomResourceDefinition.
    Crd,
    /// A common built-in kind served without a schema (Deployment, Service, ClusterRole, ...), so rendered Helm
    /// charts can be applied; no controller acts on them.
    Generic,
}

/// The schemaless built-in kinds: (group, version, plural, kind, namespaced, short names, status, in `all`).
type GenericKind = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
    &'static [&'static str],
    bool,
    bool,
);
const GENERIC: &[GenericKind] = &[
    ("", "v1", "pods", "Pod", true, &["po"], true, true),
    ("", "v1", "services", "Service", true, &["svc"], true, true),
    (
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        true,
        &["sa"],
        false,
        false,
    ),
    ("", "v1", "endpoints", "Endpoints", true, &["ep"], false, false),
    (
        "",
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
        &["pvc"],
        true,
        false,
    ),
    (
        "",
        "v1",
        "persistentvolumes",
        "PersistentVolume",
        false,
        &["pv"],
        true,
        false,
    ),
    ("", "v1", "nodes", "Node", false, &["no"], true, false),
    (
        "apps",
        "v1",
        "deployments",
        "Deployment",
        true,
        &["deploy"],
        true,
        true,
    ),
    ("apps", "v1", "daemonsets", "DaemonSet", true, &["ds"], true, true),
    (
        "apps",
        "v1",
        "statefulsets",
        "StatefulSet",
        true,
        &["sts"],
        true,
        true,
    ),
    (
        "apps",
        "v1",
        "replicasets",
        "ReplicaSet",
        true,
        &["rs"],
        true,
        true,
    ),
    ("batch", "v1", "jobs", "Job", true, &[], true, true),
    ("batch", "v1", "cronjobs", "CronJob", true, &["cj"], true, true),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        &[],
        false,
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        &[],
        false,
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        &[],
        false,
        false,
    ),
    (
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        &[],
        false,
        false,
    ),
    (
        "policy",
        "v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
        &["pdb"],
        true,
        false,
    ),
    (
        "networking.k8s.io",
        "v1",
        "ingresses",
        "Ingress",
        true,
        &["ing"],
        true,
        false,
    ),
    (
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        &["netpol"],
        false,
        false,
    ),
    (
        "storage.k8s.io",
        "v1",
        "storageclasses",
        "StorageClass",
        false,
        &["sc"],
        false,
        false,
    ),
    (
        "scheduling.k8s.io",
        "v1",
        "priorityclasses",
        "PriorityClass",
        false,
        &["pc"],
        false,
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "validatingwebhookconfigurations",
        "ValidatingWebhookConfiguration",
        false,
        &[],
        false,
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "mutatingwebhookconfigurations",
        "MutatingWebhookConfiguration",
        false,
        &[],
        false,
        false,
    ),
    (
        "",
        "v1",
        "resourcequotas",
        "ResourceQuota",
        true,
        &["quota"],
        true,
        false,
    ),
    (
        "",
        "v1",
        "limitranges",
        "LimitRange",
        true,
        &["limits"],
        false,
        false,
    ),
    ("", "v1", "podtemplates", "PodTemplate", true, &[], false, false),
    (
        "",
        "v1",
        "replicationcontrollers",
        "ReplicationController",
        true,
        &["rc"],
        true,
        true,
    ),
    (
        "apps",
        "v1",
        "controllerrevisions",
        "ControllerRevision",
        true,
        &[],
        false,
        false,
    ),
    (
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "HorizontalPodAutoscaler",
        true,
        &["hpa"],
        true,
        true,
    ),
    (
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        true,
        &[],
        false,
        false,
    ),
    (
        "networking.k8s.io",
        "v1",
        "ingressclasses",
        "IngressClass",
        false,
        &[],
        false,
        false,
    ),
    (
        "node.k8s.io",
        "v1",
        "runtimeclasses",
        "RuntimeClass",
        false,
        &[],
        false,
        false,
    ),
    (
        "storage.k8s.io",
        "v1",
        "csidrivers",
        "CSIDriver",
        false,
        &[],
        false,
        false,
    ),
    (
        "storage.k8s.io",
        "v1",
        "csinodes",
        "CSINode",
        false,
        &[],
        false,
        false,
    ),
    (
        "storage.k8s.io",
        "v1",
        "volumeattachments",
        "VolumeAttachment",
        false,
        &[],
        true,
        false,
    ),
    (
        "storage.k8s.io",
        "v1",
        "csistoragecapacities",
        "CSIStorageCapacity",
        true,
        &[],
        false,
        false,
    ),
    (
        "apiregistration.k8s.io",
        "v1",
        "apiservices",
        "APIService",
        false,
        &[],
        true,
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicies",
        "ValidatingAdmissionPolicy",
        false,
        &[],
        true,
        false,
    ),
    (
        "admissionregistration.k8s.io",
        "v1",
        "validatingadmissionpolicybindings",
        "ValidatingAdmissionPolicyBinding",
        false,
        &[],
        false,
        false,
    ),
    (
        "certificates.k8s.io",
        "v1",
        "certificatesigningrequests",
        "CertificateSigningRequest",
        false,
        &["csr"],
        true,
        false,
    ),
    (
        "flowcontrol.apiserver.k8s.io",
        "v1",
        "flowschemas",
        "FlowSchema",
        false,
        &[],
        true,
        false,
    ),
    (
        "flowcontrol.apiserver.k8s.io",
        "v1",
        "prioritylevelconfigurations",
        "PriorityLevelConfiguration",
        false,
        &[],
        true,
        false,
    ),
];

/// One served version of a resource type.
#[derive(Debug, Clone)]
pub struct Version {
    /// `v1`, `v1beta2`, ...
    pub name: String,
    /// The OpenAPI v3 schema of the version (CRDs only).
    pub schema: Option<Arc<Value>>,
    /// `additionalPrinterColumns` of the version (CRDs only).
    pub printer_columns: Vec<Value>,
    /// Whether `/status` is a subresource.
    pub status_subresource: bool,
    /// The `/scale` subresource, if served.
    pub scale: Option<Scale>,
    /// `deprecated` flag and warning of a CRD version.
    pub deprecation_warning: Option<String>,
}

/// Where a kind keeps its replicas, for the `/scale` subresource (JSON paths like `.spec.replicas`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scale {
    /// `specReplicasPath`.
    pub spec_replicas: String,
    /// `statusReplicasPath`.
    pub status_replicas: String,
    /// `labelSelectorPath` (a string selector for CRDs; a LabelSelector object for the workload kinds).
    pub label_selector: Option<String>,
}

/// A resource type (group + plural), with all its served versions.
#[derive(Debug, Clone)]
pub struct ResourceType {
    /// API group ("" for core).
    pub group: String,
    /// Served versions, preferred (storage) first.
    pub versions: Vec<Version>,
    /// Storage version name.
    pub storage_version: String,
    /// Plural, lower case: the URL segment.
    pub plural: String,
    /// Singular name.
    pub singular: String,
    /// Kind.
    pub kind: String,
    /// List kind.
    pub list_kind: String,
    /// Namespaced or cluster-scoped.
    pub namespaced: bool,
    /// Short names (`cm`, `ns`).
    pub short_names: Vec<String>,
    /// Categories (`all`, `cluster-api`).
    pub categories: Vec<String>,
    /// Built-in behaviour, if any.
    pub builtin: Option<Builtin>,
    /// The storage key's group: events.k8s.io events are stored with core events.
    pub storage_group: String,
}

impl ResourceType {
    /// The served version with this name.
    pub fn version(&self, name: &str) -> Option<&Version> {
        self.versions.iter().find(|v| v.name == name)
    }

    /// `group/version` or `version` for core.
    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    /// Verbs served on the main resource.
    pub fn verbs(&self) -> Vec<&'static str> {
        vec![
            "create",
            "delete",
            "deletecollection",
            "get",
            "list",
            "patch",
            "update",
            "watch",
        ]
    }

    /// Whether objects of this type carry `metadata.generation`.
    pub fn has_generation(&self) -> bool {
        matches!(self.builtin, None | Some(Builtin::Crd) | Some(Builtin::Generic))
    }
}

// One row of the built-in kinds table; named arguments would only add noise here.
#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short: &[&str],
    builtin: Builtin,
    status: bool,
) -> ResourceType {
    ResourceType {
        group: group.into(),
        versions: vec![Version {
            name: version.into(),
            schema: None,
            printer_columns: vec![],
            status_subresource: status,
            // The workload kinds with replicas serve /scale like the real ones.
            scale: matches!(plural, "deployments" | "statefulsets" | "replicasets").then(|| Scale {
                spec_replicas: ".spec.replicas".into(),
                status_replicas: ".status.replicas".into(),
                label_selector: Some(".spec.selector".into()),
            }),
            deprecation_warning: None,
        }],
        storage_version: version.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: vec![],
        builtin: Some(builtin),
        storage_group: group.into(),
    }
}

/// The resource types a cluster serves, by (group, plural).
#[derive(Debug, Clone)]
pub struct Registry {
    types: BTreeMap<(String, String), Arc<ResourceType>>,
}

impl Default for Registry {
    fn default() -> Self {
        Self::new()
    }
}

impl Registry {
    /// The built-in kinds only.
    pub fn new() -> Self {
        let mut events_v1 = builtin(
            "events.k8s.io",
            "v1",
            "events",
            "Event",
            true,
            &["ev"],
            Builtin::Event,
            false,
        );
        events_v1.storage_group = String::new();
        let mut crd = builtin(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            "CustomResourceDefinition",
            false,
            &["crd", "crds"],
            Builtin::Crd,
            true,
        );
        crd.categories = vec!["api-extensions".into()];
        let mut all = vec![
            builtin(
                "",
                "v1",
                "namespaces",
                "Namespace",
                false,
                &["ns"],
                Builtin::Namespace,
                true,
            ),
            builtin("", "v1", "secrets", "Secret", true, &[], Builtin::Secret, false),
            builtin(
                "",
                "v1",
                "configmaps",
                "ConfigMap",
                true,
                &["cm"],
                Builtin::ConfigMap,
                false,
            ),
            builtin("", "v1", "events", "Event", true, &["ev"], Builtin::Event, false),
            events_v1,
            builtin(
                "coordination.k8s.io",
                "v1",
                "leases",
                "Lease",
                true,
                &[],
                Builtin::Lease,
                false,
            ),
            crd,
        ];
        for (group, version, plural, kind, namespaced, short, status, in_all) in GENERIC {
            let mut t = builtin(
                group,
                version,
                plural,
                kind,
                *namespaced,
                short,
                Builtin::Generic,
                *status,
            );
            if *in_all {
                t.categories = vec!["all".into()];
            }
            all.push(t);
        }
        let types = all
            .into_iter()
            .map(|t| ((t.group.clone(), t.plural.clone()), Arc::new(t)))
            .collect();
        Registry { types }
    }

    /// The type served at `group/version/plural`, if that version is served.
    pub fn get(&self, group: &str, version: &str, plural: &str) -> Option<Arc<ResourceType>> {
        let t = self.types.get(&(group.to_string(), plural.to_string()))?;
        t.version(version).map(|_| t.clone())
    }

    /// The type stored under (group, plural), any version.
    pub fn by_plural(&self, group: &str, plural: &str) -> Option<Arc<ResourceType>> {
        self.types.get(&(group.to_string(), plural.to_string())).cloned()
    }

    /// The type serving `kind` in `group/version` (events resolve to the storage group's view).
    pub fn by_kind(&self, group: &str, version: &str, kind: &str) -> Option<Arc<ResourceType>> {
        self.types
            .values()
            .find(|t| t.group == group && t.kind == kind && t.version(version).is_some())
            .cloned()
    }

    /// All types.
    pub fn all(&self) -> impl Iterator<Item = &Arc<ResourceType>> {
        self.types.values()
    }

    /// Groups with their versions, in a stable order (core first, then by group name).
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for t in self.types.values() {
            let entry = match out.iter_mut().find(|(g, _)| *g == t.group) {
                Some(e) => e,
                None => {
                    out.push((t.group.clone(), Vec::new()));
                    let last = out.len() - 1;
                    &mut out[last]
                }
            };
            for v in &t.versions {
                if !entry.1.contains(&v.name) {
                    entry.1.push(v.name.clone());
                }
            }
        }
        for (_, versions) in &mut out {
            versions.sort_by_key(|v| std::cmp::Reverse(version_priority(v)));
        }
        out
    }

    /// Serve (or re-serve) the kind a CRD defines.
    pub fn insert_crd(&mut self, t: ResourceType) {
        self.types
            .insert((t.group.clone(), t.plural.clone()), Arc::new(t));
    }

    /// Stop serving a CRD's kind.
    pub fn remove(&mut self, group: &str, plural: &str) {
        if let Some(t) = self.types.get(&(group.to_string(), plural.to_string())) {
            if t.builtin.is_none() {
                self.types.remove(&(group.to_string(), plural.to_string()));
            }
        }
    }
}

/// Kubernetes version priority: GA > beta > alpha, higher numbers first (v1 > v1beta2 > v1beta1 > v1alpha1).
pub fn version_priority(v: &str) -> (u8, u32, u32) {
    let Some(rest) = v.strip_prefix('v') else {
        return (0, 0, 0);
    };
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    let Ok(major) = digits.parse::<u32>() else {
        return (0, 0, 0);
    };
    let tail = &rest[digits.len()..];
    if tail.is_empty() {
        return (3, major, 0);
    }
    for (prefix, level) in [("beta", 2u8), ("alpha", 1u8)] {
        if let Some(n) = tail.strip_prefix(prefix) {
            if let Ok(minor) = n.parse::<u32>() {
                return (level, major, minor);
            }
        }
    }
    (0, 0, 0)
}

/// Check a CustomResourceDefinition and build the resource type it defines.
pub fn crd_to_type(crd: &Value) -> ApiResult<ResourceType> {
    let name = crd
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let mut causes = Vec::new();
    let spec = crd.get("spec").cloned().unwrap_or(Value::Null);
    let s = |p: &str| {
        spec.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let group = s("/group");
    let plural = s("/names/plural");
    let kind = s("/names/kind");
    let scope = s("/scope");
    let required = |causes: &mut Vec<Cause>, field: &str| {
        causes.push(Cause {
            reason: "FieldValueRequired".into(),
            message: "Required value".into(),
            field: field.into(),
        })
    };
    if group.is_empty() {
        required(&mut causes, "spec.group");
    } else if !group.contains('.') {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {group:?}: should be a domain with at least one dot"),
            field: "spec.group".into(),
        });
    }
    if plural.is_empty() {
        required(&mut causes, "spec.names.plural");
    }
    if kind.is_empty() {
        required(&mut causes, "spec.names.kind");
    }
    if scope != "Namespaced" && scope != "Cluster" {
        causes.push(Cause {
            reason: "FieldValueNotSupported".into(),
            message: format!("Unsupported value: {scope:?}: supported values: \"Cluster\", \"Namespaced\""),
            field: "spec.scope".into(),
        });
    }
    if !plural.is_empty() && !group.is_empty() && name != format!("{plural}.{group}") {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
            field: "metadata.name".into(),
        });
    }
    let versions = spec
        .get("versions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if versions.is_empty() {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: "Invalid value: []: must have exactly one version marked as storage version".into(),
            field: "spec.versions".into(),
        });
    }
    let storage: Vec<&Value> = versions
        .iter()
        .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        .collect();
    if !versions.is_empty() && storage.len() != 1 {
        causes.push(Cause {
            reason: "FieldValueInvalid".into(),
            message: format!(
                "Invalid value: {:?}: must have exactly one version marked as storage version",
                versions
                    .iter()
                    .filter_map(|v| v.get("name").and_then(Value::as_str))
                    .collect::<Vec<_>>()
            ),
            field: "spec.versions".into(),
        });
    }
    let mut served = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let vname = v.get("name").and_then(Value::as_str).unwrap_or_default();
        if vname.is_empty() {
            required(&mut causes, &format!("spec.versions[{i}].name"));
            continue;
        }
        let schema = v.pointer("/schema/openAPIV3Schema").cloned();
        if let Some(schema) = &schema {
            crate::validation::check_structural(
                schema,
                &format!("spec.versions[{i}].schema.openAPIV3Schema"),
                &mut causes,
            );
        } else {
            required(&mut causes, &format!("spec.versions[{i}].schema.openAPIV3Schema"));
        }
        if v.get("served").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        served.push(Version {
            name: vname.to_string(),
            schema: schema.map(Arc::new),
            printer_columns: v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default(),
            status_subresource: v.pointer("/subresources/status").is_some(),
            scale: v.pointer("/subresources/scale").map(|sc| {
                let p = |f: &str| sc.get(f).and_then(Value::as_str).map(str::to_string);
                Scale {
                    spec_replicas: p("specReplicasPath").unwrap_or_else(|| ".spec.replicas".into()),
                    status_replicas: p("statusReplicasPath").unwrap_or_else(|| ".status.replicas".into()),
                    label_selector: p("labelSelectorPath"),
                }
            }),
            deprecation_warning: if v.get("deprecated").and_then(Value::as_bool) == Some(true) {
                Some(
                    v.get("deprecationWarning")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .unwrap_or_else(|| format!("{group}/{vname} {kind} is deprecated")),
                )
            } else {
                None
            },
        });
    }
    if !causes.is_empty() {
        return Err(ApiError::invalid(
            "CustomResourceDefinition",
            "apiextensions.k8s.io",
            &name,
            causes,
        ));
    }
    served.sort_by_key(|v| std::cmp::Reverse(version_priority(&v.name)));
    let strings = |p: &str| {
        spec.pointer(p)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
            .unwrap_or_default()
    };
    let singular = s("/names/singular");
    Ok(ResourceType {
        group: group.clone(),
        versions: served,
        storage_version: storage
            .first()
            .and_then(|v| v.get("name"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        singular: if singular.is_empty() {
            kind.to_lowercase()
        } else {
            singular
        },
        list_kind: {
            let l = s("/names/listKind");
            if l.is_empty() {
                format!("{kind}List")
            } else {
                l
            }
        },
        plural,
        kind,
        namespaced: scope == "Namespaced",
        short_names: strings("/names/shortNames"),
        categories: strings("/names/categories"),
        builtin: None,
        storage_group: group,
    })
}

/// The `status` a CRD gets once its names are accepted and it is established.
pub fn crd_status(crd: &Value, now: &str) -> Value {
    let names = crd.pointer("/spec/names").cloned().unwrap_or(json!({}));
    let mut accepted = names.clone();
    if accepted.get("singular").is_none() {
        if let Some(kind) = names.get("kind").and_then(Value::as_str) {
            accepted["singular"] = json!(kind.to_lowercase());
        }
    }
    if accepted.get("listKind").is_none() {
        if let Some(kind) = names.get("kind").and_then(Value::as_str) {
            accepted["listKind"] = json!(format!("{kind}List"));
        }
    }
    let mut stored: Vec<Value> = crd
        .pointer("/status/storedVersions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(sv) = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .and_then(|vs| {
            vs.iter()
                .find(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
        })
        .and_then(|v| v.get("name"))
    {
        if !stored.contains(sv) {
            stored.push(sv.clone());
        }
    }
    json!({
        "acceptedNames": accepted,
        "conditions": [
            {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts", "message": "no conflicts found"},
            {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted", "message": "the initial names have been accepted"}
        ],
        "storedVersions": stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut v = vec!["v1alpha1", "v1beta1", "v1", "v2", "v1beta2", "foo"];
        v.sort_by_key(|x| std::cmp::Reverse(version_priority(x)));
        assert_eq!(v, ["v2", "v1", "v1beta2", "v1beta1", "v1alpha1", "foo"]);
    }

    #[test]
    fn crd_without_storage_version_is_invalid() {
        let crd = json!({"metadata": {"name": "foos.example.com"}, "spec": {"group": "example.com", "scope": "Namespaced",
            "names": {"plural": "foos", "kind": "Foo"}, "versions": [{"name": "v1", "served": true, "storage": false, "schema": {"openAPIV3Schema": {"type": "object"}}}]}});
        let err = crd_to_type(&crd).err().map(|e| e.message).unwrap_or_default();
        assert!(
            err.contains("must have exactly one version marked as storage version"),
            "{err}"
        );
    }
}
