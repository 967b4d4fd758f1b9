//! Operator actions that are not about one deployment: they span every app,
//! so they need an admin of every app and cluster.

use super::deployments::check_params;
use super::{ApiError, ApiQuery, AppState, Caller};
use crate::compaction;
use crate::config::Role;
use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};

/// `POST /v1/admin/compact`: run a full compaction now and answer what it
/// deleted and removed; with `?dry_run=true`, answer what it would and why,
/// changing nothing. Safe beside the background run: the store hands each
/// deleted row to exactly one of them. The one exception to "nothing is
/// written when the answer is an error": steps committed before a failing
/// one stay done, which is harmless, since compaction only ever deletes what
/// retention no longer keeps and repeating it is safe.
pub async fn compact(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery,
) -> Result<Response, ApiError> {
    caller.may_everything(Role::Admin)?;
    check_params(&params, &["dry_run"])?;
    let dry_run = match params.get("dry_run").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::invalid("dry_run", "must be true or false")),
    };
    Ok(if dry_run {
        Json(compaction::plan(&state.shared).await?).into_response()
    } else {
        Json(compaction::compact_once(&state.shared).await?).into_response()
    })
}
