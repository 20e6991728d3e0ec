//! The sandbox's in-memory infrastructure with the hook server and the controller: a Cluster gets a
//! workload API, its control plane endpoint, a kubeconfig Secret and its addons; a version upgrade with a new class goes through
//! `BeforeClusterUpgrade` (held until the new addons are applied) and the deleted Cluster's API stops.

use std::time::Duration;

use kube::api::DeleteParams;
use stackhost::addon::inmemory::start_sandbox;
use tokio::sync::watch;

use crate::env::{ready, workload_object, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_get_a_workload_api_addons_and_upgrade_hooks() {
    let env = Env::start(false).await;
    env.release(1).await;
    let (stop_tx, stop) = watch::channel(false);
    let sandbox = start_sandbox(env.client.clone(), env.config(), stop)
        .await
        .expect("sandbox");
    let provider = sandbox.provider.clone();
    env.create_user_cluster("c1", 1).await;

    let addon = env
        .wait_addon("c1", "addons in the in-memory workload cluster", ready)
        .await;
    assert_eq!(addon.spec.cluster_stack, "docker-ferrol-1-32-v1");
    let cluster = env.clusters().get("c1").await.expect("cluster");
    assert_eq!(cluster.data["status"]["phase"], "Provisioned");
    assert_eq!(cluster.data["status"]["controlPlaneReady"], true);
    let wl = provider
        .workload_client("default", "c1")
        .await
        .expect("workload API");
    let info = workload_object(&wl, "v1", "ConfigMap", "cluster-addon-info")
        .await
        .expect("addons arrived");
    let mut checked = sandbox
        .check(&env.client, "default", "c1")
        .await
        .expect("sandbox --once check");
    checked.sort();
    assert_eq!(
        checked,
        [
            "ConfigMap kube-system/cluster-addon-extra",
            "ConfigMap kube-system/cluster-addon-info",
            "Deployment kube-system/cluster-addon-web (image nginx:1.27)"
        ]
    );
    assert_eq!(info["data"]["clusterName"], "c1");
    // The Cluster's endpoint is the workload API, as a real infrastructure provider reports its load
    // balancer; cluster-addon-values.yaml reads it.
    let url = provider
        .workload_url("default", "c1")
        .await
        .expect("workload URL");
    let port: u16 = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in URL");
    assert_eq!(
        cluster.data["spec"]["controlPlaneEndpoint"],
        serde_json::json!({"host": "127.0.0.1", "port": port})
    );
    assert_eq!(info["data"]["endpoint"], "127.0.0.1");

    // Upgrade Kubernetes and class; the release is published later, so BeforeClusterUpgrade holds the
    // control plane at the old version meanwhile.
    env.set_class("c1", 2, Some("v1.32.3")).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let addon = env.addons().get("cluster-addon-c1").await.expect("addon");
    assert_eq!(
        addon.spec.hook, "BeforeClusterUpgrade",
        "the blocking hook was called and is waiting"
    );
    env.release(2).await;
    env.wait_addon("c1", "v2 applied", |a| {
        ready(a) && a.spec.cluster_stack == "docker-ferrol-1-32-v2"
    })
    .await;
    assert!(workload_object(&wl, "v1", "ConfigMap", "cluster-addon-extra")
        .await
        .is_none());
    assert!(provider.hook_errors().is_empty(), "{:?}", provider.hook_errors());

    env.clusters()
        .delete("c1", &DeleteParams::background())
        .await
        .expect("delete");
    for _ in 0..100 {
        if provider.workload_client("default", "c1").await.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        provider.workload_client("default", "c1").await.is_none(),
        "workload API stopped"
    );
    let _ = stop_tx.send(true);
    tokio::time::timeout(Duration::from_secs(20), sandbox.stopped())
        .await
        .expect("the sandbox stops");
}
