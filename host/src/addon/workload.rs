//! Workload-cluster access (cso-behaviour.md §2.7): a client from the Secret `<cluster>-kubeconfig`
//! (key `value`), cached per Cluster and rebuilt when the Secret's content changes, and the `/readyz`
//! probe that tells whether the workload API answers.

use crate::run::rate::ApiRate;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use sha2::Digest;

use crate::apply::ssa::Applier;

/// Why the workload cluster cannot be used (yet).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum WorkloadError {
    /// The kubeconfig Secret is missing or unusable (upstream: "kubeconfig not there (yet)").
    #[error("kubeconfig not there (yet): {0}")]
    Kubeconfig(String),
    /// The workload API does not answer `/readyz` (upstream: "control plane not ready yet").
    #[error("control plane not ready yet: {0}")]
    NotReady(String),
}

/// A workload cluster: its client and an applier sharing the discovery cache.
#[derive(Clone)]
pub struct Workload {
    /// Client for the workload API.
    pub client: kube::Client,
    /// Server-side apply against it.
    pub applier: Arc<Applier>,
}

impl std::fmt::Debug for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workload").finish_non_exhaustive()
    }
}

/// Workload clients per Cluster (`namespace/name`), keyed by a hash of the kubeconfig they came from.
#[derive(Debug, Default)]
pub struct WorkloadClients {
    clients: Mutex<HashMap<String, (String, Workload)>>,
    rate: Option<ApiRate>,
}

impl WorkloadClients {
    /// No clients yet; each one gets its own bucket of `rate`.
    pub fn new(rate: Option<ApiRate>) -> Self {
        Self {
            clients: Mutex::default(),
            rate,
        }
    }

    /// The workload cluster of Cluster `namespace/name`, checked with `/readyz`.
    pub async fn get(
        &self,
        management: &kube::Client,
        namespace: &str,
        cluster: &str,
    ) -> Result<Workload, WorkloadError> {
        let secret_name = super::cluster::kubeconfig_secret_name(cluster);
        let secrets: Api<Secret> = Api::namespaced(management.clone(), namespace);
        let secret = secrets
            .get_opt(&secret_name)
            .await
            .map_err(|e| {
                WorkloadError::Kubeconfig(format!("cannot read Secret {namespace}/{secret_name}: {e}"))
            })?
            .ok_or_else(|| {
                WorkloadError::Kubeconfig(format!("Secret {namespace}/{secret_name} does not exist"))
            })?;
        let text = secret
            .data
            .as_ref()
            .and_then(|d| d.get("value"))
            .map(|b| String::from_utf8_lossy(&b.0).into_owned())
            .ok_or_else(|| {
                WorkloadError::Kubeconfig(format!("Secret {namespace}/{secret_name} has no key `value`"))
            })?;
        let hash = hex::encode(sha2::Sha256::digest(text.as_bytes()));
        let key = format!("{namespace}/{cluster}");
        let cached = self
            .clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .filter(|(h, _)| *h == hash)
            .map(|(_, w)| w.clone());
        let workload = match cached {
            Some(w) => w,
            None => {
                let client = client_from_kubeconfig(&text, self.rate).await.map_err(|e| {
                    WorkloadError::Kubeconfig(format!("Secret {namespace}/{secret_name}: {e}"))
                })?;
                let workload = Workload {
                    applier: Arc::new(Applier::new(client.clone())),
                    client,
                };
                self.clients
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, (hash, workload.clone()));
                workload
            }
        };
        ready(&workload.client).await.map_err(WorkloadError::NotReady)?;
        Ok(workload)
    }

    /// Forgets the client of a Cluster (it was deleted).
    pub fn forget(&self, namespace: &str, cluster: &str) {
        self.clients
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&format!("{namespace}/{cluster}"));
    }
}

/// A client from kubeconfig YAML, with short timeouts: a dead workload API must not hold a reconcile.
pub async fn client_from_kubeconfig(text: &str, rate: Option<ApiRate>) -> Result<kube::Client, String> {
    let kubeconfig = Kubeconfig::from_yaml(text).map_err(|e| format!("invalid kubeconfig: {e}"))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| format!("unusable kubeconfig: {e}"))?;
    config.connect_timeout = Some(Duration::from_secs(5));
    config.read_timeout = Some(Duration::from_secs(30));
    crate::run::rate::client(config, rate).map_err(|e| format!("cannot build a client: {e}"))
}

/// `GET /readyz` answers `ok`.
pub async fn ready(client: &kube::Client) -> Result<(), String> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let probe = tokio::time::timeout(Duration::from_secs(10), client.request_text(request)).await;
    match probe {
        Err(_) => Err("GET /readyz timed out after 10s".into()),
        Ok(Err(e)) => Err(format!("GET /readyz: {e}")),
        Ok(Ok(_)) => Ok(()),
    }
}
