//! Content-addressed source uploads: streamed to disk, checked, never held
//! in memory whole.
//!
//! Sources are not tied to an app (the same bytes may serve several), so an
//! upload needs the `deploy` role on some app and a `HEAD` needs `read`;
//! what a source may be deployed to is checked when it is deployed.
//!
//! With several instances, a source is in the data dir of the instance that
//! took the upload; the store records which ones hold it, and an instance
//! that needs a source it lacks (a deploy of it, a build of it after a
//! take-over) fetches it from one of them ([`crate::instance::fetch_source`]
//! → [`peer_get`]), checking the digest as for any upload.

use super::{ApiError, ApiPath, AppState, Caller};
use crate::config::Role;
use crate::instance::{PEER_HEADER, PeerKey};
use crate::model::SourceInfo;
use crate::source::{SourceError, check_digest};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

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
    crate::instance::record_source_copy(&state.shared, digest.as_str()).await;
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

/// The source's bytes, for another instance that lacks it: only instances
/// on the same store may ask, each with its peer key (`deployd-instance`
/// names it, `Authorization: Bearer` shows the key), so this route is not
/// behind the tokens of `[[auth.tokens]]`.
pub async fn peer_get(
    State(state): State<AppState>,
    ApiPath(sha256): ApiPath<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let denied = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "only another deployd instance on the same store may fetch a source here",
        )
    };
    let instance = (headers.get(PEER_HEADER))
        .and_then(|v| v.to_str().ok())
        .ok_or_else(denied)?;
    let presented = (headers.get(header::AUTHORIZATION))
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(denied)?;
    let stored = state.shared.store.peer_key(instance).await?;
    if !stored.is_some_and(|stored| PeerKey::opens(presented, &stored)) {
        return Err(denied());
    }
    let digest = check_digest(&sha256)?;
    let missing =
        || ApiError::not_found("source", format!("source {sha256} is not on this instance"));
    if !state.shared.sources.keep(digest.as_str()) {
        return Err(missing());
    }
    let file = tokio::fs::File::open(state.shared.sources.path(digest.as_str()))
        .await
        .map_err(|_| missing())?;
    let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], body).into_response())
}
