//! The target view and an app's versions: listing them, and pinning one so
//! that compaction never deletes it.

use super::deployments::{check_params, check_target, parse_limit};
use super::{ApiError, ApiPath, ApiQuery, AppState, Caller};
use crate::config::Role;
use crate::model::{TargetView, VersionInfo, VersionsPage};
use crate::names::{AppName, Target, Version};
use axum::Json;
use axum::extract::State;

pub async fn target(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app, cluster)): ApiPath<(String, String)>,
) -> Result<Json<TargetView>, ApiError> {
    let Target { app, cluster } = check_target(&state, &caller, Role::Read, &app, &cluster)?;
    let view = state
        .shared
        .store
        .target(app.as_str(), cluster.as_str())
        .await?;
    Ok(Json(view))
}

/// Versions belong to the app, not to a cluster: any token that may read
/// the app on some cluster may list them.
pub async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app): ApiPath<String>,
    ApiQuery(params): ApiQuery,
) -> Result<Json<VersionsPage>, ApiError> {
    let app: AppName = app.parse()?;
    caller.may_app(Role::Read, app.as_str())?;
    check_params(&params, &["limit", "cursor"])?;
    let before = match params.get("cursor") {
        Some(cursor) => Some(cursor.parse::<Version>().map(|v| v.number()).map_err(|_| {
            ApiError::invalid("cursor", "the cursor is not one this server handed out")
        })?),
        None => None,
    };
    let page = state
        .shared
        .store
        .versions(app.as_str(), before, parse_limit(&params)?)
        .await?;
    Ok(Json(VersionsPage {
        versions: page.items,
        next_cursor: page.next.map(|n| format!("v{n}")),
    }))
}

/// `POST /v1/apps/{app}/versions/{version}/pin`: compaction never deletes a
/// pinned version. Like the listing, a version belongs to the app, so a
/// deploy token of the app may pin it whatever its clusters. Pinning a
/// pinned version changes nothing and answers the same.
pub async fn pin(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app, version)): ApiPath<(String, String)>,
) -> Result<Json<VersionInfo>, ApiError> {
    set_pinned(&state, &caller, &app, &version, true).await
}

/// `DELETE /v1/apps/{app}/versions/{version}/pin`: retention decides about
/// the version again. Unpinning an unpinned version changes nothing.
pub async fn unpin(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app, version)): ApiPath<(String, String)>,
) -> Result<Json<VersionInfo>, ApiError> {
    set_pinned(&state, &caller, &app, &version, false).await
}

async fn set_pinned(
    state: &AppState,
    caller: &Caller,
    app: &str,
    version: &str,
    pinned: bool,
) -> Result<Json<VersionInfo>, ApiError> {
    let app: AppName = app.parse()?;
    caller.may_app(Role::Deploy, app.as_str())?;
    let version: Version = version.parse()?;
    let info = state
        .shared
        .store
        .pin(app.as_str(), version.as_str(), pinned)
        .await?;
    Ok(Json(info))
}
