//! Server-side apply I/O against the API emulator: a render with a CRD and its objects is applied in one
//! go, re-applying is idempotent, a smaller render prunes, and delete removes everything; a changed
//! immutable field recreates the objects that allow it.

use kube::api::{Api, DynamicObject};
use kube::discovery::ApiResource;
use serde_json::{json, Value};
use stackhost::api::ResourceStatus;
use stackhost::apply::ssa::Applier;
use stackhost::apply::{Confinement, Owner};

/// A release the admin lets write anywhere (the render has a Namespace, a CRD and a foreign namespace).
fn owner() -> Owner {
    Owner::release(
        "stacks",
        "test-release",
        Confinement {
            cluster_kinds: vec!["*".into()],
            namespaces: vec!["*".into()],
        },
    )
}

fn render() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"a": "1"}}),
        json!({"apiVersion": "example.com/v1", "kind": "Widget",
               "metadata": {"name": "w1", "namespace": "team"}, "spec": {"size": 3}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team"}}),
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": "widgets.example.com"},
               "spec": {"group": "example.com", "scope": "Namespaced",
                        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                        "versions": [{"name": "v1", "served": true, "storage": true,
                                      "schema": {"openAPIV3Schema": {"type": "object",
                                          "x-kubernetes-preserve-unknown-fields": true}}}]}}),
    ]
}

/// The namespace the render defaults to exists, as the ClusterStack's namespace does in the controller.
async fn cluster_with_namespace() -> anyhow::Result<kube_emulator::Cluster> {
    let cluster = kube_emulator::Cluster::start().await?;
    cluster.apply_yaml(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: stacks\n",
        "test",
    )?;
    Ok(cluster)
}

fn widgets(client: kube::Client) -> Api<DynamicObject> {
    let ar = ApiResource {
        group: "example.com".into(),
        version: "v1".into(),
        api_version: "example.com/v1".into(),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    Api::namespaced_with(client, "team", &ar)
}

#[tokio::test]
async fn a_render_with_a_crd_is_applied_pruned_and_deleted() -> anyhow::Result<()> {
    let cluster = cluster_with_namespace().await?;
    let client = cluster.client()?;
    let applier = Applier::new(client.clone());

    let first = applier.sync(&render(), "stacks", &[], &owner()).await?;
    assert_eq!(first.failures(), 0, "{:?}", first.first_error());
    assert_eq!(first.resources.len(), 4);
    assert!(first
        .resources
        .iter()
        .all(|r| r.status == Some(ResourceStatus::Synced)));
    // Namespace and CRD first, whatever order the chart rendered them in.
    let kinds: Vec<_> = first.desired.iter().map(|d| d.key.kind.as_str()).collect();
    assert_eq!(kinds[..2], ["Namespace", "CustomResourceDefinition"]);

    let widget = widgets(client.clone()).get("w1").await?;
    assert_eq!(widget.data["spec"]["size"], 3);
    let labels = widget.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels.get("clusterstack.x-k8s.io/instance").map(String::as_str),
        Some("owned")
    );
    let managers: Vec<_> = widget
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"stackhost".to_owned()), "{managers:?}");
    // A ConfigMap without a namespace goes to the default namespace given.
    let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), "stacks");
    assert!(cms.get_opt("settings").await?.is_some());

    // Same render again: nothing fails, same status.
    let again = applier
        .sync(&render(), "stacks", &first.resources, &owner())
        .await?;
    assert_eq!(again.resources, first.resources);

    // The widget leaves the render: it is pruned.
    let smaller: Vec<Value> = render().into_iter().filter(|o| o["kind"] != "Widget").collect();
    let pruned = applier
        .sync(&smaller, "stacks", &again.resources, &owner())
        .await?;
    assert_eq!(pruned.resources.len(), 3);
    assert!(widgets(client.clone()).get_opt("w1").await?.is_none());

    // Deleting what was applied removes it; deleting again is not an error.
    let gone = applier
        .delete(&stackhost::apply::objects_to_delete(&pruned.resources), &owner())
        .await;
    assert!(gone.values().all(Result::is_ok), "{gone:?}");
    assert!(cms.get_opt("settings").await?.is_none());
    let twice = applier.delete(&pruned.resources, &owner()).await;
    assert!(twice.values().all(Result::is_ok), "{twice:?}");
    cluster.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn an_invalid_object_is_reported_per_object_and_the_rest_is_applied() -> anyhow::Result<()> {
    let cluster = cluster_with_namespace().await?;
    let applier = Applier::new(cluster.client()?);
    let mut objects = render();
    // Not a valid ConfigMap: data values must be strings.
    objects.push(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "bad"}, "data": {"n": 5}}),
    );
    let out = applier.sync(&objects, "stacks", &[], &owner()).await?;
    assert_eq!(out.failures(), 1);
    let error = out.first_error().unwrap_or_default();
    assert!(error.contains("ConfigMap stacks/bad"), "{error}");
    let bad = out
        .resources
        .iter()
        .find(|r| r.name == "bad")
        .and_then(|r| r.status);
    assert_eq!(bad, Some(ResourceStatus::NotSynced));

    // A kind nobody serves is refused before anything is sent, naming the object.
    let unknown = vec![json!({"apiVersion": "nowhere.io/v1", "kind": "Ghost", "metadata": {"name": "g"}})];
    let refused = applier
        .sync(&unknown, "stacks", &[], &owner())
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        refused.contains("Ghost") && refused.contains("install its CRD"),
        "{refused}"
    );
    cluster.shutdown().await?;
    Ok(())
}

#[tokio::test]
async fn a_changed_immutable_field_recreates_what_allows_it_and_reports_the_rest() -> anyhow::Result<()> {
    let cluster = cluster_with_namespace().await?;
    let client = cluster.client()?;
    let applier = Applier::new(client.clone());
    let pod = json!({"metadata": {"labels": {"app": "web", "tier": "front"}},
                     "spec": {"containers": [{"name": "web", "image": "nginx"}]}});
    let render = |selector: Value, service: &str| {
        vec![
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
                   "spec": {"selector": {"matchLabels": selector}, "template": pod}}),
            json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
                   "spec": {"serviceName": service, "selector": {"matchLabels": {"app": "web"}}, "template": pod}}),
        ]
    };
    let first = applier
        .sync(&render(json!({"app": "web"}), "db"), "stacks", &[], &owner())
        .await?;
    assert_eq!(first.failures(), 0, "{:?}", first.first_error());
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> = Api::namespaced(client.clone(), "stacks");
    let before = deployments.get("web").await?;

    let second = applier
        .sync(
            &render(json!({"app": "web", "tier": "front"}), "db-headless"),
            "stacks",
            &first.resources,
            &owner(),
        )
        .await?;
    // The Deployment came back with the new selector (a new object); the StatefulSet is refused by name.
    let after = deployments.get("web").await?;
    assert_ne!(after.metadata.uid, before.metadata.uid);
    let selector = after
        .spec
        .expect("spec")
        .selector
        .match_labels
        .unwrap_or_default();
    assert_eq!(selector.get("tier").map(String::as_str), Some("front"));
    assert_eq!(second.failures(), 1);
    let error = second.first_error().unwrap_or_default();
    assert!(
        error.contains("StatefulSet") && error.contains("updates to statefulset spec for fields other than"),
        "{error}"
    );
    cluster.shutdown().await?;
    Ok(())
}
