//! The ClusterAddon controller (cso-behaviour.md §2.3–2.4): one ClusterAddon per Cluster API `Cluster`,
//! and the cluster addons of the Cluster's ClusterClass applied into its workload cluster.
//!
//! - [`cluster`]: reading Cluster API Clusters (v1beta1 and v1beta2 shapes) and the objects they reference.
//! - [`workload`]: workload-cluster clients from the `<cluster>-kubeconfig` Secret, cached per cluster.
//! - [`values`]: `cluster-addon-values.yaml` / `overwrite.yaml` templated with Helm's own engine.
//! - [`condition`]: CEL pre/post conditions of multi-stage addons over named workload objects.
//! - [`stages`]: the pure part of a multi-stage run (which stage next, which objects remain).
//! - [`reconcile`]: the controllers (ClusterAddon creation per Cluster, and the addon reconcile).
//! - [`inmemory`]: the sandbox's in-memory infrastructure provider (a workload API emulator per Cluster).
//!
//! Differences from upstream, on purpose: every bit of progress (stages, phases, applied objects) lives
//! in the ClusterAddon status, so a restart resumes where it stopped; multi-stage addons start as soon
//! as the workload API answers instead of waiting for a hook that may never come (quirk 11); stale
//! objects are pruned from what the status says was applied, so the old release is not needed
//! (quirks 12, 18); an empty or non-map values template is an error, not a panic (quirk 16).

pub mod cluster;
pub mod condition;
pub mod error;
pub mod inmemory;
pub mod reconcile;
pub mod stages;
pub mod values;
pub mod workload;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

pub use error::Error;
pub use reconcile::run;

use crate::release::source::BoxFuture;
use crate::release::{ReleaseAssets, ReleaseCache, ReleaseName, ReleaseSource};
use crate::render::Renderer;

/// Namespace of the addons in the workload cluster (Helm `--namespace`, upstream's constant).
pub const ADDON_NAMESPACE: &str = "kube-system";
/// Helm release name of the addon charts (upstream's constant).
pub const ADDON_RELEASE_NAME: &str = "cluster-addon";
/// Annotation recording how the addons arrived (`created` or `upgraded`), upstream's key.
pub const STAGE_ANNOTATION: &str = "ClusterAddonStage";
/// The hook that applies the addons of a new Cluster.
pub const HOOK_AFTER_CONTROL_PLANE_INITIALIZED: &str = "AfterControlPlaneInitialized";
/// The hook that applies the addons of an upgraded Cluster.
pub const HOOK_BEFORE_CLUSTER_UPGRADE: &str = "BeforeClusterUpgrade";

/// The name of the ClusterAddon of a Cluster.
pub fn cluster_addon_name(cluster: &str) -> String {
    format!("cluster-addon-{cluster}")
}

/// Where the ClusterAddon controller finds the release of a Cluster's ClusterClass.
///
/// The controller never downloads: the ClusterStackRelease controller does (upstream §2.4 step 6), and
/// the addon reconcile waits with `ClusterStackReleaseDownloaded=False` until the release is there.
pub trait AddonReleases: Send + Sync + std::fmt::Debug {
    /// The validated release `release` for Clusters in `namespace`; `Ok(None)` while it is not
    /// downloaded yet; `Err` with a message for a user when it is there but unusable.
    fn release<'a>(
        &'a self,
        namespace: &'a str,
        release: &'a ReleaseName,
    ) -> BoxFuture<'a, Result<Option<ReleaseAssets>, String>>;
}

/// Releases from one [`ReleaseCache`] and source (the process default source; the sandbox's).
#[derive(Debug, Clone)]
pub struct CachedReleases {
    /// The cache the ClusterStackRelease controller downloads into.
    pub cache: Arc<ReleaseCache>,
    /// The source whose cache directory is read.
    pub source: Arc<dyn ReleaseSource>,
}

impl AddonReleases for CachedReleases {
    fn release<'a>(
        &'a self,
        _namespace: &'a str,
        release: &'a ReleaseName,
    ) -> BoxFuture<'a, Result<Option<ReleaseAssets>, String>> {
        Box::pin(async move {
            self.cache
                .get(self.source.as_ref(), release)
                .map_err(|e| e.to_string())
        })
    }
}

/// What the provider plugin's `addon-values` step gets.
#[derive(Debug, Clone)]
pub struct AddonValuesRequest<'a> {
    /// Namespace of the Cluster (and of its ClusterStackRelease).
    pub namespace: &'a str,
    /// The release whose addons are rendered; `release.provider` names the provider.
    pub release: &'a ReleaseName,
    /// The chart (stage) being rendered: the legacy chart's directory or the stage name.
    pub chart: &'a str,
    /// The Cluster API Cluster as JSON.
    pub cluster: &'a Value,
    /// The templated values.
    pub values: Value,
}

/// The provider plugin's `addon-values` step: may change the templated values of an addon chart.
/// Implemented by the controllers from the ProviderPlugin registry.
pub trait AddonValuesHook: Send + Sync + std::fmt::Debug {
    /// The new values (a JSON object), or an error message for the ClusterAddon's conditions.
    fn addon_values<'a>(&'a self, req: AddonValuesRequest<'a>) -> BoxFuture<'a, Result<Value, String>>;
}

/// Everything the ClusterAddon controller needs.
#[derive(Clone)]
pub struct AddonConfig {
    /// Where releases come from.
    pub releases: Arc<dyn AddonReleases>,
    /// Helm.
    pub renderer: Arc<dyn Renderer>,
    /// The provider plugins' `addon-values` step, when plugins run.
    pub values_hook: Option<Arc<dyn AddonValuesHook>>,
    /// Scratch directory for unpacked addon archives and the values chart.
    pub work_dir: PathBuf,
    /// Requeue while waiting (kubeconfig, workload API, release, CEL conditions); upstream 10 s.
    pub wait: Duration,
    /// Requeue after a failed apply or delete; upstream 20 s.
    pub retry: Duration,
    /// Requeue when everything is applied, to notice drift in `status.resources`.
    pub resync: Duration,
    /// Only Clusters and ClusterAddons in this namespace (`--namespace`); all namespaces when `None`.
    pub namespace: Option<String>,
    /// Only Clusters carrying this label (`--watch-label key=value`); their ClusterAddons get it too and
    /// only ClusterAddons carrying it are reconciled.
    pub watch_label: Option<(String, String)>,
    /// Reconcile counts and durations, under the controller label `clusteraddon`.
    pub metrics: Option<crate::controller::Metrics>,
    /// Publishes Kubernetes Events about ClusterAddons (stage applied, held, failed; deletion).
    pub events: Option<kube::runtime::events::Recorder>,
    /// Reconciles run at once per controller (`--concurrency`); 0 means no limit.
    pub concurrency: u16,
    /// Each namespace's share of those reconciles (`--namespace-concurrency`); no cap when `None`.
    pub slots: Option<Arc<crate::controller::fair::NamespaceSlots>>,
    /// Client-side rate limit of each workload cluster's client (`--kube-api-qps`).
    pub api_rate: Option<crate::run::rate::ApiRate>,
}

impl std::fmt::Debug for AddonConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AddonConfig")
            .field("releases", &self.releases)
            .field("work_dir", &self.work_dir)
            .field("namespace", &self.namespace)
            .field("watch_label", &self.watch_label)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl AddonConfig {
    /// A configuration with upstream's intervals (10 s waits, 20 s retries) and a 10 min resync.
    pub fn new(releases: Arc<dyn AddonReleases>, renderer: Arc<dyn Renderer>, work_dir: PathBuf) -> Self {
        Self {
            releases,
            renderer,
            values_hook: None,
            work_dir,
            wait: Duration::from_secs(10),
            retry: Duration::from_secs(20),
            resync: Duration::from_secs(600),
            namespace: None,
            watch_label: None,
            metrics: None,
            events: None,
            concurrency: 0,
            slots: None,
            api_rate: None,
        }
    }
}
