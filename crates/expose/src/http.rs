//! `/metrics`, `/healthz` and `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, TextEncoder};

use crate::{Board, Health};

/// Families computed elsewhere and replaced whole at each tick (the targets service's).
pub type Snapshot = std::sync::RwLock<Arc<Vec<prometheus::proto::MetricFamily>>>;

#[derive(Debug, Clone)]
pub struct AppState {
    pub board: Arc<Board>,
    pub health: Health,
    pub ready: Arc<AtomicBool>,
    pub snapshot: Arc<Snapshot>,
}

/// The HTTP endpoints of a service, without a socket, so tests can call them directly.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(state)
}

/// Renders the exposition text: the business families, then the health families.
pub fn render(state: &AppState) -> Vec<u8> {
    state.health.board_series.set(state.board.len() as i64);
    let mut families = state.board.gather();
    let snapshot = state
        .snapshot
        .read()
        .map(|s| Arc::clone(&s))
        .unwrap_or_default();
    families.extend(snapshot.iter().cloned());
    families.extend(state.health.registry.gather());
    let mut buf = Vec::with_capacity(families.len() * 1024);
    if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
        buf.clear();
        buf.extend_from_slice(format!("# encoding failed: {e}\n").as_bytes());
    }
    buf
}

async fn metrics(State(state): State<AppState>) -> Response {
    // Rendering a large board is CPU work; keep it off the async workers.
    match tokio::task::spawn_blocking(move || render(&state)).await {
        Ok(body) => ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: restoring or catching up\n",
        )
            .into_response()
    }
}
