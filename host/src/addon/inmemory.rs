//! The sandbox's in-memory infrastructure (like Cluster API's in-memory provider): for each Cluster with a
//! managed topology it starts a workload API emulator, writes the `<cluster>-kubeconfig` Secret (key
//! `value`, owned by the Cluster), marks the Cluster provisioned and calls the runtime hooks as Cluster
//! API does: `AfterControlPlaneInitialized` once the "control plane" is up, `BeforeClusterUpgrade`
//! (repeated while it answers `retryAfterSeconds`) when `spec.topology.version` changes, then
//! `AfterClusterUpgrade`. A deleted Cluster's emulator stops.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::ByteString;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::cluster::{cluster_resource, kubeconfig_secret_name, topology_class, topology_version};
use super::{HOOK_AFTER_CONTROL_PLANE_INITIALIZED, HOOK_BEFORE_CLUSTER_UPGRADE};
use crate::hooks::client::HookClient;
use crate::hooks::HOOK_AFTER_CLUSTER_UPGRADE;

/// Field manager of what the in-memory provider writes.
const MANAGER: &str = "stackhost-inmemory";

/// How the in-memory infrastructure runs.
#[derive(Debug, Clone)]
pub struct InMemoryConfig {
    /// The hook server to call (`https://…` and its CA), as an ExtensionConfig would name it.
    pub hooks: Option<(String, String)>,
    /// How often Clusters are looked at.
    pub poll: Duration,
}

impl Default for InMemoryConfig {
    fn default() -> Self {
        Self {
            hooks: None,
            poll: Duration::from_millis(500),
        }
    }
}

/// One provisioned Cluster.
#[derive(Debug)]
struct Workload {
    emulator: kube_emulator::Cluster,
    uid: String,
    /// The Kubernetes version the "control plane" runs.
    version: String,
    /// A version change waiting for `BeforeClusterUpgrade`, and when to ask again.
    upgrade: Option<(String, Instant)>,
}

/// The in-memory infrastructure provider.
pub struct InMemoryProvider {
    client: kube::Client,
    config: InMemoryConfig,
    hooks: tokio::sync::OnceCell<Option<HookClient>>,
    workloads: tokio::sync::Mutex<HashMap<String, Workload>>,
    errors: Mutex<Vec<String>>,
}

impl std::fmt::Debug for InMemoryProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InMemoryProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl InMemoryProvider {
    /// A provider for the Clusters of the management cluster behind `client`.
    pub fn new(client: kube::Client, config: InMemoryConfig) -> Arc<Self> {
        Arc::new(Self {
            client,
            config,
            hooks: tokio::sync::OnceCell::new(),
            workloads: tokio::sync::Mutex::new(HashMap::new()),
            errors: Mutex::new(Vec::new()),
        })
    }

    /// Runs until `shutdown` turns true; errors are logged and retried on the next pass.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            if let Err(e) = self.sync_once().await {
                tracing::warn!(error = %e, "in-memory infrastructure");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.config.poll) => {}
                _ = shutdown.wait_for(|s| *s) => break,
            }
        }
        self.workloads.lock().await.clear();
    }

    /// A client for the workload cluster of Cluster `namespace/name`, once it is provisioned.
    pub async fn workload_client(&self, namespace: &str, name: &str) -> Option<kube::Client> {
        let workloads = self.workloads.lock().await;
        workloads
            .get(&format!("{namespace}/{name}"))
            .and_then(|w| w.emulator.client().ok())
    }

    /// The URL of the workload API of Cluster `namespace/name`, once it is provisioned.
    pub async fn workload_url(&self, namespace: &str, name: &str) -> Option<String> {
        let workloads = self.workloads.lock().await;
        workloads
            .get(&format!("{namespace}/{name}"))
            .map(|w| w.emulator.url())
    }

    /// The kubeconfig of the workload cluster of Cluster `namespace/name`, once it is provisioned.
    pub async fn workload_kubeconfig(&self, namespace: &str, name: &str) -> Option<String> {
        let workloads = self.workloads.lock().await;
        workloads
            .get(&format!("{namespace}/{name}"))
            .map(|w| w.emulator.kubeconfig())
    }

    /// Errors of hook calls so far (a hook answering `Failure`), for the sandbox's report.
    pub fn hook_errors(&self) -> Vec<String> {
        self.errors.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    async fn hook_client(&self) -> Option<&HookClient> {
        self.hooks
            .get_or_init(|| async {
                let (url, ca) = self.config.hooks.as_ref()?;
                match HookClient::discover(url, ca).await {
                    Ok(c) => Some(c),
                    Err(e) => {
                        tracing::warn!(error = %e, "hook discovery failed; the in-memory provider calls no hooks");
                        None
                    }
                }
            })
            .await
            .as_ref()
    }

    async fn call_hook(&self, hook: &str, cluster: &Value, extra: Value) -> Option<Value> {
        let client = self.hook_client().await?;
        let name = format!(
            "{}/{}",
            cluster["metadata"]["namespace"].as_str().unwrap_or_default(),
            cluster["metadata"]["name"].as_str().unwrap_or_default()
        );
        match client.call(hook, cluster, extra).await {
            Ok(Some(response)) => {
                if response["status"] != "Success" {
                    let e = format!("{hook} for Cluster {name}: {}", response["message"]);
                    tracing::warn!(error = %e, "hook failed");
                    self.errors.lock().unwrap_or_else(|p| p.into_inner()).push(e);
                }
                Some(response)
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(cluster = %name, hook, error = %e, "hook call failed");
                Some(json!({"status": "Failure", "message": e, "retryAfterSeconds": 1}))
            }
        }
    }

    /// One pass over all Clusters.
    pub async fn sync_once(&self) -> Result<(), String> {
        let clusters: Api<DynamicObject> = Api::all_with(self.client.clone(), &cluster_resource());
        let list = clusters
            .list(&ListParams::default())
            .await
            .map_err(|e| format!("cannot list Clusters: {e}"))?;
        let mut seen = Vec::new();
        for cluster in list.items {
            let (Some(ns), name) = (cluster.namespace(), cluster.name_any()) else {
                continue;
            };
            let key = format!("{ns}/{name}");
            let value = serde_json::to_value(&cluster).unwrap_or_default();
            if cluster.metadata.deletion_timestamp.is_some() || topology_class(&value).is_none() {
                continue;
            }
            seen.push(key.clone());
            if let Err(e) = self.sync_cluster(&ns, &name, &value).await {
                tracing::warn!(cluster = %key, error = %e, "in-memory infrastructure");
            }
        }
        let mut workloads = self.workloads.lock().await;
        let gone: Vec<String> = workloads.keys().filter(|k| !seen.contains(k)).cloned().collect();
        for key in gone {
            if let Some(w) = workloads.remove(&key) {
                tracing::info!(cluster = %key, "Cluster deleted: stopping its workload API");
                let _ = w.emulator.shutdown().await;
            }
        }
        Ok(())
    }

    async fn sync_cluster(&self, ns: &str, name: &str, cluster: &Value) -> Result<(), String> {
        let key = format!("{ns}/{name}");
        let uid = cluster["metadata"]["uid"].as_str().unwrap_or_default().to_owned();
        let version = topology_version(cluster).unwrap_or_default().to_owned();
        let mut workloads = self.workloads.lock().await;
        if workloads.get(&key).is_some_and(|w| w.uid != uid) {
            // Same name, new Cluster.
            if let Some(old) = workloads.remove(&key) {
                let _ = old.emulator.shutdown().await;
            }
        }
        if !workloads.contains_key(&key) {
            let emulator = kube_emulator::Cluster::start_with(kube_emulator::ClusterOptions {
                name: format!("{ns}-{name}"),
                tls: true,
                ..Default::default()
            })
            .await
            .map_err(|e| format!("cannot start the workload API: {e}"))?;
            let cluster = match endpoint_patch(cluster, &emulator.url()) {
                Some(patch) => self.patch_spec(ns, name, &patch).await?,
                None => cluster.clone(),
            };
            self.write_kubeconfig(ns, name, &uid, &emulator.kubeconfig())
                .await?;
            self.mark_provisioned(ns, name, &version).await?;
            tracing::info!(cluster = %key, url = %emulator.url(), "workload API started");
            workloads.insert(
                key.clone(),
                Workload {
                    emulator,
                    uid,
                    version: version.clone(),
                    upgrade: None,
                },
            );
            drop(workloads);
            self.call_hook(HOOK_AFTER_CONTROL_PLANE_INITIALIZED, &cluster, json!({}))
                .await;
            return Ok(());
        }
        let Some(w) = workloads.get_mut(&key) else {
            return Ok(());
        };
        if w.version == version {
            w.upgrade = None;
            return Ok(());
        }
        if w.upgrade
            .as_ref()
            .is_some_and(|(v, at)| *v == version && Instant::now() < *at)
        {
            return Ok(());
        }
        let from = w.version.clone();
        drop(workloads);
        let answer = self
            .call_hook(
                HOOK_BEFORE_CLUSTER_UPGRADE,
                cluster,
                json!({"fromKubernetesVersion": from, "toKubernetesVersion": version}),
            )
            .await;
        let retry = answer
            .as_ref()
            .map(|a| {
                if a["status"] == "Success" {
                    a["retryAfterSeconds"].as_i64().unwrap_or(0)
                } else {
                    // Cluster API retries a failed blocking hook.
                    a["retryAfterSeconds"].as_i64().unwrap_or(1).max(1)
                }
            })
            .unwrap_or(0);
        let mut workloads = self.workloads.lock().await;
        let Some(w) = workloads.get_mut(&key) else {
            return Ok(());
        };
        if retry > 0 {
            w.upgrade = Some((
                version,
                Instant::now() + Duration::from_secs(retry.unsigned_abs()),
            ));
            return Ok(());
        }
        w.version = version.clone();
        w.upgrade = None;
        drop(workloads);
        self.mark_provisioned(ns, name, &version).await?;
        tracing::info!(cluster = %key, from = %from, to = %version, "control plane upgraded");
        self.call_hook(
            HOOK_AFTER_CLUSTER_UPGRADE,
            cluster,
            json!({"kubernetesVersion": version}),
        )
        .await;
        Ok(())
    }

    async fn write_kubeconfig(
        &self,
        ns: &str,
        name: &str,
        uid: &str,
        kubeconfig: &str,
    ) -> Result<(), String> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), ns);
        let secret_name = kubeconfig_secret_name(name);
        let mut secret = Secret {
            type_: Some("cluster.x-k8s.io/secret".into()),
            data: Some([("value".to_owned(), ByteString(kubeconfig.as_bytes().to_vec()))].into()),
            ..Default::default()
        };
        secret.metadata.name = Some(secret_name.clone());
        secret.metadata.namespace = Some(ns.to_owned());
        secret.metadata.labels = Some([("cluster.x-k8s.io/cluster-name".to_owned(), name.to_owned())].into());
        secret.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "cluster.x-k8s.io/v1beta1".into(),
            kind: "Cluster".into(),
            name: name.to_owned(),
            uid: uid.to_owned(),
            ..Default::default()
        }]);
        let mut value = serde_json::to_value(&secret).map_err(|e| e.to_string())?;
        value["apiVersion"] = json!("v1");
        value["kind"] = json!("Secret");
        secrets
            .patch(
                &secret_name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&value),
            )
            .await
            .map_err(|e| format!("cannot write Secret {ns}/{secret_name}: {e}"))?;
        Ok(())
    }

    /// Merge-patches the Cluster's spec and returns the Cluster as it is now.
    async fn patch_spec(&self, ns: &str, name: &str, patch: &Value) -> Result<Value, String> {
        let clusters: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &cluster_resource());
        let patched = clusters
            .patch(name, &PatchParams::default(), &Patch::Merge(patch))
            .await
            .map_err(|e| format!("cannot set spec.controlPlaneEndpoint of Cluster {ns}/{name}: {e}"))?;
        serde_json::to_value(patched).map_err(|e| e.to_string())
    }

    /// Cluster status as Cluster API reports a provisioned Cluster (v1beta1 fields).
    async fn mark_provisioned(&self, ns: &str, name: &str, version: &str) -> Result<(), String> {
        let clusters: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &cluster_resource());
        let patch = json!({"status": {
            "phase": "Provisioned",
            "infrastructureReady": true,
            "controlPlaneReady": true,
            "observedGeneration": 1,
        }});
        clusters
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| {
                format!("cannot mark Cluster {ns}/{name} provisioned (control plane {version}): {e}")
            })?;
        Ok(())
    }
}

/// The merge patch that sets `spec.controlPlaneEndpoint` of `cluster` to the host and port of the workload
/// API at `url`, or `None` when the Cluster already has an endpoint (Cluster API keeps a user's endpoint
/// and copies the infrastructure's only into an empty one) or the URL has no host.
pub fn endpoint_patch(cluster: &Value, url: &str) -> Option<Value> {
    let current = &cluster["spec"]["controlPlaneEndpoint"];
    if current["host"].as_str().is_some_and(|h| !h.is_empty()) {
        return None;
    }
    let url = url::Url::parse(url).ok()?;
    let host = url
        .host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default()?;
    Some(json!({"spec": {"controlPlaneEndpoint": {"host": host, "port": port}}}))
}

/// What `stackhost sandbox` runs for addons: the hook server (generated certificate on 127.0.0.1), the
/// in-memory infrastructure calling it, and the ClusterAddon controller.
#[derive(Debug)]
pub struct SandboxAddons {
    /// The hook server (its URL and CA, e.g. for an ExtensionConfig).
    pub hooks: crate::hooks::HooksServer,
    /// The in-memory infrastructure.
    pub provider: Arc<InMemoryProvider>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Starts the hook server, the in-memory infrastructure and the ClusterAddon controller; all stop when
/// `shutdown` turns true.
pub async fn start_sandbox(
    client: kube::Client,
    config: super::AddonConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<SandboxAddons, String> {
    let hooks = crate::hooks::start(
        client.clone(),
        crate::hooks::HooksConfig {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            cert_dir: None,
            retry_after_seconds: 1,
            ..crate::hooks::HooksConfig::default()
        },
        shutdown.clone(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let provider = InMemoryProvider::new(
        client.clone(),
        InMemoryConfig {
            hooks: Some((hooks.url(), hooks.ca_pem.clone())),
            ..Default::default()
        },
    );
    let mut tasks = vec![tokio::spawn(provider.clone().run(shutdown.clone()))];
    tasks.push(tokio::spawn(async move {
        if let Err(e) = super::run(client, config, shutdown).await {
            tracing::error!(error = %e, "ClusterAddon controller stopped");
        }
    }));
    Ok(SandboxAddons {
        hooks,
        provider,
        tasks,
    })
}

impl SandboxAddons {
    /// For `stackhost sandbox --once`: the ClusterAddon of Cluster `namespace/name` is ready and every
    /// object its status lists exists in the in-memory workload cluster. Returns those objects
    /// (`Kind namespace/name`, with the images of workloads), or what is missing.
    pub async fn check(
        &self,
        management: &kube::Client,
        namespace: &str,
        name: &str,
    ) -> Result<Vec<String>, String> {
        let addons: Api<crate::api::ClusterAddon> = Api::namespaced(management.clone(), namespace);
        let addon_name = super::cluster_addon_name(name);
        let addon = addons
            .get_opt(&addon_name)
            .await
            .map_err(|e| format!("cannot read ClusterAddon {namespace}/{addon_name}: {e}"))?
            .ok_or_else(|| format!("Cluster {namespace}/{name} has no ClusterAddon yet"))?;
        let status = addon.status.unwrap_or_default();
        if !status.ready {
            let why = status
                .conditions
                .iter()
                .find(|c| c.type_ == crate::api::condition::READY)
                .and_then(|c| c.message.clone())
                .unwrap_or_default();
            return Err(format!(
                "ClusterAddon {namespace}/{addon_name} is not ready: {why}"
            ));
        }
        let workload = self
            .provider
            .workload_client(namespace, name)
            .await
            .ok_or_else(|| format!("Cluster {namespace}/{name} has no in-memory workload API"))?;
        let mut found = Vec::new();
        for r in &status.resources {
            let gvk = kube::core::GroupVersionKind::gvk(&r.group, &r.version, &r.kind);
            let (resource, caps) = kube::discovery::pinned_kind(&workload, &gvk)
                .await
                .map_err(|e| format!("{} is not served by the workload API: {e}", r.kind))?;
            let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
                Api::namespaced_with(workload.clone(), &r.namespace, &resource)
            } else {
                Api::all_with(workload.clone(), &resource)
            };
            let what = if r.namespace.is_empty() {
                format!("{} {}", r.kind, r.name)
            } else {
                format!("{} {}/{}", r.kind, r.namespace, r.name)
            };
            let object = api
                .get_opt(&r.name)
                .await
                .map_err(|e| format!("cannot read {what} in the workload cluster: {e}"))?
                .ok_or_else(|| {
                    format!("{what} is listed in the ClusterAddon but missing in the workload cluster")
                })?;
            // Workloads say which images they run (where a plugin's addon-values shows first).
            let images: Vec<&str> = object.data["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|c| c["image"].as_str())
                .collect();
            if images.is_empty() {
                found.push(what);
            } else {
                found.push(format!("{what} (image {})", images.join(", ")));
            }
        }
        Ok(found)
    }

    /// Waits until every task stopped (after shutdown).
    pub async fn stopped(self) {
        for task in self.tasks {
            let _ = task.await;
        }
        self.hooks.stopped().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_workload_api_becomes_the_control_plane_endpoint_unless_one_is_set() {
        let empty = json!({"spec": {"topology": {"class": "c"}}});
        assert_eq!(
            endpoint_patch(&empty, "https://127.0.0.1:38211"),
            Some(json!({"spec": {"controlPlaneEndpoint": {"host": "127.0.0.1", "port": 38211}}}))
        );
        let blank = json!({"spec": {"controlPlaneEndpoint": {"host": "", "port": 0}}});
        assert_eq!(
            endpoint_patch(&blank, "https://[::1]:6443")
                .map(|p| p["spec"]["controlPlaneEndpoint"]["host"].clone()),
            Some(json!("::1"))
        );
        let set = json!({"spec": {"controlPlaneEndpoint": {"host": "api.example.test", "port": 6443}}});
        assert_eq!(endpoint_patch(&set, "https://127.0.0.1:38211"), None);
    }
}
