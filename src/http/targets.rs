//! The target view and an app's versions.

use super::deployments::{check_params, check_target, parse_limit};
use super::{ApiError, ApiPath, ApiQuery, AppState, Caller, check_name};
use crate::config::Role;
use crate::model::{TargetView, VersionsPage};
use crate::store::version_number;
use axum::Json;
use axum::extract::State;

pub async fn target(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath((app, cluster)): ApiPath<(String, String)>,
) -> Result<Json<TargetView>, ApiError> {
    check_target(&state, &caller, Role::Read, &app, &cluster)?;
    Ok(Json(state.shared.store.target(&app, &cluster).await?))
}

/// Versions belong to the app, not to a cluster: any token that may read
/// the app on some cluster may list them.
pub async fn versions(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(app): ApiPath<String>,
    ApiQuery(params): ApiQuery,
) -> Result<Json<VersionsPage>, ApiError> {
    check_name("app", &app)?;
    caller.may_app(Role::Read, &app)?;
    check_params(&params, &["limit", "cursor"])?;
    let before = match params.get("cursor") {
        Some(cursor) => Some(version_number(cursor).ok_or_else(|| {
            ApiError::invalid("cursor", "the cursor is not one this server handed out")
        })?),
        None => None,
    };
    let page = state
        .shared
        .store
        .versions(&app, before, parse_limit(&params)?)
        .await?;
    Ok(Json(VersionsPage {
        versions: page.items,
        next_cursor: page.next.map(|n| format!("v{n}")),
    }))
}
