//! The retention part of the contract: what [`Store::compact`] deletes and,
//! above all, what it never deletes. Retention counts releases you can go
//! back to, not attempts.
//!
//! Rather than backdating every row, the tests compact "two days from now"
//! with a one-day minimum age: everything created now is old enough, and a
//! row created at that future instant is the young one.

use super::{create, deploy, new_deploy, new_rollback, now, run_to_success, step, succeed};
use chrono::Duration;
use deployd::machine::State;
use deployd::model::Deployment;
use deployd::store::{
    CompactionReport, DynStore, HistoryQuery, NewDeployment, Retention, StoreError, VersionChange,
};
use std::collections::BTreeSet;
use uuid::Uuid;

/// Keep `releases` live versions and `attempts` attempts per target, judged
/// two days from now, minimum ages one day.
fn policy(releases: u32, attempts: u32) -> Retention {
    Retention {
        keep_releases: releases,
        keep_attempts: attempts,
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

/// Build and mint a version, then fail in `activating`: a version never live.
async fn mint_and_fail(store: &DynStore, new: NewDeployment) -> Deployment {
    let d = create(store, new).await;
    let d = step(store, &d, State::Building, VersionChange::Keep).await;
    let artifact = format!("artifact-{}", d.id);
    let d = step(store, &d, State::Pushing, VersionChange::Mint { artifact }).await;
    let d = step(store, &d, State::Activating, VersionChange::Keep).await;
    step(store, &d, State::Failed, VersionChange::Keep).await
}

/// Fail in `building`: an attempt with no version.
async fn fail_build(store: &DynStore, app: &str, cluster: &str) -> Deployment {
    let d = deploy(store, app, cluster).await;
    let d = step(store, &d, State::Building, VersionChange::Keep).await;
    step(store, &d, State::Failed, VersionChange::Keep).await
}

/// Roll `app/cluster` back to `version`, through to `succeeded`.
async fn roll_back(store: &DynStore, app: &str, cluster: &str, version: &str) -> Deployment {
    let d = create(store, new_rollback(app, cluster, version)).await;
    let d = step(
        store,
        &d,
        State::Activating,
        VersionChange::Set(version.into()),
    )
    .await;
    step(store, &d, State::Succeeded, VersionChange::Keep).await
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

fn deleted_versions(report: &CompactionReport) -> BTreeSet<String> {
    (report.versions_deleted.iter())
        .map(|v| v.version.clone())
        .collect()
}

async fn previous(store: &DynStore, app: &str, cluster: &str) -> Option<String> {
    let previous = store
        .previous_version(app, cluster)
        .await
        .expect("previous");
    let view = store.target(app, cluster).await.expect("target");
    let previous = previous.map(|v| v.version);
    assert_eq!(view.rollback_to, previous, "the target view agrees");
    previous
}

// ---------------------------------------------------------------- the contract

/// Issue 12, case 1: two good deploys, then four that fail (two in build,
/// two in activation, minting v3 and v4). Failed attempts no longer crowd
/// out the release a rollback needs: v1 (the one before the active v2)
/// stays; v3 and v4, never live, go with their attempts.
pub(super) async fn compaction_keeps_releases_not_attempts(store: DynStore) {
    let d1 = succeed(&store, "web", "prod").await; // v1
    let d2 = succeed(&store, "web", "prod").await; // v2, active
    let mut attempts = vec![
        fail_build(&store, "web", "prod").await,
        fail_build(&store, "web", "prod").await,
    ];
    attempts.push(mint_and_fail(&store, new_deploy("web", "prod")).await); // v3
    attempts.push(mint_and_fail(&store, new_deploy("web", "prod")).await); // v4

    // Nothing is old enough yet: judged now, a day's minimum age keeps all.
    let today = Retention {
        now: now(),
        ..policy(0, 0)
    };
    assert!(store.compact(&today, 100).await.unwrap().is_empty());

    // Even asked to keep no releases and no attempts.
    let report = total(&compact_all(&store, &policy(0, 0), 100).await);
    assert_eq!(report.deployments_deleted, 4);
    assert_eq!(deleted_versions(&report), names(&["v3", "v4"]));
    for gone in &attempts {
        assert_eq!(store.get(gone.id).await.unwrap(), None);
    }
    assert_eq!(ids_on(&store, "web", "prod").await, [d1.id, d2.id].into());
    assert_eq!(version_names(&store, "web").await, names(&["v1", "v2"]));
    assert_eq!(previous(&store, "web", "prod").await.as_deref(), Some("v1"));
    // Done means done: one more step finds nothing.
    assert!(store.compact(&policy(0, 0), 100).await.unwrap().is_empty());
}

/// Twelve succeeded deploys, keep five releases: the newest five versions
/// and the deployments that made them active stay; the rest go with their
/// events, and the versions come back named with their artifacts.
pub(super) async fn compaction_keeps_the_newest_releases_per_target(store: DynStore) {
    let mut all = Vec::new();
    for _ in 0..12 {
        all.push(succeed(&store, "web", "prod").await);
    }
    let report = total(&compact_all(&store, &policy(5, 20), 100).await);
    assert_eq!(report.deployments_deleted, 7);
    let kept: BTreeSet<Uuid> = all[7..].iter().map(|d| d.id).collect();
    assert_eq!(ids_on(&store, "web", "prod").await, kept);
    for gone in &all[..7] {
        assert!(store.events_after(gone.id, 0, 10).await.unwrap().is_empty());
    }
    let deleted: BTreeSet<(String, String, Option<String>)> = (report.versions_deleted.iter())
        .map(|v| (v.version.clone(), v.artifact.clone(), v.built_on.clone()))
        .collect();
    let expected: BTreeSet<(String, String, Option<String>)> = (all[..7].iter().enumerate())
        .map(|(i, d)| {
            let artifact = format!("artifact-{}", d.id);
            (format!("v{}", i + 1), artifact, Some("prod".to_string()))
        })
        .collect();
    assert_eq!(deleted, expected);
    assert_eq!(
        version_names(&store, "web").await,
        names(&["v8", "v9", "v10", "v11", "v12"])
    );
    assert_eq!(
        previous(&store, "web", "prod").await.as_deref(),
        Some("v11")
    );
}

/// Attempts that never went live have their own count and their own age:
/// the newest `keep_attempts` stay, and so does any younger than its age.
pub(super) async fn attempts_have_their_own_limit_and_age(store: DynStore) {
    succeed(&store, "web", "prod").await;
    let mut attempts = Vec::new();
    for _ in 0..5 {
        attempts.push(fail_build(&store, "web", "prod").await.id);
    }
    let young = NewDeployment {
        created_at: now() + Duration::days(2),
        ..new_deploy("web", "prod")
    };
    let young = create(&store, young).await;
    let young = step(&store, &young, State::Cancelled, VersionChange::Keep).await;
    // Releases would keep everything for a year; attempts go after a day.
    let policy = Retention {
        min_age: Duration::days(365),
        ..policy(10, 2)
    };
    let report = total(&compact_all(&store, &policy, 100).await);
    // Newest two of the six attempts: the young one and the last failure;
    // of the other four, all go.
    assert_eq!(report.deployments_deleted, 4);
    let on = ids_on(&store, "web", "prod").await;
    assert!(
        on.contains(&young.id) && on.contains(&attempts[4]),
        "{on:?}"
    );
    for gone in &attempts[..4] {
        assert!(!on.contains(gone));
    }
}

/// A version live on another cluster of the app is kept for that cluster's
/// sake: prod runs v1 and, rolled back to it, v3 (built on staging); staging
/// keeps its newest two (v5, v6). v2 and v4 go.
pub(super) async fn a_version_live_on_another_cluster_is_kept(store: DynStore) {
    succeed(&store, "web", "prod").await; // v1 on prod
    for _ in 2..=6 {
        succeed(&store, "web", "staging").await; // v2..v6 on staging
    }
    roll_back(&store, "web", "prod", "v3").await; // v3 active on prod
    let report = total(&compact_all(&store, &policy(2, 20), 100).await);
    assert_eq!(deleted_versions(&report), names(&["v2", "v4"]));
    assert_eq!(
        version_names(&store, "web").await,
        names(&["v1", "v3", "v5", "v6"])
    );
    assert_eq!(previous(&store, "web", "prod").await.as_deref(), Some("v1"));
    assert_eq!(
        previous(&store, "web", "staging").await.as_deref(),
        Some("v5")
    );
    let v3 = store.version("web", "v3").await.unwrap().expect("v3 kept");
    let live: Vec<(&str, bool)> = (v3.live.iter())
        .map(|span| (span.cluster.as_str(), span.active))
        .collect();
    assert_eq!(live, [("prod", true), ("staging", false)]);
    assert_eq!(v3.built_on.as_deref(), Some("staging"));
}

/// Pinned versions and what a queued rollback needs are kept; unpinned, a
/// version goes at the next compaction. Pinning an unknown version is an
/// error that changes nothing.
pub(super) async fn pinned_and_queued_rollback_targets_are_kept(store: DynStore) {
    for _ in 1..=5 {
        succeed(&store, "web", "prod").await; // v1..v5
    }
    let pinned = store.pin("web", "v1", true).await.expect("pin v1");
    assert!(pinned.pinned && pinned.version == "v1");
    let rollback = create(&store, new_rollback("web", "prod", "v2")).await; // queued
    let report = total(&compact_all(&store, &policy(2, 20), 100).await);
    assert_eq!(deleted_versions(&report), names(&["v3"]));
    assert_eq!(
        version_names(&store, "web").await,
        names(&["v1", "v2", "v4", "v5"])
    );
    assert!(store.get(rollback.id).await.unwrap().is_some());

    for (app, version) in [("web", "v9"), ("api", "v1")] {
        match store.pin(app, version, true).await {
            Err(StoreError::UnknownVersion { .. }) => {}
            other => panic!("pin {app} {version}: {other:?}"),
        }
    }
    let unpinned = store.pin("web", "v1", false).await.expect("unpin v1");
    assert!(!unpinned.pinned);
    // Pinning twice is the same as once.
    store.pin("web", "v4", true).await.unwrap();
    assert!(store.pin("web", "v4", true).await.unwrap().pinned);
    let report = total(&compact_all(&store, &policy(2, 20), 100).await);
    assert_eq!(deleted_versions(&report), names(&["v1"]));
}

/// A rollback makes an old version the newest release again: after v1..v4
/// and a rollback to v1, the window of two is v1 (active) and v4 (the one
/// before it); v2 and v3 go, and so does the first activation of v1, whose
/// rollback record is now the one that made it active.
pub(super) async fn a_rollback_moves_a_version_up_the_window(store: DynStore) {
    let first = succeed(&store, "web", "prod").await;
    for _ in 2..=4 {
        succeed(&store, "web", "prod").await;
    }
    let rollback = roll_back(&store, "web", "prod", "v1").await;
    assert_eq!(previous(&store, "web", "prod").await.as_deref(), Some("v4"));
    let v4 = store.version("web", "v4").await.unwrap().expect("v4");
    let span = &v4.live[0];
    assert!(!span.active && span.until.is_some(), "{span:?}");
    let v1 = store.version("web", "v1").await.unwrap().expect("v1");
    assert!(v1.live[0].active && v1.live[0].until.is_none());
    assert_eq!(v1.live[0].since, rollback.finished_at.expect("finished"));

    let report = total(&compact_all(&store, &policy(2, 20), 100).await);
    assert_eq!(deleted_versions(&report), names(&["v2", "v3"]));
    assert_eq!(store.get(first.id).await.unwrap(), None);
    assert_eq!(version_names(&store, "web").await, names(&["v1", "v4"]));
}

/// Steps of two make progress, never delete more than two of each, and end.
pub(super) async fn compaction_steps_are_small_and_converge(store: DynStore) {
    for _ in 0..9 {
        run_to_success(&store, &deploy(&store, "web", "prod").await).await;
    }
    let steps = compact_all(&store, &policy(2, 20), 2).await;
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

/// The dry run names exactly what compaction then deletes, and deletes
/// nothing itself.
pub(super) async fn the_dry_run_names_what_compaction_deletes(store: DynStore) {
    for _ in 0..4 {
        succeed(&store, "web", "prod").await; // v1..v4
    }
    fail_build(&store, "web", "prod").await;
    mint_and_fail(&store, new_deploy("web", "prod")).await; // v5
    roll_back(&store, "web", "prod", "v2").await;
    let policy = policy(2, 0);
    let plan = store.compaction_plan(&policy, 1000).await.expect("plan");
    let again = store.compaction_plan(&policy, 1000).await.expect("plan");
    assert_eq!(plan, again, "a dry run changes nothing");
    let report = total(&compact_all(&store, &policy, 100).await);
    assert_eq!(plan.deployments.len() as u64, report.deployments_deleted);
    let planned: BTreeSet<String> = plan.versions.iter().map(|v| v.version.clone()).collect();
    assert_eq!(planned, deleted_versions(&report));
    assert_eq!(planned, names(&["v1", "v3", "v5"]));
    let never_live: Vec<&str> = (plan.versions.iter())
        .filter(|v| v.live_on.is_empty())
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(never_live, ["v5"]);
    assert!(store.compaction_plan(&policy, 1000).await.unwrap() == Default::default());
}

/// What the clusters are owed is recorded with the record's end: an attempt
/// that started and made no version, and a deleted version that names its
/// cluster; it stays until it is cleaned. A queued deploy cancelled before
/// it started, a succeeded one and a failed rollback owe nothing.
pub(super) async fn owed_cleanups_are_recorded_with_what_they_owe(store: DynStore) {
    let attempt = fail_build(&store, "web", "prod").await;
    let never_started = deploy(&store, "web", "prod").await;
    step(
        &store,
        &never_started,
        State::Cancelled,
        VersionChange::Keep,
    )
    .await;
    let v1 = succeed(&store, "web", "prod").await;
    for _ in 0..2 {
        succeed(&store, "web", "prod").await;
    }
    let rollback = create(&store, new_rollback("web", "prod", "v2")).await;
    let rollback = step(
        &store,
        &rollback,
        State::Activating,
        VersionChange::Set("v2".into()),
    )
    .await;
    step(&store, &rollback, State::Failed, VersionChange::Keep).await;
    let owed = store.owed_cleanups(100).await.unwrap();
    let ids: Vec<Uuid> = owed.iter().map(|o| o.id).collect();
    assert_eq!(ids, [attempt.id]);
    assert_eq!(
        (owed[0].version.as_deref(), owed[0].cluster.as_str()),
        (None, "prod")
    );

    let report = total(&compact_all(&store, &policy(2, 20), 100).await);
    assert_eq!(deleted_versions(&report), names(&["v1"]));
    let owed = store.owed_cleanups(100).await.unwrap();
    let version = owed
        .iter()
        .find(|o| o.id == v1.id)
        .expect("v1's cleanup is owed");
    assert_eq!(version.version.as_deref(), Some("v1"));
    assert_eq!(version.artifact, Some(format!("artifact-{}", v1.id)));
    store.cleaned(attempt.id).await.unwrap();
    store.cleaned(v1.id).await.unwrap();
    store.cleaned(v1.id).await.unwrap(); // twice is once
    assert!(store.owed_cleanups(100).await.unwrap().is_empty());
}
