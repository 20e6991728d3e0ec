//! The test environment: a management emulator with stackhost's and Cluster API's CRDs, a workload
//! emulator behind a `<cluster>-kubeconfig` Secret, a release cache fed from the fixtures, and the
//! controller running in a task that can be stopped and started again.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use flate2::write::GzEncoder;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use stackhost::addon::{AddonConfig, CachedReleases};
use stackhost::api::ClusterAddon;
use stackhost::release::{LocalDirSource, ReleaseCache, ReleaseName};
use tokio::sync::watch;

pub const NS: &str = "default";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/addon")
}

fn capi_crd() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sandbox/tests/fixtures/capi-crds/cluster.x-k8s.io_clusters.yaml")
}

/// Packs each directory in `dirs` (as top-level entries) into a gzip tar at `out`.
fn pack(out: &Path, dirs: &[PathBuf]) {
    let file = std::fs::File::create(out).expect("create archive");
    let mut tar = tar::Builder::new(GzEncoder::new(file, flate2::Compression::fast()));
    for dir in dirs {
        let name = dir.file_name().expect("dir name");
        tar.append_dir_all(name, dir).expect("append chart");
    }
    tar.into_inner().expect("tar").finish().expect("gzip");
}

/// Builds release `docker-ferrol-1-32-v<n>` from its fixture sources into `<root>/<tag>/`.
pub fn build_release(root: &Path, n: u32) -> String {
    let tag = format!("docker-ferrol-1-32-v{n}");
    let src = fixtures().join(&tag);
    let dest = root.join(&tag);
    std::fs::create_dir_all(&dest).expect("release dir");
    for entry in std::fs::read_dir(&src).expect("fixture").flatten() {
        if entry.path().is_file() {
            std::fs::copy(entry.path(), dest.join(entry.file_name())).expect("copy");
        }
    }
    let addon_src = match src.join("cluster-addon") {
        d if d.is_dir() => d,
        _ => fixtures().join("docker-ferrol-1-32-v1/cluster-addon"),
    };
    let mut charts: Vec<PathBuf> = std::fs::read_dir(&addon_src)
        .expect("addon charts")
        .flatten()
        .map(|e| e.path())
        .collect();
    charts.sort();
    pack(
        &dest.join(format!("docker-ferrol-1-32-cluster-addon-v{n}.tgz")),
        &charts,
    );
    pack(
        &dest.join(format!("docker-ferrol-1-32-cluster-class-v{n}.tgz")),
        &[fixtures().join("cluster-class/docker-ferrol-1-32-cluster-class")],
    );
    tag
}

/// Management and workload clusters, releases, and a controller.
pub struct Env {
    pub mgmt: kube_emulator::Cluster,
    pub workload: Option<kube_emulator::Cluster>,
    pub client: kube::Client,
    pub dir: tempfile::TempDir,
    pub cache: Arc<ReleaseCache>,
    pub source: Arc<LocalDirSource>,
    /// The metrics every controller of this environment records into, and their registry.
    pub metrics: stackhost::controller::Metrics,
    registry: prometheus_client::registry::Registry,
    controller: Option<(watch::Sender<bool>, tokio::task::JoinHandle<()>)>,
}

impl Env {
    /// Management cluster with CRDs, and a workload cluster unless `workload` is false.
    pub async fn start(workload: bool) -> Env {
        let mgmt = kube_emulator::Cluster::start()
            .await
            .expect("management emulator");
        mgmt.apply_yaml(&stackhost::api::crds_yaml(), "test")
            .expect("stackhost CRDs");
        let capi = std::fs::read_to_string(capi_crd()).expect("CAPI Cluster CRD");
        mgmt.apply_yaml(&capi, "test").expect("CAPI CRDs");
        let client = mgmt.client().expect("client");
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = Arc::new(ReleaseCache::open(&dir.path().join("cache")).expect("cache"));
        let source = Arc::new(LocalDirSource::new(dir.path().join("releases")));
        let mut registry = prometheus_client::registry::Registry::default();
        let metrics = stackhost::controller::Metrics::new(&mut registry);
        let mut env = Env {
            mgmt,
            workload: None,
            client,
            dir,
            cache,
            source,
            metrics,
            registry,
            controller: None,
        };
        if workload {
            let w = kube_emulator::Cluster::start().await.expect("workload emulator");
            env.write_kubeconfig("c1", &w.kubeconfig()).await;
            env.workload = Some(w);
        }
        env
    }

    /// The usual start: management and workload clusters, `releases` downloaded, Cluster `c1` of class
    /// `docker-ferrol-1-32-v<class>`, and the controller running with the test config.
    pub async fn running(releases: &[u32], class: u32) -> Env {
        Self::running_with(releases, class, |_| {}).await
    }

    /// [`Env::running`] with the controller's config changed by `adjust`.
    pub async fn running_with(releases: &[u32], class: u32, adjust: impl FnOnce(&mut AddonConfig)) -> Env {
        let mut env = Env::start(true).await;
        for n in releases {
            env.release(*n).await;
        }
        env.create_cluster("c1", class).await;
        let mut config = env.config();
        adjust(&mut config);
        env.start_controller_with(config);
        env
    }

    pub fn workload_client(&self) -> kube::Client {
        self.workload
            .as_ref()
            .expect("workload cluster")
            .client()
            .expect("client")
    }

    pub async fn write_kubeconfig(&self, cluster: &str, kubeconfig: &str) {
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(self.client.clone(), NS);
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": format!("{cluster}-kubeconfig"), "namespace": NS},
            "stringData": {"value": kubeconfig}});
        secrets
            .patch(
                &format!("{cluster}-kubeconfig"),
                &PatchParams::apply("test").force(),
                &Patch::Apply(&secret),
            )
            .await
            .expect("kubeconfig secret");
    }

    /// Builds release v<n> and "downloads" it into the cache, as the ClusterStackRelease controller would.
    pub async fn release(&self, n: u32) {
        let tag = build_release(&self.dir.path().join("releases"), n);
        let name = ReleaseName::parse_tag(&tag).expect("tag");
        self.cache
            .fetch(self.source.as_ref(), &name)
            .await
            .expect("release loads");
    }

    pub fn config(&self) -> AddonConfig {
        let renderer: Arc<dyn stackhost::render::Renderer> =
            Arc::from(stackhost::render::default_renderer().expect("Helm (scripts/deps/helm.sh)"));
        let releases = Arc::new(CachedReleases {
            cache: self.cache.clone(),
            source: self.source.clone(),
        });
        let mut config = AddonConfig::new(releases, renderer, self.dir.path().join("work"));
        config.wait = Duration::from_millis(200);
        config.retry = Duration::from_millis(300);
        config.resync = Duration::from_secs(60);
        config.metrics = Some(self.metrics.clone());
        config.events = Some(kube::runtime::events::Recorder::new(
            self.client.clone(),
            kube::runtime::events::Reporter {
                controller: "stackhost".into(),
                instance: None,
            },
        ));
        config
    }

    /// The metrics in Prometheus' text format, as `/metrics` serves them.
    pub fn metrics_text(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode metrics");
        text
    }

    pub fn start_controller(&mut self) {
        self.start_controller_with(self.config());
    }

    pub fn start_controller_with(&mut self, config: AddonConfig) {
        let (tx, rx) = watch::channel(false);
        let client = self.client.clone();
        let task = tokio::spawn(async move {
            stackhost::addon::run(client, config, rx)
                .await
                .expect("controller");
        });
        self.controller = Some((tx, task));
    }

    pub async fn stop_controller(&mut self) {
        if let Some((tx, task)) = self.controller.take() {
            let _ = tx.send(true);
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("controller stops on shutdown")
                .expect("controller task");
        }
    }

    pub fn clusters(&self) -> Api<DynamicObject> {
        stackhost::addon::cluster::clusters(self.client.clone(), NS)
    }

    /// Creates Cluster `name` (v1beta1) of class `docker-ferrol-1-32-v<n>`.
    pub async fn create_cluster(&self, name: &str, n: u32) {
        self.create_cluster_in(NS, name, n, json!({})).await;
    }

    /// Creates Cluster `namespace/name` (v1beta1) of class `docker-ferrol-1-32-v<n>` with `labels`.
    pub async fn create_cluster_in(&self, namespace: &str, name: &str, n: u32, labels: Value) {
        let cluster: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "spec": {
                "controlPlaneEndpoint": {"host": format!("{name}.example.test"), "port": 6443},
                "topology": {"class": format!("docker-ferrol-1-32-v{n}"), "version": "v1.32.2"},
            },
        }))
        .expect("cluster");
        stackhost::addon::cluster::clusters(self.client.clone(), namespace)
            .create(&PostParams::default(), &cluster)
            .await
            .expect("create Cluster");
    }

    /// Creates Cluster `name` (v1beta1) of class `docker-ferrol-1-32-v<n>` as users write it: topology
    /// only, no `spec.controlPlaneEndpoint` (the infrastructure provider sets that).
    pub async fn create_user_cluster(&self, name: &str, n: u32) {
        let cluster: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"topology": {"class": format!("docker-ferrol-1-32-v{n}"), "version": "v1.32.2"}},
        }))
        .expect("cluster");
        self.clusters()
            .create(&PostParams::default(), &cluster)
            .await
            .expect("create Cluster");
    }

    /// Moves Cluster `name` to class v<n> (and optionally a new Kubernetes version).
    pub async fn set_class(&self, name: &str, n: u32, version: Option<&str>) {
        let mut topology = json!({"class": format!("docker-ferrol-1-32-v{n}")});
        if let Some(v) = version {
            topology["version"] = json!(v);
        }
        self.clusters()
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(&json!({"spec": {"topology": topology}})),
            )
            .await
            .expect("patch Cluster");
    }

    pub fn addons(&self) -> Api<ClusterAddon> {
        Api::namespaced(self.client.clone(), NS)
    }

    /// Waits (up to 60 s) until the ClusterAddon of `cluster` satisfies `check`; panics with the last
    /// state otherwise.
    pub async fn wait_addon(
        &self,
        cluster: &str,
        what: &str,
        check: impl Fn(&ClusterAddon) -> bool,
    ) -> ClusterAddon {
        let name = format!("cluster-addon-{cluster}");
        let mut last = None;
        for _ in 0..300 {
            if let Ok(Some(a)) = self.addons().get_opt(&name).await {
                if check(&a) {
                    return a;
                }
                last = Some(a);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        panic!(
            "timed out waiting for {what}; last ClusterAddon: {}",
            serde_json::to_string_pretty(&last).unwrap_or_default()
        );
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        if let Some((tx, task)) = self.controller.take() {
            let _ = tx.send(true);
            task.abort();
        }
    }
}

/// The condition `type_` of a ClusterAddon as (status, reason, message).
pub fn condition(addon: &ClusterAddon, type_: &str) -> Option<(String, String, String)> {
    addon
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| {
            (
                format!("{:?}", c.status),
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            )
        })
}

/// The objects a ClusterAddon's status lists as applied, `Kind/name`, sorted.
pub fn resource_names(addon: &ClusterAddon) -> Vec<String> {
    let mut names: Vec<String> = addon
        .status
        .iter()
        .flat_map(|s| &s.resources)
        .map(|r| format!("{}/{}", r.kind, r.name))
        .collect();
    names.sort();
    names
}

pub fn ready(addon: &ClusterAddon) -> bool {
    addon.status.as_ref().is_some_and(|s| s.ready)
}

/// Gets `kind` `name` in kube-system of the workload cluster as JSON, if it exists.
pub async fn workload_object(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    name: &str,
) -> Option<Value> {
    let (group, version) = stackhost::apply::split_api_version(api_version);
    let plural = format!("{}s", kind.to_lowercase());
    let ar = kube::discovery::ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural,
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), "kube-system", &ar);
    api.get_opt(name)
        .await
        .expect("workload get")
        .map(|o| serde_json::to_value(o).expect("json"))
}

/// `reason: note` of the Events about ClusterAddon `name`, oldest first.
pub async fn event_notes(client: &kube::Client, name: &str) -> Vec<String> {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "default");
    let mut list: Vec<_> = events
        .list(&Default::default())
        .await
        .expect("list events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .collect();
    list.sort_by_key(|e| e.metadata.creation_timestamp.clone().map(|t| t.0));
    list.into_iter()
        .map(|e| format!("{}: {}", e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect()
}
