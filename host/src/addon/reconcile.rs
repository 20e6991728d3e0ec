//! The two controllers of the addon module:
//!
//! - ClusterAddon creation (upstream's ClusterAddonCreate, §2.3): every Cluster API `Cluster` gets its
//!   `cluster-addon-<cluster>`, owned by the Cluster. It runs on every Cluster event, so Clusters that
//!   existed before stackhost started get one too, and a deleted ClusterAddon comes back.
//! - The ClusterAddon reconcile (§2.4): workload access, release lookup, then the legacy flow (one chart)
//!   or the multi-stage flow (stages per hook with CEL gates), every step recorded in the status.

use crate::controller::paused;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use futures_util::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{finalizer, Event};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;
use serde_json::{json, Value};
use sha2::Digest;
use tokio::sync::watch;

use super::cluster::{self, cluster_resource, topology_class};
use super::condition::{self as cel_condition, Outcome};
use super::error::{Error, ValuesError};
use super::stages::{self, phase};
use super::values::{render_values, TemplateInput};
use super::workload::{Workload, WorkloadClients, WorkloadError};
use super::{
    cluster_addon_name, AddonConfig, AddonValuesRequest, ADDON_NAMESPACE, ADDON_RELEASE_NAME,
    HOOK_AFTER_CONTROL_PLANE_INITIALIZED, HOOK_BEFORE_CLUSTER_UPGRADE, STAGE_ANNOTATION,
};
use crate::api::condition::{self, false_condition, is_true, true_condition, types};
use crate::api::{
    ClusterAddon, ClusterAddonSpec, ClusterAddonStatus, ConditionSeverity, Resource, ResourceStatus,
    CLUSTER_ADDON_FINALIZER,
};
use crate::apply::Owner;
use crate::controller::fair;
use crate::release::assets::{AddonLayout, AddonStage, StageCondition, CLUSTER_ADDON_VALUES_FILE};
use crate::release::{tag_from_class, ReleaseAssets, ReleaseName};
use crate::render::RenderRequest;

/// Condition types of ClusterAddons (upstream's strings, §1.6).
pub mod addon_types {
    /// The workload API answers.
    pub const CLUSTER_READY: &str = "ClusterReady";
    /// `clusteraddon.yaml` is usable.
    pub const CONFIG_VALIDATED: &str = "ClusterAddonConfigValidated";
    /// A stage's CEL condition is not met yet.
    pub const EVALUATED_CEL: &str = "EvaluatedCEL";
    /// Values or chart could not be rendered.
    pub const HELM_CHART_TEMPLATED: &str = "HelmChartTemplated";
    /// A delete stage could not delete everything.
    pub const HELM_CHART_DELETED: &str = "HelmChartDeleted";
    /// Waiting for the Cluster API hook (kept for compatibility; stackhost does not wait for it).
    pub const HOOK_SERVER_READY: &str = "HookServerReady";
}
use addon_types::*;

/// Everything a reconcile touches.
pub struct Context {
    /// Management cluster.
    pub client: kube::Client,
    /// Releases, Helm, plugin step, intervals.
    pub config: AddonConfig,
    /// Workload clients per Cluster.
    pub workloads: WorkloadClients,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Publishes an Event about `addon` when the config has a recorder.
    async fn event(&self, addon: &ClusterAddon, type_: EventType, reason: &str, action: &str, note: String) {
        if let Some(recorder) = &self.config.events {
            crate::controller::context::publish_event(recorder, addon, type_, reason, action, note).await;
        }
    }

    /// A context for `client` with `config`.
    pub fn new(client: kube::Client, config: AddonConfig) -> Self {
        Self {
            workloads: WorkloadClients::new(config.api_rate),
            client,
            config,
        }
    }
}

/// Runs the ClusterAddon creation and the ClusterAddon controllers until `shutdown` turns true.
pub async fn run(
    client: kube::Client,
    config: AddonConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    std::fs::create_dir_all(&config.work_dir).map_err(|e| Error::WorkDir {
        path: config.work_dir.clone(),
        reason: e.to_string(),
    })?;
    remove_leftovers(&config.work_dir);
    let ctx = Arc::new(Context::new(client.clone(), config));
    let stop = |mut rx: watch::Receiver<bool>| async move {
        // A dropped sender also means stop.
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let ar = cluster_resource();
    let (clusters, addons): (Api<DynamicObject>, Api<ClusterAddon>) = match &ctx.config.namespace {
        Some(ns) => (
            Api::namespaced_with(client.clone(), ns, &ar),
            Api::namespaced(client.clone(), ns),
        ),
        None => (Api::all_with(client.clone(), &ar), Api::all(client.clone())),
    };
    let mut watch = watcher::Config::default();
    if let Some((key, value)) = &ctx.config.watch_label {
        watch = watch.labels(&format!("{key}={value}"));
    }

    let config = controller::Config::default().concurrency(ctx.config.concurrency);
    let creator = Controller::new_with(clusters.clone(), watch.clone(), ar.clone())
        .with_config(config.clone())
        .watches(addons.clone(), watch.clone(), {
            let ar = ar.clone();
            move |addon: ClusterAddon| {
                let ns = addon.namespace()?;
                Some(ObjectRef::new_with(&addon.spec.cluster_ref.name.clone()?, ar.clone()).within(&ns))
            }
        })
        .graceful_shutdown_on(stop(shutdown.clone()))
        .run(create_addon, creator_error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "cluster addon creation");
            }
        });

    let controller = Controller::new(addons, watch.clone())
        .with_config(config)
        .watches_with(clusters, ar, watch, |cluster: DynamicObject| {
            let ns = cluster.namespace()?;
            Some(ObjectRef::<ClusterAddon>::new(&cluster_addon_name(&cluster.name_any())).within(&ns))
        })
        .graceful_shutdown_on(stop(shutdown))
        .run(reconcile, error_policy, ctx)
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "cluster addon reconcile");
            }
        });
    tokio::join!(creator, controller);
    Ok(())
}

/// Creates `cluster-addon-<cluster>` for a Cluster that has none (upstream ClusterAddonCreate).
pub async fn create_addon(cluster: Arc<DynamicObject>, ctx: Arc<Context>) -> Result<Action, Error> {
    if cluster.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let Some(ns) = cluster.namespace() else {
        return Ok(Action::await_change());
    };
    let name = cluster.name_any();
    let addons: Api<ClusterAddon> = Api::namespaced(ctx.client.clone(), &ns);
    let addon_name = cluster_addon_name(&name);
    match addons
        .get_opt(&addon_name)
        .await
        .map_err(Error::kube(format!("cannot read ClusterAddon {ns}/{addon_name}")))?
    {
        // Deleted by hand while its Cluster lives: create it again once it is gone.
        Some(a) if a.metadata.deletion_timestamp.is_some() => return Ok(Action::requeue(ctx.config.wait)),
        Some(_) => return Ok(Action::await_change()),
        None => {}
    }
    let api_version = cluster
        .types
        .as_ref()
        .map(|t| t.api_version.clone())
        .unwrap_or_else(|| format!("{}/{}", cluster::CAPI_GROUP, cluster::CAPI_VERSION));
    let mut addon = ClusterAddon::new(
        &addon_name,
        ClusterAddonSpec {
            cluster_ref: k8s_openapi::api::core::v1::ObjectReference {
                api_version: Some(api_version.clone()),
                kind: Some("Cluster".into()),
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                uid: cluster.uid(),
                ..Default::default()
            },
            ..Default::default()
        },
    );
    addon.metadata.namespace = Some(ns.clone());
    if let Some((key, value)) = &ctx.config.watch_label {
        // The ClusterAddon is watched with the same selector as its Cluster.
        addon.metadata.labels = Some([(key.clone(), value.clone())].into());
    }
    addon.metadata.owner_references = Some(vec![OwnerReference {
        api_version,
        kind: "Cluster".into(),
        name: name.clone(),
        uid: cluster.uid().unwrap_or_default(),
        ..Default::default()
    }]);
    match addons.create(&PostParams::default(), &addon).await {
        Ok(_) => tracing::info!(cluster = %format!("{ns}/{name}"), "created ClusterAddon {addon_name}"),
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => {
            return Err(Error::kube(format!(
                "cannot create ClusterAddon {ns}/{addon_name}"
            ))(e))
        }
    }
    Ok(Action::await_change())
}

fn creator_error_policy(_: Arc<DynamicObject>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "ClusterAddon creation failed");
    Action::requeue(ctx.config.wait)
}

/// Logs the error and retries after the configured wait.
pub fn error_policy(addon: Arc<ClusterAddon>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(clusteraddon = %object_name(&addon), %error, "reconcile failed");
    Action::requeue(ctx.config.retry)
}

fn object_name(addon: &ClusterAddon) -> String {
    format!("{}/{}", addon.namespace().unwrap_or_default(), addon.name_any())
}

/// Name of the controller in metrics.
const CONTROLLER: &str = "clusteraddon";

/// Reconciles one ClusterAddon (with the finalizer `clusteraddon.clusterstack.x-k8s.io`); records the
/// reconcile in the metrics: `ok`, `requeue` (a step waits or failed and is retried) or `error`.
pub async fn reconcile(addon: Arc<ClusterAddon>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = addon.namespace().unwrap_or_default();
    let slot = ctx
        .config
        .slots
        .as_ref()
        .map(|slots| slots.take(CONTROLLER, &ns, ctx.config.metrics.as_ref()));
    if let Some(None) = slot {
        return Ok(Action::requeue(fair::DEFERRED));
    }
    let started = std::time::Instant::now();
    let waiting = AtomicBool::new(false);
    let result = reconcile_inner(addon, &ctx, &waiting).await;
    if let Some(metrics) = &ctx.config.metrics {
        let label = match &result {
            Ok(_) if waiting.load(Ordering::Relaxed) => "requeue",
            Ok(_) => "ok",
            Err(_) => "error",
        };
        metrics.reconciled(CONTROLLER, label, started.elapsed());
    }
    result
}

async fn reconcile_inner(
    addon: Arc<ClusterAddon>,
    ctx: &Arc<Context>,
    waiting: &AtomicBool,
) -> Result<Action, Error> {
    let ns = addon
        .namespace()
        .ok_or_else(|| Error::NoNamespace(addon.name_any()))?;
    let api: Api<ClusterAddon> = Api::namespaced(ctx.client.clone(), &ns);
    let object = object_name(&addon);
    finalizer(&api, CLUSTER_ADDON_FINALIZER, addon, |event| async move {
        match event {
            Event::Apply(addon) => apply(&addon, ctx, waiting).await,
            Event::Cleanup(addon) => cleanup(&addon, ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer {
        object,
        message: e.to_string(),
    })
}

/// Deletion: the addons belong to the workload cluster's lifetime, so nothing is removed there (a
/// Cluster being deleted takes its workload cluster with it; a ClusterAddon deleted by hand is created
/// again and re-applies idempotently). The cached client goes.
async fn cleanup(addon: &ClusterAddon, ctx: &Context) -> Result<Action, Error> {
    if let (Some(ns), Some(cluster)) = (addon.namespace(), addon.spec.cluster_ref.name.as_deref()) {
        ctx.workloads.forget(&ns, cluster);
    }
    tracing::info!(clusteraddon = %object_name(addon), "ClusterAddon deleted");
    ctx.event(
        addon,
        EventType::Normal,
        "Deleted",
        "Delete",
        format!(
            "ClusterAddon deleted; the {} objects it applied stay in the workload cluster of Cluster {}",
            addon.status.as_ref().map_or(0, |s| s.resources.len()),
            addon.spec.cluster_ref.name.as_deref().unwrap_or_default()
        ),
    )
    .await;
    Ok(Action::await_change())
}

/// The working copy of a ClusterAddon during a reconcile, saved at every step.
struct Progress<'a> {
    api: Api<ClusterAddon>,
    name: String,
    saved_spec: ClusterAddonSpec,
    spec: ClusterAddonSpec,
    saved_status: ClusterAddonStatus,
    status: ClusterAddonStatus,
    annotation: Option<String>,
    ctx: &'a Context,
    /// The ClusterAddon as read (for Events).
    addon: &'a ClusterAddon,
    /// Events to publish once the status that explains them is saved.
    events: Vec<(EventType, String, String, String)>,
    /// Set when the reconcile ends waiting (for the metrics).
    waiting: &'a AtomicBool,
}

impl Progress<'_> {
    fn set(&mut self, c: crate::api::Condition) {
        condition::set(&mut self.status.conditions, c, &now());
    }

    /// Sets a condition and, when it is news (not already in the saved status with the same reason and
    /// message), queues an Event: Warning for warnings and errors, Normal for information. The Event's
    /// action is the condition type with the message: the recorder folds Events of the same reason and
    /// action into one series, which must only happen for the same message.
    fn report(&mut self, c: crate::api::Condition) {
        let known = self.saved_status.conditions.iter().any(|old| {
            old.type_ == c.type_
                && old.status == c.status
                && old.reason == c.reason
                && old.message == c.message
        });
        if !known {
            let type_ = match c.severity {
                Some(ConditionSeverity::Info) => EventType::Normal,
                _ => EventType::Warning,
            };
            let message = c.message.clone().unwrap_or_default();
            self.events.push((
                type_,
                c.reason.clone().unwrap_or_default(),
                crate::controller::context::truncate(&format!("{}: {message}", c.type_), 120),
                message,
            ));
        }
        self.set(c);
    }

    /// Queues a Normal Event; `action` names what was done to what (Events of the same reason and action
    /// are folded into one series).
    fn announce(&mut self, reason: &str, action: &str, note: String) {
        self.events
            .push((EventType::Normal, reason.to_owned(), action.to_owned(), note));
    }

    /// Queues the Normal Event of a finished apply: how many objects of `release` are in the workload.
    fn applied(&mut self, release: &str) {
        let note = format!(
            "release {release}: {} addon objects in the workload cluster",
            self.status.resources.len()
        );
        self.announce("AddonsApplied", &format!("Apply {release}"), note);
    }

    fn unset(&mut self, type_: &str) {
        condition::remove(&mut self.status.conditions, type_);
    }

    /// Writes the spec fields (when changed), the stage annotation and the whole status, then publishes
    /// the queued Events.
    async fn save(&mut self) -> Result<(), Error> {
        self.write().await?;
        for (type_, reason, action, note) in std::mem::take(&mut self.events) {
            self.ctx.event(self.addon, type_, &reason, &action, note).await;
        }
        Ok(())
    }

    async fn write(&mut self) -> Result<(), Error> {
        condition::set_summary(&mut self.status.conditions, &now());
        let params = PatchParams::default();
        let what = format!("cannot update ClusterAddon {}", self.name);
        if self.spec != self.saved_spec || self.annotation.is_some() {
            let opt = |s: &str| if s.is_empty() { Value::Null } else { json!(s) };
            let mut patch = json!({"spec": {
                "clusterStack": opt(&self.spec.cluster_stack),
                "version": opt(&self.spec.version),
                "hook": opt(&self.spec.hook),
            }});
            if let Some(value) = self.annotation.take() {
                patch["metadata"] = json!({"annotations": {STAGE_ANNOTATION: value}});
            }
            self.api
                .patch(&self.name, &params, &Patch::Merge(&patch))
                .await
                .map_err(Error::kube(what.clone()))?;
            self.saved_spec = self.spec.clone();
        }
        if self.status == self.saved_status {
            // Nothing changed: no write, so no watch event and no reconcile loop.
            return Ok(());
        }
        // Explicit empty lists and strings: a merge patch leaves absent fields as they were.
        let status = json!({"status": {
            "resources": self.status.resources,
            "stages": self.status.stages,
            "applyingClusterStack": self.status.applying_cluster_stack,
            "ready": self.status.ready,
            "conditions": self.status.conditions,
        }});
        self.api
            .patch_status(&self.name, &params, &Patch::Merge(&status))
            .await
            .map_err(Error::kube(what))?;
        self.saved_status = self.status.clone();
        Ok(())
    }

    /// Sets the stage annotation unless it is there already (upstream: the first value sticks).
    fn annotate(&mut self, addon: &ClusterAddon, value: &str) {
        if !addon.annotations().contains_key(STAGE_ANNOTATION) {
            self.annotation = Some(value.to_owned());
        }
    }

    /// Saves and requeues after `after`.
    async fn wait(&mut self, after: std::time::Duration) -> Result<Action, Error> {
        self.waiting.store(true, Ordering::Relaxed);
        self.save().await?;
        Ok(Action::requeue(after))
    }

    fn wait_interval(&self) -> std::time::Duration {
        self.ctx.config.wait
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

/// The Apply event: sets `waiting` when the reconcile stops at a step that waits or failed.
async fn apply(addon: &ClusterAddon, ctx: &Context, waiting: &AtomicBool) -> Result<Action, Error> {
    let ns = addon
        .namespace()
        .ok_or_else(|| Error::NoNamespace(addon.name_any()))?;
    let mut p = Progress {
        api: Api::namespaced(ctx.client.clone(), &ns),
        name: addon.name_any(),
        saved_spec: addon.spec.clone(),
        spec: addon.spec.clone(),
        saved_status: addon.status.clone().unwrap_or_default(),
        status: addon.status.clone().unwrap_or_default(),
        annotation: None,
        ctx,
        addon,
        events: Vec::new(),
        waiting,
    };
    let cluster_name = addon.spec.cluster_ref.name.clone().unwrap_or_default();
    let clusters = cluster::clusters(ctx.client.clone(), &ns);
    let Some(cluster) = clusters
        .get_opt(&cluster_name)
        .await
        .map_err(Error::kube(format!("cannot read Cluster {ns}/{cluster_name}")))?
    else {
        // Garbage collection removes the ClusterAddon with its Cluster.
        return Ok(Action::await_change());
    };
    let cluster = serde_json::to_value(&cluster).unwrap_or_default();
    let why = paused::own_annotation(addon).or_else(|| {
        let by_spec = cluster["spec"]["paused"] == true;
        let by_annotation = cluster["metadata"]["annotations"][paused::PAUSED_ANNOTATION].is_string();
        (by_spec || by_annotation).then(|| {
            let what = if by_spec {
                "spec.paused"
            } else {
                paused::PAUSED_ANNOTATION
            };
            format!("Cluster {ns}/{cluster_name} is paused ({what})")
        })
    });
    if let Some(action) = paused::gate(&ctx.client, addon, why)
        .await
        .map_err(Error::kube(format!(
            "cannot write the status of ClusterAddon {ns}/{}",
            addon.name_any()
        )))?
    {
        return Ok(action);
    }
    let Some(class) = topology_class(&cluster).map(str::to_owned) else {
        p.report(false_condition(
            types::CLUSTER_STACK_RELEASE_DOWNLOADED,
            ConditionSeverity::Warning,
            "NoTopology",
            format!("Cluster {ns}/{cluster_name} has no spec.topology.class: addons come from a ClusterClass of a cluster stack"),
        ));
        return p.wait(ctx.config.resync).await;
    };

    // Workload cluster access.
    let workload = match ctx.workloads.get(&ctx.client, &ns, &cluster_name).await {
        Ok(w) => w,
        Err(e) => {
            let severity = match e {
                WorkloadError::Kubeconfig(_) => ConditionSeverity::Warning,
                WorkloadError::NotReady(_) => ConditionSeverity::Info,
            };
            p.report(false_condition(
                CLUSTER_READY,
                severity,
                "ControlPlaneNotReady",
                e.to_string(),
            ));
            return p.wait(p.wait_interval()).await;
        }
    };
    p.set(true_condition(CLUSTER_READY));

    // The release of the Cluster's class.
    let release = match tag_from_class(&class).and_then(|t| ReleaseName::parse_tag(&t)) {
        Ok(r) => r,
        Err(e) => {
            p.report(false_condition(
                types::CLUSTER_STACK_RELEASE_DOWNLOADED,
                ConditionSeverity::Error,
                "IssueWithReleaseAssets",
                format!("Cluster {ns}/{cluster_name} uses class {class:?}, which is not a cluster stack release: {e}"),
            ));
            return p.wait(ctx.config.resync).await;
        }
    };
    let assets = match ctx.config.releases.release(&ns, &release).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            p.report(false_condition(
                types::CLUSTER_STACK_RELEASE_DOWNLOADED,
                ConditionSeverity::Info,
                "ReleaseAssetsNotDownloadedYet",
                format!(
                    "release {} not downloaded yet (by its ClusterStackRelease)",
                    release.tag()
                ),
            ));
            return p.wait(p.wait_interval()).await;
        }
        Err(e) => {
            p.report(false_condition(
                types::CLUSTER_STACK_RELEASE_DOWNLOADED,
                ConditionSeverity::Error,
                "IssueWithReleaseAssets",
                e,
            ));
            return p.wait(p.wait_interval()).await;
        }
    };
    p.set(true_condition(types::CLUSTER_STACK_RELEASE_DOWNLOADED));

    let run = Run {
        ns: &ns,
        class: &class,
        cluster: &cluster,
        assets: &assets,
        workload: &workload,
        addon,
    };
    match &assets.addon_layout {
        AddonLayout::Legacy { values } => legacy(&mut p, &run, values.as_deref()).await,
        AddonLayout::MultiStage { config, .. } => multi_stage(&mut p, &run, config).await,
    }
}

/// What one reconcile works on.
struct Run<'a> {
    ns: &'a str,
    class: &'a str,
    cluster: &'a Value,
    assets: &'a ReleaseAssets,
    workload: &'a Workload,
    addon: &'a ClusterAddon,
}

impl Run<'_> {
    fn addon_version(&self) -> String {
        self.assets.metadata.cluster_addon.dash()
    }

    /// Hook run for the current state: creating or upgrading.
    fn annotation(&self, spec: &ClusterAddonSpec) -> &'static str {
        if spec.cluster_stack.is_empty() {
            "created"
        } else {
            "upgraded"
        }
    }
}

/// Legacy flow: one chart with `cluster-addon-values.yaml`, applied and pruned against
/// `status.resources`.
async fn legacy(p: &mut Progress<'_>, run: &Run<'_>, values_file: Option<&Path>) -> Result<Action, Error> {
    let up_to_date = p.spec.cluster_stack == run.class
        && p.spec.version == run.addon_version()
        && is_true(&p.status.conditions, types::HELM_CHART_APPLIED)
        && crate::apply::all_synced(&p.status.resources);
    if up_to_date {
        p.status.ready = true;
        p.spec.hook.clear();
        p.save().await?;
        return Ok(Action::requeue(p.ctx.config.resync));
    }
    if p.spec.cluster_stack != run.class {
        p.status.ready = false;
    }
    let Some(values_file) = values_file else {
        p.report(false_condition(
            HELM_CHART_TEMPLATED,
            ConditionSeverity::Error,
            "TemplateNewClusterStackFailed",
            format!(
                "release {} has neither {} nor clusteraddon.yaml; a legacy addon chart needs its values file",
                run.assets.name.tag(),
                CLUSTER_ADDON_VALUES_FILE
            ),
        ));
        return p.wait(p.ctx.config.resync).await;
    };
    let chart_dir = run
        .assets
        .cluster_addon_charts
        .first()
        .map(|c| c.dir.clone())
        .unwrap_or_default();
    let values = match build_values(p.ctx, run, values_file, CLUSTER_ADDON_VALUES_FILE, &chart_dir).await {
        Ok(v) => v,
        Err(e) => return templating_failed(p, e.to_string()).await,
    };
    let request = RenderRequest::cluster_addon(run.assets, &values);
    let rendered = match render(p.ctx, &request).await {
        Ok(r) => r,
        Err(e) => return templating_failed(p, e).await,
    };
    p.unset(HELM_CHART_TEMPLATED);
    let outcome = match run
        .workload
        .applier
        .sync(&rendered, ADDON_NAMESPACE, &p.status.resources, &Owner::Workload)
        .await
    {
        Ok(o) => o,
        Err(e) => {
            p.report(false_condition(
                types::HELM_CHART_APPLIED,
                ConditionSeverity::Error,
                "FailedToApplyObjects",
                format!("failed to apply: {e}"),
            ));
            return p.wait(p.ctx.config.retry).await;
        }
    };
    p.status.resources = outcome.resources.clone();
    if let Some(first) = outcome.first_error() {
        p.report(false_condition(
            types::HELM_CHART_APPLIED,
            ConditionSeverity::Warning,
            "FailedToApplyObjects",
            format!(
                "{} of the addon objects failed, first: {first}",
                outcome.failures()
            ),
        ));
        return p.wait(p.ctx.config.retry).await;
    }
    p.set(true_condition(types::HELM_CHART_APPLIED));
    let annotation = run.annotation(&p.spec);
    p.annotate(run.addon, annotation);
    p.spec.cluster_stack = run.class.to_owned();
    p.spec.version = run.addon_version();
    p.spec.hook.clear();
    p.status.ready = true;
    tracing::info!(clusteraddon = %object_name(run.addon), class = run.class, "addons applied");
    p.applied(&run.assets.name.tag());
    p.save().await?;
    Ok(Action::requeue(p.ctx.config.resync))
}

async fn templating_failed(p: &mut Progress<'_>, message: String) -> Result<Action, Error> {
    p.report(false_condition(
        HELM_CHART_TEMPLATED,
        ConditionSeverity::Error,
        "TemplateNewClusterStackFailed",
        message,
    ));
    // Nothing changes until the release or the Cluster does (both trigger a reconcile).
    p.wait(p.ctx.config.resync).await
}

/// Templates a values file (read from `path`) and passes the result through the provider plugin.
async fn build_values(
    ctx: &Context,
    run: &Run<'_>,
    path: &Path,
    file: &str,
    chart: &str,
) -> Result<Value, ValuesError> {
    let tag = run.assets.name.tag();
    let text = std::fs::read_to_string(path).map_err(|e| ValuesError::Read {
        file: file.to_owned(),
        release: tag.clone(),
        reason: e.to_string(),
    })?;
    let mut input = TemplateInput {
        cluster: run.cluster.clone(),
        ..Default::default()
    };
    for (field, what) in [
        ("controlPlaneRef", "ControlPlane"),
        ("infrastructureRef", "InfraCluster"),
    ] {
        // Only fetched when the template uses it: the referenced object may not exist yet otherwise.
        if !text.contains(&format!(".{what}")) {
            continue;
        }
        let object = cluster::referenced_object(&ctx.client, run.cluster, field)
            .await
            .map_err(|reason| ValuesError::Lookup {
                what: if what == "ControlPlane" {
                    "ControlPlane"
                } else {
                    "InfraCluster"
                },
                object: reason.split(':').next().unwrap_or_default().to_owned(),
                file: file.to_owned(),
                reason,
            })?;
        match what {
            "ControlPlane" => input.control_plane = object,
            _ => input.infra_cluster = object,
        }
    }
    let scratch =
        scratch_dir(&ctx.config.work_dir, VALUES_SCRATCH).map_err(|reason| ValuesError::Template {
            file: file.to_owned(),
            release: tag.clone(),
            reason,
        })?;
    let renderer = ctx.config.renderer.clone();
    let (file_owned, tag_owned) = (file.to_owned(), tag.clone());
    let scratch_path = scratch.path().to_owned();
    let values = tokio::task::spawn_blocking(move || {
        render_values(
            renderer.as_ref(),
            &scratch_path,
            &text,
            &input,
            &file_owned,
            &tag_owned,
        )
    })
    .await
    .map_err(|e| ValuesError::Template {
        file: file.to_owned(),
        release: tag.clone(),
        reason: format!("the renderer failed: {e}"),
    })??;
    drop(scratch);
    let Some(hook) = &ctx.config.values_hook else {
        return Ok(values);
    };
    let provider = run.assets.name.provider.clone();
    let changed = hook
        .addon_values(AddonValuesRequest {
            namespace: run.ns,
            release: &run.assets.name,
            chart,
            cluster: run.cluster,
            values,
        })
        .await
        .map_err(|reason| ValuesError::Plugin {
            provider: provider.clone(),
            chart: chart.to_owned(),
            reason,
        })?;
    if !changed.is_object() {
        return Err(ValuesError::Plugin {
            provider,
            chart: chart.to_owned(),
            reason: format!("returned {changed} instead of a map of values"),
        });
    }
    Ok(changed)
}

/// Prefix of the scratch directory a values template renders in.
const VALUES_SCRATCH: &str = "values";
/// Prefix of an addon archive being unpacked (renamed into place when complete).
const UNPACKING: &str = ".unpack-";

/// Removes what a process killed mid-way left in the work directory: scratch directories and
/// half-unpacked addon archives. Completely unpacked archives stay.
pub fn remove_leftovers(work_dir: &Path) {
    let entries = |dir: &Path| std::fs::read_dir(dir).into_iter().flatten().flatten();
    for entry in entries(work_dir) {
        if entry.file_name().to_string_lossy().starts_with(VALUES_SCRATCH) {
            // Best effort: a leftover is never read.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    for source in entries(&work_dir.join("addons")) {
        for entry in entries(&source.path()) {
            if entry.file_name().to_string_lossy().starts_with(UNPACKING) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

fn scratch_dir(work_dir: &Path, prefix: &str) -> Result<tempfile::TempDir, String> {
    std::fs::create_dir_all(work_dir).map_err(|e| format!("cannot create {}: {e}", work_dir.display()))?;
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in(work_dir)
        .map_err(|e| format!("cannot create a scratch directory in {}: {e}", work_dir.display()))
}

/// Renders off the async threads (Helm is synchronous and may take a while).
async fn render(ctx: &Context, request: &RenderRequest<'_>) -> Result<Vec<Value>, String> {
    let renderer = ctx.config.renderer.clone();
    let chart = request.chart.to_owned();
    let values = request.values.clone();
    let (release_name, namespace) = (request.release_name.to_owned(), request.namespace.to_owned());
    let kube_version = request.kube_version.map(str::to_owned);
    let include_crds = request.include_crds;
    tokio::task::spawn_blocking(move || {
        renderer
            .render(&RenderRequest {
                chart: &chart,
                values: &values,
                release_name: &release_name,
                namespace: &namespace,
                kube_version: kube_version.as_deref(),
                include_crds,
            })
            .map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| format!("the renderer failed: {e}"))?
}

/// The unpacked addon archive of a release (one directory per stage), unpacked once per release
/// directory into the work directory.
fn unpacked_addon(work_dir: &Path, assets: &ReleaseAssets) -> Result<BTreeMap<String, PathBuf>, String> {
    let digest = hex::encode(sha2::Sha256::digest(assets.dir.to_string_lossy().as_bytes()));
    let dest = work_dir
        .join("addons")
        .join(&digest[..16])
        .join(assets.name.tag());
    if dest.is_dir() {
        return Ok(assets
            .cluster_addon_charts
            .iter()
            .map(|c| (c.dir.clone(), dest.join(&c.dir)))
            .collect());
    }
    let parent = dest.parent().unwrap_or(work_dir);
    std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let tmp = tempfile::Builder::new()
        .prefix(UNPACKING)
        .tempdir_in(parent)
        .map_err(|e| format!("cannot create a directory in {}: {e}", parent.display()))?;
    assets
        .unpack_cluster_addon(tmp.path())
        .map_err(|e| e.to_string())?;
    let tmp = tmp.keep();
    if std::fs::rename(&tmp, &dest).is_err() {
        // Someone else unpacked it first; theirs is as good.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(assets
        .cluster_addon_charts
        .iter()
        .map(|c| (c.dir.clone(), dest.join(&c.dir)))
        .collect())
}

/// Multi-stage flow: the stages of the hook, each through its phases, persisted after every step.
async fn multi_stage(
    p: &mut Progress<'_>,
    run: &Run<'_>,
    config: &crate::release::ClusterAddonConfig,
) -> Result<Action, Error> {
    p.set(true_condition(CONFIG_VALIDATED));
    let running = !p.status.applying_cluster_stack.is_empty();
    if !running {
        if p.spec.cluster_stack == run.class {
            // Applied already.
            p.status.ready = true;
            p.spec.hook.clear();
            p.save().await?;
            return Ok(Action::requeue(p.ctx.config.resync));
        }
        if !p.spec.cluster_stack.is_empty() && p.spec.version == run.addon_version() {
            // A new class with the same addons (upstream §2.4.3 step 5): nothing to apply.
            p.spec.cluster_stack = run.class.to_owned();
            p.spec.hook.clear();
            p.status.ready = true;
            p.set(true_condition(types::HELM_CHART_APPLIED));
            p.save().await?;
            return Ok(Action::requeue(p.ctx.config.resync));
        }
    }
    let wanted_hook = if p.spec.cluster_stack.is_empty() {
        HOOK_AFTER_CONTROL_PLANE_INITIALIZED
    } else {
        HOOK_BEFORE_CLUSTER_UPGRADE
    };
    let (hook, stage_list) = stages::stages_for(config, wanted_hook);
    let current =
        p.status.applying_cluster_stack == run.class && stages::matches(&p.status.stages, stage_list);
    if !current {
        // Start (or restart, when the class changed under a running hook). Objects a partial run
        // applied stay recorded so the end of the new run prunes them if no longer wanted.
        let partial: Vec<Resource> = p
            .status
            .stages
            .iter()
            .filter(|s| s.action == "apply")
            .flat_map(|s| s.resources.clone())
            .collect();
        for r in partial {
            if !p.status.resources.iter().any(|x| same_object(x, &r)) {
                p.status.resources.push(r);
            }
        }
        p.status.stages = stages::initial_stages(stage_list);
        p.status.applying_cluster_stack = run.class.to_owned();
        p.status.ready = false;
        p.spec.hook = hook.to_owned();
        p.unset(types::HELM_CHART_APPLIED);
        p.set(true_condition(HOOK_SERVER_READY));
        tracing::info!(clusteraddon = %object_name(run.addon), class = run.class, hook, stages = stage_list.len(), "starting addon stages");
        p.announce(
            "StagesStarted",
            &format!("{hook} {}", run.assets.name.tag()),
            format!(
                "{hook}: {} stages of release {} to run",
                stage_list.len(),
                run.assets.name.tag()
            ),
        );
        p.save().await?;
    }
    let charts = match unpacked_addon(&p.ctx.config.work_dir, run.assets) {
        Ok(c) => c,
        Err(e) => {
            p.report(false_condition(
                CONFIG_VALIDATED,
                ConditionSeverity::Error,
                "ParsingClusterAddonConfigFailed",
                format!(
                    "cannot unpack the addon archive of release {}: {e}",
                    run.assets.name.tag()
                ),
            ));
            return p.wait(p.ctx.config.retry).await;
        }
    };
    for (i, stage) in stage_list.iter().enumerate() {
        if let Some(action) = execute_stage(p, run, i, stage, &charts).await? {
            return Ok(action);
        }
    }
    finish(p, run).await
}

fn same_object(a: &Resource, b: &Resource) -> bool {
    crate::apply::ObjectKey::of_resource(a) == crate::apply::ObjectKey::of_resource(b)
}

/// Runs stage `i` as far as it can; `Some(action)` when the reconcile has to stop here.
async fn execute_stage(
    p: &mut Progress<'_>,
    run: &Run<'_>,
    i: usize,
    stage: &AddonStage,
    charts: &BTreeMap<String, PathBuf>,
) -> Result<Option<Action>, Error> {
    loop {
        let current = p.status.stages[i].phase.clone();
        match current.as_str() {
            phase::DONE => return Ok(None),
            phase::PENDING | phase::WAITING_FOR_PRE_CONDITION => {
                if let Some(cond) = &stage.wait_for_pre_condition {
                    if let Some(action) = gate(p, run, i, stage, cond, true).await? {
                        return Ok(Some(action));
                    }
                }
                p.status.stages[i].phase = phase::APPLYING_OR_DELETING.into();
                p.save().await?;
            }
            phase::APPLYING_OR_DELETING => {
                if let Some(action) = apply_or_delete(p, run, i, stage, charts).await? {
                    return Ok(Some(action));
                }
                p.status.stages[i].phase = phase::WAITING_FOR_POST_CONDITION.into();
                p.save().await?;
            }
            _ => {
                // waitingForPostCondition (and anything unknown, which restarts the gate).
                if let Some(cond) = &stage.wait_for_post_condition {
                    if let Some(action) = gate(p, run, i, stage, cond, false).await? {
                        return Ok(Some(action));
                    }
                }
                p.status.stages[i].phase = phase::DONE.into();
                tracing::info!(clusteraddon = %object_name(run.addon), stage = %stage.name, "stage done");
                let (reason, verb, action) = match stage.action {
                    crate::release::assets::StageAction::Delete => ("StageDeleted", "deleted", "Delete"),
                    _ => ("StageApplied", "applied", "Apply"),
                };
                let objects = p.status.stages[i].resources.len();
                p.announce(
                    reason,
                    &format!("{action} {} of {}", stage.name, run.assets.name.tag()),
                    format!("stage {}: {objects} objects {verb}", stage.name),
                );
                p.save().await?;
            }
        }
    }
}

/// Evaluates a pre or post condition; `Some(action)` while it holds the stage.
async fn gate(
    p: &mut Progress<'_>,
    run: &Run<'_>,
    i: usize,
    stage: &AddonStage,
    cond: &StageCondition,
    pre: bool,
) -> Result<Option<Action>, Error> {
    let (reason, which) = if pre {
        ("FailedToEvaluatePreCondition", "waitForPreCondition")
    } else {
        ("FailedToEvaluatePostCondition", "waitForPostCondition")
    };
    match cel_condition::check(&run.workload.client, cond).await {
        Outcome::Met => {
            p.unset(EVALUATED_CEL);
            Ok(None)
        }
        Outcome::Waiting(why) => {
            if pre {
                p.status.stages[i].phase = phase::WAITING_FOR_PRE_CONDITION.into();
            }
            p.report(false_condition(
                EVALUATED_CEL,
                ConditionSeverity::Info,
                reason,
                format!("stage {} waits for its {which}: {why}", stage.name),
            ));
            Ok(Some(p.wait(p.wait_interval()).await?))
        }
        Outcome::Invalid(why) => {
            p.report(false_condition(
                EVALUATED_CEL,
                ConditionSeverity::Error,
                reason,
                format!(
                    "stage {} has an invalid {which} in clusteraddon.yaml of release {}: {why}",
                    stage.name,
                    run.assets.name.tag()
                ),
            ));
            Ok(Some(p.wait(p.ctx.config.resync).await?))
        }
    }
}

/// Renders the stage's chart and applies or deletes its objects.
async fn apply_or_delete(
    p: &mut Progress<'_>,
    run: &Run<'_>,
    i: usize,
    stage: &AddonStage,
    charts: &BTreeMap<String, PathBuf>,
) -> Result<Option<Action>, Error> {
    let Some(chart) = charts.get(&stage.name) else {
        // ReleaseAssets::load checks every stage has its directory; a hand-edited cache may not.
        p.report(false_condition(
            "HelmChartFound",
            ConditionSeverity::Error,
            "HelmChartMissing",
            format!(
                "helm chart name doesn't exist in the cluster addon helm chart: {:?} (release {})",
                stage.name,
                run.assets.name.tag()
            ),
        ));
        return Ok(Some(p.wait(p.ctx.config.resync).await?));
    };
    let overwrite = chart.join("overwrite.yaml");
    let values = if overwrite.is_file() {
        let file = format!("{}/overwrite.yaml", stage.name);
        match build_values(p.ctx, run, &overwrite, &file, &stage.name).await {
            Ok(v) => v,
            Err(e) => return templating_failed(p, e.to_string()).await.map(Some),
        }
    } else {
        json!({})
    };
    let request = RenderRequest {
        chart,
        values: &values,
        release_name: ADDON_RELEASE_NAME,
        namespace: ADDON_NAMESPACE,
        kube_version: Some(&run.assets.metadata.kubernetes),
        include_crds: true,
    };
    let rendered = match render(p.ctx, &request).await {
        Ok(r) => r,
        Err(e) => {
            return templating_failed(p, format!("stage {}: {e}", stage.name))
                .await
                .map(Some)
        }
    };
    p.unset(HELM_CHART_TEMPLATED);
    let applier = &run.workload.applier;
    if stage.action == crate::release::assets::StageAction::Delete {
        let desired = match applier
            .desired(&rendered, ADDON_NAMESPACE, &Owner::Workload)
            .await
        {
            Ok(d) => d,
            Err(e) => {
                p.report(false_condition(
                    HELM_CHART_DELETED,
                    ConditionSeverity::Warning,
                    "FailedToDeleteObjects",
                    format!("stage {}: {e}", stage.name),
                ));
                return Ok(Some(p.wait(p.ctx.config.retry).await?));
            }
        };
        let resources: Vec<Resource> = desired.iter().map(|d| d.resource(&Ok(()))).collect();
        let deleted = applier.delete(&resources, &Owner::Workload).await;
        p.status.stages[i].resources = desired
            .iter()
            .map(|d| d.resource(deleted.get(&d.key).unwrap_or(&Ok(()))))
            .collect();
        if let Some((key, Err(e))) = deleted.iter().find(|(_, r)| r.is_err()) {
            p.report(false_condition(
                HELM_CHART_DELETED,
                ConditionSeverity::Warning,
                "FailedToDeleteObjects",
                format!("stage {}: cannot delete {key}: {e}", stage.name),
            ));
            return Ok(Some(p.wait(p.ctx.config.retry).await?));
        }
        p.unset(HELM_CHART_DELETED);
        return Ok(None);
    }
    let previous = p.status.stages[i].resources.clone();
    let outcome = match applier
        .sync(&rendered, ADDON_NAMESPACE, &previous, &Owner::Workload)
        .await
    {
        Ok(o) => o,
        Err(e) => {
            p.report(false_condition(
                types::HELM_CHART_APPLIED,
                ConditionSeverity::Error,
                "FailedToApplyObjects",
                format!("stage {}: failed to apply: {e}", stage.name),
            ));
            return Ok(Some(p.wait(p.ctx.config.retry).await?));
        }
    };
    p.status.stages[i].resources = outcome.resources.clone();
    if let Some(first) = outcome.first_error() {
        p.report(false_condition(
            types::HELM_CHART_APPLIED,
            ConditionSeverity::Warning,
            "FailedToApplyObjects",
            format!(
                "stage {}: {} objects failed, first: {first}",
                stage.name,
                outcome.failures()
            ),
        ));
        return Ok(Some(p.wait(p.ctx.config.retry).await?));
    }
    if crate::api::condition::is_false(&p.status.conditions, types::HELM_CHART_APPLIED) {
        p.unset(types::HELM_CHART_APPLIED);
    }
    Ok(None)
}

/// All stages done: prune what the run no longer applies, then record the new state.
async fn finish(p: &mut Progress<'_>, run: &Run<'_>) -> Result<Action, Error> {
    let (applied, stale) = stages::outcome(&p.status.resources, &p.status.stages);
    if !stale.is_empty() {
        let deleted = run.workload.applier.delete(&stale, &Owner::Workload).await;
        let failed: Vec<Resource> = stale
            .iter()
            .filter_map(|r| match deleted.get(&crate::apply::ObjectKey::of_resource(r)) {
                Some(Err(e)) => Some(Resource {
                    status: Some(ResourceStatus::NotSynced),
                    error: format!("cannot delete: {e}"),
                    ..r.clone()
                }),
                _ => None,
            })
            .collect();
        if let Some(first) = failed.first() {
            p.report(false_condition(
                types::HELM_CHART_APPLIED,
                ConditionSeverity::Warning,
                "FailedToApplyObjects",
                format!(
                    "{} stale objects could not be deleted, first: {} {}/{}: {}",
                    failed.len(),
                    first.kind,
                    first.namespace,
                    first.name,
                    first.error
                ),
            ));
            // Keep only the stale objects that are still there, so the next attempt retries them.
            p.status.resources = failed;
            return p.wait(p.ctx.config.retry).await;
        }
        tracing::info!(clusteraddon = %object_name(run.addon), pruned = stale.len(), "stale addon objects deleted");
    }
    let annotation = run.annotation(&p.spec);
    p.annotate(run.addon, annotation);
    p.status.resources = applied;
    p.status.stages.clear();
    p.status.applying_cluster_stack.clear();
    p.status.ready = true;
    p.spec.cluster_stack = run.class.to_owned();
    p.spec.version = run.addon_version();
    p.spec.hook.clear();
    p.set(true_condition(types::HELM_CHART_APPLIED));
    tracing::info!(clusteraddon = %object_name(run.addon), class = run.class, "addon stages done");
    p.applied(&run.assets.name.tag());
    p.save().await?;
    Ok(Action::requeue(p.ctx.config.resync))
}

#[cfg(test)]
mod tests {
    #[test]
    fn leftovers_of_a_killed_process_are_removed_and_unpacked_archives_stay() {
        let work = tempfile::tempdir().expect("tmp");
        let scratch = work.path().join("valuesAbc123");
        let half = work.path().join("addons/0123456789abcdef/.unpack-xyz");
        let done = work
            .path()
            .join("addons/0123456789abcdef/docker-ferrol-1-32-v2/cni");
        for dir in [&scratch, &half, &done] {
            std::fs::create_dir_all(dir).expect("mkdir");
            std::fs::write(dir.join("Chart.yaml"), "name: x\n").expect("write");
        }
        super::remove_leftovers(work.path());
        assert!(!scratch.exists() && !half.exists());
        assert!(done.join("Chart.yaml").is_file());
    }
}
