//! The plugins serving ProviderPlugins: loaded by the ProviderPlugin controller, called by the release
//! controller. A new digest is swapped in atomically: calls in flight keep the `Arc` of the old one and
//! finish on it; a load that fails leaves the last good plugin serving.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, Patch, PatchParams};

use crate::plugin::capability::secrets::SecretSource;
use crate::plugin::capability::state::{MemoryState, StateStore};
use crate::plugin::{Called, Plugin, PluginError, PluginHost};

/// Largest persisted state of one plugin (keys plus values): it lives in a ConfigMap.
pub const STATE_QUOTA: u64 = 512 << 10;

/// Name of the ConfigMap holding the `state` store of ProviderPlugin `name`.
pub fn state_config_map(name: &str) -> String {
    format!("stackhost-plugin-state-{name}")
}

/// Secrets granted to a plugin, refreshed from the API before each call (reads stay synchronous).
#[derive(Debug, Default)]
pub struct GrantedSecrets {
    values: RwLock<BTreeMap<String, Vec<u8>>>,
}

impl SecretSource for GrantedSecrets {
    fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.values
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .cloned()
    }
}

/// The `state` store of a plugin: in memory during calls, persisted to a ConfigMap after a call
/// changed it, loaded from there when the plugin is loaded (so restarts keep it).
#[derive(Debug)]
pub struct PersistedState {
    memory: MemoryState,
}

impl StateStore for PersistedState {
    fn get(&self, key: &str) -> Option<String> {
        self.memory.get(key)
    }
    fn set(&self, key: &str, value: &str) -> Result<(), u64> {
        self.memory.set(key, value)
    }
    fn delete(&self, key: &str) {
        self.memory.delete(key)
    }
    fn snapshot(&self) -> BTreeMap<String, String> {
        self.memory.snapshot()
    }
}

/// A plugin serving one ProviderPlugin.
#[derive(Debug)]
pub struct LoadedPlugin {
    pub namespace: String,
    pub name: String,
    pub plugin: Plugin,
    /// Manifest digest the image reference resolved to.
    pub manifest_digest: String,
    /// `generation` of the ProviderPlugin spec it was loaded for.
    pub generation: i64,
    /// Which key verified it.
    pub verified_by: String,
    /// `<secret>/<key>` pairs granted.
    pub granted_secrets: Vec<(String, Vec<String>)>,
    pub secrets: Arc<GrantedSecrets>,
    pub state: Arc<PersistedState>,
    persisted: Mutex<BTreeMap<String, String>>,
    /// Held around `reconcile-node-images` and `cleanup-node-images`: one at a time per plugin.
    /// Releases that share a node image would otherwise both find it missing and both create it,
    /// and the image records they update in the plugin's state would overwrite each other.
    pub node_images: tokio::sync::Mutex<()>,
    /// The capabilities the plugin's `info()` asks for.
    pub requested: Vec<crate::plugin::types::Capability>,
}

impl LoadedPlugin {
    /// `<namespace>/<name>` for logs and metrics.
    pub fn id(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Reads the granted Secrets so the next call sees their current values. A Secret that does not
    /// exist leaves its keys absent: the plugin gets a `not-found` from `secrets.get`.
    pub async fn refresh_secrets(&self, client: &kube::Client) -> Result<(), String> {
        if self.granted_secrets.is_empty() {
            return Ok(());
        }
        let api: Api<Secret> = Api::namespaced(client.clone(), &self.namespace);
        let mut values = BTreeMap::new();
        for (secret, keys) in &self.granted_secrets {
            let found = api
                .get_opt(secret)
                .await
                .map_err(|e| format!("cannot read Secret {}/{secret}: {e}", self.namespace))?;
            for (key, value) in found.and_then(|s| s.data).unwrap_or_default() {
                if keys.is_empty() || keys.contains(&key) {
                    values.insert(format!("{secret}/{key}"), value.0);
                }
            }
        }
        *self.secrets.values.write().unwrap_or_else(|p| p.into_inner()) = values;
        Ok(())
    }

    /// Writes the `state` store to its ConfigMap when a call changed it.
    pub async fn persist_state(&self, client: &kube::Client) -> Result<(), String> {
        let now = self.state.snapshot();
        {
            let persisted = self.persisted.lock().unwrap_or_else(|p| p.into_inner());
            if *persisted == now {
                return Ok(());
            }
        }
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &self.namespace);
        let name = state_config_map(&self.name);
        let body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "labels": {"app.kubernetes.io/managed-by": "stackhost"},
                "annotations": {"stackhost.clusterstack.x-k8s.io/plugin": self.name},
            },
            "data": now,
        });
        api.patch(
            &name,
            &PatchParams::apply(crate::apply::FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(|e| {
            format!(
                "cannot save the plugin state to ConfigMap {}/{name}: {e}",
                self.namespace
            )
        })?;
        *self.persisted.lock().unwrap_or_else(|p| p.into_inner()) = now;
        Ok(())
    }
}

/// Loads the persisted `state` of ProviderPlugin `name` (empty when there is none yet).
pub async fn load_state(
    client: &kube::Client,
    namespace: &str,
    name: &str,
) -> Result<BTreeMap<String, String>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = api.get_opt(&state_config_map(name)).await.map_err(|e| {
        format!(
            "cannot read the plugin state ConfigMap {namespace}/{}: {e}",
            state_config_map(name)
        )
    })?;
    Ok(cm.and_then(|c| c.data).unwrap_or_default())
}

/// What a release step needs to build a plugin's capabilities at load time.
pub fn new_capabilities(
    state: BTreeMap<String, String>,
) -> (Arc<GrantedSecrets>, Arc<PersistedState>, BTreeMap<String, String>) {
    let persisted = state.clone();
    (
        Arc::new(GrantedSecrets::default()),
        Arc::new(PersistedState {
            memory: MemoryState::new(state, STATE_QUOTA),
        }),
        persisted,
    )
}

/// The plugins by `(namespace, name)`, plus the shared host that compiles and runs them.
#[derive(Debug)]
pub struct PluginRegistry {
    pub host: PluginHost,
    loaded: RwLock<HashMap<(String, String), Arc<LoadedPlugin>>>,
    /// Why the last load of a ProviderPlugin failed (shown by releases waiting for it).
    errors: RwLock<HashMap<(String, String), String>>,
}

impl PluginRegistry {
    pub fn new(host: PluginHost) -> Self {
        PluginRegistry {
            host,
            loaded: RwLock::default(),
            errors: RwLock::default(),
        }
    }

    /// The plugin serving `namespace/name`, if one loaded.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Why `namespace/name` has no plugin (or why its last load failed).
    pub fn last_error(&self, namespace: &str, name: &str) -> Option<String> {
        self.errors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Builds a [`LoadedPlugin`] around a loaded [`Plugin`] and swaps it in; returns the one it replaced.
    #[allow(clippy::too_many_arguments)]
    pub fn install(
        &self,
        namespace: &str,
        name: &str,
        plugin: Plugin,
        manifest_digest: String,
        generation: i64,
        verified_by: String,
        granted_secrets: Vec<(String, Vec<String>)>,
        capabilities: (Arc<GrantedSecrets>, Arc<PersistedState>, BTreeMap<String, String>),
        requested: Vec<crate::plugin::types::Capability>,
    ) -> Option<Arc<LoadedPlugin>> {
        let (secrets, state, persisted) = capabilities;
        let loaded = Arc::new(LoadedPlugin {
            namespace: namespace.to_string(),
            name: name.to_string(),
            plugin,
            manifest_digest,
            generation,
            verified_by,
            granted_secrets,
            secrets,
            state,
            persisted: Mutex::new(persisted),
            node_images: tokio::sync::Mutex::new(()),
            requested,
        });
        let key = (namespace.to_string(), name.to_string());
        self.errors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        self.loaded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, loaded)
    }

    /// Records why loading `namespace/name` failed; the last good plugin (if any) keeps serving.
    pub fn failed(&self, namespace: &str, name: &str, error: String) {
        self.errors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert((namespace.to_string(), name.to_string()), error);
    }

    /// Forgets `namespace/name` (its ProviderPlugin was deleted).
    pub fn remove(&self, namespace: &str, name: &str) {
        let key = (namespace.to_string(), name.to_string());
        self.loaded
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
        self.errors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&key);
    }
}

/// Runs one plugin call on the blocking pool around the capability refresh and state persistence,
/// and records it in the metrics.
pub async fn call<T, F>(
    ctx: &super::Context,
    loaded: &LoadedPlugin,
    function: &str,
    is_ok: impl Fn(&T) -> bool,
    f: F,
) -> Result<T, PluginError>
where
    T: Send + 'static,
    F: FnOnce(&Plugin) -> Called<T> + Send + 'static,
{
    if let Err(e) = loaded.refresh_secrets(&ctx.client).await {
        return Err(PluginError::Host {
            plugin: loaded.id(),
            function: function.to_string(),
            reason: e,
        });
    }
    let called = loaded.plugin.offload(function, f).await;
    ctx.metrics
        .plugin_call(&loaded.id(), &called.report, called.result.as_ref().map(&is_ok));
    tracing::debug!(plugin = %loaded.id(), report = %called.report, "plugin call");
    if let Err(e) = loaded.persist_state(&ctx.client).await {
        tracing::warn!(plugin = %loaded.id(), error = %e, "plugin state not saved");
    }
    called.result
}
