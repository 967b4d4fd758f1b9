//! The one contract every [`Store`] backend passes, written once as async fns
//! over a `DynStore` and instantiated per backend by [`contract!`].
//!
//! State changes always go through `Change::new`, i.e. through the machine:
//! the suite checks what the store adds (compare-and-set, versions, active
//! pointer, gapless events), never a path the machine would refuse.

use chrono::{DateTime, Duration, Utc};
use deployd::machine::{Authority, Kind, State};
use deployd::model::{Deployment, EventData, GitInfo, LogLine, MAX_ERROR_BYTES};
use deployd::store::{
    Change, Created, DynStore, HistoryQuery, Lease, NewDeployment, Store, StoreError, VersionChange,
};
use std::collections::HashSet;
use uuid::Uuid;

mod compaction;
mod drift;
use compaction::{
    a_rollback_moves_a_version_up_the_window, a_version_live_on_another_cluster_is_kept,
    attempts_have_their_own_limit_and_age, compaction_keeps_releases_not_attempts,
    compaction_keeps_the_newest_releases_per_target, compaction_steps_are_small_and_converge,
    owed_cleanups_are_recorded_with_what_they_owe, pinned_and_queued_rollback_targets_are_kept,
    the_dry_run_names_what_compaction_deletes,
};
pub mod short_ids;
mod take_over;
mod text;
use drift::drift_is_set_replaced_cleared_and_undone_by_a_success;
use short_ids::{short_id_prefixes_find_their_deployments, target_summaries_list_each_target_once};
use take_over::take_over_wins_once_and_only_a_lapsed_or_own_lease;
use text::nul_bytes_are_stored_replaced_the_same_on_every_backend;

/// Generate one `#[tokio::test]` per contract fn for a backend whose
/// `$open().await` gives `(DynStore, guard)`.
macro_rules! contract {
    ($backend:ident, $open:path) => {
        mod $backend {
            contract!(@each $open;
                create_then_get,
                idempotency_key_repeats,
                queue_positions_and_target,
                deploy_walks_every_phase,
                stale_compare_and_set_changes_nothing,
                unknown_deployment_is_not_found,
                one_of_sixteen_concurrent_starts_wins,
                event_seqs_stay_gapless_under_concurrent_appends,
                events_after_pages_in_order,
                append_after_the_end_is_refused,
                long_error_is_clipped_on_a_char_boundary,
                superseded_by_is_stored,
                versions_are_minted_without_gaps,
                versions_page_newest_first,
                rollback_needs_a_known_version,
                succeeded_moves_the_active_pointer,
                previous_version_is_the_one_before_active,
                leases_renew_expire_and_belong,
                take_over_wins_once_and_only_a_lapsed_or_own_lease,
                queued_targets_lists_waiting_targets,
                history_cursor_walks_a_thousand_rows,
                ping_answers,
                compaction_keeps_releases_not_attempts,
                compaction_keeps_the_newest_releases_per_target,
                attempts_have_their_own_limit_and_age,
                a_version_live_on_another_cluster_is_kept,
                pinned_and_queued_rollback_targets_are_kept,
                a_rollback_moves_a_version_up_the_window,
                compaction_steps_are_small_and_converge,
                the_dry_run_names_what_compaction_deletes,
                owed_cleanups_are_recorded_with_what_they_owe,
                nul_bytes_are_stored_replaced_the_same_on_every_backend,
                drift_is_set_replaced_cleared_and_undone_by_a_success,
                short_id_prefixes_find_their_deployments,
                target_summaries_list_each_target_once,
            );
        }
    };
    (@each $open:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $name() {
                let (store, _guard) = $open().await;
                super::$name(store).await;
            }
        )*
    };
}

contract!(sqlite, crate::support::sqlite_store);
contract!(postgres, crate::support::pg::pg_store);

// ---------------------------------------------------------------- helpers

/// Now, at the microsecond precision both backends store.
fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_micros(Utc::now().timestamp_micros()).expect("a valid time")
}

fn new_deploy(app: &str, cluster: &str) -> NewDeployment {
    NewDeployment {
        id: Uuid::now_v7(),
        app: app.to_string(),
        cluster: cluster.to_string(),
        kind: Kind::Deploy,
        source: Some("ab".repeat(32)),
        rollback_to: None,
        git: Some(GitInfo {
            sha: Some("0123abcd".into()),
            branch: Some("main".into()),
            message: Some("fix the thing".into()),
            author: Some("ada".into()),
            dirty: false,
            repository: None,
        }),
        message: "a note".into(),
        deployed_by: "tester".into(),
        idempotency_key: None,
        request_hash: "hash-1".into(),
        created_at: now(),
        fence: None,
    }
}

fn new_rollback(app: &str, cluster: &str, to: &str) -> NewDeployment {
    NewDeployment {
        kind: Kind::Rollback,
        source: None,
        git: None,
        rollback_to: Some(to.to_string()),
        ..new_deploy(app, cluster)
    }
}

async fn create(store: &DynStore, new: NewDeployment) -> Deployment {
    match store.create(new).await.expect("create") {
        Created::New(d) => d,
        Created::Existing { .. } => panic!("expected a new deployment"),
    }
}

async fn deploy(store: &DynStore, app: &str, cluster: &str) -> Deployment {
    create(store, new_deploy(app, cluster)).await
}

/// A machine-approved change of `d` to `to`, applied.
async fn step(store: &DynStore, d: &Deployment, to: State, version: VersionChange) -> Deployment {
    let change = Change::new(d, to, Authority::Actor, version, now()).expect("machine allows");
    store
        .transition(change)
        .await
        .expect("transition")
        .deployment
}

/// Run a queued deploy through every phase to `succeeded`.
async fn run_to_success(store: &DynStore, d: &Deployment) -> Deployment {
    let d = step(store, d, State::Building, VersionChange::Keep).await;
    let artifact = format!("artifact-{}", d.id);
    let d = step(store, &d, State::Pushing, VersionChange::Mint { artifact }).await;
    let d = step(store, &d, State::Activating, VersionChange::Keep).await;
    step(store, &d, State::Succeeded, VersionChange::Keep).await
}

async fn succeed(store: &DynStore, app: &str, cluster: &str) -> Deployment {
    let d = deploy(store, app, cluster).await;
    run_to_success(store, &d).await
}

async fn get(store: &DynStore, id: Uuid) -> Deployment {
    store
        .get(id)
        .await
        .expect("get")
        .expect("deployment exists")
}

fn log(line: &str) -> EventData {
    EventData::Log(LogLine {
        step: "build".into(),
        stream: "stdout".into(),
        line: line.into(),
    })
}

fn seqs(events: &[deployd::model::Event]) -> Vec<i64> {
    events.iter().map(|e| e.seq).collect()
}

// ---------------------------------------------------------------- the contract

async fn create_then_get(store: DynStore) {
    let new = new_deploy("web", "prod");
    let d = create(&store, new.clone()).await;
    assert_eq!(d.id, new.id);
    assert_eq!((d.app.as_str(), d.cluster.as_str()), ("web", "prod"));
    assert_eq!((d.kind, d.state), (Kind::Deploy, State::Queued));
    assert!(!d.active);
    assert_eq!(d.version, None);
    assert_eq!(d.source, new.source);
    assert_eq!(d.git, new.git);
    assert_eq!(d.message, "a note");
    assert_eq!(d.deployed_by, "tester");
    assert_eq!((d.error.as_deref(), d.superseded_by), (None, None));
    assert_eq!(d.queue_position, Some(1));
    assert_eq!(d.created_at, new.created_at);
    assert_eq!((d.started_at, d.finished_at), (None, None));
    assert_eq!(get(&store, d.id).await, d);

    let events = store.events_after(d.id, 0, 100).await.unwrap();
    assert_eq!(seqs(&events), [1]);
    assert_eq!(events[0].deployment_id, d.id);
    assert_eq!(events[0].data, EventData::Deployment(Box::new(d.clone())));

    let rollback = create(&store, new_rollback("web", "prod", "v3")).await;
    assert_eq!(rollback.kind, Kind::Rollback);
    assert_eq!(rollback.rollback_to.as_deref(), Some("v3"));
    assert_eq!((rollback.source, rollback.git), (None, None));
    assert_eq!(rollback.queue_position, Some(2));
    assert_eq!(store.get(Uuid::now_v7()).await.unwrap(), None);
}

async fn idempotency_key_repeats(store: DynStore) {
    let keyed = |hash: &str| NewDeployment {
        idempotency_key: Some("key-1".into()),
        request_hash: hash.into(),
        ..new_deploy("web", "prod")
    };
    let first = create(&store, keyed("h1")).await;
    match store.create(keyed("h1")).await.unwrap() {
        Created::Existing {
            deployment,
            same_request,
        } => {
            assert_eq!(deployment.id, first.id);
            assert!(same_request);
        }
        Created::New(_) => panic!("a repeated key must not create"),
    }
    match store.create(keyed("h2")).await.unwrap() {
        Created::Existing {
            deployment,
            same_request,
        } => {
            assert_eq!(deployment.id, first.id);
            assert!(!same_request);
        }
        Created::New(_) => panic!("a repeated key must not create"),
    }
    // Nothing was written by the repeats: one row, one event.
    let target = store.target("web", "prod").await.unwrap();
    assert_eq!(target.queued.len(), 1);
    assert_eq!(
        seqs(&store.events_after(first.id, 0, 10).await.unwrap()),
        [1]
    );

    // The key is per target, and no key never collides.
    let other = NewDeployment {
        cluster: "stage".into(),
        ..keyed("h1")
    };
    create(&store, other).await;
    deploy(&store, "web", "prod").await;
    deploy(&store, "web", "prod").await;
    assert_eq!(store.target("web", "prod").await.unwrap().queued.len(), 3);
}

async fn queue_positions_and_target(store: DynStore) {
    let empty = store.target("web", "prod").await.unwrap();
    assert_eq!(
        (empty.app.as_str(), empty.cluster.as_str()),
        ("web", "prod")
    );
    assert!(empty.active.is_none() && empty.running.is_none() && empty.queued.is_empty());

    let a = deploy(&store, "web", "prod").await;
    let b = deploy(&store, "web", "prod").await;
    let c = deploy(&store, "web", "prod").await;
    let elsewhere = deploy(&store, "web", "stage").await;
    assert_eq!(elsewhere.queue_position, Some(1));
    let positions = [a.id, b.id, c.id].map(|id| {
        let store = store.clone();
        async move { get(&store, id).await.queue_position }
    });
    assert_eq!(
        futures::future::join_all(positions).await,
        [Some(1), Some(2), Some(3)]
    );

    let target = store.target("web", "prod").await.unwrap();
    assert!(target.running.is_none());
    let queued: Vec<Uuid> = target.queued.iter().map(|d| d.id).collect();
    assert_eq!(queued, [a.id, b.id, c.id]);

    let a = step(&store, &a, State::Building, VersionChange::Keep).await;
    assert_eq!(a.queue_position, None);
    step(
        &store,
        &get(&store, b.id).await,
        State::Cancelled,
        VersionChange::Keep,
    )
    .await;
    let target = store.target("web", "prod").await.unwrap();
    assert_eq!(target.running.as_ref().map(|d| d.id), Some(a.id));
    assert_eq!(target.queued.len(), 1);
    assert_eq!(target.queued[0].id, c.id);
    assert_eq!(target.queued[0].queue_position, Some(1));
}

async fn deploy_walks_every_phase(store: DynStore) {
    let d = deploy(&store, "web", "prod").await;
    let at = now();
    let deadline = at + Duration::minutes(15);
    let lease = Lease {
        owner: "instance-a".into(),
        expires_at: at + Duration::seconds(15),
    };
    let change = Change::new(
        &d,
        State::Building,
        Authority::Actor,
        VersionChange::Keep,
        at,
    )
    .unwrap()
    .with_lease(lease.clone())
    .with_deadline(deadline);
    let applied = store.transition(change).await.unwrap();
    let building = applied.deployment;
    assert_eq!(building.state, State::Building);
    assert_eq!(building.started_at, Some(at));
    assert_eq!(building.finished_at, None);
    assert_eq!(applied.event.seq, 2);
    assert_eq!(applied.event.deployment_id, d.id);
    match &applied.event.data {
        EventData::State(s) => {
            assert_eq!(
                (s.from, s.to, s.at, s.error.as_deref()),
                (State::Queued, State::Building, at, None)
            );
        }
        other => panic!("expected a state event, got {other:?}"),
    }
    let owned = store.owned_by("instance-a").await.unwrap();
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].lease_expires_at, Some(lease.expires_at));
    assert_eq!(owned[0].phase_deadline, Some(deadline));

    let artifact = VersionChange::Mint {
        artifact: "registry/web@sha256:1".into(),
    };
    let pushing = step(&store, &building, State::Pushing, artifact).await;
    assert_eq!(pushing.version.as_deref(), Some("v1"));
    assert_eq!(pushing.started_at, Some(at), "started_at is set once");
    let v1 = store
        .version("web", "v1")
        .await
        .unwrap()
        .expect("v1 minted");
    assert_eq!(v1.artifact, "registry/web@sha256:1");
    assert_eq!(v1.git, d.git);
    assert_eq!(v1.deployment_id, d.id);

    let activating = step(&store, &pushing, State::Activating, VersionChange::Keep).await;
    assert!(!activating.active);
    let done_at = now();
    let change = Change::new(
        &activating,
        State::Succeeded,
        Authority::Actor,
        VersionChange::Keep,
        done_at,
    )
    .unwrap();
    let done = store.transition(change).await.unwrap();
    assert_eq!(done.deployment.state, State::Succeeded);
    assert_eq!(done.deployment.finished_at, Some(done_at));
    assert!(done.deployment.active);
    assert_eq!(done.event.seq, 5);
    assert!(done.event.data.is_final());
    assert!(
        store.owned_by("instance-a").await.unwrap().is_empty(),
        "the lease ends with the deployment"
    );

    let events = store.events_after(d.id, 0, 100).await.unwrap();
    assert_eq!(seqs(&events), [1, 2, 3, 4, 5]);
    let path: Vec<(State, State)> = events[1..]
        .iter()
        .map(|e| match &e.data {
            EventData::State(s) => (s.from, s.to),
            other => panic!("expected a state event, got {other:?}"),
        })
        .collect();
    use State::*;
    assert_eq!(
        path,
        [
            (Queued, Building),
            (Building, Pushing),
            (Pushing, Activating),
            (Activating, Succeeded)
        ]
    );
}

async fn stale_compare_and_set_changes_nothing(store: DynStore) {
    let d = deploy(&store, "web", "prod").await;
    let stale = Change::new(
        &d,
        State::Building,
        Authority::Actor,
        VersionChange::Keep,
        now(),
    )
    .unwrap();
    let cancelled = step(&store, &d, State::Cancelled, VersionChange::Keep).await;
    match store.transition(stale).await {
        Err(StoreError::Stale {
            id,
            expected,
            current,
        }) => {
            assert_eq!(
                (id, expected, current),
                (d.id, State::Queued, State::Cancelled)
            );
        }
        other => panic!("expected Stale, got {other:?}"),
    }
    assert_eq!(get(&store, d.id).await, cancelled);
    assert_eq!(
        seqs(&store.events_after(d.id, 0, 10).await.unwrap()),
        [1, 2]
    );

    // A stale writer of a running deployment cannot overwrite a newer phase.
    let d = deploy(&store, "web", "prod").await;
    let building = step(&store, &d, State::Building, VersionChange::Keep).await;
    let stale = Change::new(
        &building,
        State::Failed,
        Authority::Actor,
        VersionChange::Keep,
        now(),
    )
    .unwrap()
    .with_error("late result");
    let mint = VersionChange::Mint {
        artifact: "a".into(),
    };
    let pushing = step(&store, &building, State::Pushing, mint).await;
    assert!(matches!(
        store.transition(stale).await,
        Err(StoreError::Stale {
            current: State::Pushing,
            ..
        })
    ));
    assert_eq!(get(&store, d.id).await, pushing);
}

async fn unknown_deployment_is_not_found(store: DynStore) {
    let mut ghost = deploy(&store, "web", "prod").await;
    ghost.id = Uuid::now_v7();
    let change = Change::new(
        &ghost,
        State::Building,
        Authority::Actor,
        VersionChange::Keep,
        now(),
    )
    .unwrap();
    assert!(
        matches!(store.transition(change).await, Err(StoreError::NotFound(id)) if id == ghost.id)
    );
    assert!(
        matches!(store.append(ghost.id, &[log("x")], None).await, Err(StoreError::NotFound(id)) if id == ghost.id)
    );
}

async fn one_of_sixteen_concurrent_starts_wins(store: DynStore) {
    let mut queued = Vec::new();
    for _ in 0..16 {
        queued.push(deploy(&store, "web", "prod").await);
    }
    let tasks = queued.iter().map(|d| {
        let (store, d) = (store.clone(), d.clone());
        tokio::spawn(async move {
            let change = Change::new(
                &d,
                State::Building,
                Authority::Actor,
                VersionChange::Keep,
                now(),
            )
            .unwrap();
            store.transition(change).await
        })
    });
    let results = futures::future::join_all(tasks).await;
    let mut winners = Vec::new();
    for result in results {
        match result.expect("task") {
            Ok(applied) => winners.push(applied.deployment.id),
            Err(StoreError::TargetBusy { app, cluster }) => {
                assert_eq!((app.as_str(), cluster.as_str()), ("web", "prod"))
            }
            Err(other) => panic!("expected TargetBusy, got {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1);
    let target = store.target("web", "prod").await.unwrap();
    assert_eq!(target.running.map(|d| d.id), Some(winners[0]));
    assert_eq!(target.queued.len(), 15);
    for d in target.queued {
        assert_eq!(
            seqs(&store.events_after(d.id, 0, 10).await.unwrap()),
            [1],
            "a refused start wrote nothing"
        );
    }
}

async fn event_seqs_stay_gapless_under_concurrent_appends(store: DynStore) {
    let d = deploy(&store, "web", "prod").await;
    let d = step(&store, &d, State::Building, VersionChange::Keep).await;
    let tasks = (0..8).map(|task| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut seen = Vec::new();
            for i in 0..50 {
                let stored = store
                    .append(d.id, &[log(&format!("{task}-{i}"))], None)
                    .await
                    .expect("append");
                seen.extend(seqs(&stored));
            }
            seen
        })
    });
    let mut returned: Vec<i64> = futures::future::join_all(tasks)
        .await
        .into_iter()
        .flat_map(|r| r.expect("task"))
        .collect();
    returned.sort_unstable();
    assert_eq!(
        returned,
        (3..=402).collect::<Vec<_>>(),
        "each append got its own seq"
    );
    let stored = store.events_after(d.id, 0, 1000).await.unwrap();
    assert_eq!(seqs(&stored), (1..=402).collect::<Vec<_>>());

    let batch = store
        .append(d.id, &[log("a"), log("b"), log("c")], None)
        .await
        .unwrap();
    assert_eq!(seqs(&batch), [403, 404, 405]);
    assert_eq!(batch[1].data, log("b"));
    let next = step(&store, &d, State::Failed, VersionChange::Keep).await;
    assert_eq!(next.state, State::Failed);
    let last = store.events_after(d.id, 405, 10).await.unwrap();
    assert_eq!(seqs(&last), [406]);
}

async fn events_after_pages_in_order(store: DynStore) {
    let d = deploy(&store, "web", "prod").await;
    let lines: Vec<EventData> = (0..20).map(|i| log(&format!("line {i}"))).collect();
    store.append(d.id, &lines, None).await.unwrap();
    let page = store.events_after(d.id, 5, 4).await.unwrap();
    assert_eq!(seqs(&page), [6, 7, 8, 9]);
    assert_eq!(page[0].data, log("line 4"));
    assert!(store.events_after(d.id, 21, 10).await.unwrap().is_empty());
    let other = deploy(&store, "web", "prod").await;
    assert_eq!(
        seqs(&store.events_after(other.id, 0, 100).await.unwrap()),
        [1]
    );
}

async fn append_after_the_end_is_refused(store: DynStore) {
    let d = deploy(&store, "web", "prod").await;
    let stored = store.append(d.id, &[log("one")], None).await.unwrap();
    assert_eq!(seqs(&stored), [2]);
    assert_eq!(stored[0].data, log("one"));
    let ended = step(&store, &d, State::Cancelled, VersionChange::Keep).await;
    assert!(
        matches!(store.append(d.id, &[log("late")], None).await, Err(StoreError::Ended(id)) if id == d.id)
    );
    let events = store.events_after(d.id, 0, 10).await.unwrap();
    assert_eq!(seqs(&events), [1, 2, 3]);
    assert!(events[2].data.is_final());
    assert_eq!(get(&store, d.id).await, ended);
}

async fn long_error_is_clipped_on_a_char_boundary(store: DynStore) {
    let d = deploy(&store, "web", "prod").await;
    let d = step(&store, &d, State::Building, VersionChange::Keep).await;
    let text = format!("x{}", "€".repeat(3500)); // 10,501 bytes, 3 per char after the first
    let change = Change::new(
        &d,
        State::Failed,
        Authority::Actor,
        VersionChange::Keep,
        now(),
    )
    .unwrap()
    .with_error(&text);
    let applied = store.transition(change).await.unwrap();
    let error = get(&store, d.id).await.error.expect("error stored");
    assert!(error.len() <= MAX_ERROR_BYTES && error.len() > MAX_ERROR_BYTES - 4);
    assert!(text.starts_with(&error));
    assert_eq!(applied.deployment.error.as_ref(), Some(&error));
    match applied.event.data {
        EventData::State(s) => assert_eq!(s.error, Some(error)),
        other => panic!("expected a state event, got {other:?}"),
    }
}

async fn superseded_by_is_stored(store: DynStore) {
    let old = deploy(&store, "web", "prod").await;
    let old = step(&store, &old, State::Building, VersionChange::Keep).await;
    let new = deploy(&store, "web", "prod").await;
    let change = Change::new(
        &old,
        State::Cancelled,
        Authority::Actor,
        VersionChange::Keep,
        now(),
    )
    .unwrap()
    .with_superseded_by(new.id)
    .with_error("superseded");
    let cancelled = store.transition(change).await.unwrap().deployment;
    assert_eq!(cancelled.superseded_by, Some(new.id));
    assert_eq!(cancelled.error.as_deref(), Some("superseded"));
    assert!(cancelled.finished_at.is_some());
    // The target is free again: the new one may start.
    step(&store, &new, State::Building, VersionChange::Keep).await;
}

async fn versions_are_minted_without_gaps(store: DynStore) {
    // Two clusters of one app build at the same time, three rounds each.
    let clusters = ["prod", "stage"].map(|cluster| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut minted = Vec::new();
            for _ in 0..3 {
                let d = deploy(&store, "web", cluster).await;
                let d = step(&store, &d, State::Building, VersionChange::Keep).await;
                let mint = VersionChange::Mint {
                    artifact: format!("art-{}", d.id),
                };
                let d = step(&store, &d, State::Pushing, mint).await;
                minted.push(d.version.clone().expect("minted"));
                // Free the target for the next round.
                step(&store, &d, State::Failed, VersionChange::Keep).await;
            }
            minted
        })
    });
    let mut minted: Vec<String> = futures::future::join_all(clusters)
        .await
        .into_iter()
        .flat_map(|r| r.expect("task"))
        .collect();
    minted.sort_by_key(|v| deployd::store::version_number(v));
    assert_eq!(minted, ["v1", "v2", "v3", "v4", "v5", "v6"]);

    // Every app counts on its own.
    let api = deploy(&store, "api", "prod").await;
    let api = step(&store, &api, State::Building, VersionChange::Keep).await;
    let api = step(
        &store,
        &api,
        State::Pushing,
        VersionChange::Mint {
            artifact: "a".into(),
        },
    )
    .await;
    assert_eq!(api.version.as_deref(), Some("v1"));
    assert!(store.version("api", "v2").await.unwrap().is_none());
    assert!(store.version("web", "v6").await.unwrap().is_some());
}

async fn versions_page_newest_first(store: DynStore) {
    let mut made = Vec::new();
    for _ in 0..5 {
        made.push(succeed(&store, "web", "prod").await);
    }
    let page = store.versions("web", None, 2).await.unwrap();
    let names: Vec<&str> = page.items.iter().map(|v| v.version.as_str()).collect();
    assert_eq!(names, ["v5", "v4"]);
    assert_eq!(page.items[0].deployment_id, made[4].id);
    assert_eq!(page.items[0].artifact, format!("artifact-{}", made[4].id));
    assert_eq!(page.next, Some(4));
    let page = store.versions("web", Some(4), 2).await.unwrap();
    let names: Vec<&str> = page.items.iter().map(|v| v.version.as_str()).collect();
    assert_eq!((names, page.next), (vec!["v3", "v2"], Some(2)));
    let page = store.versions("web", Some(2), 2).await.unwrap();
    let names: Vec<&str> = page.items.iter().map(|v| v.version.as_str()).collect();
    assert_eq!((names, page.next), (vec!["v1"], None));
    let all = store.versions("web", None, 5).await.unwrap();
    assert_eq!((all.items.len(), all.next), (5, None));
    assert!(
        store
            .versions("nothing", None, 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

async fn rollback_needs_a_known_version(store: DynStore) {
    let v1 = succeed(&store, "web", "prod").await;
    succeed(&store, "web", "prod").await;
    succeed(&store, "api", "prod").await;
    succeed(&store, "api", "prod").await;
    succeed(&store, "api", "prod").await;

    let r = create(&store, new_rollback("web", "prod", "v3")).await;
    let unknown = Change::new(
        &r,
        State::Activating,
        Authority::Actor,
        VersionChange::Set("v3".into()),
        now(),
    )
    .unwrap();
    match store.transition(unknown).await {
        // v3 exists only for api: a version of another app cannot be named.
        Err(StoreError::UnknownVersion { app, version }) => {
            assert_eq!((app.as_str(), version.as_str()), ("web", "v3"))
        }
        other => panic!("expected UnknownVersion, got {other:?}"),
    }
    assert_eq!(
        get(&store, r.id).await,
        r,
        "a refused rollback changed nothing"
    );

    let r = step(
        &store,
        &r,
        State::Activating,
        VersionChange::Set("v1".into()),
    )
    .await;
    assert_eq!(r.version.as_deref(), Some("v1"));
    assert!(r.started_at.is_some());
    let r = step(&store, &r, State::Succeeded, VersionChange::Keep).await;
    assert!(r.active);
    let target = store.target("web", "prod").await.unwrap();
    let active = target.active.expect("active");
    assert_eq!(
        (active.version.as_str(), active.deployment_id),
        ("v1", r.id)
    );
    // The version still names the deployment that built it.
    assert_eq!(
        store
            .version("web", "v1")
            .await
            .unwrap()
            .unwrap()
            .deployment_id,
        v1.id
    );
}

async fn succeeded_moves_the_active_pointer(store: DynStore) {
    let first = succeed(&store, "web", "prod").await;
    assert!(first.active);
    let target = store.target("web", "prod").await.unwrap();
    let active = target.active.expect("active");
    assert_eq!(
        (active.version.as_str(), active.deployment_id),
        ("v1", first.id)
    );
    assert_eq!(Some(active.since), first.finished_at);

    let failed = deploy(&store, "web", "prod").await;
    step(&store, &failed, State::Failed, VersionChange::Keep).await;
    assert!(
        get(&store, first.id).await.active,
        "a failure leaves the pointer alone"
    );

    let second = succeed(&store, "web", "prod").await;
    assert!(second.active);
    assert!(
        !get(&store, first.id).await.active,
        "the old one is no longer active"
    );
    let active = store
        .target("web", "prod")
        .await
        .unwrap()
        .active
        .expect("active");
    assert_eq!(
        (active.version.as_str(), active.deployment_id),
        ("v2", second.id)
    );

    // Another cluster of the same app has its own pointer.
    let stage = succeed(&store, "web", "stage").await;
    assert_eq!(stage.version.as_deref(), Some("v3"));
    assert!(get(&store, second.id).await.active && stage.active);

    let history = store
        .history(&HistoryQuery {
            app: "web".into(),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    let active: Vec<Uuid> = history
        .items
        .iter()
        .filter(|d| d.active)
        .map(|d| d.id)
        .collect();
    assert_eq!(active, [stage.id, second.id]);
}

async fn previous_version_is_the_one_before_active(store: DynStore) {
    assert!(
        store
            .previous_version("web", "prod")
            .await
            .unwrap()
            .is_none()
    );
    let v1 = succeed(&store, "web", "prod").await;
    assert!(
        store
            .previous_version("web", "prod")
            .await
            .unwrap()
            .is_none(),
        "nothing before the first"
    );
    succeed(&store, "web", "prod").await;
    let previous = store
        .previous_version("web", "prod")
        .await
        .unwrap()
        .expect("v1");
    assert_eq!(
        (previous.version.as_str(), previous.deployment_id),
        ("v1", v1.id)
    );
    assert_eq!(previous.artifact, format!("artifact-{}", v1.id));

    // Other clusters do not count.
    succeed(&store, "web", "stage").await;
    assert_eq!(
        store
            .previous_version("web", "prod")
            .await
            .unwrap()
            .unwrap()
            .version,
        "v1"
    );

    // After rolling back to v1, the one before is v2.
    let r = create(&store, new_rollback("web", "prod", "v1")).await;
    let r = step(
        &store,
        &r,
        State::Activating,
        VersionChange::Set("v1".into()),
    )
    .await;
    step(&store, &r, State::Succeeded, VersionChange::Keep).await;
    assert_eq!(
        store
            .previous_version("web", "prod")
            .await
            .unwrap()
            .unwrap()
            .version,
        "v2"
    );
}

async fn leases_renew_expire_and_belong(store: DynStore) {
    let at = now();
    let start = |app: &'static str, owner: &'static str, expires_at: DateTime<Utc>| {
        let store = store.clone();
        async move {
            let d = deploy(&store, app, "prod").await;
            let lease = Lease {
                owner: owner.into(),
                expires_at,
            };
            let change = Change::new(
                &d,
                State::Building,
                Authority::Actor,
                VersionChange::Keep,
                at,
            )
            .unwrap()
            .with_lease(lease)
            .with_deadline(at + Duration::minutes(10));
            store.transition(change).await.unwrap().deployment
        }
    };
    let fresh = start("web", "a", at + Duration::seconds(15)).await;
    let lapsed = start("api", "b", at - Duration::seconds(1)).await;
    let also_a = start("db", "a", at + Duration::seconds(15)).await;
    deploy(&store, "queued", "prod").await;

    let expired = store.expired_leases(at).await.unwrap();
    assert_eq!(expired.len(), 1);
    assert_eq!(expired[0].deployment.id, lapsed.id);
    assert_eq!(expired[0].owner.as_deref(), Some("b"));
    assert_eq!(expired[0].lease_expires_at, Some(at - Duration::seconds(1)));
    assert_eq!(expired[0].phase_deadline, Some(at + Duration::minutes(10)));

    let mut owned: Vec<Uuid> = store
        .owned_by("a")
        .await
        .unwrap()
        .iter()
        .map(|l| l.deployment.id)
        .collect();
    owned.sort();
    assert_eq!(owned, [fresh.id, also_a.id]);

    // Only the owner's running rows are renewed.
    let later = at + Duration::seconds(30);
    assert_eq!(
        store
            .renew_leases("a", &[fresh.id, lapsed.id], later)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store.renew_leases("b", &[lapsed.id], later).await.unwrap(),
        1
    );
    assert_eq!(store.renew_leases("b", &[], later).await.unwrap(), 0);
    assert!(store.expired_leases(at).await.unwrap().is_empty());
    let leases = store
        .expired_leases(at + Duration::seconds(20))
        .await
        .unwrap();
    assert_eq!(
        leases.iter().map(|l| l.deployment.id).collect::<Vec<_>>(),
        [also_a.id]
    );

    // The lease moves with the phase and ends with the deployment.
    let moved = Change::new(
        &fresh,
        State::Pushing,
        Authority::Actor,
        VersionChange::Mint {
            artifact: "x".into(),
        },
        now(),
    )
    .unwrap()
    .with_lease(Lease {
        owner: "c".into(),
        expires_at: later,
    });
    store.transition(moved).await.unwrap();
    assert_eq!(
        store.owned_by("c").await.unwrap()[0].phase_deadline,
        None,
        "the new phase set no deadline"
    );
    let interrupted = Change::new(
        &lapsed,
        State::Interrupted,
        Authority::Reconciler,
        VersionChange::Keep,
        now(),
    )
    .unwrap();
    store.transition(interrupted).await.unwrap();
    assert!(store.owned_by("b").await.unwrap().is_empty());
    assert_eq!(
        store.renew_leases("b", &[lapsed.id], later).await.unwrap(),
        0,
        "an ended deployment has no lease"
    );
    assert!(
        store
            .expired_leases(later + Duration::hours(1))
            .await
            .unwrap()
            .iter()
            .all(|l| l.deployment.id != lapsed.id)
    );
}

async fn queued_targets_lists_waiting_targets(store: DynStore) {
    assert!(store.queued_targets().await.unwrap().is_empty());
    deploy(&store, "web", "prod").await;
    deploy(&store, "web", "prod").await;
    deploy(&store, "web", "stage").await;
    let running = deploy(&store, "api", "prod").await;
    step(&store, &running, State::Building, VersionChange::Keep).await;
    let ended = deploy(&store, "db", "prod").await;
    step(&store, &ended, State::Cancelled, VersionChange::Keep).await;
    let mut targets = store.queued_targets().await.unwrap();
    targets.sort();
    let expected = [("web", "prod"), ("web", "stage")].map(|(a, c)| (a.to_string(), c.to_string()));
    assert_eq!(targets, expected);
}

async fn history_cursor_walks_a_thousand_rows(store: DynStore) {
    let clusters = ["c0", "c1", "c2", "c3"];
    let mut all = Vec::with_capacity(1000);
    for i in 0..1000 {
        let d = deploy(&store, "big", clusters[i % 4]).await;
        let d = match i % 7 {
            0 => step(&store, &d, State::Cancelled, VersionChange::Keep).await,
            3 => step(&store, &d, State::Failed, VersionChange::Keep).await,
            _ => d,
        };
        all.push(d);
    }
    deploy(&store, "small", "c0").await;
    all.sort_by_key(|d| std::cmp::Reverse(d.id));

    let filters = [
        (None, None),
        (Some("c1"), None),
        (None, Some(State::Cancelled)),
        (Some("c3"), Some(State::Queued)),
        (Some("c2"), Some(State::Failed)),
    ];
    for (cluster, state) in filters {
        let expected: Vec<Uuid> = all
            .iter()
            .filter(|d| cluster.is_none_or(|c| d.cluster == c))
            .filter(|d| state.is_none_or(|s| d.state == s))
            .map(|d| d.id)
            .collect();
        assert!(!expected.is_empty());
        for limit in [37, 500] {
            let mut walked = Vec::new();
            let mut before = None;
            loop {
                let query = HistoryQuery {
                    app: "big".into(),
                    cluster: cluster.map(String::from),
                    state,
                    limit,
                    before,
                };
                let page = store.history(&query).await.unwrap();
                assert!(page.items.len() <= limit as usize);
                walked.extend(page.items.iter().map(|d| d.id));
                match page.next {
                    Some(next) => {
                        assert_eq!(Some(next), page.items.last().map(|d| d.id));
                        before = Some(next);
                    }
                    None => break,
                }
            }
            let unique: HashSet<Uuid> = walked.iter().copied().collect();
            assert_eq!(
                unique.len(),
                walked.len(),
                "no duplicates ({cluster:?}, {state:?}, {limit})"
            );
            assert_eq!(
                walked, expected,
                "no gaps, newest first ({cluster:?}, {state:?}, {limit})"
            );
        }
    }
    // Rows come back whole, with derived fields.
    let page = store
        .history(&HistoryQuery {
            app: "big".into(),
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 500, "a page never exceeds MAX_PAGE");
    assert_eq!(page.items[0], get(&store, all[0].id).await);
}

async fn ping_answers(store: DynStore) {
    store.ping().await.unwrap();
}

// ---------------------------------------------------------------- SQLite's own guards

/// The schema itself, not only the store's code, refuses a second running
/// deployment per target and a versionless `activating` row.
#[tokio::test]
async fn sqlite_schema_refuses_what_the_machine_forbids() {
    let (_store, dir) = crate::support::sqlite_store().await;
    let conn = rusqlite::Connection::open(dir.path().join("data").join("deployd.db")).unwrap();
    let insert = |cluster: &str, state: &str| {
        conn.execute(
            "INSERT INTO deployments (id, app, cluster, kind, state, deployed_by, created_at)
             VALUES (?1, 'web', ?2, 'deploy', ?3, 'raw', '2026-01-01T00:00:00.000000Z')",
            rusqlite::params![Uuid::now_v7().to_string(), cluster, state],
        )
    };
    insert("prod", "building").expect("the first running row");
    let second = insert("prod", "pushing").expect_err("a second running row");
    assert!(second.to_string().contains("UNIQUE"), "{second}");
    insert("stage", "pushing").expect("another target runs on its own");
    let versionless = insert("dev", "activating").expect_err("activating needs a version");
    assert!(versionless.to_string().contains("CHECK"), "{versionless}");
    let succeeded = insert("dev", "succeeded").expect_err("succeeded needs a version");
    assert!(succeeded.to_string().contains("CHECK"), "{succeeded}");
    insert("prod", "queued").expect("queued rows are many");
    insert("prod", "queued").expect("queued rows are many");
}

/// Reopening applies nothing twice and keeps the data; ids and times are
/// stored as the fixed-width text whose order is time order.
#[tokio::test]
async fn sqlite_reopens_and_stores_sortable_text() {
    let (store, dir) = crate::support::sqlite_store().await;
    let d = deploy(&store, "web", "prod").await;
    drop(store);
    let path = dir.path().join("data").join("deployd.db");
    let reopened = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || deployd::store::sqlite::SqliteStore::open(&path))
            .await
            .unwrap()
            .expect("reopen")
    };
    assert_eq!(reopened.get(d.id).await.unwrap(), Some(d.clone()));

    let conn = rusqlite::Connection::open(&path).unwrap();
    let migrations: i64 = conn
        .query_row("SELECT count(*) FROM schema_migrations", [], |r| r.get(0))
        .unwrap();
    assert_eq!(migrations, deployd::store::sqlite::MIGRATIONS.len() as i64);
    let (id, created_at): (String, String) = conn
        .query_row("SELECT id, created_at FROM deployments", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!(id, d.id.hyphenated().to_string());
    assert_eq!(
        created_at,
        d.created_at
            .format(deployd::store::sqlite::TIME_FORMAT)
            .to_string()
    );
    assert_eq!(created_at.len(), "2026-01-01T00:00:00.000000Z".len());
}
