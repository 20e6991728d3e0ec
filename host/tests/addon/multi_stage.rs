//! Multi-stage addons (`clusteraddon.yaml`): a CEL pre-condition holds a stage until an object appears,
//! a controller restart in the middle of the stages resumes from the status, and an upgrade that removes
//! one stage and adds another prunes the removed stage's objects.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use crate::env::{condition, event_notes, ready, resource_names, workload_object, Env};

fn phases(addon: &stackhost::api::ClusterAddon) -> Vec<(String, String)> {
    addon
        .status
        .as_ref()
        .map(|s| {
            s.stages
                .iter()
                .map(|st| (st.name.clone(), st.phase.clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cel_condition_holds_the_stage_and_a_restart_resumes() {
    let mut env = Env::running(&[3], 3).await;

    let held = env
        .wait_addon("c1", "metrics-server waiting for its pre-condition", |a| {
            phases(a)
                .get(1)
                .is_some_and(|(_, p)| p == "waitingForPreCondition")
        })
        .await;
    assert_eq!(
        phases(&held),
        [
            ("cni".to_owned(), "done".to_owned()),
            ("metrics-server".to_owned(), "waitingForPreCondition".to_owned())
        ]
    );
    assert_eq!(held.spec.hook, "AfterControlPlaneInitialized");
    assert!(!ready(&held));
    let status = held.status.clone().expect("status");
    assert_eq!(status.applying_cluster_stack, "docker-ferrol-1-32-v3");
    let (cel_status, reason, message) = condition(&held, "EvaluatedCEL").expect("EvaluatedCEL");
    assert_eq!(
        (cel_status.as_str(), reason.as_str()),
        ("False", "FailedToEvaluatePreCondition")
    );
    assert_eq!(
        message,
        "stage metrics-server waits for its waitForPreCondition: ConfigMap kube-system/addon-gate does not exist yet"
    );
    let wl = env.workload_client();
    let cni = workload_object(&wl, "v1", "ConfigMap", "cni-config")
        .await
        .expect("stage cni applied");
    assert_eq!(
        cni["data"]["clusterName"], "c1",
        "overwrite.yaml templated with the Cluster"
    );
    assert!(workload_object(&wl, "apps/v1", "Deployment", "metrics-server")
        .await
        .is_none());

    // Restart in the middle of the stages; the gate exists but says "not yet".
    env.stop_controller().await;
    let gates: Api<ConfigMap> = Api::namespaced(wl.clone(), "kube-system");
    let gate = |ready: &str| {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "addon-gate", "namespace": "kube-system"}, "data": {"ready": ready}})
    };
    gates
        .patch(
            "addon-gate",
            &PatchParams::apply("test"),
            &Patch::Apply(&gate("false")),
        )
        .await
        .expect("gate");
    let cni_before = workload_object(&wl, "v1", "ConfigMap", "cni-config")
        .await
        .expect("cni");
    env.start_controller();
    let still = env
        .wait_addon("c1", "the CEL expression evaluated false", |a| {
            condition(a, "EvaluatedCEL").is_some_and(|c| c.2.contains("is false"))
        })
        .await;
    assert_eq!(phases(&still)[0].1, "done", "the finished stage is not run again");
    let cni_after = workload_object(&wl, "v1", "ConfigMap", "cni-config")
        .await
        .expect("cni");
    assert_eq!(
        cni_before["metadata"]["resourceVersion"], cni_after["metadata"]["resourceVersion"],
        "the restarted controller resumed at the waiting stage instead of re-applying cni"
    );

    gates
        .patch(
            "addon-gate",
            &PatchParams::apply("test"),
            &Patch::Apply(&gate("true")),
        )
        .await
        .expect("gate");
    let done = env
        .wait_addon("c1", "all stages done", |a| {
            ready(a) && a.spec.cluster_stack == "docker-ferrol-1-32-v3"
        })
        .await;
    let status = done.status.clone().expect("status");
    assert!(status.stages.is_empty());
    assert!(status.applying_cluster_stack.is_empty());
    assert_eq!(done.spec.hook, "");
    assert_eq!(done.spec.version, "v3");
    assert!(
        condition(&done, "EvaluatedCEL").is_none(),
        "removed once the expression holds"
    );
    assert_eq!(
        resource_names(&done),
        ["ConfigMap/cni-config", "Deployment/metrics-server"]
    );
    let ms = workload_object(&wl, "apps/v1", "Deployment", "metrics-server")
        .await
        .expect("metrics-server");
    assert_eq!(ms["spec"]["replicas"], 1);

    // Upgrade to v6: stage cni is gone (its ConfigMap is pruned), stage dashboard is new.
    env.release(6).await;
    env.set_class("c1", 6, Some("v1.32.3")).await;
    let upgraded = env
        .wait_addon("c1", "v6 applied", |a| {
            ready(a) && a.spec.cluster_stack == "docker-ferrol-1-32-v6"
        })
        .await;
    assert_eq!(upgraded.spec.version, "v6");
    assert_eq!(
        resource_names(&upgraded),
        ["Deployment/metrics-server", "ServiceAccount/dashboard"]
    );
    assert!(
        workload_object(&wl, "v1", "ConfigMap", "cni-config")
            .await
            .is_none(),
        "removed stage pruned"
    );
    assert!(workload_object(&wl, "v1", "ServiceAccount", "dashboard")
        .await
        .is_some());
    let ms = workload_object(&wl, "apps/v1", "Deployment", "metrics-server")
        .await
        .expect("metrics-server");
    assert_eq!(ms["spec"]["replicas"], 2);
}

/// Opens (or closes) the gate ConfigMap `kube-system/<name>` of the v7 stages.
async fn set_gate(workload: &kube::Client, name: &str, ready: &str) {
    let gates: Api<ConfigMap> = Api::namespaced(workload.clone(), "kube-system");
    let gate = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "kube-system"}, "data": {"ready": ready}});
    gates
        .patch(name, &PatchParams::apply("test"), &Patch::Apply(&gate))
        .await
        .expect("gate");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_stage_removes_its_objects_in_its_turn_with_events_and_metrics() {
    let env = Env::running(&[6, 7], 6).await;
    env.wait_addon("c1", "v6 applied", |a| {
        ready(a) && a.spec.cluster_stack == "docker-ferrol-1-32-v6"
    })
    .await;
    let wl = env.workload_client();
    assert!(workload_object(&wl, "v1", "ServiceAccount", "dashboard")
        .await
        .is_some());

    // Upgrade to v7: its BeforeClusterUpgrade stages are `dashboard` (delete) and `metrics-server`.
    env.set_class("c1", 7, Some("v1.32.3")).await;
    let held = env
        .wait_addon("c1", "the delete stage waiting for delete-gate", |a| {
            phases(a)
                .first()
                .is_some_and(|(_, p)| p == "waitingForPreCondition")
        })
        .await;
    assert_eq!(
        phases(&held),
        [
            ("dashboard".to_owned(), "waitingForPreCondition".to_owned()),
            ("metrics-server".to_owned(), "Pending".to_owned())
        ]
    );
    assert_eq!(held.spec.hook, "BeforeClusterUpgrade");
    assert!(
        workload_object(&wl, "v1", "ServiceAccount", "dashboard")
            .await
            .is_some(),
        "nothing is deleted before the delete stage's turn"
    );

    set_gate(&wl, "delete-gate", "true").await;
    let deleted = env
        .wait_addon("c1", "the delete stage done, metrics-server held", |a| {
            phases(a)
                .get(1)
                .is_some_and(|(_, p)| p == "waitingForPreCondition")
        })
        .await;
    assert_eq!(phases(&deleted)[0], ("dashboard".to_owned(), "done".to_owned()));
    let stage = &deleted.status.as_ref().expect("status").stages[0];
    assert_eq!(stage.action, "delete");
    let listed: Vec<_> = stage
        .resources
        .iter()
        .map(|r| format!("{}/{}", r.kind, r.name))
        .collect();
    assert_eq!(listed, ["ServiceAccount/dashboard"]);
    assert!(
        workload_object(&wl, "v1", "ServiceAccount", "dashboard")
            .await
            .is_none(),
        "the delete stage removed the dashboard before the later stages (not the final prune)"
    );
    let ms = workload_object(&wl, "apps/v1", "Deployment", "metrics-server")
        .await
        .expect("metrics-server");
    assert_eq!(ms["spec"]["replicas"], 2, "metrics-server not upgraded yet");

    set_gate(&wl, "apply-gate", "true").await;
    let done = env
        .wait_addon("c1", "v7 applied", |a| {
            ready(a) && a.spec.cluster_stack == "docker-ferrol-1-32-v7"
        })
        .await;
    assert_eq!(resource_names(&done), ["Deployment/metrics-server"]);
    let ms = workload_object(&wl, "apps/v1", "Deployment", "metrics-server")
        .await
        .expect("metrics-server");
    assert_eq!(ms["spec"]["replicas"], 3);

    // What a user sees with `kubectl get events` and on /metrics.
    let notes = event_notes(&env.client, "cluster-addon-c1").await;
    for expected in [
        "StageDeleted: stage dashboard: 1 objects deleted",
        "StageApplied: stage metrics-server: 1 objects applied",
        "FailedToEvaluatePreCondition: stage dashboard waits for its waitForPreCondition: ConfigMap kube-system/delete-gate does not exist yet",
        "FailedToEvaluatePreCondition: stage metrics-server waits for its waitForPreCondition: ConfigMap kube-system/apply-gate does not exist yet",
        "AddonsApplied: release docker-ferrol-1-32-v6: 2 addon objects in the workload cluster",
        "AddonsApplied: release docker-ferrol-1-32-v7: 1 addon objects in the workload cluster",
    ] {
        assert!(notes.iter().any(|n| n == expected), "{expected:?} not in {notes:#?}");
    }
    let text = env.metrics_text();
    for needle in [
        r#"stackhost_reconciles_total{controller="clusteraddon",result="ok"}"#,
        r#"stackhost_reconciles_total{controller="clusteraddon",result="requeue"}"#,
        r#"stackhost_reconcile_duration_seconds_count{controller="clusteraddon"}"#,
    ] {
        assert!(text.contains(needle), "{needle} missing in:\n{text}");
    }
}
