//! ClusterStack controller (upstream `clusterstack_controller.go`, cso-behaviour.md §2.1): decide which
//! releases the stack keeps (pinned `spec.versions`, the newest of the channel with autoSubscribe, and
//! every release a Cluster still uses), create and delete the ClusterStackReleases, report.

use std::sync::Arc;
use std::time::Instant;

use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource as _, ResourceExt};
use serde_json::json;

use super::{fair, now, paused, Context};
use crate::api::condition::{self, false_condition, true_condition, types};
use crate::api::{
    ClusterStack, ClusterStackRelease, ClusterStackReleaseSpec, ClusterStackStatus, ConditionSeverity,
};
use crate::release::{latest_release, plan_releases, ExistingRelease, KubernetesVersion, StackKey};

pub(crate) const CONTROLLER: &str = "clusterstack";

/// Annotation that asks for an immediate autoSubscribe look-up: change its value (e.g. to a timestamp).
pub const REFRESH_ANNOTATION: &str = "clusterstack.x-k8s.io/refresh";

/// The `spec.topology.class` (v1beta1) or `spec.topology.classRef.name` (v1beta2) of every Cluster API
/// Cluster in `namespace`; empty when Cluster API is not installed.
pub async fn cluster_classes_in_use(
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<String>, kube::Error> {
    Ok(clusters_with_class(client, namespace)
        .await?
        .into_iter()
        .map(|(_, class)| class)
        .collect())
}

/// The Clusters of `namespace` that have a class, as `(name, class)`, from whichever Cluster API version
/// is served; empty when Cluster API is not installed.
pub async fn clusters_with_class(
    client: &kube::Client,
    namespace: &str,
) -> Result<Vec<(String, String)>, kube::Error> {
    for version in ["v1beta2", "v1beta1"] {
        let ar = ApiResource::from_gvk(&GroupVersionKind::gvk("cluster.x-k8s.io", version, "Cluster"));
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &ar);
        match api.list(&ListParams::default()).await {
            Ok(list) => {
                return Ok(list
                    .items
                    .iter()
                    .filter_map(|c| Some((c.metadata.name.clone()?, class_of(&c.data)?.to_owned())))
                    .collect())
            }
            Err(kube::Error::Api(e)) if e.code == 404 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(Vec::new())
}

/// The class of a Cluster (v1beta2 `spec.topology.classRef.name` or v1beta1 `spec.topology.class`).
pub fn class_of(cluster: &serde_json::Value) -> Option<&str> {
    let topology = &cluster["spec"]["topology"];
    topology["classRef"]["name"]
        .as_str()
        .or_else(|| topology["class"].as_str())
}

/// Reconciles one ClusterStack.
pub async fn reconcile(cs: Arc<ClusterStack>, ctx: Arc<Context>) -> Result<Action, kube::Error> {
    let Some(_slot) = ctx.slot(CONTROLLER, cs.as_ref()) else {
        return Ok(Action::requeue(fair::DEFERRED));
    };
    let why = paused::own_annotation(cs.as_ref());
    if let Some(action) = paused::gate(&ctx.client, cs.as_ref(), why).await? {
        return Ok(action);
    }
    let started = Instant::now();
    let result = reconcile_inner(&cs, &ctx).await;
    let label = match &result {
        Ok(_) => "ok",
        Err(_) => "error",
    };
    ctx.metrics.reconciled(CONTROLLER, label, started.elapsed());
    result
}

async fn reconcile_inner(cs: &ClusterStack, ctx: &Context) -> Result<Action, kube::Error> {
    let ns = cs.namespace().unwrap_or_default();
    let name = cs.name_any();
    if cs.metadata.deletion_timestamp.is_some() {
        // ClusterStackReleases are owned (garbage-collected) and keep their own finalizers.
        return Ok(Action::await_change());
    }
    let now = now();
    let mut status = cs.status.clone().unwrap_or_default();
    let spec = &cs.spec;
    let channel = match spec.channel {
        crate::api::Channel::Stable => "stable",
        crate::api::Channel::Custom => "custom",
    };
    let kubernetes = match KubernetesVersion::parse_dot(&spec.kubernetes_version) {
        Ok(k) => k,
        Err(e) => {
            // The schema already refuses this; objects written before the schema existed end here.
            return invalid_spec(ctx, cs, status, format!("spec.kubernetesVersion: {e}")).await;
        }
    };
    let stack = StackKey {
        provider: spec.provider.clone(),
        name: spec.name.clone(),
        kubernetes,
    };

    // The newest release of the channel in the source (autoSubscribe only).
    let mut latest_remote = None;
    let mut source_ok = true;
    if spec.auto_subscribe {
        let fresh = cs
            .annotations()
            .get(REFRESH_ANNOTATION)
            .is_some_and(|v| ctx.refresh_requested(&cs.uid().unwrap_or_default(), v));
        let listed = match ctx.release_source(&ns, spec.source.as_ref()).await {
            Ok(source) => ctx.list_tags(source.as_ref(), fresh).await,
            Err(e) => Err(e),
        };
        match listed {
            Ok(tags) => {
                let latest = latest_release(tags.iter().map(String::as_str), &stack, channel);
                latest_remote = latest.latest;
                condition::set(
                    &mut status.conditions,
                    true_condition(types::RELEASES_SYNCED),
                    &now,
                );
                condition::set(
                    &mut status.conditions,
                    true_condition(types::ASSETS_CLIENT_API_AVAILABLE),
                    &now,
                );
            }
            Err(e) => {
                source_ok = false;
                let message = format!("cannot list releases: {e}; existing releases are kept");
                if condition::find(&status.conditions, types::RELEASES_SYNCED)
                    .and_then(|c| c.message.as_deref())
                    != Some(message.as_str())
                {
                    ctx.event(
                        cs,
                        EventType::Warning,
                        "ReleasesNotListed",
                        "ListReleases",
                        message.clone(),
                    )
                    .await;
                }
                condition::set(
                    &mut status.conditions,
                    false_condition(
                        types::RELEASES_SYNCED,
                        ConditionSeverity::Warning,
                        "FailedToListReleases",
                        &message,
                    ),
                    &now,
                );
                condition::set(
                    &mut status.conditions,
                    false_condition(
                        types::ASSETS_CLIENT_API_AVAILABLE,
                        ConditionSeverity::Warning,
                        "SourceUnavailable",
                        &message,
                    ),
                    &now,
                );
            }
        }
    } else {
        condition::remove(&mut status.conditions, types::RELEASES_SYNCED);
        condition::remove(&mut status.conditions, types::ASSETS_CLIENT_API_AVAILABLE);
    }

    let csr_api: Api<ClusterStackRelease> = Api::namespaced(ctx.client.clone(), &ns);
    let uid = cs.uid().unwrap_or_default();
    let owned: Vec<ClusterStackRelease> = csr_api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|r| r.owner_references().iter().any(|o| o.uid == uid))
        .collect();
    let existing: Vec<ExistingRelease> = owned
        .iter()
        .map(|r| ExistingRelease {
            name: r.name_any(),
            ready: r.status.as_ref().is_some_and(|s| s.ready),
            kubernetes_version: r
                .status
                .as_ref()
                .and_then(|s| s.kubernetes_version.clone())
                .unwrap_or_default(),
        })
        .collect();
    let in_use = cluster_classes_in_use(&ctx.client, &ns).await?;
    let plan = match plan_releases(
        &stack,
        channel,
        &existing,
        latest_remote.as_ref(),
        &spec.versions,
        &in_use,
    ) {
        Ok(plan) => plan,
        Err(e) => return invalid_spec(ctx, cs, status, format!("spec.versions: {e}")).await,
    };
    for (object, e) in &plan.unparsable {
        ctx.event(
            cs,
            EventType::Warning,
            "FailedToParseClusterStackRelease",
            "Plan",
            format!("ClusterStackRelease {object} is kept but ignored: {e}"),
        )
        .await;
    }

    // Create what is missing, delete what is no longer wanted (never a release in use: the plan keeps those).
    let mut sync_errors = Vec::new();
    for tag in &plan.desired {
        if owned.iter().any(|r| &r.name_any() == tag) {
            continue;
        }
        let mut csr = ClusterStackRelease::new(
            tag,
            ClusterStackReleaseSpec {
                provider_ref: None,
                provider_plugin: super::context::plugin_of(spec),
                source: spec.source.clone(),
            },
        );
        csr.metadata.namespace = Some(ns.clone());
        csr.metadata.owner_references = cs.controller_owner_ref(&()).map(|o| vec![o]);
        if let Some((k, v)) = &ctx.args.watch_label {
            csr.metadata.labels = Some([(k.clone(), v.clone())].into());
        }
        match csr_api.create(&PostParams::default(), &csr).await {
            Ok(_) => {
                ctx.event(
                    cs,
                    EventType::Normal,
                    "Created",
                    "CreateRelease",
                    format!("created ClusterStackRelease {tag}"),
                )
                .await
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Exists but is not ours (or the cache is behind): adopt it only when it has no owner.
                let current = csr_api.get(tag).await?;
                if current.owner_references().is_empty() {
                    let patch = json!({"metadata": {"ownerReferences": csr.metadata.owner_references}});
                    csr_api
                        .patch(tag, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                } else if !current.owner_references().iter().any(|o| o.uid == uid) {
                    sync_errors.push(format!(
                        "ClusterStackRelease {tag} exists and belongs to another owner"
                    ));
                }
            }
            Err(e) => sync_errors.push(format!("cannot create ClusterStackRelease {tag}: {e}")),
        }
    }
    for tag in &plan.delete {
        match csr_api.delete(tag, &DeleteParams::background()).await {
            Ok(_) => {
                ctx.event(
                    cs,
                    EventType::Normal,
                    "Deleted",
                    "DeleteRelease",
                    format!("deleting ClusterStackRelease {tag}"),
                )
                .await
            }
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => sync_errors.push(format!("cannot delete ClusterStackRelease {tag}: {e}")),
        }
    }
    if sync_errors.is_empty() {
        condition::set(
            &mut status.conditions,
            true_condition(types::CLUSTER_STACK_RELEASES_SYNCED),
            &now,
        );
    } else {
        condition::set(
            &mut status.conditions,
            false_condition(
                types::CLUSTER_STACK_RELEASES_SYNCED,
                ConditionSeverity::Error,
                "FailedToSyncReleases",
                sync_errors.join("; "),
            ),
            &now,
        );
    }

    // Report: one summary entry per kept release, the usable versions and the latest ready release.
    let mut summary: Vec<_> = owned
        .iter()
        .filter(|r| plan.desired.contains(&r.name_any()))
        .map(|r| {
            let mut summary = r.summary();
            // A release whose status the API server refused to write cannot explain itself.
            if let Some(why) = ctx.release_status_error(&ns, &r.name_any()) {
                summary.ready = false;
                summary.message = Some(why);
            }
            summary
        })
        .collect();
    for tag in &plan.desired {
        if !owned.iter().any(|r| &r.name_any() == tag) {
            summary.push(ClusterStackRelease::new(tag, Default::default()).summary());
        }
    }
    summary.sort_by(|a, b| a.name.cmp(&b.name));
    status.summary = summary;
    status.usable_versions = plan.usable_versions.clone();
    status.latest_release = plan.latest_release.clone();
    if plan.available {
        condition::set(
            &mut status.conditions,
            true_condition(types::CLUSTER_STACK_RELEASE_AVAILABLE),
            &now,
        );
    } else {
        let waiting = status
            .summary
            .iter()
            .find_map(|s| s.message.clone().map(|m| format!("{}: {m}", s.name)))
            .unwrap_or_else(|| {
                if plan.desired.is_empty() {
                    "no release: pin spec.versions or enable autoSubscribe with a source that has one".into()
                } else {
                    format!("waiting for {}", plan.desired.join(", "))
                }
            });
        condition::set(
            &mut status.conditions,
            false_condition(
                types::CLUSTER_STACK_RELEASE_AVAILABLE,
                ConditionSeverity::Info,
                "ProcessOngoing",
                waiting,
            ),
            &now,
        );
    }
    condition::set_summary(&mut status.conditions, &now);
    write_status(ctx, cs, status).await?;

    Ok(if spec.auto_subscribe {
        if source_ok {
            Action::requeue(ctx.args.auto_subscribe_interval)
        } else {
            Action::requeue(ctx.backoff(&format!("cs/{ns}/{name}")))
        }
    } else {
        Action::await_change()
    })
}

/// A spec the controller cannot act on: say which field in ReleasesSynced and wait for the user to change it.
async fn invalid_spec(
    ctx: &Context,
    cs: &ClusterStack,
    mut status: ClusterStackStatus,
    message: String,
) -> Result<Action, kube::Error> {
    let now = now();
    condition::set(
        &mut status.conditions,
        false_condition(
            types::CLUSTER_STACK_RELEASES_SYNCED,
            ConditionSeverity::Error,
            "InvalidSpec",
            message,
        ),
        &now,
    );
    condition::set_summary(&mut status.conditions, &now);
    write_status(ctx, cs, status).await?;
    Ok(Action::await_change())
}

async fn write_status(
    ctx: &Context,
    cs: &ClusterStack,
    status: ClusterStackStatus,
) -> Result<(), kube::Error> {
    let Some(patch) = super::status::merge_patch(cs.status.as_ref(), &status) else {
        return Ok(());
    };
    let api: Api<ClusterStack> = Api::namespaced(ctx.client.clone(), &cs.namespace().unwrap_or_default());
    api.patch_status(&cs.name_any(), &PatchParams::default(), &patch)
        .await
        .map(drop)
}

/// Requeue hint for the error policy: API errors are retried with the controller's backoff.
pub fn error_policy(cs: Arc<ClusterStack>, error: &kube::Error, ctx: Arc<Context>) -> Action {
    let key = format!("cs/{}/{}", cs.namespace().unwrap_or_default(), cs.name_any());
    tracing::warn!(clusterstack = %key, %error, "reconcile failed");
    Action::requeue(ctx.backoff(&key))
}
