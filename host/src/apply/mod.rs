//! The pure part of applying a render: which objects to apply where (with the ownership label), which
//! previously applied objects to prune, and the per-object sync status for `status.resources`.
//! The I/O (server-side apply with field manager `stackhost`, deletes) only executes these decisions.
//!
//! Fixed upstream quirks: objects go to their own `metadata.namespace` (upstream sent every namespaced
//! object to the client namespace, §2.6); objects are identified by group, kind, namespace and name
//! (upstream ignored the kind); a failed apply is recorded as `not-synced`, never as `synced` (§9.12);
//! deleting a release removes everything it applied (upstream skipped synced objects, §9.8).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::api::{Resource, ResourceStatus};

/// Label set on every applied object (upstream's key and value).
pub const OWNER_LABEL: &str = "clusterstack.x-k8s.io/instance";
/// Value of [`OWNER_LABEL`].
pub const OWNER_LABEL_VALUE: &str = "owned";
/// Field manager of server-side apply.
pub const FIELD_MANAGER: &str = "stackhost";
/// Annotation naming the release that applied an object (`<namespace>/<name>`). Prune and deletion in the
/// management cluster touch only objects that carry the deleting release's mark, so a forged or stale
/// `status.resources` cannot delete what the release never applied.
pub const OWNER_ANNOTATION: &str = "clusterstack.x-k8s.io/owner";

/// Why a render cannot be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A rendered object lacks apiVersion, kind or name.
    #[error("rendered object #{index} has no {field}")]
    Incomplete {
        /// Position in the render.
        index: usize,
        /// The missing field.
        field: &'static str,
    },
    /// The kind is not served by the API server.
    #[error("{kind} ({api_version}) {name:?} cannot be applied: the API server does not serve this kind (install its CRD first)")]
    UnknownKind {
        /// apiVersion.
        api_version: String,
        /// Kind.
        kind: String,
        /// Object name.
        name: String,
    },
    /// A cluster-scoped object declares a namespace.
    #[error("{kind} {name:?} is cluster-scoped but the chart sets metadata.namespace {namespace:?}; remove it from the template")]
    NamespaceOnClusterScoped {
        /// Kind.
        kind: String,
        /// Name.
        name: String,
        /// The namespace it declared.
        namespace: String,
    },
    /// The render contains the same object twice.
    #[error("the render contains {0} twice; object names must be unique per kind and namespace")]
    Duplicate(String),
    /// The render writes outside the release's namespace without the admin's leave.
    #[error("{}", refused_message(.home, .refused))]
    Refused {
        /// The namespace the release may write into.
        home: String,
        /// Each refused object with the reason (`ClusterRole.rbac.authorization.k8s.io x (cluster-scoped)`).
        refused: Vec<String>,
    },
}

/// How many refused objects a message names before it counts the rest.
const REFUSED_NAMED: usize = 10;

fn refused_message(home: &str, refused: &[String]) -> String {
    let mut named = refused
        .iter()
        .take(REFUSED_NAMED)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if refused.len() > REFUSED_NAMED {
        named.push_str(&format!(" and {} more", refused.len() - REFUSED_NAMED));
    }
    format!(
        "a release of a ClusterStack in namespace {home:?} may apply only namespaced objects in that \
         namespace; refused {} object(s): {named}. Remove them from the cluster-class chart, or have an \
         admin allow them (stackhost run --release-allow-kind KIND.GROUP for cluster-scoped kinds, \
         --release-allow-namespace NAMESPACE for other namespaces)",
        refused.len()
    )
}

/// Where a release may write in the management cluster. A ClusterStack is namespaced and its
/// `spec.source` is its creator's choice, so by default its releases apply only namespaced objects in
/// its own namespace; cluster-scoped kinds and other namespaces need the admin's leave.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Confinement {
    /// Cluster-scoped kinds a release may apply, as `Kind.group` (`Kind` for the core group), or `*`.
    pub cluster_kinds: Vec<String>,
    /// Namespaces besides its own that a release may write into, or `*`.
    pub namespaces: Vec<String>,
}

impl Confinement {
    /// Why `key` may not be applied by a release of namespace `home`, or `None` when it may.
    pub fn refusal(&self, home: &str, key: &ObjectKey) -> Option<String> {
        let allows = |list: &[String], item: &str| list.iter().any(|a| a == "*" || a == item);
        if key.namespace.is_empty() {
            let kind = if key.group.is_empty() {
                key.kind.clone()
            } else {
                format!("{}.{}", key.kind, key.group)
            };
            return (!allows(&self.cluster_kinds, &kind)).then(|| format!("{key} (cluster-scoped)"));
        }
        (key.namespace != home && !allows(&self.namespaces, &key.namespace))
            .then(|| format!("{key} (namespace {})", key.namespace))
    }

    /// Refuses the whole render when any object falls outside what a release of `home` may write.
    pub fn check(&self, home: &str, desired: &[DesiredObject]) -> Result<(), ApplyError> {
        let refused: Vec<String> = desired
            .iter()
            .filter_map(|d| self.refusal(home, &d.key))
            .collect();
        if refused.is_empty() {
            Ok(())
        } else {
            Err(ApplyError::Refused {
                home: home.to_owned(),
                refused,
            })
        }
    }
}

/// On whose behalf objects are applied and deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    /// A ClusterStackRelease in the management cluster: every object carries its mark
    /// ([`OWNER_ANNOTATION`]), deletion requires the mark, and the render is confined.
    Release {
        /// `<namespace>/<name>` of the release.
        mark: String,
        /// The release's namespace.
        home: String,
        /// What the admin allows beyond it.
        confinement: Confinement,
    },
    /// The addons of a workload cluster: that cluster belongs to the Cluster's owner, the render is not
    /// confined, and a delete stage deletes what it names.
    Workload,
}

impl Owner {
    /// The owner of objects applied by release `name` in `namespace`.
    pub fn release(namespace: &str, name: &str, confinement: Confinement) -> Self {
        Owner::Release {
            mark: format!("{namespace}/{name}"),
            home: namespace.to_owned(),
            confinement,
        }
    }

    fn mark(&self) -> Option<&str> {
        match self {
            Owner::Release { mark, .. } => Some(mark),
            Owner::Workload => None,
        }
    }

    /// Whether this owner may delete `object` (as read from the API server).
    pub fn may_delete(&self, object: &Value) -> Result<(), String> {
        let Some(mark) = self.mark() else {
            return Ok(());
        };
        let meta = &object["metadata"];
        match meta["annotations"][OWNER_ANNOTATION].as_str() {
            Some(m) if m == mark => Ok(()),
            Some(other) => Err(format!("owned by release {other}, not {mark}")),
            // Applied before releases marked their objects: the upstream label is the only mark.
            None if meta["labels"][OWNER_LABEL].as_str() == Some(OWNER_LABEL_VALUE) => Ok(()),
            None => Err(format!(
                "not applied by stackhost (no {OWNER_ANNOTATION} annotation or {OWNER_LABEL} label)"
            )),
        }
    }
}

/// Whether a kind is namespaced, as discovery says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Namespaced kind.
    Namespaced,
    /// Cluster-scoped kind.
    Cluster,
    /// Not served.
    Unknown,
}

/// Identity of an object: group, kind, namespace (empty for cluster-scoped) and name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    /// API group, empty for core.
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        if self.namespace.is_empty() {
            write!(f, "{}{group} {}", self.kind, self.name)
        } else {
            write!(f, "{}{group} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

impl ObjectKey {
    /// The key of a `status.resources` entry.
    pub fn of_resource(r: &Resource) -> Self {
        Self {
            group: r.group.clone(),
            kind: r.kind.clone(),
            namespace: r.namespace.clone(),
            name: r.name.clone(),
        }
    }
}

/// Splits `apps/v1` into (`apps`, `v1`) and `v1` into (``, `v1`).
pub fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.rsplit_once('/').unwrap_or(("", api_version))
}

/// One object to server-side apply.
#[derive(Debug, Clone, PartialEq)]
pub struct DesiredObject {
    /// Identity.
    pub key: ObjectKey,
    /// API version without group.
    pub version: String,
    /// The full object, labelled and with its namespace set.
    pub object: Value,
}

impl DesiredObject {
    /// A `status.resources` entry for this object with the given outcome.
    pub fn resource(&self, outcome: &Result<(), String>) -> Resource {
        Resource {
            group: self.key.group.clone(),
            version: self.version.clone(),
            kind: self.key.kind.clone(),
            namespace: self.key.namespace.clone(),
            name: self.key.name.clone(),
            status: Some(if outcome.is_ok() {
                ResourceStatus::Synced
            } else {
                ResourceStatus::NotSynced
            }),
            error: outcome.as_ref().err().cloned().unwrap_or_default(),
        }
    }
}

fn set_label(obj: &mut Value, pointer: &str) {
    // Create the maps on the way if they are absent; an object is always a JSON object here.
    let mut cur = obj;
    for part in pointer.split('/').filter(|p| !p.is_empty()) {
        if !cur.get(part).is_some_and(Value::is_object) {
            cur[part] = Value::Object(Default::default());
        }
        cur = &mut cur[part];
    }
    cur[OWNER_LABEL] = Value::String(OWNER_LABEL_VALUE.to_owned());
}

fn set_annotation(obj: &mut Value, key: &str, value: &str) {
    let meta = &mut obj["metadata"];
    if !meta.get("annotations").is_some_and(Value::is_object) {
        meta["annotations"] = Value::Object(Default::default());
    }
    meta["annotations"][key] = Value::String(value.to_owned());
}

/// Kinds whose pod template also gets the label (upstream `setLabel`).
fn has_pod_template(group: &str, kind: &str) -> bool {
    matches!(
        (group, kind),
        (
            "apps" | "extensions",
            "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet"
        ) | ("batch", "Job")
    )
}

/// The objects to apply for a render: labelled with [`OWNER_LABEL`], namespaced objects in their own
/// namespace or `default_namespace` when they name none, cluster-scoped objects without a namespace.
pub fn desired_objects(
    rendered: &[Value],
    default_namespace: &str,
    owner: &Owner,
    scope: impl Fn(&str, &str) -> Scope,
) -> Result<Vec<DesiredObject>, ApplyError> {
    let mut out = Vec::with_capacity(rendered.len());
    let mut seen = BTreeSet::new();
    for (index, obj) in rendered.iter().enumerate() {
        let field = |f: &'static str, v: Option<&str>| {
            v.filter(|s| !s.is_empty())
                .map(str::to_owned)
                .ok_or(ApplyError::Incomplete { index, field: f })
        };
        let api_version = field("apiVersion", obj["apiVersion"].as_str())?;
        let kind = field("kind", obj["kind"].as_str())?;
        let name = field("metadata.name", obj["metadata"]["name"].as_str())?;
        let (group, version) = split_api_version(&api_version);
        let declared = obj["metadata"]["namespace"].as_str().unwrap_or("").to_owned();
        let mut object = obj.clone();
        let namespace = match scope(group, &kind) {
            Scope::Unknown => {
                return Err(ApplyError::UnknownKind {
                    api_version,
                    kind,
                    name,
                })
            }
            Scope::Cluster if !declared.is_empty() => {
                return Err(ApplyError::NamespaceOnClusterScoped {
                    kind,
                    name,
                    namespace: declared,
                })
            }
            Scope::Cluster => String::new(),
            Scope::Namespaced => {
                let ns = if declared.is_empty() {
                    default_namespace.to_owned()
                } else {
                    declared
                };
                object["metadata"]["namespace"] = Value::String(ns.clone());
                ns
            }
        };
        set_label(&mut object, "/metadata/labels");
        if let Some(mark) = owner.mark() {
            set_annotation(&mut object, OWNER_ANNOTATION, mark);
        }
        if has_pod_template(group, &kind) {
            set_label(&mut object, "/spec/template/metadata/labels");
        }
        let key = ObjectKey {
            group: group.to_owned(),
            kind,
            namespace,
            name,
        };
        if !seen.insert(key.clone()) {
            return Err(ApplyError::Duplicate(key.to_string()));
        }
        out.push(DesiredObject {
            key,
            version: version.to_owned(),
            object,
        });
    }
    if let Owner::Release {
        home, confinement, ..
    } = owner
    {
        confinement.check(home, &out)?;
    }
    Ok(out)
}

/// Previously applied objects (from `status.resources`) that the new render no longer contains, in
/// reverse install order (dependents before what they depend on).
pub fn objects_to_prune(previous: &[Resource], desired: &[DesiredObject]) -> Vec<Resource> {
    let keep: BTreeSet<&ObjectKey> = desired.iter().map(|d| &d.key).collect();
    let mut prune: Vec<Resource> = previous
        .iter()
        .filter(|r| !keep.contains(&ObjectKey::of_resource(r)))
        .cloned()
        .collect();
    prune.sort_by(deletion_order);
    prune.dedup_by(|a, b| ObjectKey::of_resource(a) == ObjectKey::of_resource(b));
    prune
}

/// Everything a release applied, in deletion order (used when the release is deleted).
pub fn objects_to_delete(previous: &[Resource]) -> Vec<Resource> {
    objects_to_prune(previous, &[])
}

pub(crate) fn install_rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        "ServiceAccount" | "Secret" | "ConfigMap" => 2,
        "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => 3,
        _ => 4,
    }
}

fn deletion_order(a: &Resource, b: &Resource) -> std::cmp::Ordering {
    install_rank(&b.kind)
        .cmp(&install_rank(&a.kind))
        .then_with(|| ObjectKey::of_resource(a).cmp(&ObjectKey::of_resource(b)))
}

/// The new `status.resources`: one entry per desired object with its apply outcome, plus the pruned
/// objects whose delete failed (still there, so still listed as `not-synced` with the error).
/// Sorted by key so the status only changes when something changed.
pub fn resources_status(
    desired: &[DesiredObject],
    applied: &BTreeMap<ObjectKey, Result<(), String>>,
    pruned: &BTreeMap<ObjectKey, Result<(), String>>,
    previous: &[Resource],
) -> Vec<Resource> {
    let mut out: Vec<Resource> = desired
        .iter()
        .map(|d| {
            let outcome = applied
                .get(&d.key)
                .cloned()
                .unwrap_or_else(|| Err("not applied yet".to_owned()));
            d.resource(&outcome)
        })
        .collect();
    for r in previous {
        if let Some(Err(e)) = pruned.get(&ObjectKey::of_resource(r)) {
            out.push(Resource {
                status: Some(ResourceStatus::NotSynced),
                error: format!("prune failed: {e}"),
                ..r.clone()
            });
        }
    }
    out.sort_by_key(ObjectKey::of_resource);
    out.dedup_by(|a, b| ObjectKey::of_resource(a) == ObjectKey::of_resource(b));
    out
}

/// `status.resources` to write before an apply starts: the `previous` entries as they are, and every
/// desired object they do not list yet as not applied. Written first, it lets prune and deletion find
/// whatever the apply creates, however far it gets.
pub fn resources_before_apply(desired: &[DesiredObject], previous: &[Resource]) -> Vec<Resource> {
    let listed: BTreeSet<ObjectKey> = previous.iter().map(ObjectKey::of_resource).collect();
    let mut out = previous.to_vec();
    out.extend(
        desired
            .iter()
            .filter(|d| !listed.contains(&d.key))
            .map(|d| d.resource(&Err("not applied yet".to_owned()))),
    );
    out.sort_by_key(ObjectKey::of_resource);
    out
}

/// Whether every entry is synced (the release's objects are all applied).
pub fn all_synced(resources: &[Resource]) -> bool {
    resources.iter().all(|r| r.status == Some(ResourceStatus::Synced))
}

pub mod ssa;

#[cfg(test)]
mod tests;
