//! OCI image layouts (image-spec `oci-layout`, `index.json`, `blobs/sha256/`), as directories
//! or tarballs: `stackhost oci export` writes them from a registry, `oci import` pushes them
//! into another registry, and [`Layout`] serves them directly to the controller with no
//! registry at all. Index entries carry the full reference in `io.containerd.image.name` and
//! the tag in `org.opencontainers.image.ref.name`.

use std::path::{Component, Path, PathBuf};

use oci_client::Reference;

use super::digest;
use super::error::{OciError, Result};
use super::manifest::{self, Descriptor, FetchedManifest, Index, Manifest};
use super::registry::{display, Registry};
use super::signature;

const LAYOUT_FILE: &str = "oci-layout";
const LAYOUT_VERSION: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// An OCI image layout directory.
#[derive(Debug)]
pub struct Layout {
    root: PathBuf,
    index: Index,
}

fn layout_err(path: &Path, reason: impl Into<String>) -> OciError {
    OciError::Layout {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

impl Layout {
    /// Create an empty layout at `root` (or open it if it is one already).
    pub fn create(root: &Path) -> Result<Self> {
        if root.join(LAYOUT_FILE).exists() {
            return Self::open(root);
        }
        let blobs = root.join("blobs").join("sha256");
        std::fs::create_dir_all(&blobs).map_err(|e| OciError::io("creating layout", &blobs, e))?;
        let f = root.join(LAYOUT_FILE);
        std::fs::write(&f, LAYOUT_VERSION).map_err(|e| OciError::io("writing", &f, e))?;
        let layout = Layout {
            root: root.to_path_buf(),
            index: Index::default(),
        };
        layout.save()?;
        Ok(layout)
    }

    /// Open an existing layout, checking its marker file and index.
    pub fn open(root: &Path) -> Result<Self> {
        let marker = root.join(LAYOUT_FILE);
        let text = std::fs::read_to_string(&marker).map_err(|e| {
            layout_err(
                root,
                format!("no readable `oci-layout` file ({e}); is this an OCI image layout directory?"),
            )
        })?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| layout_err(root, format!("`oci-layout` is not JSON: {e}")))?;
        if v.get("imageLayoutVersion").and_then(|v| v.as_str()) != Some("1.0.0") {
            return Err(layout_err(
                root,
                format!("unsupported imageLayoutVersion in `oci-layout`: {text}"),
            ));
        }
        let index_path = root.join("index.json");
        let bytes = std::fs::read(&index_path).map_err(|e| OciError::io("reading", &index_path, e))?;
        let index: Index = serde_json::from_slice(&bytes)
            .map_err(|e| layout_err(root, format!("index.json is not an OCI image index: {e}")))?;
        Ok(Layout {
            root: root.to_path_buf(),
            index,
        })
    }

    /// The layout directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The index entries.
    pub fn entries(&self) -> &[Descriptor] {
        &self.index.manifests
    }

    fn save(&self) -> Result<()> {
        let path = self.root.join("index.json");
        let tmp = self.root.join("index.json.tmp");
        let bytes = serde_json::to_vec_pretty(&self.index).unwrap_or_default();
        std::fs::write(&tmp, bytes).map_err(|e| OciError::io("writing", &tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| OciError::io("writing", &path, e))
    }

    fn blob_path(&self, reference: &str, digest: &str) -> Result<PathBuf> {
        let hex = digest::hex_part(reference, digest)?;
        Ok(self.root.join("blobs").join("sha256").join(hex))
    }

    /// Add a blob (atomically; no-op if present).
    pub fn put_blob(&self, bytes: &[u8]) -> Result<String> {
        let digest = digest::sha256(bytes);
        let path = self.blob_path(&digest, &digest)?;
        if !path.exists() {
            let tmp = path.with_extension("tmp");
            std::fs::write(&tmp, bytes).map_err(|e| OciError::io("writing blob", &tmp, e))?;
            std::fs::rename(&tmp, &path).map_err(|e| OciError::io("writing blob", &path, e))?;
        }
        Ok(digest)
    }

    /// Read a blob, verifying digest and size.
    pub fn read_blob(&self, reference: &Reference, desc: &Descriptor, what: &str) -> Result<Vec<u8>> {
        let shown = display(reference);
        let path = self.blob_path(&shown, &desc.digest)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(layout_err(
                    &self.root,
                    format!("{what} {} of `{shown}` is missing from blobs/", desc.digest),
                ))
            }
            Err(e) => return Err(OciError::io("reading blob", &path, e)),
        };
        digest::verify(&shown, what, &desc.digest, Some(desc.size), &bytes)?;
        Ok(bytes)
    }

    /// Record a manifest under the full name of `reference` (replacing an entry of that name).
    pub fn add_manifest(
        &mut self,
        reference: &Reference,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<Descriptor> {
        self.put_blob(bytes)?;
        let mut desc = Descriptor::for_bytes(media_type, bytes);
        desc.artifact_type = serde_json::from_slice::<Manifest>(bytes)
            .ok()
            .and_then(|m| m.artifact_type.or(Some(m.config.media_type)));
        let name = display(reference);
        desc.annotations
            .insert(manifest::ANNOTATION_IMAGE_NAME.into(), name.clone());
        if let Some(tag) = reference.tag() {
            desc.annotations
                .insert(manifest::ANNOTATION_REF_NAME.into(), tag.to_string());
        }
        self.index
            .manifests
            .retain(|d| d.annotations.get(manifest::ANNOTATION_IMAGE_NAME) != Some(&name));
        self.index.manifests.push(desc.clone());
        self.save()?;
        Ok(desc)
    }

    /// The manifest of `reference`: by full name, or by digest if pinned.
    pub fn fetch_manifest(&self, reference: &Reference) -> Result<FetchedManifest> {
        let shown = display(reference);
        let desc = if let Some(d) = reference.digest() {
            self.index
                .manifests
                .iter()
                .find(|m| m.digest == d)
                .cloned()
                .or_else(|| {
                    // Not in the index (e.g. pinned by digest only): a blob may still hold it.
                    let path = self.blob_path(&shown, d).ok()?;
                    let len = std::fs::metadata(path).ok()?.len();
                    Some(Descriptor {
                        media_type: manifest::OCI_MANIFEST.into(),
                        digest: d.to_string(),
                        size: len,
                        artifact_type: None,
                        annotations: Default::default(),
                    })
                })
        } else {
            let name = display(reference);
            self.index
                .manifests
                .iter()
                .find(|m| m.annotations.get(manifest::ANNOTATION_IMAGE_NAME) == Some(&name))
                .cloned()
        };
        let desc = desc.ok_or(OciError::NotFound {
            reference: shown.clone(),
        })?;
        let bytes = self.read_blob(reference, &desc, "manifest")?;
        let media_type = manifest::declared_media_type(&bytes).unwrap_or(desc.media_type);
        Ok(FetchedManifest {
            digest: desc.digest,
            media_type,
            bytes,
        })
    }

    /// Tags recorded for the repository of `reference`.
    pub fn tags(&self, reference: &Reference) -> Vec<String> {
        let mut tags: Vec<String> = self
            .index
            .manifests
            .iter()
            .filter_map(|m| m.annotations.get(manifest::ANNOTATION_IMAGE_NAME))
            .filter_map(|name| name.parse::<Reference>().ok())
            .filter(|r| r.registry() == reference.registry() && r.repository() == reference.repository())
            .filter_map(|r| r.tag().map(str::to_string))
            .collect();
        tags.sort();
        tags.dedup();
        tags
    }
}

/// Copy `reference` (manifest, config, layers and any cosign signature) from `registry` into
/// `layout`. Returns the manifest digest.
pub async fn export_one(registry: &Registry, layout: &mut Layout, reference: &Reference) -> Result<String> {
    let shown = display(reference);
    let fetched = registry.fetch_manifest(reference).await?;
    copy_manifest_blobs(registry, layout, reference, &fetched).await?;
    layout.add_manifest(reference, &fetched.bytes, &fetched.media_type)?;

    let sig_ref = signature::signature_reference(reference, &fetched.digest);
    match registry.fetch_manifest(&sig_ref).await {
        Ok(sig) => {
            copy_manifest_blobs(registry, layout, &sig_ref, &sig).await?;
            layout.add_manifest(&sig_ref, &sig.bytes, &sig.media_type)?;
        }
        Err(OciError::NotFound { .. }) => {
            tracing::info!(reference = %shown, "exporting without a signature: none in the registry")
        }
        Err(e) => return Err(e),
    }
    Ok(fetched.digest)
}

/// Write the component `file` into `layout` as a plugin artifact named `reference` (no registry
/// involved; used to build the sample layout of `stackhost sandbox`). Returns the manifest digest.
pub fn add_plugin(
    layout: &mut Layout,
    reference: &Reference,
    file: &str,
    component: &[u8],
) -> Result<String> {
    let artifact = super::artifact::PluginArtifact::new(file, component, Default::default())?;
    layout.put_blob(component)?;
    layout.put_blob(&artifact.config_bytes)?;
    let bytes = artifact.manifest.to_bytes();
    layout.add_manifest(reference, &bytes, manifest::OCI_MANIFEST)?;
    Ok(digest::sha256(&bytes))
}

/// Write the release directory `dir` into `layout` as a release artifact named `reference`, with the
/// same manifest `stackhost release push` writes. Returns the manifest digest.
pub fn add_release(layout: &mut Layout, reference: &Reference, dir: &Path) -> Result<String> {
    let (checked, files) = super::release::read_dir(dir)?;
    let mut layers = Vec::new();
    for (name, path) in &files {
        let bytes = std::fs::read(path).map_err(|e| OciError::io("reading", path, e))?;
        layout.put_blob(&bytes)?;
        let mut desc = Descriptor::for_bytes(super::release::media_type_for(name), &bytes);
        desc.annotations
            .insert(manifest::ANNOTATION_TITLE.into(), name.clone());
        layers.push(desc);
    }
    let config = b"{}";
    layout.put_blob(config)?;
    let mut m = Manifest::new(
        Descriptor::for_bytes(super::release::EMPTY_CONFIG, config),
        layers,
    );
    m.artifact_type = Some(super::release::ARTIFACT_TYPE.to_string());
    m.annotations
        .insert("kubernetesVersion".into(), checked.kubernetes_version.clone());
    let bytes = m.to_bytes();
    layout.add_manifest(reference, &bytes, manifest::OCI_MANIFEST)?;
    Ok(digest::sha256(&bytes))
}

async fn copy_manifest_blobs(
    registry: &Registry,
    layout: &Layout,
    reference: &Reference,
    fetched: &FetchedManifest,
) -> Result<()> {
    let shown = display(reference);
    let m = fetched.parse(&shown)?;
    let descs = std::iter::once(&m.config).chain(m.layers.iter());
    for desc in descs {
        let path = layout.blob_path(&shown, &desc.digest)?;
        if path.exists() && layout.read_blob(reference, desc, "blob").is_ok() {
            continue;
        }
        let tmp = path.with_extension("part");
        registry.fetch_blob_to_file(reference, desc, "blob", &tmp).await?;
        std::fs::rename(&tmp, &path).map_err(|e| OciError::io("writing blob", &path, e))?;
    }
    Ok(())
}

/// Push every named entry of `layout` into `registry`. With `to` (`registry[/prefix]`), the
/// original registry host of each name is replaced by it. Returns the pushed references.
pub async fn import(registry: &Registry, layout: &Layout, to: Option<&str>) -> Result<Vec<String>> {
    let mut pushed = Vec::new();
    // Artifacts first, signatures after, so a signature never points at a missing manifest.
    let mut entries: Vec<&Descriptor> = layout.entries().iter().collect();
    entries.sort_by_key(|d| {
        d.annotations
            .get(manifest::ANNOTATION_REF_NAME)
            .is_some_and(|t| t.ends_with(".sig"))
    });
    for entry in entries {
        let Some(name) = entry.annotations.get(manifest::ANNOTATION_IMAGE_NAME) else {
            tracing::warn!(digest = %entry.digest, "skipping an index entry without a name annotation");
            continue;
        };
        let original: Reference = name
            .parse()
            .map_err(|e| layout_err(layout.root(), format!("entry `{name}` is not a reference: {e}")))?;
        let target_name = match to {
            Some(prefix) => {
                let tail = match original.tag() {
                    Some(t) => format!("{}:{t}", original.repository()),
                    None => format!("{}@{}", original.repository(), entry.digest),
                };
                format!("{}/{tail}", prefix.trim_end_matches('/'))
            }
            None => name.clone(),
        };
        let target = registry.parse(&target_name)?;
        let fetched = layout.fetch_manifest(&original.clone_with_digest(entry.digest.clone()))?;
        let m = fetched.parse(name)?;
        for desc in std::iter::once(&m.config).chain(m.layers.iter()) {
            let bytes = layout.read_blob(&original, desc, "blob")?;
            registry.push_blob(&target, &bytes, "blob").await?;
        }
        registry
            .push_manifest(&target, &fetched.bytes, &fetched.media_type)
            .await?;
        pushed.push(display(&target));
    }
    Ok(pushed)
}

/// Write the layout directory `dir` as an uncompressed tarball `file` (atomically).
pub fn write_tar(dir: &Path, file: &Path) -> Result<()> {
    let tmp = file.with_extension("tar.part");
    let out = std::fs::File::create(&tmp).map_err(|e| OciError::io("creating", &tmp, e))?;
    let mut builder = tar::Builder::new(out);
    builder.follow_symlinks(false);
    builder
        .append_dir_all(".", dir)
        .map_err(|e| OciError::io("writing tarball", &tmp, e))?;
    let out = builder
        .into_inner()
        .map_err(|e| OciError::io("writing tarball", &tmp, e))?;
    out.sync_all().map_err(|e| OciError::io("syncing", &tmp, e))?;
    std::fs::rename(&tmp, file).map_err(|e| OciError::io("writing", file, e))
}

/// Unpack a layout tarball into `dir`, accepting only regular files and directories with
/// relative paths inside it.
pub fn unpack_tar(file: &Path, dir: &Path) -> Result<()> {
    let input = std::fs::File::open(file).map_err(|e| OciError::io("opening", file, e))?;
    std::fs::create_dir_all(dir).map_err(|e| OciError::io("creating", dir, e))?;
    let mut archive = tar::Archive::new(input);
    let entries = archive
        .entries()
        .map_err(|e| OciError::io("reading tarball", file, e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| OciError::io("reading tarball", file, e))?;
        let path = entry
            .path()
            .map_err(|e| OciError::io("reading tarball", file, e))?
            .into_owned();
        let safe = path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !safe {
            return Err(layout_err(
                file,
                format!("entry `{}` escapes the layout directory", path.display()),
            ));
        }
        let relative: PathBuf = path
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let dest = dir.join(&relative);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&dest).map_err(|e| OciError::io("creating", &dest, e))?;
            }
            tar::EntryType::Regular => {
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| OciError::io("creating", parent, e))?;
                }
                let mut out = std::fs::File::create(&dest).map_err(|e| OciError::io("creating", &dest, e))?;
                std::io::copy(&mut entry, &mut out).map_err(|e| OciError::io("unpacking", &dest, e))?;
            }
            other => {
                return Err(layout_err(
                    file,
                    format!(
                        "entry `{}` has type {other:?}; only files and directories are allowed",
                        path.display()
                    ),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_layout_round_trips_through_a_tarball_and_serves_verified_content() -> Result<()> {
        let dir = tempfile::tempdir().map_err(|e| OciError::io("t", "tmp", e))?;
        let root = dir.path().join("layout");
        let mut layout = Layout::create(&root)?;
        let blob = b"hello".to_vec();
        let desc = Descriptor::for_bytes("application/wasm", &blob);
        layout.put_blob(&blob)?;
        let m = Manifest::new(
            Descriptor::for_bytes("application/vnd.wasm.config.v0+json", b"{}"),
            vec![desc.clone()],
        );
        layout.put_blob(b"{}")?;
        let r: Reference = "registry.example/plugins/noop:v1"
            .parse()
            .map_err(|_| layout_err(&root, "parse"))?;
        layout.add_manifest(&r, &m.to_bytes(), manifest::OCI_MANIFEST)?;

        let tarball = dir.path().join("out.tar");
        write_tar(&root, &tarball)?;
        let unpacked = dir.path().join("unpacked");
        unpack_tar(&tarball, &unpacked)?;
        let reopened = Layout::open(&unpacked)?;
        let fetched = reopened.fetch_manifest(&r)?;
        assert_eq!(fetched.parse("t")?.layers, vec![desc.clone()]);
        assert_eq!(reopened.read_blob(&r, &desc, "layer")?, blob);
        assert_eq!(reopened.tags(&r), ["v1"]);

        // Tampered content in the layout is refused.
        let path = unpacked
            .join("blobs/sha256")
            .join(desc.digest.trim_start_matches("sha256:"));
        std::fs::write(&path, b"HELLO").map_err(|e| OciError::io("t", &path, e))?;
        let err = reopened.read_blob(&r, &desc, "layer").expect_err("should fail");
        assert!(matches!(err, OciError::DigestMismatch { .. }), "{err}");

        let missing: Reference = "registry.example/plugins/noop:v2"
            .parse()
            .map_err(|_| layout_err(&root, "parse"))?;
        assert!(matches!(
            reopened.fetch_manifest(&missing),
            Err(OciError::NotFound { .. })
        ));
        Ok(())
    }

    #[test]
    fn not_a_layout_is_explained() {
        let dir = tempfile::tempdir().expect("tmp");
        let err = Layout::open(dir.path()).expect_err("should fail").to_string();
        assert!(err.contains("is this an OCI image layout directory?"), "{err}");
    }
}
