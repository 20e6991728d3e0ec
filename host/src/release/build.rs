//! Building a release from cluster stack sources the way `csctl create --mode hash` does, so a stack
//! author can go from a source folder to a release this controller (or upstream's) reads.
//!
//! What csctl does, step by step, and what is done here the same way:
//! - `csctl.yaml` gives the provider type, the stack name and the full Kubernetes version (`v1.30.10`).
//! - `hashes.json`: Go's `dirhash.Hash1` (SHA-256 over the sorted `"<sha256 hex>  <path>\n"` lines of
//!   every file) of the whole stack folder, and of `cluster-addon/`, `cluster-class/` and `node-image/`,
//!   plus the SHA-256 of `cluster-addon-values.yaml`; each base64 text "cleaned" (no `h1:`, `/`, `=`, `+`,
//!   lower case). The version is `v0-sha.` and the first 7 characters of the stack's hash, for the cluster
//!   stack, the cluster addon and the node images alike.
//! - Every file is copied with csctl's placeholders replaced (`<< .ClusterClassVersion >>`,
//!   `<< .ClusterAddonVersion >>`, `<< .NodeImageVersion >>`; unknown placeholders become empty).
//! - `version` in `cluster-class/Chart.yaml` becomes the cluster stack version, in `cluster-addon/Chart.yaml`
//!   (a legacy addon chart) the cluster-addon version.
//! - The cluster-class chart is packaged with Helm (`<chart name>-<version>.tgz`). The addon archive is
//!   `helm package` of the legacy chart, or, with `clusteraddon.yaml` in the stack, a tar.gz of the
//!   `cluster-addon/` folder's content: one chart folder per stage at its root.
//! - `clusteraddon.yaml` (multi-stage) or the templated `cluster-addon-values.yaml` (legacy) is copied,
//!   and `metadata.yaml` written as csctl's YAML encoder writes it.
//!
//! Differences, on purpose: the release folder is written atomically (a failed build leaves no half
//! release, an old one is replaced whole); the chart names are checked against the names the controllers
//! look for, so a misnamed chart fails here and not later in a cluster; the addon archive is reproducible
//! (sorted entries, no timestamps or owners). Node images are left to the provider: csctl hands the
//! `node-image/` folder to a provider binary (`csctl-<provider>`), which is not part of this build.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::assets::{ReleaseAssets, CLUSTER_ADDON_CONFIG_FILE, CLUSTER_ADDON_VALUES_FILE, METADATA_FILE};
use super::name::ReleaseName;
use super::version::{KubernetesVersion, Version};
use crate::render::Renderer;

/// The csctl configuration file of a stack.
pub const CSCTL_CONFIG_FILE: &str = "csctl.yaml";
/// The hashes file of a release.
pub const HASHES_FILE: &str = "hashes.json";

/// Why a release could not be built. Messages name the stack folder or file and what to change.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `csctl.yaml` is missing or invalid.
    #[error("{}: {reason}", path.display())]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong and what to write instead.
        reason: String,
    },
    /// A file of the stack cannot be used as csctl would.
    #[error("{}: {reason}", path.display())]
    Source {
        /// The file or folder.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Helm could not package a chart.
    #[error("packaging {what}: {source}")]
    Package {
        /// Which chart.
        what: &'static str,
        /// Helm's error.
        source: crate::render::RenderError,
    },
    /// The built release does not load (a chart named differently than the release needs, a stage
    /// of `clusteraddon.yaml` without its chart folder, ...).
    #[error("the built release {tag} is not valid: {source}")]
    Invalid {
        /// Release tag.
        tag: String,
        /// What the release loader found.
        source: super::ReleaseError,
    },
    /// File system error on a path.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> BuildError {
    let path = path.into();
    move |source| BuildError::Io { action, path, source }
}

/// How the version of the release is chosen (csctl's `--mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum BuildMode {
    /// `v0-sha.<first 7 characters of the stack's content hash>`, for development releases.
    #[default]
    Hash,
}

/// `csctl.yaml`: what the build needs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsctlConfig {
    /// `config.provider.type`, e.g. `docker`.
    pub provider: String,
    /// `config.clusterStackName`, e.g. `scs`.
    pub name: String,
    /// `config.kubernetesVersion`, e.g. `v1.30.10`.
    pub kubernetes: String,
    /// Its `<major>.<minor>`.
    pub kubernetes_minor: KubernetesVersion,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCsctl {
    #[serde(default)]
    config: RawCsctlConfig,
}

#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawCsctlConfig {
    #[serde(default)]
    kubernetes_version: String,
    #[serde(default)]
    cluster_stack_name: String,
    #[serde(default)]
    provider: RawProvider,
}

#[derive(Default, Deserialize)]
struct RawProvider {
    #[serde(default, rename = "type")]
    type_: String,
}

impl CsctlConfig {
    /// Parses `csctl.yaml` with csctl's checks.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawCsctl = serde_yaml::from_str(text).map_err(|e| format!("not valid YAML: {e}"))?;
        let c = raw.config;
        let provider = c.provider.type_;
        if provider.is_empty() {
            return Err("config.provider.type must not be empty (e.g. docker, openstack)".into());
        }
        let dns_label = provider.len() <= 253
            && provider
                .chars()
                .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
            && !provider.starts_with('-')
            && !provider.ends_with('-');
        if !dns_label {
            return Err(format!(
                "config.provider.type {provider:?} is invalid: lower-case letters, digits and '-' only"
            ));
        }
        if c.cluster_stack_name.is_empty() {
            return Err("config.clusterStackName must not be empty (e.g. scs)".into());
        }
        let full = c.kubernetes_version;
        let numbers: Vec<&str> = full.strip_prefix('v').unwrap_or("").split('.').collect();
        if numbers.len() != 3
            || numbers
                .iter()
                .any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(format!(
                "config.kubernetesVersion {full:?} is invalid: write the full version, e.g. v1.30.10"
            ));
        }
        let kubernetes_minor = KubernetesVersion::from_parts(numbers[0], numbers[1])
            .map_err(|e| format!("config.kubernetesVersion {full:?}: {e}"))?;
        Ok(Self {
            provider,
            name: c.cluster_stack_name,
            kubernetes: full,
            kubernetes_minor,
        })
    }
}

/// `hashes.json` (csctl's `ReleaseHash`, fields in its order).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseHashes {
    /// The whole stack folder.
    pub cluster_stack: String,
    /// `cluster-addon/`.
    pub cluster_addon_dir: String,
    /// `cluster-addon-values.yaml`.
    pub cluster_addon_values: String,
    /// `cluster-class/`.
    pub cluster_class_dir: String,
    /// `node-image/`, when the stack has one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub node_image_dir: String,
}

/// What [`build`] produced.
#[derive(Debug, Clone)]
pub struct BuiltRelease {
    /// The release folder (`<out>/<tag>`).
    pub dir: PathBuf,
    /// The release tag, e.g. `docker-scs-1-30-v0-sha-abc1234`.
    pub tag: String,
    /// The ClusterClass name Clusters use, e.g. `docker-scs-1-30-v0-sha.abc1234`.
    pub class: String,
    /// The cluster stack version in dot form, e.g. `v0-sha.abc1234`.
    pub version: String,
    /// `metadata.yaml`'s Kubernetes version, e.g. `v1.30.10` (a Cluster's `spec.topology.version`).
    pub kubernetes: String,
    /// The hashes written to `hashes.json`.
    pub hashes: ReleaseHashes,
    /// Files of the release, sorted.
    pub files: Vec<String>,
}

/// Go's `dirhash.Hash1` of a list of `(name, content digest)`: SHA-256 over `"<hex>  <name>\n"` lines in
/// name order, base64 with the `h1:` prefix.
pub fn hash1(files: &[(String, [u8; 32])]) -> String {
    let mut sorted: Vec<&(String, [u8; 32])> = files.iter().collect();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut summary = Sha256::new();
    for (name, digest) in sorted {
        summary.update(format!("{}  {name}\n", hex::encode(digest)).as_bytes());
    }
    format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(summary.finalize())
    )
}

/// csctl's `clean`: drops `h1:`, `/`, `=` and `+`, lower case.
pub fn clean_hash(hash: &str) -> String {
    hash.strip_prefix("h1:")
        .unwrap_or(hash)
        .chars()
        .filter(|c| !matches!(c, '/' | '=' | '+'))
        .collect::<String>()
        .to_lowercase()
}

/// Every file below `dir` (recursively, symlinks read through as Go's `os.Open` does) with its path
/// relative to `dir` in `/` form.
fn files_below(dir: &Path) -> Result<Vec<(String, PathBuf)>, BuildError> {
    let mut out = Vec::new();
    let mut pending = vec![(dir.to_path_buf(), String::new())];
    while let Some((path, rel)) = pending.pop() {
        let entries = std::fs::read_dir(&path).map_err(io("cannot read the folder", &path))?;
        for entry in entries {
            let entry = entry.map_err(io("cannot read the folder", &path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            let kind = entry.file_type().map_err(io("cannot read", entry.path()))?;
            if kind.is_dir() {
                pending.push((entry.path(), child_rel));
            } else {
                out.push((child_rel, entry.path()));
            }
        }
    }
    out.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(out)
}

fn sha256_file(path: &Path) -> Result<[u8; 32], BuildError> {
    let mut file = std::fs::File::open(path).map_err(io("cannot read", path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io("cannot read", path))?;
    Ok(hasher.finalize().into())
}

/// `dirhash.HashDir(dir, "", Hash1)`, cleaned as csctl does.
pub fn dir_hash(dir: &Path) -> Result<String, BuildError> {
    let mut files = Vec::new();
    for (rel, path) in files_below(dir)? {
        if rel.contains('\n') {
            return Err(BuildError::Source {
                path,
                reason: "file names with a newline cannot be hashed (Go's dirhash refuses them too)".into(),
            });
        }
        files.push((rel, sha256_file(&path)?));
    }
    Ok(clean_hash(&hash1(&files)))
}

/// The hashes csctl writes for the stack in `stack`.
pub fn release_hashes(stack: &Path) -> Result<ReleaseHashes, BuildError> {
    let mut hashes = ReleaseHashes {
        cluster_stack: dir_hash(stack)?,
        ..ReleaseHashes::default()
    };
    for (folder, field) in [
        ("cluster-addon", &mut hashes.cluster_addon_dir),
        ("cluster-class", &mut hashes.cluster_class_dir),
        ("node-image", &mut hashes.node_image_dir),
    ] {
        let dir = stack.join(folder);
        if dir.is_dir() {
            *field = dir_hash(&dir)?;
        }
    }
    let values = stack.join(CLUSTER_ADDON_VALUES_FILE);
    if values.is_file() {
        let digest = sha256_file(&values)?;
        hashes.cluster_addon_values = clean_hash(&base64::engine::general_purpose::STANDARD.encode(digest));
    }
    Ok(hashes)
}

/// csctl's placeholders (`<< .Name >>`, fasttemplate with start tag `"<< "` and end tag `" >>"`) replaced
/// by `values`; an unknown name becomes empty, a start tag without an end tag is an error.
pub fn fill_placeholders(text: &[u8], values: &BTreeMap<&str, &str>) -> Result<Vec<u8>, String> {
    const START: &[u8] = b"<< ";
    const END: &[u8] = b" >>";
    let find = |haystack: &[u8], needle: &[u8]| haystack.windows(needle.len()).position(|w| w == needle);
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = find(rest, START) {
        out.extend_from_slice(&rest[..start]);
        let after = &rest[start + START.len()..];
        let end = find(after, END).ok_or_else(|| {
            format!(
                "a csctl placeholder starts with {:?} but has no closing {:?}",
                "<< ", " >>"
            )
        })?;
        let tag = String::from_utf8_lossy(&after[..end]);
        if let Some(value) = values.get(tag.as_ref()) {
            out.extend_from_slice(value.as_bytes());
        }
        rest = &after[end + END.len()..];
    }
    out.extend_from_slice(rest);
    Ok(out)
}

/// Sets `version` of a `Chart.yaml`, as csctl's `overwriteVersionInFile` does.
fn set_chart_version(chart_yaml: &Path, version: &str) -> Result<(), BuildError> {
    let text = std::fs::read_to_string(chart_yaml).map_err(io("cannot read", chart_yaml))?;
    let mut chart: serde_yaml::Mapping = serde_yaml::from_str(&text).map_err(|e| BuildError::Source {
        path: chart_yaml.to_owned(),
        reason: format!("not valid YAML: {e}"),
    })?;
    if !chart.get("version").is_some_and(serde_yaml::Value::is_string) {
        return Err(BuildError::Source {
            path: chart_yaml.to_owned(),
            reason: "has no version (csctl replaces it, so it must be there, e.g. `version: v1`)".into(),
        });
    }
    chart.insert("version".into(), version.into());
    let text = serde_yaml::to_string(&chart).map_err(|e| BuildError::Source {
        path: chart_yaml.to_owned(),
        reason: e.to_string(),
    })?;
    std::fs::write(chart_yaml, text).map_err(io("cannot write", chart_yaml))
}

/// `metadata.yaml` as csctl's encoder (gopkg.in/yaml.v3, four-space indent) writes it.
pub fn metadata_yaml(version: &str, kubernetes: &str) -> String {
    format!(
        "apiVersion: metadata.clusterstack.x-k8s.io/v1alpha1\nversions:\n    clusterStack: {version}\n    kubernetes: {kubernetes}\n    components:\n        clusterAddon: {version}\n        nodeImage: {version}\n        clusterClass: \"\"\n"
    )
}

/// `hashes.json` as csctl writes it (Go's `json.MarshalIndent` with two spaces, no final newline).
pub fn hashes_json(hashes: &ReleaseHashes) -> String {
    let mut buf = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"  ");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
    serde::Serialize::serialize(hashes, &mut ser)
        .unwrap_or_else(|e| unreachable!("strings always serialise: {e}"));
    String::from_utf8(buf).unwrap_or_else(|e| unreachable!("serde_json writes UTF-8: {e}"))
}

/// Copies `stack` into `dest` with the placeholders filled.
fn copy_templated(stack: &Path, dest: &Path, values: &BTreeMap<&str, &str>) -> Result<(), BuildError> {
    for (rel, path) in files_below(stack)? {
        let data = std::fs::read(&path).map_err(io("cannot read", &path))?;
        let filled = fill_placeholders(&data, values).map_err(|reason| BuildError::Source {
            path: path.clone(),
            reason,
        })?;
        let to = dest.join(&rel);
        if let Some(parent) = to.parent() {
            std::fs::create_dir_all(parent).map_err(io("cannot create", parent))?;
        }
        std::fs::write(&to, filled).map_err(io("cannot write", &to))?;
    }
    Ok(())
}

/// A reproducible tar.gz of the content of `dir` (its entries at the archive's root), as csctl packs a
/// multi-stage addon folder.
fn pack_folder_content(dir: &Path, archive: &Path) -> Result<(), BuildError> {
    let file = std::fs::File::create(archive).map_err(io("cannot create", archive))?;
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        file,
        flate2::Compression::default(),
    ));
    let files = files_below(dir)?;
    let mut dirs: std::collections::BTreeSet<PathBuf> = std::collections::BTreeSet::new();
    for (rel, path) in &files {
        // Each folder gets its entry before its first file, as a directory walk lists them.
        let mut parents: Vec<&Path> = Path::new(rel)
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        parents.reverse();
        for parent in parents {
            if dirs.insert(parent.to_path_buf()) {
                let mut header = tar::Header::new_ustar();
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                header.set_mtime(0);
                tar.append_data(&mut header, parent, std::io::empty())
                    .map_err(io("cannot write", archive))?;
            }
        }
        let data = std::fs::read(path).map_err(io("cannot read", path))?;
        let mut header = tar::Header::new_ustar();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        tar.append_data(&mut header, rel, data.as_slice())
            .map_err(io("cannot write", archive))?;
    }
    let gz = tar.into_inner().map_err(io("cannot write", archive))?;
    let mut file = gz.finish().map_err(io("cannot write", archive))?;
    file.flush().map_err(io("cannot write", archive))
}

/// Packages `chart_dir` with Helm into `dest` and checks the archive is `<chart_name>-<version>.tgz`, the
/// name the release needs.
fn package_chart(
    helm: &dyn Renderer,
    what: &'static str,
    chart_dir: &Path,
    dest: &Path,
    (chart_name, version): (&str, &str),
) -> Result<(), BuildError> {
    let archive = helm
        .package(chart_dir, dest)
        .map_err(|source| BuildError::Package { what, source })?;
    let got = archive
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let expected = format!("{chart_name}-{version}.tgz");
    if got != expected {
        return Err(BuildError::Source {
            path: chart_dir.join("Chart.yaml"),
            reason: format!(
                "Helm packaged the {what} as {got}, but the release needs {expected}: set `name: {chart_name}` in Chart.yaml"
            ),
        });
    }
    Ok(())
}

/// Builds the release of the stack in `stack` into `<out>/<tag>/` (replacing an older build of the same
/// tag) and checks that it loads as a release. `helm` packages the charts.
pub fn build(
    stack: &Path,
    out: &Path,
    mode: BuildMode,
    helm: &dyn Renderer,
) -> Result<BuiltRelease, BuildError> {
    let BuildMode::Hash = mode;
    let config_path = stack.join(CSCTL_CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(|e| BuildError::Config {
        path: config_path.clone(),
        reason: format!(
            "cannot read it ({e}); is {} a cluster stack folder?",
            stack.display()
        ),
    })?;
    let config = CsctlConfig::parse(&text).map_err(|reason| BuildError::Config {
        path: config_path.clone(),
        reason,
    })?;
    let hashes = release_hashes(stack)?;
    let version = format!("v0-sha.{}", hashes.cluster_stack.get(..7).unwrap_or_default());
    let parsed = Version::parse_dot(&version).map_err(|e| BuildError::Source {
        path: stack.to_owned(),
        reason: format!("the hash version {version} does not parse: {e}"),
    })?;
    let name = ReleaseName {
        provider: config.provider.clone(),
        name: config.name.clone(),
        kubernetes: config.kubernetes_minor,
        version: parsed.clone(),
    };
    let tag = name.tag();
    let multi_stage = stack.join(CLUSTER_ADDON_CONFIG_FILE).is_file();

    std::fs::create_dir_all(out).map_err(io("cannot create", out))?;
    let work = tempfile::Builder::new()
        .prefix(&format!(".{tag}.build-"))
        .tempdir_in(out)
        .map_err(io("cannot create a build folder in", out))?;
    let sources = work.path().join("sources");
    let release = work.path().join("release");
    std::fs::create_dir_all(&release).map_err(io("cannot create", &release))?;

    let placeholders = BTreeMap::from([
        (".ClusterClassVersion", version.as_str()),
        (".ClusterAddonVersion", version.as_str()),
        (".NodeImageVersion", version.as_str()),
    ]);
    copy_templated(stack, &sources, &placeholders)?;
    let addon_chart_yaml = sources.join("cluster-addon/Chart.yaml");
    if addon_chart_yaml.is_file() {
        set_chart_version(&addon_chart_yaml, &version)?;
    }
    set_chart_version(&sources.join("cluster-class/Chart.yaml"), &version)?;

    std::fs::write(release.join(HASHES_FILE), hashes_json(&hashes))
        .map_err(io("cannot write", release.join(HASHES_FILE)))?;
    let prefix = name.stack_prefix();
    package_chart(
        helm,
        "cluster-class chart",
        &sources.join("cluster-class"),
        &release,
        (&format!("{prefix}-cluster-class"), &version),
    )?;
    let addon_file = name.cluster_addon_chart_file(&parsed);
    if multi_stage {
        pack_folder_content(&sources.join("cluster-addon"), &release.join(&addon_file))?;
        let from = stack.join(CLUSTER_ADDON_CONFIG_FILE);
        std::fs::copy(&from, release.join(CLUSTER_ADDON_CONFIG_FILE)).map_err(io("cannot copy", &from))?;
    } else {
        package_chart(
            helm,
            "cluster-addon chart",
            &sources.join("cluster-addon"),
            &release,
            (&format!("{prefix}-cluster-addon"), &version),
        )?;
        let from = sources.join(CLUSTER_ADDON_VALUES_FILE);
        std::fs::copy(&from, release.join(CLUSTER_ADDON_VALUES_FILE)).map_err(|e| BuildError::Source {
            path: stack.join(CLUSTER_ADDON_VALUES_FILE),
            reason: format!("cannot copy it ({e}); a stack without clusteraddon.yaml needs one"),
        })?;
    }
    std::fs::write(
        release.join(METADATA_FILE),
        metadata_yaml(&version, &config.kubernetes),
    )
    .map_err(io("cannot write", release.join(METADATA_FILE)))?;

    ReleaseAssets::load(&release, &tag).map_err(|source| BuildError::Invalid {
        tag: tag.clone(),
        source,
    })?;
    let dir = out.join(&tag);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io("cannot replace", &dir))?;
    }
    std::fs::rename(&release, &dir).map_err(io("cannot move the release to", &dir))?;
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .map_err(io("cannot read", &dir))?
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect();
    files.sort();
    Ok(BuiltRelease {
        dir,
        tag,
        class: name.class_name(),
        version,
        kubernetes: config.kubernetes,
        hashes,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/real-stacks/stacks/docker-scs")
    }

    #[test]
    fn the_stack_hash_is_go_dirhash_cleaned_as_csctl_does() {
        // The same summary with coreutils, independent of this code:
        //   cd tests/fixtures/real-stacks/stacks/docker-scs && find . -type f | sed 's|^\./||' | LC_ALL=C sort |
        //   while read f; do sha256sum "$f"; done | sha256sum | cut -d' ' -f1 | xxd -r -p | base64 |
        //   tr -d '/=+' | tr A-Z a-z
        let hashes = release_hashes(&fixture()).expect("hashes");
        assert_eq!(hashes.cluster_stack, "d2lgujmpaticdl7mpnct8bzls3xudync2wtveiqe");
        assert!(
            hashes.node_image_dir.is_empty(),
            "the docker stack has no node-image folder"
        );
        assert!(!hashes.cluster_addon_values.is_empty());
        let json = hashes_json(&hashes);
        assert!(
            json.starts_with("{\n  \"clusterStack\": \"d2lgujmpaticdl7mpnct8bzls3xudync2wtveiqe\",\n  \"clusterAddonDir\": "),
            "{json}"
        );
        assert!(!json.contains("nodeImageDir") && !json.ends_with('\n'), "{json}");
    }

    #[test]
    fn placeholders_are_filled_like_csctl_fasttemplate() {
        let values = BTreeMap::from([(".ClusterAddonVersion", "v0-sha.abc1234")]);
        let filled = fill_placeholders(
            b"version: << .ClusterAddonVersion >>, x: << .Unknown >>.",
            &values,
        );
        assert_eq!(filled.as_deref(), Ok(&b"version: v0-sha.abc1234, x: ."[..]));
        assert_eq!(
            fill_placeholders(b"a << b", &values)
                .map(|_| ())
                .expect_err("unclosed"),
            "a csctl placeholder starts with \"<< \" but has no closing \" >>\""
        );
        assert_eq!(
            fill_placeholders(b"a <<b>> c", &values).as_deref(),
            Ok(&b"a <<b>> c"[..])
        );
    }

    #[test]
    fn csctl_yaml_is_checked_as_csctl_does() {
        let ok = CsctlConfig::parse(
            "config:\n  kubernetesVersion: v1.30.10\n  clusterStackName: scs\n  provider:\n    type: docker\n",
        )
        .expect("valid");
        assert_eq!(
            (ok.provider.as_str(), ok.name.as_str(), ok.kubernetes_minor.dash()),
            ("docker", "scs", "1-30".into())
        );
        let bad = |text: &str| CsctlConfig::parse(text).expect_err("invalid csctl.yaml");
        assert_eq!(
            bad("config:\n  kubernetesVersion: 1.30\n  clusterStackName: scs\n  provider: {type: docker}\n"),
            "config.kubernetesVersion \"1.30\" is invalid: write the full version, e.g. v1.30.10"
        );
        assert_eq!(
            bad("config:\n  kubernetesVersion: v1.30.1\n  clusterStackName: scs\n  provider: {type: Docker}\n"),
            "config.provider.type \"Docker\" is invalid: lower-case letters, digits and '-' only"
        );
        assert_eq!(
            bad("config:\n  kubernetesVersion: v1.30.1\n  provider: {type: docker}\n"),
            "config.clusterStackName must not be empty (e.g. scs)"
        );
    }

    #[test]
    fn the_metadata_written_is_the_metadata_read() {
        let text = metadata_yaml("v0-sha.abc1234", "v1.30.10");
        let parsed = super::super::Metadata::parse(&text).expect("metadata.yaml loads");
        assert_eq!(parsed.cluster_stack.dot(), "v0-sha.abc1234");
        assert_eq!(parsed.cluster_addon.dot(), "v0-sha.abc1234");
        assert_eq!(parsed.kubernetes, "v1.30.10");
    }
}
