//! Deploy, rollback, read, list and cancel deployments.

use super::forward::{self, Original};
use super::stream::progress;
use super::{ApiError, ApiPath, ApiQuery, AppState, Caller, json_request};
use crate::config::Role;
use crate::machine::{Kind, State as Phase};
use crate::model::{
    CancelRequest, DeployRequest, Deployment, DeploymentRef, GitInfo, HistoryPage, RollbackRequest,
    short_id,
};
use crate::names::{AppName, ClusterName, SourceDigest, Target, Version};
use crate::store::{HistoryQuery, MAX_PAGE};
use crate::target::{Rejection, Submit, Submitted, TargetError};
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use uuid::Uuid;

/// API.md's limits on free text in requests.
const MAX_MESSAGE_BYTES: usize = 1024;
const MAX_GIT_FIELD_BYTES: usize = 1024;
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
const DEFAULT_PAGE: u32 = 20;
/// Most candidates a 409 `ambiguous` lists.
const MAX_CANDIDATES: usize = 10;
/// Most deployments a short-id prefix reads before the caller's scope
/// filters them. Six hex digits are 24 random bits: only ids minted in the
/// same millisecond (the UUIDv7 counter) share one by design, so 100 is
/// far more than any real prefix matches.
const PREFIX_READ: u32 = 100;

pub async fn deploy(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app, cluster)): ApiPath<(String, String)>,
    (method, uri): (Method, Uri),
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Target { app, cluster } = check_target(&state, &caller, Role::Deploy, &app, &cluster)?;
    let (request, bytes): (DeployRequest, _) = json_request(&headers, body).await?;
    let source: SourceDigest = request.source.parse()?;
    check_text(
        "message",
        request.message.as_deref(),
        MAX_MESSAGE_BYTES,
        Lines::Many,
    )?;
    check_git(request.git.as_ref())?;
    check_text(
        "idempotency_key",
        request.idempotency_key.as_deref(),
        MAX_IDEMPOTENCY_KEY_BYTES,
        Lines::One,
    )?;
    if !state.shared.sources.keep(source.as_str())
        && !crate::instance::fetch_source(&state.shared, source.as_str()).await
    {
        return Err(ApiError::not_found(
            "source",
            format!(
                "source {} is not on the server; upload it with PUT /v1/sources/{}",
                request.source, request.source
            ),
        ));
    }
    let submit = Submit {
        kind: Kind::Deploy,
        request_hash: fingerprint(&(
            &app,
            &cluster,
            &request.source,
            &request.git,
            &request.message,
            &request.on_conflict,
        )),
        source: Some(request.source),
        version: None,
        git: request.git,
        message: request.message.unwrap_or_default(),
        deployed_by: caller.name,
        policy: request
            .on_conflict
            .unwrap_or(state.shared.config.deploy.on_conflict),
        idempotency_key: request.idempotency_key,
    };
    let original = Original {
        method,
        uri,
        headers,
        body: bytes,
    };
    submit_and_answer(&state, &app, &cluster, submit, original).await
}

pub async fn rollback(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app, cluster)): ApiPath<(String, String)>,
    (method, uri): (Method, Uri),
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let Target { app, cluster } = check_target(&state, &caller, Role::Deploy, &app, &cluster)?;
    let (request, bytes): (RollbackRequest, _) = json_request(&headers, body).await?;
    if let Some(version) = &request.version {
        version.parse::<Version>()?;
    }
    check_text(
        "message",
        request.message.as_deref(),
        MAX_MESSAGE_BYTES,
        Lines::Many,
    )?;
    check_text(
        "idempotency_key",
        request.idempotency_key.as_deref(),
        MAX_IDEMPOTENCY_KEY_BYTES,
        Lines::One,
    )?;
    let submit = Submit {
        kind: Kind::Rollback,
        request_hash: fingerprint(&(
            &app,
            &cluster,
            &request.version,
            &request.message,
            &request.on_conflict,
        )),
        source: None,
        version: request.version,
        git: None,
        message: request.message.unwrap_or_default(),
        deployed_by: caller.name,
        policy: request
            .on_conflict
            .unwrap_or(state.shared.config.deploy.on_conflict),
        idempotency_key: request.idempotency_key,
    };
    let original = Original {
        method,
        uri,
        headers,
        body: bytes,
    };
    submit_and_answer(&state, &app, &cluster, submit, original).await
}

/// Hand the request to the target's actor; answer with the deployment, or
/// with its progress stream when the client asked for one. When another
/// instance owns the target, it answers instead ([`forward::to_owner`]).
async fn submit_and_answer(
    state: &AppState,
    app: &AppName,
    cluster: &ClusterName,
    submit: Submit,
    original: Original,
) -> Result<Response, ApiError> {
    let submitted = state
        .supervisor
        .submit(app.as_str(), cluster.as_str(), submit)
        .await;
    let Submitted {
        deployment,
        repeated,
    } = match submitted {
        Err(TargetError::Elsewhere(owner)) => {
            return forward::to_owner(state, &owner, original).await;
        }
        other => other?,
    };
    let headers = &original.headers;
    let status = if repeated {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    if wants_stream(headers) {
        return Ok((status, progress(state, deployment.id, 0)).into_response());
    }
    Ok((status, Json(deployment)).into_response())
}

pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(reference): ApiPath<String>,
) -> Result<Json<Deployment>, ApiError> {
    Ok(Json(
        resolve(&state, &caller, Role::Read, &reference).await?,
    ))
}

pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(reference): ApiPath<String>,
    (method, uri): (Method, Uri),
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let reference = parse_ref(&reference)?;
    let (request, bytes): (CancelRequest, _) = json_request(&headers, body).await?;
    check_text(
        "reason",
        request.reason.as_deref(),
        MAX_MESSAGE_BYTES,
        Lines::One,
    )?;
    let deployment = find_ref(&state, &caller, Role::Deploy, reference).await?;
    let id = deployment.id;
    if deployment.state.is_terminal() {
        let refused = Rejection::InvalidTransition {
            from: deployment.state,
            to: Phase::Cancelled,
        };
        return Err(refused.into());
    }
    let cancelled = state
        .supervisor
        .cancel(&deployment.app, &deployment.cluster, id, request.reason)
        .await;
    match cancelled {
        Ok(cancelled) => Ok(Json(cancelled).into_response()),
        Err(TargetError::Elsewhere(owner)) => {
            // The owner gets the id resolved here, not the short id: what
            // it cancels is what this instance checked.
            let path = format!("/v1/deployments/{id}/cancel");
            let uri = match uri.query() {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            let original = Original {
                method,
                uri: uri.parse().expect("a path with a uuid is a URI"),
                headers,
                body: bytes,
            };
            forward::to_owner(&state, &owner, original).await
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn history(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app): ApiPath<String>,
    ApiQuery(params): ApiQuery,
) -> Result<Json<HistoryPage>, ApiError> {
    let app: AppName = app.parse()?;
    check_params(&params, &["cluster", "state", "limit", "cursor"])?;
    let cluster: Option<ClusterName> = params.get("cluster").map(|c| c.parse()).transpose()?;
    caller.may(
        Role::Read,
        app.as_str(),
        cluster.as_ref().map(ClusterName::as_str),
    )?;
    if let Some(cluster) = &cluster {
        check_configured(&state, cluster.as_str())?;
    }
    let phase = match params.get("state") {
        Some(s) => Some(
            s.parse::<Phase>()
                .map_err(|_| ApiError::invalid("state", format!("unknown state {s:?}")))?,
        ),
        None => None,
    };
    let before = match params.get("cursor") {
        Some(cursor) => Some(decode_cursor(cursor)?),
        None => None,
    };
    let query = HistoryQuery {
        app: app.into(),
        cluster: cluster.map(String::from),
        state: phase,
        limit: parse_limit(&params)?,
        before,
    };
    let page = state.shared.store.history(&query).await?;
    Ok(Json(HistoryPage {
        deployments: page.items,
        next_cursor: page.next.map(|id| id.simple().to_string()),
    }))
}

/// `limit` per API.md: 1..=500, default 20.
pub(super) fn parse_limit(params: &HashMap<String, String>) -> Result<u32, ApiError> {
    let Some(text) = params.get("limit") else {
        return Ok(DEFAULT_PAGE);
    };
    match text.parse::<u32>() {
        Ok(limit) if (1..=MAX_PAGE).contains(&limit) => Ok(limit),
        _ => Err(ApiError::invalid(
            "limit",
            format!("limit must be a whole number from 1 to {MAX_PAGE}"),
        )),
    }
}

/// Unknown query parameters are refused, not ignored.
pub(super) fn check_params(
    params: &HashMap<String, String>,
    known: &[&str],
) -> Result<(), ApiError> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(ApiError::invalid(
            unknown,
            format!("unknown query parameter {unknown:?}"),
        )),
        None => Ok(()),
    }
}

/// A history cursor is the last id of the previous page, in simple hex form.
pub(super) fn decode_cursor(cursor: &str) -> Result<Uuid, ApiError> {
    let invalid = || ApiError::invalid("cursor", "the cursor is not one this server handed out");
    if cursor.len() != 32 {
        return Err(invalid());
    }
    let id = Uuid::try_parse(cursor).map_err(|_| invalid())?;
    if id.get_version_num() != 7 {
        return Err(invalid());
    }
    Ok(id)
}

/// A deployment reference in a path: the full id, or 6 to 19 hex digits of
/// its random part ([`DeploymentRef`]); else 400 naming field `id`.
pub(super) fn parse_ref(text: &str) -> Result<DeploymentRef, ApiError> {
    text.parse()
        .map_err(|message| ApiError::invalid("id", message))
}

/// The deployment `reference` names, if the caller has `role` on it:
/// [`parse_ref`], then [`find_ref`].
pub(super) async fn resolve(
    state: &AppState,
    caller: &Caller,
    role: Role,
    reference: &str,
) -> Result<Deployment, ApiError> {
    find_ref(state, caller, role, parse_ref(reference)?).await
}

/// The deployment `reference` names, if the caller has `role` on it. A full
/// id goes to [`find`]. A prefix counts only the deployments the caller may
/// read: none is 404, one is it (or 403 when the caller may read it but
/// lacks `role`), several is 409 `ambiguous` listing them. A token never
/// learns of a deployment outside its scope this way, not even that one
/// exists: the scope filter comes before the count.
pub(super) async fn find_ref(
    state: &AppState,
    caller: &Caller,
    role: Role,
    reference: DeploymentRef,
) -> Result<Deployment, ApiError> {
    let prefix = match reference {
        DeploymentRef::Id(id) => return find(state, caller, role, id).await,
        DeploymentRef::Prefix(prefix) => prefix,
    };
    let found = state.shared.store.by_short_id(&prefix, PREFIX_READ).await?;
    let mut visible: Vec<Deployment> = found
        .into_iter()
        .filter(|d| caller.may(Role::Read, &d.app, Some(&d.cluster)).is_ok())
        .collect();
    match visible.len() {
        0 => Err(ApiError::not_found(
            "deployment",
            format!("no deployment has a short id starting with {prefix}"),
        )),
        1 => {
            let deployment = visible.remove(0);
            caller.may(role, &deployment.app, Some(&deployment.cluster))?;
            Ok(deployment)
        }
        many => Err(ambiguous(&prefix, many, &visible)),
    }
}

/// 409 `ambiguous`: `count` deployments the caller may read share `prefix`;
/// the first [`MAX_CANDIDATES`] are listed so the caller can pick one.
fn ambiguous(prefix: &str, count: usize, candidates: &[Deployment]) -> ApiError {
    let listed: Vec<serde_json::Value> = (candidates.iter().take(MAX_CANDIDATES))
        .map(|d| {
            serde_json::json!({
                "id": d.id,
                "short_id": short_id(&d.id),
                "app": d.app,
                "cluster": d.cluster,
                "created_at": d.created_at,
            })
        })
        .collect();
    ApiError::new(
        StatusCode::CONFLICT,
        "ambiguous",
        format!(
            "{count} deployments have a short id starting with {prefix}; give more digits \
             of the one you mean, or its full id"
        ),
    )
    .with_details(serde_json::json!({ "prefix": prefix, "candidates": listed }))
}

/// Deployment `id`, if the caller has `role` on its app and cluster. A
/// deployment of another app is 403 (the id exists), and nothing of it is
/// shown.
pub(super) async fn find(
    state: &AppState,
    caller: &Caller,
    role: Role,
    id: Uuid,
) -> Result<Deployment, ApiError> {
    let deployment =
        state.shared.store.get(id).await?.ok_or_else(|| {
            ApiError::not_found("deployment", format!("deployment {id} not found"))
        })?;
    let (app, cluster) = (&deployment.app, Some(deployment.cluster.as_str()));
    if let Err(denied) = caller.may(role, app, cluster) {
        if caller.may(Role::Read, app, cluster).is_ok() {
            return Err(denied); // its own deployment: the role is what is missing
        }
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("token {:?} may not see deployment {id}", caller.name),
        ));
    }
    Ok(deployment)
}

/// The target the path names: both names valid, the caller has `role` on
/// them, and the cluster is configured (checked last, so a caller learns
/// nothing of clusters it may not use).
pub(super) fn check_target(
    state: &AppState,
    caller: &Caller,
    role: Role,
    app: &str,
    cluster: &str,
) -> Result<Target, ApiError> {
    let target = Target::parse(app, cluster)?;
    let (app, cluster) = (target.app.as_str(), target.cluster.as_str());
    caller.may(role, app, Some(cluster))?;
    check_configured(state, cluster)?;
    Ok(target)
}

/// 404 `not_found` (`kind` cluster) unless `cluster` is configured: every
/// route that names a cluster answers the same for one that is not.
pub(super) fn check_configured(state: &AppState, cluster: &str) -> Result<(), ApiError> {
    if state.shared.config.clusters.contains_key(cluster) {
        return Ok(());
    }
    Err(ApiError::not_found(
        "cluster",
        format!("cluster {cluster} is not configured on this server"),
    ))
}

/// Whether a free-text field may span lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lines {
    /// Names, keys, references and reasons: no control character at all.
    One,
    /// Messages (a note, a commit message): `\n` and `\t` are kept, no other
    /// control character.
    Many,
}

/// The one rule for text in requests: at most `max` bytes, and no control
/// character (Unicode's Cc: U+0000–U+001F, U+007F–U+009F) except, in a
/// [`Lines::Many`] field, newline and tab. Such a byte could not be stored
/// by every store (PostgreSQL refuses NUL), would forge lines in a log or a
/// terminal, and is never part of a real name, key or message.
fn check_text(field: &str, text: Option<&str>, max: usize, lines: Lines) -> Result<(), ApiError> {
    let Some(text) = text else { return Ok(()) };
    if text.len() > max {
        return Err(ApiError::invalid(
            field,
            format!("{field} is longer than {max} bytes"),
        ));
    }
    let allowed = |c: char| lines == Lines::Many && matches!(c, '\n' | '\t');
    if let Some(c) = text.chars().find(|&c| c.is_control() && !allowed(c)) {
        let what = match lines {
            Lines::One => "a single line without control characters",
            Lines::Many => "text without control characters other than newline and tab",
        };
        return Err(ApiError::invalid(
            field,
            format!("{field} must be {what}; it contains U+{:04X}", c as u32),
        ));
    }
    Ok(())
}

fn check_git(git: Option<&GitInfo>) -> Result<(), ApiError> {
    let Some(git) = git else { return Ok(()) };
    let fields = [
        ("git.sha", &git.sha, Lines::One),
        ("git.branch", &git.branch, Lines::One),
        ("git.message", &git.message, Lines::Many),
        ("git.author", &git.author, Lines::One),
        ("git.repository", &git.repository, Lines::One),
    ];
    for (field, value, lines) in fields {
        check_text(field, value.as_deref(), MAX_GIT_FIELD_BYTES, lines)?;
    }
    Ok(())
}

fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("text/event-stream"))
}

/// A request's fingerprint, to tell a retry from a different request that
/// reuses an idempotency key.
fn fingerprint(request: &impl serde::Serialize) -> String {
    let bytes = serde_json::to_vec(request).expect("requests serialize");
    hex::encode(Sha256::digest(bytes))
}
