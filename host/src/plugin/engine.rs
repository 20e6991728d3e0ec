//! The wasmtime engine: pooling allocator, epoch ticker, and compilation once per component digest
//! (in memory, and on disk keyed by digest and the engine's compatibility hash so a restart does not
//! recompile).
//!
//! Compiled code on disk is native code that runs as the controller, so an entry is trusted only when
//! its MAC checks out: HMAC-SHA256, keyed by a random key made once per installation (`key` in the cache
//! directory, mode 0600), over the component digest, the engine's compatibility hash and the code. A
//! file copied under another digest (or edited, or half-written) fails the check and is recompiled.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use sha2::{Digest as _, Sha256};
use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, OptLevel, PoolingAllocationConfig};

use super::bindings::clusterstack::provider as wit;
use super::store::CallState;

/// One epoch tick; deadlines are counted in these.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// How the engine is set up. The defaults suit a controller serving a few dozen plugins.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where compiled code is cached (`<digest>-<engine hash>.cwasm`); `None` keeps it in memory only.
    pub cache_dir: Option<PathBuf>,
    /// Calls that may run at once (instance slots of the pooling allocator).
    pub max_instances: u32,
    /// Largest linear memory any plugin may be given (per-plugin limits must be at most this).
    pub max_memory_bytes: usize,
    /// Bytes of each memory slot kept resident (reset in place instead of decommitted) between calls.
    /// With `pagemap_scan` only the pages a call dirtied are reset, so a call finds the pages it
    /// touches already mapped: no page faults, no `madvise`. Without it every kept byte is memset,
    /// which only pays for small values (see the `instantiate_keep_resident` bench). At most this
    /// many bytes per instance slot stay resident, and only pages some call actually touched.
    pub keep_resident_bytes: usize,
    /// Use Linux's `PAGEMAP_SCAN` (kernel >= 6.7) to find the dirty pages to reset.
    pub pagemap_scan: bool,
    /// Map linear memory images copy-on-write (an mmap per instance) instead of copying data
    /// segments into a slot; see the `instantiate` benches for which is faster for small plugins.
    pub memory_init_cow: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let pagemap_scan = pagemap_scan_supported();
        EngineConfig {
            cache_dir: None,
            max_instances: 128,
            max_memory_bytes: 1 << 30,
            // Rust guests put a 1 MiB stack below their data and heap: 2 MiB covers what a small
            // plugin touches. Measured (noop, 10 KB patch, fresh instance): 37.6 -> 16.3 us.
            keep_resident_bytes: if pagemap_scan { 2 << 20 } else { 0 },
            pagemap_scan,
            memory_init_cow: true,
        }
    }
}

/// Whether the running kernel has the `PAGEMAP_SCAN` ioctl (Linux 6.7). wasmtime falls back to
/// memset when it cannot use it, so a wrong guess costs speed, never correctness.
fn pagemap_scan_supported() -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    kernel_at_least(&release, (6, 7))
}

fn kernel_at_least(release: &str, (major, minor): (u32, u32)) -> bool {
    let mut parts = release
        .trim()
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let found = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    found >= (major, minor)
}

/// The compiled-code cache entry for one digest, shared by concurrent loads of the same bytes.
type CompileCell = Arc<OnceLock<Result<Component, String>>>;

pub(crate) struct PluginEngine {
    pub(crate) engine: Engine,
    /// Every interface of the world and WASI 0.2 are linked for every plugin; what a plugin was not
    /// granted answers each call with the typed `denied` error (see `capability`), so a component
    /// that imports the whole world (Python, JavaScript) loads without being handed anything.
    pub(crate) linker: Linker<CallState>,
    pub(crate) config: EngineConfig,
    compiled: Mutex<HashMap<String, CompileCell>>,
    /// Background compiles in progress (`compile_in_background`), by digest, with their start.
    compiling: Mutex<HashMap<String, std::time::Instant>>,
    compat_hash: String,
    /// The key of the on-disk cache's MACs; `None` when there is no disk cache (or no usable key).
    cache_key: Option<[u8; 32]>,
}

/// Where the compiled code of one component stands (see `PluginHost::compile_in_background`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compilation {
    /// Compiled (or failed to compile) in this process, or in the on-disk cache: a load does not wait
    /// for the compiler.
    Done,
    /// A background thread is compiling it; `elapsed` since it started.
    Running { elapsed: Duration },
}

impl PluginEngine {
    pub(crate) fn new(config: EngineConfig) -> wasmtime::Result<Self> {
        let mut pool = PoolingAllocationConfig::new();
        let slots = config.max_instances.max(1);
        pool.total_component_instances(slots)
            // The WASI adapter and the plugin module: a handful of core instances per component.
            .total_core_instances(slots * 8)
            .total_memories(slots * 2)
            .total_tables(slots * 4)
            .total_stacks(0)
            .max_memory_size(config.max_memory_bytes)
            .linear_memory_keep_resident(config.keep_resident_bytes)
            .table_keep_resident(64 << 10);
        if config.pagemap_scan {
            pool.pagemap_scan(wasmtime::Enabled::Auto);
        }
        let mut wasm = Config::new();
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
            .memory_init_cow(config.memory_init_cow)
            .consume_fuel(true)
            .epoch_interruption(true)
            .wasm_backtrace_max_frames(std::num::NonZeroUsize::new(32))
            .cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&wasm)?;

        let linker = linker(&engine)?;

        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat_hash = format!("{:016x}", hasher.finish());

        let cache_key = config.cache_dir.as_deref().and_then(|dir| match cache_key(dir) {
            Ok(key) => Some(key),
            Err(why) => {
                tracing::warn!(dir = %dir.display(), "compiled code is not cached on disk: {why}");
                None
            }
        });

        start_epoch_ticker(&engine);
        Ok(PluginEngine {
            engine,
            linker,
            config,
            compiled: Mutex::new(HashMap::new()),
            compiling: Mutex::new(HashMap::new()),
            compat_hash,
            cache_key,
        })
    }

    /// Compiles `bytes` (digest `digest`) once; later calls with the same digest share the result.
    pub(crate) fn compile(&self, digest: &str, bytes: &[u8]) -> Result<Component, String> {
        let cell = {
            let mut compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
            compiled.entry(digest.to_string()).or_default().clone()
        };
        cell.get_or_init(|| self.compile_uncached(digest, bytes)).clone()
    }

    /// Whether a load of `digest` would wait for the compiler; if so, starts compiling it on a thread
    /// of its own (once per digest) and says since when. A large component (a Python plugin is
    /// ~18 MB) takes tens of seconds to compile: the controller reports that instead of waiting.
    pub(crate) fn compile_in_background(self: &Arc<Self>, digest: &str, bytes: Arc<Vec<u8>>) -> Compilation {
        let done_in_memory = {
            let compiled = self.compiled.lock().unwrap_or_else(|p| p.into_inner());
            compiled.get(digest).is_some_and(|cell| cell.get().is_some())
        };
        if done_in_memory || self.cache_path(digest).is_some_and(|p| p.exists()) {
            return Compilation::Done;
        }
        let mut compiling = self.compiling.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(since) = compiling.get(digest) {
            return Compilation::Running {
                elapsed: since.elapsed(),
            };
        }
        compiling.insert(digest.to_string(), std::time::Instant::now());
        let engine = self.clone();
        let key = digest.to_string();
        let spawned = std::thread::Builder::new()
            .name("stackhost-compile".into())
            .spawn(move || {
                // The outcome stays in the compile cache; a failure is reported by the next load.
                let _ = engine.compile(&key, &bytes);
                engine
                    .compiling
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&key);
            });
        match spawned {
            Ok(_) => Compilation::Running {
                elapsed: Duration::ZERO,
            },
            Err(e) => {
                // No thread: the load compiles inline, as before.
                tracing::warn!("cannot start a compile thread, compiling on the caller's: {e}");
                compiling.remove(digest);
                Compilation::Done
            }
        }
    }

    fn cache_path(&self, digest: &str) -> Option<PathBuf> {
        let hex = digest.trim_start_matches("sha256:");
        self.cache_key?;
        self.config
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{hex}-{}.cwasm", self.compat_hash)))
    }

    /// The MAC of `code` compiled from the component `digest` by this engine.
    fn mac(&self, key: &[u8; 32], digest: &str, code: &[u8]) -> String {
        let message = [
            b"stackhost compiled code v1\0".as_slice(),
            digest.as_bytes(),
            b"\0",
            self.compat_hash.as_bytes(),
            b"\0",
            Sha256::digest(code).as_slice(),
        ]
        .concat();
        hex::encode(hmac_sha256(key, &message))
    }

    fn compile_uncached(&self, digest: &str, bytes: &[u8]) -> Result<Component, String> {
        if let Some(path) = self.cache_path(digest) {
            match self.load_cached(digest, &path) {
                Ok(Some(component)) => return Ok(component),
                Ok(None) => {}
                Err(why) => tracing::warn!(path = %path.display(), "ignoring cached compiled plugin: {why}"),
            }
        }
        let started = std::time::Instant::now();
        let component = Component::new(&self.engine, bytes).map_err(|e| format!("{e:#}"))?;
        tracing::info!(
            digest,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "compiled plugin"
        );
        if let (Some(path), Some(key)) = (self.cache_path(digest), &self.cache_key) {
            let stored = component.serialize().map_err(|e| e.to_string()).and_then(|code| {
                let mac = self.mac(key, digest, &code);
                store_cached(&path, &code, &mac)
            });
            if let Err(why) = stored {
                tracing::warn!(path = %path.display(), "cannot cache compiled plugin: {why}");
            }
        }
        Ok(component)
    }

    /// Loads precompiled code if it is there and its MAC (written beside it) proves that this
    /// installation compiled it from the component `digest` with this engine.
    fn load_cached(&self, digest: &str, path: &Path) -> Result<Option<Component>, String> {
        let Some(key) = &self.cache_key else {
            return Ok(None);
        };
        let code = match std::fs::read(path) {
            Ok(code) => code,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.to_string()),
        };
        let expected = std::fs::read_to_string(mac_path(path)).map_err(|e| format!("MAC: {e}"))?;
        if !same(
            self.mac(key, digest, &code).as_bytes(),
            expected.trim().as_bytes(),
        ) {
            return Err(format!(
                "its MAC does not match: not compiled from {digest} by this installation (copied, \
                 edited or partial); recompiling"
            ));
        }
        deserialize(&self.engine, &code).map(Some)
    }
}

// Deserialising compiled code is `unsafe` in wasmtime because the bytes become executable code.
// We only read files whose MAC proves this installation wrote them for this digest and engine.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, code: &[u8]) -> Result<Component, String> {
    // SAFETY: `code` was produced by `Component::serialize` of an engine with the same compatibility
    // hash, from the component being loaded: its HMAC under this installation's key, over the digest,
    // the compatibility hash and the code, matched.
    unsafe { Component::deserialize(engine, code) }.map_err(|e| format!("{e:#}"))
}

fn mac_path(path: &Path) -> PathBuf {
    path.with_extension("cwasm.mac")
}

/// Compares in time independent of where the inputs differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// HMAC-SHA256 (RFC 2104).
fn hmac_sha256(key: &[u8; 32], message: &[u8]) -> [u8; 32] {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let pad = |byte: u8| block.map(|b| b ^ byte);
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// The installation's cache key, `<dir>/key` (32 random bytes, mode 0600), made on first use.
fn cache_key(dir: &Path) -> Result<[u8; 32], String> {
    use std::io::{Read as _, Write as _};
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create it: {e}"))?;
    let path = dir.join("key");
    let mut key = [0u8; 32];
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut file) => {
            std::fs::File::open("/dev/urandom")
                .and_then(|mut random| random.read_exact(&mut key))
                .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
            file.write_all(&key)
                .and_then(|()| file.sync_all())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            Ok(key)
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let bytes = std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            bytes.try_into().map_err(|_| {
                format!(
                    "{} is not a 32-byte key; remove it (the cache is rebuilt)",
                    path.display()
                )
            })
        }
        Err(e) => Err(format!("cannot create {}: {e}", path.display())),
    }
}

/// Writes the compiled code and its MAC atomically (temp file + rename), the MAC last.
fn store_cached(path: &Path, code: &[u8], mac: &str) -> Result<(), String> {
    let dir = path.parent().ok_or("no cache directory")?;
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    write_atomic(path, code)?;
    write_atomic(&mac_path(path), mac.as_bytes())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    std::fs::write(&tmp, bytes).map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}

fn linker(engine: &Engine) -> wasmtime::Result<Linker<CallState>> {
    use wasmtime::component::HasSelf;
    let mut linker = Linker::<CallState>::new(engine);
    // WASI 0.2 including `wasi:sockets`: the context (store.rs) allows no TCP, UDP or name lookup and
    // its address check denies every address, so each socket call fails with `access-denied`.
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    wit::log::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
    wit::config::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
    wit::http::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
    wit::secrets::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
    wit::state::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)?;
    Ok(linker)
}

/// Advances the engine's epoch every `EPOCH_TICK` until the engine is dropped.
fn start_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let spawned = std::thread::Builder::new()
        .name("stackhost-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
        });
    if let Err(e) = spawned {
        // Without the ticker only fuel stops a runaway guest; say so loudly but keep serving.
        tracing::error!("cannot start the epoch ticker thread, deadlines are not enforced: {e}");
    }
}

/// `sha256:<hex>` of some bytes: the identity of a component everywhere in stackhost.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::{kernel_at_least, EngineConfig, PluginEngine};

    /// The names a compiled component exports.
    fn exports(engine: &PluginEngine, digest: &str, bytes: &[u8]) -> Vec<String> {
        let component = engine.compile(digest, bytes).expect("compile");
        component
            .component_type()
            .exports(&engine.engine)
            .map(|(name, _)| name.to_owned())
            .collect()
    }

    #[test]
    fn compiled_code_copied_under_another_digest_is_recompiled_not_run() {
        let dir = tempfile::tempdir().expect("tmp");
        let engine = || {
            PluginEngine::new(EngineConfig {
                cache_dir: Some(dir.path().to_path_buf()),
                max_instances: 1,
                ..EngineConfig::default()
            })
            .expect("engine")
        };
        let component = |name: &str| {
            wat::parse_str(format!(
                "(component (core module $m) (export \"{name}\" (core module $m)))"
            ))
            .expect("component")
        };
        let (a, b) = (component("from-a"), component("from-b"));
        let (digest_a, digest_b) = (super::digest_of(&a), super::digest_of(&b));
        let first = engine();
        assert_eq!(exports(&first, &digest_a, &a), ["from-a"]);
        assert_eq!(exports(&first, &digest_b, &b), ["from-b"]);
        drop(first);

        let key = std::fs::metadata(dir.path().join("key")).expect("key file");
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&key.permissions()) & 0o777,
            0o600
        );
        let entry = |digest: &str, ext: &str| {
            let hex = digest.trim_start_matches("sha256:");
            std::fs::read_dir(dir.path())
                .expect("cache dir")
                .flatten()
                .map(|e| e.path())
                .find(|p| {
                    let name = p.file_name().unwrap_or_default().to_string_lossy().into_owned();
                    name.starts_with(hex) && name.ends_with(ext)
                })
                .expect("cache entry")
        };
        // A's compiled code and its MAC, copied over B's entry.
        let a_code = std::fs::read(entry(&digest_a, ".cwasm")).expect("read");
        std::fs::copy(entry(&digest_a, ".cwasm"), entry(&digest_b, ".cwasm")).expect("copy");
        std::fs::copy(entry(&digest_a, ".cwasm.mac"), entry(&digest_b, ".cwasm.mac")).expect("copy");

        let restarted = engine();
        assert_eq!(
            exports(&restarted, &digest_b, &b),
            ["from-b"],
            "B is B, not A's code"
        );
        assert_ne!(
            std::fs::read(entry(&digest_b, ".cwasm")).expect("read"),
            a_code,
            "B's entry was compiled again"
        );
        // A's own entry is still served from the cache.
        let a_written = std::fs::metadata(entry(&digest_a, ".cwasm"))
            .and_then(|m| m.modified())
            .expect("mtime");
        assert_eq!(exports(&restarted, &digest_a, &a), ["from-a"]);
        assert_eq!(
            std::fs::metadata(entry(&digest_a, ".cwasm"))
                .and_then(|m| m.modified())
                .expect("mtime"),
            a_written
        );
    }

    #[test]
    fn kernel_release_strings_compare_by_major_and_minor() {
        assert!(kernel_at_least("6.18.44-fc-v1045\n", (6, 7)));
        assert!(kernel_at_least("6.7.0", (6, 7)));
        assert!(!kernel_at_least("6.1.0-28-amd64", (6, 7)));
        assert!(kernel_at_least("7.0", (6, 7)));
        assert!(!kernel_at_least("garbage", (6, 7)));
    }
}
