//! The retention part of the contract: what [`Store::compact`] deletes and,
//! above all, what it never deletes.
//!
//! Rather than backdating every row, the tests compact "two days from now"
//! with a one-day minimum age: everything created now is old enough, and a
//! row created at that future instant is the young one.

use super::{create, deploy, log, new_deploy, new_rollback, now, run_to_success, step};
use chrono::Duration;
use deployd::machine::State;
use deployd::model::Deployment;
use deployd::store::{
    CompactionReport, DynStore, HistoryQuery, NewDeployment, Retention, VersionChange,
};
use std::collections::BTreeSet;
use uuid::Uuid;

/// Keep `keep` per target, judged two days from now, minimum age one day.
fn policy(keep: u32) -> Retention {
    Retention {
        keep_releases: keep,
        keep_attempts: keep,
        min_age: Duration::days(1),
        attempts_min_age: Duration::days(1),
        now: now() + Duration::days(2),
    }
}

/// Compact in steps of `batch` until a step deletes nothing; the steps' reports.
async fn compact_all(store: &DynStore, policy: &Retention, batch: u32) -> Vec<CompactionReport> {
    let mut steps = Vec::new();
    loop {
        let step = store.compact(policy, batch).await.expect("compact");
        if step.is_empty() {
            return steps;
        }
        assert!(steps.len() < 100, "compaction does not converge");
        steps.push(step);
    }
}

fn total(steps: &[CompactionReport]) -> CompactionReport {
    let mut total = CompactionReport::default();
    for step in steps {
        total.absorb(step.clone());
    }
    total
}

/// Build, mint a version, then fail in `pushing`: a version no target runs.
async fn mint_and_fail(store: &DynStore, new: NewDeployment) -> Deployment {
    let d = create(store, new).await;
    let d = step(store, &d, State::Building, VersionChange::Keep).await;
    let artifact = format!("artifact-{}", d.id);
    let d = step(store, &d, State::Pushing, VersionChange::Mint { artifact }).await;
    step(store, &d, State::Failed, VersionChange::Keep).await
}

async fn ids_on(store: &DynStore, app: &str, cluster: &str) -> BTreeSet<Uuid> {
    let query = HistoryQuery {
        app: app.into(),
        cluster: Some(cluster.into()),
        limit: 500,
        ..HistoryQuery::default()
    };
    let page = store.history(&query).await.expect("history");
    page.items.iter().map(|d| d.id).collect()
}

async fn version_names(store: &DynStore, app: &str) -> BTreeSet<String> {
    let page = store.versions(app, None, 500).await.expect("versions");
    page.items.into_iter().map(|v| v.version).collect()
}

fn names(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|s| s.to_string()).collect()
}

// ---------------------------------------------------------------- the contract

/// Twelve succeeded deploys, keep five: the newest five and their versions
/// stay, the rest go with their events, and the versions come back named.
pub(super) async fn compaction_keeps_the_newest_per_target(store: DynStore) {
    let mut all = Vec::new();
    for _ in 0..12 {
        let d = deploy(&store, "web", "prod").await;
        store.append(d.id, &[log("built")]).await.expect("append");
        all.push(run_to_success(&store, &d).await);
    }
    // Nothing is old enough yet: judged now, a day's minimum age keeps all.
    let today = Retention {
        now: now(),
        ..policy(5)
    };
    assert_eq!(
        store.compact(&today, 100).await.unwrap(),
        CompactionReport::default()
    );

    let steps = compact_all(&store, &policy(5), 100).await;
    let report = total(&steps);
    assert_eq!(report.deployments_deleted, 7);
    let kept: BTreeSet<Uuid> = all[7..].iter().map(|d| d.id).collect();
    assert_eq!(ids_on(&store, "web", "prod").await, kept);
    for gone in &all[..7] {
        assert_eq!(store.get(gone.id).await.unwrap(), None);
        assert!(store.events_after(gone.id, 0, 10).await.unwrap().is_empty());
    }
    for stays in &all[7..] {
        // Created, a log line, four state changes.
        assert_eq!(store.events_after(stays.id, 0, 10).await.unwrap().len(), 6);
    }
    let deleted: BTreeSet<(String, String, String)> = report
        .versions_deleted
        .iter()
        .map(|v| (v.app.clone(), v.version.clone(), v.artifact.clone()))
        .collect();
    let expected: BTreeSet<(String, String, String)> = all[..7]
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let artifact = format!("artifact-{}", d.id);
            ("web".to_string(), format!("v{}", i + 1), artifact)
        })
        .collect();
    assert_eq!(deleted, expected);
    assert_eq!(
        version_names(&store, "web").await,
        names(&["v8", "v9", "v10", "v11", "v12"])
    );
    assert_eq!(store.version("web", "v1").await.unwrap(), None);
    let target = store.target("web", "prod").await.unwrap();
    assert_eq!(target.active.map(|a| a.deployment_id), Some(all[11].id));
    // Done means done: one more step finds nothing.
    assert!(store.compact(&policy(5), 100).await.unwrap().is_empty());
}

/// Past the limit, a deployment still stays when it is active, young, not
/// ended, or has a version that is kept (here: one a queued rollback names).
pub(super) async fn compaction_spares_active_young_running_and_kept(store: DynStore) {
    let young_at = now() + Duration::days(2);
    let d1 = run_to_success(&store, &deploy(&store, "web", "prod").await).await; // v1
    let d2 = run_to_success(&store, &deploy(&store, "web", "prod").await).await; // v2, active
    let young = NewDeployment {
        created_at: young_at,
        ..new_deploy("web", "prod")
    };
    let d3 = mint_and_fail(&store, young).await; // v3, young
    let mut doomed = Vec::new();
    for _ in 4..=9 {
        doomed.push(mint_and_fail(&store, new_deploy("web", "prod")).await); // v4..v9
    }
    let unbuilt = deploy(&store, "web", "prod").await;
    let unbuilt = step(&store, &unbuilt, State::Building, VersionChange::Keep).await;
    doomed.push(step(&store, &unbuilt, State::Failed, VersionChange::Keep).await);
    let rollback = create(&store, new_rollback("web", "prod", "v1")).await; // queued
    let failed = deploy(&store, "web", "prod").await;
    let failed = step(&store, &failed, State::Failed, VersionChange::Keep).await;
    let cancelled = deploy(&store, "web", "prod").await;
    let cancelled = step(&store, &cancelled, State::Cancelled, VersionChange::Keep).await;

    // Another app and target: an old running and an old queued deployment
    // are beyond the limit too, and stay.
    let a1 = mint_and_fail(&store, new_deploy("api", "prod")).await; // api v1
    let running = deploy(&store, "api", "prod").await;
    let running = step(&store, &running, State::Building, VersionChange::Keep).await;
    let queued = deploy(&store, "api", "prod").await;
    let mut newest = Vec::new();
    for _ in 0..3 {
        let d = deploy(&store, "api", "prod").await;
        newest.push(
            step(&store, &d, State::Cancelled, VersionChange::Keep)
                .await
                .id,
        );
    }

    let report = total(&compact_all(&store, &policy(3), 100).await);
    assert_eq!(report.deployments_deleted, doomed.len() as u64 + 1);
    let web: BTreeSet<Uuid> = [d1.id, d2.id, d3.id, rollback.id, failed.id, cancelled.id].into();
    assert_eq!(ids_on(&store, "web", "prod").await, web);
    let mut api: BTreeSet<Uuid> = [running.id, queued.id].into();
    api.extend(newest);
    assert_eq!(ids_on(&store, "api", "prod").await, api);
    for gone in doomed.iter().chain([&a1]) {
        assert_eq!(store.get(gone.id).await.unwrap(), None);
    }
    let deleted: BTreeSet<(String, String)> = report
        .versions_deleted
        .iter()
        .map(|v| (v.app.clone(), v.version.clone()))
        .collect();
    let mut expected: BTreeSet<(String, String)> = (4..=9)
        .map(|n| ("web".to_string(), format!("v{n}")))
        .collect();
    expected.insert(("api".into(), "v1".into()));
    assert_eq!(deleted, expected);
    assert_eq!(
        version_names(&store, "web").await,
        names(&["v1", "v2", "v3"])
    );
    assert!(version_names(&store, "api").await.is_empty());

    // Once the rollback ran and another deploy took over, v1 and d1 may go;
    // the rollback itself stays as one of the newest three.
    let rollback = step(
        &store,
        &rollback,
        State::Activating,
        VersionChange::Set("v1".into()),
    )
    .await;
    step(&store, &rollback, State::Succeeded, VersionChange::Keep).await;
    let report = total(&compact_all(&store, &policy(3), 100).await);
    // Ranked now: rollback, cancelled, failed are the newest three; d2 is no
    // longer active, d1 holds v1 which the (kept) rollback has: d2 goes.
    assert_eq!(report.deployments_deleted, 1);
    assert_eq!(store.get(d2.id).await.unwrap(), None);
    assert!(store.get(d1.id).await.unwrap().is_some());
    let deleted: Vec<&str> = report
        .versions_deleted
        .iter()
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(deleted, ["v2"]);
}

/// Steps of two make progress, never delete more than two of each, and end.
pub(super) async fn compaction_steps_are_small_and_converge(store: DynStore) {
    for _ in 0..9 {
        run_to_success(&store, &deploy(&store, "web", "prod").await).await;
    }
    let steps = compact_all(&store, &policy(2), 2).await;
    assert!(steps.len() >= 4, "{} steps", steps.len());
    for step in &steps {
        assert!(step.deployments_deleted <= 2, "{step:?}");
        assert!(step.versions_deleted.len() <= 2, "{step:?}");
    }
    let report = total(&steps);
    assert_eq!(report.deployments_deleted, 7);
    assert_eq!(report.versions_deleted.len(), 7);
    assert_eq!(ids_on(&store, "web", "prod").await.len(), 2);
    assert_eq!(version_names(&store, "web").await, names(&["v8", "v9"]));
}

// ---------------------------------------------------------------- pinned versions

/// A version an operator pinned stays, and so do its deployments. No store
/// method pins yet, so each backend's test sets the column directly.
async fn pinned_version_is_kept(store: DynStore, pin: impl Future<Output = ()>) {
    let d1 = run_to_success(&store, &deploy(&store, "web", "prod").await).await;
    let d2 = run_to_success(&store, &deploy(&store, "web", "prod").await).await;
    let d3 = run_to_success(&store, &deploy(&store, "web", "prod").await).await;
    pin.await;
    let report = total(&compact_all(&store, &policy(1), 100).await);
    assert_eq!(report.deployments_deleted, 1);
    let deleted: Vec<&str> = report
        .versions_deleted
        .iter()
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(deleted, ["v2"]);
    assert_eq!(ids_on(&store, "web", "prod").await, [d1.id, d3.id].into());
    assert_eq!(store.get(d2.id).await.unwrap(), None);
    assert_eq!(version_names(&store, "web").await, names(&["v1", "v3"]));
}

#[tokio::test]
async fn sqlite_pinned_version_is_kept() {
    let (store, dir) = crate::support::sqlite_store().await;
    let path = dir.path().join("data").join("deployd.db");
    let pin = async move {
        let conn = rusqlite::Connection::open(path).expect("open");
        conn.execute(
            "UPDATE versions SET pinned = 1 WHERE app = 'web' AND version = 'v1'",
            [],
        )
        .expect("pin v1");
    };
    pinned_version_is_kept(store, pin).await;
}

#[tokio::test]
async fn postgres_pinned_version_is_kept() {
    let (store, database) = crate::support::pg::pg_store().await;
    let url = database.url().to_string();
    let pin = async move {
        let client = crate::support::pg::connect(&url).await;
        client
            .execute(
                "UPDATE versions SET pinned = true WHERE app = 'web' AND version = 'v1'",
                &[],
            )
            .await
            .expect("pin v1");
    };
    pinned_version_is_kept(store, pin).await;
}
