//! The target view and an app's versions.

use super::deployments::{check_params, parse_limit};
use super::{ApiError, AppState, check_name};
use crate::model::{TargetView, VersionsPage};
use crate::store::version_number;
use axum::Json;
use axum::extract::{Path, Query, State};
use std::collections::HashMap;

pub async fn target(
    State(state): State<AppState>,
    Path((app, cluster)): Path<(String, String)>,
) -> Result<Json<TargetView>, ApiError> {
    super::deployments::check_target(&state, &app, &cluster)?;
    Ok(Json(state.shared.store.target(&app, &cluster).await?))
}

pub async fn versions(
    State(state): State<AppState>,
    Path(app): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Result<Json<VersionsPage>, ApiError> {
    check_name("app", &app)?;
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
