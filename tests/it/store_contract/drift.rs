//! The drift part of the contract: a target whose restore failed is marked
//! drifted until a restore works or a deployment of it succeeds, and the
//! mark belongs to its (app, cluster) only.

use super::{now, succeed};
use deployd::model::Drift;
use deployd::store::DynStore;
use uuid::Uuid;

fn drift(version: Option<&str>, error: &str) -> Drift {
    Drift {
        version: version.map(str::to_string),
        error: error.to_string(),
        deployment_id: Uuid::now_v7(),
        since: now(),
    }
}

async fn drift_of(store: &DynStore, app: &str, cluster: &str) -> Option<Drift> {
    store.target(app, cluster).await.expect("target").drift
}

pub async fn drift_is_set_replaced_cleared_and_undone_by_a_success(store: DynStore) {
    let v1 = succeed(&store, "web", "prod").await;
    assert_eq!(drift_of(&store, "web", "prod").await, None);

    let first = drift(v1.version.as_deref(), "restore step failed (exit 1)");
    store
        .set_drift("web", "prod", Some(&first), None)
        .await
        .expect("set");
    assert_eq!(drift_of(&store, "web", "prod").await, Some(first));
    assert_eq!(drift_of(&store, "web", "staging").await, None, "per target");

    // A second failed restore replaces the record; nothing active is `None`.
    let second = drift(None, "restore step timed out after 1m");
    store
        .set_drift("web", "prod", Some(&second), None)
        .await
        .expect("replace");
    assert_eq!(drift_of(&store, "web", "prod").await, Some(second.clone()));

    // A restore that works clears it.
    store
        .set_drift("web", "prod", None, None)
        .await
        .expect("clear");
    assert_eq!(drift_of(&store, "web", "prod").await, None);
    store
        .set_drift("web", "prod", None, None)
        .await
        .expect("clear twice");

    // So does the next success of the target, and of that target only.
    store
        .set_drift("web", "prod", Some(&second), None)
        .await
        .expect("set");
    store
        .set_drift("web", "staging", Some(&second), None)
        .await
        .expect("set");
    let listed = |store: &DynStore| {
        let store = store.clone();
        async move {
            let drifted = store.drifted().await.expect("drifted");
            drifted
                .into_iter()
                .map(|t| (t.app, t.cluster, t.drift))
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(
        listed(&store).await,
        vec![
            ("web".to_string(), "prod".to_string(), second.clone()),
            ("web".to_string(), "staging".to_string(), second.clone()),
        ],
        "every drifted target, by app and cluster"
    );
    succeed(&store, "web", "prod").await;
    assert_eq!(drift_of(&store, "web", "prod").await, None);
    assert_eq!(
        drift_of(&store, "web", "staging").await,
        Some(second.clone())
    );
    assert_eq!(
        listed(&store).await,
        vec![("web".to_string(), "staging".to_string(), second)]
    );
}
