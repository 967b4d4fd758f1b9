//! The embedded SQLite store: one file, zero setup, the default backend.
//!
//! One connection behind a mutex serializes every access inside the process;
//! every call runs on tokio's blocking pool so the async runtime never waits
//! on disk. Writes take an IMMEDIATE transaction, so a second process on the
//! same file waits (busy timeout) instead of failing half-way, and what a
//! write read at its start is still true when it commits. Writes that
//! queue up while one commits are group-committed together ([`batch`]),
//! each in its own savepoint, so concurrent targets share an fsync.
//!
//! Encoding, chosen so that text order is the order that matters:
//! - ids are lowercase hyphenated UUID text (UUIDv7 text sorts by time);
//! - times are UTC text in [`TIME_FORMAT`], fixed width, so comparing the
//!   text compares the instants (leases, history order);
//! - git info and event payloads are JSON text.
//!
//! [`read`] holds the queries and row decoding, [`write`] every statement
//! that changes rows.

mod batch;
mod read;
mod retention;
mod single;
mod write;

use super::text::{storable, storable_events};
use super::{
    Applied, Change, CompactionPlan, CompactionReport, Created, Fence, HistoryQuery, Holder,
    InstanceInfo, Lease, LeaseInfo, Migration, NewDeployment, OwedCleanup, OwnedTarget, Ownership,
    Page, Retention, Store, StoreError,
};
use crate::machine::State;
use crate::model::{
    Deployment, Drift, DriftedTarget, Event, EventData, TargetSummary, TargetView, VersionInfo,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use uuid::Uuid;

/// How times are stored: microseconds, as PostgreSQL keeps them.
pub const TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// The schema, in order; applied ones are recorded in `schema_migrations`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        number: 1,
        name: "init",
        sql: include_str!("../../migrations/sqlite/0001_init.sql"),
    },
    Migration {
        number: 2,
        name: "compaction",
        sql: include_str!("../../migrations/sqlite/0002_compaction.sql"),
    },
    Migration {
        number: 3,
        name: "drift",
        sql: include_str!("../../migrations/sqlite/0003_drift.sql"),
    },
    Migration {
        number: 4,
        name: "retention",
        sql: include_str!("../../migrations/sqlite/0004_retention.sql"),
    },
    Migration {
        number: 6,
        name: "short_ids",
        sql: include_str!("../../migrations/sqlite/0006_short_ids.sql"),
    },
];

/// How long a writer waits for another process's lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// Writes waiting for the next group commit ([`batch`]).
    queue: Arc<Mutex<Vec<batch::Job>>>,
    /// Target ownership: this one instance owns every target.
    one: Arc<single::OneInstance>,
}

impl SqliteStore {
    /// Open (creating it and its directory if needed) the database file and
    /// apply pending migrations. Blocking: call it before serving, or from
    /// `spawn_blocking`.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", parent.display()))
            })?;
        }
        private(path).map_err(|e| {
            StoreError::Unavailable(format!("cannot make {} private: {e}", path.display()))
        })?;
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // WAL lets other processes (backups, inspection) read while we write;
        // synchronous stays FULL because a transition must be durable before
        // anyone hears of it.
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
            queue: Arc::new(Mutex::new(Vec::new())),
            one: Arc::default(),
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

    /// Run `f` inside an IMMEDIATE transaction, committed only if it
    /// succeeds; writes queued meanwhile share the transaction and its
    /// commit ([`batch`]), each in a savepoint of its own.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> Result<T, StoreError> + Send + 'static,
    {
        let (job, outcome) = batch::job(f);
        self.queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(job);
        let (conn, queue) = (Arc::clone(&self.conn), Arc::clone(&self.queue));
        tokio::task::spawn_blocking(move || batch::flush(&conn, &queue))
            .await
            .map_err(|e| StoreError::Backend(format!("sqlite task failed: {e}")))?;
        outcome
            .await
            .map_err(|_| StoreError::Backend("sqlite: a write was lost with its batch".into()))?
    }

    /// Run `f` inside one read transaction, so multi-query answers come from
    /// one snapshot even while another process writes.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction) -> Result<T, StoreError> + Send + 'static,
    {
        self.run(move |conn| {
            let tx = conn.transaction()?;
            f(&tx)
        })
        .await
    }
}

/// Make the database the daemon's alone (0600), creating it empty if it is
/// new: steps that run as another user (`clusters.NAME.user`) must not read
/// it. SQLite gives the `-wal` and `-shm` files it creates the database's
/// mode; ones an older deployd left are made private too.
fn private(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let opened = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path);
    drop(opened?);
    for suffix in ["", "-wal", "-shm"] {
        let mut file = path.as_os_str().to_owned();
        file.push(suffix);
        match std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            done => done?,
        }
    }
    Ok(())
}

/// Apply the migrations not yet recorded, all in one transaction.
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
                params![migration.number, migration.name, read::ts(Utc::now())],
            )?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[async_trait]
impl Store for SqliteStore {
    async fn create(&self, new: NewDeployment) -> Result<Created, StoreError> {
        let new = new.storable();
        self.write(move |tx| write::create(tx, &new)).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Deployment>, StoreError> {
        self.read(move |tx| read::deployment(tx, id)).await
    }

    async fn find_by_idempotency_key(
        &self,
        app: &str,
        cluster: &str,
        key: &str,
    ) -> Result<Option<(Deployment, String)>, StoreError> {
        let (app, cluster) = (app.to_string(), cluster.to_string());
        let key = storable(key).into_owned();
        self.read(move |tx| read::by_idempotency_key(tx, &app, &cluster, &key))
            .await
    }

    async fn transition(&self, change: Change) -> Result<Applied, StoreError> {
        let change = change.storable();
        self.write(move |tx| write::transition(tx, &change)).await
    }

    /// The fence is not checked: one instance writes (see [`single`]).
    async fn append(
        &self,
        id: Uuid,
        events: &[EventData],
        _fence: Option<&Fence>,
    ) -> Result<Vec<Event>, StoreError> {
        let events = storable_events(events);
        self.write(move |tx| write::append(tx, id, &events)).await
    }

    async fn events_after(
        &self,
        id: Uuid,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        self.read(move |tx| read::events_after(tx, id, after, limit))
            .await
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Page<Deployment, Uuid>, StoreError> {
        let query = query.clone();
        self.read(move |tx| read::history(tx, &query)).await
    }

    async fn target(&self, app: &str, cluster: &str) -> Result<TargetView, StoreError> {
        let (app, cluster) = (app.to_string(), cluster.to_string());
        self.read(move |tx| read::target(tx, app, cluster)).await
    }

    async fn by_short_id(&self, prefix: &str, limit: u32) -> Result<Vec<Deployment>, StoreError> {
        let prefix = prefix.to_string();
        self.read(move |tx| read::by_short_id(tx, &prefix, limit))
            .await
    }

    async fn target_summaries(&self, limit: u32) -> Result<Vec<TargetSummary>, StoreError> {
        self.read(move |tx| read::target_summaries(tx, limit)).await
    }

    async fn versions(
        &self,
        app: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page<VersionInfo, i64>, StoreError> {
        let app = app.to_string();
        self.read(move |tx| read::versions(tx, &app, before, limit))
            .await
    }

    async fn version(&self, app: &str, version: &str) -> Result<Option<VersionInfo>, StoreError> {
        let (app, version) = (app.to_string(), version.to_string());
        self.read(move |tx| read::version(tx, &app, &version)).await
    }

    async fn previous_version(
        &self,
        app: &str,
        cluster: &str,
    ) -> Result<Option<VersionInfo>, StoreError> {
        let (app, cluster) = (app.to_string(), cluster.to_string());
        self.read(move |tx| read::previous_version(tx, &app, &cluster))
            .await
    }

    async fn set_drift(
        &self,
        app: &str,
        cluster: &str,
        drift: Option<&Drift>,
        _fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let (app, cluster, drift) = (app.to_string(), cluster.to_string(), drift.cloned());
        self.write(move |tx| write::set_drift(tx, &app, &cluster, drift.as_ref()))
            .await
    }

    async fn drifted(&self) -> Result<Vec<DriftedTarget>, StoreError> {
        self.read(|tx| read::drifted(tx)).await
    }

    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[Uuid],
        expires_at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let (owner, ids) = (owner.to_string(), ids.to_vec());
        self.write(move |tx| write::renew_leases(tx, &owner, &ids, expires_at))
            .await
    }

    async fn take_over(
        &self,
        id: Uuid,
        state: State,
        holder: &Holder,
        lease: &Lease,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let (holder, lease) = (holder.clone(), lease.clone());
        self.write(move |tx| write::take_over(tx, id, state, &holder, &lease, deadline))
            .await
    }

    async fn expired_leases(&self, now: DateTime<Utc>) -> Result<Vec<LeaseInfo>, StoreError> {
        self.read(move |tx| read::leases(tx, read::LeaseFilter::ExpiredBefore(now)))
            .await
    }

    async fn overdue_phases(&self, before: DateTime<Utc>) -> Result<Vec<LeaseInfo>, StoreError> {
        self.read(move |tx| read::leases(tx, read::LeaseFilter::DeadlineBefore(before)))
            .await
    }

    async fn owned_by(&self, owner: &str) -> Result<Vec<LeaseInfo>, StoreError> {
        let owner = owner.to_string();
        self.read(move |tx| read::leases(tx, read::LeaseFilter::Owner(owner)))
            .await
    }

    async fn queued_targets(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.read(|tx| read::queued_targets(tx)).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?))
            .await
    }

    async fn pin(&self, app: &str, version: &str, pinned: bool) -> Result<VersionInfo, StoreError> {
        let (app, version) = (app.to_string(), version.to_string());
        self.write(move |tx| {
            let unknown = || StoreError::UnknownVersion {
                app: app.clone(),
                version: version.clone(),
            };
            if !retention::pin(tx, &app, &version, pinned)? {
                return Err(unknown());
            }
            read::version(tx, &app, &version)?.ok_or_else(unknown)
        })
        .await
    }

    async fn compact(
        &self,
        policy: &Retention,
        batch: u32,
    ) -> Result<CompactionReport, StoreError> {
        let policy = *policy;
        self.write(move |tx| retention::compact(tx, &policy, batch))
            .await
    }

    async fn compaction_plan(
        &self,
        policy: &Retention,
        limit: u32,
    ) -> Result<CompactionPlan, StoreError> {
        let policy = *policy;
        self.read(move |tx| retention::plan(tx, &policy, limit))
            .await
    }

    async fn sources_in_use(
        &self,
        sources: &[String],
        ignoring: &[Uuid],
    ) -> Result<Vec<String>, StoreError> {
        let (sources, ignoring) = (sources.to_vec(), ignoring.to_vec());
        self.read(move |tx| retention::sources_in_use(tx, &sources, &ignoring))
            .await
    }

    async fn unended(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let ids = ids.to_vec();
        self.read(move |tx| retention::unended(tx, &ids)).await
    }

    async fn owed_cleanups(&self, limit: u32) -> Result<Vec<OwedCleanup>, StoreError> {
        self.read(move |tx| retention::owed(tx, limit)).await
    }

    async fn cleaned(&self, id: Uuid) -> Result<(), StoreError> {
        self.write(move |tx| retention::cleaned(tx, id)).await
    }

    async fn heartbeat(
        &self,
        id: &str,
        address: &str,
        _peer_key_sha256: &str,
        _ttl: Duration,
    ) -> Result<Vec<OwnedTarget>, StoreError> {
        Ok(self.one.heartbeat(id, address))
    }

    /// None: no other instance ever asks this one for a source.
    async fn peer_key(&self, _id: &str) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    async fn acquire_target(
        &self,
        app: &str,
        cluster: &str,
        owner: &str,
        _ttl: Duration,
        _take_from: Option<&str>,
    ) -> Result<Ownership, StoreError> {
        Ok(self.one.acquire(app, cluster, owner))
    }

    async fn release_target(
        &self,
        app: &str,
        cluster: &str,
        _fence: &Fence,
    ) -> Result<(), StoreError> {
        self.one.release(app, cluster);
        Ok(())
    }

    async fn retire_instance(&self, _id: &str) -> Result<(), StoreError> {
        self.one.retire();
        Ok(())
    }

    async fn instances(&self) -> Result<Vec<InstanceInfo>, StoreError> {
        Ok(self.one.instances())
    }

    /// None: this one instance owns every target.
    async fn orphaned_targets(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(Vec::new())
    }

    /// Nothing to record: every source is in this one instance's data dir.
    async fn record_source_copy(&self, _digest: &str, _instance: &str) -> Result<(), StoreError> {
        Ok(())
    }

    async fn source_holders(
        &self,
        _digest: &str,
        _except: &str,
    ) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    async fn builders(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let ids = ids.to_vec();
        self.read(move |tx| retention::builders(tx, &ids)).await
    }

    async fn artifacts_under(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let prefix = prefix.to_string();
        self.read(move |tx| retention::artifacts_under(tx, &prefix))
            .await
    }
}

/// SQLite's messages name tables and columns, never the statement text, so
/// they are fit for logs; the HTTP layer shows users only a generic sentence.
/// Busy, locked and I/O failures are the store being unavailable, not a bug.
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
