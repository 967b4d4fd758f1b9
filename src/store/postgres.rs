//! The PostgreSQL backend: [`PgStore`], a pool of tokio-postgres connections.
//!
//! Every write is one SQL statement (data-modifying CTEs), so it is atomic on
//! its own and costs one round trip once the statement is prepared on the
//! connection. What must stay true here, beyond the [`Store`] contract:
//! - a state change and its `state` event are written by the same statement,
//!   guarded by `state = <expected>` (the compare-and-set);
//! - event seqs come from `deployments.last_seq`, bumped by an UPDATE whose row
//!   lock serializes concurrent writers, so seqs have no gaps;
//! - versions come from `app_version_counters`, whose row lock makes minting
//!   gapless across clusters; a failed statement rolls the counter back;
//! - migrations run in one transaction behind a transaction-scoped advisory
//!   lock, so instances starting together migrate once and leak no lock.
//!
//! Connections are plain TCP (`NoTls`). Besides the pool, [`PgStore::listener`]
//! gives a [`Listener`] (`postgres/listen.rs`) that hears, on a connection of its
//! own, the events other instances store.

use super::{
    Applied, Change, CompactionPlan, CompactionReport, Created, DeletedVersion, Fence,
    HistoryQuery, Holder, InstanceInfo, Lease, LeaseInfo, Migration, NewDeployment, OwedCleanup,
    OwnedTarget, Ownership, Page, PlannedDeployment, PlannedVersion, Retention, Store, StoreError,
    VersionChange,
};
use crate::machine::State;
use crate::model::{
    ActiveInfo, Deployment, Drift, DriftedTarget, Event, EventData, StateChange, TargetSummary,
    TargetView, VersionInfo,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use std::time::Duration;
use tokio_postgres::types::{Json, ToSql};
use tokio_postgres::{NoTls, Row};
use uuid::Uuid;

mod listen;
mod plumbing;
mod retention;
mod sql;

pub use listen::{Listener, Notice};

use super::text::{storable, storable_events};
pub use sql::{BY_SHORT_ID, Param, history_sql};
use sql::{deployment, parse_column, version_info};

/// The schema, in order. Each is applied once and recorded in `schema_migrations`.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        number: 1,
        name: "init",
        sql: include_str!("../../migrations/postgres/0001_init.sql"),
    },
    Migration {
        number: 2,
        name: "compaction",
        sql: include_str!("../../migrations/postgres/0002_compaction.sql"),
    },
    Migration {
        number: 3,
        name: "drift",
        sql: include_str!("../../migrations/postgres/0003_drift.sql"),
    },
    Migration {
        number: 4,
        name: "retention",
        sql: include_str!("../../migrations/postgres/0004_retention.sql"),
    },
    Migration {
        number: 5,
        name: "instances",
        sql: include_str!("../../migrations/postgres/0005_instances.sql"),
    },
    Migration {
        number: 6,
        name: "short_ids",
        sql: include_str!("../../migrations/postgres/0006_short_ids.sql"),
    },
];

/// The advisory lock key that serializes migrations ("deployd" in ASCII).
const MIGRATION_LOCK: i64 = 0x0064_6570_6c6f_7964;
const POOL_SIZE: usize = 16;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free connection before the store counts as unavailable.
const WAIT_TIMEOUT: Duration = Duration::from_secs(10);

/// The deployment store on PostgreSQL.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// The pool's connection settings, for the listener's connection.
    config: tokio_postgres::Config,
}

impl PgStore {
    /// Connect to `url` (`postgres://user:password@host:port/database`) and
    /// apply pending migrations.
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let mut config: tokio_postgres::Config = url.parse().map_err(|e| {
            let message = format!("invalid database URL: {e}");
            StoreError::Backend(crate::redact::url_passwords(&message).into_owned())
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("deployd");
        }
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(CONNECT_TIMEOUT))
            .wait_timeout(Some(WAIT_TIMEOUT))
            .build()
            .map_err(|e| StoreError::Backend(format!("cannot build the connection pool: {e}")))?;
        let store = PgStore { pool, config };
        store.migrate().await?;
        Ok(store)
    }

    /// A listener for what other instances store in this database, on the
    /// same server as the pool, with the same credentials.
    pub fn listener(&self) -> Listener {
        Listener::new(self.config.clone())
    }

    /// Apply the migrations this database lacks, all in one transaction.
    /// Refuses a database migrated by a newer deployd.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // Transaction-scoped: released by COMMIT or ROLLBACK, never left on a
        // pooled connection. A second instance waits here, then finds nothing to do.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 number     bigint      PRIMARY KEY,
                 name       text        NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             )",
        )
        .await?;
        let applied: Vec<i64> = tx
            .query("SELECT number FROM schema_migrations", &[])
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<Result<_, _>>()?;
        if let Some(unknown) = applied
            .iter()
            .find(|n| !MIGRATIONS.iter().any(|m| m.number == **n))
        {
            return Err(StoreError::Backend(format!(
                "the database has schema migration {unknown}, which this deployd does not know; \
                 it was migrated by a newer version"
            )));
        }
        for migration in MIGRATIONS.iter().filter(|m| !applied.contains(&m.number)) {
            tx.batch_execute(migration.sql).await?;
            tx.execute(
                "INSERT INTO schema_migrations (number, name) VALUES ($1, $2)",
                &[&migration.number, &migration.name],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }
}

#[async_trait]
impl Store for PgStore {
    async fn create(&self, new: NewDeployment) -> Result<Created, StoreError> {
        let new = new.storable();
        let mut created = Deployment {
            id: new.id,
            app: new.app.clone(),
            cluster: new.cluster.clone(),
            kind: new.kind,
            state: State::Queued,
            active: false,
            version: None,
            source: new.source.clone(),
            rollback_to: new.rollback_to.clone(),
            git: new.git.clone(),
            message: new.message.clone(),
            deployed_by: new.deployed_by.clone(),
            error: None,
            superseded_by: None,
            queue_position: None,
            created_at: new.created_at,
            started_at: None,
            finished_at: None,
        };
        let payload = EventData::Deployment(Box::new(created.clone())).payload();
        let (owner, epoch) = fence_params(new.fence.as_ref());
        let rows = self
            .query(
                sql::CREATE,
                &[
                    &new.id,
                    &new.app,
                    &new.cluster,
                    &new.kind.as_str(),
                    &new.source,
                    &new.rollback_to,
                    &new.git.as_ref().map(Json),
                    &new.message,
                    &new.deployed_by,
                    &new.idempotency_key,
                    &new.request_hash,
                    &new.created_at,
                    &payload,
                    &owner,
                    &epoch,
                ],
            )
            .await?;
        if let Some(row) = rows.first() {
            created.queue_position = Some(row.try_get(0)?);
            return Ok(Created::New(created));
        }
        // The key was used: ON CONFLICT waited for the other insert to commit,
        // so this new statement sees its row.
        let rows = self
            .query(
                sql::BY_IDEMPOTENCY_KEY,
                &[&new.app, &new.cluster, &new.idempotency_key],
            )
            .await?;
        let Some(row) = rows.first() else {
            // Nothing conflicted: the fence refused the insert.
            return Err(match new.fence {
                Some(_) => StoreError::Fenced {
                    app: new.app,
                    cluster: new.cluster,
                },
                None => StoreError::Backend(
                    "an idempotency key conflicted but its deployment is gone".into(),
                ),
            });
        };
        let stored_hash: String = row.try_get("request_hash")?;
        Ok(Created::Existing {
            deployment: deployment(row)?,
            same_request: stored_hash == new.request_hash,
        })
    }

    async fn get(&self, id: Uuid) -> Result<Option<Deployment>, StoreError> {
        Ok(self.deployments(sql::GET, &[&id]).await?.pop())
    }

    async fn find_by_idempotency_key(
        &self,
        app: &str,
        cluster: &str,
        key: &str,
    ) -> Result<Option<(Deployment, String)>, StoreError> {
        let key = storable(key);
        let rows = self
            .query(sql::BY_IDEMPOTENCY_KEY, &[&app, &cluster, &key.as_ref()])
            .await?;
        let Some(row) = rows.first() else {
            return Ok(None);
        };
        Ok(Some((deployment(row)?, row.try_get("request_hash")?)))
    }

    async fn transition(&self, change: Change) -> Result<Applied, StoreError> {
        let change = change.storable();
        let (mint, set) = match &change.version {
            VersionChange::Keep => (None, None),
            VersionChange::Mint { artifact } => (Some(artifact.as_str()), None),
            VersionChange::Set(version) => (None, Some(version.as_str())),
        };
        let error = change.error.clone();
        let event = EventData::State(StateChange {
            from: change.from,
            to: change.to,
            at: change.at,
            error: error.clone(),
        });
        let (owner, expires_at) = match &change.lease {
            Some(lease) => (Some(lease.owner.as_str()), Some(lease.expires_at)),
            None => (None, None),
        };
        let (fence_owner, fence_epoch) = fence_params(change.fence.as_ref());
        let params: [&(dyn ToSql + Sync); 15] = [
            &change.id,
            &change.from.as_str(),
            &change.to.as_str(),
            &change.at,
            &mint,
            &set,
            &change.to.is_terminal(),
            &error,
            &change.superseded_by,
            &owner,
            &expires_at,
            &change.deadline,
            &event.payload(),
            &fence_owner,
            &fence_epoch,
        ];
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql::TRANSITION).await?;
        let rows = match client.query(&statement, &params).await {
            Ok(rows) => rows,
            Err(e) => return Err(self.refusal(change.id, set, e).await),
        };
        let Some(row) = rows.first() else {
            return Err(self
                .stale_or_missing(change.id, change.from, change.fence.is_some())
                .await);
        };
        Ok(Applied {
            deployment: deployment(row)?,
            event: Event {
                deployment_id: change.id,
                seq: row.try_get("last_seq")?,
                data: event,
            },
        })
    }

    async fn append(
        &self,
        id: Uuid,
        events: &[EventData],
        fence: Option<&Fence>,
    ) -> Result<Vec<Event>, StoreError> {
        let events = &storable_events(events)[..];
        let kinds: Vec<&str> = events.iter().map(EventData::kind).collect();
        let payloads: Vec<serde_json::Value> = events.iter().map(EventData::payload).collect();
        let (owner, epoch) = fence_params(fence);
        let rows = self
            .query(sql::APPEND, &[&id, &kinds, &payloads, &owner, &epoch])
            .await?;
        let Some(row) = rows.first() else {
            return Err(match self.get(id).await? {
                Some(d) if d.state.is_terminal() => StoreError::Ended(id),
                Some(d) if fence.is_some() => StoreError::Fenced {
                    app: d.app,
                    cluster: d.cluster,
                },
                Some(_) => StoreError::Ended(id),
                None => StoreError::NotFound(id),
            });
        };
        let last: i64 = row.try_get(0)?;
        let first = last - events.len() as i64 + 1;
        Ok(events
            .iter()
            .zip(first..)
            .map(|(data, seq)| Event {
                deployment_id: id,
                seq,
                data: data.clone(),
            })
            .collect())
    }

    async fn events_after(
        &self,
        id: Uuid,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        let rows = self
            .query(sql::EVENTS_AFTER, &[&id, &after, &i64::from(limit)])
            .await?;
        rows.iter()
            .map(|row| {
                let kind: &str = row.try_get("kind")?;
                let data = EventData::from_parts(kind, row.try_get("data")?).map_err(|e| {
                    StoreError::Backend(format!("stored {kind} event is unreadable: {e}"))
                })?;
                Ok(Event {
                    deployment_id: id,
                    seq: row.try_get("seq")?,
                    data,
                })
            })
            .collect()
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Page<Deployment, Uuid>, StoreError> {
        let (statement, params) = history_sql(query);
        let params: Vec<&(dyn ToSql + Sync)> = params.iter().map(|p| p.as_ref() as _).collect();
        let mut items = self.deployments(&statement, &params).await?;
        let limit = sql::page_size(query.limit) as usize;
        let next = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|d| d.id)
        } else {
            None
        };
        Ok(Page { items, next })
    }

    async fn target(&self, app: &str, cluster: &str) -> Result<TargetView, StoreError> {
        let rows = self.query(sql::TARGET, &[&app, &cluster]).await?;
        let mut view = TargetView {
            app: app.to_string(),
            cluster: cluster.to_string(),
            active: None,
            running: None,
            queued: Vec::new(),
            drift: None,
            rollback_to: None,
        };
        if let Some(row) = rows.first() {
            view.rollback_to = row.try_get("rollback_to_version")?;
        }
        if let Some(row) = rows.first()
            && let Some(deployment_id) = row.try_get("active_deployment_id")?
        {
            view.active = Some(ActiveInfo {
                version: row.try_get("active_version")?,
                deployment_id,
                since: row.try_get("active_since")?,
            });
        }
        if let Some(row) = rows.first()
            && let Some(deployment_id) = row.try_get("drift_deployment_id")?
        {
            view.drift = Some(Drift {
                version: row.try_get("drift_version")?,
                error: row.try_get("drift_error")?,
                deployment_id,
                since: row.try_get("drift_since")?,
            });
        }
        for row in &rows {
            if row.try_get::<_, Option<Uuid>>("id")?.is_none() {
                continue;
            }
            let found = deployment(row)?;
            if found.state == State::Queued {
                view.queued.push(found);
            } else {
                view.running = Some(found);
            }
        }
        Ok(view)
    }

    async fn by_short_id(&self, prefix: &str, limit: u32) -> Result<Vec<Deployment>, StoreError> {
        let (from, to) = super::short_id_range(prefix);
        let mut found = self
            .deployments(sql::BY_SHORT_ID, &[&from, &to, &i64::from(limit)])
            .await?;
        found.sort_by_key(|d| d.id);
        Ok(found)
    }

    async fn target_summaries(&self, limit: u32) -> Result<Vec<TargetSummary>, StoreError> {
        let rows = self
            .query(sql::TARGET_SUMMARIES, &[&i64::from(limit)])
            .await?;
        rows.iter()
            .map(|row| {
                Ok(TargetSummary {
                    app: row.try_get("app")?,
                    cluster: row.try_get("cluster")?,
                    active_version: row.try_get("active_version")?,
                    running: row.try_get("running")?,
                })
            })
            .collect()
    }

    async fn versions(
        &self,
        app: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page<VersionInfo, i64>, StoreError> {
        let limit = sql::page_size(limit) as usize;
        let before = before.unwrap_or(i64::MAX);
        let rows = self
            .query(sql::VERSIONS, &[&app, &before, &(limit as i64 + 1)])
            .await?;
        let next = match rows.get(limit) {
            Some(_) => Some(rows[limit - 1].try_get("number")?),
            None => None,
        };
        let items = rows
            .iter()
            .take(limit)
            .map(version_info)
            .collect::<Result<_, _>>()?;
        Ok(Page { items, next })
    }

    async fn version(&self, app: &str, version: &str) -> Result<Option<VersionInfo>, StoreError> {
        let rows = self.query(sql::VERSION, &[&app, &version]).await?;
        rows.first().map(version_info).transpose()
    }

    async fn previous_version(
        &self,
        app: &str,
        cluster: &str,
    ) -> Result<Option<VersionInfo>, StoreError> {
        let rows = self.query(sql::PREVIOUS_VERSION, &[&app, &cluster]).await?;
        rows.first().map(version_info).transpose()
    }

    async fn set_drift(
        &self,
        app: &str,
        cluster: &str,
        drift: Option<&Drift>,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        let (owner, epoch) = fence_params(fence);
        let rows = match drift {
            Some(d) => {
                let error = super::text::storable(&d.error);
                let params: [&(dyn ToSql + Sync); 8] = [
                    &app,
                    &cluster,
                    &owner,
                    &epoch,
                    &d.version,
                    &error.as_ref(),
                    &d.deployment_id,
                    &d.since,
                ];
                self.query(sql::SET_DRIFT, &params).await?
            }
            None => {
                self.query(sql::CLEAR_DRIFT, &[&app, &cluster, &owner, &epoch])
                    .await?
            }
        };
        match rows.first().map(|row| row.try_get::<_, bool>("held")) {
            Some(Ok(true)) => Ok(()),
            Some(Ok(false)) => Err(StoreError::Fenced {
                app: app.to_string(),
                cluster: cluster.to_string(),
            }),
            Some(Err(e)) => Err(e.into()),
            None => Err(StoreError::Backend(
                "the drift statement answered nothing".into(),
            )),
        }
    }

    async fn drifted(&self) -> Result<Vec<DriftedTarget>, StoreError> {
        let rows = self.query(sql::DRIFTED, &[]).await?;
        let drifted = rows.iter().map(|row| {
            Ok(DriftedTarget {
                app: row.try_get("app")?,
                cluster: row.try_get("cluster")?,
                drift: Drift {
                    version: row.try_get("version")?,
                    error: row.try_get("error")?,
                    deployment_id: row.try_get("deployment_id")?,
                    since: row.try_get("since")?,
                },
            })
        });
        drifted
            .collect::<Result<_, tokio_postgres::Error>>()
            .map_err(Into::into)
    }

    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[Uuid],
        expires_at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql::RENEW_LEASES).await?;
        Ok(client
            .execute(&statement, &[&owner, &ids, &expires_at])
            .await?)
    }

    async fn take_over(
        &self,
        id: Uuid,
        state: State,
        holder: &Holder,
        lease: &Lease,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let client = self.pool.get().await?;
        let state = state.as_str();
        let common: [&(dyn ToSql + Sync); 5] =
            [&id, &state, &lease.owner, &lease.expires_at, &deadline];
        let (sql, held_by): (&str, &(dyn ToSql + Sync)) = match holder {
            Holder::LapsedBefore(before) => (sql::TAKE_OVER_LAPSED, before),
            Holder::Owner(owner) => (sql::TAKE_OVER_OWNED, owner),
            Holder::PastDeadline(before) => (sql::TAKE_OVER_OVERDUE, before),
        };
        let statement = client.prepare_cached(sql).await?;
        let params: Vec<&(dyn ToSql + Sync)> = common.into_iter().chain([held_by]).collect();
        Ok(client.execute(&statement, &params).await? == 1)
    }

    async fn expired_leases(&self, now: DateTime<Utc>) -> Result<Vec<LeaseInfo>, StoreError> {
        self.leases(sql::EXPIRED_LEASES, &[&now]).await
    }

    async fn overdue_phases(&self, before: DateTime<Utc>) -> Result<Vec<LeaseInfo>, StoreError> {
        self.leases(sql::OVERDUE_PHASES, &[&before]).await
    }

    async fn owned_by(&self, owner: &str) -> Result<Vec<LeaseInfo>, StoreError> {
        self.leases(sql::OWNED_BY, &[&owner]).await
    }

    async fn queued_targets(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.query(sql::QUEUED_TARGETS, &[]).await?;
        rows.iter()
            .map(|row| Ok((row.try_get("app")?, row.try_get("cluster")?)))
            .collect()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.query("SELECT 1", &[]).await.map(drop)
    }

    async fn pin(&self, app: &str, version: &str, pinned: bool) -> Result<VersionInfo, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql::PIN).await?;
        if client
            .execute(&statement, &[&app, &version, &pinned])
            .await?
            == 0
        {
            return Err(StoreError::UnknownVersion {
                app: app.to_string(),
                version: version.to_string(),
            });
        }
        drop(client);
        self.version(app, version)
            .await?
            .ok_or_else(|| StoreError::UnknownVersion {
                app: app.to_string(),
                version: version.to_string(),
            })
    }

    async fn compact(
        &self,
        policy: &Retention,
        batch: u32,
    ) -> Result<CompactionReport, StoreError> {
        let (releases, attempts, cutoff, attempts_cutoff, batch) = retention_params(policy, batch);
        let params: [&(dyn ToSql + Sync); 5] =
            [&releases, &attempts, &cutoff, &attempts_cutoff, &batch];
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let statement = tx.prepare_cached(retention::DELETE_DEPLOYMENTS).await?;
        let deployments_deleted = tx.execute(&statement, &params).await?;
        // A new snapshot: this statement sees the deployments just deleted.
        let statement = tx.prepare_cached(retention::DELETE_VERSIONS).await?;
        let rows = tx.query(&statement, &params).await?;
        let versions_deleted = rows
            .iter()
            .map(|row| {
                Ok(DeletedVersion {
                    app: row.try_get("app")?,
                    version: row.try_get("version")?,
                    artifact: row.try_get("artifact")?,
                    built_on: row.try_get("built_on")?,
                    deployment_id: row.try_get("deployment_id")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        tx.commit().await?;
        Ok(CompactionReport {
            deployments_deleted,
            versions_deleted,
        })
    }

    async fn compaction_plan(
        &self,
        policy: &Retention,
        limit: u32,
    ) -> Result<CompactionPlan, StoreError> {
        let (releases, attempts, cutoff, attempts_cutoff, limit) = retention_params(policy, limit);
        let params: [&(dyn ToSql + Sync); 5] =
            [&releases, &attempts, &cutoff, &attempts_cutoff, &limit];
        let deployments = self
            .query(retention::PLAN_DEPLOYMENTS, &params)
            .await?
            .iter()
            .map(|row| {
                Ok(PlannedDeployment {
                    id: row.try_get("id")?,
                    app: row.try_get("app")?,
                    cluster: row.try_get("cluster")?,
                    state: parse_column(row, "state")?,
                    version: row.try_get("version")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        let versions = self
            .query(retention::PLAN_VERSIONS, &params)
            .await?
            .iter()
            .map(|row| {
                Ok(PlannedVersion {
                    app: row.try_get("app")?,
                    version: row.try_get("version")?,
                    artifact: row.try_get("artifact")?,
                    live_on: row.try_get("live_on")?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(CompactionPlan {
            deployments,
            versions,
        })
    }

    async fn sources_in_use(
        &self,
        sources: &[String],
        ignoring: &[Uuid],
    ) -> Result<Vec<String>, StoreError> {
        let rows = (self.query(retention::SOURCES_IN_USE, &[&sources, &ignoring])).await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    async fn unended(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let rows = self.query(retention::UNENDED, &[&ids]).await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    async fn owed_cleanups(&self, limit: u32) -> Result<Vec<OwedCleanup>, StoreError> {
        let rows = self.query(retention::OWED, &[&i64::from(limit)]).await?;
        rows.iter()
            .map(|row| {
                Ok(OwedCleanup {
                    id: row.try_get("id")?,
                    app: row.try_get("app")?,
                    cluster: row.try_get("cluster")?,
                    version: row.try_get("version")?,
                    artifact: row.try_get("artifact")?,
                })
            })
            .collect()
    }

    async fn cleaned(&self, id: Uuid) -> Result<(), StoreError> {
        self.query(retention::CLEANED, &[&id]).await.map(drop)
    }

    async fn heartbeat(
        &self,
        id: &str,
        address: &str,
        peer_key_sha256: &str,
        ttl: Duration,
    ) -> Result<Vec<OwnedTarget>, StoreError> {
        let params: [&(dyn ToSql + Sync); 4] = [&id, &address, &millis(ttl), &peer_key_sha256];
        let rows = self.query(sql::HEARTBEAT, &params).await?;
        rows.iter()
            .map(|row| {
                Ok(OwnedTarget {
                    app: row.try_get("app")?,
                    cluster: row.try_get("cluster")?,
                    epoch: row.try_get("epoch")?,
                })
            })
            .collect()
    }

    async fn peer_key(&self, id: &str) -> Result<Option<String>, StoreError> {
        let rows = self.query(sql::PEER_KEY, &[&id]).await?;
        rows.first().map(|row| Ok(row.try_get(0)?)).transpose()
    }

    async fn acquire_target(
        &self,
        app: &str,
        cluster: &str,
        owner: &str,
        ttl: Duration,
        take_from: Option<&str>,
    ) -> Result<Ownership, StoreError> {
        let params: [&(dyn ToSql + Sync); 5] = [&app, &cluster, &owner, &millis(ttl), &take_from];
        let rows = self.query(sql::ACQUIRE_TARGET, &params).await?;
        if let Some(row) = rows.first() {
            return Ok(Ownership::Ours(Fence {
                owner: owner.to_string(),
                epoch: row.try_get("epoch")?,
            }));
        }
        let rows = self.query(sql::TARGET_OWNER, &[&app, &cluster]).await?;
        match rows.first() {
            Some(row) => Ok(Ownership::Elsewhere {
                owner: row.try_get("owner")?,
                address: row.try_get("address")?,
            }),
            // Released and taken back between the two statements: try again.
            None => Err(StoreError::Unavailable(format!(
                "the ownership of {app}/{cluster} changed while it was read"
            ))),
        }
    }

    async fn release_target(
        &self,
        app: &str,
        cluster: &str,
        fence: &Fence,
    ) -> Result<(), StoreError> {
        let params: [&(dyn ToSql + Sync); 4] = [&app, &cluster, &fence.owner, &fence.epoch];
        self.query(sql::RELEASE_TARGET, &params).await.map(drop)
    }

    async fn retire_instance(&self, id: &str) -> Result<(), StoreError> {
        self.query(sql::RETIRE_INSTANCE, &[&id]).await.map(drop)
    }

    async fn instances(&self) -> Result<Vec<InstanceInfo>, StoreError> {
        let rows = self.query(sql::INSTANCES, &[]).await?;
        rows.iter()
            .map(|row| {
                let targets: Json<Vec<OwnedTargetRow>> = row.try_get("targets")?;
                Ok(InstanceInfo {
                    id: row.try_get("id")?,
                    address: row.try_get("address")?,
                    started_at: row.try_get("started_at")?,
                    heartbeat_at: row.try_get("heartbeat_at")?,
                    targets: targets.0.into_iter().map(OwnedTargetRow::into).collect(),
                })
            })
            .collect()
    }

    async fn orphaned_targets(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.query(sql::ORPHANED_TARGETS, &[]).await?;
        rows.iter()
            .map(|row| Ok((row.try_get("app")?, row.try_get("cluster")?)))
            .collect()
    }

    async fn record_source_copy(&self, digest: &str, instance: &str) -> Result<(), StoreError> {
        (self.query(sql::RECORD_SOURCE_COPY, &[&digest, &instance]))
            .await
            .map(drop)
    }

    async fn source_holders(&self, digest: &str, except: &str) -> Result<Vec<String>, StoreError> {
        let rows = self.query(sql::SOURCE_HOLDERS, &[&digest, &except]).await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    async fn builders(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        let rows = self.query(retention::BUILDERS, &[&ids]).await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }

    async fn artifacts_under(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let rows = self.query(retention::ARTIFACTS_UNDER, &[&prefix]).await?;
        rows.iter().map(|row| Ok(row.try_get(0)?)).collect()
    }
}

/// A fence as two statement parameters; `(NULL, NULL)` for none.
fn fence_params(fence: Option<&Fence>) -> (Option<&str>, Option<i64>) {
    match fence {
        Some(f) => (Some(f.owner.as_str()), Some(f.epoch)),
        None => (None, None),
    }
}

/// A duration as whole milliseconds, for `interval '1 millisecond'` arithmetic.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// An owned target as `INSTANCES` aggregates it.
#[derive(serde::Deserialize)]
struct OwnedTargetRow {
    app: String,
    cluster: String,
    epoch: i64,
}

impl From<OwnedTargetRow> for OwnedTarget {
    fn from(row: OwnedTargetRow) -> OwnedTarget {
        OwnedTarget {
            app: row.app,
            cluster: row.cluster,
            epoch: row.epoch,
        }
    }
}

/// [`Retention`] as the retention statements' five parameters.
fn retention_params(
    policy: &Retention,
    limit: u32,
) -> (i64, i64, DateTime<Utc>, DateTime<Utc>, i64) {
    (
        policy.releases_per_target(),
        i64::from(policy.keep_attempts),
        policy.cutoff(),
        policy.attempts_cutoff(),
        i64::from(limit),
    )
}

/// `server` (a `postgres://` URL or a key=value string) with its database
/// replaced by `database`: the same server, another database. The tests and
/// the benchmark harness make a database per run this way.
pub fn url_with_database(server: &str, database: &str) -> String {
    let Some(rest) = server
        .strip_prefix("postgres://")
        .or_else(|| server.strip_prefix("postgresql://"))
    else {
        // A key=value connection string: a later dbname wins.
        return format!("{server} dbname={database}");
    };
    let scheme = &server[..server.len() - rest.len()];
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, format!("?{query}")),
        None => (rest, String::new()),
    };
    let authority = before_query
        .split_once('/')
        .map_or(before_query, |(a, _)| a);
    format!("{scheme}{authority}/{database}{query}")
}

#[cfg(test)]
mod tests {
    use super::url_with_database;

    #[test]
    fn a_url_gets_another_database_and_keeps_the_rest() {
        let cases = [
            ("postgres://u:p@h:5432/postgres", "postgres://u:p@h:5432/t1"),
            (
                "postgresql://h/db?sslmode=disable",
                "postgresql://h/t1?sslmode=disable",
            ),
            ("postgres://h", "postgres://h/t1"),
            ("host=h user=u dbname=x", "host=h user=u dbname=x dbname=t1"),
        ];
        for (server, want) in cases {
            assert_eq!(url_with_database(server, "t1"), want, "{server}");
        }
    }
}
