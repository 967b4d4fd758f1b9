//! Short ids (#15): deployments found by a prefix of their id's random part,
//! and the targets listing behind `GET /v1/apps`.

use super::{create, new_deploy, step, succeed};
use deployd::machine::State;
use deployd::model::{TargetSummary, random_part};
use deployd::store::{DynStore, VersionChange};
use uuid::Uuid;

/// A UUIDv7 of now whose random part is `random` (19 hex digits; the 4th
/// carries the variant, so 8, 9, a or b).
pub fn id_with_random_part(random: &str) -> Uuid {
    assert_eq!(random.len(), 19);
    let time = &Uuid::now_v7().simple().to_string()[..12];
    Uuid::parse_str(&format!("{time}7{random}")).expect("a uuid")
}

async fn create_with_random_part(store: &DynStore, app: &str, random: &str) -> Uuid {
    let id = id_with_random_part(random);
    let new = deployd::store::NewDeployment {
        id,
        ..new_deploy(app, "prod")
    };
    create(store, new).await.id
}

pub async fn short_id_prefixes_find_their_deployments(store: DynStore) {
    let a = create_with_random_part(&store, "web", "abc8ef0000000000001").await;
    let b = create_with_random_part(&store, "api", "abc8ef0000000000002").await;
    let c = create_with_random_part(&store, "web", "abc8ff0000000000001").await;
    let _other = create_with_random_part(&store, "web", "0bc8ef0000000000001").await;
    for _ in 0..20 {
        create(&store, new_deploy("web", "prod")).await;
    }
    let ids = |found: Vec<deployd::model::Deployment>| -> Vec<Uuid> {
        found.into_iter().map(|d| d.id).collect()
    };
    assert_eq!(ids(store.by_short_id("abc8ef", 10).await.unwrap()), [a, b]);
    assert_eq!(
        ids(store.by_short_id("abc8ef00", 10).await.unwrap()),
        [a, b]
    );
    assert_eq!(ids(store.by_short_id("abc8ff", 10).await.unwrap()), [c]);
    assert_eq!(ids(store.by_short_id("abc8", 10).await.unwrap()), [a, b, c]);
    assert_eq!(ids(store.by_short_id("abc8", 2).await.unwrap()).len(), 2);
    assert_eq!(
        ids(store.by_short_id(&random_part(&b), 10).await.unwrap()),
        [b],
        "all 19 digits"
    );
    assert!(store.by_short_id("abc8f0", 10).await.unwrap().is_empty());
    assert!(store.by_short_id("ffffff", 10).await.unwrap().is_empty());
    let found = store.by_short_id("abc8ef0000000000002", 1).await.unwrap();
    assert_eq!(found[0].app, "api", "whole deployments come back");
}

pub async fn target_summaries_list_each_target_once(store: DynStore) {
    assert!(store.target_summaries(10).await.unwrap().is_empty());
    let live = succeed(&store, "web", "prod").await;
    create(&store, new_deploy("web", "prod")).await;
    let running = create(&store, new_deploy("web", "stage")).await;
    step(&store, &running, State::Building, VersionChange::Keep).await;
    let ended = create(&store, new_deploy("api", "prod")).await;
    step(&store, &ended, State::Failed, VersionChange::Keep).await;
    let summary = |app: &str, cluster: &str, active: Option<&str>, running: bool| TargetSummary {
        app: app.into(),
        cluster: cluster.into(),
        active_version: active.map(str::to_string),
        running,
    };
    let all = vec![
        summary("api", "prod", None, false),
        summary("web", "prod", live.version.as_deref(), false),
        summary("web", "stage", None, true),
    ];
    assert_eq!(store.target_summaries(10).await.unwrap(), all);
    assert_eq!(store.target_summaries(2).await.unwrap(), all[..2]);
}
