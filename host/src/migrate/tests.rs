use serde_json::json;

use super::*;

/// A CRD of the group, as CSO's Helm chart installs it (`stackhost: false`) or as stackhost's crds/ has it.
fn crd(plural: &str, kind: &str, stackhost: bool) -> Value {
    let mut spec = json!({"provider": {"type": "string"}});
    if stackhost {
        spec["source"] = json!({"type": "object"});
        spec["providerPlugin"] = json!({"type": "string"});
    }
    let mut crd = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{plural}.clusterstack.x-k8s.io")},
        "spec": {"group": "clusterstack.x-k8s.io", "names": {"plural": plural, "kind": kind},
                 "versions": [{"name": "v1alpha1", "schema": {"openAPIV3Schema": {"properties": {"spec": {"properties": spec}}}}}]}
    });
    if !stackhost {
        crd["metadata"]["labels"] = json!({"cluster.x-k8s.io/provider": "cluster-stack-operator",
                                           "app.kubernetes.io/managed-by": "Helm"});
        crd["metadata"]["annotations"] = json!({"meta.helm.sh/release-name": "cso",
                                                "meta.helm.sh/release-namespace": "cso-system"});
    }
    crd
}

fn cso_cluster() -> Snapshot {
    Snapshot {
        crds: vec![
            crd("clusterstacks", "ClusterStack", false),
            crd("clusterstackreleases", "ClusterStackRelease", false),
            crd("clusteraddons", "ClusterAddon", false),
        ],
        deployments: vec![json!({
            "metadata": {"name": "cso-controller-manager", "namespace": "cso-system",
                         "labels": {"control-plane": "cso-controller-manager"},
                         "annotations": {"meta.helm.sh/release-name": "cso", "meta.helm.sh/release-namespace": "cso-system"}},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "manager", "image": "ghcr.io/sovereigncloudstack/cso:v0.2.0-alpha.1"}]}}}
        })],
        webhooks: vec![
            json!({
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "cso-validating-webhook-configuration"},
                "webhooks": [{"name": "validation.clusterstack.clusterstack.x-k8s.io",
                              "clientConfig": {"service": {"name": "cso-webhook-service", "namespace": "cso-system"}},
                              "rules": [{"apiGroups": ["clusterstack.x-k8s.io"], "resources": ["clusterstacks"]}]}]
            }),
            json!({
                "kind": "ValidatingWebhookConfiguration",
                "metadata": {"name": "unrelated"},
                "webhooks": [{"name": "v.example.com", "clientConfig": {"service": {"name": "x", "namespace": "other"}},
                              "rules": [{"apiGroups": ["example.com"]}]}]
            }),
        ],
        extension_configs: vec![json!({
            "metadata": {"name": "cso-hook-server-extensionconfig"},
            "spec": {"clientConfig": {"service": {"name": "cso-hook-server-svc", "namespace": "cso-system"}}}
        })],
        cluster_stacks: vec![json!({
            "metadata": {"name": "ferrol", "namespace": "cluster", "uid": "cs-uid", "resourceVersion": "5"},
            "spec": {"provider": "docker", "name": "ferrol", "kubernetesVersion": "1.32", "noProvider": false,
                     "providerRef": {"kind": "DockerClusterStackReleaseTemplate", "name": "tmpl"}}
        })],
        releases: vec![json!({
            "metadata": {"name": "docker-ferrol-1-32-v1", "namespace": "cluster", "resourceVersion": "7",
                         "ownerReferences": [{"kind": "ClusterStack", "name": "ferrol", "uid": "cs-uid"}]},
            "spec": {"providerRef": {"kind": "DockerClusterStackRelease", "name": "docker-ferrol-1-32-v1"}},
            "status": {"ready": true}
        })],
        sources: BTreeMap::from([(
            "cluster/ferrol".to_string(),
            SourceCheck::Listed {
                source: "OCI repository r/kaas".into(),
                tags: BTreeSet::from(["docker-ferrol-1-32-v1".to_string()]),
            },
        )]),
        applied: BTreeMap::from([(
            "cluster/docker-ferrol-1-32-v1".to_string(),
            vec![
                (
                    "ClusterClass.cluster.x-k8s.io cluster/docker-ferrol-1-32-v1".to_string(),
                    Applied::Found {
                        target: Target {
                            group: "cluster.x-k8s.io".into(),
                            version: "v1beta1".into(),
                            kind: "ClusterClass".into(),
                            plural: "clusterclasses".into(),
                            namespace: "cluster".into(),
                            name: "docker-ferrol-1-32-v1".into(),
                        },
                        metadata: json!({"resourceVersion": "9", "labels": {"clusterstack.x-k8s.io/instance": "owned"}}),
                    },
                ),
                (
                    "ConfigMap cluster/hand-made".to_string(),
                    Applied::Found {
                        target: Target {
                            version: "v1".into(),
                            kind: "ConfigMap".into(),
                            plural: "configmaps".into(),
                            namespace: "cluster".into(),
                            name: "hand-made".into(),
                            ..Target::default()
                        },
                        metadata: json!({"resourceVersion": "3"}),
                    },
                ),
            ],
        )]),
        ..Snapshot::default()
    }
}

fn objects(report: &Report, level: Level) -> Vec<&str> {
    report.of(level).map(|f| f.object.as_str()).collect()
}

fn finding<'a>(report: &'a Report, object: &str) -> &'a Finding {
    report
        .findings
        .iter()
        .find(|f| f.object == object)
        .unwrap_or_else(|| panic!("no finding for {object}: {report:#?}"))
}

#[test]
fn a_cluster_with_cso_running_is_blocked_naming_each_object_and_the_fix() {
    let report = assess(&cso_cluster(), &Options::default());
    assert!(report.blocked());
    let blockers = objects(&report, Level::Blocker);
    for expected in [
        "Deployment cso-system/cso-controller-manager",
        "ValidatingWebhookConfiguration cso-validating-webhook-configuration",
        "ExtensionConfig.runtime.cluster.x-k8s.io cso-hook-server-extensionconfig",
        "CustomResourceDefinition clusterstacks.clusterstack.x-k8s.io",
        "CustomResourceDefinition clusteraddons.clusterstack.x-k8s.io",
        "CustomResourceDefinitions clusterstack.x-k8s.io",
        "ClusterStack cluster/ferrol",
    ] {
        assert!(blockers.contains(&expected), "{expected} missing in {blockers:?}");
    }
    assert!(!blockers.iter().any(|b| b.contains("unrelated")), "{blockers:?}");
    let cso = finding(&report, "Deployment cso-system/cso-controller-manager");
    assert!(
        cso.message.contains("is running (1 replica(s)"),
        "{}",
        cso.message
    );
    assert!(cso
        .fix
        .as_deref()
        .unwrap_or_default()
        .contains("`helm uninstall cso -n cso-system`"));
    let crd = finding(
        &report,
        "CustomResourceDefinition clusterstacks.clusterstack.x-k8s.io",
    );
    assert!(crd.message.contains("every ClusterStack"), "{}", crd.message);
    assert_eq!(
        crd.fix.as_deref(),
        Some(
            "`kubectl annotate crd clusterstacks.clusterstack.x-k8s.io helm.sh/resource-policy=keep` and \
             `kubectl label crd clusterstacks.clusterstack.x-k8s.io cluster.x-k8s.io/provider-`"
        )
    );
    let schema = finding(&report, "CustomResourceDefinitions clusterstack.x-k8s.io");
    assert!(
        schema
            .message
            .contains("clusterstackreleases.clusterstack.x-k8s.io has no spec.providerPlugin")
            && schema
                .message
                .contains("providerplugins.clusterstack.x-k8s.io is not installed"),
        "{}",
        schema.message
    );
    let stack = finding(&report, "ClusterStack cluster/ferrol");
    assert!(
        stack.message.contains("no ProviderPlugin cluster/docker")
            && stack
                .message
                .contains("DockerClusterStackReleaseTemplate tmpl is not used"),
        "{}",
        stack.message
    );
    // The adoptions are listed even while blocked, so the admin sees the whole plan.
    let adopt = objects(&report, Level::Adopt);
    assert_eq!(
        adopt,
        [
            "ClusterStackRelease cluster/docker-ferrol-1-32-v1",
            "ClusterClass.cluster.x-k8s.io cluster/docker-ferrol-1-32-v1"
        ]
    );
    let text = render_text(&report, "kubeconfig k", None);
    assert!(text.contains("BLOCKED: 8 blocker(s)"), "{text}");
}

fn migratable() -> Snapshot {
    let mut snap = cso_cluster();
    snap.deployments.clear();
    snap.webhooks.retain(|w| s(w, "/metadata/name") == "unrelated");
    snap.extension_configs.clear();
    snap.crds = vec![
        crd("clusterstacks", "ClusterStack", true),
        crd("clusterstackreleases", "ClusterStackRelease", true),
        crd("clusteraddons", "ClusterAddon", true),
        crd("providerplugins", "ProviderPlugin", true),
    ];
    // Uninstalled with `helm.sh/resource-policy: keep`: Helm's annotations stay, the CRD stays too.
    snap.crds[0]["metadata"]["annotations"] =
        json!({"meta.helm.sh/release-name": "cso", "helm.sh/resource-policy": "keep"});
    snap.provider_plugins.insert("cluster/docker".into());
    snap
}

#[test]
fn without_cso_the_releases_get_their_plugin_and_what_cso_applied_gets_the_release_mark() {
    let report = assess(&migratable(), &Options::default());
    assert!(!report.blocked(), "{report:#?}");
    let release = finding(&report, "ClusterStackRelease cluster/docker-ferrol-1-32-v1");
    let patch = &release.adoption.as_ref().expect("an adoption").patch;
    assert_eq!(
        patch,
        &json!({"metadata": {"resourceVersion": "7"}, "spec": {"providerPlugin": "docker"}})
    );
    let class = finding(
        &report,
        "ClusterClass.cluster.x-k8s.io cluster/docker-ferrol-1-32-v1",
    );
    assert_eq!(
        class.adoption.as_ref().map(|a| &a.patch),
        Some(&json!({"metadata": {"resourceVersion": "9",
                                  "annotations": {"clusterstack.x-k8s.io/owner": "cluster/docker-ferrol-1-32-v1"}}}))
    );
    // Not labelled by CSO: not adopted, and the admin is told stackhost will not delete it.
    let hand_made = finding(&report, "ConfigMap cluster/hand-made");
    assert_eq!(hand_made.level, Level::Warning);
    assert!(hand_made.adoption.is_none());
    assert_eq!(objects(&report, Level::Keep), ["ClusterStack cluster/ferrol"]);
    let text = render_text(&report, "kubeconfig k", None);
    assert!(
        text.contains("READY: nothing blocks; `stackhost migrate --apply` adopts 2 object(s)."),
        "{text}"
    );
}

#[test]
fn a_release_missing_from_the_source_or_no_source_at_all_blocks() {
    let mut snap = migratable();
    snap.sources.insert(
        "cluster/ferrol".into(),
        SourceCheck::Listed {
            source: "local directory /srv".into(),
            tags: BTreeSet::new(),
        },
    );
    let report = assess(&snap, &Options::default());
    let missing = finding(&report, "ClusterStackRelease cluster/docker-ferrol-1-32-v1");
    assert_eq!(missing.level, Level::Blocker);
    assert!(
        missing.message.contains("is not in local directory /srv"),
        "{}",
        missing.message
    );

    snap.sources.insert(
        "cluster/ferrol".into(),
        SourceCheck::Unusable(
            "the ClusterStack has no spec.source and the controller has no --release-source".into(),
        ),
    );
    let report = assess(&snap, &Options::default());
    let stack = finding(&report, "ClusterStack cluster/ferrol");
    assert_eq!(stack.level, Level::Blocker);
    assert!(stack
        .fix
        .as_deref()
        .unwrap_or_default()
        .contains("--release-source"));
}

#[test]
fn adopted_objects_are_not_adopted_twice_and_the_watch_label_is_added() {
    let mut snap = migratable();
    snap.releases[0]["spec"]["providerPlugin"] = json!("docker");
    if let Some((_, objects)) = snap.applied.iter_mut().next() {
        if let Applied::Found { metadata, .. } = &mut objects[0].1 {
            metadata["annotations"] = json!({"clusterstack.x-k8s.io/owner": "cluster/docker-ferrol-1-32-v1"});
        }
    }
    let report = assess(&snap, &Options::default());
    assert!(objects(&report, Level::Adopt).is_empty(), "{report:#?}");

    let options = Options {
        watch_label: Some(("team".into(), "a".into())),
        ..Options::default()
    };
    let report = assess(&snap, &options);
    assert_eq!(
        objects(&report, Level::Adopt),
        [
            "ClusterStack cluster/ferrol",
            "ClusterStackRelease cluster/docker-ferrol-1-32-v1"
        ]
    );
    let stack = finding(&report, "ClusterStack cluster/ferrol");
    assert_eq!(
        stack.adoption.as_ref().map(|a| &a.patch),
        Some(&json!({"metadata": {"resourceVersion": "5", "labels": {"team": "a"}}}))
    );
}

#[test]
fn an_object_two_releases_list_is_marked_for_the_first_only() {
    let mut snap = migratable();
    let mut second = snap.releases[0].clone();
    second["metadata"]["name"] = json!("docker-ferrol-1-32-v2");
    second["spec"]["providerPlugin"] = json!("docker");
    snap.releases.push(second);
    let objects_v1 = snap.applied["cluster/docker-ferrol-1-32-v1"].clone();
    snap.applied
        .insert("cluster/docker-ferrol-1-32-v2".into(), objects_v1);
    if let Some(SourceCheck::Listed { tags, .. }) = snap.sources.get_mut("cluster/ferrol") {
        tags.insert("docker-ferrol-1-32-v2".into());
    }
    let report = assess(&snap, &Options::default());
    let class = "ClusterClass.cluster.x-k8s.io cluster/docker-ferrol-1-32-v1";
    let about_class: Vec<&Finding> = report.findings.iter().filter(|f| f.object == class).collect();
    assert_eq!(about_class.len(), 2, "{about_class:#?}");
    assert_eq!(about_class.iter().filter(|f| f.level == Level::Adopt).count(), 1);
    let warning = about_class
        .iter()
        .find(|f| f.level == Level::Warning)
        .expect("a warning");
    assert!(
        warning.message.contains("left to cluster/docker-ferrol-1-32-v1"),
        "{}",
        warning.message
    );
}

#[test]
fn cso_installed_from_its_manifests_is_recognised_and_uninstalled_by_label() {
    let deployment = json!({
        "metadata": {"name": "cso-controller-manager", "namespace": "cso-system",
                     "labels": {"cluster.x-k8s.io/provider": "infrastructure-cluster-stack-operator"}},
        "spec": {"template": {"spec": {"containers": [{"image": "registry.local:5000/cso:dev"}]}}}
    });
    assert_eq!(operator_of(&deployment), Some(Operator::Cso));
    assert!(cso_uninstall_hint(&deployment)
        .contains("-l cluster.x-k8s.io/provider=infrastructure-cluster-stack-operator"));
    let stackhost = json!({"metadata": {"labels": {"app.kubernetes.io/name": "stackhost"}},
                           "spec": {"template": {"spec": {"containers": [{"image": "r.example/stackhost:0.1"}]}}}});
    assert_eq!(operator_of(&stackhost), Some(Operator::Stackhost));
    assert_eq!(
        image_path("ghcr.io/sovereigncloudstack/cso:v0.2.0@sha256:ab"),
        "sovereigncloudstack/cso"
    );
    assert_eq!(image_path("cso"), "cso");
}

#[test]
fn after_apply_the_report_says_what_was_done_and_what_failed() {
    let report = assess(&migratable(), &Options::default());
    let outcomes = vec![
        (
            "ClusterStackRelease cluster/docker-ferrol-1-32-v1".to_string(),
            Ok(()),
        ),
        (
            "ClusterClass.cluster.x-k8s.io cluster/docker-ferrol-1-32-v1".to_string(),
            Err("it changed since the check (conflict); run the check again".to_string()),
        ),
    ];
    let text = render_text(&report, "kubeconfig k", Some(&outcomes));
    assert!(
        text.contains("ClusterStackRelease cluster/docker-ferrol-1-32-v1: done"),
        "{text}"
    );
    assert!(text.contains("INCOMPLETE: 1 of 2 adoption(s) failed"), "{text}");
}
