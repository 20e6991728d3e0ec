//! Rendering tests: the pure manifest handling, and the real Helm SDK on the sample releases.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::*;
use crate::release::{ReleaseAssets, ReleaseName};

fn fixture(tag: &str) -> ReleaseAssets {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/releases")
        .join(tag);
    ReleaseAssets::load(&dir, tag)
        .unwrap_or_else(|e| panic!("fixture {tag}: {e} (rebuild with scripts/build-fixture-releases.sh)"))
}

fn helm() -> HelmLibRenderer {
    HelmLibRenderer::discover().unwrap_or_else(|e| panic!("{e}"))
}

fn ids(objs: &[Value]) -> Vec<String> {
    objs.iter()
        .map(|o| {
            format!(
                "{}/{}",
                o["kind"].as_str().unwrap_or("?"),
                o["metadata"]["name"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

#[test]
fn rendered_templates_become_sorted_objects() {
    let rendered = vec![
        ("c/templates/NOTES.txt".to_owned(), "not yaml: [".to_owned()),
        ("c/templates/_helpers.tpl".to_owned(), String::new()),
        (
            "c/templates/b.yaml".to_owned(),
            "---\n# empty\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: ns}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: ns}\n".to_owned(),
        ),
        ("c/templates/a.yaml".to_owned(), "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\n".to_owned()),
        ("crds/0".to_owned(), "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: x.example.com}\n".to_owned()),
    ];
    let objs = manifests_from_rendered(Path::new("c.tgz"), rendered.clone()).expect("valid");
    assert_eq!(
        ids(&objs),
        [
            "Namespace/ns",
            "CustomResourceDefinition/x.example.com",
            "ConfigMap/b",
            "Deployment/a"
        ]
    );
    let mut reversed = rendered;
    reversed.reverse();
    assert_eq!(
        manifests_from_rendered(Path::new("c.tgz"), reversed).expect("valid"),
        objs,
        "order-independent"
    );
}

#[test]
fn invalid_rendered_objects_name_the_template() {
    let case = |text: &str| {
        manifests_from_rendered(
            Path::new("c.tgz"),
            [("c/templates/x.yaml".to_owned(), text.to_owned())],
        )
        .expect_err(text)
        .to_string()
    };
    assert_eq!(
        case("kind: ConfigMap\nmetadata: {name: a}"),
        "chart c.tgz rendered an invalid manifest in c/templates/x.yaml: an object has no apiVersion"
    );
    assert_eq!(
        case("apiVersion: v1\nkind: ConfigMap\nmetadata: {}"),
        "chart c.tgz rendered an invalid manifest in c/templates/x.yaml: a ConfigMap has no metadata.name"
    );
    assert_eq!(case("- a\n- b"), "chart c.tgz rendered an invalid manifest in c/templates/x.yaml: expected an object, got [\"a\",\"b\"]");
    assert!(case("a: [").starts_with("chart c.tgz rendered an invalid manifest in c/templates/x.yaml: "));
}

#[test]
fn helm_renders_cluster_class_chart_as_upstream_names_it() {
    let assets = fixture("docker-ferrol-1-32-v1");
    let name = ReleaseName::parse_tag("docker-ferrol-1-32-v1").expect("tag");
    let release = name.helm_release_name();
    let req = RenderRequest::cluster_class(&assets, &release, "cluster");
    let objs = helm().render(&req).expect("renders");
    assert_eq!(
        ids(&objs),
        [
            "KubeadmConfigTemplate/docker-ferrol-1-32-v1-worker",
            "ClusterClass/docker-ferrol-1-32-v1",
            "KubeadmControlPlaneTemplate/docker-ferrol-1-32-v1-control-plane",
            "DevClusterTemplate/docker-ferrol-1-32-v1-cluster",
            "DevMachineTemplate/docker-ferrol-1-32-v1-control-plane",
            "DevMachineTemplate/docker-ferrol-1-32-v1-worker",
        ]
    );
    // The ClusterClass name is the release's class name (dot form), as the chart convention yields.
    assert_eq!(objs[1]["metadata"]["name"], json!(name.class_name()));
    assert!(
        objs.iter().all(|o| o["metadata"]["namespace"] == "cluster"),
        "every object in the release namespace"
    );
    // --kube-version comes from metadata.yaml.
    assert_eq!(
        objs[4]["spec"]["template"]["spec"]["backend"]["docker"]["customImage"],
        "kindest/node:v1.32.2"
    );
    // Helm escapes: the CAPI Go template of the patch survives rendering.
    assert_eq!(
        objs[1]["spec"]["patches"][0]["enabledIf"],
        "{{ if .imageRepository }}true{{ end }}"
    );
    // Rendering is deterministic.
    assert_eq!(helm().render(&req).expect("renders"), objs);
}

#[test]
fn helm_renders_legacy_addon_with_values_and_crds() {
    let assets = fixture("docker-ferrol-1-32-v1");
    let values = json!({"clusterName": "c1", "web": {"replicas": 3}});
    let objs = helm()
        .render(&RenderRequest::cluster_addon(&assets, &values))
        .expect("renders");
    assert_eq!(
        ids(&objs),
        [
            "CustomResourceDefinition/addonsettings.ferrol.example.com",
            "ConfigMap/cluster-addon-info",
            "Deployment/cluster-addon-web"
        ]
    );
    assert_eq!(
        objs[1]["data"],
        json!({"clusterName": "c1", "kubernetes": "v1.32.2"})
    );
    assert_eq!(objs[2]["metadata"]["namespace"], "kube-system");
    assert_eq!(objs[2]["spec"]["replicas"], 3);
}

#[test]
fn helm_template_errors_reach_the_user() {
    let assets = fixture("docker-ferrol-1-32-v1");
    let err = helm()
        .render(&RenderRequest::cluster_addon(&assets, &json!({})))
        .expect_err("clusterName is required");
    let text = err.to_string();
    assert!(matches!(err, RenderError::Helm { .. }), "{err:?}");
    assert!(
        text.contains("values.clusterName is required (set by cluster-addon-values.yaml)"),
        "{text}"
    );
    assert!(text.starts_with("helm could not render "), "{text}");

    let missing = Path::new("/nonexistent/chart.tgz");
    let req = RenderRequest {
        chart: missing,
        values: &NO_VALUES,
        release_name: "r",
        namespace: "n",
        kube_version: None,
        include_crds: false,
    };
    let text = helm().render(&req).expect_err("no chart").to_string();
    assert!(
        text.starts_with("helm could not load chart /nonexistent/chart.tgz: "),
        "{text}"
    );
}

#[test]
fn helm_lib_reports_its_version_and_refuses_a_second_library() {
    let r = helm();
    assert!(r.sdk_version().starts_with("v4."), "{}", r.sdk_version());
    let err = HelmLibRenderer::load(Path::new("/tmp/other/libhelm_c.so")).expect_err("second lib");
    assert!(err.to_string().contains("one Go runtime per process"), "{err}");
}

#[test]
fn helm_binary_arguments_match_upstream() {
    let assets = fixture("docker-ferrol-1-32-v1");
    let values = json!({});
    let args = HelmBinRenderer::args(&RenderRequest::cluster_addon(&assets, &values));
    let chart = assets.cluster_addon_chart.to_string_lossy().into_owned();
    assert_eq!(
        args,
        [
            "template",
            "cluster-addon",
            chart.as_str(),
            "--namespace",
            "kube-system",
            "--values",
            "-",
            "--kube-version",
            "v1.32.2",
            "--include-crds"
        ]
    );
}

/// A stand-in `helm` (no Linux helm binary is installable here, toolchain.md §3) that checks the
/// values arrive on stdin and answers like `helm template`, or fails like it.
fn fake_helm(dir: &Path, script: &str) -> HelmBinRenderer {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("helm");
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write fake helm");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    HelmBinRenderer::new(path)
}

#[test]
fn helm_binary_output_stdin_and_failures() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let assets = fixture("docker-ferrol-1-32-v1");
    let values = json!({"a": 1});
    let req = RenderRequest::cluster_addon(&assets, &values);
    let ok = fake_helm(
        tmp.path(),
        r#"v=$(cat); printf 'apiVersion: v1\nkind: ConfigMap\nmetadata: {name: z, namespace: %s}\ndata: {values: %s}\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n' "$5" "'$v'""#,
    );
    let objs = ok.render(&req).expect("renders");
    assert_eq!(ids(&objs), ["Namespace/a", "ConfigMap/z"]);
    assert_eq!(objs[1]["metadata"]["namespace"], "kube-system");
    assert_eq!(objs[1]["data"]["values"], r#"{"a":1}"#);

    let failing = fake_helm(
        tmp.path(),
        "echo 'Error: execution error at (x.yaml:3): boom' >&2; exit 1",
    );
    assert_eq!(
        failing.render(&req).expect_err("fails").to_string(),
        format!(
            "helm could not render {}: Error: execution error at (x.yaml:3): boom",
            assets.cluster_addon_chart.display()
        )
    );
    let panicking = fake_helm(
        tmp.path(),
        "echo 'panic: runtime error: index out of range' >&2; echo 'goroutine 1 [running]:' >&2; exit 2",
    );
    assert!(matches!(
        panicking.render(&req),
        Err(RenderError::HelmPanicked { .. })
    ));
}

#[test]
fn missing_helm_binary_is_a_clear_error() {
    let assets = fixture("docker-ferrol-1-32-v1");
    let req = RenderRequest::cluster_class(&assets, "docker-ferrol-1-32", "cluster");
    let err = HelmBinRenderer::new("/nonexistent/helm")
        .render(&req)
        .expect_err("no binary");
    assert!(
        err.to_string()
            .starts_with("helm binary unavailable: cannot run /nonexistent/helm: "),
        "{err}"
    );
}

#[test]
fn helm_renders_a_multi_stage_addon_stage_from_its_unpacked_directory() {
    let tmp = tempfile::tempdir().expect("tmp");
    let assets = fixture("docker-ferrol-1-32-v2");
    let charts = assets.unpack_cluster_addon(tmp.path()).expect("unpack");
    let values = json!({"replicas": 2});
    let req = RenderRequest {
        chart: &charts["metrics-server"],
        values: &values,
        release_name: "cluster-addon",
        namespace: "kube-system",
        kube_version: Some(&assets.metadata.kubernetes),
        include_crds: true,
    };
    let objs = helm().render(&req).expect("renders");
    assert_eq!(ids(&objs), ["Deployment/metrics-server"]);
    assert_eq!(objs[0]["spec"]["replicas"], 2);
}

#[test]
fn default_renderer_prefers_the_library() {
    let r = default_renderer().unwrap_or_else(|e| panic!("{e}"));
    assert!(r.name().starts_with("libhelm_c (Helm v4."), "{}", r.name());
}

#[test]
fn a_runaway_render_is_refused_at_the_object_limit_with_its_template() {
    let one = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n---\n";
    let rendered = vec![(
        "c/templates/loop.yaml".to_owned(),
        one.repeat(MAX_RENDERED_OBJECTS + 1),
    )];
    let err = manifests_from_rendered(Path::new("c.tgz"), rendered).expect_err("too many");
    assert_eq!(
        err.to_string(),
        format!(
            "chart c.tgz rendered more than {MAX_RENDERED_OBJECTS} objects (at c/templates/loop.yaml), over the \
             limit of {MAX_RENDERED_OBJECTS} objects per render; a cluster stack's chart renders far fewer \
             (check its loops and values)"
        )
    );
    let exactly = vec![(
        "c/templates/loop.yaml".to_owned(),
        one.repeat(MAX_RENDERED_OBJECTS),
    )];
    assert_eq!(
        manifests_from_rendered(Path::new("c.tgz"), exactly)
            .expect("at the limit")
            .len(),
        MAX_RENDERED_OBJECTS
    );

    let huge = vec![(
        "c/templates/big.yaml".to_owned(),
        "#".repeat(MAX_RENDERED_BYTES + 1),
    )];
    let err = manifests_from_rendered(Path::new("c.tgz"), huge).expect_err("too many bytes");
    assert!(
        err.to_string().contains(&format!(
            "more than {MAX_RENDERED_BYTES} bytes (at c/templates/big.yaml)"
        )),
        "{err}"
    );
}
