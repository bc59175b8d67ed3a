//! `/metrics`, `/healthz` and `/readyz`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, TextEncoder};

use crate::{Board, Health};

/// Families computed elsewhere and replaced whole at each tick (the targets service's), as
/// exposition text (see [`crate::text`]): a scrape copies the bytes, not millions of series.
pub type Snapshot = std::sync::RwLock<Arc<Vec<u8>>>;

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

/// Renders the exposition text in pieces, to be sent one after the other: the business
/// families, then the health families.
pub fn render(state: &AppState) -> Vec<Bytes> {
    state.health.board_series.set(state.board.len() as i64);
    // The board writes its own families; the few others go through the crate's encoder.
    let snapshot = state
        .snapshot
        .read()
        .map(|s| Arc::clone(&s))
        .unwrap_or_default();
    let mut pieces: Vec<Bytes> = state.board.text().into_iter().map(Bytes::from).collect();
    // Shared, not copied: the targets service's families are tens of megabytes at 10,000 reps.
    pieces.push(Bytes::from_owner(Shared(snapshot)));
    let mut families = state.health.registry.gather();
    // The encoder refuses empty families: the counter appears with its first refusal.
    families.extend(refused_family(&state.board));
    let mut health = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&families, &mut health) {
        pieces.clear();
        health = format!("# encoding failed: {e}\n").into_bytes();
    }
    pieces.push(Bytes::from(health));
    pieces
}

/// A snapshot's bytes as a piece of the response, without a copy.
struct Shared(Arc<Vec<u8>>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// `salespulse_series_refused_total{family}`: new series the per-family cap kept off `/metrics`.
fn refused_family(board: &Board) -> Option<prometheus::proto::MetricFamily> {
    use prometheus::proto::{Counter, LabelPair, Metric, MetricFamily, MetricType};
    let mut f = MetricFamily::default();
    f.set_name(crate::families::health::SERIES_REFUSED_TOTAL.to_owned());
    f.set_help("New series refused by expose.max_series_per_family, by family.".to_owned());
    f.set_field_type(MetricType::COUNTER);
    let mut refused = board.refused();
    if refused.is_empty() {
        return None;
    }
    refused.sort();
    f.set_metric(
        refused
            .into_iter()
            .map(|(family, n)| {
                let mut l = LabelPair::default();
                l.set_name("family".to_owned());
                l.set_value(family);
                let mut c = Counter::default();
                c.set_value(n as f64);
                let mut m = Metric::default();
                m.set_label(vec![l]);
                m.set_counter(c);
                m
            })
            .collect(),
    );
    Some(f)
}

async fn metrics(State(state): State<AppState>) -> Response {
    // Rendering a large board is CPU work; keep it off the async workers.
    match tokio::task::spawn_blocking(move || render(&state)).await {
        Ok(pieces) => {
            let body = Body::from_stream(futures_util::stream::iter(
                pieces.into_iter().map(Ok::<_, std::convert::Infallible>),
            ));
            ([(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)], body).into_response()
        }
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
