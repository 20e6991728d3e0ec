//! The Wasm plugin host: loads provider plugins (components of the `clusterstack:provider` world),
//! checks them against the world and their grants, and runs each call in a fresh, limited sandbox.
//!
//! Compile once per digest, instantiate per call: `PluginHost::load` compiles (or reuses) the component
//! and caches a pre-linked `InstancePre` with the indices of the `plugin` functions; every call gets a
//! new `Store` with fuel, an epoch deadline, a memory limiter and its own WASI context, so a
//! misbehaving plugin only ever fails its own call.

pub mod bindings;
pub mod capability;
pub mod contract;
mod engine;
mod error;
mod inspect;
mod limits;
mod store;
mod wave;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, ComponentExportIndex, ComponentNamedList, InstancePre, Lift, Lower};
use wasmtime::{Store, Trap, WasmBacktrace};

pub use bindings::types;
pub use capability::Capabilities;
pub use engine::{digest_of, Compilation, EngineConfig, EPOCH_TICK};
pub use error::{GuestError, PluginError};
pub use inspect::{componentize, inspect, Inspection};
pub use limits::{Grants, Limits};
pub use store::Determinism;
pub use wave::WaveOutcome;

use bindings::{EXPORT_INTERFACE, PACKAGE};
use engine::PluginEngine;
use store::CallState;

/// Shared plugin host: one engine, its compile cache and the slots for concurrent calls.
#[derive(Clone)]
pub struct PluginHost {
    engine: Arc<PluginEngine>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl std::fmt::Debug for PluginHost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHost")
            .field("config", &self.engine.config)
            .finish_non_exhaustive()
    }
}

/// How one plugin is run: its name for logs, limits, grants and capability back-ends.
#[derive(Debug, Clone, Default)]
pub struct PluginSettings {
    /// Name used in logs and errors (e.g. the ProviderPlugin's name).
    pub name: String,
    pub limits: Limits,
    pub grants: Grants,
    pub capabilities: Capabilities,
    pub determinism: Determinism,
}

/// A loaded plugin, ready to be called. Cheap to clone; calls in flight keep it alive.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    host: PluginHost,
    linked: Linked,
    digest: String,
    size: usize,
    imports: Vec<String>,
    exports: Vec<String>,
    /// `name@sha256:0123abcd` for logs.
    label: Arc<str>,
    name: String,
    limits: Limits,
    grants: Arc<Grants>,
    caps: Arc<Capabilities>,
    determinism: Determinism,
    stats: Stats,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("label", &self.inner.label)
            .finish_non_exhaustive()
    }
}

/// What one call cost.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallReport {
    pub function: String,
    pub fuel_used: u64,
    #[serde(serialize_with = "serialize_micros")]
    pub wall: Duration,
    pub peak_memory_bytes: usize,
    pub host_calls: u32,
}

fn serialize_micros<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64() * 1e6)
}

impl std::fmt::Display for CallReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: fuel {} | wall {:.1} us | peak memory {:.1} KiB | host calls {}",
            self.function,
            self.fuel_used,
            self.wall.as_secs_f64() * 1e6,
            self.peak_memory_bytes as f64 / 1024.0,
            self.host_calls
        )
    }
}

/// Where the time of one fresh sandbox goes (see `Plugin::sandbox_phases`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SandboxPhases {
    /// `Store::new` with the plugin's limiter, fuel and deadline.
    pub store: Duration,
    /// Instantiation from the cached `InstancePre` (pooling allocator).
    pub instantiate: Duration,
    /// Dropping the instance and store: the memory and table slots are reset and returned.
    pub teardown: Duration,
}

/// The outcome of one call: the result (or why there is none) and what it cost.
#[derive(Debug)]
pub struct Called<T> {
    pub result: Result<T, PluginError>,
    pub report: CallReport,
}

/// Running totals for one loaded plugin (ProviderPlugin status and metrics).
#[derive(Debug, Default)]
struct Stats {
    calls: AtomicU64,
    guest_errors: AtomicU64,
    failures: AtomicU64,
    fuel: AtomicU64,
}

/// A snapshot of a plugin's call statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CallStats {
    pub calls: u64,
    pub guest_errors: u64,
    pub failures: u64,
    pub fuel: u64,
}

/// Approximate size of a result as the host receives it, for the result cap.
pub trait WireSize {
    fn wire_size(&self) -> usize;
}

impl WireSize for String {
    fn wire_size(&self) -> usize {
        self.len()
    }
}
impl WireSize for () {
    fn wire_size(&self) -> usize {
        0
    }
}
impl<T: WireSize> WireSize for Vec<T> {
    fn wire_size(&self) -> usize {
        self.iter().map(|x| x.wire_size() + 8).sum()
    }
}
impl<T: WireSize, E: WireSize> WireSize for Result<T, E> {
    fn wire_size(&self) -> usize {
        match self {
            Ok(t) => t.wire_size(),
            Err(e) => e.wire_size(),
        }
    }
}
impl WireSize for GuestError {
    fn wire_size(&self) -> usize {
        self.0.wire_size()
    }
}
impl WireSize for types::Error {
    fn wire_size(&self) -> usize {
        match self {
            types::Error::InvalidInput(m) | types::Error::Denied(m) | types::Error::Failed(m) => m.len(),
            types::Error::NotReady(r) => r.message.len() + 4,
        }
    }
}
impl WireSize for types::ImageStatus {
    fn wire_size(&self) -> usize {
        self.name.len()
            + match &self.state {
                types::ImageState::Pending(r) => r.message.len() + 4,
                types::ImageState::Ready(s) | types::ImageState::Failed(s) => s.len(),
            }
    }
}
impl WireSize for types::PluginInfo {
    fn wire_size(&self) -> usize {
        self.name.len() + self.version.len() + self.provider.len() + self.capabilities.len()
    }
}

impl PluginHost {
    /// A host with its own engine. Create one per process and share it.
    pub fn new(config: EngineConfig) -> anyhow::Result<Self> {
        let slots = config.max_instances.max(1) as usize;
        Ok(PluginHost {
            engine: Arc::new(
                PluginEngine::new(config).map_err(|e| anyhow::anyhow!("cannot set up wasmtime: {e:?}"))?,
            ),
            slots: Arc::new(tokio::sync::Semaphore::new(slots)),
        })
    }

    /// Whether loading these bytes would wait for the compiler; if so, compiles them on a background
    /// thread (once per digest) and returns how long that has been running. Call `load` once this
    /// says `Done`: it then finds the compiled code in memory or in the on-disk cache.
    pub fn compile_in_background(&self, digest: &str, bytes: Arc<Vec<u8>>) -> Compilation {
        self.engine.compile_in_background(digest, bytes)
    }

    /// Compiles (once per digest) and checks a component, then links it with every capability;
    /// `settings.grants` decides what each capability call may reach. Refuses components that
    /// import anything outside the world, naming the import.
    pub fn load(&self, bytes: &[u8], settings: PluginSettings) -> Result<Plugin, PluginError> {
        let digest = digest_of(bytes);
        let name = if settings.name.is_empty() {
            "plugin".to_string()
        } else {
            settings.name.clone()
        };
        let label = format!("{name}@{}", &digest[..digest.len().min(19)]);
        let component = self
            .engine
            .compile(&digest, bytes)
            .map_err(|reason| PluginError::BadComponent {
                plugin: label.clone(),
                reason,
            })?;
        self.load_component(component, digest, bytes.len(), label, settings)
    }

    fn load_component(
        &self,
        component: Component,
        digest: String,
        size: usize,
        label: String,
        settings: PluginSettings,
    ) -> Result<Plugin, PluginError> {
        let engine = &self.engine.engine;
        let ty = component.component_type();
        let imports: Vec<String> = ty.imports(engine).map(|(name, _)| name.to_string()).collect();
        let exports: Vec<String> = ty.exports(engine).map(|(name, _)| name.to_string()).collect();
        let refused = |reason: String| PluginError::Refused {
            plugin: label.clone(),
            reason,
        };
        contract::check(&imports, &exports).map_err(refused)?;
        if settings.limits.memory_bytes > self.engine.config.max_memory_bytes {
            return Err(refused(format!(
                "memory limit {} bytes is above the host's maximum of {} bytes",
                settings.limits.memory_bytes, self.engine.config.max_memory_bytes
            )));
        }
        let linker = &self.engine.linker;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| refused(format!("{e:#}")))?;
        // Refuses a component whose `plugin` interface lacks one of the functions, naming it.
        let linked = Linked::new(instance_pre, &exports).map_err(refused)?;
        tracing::debug!(plugin = %label, imports = ?imports, "plugin loaded");
        let name = settings.name.clone();
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                host: self.clone(),
                linked,
                digest,
                size,
                imports,
                exports,
                label: Arc::from(label),
                name,
                limits: settings.limits,
                grants: Arc::new(settings.grants),
                caps: Arc::new(settings.capabilities),
                determinism: settings.determinism,
                stats: Stats::default(),
            }),
        })
    }
}

/// A component linked with its grants, and where the `plugin` functions are among its exports.
///
/// bindgen's `ProviderPre::instantiate` looks up and type-checks all six functions on every
/// instantiation (a seventh of the cost of a fresh instance); a call here looks up only the one it runs.
pub(crate) struct Linked {
    pub(crate) pre: InstancePre<CallState>,
    functions: Functions,
}

/// Export indices of the `plugin` interface's functions, resolved once per component.
struct Functions {
    info: ComponentExportIndex,
    validate_config: ComponentExportIndex,
    reconcile_node_images: ComponentExportIndex,
    cleanup_node_images: ComponentExportIndex,
    patch_cluster_class: ComponentExportIndex,
    addon_values: ComponentExportIndex,
}

impl Linked {
    fn new(pre: InstancePre<CallState>, exports: &[String]) -> Result<Self, String> {
        let component = pre.component();
        let prefix = format!("{PACKAGE}/{EXPORT_INTERFACE}@");
        let interface = exports
            .iter()
            .find(|e| e.starts_with(&prefix))
            .and_then(|name| component.get_export_index(None, name))
            .ok_or_else(|| {
                format!(
                    "the component does not export {prefix}{}",
                    bindings::PACKAGE_VERSION
                )
            })?;
        let function = |name: &str| {
            component.get_export_index(Some(&interface), name).ok_or_else(|| {
                format!("the component's {EXPORT_INTERFACE} interface has no function `{name}`")
            })
        };
        let functions = Functions {
            info: function("info")?,
            validate_config: function("validate-config")?,
            reconcile_node_images: function("reconcile-node-images")?,
            cleanup_node_images: function("cleanup-node-images")?,
            patch_cluster_class: function("patch-cluster-class")?,
            addon_values: function("addon-values")?,
        };
        Ok(Linked { pre, functions })
    }

    /// Instantiates the component in `store` and calls one function; its type is checked against
    /// `P` and `R` here, so a plugin built against another shape of the world fails its call cleanly.
    fn call<P, R>(
        &self,
        store: &mut Store<CallState>,
        function: &ComponentExportIndex,
        params: P,
    ) -> wasmtime::Result<R>
    where
        P: ComponentNamedList + Lower,
        (R,): ComponentNamedList + Lift,
    {
        let instance = self.pre.instantiate(&mut *store)?;
        let func = instance.get_typed_func::<P, (R,)>(&mut *store, function)?;
        let (result,) = func.call(&mut *store, params)?;
        Ok(result)
    }
}

impl Plugin {
    /// `sha256:<hex>` of the component bytes.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }
    pub fn size(&self) -> usize {
        self.inner.size
    }
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    pub fn imports(&self) -> &[String] {
        &self.inner.imports
    }
    pub fn exports(&self) -> &[String] {
        &self.inner.exports
    }
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }
    pub fn grants(&self) -> &Grants {
        &self.inner.grants
    }
    pub fn stats(&self) -> CallStats {
        let s = &self.inner.stats;
        CallStats {
            calls: s.calls.load(Ordering::Relaxed),
            guest_errors: s.guest_errors.load(Ordering::Relaxed),
            failures: s.failures.load(Ordering::Relaxed),
            fuel: s.fuel.load(Ordering::Relaxed),
        }
    }

    /// Creates a fresh store and instance and drops them (benchmarks the per-call sandbox cost).
    pub fn instantiate_only(&self) -> Called<()> {
        self.run("instantiate", |l, s| l.pre.instantiate(&mut *s).map(drop))
    }

    /// Times the three phases of one fresh sandbox separately (benchmarks): a store with this
    /// plugin's limits, instantiation from the cached `InstancePre`, and teardown, which hands
    /// the instance's memory slot back to the pool.
    pub fn sandbox_phases(&self) -> wasmtime::Result<SandboxPhases> {
        let started = Instant::now();
        let mut store = self.fresh_store();
        self.arm(&mut store)?;
        let stored = Instant::now();
        self.inner.linked.pre.instantiate(&mut store)?;
        let instantiated = Instant::now();
        drop(store);
        Ok(SandboxPhases {
            store: stored - started,
            instantiate: instantiated - stored,
            teardown: instantiated.elapsed(),
        })
    }

    pub fn info(&self) -> Called<types::PluginInfo> {
        self.run("info", |l, s| l.call(s, &l.functions.info, ()))
    }

    pub fn validate_config(&self, config: &str) -> Called<Result<(), GuestError>> {
        self.run_guest("validate-config", |l, s| {
            l.call(s, &l.functions.validate_config, (config,))
        })
    }

    pub fn reconcile_node_images(
        &self,
        release: &types::ReleaseInfo,
        images: &[types::NodeImage],
    ) -> Called<Result<Vec<types::ImageStatus>, GuestError>> {
        self.run_guest("reconcile-node-images", |l, s| {
            l.call(s, &l.functions.reconcile_node_images, (release, images))
        })
    }

    pub fn cleanup_node_images(
        &self,
        release: &types::ReleaseInfo,
        images: &[types::NodeImage],
    ) -> Called<Result<(), GuestError>> {
        self.run_guest("cleanup-node-images", |l, s| {
            l.call(s, &l.functions.cleanup_node_images, (release, images))
        })
    }

    pub fn patch_cluster_class(
        &self,
        release: &types::ReleaseInfo,
        objects: &[String],
    ) -> Called<Result<Vec<String>, GuestError>> {
        self.run_guest("patch-cluster-class", |l, s| {
            l.call(s, &l.functions.patch_cluster_class, (release, objects))
        })
    }

    pub fn addon_values(
        &self,
        cluster: &types::ClusterInfo,
        values: &str,
    ) -> Called<Result<String, GuestError>> {
        self.run_guest("addon-values", |l, s| {
            l.call(s, &l.functions.addon_values, (cluster, values))
        })
    }

    /// Runs a blocking call on the blocking thread pool, waiting for a free instance slot first.
    /// A panic inside the call becomes a `PluginError::Host`; the host keeps serving.
    pub async fn offload<T, F>(&self, function: &str, call: F) -> Called<T>
    where
        T: Send + 'static,
        F: FnOnce(&Plugin) -> Called<T> + Send + 'static,
    {
        let host_error = |reason: String| Called {
            result: Err(PluginError::Host {
                plugin: self.inner.label.to_string(),
                function: function.to_string(),
                reason,
            }),
            report: CallReport {
                function: function.to_string(),
                ..CallReport::default()
            },
        };
        let permit = match self.inner.host.slots.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => return host_error("the plugin host is shutting down".into()),
        };
        let plugin = self.clone();
        let joined = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            call(&plugin)
        })
        .await;
        joined.unwrap_or_else(|e| host_error(format!("the call panicked in the host: {e}")))
    }

    /// A call whose WIT result is `result<T, error>`: the guest's error stays data.
    fn run_guest<T: WireSize>(
        &self,
        function: &str,
        body: impl FnOnce(&Linked, &mut Store<CallState>) -> wasmtime::Result<Result<T, types::Error>>,
    ) -> Called<Result<T, GuestError>> {
        let called = self.run(function, |p, s| Ok(body(p, s)?.map_err(GuestError)));
        if matches!(called.result, Ok(Err(_))) {
            self.inner.stats.guest_errors.fetch_add(1, Ordering::Relaxed);
        }
        called
    }

    /// Runs one call in a fresh store: limits, instantiation, error classification, report.
    fn run<T: WireSize>(
        &self,
        function: &str,
        body: impl FnOnce(&Linked, &mut Store<CallState>) -> wasmtime::Result<T>,
    ) -> Called<T> {
        let inner = &*self.inner;
        let started = Instant::now();
        let mut store = self.fresh_store();
        let fuel = inner.limits.fuel;
        let outcome = self
            .arm(&mut store)
            .and_then(|()| body(&inner.linked, &mut store));
        let remaining = store.get_fuel().unwrap_or(0);
        let stderr = store.data_mut().flush_output();
        let state = store.data();
        let report = CallReport {
            function: function.to_string(),
            fuel_used: fuel.saturating_sub(remaining),
            wall: started.elapsed(),
            peak_memory_bytes: state.memory.peak,
            host_calls: state.host_calls,
        };
        let result = match outcome {
            Ok(value) if value.wire_size() > inner.limits.max_result_bytes => {
                Err(PluginError::ResultTooLarge {
                    plugin: inner.label.to_string(),
                    function: function.to_string(),
                    size: value.wire_size(),
                    limit: inner.limits.max_result_bytes,
                })
            }
            Ok(value) => Ok(value),
            Err(error) => Err(self.classify(function, &error, state, stderr)),
        };
        drop(store);
        inner.stats.calls.fetch_add(1, Ordering::Relaxed);
        inner.stats.fuel.fetch_add(report.fuel_used, Ordering::Relaxed);
        if let Err(error) = &result {
            inner.stats.failures.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                plugin = &*inner.label,
                function,
                kind = error.kind(),
                "plugin call failed: {error}"
            );
        }
        Called { result, report }
    }

    /// A store for one call, its memory and tables capped by this plugin's limiter.
    fn fresh_store(&self) -> Store<CallState> {
        let inner = &*self.inner;
        let state = CallState::new(
            inner.caps.clone(),
            inner.grants.clone(),
            inner.label.clone(),
            inner.limits.memory_bytes,
            inner.determinism,
        );
        let mut store = Store::new(&inner.host.engine.engine, state);
        store.limiter(|s| &mut s.memory);
        store
    }

    /// Gives a fresh store this plugin's fuel and wall-clock deadline.
    fn arm(&self, store: &mut Store<CallState>) -> wasmtime::Result<()> {
        let limits = &self.inner.limits;
        store.set_fuel(limits.fuel)?;
        let ticks = limits.deadline_ms.div_ceil(EPOCH_TICK.as_millis() as u64).max(1);
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
        Ok(())
    }

    /// Turns a wasmtime error into the typed failure a user can act on.
    fn classify(
        &self,
        function: &str,
        error: &wasmtime::Error,
        state: &CallState,
        stderr: String,
    ) -> PluginError {
        let plugin = self.inner.label.to_string();
        let function = function.to_string();
        if let Some(bad) = error.downcast_ref::<wave::BadCall>() {
            return PluginError::BadCall {
                plugin,
                reason: bad.0.clone(),
            };
        }
        if let Some(requested) = state.memory.refused {
            return PluginError::MemoryLimit {
                plugin,
                function,
                limit: self.inner.limits.memory_bytes,
                requested,
            };
        }
        match error.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => PluginError::OutOfFuel {
                plugin,
                function,
                limit: self.inner.limits.fuel,
            },
            Some(Trap::Interrupt) => PluginError::Deadline {
                plugin,
                function,
                deadline_ms: self.inner.limits.deadline_ms,
            },
            Some(trap) => PluginError::Trap {
                plugin,
                function,
                trap: trap.to_string(),
                backtrace: error
                    .downcast_ref::<WasmBacktrace>()
                    .map(|b| b.to_string())
                    .unwrap_or_default(),
                stderr,
            },
            None => PluginError::Host {
                plugin,
                function,
                reason: format!("{error:#}"),
            },
        }
    }
}
