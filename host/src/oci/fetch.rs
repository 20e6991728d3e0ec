//! The plugin pipeline the controller and the CLI use:
//! resolve the reference to a manifest digest -> recognise the artifact -> read the config and
//! check the world (before downloading the component) -> verify the cosign signature on the
//! digest -> fetch the component through the cache -> check the component's own world.
//! Only then are the bytes handed to the runtime, keyed by their digest.

use std::sync::Arc;

use oci_client::Reference;

use super::artifact::{self, PluginLayout, WasmConfig};
use super::cache::{BlobCache, CacheOutcome};
use super::error::{OciError, Result};
use super::manifest::Descriptor;
use super::registry::display;
use super::signature::{self, SignaturePolicy, Verdict};
use super::source::Source;

/// A plugin ready for the runtime.
#[derive(Debug, Clone)]
pub struct PulledPlugin {
    /// The reference as given.
    pub reference: String,
    /// The manifest digest the reference resolved to (what was verified).
    pub manifest_digest: String,
    /// The component's digest: `sha256:` of `bytes` (what the runtime caches by).
    pub component_digest: String,
    /// The component.
    pub bytes: Arc<Vec<u8>>,
    /// Its declared (or, for the legacy layout, computed) world.
    pub config: Option<WasmConfig>,
    /// The signature verdict.
    pub verdict: Verdict,
    /// Whether the component came from the cache.
    pub cache: CacheOutcome,
}

/// Everything the config blob says about a remote plugin (for `plugin inspect REF`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct RemotePlugin {
    pub reference: String,
    pub manifest_digest: String,
    pub component_digest: String,
    pub component_size: u64,
    pub layout: &'static str,
    pub config: Option<WasmConfig>,
    pub world_check: std::result::Result<(), String>,
}

/// Pulls plugins from a source through a cache under a signature policy.
#[derive(Debug, Clone)]
pub struct PluginFetcher {
    source: Source,
    cache: Arc<BlobCache>,
    policy: Arc<SignaturePolicy>,
}

impl PluginFetcher {
    /// A fetcher.
    pub fn new(source: Source, cache: Arc<BlobCache>, policy: SignaturePolicy) -> Self {
        PluginFetcher {
            source,
            cache,
            policy: Arc::new(policy),
        }
    }

    /// The source in use.
    pub fn source(&self) -> &Source {
        &self.source
    }

    async fn manifest_and_layout(&self, reference: &Reference) -> Result<(String, PluginLayout)> {
        let shown = display(reference);
        let fetched = self
            .source
            .fetch_manifest_cached(Some(&self.cache), reference)
            .await?;
        let manifest = fetched.parse(&shown)?;
        Ok((fetched.digest, artifact::plugin_layout(&shown, &manifest)?))
    }

    async fn read_config(&self, reference: &Reference, desc: &Descriptor) -> Result<WasmConfig> {
        let bytes = self
            .source
            .fetch_blob_cached(Some(&self.cache), reference, desc, "config")
            .await?;
        WasmConfig::parse(&display(reference), &bytes)
    }

    /// Describe a remote plugin from its manifest and config only (no component download).
    pub async fn inspect(&self, reference: &str) -> Result<RemotePlugin> {
        let r = self.source.parse(reference)?;
        let (digest, layout) = self.manifest_and_layout(&r).await?;
        let (config, kind) = match &layout {
            PluginLayout::Cncf { config, .. } => (Some(self.read_config(&r, config).await?), "cncf"),
            PluginLayout::Legacy { .. } => (None, "legacy"),
        };
        let world_check = match &config {
            Some(c) => artifact::check_config(reference, c).map_err(|e| e.to_string()),
            None => Err("legacy layout: the world is only known after downloading the component".into()),
        };
        Ok(RemotePlugin {
            reference: reference.to_string(),
            manifest_digest: digest,
            component_digest: layout.layer().digest.clone(),
            component_size: layout.layer().size,
            layout: kind,
            config,
            world_check,
        })
    }

    /// Pull, check and verify a plugin.
    pub async fn pull(&self, reference: &str) -> Result<PulledPlugin> {
        let r = self.source.parse(reference)?;
        let shown = display(&r);
        let (manifest_digest, layout) = self.manifest_and_layout(&r).await?;
        // Pin everything below to the digest the reference resolved to.
        let pinned = r.clone_with_digest(manifest_digest.clone());

        let config = match &layout {
            PluginLayout::Cncf { config, .. } => {
                let config = self.read_config(&pinned, config).await?;
                artifact::check_config(&shown, &config)?;
                Some(config)
            }
            PluginLayout::Legacy { .. } => None,
        };

        let verdict = signature::verify(
            &self.source,
            Some(&self.cache),
            &r,
            &manifest_digest,
            &self.policy,
        )
        .await?;

        let layer = layout.layer().clone();
        let source = self.source.clone();
        let (bytes, cache) = self
            .cache
            .get_or_fetch(&layout.layer().digest, |tmp| async move {
                source
                    .fetch_blob_to_file(&pinned, &layer, "component", &tmp)
                    .await
            })
            .await?;

        // The config is a claim; the component's own imports are what the runtime links.
        let world = artifact::component_world(&bytes).map_err(|reason| OciError::NotAPlugin {
            reference: shown.clone(),
            reason,
        })?;
        artifact::check_component_world(&world).map_err(|reason| OciError::UnsupportedWorld {
            reference: shown.clone(),
            reason,
        })?;

        Ok(PulledPlugin {
            reference: reference.to_string(),
            manifest_digest,
            component_digest: layout.layer().digest.clone(),
            bytes: Arc::new(bytes),
            config,
            verdict,
            cache,
        })
    }
}

/// Push `component` as a CNCF Wasm artifact to `reference` (its world must be supported).
/// `origin` names the component in errors (usually the file). Returns the manifest digest.
pub async fn push_plugin(
    registry: &super::registry::Registry,
    origin: &str,
    component: &[u8],
    reference: &Reference,
    annotations: std::collections::BTreeMap<String, String>,
) -> Result<String> {
    let artifact = artifact::PluginArtifact::new(origin, component, annotations)?;
    registry.push_blob(reference, component, "component").await?;
    registry
        .push_blob(reference, &artifact.config_bytes, "config")
        .await?;
    registry
        .push_manifest(
            reference,
            &artifact.manifest.to_bytes(),
            super::manifest::OCI_MANIFEST,
        )
        .await
}
