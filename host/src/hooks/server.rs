//! The HTTPS listener of the hook server: a certificate from a directory (`tls.crt`, `tls.key`, as
//! cert-manager writes them; upstream `--hook-cert-dir`), reloaded when cert-manager rotates it, or,
//! without one, a CA and serving certificate generated at start (the sandbox and tests; the CA goes into
//! the ExtensionConfig's `caBundle`). Every replica serves the hooks, leader or not: each answer is
//! computed from the ClusterAddon in the API server.
//!
//! Every connection is held to a deadline: a request must arrive in full and be answered within
//! `request_timeout` of its first byte, and a connection silent for as long is closed. A client that
//! sends its headers a byte at a time (slowloris) cannot keep connections open.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::Router;
use kube_emulator::tls::Tls;
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use crate::run::certs::CertDir;

use super::{admission, discovery_path, discovery_response, handle, handler_path, HANDLERS};

/// How to run the hook server.
#[derive(Debug, Clone)]
pub struct HooksConfig {
    /// Listen address; upstream's port is 9442.
    pub addr: SocketAddr,
    /// Directory with `tls.crt` and `tls.key`; `None` generates a certificate for 127.0.0.1/localhost.
    pub cert_dir: Option<PathBuf>,
    /// `retryAfterSeconds` while `BeforeClusterUpgrade` blocks; upstream 10.
    pub retry_after_seconds: i64,
    /// Time a request may take from its first byte to the end of its answer, and longest silence on a
    /// connection; past it the connection is closed.
    pub request_timeout: Duration,
}

impl Default for HooksConfig {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([0, 0, 0, 0], 9442)),
            cert_dir: None,
            retry_after_seconds: 10,
            // Cluster API's hook client waits 10 s by default; its requests are a few KiB.
            request_timeout: Duration::from_secs(10),
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
    router
        .route(
            admission::CLUSTER_PATH,
            post(|state, body| review(state, body, Review::Cluster)),
        )
        .route(
            admission::CLUSTER_STACK_PATH,
            post(|state, body| review(state, body, Review::ClusterStack)),
        )
        .with_state(AppState { client, retry_after })
}

/// What the validating webhook checks.
#[derive(Clone, Copy)]
enum Review {
    Cluster,
    ClusterStack,
}

async fn review(State(state): State<AppState>, body: Bytes, what: Review) -> axum::response::Response {
    let review: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            let why = format!("the AdmissionReview is not JSON: {e}");
            return json_response(StatusCode::BAD_REQUEST, &json!({"error": why}));
        }
    };
    let verdict = match what {
        Review::Cluster => admission::check_cluster(&state.client, &review).await,
        Review::ClusterStack => admission::check_cluster_stack(&state.client, &review).await,
    };
    json_response(StatusCode::OK, &admission::response(&review, verdict))
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
    let listener = Deadlines {
        inner: tls.listener(tcp),
        timeout: config.request_timeout,
    };
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

/// A listener whose connections keep [`Deadline`]s.
struct Deadlines<L> {
    inner: L,
    timeout: Duration,
}

impl<L: axum::serve::Listener> axum::serve::Listener for Deadlines<L>
where
    L::Io: Unpin,
{
    type Io = Deadline<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.inner.accept().await;
        let io = Deadline {
            io,
            timeout: self.timeout,
            expires: Box::pin(tokio::time::sleep(self.timeout)),
            in_request: false,
        };
        (io, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// A connection that fails its reads once its deadline passed: `timeout` after the first byte of a
/// request until an answer is written, and `timeout` of silence between requests.
struct Deadline<T> {
    io: T,
    timeout: Duration,
    expires: Pin<Box<Sleep>>,
    /// Bytes of a request arrived and no answer was written since.
    in_request: bool,
}

impl<T: AsyncRead + Unpin> AsyncRead for Deadline<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before && !self.in_request {
                    // The first bytes of a request: it has `timeout` to arrive and be answered.
                    self.in_request = true;
                    let at = Instant::now() + self.timeout;
                    self.expires.as_mut().reset(at);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match self.expires.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the request did not arrive within the hook server's request timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Deadline<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) && self.in_request {
            // Answered: the connection may now idle for `timeout` before the next request.
            self.in_request = false;
            let at = Instant::now() + self.timeout;
            self.expires.as_mut().reset(at);
        }
        written
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        if matches!(written, Poll::Ready(Ok(n)) if n > 0) && self.in_request {
            self.in_request = false;
            let at = Instant::now() + self.timeout;
            self.expires.as_mut().reset(at);
        }
        written
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}
