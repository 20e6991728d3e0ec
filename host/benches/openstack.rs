//! The OpenStack provider plugin through the controllers against real Keystone and Glance (Debian's
//! packages, started on 127.0.0.1 for this run): the time from a ClusterStackRelease created to Ready
//! with two node images imported into Glance (web-download from a local HTTP server), and the plugin's
//! fuel per call of each export it served, taken from the controller's call reports.
//!
//! - cold: two new images (created, imported, polled until active), a fresh sandbox each sample;
//! - warm: the same release in a fresh sandbox with empty plugin state, the images already in Glance
//!   (found by name and tags: no import).
//!
//! The ProviderPlugin is loaded (Ready) before the ClusterStack is applied, so plugin compilation is
//! not in the figure; it is printed separately. The plugin polls Glance every second (`pollSeconds: 1`;
//! upstream's default is 30 s, which would dominate the figure).
//!
//! `cargo bench -p stackhost --bench openstack` (env STACKHOST_BENCH_SAMPLES, default 3).

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::Api;
use serde_json::json;
use stackhost::api::condition::is_true;
use stackhost::api::{ClusterStack, ClusterStackRelease, ProviderPlugin};
use stackhost::sandbox::{describe_release, wait_for};
use support::openstack::{unique, Auth, ImageServer, OpenStack};
use support::openstack_stack::{
    cluster_stack, metric, provider_plugin, put_secret, start, tag, write_layout, write_release, Image, NS,
};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

const WAIT: Duration = Duration::from_secs(180);

/// One plugin call as the controller reported it.
#[derive(Debug, Clone)]
struct Call {
    function: String,
    fuel: u64,
    wall_ms: f64,
    host_calls: u64,
}

/// Collects the controller's `plugin call` debug events (their `report` field).
#[derive(Clone, Default)]
struct Reports(Arc<Mutex<Vec<Call>>>);

struct ReportField(Option<String>);

impl tracing::field::Visit for ReportField {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "report" {
            self.0 = Some(format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Reports {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        let mut field = ReportField(None);
        event.record(&mut field);
        if let Some(call) = field.0.as_deref().and_then(parse_report) {
            self.0.lock().unwrap_or_else(|p| p.into_inner()).push(call);
        }
    }
}

/// `reconcile-node-images: fuel 123 | wall 4.5 us | peak memory 1.0 KiB | host calls 7`.
fn parse_report(text: &str) -> Option<Call> {
    let (function, rest) = text.split_once(": ")?;
    let mut call = Call {
        function: function.to_string(),
        fuel: 0,
        wall_ms: 0.0,
        host_calls: 0,
    };
    for part in rest.split(" | ") {
        if let Some(v) = part.strip_prefix("fuel ") {
            call.fuel = v.parse().ok()?;
        } else if let Some(v) = part.strip_prefix("wall ") {
            call.wall_ms = v.trim_end_matches(" us").parse::<f64>().ok()? / 1000.0;
        } else if let Some(v) = part.strip_prefix("host calls ") {
            call.host_calls = v.parse().ok()?;
        }
    }
    Some(call)
}

impl Reports {
    fn take(&self) -> Vec<Call> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

struct Sample {
    /// ClusterStackRelease created -> Ready.
    release: Duration,
    /// ProviderPlugin created -> Ready (fetch from the layout, compile, validate-config).
    plugin_load: Duration,
    calls: Vec<Call>,
    validate_fuel: f64,
}

async fn sample(os: &OpenStack, images: &[Image; 2], reports: &Reports) -> anyhow::Result<Sample> {
    let (releases, layout, cache) = (tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?);
    let release = write_release(releases.path(), 1, &images[0], &images[1])?;
    write_layout(layout.path(), &[release])?;
    let sandbox = start(layout.path(), cache.path()).await?;
    let client = sandbox.client.clone();
    put_secret(
        &client,
        &os.clouds_yaml("openstack", Auth::Password, Some(&os.region)),
    )
    .await?;
    let pps: Api<ProviderPlugin> = Api::namespaced(client.clone(), NS);
    let loading = Instant::now();
    pps.create(
        &Default::default(),
        &provider_plugin(&os.http_hosts(), json!({"import": {"pollSeconds": 1}})),
    )
    .await?;
    wait_for("the ProviderPlugin to be ready", WAIT, || async {
        let pp = pps.get("openstack").await.map_err(|e| e.to_string())?;
        match &pp.status {
            Some(s) if is_true(&s.conditions, "Ready") => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    let plugin_load = loading.elapsed();
    reports.take();

    let stacks: Api<ClusterStack> = Api::namespaced(client.clone(), NS);
    stacks
        .create(&Default::default(), &cluster_stack(&["v1"]))
        .await?;
    let api: Api<ClusterStackRelease> = Api::namespaced(client.clone(), NS);
    let tag = tag(1);
    let mut created = None;
    let deadline = Instant::now() + WAIT;
    let release = loop {
        match api.get_opt(&tag).await? {
            Some(r) => {
                let t0 = *created.get_or_insert_with(Instant::now);
                if r.status.as_ref().is_some_and(|s| s.ready) {
                    break t0.elapsed();
                }
                anyhow::ensure!(Instant::now() < deadline, "not ready: {}", describe_release(&r));
            }
            None => anyhow::ensure!(Instant::now() < deadline, "{tag} not created"),
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let validate_fuel = metric(
        &sandbox,
        "stackhost_plugin_fuel_total",
        &["function=\"validate-config\""],
    ) / metric(
        &sandbox,
        "stackhost_plugin_calls_total",
        &["function=\"validate-config\""],
    )
    .max(1.0);
    sandbox.shutdown().await?;
    Ok(Sample {
        release,
        plugin_load,
        calls: reports.take(),
        validate_fuel,
    })
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn stats(label: &str, values: &mut [f64], unit: &str) {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return;
    }
    let median = values[values.len() / 2];
    println!(
        "  {label:<44} median {median:>12.2} {unit}  min {:>12.2}  max {:>12.2}  (n={})",
        values[0],
        values[values.len() - 1],
        values.len()
    );
}

/// Fuel, wall time (ms) and host calls of the calls of one kind.
type Series = (Vec<f64>, Vec<f64>, Vec<f64>);

fn report(title: &str, samples: &[Sample]) {
    println!("\n{title}");
    let mut release: Vec<f64> = samples.iter().map(|s| s.release.as_secs_f64()).collect();
    stats("ClusterStackRelease created -> Ready", &mut release, "s");
    let mut load: Vec<f64> = samples.iter().map(|s| s.plugin_load.as_secs_f64()).collect();
    stats("ProviderPlugin created -> Ready", &mut load, "s");
    let mut validate: Vec<f64> = samples.iter().map(|s| s.validate_fuel).collect();
    stats("fuel: validate-config", &mut validate, "");
    // reconcile-node-images: the first call (token, lookups, creates, imports started), the ones
    // while images import (one status GET each), and the last (both active).
    let mut by_kind: BTreeMap<String, Series> = BTreeMap::new();
    for s in samples {
        let reconciles: Vec<&Call> = s
            .calls
            .iter()
            .filter(|c| c.function == "reconcile-node-images")
            .collect();
        for (i, c) in reconciles.iter().enumerate() {
            let kind = if reconciles.len() == 1 {
                "reconcile-node-images (only call)"
            } else if i == 0 {
                "reconcile-node-images (first call)"
            } else if i + 1 == reconciles.len() {
                "reconcile-node-images (last call, ready)"
            } else {
                "reconcile-node-images (poll while importing)"
            };
            let e = by_kind.entry(kind.to_string()).or_default();
            e.0.push(c.fuel as f64);
            e.1.push(c.wall_ms);
            e.2.push(c.host_calls as f64);
        }
        for c in s.calls.iter().filter(|c| c.function != "reconcile-node-images") {
            let e = by_kind.entry(c.function.clone()).or_default();
            e.0.push(c.fuel as f64);
            e.1.push(c.wall_ms);
            e.2.push(c.host_calls as f64);
        }
    }
    let mut counts: Vec<f64> = samples
        .iter()
        .map(|s| {
            s.calls
                .iter()
                .filter(|c| c.function == "reconcile-node-images")
                .count() as f64
        })
        .collect();
    stats("reconcile-node-images calls per release", &mut counts, "");
    for (kind, (mut fuel, mut wall, mut host)) in by_kind {
        stats(&format!("fuel: {kind}"), &mut fuel, "");
        stats(&format!("wall: {kind}"), &mut wall, "ms");
        stats(&format!("host calls: {kind}"), &mut host, "");
    }
}

async fn run() -> anyhow::Result<()> {
    let reports = Reports::default();
    tracing_subscriber::registry()
        .with(reports.clone())
        .with(
            tracing_subscriber::filter::Targets::new()
                .with_target("stackhost::controller::plugins", tracing::Level::DEBUG),
        )
        .try_init()?;
    let samples: usize = std::env::var("STACKHOST_BENCH_SAMPLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    println!("load average before: {}", loadavg());
    let os = OpenStack::start(&[]);
    println!("Keystone + Glance started in {:.1} s", os.startup.as_secs_f64());
    let server = ImageServer::start();
    let url = server.qcow2("node.qcow2", "64M");
    let size = std::fs::metadata(server.path("node.qcow2"))?.len();
    println!("node image: qcow2, 64 MiB virtual, {size} bytes, web-download from {url}");

    let mut cold = Vec::new();
    let mut last = None;
    for i in 0..samples {
        let images = [
            Image {
                name: unique("bench-control-plane"),
                url: url.clone(),
            },
            Image {
                name: unique("bench-worker"),
                url: url.clone(),
            },
        ];
        let s = sample(&os, &images, &reports).await?;
        println!(
            "cold sample {}: release ready in {:.2} s ({} plugin calls)",
            i + 1,
            s.release.as_secs_f64(),
            s.calls.len()
        );
        cold.push(s);
        last = Some(images);
    }
    let mut warm = Vec::new();
    if let Some(images) = last {
        for i in 0..samples {
            let s = sample(&os, &images, &reports).await?;
            println!(
                "warm sample {}: release ready in {:.2} s",
                i + 1,
                s.release.as_secs_f64()
            );
            warm.push(s);
        }
    }
    report(
        "cold: two new node images created and imported into Glance",
        &cold,
    );
    report(
        "warm: the images already in Glance, plugin state empty (found by name and tags)",
        &warm,
    );
    println!("\nload average after: {}", loadavg());
    os.stop();
    Ok(())
}

fn main() -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run())
}
