//! Content-addressed source uploads: streamed to disk, checked, never held
//! in memory whole.
//!
//! Sources are not tied to an app (the same bytes may serve several), so an
//! upload needs the `deploy` role on some app and a `HEAD` needs `read`; what
//! a source may be deployed to is checked when it is deployed.

use super::{ApiError, ApiPath, AppState, Caller};
use crate::config::Role;
use crate::model::SourceInfo;
use crate::source::{SourceError, check_digest};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};

pub async fn put(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(sha256): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<SourceInfo>), ApiError> {
    caller.may_any_app(Role::Deploy)?;
    let digest = check_digest(&sha256)?;
    // A declared length over the limit is refused before a byte is read; the
    // store enforces the limit on the bytes themselves either way.
    let limit = state.shared.config.limits.upload_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(SourceError::TooLarge { limit }.into());
    }
    let outcome = state
        .shared
        .sources
        .put(digest.as_str(), body.into_data_stream())
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

/// A HEAD answer has no body, so the status alone tells.
pub async fn head(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(sha256): ApiPath<String>,
) -> StatusCode {
    if let Err(denied) = caller.may_any_app(Role::Read) {
        return denied.status;
    }
    match check_digest(&sha256) {
        Ok(digest) if state.shared.sources.keep(digest.as_str()) => StatusCode::OK,
        Ok(_) => StatusCode::NOT_FOUND,
        Err(_) => StatusCode::BAD_REQUEST,
    }
}
