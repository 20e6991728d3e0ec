//! Where artifacts are read from: a registry, or an OCI image layout directory (air gap).
//! Both serve the same verified manifests and blobs, so the plugin and release pipelines do
//! not care which one is configured.

use std::path::Path;
use std::sync::Arc;

use oci_client::Reference;

use super::cache::BlobCache;
use super::error::Result;
use super::layout::Layout;
use super::manifest::{Descriptor, FetchedManifest};
use super::registry::{parse_reference, Registry};

/// A source of artifacts.
#[derive(Debug, Clone)]
pub enum Source {
    /// A registry (with its mirrors).
    Registry(Arc<Registry>),
    /// An OCI image layout directory; references are looked up by their full name.
    Layout(Arc<Layout>),
}

impl Source {
    /// Parse a reference (the plain-HTTP policy applies to registries only).
    pub fn parse(&self, s: &str) -> Result<Reference> {
        match self {
            Source::Registry(r) => r.parse(s),
            Source::Layout(_) => parse_reference(s.trim_start_matches("http://"), &[]),
        }
    }

    /// The manifest of `reference`, its digest verified if pinned.
    pub async fn fetch_manifest(&self, reference: &Reference) -> Result<FetchedManifest> {
        match self {
            Source::Registry(r) => r.fetch_manifest(reference).await,
            Source::Layout(l) => l.fetch_manifest(reference),
        }
    }

    /// A small blob (config, signature payload), verified.
    pub async fn fetch_blob_bytes(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        what: &str,
    ) -> Result<Vec<u8>> {
        match self {
            Source::Registry(r) => r.fetch_blob_bytes(reference, desc, what).await,
            Source::Layout(l) => l.read_blob(reference, desc, what),
        }
    }

    /// A layer into `path`, verified.
    pub async fn fetch_blob_to_file(
        &self,
        reference: &Reference,
        desc: &Descriptor,
        what: &str,
        path: &Path,
    ) -> Result<()> {
        match self {
            Source::Registry(r) => r.fetch_blob_to_file(reference, desc, what, path).await,
            Source::Layout(l) => {
                let bytes = l.read_blob(reference, desc, what)?;
                tokio::fs::write(path, bytes)
                    .await
                    .map_err(|e| super::OciError::io("writing blob", path, e))
            }
        }
    }

    /// Tags of the repository of `reference`.
    pub async fn list_tags(&self, reference: &Reference) -> Result<Vec<String>> {
        match self {
            Source::Registry(r) => r.list_tags(reference).await,
            Source::Layout(l) => Ok(l.tags(reference)),
        }
    }

    /// Like [`Source::fetch_blob_bytes`], but served from `cache` when it holds the digest
    /// (verified on read) and stored there after a download. For small content-addressed
    /// blobs: configs and signature payloads.
    pub async fn fetch_blob_cached(
        &self,
        cache: Option<&BlobCache>,
        reference: &Reference,
        desc: &Descriptor,
        what: &str,
    ) -> Result<Vec<u8>> {
        if let Some(cache) = cache {
            if let Some(bytes) = cache.read(&desc.digest).await? {
                if bytes.len() as u64 == desc.size {
                    return Ok(bytes);
                }
            }
        }
        let bytes = self.fetch_blob_bytes(reference, desc, what).await?;
        if let Some(cache) = cache {
            cache.insert(&bytes).await?;
        }
        Ok(bytes)
    }

    /// Like [`Source::fetch_manifest`], but a reference pinned by digest is served from `cache`
    /// with no network access when it holds that manifest; fetched manifests are stored there.
    pub async fn fetch_manifest_cached(
        &self,
        cache: Option<&BlobCache>,
        reference: &Reference,
    ) -> Result<FetchedManifest> {
        if let (Some(cache), Some(digest)) = (cache, reference.digest()) {
            if let Some(bytes) = cache.read(digest).await? {
                let media_type = super::manifest::declared_media_type(&bytes)
                    .unwrap_or_else(|| super::manifest::OCI_MANIFEST.to_string());
                return Ok(FetchedManifest {
                    digest: digest.to_string(),
                    media_type,
                    bytes,
                });
            }
        }
        let fetched = self.fetch_manifest(reference).await?;
        if let Some(cache) = cache {
            cache.insert(&fetched.bytes).await?;
        }
        Ok(fetched)
    }
}
