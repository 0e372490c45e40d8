//! The dcgm-exporter-compatible `/metrics` page.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use parking_lot::RwLock;
use tokio::net::TcpListener;

use crate::snapshot::Snapshot;

/// The latest snapshot, shared by the sampler (writer) and the page (reader).
pub type Latest = Arc<RwLock<Arc<Snapshot>>>;

/// Bind `addr` and serve `/metrics` until `shutdown` resolves. Returns the bound address.
pub async fn serve(
    addr: SocketAddr,
    latest: Latest,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route(
            "/",
            get(|| async { "vigil gpu-exporter: metrics at /metrics\n" }),
        )
        .with_state(latest);
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "metrics page stopped");
        }
    });
    Ok((bound, task))
}

async fn metrics(State(latest): State<Latest>) -> impl IntoResponse {
    let snapshot = latest.read().clone();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        snapshot.render_prometheus(),
    )
}

async fn healthz(State(latest): State<Latest>) -> impl IntoResponse {
    if latest.read().families.is_empty() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "no sampling round finished yet\n",
        )
    } else {
        (StatusCode::OK, "ok\n")
    }
}
