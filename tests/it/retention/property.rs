//! Issue 12's property: fill a target with random sequences of succeeded,
//! failed and cancelled deploys, rollbacks and pins, compacting after every
//! step with random retention settings, and check after every step that a
//! plain rollback and a rollback to every kept live version could still
//! work (the version and its release directory are there), that what the
//! rules promise to keep is kept, and that no directory is left without a
//! record. At the end, every kept live version is really rolled back to.

use super::cases::{FAILING_BUILD, deploy_files, failing_activation, no_minimum_ages};
use super::{compact, release_dir};
use crate::support::app::*;
use deployd::machine::State;
use deployd::model::{RollbackRequest, VersionInfo};
use proptest::prelude::*;
use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

#[derive(Debug, Clone)]
enum Op {
    Deploy,
    FailBuild,
    FailActivate,
    Cancel,
    Rollback,
    /// Roll back to the n-th kept live version (modulo how many there are).
    RollbackTo(usize),
    Pin(usize),
    Unpin(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Deploy),
        1 => Just(Op::FailBuild),
        1 => Just(Op::FailActivate),
        1 => Just(Op::Cancel),
        2 => Just(Op::Rollback),
        1 => any::<usize>().prop_map(Op::RollbackTo),
        1 => any::<usize>().prop_map(Op::Pin),
        1 => any::<usize>().prop_map(Op::Unpin),
    ]
}

/// What the test knows must be kept: the order versions became active in,
/// and what is pinned.
#[derive(Debug, Default)]
struct Model {
    activations: Vec<String>,
    pinned: BTreeSet<String>,
}

impl Model {
    /// The newest `n` (at least 2) versions by when they last became active.
    fn window(&self, n: u32) -> BTreeSet<String> {
        let mut seen = Vec::new();
        for v in self.activations.iter().rev() {
            if !seen.contains(v) {
                seen.push(v.clone());
            }
        }
        seen.into_iter().take(n.max(2) as usize).collect()
    }
}

fn rollback_request(version: Option<String>) -> RollbackRequest {
    RollbackRequest {
        version,
        message: None,
        on_conflict: None,
        idempotency_key: None,
    }
}

async fn versions(app: &TestApp) -> Vec<VersionInfo> {
    let page = app.client.versions("web", Some(500), None).await.unwrap();
    page.versions
}

/// Versions that were live on web/local and are not active there now.
fn live_elsewhere_in_time(listing: &[VersionInfo]) -> Vec<String> {
    (listing.iter())
        .filter(|v| v.live.iter().any(|s| s.cluster == "local" && !s.active))
        .map(|v| v.version.clone())
        .collect()
}

async fn pin(app: &TestApp, version: &str, pinned: bool) {
    let url = format!("{}/v1/apps/web/versions/{version}/pin", app.url);
    let http = reqwest::Client::new();
    let request = if pinned {
        http.post(url)
    } else {
        http.delete(url)
    };
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200, "pin {version} {pinned}");
}

async fn apply(app: &TestApp, model: &mut Model, op: &Op) {
    let succeeded = |d: &deployd::model::Deployment| d.state == State::Succeeded;
    match op {
        Op::Deploy => {
            let d = deploy_files(app, &[]).await;
            assert!(succeeded(&d), "{d:?}");
            model.activations.push(d.version.unwrap());
        }
        Op::FailBuild => {
            assert_eq!(deploy_files(app, FAILING_BUILD).await.state, State::Failed);
        }
        Op::FailActivate => {
            let d = deploy_files(app, &[("fail-activate", "", 0o644)]).await;
            assert_eq!(d.state, State::Failed);
        }
        Op::Cancel => {
            let files = [("build.sh", "#!/bin/sh\nsleep 30\n", 0o755)];
            let source = app.upload(&files).await;
            let d = (app.client)
                .deploy("web", "local", &deploy_request(&source))
                .await
                .unwrap();
            app.client.cancel(d.id, None).await.unwrap();
            assert_eq!(app.finished(d.id).await.state, State::Cancelled);
        }
        Op::Rollback => {
            let target = app.client.target("web", "local").await.unwrap();
            if let Some(to) = target.rollback_to {
                let request = rollback_request(None);
                let r = app.client.rollback("web", "local", &request).await.unwrap();
                let r = app.finished(r.id).await;
                assert_eq!(
                    (r.state, r.version.as_deref()),
                    (State::Succeeded, Some(&*to))
                );
                model.activations.push(to);
            }
        }
        Op::RollbackTo(n) => {
            let candidates = live_elsewhere_in_time(&versions(app).await);
            if !candidates.is_empty() {
                let to = candidates[n % candidates.len()].clone();
                let request = rollback_request(Some(to.clone()));
                let r = app.client.rollback("web", "local", &request).await.unwrap();
                let r = app.finished(r.id).await;
                assert_eq!(r.state, State::Succeeded, "rollback to {to}: {r:?}");
                model.activations.push(to);
            }
        }
        Op::Pin(n) | Op::Unpin(n) => {
            let listing = versions(app).await;
            if !listing.is_empty() {
                let version = listing[n % listing.len()].version.clone();
                let pinned = matches!(op, Op::Pin(_));
                pin(app, &version, pinned).await;
                if pinned {
                    model.pinned.insert(version);
                } else {
                    model.pinned.remove(&version);
                }
            }
        }
    }
}

/// After a compaction: what must be kept is, every kept version's release
/// is on disk, and every release directory and workspace has a record.
async fn check(app: &TestApp, model: &Model, keep_releases: u32, after: &[Op]) {
    let listing = versions(app).await;
    let kept: BTreeSet<String> = listing.iter().map(|v| v.version.clone()).collect();
    let must: BTreeSet<String> = model
        .window(keep_releases)
        .union(&model.pinned)
        .cloned()
        .collect();
    assert!(
        must.is_subset(&kept),
        "after {after:?}: must keep {must:?}, kept {kept:?}"
    );
    let target = app.client.target("web", "local").await.unwrap();
    if let Some(to) = &target.rollback_to {
        assert!(
            kept.contains(to),
            "after {after:?}: plain rollback to {to}, kept {kept:?}"
        );
    }
    assert_eq!(
        target.rollback_to.as_ref(),
        model
            .window(2)
            .iter()
            .find(|v| Some(*v) != model.activations.last()),
        "after {after:?}: the one before the active one"
    );
    let artifacts: HashSet<PathBuf> = listing.iter().map(|v| PathBuf::from(&v.artifact)).collect();
    for artifact in &artifacts {
        assert!(
            artifact.is_dir(),
            "after {after:?}: {} is gone",
            artifact.display()
        );
    }
    let releases = app
        .data_dir
        .canonicalize()
        .unwrap()
        .join("releases/web/local");
    let entries = std::fs::read_dir(&releases).map(|dir| dir.map(|e| e.unwrap().path()).collect());
    for path in entries.unwrap_or_else(|_| Vec::new()) {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        if name == "current" {
            continue;
        }
        assert!(
            artifacts.contains(&path),
            "after {after:?}: {name} has no record"
        );
    }
    let work: Vec<_> = std::fs::read_dir(app.data_dir.join("work"))
        .map(|dir| dir.map(|e| e.unwrap().file_name()).collect())
        .unwrap_or_default();
    assert!(
        work.is_empty(),
        "after {after:?}: workspaces left: {work:?}"
    );
}

async fn run(backend: Backend, ops: Vec<Op>, keep_releases: u32, keep_attempts: u32) {
    let app = spawn_app(backend, |config| {
        failing_activation(config);
        no_minimum_ages(config);
        config.deploy.keep_releases = keep_releases;
        config.deploy.keep_attempts = keep_attempts;
    })
    .await;
    let mut model = Model::default();
    for (n, op) in ops.iter().enumerate() {
        apply(&app, &mut model, op).await;
        compact(&app).await;
        check(&app, &model, keep_releases, &ops[..=n]).await;
    }
    // Every kept live version really can be rolled back to.
    for to in live_elsewhere_in_time(&versions(&app).await) {
        let request = rollback_request(Some(to.clone()));
        let r = app.client.rollback("web", "local", &request).await.unwrap();
        let r = app.finished(r.id).await;
        assert_eq!(r.state, State::Succeeded, "rollback to {to} after {ops:?}");
        let current = std::fs::read_link(release_dir(&app, &r).with_file_name("current")).unwrap();
        let version = app.client.versions("web", Some(500), None).await.unwrap();
        let info = version.versions.iter().find(|v| v.version == to).unwrap();
        assert_eq!(current, PathBuf::from(&info.artifact));
    }
    app.stop().await;
}

fn block_on(test: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(test);
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 6,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn sqlite_retention_never_loses_a_rollback_target(
        ops in proptest::collection::vec(op(), 1..10),
        keep_releases in 0u32..4,
        keep_attempts in 0u32..3,
    ) {
        block_on(run(Backend::Sqlite, ops, keep_releases, keep_attempts));
    }

    #[test]
    fn postgres_retention_never_loses_a_rollback_target(
        ops in proptest::collection::vec(op(), 1..10),
        keep_releases in 0u32..4,
        keep_attempts in 0u32..3,
    ) {
        block_on(run(Backend::Postgres, ops, keep_releases, keep_attempts));
    }
}
