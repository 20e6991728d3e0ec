//! The Helm chart `charts/stackhost`, rendered with the real Helm SDK (libhelm_c.so) and installed into the
//! API emulator with RBAC enforced: defaults (cluster-wide, cert-manager), non-default values
//! (namespace-scoped, a given CA, registry credentials and mirrors), what the chart's ServiceAccount may and
//! may not do (`kubectl auth can-i --as`), and `stackhost run` started with the chart's own arguments as
//! that ServiceAccount, reconciling the sample ClusterStack to Ready and answering the runtime hooks.

use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use kube_emulator::{Cluster, ClusterOptions};
use serde_json::{json, Value};
use stackhost::render::{HelmLibRenderer, RenderRequest, Renderer as _};
use stackhost::sandbox;

const NS: &str = "stackhost-system";
const SA: &str = "system:serviceaccount:stackhost-system:stackhost";
const KUBECTL: &str = "/usr/bin/kubectl";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The chart rendered as release `stackhost` in [`NS`], CRDs included.
fn render(values: Value) -> Vec<Value> {
    let helm = HelmLibRenderer::discover().expect("libhelm_c.so (scripts/deps/helm.sh)");
    let chart = repo().join("charts/stackhost");
    helm.render(&RenderRequest {
        chart: &chart,
        values: &values,
        release_name: "stackhost",
        namespace: NS,
        kube_version: Some("v1.32.0"),
        include_crds: true,
    })
    .expect("the chart renders")
}

fn image() -> Value {
    json!({"repository": "registry.example.test/stackhost/stackhost", "tag": "0.1.0"})
}

fn all<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn one<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    let found = all(objects, kind);
    assert_eq!(found.len(), 1, "one {kind} in the render");
    found[0]
}

fn container(objects: &[Value]) -> &Value {
    &one(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn args(objects: &[Value]) -> Vec<String> {
    container(objects)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("string arg").to_owned())
        .collect()
}

/// Every `--flag` that `stackhost run --help` lists.
fn run_flags() -> BTreeSet<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_stackhost"))
        .args(["run", "--help"])
        .output()
        .expect("stackhost run --help");
    String::from_utf8_lossy(&out.stdout)
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == '<')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(str::to_owned)
        .collect()
}

/// Each argument after `run` is a flag `stackhost run` knows.
fn assert_flags_exist(args: &[String]) {
    let known = run_flags();
    assert_eq!(args.first().map(String::as_str), Some("run"), "{args:?}");
    for arg in &args[1..] {
        let flag = arg.split('=').next().unwrap_or_default();
        assert!(
            known.contains(flag),
            "the chart passes {flag}, which `stackhost run --help` does not list: {known:?}"
        );
    }
}

struct Kubectl {
    dir: tempfile::TempDir,
}

impl Kubectl {
    fn new(cluster: &Cluster) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        cluster
            .write_kubeconfig(dir.path().join("kubeconfig"))
            .expect("kubeconfig");
        Kubectl { dir }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(KUBECTL)
            .args(args)
            .env("KUBECONFIG", self.dir.path().join("kubeconfig"))
            .env("HOME", self.dir.path())
            .output()
            .expect("kubectl runs")
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

    /// Server-side applies `objects` (one file, as `helm install` sends them).
    fn apply(&self, objects: &[&Value]) {
        let text: String = objects
            .iter()
            .map(|o| format!("---\n{}", serde_yaml::to_string(o).expect("yaml")))
            .collect();
        let file = self.dir.path().join("objects.yaml");
        std::fs::write(&file, text).expect("write");
        // The harness installed the CRDs already (as `stackhost crds | kubectl apply` would); take them over.
        self.ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &file.to_string_lossy(),
        ]);
    }

    /// `kubectl auth can-i --as=<the chart's ServiceAccount> ...`.
    fn sa_can(&self, args: &[&str]) -> bool {
        let mut all = vec!["auth", "can-i", "--as", SA];
        all.extend_from_slice(args);
        let out = self.run(&all);
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if answer != "yes" && answer != "no" {
            eprintln!(
                "kubectl {}: {answer} {}",
                all.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        answer == "yes"
    }
}

async fn enforcing_cluster() -> Cluster {
    let cluster = Cluster::start_with(ClusterOptions {
        authorization: true,
        ..ClusterOptions::default()
    })
    .await
    .expect("emulator");
    sandbox::install_crds(&cluster).expect("stackhost and Cluster API CRDs");
    let extension_config =
        repo().join("tests/fixtures/capi-crds/runtime.cluster.x-k8s.io_extensionconfigs.yaml");
    cluster
        .apply_yaml(
            &std::fs::read_to_string(extension_config).expect("ExtensionConfig CRD"),
            "test",
        )
        .expect("ExtensionConfig CRD");
    cluster
}

/// Writes `ca.crt`, `tls.crt` and `tls.key` (for 127.0.0.1 and the hooks' Service) into `dir`; the CA PEM.
fn write_cert_dir(dir: &Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test-hooks-ca");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let names = vec!["127.0.0.1".to_owned(), format!("stackhost-hooks.{NS}.svc")];
    let mut params = CertificateParams::new(names).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "stackhost-hooks");
    let cert = params.signed_by(&key, &ca).expect("cert");
    std::fs::create_dir_all(dir).expect("cert dir");
    std::fs::write(dir.join("ca.crt"), ca.pem()).expect("ca.crt");
    std::fs::write(dir.join("tls.crt"), cert.pem()).expect("tls.crt");
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("tls.key");
    ca.pem()
}

fn rules(role: &Value) -> Vec<Value> {
    role["rules"].as_array().cloned().unwrap_or_default()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_installs_with_its_defaults() {
    let objects = render(
        json!({"image": image(), "releaseSource": "oci://registry.scs.community/kaas/cluster-stacks"}),
    );

    // CRDs come from the chart's crds/ and are exactly what `stackhost crds` prints.
    let crds: Vec<Value> = all(&objects, "CustomResourceDefinition")
        .into_iter()
        .cloned()
        .collect();
    // Helm reads `minimum: 1.0` as Go does, as the number 1: compare numbers by value.
    let generated: Vec<Value> = stackhost::api::crds()
        .iter()
        .map(|c| whole_numbers(serde_json::to_value(c).expect("crd json")))
        .collect();
    assert_eq!(crds.len(), generated.len());
    for crd in &generated {
        assert!(
            crds.contains(crd),
            "charts/stackhost/crds/ holds {}",
            crd["metadata"]["name"]
        );
    }

    // The Deployment: two replicas, leader election, probes, restricted security, resources.
    let deployment = one(&objects, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let args = args(&objects);
    assert_flags_exist(&args);
    for expected in [
        "--leader-elect=true",
        "--lease-name=stackhost",
        "--hooks-bind=0.0.0.0:9442",
        "--plugin-state-namespace=stackhost-system",
        "--metrics-secure=true",
        "--metrics-bind=0.0.0.0:8443",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
    }
    let c = container(&objects);
    assert_eq!(c["image"], "registry.example.test/stackhost/stackhost:0.1.0");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    for part in ["requests", "limits"] {
        assert!(c["resources"][part]["memory"].is_string(), "resources.{part}");
    }
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "stackhost");
    let volumes = serde_json::to_string(&pod["volumes"]).expect("json");
    assert!(
        volumes.contains("\"secretName\":\"stackhost-hooks-tls\""),
        "{volumes}"
    );

    // RBAC: no wildcards on the core group, Secrets only `get`, the Lease in its own Role.
    let named = |kind: &str, name: &str| -> &Value {
        all(&objects, kind)
            .into_iter()
            .find(|o| o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name} in the render"))
    };
    let cluster_role = named("ClusterRole", "stackhost");
    for rule in rules(cluster_role) {
        assert!(
            !strings(&rule["verbs"]).contains(&"*"),
            "no wildcard verbs: {rule}"
        );
        if strings(&rule["apiGroups"]).contains(&"") {
            assert!(!strings(&rule["resources"]).contains(&"*"), "{rule}");
        }
        if strings(&rule["resources"]).contains(&"secrets") {
            assert_eq!(strings(&rule["verbs"]), ["get"], "{rule}");
        }
        assert!(
            !strings(&rule["apiGroups"]).contains(&"coordination.k8s.io"),
            "{rule}"
        );
    }
    let lease_role = named("Role", "stackhost-leader-election");
    assert_eq!(lease_role["metadata"]["namespace"], NS);
    // The plugins' state Secrets are the only ones written, and only in the release namespace.
    let state_role = named("Role", "stackhost-plugin-state");
    assert_eq!(state_role["metadata"]["namespace"], NS);
    assert_eq!(
        rules(state_role),
        [json!({"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "patch"]})]
    );
    // Secure metrics: stackhost may review tokens and access; a reader role for the scraper.
    assert_eq!(rules(named("ClusterRole", "stackhost-metrics-auth")).len(), 2);
    assert_eq!(
        rules(named("ClusterRole", "stackhost-metrics-reader")),
        [json!({"nonResourceURLs": ["/metrics"], "verbs": ["get"]})]
    );

    // Hooks: Service on 443, the ExtensionConfig takes its CA from the Certificate's Secret.
    let services = all(&objects, "Service");
    assert_eq!(services.len(), 2, "hooks and metrics Services");
    let hooks = services
        .iter()
        .find(|s| s["metadata"]["name"] == "stackhost-hooks")
        .expect("hooks Service");
    assert_eq!(hooks["spec"]["ports"][0]["port"], 443);
    let certificate = one(&objects, "Certificate");
    let extension = one(&objects, "ExtensionConfig");
    assert_eq!(
        extension["metadata"]["annotations"]["runtime.cluster.x-k8s.io/inject-ca-from-secret"],
        format!(
            "{NS}/{}",
            certificate["spec"]["secretName"].as_str().unwrap_or_default()
        )
    );
    assert_eq!(certificate["spec"]["secretName"], "stackhost-hooks-tls");
    assert!(strings(&certificate["spec"]["dnsNames"]).contains(&"stackhost-hooks.stackhost-system.svc"));
    assert_eq!(
        certificate["spec"]["issuerRef"]["name"],
        one(&objects, "Issuer")["metadata"]["name"]
    );
    assert_eq!(
        extension["spec"]["clientConfig"]["service"]["name"],
        "stackhost-hooks"
    );
    assert_eq!(one(&objects, "PodDisruptionBudget")["spec"]["minAvailable"], 1);

    // Installed into the emulator (cert-manager's kinds need its CRDs, which are not here).
    let cluster = enforcing_cluster().await;
    let kubectl = Kubectl::new(&cluster);
    kubectl.ok(&["create", "namespace", NS]);
    let installable: Vec<&Value> = objects
        .iter()
        .filter(|o| o["apiVersion"] != "cert-manager.io/v1")
        .collect();
    kubectl.apply(&installable);
    kubectl.ok(&["get", "extensionconfig", "stackhost"]);

    // What the ServiceAccount may do, as the API server decides it.
    let can = |args: &[&str]| kubectl.sa_can(args);
    assert!(can(&["get", "secrets", "-n", "default"]));
    assert!(!can(&["list", "secrets", "-A"]));
    assert!(!can(&["watch", "secrets", "-n", "default"]));
    assert!(can(&["list", "clusterstacks.clusterstack.x-k8s.io", "-A"]));
    assert!(can(&[
        "patch",
        "clusterstackreleases.clusterstack.x-k8s.io",
        "--subresource=status",
        "-n",
        "x"
    ]));
    assert!(can(&["patch", "clusterclasses.cluster.x-k8s.io", "-n", "x"]));
    assert!(!can(&["update", "clusterclasses.cluster.x-k8s.io", "-n", "x"]));
    assert!(can(&["update", "leases/stackhost", "-n", NS]));
    assert!(!can(&["update", "leases/other", "-n", NS]));
    assert!(!can(&["update", "leases/stackhost", "-n", "default"]));
    assert!(!can(&["create", "pods", "-n", NS]));
    assert!(can(&["patch", "secrets", "-n", NS]));
    assert!(!can(&["patch", "secrets", "-n", "default"]));
    assert!(!can(&["patch", "configmaps", "-n", "default"]));
    assert!(can(&["delete", "configmaps", "-n", "default"]));
    assert!(!can(&["delete", "clusterstacks.clusterstack.x-k8s.io", "-A"]));
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chart_installs_namespace_scoped_with_a_given_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = write_cert_dir(dir.path());
    let objects = render(json!({
        "image": image(),
        "watch": {"namespace": "tenant", "label": "team=a"},
        "certManager": {"enabled": false},
        "hooks": {"tls": {"secretName": "hooks-cert", "caBundle": ca}},
        "registryCredentialsSecret": "regcred",
        "registryMirrors": ["registry.scs.community/kaas=mirror.internal:5000/kaas"],
        "rbac": {"additionalRules": [{"apiGroups": ["openstack.k-orc.cloud"], "resources": ["images"], "verbs": ["patch", "delete"]}]},
    }));
    // Cluster-wide only what secure metrics need (the review kinds are cluster-scoped).
    let cluster_wide: Vec<&Value> = all(&objects, "ClusterRole")
        .into_iter()
        .chain(all(&objects, "ClusterRoleBinding"))
        .collect();
    assert!(
        cluster_wide.iter().all(|o| {
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            name == "stackhost-metrics-auth" || name == "stackhost-metrics-reader"
        }),
        "{cluster_wide:?}"
    );
    assert!(all(&objects, "Certificate").is_empty() && all(&objects, "Issuer").is_empty());
    let roles = all(&objects, "Role");
    let tenant = roles
        .iter()
        .find(|r| r["metadata"]["namespace"] == "tenant")
        .expect("a Role in the watched namespace");
    assert!(rules(tenant)
        .iter()
        .any(|r| strings(&r["apiGroups"]) == ["openstack.k-orc.cloud"]));
    let args = args(&objects);
    assert_flags_exist(&args);
    for expected in [
        "--namespace=tenant",
        "--watch-label=team=a",
        "--registry-config=/etc/stackhost/registry/config.json",
        "--registry-mirror=registry.scs.community/kaas=mirror.internal:5000/kaas",
    ] {
        assert!(args.iter().any(|a| a == expected), "{expected} in {args:?}");
    }
    let extension = one(&objects, "ExtensionConfig");
    assert!(extension["metadata"]["annotations"].is_null(), "{extension}");
    assert_eq!(
        extension["spec"]["clientConfig"]["caBundle"],
        base64::engine::general_purpose::STANDARD.encode(&ca)
    );

    // Everything it renders installs, the ExtensionConfig checked against Cluster API's schema.
    let cluster = enforcing_cluster().await;
    let kubectl = Kubectl::new(&cluster);
    kubectl.ok(&["create", "namespace", NS]);
    kubectl.ok(&["create", "namespace", "tenant"]);
    kubectl.apply(&objects.iter().collect::<Vec<_>>());
    // The kind the additional rule names is served, as in a cluster with ORC installed.
    let orc = repo().join("tests/fixtures/real-crds/orc/openstack.k-orc.cloud_images.yaml");
    kubectl.ok(&["apply", "--server-side", "-f", orc.to_str().expect("utf-8 path")]);
    let can = |args: &[&str]| kubectl.sa_can(args);
    assert!(can(&[
        "list",
        "clusterstacks.clusterstack.x-k8s.io",
        "-n",
        "tenant"
    ]));
    assert!(!can(&[
        "list",
        "clusterstacks.clusterstack.x-k8s.io",
        "-n",
        "default"
    ]));
    assert!(!can(&["list", "clusterstacks.clusterstack.x-k8s.io", "-A"]));
    assert!(can(&["get", "secrets", "-n", "tenant"]));
    assert!(!can(&["get", "secrets", "-n", "default"]));
    // Its own namespace only for the plugin state.
    assert!(can(&["patch", "secrets", "-n", NS]));
    assert!(!can(&["patch", "secrets", "-n", "tenant"]));
    assert!(can(&["patch", "images.openstack.k-orc.cloud", "-n", "tenant"]));
    cluster.shutdown().await.expect("shutdown");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Kills the process when the test ends, whatever happened.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The chart's arguments with the addresses and the certificate directory of this machine.
fn local_args(
    chart_args: &[String],
    (metrics, hooks, secure): (u16, u16, u16),
    cert_dir: &Path,
) -> Vec<String> {
    chart_args
        .iter()
        .map(|a| match a.split_once('=') {
            Some(("--bind", _)) => format!("--bind=127.0.0.1:{metrics}"),
            Some(("--hooks-bind", _)) => format!("--hooks-bind=127.0.0.1:{hooks}"),
            Some(("--hooks-cert-dir", _)) => format!("--hooks-cert-dir={}", cert_dir.display()),
            Some(("--metrics-bind", _)) => format!("--metrics-bind=127.0.0.1:{secure}"),
            Some(("--metrics-cert-dir", _)) => format!("--metrics-cert-dir={}", cert_dir.display()),
            _ => a.clone(),
        })
        .collect()
}

/// Values for running the controller here: the sample release layout, short retries and leases.
fn run_values() -> Value {
    let layout = repo().join("sandbox/sample");
    json!({
        "image": image(),
        "releaseSource": format!("oci://{}", sandbox::SAMPLE_RELEASES),
        "controller": {"retryBase": "200ms", "retryMax": "2s", "extraArgs": [format!("--oci-layout={}", layout.display())]},
        "leaderElection": {"leaseDuration": "4s", "renewPeriod": "1s"},
    })
}

/// The ServiceAccount and RBAC objects of a render.
fn access(objects: &[Value]) -> Vec<Value> {
    objects
        .iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some("ServiceAccount" | "ClusterRole" | "ClusterRoleBinding" | "Role" | "RoleBinding")
            )
        })
        .cloned()
        .collect()
}

/// A kubeconfig with a token of the chart's ServiceAccount.
fn sa_kubeconfig(cluster: &Cluster, dir: &Path) -> PathBuf {
    let token = cluster
        .service_account_token(NS, "stackhost")
        .expect("a token of the chart's ServiceAccount");
    let kubeconfig = dir.join("sa.kubeconfig");
    std::fs::write(&kubeconfig, cluster.kubeconfig_with_token(&token)).expect("kubeconfig");
    kubeconfig
}

/// A `stackhost run` process with the chart's arguments, as the chart's ServiceAccount.
struct Controller {
    process: Process,
    log: PathBuf,
    metrics: u16,
    hooks: u16,
    secure_metrics: u16,
}

impl Controller {
    /// Starts replica `name` (its own log, cache and identity) with the arguments of `objects`.
    fn start(objects: &[Value], kubeconfig: &Path, dir: &Path, cert_dir: &Path, name: &str) -> Self {
        let (metrics, hooks, secure_metrics) = (free_port(), free_port(), free_port());
        let log = dir.join(format!("{name}.log"));
        let ports = (metrics, hooks, secure_metrics);
        let process = Process(
            Command::new(env!("CARGO_BIN_EXE_stackhost"))
                .args(local_args(&args(objects), ports, cert_dir))
                .arg("--kubeconfig")
                .arg(kubeconfig)
                .env("POD_NAMESPACE", NS)
                .env("HOSTNAME", name)
                .env("STACKHOST_CACHE_DIR", dir.join(format!("{name}-cache")))
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("log file"))
                .spawn()
                .expect("start stackhost run"),
        );
        Controller {
            process,
            log,
            metrics,
            hooks,
            secure_metrics,
        }
    }

    fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        self.process.0.try_wait().expect("process state").is_none()
    }
}

/// Creates the sample ProviderPlugin and ClusterStack in `default`; the name of the release they make.
async fn create_sample(admin: &kube::Client) -> &'static str {
    let (plugin, stack) = sandbox::sample_objects("default", sandbox::SAMPLE_PLUGIN);
    sandbox::create(admin, "default", &plugin)
        .await
        .expect("ProviderPlugin");
    sandbox::create(admin, "default", &stack)
        .await
        .expect("ClusterStack");
    "docker-ferrol-1-32-v1"
}

#[tokio::test(flavor = "multi_thread")]
async fn stackhost_runs_as_the_charts_service_account() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_dir = dir.path().join("hooks-tls");
    let ca = write_cert_dir(&cert_dir);
    let values = run_values();
    let objects = render(values.clone());
    // The same chart with one rule less: the sample ClusterClass's DevMachineTemplate may not be applied.
    let mut dropped = values;
    dropped["rbac"] = json!({"appliedKinds": [
        {"apiGroups": ["cluster.x-k8s.io"], "resources": ["clusterclasses"]},
        {"apiGroups": ["bootstrap.cluster.x-k8s.io"], "resources": ["kubeadmconfigtemplates"]},
        {"apiGroups": ["controlplane.cluster.x-k8s.io"], "resources": ["kubeadmcontrolplanetemplates"]},
        {"apiGroups": ["infrastructure.cluster.x-k8s.io"], "resources": ["devclustertemplates"]},
    ]});
    let reduced = render(dropped);
    let cluster = enforcing_cluster().await;
    let kubectl = Kubectl::new(&cluster);
    kubectl.ok(&["create", "namespace", NS]);
    kubectl.apply(&access(&reduced).iter().collect::<Vec<_>>());
    let kubeconfig = sa_kubeconfig(&cluster, dir.path());
    let mut run = Controller::start(&objects, &kubeconfig, dir.path(), &cert_dir, "stackhost-0");

    let admin = cluster.client().expect("admin client");
    let release = create_sample(&admin).await;

    // Without the rule: the release says which verb on which resource was refused; the process keeps running.
    let refused = sandbox::wait_release_condition(
        &admin,
        "default",
        release,
        ("HelmChartApplied", "ObjectsNotSynced"),
        Duration::from_secs(90),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nstackhost run:\n{}", run.logs()));
    let message = refused.message.unwrap_or_default();
    assert!(
        message.contains(&format!("User \"{SA}\" cannot patch resource \"devmachinetemplates\" in API group \"infrastructure.cluster.x-k8s.io\" in the namespace \"default\"")),
        "{message}"
    );
    assert!(run.running(), "stackhost run keeps running:\n{}", run.logs());

    // The rule restored (the full chart's RBAC): the release recovers on its own.
    kubectl.apply(&access(&objects).iter().collect::<Vec<_>>());
    let ready = sandbox::wait_release_ready(&admin, "default", release, Duration::from_secs(90)).await;
    let release = ready.unwrap_or_else(|e| panic!("{e:#}\nstackhost run:\n{}", run.logs()));
    assert!(
        release.status.as_ref().is_some_and(|s| !s.resources.is_empty()),
        "the ClusterClass and its templates were applied"
    );
    let text = run.logs();
    let refused: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("is forbidden") && !l.contains("devmachinetemplates"))
        .collect();
    assert!(
        refused.is_empty(),
        "no other API call of stackhost run was refused: {refused:#?}"
    );

    // The hooks answer over HTTPS with the certificate of --hooks-cert-dir; the process is ready.
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).expect("ca"))
        .build()
        .expect("client");
    let discovery = http
        .get(format!(
            "https://127.0.0.1:{}{}",
            run.hooks,
            stackhost::hooks::discovery_path()
        ))
        .send()
        .await
        .expect("GET discovery");
    assert_eq!(discovery.status().as_u16(), 200);
    let readyz = reqwest::get(format!("http://127.0.0.1:{}/readyz", run.metrics))
        .await
        .expect("GET /readyz");
    assert_eq!(readyz.status().as_u16(), 200);
    drop(run);
    cluster.shutdown().await.expect("shutdown");
}

/// The `ClusterStackReleaseAvailable` condition of the sample ClusterStack once `check` accepts it.
async fn wait_stack_condition(
    admin: &kube::Client,
    what: &str,
    check: impl Fn(&stackhost::api::Condition) -> bool,
) -> anyhow::Result<stackhost::api::Condition> {
    let api: kube::Api<stackhost::api::ClusterStack> = kube::Api::namespaced(admin.clone(), "default");
    let check = &check;
    sandbox::wait_for(what, Duration::from_secs(90), || {
        let api = api.clone();
        async move {
            let cs = api
                .get_opt("docker-ferrol-1-32")
                .await
                .map_err(|e| e.to_string())?
                .ok_or("no ClusterStack")?;
            let conditions = cs.status.map(|s| s.conditions).unwrap_or_default();
            stackhost::api::condition::find(&conditions, "ClusterStackReleaseAvailable")
                .filter(|c| check(c))
                .cloned()
                .ok_or_else(|| format!("{conditions:?}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_status_write_is_reported_and_recovers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_dir = dir.path().join("hooks-tls");
    write_cert_dir(&cert_dir);
    let objects = render(run_values());
    // The chart's RBAC without `patch` on clusterstackreleases/status.
    let mut reduced = access(&objects);
    let mut removed = 0;
    for object in reduced.iter_mut().filter(|o| o["kind"] == "ClusterRole") {
        for rule in object["rules"].as_array_mut().expect("rules") {
            if let Some(resources) = rule["resources"].as_array_mut() {
                let before = resources.len();
                resources.retain(|r| r != "clusterstackreleases/status");
                removed += before - resources.len();
            }
        }
    }
    assert_eq!(
        removed, 1,
        "the chart grants patch on clusterstackreleases/status once"
    );
    let cluster = enforcing_cluster().await;
    let kubectl = Kubectl::new(&cluster);
    kubectl.ok(&["create", "namespace", NS]);
    kubectl.apply(&reduced.iter().collect::<Vec<_>>());
    let kubeconfig = sa_kubeconfig(&cluster, dir.path());
    let mut run = Controller::start(&objects, &kubeconfig, dir.path(), &cert_dir, "stackhost-0");
    let admin = cluster.client().expect("admin client");
    let release = create_sample(&admin).await;

    // The release cannot write its own status: its ClusterStack names the refused verb and resource.
    let refused = format!(
        "User \"{SA}\" cannot patch resource \"clusterstackreleases/status\" in API group \"clusterstack.x-k8s.io\" in the namespace \"default\""
    );
    let condition = wait_stack_condition(
        &admin,
        "the ClusterStack to report the refused status write",
        |c| c.message.as_deref().is_some_and(|m| m.contains(&refused)),
    )
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nstackhost run:\n{}", run.logs()));
    assert_eq!(
        condition.status,
        stackhost::api::condition::ConditionStatus::False
    );
    assert!(
        condition
            .message
            .as_deref()
            .is_some_and(|m| m.contains(&format!("ClusterStackRelease default/{release}"))),
        "{condition:?}"
    );
    // And a Warning Event on the release itself.
    let events: Value =
        serde_json::from_str(&kubectl.ok(&["get", "events.events.k8s.io", "-n", "default", "-o", "json"]))
            .expect("events json");
    assert!(
        events["items"].as_array().into_iter().flatten().any(|e| {
            e["reason"] == "StatusNotWritten"
                && e["regarding"]["name"] == release
                && e["note"].as_str().is_some_and(|n| n.contains(&refused))
        }),
        "a StatusNotWritten Event on {release}: {events}"
    );
    assert!(run.running(), "stackhost run keeps running:\n{}", run.logs());

    // The rule restored: the release writes its status and gets Ready, the ClusterStack clears.
    kubectl.apply(&access(&objects).iter().collect::<Vec<_>>());
    sandbox::wait_release_ready(&admin, "default", release, Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\nstackhost run:\n{}", run.logs()));
    wait_stack_condition(&admin, "the ClusterStack to have an available release", |c| {
        c.status == stackhost::api::condition::ConditionStatus::True
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nstackhost run:\n{}", run.logs()));
    assert!(run.running(), "stackhost run keeps running:\n{}", run.logs());
    drop(run);
    cluster.shutdown().await.expect("shutdown");
}

/// POSTs a `BeforeClusterUpgrade` request for a Cluster without a ClusterAddon to replica `hooks` over
/// HTTPS, trusting only `ca`; the hook's answer.
async fn before_cluster_upgrade(hooks: u16, ca: &str) -> Result<Value, String> {
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).map_err(|e| e.to_string())?)
        .pool_max_idle_per_host(0)
        .build()
        .map_err(|e| e.to_string())?;
    let path = stackhost::hooks::handler_path("BeforeClusterUpgrade", "before-cluster-upgrade");
    let request = json!({
        "apiVersion": stackhost::hooks::HOOKS_API_VERSION,
        "kind": "BeforeClusterUpgradeRequest",
        "cluster": {"metadata": {"name": "not-yet", "namespace": "default"},
                    "spec": {"topology": {"class": "docker-ferrol-1-32-v1", "version": "v1.32.1"}}},
        "fromKubernetesVersion": "v1.32.0",
        "toKubernetesVersion": "v1.32.1",
    });
    let response = http
        .post(format!("https://127.0.0.1:{hooks}{path}"))
        .json(&request)
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?;
    if response.status() != 200 {
        return Err(format!("status {}", response.status()));
    }
    response.json().await.map_err(|e| e.to_string())
}

/// `/readyz` of a replica: status code and body.
async fn readyz(metrics: u16) -> (u16, String) {
    match reqwest::get(format!("http://127.0.0.1:{metrics}/readyz")).await {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// The holder of the chart's leader-election Lease.
async fn lease_holder(admin: &kube::Client) -> String {
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(admin.clone(), NS);
    leases
        .get_opt("stackhost")
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec?.holder_identity)
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_replica_serves_the_hooks_and_a_standby_takes_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_dir = dir.path().join("hooks-tls");
    let ca = write_cert_dir(&cert_dir);
    let objects = render(run_values());
    let cluster = enforcing_cluster().await;
    let kubectl = Kubectl::new(&cluster);
    kubectl.ok(&["create", "namespace", NS]);
    kubectl.apply(&access(&objects).iter().collect::<Vec<_>>());
    let kubeconfig = sa_kubeconfig(&cluster, dir.path());
    let admin = cluster.client().expect("admin client");
    let mut replicas = vec![
        Controller::start(&objects, &kubeconfig, dir.path(), &cert_dir, "stackhost-0"),
        Controller::start(&objects, &kubeconfig, dir.path(), &cert_dir, "stackhost-1"),
    ];
    let all_logs = |replicas: &[Controller]| -> String {
        replicas
            .iter()
            .map(|r| format!("--- {}\n{}", r.log.display(), r.logs()))
            .collect()
    };

    // One leads; both are ready, and both answer a hook (the standby reads the API like the leader).
    let leader = sandbox::wait_for("a leader", Duration::from_secs(60), || {
        let admin = admin.clone();
        async move {
            let holder = lease_holder(&admin).await;
            ["stackhost-0", "stackhost-1"]
                .iter()
                .position(|name| holder.starts_with(&format!("{name}_")))
                .ok_or(holder)
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", all_logs(&replicas)));
    let standby = 1 - leader;
    for (i, replica) in replicas.iter().enumerate() {
        let (hooks, metrics) = (replica.hooks, replica.metrics);
        let answer = sandbox::wait_for("a hook answer", Duration::from_secs(30), || {
            let ca = ca.clone();
            async move { before_cluster_upgrade(hooks, &ca).await }
        })
        .await
        .unwrap_or_else(|e| panic!("replica {i}: {e:#}\n{}", all_logs(&replicas)));
        assert_eq!(answer["kind"], "BeforeClusterUpgradeResponse", "{answer}");
        assert_eq!(answer["status"], "Success", "{answer}");
        assert_eq!(
            answer["retryAfterSeconds"], 10,
            "blocks until the addons are applied: {answer}"
        );
        let ready = sandbox::wait_for("/readyz 200", Duration::from_secs(30), || async move {
            match readyz(metrics).await {
                (200, body) => Ok(body),
                other => Err(format!("{other:?}")),
            }
        })
        .await
        .unwrap_or_else(|e| panic!("replica {i}: {e:#}"));
        assert!(ready.contains("serving the runtime hooks"), "{ready}");
        if i == standby {
            assert!(ready.starts_with("standby"), "{ready}");
        }
    }

    // The leader dies without releasing the Lease: the standby takes over once it expires and reconciles.
    let _ = replicas[leader].process.0.kill();
    let _ = replicas[leader].process.0.wait();
    let survivor = &replicas[standby];
    let name = format!("stackhost-{standby}_");
    sandbox::wait_for("the standby to lead", Duration::from_secs(60), || {
        let (admin, name) = (admin.clone(), name.clone());
        async move {
            let holder = lease_holder(&admin).await;
            if holder.starts_with(&name) {
                Ok(())
            } else {
                Err(holder)
            }
        }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", all_logs(&replicas)));
    let release = create_sample(&admin).await;
    sandbox::wait_release_ready(&admin, "default", release, Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e:#}\n{}", all_logs(&replicas)));

    // cert-manager rotates the certificate (a new CA here): the next connection gets the new one.
    let rotated = write_cert_dir(&cert_dir);
    assert_ne!(rotated, ca);
    let hooks = survivor.hooks;
    let answer = sandbox::wait_for("the rotated certificate", Duration::from_secs(30), || {
        let rotated = rotated.clone();
        async move { before_cluster_upgrade(hooks, &rotated).await }
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", survivor.logs()));
    assert_eq!(answer["status"], "Success", "{answer}");
    let old = before_cluster_upgrade(hooks, &ca).await;
    assert!(
        old.is_err(),
        "a client trusting only the old CA is refused: {old:?}"
    );
    assert!(
        survivor.logs().contains("reloaded the serving certificate"),
        "{}",
        survivor.logs()
    );
    let mut survivor = replicas.swap_remove(standby);
    assert!(survivor.running(), "{}", survivor.logs());
    drop(survivor);
    drop(replicas);
    cluster.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread")]
async fn secure_metrics_answer_only_callers_rbac_allows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert_dir = dir.path().join("tls");
    let ca = write_cert_dir(&cert_dir);
    let mut values = run_values();
    values["metrics"] = json!({"tls": {"secretName": "stackhost-metrics-tls"}});
    let objects = render(values);
    let cluster = enforcing_cluster().await;
    let kubectl = Kubectl::new(&cluster);
    kubectl.ok(&["create", "namespace", NS]);
    kubectl.apply(&access(&objects).iter().collect::<Vec<_>>());
    // A scraper bound to the chart's reader role, and a ServiceAccount without it.
    kubectl.ok(&["create", "serviceaccount", "prometheus", "-n", NS]);
    kubectl.ok(&["create", "serviceaccount", "nobody", "-n", NS]);
    kubectl.ok(&[
        "create",
        "clusterrolebinding",
        "prometheus-stackhost-metrics",
        "--clusterrole=stackhost-metrics-reader",
        &format!("--serviceaccount={NS}:prometheus"),
    ]);
    let kubeconfig = sa_kubeconfig(&cluster, dir.path());
    let run = Controller::start(&objects, &kubeconfig, dir.path(), &cert_dir, "stackhost-0");
    let token = |sa: &str| cluster.service_account_token(NS, sa).expect("token");
    let url = format!("https://127.0.0.1:{}/metrics", run.secure_metrics);
    let get = |token: Option<String>| {
        let url = url.clone();
        let ca = ca.clone();
        async move {
            let http = reqwest::Client::builder()
                .add_root_certificate(
                    reqwest::Certificate::from_pem(ca.as_bytes()).map_err(|e| e.to_string())?,
                )
                .build()
                .map_err(|e| e.to_string())?;
            let mut request = http.get(&url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.map_err(|e| format!("{e:?}"))?;
            let status = response.status().as_u16();
            Ok::<_, String>((status, response.text().await.unwrap_or_default()))
        }
    };

    // Allowed: the scraper's token gets the metrics (once the listener is up).
    let prometheus = token("prometheus");
    let (status, body) = sandbox::wait_for("the secure metrics listener", Duration::from_secs(60), || {
        get(Some(prometheus.clone()))
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\n{}", run.logs()));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("stackhost_leader"), "{body}");

    // Authenticated but not bound: 403 naming the user.
    let (status, body) = get(Some(token("nobody"))).await.expect("GET");
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("system:serviceaccount:stackhost-system:nobody") && body.contains("/metrics"),
        "{body}"
    );
    // No token, or one the API server does not know: 401.
    let (status, body) = get(None).await.expect("GET");
    assert_eq!(status, 401, "{body}");
    let (status, body) = get(Some("not-a-token".to_owned())).await.expect("GET");
    assert_eq!(status, 401, "{body}");
    // The plain listener keeps the probes and no longer serves the metrics.
    let plain = reqwest::get(format!("http://127.0.0.1:{}/metrics", run.metrics))
        .await
        .expect("GET plain /metrics");
    assert_eq!(plain.status().as_u16(), 404);
    let healthz = reqwest::get(format!("http://127.0.0.1:{}/healthz", run.metrics))
        .await
        .expect("GET /healthz");
    assert_eq!(healthz.status().as_u16(), 200);
    drop(run);
    cluster.shutdown().await.expect("shutdown");
}

/// `v` with integral floats (`1.0`) as integers (`1`), as Go's JSON encoder writes them.
fn whole_numbers(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(map.into_iter().map(|(k, v)| (k, whole_numbers(v))).collect()),
        Value::Array(items) => Value::Array(items.into_iter().map(whole_numbers).collect()),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() && f.fract() == 0.0 && f.abs() < 9e15 => Value::from(f as i64),
            _ => Value::Number(n),
        },
        other => other,
    }
}

/// Creates `value` (any kind) in the emulator as the admin; the API server's refusal message otherwise.
async fn create(client: &kube::Client, value: Value) -> Result<(), String> {
    let object: kube::api::DynamicObject = serde_json::from_value(value).expect("object");
    let types = object.types.clone().expect("apiVersion and kind");
    let gvk = kube::core::GroupVersionKind::try_from(&types).expect("gvk");
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .expect("discovery");
    let api: kube::Api<kube::api::DynamicObject> = match (&caps.scope, object.metadata.namespace.as_deref()) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => {
            kube::Api::namespaced_with(client.clone(), ns, &resource)
        }
        _ => kube::Api::all_with(client.clone(), &resource),
    };
    match api.create(&Default::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) => Err(s.message),
        Err(e) => panic!("create: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_charts_webhook_guards_clusters_and_cluster_stacks() {
    let objects = render(json!({"image": image()}));
    let mut webhooks = one(&objects, "ValidatingWebhookConfiguration").clone();
    assert_eq!(
        webhooks["metadata"]["annotations"]["cert-manager.io/inject-ca-from"],
        format!("{NS}/stackhost-hooks")
    );
    let cluster = enforcing_cluster().await;
    let admin = cluster.client().expect("client");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let hooks = stackhost::hooks::start(
        admin.clone(),
        stackhost::hooks::HooksConfig {
            addr: "127.0.0.1:0".parse().expect("addr"),
            ..Default::default()
        },
        stopped,
    )
    .await
    .expect("hook server");
    // The chart's registration, pointed at this server instead of the Service (no cluster DNS here).
    for webhook in webhooks["webhooks"].as_array_mut().expect("webhooks") {
        let path = webhook["clientConfig"]["service"]["path"]
            .as_str()
            .expect("path")
            .to_owned();
        webhook["clientConfig"] = json!({
            "url": format!("{}{path}", hooks.url()),
            "caBundle": base64::engine::general_purpose::STANDARD.encode(&hooks.ca_pem),
        });
    }
    create(&admin, webhooks).await.expect("the webhook configuration");

    let ns = "tenant";
    create(
        &admin,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    )
    .await
    .expect("namespace");
    let stack = json!({"apiVersion": "clusterstack.x-k8s.io/v1alpha1", "kind": "ClusterStack",
        "metadata": {"name": "ferrol", "namespace": ns},
        "spec": {"provider": "docker", "name": "ferrol", "kubernetesVersion": "1.32", "versions": ["v2"],
                 "noProvider": true}});
    create(&admin, stack).await.expect("ClusterStack");
    let cluster_of = |version: &str| {
        json!({"apiVersion": "cluster.x-k8s.io/v1beta1", "kind": "Cluster",
               "metadata": {"name": "c1", "namespace": ns},
               "spec": {"topology": {"class": "docker-ferrol-1-32-v2", "version": version}}})
    };
    let refused = create(&admin, cluster_of("v1.32.2"))
        .await
        .expect_err("no release yet");
    assert!(
        refused.contains("admission webhook \"clusters.stackhost.clusterstack.x-k8s.io\" denied the request")
            && refused
                .contains("namespace tenant does not have: list version v2 in a ClusterStack there first"),
        "{refused}"
    );

    let releases: kube::Api<stackhost::api::ClusterStackRelease> = kube::Api::namespaced(admin.clone(), ns);
    let release: stackhost::api::ClusterStackRelease = serde_json::from_value(json!({
        "apiVersion": "clusterstack.x-k8s.io/v1alpha1", "kind": "ClusterStackRelease",
        "metadata": {"name": "docker-ferrol-1-32-v2", "namespace": ns}, "spec": {}}))
    .expect("release");
    releases
        .create(&Default::default(), &release)
        .await
        .expect("release");
    let status = json!({"status": {"ready": true, "kubernetesVersion": "v1.32.2"}});
    releases
        .patch_status(
            "docker-ferrol-1-32-v2",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&status),
        )
        .await
        .expect("release status");
    let refused = create(&admin, cluster_of("v1.32.1"))
        .await
        .expect_err("wrong version");
    assert!(refused.ends_with("set it to \"v1.32.2\""), "{refused}");
    create(&admin, cluster_of("v1.32.2"))
        .await
        .expect("a Cluster of the ready release");

    let stacks: kube::Api<stackhost::api::ClusterStack> = kube::Api::namespaced(admin.clone(), ns);
    match stacks.delete("ferrol", &Default::default()).await {
        Err(kube::Error::Api(s)) => assert!(
            s.message
                .contains("ClusterStack tenant/ferrol is in use by Cluster(s) c1; delete them"),
            "{}",
            s.message
        ),
        other => panic!("the stack in use was deleted: {other:?}"),
    }
    let clusters = stackhost::addon::cluster::clusters(admin.clone(), ns);
    clusters
        .delete("c1", &Default::default())
        .await
        .expect("delete the Cluster");
    stacks
        .delete("ferrol", &Default::default())
        .await
        .expect("a stack no Cluster uses is deleted");
    let _ = stop.send(true);
    hooks.stopped().await;
}
