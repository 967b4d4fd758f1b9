//! What one target's actor does with its requests and phase results: the
//! conflict policy, starting and advancing deployments, cancelling, and
//! deciding when it is idle enough to passivate.

use super::phase::{self, PhaseJob, PhaseResult};
use super::{AppMsg, RETRY_AFTER, Running, Submit, Submitted, TargetError, TargetState};
use crate::config::{ConflictPolicy, StepConfig};
use crate::machine::{Authority, Kind, State};
use crate::model::{Deployment, EventData, QueuedInfo, Truncated, VersionInfo};
use crate::pipeline::OutputCap;
use crate::store::{Change, Created, Lease, NewDeployment, StoreError, VersionChange};
use ractor::ActorRef;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

impl TargetState {
    pub(super) async fn submit(
        &mut self,
        myself: &ActorRef<AppMsg>,
        submit: Submit,
    ) -> Result<Submitted, TargetError> {
        let store = self.shared.store.clone();
        if let Some(key) = &submit.idempotency_key
            && let Some((deployment, hash)) = store
                .find_by_idempotency_key(&self.app, &self.cluster, key)
                .await?
        {
            if hash != submit.request_hash {
                return Err(TargetError::IdempotencyMismatch);
            }
            return Ok(Submitted {
                deployment,
                repeated: true,
            });
        }
        let rollback_to = match submit.kind {
            Kind::Rollback => Some(self.rollback_target(submit.version.as_deref()).await?),
            Kind::Deploy => None,
        };
        let holder = match self.holder() {
            Some(holder) => Some(holder.clone()),
            None => self.foreign_holder().await?,
        };
        if let (Some(holder), ConflictPolicy::Reject) = (&holder, submit.policy) {
            return Err(TargetError::InProgress(Box::new(holder.clone())));
        }
        let new = NewDeployment {
            id: Uuid::now_v7(),
            app: self.app.clone(),
            cluster: self.cluster.clone(),
            kind: submit.kind,
            source: submit.source,
            rollback_to: rollback_to.map(|v| v.version),
            git: submit.git,
            message: submit.message,
            deployed_by: submit.deployed_by,
            idempotency_key: submit.idempotency_key,
            request_hash: submit.request_hash.clone(),
            created_at: crate::model::now(),
        };
        let deployment = match store.create(new).await? {
            Created::New(deployment) => deployment,
            // Another instance created it under the same key meanwhile.
            Created::Existing {
                deployment,
                same_request,
            } => {
                if !same_request {
                    return Err(TargetError::IdempotencyMismatch);
                }
                return Ok(Submitted {
                    deployment,
                    repeated: true,
                });
            }
        };
        if let Ok(first) = store.events_after(deployment.id, 0, 1).await {
            self.shared.hub.publish(&first);
        }
        if let (Some(holder), ConflictPolicy::Supersede) = (&holder, submit.policy) {
            self.supersede(holder, deployment.id).await;
        }
        // The deployment directly ahead of the new one, if any.
        let waiting_for = self
            .queue
            .back()
            .map(|d| d.id)
            .or(self.running.as_ref().map(|r| r.deployment.id));
        self.queue.push_back(deployment.clone());
        match waiting_for {
            Some(waiting_for) => {
                let position = self.queue.len() as i64;
                let info = QueuedInfo {
                    position,
                    waiting_for,
                };
                let _ = self
                    .shared
                    .hub
                    .append(deployment.id, &[EventData::Queued(info)])
                    .await;
            }
            None => self.start_next(myself).await,
        }
        let deployment = store.get(deployment.id).await?.unwrap_or(deployment);
        Ok(Submitted {
            deployment,
            repeated: false,
        })
    }

    /// What another instance runs or queues on this target (several
    /// deployd may share one PostgreSQL): only asked when this actor holds
    /// nothing itself.
    async fn foreign_holder(&self) -> Result<Option<Deployment>, StoreError> {
        let view = self.shared.store.target(&self.app, &self.cluster).await?;
        Ok(view.running.or(view.queued.into_iter().next()))
    }

    /// The deployment a new request would wait for: the running one, else the
    /// head of the queue.
    fn holder(&self) -> Option<&Deployment> {
        self.running
            .as_ref()
            .map(|r| &r.deployment)
            .or(self.queue.front())
    }

    async fn rollback_target(&self, version: Option<&str>) -> Result<VersionInfo, TargetError> {
        let store = &self.shared.store;
        let found = match version {
            Some(v) => store.version(&self.app, v).await?,
            None => store.previous_version(&self.app, &self.cluster).await?,
        };
        found.ok_or_else(|| TargetError::NotFound {
            kind: "version",
            what: match version {
                Some(v) => format!("{v} of app {}", self.app),
                None => format!(
                    "active before the current one on {}/{}",
                    self.app, self.cluster
                ),
            },
        })
    }

    /// Cancel the running and every queued deployment in favour of `by`.
    /// Another instance's holder is cancelled through the store; its actor
    /// sees the change when it next renews the lease, and lets go.
    async fn supersede(&mut self, holder: &Deployment, by: Uuid) {
        if self.running.is_none() && self.queue.is_empty() {
            let _ = self
                .end(holder, State::Cancelled, "superseded", Some(by))
                .await;
            return;
        }
        for queued in std::mem::take(&mut self.queue) {
            let _ = self
                .end(&queued, State::Cancelled, "superseded", Some(by))
                .await;
        }
        if let Some(running) = self.running.take() {
            running.cancel.cancel();
            let _ = self
                .end(
                    &running.deployment,
                    State::Cancelled,
                    "superseded",
                    Some(by),
                )
                .await;
            self.after_running_ended(running.deployment.id);
        }
    }

    pub(super) async fn cancel(
        &mut self,
        myself: &ActorRef<AppMsg>,
        id: Uuid,
        reason: Option<String>,
    ) -> Result<Deployment, TargetError> {
        let why = match &reason {
            Some(reason) => format!("cancelled: {reason}"),
            None => "cancelled".to_string(),
        };
        if self.running.as_ref().is_some_and(|r| r.deployment.id == id) {
            let running = self.running.take().expect("checked above");
            running.cancel.cancel();
            let ended = self
                .end(&running.deployment, State::Cancelled, &why, None)
                .await;
            self.after_running_ended(id);
            self.start_next(myself).await;
            return ended;
        }
        if let Some(at) = self.queue.iter().position(|d| d.id == id) {
            let queued = self.queue.remove(at).expect("position is in range");
            let ended = self.end(&queued, State::Cancelled, &why, None).await;
            self.announce_positions().await;
            return ended;
        }
        // Not ours to run: ended already, or held by another instance.
        let deployment = self
            .shared
            .store
            .get(id)
            .await?
            .ok_or(TargetError::NotFound {
                kind: "deployment",
                what: id.to_string(),
            })?;
        self.end(&deployment, State::Cancelled, &why, None).await
    }

    /// Move `deployment` to a terminal state through the machine and the store.
    async fn end(
        &self,
        deployment: &Deployment,
        to: State,
        error: &str,
        superseded_by: Option<Uuid>,
    ) -> Result<Deployment, TargetError> {
        let refused = |_| TargetError::InvalidTransition {
            from: deployment.state,
            to,
        };
        let mut change = Change::new(
            deployment,
            to,
            Authority::Actor,
            VersionChange::Keep,
            crate::model::now(),
        )
        .map_err(refused)?;
        if to != State::Succeeded {
            change = change.with_error(error);
        }
        if let Some(by) = superseded_by {
            change = change.with_superseded_by(by);
        }
        match self.apply(change).await {
            Ok(deployment) => Ok(deployment),
            Err(StoreError::Stale { current, .. }) => {
                Err(TargetError::InvalidTransition { from: current, to })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Start the head of the queue if nothing runs.
    pub(super) async fn start_next(&mut self, myself: &ActorRef<AppMsg>) {
        // Shutting down: queued deployments stay queued for the next start.
        if self.shared.stopping.is_cancelled() {
            return;
        }
        while self.running.is_none() {
            let Some(next) = self.queue.pop_front() else {
                self.schedule_idle_check(myself);
                return;
            };
            match self.start(myself, &next).await {
                Ok(()) => {
                    self.announce_positions().await;
                    return;
                }
                Err(TargetError::Store(
                    StoreError::TargetBusy { .. } | StoreError::Unavailable(_),
                )) => {
                    // Another instance still holds the target, or the store is
                    // away: keep the order and try again shortly.
                    self.queue.push_front(next);
                    myself.send_after(RETRY_AFTER, || AppMsg::StartNext);
                    return;
                }
                Err(e) => {
                    tracing::warn!(deployment = %next.id, error = %e, "could not start a queued deployment");
                    let _ = self
                        .end(&next, State::Failed, &format!("could not start: {e}"), None)
                        .await;
                }
            }
        }
    }

    async fn start(
        &mut self,
        myself: &ActorRef<AppMsg>,
        queued: &Deployment,
    ) -> Result<(), TargetError> {
        let store = &self.shared.store;
        let current = store.get(queued.id).await?.ok_or(TargetError::NotFound {
            kind: "deployment",
            what: queued.id.to_string(),
        })?;
        let view = store.target(&self.app, &self.cluster).await?;
        let previous = match &view.active {
            Some(active) => store.version(&self.app, &active.version).await?,
            None => None,
        };
        let (version, rollback_artifact) = match (&current.kind, &current.rollback_to) {
            (Kind::Rollback, Some(v)) => {
                let info = self.rollback_target(Some(v)).await?;
                (VersionChange::Set(info.version), Some(info.artifact))
            }
            _ => (VersionChange::Keep, None),
        };
        let first = current.kind.first_phase();
        let refused = |_| TargetError::InvalidTransition {
            from: current.state,
            to: first,
        };
        let change = Change::new(
            &current,
            first,
            Authority::Actor,
            version,
            crate::model::now(),
        )
        .map_err(refused)?;
        let change = self.with_lease_and_deadline(change);
        let deployment = self.apply(change).await?;
        let cap = OutputCap::new(self.shared.config.limits.output_bytes_per_deployment);
        let cancel = CancellationToken::new();
        self.running = Some(Running {
            phase_since: deployment.started_at.unwrap_or(deployment.created_at),
            deployment,
            _kill_on_drop: cancel.clone().drop_guard(),
            cancel,
            cap: Arc::new(Mutex::new(cap)),
            previous,
            rollback_artifact,
        });
        let lease = self.shared.config.deploy.lease;
        self.lease_timer = Some(myself.send_interval(lease / 3, || AppMsg::RenewLease));
        self.spawn_phase(myself);
        Ok(())
    }

    /// A running phase gets a lease and a deadline; both are stored, so they
    /// survive a restart of this process.
    fn with_lease_and_deadline(&self, change: Change) -> Change {
        let now = crate::model::now();
        let lease = Lease {
            owner: self.shared.instance.clone(),
            expires_at: now + self.shared.config.deploy.lease,
        };
        let change = change.with_lease(lease);
        match self.step_config(change.to) {
            Some(step) => change.with_deadline(now + step.timeout),
            None => change,
        }
    }

    fn step_config(&self, phase: State) -> Option<StepConfig> {
        let cluster = self.shared.config.clusters.get(&self.cluster)?;
        match phase {
            State::Building => cluster.build.clone(),
            State::Pushing => cluster.push.clone(),
            State::Activating => cluster.activate.clone(),
            _ => None,
        }
    }

    /// Run the running deployment's current phase in a task of its own.
    fn spawn_phase(&self, myself: &ActorRef<AppMsg>) {
        let running = self
            .running
            .as_ref()
            .expect("a phase runs only for the running deployment");
        let deployment = running.deployment.clone();
        let artifact = running.rollback_artifact.clone();
        let job = PhaseJob {
            shared: self.shared.clone(),
            step: self.step_config(deployment.state),
            env: phase::step_env(
                &self.shared,
                &deployment,
                running.previous.as_ref(),
                artifact,
            ),
            deployment,
            cancel: running.cancel.clone(),
            cap: running.cap.clone(),
        };
        let myself = myself.clone();
        let d = &job.deployment;
        let span = tracing::info_span!("deployment", id = %d.id, app = %d.app, cluster = %d.cluster, phase = %d.state);
        let task = async move {
            let (id, phase) = (job.deployment.id, job.deployment.state);
            tracing::info!("phase started");
            let result = job.run().await;
            if let PhaseResult::Failed(error) = &result {
                tracing::warn!(%error, "phase failed");
            }
            let _ = myself.cast(AppMsg::PhaseDone { id, phase, result });
        };
        tokio::spawn(task.instrument(span));
    }

    pub(super) async fn phase_done(
        &mut self,
        myself: &ActorRef<AppMsg>,
        id: Uuid,
        phase: State,
        result: PhaseResult,
    ) {
        let Some(running) = &self.running else { return };
        if running.deployment.id != id || running.deployment.state != phase {
            tracing::debug!(deployment = %id, %phase, "ignoring a stale phase result");
            return;
        }
        let deployment = running.deployment.clone();
        let outcome = match result.clone() {
            PhaseResult::Done { artifact } => self.advance(&deployment, artifact).await,
            PhaseResult::Failed(error) => {
                self.record_truncation(&deployment).await;
                self.end(&deployment, State::Failed, &error, None).await
            }
        };
        match outcome {
            Ok(next) if next.state.is_terminal() => self.finish(myself, next.id).await,
            Ok(next) => {
                if let Some(running) = self.running.as_mut() {
                    running.phase_since = crate::model::now();
                    running.deployment = next;
                }
                self.spawn_phase(myself);
            }
            Err(TargetError::Store(StoreError::Unavailable(e))) => {
                // Keep the result until the store can record it (or the lease
                // lapses and the reaper marks the deployment interrupted).
                tracing::warn!(deployment = %id, error = %e, "store unavailable; will retry recording the phase result");
                myself.send_after(RETRY_AFTER, move || AppMsg::PhaseDone { id, phase, result });
            }
            Err(e) => {
                // Changed behind our back (cancelled by another instance, reaped):
                // it is no longer ours to run.
                tracing::warn!(deployment = %id, error = %e, "deployment changed elsewhere; letting it go");
                if let Some(running) = &self.running {
                    running.cancel.cancel();
                }
                self.finish(myself, id).await;
            }
        }
    }

    /// The next phase after `phase` succeeded.
    async fn advance(
        &self,
        deployment: &Deployment,
        artifact: Option<String>,
    ) -> Result<Deployment, TargetError> {
        let (to, version) = match deployment.state {
            State::Building => {
                let artifact = artifact.unwrap_or_else(|| {
                    format!("source:{}", deployment.source.clone().unwrap_or_default())
                });
                (State::Pushing, VersionChange::Mint { artifact })
            }
            State::Pushing => (State::Activating, VersionChange::Keep),
            _ => (State::Succeeded, VersionChange::Keep),
        };
        if to == State::Succeeded {
            self.record_truncation(deployment).await;
        }
        let refused = |_| TargetError::InvalidTransition {
            from: deployment.state,
            to,
        };
        let change = Change::new(
            deployment,
            to,
            Authority::Actor,
            version,
            crate::model::now(),
        )
        .map_err(refused)?;
        let change = if to.is_running() {
            self.with_lease_and_deadline(change)
        } else {
            change
        };
        Ok(self.apply(change).await?)
    }

    /// One `truncated` event before the final state, if output was dropped.
    async fn record_truncation(&self, deployment: &Deployment) {
        let Some(running) = &self.running else { return };
        let dropped = running.cap.lock().expect("output cap lock").dropped_lines();
        if dropped > 0 {
            let event = EventData::Truncated(Truncated {
                dropped_lines: dropped,
            });
            let _ = self.shared.hub.append(deployment.id, &[event]).await;
        }
    }

    async fn finish(&mut self, myself: &ActorRef<AppMsg>, id: Uuid) {
        self.running = None;
        self.after_running_ended(id);
        self.start_next(myself).await;
    }

    /// Stop renewing the lease and clear the workspace of a deployment that ended.
    fn after_running_ended(&mut self, id: Uuid) {
        if let Some(timer) = self.lease_timer.take() {
            timer.abort();
        }
        let workspace = phase::workspace(&self.shared, id);
        tokio::task::spawn_blocking(move || {
            let _ = std::fs::remove_dir_all(workspace);
        });
    }

    /// Extend the running deployment's lease. If it is no longer ours (the
    /// lease lapsed, say during a store outage, and reconciliation ended the
    /// deployment), stop its step and free the target here too.
    pub(super) async fn renew_lease(&mut self, myself: &ActorRef<AppMsg>) {
        let Some(running) = &self.running else { return };
        let id = running.deployment.id;
        let expires_at = crate::model::now() + self.shared.config.deploy.lease;
        let renewed = self
            .shared
            .store
            .renew_leases(&self.shared.instance, &[id], expires_at)
            .await;
        match renewed {
            Ok(0) => {
                tracing::warn!(deployment = %id, "lost the lease; stopping the step");
                running.cancel.cancel();
                self.finish(myself, id).await;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(deployment = %id, error = %e, "could not renew the lease"),
        }
    }

    /// Tell every queued deployment its position and what it waits for.
    async fn announce_positions(&self) {
        let mut ahead = self.running.as_ref().map(|r| r.deployment.id);
        for (index, queued) in self.queue.iter().enumerate() {
            if let Some(waiting_for) = ahead {
                let info = QueuedInfo {
                    position: index as i64 + 1,
                    waiting_for,
                };
                let _ = self
                    .shared
                    .hub
                    .append(queued.id, &[EventData::Queued(info)])
                    .await;
            }
            ahead = Some(queued.id);
        }
    }
}

impl TargetState {
    /// Store a machine-approved change, then broadcast its `state` event:
    /// write-ahead, so no subscriber sees a state the store lacks.
    async fn apply(&self, change: Change) -> Result<Deployment, StoreError> {
        let (from, at) = (change.from, change.at);
        let applied = self.shared.store.transition(change).await?;
        let d = &applied.deployment;
        tracing::info!(deployment = %d.id, app = %d.app, cluster = %d.cluster, state = %d.state, "state changed");
        let metrics = crate::metrics::global();
        let since = match &self.running {
            Some(running) if running.deployment.id == d.id && from != State::Queued => {
                running.phase_since
            }
            _ => d.created_at,
        };
        metrics.phase_finished(from, (at - since).as_seconds_f64().max(0.0));
        if d.state.is_terminal() {
            metrics.deployment_finished(d.state);
        }
        self.shared
            .hub
            .publish(std::slice::from_ref(&applied.event));
        Ok(applied.deployment)
    }

    /// Let the supervisor see the queue and the running deployment.
    pub(super) fn publish_stats(&self) {
        self.stats.queued.store(self.queue.len(), Ordering::Relaxed);
        *self.stats.running.lock().expect("stats lock") =
            self.running.as_ref().map(|r| r.deployment.id);
    }

    fn is_idle(&self) -> bool {
        self.running.is_none() && self.queue.is_empty()
    }

    /// Check for idleness after `deploy.idle_actor_after`.
    fn schedule_idle_check(&mut self, myself: &ActorRef<AppMsg>) {
        self.idle_generation += 1;
        let generation = self.idle_generation;
        let after = self.shared.config.deploy.idle_actor_after;
        myself.send_after(after, move || AppMsg::IdleCheck(generation));
    }

    /// Passivate when nothing ran or waited for a whole idle period: drain,
    /// so requests already in the mailbox are answered (with `Retry`) and
    /// later ones are refused at the door and go to a fresh actor.
    pub(super) fn idle_check(&mut self, myself: &ActorRef<AppMsg>, generation: u64) {
        if generation != self.idle_generation || !self.is_idle() || self.draining {
            return;
        }
        let idle_for = self.stats.last_active.lock().expect("stats lock").elapsed();
        let limit = self.shared.config.deploy.idle_actor_after;
        if idle_for < limit {
            self.idle_generation += 1;
            let generation = self.idle_generation;
            myself.send_after(limit - idle_for, move || AppMsg::IdleCheck(generation));
            return;
        }
        self.draining = true;
        let _ = myself.drain();
    }
}
