//! 100 ClusterStacks (one release each, in their own namespaces) from apply to Ready in the sandbox:
//! wall time and the controller's peak RSS, measured on a real `stackhost run` process against the API
//! emulator, with the sample plugin and release from the shipped OCI layout.
//!
//! The same run is repeated with the provider step done the upstream way (`--provider-step object`: a
//! provider object is created in the API and a separate watcher, standing in for the provider
//! operator, marks it ready), and the ratio of the two is printed.
//!
//! `cargo bench -p stackhost --bench controller` (env STACKHOST_BENCH_STACKS to change the count).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use stackhost::api::ClusterStackRelease;
use stackhost::sandbox::{install_crds, sample_objects, SAMPLE_PLUGIN, SAMPLE_RELEASES};

struct Outcome {
    wall: Duration,
    peak_rss_kib: u64,
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn controller(kubeconfig: &Path, cache: &Path, mode: &str) -> std::io::Result<Child> {
    let layout = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sandbox/sample");
    Command::new(env!("CARGO_BIN_EXE_stackhost"))
        .args([
            "run",
            "--leader-elect=false",
            "--bind",
            "127.0.0.1:0",
            "--concurrency",
            "8",
        ])
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--oci-layout")
        .arg(layout)
        .arg("--release-source")
        .arg(format!("oci://{SAMPLE_RELEASES}"))
        .arg("--cache-dir")
        .arg(cache)
        .args(["--retry-base", "200ms", "--provider-step", mode])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
}

/// Stands in for a provider operator: marks every provider object ready as soon as it appears.
async fn provider_operator(client: kube::Client) {
    let api: Api<ConfigMap> = Api::all(client.clone());
    let config = watcher::Config::default().labels("stackhost.clusterstack.x-k8s.io/provider-object=true");
    let mut events = watcher::watcher(api, config).boxed();
    while let Some(event) = events.next().await {
        let Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) = event else {
            continue;
        };
        if cm.data.as_ref().and_then(|d| d.get("ready")).map(String::as_str) == Some("true") {
            continue;
        }
        let (Some(ns), Some(name)) = (cm.metadata.namespace.clone(), cm.metadata.name.clone()) else {
            continue;
        };
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let patch = serde_json::json!({"data": {"ready": "true"}});
        let _ = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await;
    }
}

async fn run(mode: &str, stacks: usize) -> anyhow::Result<Outcome> {
    let cluster = kube_emulator::Cluster::start().await?;
    install_crds(&cluster)?;
    let client = cluster.client()?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig)?;
    let operator = (mode == "object").then(|| tokio::spawn(provider_operator(client.clone())));
    let mut child = controller(&kubeconfig, &dir.path().join("cache"), mode)?;
    let pid = child.id();

    let started = Instant::now();
    for i in 0..stacks {
        let ns = format!("stack-{i}");
        let namespace: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &namespace)
            .await?;
        let (mut pp, cs) = sample_objects(&ns, SAMPLE_PLUGIN);
        pp.spec.config = Some(serde_json::json!({"pendingRounds": 0}));
        stackhost::sandbox::create(&client, &ns, &pp).await?;
        stackhost::sandbox::create(&client, &ns, &cs).await?;
    }
    let releases: Api<ClusterStackRelease> = Api::all(client.clone());
    let deadline = started + Duration::from_secs(600);
    loop {
        let list = releases.list(&ListParams::default()).await?;
        let ready = list
            .items
            .iter()
            .filter(|r| r.status.as_ref().is_some_and(|s| s.ready))
            .count();
        if ready == stacks {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{mode}: only {ready} of {stacks} releases ready after 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wall = started.elapsed();
    let peak_rss_kib = peak_rss_kib(pid);
    let _ = child.kill();
    let _ = child.wait();
    if let Some(op) = operator {
        op.abort();
    }
    cluster.shutdown().await?;
    Ok(Outcome { wall, peak_rss_kib })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this with no filter: keep that short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let stacks: usize = std::env::var("STACKHOST_BENCH_STACKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if quick { 3 } else { 100 });
    let plugin = run("plugin", stacks).await?;
    let object = run("object", stacks).await?;
    println!(
        "controller/{stacks} ClusterStacks to Ready, plugin step in process: {:.2} s, peak RSS {:.1} MiB",
        plugin.wall.as_secs_f64(),
        plugin.peak_rss_kib as f64 / 1024.0
    );
    println!(
        "controller/{stacks} ClusterStacks to Ready, upstream-style provider object: {:.2} s, peak RSS {:.1} MiB",
        object.wall.as_secs_f64(),
        object.peak_rss_kib as f64 / 1024.0
    );
    println!(
        "controller/ratio upstream-style / plugin: {:.2}x wall time",
        object.wall.as_secs_f64() / plugin.wall.as_secs_f64()
    );
    Ok(())
}
