//! Pull + verify (+ compile and first instantiation with wasmtime) of a 5 MB plugin component
//! from a local `docker-registry`, with a cold and a warm cache.
//!
//! Run: `cargo bench -p stackhost --bench oci` (needs scripts/deps/oci.sh).

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

const SIZE: usize = 5 * 1024 * 1024;

struct Setup {
    _registry: support::TestRegistry,
    client: Arc<Registry>,
    reference: String,
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
        Setup {
            _registry: registry,
            client,
            reference,
            public_pem: key.public_pem,
            engine: wasmtime::Engine::default(),
        }
    })
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
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
