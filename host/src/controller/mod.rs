//! The controllers of `stackhost run`: ClusterStack, ClusterStackRelease and ProviderPlugin, each a
//! kube-runtime `Controller` with its own concurrency, sharing one [`Context`].

pub mod addons;
pub mod cluster_stack;
pub mod cluster_stack_release;
pub mod context;
pub mod fair;
pub mod metrics;
pub mod paused;
pub mod plugins;
pub mod provider_plugin;
pub mod status;

use std::sync::Arc;

use futures_util::StreamExt;
use kube::api::Api;
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::ResourceExt;

pub use context::{Context, ControllerArgs};
pub use metrics::Metrics;
pub use plugins::PluginRegistry;

use crate::api::{ClusterStack, ClusterStackRelease, ProviderPlugin};

/// The current time as a Kubernetes `Time`.
pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

fn api<K>(client: &kube::Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the three controllers until `shutdown` turns true; reconciles in flight finish first.
/// `ready` is called once the controllers are started.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: crate::run::Shutdown,
    ready: impl FnOnce() + Send,
) -> anyhow::Result<()> {
    let args = &ctx.args;
    let ns = args.namespace.as_deref();
    let mut watch = watcher::Config::default();
    if let Some(selector) = args.label_selector() {
        watch = watch.labels(&selector);
    }
    let config = controller::Config::default().concurrency(args.concurrency);
    let stop = || crate::run::until_shutdown(shutdown.clone());

    let plugins = Controller::new(api::<ProviderPlugin>(&ctx.client, ns), watch.clone())
        .with_config(config.clone())
        .graceful_shutdown_on(stop())
        .run(provider_plugin::reconcile, plugin_error_policy, ctx.clone())
        .for_each(|r| async move { log_result("providerplugin", r) });

    // Releases wait for their ProviderPlugin: when one changes, reconcile the releases that use it.
    let mut releases_ctrl = Controller::new(api::<ClusterStackRelease>(&ctx.client, ns), watch.clone());
    if args.provider_step == context::ProviderStep::Object {
        let objects =
            watcher::Config::default().labels("stackhost.clusterstack.x-k8s.io/provider-object=true");
        releases_ctrl = releases_ctrl.owns(
            api::<k8s_openapi::api::core::v1::ConfigMap>(&ctx.client, ns),
            objects,
        );
    }
    let store = releases_ctrl.store();
    let seen: std::sync::Mutex<std::collections::HashMap<String, (Option<String>, bool)>> =
        Default::default();
    let releases = releases_ctrl
        .watches(api::<ProviderPlugin>(&ctx.client, ns), watch.clone(), move |pp| {
            // Only a change of the serving digest or of readiness concerns the releases.
            let key = format!("{}/{}", pp.namespace().unwrap_or_default(), pp.name_any());
            let status = pp.status.as_ref();
            let serving = (
                status.and_then(|s| s.resolved_digest.clone()),
                status.is_some_and(|s| {
                    crate::api::condition::is_true(&s.conditions, crate::api::condition::READY)
                }),
            );
            let changed = seen
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key, serving.clone())
                != Some(serving);
            let pp_ns = pp.namespace();
            let name = pp.name_any();
            let affected: Vec<_> = if changed {
                store
                    .state()
                    .into_iter()
                    .filter(|r| {
                        r.namespace() == pp_ns && r.spec.provider_plugin.as_deref() == Some(name.as_str())
                    })
                    .map(|r| ObjectRef::from_obj(r.as_ref()))
                    .collect()
            } else {
                Vec::new()
            };
            affected
        })
        // A release being deleted stops its render and download at once: the reconcile doing them may
        // hold the release for a while, and its finalizer only runs after it.
        .watches(api::<ClusterStackRelease>(&ctx.client, ns), watch.clone(), {
            let ctx = ctx.clone();
            move |csr| {
                if csr.metadata.deletion_timestamp.is_some() {
                    ctx.stop(&cluster_stack_release::key(
                        &csr.namespace().unwrap_or_default(),
                        &csr.name_any(),
                    ));
                }
                None::<ObjectRef<ClusterStackRelease>>
            }
        })
        .with_config(config.clone())
        .graceful_shutdown_on(stop())
        .run(
            cluster_stack_release::reconcile,
            cluster_stack_release::error_policy,
            ctx.clone(),
        )
        .for_each(|r| async move { log_result("clusterstackrelease", r) });

    let stacks = Controller::new(api::<ClusterStack>(&ctx.client, ns), watch.clone())
        .owns(api::<ClusterStackRelease>(&ctx.client, ns), watch.clone())
        // A release whose status could not be written reports through its ClusterStack.
        .reconcile_all_on(ctx.stacks_trigger())
        .with_config(config)
        .graceful_shutdown_on(stop())
        .run(cluster_stack::reconcile, cluster_stack::error_policy, ctx.clone())
        .for_each(|r| async move { log_result("clusterstack", r) });

    ready();
    tracing::info!(namespace = ns.unwrap_or("<all>"), "controllers running");
    let all = async {
        tokio::join!(plugins, releases, stacks);
    };
    match crate::run::with_grace(all, shutdown.clone(), std::time::Duration::from_secs(10)).await {
        Some(()) => tracing::info!("controllers stopped"),
        None => tracing::warn!("controllers did not stop within 10s of the shutdown; leaving them"),
    }
    Ok(())
}

fn plugin_error_policy(
    pp: Arc<ProviderPlugin>,
    error: &kube::Error,
    ctx: Arc<Context>,
) -> kube::runtime::controller::Action {
    let key = format!("pp/{}/{}", pp.namespace().unwrap_or_default(), pp.name_any());
    tracing::warn!(plugin = %key, %error, "reconcile failed");
    kube::runtime::controller::Action::requeue(ctx.backoff(&key))
}

fn log_result<K, E>(
    controller: &str,
    result: Result<(ObjectRef<K>, controller::Action), controller::Error<E, watcher::Error>>,
) where
    K: kube::Resource,
    E: std::error::Error + 'static,
{
    match result {
        Ok((object, _)) => tracing::debug!(controller, object = %object, "reconciled"),
        Err(controller::Error::ReconcilerFailed(e, object)) => {
            tracing::warn!(controller, object = %object, error = %e, "reconcile failed")
        }
        Err(controller::Error::QueueError(e)) => {
            tracing::warn!(controller, error = %e, "watch failed; retrying")
        }
        Err(e) => tracing::warn!(controller, error = %e, "controller error"),
    }
}
