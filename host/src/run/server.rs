//! The process's HTTP listener: `/metrics` (Prometheus text format), `/healthz` (the process is
//! alive) and `/readyz`: the runtime hook server accepts connections (on every replica, when hooks are
//! served), and on the leader the controllers have started; a standby is ready to take over.
//!
//! With `--metrics-secure`, `/metrics` moves to its own HTTPS listener and answers only callers the API
//! server vouches for, as controller-runtime's secure metrics do: the bearer token is checked with a
//! TokenReview (401 without a token or with one the API server does not accept) and the user it names
//! with a SubjectAccessReview for `get` on the non-resource URL `/metrics` (403 unless RBAC allows it).

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;

use super::Health;

#[derive(Clone)]
struct Shared {
    registry: Arc<Registry>,
    health: Health,
    leader_elect: bool,
}

/// Serves the probes, and `/metrics` unless `metrics_elsewhere` (secure metrics have their own listener).
pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    health: Health,
    leader_elect: bool,
    metrics_elsewhere: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut app = Router::new();
    if !metrics_elsewhere {
        app = app.route("/metrics", get(metrics));
    }
    let app = app
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Shared {
            registry,
            health,
            leader_elect,
        });
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "the metrics and health listener stopped");
    }
}

async fn metrics(State(shared): State<Shared>) -> axum::response::Response {
    encode(&shared.registry)
}

fn encode(registry: &Registry) -> axum::response::Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        ),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            format!("cannot encode metrics: {e}\n"),
        ),
    }
    .into_response()
}

#[derive(Clone)]
struct Secure {
    registry: Arc<Registry>,
    client: kube::Client,
}

/// Serves `/metrics` on `listener` (TLS) to authenticated and authorized callers only.
pub(super) async fn serve_secure(
    listener: kube_emulator::tls::TlsListener,
    registry: Arc<Registry>,
    client: kube::Client,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/metrics", get(secure_metrics))
        .with_state(Secure { registry, client });
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
        tracing::error!(error = %e, "the secure metrics listener stopped");
    }
}

fn text(status: StatusCode, body: String) -> axum::response::Response {
    (status, [(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

async fn secure_metrics(State(secure): State<Secure>, headers: HeaderMap) -> axum::response::Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return text(
            StatusCode::UNAUTHORIZED,
            "Unauthorized: send a Kubernetes bearer token (Authorization: Bearer ...)\n".into(),
        );
    };
    match super::access::review(&secure.client, token, "/metrics", "get").await {
        Ok(super::access::Access::Allowed) => encode(&secure.registry),
        Ok(super::access::Access::Unauthenticated(why)) => {
            text(StatusCode::UNAUTHORIZED, format!("Unauthorized: {why}\n"))
        }
        Ok(super::access::Access::Denied(why)) => text(StatusCode::FORBIDDEN, format!("Forbidden: {why}\n")),
        Err(e) => {
            tracing::warn!(error = %e, "cannot check a /metrics caller");
            text(StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n"))
        }
    }
}

async fn readyz(State(shared): State<Shared>) -> (StatusCode, String) {
    let health = &shared.health;
    let hooks = health.hooks_serving();
    if hooks == Some(false) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the runtime hook server does not accept connections\n".to_owned(),
        );
    }
    let serving = if hooks.is_some() {
        "; serving the runtime hooks"
    } else {
        ""
    };
    if shared.leader_elect && !health.is_leading() {
        // A standby is ready to take over, and answers hooks like the leader.
        return (
            StatusCode::OK,
            format!("standby (leader: {}){serving}\n", health.leader()),
        );
    }
    if health.is_ready() {
        (StatusCode::OK, format!("ok{serving}\n"))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "controllers are starting: watches not synced yet\n".to_owned(),
        )
    }
}
