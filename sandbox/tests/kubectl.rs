//! The real kubectl (v1.32) against the emulator: apply (client- and server-side), get with every output,
//! printer columns, watch, wait, patch, label/annotate, cascading delete, explain, and the binary with a
//! state file.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kube_emulator::Cluster;

const KUBECTL: &str = "/usr/bin/kubectl";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

struct Kubectl {
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn new(cluster: &Cluster) -> Self {
        assert!(
            Path::new(KUBECTL).exists(),
            "kubectl is missing at {KUBECTL}: run scripts/deps/emulator.sh"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        cluster.write_kubeconfig(&kubeconfig).expect("kubeconfig");
        Kubectl { dir, kubeconfig }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(KUBECTL);
        // A private HOME keeps kubectl's discovery cache per test.
        c.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.dir.path())
            .current_dir(self.dir.path());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("kubectl runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "kubectl {} failed:\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "kubectl {} should fail but printed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn write(&self, name: &str, yaml: &str) -> String {
        let p = self.dir.path().join(name);
        std::fs::write(&p, yaml).expect("write manifest");
        p.to_string_lossy().into_owned()
    }
}

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

const WIDGET: &str = "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w1\nspec:\n  size: 3\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_get_and_printer_columns() {
    let cluster = Cluster::start().await.expect("cluster");
    let k = Kubectl::new(&cluster);
    assert!(k
        .ok(&["apply", "-f", &fixture("widget-crd.yaml")])
        .contains("customresourcedefinition.apiextensions.k8s.io/widgets.example.com created"));
    let w = k.write("w1.yaml", WIDGET);
    assert_eq!(k.ok(&["apply", "-f", &w]).trim(), "widget.example.com/w1 created");
    assert_eq!(
        k.ok(&["apply", "-f", &w]).trim(),
        "widget.example.com/w1 unchanged"
    );
    let table = k.ok(&["get", "widgets"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SIZE", "READY", "AGE"]);
    let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(&row[..2], ["w1", "3"]);
    // Short name and category work, defaults were applied.
    assert_eq!(k.ok(&["get", "wd", "w1", "-o", "jsonpath={.spec.color}"]), "red");
    assert!(k
        .ok(&["get", "gadgets", "-o", "name"])
        .contains("widget.example.com/w1"));
    let json: serde_json::Value =
        serde_json::from_str(&k.ok(&["get", "widget", "w1", "-o", "json"])).expect("json output");
    assert_eq!(json["metadata"]["generation"], 1);
    assert!(json["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    let yaml = k.ok(&["get", "widget", "w1", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Widget") && yaml.contains("size: 3"),
        "{yaml}"
    );
    // Server-side apply by another manager over a client-side-applied field conflicts, then forces.
    let w5 = k.write("w5.yaml", &WIDGET.replace("size: 3", "size: 5"));
    let err = k.fails(&["apply", "--server-side", "-f", &w5]);
    assert!(
        err.contains("conflict with \"kubectl-client-side-apply\"") && err.contains(".spec.size"),
        "{err}"
    );
    assert!(k
        .ok(&["apply", "--server-side", "--force-conflicts", "-f", &w5])
        .contains("serverside-applied"));
    assert_eq!(
        k.ok(&[
            "get",
            "widget",
            "w1",
            "-o",
            "jsonpath={.spec.size} {.metadata.generation}"
        ]),
        "5 2"
    );
    // Validation errors come back from the server with field paths.
    let bad = k.write("bad.yaml", &WIDGET.replace("size: 3", "size: 300"));
    let err = k.fails(&["apply", "-f", &bad]);
    assert!(
        err.contains("spec.size: Invalid value: 300: spec.size in body should be less than or equal to 100"),
        "{err}"
    );
    // Strict field validation (kubectl's default) rejects unknown fields.
    let unknown = k.write(
        "unknown.yaml",
        "apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w2\nspec:\n  size: 1\n  shape: round\n",
    );
    let err = k.fails(&["create", "-f", &unknown]);
    assert!(err.contains("unknown field \"spec.shape\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patch_label_annotate_and_wait() {
    let cluster = Cluster::start().await.expect("cluster");
    let k = Kubectl::new(&cluster);
    k.ok(&["apply", "-f", &fixture("widget-crd.yaml")]);
    k.ok(&["apply", "-f", &k.write("w1.yaml", WIDGET)]);
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"size":7}}"#,
    ]);
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--type",
        "json",
        "-p",
        r#"[{"op":"replace","path":"/spec/color","value":"blue"}]"#,
    ]);
    assert_eq!(
        k.ok(&["get", "widget", "w1", "-o", "jsonpath={.spec.size}/{.spec.color}"]),
        "7/blue"
    );
    let err = k.fails(&[
        "patch",
        "widget",
        "w1",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/spec/nope"}]"#,
    ]);
    assert!(err.contains("/spec/nope"), "{err}");
    // The CRD's scale subresource maps replicas to .spec.size, and the schema still applies.
    assert_eq!(
        k.ok(&["scale", "widget", "w1", "--replicas=9"]).trim(),
        "widget.example.com/w1 scaled"
    );
    assert_eq!(k.ok(&["get", "widget", "w1", "-o", "jsonpath={.spec.size}"]), "9");
    let err = k.fails(&["scale", "widget", "w1", "--replicas=300"]);
    assert!(err.contains("spec.size: Invalid value: 300"), "{err}");
    k.ok(&["label", "widget", "w1", "team=a"]);
    k.ok(&["annotate", "widget", "w1", "note=hello"]);
    assert_eq!(
        k.ok(&["get", "widgets", "-l", "team=a", "-o", "name"]).trim(),
        "widget.example.com/w1"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "widget",
            "w1",
            "-o",
            "jsonpath={.metadata.annotations.note}"
        ]),
        "hello"
    );
    assert_eq!(k.ok(&["get", "widgets", "-l", "team=b", "-o", "name"]).trim(), "");

    // wait --for=condition=Ready returns once the status says so.
    let waiter = k
        .command(&["wait", "--for=condition=Ready", "widget/w1", "--timeout=20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl wait");
    tokio::time::sleep(Duration::from_millis(500)).await;
    k.ok(&[
        "patch",
        "widget",
        "w1",
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#,
    ]);
    let out = waiter.wait_with_output().expect("wait finishes");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "widget.example.com/w1 condition met"
    );
    let ready = k.ok(&["get", "widgets"]);
    assert!(
        ready
            .lines()
            .nth(1)
            .is_some_and(|l| l.split_whitespace().nth(2) == Some("True")),
        "{ready}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_watch_receives_updates() {
    let cluster = Cluster::start().await.expect("cluster");
    let k = Kubectl::new(&cluster);
    k.ok(&["create", "configmap", "watched", "--from-literal=v=1"]);
    let mut child = k
        .command(&[
            "get",
            "configmap",
            "watched",
            "-w",
            "-o",
            "jsonpath={.data.v}{\"\\n\"}",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).ok().as_deref(),
        Some("1")
    );
    k.ok(&[
        "patch",
        "configmap",
        "watched",
        "--type",
        "merge",
        "-p",
        r#"{"data":{"v":"2"}}"#,
    ]);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(10)).ok().as_deref(),
        Some("2")
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_cascade_removes_dependents() {
    let cluster = Cluster::start().await.expect("cluster");
    let k = Kubectl::new(&cluster);
    k.ok(&["create", "configmap", "owner"]);
    let uid = k.ok(&["get", "configmap", "owner", "-o", "jsonpath={.metadata.uid}"]);
    for name in ["dep-a", "dep-b"] {
        let manifest = format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  ownerReferences:\n  - apiVersion: v1\n    kind: ConfigMap\n    name: owner\n    uid: {uid}\n    blockOwnerDeletion: true\n");
        k.ok(&["apply", "-f", &k.write(&format!("{name}.yaml"), &manifest)]);
    }
    k.ok(&["create", "configmap", "bystander"]);
    assert!(k
        .ok(&["delete", "configmap", "owner", "--cascade=foreground"])
        .contains("configmap \"owner\" deleted"));
    let left = k.ok(&["get", "configmaps", "-o", "name"]);
    assert_eq!(
        left.split_whitespace().collect::<Vec<_>>(),
        ["configmap/bystander"],
        "{left}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_deletion_and_wait_for_delete() {
    let cluster = Cluster::start().await.expect("cluster");
    let k = Kubectl::new(&cluster);
    k.ok(&["create", "namespace", "tmp"]);
    k.ok(&["create", "configmap", "inside", "-n", "tmp"]);
    // kubectl delete waits until the namespace is really gone (contents first).
    assert_eq!(
        k.ok(&["delete", "namespace", "tmp"]).trim(),
        "namespace \"tmp\" deleted"
    );
    assert!(k
        .fails(&["get", "namespace", "tmp"])
        .contains("namespaces \"tmp\" not found"));
    k.ok(&["create", "configmap", "doomed"]);
    let waiter = k
        .command(&["wait", "--for=delete", "configmap/doomed", "--timeout=20s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl wait");
    tokio::time::sleep(Duration::from_millis(500)).await;
    k.ok(&["delete", "configmap", "doomed", "--wait=false"]);
    let out = waiter.wait_with_output().expect("wait finishes");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "configmap/doomed condition met"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_uses_the_crd_schema() {
    let cluster = Cluster::start().await.expect("cluster");
    let k = Kubectl::new(&cluster);
    k.ok(&["apply", "-f", &fixture("widget-crd.yaml")]);
    let out = k.ok(&["explain", "widgets.spec"]);
    assert!(
        out.contains("What the widget should be.") && out.contains("size") && out.contains("How big."),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_read_like_the_real_server() {
    let cluster = Cluster::start().await.expect("cluster");
    let k = Kubectl::new(&cluster);
    assert!(k
        .fails(&["get", "configmap", "nope"])
        .contains("Error from server (NotFound): configmaps \"nope\" not found"));
    let dup = k.write(
        "dup.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: dup\n",
    );
    k.ok(&["create", "-f", &dup]);
    let err = k.fails(&["create", "-f", &dup]);
    assert!(
        err.contains("Error from server (AlreadyExists): error when creating")
            && err.contains("dup.yaml\": configmaps \"dup\" already exists"),
        "{err}"
    );
    assert!(k
        .fails(&["create", "configmap", "dup"])
        .contains("configmaps \"dup\" already exists"));
    assert!(k
        .fails(&["get", "widgets"])
        .contains("the server doesn't have a resource type \"widgets\""));
    assert!(k
        .fails(&["create", "configmap", "x", "-n", "missing"])
        .contains("namespaces \"missing\" not found"));
    let bad_name = k.write(
        "bad.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Bad_Name\n",
    );
    assert!(k
        .fails(&["apply", "-f", &bad_name])
        .contains("metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_api_crds_install_client_and_server_side() {
    let cluster = Cluster::start().await.expect("cluster");
    let k = Kubectl::new(&cluster);
    let dir = fixture("capi-crds");
    k.ok(&["apply", "-f", &dir]);
    assert!(k
        .ok(&["apply", "--server-side", "-f", &dir])
        .contains("clusterclasses.cluster.x-k8s.io serverside-applied"));
    let names = k.ok(&["api-resources", "--api-group=cluster.x-k8s.io", "-o", "name"]);
    for r in ["clusterclasses.cluster.x-k8s.io", "clusters.cluster.x-k8s.io"] {
        assert!(names.contains(r), "{names}");
    }
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: app
        image: registry.example/web:1
        ports:
        - containerPort: 8080
      - name: sidecar
        image: registry.example/proxy:1
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_workload_kinds_apply_like_on_a_real_cluster() {
    let cluster = Cluster::start().await.expect("cluster");
    let k = Kubectl::new(&cluster);
    let d = k.write("deploy.yaml", DEPLOYMENT);
    assert_eq!(k.ok(&["apply", "-f", &d]).trim(), "deployment.apps/web created");
    // Client-side apply sends a strategic merge patch: containers merge by name.
    let d2 = k.write("deploy2.yaml", &DEPLOYMENT.replace("web:1", "web:2"));
    assert_eq!(
        k.ok(&["apply", "-f", &d2]).trim(),
        "deployment.apps/web configured"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[*].image} {.metadata.generation}"
        ]),
        "registry.example/web:2 registry.example/proxy:1 2"
    );
    assert!(k
        .ok(&["get", "all", "-o", "name"])
        .contains("deployment.apps/web"));
    assert_eq!(
        k.ok(&["scale", "deployment", "web", "--replicas=5"]).trim(),
        "deployment.apps/web scaled"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.replicas} {.metadata.generation}"
        ]),
        "5 3"
    );
    let role = k.write("role.yaml", "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: reader\nrules:\n- apiGroups: [\"\"]\n  resources: [configmaps]\n  verbs: [get, list]\n");
    assert!(k
        .ok(&["apply", "--server-side", "-f", &role])
        .contains("clusterrole.rbac.authorization.k8s.io/reader serverside-applied"));
}

const ADDON_KINDS: &str = r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: system:metrics-server
rules:
- apiGroups: [""]
  resources: [nodes/metrics]
  verbs: [get]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: metrics-server:system:auth-delegator
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: system:auth-delegator
subjects:
- kind: ServiceAccount
  name: metrics-server
  namespace: kube-system
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata:
  name: v1beta1.metrics.k8s.io
spec:
  group: metrics.k8s.io
  groupPriorityMinimum: 100
  insecureSkipTLSVerify: true
  service:
    name: metrics-server
    namespace: kube-system
  version: v1beta1
  versionPriority: 100
---
apiVersion: storage.k8s.io/v1
kind: CSIDriver
metadata:
  name: cinder.csi.openstack.org
spec:
  attachRequired: true
  podInfoOnMount: true
  volumeLifecycleModes: [Persistent, Ephemeral]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addon_kinds_apply_server_side_and_print_their_columns() {
    let cluster = Cluster::start().await.expect("cluster");
    let k = Kubectl::new(&cluster);
    let f = k.write("addon-kinds.yaml", ADDON_KINDS);
    let out = k.ok(&["apply", "--server-side", "-f", &f]);
    for line in [
        "clusterrole.rbac.authorization.k8s.io/system:metrics-server serverside-applied",
        "clusterrolebinding.rbac.authorization.k8s.io/metrics-server:system:auth-delegator serverside-applied",
        "apiservice.apiregistration.k8s.io/v1beta1.metrics.k8s.io serverside-applied",
        "csidriver.storage.k8s.io/cinder.csi.openstack.org serverside-applied",
    ] {
        assert!(out.contains(line), "{out}");
    }
    let table = k.ok(&["get", "apiservices"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "SERVICE", "AVAILABLE", "AGE"], "{table}");
    assert!(
        table.contains("v1beta1.metrics.k8s.io   kube-system/metrics-server   Unknown"),
        "{table}"
    );
    let table = k.ok(&["get", "csidrivers"]);
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        row[..7],
        [
            "cinder.csi.openstack.org",
            "true",
            "true",
            "false",
            "<unset>",
            "false",
            "Persistent,Ephemeral"
        ],
        "{table}"
    );
    assert_eq!(
        k.ok(&[
            "get",
            "clusterrole",
            "system:metrics-server",
            "-o",
            "jsonpath={.rules[0].resources[0]}"
        ]),
        "nodes/metrics"
    );
    let names = k.ok(&["api-resources", "--api-group=storage.k8s.io", "-o", "name"]);
    for r in [
        "csidrivers.storage.k8s.io",
        "csinodes.storage.k8s.io",
        "volumeattachments.storage.k8s.io",
    ] {
        assert!(names.contains(r), "{names}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_over_https_with_the_generated_ca() {
    let cluster = Cluster::start_with(kube_emulator::ClusterOptions {
        tls: true,
        ..Default::default()
    })
    .await
    .expect("cluster");
    let k = Kubectl::new(&cluster);
    let kubeconfig = std::fs::read_to_string(&k.kubeconfig).expect("kubeconfig");
    assert!(
        kubeconfig.contains("certificate-authority-data") && kubeconfig.contains("https://127.0.0.1:"),
        "{kubeconfig}"
    );
    k.ok(&["create", "namespace", "secure"]);
    assert_eq!(
        k.ok(&["get", "namespace", "secure", "-o", "jsonpath={.status.phase}"]),
        "Active"
    );
}

#[test]
fn binary_serves_and_keeps_state_across_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let kubeconfig = dir.path().join("kubeconfig");
    let state = dir.path().join("state.json");
    let start = || {
        let _ = std::fs::remove_file(&kubeconfig);
        let child = Command::new(env!("CARGO_BIN_EXE_kube-emulator"))
            .args([
                "--kubeconfig",
                &kubeconfig.to_string_lossy(),
                "--state",
                &state.to_string_lossy(),
                "--apply",
                &fixture("widget-crd.yaml"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("binary starts");
        for _ in 0..100 {
            if kubeconfig.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(kubeconfig.exists(), "the binary never wrote its kubeconfig");
        child
    };
    let kubectl = |args: &[&str]| {
        let out = Command::new(KUBECTL)
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", dir.path())
            .output()
            .expect("kubectl");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut first = start();
    // --apply installed the CRD before the kubeconfig appeared.
    assert_eq!(
        kubectl(&["get", "crd", "widgets.example.com", "-o", "name"]).trim(),
        "customresourcedefinition.apiextensions.k8s.io/widgets.example.com"
    );
    kubectl(&["create", "namespace", "persisted"]);
    kubectl(&[
        "create",
        "configmap",
        "kept",
        "-n",
        "persisted",
        "--from-literal=a=b",
    ]);
    // SIGTERM: the binary writes its state and exits cleanly.
    let pid = first.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    assert!(status.success());
    let exit = first.wait().expect("exits");
    assert!(exit.success(), "{exit:?}");
    let mut second = start();
    assert_eq!(
        kubectl(&[
            "get",
            "configmap",
            "kept",
            "-n",
            "persisted",
            "-o",
            "jsonpath={.data.a}"
        ]),
        "b"
    );
    let _ = second.kill();
    let _ = second.wait();
}
