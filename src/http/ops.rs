//! Operations: liveness, readiness, metrics and what the supervisor holds.

use super::{ApiError, AppState, Caller};
use crate::config::Role;
use crate::metrics::{self, Live, LiveInstance};
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
        // The cause may name hosts or users: it goes to the log, not the answer.
        tracing::warn!(error = %e, "readiness: the store does not answer");
        return Err(ApiError::unavailable("the store does not answer"));
    }
    Ok(Json(json!({ "status": "ready" })))
}

/// Spans every app, so only an admin of everything may look.
pub async fn supervisor(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.may_everything(Role::Admin)?;
    let actors: Vec<ResidentActor> = state.supervisor.resident().await;
    let degraded = state.supervisor.degraded().await;
    // Drift is durable: it is read from the store (null when the store is away).
    let drifted = match state.shared.store.drifted().await {
        Ok(drifted) => Some(drifted),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list drifted targets");
            None
        }
    };
    Ok(Json(json!({
        "instance": state.shared.instance,
        "resident": actors.len(),
        "actors": actors,
        "degraded": degraded,
        "drifted": drifted
    })))
}

/// The live instances on the store, with their addresses, the targets each
/// owns and their last heartbeat. Spans every app: admins of everything only.
pub async fn instances(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    caller.may_everything(Role::Admin)?;
    let instances = state.shared.store.instances().await?;
    Ok(Json(json!({
        "this": state.shared.instance,
        "instances": instances,
    })))
}

/// The daemon's metrics as OpenMetrics text. Resident actors, their queues, open streams and
/// drifted targets are read now, so they are exact at the moment of the scrape.
pub async fn metrics(
    State(state): State<AppState>,
) -> ([(axum::http::HeaderName, &'static str); 1], String) {
    let resident = state.supervisor.resident().await;
    let now = crate::model::now();
    let instances = state.shared.store.instances().await.ok().map(|all| {
        all.into_iter()
            .map(|i| LiveInstance {
                targets_owned: i.targets.len(),
                heartbeat_age: (now - i.heartbeat_at).as_seconds_f64().max(0.0),
                id: i.id,
            })
            .collect()
    });
    let live = Live {
        resident_actors: resident.len(),
        queue_depth: resident.iter().map(|r| r.queue_length).sum(),
        stream_subscribers: state.shared.hub.total_subscribers(),
        drifted_targets: state.shared.store.drifted().await.ok().map(|d| d.len()),
        instances,
    };
    let text = state.metrics().render(live);
    ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], text)
}
