//! The fixture format: a directory per case, input files named after the export's parameters, golden
//! outputs beside them. Inputs are read when the case runs, so a broken file fails only its own case.
//!
//! ```text
//! fixtures/
//!   plugin.yaml            optional: limits, capabilities, state, clock for every case
//!   release.yaml ...       optional: an input file here serves every case that has none of its own
//!   <case>/
//!     case.yaml            export: <name>  (+ optional description and overrides of plugin.yaml)
//!     release.yaml images.yaml objects.yaml cluster.yaml values.yaml config.yaml   inputs (.yaml/.yml/.json)
//!     secrets.yaml         `<secret>/<key>: value` served by the `secrets` capability
//!     state.yaml           the `state` store before the call
//!     cassette.yaml        recorded HTTP interactions for the `http` capability
//!     expected.yaml        golden result: `ok: ...`, `error: {<case>: ...}` or `failure: <Kind>`
//!     expected-state.yaml  golden `state` store after the call
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use super::HarnessError;
use crate::api::{Capabilities as CapabilitySpec, PluginLimits};
use crate::plugin::types::{ClusterInfo, NodeImage, ReleaseInfo};
use crate::plugin::{Determinism, Grants, Limits};

/// File names of a case directory.
pub const CASE_FILE: &str = "case.yaml";
pub const SUITE_FILE: &str = "plugin.yaml";
pub const EXPECTED_FILE: &str = "expected.yaml";
pub const EXPECTED_STATE_FILE: &str = "expected-state.yaml";
pub const CASSETTE_FILE: &str = "cassette.yaml";

/// Time the fixed wall clock shows unless a fixture sets `clock.unixSeconds` (2026-01-01T00:00:00Z).
pub const DEFAULT_UNIX_SECONDS: u64 = 1_767_225_600;
/// Bytes the fixture's `state` store may hold, as in the controller.
pub const STATE_QUOTA: u64 = 1 << 20;

/// The export a case calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Export {
    Info,
    ValidateConfig,
    ReconcileNodeImages,
    CleanupNodeImages,
    PatchClusterClass,
    AddonValues,
}

impl Export {
    pub fn name(self) -> &'static str {
        match self {
            Export::Info => "info",
            Export::ValidateConfig => "validate-config",
            Export::ReconcileNodeImages => "reconcile-node-images",
            Export::CleanupNodeImages => "cleanup-node-images",
            Export::PatchClusterClass => "patch-cluster-class",
            Export::AddonValues => "addon-values",
        }
    }

    /// The input files the export reads, in parameter order.
    pub fn inputs(self) -> &'static [&'static str] {
        match self {
            Export::Info => &[],
            Export::ValidateConfig => &["config"],
            Export::ReconcileNodeImages | Export::CleanupNodeImages => &["release", "images"],
            Export::PatchClusterClass => &["release", "objects"],
            Export::AddonValues => &["cluster", "values"],
        }
    }
}

/// Fixed clocks and randomness for a case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Clock {
    /// What the guest's wall clock shows, in seconds since the Unix epoch.
    #[serde(default = "default_unix_seconds")]
    pub unix_seconds: u64,
    /// Seed of the guest's random numbers.
    #[serde(default)]
    pub seed: u64,
}

fn default_unix_seconds() -> u64 {
    DEFAULT_UNIX_SECONDS
}

impl Default for Clock {
    fn default() -> Self {
        Clock {
            unix_seconds: DEFAULT_UNIX_SECONDS,
            seed: 0,
        }
    }
}

/// How a case runs: `plugin.yaml`, and the same keys in `case.yaml` overriding it. `limits` and
/// `capabilities` are spelled exactly as in a ProviderPlugin's spec, so they can be copied across.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunSpec {
    /// Only in `case.yaml`: the export to call.
    #[serde(default)]
    pub export: Option<Export>,
    /// Only in `case.yaml`: what the case checks (shown in reports).
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub limits: Option<PluginLimits>,
    #[serde(default)]
    pub capabilities: Option<CapabilitySpec>,
    /// Grant the `state` store.
    #[serde(default)]
    pub state: Option<bool>,
    #[serde(default)]
    pub clock: Option<Clock>,
}

impl RunSpec {
    /// `self` with every key `over` sets replaced.
    fn merged(&self, over: &RunSpec) -> RunSpec {
        RunSpec {
            export: over.export.or(self.export),
            description: over.description.clone().or_else(|| self.description.clone()),
            limits: over.limits.clone().or_else(|| self.limits.clone()),
            capabilities: over.capabilities.clone().or_else(|| self.capabilities.clone()),
            state: over.state.or(self.state),
            clock: over.clock.or(self.clock),
        }
    }
}

/// A fixtures directory: its defaults and its cases, sorted by name.
#[derive(Debug, Clone)]
pub struct Suite {
    pub dir: PathBuf,
    pub cases: Vec<Case>,
}

/// One case: a directory with a `case.yaml`.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub dir: PathBuf,
    /// The fixtures directory (fallback for input files).
    pub suite_dir: PathBuf,
    pub export: Export,
    pub spec: RunSpec,
}

impl Suite {
    /// Reads `plugin.yaml` and every `*/case.yaml` below `dir`; `only` keeps the cases whose name contains it.
    pub fn load(dir: &Path, only: Option<&str>) -> Result<Suite, HarnessError> {
        let entries = std::fs::read_dir(dir).map_err(|e| HarnessError::Fixture {
            path: dir.to_path_buf(),
            reason: format!("cannot read the fixtures directory: {e}"),
        })?;
        let suite_file = dir.join(SUITE_FILE);
        let defaults: RunSpec = if suite_file.exists() {
            read_yaml(&suite_file)?
        } else {
            RunSpec::default()
        };
        if defaults.export.is_some() || defaults.description.is_some() {
            return Err(HarnessError::Fixture {
                path: suite_file,
                reason: "`export` and `description` belong in each case's case.yaml, not in plugin.yaml"
                    .into(),
            });
        }
        let mut cases = Vec::new();
        for entry in entries.flatten() {
            let case_dir = entry.path();
            let case_file = case_dir.join(CASE_FILE);
            if !case_dir.is_dir() || !case_file.exists() {
                continue;
            }
            let name = entry.file_name().to_string_lossy().into_owned();
            if only.is_some_and(|only| !name.contains(only)) {
                continue;
            }
            let own: RunSpec = read_yaml(&case_file)?;
            let spec = defaults.merged(&own);
            let export = spec.export.ok_or_else(|| HarnessError::Fixture {
                path: case_file.clone(),
                reason: "missing `export:` (one of info, validate-config, reconcile-node-images, \
                         cleanup-node-images, patch-cluster-class, addon-values)"
                    .into(),
            })?;
            cases.push(Case {
                name,
                dir: case_dir,
                suite_dir: dir.to_path_buf(),
                export,
                spec,
            });
        }
        cases.sort_by(|a, b| a.name.cmp(&b.name));
        if cases.is_empty() {
            return Err(HarnessError::Fixture {
                path: dir.to_path_buf(),
                reason: match only {
                    Some(only) => format!("no case name contains {only:?}"),
                    None => format!(
                        "no cases: each case is a directory with a {CASE_FILE} (see docs/plugin-authors.md)"
                    ),
                },
            });
        }
        Ok(Suite {
            dir: dir.to_path_buf(),
            cases,
        })
    }
}

/// The inputs of one call, converted to the WIT types.
#[derive(Debug, Clone)]
pub enum Input {
    None,
    Config(String),
    Images(ReleaseInfo, Vec<NodeImage>),
    Objects(ReleaseInfo, Vec<String>),
    Values(ClusterInfo, String),
}

impl Case {
    /// The input file `stem` (`.yaml`, `.yml` or `.json`): the case's own, else the fixtures directory's.
    pub fn find(&self, stem: &str) -> Option<PathBuf> {
        [&self.dir, &self.suite_dir].into_iter().find_map(|dir| {
            ["yaml", "yml", "json"]
                .iter()
                .map(|ext| dir.join(format!("{stem}.{ext}")))
                .find(|p| p.exists())
        })
    }

    fn required(&self, stem: &str) -> Result<PathBuf, HarnessError> {
        self.find(stem).ok_or_else(|| HarnessError::Fixture {
            path: self.dir.join(format!("{stem}.yaml")),
            reason: format!(
                "`{}` needs a {stem}.yaml (in the case directory or the fixtures directory)",
                self.export.name()
            ),
        })
    }

    /// The plugin configuration as JSON text: `config.yaml`, else `{}`.
    pub fn config(&self) -> Result<String, HarnessError> {
        match self.find("config") {
            Some(path) => {
                let value: Value = read_yaml(&path)?;
                Ok(value.to_string())
            }
            None => Ok("{}".to_string()),
        }
    }

    /// Reads and converts the export's input files.
    pub fn input(&self) -> Result<Input, HarnessError> {
        Ok(match self.export {
            Export::Info => Input::None,
            Export::ValidateConfig => Input::Config(self.config()?),
            Export::ReconcileNodeImages | Export::CleanupNodeImages => {
                let release = self.release()?;
                let path = self.required("images")?;
                let images: Vec<ImageFile> = read_yaml(&path)?;
                Input::Images(release, images.into_iter().map(NodeImage::from).collect())
            }
            Export::PatchClusterClass => {
                let release = self.release()?;
                let objects = read_objects(&self.required("objects")?)?;
                Input::Objects(release, objects.iter().map(Value::to_string).collect())
            }
            Export::AddonValues => {
                let path = self.required("cluster")?;
                let cluster: ClusterFile = read_yaml(&path)?;
                let values: Value = read_yaml(&self.required("values")?)?;
                Input::Values(cluster.into(), values.to_string())
            }
        })
    }

    fn release(&self) -> Result<ReleaseInfo, HarnessError> {
        let release: ReleaseFile = read_yaml(&self.required("release")?)?;
        Ok(release.into())
    }

    /// `secrets.yaml`: `<secret>/<key>: value`.
    pub fn secrets(&self) -> Result<BTreeMap<String, Vec<u8>>, HarnessError> {
        let Some(path) = self.find("secrets") else {
            return Ok(BTreeMap::new());
        };
        let map: BTreeMap<String, String> = read_yaml(&path)?;
        for key in map.keys() {
            if !key.contains('/') {
                return Err(HarnessError::Fixture {
                    path: path.clone(),
                    reason: format!("key {key:?} must be `<secret-name>/<key>`"),
                });
            }
        }
        Ok(map.into_iter().map(|(k, v)| (k, v.into_bytes())).collect())
    }

    /// `state.yaml` in the case directory: the `state` store before the call.
    pub fn initial_state(&self) -> Result<BTreeMap<String, String>, HarnessError> {
        let path = self.dir.join("state.yaml");
        if path.exists() {
            read_yaml(&path)
        } else {
            Ok(BTreeMap::new())
        }
    }

    /// The limits the controller would apply for the same `spec.limits`.
    pub fn limits(&self) -> Result<Limits, HarnessError> {
        let spec = self.spec.limits.clone().unwrap_or_default();
        Limits::from_spec(&spec).map_err(|e| HarnessError::Fixture {
            path: self.dir.join(CASE_FILE),
            reason: e.to_string(),
        })
    }

    /// Grants as the controller derives them from `spec.capabilities` (a secret granted without keys
    /// grants all of its keys); `state` as the fixture says.
    pub fn grants(&self) -> Grants {
        let caps = self.spec.capabilities.clone().unwrap_or_default();
        Grants::from_capabilities(&caps, self.spec.state.unwrap_or(false))
    }

    pub fn determinism(&self) -> Determinism {
        let clock = self.spec.clock.unwrap_or_default();
        Determinism::Fixed {
            seed: clock.seed,
            unix_seconds: clock.unix_seconds,
        }
    }
}

/// Reads a YAML (or JSON) file into `T`, naming the file and the position on error.
pub fn read_yaml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, HarnessError> {
    let text = std::fs::read_to_string(path).map_err(|e| HarnessError::Fixture {
        path: path.to_path_buf(),
        reason: format!("cannot read: {e}"),
    })?;
    serde_yaml::from_str(&text).map_err(|e| HarnessError::Fixture {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// `objects.yaml`: a YAML stream of objects (`---` between them) or one list of objects.
fn read_objects(path: &Path) -> Result<Vec<Value>, HarnessError> {
    let text = std::fs::read_to_string(path).map_err(|e| HarnessError::Fixture {
        path: path.to_path_buf(),
        reason: format!("cannot read: {e}"),
    })?;
    let mut objects = Vec::new();
    for document in serde_yaml::Deserializer::from_str(&text) {
        let value = Value::deserialize(document).map_err(|e| HarnessError::Fixture {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        match value {
            Value::Null => {}
            Value::Array(items) => objects.extend(items),
            other => objects.push(other),
        }
    }
    Ok(objects)
}

/// `release.yaml`, spelled as in wit/types.wit.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ReleaseFile {
    tag: String,
    provider: String,
    stack_name: String,
    kubernetes_version: String,
    version: String,
}

impl From<ReleaseFile> for ReleaseInfo {
    fn from(r: ReleaseFile) -> Self {
        ReleaseInfo {
            tag: r.tag,
            provider: r.provider,
            stack_name: r.stack_name,
            kubernetes_version: r.kubernetes_version,
            version: r.version,
        }
    }
}

/// One item of `images.yaml`; `properties` values may be any YAML and reach the plugin as JSON texts.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ImageFile {
    name: String,
    url: String,
    #[serde(default)]
    checksum: Option<String>,
    disk_format: String,
    container_format: String,
    #[serde(default)]
    properties: BTreeMap<String, Value>,
}

impl From<ImageFile> for NodeImage {
    fn from(i: ImageFile) -> Self {
        NodeImage {
            name: i.name,
            url: i.url,
            checksum: i.checksum,
            disk_format: i.disk_format,
            container_format: i.container_format,
            properties: i
                .properties
                .into_iter()
                .map(|(k, v)| (k, v.to_string()))
                .collect(),
        }
    }
}

/// `cluster.yaml`: the cluster-info record; `object` is the Cluster object as YAML.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ClusterFile {
    name: String,
    namespace: String,
    kubernetes_version: String,
    #[serde(default)]
    object: Value,
}

impl From<ClusterFile> for ClusterInfo {
    fn from(c: ClusterFile) -> Self {
        ClusterInfo {
            name: c.name,
            namespace: c.namespace,
            kubernetes_version: c.kubernetes_version,
            object: c.object.to_string(),
        }
    }
}
