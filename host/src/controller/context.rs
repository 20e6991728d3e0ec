//! What every reconcile shares: the client, the plugin registry, release sources and cache, the
//! renderer, events, metrics and per-object retry backoff.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Resource, ResourceExt};

use super::fair::{NamespaceSlots, Slot};
use super::metrics::Metrics;
use super::plugins::PluginRegistry;
use crate::api::{ClusterStackSpec, ReleaseSourceSpec};
use crate::oci::auth::{Credential, Credentials};
use crate::oci::cache::BlobCache;
use crate::oci::layout::Layout;
use crate::oci::registry::{Mirror, Registry, RegistryConfig};
use crate::oci::release::OciReleaseSource;
use crate::oci::source::Source;
use crate::release::{Downloads, GitHubConfig, GitHubSource, LocalDirSource, ReleaseCache, ReleaseSource};
use crate::render::Renderer;

/// Options of the controllers (`stackhost run`, flattened into its command line).
#[derive(Debug, Clone, clap::Args)]
pub struct ControllerArgs {
    /// Only watch and reconcile objects in this namespace (default: all namespaces).
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only reconcile objects carrying this label (`key=value`); ClusterStackReleases inherit it.
    #[arg(long, value_parser = parse_label)]
    pub watch_label: Option<(String, String)>,
    /// Reconciles run at the same time, per controller.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,
    /// Reconciles one namespace may have in flight per controller, so that one namespace's slow objects
    /// cannot hold every worker [default: half of --concurrency, at least 1].
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub namespace_concurrency: Option<u16>,
    /// Release source for ClusterStacks without `spec.source`: `oci://REGISTRY/REPO`,
    /// `oci+http://REGISTRY/REPO` (plain HTTP), `github://OWNER/REPO`, or `dir:PATH`.
    #[arg(long, env = "STACKHOST_RELEASE_SOURCE")]
    pub release_source: Option<String>,
    /// Read plugins and OCI releases from this OCI image layout instead of registries (air gap).
    #[arg(long)]
    pub oci_layout: Option<PathBuf>,
    /// Cache of release files and plugin blobs.
    #[arg(long, env = "STACKHOST_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Registry credentials (a Docker `config.json`, e.g. a mounted `kubernetes.io/dockerconfigjson`
    /// Secret) for the default release source and ProviderPlugin images. Read again for every pull, so
    /// a rotated Secret is used without a restart; a ClusterStack's own credentials win for its registry.
    #[arg(long, env = "STACKHOST_REGISTRY_CONFIG", value_name = "FILE")]
    pub registry_config: Option<PathBuf>,
    /// Registry mirror tried before the origin: `PREFIX=ENDPOINT[,ENDPOINT...]` (e.g.
    /// `registry.scs.community/kaas=mirror.internal:5000/kaas`); repeatable. What a mirror serves must
    /// match the digest of the reference.
    #[arg(long = "registry-mirror", value_name = "RULE", value_parser = parse_mirror)]
    pub registry_mirrors: Vec<Mirror>,
    /// How often autoSubscribe looks for new releases.
    #[arg(long, default_value = "5m", value_parser = crate::run::parse_duration)]
    pub auto_subscribe_interval: Duration,
    /// How often a ProviderPlugin's image reference is resolved again (a tag may move to a new digest).
    #[arg(long, default_value = "2m", value_parser = crate::run::parse_duration)]
    pub plugin_refresh_interval: Duration,
    /// How often a ready release is applied again (drift correction).
    #[arg(long, default_value = "10m", value_parser = crate::run::parse_duration)]
    pub resync_interval: Duration,
    /// First wait before retrying a failed step; doubled per consecutive failure.
    #[arg(long, default_value = "5s", value_parser = crate::run::parse_duration)]
    pub retry_base: Duration,
    /// Longest wait between retries of a failed step.
    #[arg(long, default_value = "5m", value_parser = crate::run::parse_duration)]
    pub retry_max: Duration,
    /// GitHub API base URL for `github://` sources.
    #[arg(long, default_value = "https://api.github.com")]
    pub github_api_url: String,
    /// How the provider step runs: `plugin` (the ProviderPlugin, in process) or `object` (upstream's way:
    /// a provider object is created in the API and a separate provider operator marks it ready; kept
    /// for the comparison benchmark).
    #[arg(long, value_enum, default_value = "plugin", hide = true)]
    pub provider_step: ProviderStep,
    /// Cluster-scoped kinds a release may apply, as `Kind.group` (`Kind` for the core group) or `*`.
    /// By default a release applies only namespaced objects in its ClusterStack's namespace: a ClusterStack
    /// is namespaced and its source is its creator's choice. Repeat or separate with commas.
    #[arg(
        long = "release-allow-kind",
        env = "STACKHOST_RELEASE_ALLOW_KINDS",
        value_delimiter = ','
    )]
    pub release_allow_kinds: Vec<String>,
    /// Namespaces besides its own that a release may write into, or `*`. Repeat or separate with commas.
    #[arg(
        long = "release-allow-namespace",
        env = "STACKHOST_RELEASE_ALLOW_NAMESPACES",
        value_delimiter = ','
    )]
    pub release_allow_namespaces: Vec<String>,
    /// Most MiB one chart archive of a release may expand to (Helm's own loader limit by default).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub release_max_unpacked_mib: u64,
    /// Most MiB one file in a chart archive of a release may expand to (Helm's own limit by default).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub release_max_file_mib: u64,
    /// Longest time one release download may take, start to end (a source that trickles bytes cannot
    /// hold a download longer). Listing a source's tags gets this or 30s, whichever is shorter.
    #[arg(long, default_value = "5m", value_parser = positive_duration)]
    pub release_download_timeout: Duration,
    /// Release downloads from one origin (a registry host, a GitHub API host) running at once; more
    /// wait their turn in order. Downloads never occupy reconcile workers.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub release_downloads_per_source: u16,
    /// Longest time one Helm render may take; a render still running then is stopped (each render
    /// runs in a child process) and its release reports `RenderTimedOut`.
    #[arg(long, default_value = "30s", value_parser = positive_duration)]
    pub render_timeout: Duration,
    /// Most resident memory one render process may use; a render past it is stopped and its release
    /// reports `RenderOutOfMemory`. The real SCS stacks' renders peak at 70-82 MiB.
    #[arg(long, default_value_t = crate::render::DEFAULT_RENDER_MEMORY_MIB, value_parser = clap::value_parser!(u64).range(64..=65_536))]
    pub render_max_memory_mib: u64,
    /// Longest `spec.limits.deadline` a ProviderPlugin may ask for per call; one over it is refused
    /// (`InvalidSpec`). A call holds a reconcile worker for as long as it runs.
    #[arg(long, default_value = "5m", value_parser = positive_duration)]
    pub plugin_max_deadline: Duration,
    /// Most `spec.limits.memory` a ProviderPlugin may ask for per instance, in MiB; more is refused.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=65_536))]
    pub plugin_max_memory_mib: u64,
    /// The stackhost binary that runs renders (`<program> internal-render`); this process's own binary
    /// by default (tests point it at the built binary).
    #[arg(long, env = "STACKHOST_RENDER_PROGRAM", hide = true)]
    pub render_program: Option<PathBuf>,
    /// Requests per second each Kubernetes client (the management cluster's, and each workload
    /// cluster's) may send on average; 0 sends without a client-side limit and leaves the API server's
    /// priority and fairness to protect it.
    #[arg(long, default_value_t = 0.0, value_parser = parse_qps)]
    pub kube_api_qps: f64,
    /// Requests each client may send at once before --kube-api-qps paces them [default: twice the qps].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub kube_api_burst: Option<u32>,
    /// Keep every ProviderPlugin's `state` Secret in this namespace (e.g. stackhost's own, where its Role
    /// may write Secrets) instead of the ProviderPlugin's namespace.
    #[arg(long, env = "STACKHOST_PLUGIN_STATE_NAMESPACE")]
    pub plugin_state_namespace: Option<String>,
}

/// See [`ControllerArgs::provider_step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ProviderStep {
    #[default]
    Plugin,
    Object,
}

impl Default for ControllerArgs {
    fn default() -> Self {
        ControllerArgs {
            namespace: None,
            watch_label: None,
            concurrency: 4,
            namespace_concurrency: None,
            release_source: None,
            oci_layout: None,
            cache_dir: None,
            registry_config: None,
            registry_mirrors: Vec::new(),
            auto_subscribe_interval: Duration::from_secs(300),
            plugin_refresh_interval: Duration::from_secs(120),
            resync_interval: Duration::from_secs(600),
            retry_base: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            github_api_url: "https://api.github.com".into(),
            provider_step: ProviderStep::Plugin,
            release_allow_kinds: Vec::new(),
            release_allow_namespaces: Vec::new(),
            release_max_unpacked_mib: 100,
            release_max_file_mib: 5,
            release_download_timeout: Duration::from_secs(300),
            release_downloads_per_source: 4,
            render_timeout: Duration::from_secs(30),
            render_max_memory_mib: crate::render::DEFAULT_RENDER_MEMORY_MIB,
            plugin_max_deadline: Duration::from_secs(300),
            plugin_max_memory_mib: 1024,
            render_program: None,
            kube_api_qps: 0.0,
            kube_api_burst: None,
            plugin_state_namespace: None,
        }
    }
}

/// A duration greater than zero (zero would mean "no time at all", not "no limit").
fn positive_duration(s: &str) -> Result<Duration, String> {
    match crate::run::parse_duration(s)? {
        d if d.is_zero() => Err(format!("{s:?}: use a duration greater than zero, e.g. 5m")),
        d => Ok(d),
    }
}

/// Parses a `--registry-mirror` rule.
pub fn parse_mirror(s: &str) -> Result<Mirror, String> {
    s.parse().map_err(|e: crate::oci::error::OciError| e.to_string())
}

/// Parses `--kube-api-qps`: 0 (no limit) up to 10,000.
fn parse_qps(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(q) if (0.0..=10_000.0).contains(&q) => Ok(q),
        _ => Err(format!(
            "{s:?}: use requests per second from 0 (no limit) to 10000, e.g. 50"
        )),
    }
}

/// Parses a `key=value` label flag (`--watch-label`).
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("{s:?} is not a label; use key=value")),
    }
}

impl ControllerArgs {
    /// The client-side rate limit of each Kubernetes client (`--kube-api-qps`, `--kube-api-burst`).
    pub fn api_rate(&self) -> Option<crate::run::rate::ApiRate> {
        crate::run::rate::ApiRate::from_flags(self.kube_api_qps, self.kube_api_burst)
    }

    /// What releases may write beyond their own namespace (`--release-allow-*`).
    pub fn confinement(&self) -> crate::apply::Confinement {
        crate::apply::Confinement {
            cluster_kinds: self.release_allow_kinds.clone(),
            namespaces: self.release_allow_namespaces.clone(),
        }
    }

    /// What a release's chart archives may expand to (`--release-max-*`).
    pub fn archive_limits(&self) -> crate::release::chart::ArchiveLimits {
        crate::release::chart::ArchiveLimits {
            total_bytes: self.release_max_unpacked_mib << 20,
            entry_bytes: self.release_max_file_mib << 20,
            ..Default::default()
        }
    }

    /// Reconciles one namespace may have in flight per controller (`--namespace-concurrency`).
    pub fn namespace_slots(&self) -> Arc<NamespaceSlots> {
        NamespaceSlots::new(
            self.namespace_concurrency
                .map(usize::from)
                .unwrap_or_else(|| NamespaceSlots::default_cap(self.concurrency)),
        )
    }

    /// What one render process may use (`--render-timeout`, `--render-max-memory-mib`).
    pub fn render_limits(&self) -> crate::render::ProcessLimits {
        crate::render::ProcessLimits {
            timeout: self.render_timeout,
            memory: self.render_max_memory_mib << 20,
        }
    }

    /// `key=value` for list/watch label selectors.
    pub fn label_selector(&self) -> Option<String> {
        self.watch_label.as_ref().map(|(k, v)| format!("{k}={v}"))
    }

    /// The cache directory (`--cache-dir`, else `$XDG_CACHE_HOME/stackhost` or `~/.cache/stackhost`).
    pub fn cache_root(&self) -> PathBuf {
        self.cache_dir.clone().unwrap_or_else(|| {
            std::env::var_os("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(std::env::temp_dir)
                .join("stackhost")
        })
    }
}

/// Shared state of the controllers.
pub struct Context {
    pub client: kube::Client,
    pub args: ControllerArgs,
    pub plugins: PluginRegistry,
    pub releases: Arc<ReleaseCache>,
    /// Release downloads in the background (deadline, slots per origin, cancellation).
    pub downloads: Downloads,
    pub blobs: Arc<BlobCache>,
    pub renderer: Arc<dyn Renderer>,
    pub metrics: Metrics,
    /// Each namespace's share of the reconcile workers.
    pub slots: Arc<NamespaceSlots>,
    layout: Option<Arc<Layout>>,
    /// The `--registry-config` credentials as last read successfully.
    registry_credentials: Mutex<Credentials>,
    recorder: Recorder,
    failures: Mutex<HashMap<String, u32>>,
    tags: Mutex<HashMap<String, (Instant, Vec<String>)>>,
    refreshes: Mutex<HashMap<String, String>>,
    /// Stop flags of renders in flight, by object key (see [`Context::stop`]).
    stops: Mutex<HashMap<String, Arc<AtomicBool>>>,
    /// Why the status of a ClusterStackRelease (`ns/name`) could not be written, e.g. RBAC refused
    /// `patch` on `clusterstackreleases/status`: its ClusterStack reports it, the release cannot.
    unwritten: Mutex<HashMap<String, String>>,
    /// Ticks when `unwritten` changed: the ClusterStack controller reconciles every ClusterStack.
    stacks_wake: tokio::sync::watch::Sender<u64>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("args", &self.args)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// Opens the caches and the OCI layout, if one is configured.
    pub fn new(
        client: kube::Client,
        args: ControllerArgs,
        plugins: PluginRegistry,
        renderer: Arc<dyn Renderer>,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let root = args.cache_root();
        let releases = Arc::new(
            ReleaseCache::open(&root.join("releases"))
                .with_context(|| format!("cannot open the release cache in {}", root.display()))?
                .with_limits(args.archive_limits()),
        );
        let downloads = Downloads::new(
            releases.clone(),
            args.release_download_timeout,
            usize::from(args.release_downloads_per_source),
        );
        let blobs = Arc::new(
            BlobCache::open(root.join("blobs"))
                .with_context(|| format!("cannot open the blob cache in {}", root.display()))?,
        );
        let layout = match &args.oci_layout {
            Some(dir) => Some(Arc::new(
                Layout::open(dir).with_context(|| format!("--oci-layout {}", dir.display()))?,
            )),
            None => None,
        };
        let registry_credentials = match &args.registry_config {
            Some(path) => Credentials::from_docker_config_file(path)
                .with_context(|| format!("--registry-config {}", path.display()))?,
            None => Credentials::anonymous(),
        };
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "stackhost".into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        );
        Ok(Context {
            client,
            slots: args.namespace_slots(),
            args,
            plugins,
            releases,
            downloads,
            blobs,
            renderer,
            metrics,
            layout,
            registry_credentials: Mutex::new(registry_credentials),
            recorder,
            failures: Mutex::default(),
            tags: Mutex::default(),
            refreshes: Mutex::default(),
            stops: Mutex::default(),
            unwritten: Mutex::default(),
            stacks_wake: tokio::sync::watch::Sender::new(0),
        })
    }

    /// A place for one reconcile of `object` by `controller` within its namespace's share of the
    /// workers, or `None` (counted as deferred) when the namespace has its share in flight.
    pub fn slot(&self, controller: &'static str, object: &impl Resource) -> Option<Slot> {
        let ns = object.meta().namespace.as_deref().unwrap_or_default();
        self.slots.take(controller, ns, Some(&self.metrics))
    }

    /// Where OCI artifacts come from: the configured layout, else registries (plain HTTP for
    /// `insecure`, loopback always) through the `--registry-mirror`s, with the `--registry-config`
    /// credentials overridden by `credentials`.
    pub fn oci_source(&self, insecure_host: Option<&str>, credentials: Credentials) -> Source {
        if let Some(layout) = &self.layout {
            return Source::Layout(layout.clone());
        }
        let mut all = self.registry_credentials();
        all.merge(credentials);
        Source::Registry(Arc::new(Registry::new(RegistryConfig {
            insecure: insecure_host.map(|h| vec![h.to_string()]).unwrap_or_default(),
            mirrors: self.args.registry_mirrors.clone(),
            credentials: all,
            ..RegistryConfig::default()
        })))
    }

    /// The `--registry-config` credentials, read again so that a rotated Secret takes effect; when the
    /// file cannot be read now (a Secret volume is swapped atomically, but may be mid-update), the
    /// last credentials read stay in use.
    fn registry_credentials(&self) -> Credentials {
        let mut last = self
            .registry_credentials
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(path) = &self.args.registry_config {
            match Credentials::from_docker_config_file(path) {
                Ok(fresh) => *last = fresh,
                Err(e) => {
                    tracing::warn!(error = %e, "--registry-config: keeping the credentials read before")
                }
            }
        }
        last.clone()
    }

    /// The release source of a ClusterStack (its `spec.source`, else the process default).
    pub async fn release_source(
        &self,
        namespace: &str,
        spec: Option<&ReleaseSourceSpec>,
    ) -> Result<Arc<dyn ReleaseSource>, String> {
        match spec {
            Some(ReleaseSourceSpec { oci: Some(oci), .. }) => {
                let host = oci.repository.split('/').next().unwrap_or_default().to_string();
                let mut credentials = Credentials::anonymous();
                if let Some(secret) = &oci.credentials_secret_name {
                    let data = self.secret_data(namespace, secret).await?;
                    let get = |k: &str| data.get(k).map(|v| String::from_utf8_lossy(v).into_owned());
                    let credential = match (get("username"), get("password"), get("token")) {
                        (Some(username), Some(password), _) => Credential::Basic { username, password },
                        (_, _, Some(token)) => Credential::Bearer(token),
                        _ => {
                            return Err(format!(
                                "Secret {namespace}/{secret} (spec.source.oci.credentialsSecretName) needs \
                                 `username` and `password`, or `token`"
                            ))
                        }
                    };
                    credentials.insert(&host, credential);
                }
                let source = self.oci_source(oci.insecure.then_some(host.as_str()), credentials);
                OciReleaseSource::new(source, &oci.repository)
                    .map(|s| Arc::new(s) as Arc<dyn ReleaseSource>)
                    .map_err(|e| format!("spec.source.oci.repository: {e}"))
            }
            Some(ReleaseSourceSpec { github: Some(gh), .. }) => {
                let token = match &gh.token_secret_name {
                    Some(secret) => {
                        let data = self.secret_data(namespace, secret).await?;
                        let token = data.get("token").ok_or_else(|| {
                            format!(
                                "Secret {namespace}/{secret} (spec.source.github.tokenSecretName) has no `token` key"
                            )
                        })?;
                        Some(String::from_utf8_lossy(token).trim().to_string())
                    }
                    None => None,
                };
                Ok(Arc::new(GitHubSource::new(GitHubConfig {
                    api_url: gh
                        .api_url
                        .clone()
                        .unwrap_or_else(|| self.args.github_api_url.clone()),
                    owner: gh.owner.clone(),
                    repository: gh.repository.clone(),
                    token,
                    max_asset_bytes: None,
                })))
            }
            _ => self.default_source(),
        }
    }

    fn default_source(&self) -> Result<Arc<dyn ReleaseSource>, String> {
        let Some(spec) = self.args.release_source.as_deref() else {
            return Err(
                "the ClusterStack has no spec.source and the controller has no --release-source; \
                        set one of them"
                    .into(),
            );
        };
        if let Some(path) = spec.strip_prefix("dir:") {
            return Ok(Arc::new(LocalDirSource::new(path)));
        }
        if let Some(repo) = spec.strip_prefix("github://") {
            let (owner, repository) = repo
                .split_once('/')
                .ok_or_else(|| format!("--release-source {spec}: use github://OWNER/REPO"))?;
            return Ok(Arc::new(GitHubSource::new(GitHubConfig {
                api_url: self.args.github_api_url.clone(),
                owner: owner.into(),
                repository: repository.into(),
                token: None,
                max_asset_bytes: None,
            })));
        }
        let (repo, insecure) = match (spec.strip_prefix("oci://"), spec.strip_prefix("oci+http://")) {
            (Some(r), _) => (r, false),
            (_, Some(r)) => (r, true),
            _ => {
                return Err(format!(
                    "--release-source {spec}: use oci://REGISTRY/REPO, oci+http://REGISTRY/REPO, \
                     github://OWNER/REPO or dir:PATH"
                ))
            }
        };
        let host = repo.split('/').next().unwrap_or_default();
        let source = self.oci_source(insecure.then_some(host), Credentials::anonymous());
        OciReleaseSource::new(source, repo)
            .map(|s| Arc::new(s) as Arc<dyn ReleaseSource>)
            .map_err(|e| format!("--release-source {spec}: {e}"))
    }

    /// The data of a Secret, with a message naming it when it cannot be read.
    pub async fn secret_data(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<std::collections::BTreeMap<String, Vec<u8>>, String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        match api.get_opt(name).await {
            Ok(Some(s)) => Ok(s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()),
            Ok(None) => Err(format!("Secret {namespace}/{name} does not exist")),
            Err(e) => Err(format!("cannot read Secret {namespace}/{name}: {e}")),
        }
    }

    /// Release tags of a source, listed at most once per autoSubscribe interval (100 ClusterStacks on
    /// one source cost one listing). `fresh` skips the cache (a refresh was asked for).
    pub async fn list_tags(&self, source: &dyn ReleaseSource, fresh: bool) -> Result<Vec<String>, String> {
        let id = source.id();
        let ttl = self.args.auto_subscribe_interval / 2;
        if !fresh {
            let tags = self.tags.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, list)) = tags.get(&id) {
                if at.elapsed() < ttl {
                    return Ok(list.clone());
                }
            }
        }
        // A listing holds a ClusterStack worker: bound it, or one slow source stalls every ClusterStack.
        let limit = self.args.release_download_timeout.min(Duration::from_secs(30));
        let list = match tokio::time::timeout(limit, source.list_releases()).await {
            Ok(listed) => listed.map_err(|e| e.to_string())?,
            Err(_) => {
                return Err(format!(
                    "{} did not list its releases within {}s",
                    source.describe(),
                    limit.as_secs_f64()
                ))
            }
        };
        self.tags
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (Instant::now(), list.clone()));
        Ok(list)
    }

    /// Whether the refresh annotation value `value` of object `uid` is new (a fresh listing is due).
    pub fn refresh_requested(&self, uid: &str, value: &str) -> bool {
        let mut seen = self.refreshes.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(uid.to_string(), value.to_string()).as_deref() != Some(value)
    }

    /// A stop flag for the work `key` is about to do (a render), set by [`Context::stop`]; forgotten
    /// when the returned guard is dropped.
    pub fn stop_flag(&self, key: &str) -> StopFlag<'_> {
        let flag = Arc::new(AtomicBool::new(false));
        self.stops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.to_owned(), flag.clone());
        StopFlag {
            ctx: self,
            key: key.to_owned(),
            flag,
        }
    }

    /// The object `key` is going away: stop its render and its download, if any.
    pub fn stop(&self, key: &str) {
        if let Some(flag) = self.stops.lock().unwrap_or_else(|p| p.into_inner()).get(key) {
            flag.store(true, Ordering::Relaxed);
        }
        self.downloads.cancel(key);
    }

    /// Publishes an Event about `object`; failures are logged, never fatal.
    pub async fn event<K>(&self, object: &K, type_: EventType, reason: &str, action: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        publish_event(&self.recorder, object, type_, reason, action, note).await;
    }

    /// The Event recorder (for the ClusterAddon controller, which has its own context).
    pub fn recorder(&self) -> Recorder {
        self.recorder.clone()
    }

    /// The wait before retrying a failed step of `key`: `retry_base * 2^(failures-1)`, capped.
    pub fn backoff(&self, key: &str) -> Duration {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let n = failures.entry(key.to_string()).or_insert(0);
        *n = n.saturating_add(1);
        let factor = 2u32.saturating_pow((*n - 1).min(16));
        self.args
            .retry_base
            .saturating_mul(factor)
            .min(self.args.retry_max)
    }

    /// Records why the status of ClusterStackRelease `ns/name` could not be written (`None`: it was
    /// written). Returns whether that changed; a change wakes the ClusterStack controller.
    pub fn release_status_unwritten(&self, ns: &str, name: &str, why: Option<String>) -> bool {
        let key = format!("{ns}/{name}");
        let mut unwritten = self.unwritten.lock().unwrap_or_else(|p| p.into_inner());
        let changed = match why {
            Some(why) => unwritten.insert(key, why.clone()).as_ref() != Some(&why),
            None => unwritten.remove(&key).is_some(),
        };
        drop(unwritten);
        if changed {
            self.stacks_wake.send_modify(|n| *n = n.wrapping_add(1));
        }
        changed
    }

    /// Why the status of ClusterStackRelease `ns/name` could not be written, if it could not.
    pub fn release_status_error(&self, ns: &str, name: &str) -> Option<String> {
        self.unwritten
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&format!("{ns}/{name}"))
            .cloned()
    }

    /// A stream that yields whenever a release's status became writable or unwritable.
    pub fn stacks_trigger(&self) -> impl futures_util::Stream<Item = ()> + Send + 'static {
        let mut rx = self.stacks_wake.subscribe();
        rx.mark_unchanged();
        futures_util::stream::unfold(rx, |mut rx| async move {
            rx.changed().await.ok()?;
            Some(((), rx))
        })
    }

    /// Forgets the failures of `key` after a success.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

/// A registered stop flag; see [`Context::stop_flag`].
#[derive(Debug)]
pub struct StopFlag<'a> {
    ctx: &'a Context,
    key: String,
    flag: Arc<AtomicBool>,
}

impl StopFlag<'_> {
    /// The flag, for the thread doing the work.
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }
}

impl Drop for StopFlag<'_> {
    fn drop(&mut self) {
        let mut stops = self.ctx.stops.lock().unwrap_or_else(|p| p.into_inner());
        if stops.get(&self.key).is_some_and(|f| Arc::ptr_eq(f, &self.flag)) {
            stops.remove(&self.key);
        }
    }
}

/// Publishes an Event about `object` with `recorder`; failures are logged, never fatal.
pub async fn publish_event<K>(
    recorder: &Recorder,
    object: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(truncate(&note, 1000)),
        action: action.into(),
        secondary: None,
    };
    if let Err(e) = recorder.publish(&event, &object.object_ref(&())).await {
        tracing::debug!(object = %object.name_any(), error = %e, "cannot publish event");
    }
}

/// Cuts `text` to at most `max` bytes on a character boundary.
pub fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The ProviderPlugin name a ClusterStack uses (None in noProvider mode).
pub fn plugin_of(spec: &ClusterStackSpec) -> Option<String> {
    crate::api::provider_plugin_name(spec).map(str::to_owned)
}
