//! Helm rendering behind one small trait: a chart archive plus values, release name, namespace and
//! Kubernetes version in, a deterministically sorted list of manifests (JSON values) out.
//!
//! Two renderers run the real Helm: [`HelmLibRenderer`] (Helm's Go SDK in-process via `libhelm_c.so`)
//! and [`HelmBinRenderer`] (a `helm` binary on PATH, when there is one). Release names and namespaces
//! follow upstream (§2.2): the cluster-class chart renders as `<provider>-<name>-<major>-<minor>` in the
//! ClusterStackRelease's namespace; addons as `cluster-addon` in `kube-system` with CRDs included.

pub mod child;
mod helm_bin;
mod helm_lib;
mod yaml;

pub use child::{ProcessLimits, ProcessRenderer, DEFAULT_MEMORY_MIB as DEFAULT_RENDER_MEMORY_MIB};
pub use helm_bin::HelmBinRenderer;
pub use helm_lib::{discover_helm_lib, HelmLibRenderer, HELM_LIB_ENV};

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::Value;

use crate::release::ReleaseAssets;

/// Why rendering failed. Serializable: a render in a child process reports it to the parent as data.
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RenderError {
    /// `libhelm_c.so` could not be found or loaded.
    #[error("Helm library unavailable: {0}")]
    HelmLibrary(String),
    /// The `helm` binary could not be run.
    #[error("helm binary unavailable: {0}")]
    HelmBinary(String),
    /// Helm rejected the chart or a template failed.
    #[error("helm could not {op} {}: {detail}", chart.display())]
    Helm {
        /// What Helm was doing.
        op: Cow<'static, str>,
        /// The chart.
        chart: PathBuf,
        /// Helm's message.
        detail: String,
    },
    /// Helm panicked (recovered inside the library or printed by the binary).
    #[error("helm panicked while rendering {}: {detail}", chart.display())]
    HelmPanicked {
        /// The chart.
        chart: PathBuf,
        /// The panic text.
        detail: String,
    },
    /// A rendered template is not valid YAML or not a Kubernetes object.
    #[error("chart {} rendered an invalid manifest in {template}: {reason}", chart.display())]
    Manifest {
        /// The chart.
        chart: PathBuf,
        /// Template path inside the chart.
        template: String,
        /// Why.
        reason: String,
    },
    /// The chart rendered nothing (upstream: "template is empty").
    #[error("chart {} rendered no objects", .0.display())]
    Empty(PathBuf),
    /// Helm's output could not be read.
    #[error("unexpected output from helm: {0}")]
    Output(String),
    /// An input cannot be passed to Helm.
    #[error("invalid render input: {0}")]
    InvalidInput(String),
    /// The chart rendered more than a release may apply.
    #[error("chart {} rendered {what}, over the limit of {limit} per render; a cluster stack's chart renders far fewer (check its loops and values)", chart.display())]
    TooLarge {
        /// The chart.
        chart: PathBuf,
        /// What it rendered (`more than 5000 objects`, `73400320 bytes`).
        what: String,
        /// The limit.
        limit: String,
    },
    /// The render did not finish in time and was stopped.
    #[error("rendering {} did not finish within {}s (--render-timeout) and was stopped; a cluster stack's chart renders in well under a second, so check its loops", chart.display(), after.as_secs_f64())]
    TimedOut {
        /// The chart.
        chart: PathBuf,
        /// The deadline.
        after: Duration,
    },
    /// The render used more memory than a render may and was stopped.
    #[error("rendering {} used more than {limit_mib} MiB (--render-max-memory-mib) and was stopped; a cluster stack's chart renders in under 100 MiB, so check its loops and values", chart.display())]
    OutOfMemory {
        /// The chart.
        chart: PathBuf,
        /// The cap.
        limit_mib: u64,
    },
    /// The render was stopped because nobody needs it any more (its release is being deleted).
    #[error("rendering {} was stopped: its release is being deleted", .0.display())]
    Cancelled(PathBuf),
    /// The render process failed (it could not start, crashed, or wrote more than a render may).
    #[error("the render process failed: {0}")]
    Process(String),
}

/// Most objects one render may yield. The real SCS stacks render a few dozen (cilium, the largest addon,
/// about a hundred); a render past this is a runaway loop, and applying it would flood the API server.
pub const MAX_RENDERED_OBJECTS: usize = 5_000;
/// Most bytes of rendered YAML one render may yield.
pub const MAX_RENDERED_BYTES: usize = 64 << 20;

/// What to render.
#[derive(Debug, Clone)]
pub struct RenderRequest<'a> {
    /// Packaged chart (`.tgz`) or chart directory.
    pub chart: &'a Path,
    /// Values (a JSON object; `{}` for none).
    pub values: &'a Value,
    /// Helm release name (`.Release.Name`).
    pub release_name: &'a str,
    /// Helm release namespace (`.Release.Namespace`).
    pub namespace: &'a str,
    /// `--kube-version`, e.g. `v1.27.3` (`.Capabilities.KubeVersion`).
    pub kube_version: Option<&'a str>,
    /// Also return the chart's `crds/` objects (`--include-crds`).
    pub include_crds: bool,
}

/// Values for charts rendered without any.
pub static NO_VALUES: Value = Value::Null;

impl<'a> RenderRequest<'a> {
    /// The cluster-class chart of a release, as upstream renders it for a ClusterStackRelease in
    /// `namespace` (release name `<provider>-<name>-<major>-<minor>`, no values), plus `--kube-version`
    /// from `metadata.yaml`.
    pub fn cluster_class(assets: &'a ReleaseAssets, release_name: &'a str, namespace: &'a str) -> Self {
        Self {
            chart: &assets.cluster_class_chart,
            values: &NO_VALUES,
            release_name,
            namespace,
            kube_version: Some(&assets.metadata.kubernetes),
            include_crds: false,
        }
    }

    /// A legacy cluster-addon chart: release `cluster-addon` in `kube-system`, CRDs included.
    pub fn cluster_addon(assets: &'a ReleaseAssets, values: &'a Value) -> Self {
        Self {
            chart: &assets.cluster_addon_chart,
            values,
            release_name: "cluster-addon",
            namespace: "kube-system",
            kube_version: Some(&assets.metadata.kubernetes),
            include_crds: true,
        }
    }
}

/// A Helm implementation.
pub trait Renderer: Send + Sync + std::fmt::Debug {
    /// Which implementation, for logs and status messages.
    fn name(&self) -> String;

    /// Renders a chart into manifests, sorted by [`sort_manifests`].
    fn render(&self, req: &RenderRequest<'_>) -> Result<Vec<Value>, RenderError>;

    /// [`Renderer::render`], stopped with [`RenderError::Cancelled`] as soon as `stop` turns true where
    /// the implementation can stop (a render in a child process); in-process renders run to their end.
    fn render_until(&self, req: &RenderRequest<'_>, stop: &AtomicBool) -> Result<Vec<Value>, RenderError> {
        let _ = stop;
        self.render(req)
    }

    /// Packages the chart directory `chart_dir` into `destination` as `helm package` does (honouring
    /// `.helmignore`, `<name>-<version>.tgz`); returns the archive's path.
    fn package(&self, chart_dir: &Path, destination: &Path) -> Result<PathBuf, RenderError>;
}

/// The renderer to use: `libhelm_c.so` when it can be found (`$STACKHOST_HELM_LIB` or a `.venv`),
/// else a `helm` binary on PATH; an error naming both ways to fix it otherwise.
pub fn default_renderer() -> Result<Box<dyn Renderer>, RenderError> {
    match HelmLibRenderer::discover() {
        Ok(lib) => Ok(Box::new(lib)),
        Err(lib_err) => match HelmBinRenderer::from_path() {
            Some(bin) => Ok(Box::new(bin)),
            None => Err(RenderError::HelmLibrary(format!(
                "{lib_err}; no helm binary on PATH either"
            ))),
        },
    }
}

/// Parses rendered templates (template path -> text, as Helm returns them) into objects the way Helm
/// reads them (see [`yaml`]): skips notes and partials, splits multi-document YAML, drops empty documents, checks each object has
/// `apiVersion`, `kind` and `metadata.name`, and sorts the result.
pub fn manifests_from_rendered(
    chart: &Path,
    rendered: impl IntoIterator<Item = (String, String)>,
) -> Result<Vec<Value>, RenderError> {
    let mut out = Vec::new();
    let mut bytes = 0usize;
    let mut alias_bytes = yaml::MAX_ALIAS_BYTES;
    let too_large = |what: String, limit: String| RenderError::TooLarge {
        chart: chart.to_owned(),
        what,
        limit,
    };
    for (template, text) in rendered {
        bytes += text.len();
        if bytes > MAX_RENDERED_BYTES {
            return Err(too_large(
                format!("more than {MAX_RENDERED_BYTES} bytes (at {template})"),
                format!("{MAX_RENDERED_BYTES} bytes"),
            ));
        }
        let file = template.rsplit('/').next().unwrap_or(&template);
        if file.starts_with('_') || file.eq_ignore_ascii_case("NOTES.txt") {
            continue;
        }
        let bad = |reason: String| RenderError::Manifest {
            chart: chart.to_owned(),
            template: template.clone(),
            reason,
        };
        for value in yaml::documents(&text, &mut alias_bytes).map_err(&bad)? {
            match value {
                Value::Null => continue,
                Value::Object(ref map) => {
                    for field in ["apiVersion", "kind"] {
                        if map.get(field).and_then(Value::as_str).is_none_or(str::is_empty) {
                            return Err(bad(format!("an object has no {field}")));
                        }
                    }
                    if value["metadata"]["name"].as_str().is_none_or(str::is_empty) {
                        return Err(bad(format!(
                            "a {} has no metadata.name",
                            value["kind"].as_str().unwrap_or("?")
                        )));
                    }
                    if out.len() == MAX_RENDERED_OBJECTS {
                        return Err(too_large(
                            format!("more than {MAX_RENDERED_OBJECTS} objects (at {template})"),
                            format!("{MAX_RENDERED_OBJECTS} objects"),
                        ));
                    }
                    out.push(value);
                }
                other => return Err(bad(format!("expected an object, got {other}"))),
            }
        }
    }
    sort_manifests(&mut out);
    Ok(out)
}

/// Install order: namespaces and CRDs first (what other objects need), then everything else; ties by
/// apiVersion, kind, namespace and name, so the same render always yields the same list.
pub fn sort_manifests(objects: &mut [Value]) {
    fn rank(kind: &str) -> u8 {
        match kind {
            "Namespace" => 0,
            "CustomResourceDefinition" => 1,
            "ServiceAccount" | "Secret" | "ConfigMap" => 2,
            "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding" => 3,
            _ => 4,
        }
    }
    let key = |v: &Value| {
        let s = |p: &str| v.pointer(p).and_then(Value::as_str).unwrap_or("").to_owned();
        (
            rank(&s("/kind")),
            s("/apiVersion"),
            s("/kind"),
            s("/metadata/namespace"),
            s("/metadata/name"),
        )
    };
    objects.sort_by_cached_key(key);
}

#[cfg(test)]
mod tests;
