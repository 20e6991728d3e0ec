//! kube-rs against the emulator: watcher, reflector, Controller, server-side apply, status, deletion semantics.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy, ResourceExt,
    WatchEvent, WatchParams,
};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{reflector, watcher, WatchStreamExt};
use kube::{Client, CustomResource, CustomResourceExt, Resource};
use kube_emulator::{Cluster, ClusterOptions};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "example.com",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
#[kube(printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".spec.size"}"#)]
pub struct WidgetSpec {
    size: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    color: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct WidgetStatus {
    ready: bool,
}

async fn cluster_with_crd() -> (Cluster, Client) {
    let cluster = Cluster::start().await.expect("cluster starts");
    let client = cluster.client().expect("client");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &Widget::crd())
        .await
        .expect("CRD created");
    (cluster, client)
}

fn cm(name: &str, value: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": value}})).expect("configmap")
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    // Generous: the suite must pass on a loaded 2-core machine too.
    for _ in 0..600 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for: {what}");
}

#[tokio::test]
async fn watcher_sees_objects_created_after_it_started() {
    let cluster = Cluster::start().await.expect("starts");
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().expect("client"));
    let stream = watcher(api.clone(), watcher::Config::default()).applied_objects();
    let mut stream = Box::pin(stream);
    let creator = {
        let api = api.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            api.create(&PostParams::default(), &cm("late", "1"))
                .await
                .expect("create");
        })
    };
    let got = tokio::time::timeout(Duration::from_secs(10), stream.try_next())
        .await
        .expect("event in time")
        .expect("no error")
        .expect("an object");
    assert_eq!(got.name_any(), "late");
    creator.await.expect("creator");
}

#[tokio::test]
async fn streaming_list_watcher_gets_initial_objects() {
    let cluster = Cluster::start().await.expect("starts");
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().expect("client"));
    for i in 0..3 {
        api.create(&PostParams::default(), &cm(&format!("c{i}"), "x"))
            .await
            .expect("create");
    }
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default().streaming_lists()),
    )
    .applied_objects();
    let handle = tokio::spawn(async move { stream.for_each(|_| async {}).await });
    reader.wait_until_ready().await.expect("store ready");
    assert_eq!(reader.state().len(), 3);
    api.delete("c1", &DeleteParams::default()).await.expect("delete");
    eventually("reflector drops deleted object", || {
        let reader = reader.clone();
        async move { reader.state().len() == 2 }
    })
    .await;
    handle.abort();
}

#[tokio::test]
async fn reflector_converges_on_updates_and_deletes() {
    let cluster = Cluster::start().await.expect("starts");
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().expect("client"));
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(writer, watcher(api.clone(), watcher::Config::default()));
    let handle = tokio::spawn(async move { stream.for_each(|_| async {}).await });
    for i in 0..20 {
        api.create(&PostParams::default(), &cm(&format!("r{i}"), "0"))
            .await
            .expect("create");
    }
    for i in 0..10 {
        api.patch(
            &format!("r{i}"),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"k": "1"}})),
        )
        .await
        .expect("patch");
    }
    for i in 15..20 {
        api.delete(&format!("r{i}"), &DeleteParams::default())
            .await
            .expect("delete");
    }
    eventually("store matches the server", || {
        let reader = reader.clone();
        async move {
            let state = reader.state();
            state.len() == 15
                && state
                    .iter()
                    .filter(|c| c.data.as_ref().and_then(|d| d.get("k")).map(String::as_str) == Some("1"))
                    .count()
                    == 10
        }
    })
    .await;
    handle.abort();
}

#[tokio::test]
async fn controller_reconciles_when_an_owned_object_changes() {
    let (_cluster, client) = cluster_with_crd().await;
    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let w = widgets
        .create(
            &PostParams::default(),
            &Widget::new("w1", WidgetSpec { size: 1, color: None }),
        )
        .await
        .expect("widget");
    let owner = json!({"apiVersion": "example.com/v1", "kind": "Widget", "name": "w1", "uid": w.uid(), "controller": true});
    let child: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "w1-child", "ownerReferences": [owner]}, "data": {"k": "a"}}),
    )
    .expect("child");
    cms.create(&PostParams::default(), &child)
        .await
        .expect("child created");

    let count = Arc::new(AtomicUsize::new(0));
    let ctx = count.clone();
    let controller = Controller::new(widgets.clone(), watcher::Config::default())
        .owns(cms.clone(), watcher::Config::default())
        .run(
            |_obj: Arc<Widget>, ctx: Arc<Arc<AtomicUsize>>| async move {
                ctx.fetch_add(1, Ordering::SeqCst);
                Ok::<_, kube::Error>(Action::await_change())
            },
            |_obj, _err, _ctx| Action::await_change(),
            Arc::new(ctx),
        )
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);
    eventually("first reconcile", || {
        let c = count.clone();
        async move { c.load(Ordering::SeqCst) >= 1 }
    })
    .await;
    let before = count.load(Ordering::SeqCst);
    cms.patch(
        "w1-child",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "b"}})),
    )
    .await
    .expect("patch child");
    eventually("reconcile after the owned ConfigMap changed", || {
        let c = count.clone();
        async move { c.load(Ordering::SeqCst) > before }
    })
    .await;
    handle.abort();
}

#[tokio::test]
async fn server_side_apply_conflicts_then_force_takes_ownership() {
    let cluster = Cluster::start().await.expect("starts");
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().expect("client"));
    let cfg = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": "one", "extra": "x"}});
    api.patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(&cfg))
        .await
        .expect("alice applies");
    let bob =
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"k": "two"}});
    let err = api
        .patch("ssa", &PatchParams::apply("bob"), &Patch::Apply(&bob))
        .await
        .expect_err("conflict");
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 409);
            assert_eq!(
                s.message,
                "Apply failed with 1 conflict: conflict with \"alice\" using v1: .data.k"
            );
        }
        other => panic!("unexpected error {other}"),
    }
    let forced = api
        .patch("ssa", &PatchParams::apply("bob").force(), &Patch::Apply(&bob))
        .await
        .expect("forced");
    assert_eq!(
        forced.data.as_ref().and_then(|d| d.get("k")).map(String::as_str),
        Some("two")
    );
    // Alice drops "extra": she was its only owner, so it goes.
    let alice2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {}});
    let after = api
        .patch("ssa", &PatchParams::apply("alice"), &Patch::Apply(&alice2))
        .await
        .expect("alice reapplies");
    let data = after.data.unwrap_or_default();
    assert_eq!(data.get("extra"), None);
    assert_eq!(data.get("k").map(String::as_str), Some("two"));
    let managers: Vec<String> = after
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| m.manager)
        .collect();
    assert!(managers.contains(&"bob".to_string()), "{managers:?}");
}

#[tokio::test]
async fn stale_update_is_a_conflict_and_generation_follows_spec() {
    let (_cluster, client) = cluster_with_crd().await;
    let widgets: Api<Widget> = Api::default_namespaced(client);
    let w = widgets
        .create(
            &PostParams::default(),
            &Widget::new("g", WidgetSpec { size: 1, color: None }),
        )
        .await
        .expect("create");
    assert_eq!(w.metadata.generation, Some(1));
    let mut stale = w.clone();
    let mut fresh = w.clone();
    fresh.spec.size = 2;
    let updated = widgets
        .replace("g", &PostParams::default(), &fresh)
        .await
        .expect("update");
    assert_eq!(updated.metadata.generation, Some(2));
    stale.spec.size = 3;
    match widgets.replace("g", &PostParams::default(), &stale).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
            assert!(
                s.message.contains("the object has been modified"),
                "{}",
                s.message
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Status goes through /status only and does not bump generation.
    let st = widgets
        .patch_status(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .expect("status");
    assert_eq!(st.metadata.generation, Some(2));
    assert_eq!(st.status.map(|s| s.ready), Some(true));
    let main = widgets
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": false}, "metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .expect("main patch");
    assert_eq!(
        main.status.map(|s| s.ready),
        Some(true),
        "main endpoint must ignore status"
    );
    assert_eq!(main.metadata.generation, Some(2), "labels are not spec");
}

#[tokio::test]
async fn watch_from_an_expired_version_is_gone() {
    let cluster = Cluster::start_with(ClusterOptions {
        history: 5,
        ..Default::default()
    })
    .await
    .expect("starts");
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().expect("client"));
    let first = api
        .create(&PostParams::default(), &cm("h0", "0"))
        .await
        .expect("create");
    for i in 1..20 {
        api.create(&PostParams::default(), &cm(&format!("h{i}"), "0"))
            .await
            .expect("create");
    }
    let rv = first.resource_version().expect("rv");
    let mut stream = api
        .watch(&WatchParams::default(), &rv)
        .await
        .expect("watch starts")
        .boxed();
    match stream.try_next().await {
        Ok(Some(WatchEvent::Error(e))) => assert_eq!(e.code, 410),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_ends_at_timeout_and_sends_bookmarks() {
    let cluster = Cluster::start_with(ClusterOptions {
        bookmark_every: Duration::from_millis(100),
        ..Default::default()
    })
    .await
    .expect("starts");
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().expect("client"));
    let list = api.list(&ListParams::default()).await.expect("list");
    let rv = list.metadata.resource_version.expect("rv");
    let mut params = WatchParams::default().timeout(1);
    params.bookmarks = true;
    let events: Vec<_> = api
        .watch(&params, &rv)
        .await
        .expect("watch")
        .try_collect()
        .await
        .expect("clean end");
    assert!(
        events.iter().any(|e| matches!(e, WatchEvent::Bookmark(_))),
        "{events:?}"
    );
}

/// A bookmark promises that every event up to its resourceVersion was sent: a client that re-watches from it
/// must not miss anything. A slow reader with writes queued behind it is where a bookmark could run ahead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bookmarks_never_run_ahead_of_queued_events() {
    let cluster = Cluster::start_with(ClusterOptions {
        bookmark_every: Duration::from_millis(50),
        ..Default::default()
    })
    .await
    .expect("starts");
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().expect("client"));
    let rv = api
        .list(&ListParams::default())
        .await
        .expect("list")
        .metadata
        .resource_version
        .expect("rv");
    let mut params = WatchParams::default().timeout(4);
    params.bookmarks = true;
    let mut stream = api.watch(&params, &rv).await.expect("watch").boxed();
    const OBJECTS: usize = 1500;
    let writer = {
        let api = api.clone();
        tokio::spawn(async move {
            futures_util::stream::iter(0..OBJECTS)
                .for_each_concurrent(16, |i| {
                    let api = api.clone();
                    async move {
                        api.create(&PostParams::default(), &cm(&format!("b{i}"), "0"))
                            .await
                            .expect("create");
                    }
                })
                .await;
        })
    };
    let mut bookmarked = 0u64;
    let (mut added, mut bookmarks) = (0, 0);
    while let Some(event) = stream.try_next().await.expect("clean stream") {
        match event {
            WatchEvent::Added(o) => {
                let rv: u64 = o.resource_version().expect("rv").parse().expect("number");
                assert!(
                    rv > bookmarked,
                    "event at resourceVersion {rv} arrived after a bookmark at {bookmarked}"
                );
                added += 1;
                // A slow reader: the server queues events behind it while bookmarks come due.
                if added % 50 == 0 {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            WatchEvent::Bookmark(b) => {
                bookmarked = b.metadata.resource_version.parse().expect("number");
                bookmarks += 1;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    writer.await.expect("writer");
    assert_eq!(
        added, OBJECTS,
        "every create was delivered before the watch ended"
    );
    assert!(bookmarks > 0, "bookmarks were sent");
}

#[tokio::test]
async fn finalizers_hold_deletion_until_removed() {
    let cluster = Cluster::start().await.expect("starts");
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().expect("client"));
    let mut c = cm("fin", "x");
    c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    api.create(&PostParams::default(), &c).await.expect("create");
    api.delete("fin", &DeleteParams::default())
        .await
        .expect("delete accepted");
    let held = api.get("fin").await.expect("still there");
    assert!(held.metadata.deletion_timestamp.is_some());
    api.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("remove finalizer");
    assert!(api.get_opt("fin").await.expect("get").is_none());
}

#[tokio::test]
async fn owner_deletion_collects_dependents_and_orphan_keeps_them() {
    let cluster = Cluster::start().await.expect("starts");
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().expect("client"));
    let make = |owner: &str, uid: &str, name: &str| -> ConfigMap {
        serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": owner, "uid": uid}]}})).expect("cm")
    };
    let o1 = api
        .create(&PostParams::default(), &cm("owner1", "x"))
        .await
        .expect("owner1");
    let o2 = api
        .create(&PostParams::default(), &cm("owner2", "x"))
        .await
        .expect("owner2");
    api.create(
        &PostParams::default(),
        &make("owner1", &o1.uid().expect("uid"), "dep1"),
    )
    .await
    .expect("dep1");
    api.create(
        &PostParams::default(),
        &make("owner2", &o2.uid().expect("uid"), "dep2"),
    )
    .await
    .expect("dep2");
    api.delete("owner1", &DeleteParams::foreground())
        .await
        .expect("foreground delete");
    eventually("owner1 and dep1 gone", || {
        let api = api.clone();
        async move {
            api.get_opt("owner1").await.ok().flatten().is_none()
                && api.get_opt("dep1").await.ok().flatten().is_none()
        }
    })
    .await;
    let orphan = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        ..Default::default()
    };
    api.delete("owner2", &orphan).await.expect("orphan delete");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let dep2 = api.get("dep2").await.expect("dep2 survives");
    assert!(dep2.metadata.owner_references.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn namespace_deletion_removes_its_objects() {
    let cluster = Cluster::start().await.expect("starts");
    let client = cluster.client().expect("client");
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "doomed"}})).expect("ns"),
    )
    .await
    .expect("ns");
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "doomed");
    api.create(&PostParams::default(), &cm("inside", "x"))
        .await
        .expect("cm");
    nss.delete("doomed", &DeleteParams::default())
        .await
        .expect("delete ns");
    eventually("namespace gone", || {
        let nss = nss.clone();
        async move { nss.get_opt("doomed").await.ok().flatten().is_none() }
    })
    .await;
    let err = api
        .create(&PostParams::default(), &cm("late", "x"))
        .await
        .expect_err("namespace is gone");
    assert!(
        matches!(err, kube::Error::Api(s) if s.code == 404 && s.message == "namespaces \"doomed\" not found")
    );
}

#[tokio::test]
async fn dry_run_stores_nothing() {
    let cluster = Cluster::start().await.expect("starts");
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().expect("client"));
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    api.create(&pp, &cm("dry", "x")).await.expect("dry create");
    assert!(api.get_opt("dry").await.expect("get").is_none());
    // Deleting a ConfigMap answers with a success Status; a custom resource answers with the object.
    api.create(&PostParams::default(), &cm("gone", "x"))
        .await
        .expect("create");
    assert!(api
        .delete("gone", &DeleteParams::default())
        .await
        .expect("delete")
        .is_right());
}

#[tokio::test]
async fn list_pages_with_limit_and_continue_and_selectors() {
    let cluster = Cluster::start().await.expect("starts");
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().expect("client"));
    for i in 0..7 {
        let mut c = cm(&format!("p{i}"), "x");
        c.metadata.labels = Some(
            [(
                "parity".to_string(),
                if i % 2 == 0 { "even" } else { "odd" }.to_string(),
            )]
            .into(),
        );
        api.create(&PostParams::default(), &c).await.expect("create");
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().limit(3);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.expect("page");
        assert!(page.items.len() <= 3);
        names.extend(page.items.iter().map(|c| c.name_any()));
        token = page.metadata.continue_.filter(|c| !c.is_empty());
        if token.is_none() {
            break;
        }
    }
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4", "p5", "p6"]);
    let even = api
        .list(&ListParams::default().labels("parity=even"))
        .await
        .expect("labels");
    assert_eq!(even.items.len(), 4);
    let one = api
        .list(&ListParams::default().fields("metadata.name=p3"))
        .await
        .expect("fields");
    assert_eq!(one.items.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["p3"]);
}

#[tokio::test]
async fn clusters_are_independent_and_state_survives_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let a = Cluster::start_with(ClusterOptions {
        state_file: Some(state.clone()),
        ..Default::default()
    })
    .await
    .expect("a");
    let b = Cluster::start().await.expect("b");
    let api_a: Api<ConfigMap> = Api::default_namespaced(a.client().expect("client"));
    let api_b: Api<ConfigMap> = Api::default_namespaced(b.client().expect("client"));
    let created = api_a
        .create(&PostParams::default(), &cm("kept", "1"))
        .await
        .expect("create");
    assert!(
        api_b.get_opt("kept").await.expect("get").is_none(),
        "cluster b must not see cluster a's objects"
    );
    a.shutdown().await.expect("shutdown writes state");
    let again = Cluster::start_with(ClusterOptions {
        state_file: Some(state),
        ..Default::default()
    })
    .await
    .expect("restart");
    let api: Api<ConfigMap> = Api::default_namespaced(again.client().expect("client"));
    let kept = api.get("kept").await.expect("object survived");
    assert_eq!(kept.uid(), created.uid());
    let next = api
        .create(&PostParams::default(), &cm("after", "1"))
        .await
        .expect("create after restart");
    let rv = |c: &ConfigMap| {
        c.resource_version()
            .and_then(|r| r.parse::<u64>().ok())
            .unwrap_or(0)
    };
    assert!(
        rv(&next) > rv(&kept),
        "resourceVersion keeps increasing across restarts"
    );
}

#[tokio::test]
async fn deleting_a_crd_stops_serving_its_kind() {
    let (_cluster, client) = cluster_with_crd().await;
    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    widgets
        .create(
            &PostParams::default(),
            &Widget::new("w", WidgetSpec { size: 1, color: None }),
        )
        .await
        .expect("widget");
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .expect("delete crd");
    eventually("CRD gone", || {
        let crds = crds.clone();
        async move { crds.get_opt("widgets.example.com").await.ok().flatten().is_none() }
    })
    .await;
    match widgets.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => assert_eq!(s.code, 404),
        other => panic!("expected 404 once the CRD is gone, got {other:?}"),
    }
}

#[tokio::test]
async fn discovery_finds_crds_and_recorded_events_show_in_core_events() {
    let (_cluster, client) = cluster_with_crd().await;
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await
        .expect("discovery");
    let (ar, caps) = discovery
        .resolve_gvk(&kube::core::GroupVersionKind::gvk("example.com", "v1", "Widget"))
        .expect("Widget discovered");
    assert_eq!(ar.plural, "widgets");
    assert_eq!(caps.scope, kube::discovery::Scope::Namespaced);

    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    let w = widgets
        .create(
            &PostParams::default(),
            &Widget::new("ev", WidgetSpec { size: 1, color: None }),
        )
        .await
        .expect("widget");
    let recorder = kube::runtime::events::Recorder::new(
        client.clone(),
        kube::runtime::events::Reporter {
            controller: "widget-controller".into(),
            instance: None,
        },
    );
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Normal,
        reason: "Reconciled".into(),
        note: Some("widget is ready".into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &w.object_ref(&()))
        .await
        .expect("publish");
    recorder
        .publish(&event, &w.object_ref(&()))
        .await
        .expect("publish again (series patch)");
    let core: Api<k8s_openapi::api::core::v1::Event> = Api::default_namespaced(client);
    let list = core.list(&ListParams::default()).await.expect("core events");
    let ev = list
        .items
        .iter()
        .find(|e| e.reason.as_deref() == Some("Reconciled"))
        .expect("event visible as core/v1");
    assert_eq!(ev.message.as_deref(), Some("widget is ready"));
    assert_eq!(ev.involved_object.name.as_deref(), Some("ev"));
    assert_eq!(list.items.len(), 1, "the second publish updates the same event");
}

#[tokio::test]
async fn https_cluster_with_a_generated_ca() {
    let cluster = Cluster::start_with(ClusterOptions {
        tls: true,
        ..Default::default()
    })
    .await
    .expect("starts");
    assert!(cluster.url().starts_with("https://127.0.0.1:"));
    assert!(cluster
        .ca_pem()
        .is_some_and(|p| p.starts_with("-----BEGIN CERTIFICATE-----")));
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().expect("client"));
    api.create(&PostParams::default(), &cm("tls", "1"))
        .await
        .expect("create over HTTPS");
    assert_eq!(
        api.get("tls")
            .await
            .expect("get")
            .data
            .and_then(|d| d.get("k").cloned())
            .as_deref(),
        Some("1")
    );
    // A client without the CA is refused.
    let mut untrusted = cluster.kube_config().expect("config");
    untrusted.root_cert = None;
    let client = Client::try_from(untrusted).expect("client");
    assert!(Api::<ConfigMap>::default_namespaced(client)
        .get("tls")
        .await
        .is_err());
}

#[tokio::test]
async fn controllers_apply_status_without_metadata() {
    let (_cluster, client) = cluster_with_crd().await;
    let widgets: Api<Widget> = Api::default_namespaced(client);
    let created = widgets
        .create(
            &PostParams::default(),
            &Widget::new("st", WidgetSpec { size: 2, color: None }),
        )
        .await
        .expect("create");
    let status = json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": {"ready": true}});
    let after = widgets
        .patch_status(
            "st",
            &PatchParams::apply("widget-controller").force(),
            &Patch::Apply(&status),
        )
        .await
        .expect("status apply");
    assert_eq!(after.status.map(|s| s.ready), Some(true));
    assert_eq!(after.spec.size, 2, "status apply leaves spec alone");
    assert_eq!(after.metadata.generation, created.metadata.generation);
    let entry = after
        .metadata
        .managed_fields
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.manager.as_deref() == Some("widget-controller"))
        .expect("manager recorded");
    assert_eq!(
        (entry.operation.as_deref(), entry.subresource.as_deref()),
        (Some("Apply"), Some("status"))
    );
    // Re-applying the same status is a no-op: no new resourceVersion.
    let again = widgets
        .patch_status(
            "st",
            &PatchParams::apply("widget-controller").force(),
            &Patch::Apply(&status),
        )
        .await
        .expect("again");
    assert_eq!(again.metadata.resource_version, after.metadata.resource_version);
    // generateName picks a unique name.
    let mut gen = Widget::new("", WidgetSpec { size: 1, color: None });
    gen.metadata.name = None;
    gen.metadata.generate_name = Some("auto-".into());
    let made = widgets
        .create(&PostParams::default(), &gen)
        .await
        .expect("generateName");
    assert!(
        made.name_any().starts_with("auto-") && made.name_any().len() == 10,
        "{}",
        made.name_any()
    );
}

#[tokio::test]
async fn watchers_resume_after_the_cluster_restarts_on_the_same_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state.json");
    let first = Cluster::start_with(ClusterOptions {
        state_file: Some(state.clone()),
        ..Default::default()
    })
    .await
    .expect("first");
    let port = first.addr().port();
    let client = first.client().expect("client");
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    api.create(&PostParams::default(), &cm("before", "1"))
        .await
        .expect("create");
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default()).default_backoff(),
    );
    let handle = tokio::spawn(async move { stream.for_each(|_| async {}).await });
    reader.wait_until_ready().await.expect("ready");
    first.shutdown().await.expect("shutdown");
    let second = Cluster::start_with(ClusterOptions {
        port,
        state_file: Some(state),
        ..Default::default()
    })
    .await
    .expect("restart on the same port");
    let api2: Api<ConfigMap> = Api::default_namespaced(second.client().expect("client"));
    api2.create(&PostParams::default(), &cm("after", "1"))
        .await
        .expect("create after restart");
    eventually(
        "the old client's watcher sees the object created after the restart",
        || {
            let reader = reader.clone();
            async move {
                reader.state().iter().any(|c| c.name_any() == "after")
                    && reader.state().iter().any(|c| c.name_any() == "before")
            }
        },
    )
    .await;
    handle.abort();
}

#[tokio::test]
async fn foreground_deletion_waits_for_blocking_dependents() {
    let cluster = Cluster::start().await.expect("starts");
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().expect("client"));
    let owner = api
        .create(&PostParams::default(), &cm("fg-owner", "x"))
        .await
        .expect("owner");
    let dep: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "fg-dep", "finalizers": ["example.com/slow"],
        "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "fg-owner", "uid": owner.uid(), "blockOwnerDeletion": true}]}}))
    .expect("dep");
    api.create(&PostParams::default(), &dep).await.expect("dep");
    api.delete("fg-owner", &DeleteParams::foreground())
        .await
        .expect("delete");
    eventually("dependent marked for deletion", || {
        let api = api.clone();
        async move {
            api.get("fg-dep")
                .await
                .is_ok_and(|d| d.metadata.deletion_timestamp.is_some())
        }
    })
    .await;
    let held = api
        .get("fg-owner")
        .await
        .expect("owner still there while its dependent is");
    assert_eq!(held.finalizers(), ["foregroundDeletion"]);
    api.patch(
        "fg-dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .expect("release dependent");
    eventually("owner gone after its dependent", || {
        let api = api.clone();
        async move { api.get_opt("fg-owner").await.ok().flatten().is_none() }
    })
    .await;
}

#[tokio::test]
async fn kube_runtime_finalizer_helper_adds_and_removes_its_finalizer() {
    use kube::runtime::finalizer::{finalizer, Event as Finalizer};
    let (_cluster, client) = cluster_with_crd().await;
    let widgets: Api<Widget> = Api::default_namespaced(client.clone());
    widgets
        .create(
            &PostParams::default(),
            &Widget::new("fz", WidgetSpec { size: 1, color: None }),
        )
        .await
        .expect("widget");
    let cleaned = Arc::new(AtomicUsize::new(0));
    let ctx = Arc::new((widgets.clone(), cleaned.clone()));
    let controller = Controller::new(widgets.clone(), watcher::Config::default())
        .run(
            |obj: Arc<Widget>, ctx: Arc<(Api<Widget>, Arc<AtomicUsize>)>| async move {
                let cleaned = ctx.1.clone();
                finalizer(&ctx.0, "example.com/cleanup", obj, |event| async move {
                    match event {
                        Finalizer::Apply(_) => Ok::<_, kube::Error>(Action::await_change()),
                        Finalizer::Cleanup(_) => {
                            cleaned.fetch_add(1, Ordering::SeqCst);
                            Ok(Action::await_change())
                        }
                    }
                })
                .await
                .map_err(|e| kube::Error::Service(e.to_string().into()))
            },
            |_obj, _err, _ctx| Action::requeue(Duration::from_millis(100)),
            ctx,
        )
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);
    eventually("finalizer added", || {
        let widgets = widgets.clone();
        async move {
            widgets
                .get("fz")
                .await
                .is_ok_and(|w| w.finalizers() == ["example.com/cleanup"])
        }
    })
    .await;
    widgets
        .delete("fz", &DeleteParams::default())
        .await
        .expect("delete");
    eventually("cleanup ran and the object is gone", || {
        let widgets = widgets.clone();
        let cleaned = cleaned.clone();
        async move { cleaned.load(Ordering::SeqCst) >= 1 && widgets.get_opt("fz").await.ok().flatten().is_none() }
    })
    .await;
    handle.abort();
}

#[tokio::test]
async fn metadata_watcher_and_get_metadata_see_partial_objects() {
    let cluster = Cluster::start().await.expect("starts");
    let api: Api<ConfigMap> = Api::default_namespaced(cluster.client().expect("client"));
    api.create(&PostParams::default(), &cm("meta1", "1"))
        .await
        .expect("create");
    let meta = api.get_metadata("meta1").await.expect("get_metadata");
    assert_eq!(
        meta.types.map(|t| t.kind).as_deref(),
        Some("PartialObjectMetadata")
    );
    assert_eq!(meta.metadata.name.as_deref(), Some("meta1"));
    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(
            Api::<kube::core::PartialObjectMeta<ConfigMap>>::default_namespaced(
                cluster.client().expect("client"),
            ),
            watcher::Config::default(),
        ),
    );
    let handle = tokio::spawn(async move { stream.for_each(|_| async {}).await });
    reader.wait_until_ready().await.expect("ready");
    api.create(&PostParams::default(), &cm("meta2", "1"))
        .await
        .expect("create");
    eventually("metadata watcher sees the new object", || {
        let reader = reader.clone();
        async move {
            reader
                .state()
                .iter()
                .any(|m| m.metadata.name.as_deref() == Some("meta2"))
        }
    })
    .await;
    handle.abort();
}

#[tokio::test]
async fn watchers_relist_after_a_reset_without_state() {
    let first = Cluster::start().await.expect("first");
    let port = first.addr().port();
    let api: Api<ConfigMap> = Api::default_namespaced(first.client().expect("client"));
    for i in 0..5 {
        api.create(&PostParams::default(), &cm(&format!("old{i}"), "1"))
            .await
            .expect("create");
    }
    let (reader, writer) = reflector::store::<ConfigMap>();
    let stream = reflector(
        writer,
        watcher(api.clone(), watcher::Config::default()).default_backoff(),
    );
    let handle = tokio::spawn(async move { stream.for_each(|_| async {}).await });
    reader.wait_until_ready().await.expect("ready");
    first.shutdown().await.expect("shutdown");
    // Same port, no state: resourceVersions start again below what the watcher has seen.
    let second = Cluster::start_with(ClusterOptions {
        port,
        ..Default::default()
    })
    .await
    .expect("reset");
    let api2: Api<ConfigMap> = Api::default_namespaced(second.client().expect("client"));
    api2.create(&PostParams::default(), &cm("fresh", "1"))
        .await
        .expect("create");
    eventually("the watcher relists the reset cluster", || {
        let reader = reader.clone();
        async move {
            let names: Vec<String> = reader.state().iter().map(|c| c.name_any()).collect();
            names == ["fresh"]
        }
    })
    .await;
    handle.abort();
}

#[tokio::test]
async fn apply_yaml_installs_crds_and_objects_in_one_go() {
    let cluster = Cluster::start().await.expect("starts");
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let crd = std::fs::read_to_string(format!("{dir}/widget-crd.yaml")).expect("fixture");
    let text = format!("{crd}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\napiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w\n  namespace: shop\nspec:\n  size: 4\n");
    let applied = cluster.apply_yaml(&text, "fixtures").expect("applied");
    assert_eq!(
        applied,
        [
            "CustomResourceDefinition/widgets.example.com",
            "Namespace/shop",
            "Widget/w"
        ]
    );
    let widgets: Api<Widget> = Api::namespaced(cluster.client().expect("client"), "shop");
    assert_eq!(widgets.get("w").await.expect("served").spec.size, 4);
    let err = cluster
        .apply_yaml(
            "apiVersion: example.com/v1\nkind: Gadget\nmetadata:\n  name: g\n",
            "fixtures",
        )
        .expect_err("unknown kind");
    assert_eq!(err.to_string(), "cannot apply Gadget g (document 1): no kind \"Gadget\" is served in \"example.com/v1\"; apply its CRD first");
    let err = cluster
        .apply_yaml(
            "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: bad\nspec:\n  size: 1000\n",
            "fixtures",
        )
        .expect_err("invalid");
    assert!(
        err.to_string().contains("spec.size: Invalid value: 1000"),
        "{err}"
    );
}
