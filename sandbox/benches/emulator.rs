//! Throughput and latency of the emulator over real HTTP with kube-rs: 10,000 creates, list latency, fan-out of
//! one update stream to 50 watchers (delivery latency p50/p99), and resident memory per 1,000 objects.
//!
//! Run: `cargo bench -p kube-emulator --bench emulator` (prints a table; figures go to docs/status/emulator.md).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube_emulator::{Cluster, ClusterOptions};
use serde_json::json;
use tokio::sync::Mutex;

const OBJECTS: usize = 10_000;
const WATCHERS: usize = 50;
const UPDATES: usize = 500;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn raw_get(addr: std::net::SocketAddr, path: &str) -> std::io::Result<usize> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    Ok(out.len())
}

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "bench", "shard": name.len().to_string()}},
        "data": {"config.yaml": "replicas: 3\nimage: registry.example/app:1.2.3\n", "mode": "fast"}
    }))
    .unwrap_or_default()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--list") {
        // `cargo bench -- --list` protocol: nothing to enumerate.
        return Ok(());
    }
    let cluster = Cluster::start_with(ClusterOptions {
        history: 200_000,
        ..Default::default()
    })
    .await?;
    let client = cluster.client()?;
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let rss_before = rss_bytes();

    // 1. Creates: 16 concurrent clients.
    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let api = api.clone();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if i >= OBJECTS {
                    return Ok::<_, kube::Error>(());
                }
                api.create(&PostParams::default(), &cm(&format!("obj-{i:05}")))
                    .await?;
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let create_secs = start.elapsed().as_secs_f64();
    let rss_after = rss_bytes();

    // 2. Sequential creates (one client, one request at a time) for latency.
    let mut create_lat = Vec::new();
    for i in 0..500 {
        let t = Instant::now();
        api.create(&PostParams::default(), &cm(&format!("seq-{i:04}")))
            .await?;
        create_lat.push(t.elapsed());
    }
    create_lat.sort();

    // 3. List latency of all objects, and of a page of 500.
    let mut full = Vec::new();
    for _ in 0..10 {
        let t = Instant::now();
        let l = api.list(&ListParams::default()).await?;
        full.push(t.elapsed());
        assert!(l.items.len() >= OBJECTS);
    }
    full.sort();
    // The same list as raw bytes over HTTP: the server's share without kube-rs decoding into structs.
    let mut raw = Vec::new();
    let mut raw_bytes = 0usize;
    for _ in 0..10 {
        let addr = cluster.addr();
        let t = Instant::now();
        raw_bytes =
            tokio::task::spawn_blocking(move || raw_get(addr, "/api/v1/namespaces/default/configmaps"))
                .await??;
        raw.push(t.elapsed());
    }
    raw.sort();
    let mut page = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        api.list(&ListParams::default().limit(500)).await?;
        page.push(t.elapsed());
    }
    page.sort();

    // 4. Fan-out: 50 watchers on one object's updates; latency from before the PATCH is sent to arrival.
    let rv = api
        .get("obj-00000")
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let sent: Arc<Mutex<BTreeMap<String, Instant>>> = Arc::new(Mutex::new(BTreeMap::new()));
    let warm = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        let api = api.clone();
        let sent = sent.clone();
        let rv = rv.clone();
        let warm = warm.clone();
        watchers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let wp = WatchParams::default()
                .fields("metadata.name=obj-00000")
                .timeout(290);
            let mut stream = api.watch(&wp, &rv).await?.boxed();
            while let Some(ev) = stream.try_next().await? {
                if let WatchEvent::Modified(o) = ev {
                    let now = Instant::now();
                    let mark = o
                        .data
                        .as_ref()
                        .and_then(|d| d.get("mark"))
                        .cloned()
                        .unwrap_or_default();
                    if mark == "warmup" {
                        warm.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        continue;
                    }
                    if let Some(t0) = sent.lock().await.get(&mark) {
                        lat.push(now - *t0);
                    }
                    if mark == format!("{}", UPDATES - 1) {
                        break;
                    }
                }
            }
            Ok::<_, kube::Error>(lat)
        }));
    }
    // Every watcher must be connected before timing starts: wait until all saw a warm-up update.
    api.patch(
        "obj-00000",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"mark": "warmup"}})),
    )
    .await?;
    while warm.load(std::sync::atomic::Ordering::SeqCst) < WATCHERS {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let fan_start = Instant::now();
    for i in 0..UPDATES {
        let mark = i.to_string();
        sent.lock().await.insert(mark.clone(), Instant::now());
        api.patch(
            "obj-00000",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"mark": mark}})),
        )
        .await?;
    }
    let mut delivery = Vec::new();
    for w in watchers {
        delivery.extend(w.await??);
    }
    let fan_secs = fan_start.elapsed().as_secs_f64();
    delivery.sort();

    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("kube-emulator bench (release, kube-rs over HTTP on 127.0.0.1)");
    println!(
        "creates, 16 concurrent clients: {OBJECTS} objects in {create_secs:.2}s = {:.0} objects/s",
        OBJECTS as f64 / create_secs
    );
    println!(
        "create latency, sequential: p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&create_lat, 0.5)),
        ms(percentile(&create_lat, 0.99))
    );
    println!(
        "list all {} objects: p50 {:.1} ms, max {:.1} ms",
        OBJECTS + 500,
        ms(percentile(&full, 0.5)),
        ms(percentile(&full, 1.0))
    );
    println!(
        "list all, raw HTTP (no client decoding): p50 {:.1} ms for {:.1} MiB of JSON",
        ms(percentile(&raw, 0.5)),
        raw_bytes as f64 / 1048576.0
    );
    println!(
        "list page of 500: p50 {:.2} ms, p99 {:.2} ms",
        ms(percentile(&page, 0.5)),
        ms(percentile(&page, 0.99))
    );
    println!(
        "fan-out {UPDATES} updates x {WATCHERS} watchers: {} deliveries in {fan_secs:.2}s, latency p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        delivery.len(),
        ms(percentile(&delivery, 0.5)),
        ms(percentile(&delivery, 0.99)),
        ms(percentile(&delivery, 1.0))
    );
    println!(
        "memory: RSS +{:.1} MiB for {OBJECTS} objects = {:.0} KiB per 1,000 objects (incl. watch history)",
        (rss_after.saturating_sub(rss_before)) as f64 / 1048576.0,
        (rss_after.saturating_sub(rss_before)) as f64 / 1024.0 / (OBJECTS as f64 / 1000.0)
    );
    println!(
        "store: {} objects, resourceVersion {}",
        cluster.object_count(),
        cluster.resource_version()
    );
    Ok(())
}
