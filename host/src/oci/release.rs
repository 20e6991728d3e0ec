//! Cluster-stack release artifacts in csctl's OCI layout: one layer per release file, named by
//! its `org.opencontainers.image.title` annotation, artifact type
//! `application/vnd.scs.cluster-stacks.v1`, manifest annotation `kubernetesVersion`
//! (see cso-behaviour.md §3.2 and §3.5). Pulls write into a temporary directory and move it into
//! place only when every file was verified, so a release directory is never half-written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use oci_client::Reference;
use serde::Deserialize;

use super::error::{OciError, Result};
use super::manifest::{self, Descriptor, Manifest, OCI_MANIFEST};
use super::registry::{display, Registry};
use super::source::Source;
use crate::release::source::BoxFuture;
use crate::release::{ReleaseError, ReleaseSource};

/// Artifact type csctl publishes releases with.
pub const ARTIFACT_TYPE: &str = "application/vnd.scs.cluster-stacks.v1";
/// The OCI empty config (`{}`), used with `artifactType` as image-spec 1.1 recommends.
pub const EMPTY_CONFIG: &str = "application/vnd.oci.empty.v1+json";
/// oras' default config type for artifacts pushed without one.
pub const ORAS_UNKNOWN_CONFIG: &str = "application/vnd.unknown.config.v1+json";
/// Layer type for files csctl has no specific type for (oras' default).
pub const GENERIC_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

/// The layer media type csctl uses for a release file.
pub fn media_type_for(file_name: &str) -> &'static str {
    let tgz = file_name.ends_with(".tgz");
    match file_name {
        "metadata.yaml" => "application/vnd.scs.metadata.layer.v1+yaml",
        "clusteraddon.yaml" => "application/vnd.scs.cluster-addon.config.layer.v1+yaml",
        "node-images.yaml" => "application/vnd.scs.node-image.config.layer.v1+yaml",
        "hashes.json" => "application/vnd.scs.hashes.layer.v1+yaml",
        n if tgz && n.contains("-cluster-class-") => "application/vnd.scs.cluster-class.v1.tar+gzip",
        n if tgz && n.contains("-cluster-addon-") => "application/vnd.scs.cluster-addon.layer.v1.tar+gzip",
        n if tgz && n.contains("-node-image-") => "application/vnd.scs.node-image.layer.v1.tar+gzip",
        _ => GENERIC_LAYER,
    }
}

#[derive(Debug, Deserialize)]
struct Metadata {
    versions: Option<Versions>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Versions {
    #[serde(default)]
    cluster_stack: String,
    #[serde(default)]
    kubernetes: String,
    #[serde(default)]
    components: BTreeMap<String, serde_yaml::Value>,
}

/// The checked content of a release directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseFiles {
    /// File names, sorted.
    pub files: Vec<String>,
    /// `versions.kubernetes` from metadata.yaml.
    pub kubernetes_version: String,
    /// `versions.clusterStack` from metadata.yaml.
    pub cluster_stack_version: String,
}

fn rel_err(origin: &str, reason: impl Into<String>) -> OciError {
    OciError::Release {
        origin: origin.to_string(),
        reason: reason.into(),
    }
}

/// A layer title must be a plain file name (no directories, no `..`).
fn check_file_name(origin: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains('/')
        && !name.contains('\\')
        && !name.contains('\0');
    if ok {
        Ok(())
    } else {
        Err(rel_err(
            origin,
            format!("file name `{name}` is not a plain file name"),
        ))
    }
}

/// Check what CSO requires of a release: `metadata.yaml` with `versions.clusterStack`,
/// `versions.kubernetes` and `versions.components.clusterAddon`, a cluster-class chart and a
/// cluster-addon chart (`*.tgz`).
pub fn check_files(origin: &str, files: &[String], metadata: Option<&[u8]>) -> Result<ReleaseFiles> {
    let metadata = metadata.ok_or_else(|| rel_err(origin, "metadata.yaml is missing"))?;
    let parsed: Metadata = serde_yaml::from_slice(metadata)
        .map_err(|e| rel_err(origin, format!("metadata.yaml does not parse: {e}")))?;
    let versions = parsed
        .versions
        .ok_or_else(|| rel_err(origin, "metadata.yaml has no `versions` section"))?;
    for (field, value) in [
        ("versions.clusterStack", versions.cluster_stack.as_str()),
        ("versions.kubernetes", versions.kubernetes.as_str()),
    ] {
        if value.trim().is_empty() {
            return Err(rel_err(origin, format!("metadata.yaml: `{field}` is empty")));
        }
    }
    if !versions.components.contains_key("clusterAddon") {
        return Err(rel_err(
            origin,
            "metadata.yaml: `versions.components.clusterAddon` is missing",
        ));
    }
    for (kind, needle) in [
        ("cluster-class", "-cluster-class-"),
        ("cluster-addon", "-cluster-addon-"),
    ] {
        if !files.iter().any(|f| f.contains(needle) && f.ends_with(".tgz")) {
            return Err(rel_err(
                origin,
                format!("no {kind} chart: expected a file `<provider>-<name>-<k8s>{needle}<version>.tgz`"),
            ));
        }
    }
    let mut files = files.to_vec();
    files.sort();
    Ok(ReleaseFiles {
        files,
        kubernetes_version: versions.kubernetes,
        cluster_stack_version: versions.cluster_stack,
    })
}

/// Read and check a release directory (flat: regular files only).
pub fn read_dir(dir: &Path) -> Result<(ReleaseFiles, Vec<(String, PathBuf)>)> {
    let origin = dir.display().to_string();
    let entries = std::fs::read_dir(dir).map_err(|e| OciError::io("reading release directory", dir, e))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| OciError::io("reading release directory", dir, e))?;
        let ty = entry
            .file_type()
            .map_err(|e| OciError::io("reading", entry.path(), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if ty.is_dir() {
            // CSO untars multi-stage addon charts next to the tgz; those are not release files.
            continue;
        }
        if !ty.is_file() {
            return Err(rel_err(&origin, format!("`{name}` is not a regular file")));
        }
        files.push((name, entry.path()));
    }
    files.sort();
    let names: Vec<String> = files.iter().map(|(n, _)| n.clone()).collect();
    let metadata = match files.iter().find(|(n, _)| n == "metadata.yaml") {
        Some((_, p)) => Some(std::fs::read(p).map_err(|e| OciError::io("reading", p, e))?),
        None => None,
    };
    let checked = check_files(&origin, &names, metadata.as_deref())?;
    Ok((checked, files))
}

/// Push the release directory `dir` as an artifact to `reference`. Returns the manifest digest.
pub async fn push(registry: &Registry, dir: &Path, reference: &Reference) -> Result<String> {
    let (checked, files) = read_dir(dir)?;
    let mut layers = Vec::new();
    for (name, path) in &files {
        let bytes = tokio::fs::read(path)
            .await
            .map_err(|e| OciError::io("reading", path, e))?;
        registry.push_blob(reference, &bytes, name).await?;
        let mut desc = Descriptor::for_bytes(media_type_for(name), &bytes);
        desc.annotations
            .insert(manifest::ANNOTATION_TITLE.into(), name.clone());
        layers.push(desc);
    }
    let config = b"{}";
    registry.push_blob(reference, config, "config").await?;
    let mut m = Manifest::new(Descriptor::for_bytes(EMPTY_CONFIG, config), layers);
    m.artifact_type = Some(ARTIFACT_TYPE.to_string());
    m.annotations
        .insert("kubernetesVersion".into(), checked.kubernetes_version.clone());
    m.annotations.insert(
        manifest::ANNOTATION_CREATED.into(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    );
    registry
        .push_manifest(reference, &m.to_bytes(), OCI_MANIFEST)
        .await
}

/// A release written to disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PulledRelease {
    /// The manifest digest the reference resolved to.
    pub digest: String,
    /// The directory holding the files.
    pub dir: PathBuf,
    /// What was checked.
    pub files: ReleaseFiles,
}

/// Check that a manifest is a release artifact.
pub fn check_manifest(origin: &str, m: &Manifest) -> Result<()> {
    let typed = m.artifact_type.as_deref() == Some(ARTIFACT_TYPE) || m.config.media_type == ARTIFACT_TYPE;
    let untyped_ok = [EMPTY_CONFIG, ORAS_UNKNOWN_CONFIG].contains(&m.config.media_type.as_str());
    if !typed && !untyped_ok {
        return Err(OciError::WrongMediaType {
            reference: origin.to_string(),
            what: "artifact".into(),
            found: m
                .artifact_type
                .clone()
                .unwrap_or_else(|| m.config.media_type.clone()),
            expected: format!("a cluster-stack release (`{ARTIFACT_TYPE}`)"),
        });
    }
    Ok(())
}

/// A directory removed when dropped (it is gone already once it was moved into place).
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Download the release `reference` into `dest` (replacing it atomically).
pub async fn pull(source: &Source, reference: &Reference, dest: &Path) -> Result<PulledRelease> {
    let shown = display(reference);
    let fetched = source.fetch_manifest(reference).await?;
    let m = fetched.parse(&shown)?;
    check_manifest(&shown, &m)?;
    let pinned = reference.clone_with_digest(fetched.digest.clone());

    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| OciError::io("creating", parent, e))?;
    let base = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let partial = parent.join(format!(".{base}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).map_err(|e| OciError::io("creating", &partial, e))?;
    // Removed however the pull ends, also when it is dropped half-way (a deadline, a cancellation).
    let _partial = RemoveOnDrop(partial.clone());

    let result = async {
        let mut names = Vec::new();
        for layer in &m.layers {
            let name = layer
                .title()
                .ok_or_else(|| {
                    rel_err(
                        &shown,
                        format!(
                            "layer {} has no `{}` annotation naming its file",
                            layer.digest,
                            manifest::ANNOTATION_TITLE
                        ),
                    )
                })?
                .to_string();
            check_file_name(&shown, &name)?;
            if names.contains(&name) {
                return Err(rel_err(&shown, format!("two layers are named `{name}`")));
            }
            source
                .fetch_blob_to_file(&pinned, layer, &name, &partial.join(&name))
                .await?;
            names.push(name);
        }
        let metadata = match names.iter().any(|n| n == "metadata.yaml") {
            true => Some(
                std::fs::read(partial.join("metadata.yaml"))
                    .map_err(|e| OciError::io("reading", partial.join("metadata.yaml"), e))?,
            ),
            false => None,
        };
        check_files(&shown, &names, metadata.as_deref())
    }
    .await;
    let files = match result {
        Ok(f) => f,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
    };
    if dest.exists() {
        let old = parent.join(format!(".{base}.old-{}", std::process::id()));
        std::fs::rename(dest, &old).map_err(|e| OciError::io("replacing", dest, e))?;
        let _ = std::fs::remove_dir_all(&old);
    }
    std::fs::rename(&partial, dest).map_err(|e| OciError::io("moving release into place", dest, e))?;
    Ok(PulledRelease {
        digest: fetched.digest,
        dir: dest.to_path_buf(),
        files,
    })
}

/// Release tags of a repository (signature tags left out), for autoSubscribe.
pub async fn list_tags(source: &Source, repository: &Reference) -> Result<Vec<String>> {
    Ok(source
        .list_tags(repository)
        .await?
        .into_iter()
        .filter(|t| !(t.starts_with("sha256-") && (t.ends_with(".sig") || t.ends_with(".att"))))
        .collect())
}

/// A repository of release artifacts (in a registry or an OCI layout) as a [`ReleaseSource`]: the
/// controller lists its tags for autoSubscribe and pulls releases through the release cache.
#[derive(Debug, Clone)]
pub struct OciReleaseSource {
    source: Source,
    repository: Reference,
    shown: String,
}

impl OciReleaseSource {
    /// `repository` is `<registry>/<path>` without a tag, e.g. `registry.example/kaas/cluster-stacks`.
    pub fn new(source: Source, repository: &str) -> Result<Self> {
        let repository = source.parse(repository)?;
        let shown = format!("{}/{}", repository.registry(), repository.repository());
        Ok(Self {
            source,
            repository,
            shown,
        })
    }

    fn error(&self, e: OciError) -> ReleaseError {
        match e {
            OciError::NotFound { reference } => ReleaseError::NotFound {
                tag: reference,
                source_name: self.describe(),
            },
            e if e.is_content_error() => ReleaseError::Integrity {
                source_name: self.describe(),
                message: e.to_string(),
            },
            other => ReleaseError::Source {
                source_name: self.describe(),
                message: other.to_string(),
            },
        }
    }
}

impl ReleaseSource for OciReleaseSource {
    fn describe(&self) -> String {
        match &self.source {
            Source::Registry(_) => format!("OCI repository {}", self.shown),
            Source::Layout(l) => format!("OCI layout {} ({})", l.root().display(), self.shown),
        }
    }

    fn id(&self) -> String {
        match &self.source {
            Source::Registry(r) => format!(
                "{} as {}",
                self.describe(),
                r.config().credentials.identity(self.repository.registry())
            ),
            Source::Layout(_) => self.describe(),
        }
    }

    fn origin(&self) -> String {
        match &self.source {
            Source::Registry(_) => self.repository.registry().to_string(),
            Source::Layout(_) => self.describe(),
        }
    }

    fn list_releases(&self) -> BoxFuture<'_, std::result::Result<Vec<String>, ReleaseError>> {
        Box::pin(async move {
            list_tags(&self.source, &self.repository)
                .await
                .map_err(|e| self.error(e))
        })
    }

    fn download<'a>(
        &'a self,
        tag: &'a str,
        dest: &'a Path,
    ) -> BoxFuture<'a, std::result::Result<(), ReleaseError>> {
        Box::pin(async move {
            let reference = Reference::with_tag(
                self.repository.registry().to_string(),
                self.repository.repository().to_string(),
                tag.to_string(),
            );
            pull(&self.source, &reference, dest)
                .await
                .map(drop)
                .map_err(|e| self.error(e))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const META: &str = "apiVersion: metadata.clusterstack.x-k8s.io/v1alpha1\nversions:\n  clusterStack: v1\n  kubernetes: v1.27.3\n  components:\n    clusterAddon: v1\n    nodeImage: v1\n";

    #[test]
    fn csctl_media_types() {
        assert_eq!(
            media_type_for("metadata.yaml"),
            "application/vnd.scs.metadata.layer.v1+yaml"
        );
        assert_eq!(
            media_type_for("docker-ferrol-1-27-cluster-class-v1.tgz"),
            "application/vnd.scs.cluster-class.v1.tar+gzip"
        );
        assert_eq!(
            media_type_for("docker-ferrol-1-27-cluster-addon-v2.tgz"),
            "application/vnd.scs.cluster-addon.layer.v1.tar+gzip"
        );
        assert_eq!(
            media_type_for("node-images.yaml"),
            "application/vnd.scs.node-image.config.layer.v1+yaml"
        );
        assert_eq!(media_type_for("cluster-addon-values.yaml"), GENERIC_LAYER);
    }

    #[test]
    fn incomplete_releases_name_what_is_missing() {
        let files = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = files(&[
            "metadata.yaml",
            "p-n-1-27-cluster-class-v1.tgz",
            "p-n-1-27-cluster-addon-v1.tgz",
        ]);
        let ok = check_files("r", &all, Some(META.as_bytes())).expect("complete release");
        assert_eq!(ok.kubernetes_version, "v1.27.3");
        let err = check_files("r", &all, None).expect_err("should fail").to_string();
        assert!(err.contains("metadata.yaml is missing"), "{err}");
        let err = check_files("r", &all[..2], Some(META.as_bytes()))
            .expect_err("should fail")
            .to_string();
        assert!(err.contains("no cluster-addon chart"), "{err}");
        let err = check_files(
            "r",
            &all,
            Some(b"versions:\n  clusterStack: v1\n  kubernetes: ''\n"),
        )
        .expect_err("should fail")
        .to_string();
        assert!(err.contains("`versions.kubernetes` is empty"), "{err}");
        for bad in ["../x", "a/b", "", ".."] {
            assert!(check_file_name("r", bad).is_err(), "{bad}");
        }
    }
}
