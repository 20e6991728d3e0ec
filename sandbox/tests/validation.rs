//! CRD validation as the real API server does it: a table of invalid objects with the exact messages, transition
//! rules, defaulting and pruning, and the real Cluster API CRDs accepting and refusing objects of both versions.

use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::Client;
use kube_emulator::Cluster;
use serde_json::{json, Value};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
const CAPI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/capi-crds");

async fn install(client: &Client, path: &str) {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc).expect("yaml");
        if v.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(v).expect("object");
        crds.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("install {path}: {e}"));
    }
}

fn api(client: &Client, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    Api::default_namespaced_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural),
    )
}

fn obj(v: Value) -> DynamicObject {
    serde_json::from_value(v).expect("object")
}

async fn create_err(api: &Api<DynamicObject>, v: Value) -> (u16, String) {
    match api.create(&PostParams::default(), &obj(v)).await {
        Ok(o) => panic!("expected a rejection, the server stored {:?}", o.data),
        Err(kube::Error::Api(s)) => (s.code, s.message),
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn thing(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": name}, "spec": spec})
}

#[tokio::test]
async fn invalid_objects_are_refused_with_the_servers_messages() {
    let cluster = Cluster::start().await.expect("cluster");
    let client = cluster.client().expect("client");
    install(&client, &format!("{FIXTURES}/thing-crd.yaml")).await;
    let things = api(&client, "example.com", "v1", "Thing", "things");
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"name": "a", "replicas": "three"}),
            r#"spec.replicas: Invalid value: "string": spec.replicas in body must be of type integer: "string""#,
        ),
        (json!({"replicas": 1}), "spec.name: Required value"),
        (
            json!({"name": "abcdefghijkl"}),
            "spec.name: Too long: may not be more than 10 bytes",
        ),
        (
            json!({"name": "ABC"}),
            r#"spec.name: Invalid value: "ABC": spec.name in body should match '^[a-z]+$'"#,
        ),
        (
            json!({"name": ""}),
            r#"[spec.name: Invalid value: "": spec.name in body should be at least 1 chars long, spec.name: Invalid value: "": spec.name in body should match '^[a-z]+$']"#,
        ),
        (
            json!({"name": "a", "replicas": -1}),
            "spec.replicas: Invalid value: -1: spec.replicas in body should be greater than or equal to 0",
        ),
        (
            json!({"name": "a", "replicas": 11}),
            "spec.replicas: Invalid value: 11: spec.replicas in body should be less than or equal to 10",
        ),
        (
            json!({"name": "a", "ratio": 0}),
            "spec.ratio: Invalid value: 0: spec.ratio in body should be greater than 0",
        ),
        (
            json!({"name": "a", "ratio": 1}),
            "spec.ratio: Invalid value: 1: spec.ratio in body should be less than 1",
        ),
        (
            json!({"name": "a", "even": 3}),
            "spec.even: Invalid value: 3: spec.even in body should be a multiple of 2",
        ),
        (
            json!({"name": "a", "mode": "turbo"}),
            r#"spec.mode: Unsupported value: "turbo": supported values: "fast", "slow", "legacy""#,
        ),
        (
            json!({"name": "a", "uid": "nope"}),
            r#"spec.uid: Invalid value: "nope": spec.uid in body must be of type uuid: "nope""#,
        ),
        (
            json!({"name": "a", "created": "yesterday"}),
            r#"spec.created: Invalid value: "yesterday": spec.created in body must be of type date-time: "yesterday""#,
        ),
        (
            json!({"name": "a", "ip": "300.1.1.1"}),
            r#"spec.ip: Invalid value: "300.1.1.1": spec.ip in body must be of type ipv4: "300.1.1.1""#,
        ),
        (
            json!({"name": "a", "data": "!!!"}),
            r#"spec.data: Invalid value: "!!!": spec.data in body must be of type byte: "!!!""#,
        ),
        (
            json!({"name": "a", "port": true}),
            r#"spec.port: Invalid value: "boolean": spec.port in body must be of type integer,string: "boolean""#,
        ),
        (
            json!({"name": "a", "tags": ["a", "b", "c", "d"]}),
            "spec.tags: Too many: 4: must have at most 3 items",
        ),
        (
            json!({"name": "a", "tags": []}),
            "spec.tags: Invalid value: 0: spec.tags in body should have at least 1 items",
        ),
        (
            json!({"name": "a", "tags": ["a", "a"]}),
            r#"spec.tags[1]: Duplicate value: "a""#,
        ),
        (
            json!({"name": "a", "items": [{"name": "x"}, {"name": "x"}]}),
            r#"spec.items[1]: Duplicate value: map[string]interface {}{"name":"x"}"#,
        ),
        (
            json!({"name": "a", "items": [{"value": 1}]}),
            "spec.items[0].name: Required value",
        ),
        (
            json!({"name": "a", "items": [{"name": "x", "value": 0}]}),
            r#"spec.items[0]: Invalid value: "object": value must be positive"#,
        ),
        (
            json!({"name": "a", "labels": {"a": "1", "b": "2", "c": "3"}}),
            "spec.labels: Too many: 3: must have at most 2 items",
        ),
        (
            json!({"name": "a", "labels": {"a": 1}}),
            r#"spec.labels.a: Invalid value: "integer": spec.labels.a in body must be of type string: "integer""#,
        ),
        (
            json!({"name": "a", "nested": {}}),
            "spec.nested.a: Required value",
        ),
        (
            json!({"name": "a", "nested": {"a": "yes"}}),
            r#"spec.nested.a: Invalid value: "string": spec.nested.a in body must be of type boolean: "string""#,
        ),
        (
            json!({"name": "a", "notNullable": null}),
            r#"spec.notNullable: Invalid value: "null": spec.notNullable in body must be of type string: "null""#,
        ),
        (
            json!({"name": "a", "minReplicas": 6}),
            r#"spec: Invalid value: "object": minReplicas must not exceed maxReplicas"#,
        ),
        (
            json!({"name": "a", "mode": "legacy"}),
            r#"spec: Invalid value: "object": mode legacy needs legacyConfig (thing a)"#,
        ),
        (
            json!({"name": "a", "secret": "x"}),
            "spec.secret: Forbidden: secret must not be set",
        ),
        (
            json!("not-an-object"),
            r#"spec: Invalid value: "string": spec in body must be of type object: "string""#,
        ),
    ];
    assert!(cases.len() >= 30);
    for (i, (spec, want)) in cases.into_iter().enumerate() {
        let name = format!("bad-{i}");
        let (code, message) = create_err(&things, thing(&name, spec.clone())).await;
        assert_eq!(code, 422, "case {i} {spec}: {message}");
        assert_eq!(
            message,
            format!("Thing.example.com \"{name}\" is invalid: {want}"),
            "case {i} {spec}"
        );
    }
    // Several failures are listed together.
    let (_, message) = create_err(&things, thing("many", json!({"replicas": 20, "mode": "x"}))).await;
    assert!(
        message.starts_with("Thing.example.com \"many\" is invalid: [")
            && message.contains("spec.name: Required value")
            && message.contains("spec.replicas: Invalid value: 20"),
        "{message}"
    );
    // Object names are checked too.
    let (code, message) = create_err(&things, thing("Bad_Name", json!({"name": "a"}))).await;
    assert_eq!(code, 422);
    assert!(
        message.contains("metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"),
        "{message}"
    );
}

#[tokio::test]
async fn defaults_pruning_and_transition_rules() {
    let cluster = Cluster::start().await.expect("cluster");
    let client = cluster.client().expect("client");
    install(&client, &format!("{FIXTURES}/thing-crd.yaml")).await;
    let things = api(&client, "example.com", "v1", "Thing", "things");
    let created = things
        .create(&PostParams::default(), &obj(thing("t", json!({"name": "t", "immutable": "x", "counter": 5, "unknown": 1, "free": {"any": {"thing": true}}, "nullableField": null}))))
        .await
        .expect("valid thing");
    let spec = &created.data["spec"];
    assert_eq!(
        (spec["minReplicas"].clone(), spec["maxReplicas"].clone()),
        (json!(1), json!(5)),
        "defaults applied"
    );
    assert!(spec.get("unknown").is_none(), "unknown fields are pruned: {spec}");
    assert_eq!(
        spec["free"],
        json!({"any": {"thing": true}}),
        "preserve-unknown-fields keeps everything"
    );
    let patch = |p: Value| {
        let things = things.clone();
        async move { things.patch("t", &PatchParams::default(), &Patch::Merge(p)).await }
    };
    match patch(json!({"spec": {"immutable": "y"}})).await {
        Err(kube::Error::Api(s)) => assert_eq!(
            s.message,
            r#"Thing.example.com "t" is invalid: spec.immutable: Invalid value: "string": immutable is immutable"#
        ),
        other => panic!("expected 422, got {other:?}"),
    }
    match patch(json!({"spec": {"counter": 4}})).await {
        Err(kube::Error::Api(s)) => assert_eq!(
            s.message,
            r#"Thing.example.com "t" is invalid: spec.counter: Invalid value: "integer": counter may not decrease"#
        ),
        other => panic!("expected 422, got {other:?}"),
    }
    patch(json!({"spec": {"counter": 6}}))
        .await
        .expect("increase is fine");
}

#[tokio::test]
async fn crds_with_broken_schemas_are_refused() {
    let cluster = Cluster::start().await.expect("cluster");
    let client = cluster.client().expect("client");
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let crd = |schema: Value| {
        obj(
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "bads.example.com"},
            "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "bads", "kind": "Bad"},
                     "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": schema}}]}}),
        )
    };
    let err = crds.create(&PostParams::default(), &crd(json!({"type": "object", "properties": {"spec": {"type": "object", "x-kubernetes-validations": [{"rule": "self.("}]}}}))).await;
    match err {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 422);
            assert!(s.message.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].x-kubernetes-validations[0].rule: Invalid value: \"self.(\": compilation failed"), "{}", s.message);
        }
        other => panic!("expected 422, got {other:?}"),
    }
    let err = crds
        .create(&PostParams::default(), &crd(json!({"type": "object", "properties": {"spec": {"type": "object", "properties": {"size": {"type": "integer"}}, "x-kubernetes-validations": [{"rule": "self.sise > 0"}]}}})))
        .await;
    match err {
        Err(kube::Error::Api(s)) => assert!(s.message.contains("x-kubernetes-validations[0].rule: Invalid value: \"self.sise > 0\": compilation failed: ERROR: <input>: undefined field 'sise'"), "{}", s.message),
        other => panic!("expected 422, got {other:?}"),
    }
    let err = crds
        .create(
            &PostParams::default(),
            &crd(json!({"type": "object", "properties": {"spec": {"properties": {}}}})),
        )
        .await;
    assert!(
        matches!(err, Err(kube::Error::Api(s)) if s.message.contains("spec.versions[0].schema.openAPIV3Schema.properties[spec].type: Required value"))
    );
}

fn capi_path(file: &str) -> String {
    format!("{CAPI}/{file}")
}

fn health_condition(version: &str, ctype: &str) -> Value {
    if version == "v1beta1" {
        json!({"type": ctype, "status": "False", "timeout": "300s"})
    } else {
        json!({"type": ctype, "status": "False", "timeoutSeconds": 300})
    }
}

fn cluster_class(version: &str, name: &str, condition: &str) -> Value {
    let spec = if version == "v1beta1" {
        json!({
            "controlPlane": {"ref": {"apiVersion": "controlplane.cluster.x-k8s.io/v1beta1", "kind": "KubeadmControlPlaneTemplate", "name": "cp"},
                             "machineHealthCheck": {"unhealthyMachineConditions": [health_condition(version, condition)]}},
            "infrastructure": {"ref": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta1", "kind": "DevClusterTemplate", "name": "infra"}},
        })
    } else {
        json!({
            "controlPlane": {"templateRef": {"apiVersion": "controlplane.cluster.x-k8s.io/v1beta2", "kind": "KubeadmControlPlaneTemplate", "name": "cp"},
                             "healthCheck": {"checks": {"unhealthyMachineConditions": [health_condition(version, condition)]}}},
            "infrastructure": {"templateRef": {"apiVersion": "infrastructure.cluster.x-k8s.io/v1beta2", "kind": "DevClusterTemplate", "name": "infra"}},
        })
    };
    json!({"apiVersion": format!("cluster.x-k8s.io/{version}"), "kind": "ClusterClass", "metadata": {"name": name}, "spec": spec})
}

fn capi_cluster(version: &str, name: &str, condition: &str) -> Value {
    let topology = if version == "v1beta1" {
        json!({"class": "cc", "version": "v1.32.0", "controlPlane": {"replicas": 1, "machineHealthCheck": {"unhealthyMachineConditions": [health_condition(version, condition)]}}})
    } else {
        json!({"classRef": {"name": "cc"}, "version": "v1.32.0", "controlPlane": {"replicas": 1, "healthCheck": {"checks": {"unhealthyMachineConditions": [health_condition(version, condition)]}}}})
    };
    json!({"apiVersion": format!("cluster.x-k8s.io/{version}"), "kind": "Cluster", "metadata": {"name": name}, "spec": {"topology": topology}})
}

#[tokio::test]
async fn cluster_api_objects_of_both_versions_validate_with_their_own_rules() {
    let cluster = Cluster::start().await.expect("cluster");
    let client = cluster.client().expect("client");
    for f in [
        "cluster.x-k8s.io_clusterclasses.yaml",
        "cluster.x-k8s.io_clusters.yaml",
    ] {
        install(&client, &capi_path(f)).await;
    }
    for version in ["v1beta1", "v1beta2"] {
        let classes = api(
            &client,
            "cluster.x-k8s.io",
            version,
            "ClusterClass",
            "clusterclasses",
        );
        let clusters = api(&client, "cluster.x-k8s.io", version, "Cluster", "clusters");
        classes
            .create(
                &PostParams::default(),
                &obj(cluster_class(version, &format!("cc-{version}"), "Custom")),
            )
            .await
            .unwrap_or_else(|e| panic!("valid {version} ClusterClass refused: {e}"));
        clusters
            .create(
                &PostParams::default(),
                &obj(capi_cluster(version, &format!("c-{version}"), "Custom")),
            )
            .await
            .unwrap_or_else(|e| panic!("valid {version} Cluster refused: {e}"));
        let prefix = if version == "v1beta1" {
            "spec.controlPlane.machineHealthCheck"
        } else {
            "spec.controlPlane.healthCheck.checks"
        };
        let (code, message) = create_err(&classes, cluster_class(version, "bad-cc", "Ready")).await;
        assert_eq!(code, 422);
        assert_eq!(
            message,
            format!("ClusterClass.cluster.x-k8s.io \"bad-cc\" is invalid: {prefix}.unhealthyMachineConditions[0].type: Invalid value: \"string\": type must not be one of: Ready, Available, HealthCheckSucceeded, OwnerRemediated, ExternallyRemediated")
        );
        let (code, message) = create_err(&clusters, capi_cluster(version, "bad-c", "Available")).await;
        assert_eq!(code, 422);
        assert!(
            message.contains("type must not be one of: Ready, Available"),
            "{message}"
        );
        let mut missing = cluster_class(version, "no-infra", "Custom");
        if let Some(spec) = missing["spec"].as_object_mut() {
            spec.remove("infrastructure");
        }
        if version == "v1beta2" {
            let (_, message) = create_err(&classes, missing).await;
            assert!(
                message.contains("spec.infrastructure: Required value"),
                "{message}"
            );
        }
    }
    // Objects are stored once and served in both versions (no conversion strategy: apiVersion is rewritten).
    let v1beta1 = api(&client, "cluster.x-k8s.io", "v1beta1", "Cluster", "clusters");
    let seen = v1beta1
        .get("c-v1beta2")
        .await
        .expect("v1beta2 object readable as v1beta1");
    assert_eq!(
        seen.types.map(|t| t.api_version).as_deref(),
        Some("cluster.x-k8s.io/v1beta1")
    );
}

#[tokio::test]
async fn tightened_schemas_ratchet_unchanged_values() {
    let cluster = Cluster::start().await.expect("cluster");
    let client = cluster.client().expect("client");
    install(&client, &format!("{FIXTURES}/thing-crd.yaml")).await;
    let things = api(&client, "example.com", "v1", "Thing", "things");
    things
        .create(
            &PostParams::default(),
            &obj(thing("r", json!({"name": "r", "replicas": 8}))),
        )
        .await
        .expect("valid under the old schema");
    // Tighten replicas to at most 5: the stored 8 is now invalid.
    let crds: Api<DynamicObject> = Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("apiextensions.k8s.io", "v1", "CustomResourceDefinition"),
            "customresourcedefinitions",
        ),
    );
    let text = std::fs::read_to_string(format!("{FIXTURES}/thing-crd.yaml")).expect("read fixture");
    let mut version = serde_yaml::from_str::<Value>(&text).expect("yaml")["spec"]["versions"][0].clone();
    version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["replicas"]["maximum"] =
        json!(5);
    let tighten = json!({"spec": {"versions": [version]}});
    crds.patch(
        "things.example.com",
        &PatchParams::default(),
        &Patch::Merge(tighten),
    )
    .await
    .expect("tighten");
    things
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"even": 2}})),
        )
        .await
        .expect("unrelated change is accepted (ratcheting)");
    match things
        .patch(
            "r",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": 9}})),
        )
        .await
    {
        Err(kube::Error::Api(s)) => assert_eq!(
            s.message,
            r#"Thing.example.com "r" is invalid: spec.replicas: Invalid value: 9: spec.replicas in body should be less than or equal to 5"#
        ),
        other => panic!("expected 422, got {other:?}"),
    }
}

/// An API for a cluster-scoped kind.
fn cluster_api(client: &Client, group: &str, version: &str, kind: &str, plural: &str) -> Api<DynamicObject> {
    Api::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural),
    )
}

/// The repository's shared fixtures (real upstream CRDs, unmodified).
const REPO_FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures");

#[tokio::test]
async fn every_real_provider_crd_is_accepted_and_orc_image_rules_run() {
    let cluster = Cluster::start().await.expect("cluster");
    let client = cluster.client().expect("client");
    let mut files = Vec::new();
    for set in ["real-crds/capd", "real-crds/capo", "real-crds/orc", "capi-crds"] {
        let dir = format!("{REPO_FIXTURES}/{set}");
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{dir}: {e}")) {
            let path = entry.expect("entry").path();
            if path.extension().is_some_and(|e| e == "yaml") {
                files.push(path);
            }
        }
    }
    files.sort();
    assert_eq!(files.len(), 6 + 7 + 26 + 12, "{files:?}");
    let mut refused = Vec::new();
    for f in &files {
        let text = std::fs::read_to_string(f).expect("read");
        if let Err(e) = cluster.apply_yaml(&text, "test") {
            refused.push(format!("{}: {e}", f.display()));
        }
    }
    assert!(refused.is_empty(), "refused:\n{}", refused.join("\n"));

    let images = api(&client, "openstack.k-orc.cloud", "v1alpha1", "Image", "images");
    let image = |name: &str, spec: Value| json!({"apiVersion": "openstack.k-orc.cloud/v1alpha1", "kind": "Image", "metadata": {"name": name}, "spec": spec});
    let creds = json!({"cloudName": "openstack", "secretName": "clouds"});
    let content = json!({"diskFormat": "qcow2", "download": {"url": "https://images.example/ubuntu.qcow2",
        "hash": {"algorithm": "sha256", "value": "ab".repeat(32)}}});
    let managed = images
        .create(
            &PostParams::default(),
            &obj(image(
                "ubuntu",
                json!({"cloudCredentialsRef": creds, "managementPolicy": "managed",
                "resource": {"content": content, "properties": {"minDiskGB": 20}}}),
            )),
        )
        .await
        .expect("a managed Image with content is valid");
    assert_eq!(managed.data["spec"]["resource"]["properties"]["minDiskGB"], 20);
    // `self.__import__` reads the `import` property: an unmanaged import passes every rule.
    images
        .create(
            &PostParams::default(),
            &obj(image(
                "imported",
                json!({"cloudCredentialsRef": creds, "managementPolicy": "unmanaged",
                "import": {"filter": {"name": "ubuntu-24.04"}}}),
            )),
        )
        .await
        .expect("an unmanaged Image importing by filter is valid");
    let cases = [
        (
            json!({"cloudCredentialsRef": creds, "managementPolicy": "managed", "resource": {"content": content},
                "import": {"filter": {"name": "ubuntu-24.04"}}}),
            r#"Image.openstack.k-orc.cloud "bad" is invalid: spec: Invalid value: "object": import may not be specified when policy is managed"#,
        ),
        (
            json!({"cloudCredentialsRef": creds, "managementPolicy": "unmanaged", "resource": {"content": content}}),
            r#"Image.openstack.k-orc.cloud "bad" is invalid: [spec: Invalid value: "object": resource may not be specified when policy is unmanaged, spec: Invalid value: "object": import must be specified when policy is unmanaged]"#,
        ),
        (
            // `has(self.resource.content)` without a resource is an evaluation error, reported with the rule's message.
            json!({"cloudCredentialsRef": creds, "managementPolicy": "unmanaged"}),
            r#"Image.openstack.k-orc.cloud "bad" is invalid: [spec: Invalid value: "object": import must be specified when policy is unmanaged, spec: Invalid value: "object": no such key: resource evaluating rule: resource content must be specified when not importing]"#,
        ),
        (
            json!({"cloudCredentialsRef": creds, "managementPolicy": "managed", "resource": {"name": "x"}}),
            r#"Image.openstack.k-orc.cloud "bad" is invalid: spec: Invalid value: "object": resource content must be specified when not importing"#,
        ),
    ];
    for (spec, want) in cases {
        let (code, message) = create_err(&images, image("bad", spec)).await;
        assert_eq!((code, message.as_str()), (422, want));
    }
}

#[tokio::test]
async fn names_follow_the_rule_of_each_built_in_kind() {
    let cluster = Cluster::start().await.expect("cluster");
    let client = cluster.client().expect("client");
    let rbac = |kind: &str, plural: &str| {
        let group = "rbac.authorization.k8s.io";
        if kind.starts_with("Cluster") {
            cluster_api(&client, group, "v1", kind, plural)
        } else {
            api(&client, group, "v1", kind, plural)
        }
    };
    let named = |api_version: &str, kind: &str, name: &str| json!({"apiVersion": api_version, "kind": kind, "metadata": {"name": name}});
    let rbac_v1 = "rbac.authorization.k8s.io/v1";
    for (kind, plural) in [
        ("ClusterRole", "clusterroles"),
        ("ClusterRoleBinding", "clusterrolebindings"),
        ("Role", "roles"),
        ("RoleBinding", "rolebindings"),
    ] {
        let mut v = named(rbac_v1, kind, "system:metrics-server");
        if kind.ends_with("Binding") {
            v["roleRef"] = json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:metrics-server"});
        }
        rbac(kind, plural)
            .create(&PostParams::default(), &obj(v))
            .await
            .unwrap_or_else(|e| panic!("{kind} system:metrics-server: {e}"));
    }
    let core = |kind: &str, plural: &str| api(&client, "", "v1", kind, plural);
    let long = "c".repeat(53);
    let cases: Vec<(Api<DynamicObject>, Value, String)> = vec![
        (
            rbac("ClusterRole", "clusterroles"),
            named(rbac_v1, "ClusterRole", ".."),
            r#"ClusterRole.rbac.authorization.k8s.io ".." is invalid: metadata.name: Invalid value: "..": may not be '..'"#.into(),
        ),
        (
            rbac("Role", "roles"),
            named(rbac_v1, "Role", "a%b"),
            r#"Role.rbac.authorization.k8s.io "a%b" is invalid: metadata.name: Invalid value: "a%b": may not contain '%'"#.into(),
        ),
        (
            core("ConfigMap", "configmaps"),
            named("v1", "ConfigMap", "system:x"),
            r#"ConfigMap "system:x" is invalid: metadata.name: Invalid value: "system:x": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"#.into(),
        ),
        (
            core("Service", "services"),
            named("v1", "Service", "1st"),
            r#"Service "1st" is invalid: metadata.name: Invalid value: "1st": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"#.into(),
        ),
        (
            api(&client, "apps", "v1", "StatefulSet", "statefulsets"),
            named("apps/v1", "StatefulSet", "db.main"),
            r#"StatefulSet.apps "db.main" is invalid: metadata.name: Invalid value: "db.main": must not contain dots"#.into(),
        ),
        (
            api(&client, "batch", "v1", "CronJob", "cronjobs"),
            named("batch/v1", "CronJob", &long),
            format!(r#"CronJob.batch "{long}" is invalid: metadata.name: Invalid value: "{long}": must be no more than 52 characters"#),
        ),
    ];
    for (api, v, want) in cases {
        let (code, message) = create_err(&api, v).await;
        assert_eq!((code, message.as_str()), (422, want.as_str()));
    }
    // A name valid as a subdomain is fine for the kinds that take one (a dotted Node name, a CSIDriver).
    cluster_api(&client, "", "v1", "Node", "nodes")
        .create(
            &PostParams::default(),
            &obj(named("v1", "Node", "worker-1.example")),
        )
        .await
        .expect("node");
    let csi = cluster_api(&client, "storage.k8s.io", "v1", "CSIDriver", "csidrivers")
        .create(
            &PostParams::default(),
            &obj(named(
                "storage.k8s.io/v1",
                "CSIDriver",
                "cinder.csi.openstack.org",
            )),
        )
        .await
        .expect("CSIDriver");
    assert_eq!(
        csi.data["spec"]["attachRequired"], true,
        "defaulted like the real server"
    );
    assert_eq!(csi.data["spec"]["volumeLifecycleModes"], json!(["Persistent"]));
}

#[tokio::test]
async fn api_services_are_validated_like_the_aggregator_does() {
    let cluster = Cluster::start().await.expect("cluster");
    let client = cluster.client().expect("client");
    let services = cluster_api(
        &client,
        "apiregistration.k8s.io",
        "v1",
        "APIService",
        "apiservices",
    );
    let svc = |name: &str, spec: Value| json!({"apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService", "metadata": {"name": name}, "spec": spec});
    let good = json!({"group": "metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100, "versionPriority": 100,
        "insecureSkipTLSVerify": true, "service": {"name": "metrics-server", "namespace": "kube-system"}});
    let mut no_priority = good.clone();
    no_priority
        .as_object_mut()
        .expect("map")
        .remove("groupPriorityMinimum");
    let mut no_service_name = good.clone();
    no_service_name["service"] = json!({"namespace": "kube-system"});
    let cases = [
        (
            svc("metrics", good.clone()),
            r#"APIService.apiregistration.k8s.io "metrics" is invalid: metadata.name: Invalid value: "metrics": must be `spec.version+"."+spec.group`: "v1beta1.metrics.k8s.io""#,
        ),
        (
            svc("v1beta1.metrics.k8s.io", no_priority),
            r#"APIService.apiregistration.k8s.io "v1beta1.metrics.k8s.io" is invalid: spec.groupPriorityMinimum: Invalid value: 0: must be positive and less than 20000"#,
        ),
        (
            svc("v1beta1.metrics.k8s.io", no_service_name),
            r#"APIService.apiregistration.k8s.io "v1beta1.metrics.k8s.io" is invalid: spec.service.name: Required value"#,
        ),
    ];
    for (v, want) in cases {
        let (code, message) = create_err(&services, v).await;
        assert_eq!((code, message.as_str()), (422, want));
    }
    let stored = services
        .create(
            &PostParams::default(),
            &obj(svc("v1beta1.metrics.k8s.io", good.clone())),
        )
        .await
        .expect("metrics-server's APIService");
    assert_eq!(stored.data["spec"]["service"]["port"], 443);
    // A namespace in the manifest of a cluster-scoped kind is dropped (Helm output applied as it is).
    let mut applied = svc("v1.custom.metrics.k8s.io", good.clone());
    applied["metadata"]["namespace"] = json!("kube-system");
    applied["spec"]["group"] = json!("custom.metrics.k8s.io");
    applied["spec"]["version"] = json!("v1");
    cluster
        .apply_yaml(&applied.to_string(), "helm")
        .expect("server-side apply");
    let got = services
        .get("v1.custom.metrics.k8s.io")
        .await
        .expect("stored cluster-wide");
    assert_eq!(got.metadata.namespace, None);
}

#[tokio::test]
async fn a_float_in_an_integer_field_is_refused_however_it_arrives() {
    let cluster = Cluster::start().await.expect("cluster");
    let client = cluster.client().expect("client");
    install(&client, &format!("{FIXTURES}/thing-crd.yaml")).await;
    let things = api(&client, "example.com", "v1", "Thing", "things");
    const FLOAT: &str =
        r#"spec.replicas: Invalid value: "number": spec.replicas in body must be of type integer: "number""#;
    let (code, message) = create_err(&things, thing("f", json!({"name": "a", "replicas": 1.5}))).await;
    assert_eq!(code, 422);
    assert!(message.ends_with(FLOAT), "{message}");
    // A whole number written as a float is an integer to the API server too.
    things
        .create(
            &PostParams::default(),
            &obj(thing("f", json!({"name": "a", "replicas": 2.0}))),
        )
        .await
        .expect("2.0 is an integer");
    for patch in [
        Patch::Merge(json!({"spec": {"replicas": 2.5}})),
        Patch::Json(
            serde_json::from_value(json!([{"op": "replace", "path": "/spec/replicas", "value": 2.5}]))
                .expect("patch"),
        ),
        Patch::Apply(
            json!({"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "f"}, "spec": {"name": "a", "replicas": 3.5}}),
        ),
    ] {
        let params = match patch {
            Patch::Apply(_) => PatchParams::apply("test").force(),
            _ => PatchParams::default(),
        };
        match things.patch("f", &params, &patch).await {
            Err(kube::Error::Api(s)) => {
                assert_eq!(s.code, 422);
                assert!(s.message.ends_with(FLOAT), "{}", s.message);
            }
            other => panic!("expected a rejection, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn built_in_objects_of_the_wrong_type_are_refused_as_the_decoder_refuses_them() {
    let cluster = Cluster::start().await.expect("cluster");
    let client = cluster.client().expect("client");
    let deployments = api(&client, "apps", "v1", "Deployment", "deployments");
    let deployment = |replicas: Value| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": "web", "creationTimestamp": null},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": "nginx",
                                              "resources": {"limits": {"cpu": 1}}}]}}}})
    };
    let (code, message) = create_err(&deployments, deployment(json!(1.5))).await;
    assert_eq!(code, 400);
    assert_eq!(
        message,
        "Deployment in version \"v1\" cannot be handled as a Deployment: json: cannot unmarshal \
         number 1.5 into Go struct field .spec.replicas of type int32"
    );
    // Unlike a CRD's integer, a Go int32 takes no "2.0".
    let (code, _) = create_err(&deployments, deployment(json!(2.0))).await;
    assert_eq!(code, 400);
    // Nulls and a number for a quantity decode fine.
    deployments
        .create(&PostParams::default(), &obj(deployment(json!(2))))
        .await
        .expect("a valid Deployment");
    match deployments
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"replicas": "three"}})),
        )
        .await
    {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 400);
            assert!(
                s.message
                    .ends_with("cannot unmarshal string into Go struct field .spec.replicas of type int32"),
                "{}",
                s.message
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let config_maps = api(&client, "", "v1", "ConfigMap", "configmaps");
    let (code, message) = create_err(
        &config_maps,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"mode": 420}}),
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        message.ends_with("cannot unmarshal number into Go struct field .data.mode of type string"),
        "{message}"
    );
}

/// Applies `patch` (a merge patch) to `name`; the API server's status code and message if refused.
async fn patch_err(api: &Api<DynamicObject>, name: &str, patch: Value) -> Option<(u16, String)> {
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(patch))
        .await
    {
        Ok(_) => None,
        Err(kube::Error::Api(s)) => Some((s.code, s.message)),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn immutable_fields_of_built_in_kinds_cannot_change() {
    let cluster = Cluster::start().await.expect("cluster");
    let client = cluster.client().expect("client");
    let pod = json!({"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "web", "image": "nginx"}]}});
    let deployments = api(&client, "apps", "v1", "Deployment", "deployments");
    deployments
        .create(
            &PostParams::default(),
            &obj(json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": pod}})),
        )
        .await
        .expect("Deployment");
    assert_eq!(
        patch_err(&deployments, "web", json!({"spec": {"replicas": 3}})).await,
        None
    );
    let (code, message) = patch_err(
        &deployments,
        "web",
        json!({"spec": {"selector": {"matchLabels": {"app": "web", "tier": "front"}}}}),
    )
    .await
    .expect("refused");
    assert_eq!(code, 422);
    assert!(
        message.starts_with("Deployment.apps \"web\" is invalid: spec.selector: Invalid value: ")
            && message.ends_with(": field is immutable"),
        "{message}"
    );

    let bindings = Api::<DynamicObject>::all_with(
        client.clone(),
        &ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding"),
            "clusterrolebindings",
        ),
    );
    bindings
        .create(
            &PostParams::default(),
            &obj(json!({"apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding", "metadata": {"name": "b"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "u", "apiGroup": "rbac.authorization.k8s.io"}]})),
        )
        .await
        .expect("binding");
    let (_, message) = patch_err(&bindings, "b", json!({"roleRef": {"name": "cluster-admin"}}))
        .await
        .expect("refused");
    assert!(message.ends_with(": cannot change roleRef"), "{message}");

    let sets = api(&client, "apps", "v1", "StatefulSet", "statefulsets");
    sets.create(
        &PostParams::default(),
        &obj(json!({"apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "web"}}, "template": pod}})),
    )
    .await
    .expect("StatefulSet");
    assert_eq!(
        patch_err(&sets, "db", json!({"spec": {"replicas": 2}})).await,
        None
    );
    let (_, message) = patch_err(&sets, "db", json!({"spec": {"serviceName": "other"}}))
        .await
        .expect("refused");
    assert!(
        message.contains("spec: Forbidden: updates to statefulset spec for fields other than 'replicas'"),
        "{message}"
    );
}

#[tokio::test]
async fn config_map_and_secret_keys_follow_the_api_servers_rule() {
    let cluster = Cluster::start().await.expect("cluster");
    let client = cluster.client().expect("client");
    let config_maps = api(&client, "", "v1", "ConfigMap", "configmaps");
    let secrets = api(&client, "", "v1", "Secret", "secrets");
    let rule =
        "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  \
                or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";
    let (code, message) = create_err(
        &config_maps,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "state", "namespace": "default"},
               "data": {"image/x": "1"}}),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        message,
        format!(r#"ConfigMap "state" is invalid: data[image/x]: Invalid value: "image/x": {rule}"#)
    );
    let (code, message) = create_err(
        &secrets,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "state", "namespace": "default"},
               "stringData": {"..hidden": "1"}}),
    )
    .await;
    assert_eq!(code, 422);
    assert_eq!(
        message,
        r#"Secret "state" is invalid: data[..hidden]: Invalid value: "..hidden": must not start with '..'"#
    );
    // Valid keys are stored.
    config_maps
        .create(
            &PostParams::default(),
            &obj(json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "ok", "namespace": "default"},
                        "data": {"state.json": "{}", "KEY_NAME": "1", "key-name": "2"}})),
        )
        .await
        .expect("valid keys");
}
