//! Legacy addons (one chart plus `cluster-addon-values.yaml`): create, upgrade with an object removed,
//! broken values templates, an unreachable workload API, and deletion of the Cluster.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams};
use kube::ResourceExt;
use serde_json::json;
use stackhost::api::{ClusterAddon, ResourceStatus};

use crate::env::{condition, event_notes, ready, resource_names, workload_object, Env, NS};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_then_upgrade_prunes_the_removed_object() {
    // The Cluster exists before the controller starts (upstream quirk 11: it still gets its addons).
    let env = Env::running(&[1], 1).await;

    let addon = env
        .wait_addon("c1", "addons of v1 applied", |a| {
            ready(a) && a.spec.cluster_stack == "docker-ferrol-1-32-v1"
        })
        .await;
    assert_eq!(addon.spec.version, "v1");
    assert_eq!(addon.spec.hook, "");
    assert_eq!(
        addon
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("ClusterAddonStage"))
            .map(String::as_str),
        Some("created")
    );
    let owner = &addon.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("Cluster", "c1"));
    let status = addon.status.clone().expect("status");
    assert_eq!(
        resource_names(&addon),
        [
            "ConfigMap/cluster-addon-extra",
            "ConfigMap/cluster-addon-info",
            "Deployment/cluster-addon-web"
        ]
    );
    assert!(status
        .resources
        .iter()
        .all(|r| r.status == Some(ResourceStatus::Synced)));
    assert_eq!(
        condition(&addon, "HelmChartApplied").map(|c| c.0),
        Some("True".into())
    );

    let wl = env.workload_client();
    let info = workload_object(&wl, "v1", "ConfigMap", "cluster-addon-info")
        .await
        .expect("info ConfigMap");
    // Values templated from the Cluster with Helm, then rendered into the chart.
    assert_eq!(info["data"]["clusterName"], "c1");
    assert_eq!(info["data"]["endpoint"], "c1.example.test");
    assert_eq!(info["data"]["kubernetes"], "v1.32.2");
    assert_eq!(
        info["metadata"]["labels"]["clusterstack.x-k8s.io/instance"],
        "owned"
    );
    let web = workload_object(&wl, "apps/v1", "Deployment", "cluster-addon-web")
        .await
        .expect("web");
    assert_eq!(web["spec"]["replicas"], 2);
    assert!(workload_object(&wl, "v1", "ConfigMap", "cluster-addon-extra")
        .await
        .is_some());

    // Upgrade: v2 drops the extra ConfigMap and raises the replicas.
    env.release(2).await;
    env.set_class("c1", 2, None).await;
    let addon = env
        .wait_addon("c1", "addons of v2 applied", |a| {
            ready(a) && a.spec.cluster_stack == "docker-ferrol-1-32-v2"
        })
        .await;
    assert_eq!(addon.spec.version, "v2");
    assert_eq!(addon.status.as_ref().expect("status").resources.len(), 2);
    assert!(
        workload_object(&wl, "v1", "ConfigMap", "cluster-addon-extra")
            .await
            .is_none(),
        "the object removed in v2 is pruned from the workload cluster"
    );
    let web = workload_object(&wl, "apps/v1", "Deployment", "cluster-addon-web")
        .await
        .expect("web");
    assert_eq!(web["spec"]["replicas"], 3);
    let info = workload_object(&wl, "v1", "ConfigMap", "cluster-addon-info")
        .await
        .expect("info");
    assert_eq!(info["data"]["addonVersion"], "v2");
    // The first value of the stage annotation sticks (upstream).
    assert_eq!(
        addon
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get("ClusterAddonStage"))
            .map(String::as_str),
        Some("created")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_values_templates_are_clear_errors() {
    let env = Env::running(&[4, 5], 4).await;

    let addon = env
        .wait_addon("c1", "a templating error", |a| {
            condition(a, "HelmChartTemplated").is_some()
        })
        .await;
    let (status, reason, message) = condition(&addon, "HelmChartTemplated").expect("condition");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "TemplateNewClusterStackFailed")
    );
    assert!(
        message
            .contains("cluster-addon-values.yaml of release docker-ferrol-1-32-v4 is not a valid template"),
        "{message}"
    );
    assert!(
        message.contains("nosuchfunction"),
        "Helm's reason is kept: {message}"
    );
    assert!(!ready(&addon));
    let (ready_status, _, ready_message) = condition(&addon, "Ready").expect("Ready");
    assert_eq!(ready_status, "False");
    assert_eq!(ready_message, message, "the Ready summary shows the error");
    assert!(
        workload_object(&env.workload_client(), "v1", "ConfigMap", "cluster-addon-info")
            .await
            .is_none()
    );

    // A template that renders nothing: an error naming what was expected (upstream panicked).
    env.set_class("c1", 5, None).await;
    let addon = env
        .wait_addon("c1", "the empty-values error", |a| {
            condition(a, "HelmChartTemplated").is_some_and(|c| c.2.contains("v5"))
        })
        .await;
    let message = condition(&addon, "HelmChartTemplated").expect("condition").2;
    assert_eq!(
        message,
        "cluster-addon-values.yaml of release docker-ferrol-1-32-v5 rendered nothing; expected a YAML map of values, optionally inside a `values: |` block"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_for_an_unreachable_workload_api_then_applies() {
    let mut env = Env::start(false).await;
    env.release(1).await;
    // A workload API on a fixed port that is stopped before the controller looks at it.
    let state = env.dir.path().join("workload.json");
    let opts = kube_emulator::ClusterOptions {
        state_file: Some(state.clone()),
        ..Default::default()
    };
    let workload = kube_emulator::Cluster::start_with(opts.clone())
        .await
        .expect("workload");
    let port = workload.addr().port();
    env.write_kubeconfig("c1", &workload.kubeconfig()).await;
    workload.shutdown().await.expect("stop workload");

    env.create_cluster("c1", 1).await;
    env.start_controller();
    let addon = env
        .wait_addon("c1", "ClusterReady=False", |a| {
            condition(a, "ClusterReady").is_some_and(|c| c.0 == "False")
        })
        .await;
    let (_, reason, message) = condition(&addon, "ClusterReady").expect("condition");
    assert_eq!(reason, "ControlPlaneNotReady");
    assert!(
        message.starts_with("control plane not ready yet: GET /readyz"),
        "{message}"
    );

    // The API comes back on the same address: the addons arrive without any other change.
    let workload = kube_emulator::Cluster::start_with(kube_emulator::ClusterOptions { port, ..opts })
        .await
        .expect("workload again");
    let addon = env.wait_addon("c1", "addons applied", ready).await;
    assert_eq!(
        condition(&addon, "ClusterReady").map(|c| c.0),
        Some("True".into())
    );
    let client = workload.client().expect("client");
    assert!(workload_object(&client, "v1", "ConfigMap", "cluster-addon-info")
        .await
        .is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_kubeconfig_and_release_are_reported() {
    let mut env = Env::start(false).await;
    env.create_cluster("c1", 1).await;
    env.start_controller();
    let addon = env
        .wait_addon("c1", "kubeconfig missing", |a| {
            condition(a, "ClusterReady").is_some()
        })
        .await;
    let (status, reason, message) = condition(&addon, "ClusterReady").expect("condition");
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ControlPlaneNotReady")
    );
    assert_eq!(
        message,
        "kubeconfig not there (yet): Secret default/c1-kubeconfig does not exist"
    );

    let workload = kube_emulator::Cluster::start().await.expect("workload");
    env.write_kubeconfig("c1", &workload.kubeconfig()).await;
    let addon = env
        .wait_addon("c1", "release not downloaded", |a| {
            condition(a, "ClusterStackReleaseDownloaded").is_some()
        })
        .await;
    let (_, reason, message) = condition(&addon, "ClusterStackReleaseDownloaded").expect("condition");
    assert_eq!(reason, "ReleaseAssetsNotDownloadedYet");
    assert!(message.contains("docker-ferrol-1-32-v1"), "{message}");

    env.release(1).await;
    env.wait_addon("c1", "addons applied", ready).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_the_cluster_removes_its_cluster_addon() {
    let env = Env::running(&[1], 1).await;
    let addon = env.wait_addon("c1", "addons applied", ready).await;
    assert_eq!(
        addon.metadata.finalizers.as_deref(),
        Some(&["clusteraddon.clusterstack.x-k8s.io".to_owned()][..])
    );

    env.clusters()
        .delete("c1", &DeleteParams::background())
        .await
        .expect("delete Cluster");
    for _ in 0..150 {
        if env
            .addons()
            .get_opt("cluster-addon-c1")
            .await
            .expect("get")
            .is_none()
        {
            let notes = event_notes(&env.client, "cluster-addon-c1").await;
            let deleted = "Deleted: ClusterAddon deleted; the 3 objects it applied stay in the workload cluster of Cluster c1";
            assert!(notes.iter().any(|n| n == deleted), "{notes:#?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left = env.addons().get_opt("cluster-addon-c1").await.expect("get");
    panic!("the ClusterAddon outlived its Cluster: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_cluster_addon_is_created_again() {
    let env = Env::running(&[1], 1).await;
    let first = env.wait_addon("c1", "addons applied", ready).await;
    env.addons()
        .delete("cluster-addon-c1", &DeleteParams::default())
        .await
        .expect("delete ClusterAddon");
    let again = env
        .wait_addon("c1", "a new ClusterAddon, applied", |a| {
            a.metadata.uid != first.metadata.uid && ready(a)
        })
        .await;
    assert_eq!(again.spec.cluster_ref.name.as_deref(), Some("c1"));
    assert_eq!(again.metadata.namespace.as_deref(), Some(NS));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_clusters_in_the_namespace_with_the_watch_label_get_addons() {
    let label = json!({"stackhost.example/addons": "on"});
    let env = Env::start(true).await;
    env.release(1).await;
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    namespaces
        .create(
            &Default::default(),
            &serde_json::from_value(json!({"metadata": {"name": "other"}})).expect("namespace"),
        )
        .await
        .expect("namespace other");
    env.create_cluster_in(NS, "c1", 1, label.clone()).await;
    env.create_cluster_in(NS, "unlabelled", 1, json!({})).await;
    env.create_cluster_in("other", "elsewhere", 1, label).await;
    let mut config = env.config();
    config.namespace = Some(NS.into());
    config.watch_label = Some(("stackhost.example/addons".into(), "on".into()));
    let mut env = env;
    env.start_controller_with(config);

    let addon = env.wait_addon("c1", "addons applied", ready).await;
    assert_eq!(
        addon.labels().get("stackhost.example/addons").map(String::as_str),
        Some("on"),
        "the ClusterAddon carries the watch label of its Cluster"
    );
    // The creator had every chance to create the others meanwhile.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(env
        .addons()
        .get_opt("cluster-addon-unlabelled")
        .await
        .expect("get")
        .is_none());
    let other: Api<ClusterAddon> = Api::namespaced(env.client.clone(), "other");
    assert!(other
        .get_opt("cluster-addon-elsewhere")
        .await
        .expect("get")
        .is_none());
}
