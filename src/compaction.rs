//! Retention: every `deploy.compact_every`, delete what
//! [`Store::compact`](crate::store::Store::compact) no longer keeps, in
//! small batches, settle what the deletions owe the clusters (release
//! directories, cleanup steps: [`cleanup`]), then [`sweep`] the data dir.
//! [`plan`] answers the same question without deleting anything.
//!
//! What must stay true:
//! - the store decides what goes; this job only repeats its short steps (no
//!   long transaction, no long lock) and cleans up after them;
//! - retention counts releases you can go back to, not attempts: a target's
//!   active version and the one before it are never deleted, whatever the
//!   settings;
//! - only what the data dir's layout names is removed ([`remove`]).

pub mod cleanup;
mod remove;
pub mod sweep;

use crate::config::DeployConfig;
use crate::daemon::Daemon;
use crate::machine::State;
use crate::store::{
    CompactionPlan, DeletedVersion, PlannedDeployment, PlannedVersion, Retention, StoreError,
};
use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sweep::Removal;
use tokio_util::sync::CancellationToken;

/// Deployments (and versions) one store step deletes at most.
pub const BATCH: u32 = 500;

/// Deployments (and versions) a dry run lists at most.
pub const PLAN_LIMIT: u32 = 1000;

/// What one compaction run deleted and removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub deployments_deleted: u64,
    /// Versions deleted, with their artifacts.
    pub versions_deleted: Vec<DeletedVersion>,
    /// Entries of the data dir swept because no record needs them.
    pub removed: Vec<Removal>,
}

/// What a compaction run would delete now, and why: the dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub dry_run: bool,
    pub deployments: Vec<Planned<PlannedDeployment>>,
    pub versions: Vec<Planned<PlannedVersion>>,
    /// Entries of the data dir the sweep would remove.
    pub removed: Vec<Removal>,
}

/// One item of a [`Plan`], with the reason it would go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Planned<T> {
    #[serde(flatten)]
    pub item: T,
    pub why: String,
}

/// The retention policy `deploy` sets, judged at `now`.
pub fn policy(deploy: &DeployConfig, now: chrono::DateTime<chrono::Utc>) -> Retention {
    let age = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    Retention {
        keep_releases: deploy.keep_releases,
        keep_attempts: deploy.keep_attempts,
        min_age: age(deploy.keep_min_age),
        attempts_min_age: age(deploy.keep_attempts_min_age),
        now,
    }
}

/// Compact every `every` until `stop`; the first run is `every` after start.
pub async fn run(daemon: Arc<Daemon>, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = compact_once(&daemon).await {
            tracing::warn!(error = %e, "compaction failed; will try again");
        }
    }
}

/// One full compaction: store steps until one deletes nothing, each step's
/// versions' release directories removed (and their cleanup steps run)
/// before the next, then a sweep of the data dir. Judged against the time
/// it started, so it ends even while new deployments arrive.
pub async fn compact_once(daemon: &Daemon) -> Result<Report, StoreError> {
    let started = Instant::now();
    let policy = policy(&daemon.config.deploy, chrono::Utc::now());
    let metrics = &daemon.metrics;
    let mut total = Report::default();
    let outcome = loop {
        let step = match daemon.store.compact(&policy, BATCH).await {
            Ok(step) => step,
            Err(e) => break Err(e),
        };
        if step.is_empty() {
            break Ok(());
        }
        metrics.compaction_deleted(step.deployments_deleted, step.versions_deleted.len() as u64);
        total.deployments_deleted += step.deployments_deleted;
        total.versions_deleted.extend(step.versions_deleted);
    };
    // What the deletions owe the clusters (release directories, cleanup
    // steps), and what earlier runs could not finish; then the sweep.
    let outcome = match outcome {
        Ok(()) => settle_and_sweep(daemon).await.map(|removed| {
            total.removed = removed;
        }),
        Err(e) => Err(e),
    };
    let secs = started.elapsed().as_secs_f64();
    metrics.compaction_run(outcome.is_ok(), secs);
    if total != Report::default() {
        tracing::info!(
            deployments = total.deployments_deleted,
            versions = total.versions_deleted.len(),
            removed = total.removed.len(),
            secs,
            "compaction deleted what retention no longer keeps"
        );
    }
    outcome.map(|()| total)
}

/// Settle the cleanups owed to clusters, then sweep the data dir: what
/// compaction does after deleting, and what start-up does after a crash.
pub async fn settle_and_sweep(daemon: &Daemon) -> Result<Vec<Removal>, StoreError> {
    cleanup::settle_owed(daemon).await?;
    sweep::sweep(daemon, false, &[]).await
}

/// What [`compact_once`] would delete and remove now, each with its reason;
/// nothing is changed.
pub async fn plan(daemon: &Daemon) -> Result<Plan, StoreError> {
    let deploy = &daemon.config.deploy;
    let policy = policy(deploy, chrono::Utc::now());
    let CompactionPlan {
        deployments,
        versions,
    } = daemon.store.compaction_plan(&policy, PLAN_LIMIT).await?;
    let deleting: Vec<uuid::Uuid> = deployments.iter().map(|d| d.id).collect();
    let going: std::collections::HashSet<(String, String)> = versions
        .iter()
        .map(|v| (v.app.clone(), v.version.clone()))
        .collect();
    let deployments = deployments
        .into_iter()
        .map(|d| {
            let why = deployment_reason(deploy, &d, &going);
            Planned { item: d, why }
        })
        .collect();
    let versions = versions
        .into_iter()
        .map(|v| {
            let why = version_reason(deploy, &v);
            Planned { item: v, why }
        })
        .collect();
    let removed = sweep::sweep(daemon, true, &deleting).await?;
    Ok(Plan {
        dry_run: true,
        deployments,
        versions,
        removed,
    })
}

fn deployment_reason(
    deploy: &DeployConfig,
    d: &PlannedDeployment,
    going: &std::collections::HashSet<(String, String)>,
) -> String {
    let target = format!("{}/{}", d.app, d.cluster);
    match (&d.version, d.state) {
        (_, State::Failed | State::Cancelled | State::Interrupted) => format!(
            "{} without going live: older than the newest {} such attempts on {target} \
             (deploy.keep_attempts) and than deploy.keep_attempts_min_age ({})",
            d.state,
            deploy.keep_attempts,
            humantime::format_duration(deploy.keep_attempts_min_age)
        ),
        (Some(version), _) if going.contains(&(d.app.clone(), version.clone())) => {
            format!("its version {version} is deleted")
        }
        (Some(version), _) => format!(
            "an earlier activation of {version} on {target}; the one that last made it \
             active is kept"
        ),
        (None, _) => format!("ended on {target} with no version"),
    }
}

fn version_reason(deploy: &DeployConfig, v: &PlannedVersion) -> String {
    if v.live_on.is_empty() {
        return "never live on any cluster, and no kept deployment has it".to_string();
    }
    format!(
        "was live on {}, but is not among the newest {} there (deploy.keep_releases), \
         not active, not the one before the active one and not pinned",
        v.live_on.join(", "),
        deploy.keep_releases.max(2)
    )
}
