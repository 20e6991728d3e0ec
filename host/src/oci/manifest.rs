//! OCI manifest, descriptor and index types (image-spec v1.1), kept minimal and exact so the
//! bytes we push are the bytes we hash.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// OCI image index.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Docker schema 2 manifest (read only; some registries rewrite to it).
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// The media types accepted when fetching a manifest.
pub const ACCEPTED_MANIFESTS: &[&str] = &[OCI_MANIFEST, DOCKER_MANIFEST];

/// Annotation carrying a layer's file name (oras, csctl).
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";
/// Annotation carrying a tag in an OCI layout's index.json.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// Annotation carrying the full reference (registry/repository:tag) in a layout's index.json.
pub const ANNOTATION_IMAGE_NAME: &str = "io.containerd.image.name";
/// Annotation with the creation time.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Descriptor {
    /// A descriptor for `bytes` with `media_type`.
    pub fn for_bytes(media_type: &str, bytes: &[u8]) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest: super::digest::sha256(bytes),
            size: bytes.len() as u64,
            artifact_type: None,
            annotations: BTreeMap::new(),
        }
    }

    /// The `org.opencontainers.image.title` annotation, if any.
    pub fn title(&self) -> Option<&str> {
        self.annotations.get(ANNOTATION_TITLE).map(String::as_str)
    }
}

/// An OCI image manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Manifest {
    /// A new OCI manifest.
    pub fn new(config: Descriptor, layers: Vec<Descriptor>) -> Self {
        Manifest {
            schema_version: 2,
            media_type: Some(OCI_MANIFEST.to_string()),
            artifact_type: None,
            config,
            layers,
            subject: None,
            annotations: BTreeMap::new(),
        }
    }

    /// Serialise to the bytes that are pushed (and hashed).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail (string keys, no non-finite floats).
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// An OCI image index (used for `index.json` in an image layout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default)]
    pub manifests: Vec<Descriptor>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            schema_version: 2,
            media_type: Some(OCI_INDEX.to_string()),
            manifests: Vec::new(),
        }
    }
}

/// What a fetched manifest turned out to be.
#[derive(Debug, Clone)]
pub struct FetchedManifest {
    /// The manifest digest (sha256 of `bytes`).
    pub digest: String,
    /// The media type it was served with (or declared in its `mediaType`).
    pub media_type: String,
    /// The exact bytes.
    pub bytes: Vec<u8>,
}

impl FetchedManifest {
    /// Parse as an image manifest, refusing indexes and unknown types.
    pub fn parse(&self, reference: &str) -> super::Result<Manifest> {
        if !ACCEPTED_MANIFESTS.contains(&self.media_type.as_str()) {
            return Err(super::OciError::WrongMediaType {
                reference: reference.to_string(),
                what: "manifest".into(),
                found: self.media_type.clone(),
                expected: format!("`{OCI_MANIFEST}`"),
            });
        }
        serde_json::from_slice(&self.bytes).map_err(|e| super::OciError::Registry {
            reference: reference.to_string(),
            message: format!(
                "manifest {} is not valid JSON for an OCI image manifest: {e}",
                self.digest
            ),
        })
    }
}

/// The media type a manifest declares in its own `mediaType` field, if any.
pub fn declared_media_type(bytes: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Probe {
        media_type: Option<String>,
    }
    serde_json::from_slice::<Probe>(bytes).ok()?.media_type
}
