//! The Supervisor: one per process. It resolves (app, cluster) to that
//! target's [`TargetActor`], spawning it linked on first use, and decides what
//! happens when one stops or fails — all in one `match` in
//! `handle_supervisor_evt` (ractor's default would stop the supervisor itself
//! when any child exits).
//!
//! What must stay true:
//! - at most one *accepting* actor per target in this process: a draining
//!   (passivating) actor is replaced in the registry, and requests it refused
//!   are resent to the new one, so none is lost;
//! - when an actor panics, its running deployment is failed with the panic's
//!   message and its step is killed; the actor is restarted if work waits,
//!   within a restart budget (OTP style), after which the target is degraded
//!   (503) until the period passes; other targets are untouched.

mod budget;
mod recover;

pub use budget::RestartBudget;

use crate::daemon::Daemon;
use crate::model::Deployment;
use crate::store::{Fence, LeaseInfo, OwnedTarget, Ownership};
use crate::target::{
    ActorStats, Args, Elsewhere, Orphaned, Submit, Submitted, TargetActor, TargetError,
    TargetHandle, TargetMsg, Unavailable,
};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, RpcReplyPort,
    SupervisionEvent,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use uuid::Uuid;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// A request refused by a passivating actor is resent at most this often.
const RESEND_ATTEMPTS: usize = 5;
/// The restart budget: more than `RESTARTS` crashes within `PERIOD` degrade
/// the target until the oldest of them is `PERIOD` old.
const RESTARTS: usize = 5;
const PERIOD: Duration = Duration::from_secs(60);

type Target = (String, String);

/// Typed access to the supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    actor: ActorRef<SupMsg>,
    daemon: Arc<Daemon>,
}

/// What `/v1/supervisor` shows of one resident actor.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResidentActor {
    pub app: String,
    pub cluster: String,
    pub running: Option<Uuid>,
    pub queue_length: usize,
    /// Requests sent to the actor that it has not taken up yet.
    pub mailbox_length: usize,
    pub restarts: usize,
    pub idle_seconds: f64,
}

/// A target that crashed more often than the restart budget allows.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DegradedTarget {
    pub app: String,
    pub cluster: String,
    pub crashes: usize,
    pub retry_after_seconds: u64,
}

impl SupervisorHandle {
    /// Start the supervisor.
    pub async fn start(
        daemon: Arc<Daemon>,
    ) -> anyhow::Result<(SupervisorHandle, tokio::task::JoinHandle<()>)> {
        let (actor, join) = Actor::spawn(None, Supervisor, daemon.clone()).await?;
        Ok((SupervisorHandle { actor, daemon }, join))
    }

    /// Hand a deploy or rollback to the target's actor.
    pub async fn submit(
        &self,
        app: &str,
        cluster: &str,
        submit: Submit,
    ) -> Result<Submitted, TargetError> {
        self.with_target(app, cluster, None, |target| {
            let submit = submit.clone();
            async move { target.submit(submit).await }
        })
        .await
    }

    /// Cancel deployment `id` of the target.
    pub async fn cancel(
        &self,
        app: &str,
        cluster: &str,
        id: Uuid,
        reason: Option<String>,
    ) -> Result<Deployment, TargetError> {
        self.with_target(app, cluster, None, |target| {
            let reason = reason.clone();
            async move { target.cancel(id, reason).await }
        })
        .await
    }

    /// Hand a running deployment its instance left (`cause`) to its
    /// target's actor, on this instance if it owns the target or can take
    /// it ([`TargetError::Elsewhere`] if another live one owns it), which
    /// takes it over, restores the cluster if it was activating, and
    /// records its end.
    pub async fn adopt(&self, lease: &LeaseInfo, cause: Orphaned) -> Result<(), TargetError> {
        let d = &lease.deployment;
        // A phase past its deadline and the margin the owner had to fail it
        // shows its owner is dead or stuck: take the target from it.
        let take_from = match cause {
            Orphaned::PastDeadline => lease.owner.as_deref(),
            Orphaned::LeaseLapsed => None,
        };
        self.with_target(&d.app, &d.cluster, take_from, |target| {
            let lease = lease.clone();
            async move { target.adopt(lease, cause).await }
        })
        .await
    }

    /// Make sure the target has a resident actor (it resumes queued work).
    pub async fn wake(&self, app: &str, cluster: &str) -> Result<(), TargetError> {
        self.resolve(app, cluster, None).await.map(drop)
    }

    /// Run `request` against the target's actor; if the actor was
    /// passivating and did not take it, resend it to a fresh one.
    async fn with_target<T, F, Fut>(
        &self,
        app: &str,
        cluster: &str,
        take_from: Option<&str>,
        request: F,
    ) -> Result<T, TargetError>
    where
        F: Fn(TargetHandle) -> Fut,
        Fut: Future<Output = Result<T, TargetError>>,
    {
        for _ in 0..RESEND_ATTEMPTS {
            match request(self.resolve(app, cluster, take_from).await?).await {
                Err(TargetError::Unavailable(Unavailable::Retry)) => tokio::task::yield_now().await,
                answer => return answer,
            }
        }
        Err(Unavailable::Actor("the target's actor kept stopping".to_string()).into())
    }

    /// The target's resident actor; without one, take the target (a
    /// compare-and-set on its lease in the store; from `take_from` even if
    /// its lease runs on) and start one holding it.
    /// [`TargetError::Elsewhere`] when another live instance owns it.
    async fn resolve(
        &self,
        app: &str,
        cluster: &str,
        take_from: Option<&str>,
    ) -> Result<TargetHandle, TargetError> {
        let key = (app.to_string(), cluster.to_string());
        let lookup = key.clone();
        if let Some(handle) = self.ask(|reply| SupMsg::Lookup(lookup, reply)).await? {
            return Ok(handle);
        }
        let daemon = &self.daemon;
        let lease = daemon.config.deploy.lease;
        let ownership = daemon
            .store
            .acquire_target(app, cluster, &daemon.instance, lease, take_from)
            .await
            .map_err(Unavailable::Store)?;
        match ownership {
            Ownership::Ours(fence) => self.ask(|reply| SupMsg::Spawn(key, fence, reply)).await,
            Ownership::Elsewhere { owner, address } => Err(Box::new(Elsewhere {
                app: app.to_string(),
                cluster: cluster.to_string(),
                owner,
                address,
            })
            .into()),
        }
    }

    async fn ask<T: Send + 'static>(
        &self,
        message: impl FnOnce(RpcReplyPort<Result<T, TargetError>>) -> SupMsg,
    ) -> Result<T, TargetError> {
        match self.actor.call(message, Some(CALL_TIMEOUT)).await {
            Ok(ractor::rpc::CallResult::Success(answer)) => answer,
            Ok(_) => Err(Unavailable::Actor("the supervisor did not answer".to_string()).into()),
            Err(e) => Err(Unavailable::Actor(format!("the supervisor is not running: {e}")).into()),
        }
    }

    /// The targets this instance still owns, as its heartbeat found them at
    /// `checked_at` (when it was sent): resident actors of any other target,
    /// started before then, lost it to another instance and are stopped.
    pub fn still_owned(&self, owned: Vec<OwnedTarget>, checked_at: Instant) {
        let _ = self.actor.cast(SupMsg::StillOwned(owned, checked_at));
    }

    /// The resident actors.
    pub async fn resident(&self) -> Vec<ResidentActor> {
        match self.actor.call(SupMsg::Resident, Some(CALL_TIMEOUT)).await {
            Ok(ractor::rpc::CallResult::Success(list)) => list,
            _ => Vec::new(),
        }
    }

    /// Targets refusing requests after too many crashes.
    pub async fn degraded(&self) -> Vec<DegradedTarget> {
        match self.actor.call(SupMsg::Degraded, Some(CALL_TIMEOUT)).await {
            Ok(ractor::rpc::CallResult::Success(list)) => list,
            _ => Vec::new(),
        }
    }

    /// Whether the supervisor is running.
    pub fn is_alive(&self) -> bool {
        self.actor.get_status() == ActorStatus::Running
    }

    /// Stop every target actor (their running steps are stopped), then the
    /// supervisor itself.
    pub async fn stop(&self) {
        let _ = self.actor.call(SupMsg::StopAll, Some(CALL_TIMEOUT)).await;
        let _ = self.actor.stop_and_wait(None, Some(CALL_TIMEOUT)).await;
    }
}

pub enum SupMsg {
    /// The target's accepting resident actor, if any (errors: degraded).
    Lookup(
        Target,
        RpcReplyPort<Result<Option<TargetHandle>, TargetError>>,
    ),
    /// Start the target's actor holding `Fence` (or answer with the one a
    /// concurrent request started).
    Spawn(
        Target,
        Fence,
        RpcReplyPort<Result<TargetHandle, TargetError>>,
    ),
    StillOwned(Vec<OwnedTarget>, Instant),
    Resident(RpcReplyPort<Vec<ResidentActor>>),
    Degraded(RpcReplyPort<Vec<DegradedTarget>>),
    StopAll(RpcReplyPort<()>),
}

struct Supervisor;

struct Registry {
    daemon: Arc<Daemon>,
    targets: HashMap<Target, Resident>,
    by_id: HashMap<ActorId, Target>,
    /// Recent crashes per target, for the restart budget.
    crashes: HashMap<Target, RestartBudget>,
}

struct Resident {
    actor: ActorRef<TargetMsg>,
    stats: Arc<ActorStats>,
    /// The hold on the target the actor writes under.
    fence: Fence,
    /// When it started: a heartbeat sent earlier cannot know its target.
    since: Instant,
}

impl Actor for Supervisor {
    type Msg = SupMsg;
    type State = Registry;
    type Arguments = Arc<Daemon>;

    async fn pre_start(
        &self,
        _: ActorRef<SupMsg>,
        daemon: Arc<Daemon>,
    ) -> Result<Registry, ActorProcessingErr> {
        Ok(Registry {
            daemon,
            targets: HashMap::new(),
            by_id: HashMap::new(),
            crashes: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupMsg>,
        message: SupMsg,
        state: &mut Registry,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupMsg::Lookup(target, reply) => {
                let _ = reply.send(state.lookup(&target));
            }
            SupMsg::Spawn(target, fence, reply) => {
                let answer = state.spawn(myself.get_cell(), target, fence).await;
                let _ = reply.send(answer);
            }
            SupMsg::StillOwned(owned, checked_at) => state.keep_owned(&owned, checked_at),
            SupMsg::Resident(reply) => {
                let _ = reply.send(state.resident());
            }
            SupMsg::Degraded(reply) => {
                let targets: Vec<Target> = state.crashes.keys().cloned().collect();
                let degraded = targets
                    .into_iter()
                    .filter_map(|target| {
                        let retry_after = state.degraded(&target)?;
                        let crashes = state.crashes.get(&target).map_or(0, RestartBudget::crashes);
                        Some(DegradedTarget {
                            app: target.0,
                            cluster: target.1,
                            crashes,
                            retry_after_seconds: retry_after.as_secs().max(1),
                        })
                    })
                    .collect();
                let _ = reply.send(degraded);
            }
            SupMsg::StopAll(reply) => {
                for resident in state.targets.values() {
                    resident.actor.stop(Some("shutting down".to_string()));
                }
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    /// Every child exit is decided here; the supervisor itself keeps running.
    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupMsg>,
        event: SupervisionEvent,
        state: &mut Registry,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some((app, cluster)) = state.forget(&cell) {
                    tracing::debug!(%app, %cluster, ?reason, "target actor stopped");
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some((target, fence)) = state.forget_failed(&cell) {
                    let (app, cluster) = target.clone();
                    let restarts = state.record_crash(&target);
                    state.daemon.metrics.actor_restarted();
                    tracing::error!(%app, %cluster, %error, restarts, "target actor crashed");
                    let daemon = state.daemon.clone();
                    let supervisor = SupervisorHandle {
                        actor: myself,
                        daemon: daemon.clone(),
                    };
                    let recovery = recover::recover(
                        daemon.clone(),
                        supervisor,
                        target,
                        fence,
                        error.to_string(),
                    );
                    daemon.tasks.spawn(recovery);
                }
            }
            SupervisionEvent::ActorStarted(_) | SupervisionEvent::ProcessGroupChanged(_) => {}
        }
        Ok(())
    }
}

impl Registry {
    /// The target's resident actor, unless it is passivating (a fresh one
    /// takes its place) or the target is degraded.
    fn lookup(&mut self, target: &Target) -> Result<Option<TargetHandle>, TargetError> {
        if let Some(retry_after) = self.degraded(target) {
            return Err(Unavailable::Degraded { retry_after }.into());
        }
        let Some(resident) = self.targets.get(target) else {
            return Ok(None);
        };
        let accepting = matches!(
            resident.actor.get_status(),
            ActorStatus::Running | ActorStatus::Starting
        );
        Ok(accepting.then(|| TargetHandle::new(resident.actor.clone(), resident.stats.clone())))
    }

    async fn spawn(
        &mut self,
        supervisor: ActorCell,
        target: Target,
        fence: Fence,
    ) -> Result<TargetHandle, TargetError> {
        if let Some(handle) = self.lookup(&target)? {
            return Ok(handle);
        }
        let stats = Arc::new(ActorStats::default());
        let args = Args {
            daemon: self.daemon.clone(),
            app: target.0.clone(),
            cluster: target.1.clone(),
            stats: stats.clone(),
            fence: fence.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, TargetActor, args, supervisor)
            .await
            .map_err(|e| {
                let (app, cluster) = &target;
                Unavailable::Actor(format!("could not start the actor of {app}/{cluster}: {e}"))
            })?;
        self.by_id.insert(actor.get_id(), target.clone());
        let handle = TargetHandle::new(actor.clone(), stats.clone());
        let since = Instant::now();
        let resident = Resident {
            actor,
            stats,
            fence,
            since,
        };
        self.targets.insert(target, resident);
        Ok(handle)
    }

    /// Stop the resident actors whose target the heartbeat at `checked_at`
    /// no longer found this instance holding with their fence.
    fn keep_owned(&mut self, owned: &[OwnedTarget], checked_at: Instant) {
        let holds = |(app, cluster): &Target, fence: &Fence| {
            owned
                .iter()
                .any(|o| &o.app == app && &o.cluster == cluster && o.epoch == fence.epoch)
        };
        let lost: Vec<Target> = (self.targets.iter())
            .filter(|(target, r)| r.since < checked_at && !holds(target, &r.fence))
            .map(|(target, _)| target.clone())
            .collect();
        for target in lost {
            if let Some(resident) = self.targets.remove(&target) {
                let (app, cluster) = &target;
                tracing::warn!(%app, %cluster, "this instance's lease on the target lapsed or was taken");
                let _ = resident.actor.cast(TargetMsg::Lost);
            }
        }
    }

    /// Forget an actor that exited; the registry keeps a newer actor of the
    /// same target if one already took its place.
    fn forget(&mut self, cell: &ActorCell) -> Option<Target> {
        self.forget_failed(cell).map(|(target, _)| target)
    }

    /// [`Registry::forget`], with the fence the actor held when it was
    /// still the target's resident (`None`: it had lost the target).
    fn forget_failed(&mut self, cell: &ActorCell) -> Option<(Target, Option<Fence>)> {
        let target = self.by_id.remove(&cell.get_id())?;
        let fence = match self.targets.get(&target) {
            Some(r) if r.actor.get_id() == cell.get_id() => {
                self.targets.remove(&target).map(|r| r.fence)
            }
            _ => None,
        };
        Some((target, fence))
    }

    /// Count a crash; returns how many fell within the budget period.
    fn record_crash(&mut self, target: &Target) -> usize {
        self.crashes
            .entry(target.clone())
            .or_insert_with(|| RestartBudget::new(RESTARTS, PERIOD))
            .record(Instant::now())
    }

    /// `Some(wait)` while the target is degraded; forgets a clear budget.
    fn degraded(&mut self, target: &Target) -> Option<Duration> {
        let budget = self.crashes.get_mut(target)?;
        let wait = budget.degraded(Instant::now());
        if budget.is_clear() {
            self.crashes.remove(target);
        }
        wait
    }

    fn resident(&self) -> Vec<ResidentActor> {
        self.targets
            .iter()
            .map(|((app, cluster), resident)| {
                let stats = &resident.stats;
                ResidentActor {
                    app: app.clone(),
                    cluster: cluster.clone(),
                    running: *stats.running.lock().expect("stats lock"),
                    queue_length: stats.queued.load(Ordering::Relaxed),
                    mailbox_length: stats.pending.load(Ordering::Relaxed),
                    restarts: self
                        .crashes
                        .get(&(app.clone(), cluster.clone()))
                        .map_or(0, RestartBudget::crashes),
                    idle_seconds: stats
                        .last_active
                        .lock()
                        .expect("stats lock")
                        .elapsed()
                        .as_secs_f64(),
                }
            })
            .collect()
    }
}
