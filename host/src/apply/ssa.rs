//! The I/O half of applying: executes the decisions of [`super`] against one API server with server-side
//! apply (field manager [`FIELD_MANAGER`], forced, so stackhost owns the fields it renders) and deletes.
//!
//! One [`Applier`] per API server (the management cluster, or one workload cluster). It resolves kinds
//! through discovery, cached and refreshed when a kind is missing; a kind whose CRD is part of the same
//! render is resolved from that CRD, so a chart may ship a CRD and its objects together (the CRD is applied
//! first, and discovery is refreshed before its objects are sent).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope as KubeScope};
use serde_json::Value;
use tokio::sync::RwLock;

use super::{
    desired_objects, objects_to_prune, resources_status, ApplyError, DesiredObject, ObjectKey, Owner, Scope,
    FIELD_MANAGER,
};
use crate::api::Resource;

/// What a [`Applier::sync`] did: the new `status.resources` and the per-object outcomes.
#[derive(Debug, Clone, Default)]
pub struct SyncOutcome {
    /// The objects of the render, labelled and namespaced, in apply order.
    pub desired: Vec<DesiredObject>,
    /// The new `status.resources`.
    pub resources: Vec<Resource>,
    /// Apply outcome per desired object.
    pub applied: BTreeMap<ObjectKey, Result<(), String>>,
    /// Delete outcome per pruned object.
    pub pruned: BTreeMap<ObjectKey, Result<(), String>>,
}

impl SyncOutcome {
    /// The first failure, as `"<object>: <error>"`, for a condition message.
    pub fn first_error(&self) -> Option<String> {
        self.applied
            .iter()
            .chain(&self.pruned)
            .find_map(|(k, r)| r.as_ref().err().map(|e| format!("{k}: {e}")))
    }

    /// How many objects failed to apply or prune.
    pub fn failures(&self) -> usize {
        self.applied
            .values()
            .chain(self.pruned.values())
            .filter(|r| r.is_err())
            .count()
    }
}

/// A kind as discovery describes it.
#[derive(Debug, Clone)]
struct Kind {
    resource: ApiResource,
    namespaced: bool,
}

/// Server-side apply and delete against one API server.
pub struct Applier {
    client: kube::Client,
    /// (group, version, kind) -> resource; (group, "", kind) -> the most stable version of the kind.
    kinds: RwLock<HashMap<(String, String, String), Kind>>,
}

impl std::fmt::Debug for Applier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Applier").finish_non_exhaustive()
    }
}

impl Applier {
    /// An applier for the API server behind `client`; discovery runs on first use.
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            kinds: RwLock::new(HashMap::new()),
        }
    }

    /// The client this applier talks through.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// Runs discovery again (after CRDs were installed, or when a kind is missing).
    pub async fn refresh(&self) -> Result<(), kube::Error> {
        let discovery = Discovery::new(self.client.clone()).run().await?;
        let mut kinds = HashMap::new();
        for group in discovery.groups() {
            for version in group.versions() {
                for (resource, caps) in group.versioned_resources(version) {
                    insert(&mut kinds, resource, &caps, false);
                }
            }
            // Per kind its most stable version: a group may serve kinds only in a version that is not
            // its preferred one (CAPO's v1beta1 templates next to CAPI's v1beta2 Dev* kinds).
            for (resource, caps) in group.resources_by_stability() {
                insert(&mut kinds, resource, &caps, true);
            }
        }
        *self.kinds.write().await = kinds;
        Ok(())
    }

    async fn lookup(&self, group: &str, version: &str, kind: &str) -> Option<Kind> {
        let key = (group.to_owned(), version.to_owned(), kind.to_owned());
        self.kinds.read().await.get(&key).cloned()
    }

    /// Resolves a kind, refreshing discovery once when it is unknown.
    async fn resolve(&self, group: &str, version: &str, kind: &str) -> Result<Option<Kind>, kube::Error> {
        if let Some(k) = self.lookup(group, version, kind).await {
            return Ok(Some(k));
        }
        self.refresh().await?;
        Ok(self.lookup(group, version, kind).await)
    }

    /// The objects to apply for `rendered` (see [`desired_objects`]), with scopes from discovery or from
    /// CRDs in the same render, sorted so that namespaces and CRDs come first.
    pub async fn desired(
        &self,
        rendered: &[Value],
        default_namespace: &str,
        owner: &Owner,
    ) -> Result<Vec<DesiredObject>, SsaError> {
        if self.kinds.read().await.is_empty() {
            self.refresh().await?;
        }
        let mut scopes: HashMap<(String, String), Scope> = HashMap::new();
        for obj in rendered {
            let (group, kind) = group_kind(obj);
            if scopes.contains_key(&(group.clone(), kind.clone())) {
                continue;
            }
            let scope = match self.lookup(&group, "", &kind).await {
                Some(k) => scope_of(k.namespaced),
                None => crd_scope_in(rendered, &group, &kind).unwrap_or(Scope::Unknown),
            };
            scopes.insert((group, kind), scope);
        }
        if scopes.values().any(|s| *s == Scope::Unknown) {
            self.refresh().await?;
            for ((group, kind), scope) in scopes.iter_mut() {
                if *scope == Scope::Unknown {
                    if let Some(k) = self.lookup(group, "", kind).await {
                        *scope = scope_of(k.namespaced);
                    }
                }
            }
        }
        let mut desired = desired_objects(rendered, default_namespace, owner, |group, kind| {
            scopes
                .get(&(group.to_owned(), kind.to_owned()))
                .copied()
                .unwrap_or(Scope::Unknown)
        })?;
        desired.sort_by_key(|d| super::install_rank(&d.key.kind));
        Ok(desired)
    }

    /// Server-side applies one object.
    pub async fn apply_one(&self, object: &DesiredObject) -> Result<(), String> {
        let kind = match self
            .resolve(&object.key.group, &object.version, &object.key.kind)
            .await
        {
            Ok(Some(kind)) => kind,
            Ok(None) => {
                return Err(format!(
                    "{}/{} {} is not served by the API server; install its CRD first",
                    object.key.group, object.version, object.key.kind
                ))
            }
            Err(e) => return Err(format!("discovery failed: {e}")),
        };
        let api = self.api(&kind, &object.key.namespace);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let applied = api
            .patch(&object.key.name, &params, &Patch::Apply(&object.object))
            .await;
        match applied {
            Err(kube::Error::Api(e)) if e.code == 422 && replaced_when_immutable(&object.key, &e.message) => {
                // As `helm upgrade --force` and `kubectl replace --force` do: the object goes and comes back
                // with the new content (a Deployment's pods are replaced, a binding is briefly absent).
                tracing::info!(object = %object.key, reason = %e.message, "an immutable field changed; recreating");
                let deleted = api.delete(&object.key.name, &Default::default()).await;
                if let Some(e) = deleted.as_ref().err().filter(|e| !is_not_found(e)) {
                    return Err(format!(
                        "an immutable field changed and deleting the old object failed: {}",
                        describe(e)
                    ));
                }
                api.patch(&object.key.name, &params, &Patch::Apply(&object.object))
                    .await
                    .map(drop)
                    .map_err(|e| format!("recreated after an immutable field changed: {}", describe(&e)))
            }
            other => other.map(drop).map_err(|e| describe(&e)),
        }
    }

    /// Applies every object in order; after a CRD is applied, discovery is refreshed (waiting briefly
    /// for the API server to serve the new kind) before the objects that need it are sent.
    pub async fn apply(&self, objects: &[DesiredObject]) -> BTreeMap<ObjectKey, Result<(), String>> {
        let mut out = BTreeMap::new();
        let mut crds_applied = false;
        for object in objects {
            if crds_applied && object.key.kind != "CustomResourceDefinition" {
                crds_applied = false;
                self.wait_for_kinds(objects).await;
            }
            let outcome = self.apply_one(object).await;
            if object.key.kind == "CustomResourceDefinition" && outcome.is_ok() {
                crds_applied = true;
            }
            if let Err(e) = &outcome {
                tracing::warn!(object = %object.key, error = %e, "apply failed");
            }
            out.insert(object.key.clone(), outcome);
        }
        out
    }

    async fn wait_for_kinds(&self, objects: &[DesiredObject]) {
        for attempt in 0..20 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            if self.refresh().await.is_err() {
                continue;
            }
            let mut all = true;
            for o in objects {
                if self.lookup(&o.key.group, &o.version, &o.key.kind).await.is_none() {
                    all = false;
                    break;
                }
            }
            if all {
                return;
            }
        }
    }

    /// Deletes the listed objects (background propagation); an object that is already gone counts as
    /// deleted, and so does a kind the server no longer serves. A release deletes only objects that carry
    /// its mark ([`Owner::may_delete`]): others are left in place, logged, and count as gone from its list.
    pub async fn delete(
        &self,
        resources: &[Resource],
        owner: &Owner,
    ) -> BTreeMap<ObjectKey, Result<(), String>> {
        let mut out = BTreeMap::new();
        for r in resources {
            let key = ObjectKey::of_resource(r);
            let outcome = match self.resolve(&r.group, &r.version, &r.kind).await {
                Ok(None) => Ok(()),
                Err(e) => Err(format!("discovery failed: {e}")),
                Ok(Some(kind)) => self.delete_owned(&kind, r, &key, owner).await,
            };
            out.insert(key, outcome);
        }
        out
    }

    async fn delete_owned(
        &self,
        kind: &Kind,
        r: &Resource,
        key: &ObjectKey,
        owner: &Owner,
    ) -> Result<(), String> {
        let api = self.api(kind, &r.namespace);
        let mut params = DeleteParams::background();
        if matches!(owner, Owner::Release { .. }) {
            let object = match api.get_opt(&r.name).await {
                Ok(Some(o)) => o,
                Ok(None) => return Ok(()),
                Err(e) => return Err(describe(&e)),
            };
            let value = serde_json::to_value(&object).map_err(|e| e.to_string())?;
            if let Err(why) = owner.may_delete(&value) {
                tracing::warn!(object = %key, reason = %why, "not deleting an object this release does not own");
                return Ok(());
            }
            // The object checked is the object deleted (not a namesake created since).
            params.preconditions = object.metadata.uid.map(|uid| kube::api::Preconditions {
                uid: Some(uid),
                resource_version: None,
            });
        }
        match api.delete(&r.name, &params).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(describe(&e)),
        }
    }

    /// Applies a render and prunes what the previous `status.resources` listed but the render no
    /// longer contains. Returns the new `status.resources`.
    pub async fn sync(
        &self,
        rendered: &[Value],
        default_namespace: &str,
        previous: &[Resource],
        owner: &Owner,
    ) -> Result<SyncOutcome, SsaError> {
        let desired = self.desired(rendered, default_namespace, owner).await?;
        Ok(self.sync_desired(desired, previous, owner).await)
    }

    /// [`Applier::sync`] of objects already resolved by [`Applier::desired`].
    pub async fn sync_desired(
        &self,
        desired: Vec<DesiredObject>,
        previous: &[Resource],
        owner: &Owner,
    ) -> SyncOutcome {
        let applied = self.apply(&desired).await;
        let prune = objects_to_prune(previous, &desired);
        let pruned = self.delete(&prune, owner).await;
        let resources = resources_status(&desired, &applied, &pruned, previous);
        SyncOutcome {
            desired,
            resources,
            applied,
            pruned,
        }
    }

    fn api(&self, kind: &Kind, namespace: &str) -> Api<DynamicObject> {
        if kind.namespaced {
            Api::namespaced_with(self.client.clone(), namespace, &kind.resource)
        } else {
            Api::all_with(self.client.clone(), &kind.resource)
        }
    }
}

/// Why a sync could not start.
#[derive(Debug, thiserror::Error)]
pub enum SsaError {
    /// The render cannot be applied as it is.
    #[error(transparent)]
    Render(#[from] ApplyError),
    /// Discovery against the API server failed.
    #[error("cannot discover the API server's kinds: {0}")]
    Discovery(#[from] kube::Error),
}

fn insert(
    kinds: &mut HashMap<(String, String, String), Kind>,
    resource: ApiResource,
    caps: &ApiCapabilities,
    recommended: bool,
) {
    // Subresources (`pods/status`) share the kind of their parent; skip them.
    if resource.plural.contains('/') {
        return;
    }
    let kind = Kind {
        namespaced: caps.scope == KubeScope::Namespaced,
        resource: resource.clone(),
    };
    let version = if recommended {
        String::new()
    } else {
        resource.version.clone()
    };
    kinds.insert((resource.group, version, resource.kind), kind);
}

fn scope_of(namespaced: bool) -> Scope {
    if namespaced {
        Scope::Namespaced
    } else {
        Scope::Cluster
    }
}

fn group_kind(obj: &Value) -> (String, String) {
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let (group, _) = super::split_api_version(api_version);
    (
        group.to_owned(),
        obj["kind"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The scope a CRD in the same render declares for `group`/`kind`.
fn crd_scope_in(rendered: &[Value], group: &str, kind: &str) -> Option<Scope> {
    rendered
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .find(|o| o["spec"]["group"] == group && o["spec"]["names"]["kind"] == kind)
        .map(|crd| scope_of(crd["spec"]["scope"] != "Cluster"))
}

/// Whether an object refused for changing an immutable field is deleted and created again: kinds whose
/// objects hold no data of their own (workload controllers, Jobs, role bindings, StorageClasses). A
/// StatefulSet (its volume claims) or anything else is left as it is and the refusal reported.
fn replaced_when_immutable(key: &ObjectKey, message: &str) -> bool {
    let kind = (key.group.as_str(), key.kind.as_str());
    let replaceable = matches!(
        kind,
        ("apps", "Deployment" | "DaemonSet" | "ReplicaSet")
            | ("batch", "Job")
            | ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding")
            | ("storage.k8s.io", "StorageClass")
    );
    replaceable
        && (message.contains("field is immutable")
            || message.contains("cannot change roleRef")
            || message.contains("are forbidden"))
}

fn is_not_found(error: &kube::Error) -> bool {
    matches!(error, kube::Error::Api(e) if e.code == 404)
}

/// The API server's message, which says which field is wrong, without kube's wrapping.
fn describe(error: &kube::Error) -> String {
    match error {
        kube::Error::Api(s) => format!("{} ({})", s.message, s.reason),
        other => other.to_string(),
    }
}
