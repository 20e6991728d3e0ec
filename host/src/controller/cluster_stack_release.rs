//! ClusterStackRelease controller (upstream `clusterstackrelease_controller.go`, cso-behaviour.md §2.2),
//! with the provider operator's work done in-process by the ProviderPlugin:
//!
//! fetch assets -> render the cluster-class chart -> plugin `reconcile-node-images` (the images of
//! `node-images.yaml` and the chart's ORC `Image` objects) until every image is ready (requeue on its
//! hint) -> plugin `patch-cluster-class` -> server-side apply (prune what the new render no longer
//! has) -> Ready. Every step has its own condition with a reason a user can act on.
//!
//! Fixed upstream quirks: objects go to their own namespaces (§9), deleting a release removes what it
//! applied (upstream leaves it) after `cleanup-node-images`, `status.ready` is cleared again when a later
//! step fails, and a release still used by a Cluster cannot be deleted (the finalizer waits, with a
//! condition and an Event that name the Clusters' class).

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::ResourceExt;
use serde_json::{json, Value};

use super::cluster_stack::cluster_classes_in_use;
use super::plugins::{call, LoadedPlugin};
use super::{fair, now, paused, Context};
use crate::api::condition::{self, false_condition, true_condition, types, READY};
use crate::api::{
    ClusterStackRelease, ClusterStackReleaseStatus, ConditionSeverity, CLUSTER_STACK_RELEASE_FINALIZER,
};
use crate::apply::ssa::{Applier, SsaError};
use crate::apply::{resources_before_apply, ApplyError, Owner};
use crate::plugin::types::{Error as GuestErrorKind, ImageState, NodeImage, ReleaseInfo};
use crate::plugin::PluginError;
use crate::release::{
    orc_node_images, parse_node_images, Download, ReleaseAssets, ReleaseError, ReleaseName,
};
use crate::render::{RenderError, RenderRequest};

pub(crate) const CONTROLLER: &str = "clusterstackrelease";

/// The key of a release in the context's backoff, downloads and stop flags.
pub(crate) fn key(namespace: &str, name: &str) -> String {
    format!("cskr/{namespace}/{name}")
}

/// What a step decided.
enum Step<T> {
    /// Go on with this.
    Next(T),
    /// Stop here and come back after this long (the condition says why).
    Wait(Duration),
}

struct Release<'a> {
    ctx: &'a Context,
    csr: &'a ClusterStackRelease,
    ns: String,
    key: String,
    status: ClusterStackReleaseStatus,
    now: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}

impl Release<'_> {
    fn ok(&mut self, type_: &str) {
        condition::set(&mut self.status.conditions, true_condition(type_), &self.now);
    }

    fn not_ok(&mut self, type_: &str, severity: ConditionSeverity, reason: &str, message: impl Into<String>) {
        condition::set(
            &mut self.status.conditions,
            false_condition(type_, severity, reason, message),
            &self.now,
        );
    }

    /// A failed step: condition False, an Event when the message changed, retry with backoff.
    async fn failed<T>(&mut self, type_: &str, reason: &str, message: String) -> Step<T> {
        let changed = condition::find(&self.status.conditions, type_).and_then(|c| c.message.as_deref())
            != Some(message.as_str());
        if changed {
            self.ctx
                .event(self.csr, EventType::Warning, reason, type_, message.clone())
                .await;
        }
        self.not_ok(type_, ConditionSeverity::Error, reason, message);
        self.status.ready = false;
        Step::Wait(self.ctx.backoff(&self.key))
    }

    async fn write(&mut self) -> Result<(), kube::Error> {
        condition::set_summary(&mut self.status.conditions, &self.now);
        let Some(patch) = super::status::merge_patch(self.csr.status.as_ref(), &self.status) else {
            return Ok(());
        };
        let api: Api<ClusterStackRelease> = Api::namespaced(self.ctx.client.clone(), &self.ns);
        api.patch_status(&self.csr.name_any(), &PatchParams::default(), &patch)
            .await
            .map(drop)
    }
}

impl Release<'_> {
    /// [`Release::write`]; when the API server refuses it (e.g. RBAC lacks `patch` on
    /// `clusterstackreleases/status`), the release cannot say so itself: a Warning Event on it and its
    /// ClusterStack's conditions name the refused call until a write succeeds.
    async fn write_or_report(&mut self) -> Result<(), kube::Error> {
        let name = self.csr.name_any();
        match self.write().await {
            Ok(()) => {
                self.ctx.release_status_unwritten(&self.ns, &name, None);
                Ok(())
            }
            Err(e) => {
                let why = match &e {
                    kube::Error::Api(s) if s.code == 403 => format!(
                        "cannot write the status of ClusterStackRelease {}/{name}: {}; grant stackhost's \
                         ServiceAccount patch on clusterstackreleases/status (charts/stackhost ClusterRole)",
                        self.ns, s.message
                    ),
                    other => format!(
                        "cannot write the status of ClusterStackRelease {}/{name}: {other}",
                        self.ns
                    ),
                };
                if self
                    .ctx
                    .release_status_unwritten(&self.ns, &name, Some(why.clone()))
                {
                    self.ctx
                        .event(
                            self.csr,
                            EventType::Warning,
                            "StatusNotWritten",
                            "WriteStatus",
                            why,
                        )
                        .await;
                }
                Err(e)
            }
        }
    }
}

fn release_info(name: &ReleaseName, assets: &ReleaseAssets) -> ReleaseInfo {
    ReleaseInfo {
        tag: name.tag(),
        provider: name.provider.clone(),
        stack_name: name.name.clone(),
        kubernetes_version: assets.metadata.kubernetes.clone(),
        version: name.version.dot(),
    }
}

fn guest_message(e: &GuestErrorKind) -> (String, Option<u32>) {
    match e {
        GuestErrorKind::InvalidInput(m) => (format!("invalid input: {m}"), None),
        GuestErrorKind::NotReady(r) => (format!("not ready: {}", r.message), Some(r.retry_after_seconds)),
        GuestErrorKind::Denied(m) => (format!("denied: {m}"), None),
        GuestErrorKind::Failed(m) => (format!("failed: {m}"), None),
    }
}

/// The plugin serving the release, or why there is none.
fn plugin_for(ctx: &Context, ns: &str, name: &str) -> Result<Arc<LoadedPlugin>, String> {
    ctx.plugins
        .get(ns, name)
        .ok_or_else(|| match ctx.plugins.last_error(ns, name) {
            Some(e) => format!("ProviderPlugin {ns}/{name} is not loaded: {e}"),
            None => format!(
            "ProviderPlugin {ns}/{name} is not loaded yet (create it, or set noProvider on the ClusterStack)"
        ),
        })
}

/// Reconciles one ClusterStackRelease.
pub async fn reconcile(csr: Arc<ClusterStackRelease>, ctx: Arc<Context>) -> Result<Action, kube::Error> {
    let Some(_slot) = ctx.slot(CONTROLLER, csr.as_ref()) else {
        return Ok(Action::requeue(fair::DEFERRED));
    };
    let why = paused::own_annotation(csr.as_ref());
    if let Some(action) = paused::gate(&ctx.client, csr.as_ref(), why).await? {
        return Ok(action);
    }
    let started = Instant::now();
    let result = if csr.metadata.deletion_timestamp.is_some() {
        finalize(&csr, &ctx).await.map(|a| (a, "ok"))
    } else {
        reconcile_release(&csr, &ctx).await
    };
    let label = match &result {
        Ok((_, label)) => *label,
        Err(_) => "error",
    };
    ctx.metrics.reconciled(CONTROLLER, label, started.elapsed());
    result.map(|(action, _)| action)
}

async fn reconcile_release(
    csr: &ClusterStackRelease,
    ctx: &Context,
) -> Result<(Action, &'static str), kube::Error> {
    let ns = csr.namespace().unwrap_or_default();
    let api: Api<ClusterStackRelease> = Api::namespaced(ctx.client.clone(), &ns);
    if !csr
        .finalizers()
        .iter()
        .any(|f| f == CLUSTER_STACK_RELEASE_FINALIZER)
    {
        let mut finalizers = csr.finalizers().to_vec();
        finalizers.push(CLUSTER_STACK_RELEASE_FINALIZER.to_string());
        let patch =
            json!({"metadata": {"finalizers": finalizers, "resourceVersion": csr.resource_version()}});
        api.patch(&csr.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        // The patch triggers the next reconcile.
        return Ok((Action::await_change(), "ok"));
    }
    let mut r = Release {
        ctx,
        csr,
        key: key(&ns, &csr.name_any()),
        ns,
        status: csr.status.clone().unwrap_or_default(),
        now: now(),
    };
    let step = steps(&mut r).await;
    r.write_or_report().await?;
    Ok(match step {
        Step::Next(()) => {
            ctx.succeeded(&r.key);
            // Re-apply now and then: objects changed or deleted by hand are put back (upstream never did).
            (Action::requeue(ctx.args.resync_interval), "ok")
        }
        Step::Wait(after) => (Action::requeue(after), "requeue"),
    })
}

async fn steps(r: &mut Release<'_>) -> Step<()> {
    let ctx = r.ctx;
    let tag = r.csr.name_any();
    let name = match ReleaseName::parse_tag(&tag) {
        Ok(n) => n,
        Err(e) => {
            r.not_ok(
                types::CLUSTER_STACK_RELEASE_DOWNLOADED,
                ConditionSeverity::Error,
                "InvalidName",
                format!("metadata.name must be a release tag like docker-ferrol-1-32-v1: {e}"),
            );
            return Step::Wait(Duration::from_secs(3600));
        }
    };

    // 1. Assets.
    let assets = match fetch(r, &name).await {
        Step::Next(a) => a,
        Step::Wait(d) => return Step::Wait(d),
    };
    r.status.kubernetes_version = Some(assets.metadata.kubernetes.clone());
    r.ok(types::CLUSTER_STACK_RELEASE_DOWNLOADED);

    // 2. Provider step: node images.
    if ctx.args.provider_step == super::context::ProviderStep::Object && r.csr.spec.provider_plugin.is_some()
    {
        return match provider_object(r, &tag).await {
            Ok(true) => finish_without_plugin(r, &name, &assets).await,
            Ok(false) => {
                r.not_ok(
                    types::PROVIDER_CLUSTER_STACK_RELEASE_READY,
                    ConditionSeverity::Info,
                    "ProviderObjectNotReady",
                    "waiting for the provider operator",
                );
                Step::Wait(Duration::from_secs(300))
            }
            Err(e) => {
                r.failed(
                    types::PROVIDER_CLUSTER_STACK_RELEASE_READY,
                    "ProviderObjectFailed",
                    e,
                )
                .await
            }
        };
    }
    let plugin = match r.csr.spec.provider_plugin.clone() {
        None => None,
        Some(pp) => match plugin_for(ctx, &r.ns, &pp) {
            Ok(p) => Some(p),
            Err(message) => {
                r.not_ok(
                    types::PROVIDER_CLUSTER_STACK_RELEASE_READY,
                    ConditionSeverity::Warning,
                    "PluginNotReady",
                    message,
                );
                r.status.ready = false;
                return Step::Wait(ctx.backoff(&r.key).min(Duration::from_secs(30)));
            }
        },
    };
    // 3. Render (before the node images: ORC `Image` objects in the chart are node images too).
    let objects = match render(r, &name, &assets).await {
        Step::Next(o) => o,
        Step::Wait(d) => return Step::Wait(d),
    };

    let info = release_info(&name, &assets);
    if let Some(plugin) = &plugin {
        let images = match release_node_images(&info.tag, &assets, &objects) {
            Ok(images) => images,
            Err(e) => {
                return r
                    .failed(
                        types::PROVIDER_CLUSTER_STACK_RELEASE_READY,
                        "NodeImagesInvalid",
                        e,
                    )
                    .await
            }
        };
        match node_images(r, plugin, images, &info).await {
            Step::Next(()) => {}
            Step::Wait(d) => return Step::Wait(d),
        }
        r.status.plugin_digest = Some(plugin.plugin.digest().to_string());
    } else {
        // noProvider: no plugin serves this release (any more).
        r.status.plugin_digest = None;
    }
    r.ok(types::PROVIDER_CLUSTER_STACK_RELEASE_READY);

    // 4. Patch.
    let objects = match &plugin {
        Some(plugin) => match patch(r, plugin, &info, objects).await {
            Step::Next(o) => o,
            Step::Wait(d) => return Step::Wait(d),
        },
        None => objects,
    };
    if plugin.is_some() {
        r.ok(types::CLUSTER_CLASS_PATCHED);
    } else {
        condition::remove(&mut r.status.conditions, types::CLUSTER_CLASS_PATCHED);
    }

    // 5. Apply and prune.
    apply(r, &name, &objects).await
}

async fn apply(r: &mut Release<'_>, name: &ReleaseName, objects: &[Value]) -> Step<()> {
    let ctx = r.ctx;
    let applier = Applier::new(ctx.client.clone());
    let owner = release_owner(ctx, r.csr);
    let desired = match applier.desired(objects, &r.ns, &owner).await {
        Ok(d) => d,
        Err(e @ SsaError::Render(ApplyError::Refused { .. })) => {
            return r
                .failed(types::HELM_CHART_APPLIED, "ObjectsRefused", format!("{e}"))
                .await
        }
        Err(e) => {
            return r
                .failed(types::HELM_CHART_APPLIED, "ObjectsInvalid", format!("{e}"))
                .await
        }
    };
    // Every object is listed before it is created: a controller stopped in the middle of the apply
    // leaves nothing that prune and deletion cannot find.
    let listed = resources_before_apply(&desired, &r.status.resources);
    if listed != r.status.resources {
        r.status.resources = listed;
        if r.write_or_report().await.is_err() {
            return Step::Wait(ctx.backoff(&r.key));
        }
    }
    let outcome = applier.sync_desired(desired, &r.status.resources, &owner).await;
    r.status.resources = outcome.resources.clone();
    if let Some(first) = outcome.first_error() {
        let message = format!(
            "{} of {} objects not synced; first: {first}",
            outcome.failures(),
            outcome.desired.len()
        );
        return r
            .failed(types::HELM_CHART_APPLIED, "ObjectsNotSynced", message)
            .await;
    }
    r.ok(types::HELM_CHART_APPLIED);
    if !r.status.ready {
        ctx.event(
            r.csr,
            EventType::Normal,
            "Ready",
            "Apply",
            format!(
                "applied {} objects of {}",
                outcome.desired.len(),
                name.class_name()
            ),
        )
        .await;
    }
    r.status.ready = true;
    condition::set(&mut r.status.conditions, true_condition(READY), &r.now);
    Step::Next(())
}

/// The owner mark and confinement of what `csr` applies in the management cluster.
fn release_owner(ctx: &Context, csr: &ClusterStackRelease) -> Owner {
    Owner::release(
        &csr.namespace().unwrap_or_default(),
        &csr.name_any(),
        ctx.args.confinement(),
    )
}

async fn provider_object(r: &mut Release<'_>, tag: &str) -> Result<bool, String> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::Resource as _;
    let api: Api<ConfigMap> = Api::namespaced(r.ctx.client.clone(), &r.ns);
    let name = format!("{tag}-provider");
    if let Some(cm) = api.get_opt(&name).await.map_err(|e| e.to_string())? {
        return Ok(cm.data.unwrap_or_default().get("ready").map(String::as_str) == Some("true"));
    }
    let body = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": r.ns,
                     "labels": {"stackhost.clusterstack.x-k8s.io/provider-object": "true"},
                     "ownerReferences": [r.csr.controller_owner_ref(&())]},
        "data": {"ready": "false"}
    });
    let cm: ConfigMap = serde_json::from_value(body).map_err(|e| e.to_string())?;
    match api.create(&Default::default(), &cm).await {
        Ok(_) => Ok(false),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

async fn finish_without_plugin(r: &mut Release<'_>, name: &ReleaseName, assets: &ReleaseAssets) -> Step<()> {
    r.ok(types::PROVIDER_CLUSTER_STACK_RELEASE_READY);
    let objects = match render(r, name, assets).await {
        Step::Next(o) => o,
        Step::Wait(d) => return Step::Wait(d),
    };
    apply(r, name, &objects).await
}

async fn fetch(r: &mut Release<'_>, name: &ReleaseName) -> Step<ReleaseAssets> {
    const T: &str = types::CLUSTER_STACK_RELEASE_DOWNLOADED;
    let ctx = r.ctx;
    let source = match ctx.release_source(&r.ns, r.csr.spec.source.as_ref()).await {
        Ok(s) => s,
        Err(e) => return r.failed(T, "SourceInvalid", e).await,
    };
    // The download runs in the background: a slow source never holds this worker.
    let (since, reason, message) = match ctx.downloads.poll(&r.key, source.clone(), name) {
        Download::Done(done) => {
            let e = match *done {
                Ok(assets) => {
                    r.ok(types::ASSETS_CLIENT_API_AVAILABLE);
                    return Step::Next(assets);
                }
                Err(e) => e,
            };
            let reason = match &e {
                ReleaseError::NotFound { .. } => "ReleaseNotFound",
                ReleaseError::Source { .. } => "SourceUnavailable",
                ReleaseError::TimedOut { .. } => "DownloadTimedOut",
                ReleaseError::Integrity { .. } => "DigestMismatch",
                _ => "ReleaseAssetsInvalid",
            };
            if matches!(reason, "SourceUnavailable" | "DownloadTimedOut") {
                r.not_ok(
                    types::ASSETS_CLIENT_API_AVAILABLE,
                    ConditionSeverity::Warning,
                    reason,
                    e.to_string(),
                );
            }
            let step = r.failed(T, reason, e.to_string()).await;
            if let Step::Wait(wait) = &step {
                ctx.downloads.hold(&r.key, source.as_ref(), name, *wait);
            }
            return step;
        }
        // Failed a moment ago: the condition says why; the next try waits for its backoff.
        Download::Held(wait) => return Step::Wait(wait),
        Download::Queued {
            origin,
            running,
            since,
        } => (
            since,
            "DownloadQueued",
            format!(
                "waiting for a download slot: {running} downloads from {origin} are running \
                 (--release-downloads-per-source)"
            ),
        ),
        Download::Running { since } => (
            since,
            "Downloading",
            format!(
                "downloading {} from {} (at most {}s, --release-download-timeout)",
                name.tag(),
                source.describe(),
                ctx.downloads.deadline().as_secs_f64()
            ),
        ),
    };
    r.not_ok(T, ConditionSeverity::Info, reason, message);
    // Look again soon while it is young, less often as it ages.
    Step::Wait((since.elapsed() / 4).clamp(Duration::from_millis(500), Duration::from_secs(10)))
}

/// The node images of a release: its `node-images.yaml`, and the ORC `Image` objects its
/// cluster-class chart renders.
fn release_node_images(
    tag: &str,
    assets: &ReleaseAssets,
    objects: &[Value],
) -> Result<Vec<NodeImage>, String> {
    let mut images: Vec<NodeImage> = match &assets.node_images {
        None => Vec::new(),
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
            .and_then(|text| parse_node_images(tag, &text).map_err(|e| e.to_string()))?,
    };
    for image in orc_node_images(objects) {
        if images.iter().any(|i| i.name == image.name) {
            return Err(format!(
                "node image {:?} of release {tag} is both in node-images.yaml and an ORC Image of the \
                 cluster-class chart; keep one of them",
                image.name
            ));
        }
        images.push(image);
    }
    Ok(images)
}

/// The plugin's `reconcile-node-images`, also for a release without node images (the plugin learns
/// that it has none).
async fn node_images(
    r: &mut Release<'_>,
    plugin: &Arc<LoadedPlugin>,
    images: Vec<NodeImage>,
    info: &ReleaseInfo,
) -> Step<()> {
    let ctx = r.ctx;
    const T: &str = types::PROVIDER_CLUSTER_STACK_RELEASE_READY;
    let (info_, images_) = (info.clone(), images.clone());
    let one_at_a_time = plugin.node_images.lock().await;
    let result = call(
        ctx,
        plugin,
        "reconcile-node-images",
        |r: &Result<_, _>| r.is_ok(),
        move |p| p.reconcile_node_images(&info_, &images_),
    )
    .await;
    drop(one_at_a_time);
    let statuses = match result {
        Ok(Ok(s)) => s,
        Ok(Err(guest)) => {
            let (message, retry) = guest_message(&guest.0);
            let message = format!("{} reconcile-node-images: {message}", plugin.id());
            return match retry {
                Some(secs) => {
                    r.not_ok(T, ConditionSeverity::Info, "NodeImagesPending", message);
                    r.status.ready = false;
                    Step::Wait(Duration::from_secs(u64::from(secs.max(1))))
                }
                None => r.failed(T, "NodeImagesFailed", message).await,
            };
        }
        Err(e) => return plugin_failure(r, T, plugin, e).await,
    };
    let mut pending: Vec<(String, u32)> = Vec::new();
    let mut failed = Vec::new();
    for image in &images {
        match statuses.iter().find(|s| s.name == image.name).map(|s| &s.state) {
            Some(ImageState::Ready(_)) => {}
            Some(ImageState::Pending(retry)) => pending.push((
                format!("{}: {}", image.name, retry.message),
                retry.retry_after_seconds,
            )),
            Some(ImageState::Failed(why)) => failed.push(format!("{}: {why}", image.name)),
            None => failed.push(format!("{}: the plugin returned no status for it", image.name)),
        }
    }
    if !failed.is_empty() {
        return r
            .failed(
                T,
                "NodeImagesFailed",
                format!("node images failed: {}", failed.join("; ")),
            )
            .await;
    }
    if !pending.is_empty() {
        let wait = pending.iter().map(|(_, s)| *s).min().unwrap_or(5).max(1);
        let message = format!(
            "{} of {} node images pending: {}",
            pending.len(),
            images.len(),
            pending
                .iter()
                .map(|(m, _)| m.as_str())
                .collect::<Vec<_>>()
                .join("; ")
        );
        r.not_ok(T, ConditionSeverity::Info, "NodeImagesPending", message);
        r.status.ready = false;
        return Step::Wait(Duration::from_secs(u64::from(wait)));
    }
    Step::Next(())
}

async fn plugin_failure<T>(
    r: &mut Release<'_>,
    type_: &str,
    plugin: &LoadedPlugin,
    e: PluginError,
) -> Step<T> {
    let reason = match &e {
        PluginError::Host { .. } => "PluginHostError",
        _ => "PluginFailed",
    };
    r.failed(
        type_,
        reason,
        format!(
            "{} ({}) failed: {e}; retried with backoff, or when the ProviderPlugin serves a fixed digest",
            plugin.id(),
            plugin.plugin.digest()
        ),
    )
    .await
}

async fn render(r: &mut Release<'_>, name: &ReleaseName, assets: &ReleaseAssets) -> Step<Vec<Value>> {
    let renderer = r.ctx.renderer.clone();
    let assets_ = assets.clone();
    let ns = r.ns.clone();
    let release_name = name.helm_release_name();
    // Deleting the release stops the render (see `Context::stop`).
    let stop = r.ctx.stop_flag(&r.key);
    let flag = stop.flag();
    let rendered = tokio::task::spawn_blocking(move || {
        renderer.render_until(&RenderRequest::cluster_class(&assets_, &release_name, &ns), &flag)
    })
    .await;
    drop(stop);
    match rendered {
        Ok(Ok(objects)) => Step::Next(objects),
        // The release is being deleted: the finalizer runs next.
        Ok(Err(RenderError::Cancelled(_))) => Step::Wait(Duration::from_millis(100)),
        Ok(Err(e @ RenderError::TimedOut { .. })) => {
            r.failed(types::HELM_CHART_APPLIED, "RenderTimedOut", e.to_string())
                .await
        }
        Ok(Err(e @ RenderError::OutOfMemory { .. })) => {
            r.failed(types::HELM_CHART_APPLIED, "RenderOutOfMemory", e.to_string())
                .await
        }
        Ok(Err(e)) => {
            r.failed(
                types::HELM_CHART_APPLIED,
                "TemplateFailed",
                format!("rendering {}: {e}", assets.cluster_class_chart.display()),
            )
            .await
        }
        Err(e) => {
            r.failed(
                types::HELM_CHART_APPLIED,
                "TemplateFailed",
                format!("the renderer panicked: {e}"),
            )
            .await
        }
    }
}

async fn patch(
    r: &mut Release<'_>,
    plugin: &Arc<LoadedPlugin>,
    info: &ReleaseInfo,
    objects: Vec<Value>,
) -> Step<Vec<Value>> {
    const T: &str = types::CLUSTER_CLASS_PATCHED;
    let texts: Vec<String> = objects.iter().map(Value::to_string).collect();
    let info_ = info.clone();
    let result = call(
        r.ctx,
        plugin,
        "patch-cluster-class",
        |r: &Result<_, _>| r.is_ok(),
        move |p| p.patch_cluster_class(&info_, &texts),
    )
    .await;
    let patched = match result {
        Ok(Ok(p)) => p,
        Ok(Err(guest)) => {
            let (message, retry) = guest_message(&guest.0);
            let message = format!("{} patch-cluster-class: {message}", plugin.id());
            return match retry {
                Some(secs) => {
                    r.not_ok(T, ConditionSeverity::Info, "PatchPending", message);
                    Step::Wait(Duration::from_secs(u64::from(secs.max(1))))
                }
                None => r.failed(T, "PatchFailed", message).await,
            };
        }
        Err(e) => return plugin_failure(r, T, plugin, e).await,
    };
    let mut out = Vec::with_capacity(patched.len());
    for (i, text) in patched.iter().enumerate() {
        match serde_json::from_str::<Value>(text) {
            Ok(v) if v.is_object() => out.push(v),
            Ok(_) => {
                return r
                    .failed(
                        T,
                        "PatchInvalid",
                        format!(
                            "{} patch-cluster-class: object {i} is not a JSON object",
                            plugin.id()
                        ),
                    )
                    .await
            }
            Err(e) => {
                return r
                    .failed(
                        T,
                        "PatchInvalid",
                        format!(
                            "{} patch-cluster-class: object {i} is not valid JSON: {e}",
                            plugin.id()
                        ),
                    )
                    .await
            }
        }
    }
    Step::Next(out)
}

/// Deletion: wait while a Cluster uses the release, then remove what it applied, let the plugin clean
/// up its node images, and drop the finalizer.
async fn finalize(csr: &ClusterStackRelease, ctx: &Context) -> Result<Action, kube::Error> {
    let ns = csr.namespace().unwrap_or_default();
    let tag = csr.name_any();
    if !csr
        .finalizers()
        .iter()
        .any(|f| f == CLUSTER_STACK_RELEASE_FINALIZER)
    {
        return Ok(Action::await_change());
    }
    let mut r = Release {
        ctx,
        csr,
        key: key(&ns, &tag),
        ns: ns.clone(),
        status: csr.status.clone().unwrap_or_default(),
        now: now(),
    };
    // A download in flight is of no use any more.
    ctx.downloads.cancel(&r.key);
    if let Ok(name) = ReleaseName::parse_tag(&tag) {
        let class = name.class_name();
        let users: Vec<String> = cluster_classes_in_use(&ctx.client, &ns)
            .await?
            .into_iter()
            .filter(|c| ReleaseName::parse_class(c).is_ok_and(|n| n == name))
            .collect();
        if !users.is_empty() {
            let message = format!(
                "ClusterClass {class} is still used by {} Cluster(s) in {ns}; the release is deleted once \
                 they move to another class",
                users.len()
            );
            if condition::find(&r.status.conditions, READY).and_then(|c| c.reason.as_deref()) != Some("InUse")
            {
                ctx.event(csr, EventType::Warning, "InUse", "Delete", message.clone())
                    .await;
            }
            condition::set(
                &mut r.status.conditions,
                false_condition(READY, ConditionSeverity::Warning, "InUse", message),
                &r.now,
            );
            if let Some(patch) = super::status::merge_patch(r.csr.status.as_ref(), &r.status) {
                let api: Api<ClusterStackRelease> = Api::namespaced(ctx.client.clone(), &ns);
                api.patch_status(&tag, &PatchParams::default(), &patch).await?;
            }
            return Ok(Action::requeue(Duration::from_secs(30)));
        }
    }
    // Remove what the release applied.
    let applier = Applier::new(ctx.client.clone());
    let deleted = applier
        .delete(&r.status.resources, &release_owner(ctx, csr))
        .await;
    let errors: Vec<String> = deleted
        .iter()
        .filter_map(|(k, res)| res.as_ref().err().map(|e| format!("{k}: {e}")))
        .collect();
    if !errors.is_empty() {
        let message = format!("cannot delete applied objects: {}", errors.join("; "));
        let step: Step<()> = r.failed(types::HELM_CHART_APPLIED, "DeleteFailed", message).await;
        r.write().await?;
        return Ok(match step {
            Step::Wait(d) => Action::requeue(d),
            Step::Next(()) => Action::requeue(Duration::from_secs(5)),
        });
    }
    // Let the plugin remove node images no other release needs (only when it is loaded and the
    // assets are cached; a missing plugin must not block deletion forever).
    if let (Some(pp), Ok(name)) = (&csr.spec.provider_plugin, ReleaseName::parse_tag(&tag)) {
        if let Some(plugin) = ctx.plugins.get(&ns, pp) {
            cleanup(ctx, csr, &plugin, &name).await;
        }
    }
    let api: Api<ClusterStackRelease> = Api::namespaced(ctx.client.clone(), &ns);
    let finalizers: Vec<String> = csr
        .finalizers()
        .iter()
        .filter(|f| *f != CLUSTER_STACK_RELEASE_FINALIZER)
        .cloned()
        .collect();
    let patch = json!({"metadata": {"finalizers": finalizers, "resourceVersion": csr.resource_version()}});
    match api
        .patch(&tag, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => return Err(e),
    }
    ctx.succeeded(&r.key);
    Ok(Action::await_change())
}

async fn cleanup(ctx: &Context, csr: &ClusterStackRelease, plugin: &Arc<LoadedPlugin>, name: &ReleaseName) {
    let source = match ctx
        .release_source(&csr.namespace().unwrap_or_default(), csr.spec.source.as_ref())
        .await
    {
        Ok(s) => s,
        Err(_) => return,
    };
    let Ok(Some(assets)) = ctx.releases.get(source.as_ref(), name) else {
        return;
    };
    // The chart is rendered again for its ORC `Image` objects; a render that fails leaves them out.
    let renderer = ctx.renderer.clone();
    let (assets_, release_name) = (assets.clone(), name.helm_release_name());
    let ns = csr.namespace().unwrap_or_default();
    let objects = tokio::task::spawn_blocking(move || {
        renderer.render(&RenderRequest::cluster_class(&assets_, &release_name, &ns))
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default();
    let images = release_node_images(&name.tag(), &assets, &objects).unwrap_or_default();
    let info = release_info(name, &assets);
    let one_at_a_time = plugin.node_images.lock().await;
    let result = call(
        ctx,
        plugin,
        "cleanup-node-images",
        |r: &Result<_, _>| r.is_ok(),
        move |p| p.cleanup_node_images(&info, &images),
    )
    .await;
    drop(one_at_a_time);
    let problem = match result {
        Ok(Ok(())) => None,
        Ok(Err(guest)) => Some(guest_message(&guest.0).0),
        Err(e) => Some(e.to_string()),
    };
    if let Some(problem) = problem {
        ctx.event(
            csr,
            EventType::Warning,
            "CleanupFailed",
            "Delete",
            format!(
                "{} cleanup-node-images: {problem}; the release is deleted anyway",
                plugin.id()
            ),
        )
        .await;
    }
}

/// Requeue hint for API errors.
pub fn error_policy(csr: Arc<ClusterStackRelease>, error: &kube::Error, ctx: Arc<Context>) -> Action {
    let key = key(&csr.namespace().unwrap_or_default(), &csr.name_any());
    tracing::warn!(release = %key, %error, "reconcile failed");
    Action::requeue(ctx.backoff(&key))
}
