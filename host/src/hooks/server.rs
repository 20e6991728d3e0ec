//! The HTTPS listener of the hook server: a certificate from a directory (`tls.crt`, `tls.key`, as
//! cert-manager writes them; upstream `--hook-cert-dir`), reloaded when cert-manager rotates it, or,
//! without one, a CA and serving certificate generated at start (the sandbox and tests; the CA goes into
//! the ExtensionConfig's `caBundle`). Every replica serves the hooks, leader or not: each answer is
//! computed from the ClusterAddon in the API server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use kube_emulator::tls::Tls;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::run::certs::CertDir;

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
    /// The certificate directory is missing a file, or its files are not usable.
    #[error("hook server certificate: {0}")]
    Certificate(#[from] crate::run::certs::CertError),
    /// Generating a certificate failed.
    #[error("cannot generate the hook server certificate: {0}")]
    Generate(String),
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
    serving: Arc<AtomicBool>,
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

    /// True while the server accepts connections (for `/readyz`).
    pub fn serving(&self) -> Arc<AtomicBool> {
        self.serving.clone()
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
    let tls = match &config.cert_dir {
        Some(dir) => Arc::new(CertDir::load(dir, "--hooks-cert-dir")?).tls()?,
        None => Tls::generate().map_err(|e| HooksError::Generate(e.to_string()))?,
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
    let listener = tls.listener(tcp);
    let ca_pem = tls.ca_pem.clone();
    let app = router(client, config.retry_after_seconds);
    let mut shutdown = shutdown;
    let serving = Arc::new(AtomicBool::new(true));
    let flag = serving.clone();
    let task = tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "hook server stopped");
        }
        flag.store(false, Ordering::SeqCst);
    });
    tracing::info!(%addr, "runtime hook server listening");
    Ok(HooksServer {
        addr,
        ca_pem,
        serving,
        task,
    })
}
