//! The one error shape of API.md, and how every boundary error maps onto it.
//!
//! What must stay true: an answer never carries internal detail (SQL, server
//! paths); the cause chain is logged once, here, where the error is answered.

use crate::model::{ErrorBody, ErrorInfo};
use crate::names::NameError;
use crate::source::SourceError;
use crate::store::StoreError;
use crate::target::{Rejection, TargetError, Unavailable};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            details: json!({}),
        }
    }

    pub fn with_details(mut self, details: Value) -> ApiError {
        self.details = details;
        self
    }

    /// 400 `invalid_argument` naming the field.
    pub fn invalid(field: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_argument", message)
            .with_details(json!({ "field": field }))
    }

    /// 404 `not_found`; `kind` is deployment, source, version, app or cluster.
    pub fn not_found(kind: &str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
            .with_details(json!({ "kind": kind }))
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    fn internal() -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorInfo {
                code: self.code.to_string(),
                message: self.message,
                details: self.details,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> ApiError {
        match error {
            StoreError::NotFound(id) => {
                ApiError::not_found("deployment", format!("deployment {id} not found"))
            }
            StoreError::UnknownVersion { app, version } => ApiError::not_found(
                "version",
                format!("version {version} of app {app} not found"),
            ),
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "store unavailable");
                ApiError::unavailable("the store is unavailable; try again shortly")
            }
            other => {
                tracing::error!(error = %other, "store error");
                ApiError::internal()
            }
        }
    }
}

impl From<TargetError> for ApiError {
    fn from(error: TargetError) -> ApiError {
        match error {
            TargetError::Rejected(rejection) => rejection.into(),
            TargetError::Unavailable(unavailable) => unavailable.into(),
            // Not forwarded (no address, or forwarded once already): the
            // owner's lease lapses or it answers again soon.
            TargetError::Elsewhere(elsewhere) => ApiError::unavailable(format!(
                "{elsewhere}, which cannot take the request now; try again shortly"
            )),
        }
    }
}

impl From<Rejection> for ApiError {
    fn from(rejection: Rejection) -> ApiError {
        match rejection {
            Rejection::InProgress(holder) => ApiError::new(
                StatusCode::CONFLICT,
                "deploy_in_progress",
                format!(
                    "{}/{} is busy: deployment {} by {} is {}",
                    holder.app, holder.cluster, holder.id, holder.deployed_by, holder.state
                ),
            )
            .with_details(json!({
                "deployment_id": holder.id,
                "state": holder.state,
                "deployed_by": holder.deployed_by,
                "started_at": holder.started_at.unwrap_or(holder.created_at),
            })),
            Rejection::NotFound { kind, what } => {
                ApiError::not_found(kind, format!("{kind} {what} not found"))
            }
            Rejection::InvalidTransition { from, to } => ApiError::new(
                StatusCode::CONFLICT,
                "invalid_transition",
                format!("a deployment in state {from} cannot become {to}"),
            )
            .with_details(json!({ "from": from, "to": to })),
            Rejection::IdempotencyMismatch => ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_mismatch",
                "this idempotency key was already used for a different request",
            ),
        }
    }
}

impl From<Unavailable> for ApiError {
    fn from(unavailable: Unavailable) -> ApiError {
        match unavailable {
            Unavailable::Store(e) => e.into(),
            Unavailable::Actor(cause) => {
                tracing::warn!(%cause, "target unavailable");
                ApiError::unavailable("the target is unavailable; try again shortly")
            }
            Unavailable::Degraded { retry_after } => ApiError::unavailable(format!(
                "the target is degraded after repeated actor crashes; try again in {}s",
                retry_after.as_secs().max(1)
            ))
            .with_details(json!({ "reason": "degraded", "retry_after_seconds": retry_after.as_secs().max(1) })),
            Unavailable::Retry => ApiError::unavailable("the target is restarting; try again"),
        }
    }
}

/// A bad name, digest or version: a 400 naming the field it came from.
impl From<NameError> for ApiError {
    fn from(error: NameError) -> ApiError {
        ApiError::invalid(error.field(), error.to_string())
    }
}

impl From<SourceError> for ApiError {
    fn from(error: SourceError) -> ApiError {
        match error {
            SourceError::InvalidDigest(_) => {
                ApiError::invalid("sha256", "the digest must be 64 lowercase hex characters")
            }
            SourceError::DigestMismatch { expected, actual } => ApiError::invalid(
                "sha256",
                format!("the body's sha256 is {actual}, not {expected}"),
            ),
            SourceError::TooLarge { limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the source is larger than the limit of {limit} bytes"),
            )
            .with_details(json!({ "limit": limit })),
            SourceError::TooManyEntries { limit } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the source has more than the limit of {limit} entries"),
            )
            .with_details(json!({ "limit": limit })),
            SourceError::Unsafe { path, reason } => ApiError::invalid(
                "source",
                format!("the source has an unsafe entry {path:?}: {reason}"),
            ),
            SourceError::Corrupt(reason) => {
                ApiError::invalid("source", format!("the source is not a valid tar: {reason}"))
            }
            SourceError::Body(reason) => {
                ApiError::invalid("body", format!("the upload broke off: {reason}"))
            }
            // Extraction's errors; a request meets them only as a 404.
            e @ (SourceError::Missing(_) | SourceError::ChangedOnDisk(_)) => {
                ApiError::not_found("source", e.to_string())
            }
            SourceError::Io(e) => {
                tracing::error!(error = %e, "source storage failed");
                ApiError::internal()
            }
        }
    }
}
