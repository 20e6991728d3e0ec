//! `stackhost migrate`: taking a management cluster over from the Cluster Stack Operator (CSO).
//!
//! The check reads the cluster once into a [`Snapshot`] (cluster.rs), then [`assess`] decides, without
//! I/O, what blocks the migration and what stackhost will adopt; `--apply` only executes the adoptions
//! of that [`Report`] (merge patches with the object's resourceVersion as precondition, so an object
//! changed since it was checked is left alone). Nothing here deletes anything.
//!
//! What blocks: CSO still running (its Deployment), its admission webhooks and its runtime-hook
//! `ExtensionConfig` (with CSO gone, `failurePolicy: Fail` makes every Cluster write or upgrade fail),
//! CRDs that a CSO uninstall would delete (Helm templates, or CSO's `cluster.x-k8s.io/provider` label),
//! CRDs that are still CSO's schema, ClusterStacks without a ProviderPlugin or a usable release source.
//! What is adopted: a ClusterStackRelease gets the `spec.providerPlugin` and `spec.source` of its
//! ClusterStack (CSO's releases name a provider object instead, which stackhost does not use), and every
//! object CSO applied for a release gets the release's [`OWNER_ANNOTATION`], so stackhost prunes and
//! deletes it like its own.

pub mod cli;
mod cluster;

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{json, Value};

use crate::apply::{OWNER_ANNOTATION, OWNER_LABEL, OWNER_LABEL_VALUE};

pub use cluster::{execute, gather};

/// Values of the `cluster.x-k8s.io/provider` label on CSO's objects: its Helm chart, its kustomize
/// manifests (`cso-infrastructure-components.yaml`).
const CSO_PROVIDER_LABELS: [&str; 2] = ["cluster-stack-operator", "infrastructure-cluster-stack-operator"];
/// The label clusterctl and CSO's manifests use to find a provider's objects.
const PROVIDER_LABEL: &str = "cluster.x-k8s.io/provider";
/// Helm's annotation naming the release that installed an object.
const HELM_RELEASE_NAME: &str = "meta.helm.sh/release-name";
const HELM_RELEASE_NAMESPACE: &str = "meta.helm.sh/release-namespace";
/// Helm keeps an object with this annotation (value `keep`) on uninstall.
const HELM_RESOURCE_POLICY: &str = "helm.sh/resource-policy";

/// How much a finding matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Migration must not go on until it is fixed; `--apply` refuses.
    Blocker,
    /// Worth knowing; does not stop the migration.
    Warning,
    /// `--apply` changes this object (see [`Finding::adoption`]).
    Adopt,
    /// stackhost takes this object over as it is.
    Keep,
}

/// One thing the check found, about one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// How much it matters.
    pub level: Level,
    /// The object, as `Kind namespace/name` (`Kind.group` outside the core and stackhost groups).
    pub object: String,
    /// What is the matter, or what will be done.
    pub message: String,
    /// What the admin should do, with the command where there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The change `--apply` makes (only for [`Level::Adopt`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub adoption: Option<Adoption>,
}

/// A change `--apply` makes to one object: a JSON merge patch.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Adoption {
    /// Which object.
    pub target: Target,
    /// The merge patch, including `metadata.resourceVersion` as the precondition.
    pub patch: Value,
}

/// An object as the API addresses it.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Target {
    /// API group, empty for core.
    pub group: String,
    /// API version (without group).
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Resource (plural).
    pub plural: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

/// What the check found.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Report {
    /// All findings, blockers first.
    pub findings: Vec<Finding>,
}

impl Report {
    /// Findings of one level.
    pub fn of(&self, level: Level) -> impl Iterator<Item = &Finding> {
        self.findings.iter().filter(move |f| f.level == level)
    }

    /// Whether anything blocks the migration.
    pub fn blocked(&self) -> bool {
        self.of(Level::Blocker).next().is_some()
    }

    /// The changes `--apply` makes.
    pub fn adoptions(&self) -> impl Iterator<Item = (&Finding, &Adoption)> {
        self.findings
            .iter()
            .filter_map(|f| f.adoption.as_ref().map(|a| (f, a)))
    }
}

/// What the check was asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    /// The label stackhost will watch (`--watch-label`): adopted objects without it get it.
    pub watch_label: Option<(String, String)>,
    /// The default release source given to the check (what `stackhost run --release-source` will use).
    pub release_source: Option<String>,
}

/// The release source of one ClusterStack, as the check could reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceCheck {
    /// The source and the release tags it lists.
    Listed {
        /// The source, for messages.
        source: String,
        /// Its release tags.
        tags: BTreeSet<String>,
    },
    /// No source, or it cannot be listed: why.
    Unusable(String),
}

/// An object a release lists in `status.resources`, as read from the API.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// It exists: its address and metadata.
    Found {
        /// Address for the patch.
        target: Target,
        /// Its `metadata` (labels, annotations, resourceVersion).
        metadata: Value,
    },
    /// It does not exist (stackhost applies it again).
    Missing,
    /// It could not be read: why.
    Unreadable(String),
}

/// What the check read from the cluster.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// CustomResourceDefinitions of the `clusterstack.x-k8s.io` group.
    pub crds: Vec<Value>,
    /// Deployments (all namespaces, or what could be read).
    pub deployments: Vec<Value>,
    /// Validating and mutating webhook configurations, each with its `kind`.
    pub webhooks: Vec<Value>,
    /// Cluster API `ExtensionConfig`s (empty when the kind is not served).
    pub extension_configs: Vec<Value>,
    /// ClusterStacks.
    pub cluster_stacks: Vec<Value>,
    /// ClusterStackReleases.
    pub releases: Vec<Value>,
    /// ClusterAddons.
    pub addons: Vec<Value>,
    /// ProviderPlugins, as `namespace/name`.
    pub provider_plugins: BTreeSet<String>,
    /// Per ClusterStack (`namespace/name`), its release source.
    pub sources: BTreeMap<String, SourceCheck>,
    /// Per release (`namespace/name`), each object of its `status.resources`, in order.
    pub applied: BTreeMap<String, Vec<(String, Applied)>>,
    /// What could not be read at all (a list that failed): `(what, why)`.
    pub unreadable: Vec<(String, String)>,
}

fn s<'a>(v: &'a Value, pointer: &str) -> &'a str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

fn meta_map<'a>(v: &'a Value, field: &str) -> Option<&'a serde_json::Map<String, Value>> {
    v.get("metadata")?.get(field)?.as_object()
}

fn label<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    meta_map(v, "labels")?.get(key)?.as_str()
}

fn annotation<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    meta_map(v, "annotations")?.get(key)?.as_str()
}

/// `namespace/name`, or `name` for a cluster-scoped object.
fn key_of(v: &Value) -> String {
    let (ns, name) = (s(v, "/metadata/namespace"), s(v, "/metadata/name"));
    if ns.is_empty() {
        name.to_owned()
    } else {
        format!("{ns}/{name}")
    }
}

fn has_cso_provider_label(v: &Value) -> bool {
    label(v, PROVIDER_LABEL).is_some_and(|l| CSO_PROVIDER_LABELS.contains(&l))
}

fn is_stackhost_object(v: &Value) -> bool {
    label(v, "app.kubernetes.io/part-of") == Some("stackhost")
        || label(v, "app.kubernetes.io/name") == Some("stackhost")
}

fn container_images(deployment: &Value) -> Vec<&str> {
    deployment
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| cs.iter().map(|c| s(c, "/image")).collect())
        .unwrap_or_default()
}

/// The repository part of an image reference, without registry host, tag and digest:
/// `ghcr.io/sovereigncloudstack/cso:v0.2.0` -> `sovereigncloudstack/cso`.
fn image_path(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    let without_tag = match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    };
    match without_tag.split_once('/') {
        Some((host, rest)) if host.contains('.') || host.contains(':') || host == "localhost" => rest,
        _ => without_tag,
    }
}

/// Which controller a Deployment runs, as far as the migration cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operator {
    /// The Cluster Stack Operator.
    Cso,
    /// The Cluster Stack Provider OpenStack (CSPO), CSO's OpenStack provider operator.
    Cspo,
    /// stackhost itself.
    Stackhost,
}

fn operator_of(deployment: &Value) -> Option<Operator> {
    let images = container_images(deployment);
    let image_is = |names: &[&str]| {
        images.iter().any(|i| {
            let path = image_path(i);
            let last = path.rsplit('/').next().unwrap_or(path);
            names.contains(&last)
        })
    };
    let control_plane = label(deployment, "control-plane").unwrap_or_default();
    if has_cso_provider_label(deployment)
        || control_plane == "cso-controller-manager"
        || image_is(&["cso", "cluster-stack-operator"])
    {
        return Some(Operator::Cso);
    }
    let provider = label(deployment, PROVIDER_LABEL).unwrap_or_default();
    if provider.contains("cluster-stack-provider-openstack")
        || control_plane == "cspo-controller-manager"
        || image_is(&["cspo", "cluster-stack-provider-openstack"])
    {
        return Some(Operator::Cspo);
    }
    if is_stackhost_object(deployment) || image_is(&["stackhost"]) {
        return Some(Operator::Stackhost);
    }
    None
}

fn replicas(deployment: &Value) -> u64 {
    // The API server defaults spec.replicas to 1.
    deployment
        .pointer("/spec/replicas")
        .and_then(Value::as_u64)
        .unwrap_or(1)
}

/// `helm uninstall` or a label-selected delete, whichever installed CSO.
fn cso_uninstall_hint(deployment: &Value) -> String {
    match (
        annotation(deployment, HELM_RELEASE_NAME),
        annotation(deployment, HELM_RELEASE_NAMESPACE),
    ) {
        (Some(release), Some(ns)) => format!("`helm uninstall {release} -n {ns}`"),
        _ => {
            let selector = label(deployment, PROVIDER_LABEL)
                .map(|v| format!("{PROVIDER_LABEL}={v}"))
                .unwrap_or_else(|| format!("{PROVIDER_LABEL}=infrastructure-cluster-stack-operator"));
            format!(
                "`kubectl delete deployment,service,serviceaccount,role,rolebinding,clusterrole,clusterrolebinding,\
                 validatingwebhookconfiguration,mutatingwebhookconfiguration,secret -A -l {selector}` \
                 (never kubectl delete -f with CSO's manifest: it names the CRDs)"
            )
        }
    }
}

/// The check: what blocks the migration and what `--apply` adopts. Pure: everything it needs is in
/// `snapshot`.
pub fn assess(snapshot: &Snapshot, options: &Options) -> Report {
    let mut findings = Vec::new();
    for (what, why) in &snapshot.unreadable {
        findings.push(Finding {
            level: Level::Blocker,
            object: what.clone(),
            message: format!("cannot be checked: {why}"),
            fix: Some("run the check with a kubeconfig that may read it (a cluster admin's)".into()),
            adoption: None,
        });
    }
    // In the order an admin fixes them: protect the CRDs, uninstall CSO, install stackhost's CRDs.
    assess_crd_protection(snapshot, &mut findings);
    let cso_namespaces = assess_deployments(snapshot, &mut findings);
    assess_webhooks(snapshot, &cso_namespaces, &mut findings);
    assess_crd_schema(snapshot, &mut findings);
    let adoptions = assess_stacks(snapshot, options, &mut findings);
    // stackhost already running reconciles releases before --apply gave them their ProviderPlugin.
    if adoptions > 0 {
        for d in &snapshot.deployments {
            if operator_of(d) == Some(Operator::Stackhost) && replicas(d) > 0 {
                findings.push(Finding {
                    level: Level::Warning,
                    object: format!("Deployment {}", key_of(d)),
                    message: "stackhost is already running: until `--apply` adopted the releases it may \
                              reconcile a CSO release without its ProviderPlugin"
                        .into(),
                    fix: Some(format!(
                        "`kubectl -n {} scale deployment {} --replicas=0`, then `stackhost migrate --apply`, \
                         then scale it back",
                        s(d, "/metadata/namespace"),
                        s(d, "/metadata/name")
                    )),
                    adoption: None,
                });
            }
        }
    }
    findings.sort_by_key(|a| a.level);
    Report { findings }
}

/// CSO and CSPO Deployments; returns the namespaces CSO runs in.
fn assess_deployments(snapshot: &Snapshot, findings: &mut Vec<Finding>) -> BTreeSet<String> {
    let mut cso_namespaces = BTreeSet::new();
    for d in &snapshot.deployments {
        let object = format!("Deployment {}", key_of(d));
        let (ns, name) = (s(d, "/metadata/namespace"), s(d, "/metadata/name"));
        match operator_of(d) {
            Some(Operator::Cso) => {
                cso_namespaces.insert(ns.to_owned());
                let image = container_images(d).join(", ");
                let uninstall = cso_uninstall_hint(d);
                let n = replicas(d);
                findings.push(if n > 0 {
                    Finding {
                        level: Level::Blocker,
                        object,
                        message: format!(
                            "the Cluster Stack Operator is running ({n} replica(s), image {image}); it and \
                             stackhost would reconcile the same ClusterStacks"
                        ),
                        fix: Some(format!(
                            "protect the CRDs first (the CustomResourceDefinition findings above), then \
                             uninstall CSO: {uninstall}; to stop it at once: `kubectl -n {ns} scale \
                             deployment {name} --replicas=0`"
                        )),
                        adoption: None,
                    }
                } else {
                    Finding {
                        level: Level::Warning,
                        object,
                        message: "the Cluster Stack Operator is scaled to zero but still installed".into(),
                        fix: Some(format!("uninstall it once the CRDs are protected: {uninstall}")),
                        adoption: None,
                    }
                });
            }
            Some(Operator::Cspo) if replicas(d) > 0 => findings.push(Finding {
                level: Level::Warning,
                object,
                message: "the Cluster Stack Provider OpenStack is running; with stackhost the OpenStack \
                          ProviderPlugin does its work and its OpenStackClusterStackReleases are no longer \
                          created"
                    .into(),
                fix: Some(format!(
                    "uninstall it once stackhost reports the releases Ready (`kubectl -n {ns} delete \
                     deployment {name}`, or its Helm release); its CRDs and node images may stay"
                )),
                adoption: None,
            }),
            _ => {}
        }
    }
    cso_namespaces
}

/// Whether a webhook configuration (or an ExtensionConfig's client) belongs to CSO.
fn is_cso_registration(v: &Value, cso_namespaces: &BTreeSet<String>, service_ptr: &str) -> bool {
    if is_stackhost_object(v) {
        return false;
    }
    let service_in_cso_ns = |item: &Value| {
        let ns = s(item, service_ptr);
        !ns.is_empty() && cso_namespaces.contains(ns)
    };
    if has_cso_provider_label(v) || label(v, "app.kubernetes.io/name") == Some("cso") {
        return true;
    }
    match v.get("webhooks").and_then(Value::as_array) {
        Some(hooks) => hooks.iter().any(|h| {
            service_in_cso_ns(h)
                || h.get("rules").and_then(Value::as_array).is_some_and(|rules| {
                    rules.iter().any(|r| {
                        r.get("apiGroups")
                            .and_then(Value::as_array)
                            .is_some_and(|g| g.iter().any(|g| g.as_str() == Some(crate::api::GROUP)))
                    })
                })
        }),
        None => service_in_cso_ns(v),
    }
}

fn assess_webhooks(snapshot: &Snapshot, cso_namespaces: &BTreeSet<String>, findings: &mut Vec<Finding>) {
    for w in &snapshot.webhooks {
        if !is_cso_registration(w, cso_namespaces, "/clientConfig/service/namespace") {
            continue;
        }
        let kind = s(w, "/kind");
        let name = s(w, "/metadata/name");
        let hooks = w
            .get("webhooks")
            .and_then(Value::as_array)
            .map(|hs| {
                hs.iter()
                    .map(|h| s(h, "/name").to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        findings.push(Finding {
            level: Level::Blocker,
            object: format!("{kind} {name}"),
            message: format!(
                "CSO's admission webhooks ({hooks}) still intercept Cluster and ClusterStack writes; with \
                 CSO gone their failurePolicy Fail rejects those writes, stackhost's included"
            ),
            fix: Some(format!(
                "`kubectl delete {} {name}`; uninstalling CSO removes it too",
                kind.to_lowercase()
            )),
            adoption: None,
        });
    }
    for e in &snapshot.extension_configs {
        if !is_cso_registration(e, cso_namespaces, "/spec/clientConfig/service/namespace") {
            continue;
        }
        let name = s(e, "/metadata/name");
        findings.push(Finding {
            level: Level::Blocker,
            object: format!("ExtensionConfig.runtime.cluster.x-k8s.io {name}"),
            message: "registers CSO's runtime hooks: Cluster API calls them before every upgrade, and with \
                      CSO gone the call fails and the upgrade waits; stackhost's chart registers its own"
                .into(),
            fix: Some(format!(
                "`kubectl delete extensionconfigs.runtime.cluster.x-k8s.io {name}`; uninstalling CSO removes it too"
            )),
            adoption: None,
        });
    }
}

/// Fields stackhost's CRDs have and CSO's lack: `(CRD, field of its spec)`.
const STACKHOST_FIELDS: [(&str, &str); 2] = [
    ("clusterstacks.clusterstack.x-k8s.io", "source"),
    ("clusterstackreleases.clusterstack.x-k8s.io", "providerPlugin"),
];

fn crd_spec_has(crd: &Value, field: &str) -> bool {
    crd.pointer("/spec/versions")
        .and_then(Value::as_array)
        .is_some_and(|versions| {
            versions.iter().any(|v| {
                s(v, "/name") == crate::api::VERSION
                    && v.pointer(&format!(
                        "/schema/openAPIV3Schema/properties/spec/properties/{field}"
                    ))
                    .is_some()
            })
        })
}

/// CRDs that uninstalling CSO would delete (with every object of their kind).
fn assess_crd_protection(snapshot: &Snapshot, findings: &mut Vec<Finding>) {
    for crd in &snapshot.crds {
        let name = s(crd, "/metadata/name");
        let kind = s(crd, "/spec/names/kind");
        let mut why = Vec::new();
        let mut fixes = Vec::new();
        if let Some(release) = annotation(crd, HELM_RELEASE_NAME) {
            if annotation(crd, HELM_RESOURCE_POLICY) != Some("keep") {
                let ns = annotation(crd, HELM_RELEASE_NAMESPACE).unwrap_or("?");
                why.push(format!(
                    "it belongs to the Helm release {ns}/{release} (a template, not in crds/): `helm \
                     uninstall {release}` deletes it"
                ));
                fixes.push(format!(
                    "`kubectl annotate crd {name} {HELM_RESOURCE_POLICY}=keep`"
                ));
            }
        }
        if let Some(value) = label(crd, PROVIDER_LABEL).filter(|l| CSO_PROVIDER_LABELS.contains(l)) {
            why.push(format!(
                "it carries CSO's label {PROVIDER_LABEL}={value}: `clusterctl delete --include-crd` or a \
                 label-selected delete of CSO removes it"
            ));
            fixes.push(format!("`kubectl label crd {name} {PROVIDER_LABEL}-`"));
        }
        if !why.is_empty() {
            findings.push(Finding {
                level: Level::Blocker,
                object: format!("CustomResourceDefinition {name}"),
                message: format!(
                    "uninstalling CSO would delete this CRD and with it every {kind} in the cluster: {}",
                    why.join("; ")
                ),
                fix: Some(fixes.join(" and ")),
                adoption: None,
            });
        }
    }
}

/// Whether the CRDs are stackhost's (CSO's lack the fields stackhost writes).
fn assess_crd_schema(snapshot: &Snapshot, findings: &mut Vec<Finding>) {
    let crd = |name: &str| snapshot.crds.iter().find(|c| s(c, "/metadata/name") == name);
    let mut missing = Vec::new();
    for (name, field) in STACKHOST_FIELDS {
        match crd(name) {
            Some(c) if crd_spec_has(c, field) => {}
            Some(_) => missing.push(format!("{name} has no spec.{field}")),
            None => missing.push(format!("{name} is not installed")),
        }
    }
    if crd("providerplugins.clusterstack.x-k8s.io").is_none() {
        missing.push("providerplugins.clusterstack.x-k8s.io is not installed".into());
    }
    if !missing.is_empty() {
        findings.push(Finding {
            level: Level::Blocker,
            object: "CustomResourceDefinitions clusterstack.x-k8s.io".into(),
            message: format!(
                "the cluster does not have stackhost's CRDs ({}); CSO's schema would drop the fields \
                 stackhost sets",
                missing.join("; ")
            ),
            fix: Some(
                "once CSO's uninstall cannot delete them any more: `stackhost crds | kubectl apply \
                 --server-side --force-conflicts -f -` (a helm install does not replace CRDs that exist)"
                    .into(),
            ),
            adoption: None,
        });
    }
}

/// A change being assembled for one object: the merge patch and what it does.
struct Pending {
    target: Target,
    object: String,
    patch: Value,
    changes: Vec<String>,
}

impl Pending {
    fn new(target: Target, object: String, resource_version: &str) -> Self {
        Self {
            target,
            object,
            patch: json!({"metadata": {"resourceVersion": resource_version}}),
            changes: Vec::new(),
        }
    }

    fn finding(self) -> Option<Finding> {
        (!self.changes.is_empty()).then(|| Finding {
            level: Level::Adopt,
            object: self.object,
            message: self.changes.join("; "),
            fix: None,
            adoption: Some(Adoption {
                target: self.target,
                patch: self.patch,
            }),
        })
    }

    fn watch_label(&mut self, object: &Value, options: &Options) {
        if let Some((k, v)) = &options.watch_label {
            if label(object, k) != Some(v.as_str()) {
                self.patch["metadata"]["labels"][k] = Value::String(v.clone());
                self.changes
                    .push(format!("label {k}={v} (stackhost's --watch-label)"));
            }
        }
    }
}

/// The address of one of stackhost's own kinds.
fn own_target(kind: &str, plural: &str, object: &Value) -> Target {
    Target {
        group: crate::api::GROUP.into(),
        version: crate::api::VERSION.into(),
        kind: kind.into(),
        plural: plural.into(),
        namespace: s(object, "/metadata/namespace").into(),
        name: s(object, "/metadata/name").into(),
    }
}

fn uid_of(v: &Value) -> &str {
    s(v, "/metadata/uid")
}

fn owner_uids(v: &Value) -> Vec<&str> {
    v.pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| refs.iter().map(|r| s(r, "/uid")).collect())
        .unwrap_or_default()
}

/// ClusterStacks, their releases and what those applied, and ClusterAddons. Returns how many objects
/// `--apply` would change.
fn assess_stacks(snapshot: &Snapshot, options: &Options, findings: &mut Vec<Finding>) -> usize {
    let mut adoptions = 0;
    let mut push = |findings: &mut Vec<Finding>, pending: Pending| {
        if let Some(f) = pending.finding() {
            adoptions += 1;
            findings.push(f);
        }
    };
    // Objects already claimed by a release during this check: `key -> release`.
    let mut claimed: BTreeMap<String, String> = BTreeMap::new();
    for cs in &snapshot.cluster_stacks {
        let key = key_of(cs);
        let ns = s(cs, "/metadata/namespace");
        let spec = cs.get("spec").cloned().unwrap_or(Value::Null);
        let provider = s(&spec, "/provider");
        let no_provider = spec.get("noProvider").and_then(Value::as_bool).unwrap_or(false);
        let object = format!("ClusterStack {key}");
        let mut blocked = false;
        let plugin = if no_provider {
            "noProvider".to_owned()
        } else if snapshot.provider_plugins.contains(&format!("{ns}/{provider}")) {
            format!("ProviderPlugin {ns}/{provider}")
        } else {
            blocked = true;
            let provider_ref = match spec.get("providerRef") {
                Some(r) if r.is_object() => format!(
                    " (CSO's spec.providerRef to {} {} is not used by stackhost)",
                    s(r, "/kind"),
                    s(r, "/name")
                ),
                _ => String::new(),
            };
            findings.push(Finding {
                level: Level::Blocker,
                object: object.clone(),
                message: format!(
                    "provider {provider:?} needs a provider plugin, but there is no ProviderPlugin \
                     {ns}/{provider}{provider_ref}"
                ),
                fix: Some(format!(
                    "create the ProviderPlugin {provider:?} in namespace {ns} (README \"The controllers\", \
                     docs/plugin-authors.md), or set spec.noProvider: true if the stack needs no provider step"
                )),
                adoption: None,
            });
            String::new()
        };
        let releases: Vec<&Value> = snapshot
            .releases
            .iter()
            .filter(|r| s(r, "/metadata/namespace") == ns && owner_uids(r).contains(&uid_of(cs)))
            .collect();
        let source = match snapshot.sources.get(&key) {
            Some(SourceCheck::Listed { source, tags }) => {
                for r in &releases {
                    let tag = s(r, "/metadata/name");
                    if !tags.contains(tag) {
                        blocked = true;
                        findings.push(Finding {
                            level: Level::Blocker,
                            object: format!("ClusterStackRelease {ns}/{tag}"),
                            message: format!(
                                "release {tag} is not in {source}; stackhost fetches every release again \
                                 and could not fetch this one"
                            ),
                            fix: Some(format!(
                                "push the release there (`stackhost release push DIR REPOSITORY:{tag}`), or point \
                                 the ClusterStack's spec.source (or --release-source) at the repository CSO used"
                            )),
                            adoption: None,
                        });
                    }
                }
                source.clone()
            }
            Some(SourceCheck::Unusable(why)) => {
                blocked = true;
                findings.push(Finding {
                    level: Level::Blocker,
                    object: object.clone(),
                    message: format!("no release source stackhost can use: {why}"),
                    fix: Some(match &options.release_source {
                        Some(_) => "fix the source (or the Secret it names) and check again".into(),
                        None => "set spec.source on the ClusterStack, or pass the release source stackhost \
                                 will run with to this check (--release-source, the chart's releaseSource)"
                            .into(),
                    }),
                    adoption: None,
                });
                String::new()
            }
            None => String::new(),
        };
        let mut pending = Pending::new(
            own_target("ClusterStack", "clusterstacks", cs),
            object.clone(),
            s(cs, "/metadata/resourceVersion"),
        );
        pending.watch_label(cs, options);
        if pending.changes.is_empty() && !blocked {
            findings.push(Finding {
                level: Level::Keep,
                object: object.clone(),
                message: format!(
                    "taken over as it is: {plugin}, releases from {source}, {} release(s)",
                    releases.len()
                ),
                fix: None,
                adoption: None,
            });
        }
        push(findings, pending);

        let plugin_name = (!no_provider).then(|| provider.to_owned());
        let source_spec = spec.get("source").filter(|v| !v.is_null()).cloned();
        for r in releases {
            let rkey = key_of(r);
            let object = format!("ClusterStackRelease {rkey}");
            let mut pending = Pending::new(
                own_target("ClusterStackRelease", "clusterstackreleases", r),
                object.clone(),
                s(r, "/metadata/resourceVersion"),
            );
            let current_plugin = r.pointer("/spec/providerPlugin").and_then(Value::as_str);
            if current_plugin != plugin_name.as_deref() {
                pending.patch["spec"]["providerPlugin"] = json!(plugin_name);
                pending.changes.push(match &plugin_name {
                    Some(p) => format!(
                        "set spec.providerPlugin to {p:?} (from ClusterStack {key}; CSO named a provider \
                         object instead)"
                    ),
                    None => format!("remove spec.providerPlugin (ClusterStack {key} has noProvider)"),
                });
            }
            let current_source = r.pointer("/spec/source").filter(|v| !v.is_null());
            if current_source != source_spec.as_ref() {
                pending.patch["spec"]["source"] = source_spec.clone().unwrap_or(Value::Null);
                pending
                    .changes
                    .push(format!("set spec.source as ClusterStack {key} has it"));
            }
            pending.watch_label(r, options);
            push(findings, pending);
            assess_applied(snapshot, &rkey, &mut claimed, findings, &mut push);
        }
    }
    for r in &snapshot.releases {
        let owned = snapshot
            .cluster_stacks
            .iter()
            .any(|cs| owner_uids(r).contains(&uid_of(cs)));
        if !owned {
            findings.push(Finding {
                level: Level::Warning,
                object: format!("ClusterStackRelease {}", key_of(r)),
                message: "no ClusterStack owns it: stackhost reconciles it as it is (without a \
                          ProviderPlugin unless its spec names one), and nothing deletes it"
                    .into(),
                fix: Some("delete it once no Cluster uses its ClusterClass, or leave it".into()),
                adoption: None,
            });
        }
    }
    for a in &snapshot.addons {
        let key = key_of(a);
        let object = format!("ClusterAddon {key}");
        let hook = s(a, "/spec/hook");
        if !hook.is_empty() {
            findings.push(Finding {
                level: Level::Warning,
                object: object.clone(),
                message: format!(
                    "CSO is in the middle of the {hook} hook for this Cluster; stackhost resumes it from \
                     status.stages"
                ),
                fix: Some("best migrate while no Cluster upgrade is running (spec.hook empty)".into()),
                adoption: None,
            });
        }
        let mut pending = Pending::new(
            own_target("ClusterAddon", "clusteraddons", a),
            object.clone(),
            s(a, "/metadata/resourceVersion"),
        );
        pending.watch_label(a, options);
        if pending.changes.is_empty() {
            let class = s(a, "/spec/clusterStack");
            findings.push(Finding {
                level: Level::Keep,
                object,
                message: format!(
                    "taken over as it is: Cluster {}, addons of {}",
                    s(a, "/spec/clusterRef/name"),
                    if class.is_empty() { "(none yet)" } else { class }
                ),
                fix: None,
                adoption: None,
            });
        }
        push(findings, pending);
    }
    adoptions
}

/// The objects one release applied: CSO labelled them, stackhost also needs the release's mark.
fn assess_applied(
    snapshot: &Snapshot,
    release: &str,
    claimed: &mut BTreeMap<String, String>,
    findings: &mut Vec<Finding>,
    push: &mut impl FnMut(&mut Vec<Finding>, Pending),
) {
    for (object, applied) in snapshot.applied.get(release).into_iter().flatten() {
        match applied {
            Applied::Missing => {}
            Applied::Unreadable(why) => findings.push(Finding {
                level: Level::Warning,
                object: object.clone(),
                message: format!(
                    "listed by ClusterStackRelease {release} but cannot be read ({why}); left as it is"
                ),
                fix: None,
                adoption: None,
            }),
            Applied::Found { target, metadata } => {
                let wrapped = json!({"metadata": metadata});
                let mark = annotation(&wrapped, OWNER_ANNOTATION);
                if mark == Some(release) {
                    continue;
                }
                if let Some(other) = mark.or(claimed.get(object).map(String::as_str)) {
                    findings.push(Finding {
                        level: Level::Warning,
                        object: object.clone(),
                        message: format!(
                            "listed by ClusterStackRelease {release} but marked as applied by {other}; left \
                             to {other}"
                        ),
                        fix: None,
                        adoption: None,
                    });
                    continue;
                }
                if label(&wrapped, OWNER_LABEL) != Some(OWNER_LABEL_VALUE) {
                    findings.push(Finding {
                        level: Level::Warning,
                        object: object.clone(),
                        message: format!(
                            "listed by ClusterStackRelease {release} but not labelled \
                             {OWNER_LABEL}={OWNER_LABEL_VALUE}, so CSO did not apply it: stackhost will \
                             neither prune nor delete it"
                        ),
                        fix: Some("delete it yourself if it is no longer needed".into()),
                        adoption: None,
                    });
                    continue;
                }
                claimed.insert(object.clone(), release.to_owned());
                let mut pending = Pending::new(
                    target.clone(),
                    object.clone(),
                    s(&wrapped, "/metadata/resourceVersion"),
                );
                pending.patch["metadata"]["annotations"][OWNER_ANNOTATION] = Value::String(release.into());
                pending.changes.push(format!(
                    "annotate {OWNER_ANNOTATION}={release} (CSO applied it for that release; stackhost \
                     prunes and deletes only what carries its release's mark)"
                ));
                push(findings, pending);
            }
        }
    }
}

/// `Kind.group namespace/name`, as findings name objects (the group left out for core and stackhost's).
pub fn describe_target(t: &Target) -> String {
    let group = if t.group.is_empty() || t.group == crate::api::GROUP {
        String::new()
    } else {
        format!(".{}", t.group)
    };
    if t.namespace.is_empty() {
        format!("{}{group} {}", t.kind, t.name)
    } else {
        format!("{}{group} {}/{}", t.kind, t.namespace, t.name)
    }
}

/// The report as text for a terminal: blockers with their fix, warnings, the adoptions and what is
/// taken over as it is, then a verdict. `cluster` says which cluster (e.g. `kubeconfig /path`). `outcomes` (after `--apply`) says how each adoption went.
pub fn render_text(
    report: &Report,
    cluster: &str,
    outcomes: Option<&[(String, Result<(), String>)]>,
) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let mode = if outcomes.is_some() {
        "--apply"
    } else {
        "dry run: nothing is changed"
    };
    let _ = writeln!(
        out,
        "stackhost migrate: from the Cluster Stack Operator to stackhost, {cluster} ({mode})"
    );
    let section = |out: &mut String, title: &str, level: Level| {
        let items: Vec<&Finding> = report.of(level).collect();
        if items.is_empty() {
            return;
        }
        let _ = writeln!(out, "\n{title} ({}):", items.len());
        for f in items {
            let _ = writeln!(out, "  - {}: {}", f.object, f.message);
            if let Some(fix) = &f.fix {
                let _ = writeln!(out, "      fix: {fix}");
            }
        }
    };
    section(&mut out, "Blockers: fix these first", Level::Blocker);
    section(&mut out, "Warnings", Level::Warning);
    match outcomes {
        None => section(&mut out, "Will adopt with --apply", Level::Adopt),
        Some(outcomes) if !outcomes.is_empty() => {
            let _ = writeln!(out, "\nAdopted ({}):", outcomes.len());
            for (object, outcome) in outcomes {
                match outcome {
                    Ok(()) => {
                        let _ = writeln!(out, "  - {object}: done");
                    }
                    Err(e) => {
                        let _ = writeln!(out, "  - {object}: FAILED: {e}");
                    }
                }
            }
        }
        Some(_) => {}
    }
    section(&mut out, "Taken over as they are", Level::Keep);
    let blockers = report.of(Level::Blocker).count();
    let adopt = report.of(Level::Adopt).count();
    let _ = writeln!(out);
    if blockers > 0 {
        let _ = writeln!(
            out,
            "BLOCKED: {blockers} blocker(s); {}fix them and run the check again.",
            if outcomes.is_some() {
                "nothing was changed; "
            } else {
                ""
            }
        );
    } else if let Some(outcomes) = outcomes {
        let failed = outcomes.iter().filter(|(_, o)| o.is_err()).count();
        if failed > 0 {
            let _ = writeln!(
                out,
                "INCOMPLETE: {failed} of {} adoption(s) failed; run `stackhost migrate --apply` again.",
                outcomes.len()
            );
        } else {
            let _ = writeln!(
                out,
                "DONE: {} object(s) adopted; install or start stackhost now (README \"Migrating from the \
                 Cluster Stack Operator\").",
                outcomes.len()
            );
        }
    } else if adopt > 0 {
        let _ = writeln!(
            out,
            "READY: nothing blocks; `stackhost migrate --apply` adopts {adopt} object(s)."
        );
    } else {
        let _ = writeln!(out, "READY: nothing blocks and nothing needs adopting.");
    }
    out
}

#[cfg(test)]
mod tests;
