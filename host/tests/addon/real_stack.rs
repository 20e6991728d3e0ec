//! The real SCS docker stack (tests/fixtures/real-stacks/stacks/docker-scs, unchanged upstream sources) from
//! source to a Cluster with its addons, as a stack author and a cluster admin would run it: the release is
//! built as `csctl create --mode hash` builds it, read by the sandbox from a folder of releases
//! (`--release-source dir:`), with the Cluster API Docker CRDs preloaded (`--crds`). The ClusterStack and
//! the Cluster are the ones of the stack's README. Then a second hash release, built from a copy with one
//! value changed, is pinned and the Cluster moved to its class: the new addon content arrives.

use std::path::{Path, PathBuf};
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::ApiResource;
use serde_json::{json, Value};
use stackhost::api::{ClusterAddon, ClusterStack};
use stackhost::controller::ControllerArgs;
use stackhost::release::build::{build, BuildMode, BuiltRelease};
use stackhost::sandbox::{read_crd_files, wait_for, wait_release_ready, Sandbox};
use tokio::sync::watch;

const NS: &str = "cluster";
const CLUSTER: &str = "docker-testcluster";

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures")
}

fn stack_dir() -> PathBuf {
    fixtures().join("real-stacks/stacks/docker-scs")
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create copy");
    for entry in std::fs::read_dir(from).expect("read stack").flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy file");
        }
    }
}

fn build_release(stack: &Path, out: &Path) -> BuiltRelease {
    let helm = stackhost::render::default_renderer().expect("Helm (scripts/deps/helm.sh)");
    build(stack, out, BuildMode::Hash, helm.as_ref()).expect("the stack builds as csctl builds it")
}

/// A workload object by apiVersion/kind/plural (namespaced when `namespace` is given), as JSON.
async fn get(
    client: &kube::Client,
    (api_version, kind, plural): (&str, &str, &str),
    namespace: Option<&str>,
    name: &str,
) -> Option<Value> {
    let (group, version) = stackhost::apply::split_api_version(api_version);
    let ar = ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural: plural.into(),
    };
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.get_opt(name)
        .await
        .unwrap_or_else(|e| panic!("get {kind} {name}: {e}"))
        .map(|o| serde_json::to_value(o).expect("json"))
}

const DAEMONSET: (&str, &str, &str) = ("apps/v1", "DaemonSet", "daemonsets");
const DEPLOYMENT: (&str, &str, &str) = ("apps/v1", "Deployment", "deployments");
const APISERVICE: (&str, &str, &str) = ("apiregistration.k8s.io/v1", "APIService", "apiservices");
const CLUSTERROLE: (&str, &str, &str) = ("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles");

/// Waits until the ClusterAddon of the Cluster has applied the addons of `class` and the sandbox's
/// check finds every object it lists in the workload cluster.
async fn wait_addons_of(
    client: &kube::Client,
    sandbox: &stackhost::addon::inmemory::SandboxAddons,
    class: &str,
) -> ClusterAddon {
    let addons: Api<ClusterAddon> = Api::namespaced(client.clone(), NS);
    wait_for(
        &format!("the addons of class {class} in the workload cluster of {NS}/{CLUSTER}"),
        Duration::from_secs(240),
        || {
            let addons = addons.clone();
            async move {
                let addon = addons
                    .get_opt(&format!("cluster-addon-{CLUSTER}"))
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or("no ClusterAddon yet")?;
                if addon.spec.cluster_stack != class {
                    return Err(stackhost::sandbox::describe_addon(&addon));
                }
                sandbox.check(client, NS, CLUSTER).await?;
                Ok(addon)
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_docker_stack_builds_gets_ready_applies_its_addons_and_upgrades() {
    let dir = tempfile::tempdir().expect("tempdir");
    let releases = dir.path().join("releases");
    let started = std::time::Instant::now();
    let v1 = build_release(&stack_dir(), &releases);
    println!(
        "measured: release {} built in {:.2}s",
        v1.tag,
        started.elapsed().as_secs_f64()
    );
    assert!(v1.version.starts_with("v0-sha."), "{}", v1.version);
    assert_eq!(v1.kubernetes, "v1.30.10");
    assert_eq!(v1.class, format!("docker-scs-1-30-{}", v1.version));
    assert_eq!(
        v1.files,
        [
            "clusteraddon.yaml".to_owned(),
            format!("docker-scs-1-30-cluster-addon-{}.tgz", v1.version),
            format!("docker-scs-1-30-cluster-class-{}.tgz", v1.version),
            "hashes.json".to_owned(),
            "metadata.yaml".to_owned(),
        ]
    );

    let crds = read_crd_files(&[fixtures().join("real-crds/capd")]).expect("CAPD CRDs");
    let sandbox = Sandbox::start_with_crds(
        ControllerArgs {
            release_source: Some(format!("dir:{}", releases.display())),
            cache_dir: Some(dir.path().join("cache")),
            retry_base: Duration::from_millis(300),
            retry_max: Duration::from_secs(5),
            render_program: Some(env!("CARGO_BIN_EXE_stackhost").into()),
            ..ControllerArgs::default()
        },
        &crds,
    )
    .await
    .expect("sandbox");
    let client = sandbox.client.clone();
    let ctx = sandbox.context().cloned().expect("controllers running");
    let mut addon_config = stackhost::controller::addons::addon_config(&ctx);
    addon_config.wait = Duration::from_millis(500);
    addon_config.retry = Duration::from_secs(1);
    let (stop_tx, stop) = watch::channel(false);
    let addons = stackhost::addon::inmemory::start_sandbox(client.clone(), addon_config, stop)
        .await
        .expect("in-memory infrastructure");

    // The ClusterStack of the stack's README (namespace `cluster`, noProvider, the hash version pinned).
    let namespaces: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": NS}})).expect("namespace"),
        )
        .await
        .expect("create namespace");
    let stacks: Api<ClusterStack> = Api::namespaced(client.clone(), NS);
    let stack: ClusterStack = serde_json::from_value(json!({
        "apiVersion": "clusterstack.x-k8s.io/v1alpha1", "kind": "ClusterStack",
        "metadata": {"name": "docker", "namespace": NS},
        "spec": {"provider": "docker", "name": "scs", "kubernetesVersion": "1.30", "channel": "custom",
                 "autoSubscribe": false, "noProvider": true, "versions": [v1.version]},
    }))
    .expect("ClusterStack");
    stacks
        .create(&PostParams::default(), &stack)
        .await
        .expect("create ClusterStack");
    let started = std::time::Instant::now();
    let ready = wait_release_ready(&client, NS, &v1.tag, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    println!(
        "measured: release {} Ready {:.1}s after the ClusterStack was created",
        v1.tag,
        started.elapsed().as_secs_f64()
    );
    let status = ready.status.expect("status");
    assert_eq!(status.kubernetes_version.as_deref(), Some("v1.30.10"));
    let mut applied: Vec<String> = status
        .resources
        .iter()
        .map(|r| format!("{} {}", r.kind, r.name))
        .collect();
    applied.sort();
    let class = &v1.class;
    assert_eq!(
        applied,
        [
            format!("ClusterClass {class}"),
            format!("DockerClusterTemplate {class}-cluster"),
            format!("DockerMachineTemplate {class}-machinetemplate-docker"),
            format!("KubeadmConfigTemplate {class}-worker-bootstraptemplate-docker"),
            format!("KubeadmControlPlaneTemplate {class}-control-plane"),
        ]
    );

    // The Cluster of the stack's README: v1beta1, topology only.
    let cluster: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
        "metadata": {"name": CLUSTER, "namespace": NS, "labels": {"managed-secret": "cloud-config"}},
        "spec": {"topology": {
            "class": class, "version": "v1.30.10",
            "controlPlane": {"replicas": 1},
            "workers": {"machineDeployments": [{"class": "default-worker", "name": "md-0", "replicas": 1}]},
        }},
    }))
    .expect("Cluster");
    let clusters = stackhost::addon::cluster::clusters(client.clone(), NS);
    clusters
        .create(&PostParams::default(), &cluster)
        .await
        .expect("create Cluster");
    let started = std::time::Instant::now();
    let addon = wait_addons_of(&client, &addons, class).await;
    println!(
        "measured: addons (cni, metrics-server) applied {:.1}s after the Cluster was created",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(addon.spec.version, v1.version.replace("sha.", "sha-"));
    let workload = addons
        .provider
        .workload_client(NS, CLUSTER)
        .await
        .expect("workload API");
    // Stage cni: cilium.
    let cilium = get(&workload, DAEMONSET, Some("kube-system"), "cilium")
        .await
        .expect("cilium's DaemonSet");
    assert!(
        cilium["spec"]["template"]["spec"]["containers"][0]["image"]
            .as_str()
            .is_some_and(|i| i.starts_with("quay.io/cilium/cilium:v1.16.6")),
        "{}",
        cilium["spec"]["template"]["spec"]["containers"][0]["image"]
    );
    assert!(get(&workload, DEPLOYMENT, Some("kube-system"), "cilium-operator")
        .await
        .is_some());
    // Stage metrics-server, with the stack's own values (fullnameOverride, --kubelet-insecure-tls).
    let metrics = get(&workload, DEPLOYMENT, Some("kube-system"), "metrics-server")
        .await
        .expect("metrics-server's Deployment");
    assert_eq!(metrics["spec"]["replicas"], 1);
    let args = &metrics["spec"]["template"]["spec"]["containers"][0]["args"];
    assert!(
        args.as_array()
            .is_some_and(|a| a.iter().any(|x| x == "--kubelet-insecure-tls")),
        "{args}"
    );
    let apiservice = get(&workload, APISERVICE, None, "v1beta1.metrics.k8s.io")
        .await
        .expect("the metrics APIService");
    assert_eq!(apiservice["spec"]["service"]["name"], "metrics-server");
    assert!(get(&workload, CLUSTERROLE, None, "system:metrics-server")
        .await
        .is_some());
    // The in-memory infrastructure reported the workload API as the control plane endpoint.
    let cluster = clusters.get(CLUSTER).await.expect("Cluster");
    assert_eq!(cluster.data["spec"]["controlPlaneEndpoint"]["host"], "127.0.0.1");
    assert!(
        addons.provider.hook_errors().is_empty(),
        "{:?}",
        addons.provider.hook_errors()
    );

    // A second hash release of the same stack with one value changed, in a copy (never the fixture).
    let copy = dir.path().join("docker-scs");
    copy_tree(&stack_dir(), &copy);
    let values = copy.join("cluster-addon/metrics-server/values.yaml");
    let text = std::fs::read_to_string(&values).expect("values");
    std::fs::write(
        &values,
        text.replace(
            "  fullnameOverride: metrics-server\n",
            "  fullnameOverride: metrics-server\n  replicas: 2\n",
        ),
    )
    .expect("change one value");
    let v2 = build_release(&copy, &releases);
    assert_ne!(v2.version, v1.version, "another content, another hash version");
    assert_ne!(v2.hashes.cluster_addon_dir, v1.hashes.cluster_addon_dir);
    assert_eq!(v2.hashes.cluster_class_dir, v1.hashes.cluster_class_dir);

    stacks
        .patch(
            "docker",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"versions": [v1.version, v2.version]}})),
        )
        .await
        .expect("pin the second release");
    wait_release_ready(&client, NS, &v2.tag, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e:#}"));
    // The user moves the Cluster to the new class (same Kubernetes version: no upgrade hook).
    clusters
        .patch(
            CLUSTER,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"topology": {"class": v2.class}}})),
        )
        .await
        .expect("move the Cluster to the new class");
    let started = std::time::Instant::now();
    let upgraded = wait_addons_of(&client, &addons, &v2.class).await;
    println!(
        "measured: addons of {} applied {:.1}s after the class change",
        v2.class,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(upgraded.spec.version, v2.version.replace("sha.", "sha-"));
    let metrics = get(&workload, DEPLOYMENT, Some("kube-system"), "metrics-server")
        .await
        .expect("metrics-server's Deployment");
    assert_eq!(metrics["spec"]["replicas"], 2, "the new release's value arrived");
    assert!(get(&workload, DAEMONSET, Some("kube-system"), "cilium")
        .await
        .is_some());
    assert!(get(&workload, APISERVICE, None, "v1beta1.metrics.k8s.io")
        .await
        .is_some());
    // Both releases stay: the first is pinned, the second is used.
    assert!(wait_release_ready(&client, NS, &v1.tag, Duration::from_secs(5))
        .await
        .is_ok());

    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(20), addons.stopped())
        .await
        .expect("the in-memory infrastructure stops");
    sandbox.shutdown().await.expect("shutdown");
}
