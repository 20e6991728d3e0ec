//! The runtime hook server over HTTPS: discovery and hook responses in Cluster API's shapes, and
//! `BeforeClusterUpgrade` blocking until the addons of the new class are applied.

use std::path::Path;

use serde_json::{json, Value};
use stackhost::hooks::client::HookClient;
use stackhost::hooks::{HooksConfig, HOOKS_API_VERSION};
use tokio::sync::watch;

use crate::env::{ready, Env, NS};

async fn start_hooks(env: &Env) -> (stackhost::hooks::HooksServer, watch::Sender<bool>) {
    start_hooks_with(env, None).await.expect("hook server")
}

/// Starts the hook server on a free port with the certificates of `cert_dir` (generated without).
async fn start_hooks_with(
    env: &Env,
    cert_dir: Option<&Path>,
) -> Result<(stackhost::hooks::HooksServer, watch::Sender<bool>), stackhost::hooks::HooksError> {
    start_hooks_config(
        env,
        HooksConfig {
            cert_dir: cert_dir.map(Path::to_path_buf),
            ..HooksConfig::default()
        },
    )
    .await
}

/// Starts the hook server on a free port with `config` (`retryAfterSeconds` 7).
async fn start_hooks_config(
    env: &Env,
    config: HooksConfig,
) -> Result<(stackhost::hooks::HooksServer, watch::Sender<bool>), stackhost::hooks::HooksError> {
    let (tx, rx) = watch::channel(false);
    let config = HooksConfig {
        addr: "127.0.0.1:0".parse().expect("addr"),
        retry_after_seconds: 7,
        ..config
    };
    let server = stackhost::hooks::start(env.client.clone(), config, rx).await?;
    Ok((server, tx))
}

/// Writes what cert-manager would: `ca.crt`, and `tls.crt` / `tls.key` for 127.0.0.1 signed by that CA.
fn write_cert_dir(dir: &Path) -> String {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: a leaf named like its issuer looks self-signed to OpenSSL.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test-hooks-ca");
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    params
        .distinguished_name
        .push(DnType::CommonName, "stackhost-hooks");
    let cert = params.signed_by(&key, &ca).expect("cert");
    std::fs::write(dir.join("ca.crt"), ca.pem()).expect("ca.crt");
    std::fs::write(dir.join("tls.crt"), cert.pem()).expect("tls.crt");
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).expect("tls.key");
    ca.pem()
}

async fn cluster_json(env: &Env, name: &str) -> Value {
    serde_json::to_value(env.clusters().get(name).await.expect("cluster")).expect("json")
}

/// POSTs raw JSON to the server, trusting its CA.
async fn post(server: &stackhost::hooks::HooksServer, path: &str, body: &str) -> (u16, Value) {
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(server.ca_pem.as_bytes()).expect("ca"))
        .build()
        .expect("client");
    let response = http
        .post(format!("{}{path}", server.url()))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_responses_have_cluster_api_shapes() {
    let env = Env::start(false).await;
    let (server, _stop) = start_hooks(&env).await;

    let (status, discovery) = post(
        &server,
        "/hooks.runtime.cluster.x-k8s.io/v1alpha1/discovery",
        "{}",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(discovery["apiVersion"], HOOKS_API_VERSION);
    assert_eq!(discovery["kind"], "DiscoveryResponse");
    assert_eq!(discovery["status"], "Success");
    let handlers = discovery["handlers"].as_array().expect("handlers");
    assert_eq!(handlers.len(), 3);
    assert!(handlers.contains(&json!({
        "name": "before-cluster-upgrade",
        "requestHook": {"apiVersion": HOOKS_API_VERSION, "hook": "BeforeClusterUpgrade"},
        "timeoutSeconds": 10,
        "failurePolicy": "Fail",
    })));

    let client = HookClient::discover(&server.url(), &server.ca_pem)
        .await
        .expect("discover");
    assert_eq!(
        client.hooks(),
        [
            "AfterClusterUpgrade",
            "AfterControlPlaneInitialized",
            "BeforeClusterUpgrade"
        ]
    );

    // A Cluster without ClusterAddon: the non-blocking hook succeeds, the blocking one waits.
    env.create_cluster("c1", 1).await;
    let cluster = cluster_json(&env, "c1").await;
    let acpi = client
        .call("AfterControlPlaneInitialized", &cluster, json!({}))
        .await
        .expect("call")
        .expect("registered");
    assert_eq!(
        acpi,
        json!({"apiVersion": HOOKS_API_VERSION, "kind": "AfterControlPlaneInitializedResponse", "status": "Success"})
    );
    let bcu = client
        .call(
            "BeforeClusterUpgrade",
            &cluster,
            json!({"fromKubernetesVersion": "v1.32.2", "toKubernetesVersion": "v1.32.3"}),
        )
        .await
        .expect("call")
        .expect("registered");
    assert_eq!(
        bcu,
        json!({"apiVersion": HOOKS_API_VERSION, "kind": "BeforeClusterUpgradeResponse", "status": "Success",
               "retryAfterSeconds": 7})
    );
    let acu = client
        .call(
            "AfterClusterUpgrade",
            &cluster,
            json!({"kubernetesVersion": "v1.32.3"}),
        )
        .await
        .expect("call")
        .expect("registered");
    assert_eq!(acu["kind"], "AfterClusterUpgradeResponse");
    assert_eq!(acu["status"], "Success");

    // Wrong kind for the path, and a body that is not JSON: Failure responses that say why.
    let wrong =
        json!({"apiVersion": HOOKS_API_VERSION, "kind": "AfterClusterUpgradeRequest", "cluster": cluster});
    let (status, answer) = post(
        &server,
        "/hooks.runtime.cluster.x-k8s.io/v1alpha1/beforeclusterupgrade/before-cluster-upgrade",
        &wrong.to_string(),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(answer["status"], "Failure");
    assert_eq!(
        answer["message"],
        "expected a BeforeClusterUpgradeRequest of hooks.runtime.cluster.x-k8s.io/v1alpha1, got kind \"AfterClusterUpgradeRequest\" of \"hooks.runtime.cluster.x-k8s.io/v1alpha1\""
    );
    let (status, answer) = post(
        &server,
        "/hooks.runtime.cluster.x-k8s.io/v1alpha1/afterclusterupgrade/after-cluster-upgrade",
        "not json",
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(answer["kind"], "AfterClusterUpgradeResponse");
    assert_eq!(answer["status"], "Failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_cluster_upgrade_blocks_until_the_new_addons_are_applied() {
    let mut env = Env::start(true).await;
    env.release(1).await;
    env.create_cluster("c1", 1).await;
    let (server, _stop) = start_hooks(&env).await;
    let client = HookClient::discover(&server.url(), &server.ca_pem)
        .await
        .expect("discover");
    env.start_controller();
    env.wait_addon("c1", "v1 applied", ready).await;

    // Nothing to wait for: same class, addons applied.
    let cluster = cluster_json(&env, "c1").await;
    let extra = json!({"fromKubernetesVersion": "v1.32.2", "toKubernetesVersion": "v1.32.3"});
    let answer = client
        .call("BeforeClusterUpgrade", &cluster, extra.clone())
        .await
        .expect("call")
        .expect("hook");
    assert_eq!(answer["retryAfterSeconds"], 0);

    // A new class whose release is not there yet: the upgrade is held, and the hook is recorded.
    env.set_class("c1", 2, Some("v1.32.3")).await;
    let cluster = cluster_json(&env, "c1").await;
    let answer = client
        .call("BeforeClusterUpgrade", &cluster, extra.clone())
        .await
        .expect("call")
        .expect("hook");
    assert_eq!(
        (answer["status"].as_str(), answer["retryAfterSeconds"].as_i64()),
        (Some("Success"), Some(7))
    );
    let addon = env.addons().get("cluster-addon-c1").await.expect("addon");
    assert_eq!(addon.spec.hook, "BeforeClusterUpgrade");

    env.release(2).await;
    env.wait_addon("c1", "v2 applied", |a| {
        ready(a) && a.spec.cluster_stack == "docker-ferrol-1-32-v2"
    })
    .await;
    let answer = client
        .call("BeforeClusterUpgrade", &cluster, extra)
        .await
        .expect("call")
        .expect("hook");
    assert_eq!(
        answer["retryAfterSeconds"], 0,
        "released once the new addons are applied: {answer}"
    );
    assert_eq!(
        env.addons()
            .get("cluster-addon-c1")
            .await
            .expect("addon")
            .spec
            .hook,
        ""
    );
    let _ = NS;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extension_config_is_accepted_by_the_cluster_api_crd() {
    let env = Env::start(false).await;
    // Cluster API's ExtensionConfig CRD, unmodified (from the same commit as sandbox/tests/fixtures/capi-crds).
    let crd = std::fs::read_to_string(
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/addon/runtime.cluster.x-k8s.io_extensionconfigs.yaml"),
    )
    .expect("ExtensionConfig CRD");
    env.mgmt.apply_yaml(&crd, "test").expect("ExtensionConfig CRD");
    let manifest = stackhost::hooks::extension_config(
        "stackhost",
        &stackhost::hooks::Endpoint::Service {
            namespace: "stackhost-system".into(),
            name: "stackhost-hooks".into(),
            port: 443,
        },
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    );
    let applied = env
        .mgmt
        .apply_yaml(&serde_yaml::to_string(&manifest).expect("yaml"), "test")
        .expect("the ExtensionConfig validates against Cluster API's schema");
    assert_eq!(applied, ["ExtensionConfig/stackhost"]);
    assert_eq!(manifest["spec"]["clientConfig"]["service"]["port"], 443);
    assert_eq!(manifest["spec"]["namespaceSelector"], json!({}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hook_server_serves_with_the_certificates_of_its_cert_dir() {
    let env = Env::start(false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = write_cert_dir(dir.path());
    let (server, _stop) = start_hooks_with(&env, Some(dir.path()))
        .await
        .expect("hook server with --hooks-cert-dir");
    assert_eq!(server.ca_pem, ca, "the caBundle is ca.crt of the directory");
    // A client trusting only that CA completes the handshake and gets the discovery response.
    let (status, discovery) = post(&server, &stackhost::hooks::discovery_path(), "{}").await;
    assert_eq!(status, 200);
    assert_eq!(discovery["kind"], "DiscoveryResponse");
    let client = HookClient::discover(&server.url(), &ca)
        .await
        .expect("discover with ca.crt");
    assert_eq!(client.hooks().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_invalid_cert_file_is_named_in_the_error() {
    let env = Env::start(false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let error = |e: Result<_, stackhost::hooks::HooksError>| match e {
        Ok(_) => panic!("the hook server started without usable certificates"),
        Err(e) => e.to_string(),
    };

    // Nothing there.
    let message = error(start_hooks_with(&env, Some(dir.path())).await);
    let crt = dir.path().join("tls.crt").display().to_string();
    assert!(
        message.starts_with(&format!("hook server certificate: {crt}: ")),
        "{message}"
    );
    assert!(
        message.ends_with("--hooks-cert-dir needs tls.crt and tls.key in PEM (as cert-manager writes them); leave it unset for a generated certificate"),
        "{message}"
    );

    // A certificate, but the key file is not PEM.
    write_cert_dir(dir.path());
    std::fs::write(dir.path().join("tls.key"), "not a key").expect("tls.key");
    let message = error(start_hooks_with(&env, Some(dir.path())).await);
    let key = dir.path().join("tls.key").display().to_string();
    assert!(
        message.starts_with(&format!("hook server certificate: {key}: ")),
        "{message}"
    );

    // A certificate file without any certificate.
    write_cert_dir(dir.path());
    std::fs::write(dir.path().join("tls.crt"), "").expect("tls.crt");
    let message = error(start_hooks_with(&env, Some(dir.path())).await);
    assert!(
        message.starts_with(&format!(
            "hook server certificate: {crt}: no PEM certificate in the file"
        )),
        "{message}"
    );

    // A key of another certificate: the pair is refused, the directory is named.
    write_cert_dir(dir.path());
    let other = tempfile::tempdir().expect("tempdir");
    write_cert_dir(other.path());
    std::fs::copy(other.path().join("tls.key"), dir.path().join("tls.key")).expect("copy key");
    let message = error(start_hooks_with(&env, Some(dir.path())).await);
    assert!(
        message.starts_with(&format!(
            "hook server certificate: {}: tls.key does not belong to tls.crt",
            dir.path().display()
        )),
        "{message}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_sends_its_request_slowly_is_disconnected() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject as _;
    let env = Env::start(false).await;
    let (server, _stop) = start_hooks_config(
        &env,
        HooksConfig {
            request_timeout: std::time::Duration::from_secs(1),
            ..HooksConfig::default()
        },
    )
    .await
    .expect("hook server");
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(server.ca_pem.as_bytes()) {
        roots.add(cert.expect("CA")).expect("add CA");
    }
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    ));
    let tcp = tokio::net::TcpStream::connect(server.addr)
        .await
        .expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let mut conn = tls.connect(name, tcp).await.expect("TLS handshake");
    conn.write_all(
        format!(
            "POST {} HTTP/1.1\r\nHost: 127.0.0.1\r\n",
            stackhost::hooks::discovery_path()
        )
        .as_bytes(),
    )
    .await
    .expect("request line");
    // One header line every 200 ms, never the blank line that ends them (slowloris). The server ends
    // the connection: a read sees its end, or a write fails.
    let closed = async {
        let mut buf = [0u8; 1024];
        loop {
            if conn.write_all(b"X-Slow: 1\r\n").await.is_err() {
                return;
            }
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(std::time::Duration::from_millis(200), conn.read(&mut buf)).await
            {
                return;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(20), closed)
        .await
        .expect("the server closes a connection whose request does not arrive within 1s");

    // Clients that send their requests at once are served as before.
    let (status, discovery) = post(&server, &stackhost::hooks::discovery_path(), "{}").await;
    assert_eq!(status, 200);
    assert_eq!(discovery["kind"], "DiscoveryResponse");
}
