//! [`Daemon`]: what one running deployd shares between its parts — the
//! config, the store, the event hub, the sources, the data dir, the shutdown
//! signal and the background tasks — passed explicitly to whoever needs it.
//!
//! What must stay true:
//! - a deployment's state changes only through [`Daemon::commit`] (store, then
//!   broadcast, then metrics); the hub's `publish` is private to the hub, so no
//!   part can broadcast a state the store lacks;
//! - every background task is spawned on [`Daemon::tasks`], so shutdown can
//!   wait for them instead of leaving them running;
//! - a deployment's workspace (and, if it built no version, its release
//!   directory) goes when [`Daemon::commit`] stores its final state.

use crate::config::Config;
use crate::events::EventHub;
use crate::layout::DataDir;
use crate::metrics::Metrics;
use crate::model::{Deployment, Event, EventData};
use crate::source::SourceStore;
use crate::store::{Change, Created, DynStore, Fence, NewDeployment, StoreError};
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use uuid::Uuid;

/// What every part of one daemon shares. Built once in [`crate::server::serve`].
pub struct Daemon {
    pub store: DynStore,
    pub hub: Arc<EventHub>,
    pub sources: Arc<SourceStore>,
    pub config: Arc<Config>,
    /// New at every start; owner of the leases this process holds.
    pub instance: String,
    /// Where other instances reach this one (`server.advertise_url`, or
    /// the address it listens on): they forward requests for the targets
    /// it owns there.
    pub address: String,
    /// How this instance talks to the others: forwarded requests, fetched
    /// sources ([`crate::http::forward`], [`crate::instance::fetch_source`]).
    pub peers: reqwest::Client,
    /// What this instance shows the others when it fetches a source.
    pub peer_key: crate::instance::PeerKey,
    /// Where sources, workspaces, releases and the database live.
    pub data_dir: DataDir,
    /// This daemon's own metrics, rendered by `GET /metrics`.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the server shuts down: nothing new starts after it.
    pub stopping: CancellationToken,
    /// Phase tasks, the reaper, compaction and crash recoveries; shutdown
    /// closes it and waits for them.
    pub tasks: TaskTracker,
}

impl Daemon {
    /// Commit a machine-approved change and broadcast its `state` event.
    /// `phase_since` is when the state being left began (a queued
    /// deployment's creation), for the phase-duration metric.
    ///
    /// Errors: [`StoreError::Stale`] when the deployment is no longer in
    /// `change.from` (nothing was written), [`StoreError::Unavailable`] when
    /// the store cannot be reached (nothing was written), others as the store
    /// reports them.
    pub async fn commit(
        &self,
        change: Change,
        phase_since: DateTime<Utc>,
    ) -> Result<Deployment, StoreError> {
        let (from, at) = (change.from, change.at);
        let applied = self.hub.commit(change).await?;
        let d = &applied.deployment;
        tracing::info!(deployment = %d.id, app = %d.app, cluster = %d.cluster, state = %d.state, "state changed");
        let metrics = &self.metrics;
        metrics.phase_finished(from, (at - phase_since).as_seconds_f64().max(0.0));
        if d.state.is_terminal() {
            metrics.deployment_finished(d.state);
            // Whoever ended it (its actor, reconciliation, shutdown), what it
            // left in the data dir goes with it.
            crate::compaction::cleanup::ended(self, d, from);
        }
        Ok(applied.deployment)
    }

    /// Create a `queued` deployment and broadcast its first event.
    pub async fn create(&self, new: NewDeployment) -> Result<Created, StoreError> {
        self.hub.create(new).await
    }

    /// Store events (log lines, queue positions, notes), if `fence` still
    /// holds the deployment's target, and broadcast them.
    pub async fn append(
        &self,
        id: Uuid,
        events: &[EventData],
        fence: Option<&Fence>,
    ) -> Result<Vec<Event>, StoreError> {
        self.hub.append(id, events, fence).await
    }
}
