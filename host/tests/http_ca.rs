//! The `http` capability and a private CA: a real HTTPS server on 127.0.0.1 whose certificate is
//! signed by a freshly generated CA. Without the CA a call fails with a transport error that names
//! the host and the missing trust; with the CA (`CaBundle`, `--ca-file`, a ProviderPlugin's
//! `spec.capabilities.httpCABundle`) it goes through.

mod common;

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use kube_emulator::tls::Tls;
use stackhost::plugin::bindings::clusterstack::provider::http::{HttpError, Request};
use stackhost::plugin::capability::{CaBundle, HttpTransport as _, UreqTransport};

/// An HTTPS server with a Keystone-like token endpoint that rejects every password.
async fn https_server() -> (SocketAddr, Tls) {
    let tls = Tls::generate().expect("generate a CA and a serving certificate");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = tcp.local_addr().expect("addr");
    let app = Router::new()
        .route("/hello", get(|| async { "hello over TLS" }))
        .route(
            "/v3/auth/tokens",
            post(|| async {
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::CONTENT_TYPE, "application/json")],
                    r#"{"error": {"code": 401, "title": "Unauthorized", "message": "The request you have made requires authentication."}}"#,
                )
            }),
        );
    let listener = tls.listener(tcp);
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, tls)
}

fn get_request(url: &str) -> Request {
    Request {
        method: "GET".into(),
        url: url.into(),
        headers: vec![],
        body: None,
        timeout_ms: Some(10_000),
    }
}

async fn send(transport: UreqTransport, url: String) -> Result<(u16, String), HttpError> {
    tokio::task::spawn_blocking(move || {
        transport
            .send(&get_request(&url), Duration::from_secs(10), 1 << 20)
            .map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_to_a_private_ca_needs_the_bundle_and_the_error_says_so() {
    let (addr, tls) = https_server().await;
    let url = format!("https://127.0.0.1:{}/hello", addr.port());

    let Err(HttpError::Transport(why)) = send(UreqTransport::default(), url.clone()).await else {
        panic!("a server signed by an unknown CA must not be trusted");
    };
    assert!(
        why.contains(&format!("127.0.0.1:{}", addr.port())) && why.contains("not signed by a trusted CA"),
        "{why}"
    );
    assert!(
        why.contains("spec.capabilities.httpCABundle") && why.contains("--ca-file"),
        "{why}"
    );

    let bundle = CaBundle::from_pem("ConfigMap default/private-ca key `ca.crt`", tls.ca_pem.as_bytes())
        .expect("the CA parses");
    assert_eq!(bundle.len(), 1);
    let ok = send(UreqTransport::new(Some(&bundle)), url.clone()).await;
    assert_eq!(ok, Ok((200, "hello over TLS".to_string())));

    // A bundle with another CA: still refused, and the message names the bundle it checked.
    let other = Tls::generate().expect("another CA");
    let other =
        CaBundle::from_pem("Secret default/openstack key `cacert`", other.ca_pem.as_bytes()).expect("parses");
    let Err(HttpError::Transport(why)) = send(UreqTransport::new(Some(&other)), url).await else {
        panic!("a bundle with the wrong CA must not make the server trusted");
    };
    assert!(
        why.contains("neither by the CA bundle (Secret default/openstack key `cacert`)"),
        "{why}"
    );
}

#[test]
fn a_bundle_without_certificates_is_refused_with_its_origin() {
    let e = CaBundle::from_pem("ConfigMap ns/ca key `ca.crt`", b"not pem at all").expect_err("refused");
    assert!(
        e.starts_with("ConfigMap ns/ca key `ca.crt`: no PEM certificate"),
        "{e}"
    );
    let e = CaBundle::from_pem(
        "ca.pem",
        b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect_err("refused");
    assert!(e.starts_with("ca.pem: "), "{e}");
}

fn bin() -> String {
    std::env::var("STACKHOST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_stackhost").to_string())
}

/// Exit code and everything printed.
fn call_openstack(port: u16, extra: &[&str]) -> (Option<i32>, String) {
    common::plugin_bytes("openstack");
    let component = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist/openstack.wasm");
    let clouds = format!(
        "clouds:\n  openstack:\n    auth:\n      auth_url: https://127.0.0.1:{port}\n      username: stackhost\n      \
         password: wrong\n      project_name: stackhost\n    region_name: RegionOne\n"
    );
    let call = r#"reconcile-node-images({tag: "openstack-scs-1-32-v1", provider: "openstack", stack-name: "scs", kubernetes-version: "v1.32.5", version: "v1"}, [{name: "ubuntu-capi-image-v1.32.5", url: "https://127.0.0.1/x.raw", checksum: none, disk-format: "raw", container-format: "bare", properties: []}])"#;
    let allow = format!("127.0.0.1:{port}");
    let secret = format!("openstack/clouds.yaml={clouds}");
    let mut args = vec![
        "plugin",
        "call",
        component.to_str().expect("utf-8"),
        call,
        "--allow-http",
        &allow,
        "--secret",
        &secret,
        "--grant-state",
    ];
    args.extend_from_slice(extra);
    let out = Command::new(bin())
        .args(&args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run stackhost");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The OpenStack plugin, called from the CLI, against a Keystone-like HTTPS endpoint with a private
/// CA: without `--ca-file` the plugin reports the untrusted certificate; with it the request reaches
/// the server (which rejects the password, as the plugin then says).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_call_trusts_a_private_ca_with_ca_file() {
    let (addr, tls) = https_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &tls.ca_pem).expect("write ca");
    let port = addr.port();

    let (code, text) = tokio::task::spawn_blocking(move || call_openstack(port, &[]))
        .await
        .expect("join");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(&format!(
            "Keystone at https://127.0.0.1:{port}/v3 is not reachable"
        )) && text.contains(&format!(
            "the certificate of 127.0.0.1:{port} is not signed by a trusted CA"
        )),
        "{text}"
    );

    let ca_arg = ca.to_str().expect("utf-8").to_string();
    let (code, text) = tokio::task::spawn_blocking(move || call_openstack(port, &["--ca-file", &ca_arg]))
        .await
        .expect("join");
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("rejected the credentials") && text.contains("HTTP 401"),
        "with the CA the request must reach the server: {text}"
    );
    assert!(!text.contains("not signed by a trusted CA"), "{text}");

    let component = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist/openstack.wasm");
    let out = Command::new(bin())
        .args([
            "plugin",
            "call",
            component.to_str().expect("utf-8"),
            "info()",
            "--ca-file",
            "/nonexistent/ca.pem",
        ])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        text.contains("--ca-file") && text.contains("/nonexistent/ca.pem"),
        "{text}"
    );
}
