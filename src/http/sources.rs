//! Content-addressed source uploads: streamed to disk, checked, never held
//! in memory whole.
//!
//! Sources are not tied to an app (the same bytes may serve several), so an
//! upload (and a download) needs the `deploy` role on some app and a `HEAD`
//! needs `read`; what a source may be deployed to is checked when it is
//! deployed.
//!
//! With several instances, a source is in the data dir of the instance that
//! took the upload; the store records which ones hold it, and an instance
//! asked to deploy a source it lacks fetches it from one of them first
//! ([`fetch_from_peers`]), checking the digest as for any upload.

use super::forward::FORWARDED_BY;
use super::{ApiError, ApiPath, AppState, Caller};
use crate::config::Role;
use crate::model::SourceInfo;
use crate::names::SourceDigest;
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
    record_copy(&state, digest.as_str()).await;
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

/// The source's bytes, for another instance that lacks it.
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(sha256): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller.may_any_app(Role::Deploy)?;
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

/// Tell the other instances that this one holds `digest`. A failure only
/// means they cannot fetch it from here.
async fn record_copy(state: &AppState, digest: &str) {
    let shared = &state.shared;
    if let Err(e) = shared
        .store
        .record_source_copy(digest, &shared.instance)
        .await
    {
        tracing::warn!(%digest, error = %e, "could not record that this instance holds the source");
    }
}

/// Fetch source `digest` from another live instance that holds it, as the
/// caller (its `Authorization` is sent on); true once it is stored here,
/// digest checked. False when no instance has it or none could send it.
pub async fn fetch_from_peers(
    state: &AppState,
    digest: &SourceDigest,
    headers: &HeaderMap,
) -> bool {
    let shared = &state.shared;
    let holders = match shared
        .store
        .source_holders(digest.as_str(), &shared.instance)
        .await
    {
        Ok(holders) => holders,
        Err(e) => {
            tracing::warn!(%digest, error = %e, "cannot ask which instances hold the source");
            return false;
        }
    };
    for address in holders {
        let mut request = (shared.peers)
            .get(format!("{address}/v1/sources/{digest}"))
            .header(FORWARDED_BY, shared.instance.as_str());
        if let Some(auth) = headers.get(header::AUTHORIZATION) {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let answer = match request.send().await.and_then(|a| a.error_for_status()) {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(%digest, %address, error = %e, "could not fetch the source from another instance");
                continue;
            }
        };
        match shared
            .sources
            .put(digest.as_str(), answer.bytes_stream())
            .await
        {
            Ok(_) => {
                tracing::info!(%digest, %address, "fetched the source from another instance");
                record_copy(state, digest.as_str()).await;
                return true;
            }
            Err(e) => {
                tracing::warn!(%digest, %address, error = %e, "the source another instance sent was refused")
            }
        }
    }
    false
}
