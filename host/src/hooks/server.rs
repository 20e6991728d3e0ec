//! The HTTPS listener of the hook server: a certificate from a directory (`tls.crt`, `tls.key`, as
//! cert-manager writes them; upstream `--hook-cert-dir`) or, without one, a CA and serving certificate
//! generated at start (the sandbox and tests; the CA goes into the ExtensionConfig's `caBundle`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::{discovery_path, discovery_response, handle, handler_path, HANDLERS};

/// How to run the hook server.
#[derive(Debug, Clone)]
pub struct HooksConfig {
    /// Listen address; upstream's port is 9442.
    pub addr: SocketAddr,
    /// Directory with `tls.crt` and `tls.key`; `None` generates a certificate for 127.0.0.1/localhost.
    pub cert_dir: Option<PathBuf>,
    /// `retryAfterSeconds` while `BeforeClusterUpgrade` blocks; upstream 10.
    pub retry_after_seconds: i64,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 9442)),
            cert_dir: None,
            retry_after_seconds: 10,
        }
    }
}

/// Why the hook server could not start.
#[derive(Debug, thiserror::Error)]
pub enum HooksError {
    /// The certificate or key could not be read.
    #[error("cannot read the hook server certificate {}: {reason}", path.display())]
    Certificate {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Generating a certificate failed.
    #[error("cannot generate the hook server certificate: {0}")]
    Generate(String),
    /// rustls refused the certificate.
    #[error("cannot configure TLS for the hook server: {0}")]
    Tls(#[from] rustls::Error),
    /// The address could not be bound.
    #[error("cannot listen on {addr} for the hook server: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// A running hook server.
#[derive(Debug)]
pub struct HooksServer {
    /// The bound address.
    pub addr: SocketAddr,
    /// PEM of the CA that signed the serving certificate (the generated one, or `ca.crt` /
    /// `tls.crt` from the certificate directory).
    pub ca_pem: String,
    task: tokio::task::JoinHandle<()>,
}

impl HooksServer {
    /// `https://<addr>` (with `127.0.0.1` for an unspecified listen address).
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("https://{addr}")
    }

    /// Waits until the server stopped.
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

#[derive(Clone)]
struct AppState {
    client: kube::Client,
    retry_after: i64,
}

fn router(client: kube::Client, retry_after: i64) -> Router {
    let mut router = Router::new().route(&discovery_path(), get(discovery).post(discovery));
    for (hook, name) in HANDLERS {
        router = router.route(
            &handler_path(hook, name),
            post(move |state: State<AppState>, body: Bytes| hook_handler(state, hook, body)),
        );
    }
    router.with_state(AppState { client, retry_after })
}

fn json_response(status: StatusCode, value: &Value) -> axum::response::Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

async fn discovery() -> axum::response::Response {
    json_response(StatusCode::OK, &discovery_response())
}

async fn hook_handler(
    State(state): State<AppState>,
    hook: &'static str,
    body: Bytes,
) -> axum::response::Response {
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &super::response(hook, Some(format!("the request body is not JSON: {e}")), None),
            )
        }
    };
    let answer = handle(&state.client, hook, &request, state.retry_after).await;
    json_response(StatusCode::OK, &answer)
}

/// Starts the server; it stops when `shutdown` turns true.
pub async fn start(
    client: kube::Client,
    config: HooksConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<HooksServer, HooksError> {
    let (server_config, ca_pem) = match &config.cert_dir {
        Some(dir) => from_dir(dir)?,
        None => generated()?,
    };
    let tcp = TcpListener::bind(config.addr)
        .await
        .map_err(|source| HooksError::Bind {
            addr: config.addr,
            source,
        })?;
    let addr = tcp.local_addr().map_err(|source| HooksError::Bind {
        addr: config.addr,
        source,
    })?;
    let listener = TlsListener::new(tcp, Arc::new(server_config));
    let app = router(client, config.retry_after_seconds);
    let mut shutdown = shutdown;
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "hook server stopped");
        }
    });
    tracing::info!(%addr, "runtime hook server listening");
    Ok(HooksServer { addr, ca_pem, task })
}

/// Runs the server until `shutdown` turns true (for `stackhost run`).
pub async fn run(
    client: kube::Client,
    config: HooksConfig,
    shutdown: watch::Receiver<bool>,
) -> Result<(), HooksError> {
    start(client, config, shutdown).await?.stopped().await;
    Ok(())
}

fn from_dir(dir: &std::path::Path) -> Result<(ServerConfig, String), HooksError> {
    let cert_path = dir.join("tls.crt");
    let key_path = dir.join("tls.key");
    let bad = |path: &PathBuf| {
        let path = path.clone();
        move |e: rustls::pki_types::pem::Error| HooksError::Certificate {
            path,
            reason: e.to_string(),
        }
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .map_err(bad(&cert_path))?
        .collect::<Result<_, _>>()
        .map_err(bad(&cert_path))?;
    if certs.is_empty() {
        return Err(HooksError::Certificate {
            path: cert_path,
            reason: "no certificate in the file".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(bad(&key_path))?;
    let ca_path = dir.join("ca.crt");
    let ca_pem =
        std::fs::read_to_string(if ca_path.is_file() { &ca_path } else { &cert_path }).map_err(|e| {
            HooksError::Certificate {
                path: ca_path.clone(),
                reason: e.to_string(),
            }
        })?;
    Ok((server_config(certs, key)?, ca_pem))
}

fn generated() -> Result<(ServerConfig, String), HooksError> {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
    };
    let generate = || -> Result<_, rcgen::Error> {
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "stackhost-hooks-ca");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "stackhost-hooks");
        let cert = params.signed_by(&key, &ca)?;
        Ok((
            cert.der().clone(),
            ca.der().clone(),
            key.serialize_der(),
            ca.pem(),
        ))
    };
    let (cert, ca, key, ca_pem) = generate().map_err(|e| HooksError::Generate(e.to_string()))?;
    let key = PrivateKeyDer::Pkcs8(key.into());
    Ok((server_config(vec![cert, ca], key)?, ca_pem))
}

fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<ServerConfig, HooksError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// An axum listener yielding TLS streams; handshakes run off the accept loop.
struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: Option<SocketAddr>,
    task: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    fn new(tcp: TcpListener, config: Arc<ServerConfig>) -> Self {
        let local = tcp.local_addr().ok();
        let acceptor = TlsAcceptor::from(config);
        let (tx, rx) = mpsc::channel(64);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, addr)) = tcp.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    if let Ok(Ok(tls)) =
                        tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                    {
                        let _ = tx.send((tls, addr)).await;
                    }
                });
            }
        });
        Self { rx, local, task }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(conn) => conn,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.local
            .ok_or_else(|| std::io::Error::other("the hook server listener has no local address"))
    }
}
