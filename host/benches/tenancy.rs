//! The bounded hostile load test (issue 17): 1,000 ClusterStacks across 50 namespaces, one of them hostile,
//! on a real `stackhost run` process against the API emulator, with a real `docker-registry`, real Helm and
//! the plugins built from plugins/.
//!
//! Run A creates the 49 healthy namespaces alone (20 ClusterStacks each, each its own release, the docker
//! plugin with `pendingRounds: 0`) and measures the wall time until all their releases are Ready. Run B
//! first creates the hostile namespace, whose 20 ClusterStacks cycle through: a source that trickles one
//! byte per 100 ms, a plugin that floods the log until its deadline, a template that loops for hours, a
//! chart that renders 200,000 ConfigMaps, and chart archives that expand to 1 GiB in one file, to 120 MiB in
//! 4 MiB files, or to 20,000 entries. Then it creates the same 49 healthy namespaces and measures the same
//! wall time. It prints both, their ratio against the 2x of issue 17, the controller's peak RSS, the render
//! children's peak RSS, the controller's log volume and how the hostile releases ended.
//!
//! The controller runs with the production defaults (`--concurrency 4`, `--retry-base 5s`,
//! `--render-timeout 30s`, `--release-download-timeout 5m`, JSON logs at `info`).
//!
//! `cargo bench -p stackhost --bench tenancy -- --bench`; env STACKHOST_BENCH_STACKS (total, 1000),
//! STACKHOST_BENCH_NAMESPACES (50, one of them hostile) and STACKHOST_BENCH_FLOOD_DEADLINE (the hostile
//! plugin's `spec.limits.deadline`, 1m). Without `--bench` (`cargo test --benches`) it runs 3 namespaces
//! of 2 stacks.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use stackhost::api::{ClusterStack, ClusterStackRelease, ProviderPlugin};
use stackhost::oci::registry::{Registry, RegistryConfig};
use support::trickle::Trickle;
use support::TestRegistry;

const FIXTURE: &str = "docker-ferrol-1-32-v1";
const HOSTILE_NS: &str = "hostile";
/// How often the wait for the healthy releases says how far it got (on stderr).
const PROGRESS: Duration = Duration::from_secs(30);

/// What one ClusterStack of the hostile namespace does; its stacks cycle through these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Hostile {
    SlowSource,
    LogFlood,
    LoopingTemplate,
    ManyObjects,
    HugeFile,
    HugeArchive,
    ManyEntries,
}

const HOSTILE: [Hostile; 7] = [
    Hostile::SlowSource,
    Hostile::LogFlood,
    Hostile::LoopingTemplate,
    Hostile::ManyObjects,
    Hostile::HugeFile,
    Hostile::HugeArchive,
    Hostile::ManyEntries,
];

impl Hostile {
    fn describe(self) -> &'static str {
        match self {
            Hostile::SlowSource => "slow source (1 byte per 100 ms)",
            Hostile::LogFlood => "log-flooding plugin",
            Hostile::LoopingTemplate => "template looping 10^12 times",
            Hostile::ManyObjects => "chart rendering 200,000 ConfigMaps",
            Hostile::HugeFile => "archive with one 1 GiB file",
            Hostile::HugeArchive => "archive expanding to 120 MiB",
            Hostile::ManyEntries => "archive with 20,000 entries",
        }
    }
}

/// A template that loops for hours without output or much memory (10^12 iterations).
const LOOP: &str = "{{- range until 10000 }}{{- range until 10000 }}{{- range until 10000 }}{{- end }}{{- end }}{{- end }}\n";

/// 200,000 ConfigMaps: 40 times the object cap of one render.
const MANY_OBJECTS: &str = "{{- range $i := until 200000 }}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: flood-{{ $i }}\ndata: {k: v}\n{{- end }}\n";

struct Setup {
    registry: TestRegistry,
    trickle: Trickle,
    per_namespace: usize,
    flood_deadline: String,
}

impl Setup {
    fn healthy_repository(&self) -> String {
        format!("{}/kaas/cluster-stacks", self.registry.addr)
    }

    fn hostile_repository(&self) -> String {
        format!("{}/hostile/cluster-stacks", self.registry.addr)
    }

    fn plugin(&self, name: &str) -> String {
        format!("{}/plugins/{name}:1", self.registry.addr)
    }
}

/// Pushes the plugins, one renamed release per stack of a namespace (`ferrol0`, `ferrol1`, ...) and the
/// hostile namespace's releases.
async fn setup(per_namespace: usize, flood_deadline: String) -> anyhow::Result<Setup> {
    let registry = TestRegistry::start().await;
    let client = Registry::new(RegistryConfig::default());
    for name in ["docker", "misbehaving"] {
        let reference = client.parse(&format!("{}/plugins/{name}:1", registry.addr))?;
        let bytes = common::plugin_bytes(name);
        stackhost::oci::fetch::push_plugin(
            &client,
            &format!("{name}.wasm"),
            &bytes,
            &reference,
            BTreeMap::new(),
        )
        .await?;
    }
    let setup = Setup {
        registry,
        trickle: Trickle::start(),
        per_namespace,
        flood_deadline,
    };
    let work = tempfile::tempdir()?;
    for k in 0..per_namespace {
        let stack = format!("ferrol{k}");
        let dir = support::release::renamed(&work.path().join("healthy"), FIXTURE, "ferrol", &stack)?;
        let tag = dir.file_name().unwrap_or_default().to_string_lossy().into_owned();
        let reference = client.parse(&format!("{}:{tag}", setup.healthy_repository()))?;
        stackhost::oci::release::push(&client, &dir, &reference).await?;

        let kind = HOSTILE[k % HOSTILE.len()];
        if kind == Hostile::SlowSource {
            continue;
        }
        let dir = support::release::renamed(&work.path().join("hostile"), FIXTURE, "ferrol", &stack)?;
        match kind {
            Hostile::SlowSource | Hostile::LogFlood => {}
            Hostile::LoopingTemplate => support::release::add_template(&dir, "loop.yaml", LOOP)?,
            Hostile::ManyObjects => support::release::add_template(&dir, "many.yaml", MANY_OBJECTS)?,
            Hostile::HugeFile => support::release::add_zero_files(&dir, 1, 1 << 30)?,
            Hostile::HugeArchive => support::release::add_zero_files(&dir, 30, 4 << 20)?,
            Hostile::ManyEntries => support::release::add_zero_files(&dir, 20_000, 0)?,
        }
        let reference = client.parse(&format!("{}:{tag}", setup.hostile_repository()))?;
        stackhost::oci::release::push(&client, &dir, &reference).await?;
    }
    Ok(setup)
}

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// The running children of `parent` (the controller's render processes).
fn children(parent: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let ppid = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            found.push(pid);
        }
    }
    found
}

/// The `stackhost run` process; on drop it is stopped, then killed, then its render processes: a render
/// child outlives a killed controller (a looping template would go on for hours and skew the next run).
struct Controller(Child);

impl Controller {
    /// `stackhost run`, its /metrics on `bind`.
    fn start(kubeconfig: &Path, cache: &Path, log: &Path, bind: &str) -> std::io::Result<Self> {
        Command::new(env!("CARGO_BIN_EXE_stackhost"))
            .args([
                "--log-format",
                "json",
                "run",
                "--leader-elect=false",
                "--bind",
                bind,
            ])
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(cache)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?)
            .spawn()
            .map(Controller)
    }
}

fn signal(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([signal, &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

impl Drop for Controller {
    fn drop(&mut self) {
        // Stopped first, so that it starts no render between the listing and the kill.
        signal("-STOP", self.0.id());
        let renders = children(self.0.id());
        let _ = self.0.kill();
        let _ = self.0.wait();
        for pid in renders {
            signal("-KILL", pid);
        }
    }
}

async fn create_namespace(client: &kube::Client, ns: &str) -> anyhow::Result<()> {
    let namespace: Namespace = serde_json::from_value(json!({"metadata": {"name": ns}}))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await?;
    Ok(())
}

fn provider_plugin(
    ns: &str,
    image: &str,
    config: serde_json::Value,
    limits: serde_json::Value,
) -> ProviderPlugin {
    serde_json::from_value(json!({
        "apiVersion": "clusterstack.x-k8s.io/v1alpha1",
        "kind": "ProviderPlugin",
        "metadata": {"name": "docker", "namespace": ns},
        "spec": {
            "image": image,
            "verification": {"allowUnsigned": true},
            "insecureRegistry": true,
            "limits": limits,
            "config": config
        }
    }))
    .expect("valid ProviderPlugin")
}

fn cluster_stack(ns: &str, stack: &str, repository: &str) -> ClusterStack {
    serde_json::from_value(json!({
        "apiVersion": "clusterstack.x-k8s.io/v1alpha1",
        "kind": "ClusterStack",
        "metadata": {"name": stack, "namespace": ns},
        "spec": {
            "provider": "docker", "name": stack, "kubernetesVersion": "1.32",
            "autoSubscribe": false, "versions": ["v1"],
            "source": {"oci": {"repository": repository, "insecure": true}}
        }
    }))
    .expect("valid ClusterStack")
}

async fn create_healthy(client: &kube::Client, setup: &Setup, ns: &str) -> anyhow::Result<()> {
    create_namespace(client, ns).await?;
    let pp = provider_plugin(
        ns,
        &setup.plugin("docker"),
        json!({"pendingRounds": 0}),
        json!({}),
    );
    stackhost::sandbox::create(client, ns, &pp).await?;
    for k in 0..setup.per_namespace {
        let cs = cluster_stack(ns, &format!("ferrol{k}"), &setup.healthy_repository());
        stackhost::sandbox::create(client, ns, &cs).await?;
    }
    Ok(())
}

async fn create_hostile(client: &kube::Client, setup: &Setup) -> anyhow::Result<()> {
    create_namespace(client, HOSTILE_NS).await?;
    // Loads and validates fine; then every call floods the log until its fuel or deadline ends it.
    let pp = provider_plugin(
        HOSTILE_NS,
        &setup.plugin("misbehaving"),
        json!({"behaviour": "later:log-flood"}),
        json!({"fuel": 10_000_000_000_000u64, "deadline": setup.flood_deadline}),
    );
    stackhost::sandbox::create(client, HOSTILE_NS, &pp).await?;
    for k in 0..setup.per_namespace {
        let repository = match HOSTILE[k % HOSTILE.len()] {
            // Each its own repository: one repository would be one shared download.
            Hostile::SlowSource => format!("{}/hostile/stacks-{k}", setup.trickle.addr),
            _ => setup.hostile_repository(),
        };
        let cs = cluster_stack(HOSTILE_NS, &format!("ferrol{k}"), &repository);
        stackhost::sandbox::create(client, HOSTILE_NS, &cs).await?;
    }
    Ok(())
}

/// The conditions of a release that are not True, as `Type=Reason`.
fn not_ok(r: &ClusterStackRelease) -> Vec<String> {
    r.status
        .iter()
        .flat_map(|s| s.conditions.iter())
        .filter(|c| c.status != stackhost::api::condition::ConditionStatus::True)
        .map(|c| format!("{}={}", c.type_, c.reason.as_deref().unwrap_or("")))
        .collect()
}

/// The not-True conditions of one release as `Type=Reason`: every one seen, and the last ones.
#[derive(Default)]
struct Seen {
    all: BTreeSet<String>,
    last: Vec<String>,
}

struct Outcome {
    /// Wall time until all healthy releases were Ready, or the time given up after.
    wall: Duration,
    ready: usize,
    healthy: usize,
    peak_rss_kib: u64,
    render_peak_kib: u64,
    log_bytes: u64,
    plugin_log_lines: usize,
    cut_notes: usize,
    /// The log messages that took the most bytes: (bytes, lines, message).
    top_messages: Vec<(usize, usize, String)>,
    /// Seconds spent, from the controller's /metrics: (what, seconds).
    busy: Vec<(String, f64)>,
    /// Per hostile stack (by its number): the conditions its release went through.
    hostile: BTreeMap<usize, Seen>,
}

async fn run(setup: &Setup, namespaces: usize, hostile: bool, limit: Duration) -> anyhow::Result<Outcome> {
    let cluster = kube_emulator::Cluster::start().await?;
    stackhost::sandbox::install_crds(&cluster)?;
    let client = cluster.client()?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig)?;
    let log = dir.path().join("controller.log");
    let bind = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string();
    let controller = Controller::start(&kubeconfig, &dir.path().join("cache"), &log, &bind)?;
    let pid = controller.0.id();
    let releases: Api<ClusterStackRelease> = Api::all(client.clone());
    let mut seen: BTreeMap<usize, Seen> = BTreeMap::new();
    let mut observe = |list: &[ClusterStackRelease]| {
        for r in list
            .iter()
            .filter(|r| r.metadata.namespace.as_deref() == Some(HOSTILE_NS))
        {
            let Some(k) = r
                .metadata
                .name
                .as_deref()
                .and_then(|n| n.strip_prefix("docker-ferrol"))
                .and_then(|n| n.split('-').next())
                .and_then(|k| k.parse().ok())
            else {
                continue;
            };
            let now = not_ok(r);
            let entry = seen.entry(k).or_default();
            entry.all.extend(now.iter().cloned());
            entry.last = now;
        }
    };

    if hostile {
        create_hostile(&client, setup).await?;
        // Let the hostile namespace get going: every release reconciled at least once (or a minute).
        let until = Instant::now() + Duration::from_secs(60);
        while Instant::now() < until {
            let list = releases.list(&ListParams::default()).await?.items;
            observe(&list);
            if list.len() == setup.per_namespace && list.iter().all(|r| !not_ok(r).is_empty()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    let healthy_namespaces = namespaces - 1;
    let healthy = healthy_namespaces * setup.per_namespace;
    let started = Instant::now();
    for t in 0..healthy_namespaces {
        create_healthy(&client, setup, &format!("team-{t}")).await?;
    }
    let mut render_peak_kib = 0;
    let mut next_progress = PROGRESS;
    let ready = loop {
        let list = releases.list(&ListParams::default()).await?.items;
        observe(&list);
        for render in children(pid) {
            render_peak_kib = render_peak_kib.max(status_kib(render, "VmHWM:"));
        }
        let ready = list
            .iter()
            .filter(|r| r.metadata.namespace.as_deref() != Some(HOSTILE_NS))
            .filter(|r| r.status.as_ref().is_some_and(|s| s.ready))
            .count();
        if ready == healthy || started.elapsed() > limit {
            break ready;
        }
        if started.elapsed() >= next_progress {
            next_progress += PROGRESS;
            eprintln!(
                "tenancy: {:.0} s: {ready} of {healthy} healthy Ready, {} releases in all; not Ready: {:?}; \
                 {} renders running; load average {}",
                started.elapsed().as_secs_f64(),
                list.len(),
                waiting(&list),
                children(pid).len(),
                load_average()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let wall = started.elapsed();
    let peak_rss_kib = status_kib(pid, "VmHWM:");
    let metrics = reqwest::get(format!("http://{bind}/metrics"))
        .await?
        .text()
        .await?;
    drop(controller);
    cluster.shutdown().await?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    Ok(Outcome {
        wall,
        ready,
        healthy,
        peak_rss_kib,
        render_peak_kib,
        log_bytes: text.len() as u64,
        plugin_log_lines: text
            .lines()
            .filter(|l| l.contains(r#""target":"plugin""#))
            .count(),
        cut_notes: text.lines().filter(|l| l.contains("were dropped")).count(),
        top_messages: top_messages(&text),
        busy: busy_seconds(&metrics),
        hostile: seen,
    })
}

/// From /metrics: the seconds each controller spent in reconciles, and the seconds of plugin calls of the
/// hostile namespace and of all others.
fn busy_seconds(metrics: &str) -> Vec<(String, f64)> {
    let mut busy: BTreeMap<String, f64> = BTreeMap::new();
    for line in metrics.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let label = |key: &str| {
            name.split_once(&format!("{key}=\""))
                .and_then(|(_, rest)| rest.split('"').next())
                .unwrap_or_default()
                .to_string()
        };
        if name.starts_with("stackhost_reconcile_duration_seconds_sum") {
            *busy
                .entry(format!("{} reconciles", label("controller")))
                .or_default() += value;
        } else if name.starts_with("stackhost_plugin_call_duration_seconds_sum") {
            let whose = if label("plugin").starts_with(&format!("{HOSTILE_NS}/")) {
                "hostile"
            } else {
                "healthy"
            };
            *busy.entry(format!("{whose} plugin calls")).or_default() += value;
        }
    }
    busy.into_iter().collect()
}

/// Why the healthy releases that are not Ready are not: counts by their Ready reason, `no status` for
/// those not reconciled yet (waiting for a worker).
fn waiting(list: &[ClusterStackRelease]) -> BTreeMap<String, usize> {
    let mut waiting: BTreeMap<String, usize> = BTreeMap::new();
    for r in list
        .iter()
        .filter(|r| r.metadata.namespace.as_deref() != Some(HOSTILE_NS))
        .filter(|r| !r.status.as_ref().is_some_and(|s| s.ready))
    {
        let reason = r
            .status
            .as_ref()
            .and_then(|s| stackhost::api::condition::find(&s.conditions, "Ready"))
            .and_then(|c| c.reason.clone())
            .unwrap_or_else(|| "no status".into());
        *waiting.entry(reason).or_default() += 1;
    }
    waiting
}

/// The three messages of a JSON log that take the most bytes (a message is cut at 60 characters).
fn top_messages(log: &str) -> Vec<(usize, usize, String)> {
    let mut by_message: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    for line in log.lines() {
        let message = serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .and_then(|v| {
                v["fields"]["message"]
                    .as_str()
                    .map(|m| m.chars().take(60).collect())
            })
            .unwrap_or_else(|| "(not JSON)".to_string());
        let entry = by_message.entry(message).or_default();
        entry.0 += line.len() + 1;
        entry.1 += 1;
    }
    let mut top: Vec<(usize, usize, String)> = by_message
        .into_iter()
        .map(|(message, (bytes, lines))| (bytes, lines, message))
        .collect();
    top.sort_by(|a, b| b.cmp(a));
    top.truncate(3);
    top
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn report(name: &str, o: &Outcome) {
    let done = if o.ready == o.healthy {
        format!(
            "all {} healthy releases Ready in {:.1} s",
            o.healthy,
            o.wall.as_secs_f64()
        )
    } else {
        format!(
            "only {} of {} healthy releases Ready after {:.1} s (gave up)",
            o.ready,
            o.healthy,
            o.wall.as_secs_f64()
        )
    };
    println!(
        "tenancy/{name}: {done}; controller peak RSS {:.1} MiB, render child peak RSS {:.1} MiB (sampled); \
         controller log {:.1} KiB ({} plugin lines, {} per-call cut notes); load average {}",
        mib(o.peak_rss_kib),
        mib(o.render_peak_kib),
        o.log_bytes as f64 / 1024.0,
        o.plugin_log_lines,
        o.cut_notes,
        load_average()
    );
    let busy: Vec<String> = o
        .busy
        .iter()
        .map(|(what, s)| format!("{what} {s:.0} s"))
        .collect();
    println!("tenancy/{name}: time spent (from /metrics): {}", busy.join(", "));
    for (bytes, lines, message) in &o.top_messages {
        println!(
            "tenancy/{name}: log {:.1} KiB in {lines} lines: {message:?}",
            *bytes as f64 / 1024.0
        );
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this with no filter: keep that short.
    let quick = !std::env::args().any(|a| a == "--bench");
    let var = |name: &str, default: usize| -> usize {
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let namespaces = var("STACKHOST_BENCH_NAMESPACES", if quick { 3 } else { 50 }).max(2);
    let stacks = var("STACKHOST_BENCH_STACKS", if quick { 6 } else { 1000 });
    let per_namespace = (stacks / namespaces).max(1);
    let flood_deadline = std::env::var("STACKHOST_BENCH_FLOOD_DEADLINE").unwrap_or_else(|_| "1m".into());
    let setup = setup(per_namespace, flood_deadline.clone()).await?;
    println!(
        "tenancy: {namespaces} namespaces x {per_namespace} ClusterStacks, one namespace hostile \
         (plugin deadline {flood_deadline}); load average before: {}",
        load_average()
    );

    let alone = run(&setup, namespaces, false, Duration::from_secs(3600)).await?;
    report("without the hostile namespace", &alone);
    anyhow::ensure!(
        alone.ready == alone.healthy,
        "the healthy namespaces alone did not get Ready"
    );
    // Measure up to 4x (and at least two minutes more): enough to see whether 2x holds.
    let limit = alone.wall * 4 + Duration::from_secs(120);
    let with = run(&setup, namespaces, true, limit).await?;
    report("with the hostile namespace", &with);
    let ratio = with.wall.as_secs_f64() / alone.wall.as_secs_f64();
    println!(
        "tenancy/ratio with / without the hostile namespace: {}{ratio:.2}x ({} the 2x of issue 17); \
         load average after: {}",
        if with.ready == with.healthy { "" } else { ">" },
        if with.ready == with.healthy && ratio <= 2.0 {
            "within"
        } else {
            "NOT within"
        },
        load_average()
    );
    let mut by_kind: BTreeMap<Hostile, Vec<&Seen>> = BTreeMap::new();
    for (k, states) in &with.hostile {
        by_kind
            .entry(HOSTILE[k % HOSTILE.len()])
            .or_default()
            .push(states);
    }
    for (kind, states) in by_kind {
        let mut seen = BTreeSet::new();
        let mut last: BTreeMap<String, usize> = BTreeMap::new();
        for one in &states {
            seen.extend(one.all.iter().cloned());
            *last.entry(one.last.join(" ")).or_default() += 1;
        }
        let last: Vec<String> = last.into_iter().map(|(s, n)| format!("{n}x [{s}]")).collect();
        println!(
            "tenancy/hostile {} ({} stacks): ended {}; seen {}",
            kind.describe(),
            states.len(),
            last.join(", "),
            seen.into_iter().collect::<Vec<_>>().join(" ")
        );
    }
    Ok(())
}
