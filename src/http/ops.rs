//! Operations: liveness, readiness, metrics and what the supervisor holds.

use super::{ApiError, AppState};
use crate::metrics::{self, Live};
use crate::supervisor::ResidentActor;
use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use serde_json::{Value, json};

pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Ready when the store answers and the supervisor is alive.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    if !state.supervisor.is_alive() {
        return Err(ApiError::unavailable("the supervisor is not running"));
    }
    if let Err(e) = state.shared.store.ping().await {
        return Err(ApiError::unavailable(format!(
            "the store does not answer: {e}"
        )));
    }
    Ok(Json(json!({ "status": "ready" })))
}

pub async fn supervisor(State(state): State<AppState>) -> Json<Value> {
    let actors: Vec<ResidentActor> = state.supervisor.resident().await;
    Json(json!({ "resident": actors.len(), "actors": actors }))
}

/// Prometheus text. Resident actors, their queues and open streams are read
/// now, so they are exact at the moment of the scrape.
pub async fn metrics(
    State(state): State<AppState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let resident = state.supervisor.resident().await;
    let live = Live {
        resident_actors: resident.len(),
        queue_depth: resident.iter().map(|r| r.queue_length).sum(),
        stream_subscribers: state.shared.hub.total_subscribers(),
    };
    let text = metrics::global().render(live);
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], text)
}
