//! The HTTP API of API.md: the router on one screen, one file per resource.
//!
//! Handlers validate input, then call the supervisor's handles or read the
//! store; they never change a deployment themselves. What must stay true:
//! nothing is written when a request is answered with an error.

mod admin;
mod deployments;
mod error;
mod ops;
mod sources;
mod stream;
mod targets;

pub use error::ApiError;

use crate::app_actor::Shared;
use crate::supervisor::SupervisorHandle;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::routing::{get, post, put};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// Largest JSON request body accepted.
const JSON_BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub shared: Arc<Shared>,
    pub supervisor: SupervisorHandle,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/v1/sources/{sha256}",
            put(sources::put).head(sources::head),
        )
        .route(
            "/v1/apps/{app}/clusters/{cluster}/deployments",
            post(deployments::deploy),
        )
        .route(
            "/v1/apps/{app}/clusters/{cluster}/rollbacks",
            post(deployments::rollback),
        )
        .route("/v1/apps/{app}/clusters/{cluster}", get(targets::target))
        .route("/v1/apps/{app}/deployments", get(deployments::history))
        .route("/v1/apps/{app}/versions", get(targets::versions))
        .route("/v1/deployments/{id}", get(deployments::get))
        .route("/v1/deployments/{id}/cancel", post(deployments::cancel))
        .route("/v1/deployments/{id}/events", get(stream::events))
        .route("/v1/supervisor", get(ops::supervisor))
        .route("/v1/admin/compact", post(admin::compact))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .with_state(state)
}

/// Read a JSON request body of at most [`JSON_BODY_LIMIT`] bytes.
pub(crate) async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, JSON_BODY_LIMIT)
        .await
        .map_err(|_| {
            ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is larger than {JSON_BODY_LIMIT} bytes, or broke off"),
            )
        })
}

async fn not_found() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint",
    )
    .with_details(serde_json::json!({ "kind": "endpoint" }))
}

/// App and cluster names: `^[a-z0-9][a-z0-9-]{0,62}$`.
pub fn valid_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

pub(crate) fn check_name(field: &str, name: &str) -> Result<(), ApiError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("{field} {name:?} must match ^[a-z0-9][a-z0-9-]{{0,62}}$"),
        ))
    }
}

/// A JSON body, strictly: unknown fields and malformed JSON are 400s that say
/// what is wrong. An empty body reads as `{}` where `T` allows it.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| {
        let field = e.to_string();
        let field = field
            .split('`')
            .nth(1)
            .filter(|_| e.is_data())
            .unwrap_or("body")
            .to_string();
        ApiError::invalid(&field, format!("invalid JSON body: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_api_pattern() {
        for good in ["web", "a", "0", "my-app-2", &"a".repeat(63)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "-web",
            "Web",
            "we_b",
            "a/b",
            "..",
            "web.",
            &"a".repeat(64),
            "wéb",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
