//! Tests of the pure apply decisions.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;

fn scope(group: &str, kind: &str) -> Scope {
    match (group, kind) {
        ("", "Namespace")
        | ("apiextensions.k8s.io", "CustomResourceDefinition")
        | ("rbac.authorization.k8s.io", "ClusterRole") => Scope::Cluster,
        ("", "ConfigMap")
        | ("apps", "Deployment")
        | ("batch", "Job")
        | ("cluster.x-k8s.io", "ClusterClass") => Scope::Namespaced,
        _ => Scope::Unknown,
    }
}

fn render() -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "extra"}}),
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "ClusterClass", "metadata": {"name": "cc"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "extra", "labels": {"a": "b"}}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}, "spec": {"template": {"spec": {}}}}),
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {"template": {"metadata": {"labels": {"x": "y"}}}}}),
    ]
}

#[test]
fn objects_keep_their_own_namespace_and_get_the_owner_label() {
    let desired = desired_objects(&render(), "cluster", &Owner::Workload, scope).expect("valid");
    let keys: Vec<String> = desired.iter().map(|d| d.key.to_string()).collect();
    assert_eq!(
        keys,
        [
            "Namespace extra",
            "ClusterClass.cluster.x-k8s.io cluster/cc",
            "ConfigMap extra/cm",
            "Deployment.apps cluster/web",
            "Job.batch cluster/j"
        ]
    );
    // Upstream sent cm to the CSR namespace; here it stays in `extra`.
    assert_eq!(desired[2].object["metadata"]["namespace"], "extra");
    assert_eq!(desired[1].object["metadata"]["namespace"], "cluster");
    assert!(desired[0].object["metadata"].get("namespace").is_none());
    for d in &desired {
        assert_eq!(d.object["metadata"]["labels"][OWNER_LABEL], "owned", "{}", d.key);
    }
    assert_eq!(
        desired[2].object["metadata"]["labels"]["a"], "b",
        "existing labels are kept"
    );
    assert_eq!(
        desired[3].object["spec"]["template"]["metadata"]["labels"][OWNER_LABEL],
        "owned"
    );
    assert_eq!(
        desired[4].object["spec"]["template"]["metadata"]["labels"],
        json!({"x": "y", OWNER_LABEL: "owned"})
    );
    assert!(
        desired[2].object.get("spec").is_none(),
        "no pod template invented for a ConfigMap"
    );
    assert_eq!(
        (desired[3].key.group.as_str(), desired[3].version.as_str()),
        ("apps", "v1")
    );
}

#[test]
fn invalid_renders_are_rejected_with_the_object_named() {
    let err = |objs: Vec<Value>| {
        desired_objects(&objs, "ns", &Owner::Workload, scope)
            .expect_err("invalid")
            .to_string()
    };
    assert_eq!(
        err(vec![json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}})]),
        "Widget (example.com/v1) \"w\" cannot be applied: the API server does not serve this kind (install its CRD first)"
    );
    assert_eq!(
        err(vec![json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n", "namespace": "x"}})]),
        "Namespace \"n\" is cluster-scoped but the chart sets metadata.namespace \"x\"; remove it from the template"
    );
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}});
    assert_eq!(
        err(vec![
            cm.clone(),
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm", "namespace": "ns"}})
        ]),
        "the render contains ConfigMap ns/cm twice; object names must be unique per kind and namespace"
    );
    assert_eq!(
        err(vec![json!({"kind": "ConfigMap", "metadata": {"name": "a"}})]),
        "rendered object #0 has no apiVersion"
    );
    // Same name, different kind: two objects (upstream keyed on namespace/name only).
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "cm"}});
    assert_eq!(
        desired_objects(&[cm, deploy], "ns", &Owner::Workload, scope).map(|d| d.len()),
        Ok(2)
    );
}

fn res(kind: &str, ns: &str, name: &str, status: ResourceStatus) -> Resource {
    let group = if kind == "Deployment" { "apps" } else { "" };
    Resource {
        group: group.into(),
        version: "v1".into(),
        kind: kind.into(),
        namespace: ns.into(),
        name: name.into(),
        status: Some(status),
        error: String::new(),
    }
}

#[test]
fn pruning_removes_what_the_new_render_dropped() {
    let desired = desired_objects(
        &[json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "keep"}})],
        "ns",
        &Owner::Workload,
        scope,
    )
    .expect("valid");
    let previous = vec![
        res("ConfigMap", "ns", "keep", ResourceStatus::Synced),
        res("Namespace", "", "gone-ns", ResourceStatus::Synced),
        res("Deployment", "ns", "keep", ResourceStatus::Synced), // same name, other kind: pruned
        res("ConfigMap", "ns", "failed-before", ResourceStatus::NotSynced),
    ];
    let prune: Vec<String> = objects_to_prune(&previous, &desired)
        .iter()
        .map(|r| ObjectKey::of_resource(r).to_string())
        .collect();
    // Dependents first, the Namespace last.
    assert_eq!(
        prune,
        [
            "Deployment.apps ns/keep",
            "ConfigMap ns/failed-before",
            "Namespace gone-ns"
        ]
    );
    assert!(objects_to_prune(&previous[..1], &desired).is_empty());
    // Deleting the release removes everything, synced or not (upstream skipped synced objects).
    assert_eq!(objects_to_delete(&previous).len(), 4);
}

#[test]
fn status_resources_record_each_outcome() {
    let desired = desired_objects(&render()[1..4], "cluster", &Owner::Workload, scope).expect("valid");
    let mut applied = BTreeMap::new();
    applied.insert(desired[0].key.clone(), Ok(()));
    applied.insert(desired[1].key.clone(), Err("admission webhook denied".to_owned()));
    // desired[2] was not attempted (e.g. the reconcile stopped early).
    let previous = vec![
        res("ConfigMap", "cluster", "old", ResourceStatus::Synced),
        res("ConfigMap", "cluster", "old2", ResourceStatus::Synced),
    ];
    let mut pruned = BTreeMap::new();
    pruned.insert(ObjectKey::of_resource(&previous[0]), Err("forbidden".to_owned()));
    pruned.insert(ObjectKey::of_resource(&previous[1]), Ok(()));
    let status = resources_status(&desired, &applied, &pruned, &previous);
    let view: Vec<(String, Option<ResourceStatus>, String)> = status
        .iter()
        .map(|r| (ObjectKey::of_resource(r).to_string(), r.status, r.error.clone()))
        .collect();
    assert_eq!(
        view,
        [
            (
                "ConfigMap cluster/old".to_owned(),
                Some(ResourceStatus::NotSynced),
                "prune failed: forbidden".to_owned()
            ),
            (
                "ConfigMap extra/cm".to_owned(),
                Some(ResourceStatus::NotSynced),
                "admission webhook denied".to_owned()
            ),
            (
                "Deployment.apps cluster/web".to_owned(),
                Some(ResourceStatus::NotSynced),
                "not applied yet".to_owned()
            ),
            (
                "ClusterClass.cluster.x-k8s.io cluster/cc".to_owned(),
                Some(ResourceStatus::Synced),
                String::new()
            ),
        ]
    );
    assert!(!all_synced(&status));
    assert!(all_synced(&status[3..]));
    assert_eq!(status[3].version, "v1beta2");
}

#[test]
fn api_versions_split_into_group_and_version() {
    assert_eq!(split_api_version("v1"), ("", "v1"));
    assert_eq!(split_api_version("apps/v1"), ("apps", "v1"));
    assert_eq!(
        split_api_version("cluster.x-k8s.io/v1beta2"),
        ("cluster.x-k8s.io", "v1beta2")
    );
}

fn release_owner(confinement: Confinement) -> Owner {
    Owner::release("team-a", "docker-ferrol-1-32-v1", confinement)
}

fn hostile_render() -> Vec<Value> {
    vec![
        json!({"apiVersion": "cluster.x-k8s.io/v1beta2", "kind": "ClusterClass", "metadata": {"name": "cc"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "escalate"}}),
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hostile"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "planted", "namespace": "kube-system"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "own", "namespace": "team-a"}}),
    ]
}

#[test]
fn a_release_may_write_only_namespaced_objects_in_its_own_namespace_by_default() {
    let err = desired_objects(
        &hostile_render(),
        "team-a",
        &release_owner(Confinement::default()),
        scope,
    )
    .expect_err("refused");
    let ApplyError::Refused { home, refused } = &err else {
        panic!("wrong error: {err}");
    };
    assert_eq!(home, "team-a");
    assert_eq!(
        refused,
        &[
            "ClusterRole.rbac.authorization.k8s.io escalate (cluster-scoped)",
            "Namespace hostile (cluster-scoped)",
            "ConfigMap kube-system/planted (namespace kube-system)",
        ]
    );
    let message = err.to_string();
    assert!(message.contains("refused 3 object(s)"), "{message}");
    assert!(message.contains("--release-allow-kind KIND.GROUP"), "{message}");
    assert!(
        message.contains("--release-allow-namespace NAMESPACE"),
        "{message}"
    );
}

#[test]
fn the_admin_allows_cluster_scoped_kinds_and_namespaces_one_by_one_or_all() {
    let some = Confinement {
        cluster_kinds: vec!["Namespace".into(), "ClusterRole.rbac.authorization.k8s.io".into()],
        namespaces: vec!["kube-system".into()],
    };
    let desired = desired_objects(&hostile_render(), "team-a", &release_owner(some), scope).expect("allowed");
    assert_eq!(desired.len(), 5);
    let everything = Confinement {
        cluster_kinds: vec!["*".into()],
        namespaces: vec!["*".into()],
    };
    assert!(desired_objects(&hostile_render(), "team-a", &release_owner(everything), scope).is_ok());
    // Allowing the kind in another group does not allow it here.
    let other_group = Confinement {
        cluster_kinds: vec!["ClusterRole".into(), "Namespace".into()],
        namespaces: vec!["kube-system".into()],
    };
    let err = desired_objects(&hostile_render(), "team-a", &release_owner(other_group), scope)
        .expect_err("ClusterRole of rbac is not allowed by `ClusterRole`");
    assert!(
        err.to_string().contains("refused 1 object(s): ClusterRole.rbac"),
        "{err}"
    );
}

#[test]
fn a_refusal_names_ten_objects_and_counts_the_rest() {
    let many: Vec<Value> = (0..13)
        .map(|i| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": format!("ns-{i:02}")}}))
        .collect();
    let err =
        desired_objects(&many, "team-a", &release_owner(Confinement::default()), scope).expect_err("refused");
    let message = err.to_string();
    assert!(message.contains("refused 13 object(s)"), "{message}");
    assert!(message.contains("ns-09 (cluster-scoped) and 3 more"), "{message}");
    assert!(!message.contains("ns-10"), "{message}");
}

#[test]
fn release_objects_carry_the_release_mark_and_deletion_requires_it() {
    let owner = release_owner(Confinement::default());
    let desired = desired_objects(&render()[1..2], "team-a", &owner, scope).expect("valid");
    let applied = &desired[0].object;
    assert_eq!(
        applied["metadata"]["annotations"][OWNER_ANNOTATION],
        "team-a/docker-ferrol-1-32-v1"
    );
    assert!(owner.may_delete(applied).is_ok());

    let other = Owner::release("team-b", "docker-ferrol-1-32-v1", Confinement::default());
    assert_eq!(
        other.may_delete(applied),
        Err("owned by release team-a/docker-ferrol-1-32-v1, not team-b/docker-ferrol-1-32-v1".into())
    );
    let foreign = json!({"metadata": {"name": "victim-cm", "namespace": "kube-system"}});
    let why = owner.may_delete(&foreign).expect_err("not stackhost's");
    assert!(why.contains("not applied by stackhost"), "{why}");
    // Applied before releases marked their objects: the upstream label still proves it.
    let legacy = json!({"metadata": {"labels": {OWNER_LABEL: OWNER_LABEL_VALUE}}});
    assert!(owner.may_delete(&legacy).is_ok());
    // The addons of a workload cluster are neither marked nor checked.
    let addon = desired_objects(&render()[2..3], "ns", &Owner::Workload, scope).expect("valid");
    assert!(addon[0].object["metadata"]["annotations"]
        .get(OWNER_ANNOTATION)
        .is_none());
    assert!(Owner::Workload.may_delete(&foreign).is_ok());
}

#[test]
fn every_object_is_listed_before_the_apply_and_listed_entries_keep_their_state() {
    let desired = desired_objects(&render()[1..4], "cluster", &Owner::Workload, scope).expect("valid");
    let synced = desired[0].resource(&Ok(()));
    let gone = Resource {
        name: "old".into(),
        ..synced.clone()
    };
    let before = resources_before_apply(&desired, &[gone.clone(), synced.clone()]);
    let listed: Vec<(String, Option<ResourceStatus>)> = before
        .iter()
        .map(|r| (ObjectKey::of_resource(r).to_string(), r.status))
        .collect();
    assert_eq!(
        listed,
        [
            ("ConfigMap extra/cm", Some(ResourceStatus::NotSynced)),
            ("Deployment.apps cluster/web", Some(ResourceStatus::NotSynced)),
            (
                "ClusterClass.cluster.x-k8s.io cluster/cc",
                Some(ResourceStatus::Synced)
            ),
            (
                "ClusterClass.cluster.x-k8s.io cluster/old",
                Some(ResourceStatus::Synced)
            ),
        ]
        .map(|(key, status)| (key.to_owned(), status)),
        "the earlier entries as they were (old is pruned later), the new ones not applied yet"
    );
    assert_eq!(before[0].error, "not applied yet");
    // Nothing new to list: the same list, so no status write before the apply.
    assert_eq!(
        resources_before_apply(&desired[..1], std::slice::from_ref(&synced)),
        [synced]
    );
}
