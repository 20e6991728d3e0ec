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

/// Largest persisted state of one plugin (keys plus values): it lives in one Secret (1 MiB at most).
pub const STATE_QUOTA: u64 = 512 << 10;

/// The one key of a state Secret: the store as a JSON object. State keys such as `image/<name>` are
/// not valid Secret (or ConfigMap) data keys, so the store is not spread over several.
pub const STATE_KEY: &str = "state.json";

/// Where the `state` store of ProviderPlugin `namespace/name` is kept: the namespace and name of its
/// Secret. In the ProviderPlugin's namespace by default; with `--plugin-state-namespace` all of them in
/// that one namespace (where stackhost's Role allows writing Secrets), named after both.
pub fn state_secret(state_namespace: Option<&str>, namespace: &str, name: &str) -> (String, String) {
    match state_namespace {
        None => (namespace.to_owned(), format!("stackhost-plugin-state-{name}")),
        // A namespace name has no dots, so `<namespace>.<name>` is unambiguous.
        Some(shared) => (
            shared.to_owned(),
            format!("stackhost-plugin-state.{namespace}.{name}"),
        ),
    }
}

/// Name of the ConfigMap in the ProviderPlugin's namespace that earlier versions kept the state in; it
/// is moved into the Secret once and deleted.
pub fn legacy_state_config_map(name: &str) -> String {
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

/// The `state` store of a plugin: in memory during calls, persisted to its Secret after a call
/// changed it, loaded from there when the plugin is loaded (so restarts keep it). A Secret, not a
/// ConfigMap: plugins keep credentials there (the OpenStack plugin caches Keystone tokens).
#[derive(Debug)]
pub struct PersistedState {
    memory: MemoryState,
    /// Namespace and name of the Secret.
    secret: (String, String),
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

    /// Writes the `state` store to its Secret when a call changed it.
    pub async fn persist_state(&self, client: &kube::Client) -> Result<(), String> {
        let now = self.state.snapshot();
        {
            let persisted = self.persisted.lock().unwrap_or_else(|p| p.into_inner());
            if *persisted == now {
                return Ok(());
            }
        }
        let (namespace, name) = &self.state.secret;
        write_state(client, namespace, name, &self.id(), &now)
            .await
            .map_err(|e| format!("cannot save the plugin state to Secret {namespace}/{name}: {e}"))?;
        *self.persisted.lock().unwrap_or_else(|p| p.into_inner()) = now;
        Ok(())
    }
}

/// Server-side applies the state Secret `namespace/name` of plugin `plugin` (`<ns>/<name>`).
async fn write_state(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    plugin: &str,
    state: &BTreeMap<String, String>,
) -> Result<(), kube::Error> {
    use base64::Engine as _;
    let json = serde_json::to_vec(state).unwrap_or_default();
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "stackhost"},
            "annotations": {"stackhost.clusterstack.x-k8s.io/plugin": plugin},
        },
        "type": "Opaque",
        "data": {STATE_KEY: base64::engine::general_purpose::STANDARD.encode(json)},
    });
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    api.patch(
        name,
        &PatchParams::apply(crate::apply::FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(drop)
}

/// Loads the persisted `state` of ProviderPlugin `namespace/name` (empty when there is none yet) and
/// where it is kept. A state ConfigMap of an earlier version is moved into the Secret and deleted.
pub async fn load_state(
    client: &kube::Client,
    state_namespace: Option<&str>,
    namespace: &str,
    name: &str,
) -> Result<(BTreeMap<String, String>, (String, String)), String> {
    let (secret_ns, secret_name) = state_secret(state_namespace, namespace, name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &secret_ns);
    let found = secrets
        .get_opt(&secret_name)
        .await
        .map_err(|e| format!("cannot read the plugin state Secret {secret_ns}/{secret_name}: {e}"))?;
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let legacy_name = legacy_state_config_map(name);
    let legacy = configmaps
        .get_opt(&legacy_name)
        .await
        .map_err(|e| format!("cannot read the plugin state ConfigMap {namespace}/{legacy_name}: {e}"))?
        // Only the ConfigMap stackhost wrote, never a user's of the same name.
        .filter(|cm| {
            cm.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("app.kubernetes.io/managed-by"))
                .is_some_and(|v| v == "stackhost")
        });
    let state = match (found, legacy) {
        (Some(secret), legacy) => {
            let state = parse_state(&secret).map_err(|why| {
                format!(
                    "the plugin state Secret {secret_ns}/{secret_name}: {why}; delete it to start the plugin \
                     with an empty state"
                )
            })?;
            if legacy.is_some() {
                // Left over from a move that stopped between writing the Secret and deleting it.
                delete_legacy(&configmaps, namespace, &legacy_name).await?;
            }
            state
        }
        (None, Some(cm)) => {
            let state = cm.data.unwrap_or_default();
            write_state(
                client,
                &secret_ns,
                &secret_name,
                &format!("{namespace}/{name}"),
                &state,
            )
            .await
            .map_err(|e| {
                format!(
                    "cannot move the plugin state from ConfigMap {namespace}/{legacy_name} to Secret \
                         {secret_ns}/{secret_name}: {e}"
                )
            })?;
            delete_legacy(&configmaps, namespace, &legacy_name).await?;
            tracing::info!(
                plugin = %format!("{namespace}/{name}"),
                from = %format!("ConfigMap {namespace}/{legacy_name}"),
                to = %format!("Secret {secret_ns}/{secret_name}"),
                "moved the plugin state"
            );
            state
        }
        (None, None) => BTreeMap::new(),
    };
    Ok((state, (secret_ns, secret_name)))
}

fn parse_state(secret: &Secret) -> Result<BTreeMap<String, String>, String> {
    let Some(bytes) = secret.data.as_ref().and_then(|d| d.get(STATE_KEY)) else {
        return Ok(BTreeMap::new());
    };
    serde_json::from_slice(&bytes.0)
        .map_err(|e| format!("key {STATE_KEY} is not a JSON object of strings: {e}"))
}

async fn delete_legacy(api: &Api<ConfigMap>, namespace: &str, name: &str) -> Result<(), String> {
    match api.delete(name, &Default::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(format!(
            "cannot delete the plugin state ConfigMap {namespace}/{name} after moving it into a Secret: {e}"
        )),
    }
}

/// What a release step needs to build a plugin's capabilities at load time.
pub fn new_capabilities(
    state: BTreeMap<String, String>,
    secret: (String, String),
) -> (Arc<GrantedSecrets>, Arc<PersistedState>, BTreeMap<String, String>) {
    let persisted = state.clone();
    (
        Arc::new(GrantedSecrets::default()),
        Arc::new(PersistedState {
            memory: MemoryState::new(state, STATE_QUOTA),
            secret,
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
