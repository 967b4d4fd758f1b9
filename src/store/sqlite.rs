//! The embedded SQLite store: one file, zero setup, the default backend.
//!
//! One connection behind a mutex serializes every access inside the process;
//! every call runs on tokio's blocking pool so the async runtime never waits
//! on disk. Writes take an IMMEDIATE transaction, so a second process on the
//! same file waits (busy timeout) instead of failing half-way.
//!
//! Encoding, chosen so that text order is the order that matters:
//! - ids are lowercase hyphenated UUID text (UUIDv7 text sorts by time);
//! - times are UTC text in [`TIME_FORMAT`], fixed width, so comparing the
//!   text compares the instants (leases, history order);
//! - git info and event payloads are JSON text.

use super::{
    Applied, Change, Created, HistoryQuery, LeaseInfo, MAX_PAGE, Migration, NewDeployment, Page,
    Store, StoreError, VersionChange,
};
use crate::machine::State;
use crate::model::{
    ActiveInfo, Deployment, Event, EventData, GitInfo, StateChange, TargetView, VersionInfo,
    clip_error,
};
use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use uuid::Uuid;

/// How times are stored: microseconds, like PostgreSQL keeps them.
pub const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// The schema, in order; applied ones are recorded in `schema_migrations`.
pub const MIGRATIONS: &[Migration] = &[Migration {
    number: 1,
    name: "init",
    sql: include_str!("../../migrations/sqlite/0001_init.sql"),
}];

/// How long a writer waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Open (creating if needed) the database file and apply pending migrations.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL lets readers of other processes (backups, deployctl) proceed
        // while we write; synchronous stays FULL because a transition must be
        // durable before anyone hears of it.
        let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Backend(format!(
                "sqlite: {} refused WAL mode (journal_mode is {mode})",
                path.display()
            )));
        }
        conn.pragma_update(None, "foreign_keys", "ON")?;
        migrate(&mut conn)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Run `f` with the connection on the blocking pool.
    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock dropped its transaction, which
            // rolled back: the connection is still sound.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("sqlite task failed: {e}")))?
    }

    /// Run `f` inside one IMMEDIATE transaction, committed only if it succeeds.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let value = f(&tx)?;
            tx.commit()?;
            Ok(value)
        })
        .await
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
             number     integer PRIMARY KEY,
             name       text    NOT NULL,
             applied_at text    NOT NULL
         )",
    )?;
    for migration in MIGRATIONS {
        let applied: bool = tx.query_row(
            "SELECT EXISTS (SELECT 1 FROM schema_migrations WHERE number = ?1)",
            [migration.number],
            |r| r.get(0),
        )?;
        if !applied {
            tx.execute_batch(migration.sql)?;
            tx.execute(
                "INSERT INTO schema_migrations (number, name, applied_at) VALUES (?1, ?2, ?3)",
                params![migration.number, migration.name, ts(Utc::now())],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, new: NewDeployment) -> Result<Created, StoreError> {
        self.write(move |tx| create(tx, &new)).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Deployment>, StoreError> {
        self.run(move |conn| deployment(conn, id)).await
    }

    async fn transition(&self, change: Change) -> Result<Applied, StoreError> {
        self.write(move |tx| transition(tx, &change)).await
    }

    async fn append(&self, id: Uuid, events: &[EventData]) -> Result<Vec<Event>, StoreError> {
        let events = events.to_vec();
        self.write(move |tx| {
            let state: Option<String> = tx
                .query_row(
                    "SELECT state FROM deployments WHERE id = ?1",
                    [id.to_string()],
                    |r| r.get(0),
                )
                .optional()?;
            match state.as_deref().map(State::from_str) {
                None => Err(StoreError::NotFound(id)),
                Some(Ok(state)) if state.is_terminal() => Err(StoreError::Ended(id)),
                Some(_) => insert_events(tx, id, &events),
            }
        })
        .await
    }

    async fn events_after(
        &self,
        id: Uuid,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, kind, data FROM deployment_events
                 WHERE deployment_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
            )?;
            let rows = stmt.query_map(params![id.to_string(), after, limit], |r| {
                let seq: i64 = r.get(0)?;
                let kind: String = r.get(1)?;
                let data = parse(r, 2, |s| serde_json::from_str::<serde_json::Value>(s))?;
                let data = EventData::from_parts(&kind, data).map_err(|e| conversion(1, e))?;
                Ok(Event {
                    deployment_id: id,
                    seq,
                    data,
                })
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Page<Deployment, Uuid>, StoreError> {
        let query = query.clone();
        self.run(move |conn| history(conn, &query)).await
    }

    async fn target(&self, app: &str, cluster: &str) -> Result<TargetView, StoreError> {
        let (app, cluster) = (app.to_string(), cluster.to_string());
        self.run(move |conn| {
            // One read transaction: active, running and queued from one snapshot.
            let tx = conn.transaction()?;
            let active = tx
                .query_row(
                    "SELECT active_version, active_deployment_id, active_since FROM targets
                     WHERE app = ?1 AND cluster = ?2",
                    [&app, &cluster],
                    |r| {
                        Ok(ActiveInfo {
                            version: r.get(0)?,
                            deployment_id: parse(r, 1, Uuid::parse_str)?,
                            since: parse(r, 2, parse_time)?,
                        })
                    },
                )
                .optional()?;
            let running = tx
                .query_row(
                    &format!(
                        "{SELECT_DEPLOYMENT} WHERE d.app = ?1 AND d.cluster = ?2 AND {RUNNING}"
                    ),
                    [&app, &cluster],
                    deployment_row,
                )
                .optional()?;
            let queued = tx
                .prepare(&format!(
                    "{SELECT_DEPLOYMENT} WHERE d.app = ?1 AND d.cluster = ?2 AND d.state = 'queued'
                     ORDER BY d.id"
                ))?
                .query_map([&app, &cluster], deployment_row)?
                .collect::<Result<_, _>>()?;
            Ok(TargetView {
                app,
                cluster,
                active,
                running,
                queued,
            })
        })
        .await
    }

    async fn versions(
        &self,
        app: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page<VersionInfo, i64>, StoreError> {
        let app = app.to_string();
        let limit = limit.clamp(1, MAX_PAGE) as usize;
        self.run(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "{SELECT_VERSION} WHERE v.app = ?1 AND v.number < ?2 ORDER BY v.number DESC LIMIT ?3"
            ))?;
            let before = before.unwrap_or(i64::MAX);
            let rows = stmt.query_map(params![app, before, limit as i64 + 1], |r| {
                Ok((r.get::<_, i64>(5)?, version_row(r)?))
            })?;
            let mut rows: Vec<(i64, VersionInfo)> = rows.collect::<Result<_, _>>()?;
            let more = rows.len() > limit;
            rows.truncate(limit);
            let next = if more { rows.last().map(|(n, _)| *n) } else { None };
            Ok(Page { items: rows.into_iter().map(|(_, v)| v).collect(), next })
        })
        .await
    }

    async fn version(&self, app: &str, version: &str) -> Result<Option<VersionInfo>, StoreError> {
        let (app, version) = (app.to_string(), version.to_string());
        self.run(move |conn| {
            let sql = format!("{SELECT_VERSION} WHERE v.app = ?1 AND v.version = ?2");
            Ok(conn
                .query_row(&sql, [&app, &version], version_row)
                .optional()?)
        })
        .await
    }

    async fn previous_version(
        &self,
        app: &str,
        cluster: &str,
    ) -> Result<Option<VersionInfo>, StoreError> {
        let (app, cluster) = (app.to_string(), cluster.to_string());
        self.run(move |conn| {
            let sql = format!(
                "{SELECT_VERSION}
                 JOIN deployments d ON d.app = v.app AND d.version = v.version
                 JOIN targets t ON t.app = d.app AND t.cluster = d.cluster
                 WHERE t.app = ?1 AND t.cluster = ?2 AND d.state = 'succeeded'
                   AND d.version <> t.active_version
                 ORDER BY d.finished_at DESC, d.id DESC LIMIT 1"
            );
            Ok(conn
                .query_row(&sql, [&app, &cluster], version_row)
                .optional()?)
        })
        .await
    }

    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[Uuid],
        expires_at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let owner = owner.to_string();
        let ids = serde_json::to_string(&ids.iter().map(Uuid::to_string).collect::<Vec<_>>())
            .map_err(|e| StoreError::Backend(format!("encoding lease ids: {e}")))?;
        self.write(move |tx| {
            let renewed = tx.execute(
                &format!(
                    "UPDATE deployments SET lease_expires_at = ?1
                     WHERE owner = ?2 AND id IN (SELECT value FROM json_each(?3)) AND {RUNNING_BARE}"
                ),
                params![ts(expires_at), owner, ids],
            )?;
            Ok(renewed as u64)
        })
        .await
    }

    async fn expired_leases(&self, now: DateTime<Utc>) -> Result<Vec<LeaseInfo>, StoreError> {
        self.run(move |conn| {
            let sql = format!(
                "{SELECT_DEPLOYMENT} WHERE {RUNNING} AND d.lease_expires_at < ?1 ORDER BY d.id"
            );
            let rows = conn
                .prepare_cached(&sql)?
                .query_map([ts(now)], lease_row)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn owned_by(&self, owner: &str) -> Result<Vec<LeaseInfo>, StoreError> {
        let owner = owner.to_string();
        self.run(move |conn| {
            let sql = format!("{SELECT_DEPLOYMENT} WHERE {RUNNING} AND d.owner = ?1 ORDER BY d.id");
            let rows = conn
                .prepare_cached(&sql)?
                .query_map([owner], lease_row)?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    async fn queued_targets(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.run(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT DISTINCT app, cluster FROM deployments WHERE state = 'queued' ORDER BY app, cluster",
            )?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }
}

fn create(tx: &Transaction, new: &NewDeployment) -> Result<Created, StoreError> {
    if let Some(key) = &new.idempotency_key {
        let existing: Option<(String, String)> = tx
            .query_row(
                "SELECT id, request_hash FROM deployments
                 WHERE app = ?1 AND cluster = ?2 AND idempotency_key = ?3",
                [&new.app, &new.cluster, key],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        if let Some((id, hash)) = existing {
            let id =
                Uuid::parse_str(&id).map_err(|e| StoreError::Backend(format!("stored id: {e}")))?;
            let deployment = deployment(tx, id)?.ok_or(StoreError::NotFound(id))?;
            return Ok(Created::Existing {
                deployment,
                same_request: hash == new.request_hash,
            });
        }
    }
    tx.execute(
        "INSERT INTO deployments (id, app, cluster, kind, state, source, rollback_to, git, message,
                                  deployed_by, idempotency_key, request_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            new.id.to_string(),
            new.app,
            new.cluster,
            new.kind.as_str(),
            new.source,
            new.rollback_to,
            git_json(new.git.as_ref())?,
            new.message,
            new.deployed_by,
            new.idempotency_key,
            new.request_hash,
            ts(new.created_at),
        ],
    )?;
    let created = deployment(tx, new.id)?.ok_or(StoreError::NotFound(new.id))?;
    insert_events(
        tx,
        new.id,
        &[EventData::Deployment(Box::new(created.clone()))],
    )?;
    Ok(Created::New(created))
}

fn transition(tx: &Transaction, change: &Change) -> Result<Applied, StoreError> {
    let id = change.id;
    let (app, cluster, current, git, version) = tx
        .query_row(
            "SELECT app, cluster, state, git, version FROM deployments WHERE id = ?1",
            [id.to_string()],
            |r| {
                let current: State = parse(r, 2, State::from_str)?;
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    current,
                    r.get::<_, Option<String>>(3)?,
                    r.get::<_, Option<String>>(4)?,
                ))
            },
        )
        .optional()?
        .ok_or(StoreError::NotFound(id))?;
    if current != change.from {
        return Err(StoreError::Stale {
            id,
            expected: change.from,
            current,
        });
    }
    let new_version = match &change.version {
        VersionChange::Keep => None,
        VersionChange::Mint { artifact } => {
            Some(mint(tx, &app, artifact, git.as_deref(), id, change.at)?)
        }
        VersionChange::Set(v) => {
            let known: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM versions WHERE app = ?1 AND version = ?2)",
                [&app, v],
                |r| r.get(0),
            )?;
            if !known {
                return Err(StoreError::UnknownVersion {
                    app,
                    version: v.clone(),
                });
            }
            Some(v.clone())
        }
    };
    let ended = change.to.is_terminal();
    let error = change.error.as_deref().map(clip_error);
    let at = ts(change.at);
    let updated = tx
        .execute(
            "UPDATE deployments SET
                 state = ?3,
                 version = COALESCE(?4, version),
                 started_at = CASE WHEN ?2 = 'queued' AND started_at IS NULL THEN ?5 ELSE started_at END,
                 finished_at = CASE WHEN ?6 THEN ?5 ELSE finished_at END,
                 error = COALESCE(?7, error),
                 superseded_by = COALESCE(?8, superseded_by),
                 owner = CASE WHEN ?6 THEN NULL ELSE COALESCE(?9, owner) END,
                 lease_expires_at = CASE WHEN ?6 THEN NULL ELSE COALESCE(?10, lease_expires_at) END,
                 phase_deadline = CASE WHEN ?6 THEN NULL ELSE ?11 END
             WHERE id = ?1 AND state = ?2",
            params![
                id.to_string(),
                change.from.as_str(),
                change.to.as_str(),
                new_version,
                at,
                ended,
                error,
                change.superseded_by.map(|s| s.to_string()),
                change.lease.as_ref().map(|l| l.owner.clone()),
                change.lease.as_ref().map(|l| ts(l.expires_at)),
                change.deadline.map(ts),
            ],
        )
        .map_err(|e| target_busy(e, &app, &cluster))?;
    if updated != 1 {
        // Unreachable under the IMMEDIATE transaction, kept as the CAS's answer.
        return Err(StoreError::Stale {
            id,
            expected: change.from,
            current,
        });
    }
    if change.to == State::Succeeded {
        tx.execute(
            "INSERT INTO targets (app, cluster, active_deployment_id, active_version, active_since)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (app, cluster) DO UPDATE SET
                 active_deployment_id = excluded.active_deployment_id,
                 active_version = excluded.active_version,
                 active_since = excluded.active_since",
            params![app, cluster, id.to_string(), new_version.or(version), at],
        )?;
    }
    let data = EventData::State(StateChange {
        from: change.from,
        to: change.to,
        at: change.at,
        error,
    });
    let event = insert_events(tx, id, &[data])?.remove(0);
    let deployment = deployment(tx, id)?.ok_or(StoreError::NotFound(id))?;
    Ok(Applied { deployment, event })
}

/// Mint the app's next version: the counter row's update serializes minters.
fn mint(
    tx: &Transaction,
    app: &str,
    artifact: &str,
    git: Option<&str>,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<String, StoreError> {
    let number: i64 = tx.query_row(
        "INSERT INTO app_version_counters (app, last_number) VALUES (?1, 1)
         ON CONFLICT (app) DO UPDATE SET last_number = last_number + 1
         RETURNING last_number",
        [app],
        |r| r.get(0),
    )?;
    let version = format!("v{number}");
    tx.execute(
        "INSERT INTO versions (app, number, version, artifact, git, deployment_id, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![app, number, version, artifact, git, id.to_string(), ts(at)],
    )?;
    Ok(version)
}

/// Store `events` with the deployment's next seqs. Callers decide whether the
/// deployment may still take events.
fn insert_events(
    tx: &Transaction,
    id: Uuid,
    events: &[EventData],
) -> Result<Vec<Event>, StoreError> {
    let last: i64 = tx.query_row(
        "UPDATE deployments SET last_seq = last_seq + ?2 WHERE id = ?1 RETURNING last_seq",
        params![id.to_string(), events.len() as i64],
        |r| r.get(0),
    )?;
    let first = last - events.len() as i64 + 1;
    let mut stmt = tx.prepare_cached(
        "INSERT INTO deployment_events (deployment_id, seq, kind, data) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut stored = Vec::with_capacity(events.len());
    for (seq, data) in (first..).zip(events) {
        stmt.execute(params![
            id.to_string(),
            seq,
            data.kind(),
            data.payload().to_string()
        ])?;
        stored.push(Event {
            deployment_id: id,
            seq,
            data: data.clone(),
        });
    }
    Ok(stored)
}

fn deployment(conn: &Connection, id: Uuid) -> Result<Option<Deployment>, StoreError> {
    let sql = format!("{SELECT_DEPLOYMENT} WHERE d.id = ?1");
    Ok(conn
        .query_row(&sql, [id.to_string()], deployment_row)
        .optional()?)
}

fn history(conn: &Connection, query: &HistoryQuery) -> Result<Page<Deployment, Uuid>, StoreError> {
    let limit = query.limit.clamp(1, MAX_PAGE) as usize;
    // Only fixed fragments go into the SQL; every value is a parameter. Each
    // filter is its own equality so the (app, cluster, id DESC) index applies.
    let mut sql = format!("{SELECT_DEPLOYMENT} WHERE d.app = ?");
    let mut values = vec![Value::Text(query.app.clone())];
    if let Some(cluster) = &query.cluster {
        sql.push_str(" AND d.cluster = ?");
        values.push(Value::Text(cluster.clone()));
    }
    if let Some(state) = query.state {
        sql.push_str(" AND d.state = ?");
        values.push(Value::Text(state.as_str().to_string()));
    }
    if let Some(before) = query.before {
        sql.push_str(" AND d.id < ?");
        values.push(Value::Text(before.to_string()));
    }
    sql.push_str(" ORDER BY d.id DESC LIMIT ?");
    values.push(Value::Integer(limit as i64 + 1));
    let mut items: Vec<Deployment> = conn
        .prepare_cached(&sql)?
        .query_map(rusqlite::params_from_iter(values), deployment_row)?
        .collect::<Result<_, _>>()?;
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more {
        items.last().map(|d| d.id)
    } else {
        None
    };
    Ok(Page { items, next })
}

/// The Deployment as the API shows it; `active` and `queue_position` are
/// derived here so no row ever stores them.
const SELECT_DEPLOYMENT: &str = "SELECT d.id, d.app, d.cluster, d.kind, d.state, d.version,
        d.source, d.rollback_to, d.git, d.message, d.deployed_by, d.error, d.superseded_by,
        d.created_at, d.started_at, d.finished_at,
        EXISTS (SELECT 1 FROM targets t WHERE t.app = d.app AND t.cluster = d.cluster
                AND t.active_deployment_id = d.id),
        CASE WHEN d.state = 'queued' THEN
            (SELECT count(*) FROM deployments q WHERE q.app = d.app AND q.cluster = d.cluster
             AND q.state = 'queued' AND q.id <= d.id) END,
        d.owner, d.lease_expires_at, d.phase_deadline
    FROM deployments d";

const RUNNING: &str = "d.state IN ('building', 'pushing', 'activating')";
const RUNNING_BARE: &str = "state IN ('building', 'pushing', 'activating')";

const SELECT_VERSION: &str =
    "SELECT v.version, v.artifact, v.git, v.created_at, v.deployment_id, v.number FROM versions v";

fn deployment_row(r: &Row) -> rusqlite::Result<Deployment> {
    Ok(Deployment {
        id: parse(r, 0, Uuid::parse_str)?,
        app: r.get(1)?,
        cluster: r.get(2)?,
        kind: parse(r, 3, FromStr::from_str)?,
        state: parse(r, 4, FromStr::from_str)?,
        version: r.get(5)?,
        source: r.get(6)?,
        rollback_to: r.get(7)?,
        git: parse_opt(r, 8, |s| serde_json::from_str::<GitInfo>(s))?,
        message: r.get(9)?,
        deployed_by: r.get(10)?,
        error: r.get(11)?,
        superseded_by: parse_opt(r, 12, Uuid::parse_str)?,
        created_at: parse(r, 13, parse_time)?,
        started_at: parse_opt(r, 14, parse_time)?,
        finished_at: parse_opt(r, 15, parse_time)?,
        active: r.get(16)?,
        queue_position: r.get(17)?,
    })
}

fn lease_row(r: &Row) -> rusqlite::Result<LeaseInfo> {
    Ok(LeaseInfo {
        deployment: deployment_row(r)?,
        owner: r.get(18)?,
        lease_expires_at: parse_opt(r, 19, parse_time)?,
        phase_deadline: parse_opt(r, 20, parse_time)?,
    })
}

fn version_row(r: &Row) -> rusqlite::Result<VersionInfo> {
    Ok(VersionInfo {
        version: r.get(0)?,
        artifact: r.get(1)?,
        git: parse_opt(r, 2, |s| serde_json::from_str::<GitInfo>(s))?,
        created_at: parse(r, 3, parse_time)?,
        deployment_id: parse(r, 4, Uuid::parse_str)?,
    })
}

fn ts(at: DateTime<Utc>) -> String {
    at.format(TIME_FORMAT).to_string()
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.fZ").map(|t| t.and_utc())
}

fn git_json(git: Option<&GitInfo>) -> Result<Option<String>, StoreError> {
    git.map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Backend(format!("encoding git info: {e}")))
}

/// Read column `idx` as text and parse it; a failure names the column.
fn parse<T, E>(r: &Row, idx: usize, f: impl FnOnce(&str) -> Result<T, E>) -> rusqlite::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let text: String = r.get(idx)?;
    f(&text).map_err(|e| conversion(idx, e))
}

fn parse_opt<T, E>(
    r: &Row,
    idx: usize,
    f: impl FnOnce(&str) -> Result<T, E>,
) -> rusqlite::Result<Option<T>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let text: Option<String> = r.get(idx)?;
    text.as_deref()
        .map(f)
        .transpose()
        .map_err(|e| conversion(idx, e))
}

fn conversion(idx: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
}

/// The running-deployment index is the only unique constraint a state change
/// can hit, and SQLite names a partial index by its columns: `(app, cluster)`,
/// unlike the idempotency key's `(app, cluster, idempotency_key)`.
fn target_busy(e: rusqlite::Error, app: &str, cluster: &str) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                && msg == "UNIQUE constraint failed: deployments.app, deployments.cluster" =>
        {
            StoreError::TargetBusy {
                app: app.to_string(),
                cluster: cluster.to_string(),
            }
        }
        _ => e.into(),
    }
}

/// SQLite's messages name tables and columns, never the statement text, so
/// they are safe to log; the HTTP layer shows users only a generic sentence.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    DatabaseBusy
                        | DatabaseLocked
                        | CannotOpen
                        | SystemIoFailure
                        | DiskFull
                        | ReadOnly
                ) =>
            {
                StoreError::Unavailable(format!("sqlite: {e}"))
            }
            _ => StoreError::Backend(format!("sqlite: {e}")),
        }
    }
}
