//! What the caller may act on: the configured clusters (`GET /v1/clusters`)
//! and the apps with deployments (`GET /v1/apps`), each filtered by the
//! caller's scope.
//!
//! What must stay true: no secret leaves here (env values never, argv
//! through the config's redactor), and a token sees only the clusters and
//! targets it may read.

use super::{ApiError, ApiQuery, AppState, Caller};
use crate::config::{ClusterConfig, Role};
use crate::model::{AppSummary, AppTarget, AppsView, ClusterInfo, ClustersView, StepInfo};
use crate::redact::Redactor;
use axum::Json;
use axum::extract::State;

/// Most targets one `GET /v1/apps` answer reads from the store, before the
/// caller's scope filters them; more sets `truncated`.
pub const MAX_TARGETS: u32 = 1000;

pub async fn clusters(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery,
) -> Result<Json<ClustersView>, ApiError> {
    super::deployments::check_params(&params, &[])?;
    caller.may_any_app(Role::Read)?;
    let config = &state.shared.config;
    let redactor = Redactor::of(config);
    let clusters = (config.clusters.iter())
        .filter(|(name, _)| caller.may_cluster(name))
        .map(|(name, cluster)| cluster_info(name, cluster, &redactor))
        .collect();
    Ok(Json(ClustersView { clusters }))
}

pub async fn apps(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(params): ApiQuery,
) -> Result<Json<AppsView>, ApiError> {
    super::deployments::check_params(&params, &[])?;
    caller.may_any_app(Role::Read)?;
    let mut targets = state.shared.store.target_summaries(MAX_TARGETS + 1).await?;
    let truncated = targets.len() > MAX_TARGETS as usize;
    targets.truncate(MAX_TARGETS as usize);
    let mut apps: Vec<AppSummary> = Vec::new();
    // The store lists targets by app then cluster: each app's are together.
    for target in targets {
        // A cluster taken out of the config has history no route serves.
        let configured = state.shared.config.clusters.contains_key(&target.cluster);
        if !configured
            || caller
                .may(Role::Read, &target.app, Some(&target.cluster))
                .is_err()
        {
            continue;
        }
        let entry = AppTarget {
            cluster: target.cluster,
            active_version: target.active_version,
            running: target.running,
        };
        match apps.last_mut() {
            Some(last) if last.app == target.app => last.targets.push(entry),
            _ => apps.push(AppSummary {
                app: target.app,
                targets: vec![entry],
            }),
        }
    }
    Ok(Json(AppsView { apps, truncated }))
}

fn cluster_info(name: &str, cluster: &ClusterConfig, redactor: &Redactor) -> ClusterInfo {
    let phases = [
        ("build", &cluster.build),
        ("push", &cluster.push),
        ("activate", &cluster.activate),
        ("cleanup", &cluster.cleanup),
    ];
    let steps = phases
        .into_iter()
        .filter_map(|(phase, step)| {
            let step = step.as_ref()?;
            Some(StepInfo {
                phase: phase.to_string(),
                run: (step.run.iter())
                    .map(|arg| redactor.redact(arg).into_owned())
                    .collect(),
                timeout_seconds: step.timeout.as_secs(),
            })
        })
        .collect();
    ClusterInfo {
        name: name.to_string(),
        steps,
        env: cluster.env.keys().cloned().collect(),
        user: cluster.user.as_ref().map(|user| user.name().to_string()),
    }
}
