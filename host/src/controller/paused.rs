//! Pausing, as Cluster API controllers do it: an object annotated `cluster.x-k8s.io/paused` (any
//! value) is not reconciled, deletion included, until the annotation goes. Its status says so with a
//! `Paused` condition (True), removed again on resume. A ClusterAddon also pauses with its Cluster
//! (`spec.paused` or the annotation on the Cluster).

use std::fmt::Debug;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::api::condition::{self, Condition, ConditionStatus};
use crate::api::{ClusterAddon, ClusterStack, ClusterStackRelease, ProviderPlugin};

/// The annotation that pauses an object (Cluster API's).
pub const PAUSED_ANNOTATION: &str = "cluster.x-k8s.io/paused";
/// The condition type of a paused object.
pub const PAUSED: &str = "Paused";

/// An object of ours with status conditions.
pub trait Conditioned:
    Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope> + Clone + DeserializeOwned + Debug
{
    fn conditions(&self) -> &[Condition];
}

macro_rules! conditioned {
    ($($kind:ty),*) => {$(
        impl Conditioned for $kind {
            fn conditions(&self) -> &[Condition] {
                self.status.as_ref().map_or(&[], |s| &s.conditions)
            }
        }
    )*};
}
conditioned!(ClusterStack, ClusterStackRelease, ProviderPlugin, ClusterAddon);

/// Whether `obj` carries the paused annotation.
pub fn is_paused(obj: &impl Resource) -> bool {
    obj.meta()
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(PAUSED_ANNOTATION))
}

/// What a reconcile of `obj` does about pausing: `Some(action)` ends it here (the object is paused,
/// `why` says by what, or its `Paused` condition was just removed and the status write brings it back
/// with the condition gone); `None` goes on.
pub async fn gate<K: Conditioned>(
    client: &kube::Client,
    obj: &K,
    why: Option<String>,
) -> Result<Option<Action>, kube::Error> {
    let present = condition::find(obj.conditions(), PAUSED);
    let mut conditions = obj.conditions().to_vec();
    match why {
        Some(why) => {
            let message = format!("{why}; remove it to resume reconciling");
            if present.is_some_and(|c| {
                c.status == ConditionStatus::True && c.message.as_deref() == Some(message.as_str())
            }) {
                return Ok(Some(Action::await_change()));
            }
            let paused = Condition {
                reason: Some(PAUSED.to_owned()),
                message: Some(message),
                ..condition::true_condition(PAUSED)
            };
            condition::set(&mut conditions, paused, &super::now());
            tracing::info!(kind = %K::kind(&()), object = %object_ref(obj), "{why}: reconciling paused");
        }
        None if present.is_some() => {
            condition::remove(&mut conditions, PAUSED);
            tracing::info!(kind = %K::kind(&()), object = %object_ref(obj), "reconciling resumed");
        }
        None => return Ok(None),
    }
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    let patch = json!({"status": {"conditions": conditions}});
    api.patch_status(&obj.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(Some(Action::await_change()))
}

/// Why an object of ours is paused by its own annotation.
pub fn own_annotation(obj: &impl Resource) -> Option<String> {
    is_paused(obj).then(|| format!("the {PAUSED_ANNOTATION} annotation is set"))
}

fn object_ref(obj: &impl Resource) -> String {
    format!(
        "{}/{}",
        obj.meta().namespace.as_deref().unwrap_or_default(),
        obj.meta().name.as_deref().unwrap_or_default()
    )
}
