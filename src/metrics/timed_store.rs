//! [`TimedStore`]: any [`Store`] with every call's duration recorded as store
//! latency, so callers time nothing themselves.
//!
//! It adds no behaviour: each method forwards to the inner store unchanged.
//! A method added to the `Store` trait must be forwarded here too (the
//! compiler says so).

use super::global;
use crate::model::{Deployment, Drift, Event, EventData, TargetView, VersionInfo};
use crate::store::{
    Applied, Change, CompactionReport, Created, DynStore, HistoryQuery, LeaseInfo, NewDeployment,
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
}

impl TimedStore {
    /// `store`, timed into the [`global`] registry.
    pub fn wrap(store: DynStore) -> DynStore {
        Arc::new(TimedStore { inner: store })
    }
}

/// Await `call`, recording how long it took, failed calls included.
async fn timed<T>(call: impl Future<Output = T>) -> T {
    let start = Instant::now();
    let value = call.await;
    global().observe_store(start.elapsed().as_secs_f64());
    value
}

#[async_trait]
impl Store for TimedStore {
    async fn create(&self, new: NewDeployment) -> Result<Created, StoreError> {
        timed(self.inner.create(new)).await
    }

    async fn get(&self, id: Uuid) -> Result<Option<Deployment>, StoreError> {
        timed(self.inner.get(id)).await
    }

    async fn find_by_idempotency_key(
        &self,
        app: &str,
        cluster: &str,
        key: &str,
    ) -> Result<Option<(Deployment, String)>, StoreError> {
        timed(self.inner.find_by_idempotency_key(app, cluster, key)).await
    }

    async fn transition(&self, change: Change) -> Result<Applied, StoreError> {
        timed(self.inner.transition(change)).await
    }

    async fn append(&self, id: Uuid, events: &[EventData]) -> Result<Vec<Event>, StoreError> {
        timed(self.inner.append(id, events)).await
    }

    async fn events_after(
        &self,
        id: Uuid,
        after: i64,
        limit: u32,
    ) -> Result<Vec<Event>, StoreError> {
        timed(self.inner.events_after(id, after, limit)).await
    }

    async fn history(&self, query: &HistoryQuery) -> Result<Page<Deployment, Uuid>, StoreError> {
        timed(self.inner.history(query)).await
    }

    async fn target(&self, app: &str, cluster: &str) -> Result<TargetView, StoreError> {
        timed(self.inner.target(app, cluster)).await
    }

    async fn versions(
        &self,
        app: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Page<VersionInfo, i64>, StoreError> {
        timed(self.inner.versions(app, before, limit)).await
    }

    async fn version(&self, app: &str, version: &str) -> Result<Option<VersionInfo>, StoreError> {
        timed(self.inner.version(app, version)).await
    }

    async fn previous_version(
        &self,
        app: &str,
        cluster: &str,
    ) -> Result<Option<VersionInfo>, StoreError> {
        timed(self.inner.previous_version(app, cluster)).await
    }

    async fn set_drift(
        &self,
        app: &str,
        cluster: &str,
        drift: Option<&Drift>,
    ) -> Result<(), StoreError> {
        timed(self.inner.set_drift(app, cluster, drift)).await
    }

    async fn renew_leases(
        &self,
        owner: &str,
        ids: &[Uuid],
        expires_at: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        timed(self.inner.renew_leases(owner, ids, expires_at)).await
    }

    async fn expired_leases(&self, now: DateTime<Utc>) -> Result<Vec<LeaseInfo>, StoreError> {
        timed(self.inner.expired_leases(now)).await
    }

    async fn overdue_phases(&self, before: DateTime<Utc>) -> Result<Vec<LeaseInfo>, StoreError> {
        timed(self.inner.overdue_phases(before)).await
    }

    async fn owned_by(&self, owner: &str) -> Result<Vec<LeaseInfo>, StoreError> {
        timed(self.inner.owned_by(owner)).await
    }

    async fn queued_targets(&self) -> Result<Vec<(String, String)>, StoreError> {
        timed(self.inner.queued_targets()).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        timed(self.inner.ping()).await
    }

    async fn compact(
        &self,
        policy: &Retention,
        batch: u32,
    ) -> Result<CompactionReport, StoreError> {
        timed(self.inner.compact(policy, batch)).await
    }
}
