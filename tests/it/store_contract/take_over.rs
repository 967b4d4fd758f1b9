//! The take-over part of the contract: an instance adopts a running
//! deployment whose owner stopped renewing its lease (or extends its own
//! deadline) with one compare-and-set on the state and the holder.

use super::{deploy, now, step};
use chrono::Duration;
use deployd::machine::{Authority, State};
use deployd::store::{Change, DynStore, Holder, Lease, VersionChange};

pub async fn take_over_wins_once_and_only_a_lapsed_or_own_lease(store: DynStore) {
    let at = now();
    let d = deploy(&store, "web", "prod").await;
    let lapsed = Lease {
        owner: "dead".into(),
        expires_at: at - Duration::seconds(1),
    };
    let change = Change::new(
        &d,
        State::Building,
        Authority::Actor,
        VersionChange::Keep,
        at,
    )
    .unwrap()
    .with_lease(lapsed)
    .with_deadline(at + Duration::minutes(1));
    let building = store.transition(change).await.unwrap().deployment;
    let d = step(
        &store,
        &building,
        State::Pushing,
        VersionChange::Mint {
            artifact: "a".into(),
        },
    )
    .await;
    let d = step(&store, &d, State::Activating, VersionChange::Keep).await;
    let lease = |owner: &str| Lease {
        owner: owner.into(),
        expires_at: at + Duration::seconds(30),
    };
    let deadline = Some(at + Duration::minutes(5));
    let lapsed_before = Holder::LapsedBefore(at);

    // The wrong state, or a lease that has not lapsed, is not taken.
    let wrong_state = lease("a");
    let wrong_state = store.take_over(d.id, State::Pushing, &lapsed_before, &wrong_state, deadline);
    assert!(!wrong_state.await.unwrap());
    let early = Holder::LapsedBefore(at - Duration::minutes(1));
    assert!(
        !store
            .take_over(d.id, State::Activating, &early, &lease("a"), deadline)
            .await
            .unwrap()
    );

    // Of two instances taking it over, the first wins and the second sees a live lease.
    assert!(
        store
            .take_over(
                d.id,
                State::Activating,
                &lapsed_before,
                &lease("a"),
                deadline
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .take_over(
                d.id,
                State::Activating,
                &lapsed_before,
                &lease("b"),
                deadline
            )
            .await
            .unwrap()
    );
    let owned = store.owned_by("a").await.unwrap();
    assert_eq!(owned.len(), 1);
    assert_eq!(owned[0].lease_expires_at, Some(at + Duration::seconds(30)));
    assert_eq!(owned[0].phase_deadline, deadline);
    assert!(store.owned_by("dead").await.unwrap().is_empty());

    // The owner extends its own deadline; no one else can.
    let later = Some(at + Duration::minutes(9));
    let other = Holder::Owner("b".into());
    assert!(
        !store
            .take_over(d.id, State::Activating, &other, &lease("b"), later)
            .await
            .unwrap()
    );
    let own = Holder::Owner("a".into());
    assert!(
        store
            .take_over(d.id, State::Activating, &own, &lease("a"), later)
            .await
            .unwrap()
    );
    assert_eq!(store.owned_by("a").await.unwrap()[0].phase_deadline, later);

    // An ended deployment is never taken.
    let ended = Change::new(
        &d,
        State::Interrupted,
        Authority::Reconciler,
        VersionChange::Keep,
        now(),
    )
    .unwrap();
    store.transition(ended).await.unwrap();
    assert!(
        !store
            .take_over(d.id, State::Activating, &own, &lease("a"), later)
            .await
            .unwrap()
    );
    let far = Holder::LapsedBefore(at + Duration::hours(1));
    assert!(
        !store
            .take_over(d.id, State::Activating, &far, &lease("a"), later)
            .await
            .unwrap()
    );
}
