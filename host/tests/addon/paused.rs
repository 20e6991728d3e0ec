//! A paused Cluster (`spec.paused`) pauses its ClusterAddon: nothing reaches the workload cluster and the
//! ClusterAddon says why, until the Cluster resumes.

use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::env::{condition, ready, workload_object, Env};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_cluster_pauses_its_addons_until_it_resumes() {
    let mut env = Env::start(true).await;
    env.release(1).await;
    env.create_cluster("c1", 1).await;
    let pause = |paused: bool| json!({"spec": {"paused": paused}});
    env.clusters()
        .patch("c1", &PatchParams::default(), &Patch::Merge(&pause(true)))
        .await
        .expect("pause the Cluster");
    env.start_controller();

    let addon = env
        .wait_addon("c1", "the ClusterAddon paused", |a| {
            condition(a, "Paused").is_some()
        })
        .await;
    assert_eq!(
        condition(&addon, "Paused"),
        Some((
            "True".to_owned(),
            "Paused".to_owned(),
            "Cluster default/c1 is paused (spec.paused); remove it to resume reconciling".to_owned()
        ))
    );
    let workload = env.workload_client();
    assert_eq!(
        workload_object(&workload, "v1", "ConfigMap", "cluster-addon-info").await,
        None,
        "nothing is applied while the Cluster is paused"
    );

    env.clusters()
        .patch("c1", &PatchParams::default(), &Patch::Merge(&pause(false)))
        .await
        .expect("resume the Cluster");
    let addon = env
        .wait_addon("c1", "addons applied after the resume", ready)
        .await;
    assert_eq!(condition(&addon, "Paused"), None);
    assert!(
        workload_object(&workload, "v1", "ConfigMap", "cluster-addon-info")
            .await
            .is_some()
    );
}
