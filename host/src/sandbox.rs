//! `stackhost sandbox`: the whole product on one machine. An in-process Kubernetes API emulator with the
//! stackhost and Cluster API CRDs (and any more CRDs given with `--crds`), the controllers running against
//! it, the in-memory infrastructure, the runtime hook server and the ClusterAddon controller. The embedded
//! default reads a sample release and plugin from an OCI image layout shipped in the repository and creates
//! a sample Cluster of the sample ClusterClass: stack -> class -> cluster -> addons. With `--no-sample` and
//! `--release-source dir:PATH` it runs a stack author's own releases instead and reports each release and
//! each Cluster's addons as they get ready.
//!
//! The integration tests use the same [`Sandbox`] with a real registry instead of the layout.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use kube::api::{Api, PostParams};
use kube::ResourceExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::addon::inmemory::SandboxAddons;
use crate::api::{ClusterAddon, ClusterStack, ClusterStackRelease, Condition, ProviderPlugin};
use crate::controller::{Context, ControllerArgs};

/// The Cluster API CRDs the sample stacks need (real, unmodified upstream files).
pub const CAPI_CRDS: &[(&str, &str)] = &[
    (
        "cluster.x-k8s.io_clusterclasses.yaml",
        include_str!("../../tests/fixtures/capi-crds/cluster.x-k8s.io_clusterclasses.yaml"),
    ),
    (
        "cluster.x-k8s.io_clusters.yaml",
        include_str!("../../tests/fixtures/capi-crds/cluster.x-k8s.io_clusters.yaml"),
    ),
    (
        "infrastructure.cluster.x-k8s.io_devclustertemplates.yaml",
        include_str!(
            "../../tests/fixtures/capi-crds/infrastructure.cluster.x-k8s.io_devclustertemplates.yaml"
        ),
    ),
    (
        "infrastructure.cluster.x-k8s.io_devmachinetemplates.yaml",
        include_str!(
            "../../tests/fixtures/capi-crds/infrastructure.cluster.x-k8s.io_devmachinetemplates.yaml"
        ),
    ),
    (
        "controlplane.cluster.x-k8s.io_kubeadmcontrolplanetemplates.yaml",
        include_str!(
            "../../tests/fixtures/capi-crds/controlplane.cluster.x-k8s.io_kubeadmcontrolplanetemplates.yaml"
        ),
    ),
    (
        "bootstrap.cluster.x-k8s.io_kubeadmconfigtemplates.yaml",
        include_str!("../../tests/fixtures/capi-crds/bootstrap.cluster.x-k8s.io_kubeadmconfigtemplates.yaml"),
    ),
];

/// Installs the stackhost CRDs and the Cluster API CRDs into an emulator cluster, with Cluster API's
/// conversion between v1beta1 and v1beta2 Clusters and ClusterClasses (its webhook on a real cluster).
pub fn install_crds(cluster: &kube_emulator::Cluster) -> anyhow::Result<()> {
    cluster.add_converter(Arc::new(kube_emulator::cluster_api::ClusterApiConversion));
    cluster
        .apply_yaml(&crate::api::crds_yaml(), "stackhost")
        .context("installing the stackhost CRDs")?;
    for (file, text) in CAPI_CRDS {
        cluster
            .apply_yaml(text, "stackhost")
            .with_context(|| format!("installing the Cluster API CRD {file}"))?;
    }
    Ok(())
}

/// Reads CRD files for [`Sandbox::start_with_crds`]: each path is a YAML file or a folder whose `*.yaml` and
/// `*.yml` files are read (sorted by name, not recursively). Returns `(file, text)` pairs.
pub fn read_crd_files(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for path in paths {
        if path.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(path)
                .with_context(|| format!("--crds {}: cannot list the folder", path.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            anyhow::ensure!(
                !found.is_empty(),
                "--crds {}: the folder has no .yaml or .yml files",
                path.display()
            );
            for file in found {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("--crds: cannot read {}", file.display()))?;
                files.push((file.display().to_string(), text));
            }
        } else {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--crds {}: cannot read it", path.display()))?;
            files.push((path.display().to_string(), text));
        }
    }
    Ok(files)
}

/// An API emulator with the CRDs installed and the controllers running against it.
pub struct Sandbox {
    pub cluster: kube_emulator::Cluster,
    pub client: kube::Client,
    pub args: ControllerArgs,
    pub registry: prometheus_client::registry::Registry,
    controllers: Option<Running>,
}

/// The controllers while they run: their stop signal, task and context.
type Running = (watch::Sender<bool>, JoinHandle<anyhow::Result<()>>, Arc<Context>);

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("api", &self.cluster.url())
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

impl Sandbox {
    /// Starts the emulator, installs the CRDs and starts the controllers with `args`.
    pub async fn start(args: ControllerArgs) -> anyhow::Result<Self> {
        Self::start_with_crds(args, &[]).await
    }

    /// [`Sandbox::start`], with more CRDs (`(file, YAML text)`, e.g. from [`read_crd_files`]) installed
    /// before the controllers start.
    pub async fn start_with_crds(
        args: ControllerArgs,
        extra_crds: &[(String, String)],
    ) -> anyhow::Result<Self> {
        let cluster = kube_emulator::Cluster::start()
            .await
            .context("starting the API emulator")?;
        install_crds(&cluster)?;
        for (file, text) in extra_crds {
            cluster
                .apply_yaml(text, "stackhost")
                .with_context(|| format!("installing the CRDs of {file}"))?;
        }
        let client = cluster.client()?;
        let mut sandbox = Sandbox {
            cluster,
            client,
            args,
            registry: prometheus_client::registry::Registry::default(),
            controllers: None,
        };
        sandbox.start_controllers()?;
        Ok(sandbox)
    }

    /// The controllers' context (metrics, plugin registry), while they run.
    pub fn context(&self) -> Option<&Arc<Context>> {
        self.controllers.as_ref().map(|(_, _, ctx)| ctx)
    }

    /// Starts the controllers (again) with a fresh context: nothing is remembered but what the API
    /// and the on-disk caches hold, as after a process restart.
    pub fn start_controllers(&mut self) -> anyhow::Result<()> {
        self.registry = prometheus_client::registry::Registry::default();
        let ctx = Arc::new(crate::cli::controller_context(
            self.client.clone(),
            self.args.clone(),
            &mut self.registry,
        )?);
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(crate::controller::run(ctx.clone(), rx, || {}));
        self.controllers = Some((tx, task, ctx));
        Ok(())
    }

    /// Stops the controllers gracefully (reconciles in flight finish).
    pub async fn stop_controllers(&mut self) {
        if let Some((tx, task, _)) = self.controllers.take() {
            let _ = tx.send(true);
            let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
        }
    }

    /// Kills the controllers at once, in the middle of whatever they were doing.
    pub async fn kill_controllers(&mut self) {
        if let Some((_, task, _)) = self.controllers.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Stops everything.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.stop_controllers().await;
        self.cluster.shutdown().await?;
        Ok(())
    }
}

/// Waits until `check` returns `Some`, polling every 100 ms; the error says what was awaited and the
/// last state seen.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        match check().await {
            Ok(v) => return Ok(v),
            Err(last) if Instant::now() >= deadline => {
                anyhow::bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A one-line account of a release's state: ready flag and its conditions.
pub fn describe_release(r: &ClusterStackRelease) -> String {
    match &r.status {
        Some(s) => describe(&r.name_any(), s.ready, &s.conditions),
        None => format!("{}: no status yet", r.name_any()),
    }
}

/// A one-line account of a ClusterAddon's state: ready flag, running stages and its conditions.
pub fn describe_addon(a: &ClusterAddon) -> String {
    let name = format!("ClusterAddon {}", a.name_any());
    let Some(s) = &a.status else {
        return format!("{name}: no status yet");
    };
    let mut line = describe(&name, s.ready, &s.conditions);
    if !s.stages.is_empty() {
        let stages: Vec<String> = s
            .stages
            .iter()
            .map(|st| format!("{}={}", st.name, st.phase))
            .collect();
        line.push_str(&format!(" stages [{}]", stages.join(", ")));
    }
    line
}

fn describe(name: &str, ready: bool, conditions: &[Condition]) -> String {
    let conditions: Vec<String> = conditions
        .iter()
        .map(|c| {
            format!(
                "{}={:?}{}",
                c.type_,
                c.status,
                c.reason
                    .as_ref()
                    .map(|r| format!(" ({r}: {})", c.message.clone().unwrap_or_default()))
                    .unwrap_or_default()
            )
        })
        .collect();
    format!("{name}: ready={ready} [{}]", conditions.join(", "))
}

/// Waits until ClusterStackRelease `namespace/name` is Ready.
pub async fn wait_release_ready(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    timeout: Duration,
) -> anyhow::Result<ClusterStackRelease> {
    let api: Api<ClusterStackRelease> = Api::namespaced(client.clone(), namespace);
    wait_for(
        &format!("ClusterStackRelease {namespace}/{name} to be ready"),
        timeout,
        || {
            let api = api.clone();
            async move {
                match api.get_opt(name).await {
                    Ok(Some(r)) if r.status.as_ref().is_some_and(|s| s.ready) => Ok(r),
                    Ok(Some(r)) => Err(describe_release(&r)),
                    Ok(None) => Err("not created yet".into()),
                    Err(e) => Err(e.to_string()),
                }
            }
        },
    )
    .await
}

/// Waits until ClusterStackRelease `namespace/name` has condition `type_` with `reason`, and returns it.
pub async fn wait_release_condition(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    (type_, reason): (&str, &str),
    timeout: Duration,
) -> anyhow::Result<crate::api::Condition> {
    let api: Api<ClusterStackRelease> = Api::namespaced(client.clone(), namespace);
    wait_for(
        &format!("ClusterStackRelease {namespace}/{name} to report {type_} with reason {reason}"),
        timeout,
        || {
            let api = api.clone();
            async move {
                let r = api
                    .get_opt(name)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("not created yet")?;
                let found = r
                    .status
                    .as_ref()
                    .and_then(|s| crate::api::condition::find(&s.conditions, type_))
                    .filter(|c| c.reason.as_deref() == Some(reason));
                found.cloned().ok_or_else(|| describe_release(&r))
            }
        },
    )
    .await
}

/// The sample objects of the embedded default: a ProviderPlugin for the docker plugin and a
/// ClusterStack following the docker/ferrol stack.
pub fn sample_objects(namespace: &str, plugin_image: &str) -> (ProviderPlugin, ClusterStack) {
    let pp: ProviderPlugin = serde_json::from_value(serde_json::json!({
        "apiVersion": "clusterstack.x-k8s.io/v1alpha1",
        "kind": "ProviderPlugin",
        "metadata": {"name": "docker", "namespace": namespace},
        "spec": {
            "image": plugin_image,
            "verification": {"allowUnsigned": true},
            "limits": {"fuel": 500_000_000u64, "memory": "64Mi", "deadline": "10s"},
            "config": {"imageRegistry": "docker.io", "pendingRounds": 1}
        }
    }))
    .unwrap_or_else(|e| unreachable!("the sample ProviderPlugin is valid: {e}"));
    let cs: ClusterStack = serde_json::from_value(serde_json::json!({
        "apiVersion": "clusterstack.x-k8s.io/v1alpha1",
        "kind": "ClusterStack",
        "metadata": {"name": "docker-ferrol-1-32", "namespace": namespace},
        "spec": {
            "provider": "docker",
            "name": "ferrol",
            "kubernetesVersion": "1.32",
            "channel": "stable",
            "autoSubscribe": true,
            "versions": []
        }
    }))
    .unwrap_or_else(|e| unreachable!("the sample ClusterStack is valid: {e}"));
    (pp, cs)
}

/// Name of the sample Cluster of the embedded default.
pub const SAMPLE_CLUSTER: &str = "sample";

/// The sample Cluster: a managed topology of ClusterClass `class` at Kubernetes `version` (v1beta1, the
/// version Cluster Stacks' docs use).
pub fn sample_cluster(namespace: &str, class: &str, version: &str) -> kube::core::DynamicObject {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1",
        "kind": "Cluster",
        "metadata": {"name": SAMPLE_CLUSTER, "namespace": namespace},
        "spec": {
            "clusterNetwork": {"pods": {"cidrBlocks": ["192.168.0.0/16"]}},
            "topology": {
                "class": class,
                "version": version,
                "controlPlane": {"replicas": 1},
                "workers": {"machineDeployments": [{"class": "default-worker", "name": "md-0", "replicas": 1}]}
            }
        }
    }))
    .unwrap_or_else(|e| unreachable!("the sample Cluster is valid: {e}"))
}

/// Creates an object, or replaces nothing when it exists.
pub async fn create<K>(client: &kube::Client, namespace: &str, object: &K) -> anyhow::Result<()>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::Serialize
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("creating {}", object.name_any())),
    }
}

/// The OCI layout of the embedded default, shipped in the repository.
pub fn default_layout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox/sample")
}

/// `stackhost sandbox`: the embedded default.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxArgs {
    /// Exit once the sample release is Ready and the addons of the sample Cluster are in its workload
    /// cluster (0), or with 1 and the reason when either does not happen within --timeout.
    #[arg(long)]
    pub once: bool,
    /// Where to write the kubeconfig of the sandbox API (for kubectl).
    #[arg(long, default_value = "stackhost-sandbox.kubeconfig")]
    pub kubeconfig: PathBuf,
    /// OCI image layout holding the sample plugin and release [default: sandbox/sample in the repository;
    /// the container image sets it to the copy it ships].
    #[arg(long, env = "STACKHOST_SANDBOX_LAYOUT")]
    pub layout: Option<PathBuf>,
    /// How long the sandbox waits for the sample release to become Ready, and then again for the addons
    /// of the sample Cluster to arrive.
    #[arg(long, default_value = "120s", value_parser = crate::run::parse_duration)]
    pub timeout: Duration,
    /// Cache directory [default: a temporary directory].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Where ClusterStacks without `spec.source` get their releases: `dir:PATH` (a folder of csctl-style
    /// releases, one folder per release tag, e.g. from `stackhost release build`), `oci://REGISTRY/REPO`,
    /// `oci+http://...` or `github://OWNER/REPO` [default: the sample releases of the layout].
    #[arg(long, value_name = "SOURCE")]
    pub release_source: Option<String>,
    /// More CRDs to install before the controllers start (the infrastructure provider's templates your
    /// cluster-class chart renders, e.g. Cluster API Docker or OpenStack, ORC): a YAML file or a folder
    /// of them; repeatable.
    #[arg(long = "crds", value_name = "DIR|FILE")]
    pub crds: Vec<PathBuf>,
    /// Create no sample ProviderPlugin, ClusterStack and Cluster: apply your own with kubectl. The sandbox
    /// reports each ClusterStackRelease and each Cluster's addons as they get ready; with --once it exits
    /// when every release is Ready and every Cluster has the addons of its class.
    #[arg(long)]
    pub no_sample: bool,
    /// Which build of the sample docker plugin serves: `rust` (plugins/docker, shipped in the layout),
    /// `python` (plugins/docker-py) or `js` (plugins/docker-js); the last two are read from
    /// plugins/dist (build them with `plugins/build docker-py docker-js`) and added to a copy of the layout.
    #[arg(long, value_enum, default_value_t = SamplePlugin::Rust)]
    pub sample_plugin: SamplePlugin,
    /// Instead of running: write the sample layout into this directory from plugins/dist/docker.wasm and
    /// tests/fixtures/releases/docker-ferrol-1-32-v1 (what scripts/build-sample-layout.sh does), then exit.
    #[arg(long, value_name = "DIR")]
    pub write_sample_layout: Option<PathBuf>,
}

/// The language of the sample plugin (`--sample-plugin`): the same plugin, the same fixtures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SamplePlugin {
    Rust,
    Python,
    Js,
}

impl SamplePlugin {
    /// The plugin's name in plugins/ and plugins/dist.
    pub fn plugin_name(self) -> &'static str {
        match self {
            SamplePlugin::Rust => "docker",
            SamplePlugin::Python => "docker-py",
            SamplePlugin::Js => "docker-js",
        }
    }
}

/// A copy of the sample layout at `dest` with the `sample` build of the docker plugin from the
/// repository's plugins/dist added; returns the plugin's reference in it.
pub fn layout_with_sample_plugin(
    repo: &Path,
    layout: &Path,
    sample: SamplePlugin,
    dest: &Path,
) -> anyhow::Result<String> {
    use crate::oci::layout::{add_plugin, Layout};
    use crate::oci::registry::parse_reference;
    if sample == SamplePlugin::Rust {
        return Ok(SAMPLE_PLUGIN.to_string());
    }
    let name = sample.plugin_name();
    let component_path = repo.join("plugins/dist").join(format!("{name}.wasm"));
    let component = std::fs::read(&component_path).with_context(|| {
        format!(
            "{}: build it first with `plugins/build {name}` (its toolchain: scripts/deps/pyjs.sh)",
            component_path.display()
        )
    })?;
    copy_dir(layout, dest)?;
    let mut layout = Layout::open(dest)?;
    let reference = format!("sample.stackhost.local/plugins/{name}:0.1.0");
    add_plugin(
        &mut layout,
        &parse_reference(&reference, &[])?,
        &format!("{name}.wasm"),
        &component,
    )?;
    Ok(reference)
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Writes the sample layout (see [`SandboxArgs::write_sample_layout`]) from the repository at `repo`.
pub fn write_sample_layout(repo: &Path, dest: &Path) -> anyhow::Result<()> {
    use crate::oci::layout::{add_plugin, add_release, Layout};
    use crate::oci::registry::parse_reference;
    let component_path = repo.join("plugins/dist/docker.wasm");
    let component = std::fs::read(&component_path).with_context(|| {
        format!(
            "{}: build the plugins first (plugins/build)",
            component_path.display()
        )
    })?;
    if dest.exists() {
        std::fs::remove_dir_all(dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    let mut layout = Layout::create(dest)?;
    let plugin = parse_reference(SAMPLE_PLUGIN, &[])?;
    let digest = add_plugin(&mut layout, &plugin, "docker.wasm", &component)?;
    println!("{SAMPLE_PLUGIN} {digest}");
    let tag = "docker-ferrol-1-32-v1";
    let release = parse_reference(&format!("{SAMPLE_RELEASES}:{tag}"), &[])?;
    let digest = add_release(
        &mut layout,
        &release,
        &repo.join("tests/fixtures/releases").join(tag),
    )?;
    println!("{SAMPLE_RELEASES}:{tag} {digest}");
    Ok(())
}

/// Reference of the sample plugin inside the shipped layout.
pub const SAMPLE_PLUGIN: &str = "sample.stackhost.local/plugins/docker:0.1.0";
/// Release repository inside the shipped layout.
pub const SAMPLE_RELEASES: &str = "sample.stackhost.local/kaas/cluster-stacks";

/// Runs the embedded default; see [`SandboxArgs`].
pub async fn run_sandbox(args: SandboxArgs) -> anyhow::Result<i32> {
    if let Some(dest) = &args.write_sample_layout {
        write_sample_layout(&Path::new(env!("CARGO_MANIFEST_DIR")).join(".."), dest)?;
        return Ok(0);
    }
    let sample = !args.no_sample;
    let layout = match (&args.layout, sample) {
        (Some(dir), _) => Some(dir.clone()),
        (None, true) => Some(default_layout()),
        (None, false) => None,
    };
    if let Some(layout) = &layout {
        anyhow::ensure!(
            layout.join("index.json").is_file(),
            "{} is not an OCI image layout (no index.json): pass --layout, or rebuild it with scripts/build-sample-layout.sh",
            layout.display()
        );
    }
    if let Some(path) = args
        .release_source
        .as_deref()
        .and_then(|s| s.strip_prefix("dir:"))
    {
        anyhow::ensure!(
            Path::new(path).is_dir(),
            "--release-source dir:{path}: no such folder (build releases into it with `stackhost release build STACK --out {path}`)"
        );
    }
    let extra_crds = read_crd_files(&args.crds)?;
    let release_source = match (&args.release_source, sample) {
        (Some(source), _) => Some(source.clone()),
        (None, true) => Some(format!("oci://{SAMPLE_RELEASES}")),
        (None, false) => None,
    };
    let temp = tempfile::Builder::new().prefix("stackhost-sandbox").tempdir()?;
    let (layout, plugin_image) = match (layout, args.sample_plugin) {
        (layout, SamplePlugin::Rust) => (layout, SAMPLE_PLUGIN.to_string()),
        (Some(layout), plugin) => {
            let copy = temp.path().join("sample-layout");
            let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
            let image = layout_with_sample_plugin(&repo, &layout, plugin, &copy)?;
            (Some(copy), image)
        }
        (None, _) => anyhow::bail!("--sample-plugin python|js runs the sample: drop --no-sample"),
    };
    let controller_args = ControllerArgs {
        oci_layout: layout.clone(),
        release_source: release_source.clone(),
        cache_dir: Some(
            args.cache_dir
                .clone()
                .unwrap_or_else(|| temp.path().to_path_buf()),
        ),
        retry_base: Duration::from_millis(500),
        retry_max: Duration::from_secs(10),
        auto_subscribe_interval: Duration::from_secs(60),
        ..ControllerArgs::default()
    };
    let started = Instant::now();
    eprintln!(
        "sandbox: starting the API emulator and the controllers (releases from {}{})",
        release_source
            .as_deref()
            .unwrap_or("each ClusterStack's spec.source"),
        layout
            .as_ref()
            .map(|l| format!(", OCI layout {}", l.display()))
            .unwrap_or_default()
    );
    let sandbox = Sandbox::start_with_crds(controller_args, &extra_crds).await?;
    sandbox.cluster.write_kubeconfig(&args.kubeconfig)?;
    eprintln!(
        "sandbox: API at {} (kubeconfig {}); CRDs installed: stackhost, Cluster API{}",
        sandbox.cluster.url(),
        args.kubeconfig.display(),
        extra_crds
            .iter()
            .map(|(file, _)| format!(", {file}"))
            .collect::<String>()
    );
    let ctx = sandbox
        .context()
        .cloned()
        .context("the controllers of the sandbox are not running")?;
    let mut addon_config = crate::controller::addons::addon_config(&ctx);
    addon_config.wait = Duration::from_secs(1);
    addon_config.retry = Duration::from_secs(2);
    let (stop_addons, stop) = watch::channel(false);
    let addons = crate::addon::inmemory::start_sandbox(sandbox.client.clone(), addon_config, stop)
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the in-memory infrastructure: {e}"))?;
    eprintln!(
        "sandbox: in-memory infrastructure, ClusterAddon controller and runtime hook server at {} running",
        addons.hooks.url()
    );
    if !sample {
        let outcome = follow_all(&sandbox.client, &addons, &args).await;
        if let Err(e) = &outcome {
            eprintln!("sandbox: {e:#}");
        }
        let _ = stop_addons.send(true);
        if tokio::time::timeout(Duration::from_secs(20), addons.stopped())
            .await
            .is_err()
        {
            eprintln!("sandbox: the in-memory infrastructure did not stop within 20s; leaving it");
        }
        sandbox.shutdown().await?;
        if args.once {
            let _ = std::fs::remove_file(&args.kubeconfig);
        }
        return Ok(if outcome.is_ok() { 0 } else { 1 });
    }
    let (pp, mut cs) = sample_objects("default", &plugin_image);
    if args.release_source.is_some() {
        // The process default source is the user's; the sample keeps reading the layout.
        cs.spec.source = Some(crate::api::ReleaseSourceSpec {
            oci: Some(crate::api::OciSourceSpec {
                repository: SAMPLE_RELEASES.into(),
                ..Default::default()
            }),
            github: None,
        });
    }
    create(&sandbox.client, "default", &pp).await?;
    create(&sandbox.client, "default", &cs).await?;
    eprintln!("sandbox: applied ProviderPlugin default/docker ({plugin_image}) and ClusterStack default/docker-ferrol-1-32");

    let workload_kubeconfig = args.kubeconfig.with_extension("sample.kubeconfig");
    let outcome = match follow_sample(&sandbox.client, args.timeout).await {
        Ok(release) => {
            report(&sandbox.client, &release, started.elapsed()).await?;
            sample_addons(
                &sandbox.client,
                &addons,
                &release,
                args.timeout,
                &workload_kubeconfig,
            )
            .await
        }
        Err(e) => Err(e.context("the sample release did not become ready")),
    };
    if let Err(e) = &outcome {
        eprintln!("sandbox: {e:#}");
    }
    if !args.once {
        println!(
            "\nThe sandbox keeps running. Try:\n  kubectl --kubeconfig {0} get clusterstacks,clusterstackreleases,providerplugins\n  kubectl --kubeconfig {0} get clusterclasses,clusters,clusteraddons\n  kubectl --kubeconfig {1} -n kube-system get configmaps,deployments   (the workload cluster of Cluster default/{SAMPLE_CLUSTER})\nStop it with Ctrl-C.",
            args.kubeconfig.display(),
            workload_kubeconfig.display(),
        );
        tokio::signal::ctrl_c().await.ok();
        eprintln!("sandbox: stopping");
    }
    let _ = stop_addons.send(true);
    if tokio::time::timeout(Duration::from_secs(20), addons.stopped())
        .await
        .is_err()
    {
        eprintln!("sandbox: the in-memory infrastructure did not stop within 20s; leaving it");
    }
    sandbox.shutdown().await?;
    if args.once {
        let _ = std::fs::remove_file(&args.kubeconfig);
        let _ = std::fs::remove_file(&workload_kubeconfig);
    }
    Ok(if outcome.is_ok() { 0 } else { 1 })
}

/// Creates the sample Cluster of the ready `release`'s ClusterClass and waits until its addons are in its
/// workload cluster; prints each change of the ClusterAddon and, at the end, the objects checked there.
async fn sample_addons(
    client: &kube::Client,
    addons: &SandboxAddons,
    release: &ClusterStackRelease,
    timeout: Duration,
    workload_kubeconfig: &Path,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let class = release.name_any();
    let version = release
        .status
        .as_ref()
        .and_then(|s| s.kubernetes_version.clone())
        .context("the ready release reports no Kubernetes version")?;
    let clusters = crate::addon::cluster::clusters(client.clone(), "default");
    match clusters
        .create(
            &PostParams::default(),
            &sample_cluster("default", &class, &version),
        )
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(e).context(format!("creating Cluster default/{SAMPLE_CLUSTER}")),
    }
    eprintln!(
        "sandbox: created Cluster default/{SAMPLE_CLUSTER} (ClusterClass {class}, Kubernetes {version})"
    );
    let api: Api<ClusterAddon> = Api::namespaced(client.clone(), "default");
    let addon_name = crate::addon::cluster_addon_name(SAMPLE_CLUSTER);
    let mut last = String::new();
    let mut kubeconfig_written = false;
    let deadline = Instant::now() + timeout;
    let checked = loop {
        if !kubeconfig_written {
            if let Some(text) = addons
                .provider
                .workload_kubeconfig("default", SAMPLE_CLUSTER)
                .await
            {
                std::fs::write(workload_kubeconfig, text)
                    .with_context(|| format!("writing {}", workload_kubeconfig.display()))?;
                eprintln!(
                    "sandbox: workload API of Cluster default/{SAMPLE_CLUSTER} started (kubeconfig {})",
                    workload_kubeconfig.display()
                );
                kubeconfig_written = true;
            }
        }
        let state = match api.get_opt(&addon_name).await {
            Ok(Some(a)) => describe_addon(&a),
            Ok(None) => format!("ClusterAddon {addon_name}: not created yet"),
            Err(e) => format!("cannot read ClusterAddon default/{addon_name}: {e}"),
        };
        if state != last {
            eprintln!("sandbox: {state}");
            last = state;
        }
        match addons.check(client, "default", SAMPLE_CLUSTER).await {
            Ok(found) => break found,
            Err(e) if Instant::now() >= deadline => anyhow::bail!(
                "the addons of Cluster default/{SAMPLE_CLUSTER} did not arrive in its workload cluster within {timeout:?}: {e}"
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    println!(
        "addons of Cluster default/{SAMPLE_CLUSTER} in its workload cluster after {:.1}s; checked there ({} objects):",
        started.elapsed().as_secs_f64(),
        checked.len()
    );
    for object in &checked {
        println!("  {object}");
    }
    for error in addons.provider.hook_errors() {
        println!("hook failure: {error}");
    }
    Ok(())
}

/// Prints each change of the sample release until it is Ready.
async fn follow_sample(client: &kube::Client, timeout: Duration) -> anyhow::Result<ClusterStackRelease> {
    let api: Api<ClusterStackRelease> = Api::namespaced(client.clone(), "default");
    let mut last = String::new();
    let deadline = Instant::now() + timeout;
    loop {
        let releases = api.list(&Default::default()).await?.items;
        for r in &releases {
            let line = describe_release(r);
            if line != last {
                eprintln!("sandbox: {line}");
                last = line;
            }
        }
        if let Some(r) = releases
            .iter()
            .find(|r| r.status.as_ref().is_some_and(|s| s.ready))
        {
            return Ok(r.clone());
        }
        if Instant::now() >= deadline {
            anyhow::bail!("not ready after {timeout:?}; last state: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn report(client: &kube::Client, release: &ClusterStackRelease, took: Duration) -> anyhow::Result<()> {
    let status = release.status.clone().unwrap_or_default();
    println!(
        "release {} ready in {:.1}s (Kubernetes {}, plugin {})",
        release.name_any(),
        took.as_secs_f64(),
        status.kubernetes_version.unwrap_or_default(),
        status.plugin_digest.unwrap_or_else(|| "none".into())
    );
    println!("applied {} objects:", status.resources.len());
    for r in &status.resources {
        let ns = if r.namespace.is_empty() {
            String::new()
        } else {
            format!("{}/", r.namespace)
        };
        println!(
            "  {} {ns}{} ({:?})",
            r.kind,
            r.name,
            r.status.unwrap_or(crate::api::ResourceStatus::NotSynced)
        );
    }
    let ar = kube::core::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
        "cluster.x-k8s.io",
        "v1beta2",
        "ClusterClass",
    ));
    let classes: Api<kube::core::DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    for class in classes.list(&Default::default()).await?.items {
        let patched: Vec<String> = class
            .annotations()
            .iter()
            .filter(|(k, _)| k.starts_with("docker.clusterstack.x-k8s.io/"))
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!(
            "ClusterClass {} patched by the plugin: {}",
            class.name_any(),
            if patched.is_empty() {
                "nothing".to_string()
            } else {
                patched.join(", ")
            }
        );
    }
    Ok(())
}

/// What `--no-sample` has reported so far, per object.
#[derive(Debug, Default)]
struct Followed {
    /// Last printed state per release (`ns/name`) and when it was first seen.
    releases: std::collections::BTreeMap<String, (String, Instant, bool)>,
    /// Per Cluster (`ns/name`): last printed ClusterAddon state, the class whose addons are awaited and
    /// since when, whether they arrived, and whether the workload kubeconfig was written.
    clusters: std::collections::BTreeMap<String, ClusterFollow>,
}

#[derive(Debug)]
struct ClusterFollow {
    last: String,
    class: String,
    since: Instant,
    applied: bool,
    kubeconfig: bool,
}

/// The kubeconfig file of the workload cluster of Cluster `namespace/name` next to the sandbox's own.
pub fn workload_kubeconfig_path(kubeconfig: &Path, namespace: &str, name: &str) -> PathBuf {
    kubeconfig.with_extension(format!("{namespace}-{name}.kubeconfig"))
}

/// `--no-sample`: reports every ClusterStackRelease and every Cluster's addons until Ctrl-C, or with
/// `--once` until all are done (an error with the last state when `--timeout` passes first).
async fn follow_all(client: &kube::Client, addons: &SandboxAddons, args: &SandboxArgs) -> anyhow::Result<()> {
    println!(
        "sandbox: waiting for your objects. Apply a ClusterStack (and a Cluster of its class) with\n  kubectl --kubeconfig {} apply -f ...",
        args.kubeconfig.display()
    );
    let releases: Api<ClusterStackRelease> = Api::all(client.clone());
    let clusters: Api<kube::core::DynamicObject> =
        Api::all_with(client.clone(), &crate::addon::cluster::cluster_resource());
    let mut seen = Followed::default();
    let deadline = Instant::now() + args.timeout;
    let (stop_tx, mut stop) = watch::channel(false);
    if !args.once {
        tokio::spawn(async move {
            tokio::signal::ctrl_c().await.ok();
            let _ = stop_tx.send(true);
        });
    }
    loop {
        let mut pending = Vec::new();
        let listed = releases.list(&Default::default()).await?.items;
        for r in &listed {
            let key = format!("{}/{}", r.namespace().unwrap_or_default(), r.name_any());
            let line = describe_release(r);
            let ready = r.status.as_ref().is_some_and(|s| s.ready);
            let entry = seen
                .releases
                .entry(key.clone())
                .or_insert_with(|| (String::new(), Instant::now(), false));
            if entry.0 != line {
                eprintln!("sandbox: {line}");
                entry.0 = line;
            }
            if ready && !entry.2 {
                entry.2 = true;
                println!(
                    "release {key} Ready {:.1}s after it appeared (Kubernetes {})",
                    entry.1.elapsed().as_secs_f64(),
                    r.status
                        .as_ref()
                        .and_then(|s| s.kubernetes_version.clone())
                        .unwrap_or_default()
                );
            }
            if !ready {
                pending.push(format!("release {key} is not Ready"));
            }
        }
        if listed.is_empty() {
            pending.push("no ClusterStackRelease yet (apply a ClusterStack)".into());
        }
        for cluster in clusters.list(&Default::default()).await?.items {
            let (ns, name) = (cluster.namespace().unwrap_or_default(), cluster.name_any());
            let value = serde_json::to_value(&cluster).unwrap_or_default();
            let Some(class) = crate::addon::cluster::topology_class(&value).map(str::to_owned) else {
                continue;
            };
            let key = format!("{ns}/{name}");
            let follow = seen.clusters.entry(key.clone()).or_insert_with(|| ClusterFollow {
                last: String::new(),
                class: class.clone(),
                since: Instant::now(),
                applied: false,
                kubeconfig: false,
            });
            if follow.class != class {
                follow.class = class.clone();
                follow.since = Instant::now();
                follow.applied = false;
            }
            if !follow.kubeconfig {
                if let Some(text) = addons.provider.workload_kubeconfig(&ns, &name).await {
                    let path = workload_kubeconfig_path(&args.kubeconfig, &ns, &name);
                    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
                    eprintln!(
                        "sandbox: workload API of Cluster {key} started (kubeconfig {})",
                        path.display()
                    );
                    follow.kubeconfig = true;
                }
            }
            let addon_name = crate::addon::cluster_addon_name(&name);
            let addon = Api::<ClusterAddon>::namespaced(client.clone(), &ns)
                .get_opt(&addon_name)
                .await
                .ok()
                .flatten();
            let state = match &addon {
                Some(a) => describe_addon(a),
                None => format!("ClusterAddon {ns}/{addon_name}: not created yet"),
            };
            if state != follow.last {
                eprintln!("sandbox: {state}");
                follow.last = state;
            }
            if follow.applied {
                continue;
            }
            let of_class = addon.as_ref().is_some_and(|a| a.spec.cluster_stack == class);
            match addons.check(client, &ns, &name).await {
                Ok(found) if of_class => {
                    follow.applied = true;
                    println!(
                        "addons of Cluster {key} (class {class}) applied in its workload cluster {:.1}s after the class was set; checked there ({} objects):",
                        follow.since.elapsed().as_secs_f64(),
                        found.len()
                    );
                    for object in &found {
                        println!("  {object}");
                    }
                }
                Ok(_) => pending.push(format!(
                    "Cluster {key}: the addons of class {class} are not applied yet"
                )),
                Err(e) => pending.push(format!("Cluster {key}: {e}")),
            }
        }
        if args.once && pending.is_empty() {
            for error in addons.provider.hook_errors() {
                println!("hook failure: {error}");
            }
            return Ok(());
        }
        if args.once && Instant::now() >= deadline {
            anyhow::bail!("not done within {:?}: {}", args.timeout, pending.join("; "));
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = stop.wait_for(|s| *s) => {
                eprintln!("sandbox: stopping");
                return Ok(());
            }
        }
    }
}
