//! Durable state: the [`Store`] trait and its two backends.
//!
//! PostgreSQL ([`postgres::PgStore`]) is the production store; SQLite
//! ([`sqlite::SqliteStore`]) is the zero-setup default. Both pass the one
//! contract suite in `tests/it/store_contract.rs`.
//!
//! What must stay true, whichever backend:
//! - every state change is a compare-and-set on the expected current state and
//!   is stored together with its `state` event in one transaction;
//! - entering `succeeded` moves the (app, cluster) active pointer in that same
//!   transaction; entering `pushing` from `building` with [`VersionChange::Mint`]
//!   mints the app's next version (`v1`, `v2`, … with no gaps);
//! - event `seq` is 1, 2, … per deployment with no gaps, and nothing is
//!   appended after a deployment's final state event;
//! - the database refuses a second running deployment per target and an
//!   `activating`/`succeeded` row without a version, whatever the caller does;
//! - any text is storable: each backend passes what it writes through
//!   [`text`] first (NUL becomes U+FFFD), so both store and return the same.

pub mod postgres;
pub mod sqlite;
pub mod text;

use crate::machine::{self, Authority, Facts, Kind, Refusal, State};
use crate::model::{
    Deployment, Drift, DriftedTarget, Event, EventData, GitInfo, TargetView, VersionInfo,
    clip_error,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use uuid::Uuid;

/// Largest page any listing returns.
pub const MAX_PAGE: u32 = 500;

pub type DynStore = Arc<dyn Store>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Create a `queued` deployment and its first event (`deployment`, seq 1).
    /// With an idempotency key that the target already used, nothing is
    /// written and the existing deployment comes back.
    async fn create(&self, new: NewDeployment) -> Result<Created, StoreError>;

    async fn get(&self, id: Uuid) -> Result<Option<Deployment>, StoreError>;

    /// The deployment a target created under `key`, with its request fingerprint.
    async fn find_by_idempotency_key(
        &self,
        app: &str,
        cluster: &str,
        key: &str,
    ) -> Result<Option<(Deployment, String)>, StoreError>;

    /// Apply a machine-approved change if the deployment is still in
    /// `change.from`; store its `state` event in the same transaction.
    async fn transition(&self, change: Change) -> Result<Applied, StoreError>;

    /// Append events (log lines, queue positions, truncation) with the next
    /// seqs. Refused with [`StoreError::Ended`] once the deployment ended.
    async fn append(&self, id: Uuid, events: &[EventData]) -> Result<Vec<Event>, StoreError>;

    /// Stored events with `seq > after`, in order, at most `limit`.
    async fn events_after(
        &self,
        id: Uuid,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError>;

    /// Newest first, by keyset: deployments with `id < query.before`.
    async fn history(&self, query: &HistoryQuery) -> Result<Page<Deployment, Uuid>, StoreError>;

    async fn target(&self, app: &str, cluster: &str) -> Result<TargetView, StoreError>;

    /// Versions of an app, newest first, with number `< before`.
    async fn versions(
        &self,
        app: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page<VersionInfo, i64>, StoreError>;

    async fn version(&self, app: &str, version: &str) -> Result<Option<VersionInfo>, StoreError>;

    /// The version that was active on the target before the current one.
    async fn previous_version(
        &self,
        app: &str,
        cluster: &str,
    ) -> Result<Option<VersionInfo>, StoreError>;

    /// Record that the target's cluster may not run its active version
    /// (`Some`, replacing an earlier record), or that it does again (`None`).
    /// Entering `succeeded` clears it too, in the transition's transaction.
    async fn set_drift(
        &self,
        app: &str,
        cluster: &str,
        drift: Option<&Drift>,
    ) -> Result<(), StoreError>;

    /// Every target whose last restore failed, by app and cluster.
    async fn drifted(&self) -> Result<Vec<DriftedTarget>, StoreError>;

    /// Extend the lease of `owner`'s running deployments; returns how many.
    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[Uuid],
        expires_at: DateTime<Utc>,
    ) -> Result<u64, StoreError>;

    /// Give running deployment `id`, if it is still in `state` and held as
    /// `holder` says, the lease `lease` and the phase deadline `deadline`
    /// (`None`: none); true if it did. A compare-and-set: of the instances
    /// taking over one lapsed deployment, exactly one wins, and a lease the
    /// owner renewed meanwhile is not taken.
    async fn take_over(
        &self,
        id: Uuid,
        state: State,
        holder: &Holder,
        lease: &Lease,
        deadline: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError>;

    /// Running deployments whose lease ran out before `now`.
    async fn expired_leases(&self, now: DateTime<Utc>) -> Result<Vec<LeaseInfo>, StoreError>;

    /// Running deployments whose stored phase deadline is before `before`.
    async fn overdue_phases(&self, before: DateTime<Utc>) -> Result<Vec<LeaseInfo>, StoreError>;

    /// Running deployments held by `owner` (for shutdown and panics).
    async fn owned_by(&self, owner: &str) -> Result<Vec<LeaseInfo>, StoreError>;

    /// Targets that have queued deployments, for start-up reconciliation.
    async fn queued_targets(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// A cheap round trip, for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// One short step of retention, in one transaction: delete at most `batch`
    /// deployments `policy` no longer keeps (their events go with them), then
    /// at most `batch` versions nothing needs any more, and name those so the
    /// caller can remove their artifacts. Callers repeat until a step deletes
    /// nothing ([`CompactionReport::is_empty`]).
    ///
    /// Never deleted: a target's newest `keep_per_target` deployments, its
    /// active one, any deployment not yet ended or created after
    /// [`Retention::cutoff`], and every deployment of a kept version. A
    /// version is kept while a kept deployment has it (or a queued rollback
    /// names it), while it is active on any target, when it is pinned, and
    /// while it is younger than the cutoff.
    async fn compact(&self, policy: &Retention, batch: u32)
    -> Result<CompactionReport, StoreError>;
}

/// A deployment to create. The caller mints the id (UUIDv7).
#[derive(Debug, Clone)]
pub struct NewDeployment {
    pub id: Uuid,
    pub app: String,
    pub cluster: String,
    pub kind: Kind,
    pub source: Option<String>,
    pub rollback_to: Option<String>,
    pub git: Option<GitInfo>,
    pub message: String,
    pub deployed_by: String,
    pub idempotency_key: Option<String>,
    /// A fingerprint of the request, so a repeated key with a different
    /// request is told apart from a retry.
    pub request_hash: String,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone)]
pub enum Created {
    New(Deployment),
    /// The idempotency key was used before; `same_request` says whether the
    /// earlier request had the same fingerprint.
    Existing {
        deployment: Deployment,
        same_request: bool,
    },
}

/// How a change touches the deployment's version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionChange {
    Keep,
    /// Build succeeded: mint the app's next version for this artifact.
    Mint {
        artifact: String,
    },
    /// A rollback names an existing version.
    Set(String),
}

/// A running deployment's lease: who runs it and until when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub owner: String,
    pub expires_at: DateTime<Utc>,
}

/// Who must hold a running deployment for [`Store::take_over`] to change it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Nobody: its lease ran out before this instant (its owner stopped
    /// renewing it).
    LapsedBefore(DateTime<Utc>),
    /// This owner, still: it extends its own lease and deadline.
    Owner(String),
}

/// A state change the machine approved. Build one with [`Change::new`]; the
/// fields are readable by the backends but only the constructor checks them.
#[derive(Debug, Clone)]
pub struct Change {
    pub id: Uuid,
    pub from: State,
    pub to: State,
    pub at: DateTime<Utc>,
    pub error: Option<String>,
    pub version: VersionChange,
    pub superseded_by: Option<Uuid>,
    /// Set when entering a running phase; cleared when the deployment ends.
    pub lease: Option<Lease>,
    /// When the phase being entered must be over.
    pub deadline: Option<DateTime<Utc>>,
}

impl Change {
    /// Ask the machine whether `deployment` may go to `to`; on yes, a change
    /// expecting the deployment's current state.
    pub fn new(
        deployment: &Deployment,
        to: State,
        by: Authority,
        version: VersionChange,
        at: DateTime<Utc>,
    ) -> Result<Change, Refusal> {
        let has_version = deployment.version.is_some() || version != VersionChange::Keep;
        let facts = Facts { has_version, by };
        machine::transition(deployment.kind, deployment.state, to, facts)?;
        Ok(Change {
            id: deployment.id,
            from: deployment.state,
            to,
            at,
            error: None,
            version,
            superseded_by: None,
            lease: None,
            deadline: None,
        })
    }

    pub fn with_error(mut self, error: &str) -> Change {
        self.error = Some(clip_error(error));
        self
    }

    pub fn with_superseded_by(mut self, id: Uuid) -> Change {
        self.superseded_by = Some(id);
        self
    }

    pub fn with_lease(mut self, lease: Lease) -> Change {
        self.lease = Some(lease);
        self
    }

    pub fn with_deadline(mut self, deadline: DateTime<Utc>) -> Change {
        self.deadline = Some(deadline);
        self
    }
}

/// A change that was stored, with the `state` event stored beside it.
#[derive(Debug, Clone)]
pub struct Applied {
    pub deployment: Deployment,
    pub event: Event,
}

#[derive(Debug, Clone)]
pub struct LeaseInfo {
    pub deployment: Deployment,
    pub owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub phase_deadline: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub app: String,
    pub cluster: Option<String>,
    pub state: Option<State>,
    /// 1..=500; callers validate.
    pub limit: u32,
    pub before: Option<Uuid>,
}

/// What compaction keeps; see [`Store::compact`].
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Deployments kept per (app, cluster), newest first.
    pub keep_per_target: u32,
    /// Nothing younger than this is deleted, whatever its rank.
    pub min_age: chrono::Duration,
    pub now: DateTime<Utc>,
}

impl Retention {
    /// Rows created after this instant are never deleted.
    pub fn cutoff(&self) -> DateTime<Utc> {
        self.now - self.min_age
    }
}

/// What one or more compaction steps deleted.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompactionReport {
    pub deployments_deleted: u64,
    /// Versions deleted: their artifacts are no longer needed by anyone.
    pub versions_deleted: Vec<DeletedVersion>,
}

impl CompactionReport {
    /// True when the step deleted nothing, so compaction is done.
    pub fn is_empty(&self) -> bool {
        self.deployments_deleted == 0 && self.versions_deleted.is_empty()
    }

    /// Add what a later step deleted.
    pub fn absorb(&mut self, step: CompactionReport) {
        self.deployments_deleted += step.deployments_deleted;
        self.versions_deleted.extend(step.versions_deleted);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeletedVersion {
    pub app: String,
    pub version: String,
    pub artifact: String,
}

/// One page of a keyset listing; `next` is the key to pass as `before`.
#[derive(Debug, Clone)]
pub struct Page<T, K> {
    pub items: Vec<T>,
    pub next: Option<K>,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("deployment {0} not found")]
    NotFound(Uuid),
    /// The compare-and-set found another state: a stale writer.
    #[error("deployment {id} is {current}, not {expected}")]
    Stale {
        id: Uuid,
        expected: State,
        current: State,
    },
    /// The database's one-running-per-target index refused the change.
    #[error("another deployment of {app}/{cluster} is already running")]
    TargetBusy { app: String, cluster: String },
    #[error("deployment {0} has ended; no more events are accepted")]
    Ended(Uuid),
    #[error("version {version} of {app} not found")]
    UnknownVersion { app: String, version: String },
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("store error: {0}")]
    Backend(String),
}

/// Parse a version string `vN` into its number: the one rule is
/// [`Version`](crate::names::Version)'s.
pub fn version_number(version: &str) -> Option<i64> {
    version
        .parse::<crate::names::Version>()
        .ok()
        .map(|v| v.number())
}

/// Both backends' migrations, in order: (number, name, sql).
pub struct Migration {
    pub number: i64,
    pub name: &'static str,
    pub sql: &'static str,
}
