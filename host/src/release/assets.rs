//! The asset set of one release in a directory (cso-behaviour.md §3.2), loaded and validated into
//! [`ReleaseAssets`]: `metadata.yaml`, the cluster-class and cluster-addon chart archives, the addon
//! configuration (`clusteraddon.yaml` for multi-stage or `cluster-addon-values.yaml` for legacy) and
//! `node-images.yaml`.
//!
//! Validation goes further than upstream's `CheckHelmCharts` (file present, matched by substring): the
//! chart files must have their exact expected names and be readable chart archives, the metadata must
//! agree with the release tag, and every stage of `clusteraddon.yaml` must exist in the addon archive.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::chart::{read_chart_archive, unpack_chart_archive, ArchiveLimits, ChartEntry};
use super::error::ReleaseError;
use super::metadata::Metadata;
use super::name::ReleaseName;

/// `metadata.yaml`.
pub const METADATA_FILE: &str = "metadata.yaml";
/// Multi-stage addon configuration.
pub const CLUSTER_ADDON_CONFIG_FILE: &str = "clusteraddon.yaml";
/// Legacy addon values template.
pub const CLUSTER_ADDON_VALUES_FILE: &str = "cluster-addon-values.yaml";
/// Provider node-image list.
pub const NODE_IMAGES_FILE: &str = "node-images.yaml";

/// How the cluster addons of a release are organised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddonLayout {
    /// One chart plus `cluster-addon-values.yaml` (absent values file: reported by the addon step).
    Legacy {
        /// `cluster-addon-values.yaml`, when present.
        values: Option<PathBuf>,
    },
    /// `clusteraddon.yaml` with stages per hook; the addon archive holds one chart per stage.
    MultiStage {
        /// Path of `clusteraddon.yaml`.
        config_path: PathBuf,
        /// Its parsed content.
        config: ClusterAddonConfig,
    },
}

/// `clusteraddon.yaml` (§3.2.4): ordered stages per lifecycle hook.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAddonConfig {
    /// Hook name (`AfterControlPlaneInitialized`, `BeforeClusterUpgrade`) -> stages in order.
    #[serde(default)]
    pub addon_stages: BTreeMap<String, Vec<AddonStage>>,
}

/// One stage: a chart directory of the addon archive, applied or deleted, with optional CEL gates.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AddonStage {
    /// Chart directory in the addon archive.
    pub name: String,
    /// `apply` or `delete`.
    pub action: StageAction,
    /// Wait before the stage.
    #[serde(default)]
    pub wait_for_pre_condition: Option<StageCondition>,
    /// Wait after the stage.
    #[serde(default)]
    pub wait_for_post_condition: Option<StageCondition>,
}

/// What a stage does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StageAction {
    /// Apply the chart's objects.
    Apply,
    /// Delete the chart's objects.
    Delete,
}

/// A CEL condition over named workload-cluster objects.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StageCondition {
    /// Objects bound to CEL variables.
    #[serde(default)]
    pub objects: Vec<ConditionObject>,
    /// The CEL expression.
    pub conditions: String,
}

/// An object bound to a CEL variable.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConditionObject {
    /// CEL variable name.
    pub key: String,
    /// apiVersion.
    pub api_version: String,
    /// Kind.
    pub kind: String,
    /// Name.
    pub name: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: String,
}

/// A validated release in a directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseAssets {
    /// The directory holding the files.
    pub dir: PathBuf,
    /// The release name parsed from its tag.
    pub name: ReleaseName,
    /// `metadata.yaml`.
    pub metadata: Metadata,
    /// The cluster-class chart archive.
    pub cluster_class_chart: PathBuf,
    /// The chart inside it.
    pub cluster_class: ChartEntry,
    /// The cluster-addon chart archive.
    pub cluster_addon_chart: PathBuf,
    /// The chart directories inside it (one for legacy, one per stage for multi-stage).
    pub cluster_addon_charts: Vec<ChartEntry>,
    /// Legacy or multi-stage addons.
    pub addon_layout: AddonLayout,
    /// `node-images.yaml`, when present (parsed by the provider plugin).
    pub node_images: Option<PathBuf>,
    /// What its chart archives may expand to (also when the addon archive is unpacked later).
    pub limits: ArchiveLimits,
}

/// Most bytes of a release's YAML files (`metadata.yaml`, `clusteraddon.yaml`, `node-images.yaml`).
pub const YAML_FILE_LIMIT: u64 = 1 << 20;

/// Reads one of the release's YAML files, refusing one over [`YAML_FILE_LIMIT`] before reading it.
fn read_small(path: &Path) -> Result<String, ReleaseError> {
    let size = std::fs::metadata(path)
        .map_err(ReleaseError::io("cannot read", path))?
        .len();
    if size > YAML_FILE_LIMIT {
        return Err(ReleaseError::io("cannot read", path)(std::io::Error::other(
            format!("{size} bytes is over the limit of {YAML_FILE_LIMIT} bytes for a release's YAML file"),
        )));
    }
    std::fs::read_to_string(path).map_err(ReleaseError::io("cannot read", path))
}

fn tgz_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".tgz"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn require_file(dir: &Path, tag: &str, file: &str, what: &str) -> Result<PathBuf, ReleaseError> {
    let path = dir.join(file);
    if path.is_file() {
        return Ok(path);
    }
    let found = tgz_files(dir);
    let hint = if found.is_empty() {
        format!("expected the {what}; the release has no .tgz files")
    } else {
        format!("expected the {what}; found {}", found.join(", "))
    };
    Err(ReleaseError::MissingFile {
        tag: tag.to_owned(),
        file: file.to_owned(),
        hint,
    })
}

impl ReleaseAssets {
    /// Loads and validates the release `tag` from `dir` (a directory holding the release's files), with
    /// the default [`ArchiveLimits`].
    pub fn load(dir: &Path, tag: &str) -> Result<Self, ReleaseError> {
        Self::load_within(dir, tag, ArchiveLimits::default())
    }

    /// [`ReleaseAssets::load`] with the given archive limits.
    pub fn load_within(dir: &Path, tag: &str, limits: ArchiveLimits) -> Result<Self, ReleaseError> {
        let name = ReleaseName::parse_tag(tag)?;
        let tag = name.tag();
        let meta_path = dir.join(METADATA_FILE);
        if !meta_path.is_file() {
            return Err(ReleaseError::MissingFile {
                tag,
                file: METADATA_FILE.into(),
                hint: format!("every release needs one; looked in {}", dir.display()),
            });
        }
        let text = read_small(&meta_path)?;
        let metadata = Metadata::parse(&text).map_err(|source| ReleaseError::Metadata {
            tag: tag.clone(),
            source,
        })?;
        if metadata.cluster_stack != name.version {
            return Err(ReleaseError::Inconsistent {
                message: format!(
                    "metadata.yaml versions.clusterStack is {} but the release tag says {}",
                    metadata.cluster_stack.dot(),
                    name.version.dot()
                ),
                tag,
            });
        }
        if metadata.kubernetes_minor != name.kubernetes {
            return Err(ReleaseError::Inconsistent {
                message: format!(
                    "metadata.yaml versions.kubernetes is {} but the release tag is for Kubernetes {}",
                    metadata.kubernetes, name.kubernetes
                ),
                tag,
            });
        }

        let class_file = name.cluster_class_chart_file();
        let cluster_class_chart = require_file(dir, &tag, &class_file, "cluster-class chart")?;
        let chart_err = |file: &str| {
            let (tag, file) = (tag.clone(), file.to_owned());
            move |reason| ReleaseError::Chart { tag, file, reason }
        };
        let mut class_charts =
            read_chart_archive(&cluster_class_chart, &limits).map_err(chart_err(&class_file))?;
        if class_charts.len() != 1 {
            return Err(chart_err(&class_file)(format!(
                "expected one chart, found {}",
                class_charts
                    .iter()
                    .map(|c| c.dir.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let cluster_class = class_charts.remove(0);

        let addon_file = name.cluster_addon_chart_file(&metadata.cluster_addon);
        let cluster_addon_chart = require_file(dir, &tag, &addon_file, "cluster-addon chart")?;
        let cluster_addon_charts =
            read_chart_archive(&cluster_addon_chart, &limits).map_err(chart_err(&addon_file))?;

        let config_path = dir.join(CLUSTER_ADDON_CONFIG_FILE);
        let addon_layout = if config_path.is_file() {
            let text = read_small(&config_path)?;
            let config: ClusterAddonConfig =
                serde_yaml::from_str(&text).map_err(|e| ReleaseError::Config {
                    tag: tag.clone(),
                    file: CLUSTER_ADDON_CONFIG_FILE,
                    reason: e.to_string(),
                })?;
            for (hook, stages) in &config.addon_stages {
                for stage in stages {
                    if !cluster_addon_charts.iter().any(|c| c.dir == stage.name) {
                        return Err(ReleaseError::Config {
                            tag,
                            file: CLUSTER_ADDON_CONFIG_FILE,
                            reason: format!(
                                "stage {:?} of hook {hook} has no chart directory in {addon_file} (it has: {})",
                                stage.name,
                                cluster_addon_charts.iter().map(|c| c.dir.as_str()).collect::<Vec<_>>().join(", ")
                            ),
                        });
                    }
                }
            }
            AddonLayout::MultiStage { config_path, config }
        } else {
            if cluster_addon_charts.len() != 1 {
                return Err(chart_err(&addon_file)(format!(
                    "a release without {CLUSTER_ADDON_CONFIG_FILE} needs exactly one chart in its addon archive, found {}",
                    cluster_addon_charts.len()
                )));
            }
            let values = dir.join(CLUSTER_ADDON_VALUES_FILE);
            AddonLayout::Legacy {
                values: values.is_file().then_some(values),
            }
        };

        let node_images_path = dir.join(NODE_IMAGES_FILE);
        let node_images = if node_images_path.is_file() {
            let text = read_small(&node_images_path)?;
            serde_yaml::from_str::<serde_yaml::Value>(&text).map_err(|e| ReleaseError::Config {
                tag: tag.clone(),
                file: NODE_IMAGES_FILE,
                reason: e.to_string(),
            })?;
            Some(node_images_path)
        } else {
            None
        };

        Ok(Self {
            dir: dir.to_owned(),
            name,
            metadata,
            cluster_class_chart,
            cluster_class,
            cluster_addon_chart,
            cluster_addon_charts,
            addon_layout,
            node_images,
            limits,
        })
    }
}

impl ReleaseAssets {
    /// Unpacks the cluster-addon archive into `dest` and returns each chart directory by name (the
    /// stage names of a multi-stage release). `dest` is created; existing files are overwritten.
    pub fn unpack_cluster_addon(&self, dest: &Path) -> Result<BTreeMap<String, PathBuf>, ReleaseError> {
        std::fs::create_dir_all(dest).map_err(ReleaseError::io("cannot create", dest))?;
        let file = self
            .cluster_addon_chart
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        unpack_chart_archive(&self.cluster_addon_chart, dest, &self.limits).map_err(|reason| {
            ReleaseError::Chart {
                tag: self.name.tag(),
                file,
                reason,
            }
        })?;
        Ok(self
            .cluster_addon_charts
            .iter()
            .map(|c| (c.dir.clone(), dest.join(&c.dir)))
            .collect())
    }
}
