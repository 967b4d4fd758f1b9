//! [`TimedStore`]: any [`Store`] with every call's duration recorded as store
//! latency into the daemon's [`Metrics`], so callers time nothing themselves.
//!
//! It adds no behaviour: each method forwards to the inner store unchanged.
//! A method added to the `Store` trait must be forwarded here too (the
//! compiler says so).

use super::Metrics;
use crate::machine::State;
use crate::model::{
    Deployment, Drift, DriftedTarget, Event, EventData, TargetSummary, TargetView, VersionInfo,
};
use crate::store::{
    Applied, Change, CompactionPlan, CompactionReport, Created, DynStore, Fence, HistoryQuery,
    Holder, InstanceInfo, Lease, LeaseInfo, NewDeployment, OwedCleanup, OwnedTarget, Ownership,
    Page, Retention, Store, StoreError,
};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::future::Future;
use std::sync::Arc;
use std::time::Instant;
use uuid::Uuid;

pub struct TimedStore {
    inner: DynStore,
    metrics: Arc<Metrics>,
}

impl TimedStore {
    /// `store`, timed into `metrics`.
    pub fn new(store: DynStore, metrics: Arc<Metrics>) -> TimedStore {
        TimedStore {
            inner: store,
            metrics,
        }
    }

    /// Await `call`, recording how long it took, failed calls included.
    async fn timed<T>(&self, call: impl Future<Output = T>) -> T {
        let start = Instant::now();
        let value = call.await;
        self.metrics.observe_store(start.elapsed().as_secs_f64());
        value
    }
}

#[async_trait]
impl Store for TimedStore {
    async fn create(&self, new: NewDeployment) -> Result<Created, StoreError> {
        self.timed(self.inner.create(new)).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Deployment>, StoreError> {
        self.timed(self.inner.get(id)).await
    }

    async fn find_by_idempotency_key(
        &self,
        app: &str,
        cluster: &str,
        key: &str,
    ) -> Result<Option<(Deployment, String)>, StoreError> {
        self.timed(self.inner.find_by_idempotency_key(app, cluster, key))
            .await
    }

    async fn transition(&self, change: Change) -> Result<Applied, StoreError> {
        self.timed(self.inner.transition(change)).await
    }

    async fn append(
        &self,
        id: Uuid,
        events: &[EventData],
        fence: Option<&Fence>,
    ) -> Result<Vec<Event>, StoreError> {
        self.timed(self.inner.append(id, events, fence)).await
    }

    async fn events_after(
        &self,
        id: Uuid,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        self.timed(self.inner.events_after(id, after, limit)).await
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Page<Deployment, Uuid>, StoreError> {
        self.timed(self.inner.history(query)).await
    }

    async fn target(&self, app: &str, cluster: &str) -> Result<TargetView, StoreError> {
        self.timed(self.inner.target(app, cluster)).await
    }

    async fn by_short_id(&self, prefix: &str, limit: u32) -> Result<Vec<Deployment>, StoreError> {
        self.timed(self.inner.by_short_id(prefix, limit)).await
    }

    async fn target_summaries(&self, limit: u32) -> Result<Vec<TargetSummary>, StoreError> {
        self.timed(self.inner.target_summaries(limit)).await
    }

    async fn versions(
        &self,
        app: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page<VersionInfo, i64>, StoreError> {
        self.timed(self.inner.versions(app, before, limit)).await
    }

    async fn version(&self, app: &str, version: &str) -> Result<Option<VersionInfo>, StoreError> {
        self.timed(self.inner.version(app, version)).await
    }

    async fn previous_version(
        &self,
        app: &str,
        cluster: &str,
    ) -> Result<Option<VersionInfo>, StoreError> {
        self.timed(self.inner.previous_version(app, cluster)).await
    }

    async fn set_drift(
        &self,
        app: &str,
        cluster: &str,
        drift: Option<&Drift>,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        self.timed(self.inner.set_drift(app, cluster, drift, fence))
            .await
    }

    async fn drifted(&self) -> Result<Vec<DriftedTarget>, StoreError> {
        self.timed(self.inner.drifted()).await
    }

    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[Uuid],
        expires_at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        self.timed(self.inner.renew_leases(owner, ids, expires_at))
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
        self.timed(self.inner.take_over(id, state, holder, lease, deadline))
            .await
    }

    async fn expired_leases(&self, now: DateTime<Utc>) -> Result<Vec<LeaseInfo>, StoreError> {
        self.timed(self.inner.expired_leases(now)).await
    }

    async fn overdue_phases(&self, before: DateTime<Utc>) -> Result<Vec<LeaseInfo>, StoreError> {
        self.timed(self.inner.overdue_phases(before)).await
    }

    async fn owned_by(&self, owner: &str) -> Result<Vec<LeaseInfo>, StoreError> {
        self.timed(self.inner.owned_by(owner)).await
    }

    async fn queued_targets(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.timed(self.inner.queued_targets()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.timed(self.inner.ping()).await
    }

    async fn compact(
        &self,
        policy: &Retention,
        batch: u32,
    ) -> Result<CompactionReport, StoreError> {
        self.timed(self.inner.compact(policy, batch)).await
    }

    async fn pin(&self, app: &str, version: &str, pinned: bool) -> Result<VersionInfo, StoreError> {
        self.timed(self.inner.pin(app, version, pinned)).await
    }

    async fn compaction_plan(
        &self,
        policy: &Retention,
        limit: u32,
    ) -> Result<CompactionPlan, StoreError> {
        self.timed(self.inner.compaction_plan(policy, limit)).await
    }

    async fn sources_in_use(
        &self,
        sources: &[String],
        ignoring: &[Uuid],
    ) -> Result<Vec<String>, StoreError> {
        self.timed(self.inner.sources_in_use(sources, ignoring))
            .await
    }

    async fn unended(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        self.timed(self.inner.unended(ids)).await
    }

    async fn owed_cleanups(&self, limit: u32) -> Result<Vec<OwedCleanup>, StoreError> {
        self.timed(self.inner.owed_cleanups(limit)).await
    }

    async fn cleaned(&self, id: Uuid) -> Result<(), StoreError> {
        self.timed(self.inner.cleaned(id)).await
    }

    async fn builders(&self, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
        self.timed(self.inner.builders(ids)).await
    }

    async fn artifacts_under(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        self.timed(self.inner.artifacts_under(prefix)).await
    }

    async fn heartbeat(
        &self,
        id: &str,
        address: &str,
        peer_key_sha256: &str,
        ttl: std::time::Duration,
    ) -> Result<Vec<OwnedTarget>, StoreError> {
        let beat = self.inner.heartbeat(id, address, peer_key_sha256, ttl);
        self.timed(beat).await
    }

    async fn peer_key(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.timed(self.inner.peer_key(id)).await
    }

    async fn acquire_target(
        &self,
        app: &str,
        cluster: &str,
        owner: &str,
        ttl: std::time::Duration,
        take_from: Option<&str>,
    ) -> Result<Ownership, StoreError> {
        let acquire = self
            .inner
            .acquire_target(app, cluster, owner, ttl, take_from);
        self.timed(acquire).await
    }

    async fn release_target(
        &self,
        app: &str,
        cluster: &str,
        fence: &Fence,
    ) -> Result<(), StoreError> {
        self.timed(self.inner.release_target(app, cluster, fence))
            .await
    }

    async fn retire_instance(&self, id: &str) -> Result<(), StoreError> {
        self.timed(self.inner.retire_instance(id)).await
    }

    async fn instances(&self) -> Result<Vec<InstanceInfo>, StoreError> {
        self.timed(self.inner.instances()).await
    }

    async fn orphaned_targets(&self) -> Result<Vec<(String, String)>, StoreError> {
        self.timed(self.inner.orphaned_targets()).await
    }

    async fn record_source_copy(&self, digest: &str, instance: &str) -> Result<(), StoreError> {
        self.timed(self.inner.record_source_copy(digest, instance))
            .await
    }

    async fn source_holders(&self, digest: &str, except: &str) -> Result<Vec<String>, StoreError> {
        self.timed(self.inner.source_holders(digest, except)).await
    }
}
