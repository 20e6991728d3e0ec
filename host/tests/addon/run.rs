//! `stackhost run` (the real binary) against the emulators: the ClusterStack flow with the docker plugin
//! and the sample release from the shipped OCI layout, then the addons of a Cluster, whose values went
//! through the plugin's `addon-values` step; and a hook certificate directory that is not usable.

use std::io::Read as _;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::json;
use stackhost::sandbox;

use crate::env::{ready, workload_object, Env, NS};

/// The binary under test: `STACKHOST_BIN` (a copy safe from other builds), else cargo's.
fn stackhost() -> Command {
    Command::new(std::env::var("STACKHOST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stackhost").into()))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn addon_values_pass_through_the_provider_plugin_of_a_running_stackhost() {
    let env = Env::start(true).await;
    sandbox::install_crds(&env.mgmt).expect("Cluster API CRDs of the sample ClusterClass");
    let kubeconfig = env.dir.path().join("management.kubeconfig");
    env.mgmt.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let layout = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sandbox/sample");
    let port = free_port();
    let _run = Process(
        stackhost()
            .args(["run", "--leader-elect", "false", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--bind", &format!("127.0.0.1:{port}"), "--oci-layout"])
            .arg(&layout)
            .args(["--release-source", &format!("oci://{}", sandbox::SAMPLE_RELEASES)])
            .args(["--retry-base", "200ms", "--retry-max", "2s", "--cache-dir"])
            .arg(env.dir.path().join("run-cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stackhost run"),
    );

    // The docker plugin pulls through a registry of its own here.
    let (mut plugin, stack) = sandbox::sample_objects(NS, sandbox::SAMPLE_PLUGIN);
    plugin.spec.config = Some(json!({"imageRegistry": "registry.example.test", "pendingRounds": 0}));
    sandbox::create(&env.client, NS, &plugin)
        .await
        .expect("ProviderPlugin");
    sandbox::create(&env.client, NS, &stack)
        .await
        .expect("ClusterStack");
    sandbox::wait_release_ready(&env.client, NS, "docker-ferrol-1-32-v1", Duration::from_secs(60))
        .await
        .expect("the sample release becomes ready");

    env.create_cluster("c1", 1).await;
    let addon = env
        .wait_addon("c1", "addons applied by stackhost run", ready)
        .await;
    assert_eq!(addon.spec.cluster_stack, "docker-ferrol-1-32-v1");
    let wl = env.workload_client();
    let web = workload_object(&wl, "apps/v1", "Deployment", "cluster-addon-web")
        .await
        .expect("web Deployment in the workload cluster");
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["image"], "registry.example.test/nginx:1.27",
        "global.imageRegistry set by the docker plugin's addon-values"
    );
    assert_eq!(web["spec"]["replicas"], 2, "cluster-addon-values.yaml kept");
    let info = workload_object(&wl, "v1", "ConfigMap", "cluster-addon-info")
        .await
        .expect("info ConfigMap");
    assert_eq!(info["data"]["clusterName"], "c1");

    // The plugin call and the addon reconciles are on /metrics.
    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains(
            r#"stackhost_plugin_calls_total{plugin="default/docker",function="addon-values",outcome="ok"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"stackhost_reconciles_total{controller="clusteraddon",result="ok"}"#),
        "{metrics}"
    );
}

#[test]
fn a_hook_cert_dir_without_certificates_stops_run_with_the_file_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mgmt = tokio::runtime::Runtime::new().expect("runtime");
    let cluster = mgmt.block_on(kube_emulator::Cluster::start()).expect("emulator");
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.write_kubeconfig(&kubeconfig).expect("kubeconfig");
    let mut child = Process(
        stackhost()
            .args(["run", "--leader-elect", "false", "--kubeconfig"])
            .arg(&kubeconfig)
            .args(["--bind", &format!("127.0.0.1:{}", free_port())])
            .args(["--hooks-bind", "127.0.0.1:0", "--hooks-cert-dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start stackhost run"),
    );
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "stackhost run kept running without hook certificates"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    child
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read stderr");
    assert!(!status.success(), "{stderr}");
    let file = dir.path().join("tls.crt").display().to_string();
    assert!(
        stderr.contains(&format!("hook server certificate: {file}: ")),
        "{stderr}"
    );
}
