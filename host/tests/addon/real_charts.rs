//! The real addon charts of the SCS docker stack (cilium 1.16.6 and metrics-server 3.12.2, vendored in
//! tests/fixtures/real-stacks, unchanged) rendered by the real Helm with the stack's own values, then applied
//! object by object to a workload API emulator: every built-in kind they render must be served and accepted.

use std::collections::BTreeSet;
use std::path::PathBuf;

use kube::api::{Api, DynamicObject};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{json, Value};
use stackhost::addon::values::{render_values, TemplateInput};
use stackhost::render::{default_renderer, RenderRequest};

fn stack_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/real-stacks/stacks/docker-scs")
}

async fn get(
    client: &kube::Client,
    api_version: &str,
    kind: &str,
    plural: &str,
    ns: Option<&str>,
    name: &str,
) -> Value {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let ar = ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let api: Api<DynamicObject> = match ns {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let obj = api
        .get(name)
        .await
        .unwrap_or_else(|e| panic!("{kind} {name} is not stored: {e}"));
    serde_json::to_value(obj).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_cilium_and_metrics_server_charts_apply_completely() {
    let dir = stack_dir();
    let renderer = default_renderer().expect("Helm (scripts/deps/helm.sh)");
    let scratch = tempfile::tempdir().expect("tempdir");
    // The stack's cluster-addon-values.yaml, templated over a Cluster as the controller does it.
    let template = std::fs::read_to_string(dir.join("cluster-addon-values.yaml")).expect("values template");
    let input = TemplateInput {
        cluster: json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
            "metadata": {"name": "c1", "namespace": "default"},
            "spec": {"controlPlaneEndpoint": {"host": "172.18.0.3", "port": 6443}}}),
        ..Default::default()
    };
    let values = render_values(
        renderer.as_ref(),
        scratch.path(),
        &template,
        &input,
        "cluster-addon-values.yaml",
        "docker-scs",
    )
    .expect("values render");
    assert_eq!(values["metrics-server"]["commonLabels"]["domain"], "172.18.0.3");

    let cluster = kube_emulator::Cluster::start().await.expect("workload emulator");
    let mut kinds = BTreeSet::new();
    let mut refused = Vec::new();
    let mut applied = 0;
    for stage in ["cni", "metrics-server"] {
        let chart = dir.join("cluster-addon").join(stage);
        let objects = renderer
            .render(&RenderRequest {
                chart: &chart,
                values: &values,
                release_name: "cluster-addon",
                namespace: "kube-system",
                kube_version: Some("v1.30.10"),
                include_crds: true,
            })
            .unwrap_or_else(|e| panic!("render {stage}: {e}"));
        for mut obj in objects {
            kinds.insert(format!(
                "{} {}",
                obj["apiVersion"].as_str().unwrap_or(""),
                obj["kind"].as_str().unwrap_or("")
            ));
            // Helm leaves the namespace to the client; the controller applies into the release namespace.
            if obj["metadata"]["namespace"].is_null() {
                obj["metadata"]["namespace"] = json!("kube-system");
            }
            match cluster.apply_yaml(&obj.to_string(), "stackhost") {
                Ok(_) => applied += 1,
                Err(e) => refused.push(format!("{stage}: {e}")),
            }
        }
    }
    eprintln!("rendered kinds: {kinds:#?}");
    assert!(
        refused.is_empty(),
        "the emulator refused objects of the real charts:\n{}",
        refused.join("\n")
    );
    assert_eq!(applied, 27, "cilium renders 18 objects, metrics-server 9");
    for kind in [
        "apiregistration.k8s.io/v1 APIService",
        "apps/v1 DaemonSet",
        "rbac.authorization.k8s.io/v1 ClusterRole",
        "v1 ServiceAccount",
    ] {
        assert!(kinds.contains(kind), "{kind} not rendered: {kinds:?}");
    }

    let client = cluster.client().expect("client");
    let api_service = get(
        &client,
        "apiregistration.k8s.io/v1",
        "APIService",
        "apiservices",
        None,
        "v1beta1.metrics.k8s.io",
    )
    .await;
    assert_eq!(
        api_service["spec"]["service"],
        json!({"name": "metrics-server", "namespace": "kube-system", "port": 443})
    );
    assert_eq!(api_service["metadata"]["labels"]["domain"], "172.18.0.3");
    let cilium = get(
        &client,
        "apps/v1",
        "DaemonSet",
        "daemonsets",
        Some("kube-system"),
        "cilium",
    )
    .await;
    assert_eq!(
        cilium["spec"]["template"]["spec"]["containers"][0]["name"],
        "cilium-agent"
    );
    // The chart writes `defaultMode: 0400`, a YAML 1.1 octal: Helm sends 256, and so must stackhost.
    let modes: Vec<&Value> = cilium["spec"]["template"]["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .flat_map(|v| v.as_object().into_iter().flat_map(|o| o.values()))
        .filter_map(|source| source.get("defaultMode"))
        .collect();
    assert!(modes.contains(&&json!(256)), "defaultModes: {modes:?}");
    get(
        &client,
        "rbac.authorization.k8s.io/v1",
        "ClusterRole",
        "clusterroles",
        None,
        "system:metrics-server",
    )
    .await;
    get(
        &client,
        "rbac.authorization.k8s.io/v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        None,
        "metrics-server:system:auth-delegator",
    )
    .await;
    get(
        &client,
        "apps/v1",
        "Deployment",
        "deployments",
        Some("kube-system"),
        "cilium-operator",
    )
    .await;
}
