//! Content-addressed source uploads: streamed to disk, checked, never held
//! in memory whole.

use super::{ApiError, AppState};
use crate::model::SourceInfo;
use crate::source::check_digest;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;

pub async fn put(
    State(state): State<AppState>,
    Path(sha256): Path<String>,
    body: Body,
) -> Result<(StatusCode, Json<SourceInfo>), ApiError> {
    check_digest(&sha256)?;
    let outcome = state
        .shared
        .sources
        .put(&sha256, body.into_data_stream())
        .await?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(SourceInfo {
            sha256,
            size: outcome.size,
        }),
    ))
}

pub async fn head(State(state): State<AppState>, Path(sha256): Path<String>) -> StatusCode {
    match check_digest(&sha256) {
        Ok(()) if state.shared.sources.exists(&sha256) => StatusCode::OK,
        Ok(()) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}
