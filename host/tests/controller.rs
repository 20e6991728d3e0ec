//! The controllers end to end, against the API emulator (with the real Cluster API CRDs), the real
//! `docker-registry` and real Helm: ClusterStack -> ClusterStackReleases -> plugin steps -> ClusterClass
//! applied; autoSubscribe, pinning, in-use protection, deletion, a trapping plugin replaced by a fixed
//! digest, an unreachable registry, and a controller killed in the middle of a reconcile.

mod common;
mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use stackhost::api::{ClusterStack, ClusterStackRelease, ProviderPlugin};
use stackhost::controller::ControllerArgs;
use stackhost::oci::registry::{Registry, RegistryConfig};
use stackhost::sandbox::{wait_for, wait_release_condition, wait_release_ready, Sandbox};
use support::proxy::{Mode, Proxy};
use support::trickle::Trickle;
use support::TestRegistry;

const NS: &str = "default";
const WAIT: Duration = Duration::from_secs(60);

type TestResult = anyhow::Result<()>;

fn logs() {
    // RUST_LOG=stackhost=debug shows the controllers' logs next to a failing test.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn args(cache: &Path) -> ControllerArgs {
    logs();
    ControllerArgs {
        cache_dir: Some(cache.to_path_buf()),
        auto_subscribe_interval: Duration::from_secs(2),
        plugin_refresh_interval: Duration::from_millis(500),
        retry_base: Duration::from_millis(200),
        retry_max: Duration::from_secs(2),
        // Renders run in child processes of the stackhost binary (the test binary is not one).
        render_program: Some(env!("CARGO_BIN_EXE_stackhost").into()),
        ..ControllerArgs::default()
    }
}

fn registry_client() -> Registry {
    Registry::new(RegistryConfig::default())
}

async fn push_release(registry: &Registry, addr: &str, tag: &str) -> TestResult {
    let r = registry.parse(&format!("{addr}/kaas/cluster-stacks:{tag}"))?;
    stackhost::oci::release::push(registry, &support::release::fixture(tag), &r).await?;
    Ok(())
}

async fn push_plugin(registry: &Registry, reference: &str, name: &str) -> anyhow::Result<String> {
    let r = registry.parse(reference)?;
    let bytes = common::plugin_bytes(name);
    Ok(
        stackhost::oci::fetch::push_plugin(registry, &format!("{name}.wasm"), &bytes, &r, BTreeMap::new())
            .await?,
    )
}

fn provider_plugin(image: &str, config: serde_json::Value) -> ProviderPlugin {
    serde_json::from_value(json!({
        "apiVersion": "clusterstack.x-k8s.io/v1alpha1",
        "kind": "ProviderPlugin",
        "metadata": {"name": "docker", "namespace": NS},
        "spec": {
            "image": image,
            "verification": {"allowUnsigned": true},
            "insecureRegistry": true,
            "limits": {"fuel": 200_000_000u64, "deadline": "5s"},
            "config": config
        }
    }))
    .expect("valid ProviderPlugin")
}

fn cluster_stack(repository: &str, auto_subscribe: bool, versions: &[&str]) -> ClusterStack {
    serde_json::from_value(json!({
        "apiVersion": "clusterstack.x-k8s.io/v1alpha1",
        "kind": "ClusterStack",
        "metadata": {"name": "ferrol", "namespace": NS},
        "spec": {
            "provider": "docker", "name": "ferrol", "kubernetesVersion": "1.32",
            "autoSubscribe": auto_subscribe, "versions": versions,
            "source": {"oci": {"repository": repository, "insecure": true}}
        }
    }))
    .expect("valid ClusterStack")
}

fn gvk_api(client: &kube::Client, group: &str, version: &str, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), NS, &ar)
}

fn cluster_classes(client: &kube::Client) -> Api<DynamicObject> {
    gvk_api(client, "cluster.x-k8s.io", "v1beta2", "ClusterClass")
}

async fn names(api: &Api<DynamicObject>) -> anyhow::Result<Vec<String>> {
    let mut v: Vec<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    v.sort();
    Ok(v)
}

async fn release_names(client: &kube::Client) -> anyhow::Result<Vec<String>> {
    let api: Api<ClusterStackRelease> = Api::namespaced(client.clone(), NS);
    let mut v: Vec<String> = api
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    v.sort();
    Ok(v)
}

async fn wait_releases(client: &kube::Client, expected: &[&str]) -> TestResult {
    wait_for(&format!("releases {expected:?}"), WAIT, || async {
        let now = release_names(client).await.map_err(|e| e.to_string())?;
        if now == expected {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await
}

async fn wait_classes(client: &kube::Client, expected: &[&str]) -> TestResult {
    let api = cluster_classes(client);
    wait_for(&format!("ClusterClasses {expected:?}"), WAIT, || async {
        let now = names(&api).await.map_err(|e| e.to_string())?;
        if now == expected {
            Ok(())
        } else {
            Err(format!("{now:?}"))
        }
    })
    .await
}

async fn patch_spec(client: &kube::Client, spec: serde_json::Value) -> TestResult {
    let api: Api<ClusterStack> = Api::namespaced(client.clone(), NS);
    api.patch(
        "ferrol",
        &PatchParams::default(),
        &Patch::Merge(json!({ "spec": spec })),
    )
    .await?;
    Ok(())
}

/// A Cluster API Cluster (v1beta2) using `class`.
async fn create_cluster(client: &kube::Client, name: &str, class: &str) -> TestResult {
    let api = gvk_api(client, "cluster.x-k8s.io", "v1beta2", "Cluster");
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "Cluster",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"topology": {"classRef": {"name": class}, "version": "v1.32.2",
                              "controlPlane": {"replicas": 1}}}
    }))?;
    api.create(&Default::default(), &obj).await?;
    Ok(())
}

#[tokio::test]
async fn a_cluster_stack_follows_its_releases_from_apply_to_deletion() -> TestResult {
    let reg = TestRegistry::start().await;
    let registry = registry_client();
    let cache = tempfile::tempdir()?;
    push_release(&registry, &reg.addr, "docker-ferrol-1-32-v1").await?;
    let plugin_ref = format!("{}/plugins/docker:1", reg.addr);
    let digest = push_plugin(&registry, &plugin_ref, "docker").await?;

    // A signed plugin: the ProviderPlugin names the public key in a Secret.
    let key = stackhost::oci::signature::generate_key(b"")?;
    let key_file = cache.path().join("cosign.key");
    std::fs::write(&key_file, &key.private_pem)?;
    let signer = stackhost::oci::signature::SigningKey::from_file(&key_file, b"")?;
    stackhost::oci::signature::sign(&registry, &registry.parse(&plugin_ref)?, &digest, &signer).await?;

    let sandbox = Sandbox::start(args(cache.path())).await?;
    let client = sandbox.client.clone();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    secrets
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "plugin-keys"},
                "stringData": {"cosign.pub": key.public_pem}
            }))?,
        )
        .await?;
    let mut pp = provider_plugin(&plugin_ref, json!({"pendingRounds": 2}));
    pp.spec.verification =
        serde_json::from_value(json!({"keys": [{"name": "plugin-keys", "key": "cosign.pub"}]}))?;
    let pps: Api<ProviderPlugin> = Api::namespaced(client.clone(), NS);
    pps.create(&Default::default(), &pp).await?;
    let repository = format!("{}/kaas/cluster-stacks", reg.addr);
    let stacks: Api<ClusterStack> = Api::namespaced(client.clone(), NS);
    stacks
        .create(&Default::default(), &cluster_stack(&repository, true, &[]))
        .await?;

    // The newest release becomes ready: node images pending twice (the plugin's retry hint), then
    // rendered, patched and applied.
    let v1 = wait_release_ready(&client, NS, "docker-ferrol-1-32-v1", WAIT).await?;
    let status = v1.status.clone().unwrap_or_default();
    assert_eq!(status.kubernetes_version.as_deref(), Some("v1.32.2"));
    assert!(status
        .plugin_digest
        .as_deref()
        .is_some_and(|d| d.starts_with("sha256:")));
    let class = cluster_classes(&client).get("docker-ferrol-1-32-v1").await?;
    let annotations = class.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations
            .get("docker.clusterstack.x-k8s.io/node-images")
            .map(String::as_str),
        Some("docker.io/kindest/node:v1.32.2"),
        "{annotations:?}"
    );
    assert!(annotations
        .get("docker.clusterstack.x-k8s.io/patched-by")
        .is_some_and(|v| v.starts_with("docker-plugin")));
    let labels = class.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get("clusterstack.x-k8s.io/instance").map(String::as_str),
        Some("owned")
    );
    // The templates the class references were applied too, each listed as synced.
    for kind in ["DevClusterTemplate", "DevMachineTemplate"] {
        let listed = status.resources.iter().filter(|r| r.kind == kind).count();
        assert!(listed >= 1, "{kind} not applied: {:?}", status.resources);
    }
    let templates = gvk_api(
        &client,
        "infrastructure.cluster.x-k8s.io",
        "v1beta2",
        "DevClusterTemplate",
    );
    assert!(!names(&templates).await?.is_empty());

    // The plugin is verified by the key, and its call statistics and state are reported.
    let pp = wait_for("ProviderPlugin status with calls", WAIT, || async {
        let pp = pps.get("docker").await.map_err(|e| e.to_string())?;
        match &pp.status {
            Some(s) if s.calls.total >= 3 => Ok(pp),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    let pp_status = pp.status.unwrap_or_default();
    assert_eq!(
        pp_status.verified_by.as_deref(),
        Some("default/plugin-keys/cosign.pub")
    );
    assert!(
        pp_status
            .imports
            .iter()
            .any(|i| i.contains("clusterstack:provider/state")),
        "{:?}",
        pp_status.imports
    );
    let state = support::plugin_state(&client, NS, "docker").await?;
    assert_eq!(
        state.get("ready/docker-ferrol-1-32-v1").map(String::as_str),
        Some("docker.io/kindest/node:v1.32.2")
    );

    // The ClusterStack reports the release.
    let cs = wait_for("ClusterStack usable versions", WAIT, || async {
        let cs = stacks.get("ferrol").await.map_err(|e| e.to_string())?;
        match &cs.status {
            Some(s) if s.usable_versions == "v1" => Ok(cs),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    let cs_status = cs.status.unwrap_or_default();
    assert_eq!(cs_status.latest_release, "docker-ferrol-1-32-v1 | v1.32.2");
    assert!(
        stackhost::api::condition::is_true(&cs_status.conditions, "Ready"),
        "{:?}",
        cs_status.conditions
    );

    // autoSubscribe picks up a newer release pushed now; the old one is no longer needed.
    push_release(&registry, &reg.addr, "docker-ferrol-1-32-v2").await?;
    wait_release_ready(&client, NS, "docker-ferrol-1-32-v2", WAIT).await?;
    wait_releases(&client, &["docker-ferrol-1-32-v2"]).await?;
    wait_classes(&client, &["docker-ferrol-1-32-v2"]).await?;

    // Pin v1 and stop following: v1 comes back; v2 stays as the latest ready release (upstream keeps it
    // so that a stack never loses its last working class while a pinned one is prepared).
    patch_spec(&client, json!({"autoSubscribe": false, "versions": ["v1"]})).await?;
    wait_release_ready(&client, NS, "docker-ferrol-1-32-v1", WAIT).await?;
    wait_releases(&client, &["docker-ferrol-1-32-v1", "docker-ferrol-1-32-v2"]).await?;
    wait_classes(&client, &["docker-ferrol-1-32-v1", "docker-ferrol-1-32-v2"]).await?;
    let usable = wait_for("both versions usable", WAIT, || async {
        let cs = stacks.get("ferrol").await.map_err(|e| e.to_string())?;
        let usable = cs.status.map(|s| s.usable_versions).unwrap_or_default();
        if usable == "v1, v2" {
            Ok(usable)
        } else {
            Err(usable)
        }
    })
    .await?;
    assert_eq!(usable, "v1, v2");

    // A Cluster uses v1: following the channel again keeps v1 next to v2.
    create_cluster(&client, "workload", "docker-ferrol-1-32-v1").await?;
    patch_spec(&client, json!({"autoSubscribe": true, "versions": []})).await?;
    wait_release_ready(&client, NS, "docker-ferrol-1-32-v2", WAIT).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        release_names(&client).await?,
        ["docker-ferrol-1-32-v1", "docker-ferrol-1-32-v2"]
    );

    // Deleting the release in use waits, with a condition naming the reason.
    let releases: Api<ClusterStackRelease> = Api::namespaced(client.clone(), NS);
    releases
        .delete("docker-ferrol-1-32-v1", &DeleteParams::default())
        .await?;
    wait_release_condition(&client, NS, "docker-ferrol-1-32-v1", ("Ready", "InUse"), WAIT).await?;
    let blocked = releases.get("docker-ferrol-1-32-v1").await?;
    assert!(blocked.metadata.deletion_timestamp.is_some());
    assert!(cluster_classes(&client)
        .get_opt("docker-ferrol-1-32-v1")
        .await?
        .is_some());

    // Once the Cluster is gone, the release and what it applied go too.
    gvk_api(&client, "cluster.x-k8s.io", "v1beta2", "Cluster")
        .delete("workload", &DeleteParams::default())
        .await?;
    wait_releases(&client, &["docker-ferrol-1-32-v2"]).await?;
    wait_classes(&client, &["docker-ferrol-1-32-v2"]).await?;

    // Deleting the ClusterStack removes its releases and everything they applied.
    stacks.delete("ferrol", &DeleteParams::default()).await?;
    wait_releases(&client, &[]).await?;
    wait_classes(&client, &[]).await?;
    assert!(names(&templates).await?.is_empty());

    // Metrics were recorded for all three controllers and the plugin calls.
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &sandbox.registry)?;
    for needle in [
        "stackhost_reconciles_total{controller=\"clusterstack\"",
        "stackhost_reconciles_total{controller=\"clusterstackrelease\"",
        "stackhost_plugin_calls_total{plugin=\"default/docker\",function=\"reconcile-node-images\",outcome=\"ok\"}",
        "stackhost_plugin_fuel_total{plugin=\"default/docker\",function=\"patch-cluster-class\"}",
    ] {
        assert!(text.contains(needle), "{needle} missing in:\n{text}");
    }
    sandbox.shutdown().await
}

#[tokio::test]
async fn a_trapping_plugin_marks_the_release_and_a_fixed_digest_recovers_it() -> TestResult {
    let reg = TestRegistry::start().await;
    let registry = registry_client();
    let cache = tempfile::tempdir()?;
    push_release(&registry, &reg.addr, "docker-ferrol-1-32-v1").await?;
    let plugin_ref = format!("{}/plugins/docker:stable", reg.addr);
    // The published plugin traps in every call after loading.
    push_plugin(&registry, &plugin_ref, "misbehaving").await?;

    let sandbox = Sandbox::start(args(cache.path())).await?;
    let client = sandbox.client.clone();
    let pps: Api<ProviderPlugin> = Api::namespaced(client.clone(), NS);
    // misbehaving's info() asks for `http`: without a grant it loads (each http call gets `denied`),
    // and the ProviderPlugin says which capability is missing and where to grant it.
    pps.create(
        &Default::default(),
        &provider_plugin(&plugin_ref, json!({"behaviour": "later:trap"})),
    )
    .await?;
    let not_granted = wait_for(
        "the ProviderPlugin to report the capability it does not grant",
        WAIT,
        || async {
            let pp = pps.get("docker").await.map_err(|e| e.to_string())?;
            let status = pp.status.as_ref();
            let c = status
                .and_then(|s| stackhost::api::condition::find(&s.conditions, "CapabilitiesGranted").cloned());
            match c {
                Some(c) if c.reason.as_deref() == Some("CapabilityNotGranted") => Ok((c, status.cloned())),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    let message = not_granted.0.message.unwrap_or_default();
    assert!(
        message.contains("`http`") && message.contains("spec.capabilities.httpHosts"),
        "{message}"
    );
    let report = not_granted
        .1
        .and_then(|s| s.capabilities)
        .expect("capabilities on the status");
    assert_eq!(report.requested, ["log", "http", "state"]);
    assert_eq!(report.not_granted, ["http"]);
    let mut granted = pps.get("docker").await?;
    granted.spec.capabilities.http_hosts = vec!["127.0.0.1:9".into()];
    pps.replace("docker", &Default::default(), &granted).await?;
    let repository = format!("{}/kaas/cluster-stacks", reg.addr);
    let stacks: Api<ClusterStack> = Api::namespaced(client.clone(), NS);
    stacks
        .create(&Default::default(), &cluster_stack(&repository, false, &["v1"]))
        .await?;

    let releases: Api<ClusterStackRelease> = Api::namespaced(client.clone(), NS);
    let failed = wait_release_condition(
        &client,
        NS,
        "docker-ferrol-1-32-v1",
        ("ProviderClusterStackReleaseReady", "PluginFailed"),
        WAIT,
    )
    .await?;
    let message = failed.message.unwrap_or_default();
    assert!(
        message.contains("default/docker") && message.contains("trap"),
        "{message}"
    );
    // The controller keeps running and retrying: the other controllers still answer.
    assert!(
        !releases
            .get("docker-ferrol-1-32-v1")
            .await?
            .status
            .unwrap_or_default()
            .ready
    );

    // A fixed plugin is published under the same tag: the ProviderPlugin resolves the new digest,
    // swaps it in, and the release recovers without a restart.
    push_plugin(&registry, &plugin_ref, "docker").await?;
    let mut fixed = pps.get("docker").await?;
    fixed.spec.config = Some(json!({"pendingRounds": 0}));
    pps.replace("docker", &Default::default(), &fixed).await?;
    wait_release_ready(&client, NS, "docker-ferrol-1-32-v1", WAIT).await?;
    let pp = pps.get("docker").await?;
    let metrics_ctx = sandbox.context().cloned();
    assert!(metrics_ctx.is_some());
    assert!(pp.status.and_then(|s| s.resolved_digest).is_some());
    sandbox.shutdown().await
}

#[tokio::test]
async fn an_unreachable_registry_gives_a_condition_and_the_release_recovers() -> TestResult {
    let reg = TestRegistry::start().await;
    let registry = registry_client();
    let cache = tempfile::tempdir()?;
    push_release(&registry, &reg.addr, "docker-ferrol-1-32-v1").await?;
    let proxy = Proxy::start(&reg.addr).await;
    proxy.set_mode(Mode::Status(503, "UNAVAILABLE"));

    let sandbox = Sandbox::start(args(cache.path())).await?;
    let client = sandbox.client.clone();
    let mut cs = cluster_stack(&format!("{}/kaas/cluster-stacks", proxy.addr), false, &["v1"]);
    cs.spec.no_provider = true;
    let stacks: Api<ClusterStack> = Api::namespaced(client.clone(), NS);
    stacks.create(&Default::default(), &cs).await?;
    let c = wait_release_condition(
        &client,
        NS,
        "docker-ferrol-1-32-v1",
        ("ClusterStackReleaseDownloaded", "SourceUnavailable"),
        WAIT,
    )
    .await?;
    let message = c.message.unwrap_or_default();
    assert!(
        message.contains(&proxy.addr) && message.contains("503"),
        "{message}"
    );

    proxy.set_mode(Mode::Forward);
    let ready = wait_release_ready(&client, NS, "docker-ferrol-1-32-v1", WAIT).await?;
    // noProvider: no plugin step, no patch condition.
    let conditions = ready.status.unwrap_or_default().conditions;
    assert!(stackhost::api::condition::find(&conditions, "ClusterClassPatched").is_none());
    wait_classes(&client, &["docker-ferrol-1-32-v1"]).await?;
    sandbox.shutdown().await
}

#[tokio::test]
async fn a_controller_killed_mid_reconcile_resumes_without_duplicates_or_losses() -> TestResult {
    let reg = TestRegistry::start().await;
    let registry = registry_client();
    let cache = tempfile::tempdir()?;
    push_release(&registry, &reg.addr, "docker-ferrol-1-32-v1").await?;
    push_release(&registry, &reg.addr, "docker-ferrol-1-32-v2").await?;
    let plugin_ref = format!("{}/plugins/docker:1", reg.addr);
    push_plugin(&registry, &plugin_ref, "docker").await?;

    let mut sandbox = Sandbox::start(args(cache.path())).await?;
    let client = sandbox.client.clone();
    let pps: Api<ProviderPlugin> = Api::namespaced(client.clone(), NS);
    pps.create(
        &Default::default(),
        &provider_plugin(&plugin_ref, json!({"pendingRounds": 3})),
    )
    .await?;
    let stacks: Api<ClusterStack> = Api::namespaced(client.clone(), NS);
    stacks
        .create(
            &Default::default(),
            &cluster_stack(&format!("{}/kaas/cluster-stacks", reg.addr), false, &["v1", "v2"]),
        )
        .await?;

    // Kill the controllers while the node images are still pending (the plugin's progress is in its
    // state, persisted after every call).
    wait_release_condition(
        &client,
        NS,
        "docker-ferrol-1-32-v1",
        ("ProviderClusterStackReleaseReady", "NodeImagesPending"),
        WAIT,
    )
    .await?;
    sandbox.kill_controllers().await;
    let before = support::plugin_state(&client, NS, "docker").await?;
    assert!(before.keys().any(|k| k.starts_with("pull/")), "{before:?}");

    sandbox.start_controllers()?;
    wait_release_ready(&client, NS, "docker-ferrol-1-32-v1", WAIT).await?;
    wait_release_ready(&client, NS, "docker-ferrol-1-32-v2", WAIT).await?;
    wait_classes(&client, &["docker-ferrol-1-32-v1", "docker-ferrol-1-32-v2"]).await?;
    // Kill again right after a fresh start, then once more let it settle: each object exactly once.
    sandbox.kill_controllers().await;
    sandbox.start_controllers()?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for tag in ["docker-ferrol-1-32-v1", "docker-ferrol-1-32-v2"] {
        let r = wait_release_ready(&client, NS, tag, WAIT).await?;
        let resources = r.status.unwrap_or_default().resources;
        let mut keys: Vec<String> = resources
            .iter()
            .map(|r| format!("{}/{}/{}", r.kind, r.namespace, r.name))
            .collect();
        let total = keys.len();
        keys.sort();
        keys.dedup();
        assert_eq!(
            keys.len(),
            total,
            "duplicate entries in status.resources of {tag}"
        );
        assert!(total >= 5, "{tag}: {keys:?}");
    }
    assert_eq!(
        release_names(&client).await?,
        ["docker-ferrol-1-32-v1", "docker-ferrol-1-32-v2"]
    );
    let templates = gvk_api(
        &client,
        "infrastructure.cluster.x-k8s.io",
        "v1beta2",
        "DevMachineTemplate",
    );
    let before_count = names(&templates).await?.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(names(&templates).await?.len(), before_count);
    sandbox.shutdown().await
}

/// The objects a hostile cluster-class chart adds: cluster-admin for a tenant's ServiceAccount, a new
/// Namespace, and a Secret planted in kube-system.
const ESCALATION: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: escalate
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: cluster-admin}
subjects: [{kind: ServiceAccount, name: default, namespace: {{ .Release.Namespace }}}]
---
apiVersion: v1
kind: Namespace
metadata:
  name: hostile
---
apiVersion: v1
kind: Secret
metadata:
  name: planted
  namespace: kube-system
stringData: {token: stolen}
"#;

/// `tests/fixtures/releases/<tag>` copied under `root` as a `dir:` release source, its cluster-class chart
/// extended with [`ESCALATION`].
fn hostile_release(root: &Path, tag: &str) -> anyhow::Result<()> {
    release_with_template(root, tag, "escalate.yaml", ESCALATION)
}

/// Release `tag` of the fixtures copied under `root`, its cluster-class chart with one more template.
fn release_with_template(root: &Path, tag: &str, file: &str, text: &str) -> anyhow::Result<()> {
    let dest = root.join(tag);
    common::copy_tree(&support::release::fixture(tag), &dest);
    support::release::add_template(&dest, file, text)
}

async fn start_with_hostile_release(args: ControllerArgs, releases: &Path) -> anyhow::Result<Sandbox> {
    hostile_release(releases, "docker-ferrol-1-32-v1")?;
    let sandbox = Sandbox::start(ControllerArgs {
        release_source: Some(format!("dir:{}", releases.display())),
        ..args
    })
    .await?;
    create_stack_of_default_source(&sandbox.client, NS, &["v1"]).await?;
    Ok(sandbox)
}

#[tokio::test]
async fn a_release_cannot_write_outside_its_namespace_without_the_admins_leave() -> TestResult {
    let cache = tempfile::tempdir()?;
    let sandbox = start_with_hostile_release(args(cache.path()), &cache.path().join("releases")).await?;
    let client = sandbox.client.clone();
    let c = wait_release_condition(
        &client,
        NS,
        "docker-ferrol-1-32-v1",
        ("HelmChartApplied", "ObjectsRefused"),
        WAIT,
    )
    .await?;
    let message = c.message.unwrap_or_default();
    for refused in [
        "ClusterRoleBinding.rbac.authorization.k8s.io escalate (cluster-scoped)",
        "Namespace hostile (cluster-scoped)",
        "Secret kube-system/planted (namespace kube-system)",
    ] {
        assert!(message.contains(refused), "{refused} not named: {message}");
    }
    // Nothing of the render was applied, not even the objects in the release's own namespace.
    let bindings: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk(&GroupVersionKind::gvk(
            "rbac.authorization.k8s.io",
            "v1",
            "ClusterRoleBinding",
        )),
    );
    assert!(bindings.get_opt("escalate").await?.is_none());
    let planted: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    assert!(planted.get_opt("planted").await?.is_none());
    assert!(names(&cluster_classes(&client)).await?.is_empty());
    sandbox.shutdown().await
}

#[tokio::test]
async fn allowed_objects_apply_and_deletion_spares_what_the_release_does_not_own() -> TestResult {
    let cache = tempfile::tempdir()?;
    let allowed = ControllerArgs {
        release_allow_kinds: vec![
            "ClusterRoleBinding.rbac.authorization.k8s.io".into(),
            "Namespace".into(),
        ],
        release_allow_namespaces: vec!["kube-system".into()],
        ..args(cache.path())
    };
    let sandbox = start_with_hostile_release(allowed, &cache.path().join("releases")).await?;
    let client = sandbox.client.clone();
    let ready = wait_release_ready(&client, NS, "docker-ferrol-1-32-v1", WAIT).await?;
    let planted: Api<Secret> = Api::namespaced(client.clone(), "kube-system");
    let secret = planted.get("planted").await?;
    assert_eq!(
        secret
            .metadata
            .annotations
            .unwrap_or_default()
            .get("clusterstack.x-k8s.io/owner")
            .map(String::as_str),
        Some("default/docker-ferrol-1-32-v1")
    );

    // A forged status names an object the release never applied.
    let victims: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    victims
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": "victim-cm"}, "data": {"keep": "me"}}))?,
        )
        .await?;
    let mut resources = serde_json::to_value(&ready.status.unwrap_or_default().resources)?;
    resources.as_array_mut().expect("a list").push(json!({
        "group": "", "version": "v1", "kind": "ConfigMap", "namespace": "kube-system",
        "name": "victim-cm", "status": "synced"
    }));
    let releases: Api<ClusterStackRelease> = Api::namespaced(client.clone(), NS);
    releases
        .patch_status(
            "docker-ferrol-1-32-v1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"resources": resources}})),
        )
        .await?;

    let stacks: Api<ClusterStack> = Api::namespaced(client.clone(), NS);
    stacks.delete("ferrol", &DeleteParams::default()).await?;
    wait_releases(&client, &[]).await?;
    // What the release applied is gone; the object it never owned is not.
    assert!(planted.get_opt("planted").await?.is_none());
    assert!(names(&cluster_classes(&client)).await?.is_empty());
    let victim = victims.get("victim-cm").await?;
    assert_eq!(
        victim.data.unwrap_or_default().get("keep").map(String::as_str),
        Some("me")
    );
    sandbox.shutdown().await
}

#[tokio::test]
async fn a_private_release_fetched_for_one_namespace_is_not_served_to_another_without_credentials(
) -> TestResult {
    let reg = TestRegistry::start_with_basic_auth("team-a", "s3cret").await;
    let mut credentials = stackhost::oci::auth::Credentials::anonymous();
    credentials.insert(
        &reg.addr,
        stackhost::oci::auth::Credential::Basic {
            username: "team-a".into(),
            password: "s3cret".into(),
        },
    );
    let registry = Registry::new(RegistryConfig {
        credentials,
        ..RegistryConfig::default()
    });
    push_release(&registry, &reg.addr, "docker-ferrol-1-32-v1").await?;

    let cache = tempfile::tempdir()?;
    let sandbox = Sandbox::start(args(cache.path())).await?;
    let client = sandbox.client.clone();
    let repository = format!("{}/kaas/cluster-stacks", reg.addr);
    let stack = |ns: &str, secret: Option<&str>| -> anyhow::Result<ClusterStack> {
        let mut oci = json!({"repository": repository, "insecure": true});
        if let Some(secret) = secret {
            oci["credentialsSecretName"] = json!(secret);
        }
        Ok(serde_json::from_value(json!({
            "apiVersion": "clusterstack.x-k8s.io/v1alpha1", "kind": "ClusterStack",
            "metadata": {"name": "ferrol", "namespace": ns},
            "spec": {"provider": "docker", "name": "ferrol", "kubernetesVersion": "1.32",
                     "versions": ["v1"], "noProvider": true, "source": {"oci": oci}}
        }))?)
    };
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    for ns in ["team-a", "team-b", "team-c"] {
        namespaces
            .create(
                &Default::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await?;
    }
    let secret = |password: &str| -> anyhow::Result<Secret> {
        Ok(serde_json::from_value(json!({
            "metadata": {"name": "registry"},
            "stringData": {"username": "team-a", "password": password}
        }))?)
    };
    Api::<Secret>::namespaced(client.clone(), "team-a")
        .create(&Default::default(), &secret("s3cret")?)
        .await?;
    Api::<Secret>::namespaced(client.clone(), "team-c")
        .create(&Default::default(), &secret("guessed")?)
        .await?;

    // Team A's credentials fetch the release into the controller's cache.
    Api::<ClusterStack>::namespaced(client.clone(), "team-a")
        .create(&Default::default(), &stack("team-a", Some("registry"))?)
        .await?;
    wait_release_ready(&client, "team-a", "docker-ferrol-1-32-v1", WAIT).await?;

    // Team B names the same repository without credentials, team C with a wrong password: the registry
    // is asked for each, and refuses both.
    for (ns, secret) in [("team-b", None), ("team-c", Some("registry"))] {
        Api::<ClusterStack>::namespaced(client.clone(), ns)
            .create(&Default::default(), &stack(ns, secret)?)
            .await?;
        let c = wait_release_condition(
            &client,
            ns,
            "docker-ferrol-1-32-v1",
            ("ClusterStackReleaseDownloaded", "SourceUnavailable"),
            WAIT,
        )
        .await?;
        let message = c.message.unwrap_or_default();
        assert!(
            message.contains("401") || message.to_lowercase().contains("unauthorized"),
            "{ns}: {message}"
        );
        let release: Api<ClusterStackRelease> = Api::namespaced(client.clone(), ns);
        let status = release
            .get("docker-ferrol-1-32-v1")
            .await?
            .status
            .unwrap_or_default();
        assert!(!status.ready, "{ns} got team-a's private release");
    }
    let classes = |ns: &str| {
        Api::<DynamicObject>::namespaced_with(
            client.clone(),
            ns,
            &ApiResource::from_gvk(&GroupVersionKind::gvk(
                "cluster.x-k8s.io",
                "v1beta2",
                "ClusterClass",
            )),
        )
    };
    assert_eq!(names(&classes("team-a")).await?, ["docker-ferrol-1-32-v1"]);
    assert!(names(&classes("team-b")).await?.is_empty());
    assert!(names(&classes("team-c")).await?.is_empty());
    sandbox.shutdown().await
}

#[tokio::test]
async fn the_api_server_refuses_unbounded_cluster_stacks_with_the_fields_limit() -> TestResult {
    let cluster = kube_emulator::Cluster::start().await?;
    stackhost::sandbox::install_crds(&cluster)?;
    let stacks: Api<ClusterStack> = Api::namespaced(cluster.client()?, NS);
    let versions: Vec<String> = (1..=51).map(|v| format!("v{v}")).collect();
    let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
    let too_many = cluster_stack("registry.invalid/stacks", false, &versions);
    let err = stacks
        .create(&Default::default(), &too_many)
        .await
        .expect_err("51 versions");
    let text = err.to_string();
    assert!(
        text.contains("spec.versions") && text.contains("must have at most 50 items"),
        "{text}"
    );

    let mut long_name = cluster_stack("registry.invalid/stacks", false, &["v1"]);
    long_name.spec.name = "a".repeat(1 << 20);
    let err = stacks
        .create(&Default::default(), &long_name)
        .await
        .expect_err("1 MiB name");
    let text = err.to_string();
    assert!(
        text.contains("spec.name") && text.contains("may not be more than 63"),
        "{}",
        &text[..text.len().min(400)]
    );
    assert!(
        text.len() < 4096,
        "the error does not echo the whole value: {} bytes",
        text.len()
    );

    let fifty: Vec<String> = (1..=50).map(|v| format!("v{v}")).collect();
    let fifty: Vec<&str> = fifty.iter().map(String::as_str).collect();
    stacks
        .create(
            &Default::default(),
            &cluster_stack("registry.invalid/stacks", false, &fifty),
        )
        .await?;
    Ok(())
}

/// Creates namespace `ns` unless it exists.
async fn ensure_namespace(client: &kube::Client, ns: &str) -> TestResult {
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    if namespaces.get_opt(ns).await?.is_none() {
        namespaces
            .create(
                &Default::default(),
                &serde_json::from_value(json!({"metadata": {"name": ns}}))?,
            )
            .await?;
    }
    Ok(())
}

/// A noProvider ClusterStack `ferrol` in `ns` pinned to v1 of `registry`.
async fn create_stack_in(client: &kube::Client, ns: &str, registry: &str) -> TestResult {
    create_stack_from(client, ns, &format!("{registry}/kaas/cluster-stacks")).await
}

/// A noProvider ClusterStack `ferrol` in `ns` pinned to v1 of `repository`.
async fn create_stack_from(client: &kube::Client, ns: &str, repository: &str) -> TestResult {
    ensure_namespace(client, ns).await?;
    let mut cs = cluster_stack(repository, false, &["v1"]);
    cs.metadata.namespace = Some(ns.to_string());
    cs.spec.no_provider = true;
    Api::<ClusterStack>::namespaced(client.clone(), ns)
        .create(&Default::default(), &cs)
        .await?;
    Ok(())
}

#[tokio::test]
async fn slow_sources_do_not_stall_other_releases_and_end_at_their_deadline_or_deletion() -> TestResult {
    const TAG: &str = "docker-ferrol-1-32-v1";
    let reg = TestRegistry::start().await;
    push_release(&registry_client(), &reg.addr, TAG).await?;
    let slow = Trickle::start();
    let cache = tempfile::tempdir()?;
    // A deadline no test waits for: only cancellation ends these downloads.
    let mut sandbox = Sandbox::start(ControllerArgs {
        release_download_timeout: Duration::from_secs(3600),
        ..args(cache.path())
    })
    .await?;
    let client = sandbox.client.clone();
    let slow_namespaces: Vec<String> = (1..=5).map(|i| format!("slow-{i}")).collect();
    // Five repositories on one slow registry (one repository would be one shared download).
    for (i, ns) in slow_namespaces.iter().enumerate() {
        create_stack_from(&client, ns, &format!("{}/kaas/stacks-{i}", slow.addr)).await?;
    }
    // Four downloads from the slow registry run (its slots), the fifth waits its turn.
    wait_for("4 downloads from the slow registry", WAIT, || async {
        match slow.open() {
            4 => Ok(()),
            n => Err(format!("{n} running")),
        }
    })
    .await?;
    // Their releases say so: four downloading, one waiting for a slot of that registry.
    wait_for("4 releases downloading and 1 queued", WAIT, || async {
        let mut seen = Vec::new();
        for ns in &slow_namespaces {
            let r = Api::<ClusterStackRelease>::namespaced(client.clone(), ns)
                .get_opt(TAG)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no release yet")?;
            let conditions = r.status.unwrap_or_default().conditions;
            let c = stackhost::api::condition::find(&conditions, "ClusterStackReleaseDownloaded")
                .ok_or_else(|| format!("{ns}: no condition yet"))?;
            seen.push((
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default(),
            ));
        }
        let downloading = seen
            .iter()
            .filter(|(reason, message)| reason == "Downloading" && message.contains("at most 3600s"))
            .count();
        let queued = seen
            .iter()
            .filter(|(reason, message)| {
                reason == "DownloadQueued" && message.contains(&format!("4 downloads from {}", slow.addr))
            })
            .count();
        if (downloading, queued) == (4, 1) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await?;
    assert_eq!(slow.open(), 4);

    // The healthy stack is not held up by them.
    create_stack_in(&client, NS, &reg.addr).await?;
    wait_release_ready(&client, NS, TAG, WAIT).await?;

    // Deleting the slow stacks stops their downloads (long before the deadline) and the releases go.
    for ns in &slow_namespaces {
        Api::<ClusterStack>::namespaced(client.clone(), ns)
            .delete("ferrol", &DeleteParams::background())
            .await?;
    }
    for ns in &slow_namespaces {
        wait_for(&format!("{ns}/{TAG} deleted"), WAIT, || async {
            match Api::<ClusterStackRelease>::namespaced(client.clone(), ns)
                .get_opt(TAG)
                .await
            {
                Ok(None) => Ok(()),
                Ok(Some(r)) => Err(stackhost::sandbox::describe_release(&r)),
                Err(e) => Err(e.to_string()),
            }
        })
        .await?;
    }
    wait_for("no download from the slow registry", WAIT, || async {
        match slow.open() {
            0 => Ok(()),
            n => Err(format!("{n} running")),
        }
    })
    .await?;

    // With a short deadline, a slow download ends with a condition naming it.
    sandbox.stop_controllers().await;
    sandbox.args.release_download_timeout = Duration::from_secs(2);
    sandbox.start_controllers()?;
    create_stack_from(&client, "slow-again", &format!("{}/kaas/stacks-again", slow.addr)).await?;
    let c = wait_release_condition(
        &client,
        "slow-again",
        TAG,
        ("ClusterStackReleaseDownloaded", "DownloadTimedOut"),
        WAIT,
    )
    .await?;
    let message = c.message.unwrap_or_default();
    assert!(
        message.contains(&format!("OCI repository {}/kaas/stacks-again", slow.addr))
            && message.contains("did not finish within 2s (--release-download-timeout)"),
        "{message}"
    );
    sandbox.shutdown().await
}

/// A template that loops for hours without output or much memory (10^12 iterations).
const LOOP: &str = "{{- range until 10000 }}{{- range until 10000 }}{{- range until 10000 }}{{- end }}{{- end }}{{- end }}\n";

/// The render processes (`stackhost internal-render`) this test process has running.
fn render_processes() -> Vec<u32> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // pid (comm) state ppid ...
        let parent = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if parent == Some(me) && cmdline.split(|b| *b == 0).any(|a| a == b"internal-render") {
            found.push(pid);
        }
    }
    found
}

/// Waits until this test process has no render process left.
async fn wait_no_render_process(what: &str) -> TestResult {
    wait_for(what, WAIT, || async {
        match render_processes() {
            found if found.is_empty() => Ok(()),
            found => Err(format!("{found:?}")),
        }
    })
    .await
}

/// A noProvider ClusterStack `ferrol` in `ns` pinned to `versions` of the controllers' `--release-source`.
async fn create_stack_of_default_source(client: &kube::Client, ns: &str, versions: &[&str]) -> TestResult {
    let mut cs = cluster_stack("unused", false, versions);
    cs.metadata.namespace = Some(ns.to_string());
    cs.spec.source = None;
    cs.spec.no_provider = true;
    ensure_namespace(client, ns).await?;
    Api::<ClusterStack>::namespaced(client.clone(), ns)
        .create(&Default::default(), &cs)
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_looping_template_is_stopped_at_the_render_timeout_and_when_its_release_is_deleted() -> TestResult {
    const TAG: &str = "docker-ferrol-1-32-v1";
    let cache = tempfile::tempdir()?;
    let releases = cache.path().join("releases");
    release_with_template(&releases, TAG, "loop.yaml", LOOP)?;
    let mut sandbox = Sandbox::start(ControllerArgs {
        release_source: Some(format!("dir:{}", releases.display())),
        render_timeout: Duration::from_secs(2),
        ..args(cache.path())
    })
    .await?;
    let client = sandbox.client.clone();
    create_stack_of_default_source(&client, NS, &["v1"]).await?;
    let stacks: Api<ClusterStack> = Api::namespaced(client.clone(), NS);
    let c = wait_release_condition(&client, NS, TAG, ("HelmChartApplied", "RenderTimedOut"), WAIT).await?;
    let message = c.message.unwrap_or_default();
    assert!(
        message.contains("docker-ferrol-1-32-cluster-class-v1.tgz")
            && message.contains("did not finish within 2s (--render-timeout) and was stopped"),
        "{message}"
    );
    // Stopped renders leave no process behind (the controllers stop first: they retry the render).
    sandbox.stop_controllers().await;
    wait_no_render_process("the stopped render processes gone").await?;

    // With a timeout no test waits for, deleting the stack stops the render and the release goes.
    sandbox.args.render_timeout = Duration::from_secs(3600);
    sandbox.start_controllers()?;
    wait_for("a render running", WAIT, || async {
        match render_processes() {
            found if found.is_empty() => Err("none".to_string()),
            _ => Ok(()),
        }
    })
    .await?;
    stacks.delete("ferrol", &DeleteParams::background()).await?;
    wait_releases(&client, &[]).await?;
    wait_no_render_process("no render process left").await?;
    sandbox.shutdown().await
}

#[tokio::test]
async fn plugin_limits_over_the_admins_caps_are_refused_with_the_cap_named() -> TestResult {
    let cache = tempfile::tempdir()?;
    let sandbox = Sandbox::start(args(cache.path())).await?;
    let pps: Api<ProviderPlugin> = Api::namespaced(sandbox.client.clone(), NS);
    let mut pp = provider_plugin("registry.invalid/plugins/docker:1", json!({}));
    pp.spec.limits.deadline = Some("1h".into());
    pps.create(&Default::default(), &pp).await?;
    let loaded = |pps: Api<ProviderPlugin>| async move {
        let pp = pps.get("docker").await.map_err(|e| e.to_string())?;
        let conditions = pp.status.unwrap_or_default().conditions;
        let c = stackhost::api::condition::find(&conditions, "PluginLoaded").ok_or("no condition yet")?;
        Ok::<_, String>((
            c.reason.clone().unwrap_or_default(),
            c.message.clone().unwrap_or_default(),
        ))
    };
    let refused = |cap: &'static str| {
        let pps = pps.clone();
        move || {
            let pps = pps.clone();
            async move {
                match loaded(pps).await? {
                    (reason, message) if reason == "InvalidSpec" && message.contains(cap) => Ok(message),
                    other => Err(format!("{other:?}")),
                }
            }
        }
    };
    let message = wait_for("the deadline refused", WAIT, refused("--plugin-max-deadline")).await?;
    assert!(
        message.starts_with(
            "spec.limits.deadline \"1h\" is over the most this controller allows per call (300s"
        ),
        "{message}"
    );
    let patch = json!({"spec": {"limits": {"deadline": "30s", "memory": "2Gi"}}});
    pps.patch("docker", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let message = wait_for("the memory refused", WAIT, refused("--plugin-max-memory-mib")).await?;
    assert!(
        message.contains(
            "spec.limits.memory \"2Gi\" is over the most this controller allows per instance (1024 MiB"
        ),
        "{message}"
    );
    sandbox.shutdown().await
}

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ")
        .is_none_or(|(_, rest)| rest.starts_with('Z'))
}

#[tokio::test]
async fn a_render_process_stops_soon_after_its_controller_is_gone() -> TestResult {
    const TAG: &str = "docker-ferrol-1-32-v1";
    let dir = tempfile::tempdir()?;
    release_with_template(dir.path(), TAG, "loop.yaml", LOOP)?;
    let job = dir.path().join("job.json");
    let chart = dir
        .path()
        .join(TAG)
        .join("docker-ferrol-1-32-cluster-class-v1.tgz");
    std::fs::write(
        &job,
        json!({"op": "render", "chart": chart, "values": {}, "releaseName": "x", "namespace": NS,
               "kubeVersion": null, "includeCrds": false})
        .to_string(),
    )?;
    // A shell stands in for the controller: it starts the render and is then killed with SIGKILL.
    let mut controller = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"STACKHOST_RENDER_PARENT=$$ "$0" internal-render < "$1" > /dev/null & echo $!; wait"#)
        .arg(env!("CARGO_BIN_EXE_stackhost"))
        .arg(&job)
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(controller.stdout.take().expect("piped")),
        &mut line,
    )?;
    let render: u32 = line.trim().parse()?;
    wait_for("the looping render running", WAIT, || async {
        let cmdline = std::fs::read(format!("/proc/{render}/cmdline")).unwrap_or_default();
        match cmdline.split(|b| *b == 0).any(|a| a == b"internal-render") {
            true => Ok(()),
            false => Err(String::from_utf8_lossy(&cmdline).into_owned()),
        }
    })
    .await?;
    controller.kill()?;
    controller.wait()?;
    wait_for("the orphaned render ended", Duration::from_secs(10), || async {
        match ended(render) {
            true => Ok(()),
            false => Err(format!("render process {render} still runs")),
        }
    })
    .await
}

/// A template rendering [`MANY`] ConfigMaps: an apply long enough to stop in the middle.
const MANY_TEMPLATE: &str = "{{- range $i := until 3000 }}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: many-{{ $i }}\ndata: {i: \"{{ $i }}\"}\n{{- end }}\n";
const MANY: usize = 3000;

async fn many_config_maps(client: &kube::Client) -> Result<usize, String> {
    let listed = Api::<ConfigMap>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(stackhost::apply::OWNER_LABEL))
        .await
        .map_err(|e| e.to_string())?;
    Ok(listed
        .items
        .iter()
        .filter(|cm| {
            cm.metadata
                .name
                .as_deref()
                .is_some_and(|n| n.starts_with("many-"))
        })
        .count())
}

#[tokio::test]
async fn a_controller_stopped_mid_apply_leaves_nothing_deletion_cannot_find() -> TestResult {
    const TAG: &str = "docker-ferrol-1-32-v1";
    let cache = tempfile::tempdir()?;
    let releases = cache.path().join("releases");
    release_with_template(&releases, TAG, "many.yaml", MANY_TEMPLATE)?;
    let mut sandbox = Sandbox::start(ControllerArgs {
        release_source: Some(format!("dir:{}", releases.display())),
        ..args(cache.path())
    })
    .await?;
    let client = sandbox.client.clone();
    create_stack_of_default_source(&client, NS, &["v1"]).await?;
    let stacks: Api<ClusterStack> = Api::namespaced(client.clone(), NS);

    // Stop the controllers hard once the apply has created some of the ConfigMaps.
    wait_for("the apply under way", WAIT, || async {
        match many_config_maps(&client).await? {
            n if n >= 20 => Ok(()),
            n => Err(format!("{n} ConfigMaps")),
        }
    })
    .await?;
    sandbox.kill_controllers().await;
    let created = many_config_maps(&client).await.map_err(anyhow::Error::msg)?;
    assert!(
        created < MANY,
        "the apply was stopped in the middle ({created} of {MANY})"
    );
    // Every object was listed before the apply began.
    let release = Api::<ClusterStackRelease>::namespaced(client.clone(), NS)
        .get(TAG)
        .await?;
    let listed = release.status.unwrap_or_default().resources;
    let listed_many = listed.iter().filter(|r| r.name.starts_with("many-")).count();
    assert_eq!(listed_many, MANY, "status.resources lists all {MANY} ConfigMaps");

    // Deleted while no controller runs, the stack's release is finalized by the next controller:
    // everything the stopped apply created goes.
    stacks.delete("ferrol", &DeleteParams::background()).await?;
    sandbox.start_controllers()?;
    wait_releases(&client, &[]).await?;
    assert_eq!(many_config_maps(&client).await.map_err(anyhow::Error::msg)?, 0);
    sandbox.shutdown().await
}

/// A template that builds a 1 GiB string (16 bytes doubled 26 times) and renders nothing of it.
const HOARD: &str =
    "{{- $s := \"0123456789abcdef\" }}{{- range until 26 }}{{- $s = print $s $s }}{{- end }}\n";

#[tokio::test]
async fn a_template_that_hoards_memory_is_stopped_at_the_render_memory_cap() -> TestResult {
    const TAG: &str = "docker-ferrol-1-32-v1";
    let cache = tempfile::tempdir()?;
    let releases = cache.path().join("releases");
    release_with_template(&releases, TAG, "hoard.yaml", HOARD)?;
    let mut sandbox = Sandbox::start(ControllerArgs {
        release_source: Some(format!("dir:{}", releases.display())),
        render_max_memory_mib: 160,
        ..args(cache.path())
    })
    .await?;
    let client = sandbox.client.clone();
    create_stack_of_default_source(&client, NS, &["v1"]).await?;
    let c = wait_release_condition(&client, NS, TAG, ("HelmChartApplied", "RenderOutOfMemory"), WAIT).await?;
    let message = c.message.unwrap_or_default();
    assert!(
        message.contains("docker-ferrol-1-32-cluster-class-v1.tgz")
            && message.contains("used more than 160 MiB (--render-max-memory-mib) and was stopped"),
        "{message}"
    );
    // The controllers retry the render (and are stopped again): none is left behind once they stop.
    sandbox.stop_controllers().await;
    wait_no_render_process("the stopped render processes gone").await?;
    sandbox.shutdown().await
}

#[tokio::test]
async fn a_namespace_of_endless_renders_holds_only_its_share_of_the_workers() -> TestResult {
    let reg = TestRegistry::start().await;
    push_release(&registry_client(), &reg.addr, "docker-ferrol-1-32-v1").await?;
    let cache = tempfile::tempdir()?;
    let releases = cache.path().join("releases");
    for tag in ["docker-ferrol-1-32-v1", "docker-ferrol-1-32-v2"] {
        release_with_template(&releases, tag, "loop.yaml", LOOP)?;
    }
    // Two workers per controller: without a per-namespace share, two endless renders hold both.
    let sandbox = Sandbox::start(ControllerArgs {
        release_source: Some(format!("dir:{}", releases.display())),
        // Longer than any wait here, short enough that a failing test ends.
        render_timeout: Duration::from_secs(90),
        concurrency: 2,
        ..args(cache.path())
    })
    .await?;
    let client = sandbox.client.clone();
    create_stack_of_default_source(&client, "greedy", &["v1", "v2"]).await?;
    wait_for("an endless render running", WAIT, || async {
        match render_processes().len() {
            0 => Err("none yet".to_string()),
            _ => Ok(()),
        }
    })
    .await?;

    // Another namespace's release gets Ready meanwhile, and greedy still renders only one at a time.
    create_stack_in(&client, "patient", &reg.addr).await?;
    wait_release_ready(&client, "patient", "docker-ferrol-1-32-v1", WAIT).await?;
    // patient's release may render once more after it got Ready; then only greedy's one render is left.
    wait_for("greedy's second release waiting for its share", WAIT, || async {
        match render_processes().len() {
            1 => Ok(()),
            n => Err(format!("{n} renders running")),
        }
    })
    .await?;
    let mut metrics = String::new();
    prometheus_client::encoding::text::encode(&mut metrics, &sandbox.registry)?;
    assert!(
        metrics.contains(r#"stackhost_reconciles_total{controller="clusterstackrelease",result="deferred"}"#),
        "{metrics}"
    );

    Api::<ClusterStack>::namespaced(client.clone(), "greedy")
        .delete("ferrol", &DeleteParams::background())
        .await?;
    wait_no_render_process("no render process left").await?;
    sandbox.shutdown().await
}

#[tokio::test]
async fn content_that_does_not_match_its_digest_has_its_own_condition_reason() -> TestResult {
    use sha2::Digest as _;
    const TAG: &str = "docker-ferrol-1-32-v1";
    let reg = TestRegistry::start().await;
    push_release(&registry_client(), &reg.addr, TAG).await?;
    // Corrupt metadata.yaml at rest in the registry: same length, other bytes.
    let metadata = std::fs::read(support::release::fixture(TAG).join("metadata.yaml"))?;
    let file = reg.blob_file(&format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(&metadata))
    ));
    let mut stored = std::fs::read(&file)?;
    stored[0] ^= 0x20;
    std::fs::write(&file, &stored)?;

    let cache = tempfile::tempdir()?;
    let sandbox = Sandbox::start(args(cache.path())).await?;
    let client = sandbox.client.clone();
    create_stack_in(&client, NS, &reg.addr).await?;
    let c = wait_release_condition(
        &client,
        NS,
        TAG,
        ("ClusterStackReleaseDownloaded", "DigestMismatch"),
        WAIT,
    )
    .await?;
    let message = c.message.unwrap_or_default();
    assert!(
        message.contains("metadata.yaml digest mismatch") && message.contains("refusing it"),
        "{message}"
    );
    let release = Api::<ClusterStackRelease>::namespaced(client.clone(), NS)
        .get(TAG)
        .await?;
    let conditions = release.status.unwrap_or_default().conditions;
    assert!(
        stackhost::api::condition::find(&conditions, "AssetsClientAPIAvailable")
            .is_none_or(|c| c.reason.as_deref() != Some("SourceUnavailable")),
        "the source is reachable: {conditions:?}"
    );
    sandbox.shutdown().await
}

/// Status fields that become empty are removed from the stored status: the status types leave empty
/// fields out, and a merge patch of the new status alone left the old values in place.
#[tokio::test]
async fn status_fields_that_become_empty_are_cleared() -> TestResult {
    let reg = TestRegistry::start().await;
    let registry = registry_client();
    let cache = tempfile::tempdir()?;
    push_release(&registry, &reg.addr, "docker-ferrol-1-32-v1").await?;
    let plugin_ref = format!("{}/plugins/docker:1", reg.addr);
    push_plugin(&registry, &plugin_ref, "docker").await?;

    let sandbox = Sandbox::start(args(cache.path())).await?;
    let client = sandbox.client.clone();
    let pps: Api<ProviderPlugin> = Api::namespaced(client.clone(), NS);
    // A tag that does not exist: the load fails and says why.
    let missing = format!("{}/plugins/docker:missing", reg.addr);
    pps.create(
        &Default::default(),
        &provider_plugin(&missing, json!({"pendingRounds": 0})),
    )
    .await?;
    wait_for("lastLoadError on the ProviderPlugin", WAIT, || async {
        let pp = pps.get("docker").await.map_err(|e| e.to_string())?;
        match pp.status.and_then(|s| s.last_load_error) {
            Some(e) => Ok(e),
            None => Err("no lastLoadError yet".into()),
        }
    })
    .await?;
    // Fixed: the error goes with the recovery.
    let patch = json!({"spec": {"image": plugin_ref}});
    pps.patch("docker", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_for(
        "the recovered ProviderPlugin without lastLoadError",
        WAIT,
        || async {
            let status = pps.get("docker").await.map_err(|e| e.to_string())?.status;
            match status {
                Some(s) if s.resolved_digest.is_some() && s.last_load_error.is_none() => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;

    let repository = format!("{}/kaas/cluster-stacks", reg.addr);
    let stacks: Api<ClusterStack> = Api::namespaced(client.clone(), NS);
    stacks
        .create(&Default::default(), &cluster_stack(&repository, false, &["v1"]))
        .await?;
    let v1 = wait_release_ready(&client, NS, "docker-ferrol-1-32-v1", WAIT).await?;
    assert!(v1.status.and_then(|s| s.plugin_digest).is_some());
    wait_for("the ClusterStack summary", WAIT, || async {
        let status = stacks.get("ferrol").await.map_err(|e| e.to_string())?.status;
        match status {
            Some(s) if s.usable_versions == "v1" && s.summary.len() == 1 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;

    // The release no longer has a provider plugin: no plugin digest is reported for it.
    let releases: Api<ClusterStackRelease> = Api::namespaced(client.clone(), NS);
    let patch = json!({"spec": {"providerPlugin": null}});
    releases
        .patch(
            "docker-ferrol-1-32-v1",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    wait_for("the release without pluginDigest", WAIT, || async {
        let status = releases
            .get("docker-ferrol-1-32-v1")
            .await
            .map_err(|e| e.to_string())?
            .status;
        match status {
            Some(s) if s.ready && s.plugin_digest.is_none() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;

    // The plugin is back and now traps: the release is no longer ready, so no version is usable.
    push_plugin(&registry, &plugin_ref, "misbehaving").await?;
    let patch = json!({"spec": {"config": {"behaviour": "later:trap"}}});
    pps.patch("docker", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let patch = json!({"spec": {"providerPlugin": "docker"}});
    releases
        .patch(
            "docker-ferrol-1-32-v1",
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    wait_for("no usable versions", WAIT, || async {
        let status = stacks.get("ferrol").await.map_err(|e| e.to_string())?.status;
        match status {
            Some(s) if s.usable_versions.is_empty() && s.summary.len() == 1 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;

    // No versions any more: the release that never got ready again goes, and the summary with it.
    let patch = json!({"spec": {"versions": []}});
    stacks
        .patch("ferrol", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    wait_for("an empty ClusterStack summary", WAIT, || async {
        let status = stacks.get("ferrol").await.map_err(|e| e.to_string())?.status;
        match status {
            Some(s) if s.usable_versions.is_empty() && s.summary.is_empty() => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    sandbox.shutdown().await
}

#[tokio::test]
async fn a_plugin_state_config_map_moves_into_a_secret_once() -> TestResult {
    let reg = TestRegistry::start().await;
    let registry = registry_client();
    let cache = tempfile::tempdir()?;
    let plugin_ref = format!("{}/plugins/docker:1", reg.addr);
    push_plugin(&registry, &plugin_ref, "docker").await?;
    // All state Secrets in stackhost's own namespace, as the chart configures it.
    let shared = "stackhost-system";
    let mut sandbox = Sandbox::start(ControllerArgs {
        plugin_state_namespace: Some(shared.to_owned()),
        ..args(cache.path())
    })
    .await?;
    let client = sandbox.client.clone();
    sandbox.cluster.apply_yaml(
        &format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {shared}\n"),
        "test",
    )?;
    // The state an earlier stackhost kept in a ConfigMap next to the ProviderPlugin.
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    configmaps
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "stackhost-plugin-state-docker",
                             "labels": {"app.kubernetes.io/managed-by": "stackhost"}},
                "data": {"token": "cached-before-the-upgrade"}
            }))?,
        )
        .await?;
    let pps: Api<ProviderPlugin> = Api::namespaced(client.clone(), NS);
    pps.create(&Default::default(), &provider_plugin(&plugin_ref, json!({})))
        .await?;

    // Loading the plugin moves the state into its Secret and deletes the ConfigMap.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), shared);
    let name = format!("stackhost-plugin-state.{NS}.docker");
    let state = |secret: &Secret| -> BTreeMap<String, String> {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get("state.json"))
            .and_then(|j| serde_json::from_slice(&j.0).ok())
            .unwrap_or_default()
    };
    let secret = wait_for("the state Secret", WAIT, || async {
        match secrets.get_opt(&name).await {
            Ok(Some(s)) => Ok(s),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    assert_eq!(
        state(&secret).get("token").map(String::as_str),
        Some("cached-before-the-upgrade")
    );
    assert_eq!(secret.type_.as_deref(), Some("Opaque"));
    wait_for("the ConfigMap to be deleted", WAIT, || async {
        match configmaps.get_opt("stackhost-plugin-state-docker").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;

    // Once: a ConfigMap created again later is not read over the Secret, and a restarted controller
    // loads the Secret (the ProviderPlugin gets Ready again with the state kept).
    configmaps
        .create(
            &Default::default(),
            &serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "stackhost-plugin-state-docker",
                             "labels": {"app.kubernetes.io/managed-by": "stackhost"}},
                "data": {"token": "stale"}
            }))?,
        )
        .await?;
    sandbox.kill_controllers().await;
    sandbox.start_controllers()?;
    wait_for("the leftover ConfigMap to be deleted", WAIT, || async {
        match configmaps.get_opt("stackhost-plugin-state-docker").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    let secret = secrets.get(&name).await?;
    assert_eq!(
        state(&secret).get("token").map(String::as_str),
        Some("cached-before-the-upgrade")
    );
    // Nothing was kept in the ProviderPlugin's namespace.
    let local: Api<Secret> = Api::namespaced(client.clone(), NS);
    assert!(local.get_opt("stackhost-plugin-state-docker").await?.is_none());
    sandbox.shutdown().await?;
    Ok(())
}

/// The `Paused` condition of a stack or release as `(status, message)`, if it has one.
fn paused_condition(conditions: &[stackhost::api::Condition]) -> Option<(String, String)> {
    stackhost::api::condition::find(conditions, "Paused")
        .map(|c| (format!("{:?}", c.status), c.message.clone().unwrap_or_default()))
}

#[tokio::test]
async fn paused_objects_wait_until_the_annotation_goes_deletion_included() -> TestResult {
    const TAG: &str = "docker-ferrol-1-32-v1";
    const RESUME: &str = "the cluster.x-k8s.io/paused annotation is set; remove it to resume reconciling";
    let cache = tempfile::tempdir()?;
    let releases = cache.path().join("releases");
    common::copy_tree(&support::release::fixture(TAG), &releases.join(TAG));
    let sandbox = Sandbox::start(ControllerArgs {
        release_source: Some(format!("dir:{}", releases.display())),
        ..args(cache.path())
    })
    .await?;
    let client = sandbox.client.clone();
    let stacks: Api<ClusterStack> = Api::namespaced(client.clone(), NS);
    let mut cs = cluster_stack("unused", false, &["v1"]);
    cs.spec.source = None;
    cs.spec.no_provider = true;
    cs.metadata.annotations = Some(BTreeMap::from([(
        "cluster.x-k8s.io/paused".to_owned(),
        String::new(),
    )]));
    stacks.create(&Default::default(), &cs).await?;
    let stack_paused = || {
        let stacks = stacks.clone();
        move || {
            let stacks = stacks.clone();
            async move {
                let cs = stacks.get("ferrol").await.map_err(|e| e.to_string())?;
                Ok::<_, String>(paused_condition(&cs.status.unwrap_or_default().conditions))
            }
        }
    };
    let paused = wait_for("the stack paused", WAIT, || {
        let check = stack_paused();
        async move { check().await?.ok_or_else(|| "no Paused condition".to_string()) }
    })
    .await?;
    assert_eq!(paused, ("True".to_owned(), RESUME.to_owned()));
    // The reconcile that wrote the condition created no release.
    assert!(release_names(&client).await?.is_empty());

    let resume = json!({"metadata": {"annotations": {"cluster.x-k8s.io/paused": null}}});
    stacks
        .patch("ferrol", &PatchParams::default(), &Patch::Merge(&resume))
        .await?;
    wait_release_ready(&client, NS, TAG, WAIT).await?;
    wait_for("the stack's Paused condition gone", WAIT, || {
        let check = stack_paused();
        async move {
            match check().await? {
                None => Ok(()),
                Some(c) => Err(format!("{c:?}")),
            }
        }
    })
    .await?;

    // A paused release keeps its finalizer: deleting its stack leaves it until it resumes.
    let releases_api: Api<ClusterStackRelease> = Api::namespaced(client.clone(), NS);
    let pause = json!({"metadata": {"annotations": {"cluster.x-k8s.io/paused": "true"}}});
    releases_api
        .patch(TAG, &PatchParams::default(), &Patch::Merge(&pause))
        .await?;
    wait_for("the release paused", WAIT, || {
        let releases_api = releases_api.clone();
        async move {
            let r = releases_api.get(TAG).await.map_err(|e| e.to_string())?;
            match paused_condition(&r.status.unwrap_or_default().conditions) {
                Some((status, message)) if status == "True" && message == RESUME => Ok(()),
                other => Err(format!("{other:?}")),
            }
        }
    })
    .await?;
    stacks.delete("ferrol", &DeleteParams::background()).await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let held = releases_api.get(TAG).await?;
    assert!(
        held.metadata.deletion_timestamp.is_some(),
        "the release is being deleted"
    );
    releases_api
        .patch(TAG, &PatchParams::default(), &Patch::Merge(&resume))
        .await?;
    wait_releases(&client, &[]).await?;
    sandbox.shutdown().await
}
