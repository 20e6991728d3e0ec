//! The process's one HTTP listener: `/metrics` (Prometheus text format), `/healthz` (the process is
//! alive) and `/readyz` (the leader's controllers have synced; a standby is ready to take over).

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
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

pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<Registry>,
    health: Health,
    leader_elect: bool,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/metrics", get(metrics))
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

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &shared.registry) {
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
}

async fn readyz(State(shared): State<Shared>) -> (StatusCode, String) {
    let health = &shared.health;
    if shared.leader_elect && !health.is_leading() {
        // A standby is healthy and ready to take over; the leader does the work.
        return (StatusCode::OK, format!("standby (leader: {})\n", health.leader()));
    }
    if health.is_ready() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "controllers are starting: watches not synced yet\n".to_owned(),
        )
    }
}
