//! Plugin runtime benchmarks (issue targets in the README's performance section):
//! instantiate from `InstancePre` with pooling; `patch-cluster-class` on `noop` with a 10 KB object including
//! a fresh instance; the same patch done natively for the wasm/native ratio; cached load after restart.
//!
//! Run: `cargo bench -p stackhost --bench plugin` (plugins built first with `plugins/build`).
//!
//! `cargo bench -p stackhost --bench plugin -- languages` instead prints one row per language of the
//! docker sample plugin (plugins/docker, docker-py, docker-js: the same logic and fixtures): component
//! size, first compile, cached load after a restart, instantiate p50, `patch-cluster-class` with a
//! 10 KB object in a fresh instance p50/p99, calls per second on one core and peak memory per call.
//! `STACKHOST_BENCH_CALLS` sets the timed calls per language (default 2000),
//! `STACKHOST_BENCH_KEEP_RESIDENT_MIB` the engine's `keep_resident_bytes` (default: the engine's).

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use stackhost::plugin::types::ReleaseInfo;
use stackhost::plugin::{EngineConfig, PluginHost, PluginSettings, SandboxPhases};

fn plugin_bytes(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/dist")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}: run plugins/build first", path.display()))
}

fn release() -> ReleaseInfo {
    ReleaseInfo {
        tag: "docker-ferrol-1-30-v2".into(),
        provider: "docker".into(),
        stack_name: "ferrol".into(),
        kubernetes_version: "v1.30.9".into(),
        version: "v2".into(),
    }
}

/// A ClusterClass-like JSON object of about 10 KB.
fn object_10kb() -> String {
    let variables: Vec<_> = (0..120)
        .map(|i| serde_json::json!({"name": format!("variable-{i}"), "schema": {"openAPIV3Schema": {"type": "string"}}}))
        .collect();
    serde_json::json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "ClusterClass",
        "metadata": {"name": "ferrol-1-30-v2"}, "spec": {"variables": variables}})
    .to_string()
}

/// The native equivalent of noop's patch: copy the objects across an owned boundary.
fn native_patch(_release: &ReleaseInfo, objects: &[String]) -> Result<Vec<String>, String> {
    Ok(objects.to_vec())
}

/// Prints p50/p99/p99.9/max of individually timed calls and how many per second their mean allows.
fn report_percentiles(name: &str, latencies: &mut [Duration]) {
    if latencies.is_empty() {
        return; // filtered out
    }
    latencies.sort_unstable();
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e6;
    let mean = latencies.iter().sum::<Duration>().as_secs_f64() / latencies.len() as f64;
    println!(
        "{name}: {} calls, p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us, max {:.1} us, {:.0}/s on one core",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(0.999),
        at(1.0),
        1.0 / mean
    );
}

/// The language comparison (see the module docs); runs instead of criterion when asked for.
fn languages() {
    let calls: usize = std::env::var("STACKHOST_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let objects = vec![object_10kb()];
    let release = ReleaseInfo {
        tag: "docker-ferrol-1-32-v1".into(),
        ..release()
    };
    println!(
        "{:<10} {:>9} {:>13} {:>11} {:>11} {:>10} {:>10} {:>9} {:>10} {:>9}",
        "language",
        "size MB",
        "1st compile",
        "cached ld",
        "inst p50",
        "call p50",
        "call p99",
        "calls/s",
        "peak MiB",
        "fuel"
    );
    for (language, name) in [("rust", "docker"), ("python", "docker-py"), ("js", "docker-js")] {
        let bytes = plugin_bytes(name);
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = EngineConfig {
            cache_dir: Some(dir.path().to_path_buf()),
            max_instances: 4,
            ..EngineConfig::default()
        };
        if let Some(mib) = std::env::var("STACKHOST_BENCH_KEEP_RESIDENT_MIB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            config.keep_resident_bytes = mib << 20;
        }
        let settings = || PluginSettings {
            name: name.into(),
            grants: stackhost::plugin::Grants {
                state: true,
                ..Default::default()
            },
            ..PluginSettings::default()
        };
        let started = Instant::now();
        PluginHost::new(config.clone())
            .expect("engine")
            .load(&bytes, settings())
            .expect("first compile");
        let first_compile = started.elapsed();
        // A restart: a new engine finds the code in the disk cache (median of 5).
        let mut loads: Vec<Duration> = (0..5)
            .map(|_| {
                let host = PluginHost::new(config.clone()).expect("engine");
                let started = Instant::now();
                black_box(host.load(&bytes, settings()).expect("cached load"));
                started.elapsed()
            })
            .collect();
        loads.sort_unstable();
        let host = PluginHost::new(config.clone()).expect("engine");
        let plugin = host.load(&bytes, settings()).expect("load");
        let mut instantiate: Vec<Duration> = (0..calls.min(1000))
            .map(|_| plugin.sandbox_phases().expect("instantiate").instantiate)
            .collect();
        instantiate.sort_unstable();
        for _ in 0..20 {
            plugin
                .patch_cluster_class(&release, &objects)
                .result
                .expect("warm-up")
                .expect("warm-up result");
        }
        let mut latencies = Vec::with_capacity(calls);
        let (mut peak, mut fuel) = (0usize, 0u64);
        for _ in 0..calls {
            let started = Instant::now();
            let called = plugin.patch_cluster_class(&release, &objects);
            latencies.push(started.elapsed());
            called.result.expect("call").expect("patch");
            peak = peak.max(called.report.peak_memory_bytes);
            fuel = fuel.max(called.report.fuel_used);
        }
        let mean = latencies.iter().sum::<Duration>().as_secs_f64() / latencies.len() as f64;
        latencies.sort_unstable();
        let at = |v: &[Duration], q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        let ms = |d: Duration| format!("{:.3} ms", d.as_secs_f64() * 1e3);
        println!(
            "{:<10} {:>9.2} {:>13} {:>11} {:>11} {:>10} {:>10} {:>9.0} {:>10.1} {:>9}",
            language,
            bytes.len() as f64 / 1e6,
            format!("{:.2} s", first_compile.as_secs_f64()),
            ms(loads[loads.len() / 2]),
            ms(at(&instantiate, 0.5)),
            ms(at(&latencies, 0.5)),
            ms(at(&latencies, 0.99)),
            1.0 / mean,
            peak as f64 / (1 << 20) as f64,
            fuel
        );
    }
}

fn benches(c: &mut Criterion) {
    if std::env::args().skip(1).any(|a| a == "languages") {
        languages();
        return;
    }
    let host = PluginHost::new(EngineConfig::default()).expect("engine");
    let noop = host
        .load(
            &plugin_bytes("noop"),
            PluginSettings {
                name: "noop".into(),
                ..PluginSettings::default()
            },
        )
        .expect("load noop");
    let objects = vec![object_10kb()];
    let release = release();

    // Bytes of each memory slot kept resident between instances: memset on reuse vs. page faults.
    let mut group = c.benchmark_group("instantiate_keep_resident");
    for keep in [0usize, 64 << 10, 256 << 10, 1 << 20, 2 << 20] {
        let host = PluginHost::new(EngineConfig {
            keep_resident_bytes: keep,
            ..EngineConfig::default()
        })
        .expect("engine");
        let plugin = host
            .load(&plugin_bytes("noop"), PluginSettings::default())
            .expect("load noop");
        group.bench_function(format!("{}KiB", keep >> 10), |b| {
            b.iter(|| black_box(plugin.instantiate_only()))
        });
    }
    group.finish();

    // The target is instantiation from the cached `InstancePre`: timed on its own, each
    // call separately for the p50. The store before it and the teardown after it are timed too,
    // and the whole fresh sandbox (what every call pays) is the next bench.
    let mut phases: Vec<SandboxPhases> = Vec::new();
    c.bench_function("instantiate_from_instance_pre_pooling", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let timed = noop.sandbox_phases().expect("instantiate noop");
                total += timed.instantiate;
                phases.push(timed);
            }
            total
        })
    });
    for (name, phase) in [
        ("store_new", (|p| p.store) as fn(&SandboxPhases) -> Duration),
        ("instantiate_from_instance_pre_pooling", |p| p.instantiate),
        ("teardown", |p| p.teardown),
        ("fresh_sandbox_total", |p| p.store + p.instantiate + p.teardown),
    ] {
        report_percentiles(
            &format!("sandbox_phase/{name}"),
            &mut phases.iter().map(phase).collect::<Vec<_>>(),
        );
    }
    c.bench_function("fresh_sandbox_store_instantiate_drop", |b| {
        b.iter(|| black_box(noop.instantiate_only()))
    });

    let mut group = c.benchmark_group("patch_cluster_class_10kb");
    group.throughput(Throughput::Elements(1));
    group.bench_function("wasm_noop_fresh_instance", |b| {
        b.iter(|| black_box(noop.patch_cluster_class(&release, &objects).result.expect("call")))
    });
    group.bench_function("native", |b| {
        b.iter(|| black_box(native_patch(&release, black_box(&objects))))
    });
    // Each call timed on its own, for the latency percentiles criterion does not report.
    let mut latencies: Vec<Duration> = Vec::new();
    group.bench_function("wasm_noop_fresh_instance_each_timed", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let started = Instant::now();
                drop(black_box(
                    noop.patch_cluster_class(&release, &objects).result.expect("call"),
                ));
                let took = started.elapsed();
                latencies.push(took);
                total += took;
            }
            total
        })
    });
    group.finish();
    report_percentiles(
        "patch_cluster_class_10kb/wasm_noop_fresh_instance",
        &mut latencies,
    );

    // Cached load after a restart: a new engine reading the compiled code from the disk cache.
    let dir = tempfile::tempdir().expect("tempdir");
    let bytes = plugin_bytes("noop");
    let config = EngineConfig {
        cache_dir: Some(dir.path().to_path_buf()),
        max_instances: 4,
        ..EngineConfig::default()
    };
    PluginHost::new(config.clone())
        .expect("engine")
        .load(&bytes, PluginSettings::default())
        .expect("warm cache");
    c.bench_function("cached_load_after_restart", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let host = PluginHost::new(config.clone()).expect("engine");
                let started = Instant::now();
                black_box(host.load(&bytes, PluginSettings::default()).expect("load"));
                total += started.elapsed();
            }
            total
        })
    });
}

criterion_group! {
    name = plugin;
    config = Criterion::default().sample_size(50).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    targets = benches
}
criterion_main!(plugin);
