//! Operator actions that are not about one deployment: they span every app,
//! so they need an admin of every app and cluster.

use super::{ApiError, AppState, Caller};
use crate::compaction;
use crate::config::Role;
use crate::store::CompactionReport;
use axum::Json;
use axum::extract::State;

/// `POST /v1/admin/compact`: run a full compaction now and answer what it
/// deleted. Safe beside the background run: the store hands each deleted
/// row to exactly one of them. The one exception to "nothing is written
/// when the answer is an error": steps committed before a failing one stay
/// done, which is harmless, since compaction only ever deletes what retention
/// no longer keeps and repeating it is safe.
pub async fn compact(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<CompactionReport>, ApiError> {
    caller.may_everything(Role::Admin)?;
    Ok(Json(compaction::compact_once(&state.shared).await?))
}
