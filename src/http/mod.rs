//! The HTTP API of API.md: the router on one screen, one file per resource.
//!
//! Handlers validate input, then call the supervisor's handles or read the
//! store; they never change a deployment themselves. Every route runs behind
//! [`browser::guard`] (no cross-site or DNS-rebinding request gets through),
//! every `/v1` route behind [`auth::authenticate`] and each handler asks the [`Caller`] before it
//! acts; `/healthz` and `/readyz` are open. What must stay true: nothing is
//! written when a request is answered with an error, and every error, axum's
//! own rejections included, has API.md's one shape.

mod admin;
pub mod auth;
mod browser;
mod catalog;
mod deployments;
mod error;
pub mod forward;
mod ops;
mod sources;
mod stream;
mod targets;

#[cfg(test)]
mod proptests;

pub use auth::Caller;
pub use catalog::MAX_TARGETS;
pub use error::ApiError;

use crate::daemon::Daemon;
use crate::supervisor::SupervisorHandle;
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post, put};
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::sync::Arc;

/// Largest JSON request body accepted.
const JSON_BODY_LIMIT: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub shared: Arc<Daemon>,
    pub supervisor: SupervisorHandle,
}

impl AppState {
    /// The daemon's metrics, which `GET /metrics` renders.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.shared.metrics
    }
}

pub fn router(state: AppState) -> Router {
    let tokens = Arc::new(auth::Tokens::from_config(&state.shared.config.auth));
    let api = Router::new()
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
        .route("/v1/clusters", get(catalog::clusters))
        .route("/v1/apps", get(catalog::apps))
        .route("/v1/apps/{app}/deployments", get(deployments::history))
        .route("/v1/apps/{app}/versions", get(targets::versions))
        .route(
            "/v1/apps/{app}/versions/{version}/pin",
            post(targets::pin).delete(targets::unpin),
        )
        .route("/v1/deployments/{id}", get(deployments::get))
        .route("/v1/deployments/{id}/cancel", post(deployments::cancel))
        .route("/v1/deployments/{id}/events", get(stream::events))
        .route("/v1/supervisor", get(ops::supervisor))
        .route("/v1/instances", get(ops::instances))
        .route("/v1/admin/compact", post(admin::compact))
        .route_layer(axum::middleware::from_fn_with_state(
            tokens,
            auth::authenticate,
        ));
    let config = &state.shared.config;
    let policy = Arc::new(browser::Policy {
        loopback_hosts_only: config.auth.tokens.is_empty(),
        allowed_origins: (config.server.allowed_origins.iter())
            .map(|o| o.trim_end_matches('/').to_ascii_lowercase())
            .collect(),
    });
    Router::new()
        .merge(api)
        .route("/v1/peers/sources/{sha256}", get(sources::peer_get))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(policy, browser::guard))
        .layer(axum::middleware::map_response_with_state(
            state.shared.instance.clone(),
            forward::sign,
        ))
        .with_state(state)
}

/// Path parameters; a path that does not decode is a 400 in our shape.
pub(crate) struct ApiPath<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(ApiPath(value)),
            Err(rejection) => Err(ApiError::invalid("path", rejection.body_text())),
        }
    }
}

/// Query parameters as text; a query that does not decode is a 400 in our
/// shape. Handlers refuse unknown keys with `check_params`.
pub(crate) struct ApiQuery(pub HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for ApiQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        type Params = axum::extract::Query<HashMap<String, String>>;
        match Params::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(params)) => Ok(ApiQuery(params)),
            Err(rejection) => Err(ApiError::invalid("query", rejection.body_text())),
        }
    }
}

/// A JSON request body of at most [`JSON_BODY_LIMIT`] bytes, parsed by
/// [`parse_json`]. The request must say `Content-Type: application/json`,
/// unless it has no body at all: a browser may send `text/plain` or a form
/// to any site without asking, never JSON, so this is what keeps a web page
/// from driving deployd (415 otherwise). With the bytes it was read from, to
/// forward them ([`forward`]).
pub(crate) async fn json_request<T: DeserializeOwned>(
    headers: &HeaderMap,
    body: Body,
) -> Result<(T, Bytes), ApiError> {
    let content_type = headers.get(header::CONTENT_TYPE);
    let is_json = content_type
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    let bytes = read_body(body).await?;
    if !is_json && (content_type.is_some() || !bytes.is_empty()) {
        let given = content_type
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_else(|| "none".to_string());
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("this endpoint takes Content-Type: application/json (got {given:?})"),
        ));
    }
    Ok((parse_json(&bytes)?, bytes))
}

/// Read a request body of at most [`JSON_BODY_LIMIT`] bytes.
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, JSON_BODY_LIMIT)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the request body is larger than {JSON_BODY_LIMIT} bytes, or broke off"),
            )
        })
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        .with_details(serde_json::json!({ "kind": "endpoint" }))
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}

/// A JSON object body, strictly: unknown fields and malformed JSON are 400s whose
/// `details.field` names the offending field (`body` when no field is to
/// blame). An empty body reads as `{}` where `T` allows it.
pub(crate) fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    // serde would also read a struct from an array; API.md's bodies are objects.
    if body.trim_ascii_start().first() != Some(&b'{') {
        return Err(ApiError::invalid("body", "the body must be a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let value = serde_path_to_error::deserialize(&mut deserializer).map_err(|e| {
        // The path ends at the bad field, or at the unknown key itself.
        let path = e.path().to_string();
        let inner = e.into_inner();
        let message = inner.to_string();
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|rest| rest.split('`').next());
        let field = match missing {
            Some(name) if path == "." => name.to_string(),
            Some(name) => format!("{path}.{name}"),
            None if inner.is_data() && !path.is_empty() && path != "." => path,
            None => "body".to_string(),
        };
        json_error(&field, &inner)
    })?;
    deserializer.end().map_err(|e| json_error("body", &e))?;
    Ok(value)
}

fn json_error(field: &str, error: &serde_json::Error) -> ApiError {
    ApiError::invalid(
        field,
        format!("invalid JSON body: {}", clip(&error.to_string())),
    )
}

/// Error messages echo parts of the request; keep them short.
fn clip(text: &str) -> String {
    const MAX: usize = 300;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_the_field() {
        use crate::model::DeployRequest;
        let field = |body: &str| {
            let error = parse_json::<DeployRequest>(body.as_bytes()).unwrap_err();
            assert_eq!(
                (error.status, error.code),
                (StatusCode::BAD_REQUEST, "invalid_argument")
            );
            error.details["field"].as_str().unwrap().to_string()
        };
        let sha = "0".repeat(64);
        assert_eq!(
            field(&format!(r#"{{"source":"{sha}","bogus":1}}"#)),
            "bogus"
        );
        assert_eq!(
            field(&format!(r#"{{"source":"{sha}","on_conflict":"never"}}"#)),
            "on_conflict"
        );
        assert_eq!(
            field(&format!(
                r#"{{"source":"{sha}","git":{{"sha":"x","x":1}}}}"#
            )),
            "git.x"
        );
        assert_eq!(field(r#"{"source": 7}"#), "source");
        assert_eq!(field("{}"), "source");
        assert_eq!(field(r#"{"source": "#), "body");
        assert_eq!(field(&format!(r#"{{"source":"{sha}"}} trailing"#)), "body");
        assert!(
            parse_json::<crate::model::CancelRequest>(b"  ").is_ok(),
            "blank is {{}}"
        );
    }
}
