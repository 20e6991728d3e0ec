//! Pull + verify (+ compile and first instantiation with wasmtime) of a 5 MB plugin component
//! from a local `docker-registry`, with a cold and a warm cache; and pull + verify + load + first call of a
//! real plugin (`noop`, padded to 5 MB with a custom section) through the plugin runtime, cold (nothing
//! cached) and warm (blobs and compiled code cached on disk, new runtime as after a restart).
//!
//! Run: `cargo bench -p stackhost --bench oci` (needs scripts/deps/oci.sh and `plugins/build`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use stackhost::oci::cache::BlobCache;
use stackhost::oci::fetch::{push_plugin, PluginFetcher, PulledPlugin};
use stackhost::oci::registry::{Registry, RegistryConfig};
use stackhost::oci::signature::{self, PublicKey, SignaturePolicy, SigningKey};
use stackhost::oci::source::Source;
use stackhost::plugin::{EngineConfig, PluginHost, PluginSettings};

const SIZE: usize = 5 * 1024 * 1024;

struct Setup {
    _registry: support::TestRegistry,
    client: Arc<Registry>,
    reference: String,
    /// `noop` padded to 5 MB: a plugin that can be called.
    callable: String,
    public_pem: String,
    engine: wasmtime::Engine,
}

fn setup(rt: &tokio::runtime::Runtime) -> Setup {
    rt.block_on(async {
        let registry = support::TestRegistry::start().await;
        let client = Arc::new(Registry::new(RegistryConfig::default()));
        let bytes = support::component(support::PROVIDER_IMPORTS, SIZE);
        let reference = format!("{}/plugins/big:v1", registry.addr);
        let r = client.parse(&reference).expect("reference");
        let digest = push_plugin(&client, "big.wasm", &bytes, &r, BTreeMap::new())
            .await
            .expect("push");
        let key = signature::generate_key(b"bench").expect("key");
        let signer = SigningKey::from_pem(Path::new("bench.key"), key.private_pem.as_bytes(), b"bench")
            .expect("signer");
        signature::sign(&client, &r, &digest, &signer)
            .await
            .expect("sign");
        let callable = format!("{}/plugins/noop-5mb:v1", registry.addr);
        let r = client.parse(&callable).expect("reference");
        let noop = padded(&noop_bytes(), SIZE);
        let digest = push_plugin(&client, "noop-5mb.wasm", &noop, &r, BTreeMap::new())
            .await
            .expect("push noop");
        signature::sign(&client, &r, &digest, &signer)
            .await
            .expect("sign noop");
        Setup {
            _registry: registry,
            client,
            reference,
            callable,
            public_pem: key.public_pem,
            engine: wasmtime::Engine::default(),
        }
    })
}

fn noop_bytes() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist/noop.wasm");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}: run plugins/build first", path.display()))
}

/// `component` grown to `size` bytes by a custom section (kept by every tool, ignored by the runtime).
fn padded(component: &[u8], size: usize) -> Vec<u8> {
    fn leb128(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    let name = b"stackhost-bench-padding";
    let payload = size.saturating_sub(component.len() + name.len() + 12);
    let mut body = Vec::with_capacity(payload + name.len() + 5);
    leb128(name.len(), &mut body);
    body.extend_from_slice(name);
    let mut x: u32 = 0x9e37_79b9;
    body.extend((0..payload).map(|_| {
        // xorshift: incompressible, deterministic.
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as u8
    }));
    let mut out = component.to_vec();
    out.push(0); // custom section
    leb128(body.len(), &mut out);
    out.extend_from_slice(&body);
    out
}

/// Load through the plugin runtime (compile or read the compiled code from `code_cache`, check the
/// imports against the world) and make the first call, as the controller does for a new ProviderPlugin.
fn load_and_call(plugin: &PulledPlugin, code_cache: Option<&Path>) {
    let host = PluginHost::new(EngineConfig {
        cache_dir: code_cache.map(Path::to_path_buf),
        max_instances: 4,
        ..EngineConfig::default()
    })
    .expect("engine");
    let loaded = host.load(&plugin.bytes, PluginSettings::default()).expect("load");
    let info = loaded.info().result.expect("first call");
    assert_eq!(info.name, "noop");
}

fn fetcher(s: &Setup, cache: &Path) -> PluginFetcher {
    PluginFetcher::new(
        Source::Registry(s.client.clone()),
        Arc::new(BlobCache::open(cache).expect("cache")),
        SignaturePolicy {
            keys: vec![PublicKey::from_pem("bench.pub", s.public_pem.as_bytes()).expect("pub")],
            allow_unsigned: false,
        },
    )
}

/// Compile and instantiate once: what the runtime does before the first call.
fn first_instance(engine: &wasmtime::Engine, plugin: &PulledPlugin) {
    use wasmtime::component::{Component, Linker};
    let component = Component::new(engine, plugin.bytes.as_slice()).expect("compile");
    let mut linker: Linker<()> = Linker::new(engine);
    for import in support::PROVIDER_IMPORTS {
        linker.instance(import).expect("define import");
    }
    let mut store = wasmtime::Store::new(engine, ());
    linker.instantiate(&mut store, &component).expect("instantiate");
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let s = setup(&rt);
    let mut group = c.benchmark_group("oci_5mb_component");
    group.sample_size(10).measurement_time(Duration::from_secs(20));

    for compile in [false, true] {
        let what = if compile {
            "pull_verify_compile_instantiate"
        } else {
            "pull_verify"
        };
        group.bench_function(format!("{what}/cold_cache"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let cache = tempfile::tempdir().expect("tmp");
                    let f = fetcher(&s, cache.path());
                    let start = Instant::now();
                    let plugin = rt.block_on(f.pull(&s.reference)).expect("pull");
                    if compile {
                        first_instance(&s.engine, &plugin);
                    }
                    total += start.elapsed();
                }
                total
            })
        });
        let warm = tempfile::tempdir().expect("tmp");
        let f = fetcher(&s, warm.path());
        rt.block_on(f.pull(&s.reference)).expect("prime the cache");
        group.bench_function(format!("{what}/warm_cache"), |b| {
            b.iter(|| {
                let plugin = rt.block_on(f.pull(&s.reference)).expect("pull");
                if compile {
                    first_instance(&s.engine, &plugin);
                }
            })
        });
    }

    // A real plugin: pull + verify + load + first call.
    group.bench_function("pull_verify_load_first_call/cold_cache", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let blobs = tempfile::tempdir().expect("tmp");
                let f = fetcher(&s, blobs.path());
                let start = Instant::now();
                let plugin = rt.block_on(f.pull(&s.callable)).expect("pull");
                load_and_call(&plugin, None);
                total += start.elapsed();
            }
            total
        })
    });
    let blobs = tempfile::tempdir().expect("tmp");
    let code = tempfile::tempdir().expect("tmp");
    let f = fetcher(&s, blobs.path());
    let plugin = rt.block_on(f.pull(&s.callable)).expect("prime the blob cache");
    load_and_call(&plugin, Some(code.path()));
    group.bench_function("pull_verify_load_first_call/warm_cache", |b| {
        b.iter(|| {
            let plugin = rt.block_on(f.pull(&s.callable)).expect("pull");
            load_and_call(&plugin, Some(code.path()));
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
