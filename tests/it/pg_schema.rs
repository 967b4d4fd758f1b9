//! The PostgreSQL schema on its own: what the database itself refuses,
//! whatever the code does, how migrations behave when instances start
//! together, and which plan the history query gets on a big table.

use crate::support::pg::{self, connect, describe, empty_database, fresh_database};
use deployd::store::postgres::{BY_SHORT_ID, MIGRATIONS, PgStore, history_sql};
use deployd::store::{HistoryQuery, Store, StoreError};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Error};
use uuid::Uuid;

/// Insert a deployment of `web` by hand, bypassing the store; states that
/// need a version get `v1`.
async fn insert(client: &Client, cluster: &str, state: &str) -> Result<u64, Error> {
    insert_with(client, cluster, state, None).await
}

async fn insert_with(
    client: &Client,
    cluster: &str,
    state: &str,
    version: Option<&str>,
) -> Result<u64, Error> {
    client
        .execute(
            "INSERT INTO deployments (id, app, cluster, kind, state, version, deployed_by, created_at) \
             VALUES ($1, 'web', $2, 'deploy', $3, $4, 'test', now())",
            &[&Uuid::now_v7(), &cluster, &state, &version],
        )
        .await
}

/// Record `v1` of `web`, so rows may name it.
async fn mint_v1(client: &Client) {
    client
        .execute(
            "INSERT INTO versions (app, number, version, artifact, deployment_id, created_at) \
             VALUES ('web', 1, 'v1', 'artifact-1', $1, now())",
            &[&Uuid::now_v7()],
        )
        .await
        .expect("a version row");
}

fn refused_by(result: Result<u64, Error>, code: &SqlState, constraint: &str) {
    let error = result.expect_err("the database should refuse this row");
    let message = describe(&error);
    assert_eq!(error.code(), Some(code), "{message}");
    let db = error.as_db_error().expect("a database error");
    assert_eq!(db.constraint(), Some(constraint), "{message}");
}

#[tokio::test]
async fn database_refuses_a_second_running_deployment_per_target() {
    let database = fresh_database().await;
    let client = connect(database.url()).await;
    mint_v1(&client).await;
    insert(&client, "prod", "building")
        .await
        .expect("the first one is fine");
    for state in ["building", "pushing", "activating"] {
        refused_by(
            insert_with(&client, "prod", state, Some("v1")).await,
            &SqlState::UNIQUE_VIOLATION,
            "deployments_one_running",
        );
    }
    // Other targets and other states are not held by it.
    insert(&client, "staging", "building")
        .await
        .expect("another cluster");
    insert(&client, "prod", "queued")
        .await
        .expect("a queued one");
    insert(&client, "prod", "failed")
        .await
        .expect("an ended one");
}

#[tokio::test]
async fn database_refuses_activating_or_succeeded_without_a_version() {
    let database = fresh_database().await;
    let client = connect(database.url()).await;
    for state in ["activating", "succeeded"] {
        refused_by(
            insert(&client, "prod", state).await,
            &SqlState::CHECK_VIOLATION,
            "deployments_version_required",
        );
    }
    mint_v1(&client).await;
    insert_with(&client, "prod", "succeeded", Some("v1"))
        .await
        .expect("with a version");
    insert(&client, "prod", "pushing")
        .await
        .expect("pushing needs no version");
    let moved = client
        .execute(
            "UPDATE deployments SET state = 'activating' WHERE state = 'pushing'",
            &[],
        )
        .await;
    refused_by(
        moved,
        &SqlState::CHECK_VIOLATION,
        "deployments_version_required",
    );
}

#[tokio::test]
async fn instances_starting_together_migrate_once() {
    let database = empty_database().await;
    let url = database.url();
    let (a, b, c) = tokio::join!(
        PgStore::connect(url),
        PgStore::connect(url),
        PgStore::connect(url)
    );
    for store in [a, b, c] {
        store
            .expect("every instance starts")
            .ping()
            .await
            .expect("and answers");
    }
    let client = connect(url).await;
    let applied: i64 = client
        .query_one("SELECT count(*) FROM schema_migrations", &[])
        .await
        .expect("schema_migrations exists")
        .get(0);
    assert_eq!(applied, MIGRATIONS.len() as i64);
    // No advisory lock outlives its transaction.
    let locks: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'",
            &[],
        )
        .await
        .expect("pg_locks")
        .get(0);
    assert_eq!(locks, 0);
}

#[tokio::test]
async fn a_database_from_a_newer_deployd_is_refused() {
    let database = fresh_database().await;
    let client = connect(database.url()).await;
    client
        .execute(
            "INSERT INTO schema_migrations (number, name) VALUES (9999, 'future')",
            &[],
        )
        .await
        .expect("recording a future migration");
    let refused = PgStore::connect(database.url()).await.err();
    assert!(matches!(refused, Some(StoreError::Backend(message)) if message.contains("9999")));
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
    let refused = PgStore::connect(&url).await.err();
    assert!(
        matches!(refused, Some(StoreError::Unavailable(_))),
        "{refused:?}"
    );
}

/// 50,000 failed deployments over 50 apps and 5 clusters, analyzed: a
/// table big enough that the planner prefers an index when one fits.
async fn fill_50k(client: &Client) {
    client
        .batch_execute(
            "INSERT INTO deployments (id, app, cluster, kind, state, deployed_by, created_at)
             SELECT gen_random_uuid(), 'app' || (i % 50), 'c' || (i % 5), 'deploy', 'failed', 'x', now()
             FROM generate_series(1, 50000) AS i;
             ANALYZE deployments;",
        )
        .await
        .expect("filling the table");
}

#[tokio::test]
async fn history_uses_the_keyset_indexes_on_a_big_table() {
    let (store, database) = pg::pg_store().await;
    let client = connect(database.url()).await;
    fill_50k(&client).await;
    let target = HistoryQuery {
        app: "app7".into(),
        cluster: Some("c2".into()),
        limit: 20,
        before: Some(Uuid::max()),
        ..HistoryQuery::default()
    };
    let by_app = HistoryQuery {
        cluster: None,
        state: Some(deployd::machine::State::Failed),
        ..target.clone()
    };
    for (query, index) in [
        (&target, "deployments_target_history"),
        (&by_app, "deployments_app_history"),
    ] {
        let (sql, params) = history_sql(query);
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN {sql}"), &params)
            .await
            .expect("EXPLAIN")
            .iter()
            .map(|row| row.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains(index), "expected {index} in:\n{plan}");
        assert!(!plan.contains("Seq Scan on deployments"), "{plan}");
        let page = store.history(query).await.expect("history");
        assert_eq!(page.items.len(), 20);
        assert!(page.items.windows(2).all(|w| w[0].id > w[1].id));
    }
}

#[tokio::test]
async fn short_id_prefixes_use_the_random_part_index_on_a_big_table() {
    let (store, database) = pg::pg_store().await;
    let client = connect(database.url()).await;
    fill_50k(&client).await;
    let some: Uuid = client
        .query_one("SELECT id FROM deployments LIMIT 1", &[])
        .await
        .expect("a deployment")
        .get(0);
    let prefix = deployd::model::short_id(&some)[..6].to_string();
    // A generic plan too: the server may switch to one after five runs.
    client
        .batch_execute("SET plan_cache_mode = force_generic_plan")
        .await
        .expect("generic plans");
    let end = format!("{prefix}g");
    let plan: Vec<String> = client
        .query(&format!("EXPLAIN {BY_SHORT_ID}"), &[&prefix, &end, &10i64])
        .await
        .expect("EXPLAIN")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let plan = plan.join("\n");
    assert!(plan.contains("deployments_random_part"), "{plan}");
    assert!(!plan.contains("Seq Scan on deployments"), "{plan}");
    let found = store.by_short_id(&prefix, 10).await.expect("by short id");
    assert!(found.iter().any(|d| d.id == some), "{found:?}");
}

/// A database migrated by the release before retention counted releases:
/// upgrading fills `target_versions` from the succeeded deployments it has,
/// so the plain rollback target and where versions were live survive the
/// upgrade. History: v1, v2 deployed, then a rollback to v1 (active).
#[tokio::test]
async fn upgrading_remembers_where_each_version_was_live() {
    let database = empty_database().await;
    let client = connect(database.url()).await;
    client
        .batch_execute(
            "CREATE TABLE schema_migrations (number bigint PRIMARY KEY, name text NOT NULL,
                                             applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await
        .unwrap();
    for migration in MIGRATIONS.iter().filter(|m| m.number <= 3) {
        client.batch_execute(migration.sql).await.unwrap();
        client
            .execute(
                "INSERT INTO schema_migrations (number, name) VALUES ($1, $2)",
                &[&migration.number, &migration.name],
            )
            .await
            .unwrap();
    }
    let (d1, d2, d3) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    client
        .batch_execute(&format!(
            "INSERT INTO versions (app, number, version, artifact, deployment_id, created_at) VALUES
                 ('web', 1, 'v1', 'artifact-1', '{d1}', '2026-01-01T00:00:00Z'),
                 ('web', 2, 'v2', 'artifact-2', '{d2}', '2026-01-02T00:00:00Z');
             INSERT INTO deployments (id, app, cluster, kind, state, version, rollback_to,
                                      deployed_by, created_at, finished_at) VALUES
                 ('{d1}', 'web', 'prod', 'deploy', 'succeeded', 'v1', NULL, 't',
                  '2026-01-01T00:00:00Z', '2026-01-01T00:01:00Z'),
                 ('{d2}', 'web', 'prod', 'deploy', 'succeeded', 'v2', NULL, 't',
                  '2026-01-02T00:00:00Z', '2026-01-02T00:01:00Z'),
                 ('{d3}', 'web', 'prod', 'rollback', 'succeeded', 'v1', 'v1', 't',
                  '2026-01-03T00:00:00Z', '2026-01-03T00:01:00Z');
             INSERT INTO targets (app, cluster, active_deployment_id, active_version, active_since)
                 VALUES ('web', 'prod', '{d3}', 'v1', '2026-01-03T00:01:00Z');"
        ))
        .await
        .unwrap();
    let store = PgStore::connect(database.url()).await.expect("upgrade");
    let previous = store.previous_version("web", "prod").await.unwrap();
    assert_eq!(previous.map(|v| v.version).as_deref(), Some("v2"));
    assert_eq!(
        store
            .target("web", "prod")
            .await
            .unwrap()
            .rollback_to
            .as_deref(),
        Some("v2")
    );
    let v1 = store.version("web", "v1").await.unwrap().unwrap();
    let v2 = store.version("web", "v2").await.unwrap().unwrap();
    assert_eq!(v1.built_on.as_deref(), Some("prod"));
    assert!(v1.live[0].active && v1.live[0].until.is_none(), "{v1:?}");
    assert_eq!(v1.live[0].since.to_rfc3339(), "2026-01-03T00:01:00+00:00");
    assert!(!v2.live[0].active, "{v2:?}");
    assert_eq!(
        v2.live[0].until.map(|t| t.to_rfc3339()).as_deref(),
        Some("2026-01-03T00:01:00+00:00")
    );
}
