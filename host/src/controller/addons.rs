//! The ClusterAddon controller (host/src/addon) wired to the controllers' context: addon releases come
//! from the release cache the ClusterStackRelease controller filled (with the release's own source), and
//! the provider step `addon-values` is the ProviderPlugin's.

use std::sync::Arc;

use kube::api::Api;
use serde_json::Value;

use super::plugins::call;
use super::Context;
use crate::addon::{AddonConfig, AddonReleases, AddonValuesHook, AddonValuesRequest};
use crate::api::ClusterStackRelease;
use crate::plugin::types::ClusterInfo;
use crate::release::source::BoxFuture;
use crate::release::{ReleaseAssets, ReleaseName};

/// The ClusterAddon controller's configuration from the controllers' context: releases from their
/// cache, Helm, the ProviderPlugins' `addon-values`, the work directory under the cache, and the same
/// namespace, label filter, metrics and Event recorder as the other controllers.
pub fn addon_config(ctx: &Arc<Context>) -> AddonConfig {
    let mut config = AddonConfig::new(
        Arc::new(ContextReleases(ctx.clone())),
        ctx.renderer.clone(),
        ctx.args.cache_root().join("addons"),
    );
    config.values_hook = Some(Arc::new(PluginValues(ctx.clone())));
    config.namespace = ctx.args.namespace.clone();
    config.watch_label = ctx.args.watch_label.clone();
    config.metrics = Some(ctx.metrics.clone());
    config.events = Some(ctx.recorder());
    config.concurrency = ctx.args.concurrency;
    config.slots = Some(ctx.slots.clone());
    config.api_rate = ctx.args.api_rate();
    config
}

/// Releases as cached for the ClusterStackRelease of the same name in the Cluster's namespace.
#[derive(Debug, Clone)]
pub struct ContextReleases(pub Arc<Context>);

impl AddonReleases for ContextReleases {
    fn release<'a>(
        &'a self,
        namespace: &'a str,
        release: &'a ReleaseName,
    ) -> BoxFuture<'a, Result<Option<ReleaseAssets>, String>> {
        Box::pin(async move {
            let ctx = &self.0;
            let api: Api<ClusterStackRelease> = Api::namespaced(ctx.client.clone(), namespace);
            let Some(csr) = api.get_opt(&release.tag()).await.map_err(|e| {
                format!(
                    "cannot read ClusterStackRelease {namespace}/{}: {e}",
                    release.tag()
                )
            })?
            else {
                return Ok(None);
            };
            let source = ctx.release_source(namespace, csr.spec.source.as_ref()).await?;
            ctx.releases
                .get(source.as_ref(), release)
                .map_err(|e| e.to_string())
        })
    }
}

/// The `addon-values` step of the ProviderPlugin named like the release's provider.
#[derive(Debug, Clone)]
pub struct PluginValues(pub Arc<Context>);

impl AddonValuesHook for PluginValues {
    fn addon_values<'a>(&'a self, req: AddonValuesRequest<'a>) -> BoxFuture<'a, Result<Value, String>> {
        Box::pin(async move {
            let ctx = &self.0;
            let provider = req.release.provider.as_str();
            let Some(plugin) = ctx.plugins.get(req.namespace, provider) else {
                return match ctx.plugins.last_error(req.namespace, provider) {
                    Some(e) => Err(format!(
                        "ProviderPlugin {}/{provider} is not loaded: {e}",
                        req.namespace
                    )),
                    // noProvider stacks have no ProviderPlugin: the values stay as templated.
                    None => Ok(req.values),
                };
            };
            let cluster = ClusterInfo {
                name: req.cluster["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                namespace: req.namespace.to_string(),
                kubernetes_version: req.cluster["spec"]["topology"]["version"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                object: req.cluster.to_string(),
            };
            let values = req.values.to_string();
            let result = call(
                ctx,
                &plugin,
                "addon-values",
                |r: &Result<_, _>| r.is_ok(),
                move |p| p.addon_values(&cluster, &values),
            )
            .await;
            match result {
                Ok(Ok(text)) => serde_json::from_str(&text).map_err(|e| {
                    format!(
                        "{} addon-values returned values that are not JSON: {e}",
                        plugin.id()
                    )
                }),
                Ok(Err(guest)) => Err(format!("{} addon-values: {}", plugin.id(), guest)),
                Err(e) => Err(format!("{} addon-values failed: {e}", plugin.id())),
            }
        })
    }
}
