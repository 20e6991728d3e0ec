//! One emulated cluster: starts the HTTP server on 127.0.0.1, the garbage collector and the optional snapshot
//! writer, and hands out a kubeconfig and a `kube::Client`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, Inner, Target, WriteOptions};
use crate::gc;
use crate::resource;
use crate::server::{self, Shared};

/// Errors of starting, snapshotting or connecting to a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The listening socket could not be bound.
    #[error("cannot listen on 127.0.0.1:{port}: {source}")]
    Bind {
        /// Requested port (0: random).
        port: u16,
        /// The OS error.
        source: std::io::Error,
    },
    /// The certificates for HTTPS could not be made.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The state file exists but cannot be read or parsed.
    #[error("cannot load the state file {path}: {reason}; delete it to start empty")]
    LoadState {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// Writing a file (state or kubeconfig) failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A manifest could not be applied.
    #[error("cannot apply {object}: {reason}")]
    Apply {
        /// `Kind namespace/name` (or the document number when unparsable).
        object: String,
        /// What the API answered.
        reason: String,
    },
    /// Building a kube client failed.
    #[error("cannot build a kube client for {url}: {reason}")]
    Client {
        /// The server URL.
        url: String,
        /// kube's error.
        reason: String,
    },
}

/// How to start a cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Port on 127.0.0.1 (0: pick a free one).
    pub port: u16,
    /// Snapshot file: loaded at start if it exists, rewritten after changes.
    pub state_file: Option<PathBuf>,
    /// Number of events kept for watches from an older resourceVersion.
    pub history: usize,
    /// Name used for the kubeconfig cluster, user and context.
    pub name: String,
    /// How often watches with allowWatchBookmarks get a BOOKMARK.
    pub bookmark_every: Duration,
    /// Serve HTTPS with a CA generated for this cluster (the kubeconfig carries the CA).
    pub tls: bool,
    /// Converters between custom resource versions (conversion webhooks), e.g.
    /// [`crate::cluster_api::ClusterApiConversion`].
    pub converters: Vec<Arc<dyn crate::conversion::Converter>>,
    /// Authenticate every request and authorize it with RBAC (see [`crate::auth`]); off, every request
    /// acts as the admin. The kubeconfig's token is the admin's either way. Implies `tls`: clients send
    /// tokens over HTTPS only.
    pub authorization: bool,
    /// Admission on writes: the admission webhooks and ValidatingAdmissionPolicies stored in the cluster
    /// apply to requests (see [`crate::admission`]). On by default, as on every API server; without any
    /// configuration stored it changes nothing.
    pub admission: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            port: 0,
            state_file: None,
            // Enough for watches to resume across ordinary reconnects; bounds memory (each event holds an
            // object version, and the version before it for selector transitions).
            history: 10_000,
            name: "kube-emulator".into(),
            bookmark_every: Duration::from_secs(10),
            tls: false,
            converters: Vec::new(),
            authorization: false,
            admission: true,
        }
    }
}

/// A running emulated cluster. Dropping it stops the server.
#[derive(Debug)]
pub struct Cluster {
    inner: Arc<Inner>,
    auth: Arc<crate::auth::Auth>,
    addr: SocketAddr,
    name: String,
    tls: Option<crate::tls::Tls>,
    state_file: Option<PathBuf>,
    stop: Option<oneshot::Sender<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// Start a cluster on a random port with the default options.
    pub async fn start() -> Result<Cluster, ClusterError> {
        Self::start_with(ClusterOptions::default()).await
    }

    /// Start a cluster.
    pub async fn start_with(opts: ClusterOptions) -> Result<Cluster, ClusterError> {
        let inner = Arc::new(Inner::new(opts.history.max(1)));
        for c in &opts.converters {
            inner.lock().registry.add_converter(c.clone());
        }
        let loaded = match &opts.state_file {
            Some(path) if path.exists() => {
                load_state(&inner, path)?;
                true
            }
            _ => false,
        };
        if !loaded {
            for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
                let t = Target {
                    rt: inner.lock().registry.by_plural("", "namespaces").ok_or_else(|| {
                        ClusterError::LoadState {
                            path: PathBuf::new(),
                            reason: "no namespace type".into(),
                        }
                    })?,
                    version: "v1".into(),
                    namespace: String::new(),
                    name: String::new(),
                    sub: String::new(),
                };
                let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
                let opts = WriteOptions {
                    manager: "kube-apiserver".into(),
                    ..Default::default()
                };
                if let Err(e) = api::create(&inner, &t, obj, &opts) {
                    tracing::warn!(namespace = ns, error = %e, "could not create a default namespace");
                }
            }
            if opts.authorization {
                bootstrap_policy(&inner);
            }
        }
        let auth = Arc::new(crate::auth::Auth::new(opts.authorization));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port))
            .await
            .map_err(|source| ClusterError::Bind {
                port: opts.port,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| ClusterError::Bind {
            port: opts.port,
            source,
        })?;
        let shared = Arc::new(Shared {
            inner: inner.clone(),
            bookmark_every: opts.bookmark_every,
            auth: auth.clone(),
            admission: opts.admission,
        });
        let (stop, stopped) = oneshot::channel::<()>();
        let app = server::router(shared);
        // kubectl sends no bearer token over plain HTTP: an authorizing cluster serves HTTPS, as every real one does.
        let tls = if opts.tls || opts.authorization {
            Some(crate::tls::Tls::generate()?)
        } else {
            None
        };
        let shutdown = async move {
            let _ = stopped.await;
        };
        let mut tasks = match &tls {
            Some(tls) => {
                let listener = tls.listener(listener);
                vec![tokio::spawn(async move {
                    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                        tracing::error!(error = %e, "emulator server stopped");
                    }
                })]
            }
            None => vec![tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
                    tracing::error!(error = %e, "emulator server stopped");
                }
            })],
        };
        tasks.push(tokio::spawn(gc::run(Arc::downgrade(&inner), inner.gc.clone())));
        if let Some(path) = &opts.state_file {
            tasks.push(tokio::spawn(snapshot_loop(
                Arc::downgrade(&inner),
                inner.changed.clone(),
                path.clone(),
            )));
        }
        tracing::info!(%addr, name = %opts.name, "kube-emulator serving");
        Ok(Cluster {
            inner,
            auth,
            addr,
            name: opts.name,
            tls,
            state_file: opts.state_file,
            stop: Some(stop),
            tasks,
        })
    }

    /// Convert the kinds `converter` handles with it from now on, like a conversion webhook installed with
    /// a provider. Objects already stored stay as they are.
    pub fn add_converter(&self, converter: Arc<dyn crate::conversion::Converter>) {
        self.inner.lock().registry.add_converter(converter);
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>` (or `https://` with TLS).
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// PEM of the cluster CA when serving HTTPS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// A kubeconfig (YAML) that points at this cluster, with `default` as the namespace.
    pub fn kubeconfig(&self) -> String {
        self.kubeconfig_with_token(crate::auth::ADMIN_TOKEN)
    }

    /// A token of ServiceAccount `namespace/name` (which must exist), valid for an hour, as
    /// `kubectl create token` gets it.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> Result<String, ClusterError> {
        self.auth
            .issue(&self.inner, namespace, name, 3600, Vec::new())
            .map(|(token, _)| token)
            .map_err(|e| ClusterError::Client {
                url: self.url(),
                reason: format!(
                    "cannot issue a token for ServiceAccount {namespace}/{name}: {}",
                    e.message
                ),
            })
    }

    /// A kubeconfig like [`Cluster::kubeconfig`] that authenticates with `token` (e.g. a ServiceAccount's).
    pub fn kubeconfig_with_token(&self, token: &str) -> String {
        let n = &self.name;
        let cfg = json!({
            "apiVersion": "v1", "kind": "Config", "current-context": n, "preferences": {},
            "clusters": [{"name": n, "cluster": match &self.tls {
                Some(tls) => json!({"server": self.url(), "certificate-authority-data": base64::engine::general_purpose::STANDARD.encode(&tls.ca_pem)}),
                None => json!({"server": self.url()}),
            }}],
            "users": [{"name": n, "user": {"token": token}}],
            "contexts": [{"name": n, "context": {"cluster": n, "user": n, "namespace": "default"}}],
        });
        serde_yaml::to_string(&cfg).unwrap_or_default()
    }

    /// Write the kubeconfig to a file (parents created).
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> Result<(), ClusterError> {
        let path = path.as_ref();
        let werr = |source| ClusterError::Write {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(werr)?;
        }
        std::fs::write(path, self.kubeconfig()).map_err(werr)
    }

    /// A `kube::Config` for this cluster (namespace `default`).
    pub fn kube_config(&self) -> Result<kube::Config, ClusterError> {
        let url = self.url();
        let uri = url
            .parse()
            .map_err(|e: axum::http::uri::InvalidUri| ClusterError::Client {
                url: url.clone(),
                reason: e.to_string(),
            })?;
        let mut cfg = kube::Config::new(uri);
        cfg.default_namespace = "default".into();
        // The admin's token, as in the kubeconfig: an authorizing cluster refuses anonymous requests.
        cfg.auth_info.token = Some(crate::auth::ADMIN_TOKEN.to_owned().into());
        if let Some(tls) = &self.tls {
            cfg.root_cert = Some(vec![tls.ca_der.clone()]);
        }
        Ok(cfg)
    }

    /// A `kube::Client` for this cluster.
    pub fn client(&self) -> Result<kube::Client, ClusterError> {
        let cfg = self.kube_config()?;
        kube::Client::try_from(cfg).map_err(|e| ClusterError::Client {
            url: self.url(),
            reason: e.to_string(),
        })
    }

    /// Write the state file now (no-op without one).
    pub fn snapshot(&self) -> Result<(), ClusterError> {
        match &self.state_file {
            Some(path) => write_state(&self.inner, path),
            None => Ok(()),
        }
    }

    /// Server-side apply every object of a multi-document YAML (or JSON) text as `manager`, with force, in
    /// order, through the same code path as HTTP requests. CRDs are served as soon as they are applied, so a
    /// later document may use them. Namespaced objects without a namespace go to `default`.
    /// Returns `kind/name` of each applied object.
    pub fn apply_yaml(&self, text: &str, manager: &str) -> Result<Vec<String>, ClusterError> {
        let mut applied = Vec::new();
        for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let fail = |object: String, reason: String| ClusterError::Apply { object, reason };
            let value: Value = serde::Deserialize::deserialize(doc)
                .map_err(|e| fail(format!("document {}", i + 1), e.to_string()))?;
            if value.is_null() {
                continue;
            }
            let s = |p: &str| {
                value
                    .pointer(p)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let (api_version, kind, name) = (s("/apiVersion"), s("/kind"), s("/metadata/name"));
            let what = format!("{kind} {name} (document {})", i + 1);
            let (group, version) = match api_version.split_once('/') {
                Some((g, v)) => (g.to_string(), v.to_string()),
                None => (String::new(), api_version.clone()),
            };
            let rt = self
                .inner
                .lock()
                .registry
                .by_kind(&group, &version, &kind)
                .ok_or_else(|| {
                    fail(
                        what.clone(),
                        format!("no kind {kind:?} is served in {api_version:?}; apply its CRD first"),
                    )
                })?;
            let namespace = if rt.namespaced {
                let ns = s("/metadata/namespace");
                if ns.is_empty() {
                    "default".to_string()
                } else {
                    ns
                }
            } else {
                String::new()
            };
            let target = Target {
                rt,
                version,
                namespace,
                name: name.clone(),
                sub: String::new(),
            };
            let opts = WriteOptions {
                manager: manager.to_string(),
                manager_given: true,
                force: true,
                ..Default::default()
            };
            api::server_side_apply(&self.inner, &target, value, &opts)
                .map_err(|e| fail(what.clone(), e.message))?;
            applied.push(format!("{kind}/{name}"));
        }
        Ok(applied)
    }

    /// Number of stored objects (all kinds).
    pub fn object_count(&self) -> usize {
        self.inner.lock().len()
    }

    /// The latest resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.inner.lock().current_rv()
    }

    /// Stop serving; writes the state file first when there is one.
    pub async fn shutdown(mut self) -> Result<(), ClusterError> {
        let result = self.snapshot();
        self.inner.closing.send_replace(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The first task is the server: let it close its connections (watches end on `closing`), so clients
        // reconnect instead of talking to a stopped cluster over a kept-alive connection.
        let mut tasks = std::mem::take(&mut self.tasks).into_iter();
        if let Some(server) = tasks.next() {
            if tokio::time::timeout(Duration::from_secs(5), server)
                .await
                .is_err()
            {
                tracing::warn!("the emulator server did not stop within 5s");
            }
        }
        for t in tasks {
            t.abort();
        }
        result
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.inner.closing.send_replace(true);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The server task winds down by itself after the stop signal; the helpers are stopped here.
        for t in self.tasks.iter().skip(1) {
            t.abort();
        }
    }
}

async fn snapshot_loop(inner: std::sync::Weak<Inner>, wake: Arc<tokio::sync::Notify>, path: PathBuf) {
    loop {
        wake.notified().await;
        // Coalesce bursts of writes into one snapshot.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let Some(strong) = inner.upgrade() else { return };
        if let Err(e) = write_state(&strong, &path) {
            tracing::error!(error = %e, "snapshot failed");
        }
    }
}

fn write_state(inner: &Inner, path: &Path) -> Result<(), ClusterError> {
    #[derive(serde::Serialize)]
    struct Entry<'a> {
        group: &'a str,
        resource: &'a str,
        object: &'a Value,
    }
    #[derive(serde::Serialize)]
    struct Doc<'a> {
        #[serde(rename = "resourceVersion")]
        resource_version: u64,
        objects: Vec<Entry<'a>>,
    }
    // Take the shared objects under the lock; serialize after releasing it.
    let (rv, dump) = {
        let store = inner.lock();
        (store.current_rv(), store.dump())
    };
    let doc = Doc {
        resource_version: rv,
        objects: dump
            .iter()
            .map(|((g, r), o)| Entry {
                group: g,
                resource: r,
                object: o,
            })
            .collect(),
    };
    let tmp = path.with_extension("tmp");
    let werr = |source| ClusterError::Write {
        path: path.to_path_buf(),
        source,
    };
    std::fs::write(&tmp, serde_json::to_vec(&doc).unwrap_or_default()).map_err(werr)?;
    std::fs::rename(&tmp, path).map_err(werr)
}

/// Creates the API server's default ClusterRoles and bindings (see [`crate::auth::bootstrap_policy`]).
fn bootstrap_policy(inner: &Inner) {
    for obj in crate::auth::bootstrap_policy() {
        let kind = obj["kind"].as_str().unwrap_or_default();
        let plural = if kind == "ClusterRole" {
            "clusterroles"
        } else {
            "clusterrolebindings"
        };
        let Some(rt) = inner
            .lock()
            .registry
            .by_plural("rbac.authorization.k8s.io", plural)
        else {
            tracing::warn!(
                kind,
                "cannot create the default RBAC policy: the kind is not served"
            );
            return;
        };
        let t = Target {
            rt,
            version: "v1".into(),
            namespace: String::new(),
            name: String::new(),
            sub: String::new(),
        };
        let opts = WriteOptions {
            manager: "kube-apiserver".into(),
            ..Default::default()
        };
        if let Err(e) = api::create(inner, &t, obj.clone(), &opts) {
            tracing::warn!(name = %obj["metadata"]["name"], error = %e, "could not create a default RBAC object");
        }
    }
}

fn load_state(inner: &Inner, path: &Path) -> Result<(), ClusterError> {
    let fail = |reason: String| ClusterError::LoadState {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let doc: Value = serde_json::from_slice(&bytes).map_err(|e| fail(format!("not JSON: {e}")))?;
    let rv = doc
        .get("resourceVersion")
        .and_then(Value::as_u64)
        .ok_or_else(|| fail("no resourceVersion".into()))?;
    let mut objects = Vec::new();
    for o in doc
        .get("objects")
        .and_then(Value::as_array)
        .ok_or_else(|| fail("no objects list".into()))?
    {
        let g = o
            .get("group")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let r = o
            .get("resource")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let obj = o
            .get("object")
            .cloned()
            .ok_or_else(|| fail(format!("entry of {r} has no object")))?;
        objects.push(((g, r), obj));
    }
    let mut store = inner.lock();
    for ((g, r), obj) in &objects {
        if g == "apiextensions.k8s.io" && r == "customresourcedefinitions" {
            let t = resource::crd_to_type(obj)
                .map_err(|e| fail(format!("stored CRD is invalid: {}", e.message)))?;
            store.registry.insert_crd(t);
        }
    }
    store.restore(rv, objects);
    Ok(())
}
