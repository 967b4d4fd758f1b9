//! Target ownership in the store (PostgreSQL: the embedded store serves one
//! instance): a lease per target with an epoch that goes up each time the
//! owner changes, and writes that carry the epoch they were given, so a
//! former owner (paused, cut off) writes nothing once another took over.

use crate::support::pg::pg_store;
use deployd::machine::{Authority, Kind, State};
use deployd::model::{Drift, EventData, LogLine};
use deployd::store::{
    Change, Created, DynStore, Fence, NewDeployment, Ownership, StoreError, VersionChange,
};
use std::time::Duration;
use uuid::Uuid;

const LONG: Duration = Duration::from_secs(60);
/// A lease that has lapsed by the time the next statement runs.
const BLINK: Duration = Duration::from_millis(1);

fn new_deploy(fence: &Fence) -> NewDeployment {
    NewDeployment {
        id: Uuid::now_v7(),
        app: "web".into(),
        cluster: "prod".into(),
        kind: Kind::Deploy,
        source: Some("ab".repeat(32)),
        rollback_to: None,
        git: None,
        message: String::new(),
        deployed_by: "ci".into(),
        idempotency_key: None,
        request_hash: "h".into(),
        created_at: chrono::Utc::now(),
        fence: Some(fence.clone()),
    }
}

async fn acquire(store: &DynStore, owner: &str, ttl: Duration) -> Ownership {
    store
        .acquire_target("web", "prod", owner, ttl, None)
        .await
        .expect("acquire")
}

fn ours(ownership: Ownership) -> Fence {
    match ownership {
        Ownership::Ours(fence) => fence,
        other => panic!("expected to own the target: {other:?}"),
    }
}

fn fenced<T: std::fmt::Debug>(result: Result<T, StoreError>) {
    assert!(
        matches!(&result, Err(StoreError::Fenced { app, cluster }) if app == "web" && cluster == "prod"),
        "{result:?}"
    );
}

/// A took the target; its lease lapsed (it was paused); B took it.
async fn taken_from_a() -> (DynStore, crate::support::pg::TestDatabase, Fence, Fence) {
    let (store, db) = pg_store().await;
    store.heartbeat("A", "http://a", "", LONG).await.unwrap();
    store.heartbeat("B", "http://b", "", LONG).await.unwrap();
    let a = ours(acquire(&store, "A", BLINK).await);
    tokio::time::sleep(Duration::from_millis(20)).await;
    let b = ours(acquire(&store, "B", LONG).await);
    (store, db, a, b)
}

#[tokio::test]
async fn a_former_owner_writes_nothing_once_another_took_the_target() {
    let (store, _db, a, b) = taken_from_a().await;
    assert_eq!(
        (a.epoch, b.epoch),
        (1, 2),
        "the epoch goes up with the owner"
    );
    // A asking again learns who owns it, and where.
    assert_eq!(
        acquire(&store, "A", LONG).await,
        Ownership::Elsewhere {
            owner: "B".into(),
            address: Some("http://b".into())
        }
    );

    // B created and started a deployment; A, paused meanwhile, now tries
    // every write it could have had in flight.
    let Created::New(d) = store.create(new_deploy(&b)).await.unwrap() else {
        panic!("created")
    };
    fenced(store.create(new_deploy(&a)).await);
    let start = |fence: &Fence| {
        Change::new(
            &d,
            State::Building,
            Authority::Actor,
            VersionChange::Keep,
            d.created_at,
        )
        .unwrap()
        .with_fence(Some(fence.clone()))
    };
    fenced(store.transition(start(&a)).await);
    let started = store
        .transition(start(&b))
        .await
        .expect("B starts it")
        .deployment;
    let line = EventData::Log(LogLine {
        step: "build".into(),
        stream: "stdout".into(),
        line: "late".into(),
    });
    fenced(
        store
            .append(d.id, std::slice::from_ref(&line), Some(&a))
            .await,
    );
    let drift = Drift {
        version: None,
        error: "x".into(),
        deployment_id: d.id,
        since: d.created_at,
    };
    fenced(store.set_drift("web", "prod", Some(&drift), Some(&a)).await);
    fenced(store.set_drift("web", "prod", None, Some(&a)).await);
    let end = Change::new(
        &started,
        State::Failed,
        Authority::Actor,
        VersionChange::Keep,
        d.created_at,
    )
    .unwrap()
    .with_fence(Some(a.clone()));
    fenced(store.transition(end).await);

    // Nothing of A's landed: one deployment, B's state, B's events only.
    let row = store.get(d.id).await.unwrap().unwrap();
    assert_eq!(row.state, State::Building);
    let events = store.events_after(d.id, 0, 100).await.unwrap();
    assert_eq!(events.len(), 2, "{events:?}");
    assert!(store.drifted().await.unwrap().is_empty());
    let view = store.target("web", "prod").await.unwrap();
    assert!(view.queued.is_empty());
    // B's writes go through.
    store
        .append(d.id, &[line], Some(&b))
        .await
        .expect("B appends");
    // The heartbeats tell each instance what it holds.
    assert!(
        store
            .heartbeat("A", "http://a", "", LONG)
            .await
            .unwrap()
            .is_empty()
    );
    let held = store.heartbeat("B", "http://b", "", LONG).await.unwrap();
    assert_eq!((held.len(), held[0].epoch), (1, 2));
}

#[tokio::test]
async fn epochs_only_go_up_and_a_release_hands_over_at_once() {
    let (store, _db) = pg_store().await;
    let a = ours(acquire(&store, "A", LONG).await);
    assert_eq!(
        ours(acquire(&store, "A", LONG).await),
        a,
        "re-taking keeps the epoch"
    );
    assert!(matches!(
        acquire(&store, "B", LONG).await,
        Ownership::Elsewhere { .. }
    ));
    store.release_target("web", "prod", &a).await.unwrap();
    let b = ours(acquire(&store, "B", LONG).await);
    assert_eq!(b.epoch, a.epoch + 1);
    // A stale release (A's fence) does not free B's target.
    store.release_target("web", "prod", &a).await.unwrap();
    assert!(matches!(
        acquire(&store, "A", LONG).await,
        Ownership::Elsewhere { .. }
    ));
    // An owner shown dead (its phase ran past the deadline) can be taken from.
    let taken = store
        .acquire_target("web", "prod", "C", LONG, Some("B"))
        .await
        .unwrap();
    assert_eq!(ours(taken).epoch, b.epoch + 1);
}

#[tokio::test]
async fn a_retired_instance_leaves_its_targets_orphaned_for_the_others() {
    let (store, _db) = pg_store().await;
    store.heartbeat("A", "http://a", "", LONG).await.unwrap();
    let a = ours(acquire(&store, "A", LONG).await);
    store.create(new_deploy(&a)).await.unwrap();
    assert!(
        store.orphaned_targets().await.unwrap().is_empty(),
        "A owns it"
    );
    let listed = store.instances().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].id.as_str(), listed[0].targets.len()), ("A", 1));

    store.retire_instance("A").await.unwrap();
    assert!(store.instances().await.unwrap().is_empty());
    assert_eq!(
        store.orphaned_targets().await.unwrap(),
        vec![("web".to_string(), "prod".to_string())]
    );
    let b = ours(acquire(&store, "B", LONG).await);
    assert_eq!(b.epoch, a.epoch + 1);
}
