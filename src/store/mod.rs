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
//! - a target has one owner at a time ([`Store::acquire_target`]), and a
//!   write carrying a [`Fence`] lands only while that fence's epoch is the
//!   target's (PostgreSQL checks it in the write's own statement; the
//!   embedded store serves one instance, so it holds every target).

pub mod postgres;
pub mod sqlite;
pub mod text;

use crate::machine::{self, Authority, Facts, Kind, Refusal, State};
use crate::model::{
    Deployment, Drift, DriftedTarget, Event, EventData, GitInfo, TargetSummary, TargetView,
    VersionInfo, clip_error,
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
    /// seqs. Refused with [`StoreError::Ended`] once the deployment ended,
    /// and with [`StoreError::Fenced`] when `fence` no longer holds its target.
    async fn append(
        &self,
        id: Uuid,
        events: &[EventData],
        fence: Option<&Fence>,
    ) -> Result<Vec<Event>, StoreError>;

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

    /// Deployments, of any app, whose id's random part
    /// ([`random_part`](crate::model::random_part)) starts with `prefix`
    /// (lowercase hex, 6 to 19 digits: a short id or part of one), oldest
    /// first, at most `limit`. One range scan of the index on the random
    /// part (`deployments_random_part`), whatever the table's size.
    async fn by_short_id(&self, prefix: &str, limit: u32) -> Result<Vec<Deployment>, StoreError>;

    /// Every target that has deployments, by app then cluster, at most
    /// `limit`: its active version and whether a deployment of it is
    /// running. A skip scan of the target history index: its cost grows
    /// with the number of targets, not of deployments.
    async fn target_summaries(&self, limit: u32) -> Result<Vec<TargetSummary>, StoreError>;

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
    /// Refused with [`StoreError::Fenced`] when `fence` no longer holds the target.
    async fn set_drift(
        &self,
        app: &str,
        cluster: &str,
        drift: Option<&Drift>,
        fence: Option<&Fence>,
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

    /// Pin (`pinned`) or unpin `version` of `app`; the version as it is now.
    /// Pinned versions are never compacted. Errors:
    /// [`StoreError::UnknownVersion`] when the app has no such version.
    async fn pin(&self, app: &str, version: &str, pinned: bool) -> Result<VersionInfo, StoreError>;

    /// One short step of retention, in one transaction: delete at most `batch`
    /// deployments `policy` no longer keeps (their events go with them), then
    /// at most `batch` versions nothing needs any more, and name those so the
    /// caller can remove their artifacts. Callers repeat until a step deletes
    /// nothing ([`CompactionReport::is_empty`]).
    ///
    /// Kept versions: every target's active one; per target, the newest
    /// `max(keep_releases, 2)` versions by when they last became active (so
    /// the one before the active one too); pinned ones; those a deployment
    /// not yet ended has or will roll back to; those created after
    /// [`Retention::cutoff`]; and those a kept deployment has.
    ///
    /// Kept deployments: those not ended; each target's active one; per
    /// target, the newest `keep_attempts` that ended without going live
    /// (failed, cancelled, interrupted) and any created after
    /// [`Retention::attempts_cutoff`]; succeeded ones created after
    /// [`Retention::cutoff`] or that last made a kept version active on
    /// their target. Everything else goes: deployments first, then the
    /// versions no deployment has any more.
    async fn compact(&self, policy: &Retention, batch: u32)
    -> Result<CompactionReport, StoreError>;

    /// What [`compact`](Store::compact) would delete now, and why, without
    /// deleting anything: at most `limit` deployments and `limit` versions,
    /// oldest first.
    async fn compaction_plan(
        &self,
        policy: &Retention,
        limit: u32,
    ) -> Result<CompactionPlan, StoreError>;

    /// Which of `sources` (digests) a deployment, in any state, names;
    /// deployments in `ignoring` do not count (a dry run passes those the
    /// same compaction would delete).
    async fn sources_in_use(
        &self,
        sources: &[String],
        ignoring: &[Uuid],
    ) -> Result<Vec<String>, StoreError>;

    /// Which of `ids` are deployments that have not ended (queued or running):
    /// their workspaces and release directories are still in use.
    async fn unended(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError>;

    /// Cleanups owed to clusters, oldest first, at most `limit`: one is
    /// recorded in the transaction that ends a deploy while it was building
    /// or pushing (so it minted no version), and in the one that deletes a version that names
    /// the cluster that built it. They stay until [`Store::cleaned`].
    async fn owed_cleanups(&self, limit: u32) -> Result<Vec<OwedCleanup>, StoreError>;

    /// The cleanup owed for deployment `id` is done.
    async fn cleaned(&self, id: Uuid) -> Result<(), StoreError>;

    /// Announce instance `id`, reachable at `address` and known to the
    /// others by the sha256 (hex) of its peer key, as live for `ttl`, and
    /// extend by `ttl` the lease of every target it owns: its heartbeat,
    /// sent every `ttl / 3`. Returns the targets it still owns, with the
    /// epoch of each; a target missing from it was taken by another instance.
    async fn heartbeat(
        &self,
        id: &str,
        address: &str,
        peer_key_sha256: &str,
        ttl: std::time::Duration,
    ) -> Result<Vec<OwnedTarget>, StoreError>;

    /// The sha256 (hex) of live instance `id`'s peer key (`None`: no such
    /// live instance).
    async fn peer_key(&self, id: &str) -> Result<Option<String>, StoreError>;

    /// Take ownership of target (`app`, `cluster`) for `owner` for `ttl`: a
    /// compare-and-set that wins when nobody holds it, its lease lapsed or
    /// was released, `owner` holds it already (then it is extended and the
    /// epoch stays), or `take_from` holds it (an owner shown dead or stuck,
    /// whatever its lease says). The epoch goes up each time the owner
    /// changes.
    async fn acquire_target(
        &self,
        app: &str,
        cluster: &str,
        owner: &str,
        ttl: std::time::Duration,
        take_from: Option<&str>,
    ) -> Result<Ownership, StoreError>;

    /// Give up target (`app`, `cluster`) if `fence` still holds it, so
    /// another instance may take it at once (the epoch is kept).
    async fn release_target(
        &self,
        app: &str,
        cluster: &str,
        fence: &Fence,
    ) -> Result<(), StoreError>;

    /// Instance `id` is going away: release every target it owns, and
    /// expire its running deployments' leases, so other instances take them
    /// over at once, and remove it from the instances.
    async fn retire_instance(&self, id: &str) -> Result<(), StoreError>;

    /// The live instances (heartbeat not lapsed), oldest first, with the
    /// targets each owns.
    async fn instances(&self) -> Result<Vec<InstanceInfo>, StoreError>;

    /// Targets with queued or running deployments that no live instance
    /// owns: a former owner died or went away.
    async fn orphaned_targets(&self) -> Result<Vec<(String, String)>, StoreError>;

    /// Instance `instance` holds source `digest` in its data dir.
    async fn record_source_copy(&self, digest: &str, instance: &str) -> Result<(), StoreError>;

    /// Addresses of live instances other than `except` that hold `digest`.
    async fn source_holders(&self, digest: &str, except: &str) -> Result<Vec<String>, StoreError>;

    /// Which of `ids` are deployments that minted a version that still
    /// exists: their release directories hold a kept version.
    async fn builders(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError>;

    /// The artifacts of every version, of any app, that begin with `prefix`
    /// (a directory under the data dir): what must not be swept from it.
    async fn artifacts_under(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
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
    /// The target's owner and epoch; [`StoreError::Fenced`] when it no
    /// longer holds the target.
    pub fence: Option<Fence>,
}

/// Proof of owning a target: the owner and the epoch [`Store::acquire_target`]
/// gave it. A write that carries a fence is refused ([`StoreError::Fenced`])
/// once another instance took the target, whatever the writer believes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub owner: String,
    pub epoch: i64,
}

/// Who owns a target: [`Store::acquire_target`]'s answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ownership {
    /// The caller does; its writes carry this fence.
    Ours(Fence),
    /// Another live instance does, reachable at `address` (`None`: its
    /// instance row is gone, so wait for its lease to lapse).
    Elsewhere {
        owner: String,
        address: Option<String>,
    },
}

/// A target an instance owns, and the epoch it holds it with.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OwnedTarget {
    pub app: String,
    pub cluster: String,
    pub epoch: i64,
}

/// A live instance: [`Store::instances`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InstanceInfo {
    pub id: String,
    pub address: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    pub targets: Vec<OwnedTarget>,
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
    /// Whoever, but its stored phase deadline passed before this instant
    /// and nobody ended it.
    PastDeadline(DateTime<Utc>),
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
    /// The writer's hold on the target ([`StoreError::Fenced`] without it).
    pub fence: Option<Fence>,
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
            fence: None,
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

    /// Store the change only if `fence` still holds the deployment's target.
    pub fn with_fence(mut self, fence: Option<Fence>) -> Change {
        self.fence = fence;
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
    /// Versions kept per (app, cluster), by when they last became active
    /// there; at least 2 (the active one and the one before it) whatever
    /// this says.
    pub keep_releases: u32,
    /// Deployments that ended without going live kept per (app, cluster).
    pub keep_attempts: u32,
    /// No version, and no succeeded deployment, younger than this is deleted.
    pub min_age: chrono::Duration,
    /// No deployment that ended without going live younger than this is
    /// deleted.
    pub attempts_min_age: chrono::Duration,
    pub now: DateTime<Utc>,
}

impl Retention {
    /// Versions and succeeded deployments created after this are kept. A
    /// minimum age longer than the calendar allows ("keep for ever") gives
    /// the first instant both stores can hold, so nothing is old enough.
    pub fn cutoff(&self) -> DateTime<Utc> {
        before(self.now, self.min_age)
    }

    /// Attempts that never went live created after this are kept.
    pub fn attempts_cutoff(&self) -> DateTime<Utc> {
        before(self.now, self.attempts_min_age)
    }

    /// Versions kept per target by rank: never fewer than two.
    pub fn releases_per_target(&self) -> i64 {
        i64::from(self.keep_releases.max(2))
    }
}

/// `age` before `now`, or 0001-01-01 when that is further back.
fn before(now: DateTime<Utc>, age: chrono::Duration) -> DateTime<Utc> {
    let floor = DateTime::parse_from_rfc3339("0001-01-01T00:00:00Z")
        .expect("a valid instant")
        .to_utc();
    now.checked_sub_signed(age)
        .map_or(floor, |at| at.max(floor))
}

/// A cleanup owed to a cluster: [`Store::owed_cleanups`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwedCleanup {
    /// The deployment whose build made what is owed: its release directory
    /// is `releases/<app>/<cluster>/<id>`.
    pub id: Uuid,
    pub app: String,
    /// Whose cleanup step runs.
    pub cluster: String,
    /// `None`: an attempt that made no version; `Some`: a deleted version.
    pub version: Option<String>,
    pub artifact: Option<String>,
}

/// What compaction would delete, and why: [`Store::compaction_plan`].
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CompactionPlan {
    pub deployments: Vec<PlannedDeployment>,
    pub versions: Vec<PlannedVersion>,
}

/// A deployment compaction would delete.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlannedDeployment {
    pub id: Uuid,
    pub app: String,
    pub cluster: String,
    pub state: State,
    pub version: Option<String>,
}

/// A version compaction would delete, with the clusters where it was live
/// (empty: it never was).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlannedVersion {
    pub app: String,
    pub version: String,
    pub artifact: String,
    pub live_on: Vec<String>,
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
    /// The cluster whose build made it: whose cleanup step is told.
    pub built_on: Option<String>,
    /// The deployment whose build minted it: its release directory is
    /// `releases/<app>/<built_on>/<deployment_id>`.
    pub deployment_id: Uuid,
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
    /// The write carried a [`Fence`] that no longer holds the target:
    /// another instance owns it now. Nothing was written.
    #[error("this instance no longer owns {app}/{cluster}")]
    Fenced { app: String, cluster: String },
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

/// The random parts a short-id `prefix` covers, as a half-open text range
/// `[prefix, prefix + "g")`: `g` sorts after every lowercase hex digit, so
/// the range is exactly the random parts starting with `prefix`, and a
/// B-tree answers it with one range scan (a `LIKE` with a bound pattern
/// would not use the index in a generic plan).
pub fn short_id_range(prefix: &str) -> (String, String) {
    (prefix.to_string(), format!("{prefix}g"))
}

/// Both backends' migrations, in order: (number, name, sql).
pub struct Migration {
    pub number: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimum_age_past_the_calendar_keeps_everything_without_overflow() {
        let now = Utc::now();
        let policy = Retention {
            keep_releases: 10,
            keep_attempts: 20,
            min_age: chrono::Duration::MAX,
            attempts_min_age: chrono::Duration::days(365 * 300_000),
            now,
        };
        assert_eq!(policy.cutoff().to_rfc3339(), "0001-01-01T00:00:00+00:00");
        assert_eq!(policy.attempts_cutoff(), policy.cutoff());
        let day = Retention {
            min_age: chrono::Duration::days(1),
            ..policy
        };
        assert_eq!(day.cutoff(), now - chrono::Duration::days(1));
    }
}
