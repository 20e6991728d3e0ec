//! `stackhost migrate` against the API emulator holding what a Cluster Stack Operator installation leaves
//! in a management cluster: CSO's Deployment, admission webhooks and runtime-hook ExtensionConfig from its
//! Helm chart, its CRDs as Helm templates (no stackhost fields), a ClusterStack with a provider reference,
//! its ClusterStackRelease with CSO's status and the objects CSO applied for it, a Cluster and its
//! ClusterAddon. The check is blocked with one finding per object; the fixes it prints are run as
//! printed (kubectl, `stackhost crds`); then the dry run lists the adoptions, `--apply` makes them, and
//! stackhost's controllers reconcile the adopted release with its plugin to Ready.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{json, Value};
use stackhost::api::{ClusterStack, ClusterStackRelease};
use stackhost::controller::ControllerArgs;
use stackhost::sandbox::{self, wait_for, wait_release_ready};

const NS: &str = "cluster";
const TAG: &str = "docker-ferrol-1-32-v1";
const WAIT: Duration = Duration::from_secs(60);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The release source and layout of the embedded default (the sample plugin and release live there).
fn source_flags() -> Vec<String> {
    vec![
        "--release-source".into(),
        format!("oci://{}", sandbox::SAMPLE_RELEASES),
        "--oci-layout".into(),
        sandbox::default_layout().display().to_string(),
    ]
}

/// CSO's CRDs as its Helm chart installs them: templates of release `cso-system/cso`, labelled as
/// CSO's, and without the fields stackhost added (`spec.source`, `spec.providerPlugin`).
fn cso_crds() -> String {
    let mut out = String::new();
    for crd in stackhost::api::crds() {
        let mut v = serde_json::to_value(&crd).expect("CRD as JSON");
        if v["spec"]["names"]["kind"] == "ProviderPlugin" {
            continue;
        }
        let spec =
            &mut v["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
        if let Some(props) = spec.as_object_mut() {
            props.remove("source");
            props.remove("providerPlugin");
        }
        v["metadata"]["labels"] = json!({
            "cluster.x-k8s.io/provider": "cluster-stack-operator",
            "app.kubernetes.io/managed-by": "Helm",
            "helm.sh/chart": "cso-0.4.1",
        });
        v["metadata"]["annotations"] = json!({
            "meta.helm.sh/release-name": "cso",
            "meta.helm.sh/release-namespace": "cso-system",
        });
        out.push_str(&format!("---\n{}", serde_yaml::to_string(&v).expect("yaml")));
    }
    out
}

/// What CSO's chart installs besides its CRDs (the parts that matter here), as Helm labels them.
fn cso_installation() -> String {
    let helm = r#"
  labels: {app.kubernetes.io/managed-by: Helm, app.kubernetes.io/name: cso, app.kubernetes.io/instance: cso,
           cluster.x-k8s.io/provider: cluster-stack-operator}
  annotations: {meta.helm.sh/release-name: cso, meta.helm.sh/release-namespace: cso-system}"#;
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: cso-system}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cso-controller-manager
  namespace: cso-system{helm}
spec:
  replicas: 1
  selector: {{matchLabels: {{control-plane: cso-controller-manager}}}}
  template:
    metadata: {{labels: {{control-plane: cso-controller-manager}}}}
    spec:
      containers:
      - name: manager
        image: ghcr.io/sovereigncloudstack/cso:v0.2.0-alpha.1
        command: [/manager, -source, oci]
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata:
  name: cso-validating-webhook-configuration{helm}
webhooks:
- name: validation.cluster.cluster.x-k8s.io
  admissionReviewVersions: [v1]
  clientConfig: {{service: {{name: cso-webhook-service, namespace: cso-system, path: /validate-cluster-x-k8s-io-v1beta1-cluster}}}}
  failurePolicy: Fail
  sideEffects: None
  rules: [{{apiGroups: [cluster.x-k8s.io], apiVersions: [v1beta1], operations: [CREATE, UPDATE], resources: [clusters]}}]
- name: validation.clusterstack.clusterstack.x-k8s.io
  admissionReviewVersions: [v1]
  clientConfig: {{service: {{name: cso-webhook-service, namespace: cso-system, path: /validate-clusterstack-x-k8s-io-v1alpha1-clusterstack}}}}
  failurePolicy: Fail
  sideEffects: None
  rules: [{{apiGroups: [clusterstack.x-k8s.io], apiVersions: [v1alpha1], operations: [CREATE, UPDATE, DELETE], resources: [clusterstacks]}}]
---
apiVersion: runtime.cluster.x-k8s.io/v1alpha1
kind: ExtensionConfig
metadata:
  name: cso-hook-server-extensionconfig{helm}
spec:
  clientConfig: {{service: {{name: cso-hook-server-svc, namespace: cso-system, port: 443}}}}
  namespaceSelector: {{}}
"#
    )
}

/// The user's ClusterStack and what CSO made of it: the release (owned by the ClusterStack, finalizer,
/// provider reference) and the objects it applied into the release's namespace, labelled
/// `clusterstack.x-k8s.io/instance: owned` (applied with field manager `kubectl`, as CSO does).
fn cso_objects(stack_uid: &str) -> (String, String) {
    let release = format!(
        r#"
apiVersion: clusterstack.x-k8s.io/v1alpha1
kind: ClusterStackRelease
metadata:
  name: {TAG}
  namespace: {NS}
  finalizers: [clusterstackrelease.clusterstack.x-k8s.io]
  ownerReferences: [{{apiVersion: clusterstack.x-k8s.io/v1alpha1, kind: ClusterStack, name: ferrol, uid: {stack_uid}}}]
spec:
  providerRef: {{apiVersion: infrastructure.clusterstack.x-k8s.io/v1alpha1, kind: DockerClusterStackRelease, name: {TAG}, namespace: {NS}}}
"#
    );
    let applied = format!(
        r#"
apiVersion: bootstrap.cluster.x-k8s.io/v1beta2
kind: KubeadmConfigTemplate
metadata: {{name: {TAG}-worker, namespace: {NS}, labels: {{clusterstack.x-k8s.io/instance: owned}}}}
spec:
  template:
    spec:
      joinConfiguration:
        nodeRegistration:
          kubeletExtraArgs: [{{name: eviction-hard, value: "nodefs.available<0%,imagefs.available<0%"}}]
---
apiVersion: infrastructure.cluster.x-k8s.io/v1beta2
kind: DevClusterTemplate
metadata: {{name: {TAG}-cluster, namespace: {NS}, labels: {{clusterstack.x-k8s.io/instance: owned}}}}
spec: {{template: {{spec: {{backend: {{docker: {{loadBalancer: {{}}}}}}}}}}}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: ferrol-leftover, namespace: {NS}, labels: {{clusterstack.x-k8s.io/instance: owned}}}}
data: {{note: rendered by an older chart}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: hand-made, namespace: {NS}}}
data: {{note: made by hand under a name the release once used}}
"#
    );
    (release, applied)
}

fn resource(group: &str, version: &str, kind: &str, name: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind, "namespace": NS, "name": name, "status": "synced"})
}

fn api(client: &kube::Client, group: &str, version: &str, kind: &str) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
    Api::namespaced_with(client.clone(), NS, &ar)
}

/// `stackhost migrate` with `args`: exit code and stdout.
fn migrate(kubeconfig: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stackhost"))
        .arg("migrate")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(source_flags())
        .args(args)
        .output()
        .expect("stackhost migrate runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!(
        "stackhost migrate {}:\n{stdout}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), stdout)
}

/// The commands a fix names (between backticks) that can run here: kubectl and `stackhost crds`; not
/// `helm uninstall` (no Helm release exists in the emulator; the test removes the same objects by hand).
fn commands(fix: &str) -> Vec<String> {
    fix.split('`')
        .skip(1)
        .step_by(2)
        .filter(|c| c.starts_with("kubectl ") || c.starts_with("stackhost crds"))
        .map(str::to_owned)
        .collect()
}

/// Runs a printed command with the emulator's kubeconfig and this build's `stackhost` on PATH.
fn run_printed(command: &str, kubeconfig: &Path) {
    let bin = Path::new(env!("CARGO_BIN_EXE_stackhost"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let home = kubeconfig.parent().expect("dir");
    let out = Command::new("sh")
        .args(["-c", command])
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", home)
        .env("PATH", path)
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "the printed fix `{command}` failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cso_cluster_is_blocked_then_adopted_and_reconciled_to_ready() -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cluster = kube_emulator::Cluster::start().await?;
    cluster.add_converter(std::sync::Arc::new(
        kube_emulator::cluster_api::ClusterApiConversion,
    ));
    cluster.apply_yaml(&cso_crds(), "helm")?;
    for (file, text) in sandbox::read_crd_files(&[repo().join("tests/fixtures/capi-crds")])? {
        cluster
            .apply_yaml(&text, "clusterctl")
            .map_err(|e| anyhow::anyhow!("{file}: {e}"))?;
    }
    cluster.apply_yaml(&cso_installation(), "helm")?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig)?;
    let client = cluster.client()?;

    // The user's objects, as they are under CSO.
    cluster.apply_yaml(
        &format!(
            r#"
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: clusterstack.x-k8s.io/v1alpha1
kind: ClusterStack
metadata: {{name: ferrol, namespace: {NS}}}
spec:
  provider: docker
  name: ferrol
  kubernetesVersion: "1.32"
  channel: stable
  autoSubscribe: false
  noProvider: false
  versions: [v1]
  providerRef: {{apiVersion: infrastructure.clusterstack.x-k8s.io/v1alpha1, kind: DockerClusterStackReleaseTemplate, name: ferrol-template, namespace: {NS}}}
"#
        ),
        "kubectl-client-side-apply",
    )?;
    let stacks: Api<ClusterStack> = Api::namespaced(client.clone(), NS);
    let stack_uid = stacks.get("ferrol").await?.metadata.uid.unwrap_or_default();
    let (release, applied) = cso_objects(&stack_uid);
    cluster.apply_yaml(&release, "manager")?;
    cluster.apply_yaml(&applied, "kubectl")?;
    let releases: Api<ClusterStackRelease> = Api::namespaced(client.clone(), NS);
    releases
        .patch_status(
            TAG,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "ready": true,
                "kubernetesVersion": "v1.32.2",
                "resources": [
                    resource("bootstrap.cluster.x-k8s.io", "v1beta2", "KubeadmConfigTemplate", &format!("{TAG}-worker")),
                    resource("infrastructure.cluster.x-k8s.io", "v1beta2", "DevClusterTemplate", &format!("{TAG}-cluster")),
                    resource("", "v1", "ConfigMap", "ferrol-leftover"),
                    resource("", "v1", "ConfigMap", "hand-made"),
                ],
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
            }})),
        )
        .await?;
    let mut cluster_obj = serde_json::to_value(sandbox::sample_cluster(NS, TAG, "v1.32.2"))?;
    cluster_obj["metadata"]["name"] = json!("workload");
    cluster.apply_yaml(&serde_json::to_string(&cluster_obj)?, "kubectl")?;
    let cluster_uid = api(&client, "cluster.x-k8s.io", "v1beta1", "Cluster")
        .get("workload")
        .await?
        .metadata
        .uid
        .unwrap_or_default();
    cluster.apply_yaml(
        &format!(
            r#"
apiVersion: clusterstack.x-k8s.io/v1alpha1
kind: ClusterAddon
metadata:
  name: cluster-addon-workload
  namespace: {NS}
  finalizers: [clusteraddon.clusterstack.x-k8s.io]
  ownerReferences: [{{apiVersion: cluster.x-k8s.io/v1beta1, kind: Cluster, name: workload, uid: {cluster_uid}}}]
spec:
  clusterStack: {TAG}
  version: v1
  clusterRef: {{apiVersion: cluster.x-k8s.io/v1beta1, kind: Cluster, name: workload, namespace: {NS}, uid: {cluster_uid}}}
"#
        ),
        "manager",
    )?;

    // 1. CSO still runs: blocked, one finding per object, each with what to do.
    let (code, text) = migrate(&kubeconfig, &[]);
    assert_eq!(code, 1, "blocked exits 1");
    for expected in [
        "- CustomResourceDefinition clusterstacks.clusterstack.x-k8s.io: uninstalling CSO would delete this CRD and with it every ClusterStack in the cluster",
        "- CustomResourceDefinition clusterstackreleases.clusterstack.x-k8s.io:",
        "- CustomResourceDefinition clusteraddons.clusterstack.x-k8s.io:",
        "- Deployment cso-system/cso-controller-manager: the Cluster Stack Operator is running (1 replica(s), image ghcr.io/sovereigncloudstack/cso:v0.2.0-alpha.1)",
        "fix: protect the CRDs first (the CustomResourceDefinition findings above), then uninstall CSO: `helm uninstall cso -n cso-system`",
        "- ValidatingWebhookConfiguration cso-validating-webhook-configuration: CSO's admission webhooks (validation.cluster.cluster.x-k8s.io, validation.clusterstack.clusterstack.x-k8s.io)",
        "- ExtensionConfig.runtime.cluster.x-k8s.io cso-hook-server-extensionconfig: registers CSO's runtime hooks",
        "- CustomResourceDefinitions clusterstack.x-k8s.io: the cluster does not have stackhost's CRDs (clusterstacks.clusterstack.x-k8s.io has no spec.source; clusterstackreleases.clusterstack.x-k8s.io has no spec.providerPlugin; providerplugins.clusterstack.x-k8s.io is not installed)",
        "- ClusterStack cluster/ferrol: provider \"docker\" needs a provider plugin, but there is no ProviderPlugin cluster/docker (CSO's spec.providerRef to DockerClusterStackReleaseTemplate ferrol-template is not used by stackhost)",
        "- ConfigMap cluster/hand-made: listed by ClusterStackRelease cluster/docker-ferrol-1-32-v1 but not labelled clusterstack.x-k8s.io/instance=owned",
        "- ClusterAddon cluster/cluster-addon-workload: taken over as it is: Cluster workload, addons of docker-ferrol-1-32-v1",
        "BLOCKED: 8 blocker(s); fix them and run the check again.",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    // --apply refuses while blocked and changes nothing.
    let (code, text) = migrate(&kubeconfig, &["--apply"]);
    assert_eq!(code, 1);
    assert!(
        text.contains("BLOCKED: 8 blocker(s); nothing was changed;"),
        "{text}"
    );
    assert_eq!(releases.get(TAG).await?.spec.provider_plugin, None);

    // 2. Fix each blocker with the commands the report prints, in its order.
    let (_, json_text) = migrate(&kubeconfig, &["--json"]);
    let report: Value = serde_json::from_str(&json_text)?;
    assert_eq!(report["blocked"], true);
    let mut ran = Vec::new();
    for finding in report["findings"].as_array().into_iter().flatten() {
        if finding["level"] != "blocker" {
            continue;
        }
        for command in commands(finding["fix"].as_str().unwrap_or_default()) {
            run_printed(&command, &kubeconfig);
            ran.push(command);
        }
    }
    assert!(
        ran.iter().any(|c| c.starts_with("stackhost crds |")) && ran.len() == 10,
        "6 CRD marks, scale, 2 deletes, stackhost's CRDs: {ran:#?}"
    );
    // What `helm uninstall cso` would also do (the Deployment scaled to zero above is still there).
    run_printed(
        "kubectl -n cso-system delete deployment cso-controller-manager",
        &kubeconfig,
    );
    let crd = run_printed_output(
        "kubectl get crd clusterstacks.clusterstack.x-k8s.io -o json",
        &kubeconfig,
    );
    assert_eq!(crd["metadata"]["annotations"]["helm.sh/resource-policy"], "keep");
    assert!(crd["metadata"]["labels"]["cluster.x-k8s.io/provider"].is_null());
    // The ProviderPlugin the ClusterStack's provider needs.
    let (plugin, _) = sandbox::sample_objects(NS, sandbox::SAMPLE_PLUGIN);
    sandbox::create(&client, NS, &plugin).await?;

    // 3. Nothing blocks: the dry run lists the adoptions and changes nothing.
    let (code, text) = migrate(&kubeconfig, &[]);
    assert_eq!(code, 0, "{text}");
    for expected in [
        "Will adopt with --apply (4):",
        "- ClusterStackRelease cluster/docker-ferrol-1-32-v1: set spec.providerPlugin to \"docker\" (from ClusterStack cluster/ferrol; CSO named a provider object instead)",
        "- KubeadmConfigTemplate.bootstrap.cluster.x-k8s.io cluster/docker-ferrol-1-32-v1-worker: annotate clusterstack.x-k8s.io/owner=cluster/docker-ferrol-1-32-v1",
        "- DevClusterTemplate.infrastructure.cluster.x-k8s.io cluster/docker-ferrol-1-32-v1-cluster: annotate",
        "- ClusterStack cluster/ferrol: taken over as it is: ProviderPlugin cluster/docker, releases from",
        "READY: nothing blocks; `stackhost migrate --apply` adopts",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert_eq!(
        releases.get(TAG).await?.spec.provider_plugin,
        None,
        "a dry run changes nothing"
    );

    // 4. --apply adopts.
    let (code, text) = migrate(&kubeconfig, &["--apply"]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("DONE: 4 object(s) adopted"), "{text}");
    assert_eq!(
        releases.get(TAG).await?.spec.provider_plugin.as_deref(),
        Some("docker")
    );
    let templates = api(
        &client,
        "bootstrap.cluster.x-k8s.io",
        "v1beta2",
        "KubeadmConfigTemplate",
    );
    let worker = templates.get(&format!("{TAG}-worker")).await?;
    assert_eq!(
        worker
            .metadata
            .annotations
            .unwrap_or_default()
            .get("clusterstack.x-k8s.io/owner")
            .map(String::as_str),
        Some("cluster/docker-ferrol-1-32-v1")
    );
    let (code, text) = migrate(&kubeconfig, &[]);
    assert_eq!(code, 0);
    assert!(
        text.contains("READY: nothing blocks and nothing needs adopting."),
        "{text}"
    );

    // 5. stackhost takes over: the adopted release is prepared by its plugin and applied, Ready.
    let cache = tempfile::tempdir()?;
    let args = ControllerArgs {
        cache_dir: Some(cache.path().to_path_buf()),
        render_program: Some(env!("CARGO_BIN_EXE_stackhost").into()),
        oci_layout: Some(sandbox::default_layout()),
        release_source: Some(format!("oci://{}", sandbox::SAMPLE_RELEASES)),
        retry_base: Duration::from_millis(200),
        retry_max: Duration::from_secs(2),
        ..ControllerArgs::default()
    };
    let mut registry = prometheus_client::registry::Registry::default();
    let ctx = std::sync::Arc::new(stackhost::cli::controller_context(
        client.clone(),
        args,
        &mut registry,
    )?);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let controllers = tokio::spawn(stackhost::controller::run(ctx, stopped, || {}));

    let ready = wait_for(
        "the adopted release to be prepared by its plugin and Ready",
        WAIT,
        || {
            let releases = releases.clone();
            async move {
                let r = releases.get(TAG).await.map_err(|e| e.to_string())?;
                match &r.status {
                    Some(s) if s.ready && s.plugin_digest.is_some() => Ok(r),
                    _ => Err(sandbox::describe_release(&r)),
                }
            }
        },
    )
    .await?;
    wait_release_ready(&client, NS, TAG, WAIT).await?;
    let resources = ready.status.map(|s| s.resources).unwrap_or_default();
    assert!(
        resources
            .iter()
            .any(|r| r.kind == "ClusterClass" && r.name == TAG),
        "stackhost applied the ClusterClass: {resources:?}"
    );
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), NS);
    wait_for("the leftover CSO applied to be pruned", WAIT, || {
        let configmaps = configmaps.clone();
        async move {
            match configmaps.get_opt("ferrol-leftover").await {
                Ok(None) => Ok(()),
                Ok(Some(_)) => Err("still there".to_string()),
                Err(e) => Err(e.to_string()),
            }
        }
    })
    .await?;
    assert!(
        configmaps.get_opt("hand-made").await?.is_some(),
        "an object CSO did not label is never deleted"
    );
    let worker = templates.get(&format!("{TAG}-worker")).await?;
    assert!(
        worker
            .metadata
            .managed_fields
            .unwrap_or_default()
            .iter()
            .any(|m| m.manager.as_deref() == Some("stackhost")),
        "stackhost applied the template it adopted"
    );
    wait_for("the ClusterStack to be Ready", WAIT, || {
        let stacks = stacks.clone();
        async move {
            let cs = stacks.get("ferrol").await.map_err(|e| e.to_string())?;
            let status = cs.status.unwrap_or_default();
            let ready = status
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == stackhost::api::ConditionStatus::True);
            if ready && status.usable_versions == "v1" {
                Ok(())
            } else {
                Err(format!(
                    "{:?} usable {:?}",
                    status.conditions, status.usable_versions
                ))
            }
        }
    })
    .await?;

    let _ = stop.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(30), controllers).await;
    cluster.shutdown().await?;
    Ok(())
}

fn run_printed_output(command: &str, kubeconfig: &Path) -> Value {
    let out = Command::new("sh")
        .args(["-c", command])
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", kubeconfig.parent().expect("dir"))
        .output()
        .expect("sh runs");
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON")
}
