//! `stackhost sandbox` as a user runs it, and kubectl as a real client of the sandbox: the embedded default
//! reaches Ready and the sample Cluster gets its addons (or --once says why not), `kubectl get` shows the printer columns, invalid ClusterStacks are refused with the
//! schema and CEL messages.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use stackhost::controller::ControllerArgs;
use stackhost::sandbox::{self, Sandbox};

/// The binary under test: `STACKHOST_BIN` (a copy safe from other worktrees' builds), else cargo's.
fn stackhost() -> Command {
    Command::new(std::env::var("STACKHOST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stackhost").into()))
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("kubectl is installed (scripts/deps/emulator.sh)");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn sandbox_once_reaches_ready_and_says_what_happened() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = stackhost()
        .args(["sandbox", "--once", "--timeout", "90s", "--kubeconfig"])
        .arg(dir.path().join("kubeconfig"))
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .output()
        .expect("run stackhost sandbox");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{stderr}", out.status);
    assert!(
        stdout.contains("release docker-ferrol-1-32-v1 ready in"),
        "{stdout}"
    );
    assert!(stdout.contains("ClusterClass docker-ferrol-1-32-v1"), "{stdout}");
    assert!(
        stdout.contains(
            "patched by the plugin: docker.clusterstack.x-k8s.io/node-images=docker.io/kindest/node:v1.32.2"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("DevClusterTemplate"), "{stdout}");
    // The sample Cluster of that class got its workload cluster and the addons, checked there by name.
    assert!(
        stdout.contains("addons of Cluster default/sample in its workload cluster after"),
        "{stdout}"
    );
    for object in [
        "  ConfigMap kube-system/cluster-addon-info\n",
        // The docker plugin's addon-values set global.imageRegistry to its imageRegistry.
        "  Deployment kube-system/cluster-addon-web (image docker.io/nginx:1.27)\n",
        "  CustomResourceDefinition addonsettings.ferrol.example.com\n",
    ] {
        assert!(stdout.contains(object), "{object:?} not checked:\n{stdout}");
    }
    assert!(!stdout.contains("hook failure"), "{stdout}");
    // Progress was shown on the way.
    assert!(stderr.contains("docker-ferrol-1-32-v1: ready=true"), "{stderr}");
    for line in [
        "sandbox: created Cluster default/sample (ClusterClass docker-ferrol-1-32-v1, Kubernetes v1.32.2)",
        "sandbox: workload API of Cluster default/sample started",
        "sandbox: ClusterAddon cluster-addon-sample: ready=true",
    ] {
        assert!(stderr.contains(line), "{line:?} missing:\n{stderr}");
    }
    // --once cleans up both kubeconfigs.
    assert!(!dir.path().join("kubeconfig").exists());
    assert!(!dir.path().join("kubeconfig.sample.kubeconfig").exists());
}

#[test]
fn sandbox_once_runs_the_sample_plugin_written_in_python_and_in_javascript() {
    // Compiled code and blobs are kept under the target dir: each component compiles once per target
    // dir (tens of seconds), later runs load it from there, as a restarted controller does.
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("sandbox-pyjs-cache");
    for (language, reference) in [
        ("python", "sample.stackhost.local/plugins/docker-py:0.1.0"),
        ("js", "sample.stackhost.local/plugins/docker-js:0.1.0"),
    ] {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = stackhost()
            .args([
                "sandbox",
                "--once",
                "--timeout",
                "120s",
                "--sample-plugin",
                language,
            ])
            .arg("--cache-dir")
            .arg(&cache)
            .arg("--kubeconfig")
            .arg(dir.path().join("kubeconfig"))
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .output()
            .expect("run stackhost sandbox");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{language}: exit {:?}\n{stdout}\n{stderr}",
            out.status
        );
        assert!(
            stderr.contains(&format!("ProviderPlugin default/docker ({reference})")),
            "{stderr}"
        );
        assert!(
            stdout.contains(
                "patched by the plugin: docker.clusterstack.x-k8s.io/node-images=docker.io/kindest/node:v1.32.2"
            ),
            "{language}: {stdout}"
        );
        assert!(
            stdout.contains("Deployment kube-system/cluster-addon-web (image docker.io/nginx:1.27)"),
            "{language}: the plugin's addon-values ran: {stdout}"
        );
    }
}

#[test]
fn sandbox_once_exits_1_with_the_reason_when_the_timeout_passes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = stackhost()
        .args(["sandbox", "--once", "--timeout", "200ms", "--kubeconfig"])
        .arg(dir.path().join("kubeconfig"))
        .output()
        .expect("run stackhost sandbox");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "sandbox: the sample release did not become ready: not ready after 200ms; last state: "
        ),
        "{stderr}"
    );
}

#[test]
fn sandbox_once_fails_with_the_reason_when_the_layout_is_missing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = stackhost()
        .args(["sandbox", "--once", "--layout"])
        .arg(dir.path())
        .output()
        .expect("run stackhost sandbox");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is not an OCI image layout") && stderr.contains("--layout"),
        "{stderr}"
    );
}

#[tokio::test]
async fn kubectl_sees_printer_columns_and_invalid_cluster_stacks_are_refused() -> anyhow::Result<()> {
    let cache = tempfile::tempdir()?;
    let sb = Sandbox::start(ControllerArgs {
        cache_dir: Some(cache.path().to_path_buf()),
        render_program: Some(env!("CARGO_BIN_EXE_stackhost").into()),
        ..ControllerArgs::default()
    })
    .await?;
    let kubeconfig = cache.path().join("kubeconfig");
    sb.cluster.write_kubeconfig(&kubeconfig)?;
    let kc = kubeconfig.clone();
    let run = move |args: Vec<String>| {
        let kc = kc.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                kubectl(&kc, &refs)
            })
            .await
            .expect("kubectl thread")
        }
    };
    let invalid =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/manifests/clusterstack-invalid.yaml");
    let (_, _, _) = run(vec!["create".into(), "namespace".into(), "cluster".into()]).await;
    let (ok, _, stderr) = run(vec!["apply".into(), "-f".into(), invalid.display().to_string()]).await;
    assert!(!ok, "invalid ClusterStack accepted");
    for needle in ["spec.provider", "spec.kubernetesVersion", "spec.versions[0]"] {
        assert!(stderr.contains(needle), "{needle} not named in:\n{stderr}");
    }

    // A valid one is accepted; an update of an immutable field is refused with the CEL message.
    let (_, cs) = sandbox::sample_objects("default", "sample.stackhost.local/plugins/docker:0.1.0");
    let mut cs = cs;
    cs.spec.auto_subscribe = false;
    sandbox::create(&sb.client, "default", &cs).await?;
    let (ok, _, stderr) = run(vec![
        "patch".into(),
        "clusterstack".into(),
        "docker-ferrol-1-32".into(),
        "--type=merge".into(),
        "-p".into(),
        r#"{"spec":{"kubernetesVersion":"1.33"}}"#.into(),
    ])
    .await;
    assert!(!ok, "kubernetesVersion changed");
    assert!(stderr.contains("kubernetesVersion is immutable"), "{stderr}");

    // The printer columns are upstream's; the ClusterStack reports why it has no release yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (ok, stdout, stderr) = run(vec!["get".into(), "clusterstacks".into()]).await;
    assert!(ok, "{stderr}");
    let header = stdout.lines().next().unwrap_or_default().to_string();
    for column in [
        "PROVIDER",
        "CLUSTERSTACK",
        "K8S",
        "CHANNEL",
        "AUTOSUBSCRIBE",
        "USABLE",
        "LATEST",
        "AGE",
        "REASON",
        "MESSAGE",
    ] {
        assert!(header.contains(column), "{column} missing: {stdout}");
    }
    assert!(
        stdout.contains("docker-ferrol-1-32") && stdout.contains("1.32"),
        "{stdout}"
    );
    sb.shutdown().await
}

/// The README's "Running a real cluster stack", as a user types it: build the real docker stack, start
/// `stackhost sandbox --no-sample` on it with the CAPD CRDs, apply the stack README's ClusterStack and
/// Cluster with kubectl; `--once` exits 0 after reporting the release Ready and the addons applied.
#[test]
fn a_real_stack_goes_from_source_to_ready_in_three_commands() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().expect("tempdir");
    let releases = dir.path().join("releases");
    let out = stackhost()
        .args([
            "release",
            "build",
            "tests/fixtures/real-stacks/stacks/docker-scs",
            "--out",
        ])
        .arg(&releases)
        .current_dir(&repo)
        .output()
        .expect("run stackhost release build");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Clusters use class docker-scs-1-30-v0-sha.d2lgujm with topology.version v1.30.10"),
        "{stdout}"
    );
    assert!(releases
        .join("docker-scs-1-30-v0-sha-d2lgujm/metadata.yaml")
        .is_file());

    let kubeconfig = dir.path().join("sandbox.kubeconfig");
    let sandbox = stackhost()
        .args(["sandbox", "--no-sample", "--once", "--timeout", "300s", "--crds"])
        .arg("tests/fixtures/real-crds/capd")
        .arg("--release-source")
        .arg(format!("dir:{}", releases.display()))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .current_dir(&repo)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stackhost sandbox");
    for _ in 0..600 {
        if kubeconfig.is_file() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(300));
    let manifest = dir.path().join("my-stack.yaml");
    std::fs::write(
        &manifest,
        r#"apiVersion: v1
kind: Namespace
metadata: {name: cluster}
---
apiVersion: clusterstack.x-k8s.io/v1alpha1
kind: ClusterStack
metadata: {name: docker, namespace: cluster}
spec: {provider: docker, name: scs, kubernetesVersion: "1.30", channel: custom, autoSubscribe: false,
       noProvider: true, versions: [v0-sha.d2lgujm]}
---
apiVersion: cluster.x-k8s.io/v1beta1
kind: Cluster
metadata: {name: docker-testcluster, namespace: cluster}
spec:
  topology:
    class: docker-scs-1-30-v0-sha.d2lgujm
    version: v1.30.10
    controlPlane: {replicas: 1}
    workers: {machineDeployments: [{class: default-worker, name: md-0, replicas: 1}]}
"#,
    )
    .expect("write my-stack.yaml");
    let (ok, applied, stderr) = kubectl(&kubeconfig, &["apply", "-f", &manifest.display().to_string()]);
    assert!(ok, "kubectl apply: {applied}\n{stderr}");

    let out = sandbox.wait_with_output().expect("sandbox exits");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{stdout}\n{stderr}", out.status);
    for line in [
        "release cluster/docker-scs-1-30-v0-sha-d2lgujm Ready ",
        "addons of Cluster cluster/docker-testcluster (class docker-scs-1-30-v0-sha.d2lgujm) applied in its workload cluster ",
        "  DaemonSet kube-system/cilium (image quay.io/cilium/cilium:v1.16.6",
        "  Deployment kube-system/metrics-server (image registry.k8s.io/metrics-server/metrics-server:v0.7.2)",
        "  APIService v1beta1.metrics.k8s.io\n",
    ] {
        assert!(stdout.contains(line), "{line:?} missing:\n{stdout}\n{stderr}");
    }
    println!("{stdout}");
    assert!(!stdout.contains("hook failure"), "{stdout}");
}
