//! The AppActor: one per (app, cluster), the only writer of its deployments'
//! state inside this process.
//!
//! Its mailbox serializes deploy, rollback and cancel for the target, so the
//! conflict policy is decided without races. What must stay true:
//! - every state change goes through [`Change::new`] (the machine) and a store
//!   compare-and-set, and is broadcast only after it was stored;
//! - long work never runs in `handle`: a phase runs in a task the actor holds
//!   ([`phase`]), which reports back with [`AppMsg::PhaseDone`];
//! - a phase result for a deployment that is no longer running here is ignored;
//! - an actor passivates only when idle, by draining itself: a request that
//!   reaches it while it drains is answered [`TargetError::Retry`], and the
//!   supervisor hands it to a fresh actor, so no message is lost;
//! - if the actor dies (a panic), its running step is killed by the drop guard.

mod phase;
mod target;

use crate::config::ConflictPolicy;
use crate::machine::{Kind, State};
use crate::model::{Deployment, GitInfo, VersionInfo};
use crate::pipeline::OutputCap;
use crate::store::StoreError;
use phase::PhaseResult;
pub use phase::Shared;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::{CancellationToken, DropGuard};
use uuid::Uuid;

/// How long a caller waits for the actor's answer before giving up.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How soon a result the store could not record is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// A deploy or rollback request, validated by the HTTP layer.
#[derive(Debug, Clone)]
pub struct Submit {
    pub kind: Kind,
    pub source: Option<String>,
    /// Rollback target; `None` means the version active before the current one.
    pub version: Option<String>,
    pub git: Option<GitInfo>,
    pub message: String,
    pub deployed_by: String,
    pub policy: ConflictPolicy,
    pub idempotency_key: Option<String>,
    pub request_hash: String,
}

/// The answer to a submit: the deployment, and whether an idempotency key
/// repeated an earlier request.
#[derive(Debug, Clone)]
pub struct Submitted {
    pub deployment: Deployment,
    pub repeated: bool,
}

/// Why the target refused a request. Rejections are expected outcomes.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("{} is already deploying {}/{} ({})", .0.deployed_by, .0.app, .0.cluster, .0.state)]
    InProgress(Box<Deployment>),
    #[error("{kind} {what} not found")]
    NotFound { kind: &'static str, what: String },
    #[error("a deployment in state {from} cannot become {to}")]
    InvalidTransition { from: State, to: State },
    #[error("this idempotency key was used for a different request")]
    IdempotencyMismatch,
    #[error("the target's actor is not answering: {0}")]
    Unavailable(String),
    /// The actor is passivating and did not handle the request: send it to
    /// a fresh actor.
    #[error("the target's actor is stopping; retry")]
    Retry,
    /// The target's actor crashed too often; requests wait until `until`.
    #[error("the target is degraded after repeated actor crashes")]
    Degraded { retry_after: Duration },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Typed access to one target's actor.
#[derive(Clone)]
pub struct AppHandle {
    actor: ActorRef<AppMsg>,
    stats: Arc<ActorStats>,
}

impl AppHandle {
    pub fn new(actor: ActorRef<AppMsg>, stats: Arc<ActorStats>) -> AppHandle {
        AppHandle { actor, stats }
    }

    pub async fn submit(&self, submit: Submit) -> Result<Submitted, TargetError> {
        self.call(|reply| AppMsg::Submit(Box::new(submit), reply))
            .await
    }

    pub async fn cancel(
        &self,
        id: Uuid,
        reason: Option<String>,
    ) -> Result<Deployment, TargetError> {
        self.call(|reply| AppMsg::Cancel(id, reason, reply)).await
    }

    async fn call<T: Send + 'static>(
        &self,
        message: impl FnOnce(RpcReplyPort<Result<T, TargetError>>) -> AppMsg,
    ) -> Result<T, TargetError> {
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        let answer = self.actor.call(message, Some(CALL_TIMEOUT)).await;
        match answer {
            Ok(ractor::rpc::CallResult::Success(answer)) => answer,
            Ok(ractor::rpc::CallResult::Timeout) => {
                Err(TargetError::Unavailable("timed out".to_string()))
            }
            Ok(ractor::rpc::CallResult::SenderError) => Err(TargetError::Unavailable(
                "the actor stopped while handling the request".to_string(),
            )),
            // Never enqueued: the actor is draining or gone. Safe to resend.
            Err(_) => {
                self.stats.pending.fetch_sub(1, Ordering::Relaxed);
                Err(TargetError::Retry)
            }
        }
    }
}

pub enum AppMsg {
    Submit(Box<Submit>, RpcReplyPort<Result<Submitted, TargetError>>),
    Cancel(
        Uuid,
        Option<String>,
        RpcReplyPort<Result<Deployment, TargetError>>,
    ),
    /// A phase task finished: advance, fail, or ignore if it is stale.
    PhaseDone {
        id: Uuid,
        phase: State,
        result: PhaseResult,
    },
    RenewLease,
    /// Try again to start the head of the queue.
    StartNext,
    /// Passivate if still idle since the check numbered `generation` was set.
    IdleCheck(u64),
}

impl std::fmt::Debug for AppMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppMsg::Submit(s, _) => write!(f, "Submit({})", s.kind),
            AppMsg::Cancel(id, _, _) => write!(f, "Cancel({id})"),
            AppMsg::PhaseDone { id, phase, .. } => write!(f, "PhaseDone({id}, {phase})"),
            AppMsg::RenewLease => f.write_str("RenewLease"),
            AppMsg::StartNext => f.write_str("StartNext"),
            AppMsg::IdleCheck(g) => write!(f, "IdleCheck({g})"),
        }
    }
}

pub struct AppActor;

pub struct Args {
    pub shared: Arc<Shared>,
    pub app: String,
    pub cluster: String,
    pub stats: Arc<ActorStats>,
}

/// What the supervisor can see of an actor without asking it (asking would
/// make the supervisor wait on a busy target).
#[derive(Debug)]
pub struct ActorStats {
    /// Requests sent to the actor and not yet taken from its mailbox.
    pub pending: AtomicUsize,
    pub queued: AtomicUsize,
    pub running: Mutex<Option<Uuid>>,
    pub last_active: Mutex<Instant>,
}

impl Default for ActorStats {
    fn default() -> ActorStats {
        ActorStats {
            pending: AtomicUsize::new(0),
            queued: AtomicUsize::new(0),
            running: Mutex::new(None),
            last_active: Mutex::new(Instant::now()),
        }
    }
}

pub struct TargetState {
    shared: Arc<Shared>,
    app: String,
    cluster: String,
    running: Option<Running>,
    queue: VecDeque<Deployment>,
    lease_timer: Option<tokio::task::JoinHandle<()>>,
    stats: Arc<ActorStats>,
    /// Set once the actor decided to passivate; requests get `Retry`.
    draining: bool,
    /// Only the newest scheduled idle check may passivate the actor.
    idle_generation: u64,
}

/// The deployment whose phases this actor is running.
struct Running {
    deployment: Deployment,
    cancel: CancellationToken,
    cap: Arc<Mutex<OutputCap>>,
    /// The version active when it started: DEPLOY_PREVIOUS_*.
    previous: Option<VersionInfo>,
    /// The artifact a rollback re-activates.
    rollback_artifact: Option<String>,
    /// When the current phase began, for the phase-duration metric.
    phase_since: chrono::DateTime<chrono::Utc>,
    /// Cancels the step if this state is dropped without a clean stop (a panic).
    _kill_on_drop: DropGuard,
}

impl Actor for AppActor {
    type Msg = AppMsg;
    type State = TargetState;
    type Arguments = Args;

    async fn pre_start(
        &self,
        _: ActorRef<AppMsg>,
        args: Args,
    ) -> Result<TargetState, ActorProcessingErr> {
        Ok(TargetState {
            shared: args.shared,
            app: args.app,
            cluster: args.cluster,
            running: None,
            queue: VecDeque::new(),
            lease_timer: None,
            stats: args.stats,
            draining: false,
            idle_generation: 0,
        })
    }

    /// Load the durable queue after starting, so spawning never waits on the store.
    async fn post_start(
        &self,
        myself: ActorRef<AppMsg>,
        state: &mut TargetState,
    ) -> Result<(), ActorProcessingErr> {
        let view = state
            .shared
            .store
            .target(&state.app, &state.cluster)
            .await?;
        state.queue = view.queued.into();
        state.publish_stats();
        if view.running.is_some() {
            // Held by another instance, or by a dead one the reaper will free.
            myself.send_after(state.shared.config.deploy.lease / 3, || AppMsg::StartNext);
        } else {
            state.start_next(&myself).await;
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<AppMsg>,
        message: AppMsg,
        state: &mut TargetState,
    ) -> Result<(), ActorProcessingErr> {
        if matches!(
            message,
            AppMsg::Submit(..) | AppMsg::Cancel(..) | AppMsg::PhaseDone { .. }
        ) {
            *state.stats.last_active.lock().expect("stats lock") = Instant::now();
        }
        match message {
            AppMsg::Submit(submit, reply) => {
                state.stats.pending.fetch_sub(1, Ordering::Relaxed);
                #[cfg(feature = "test-hooks")]
                if submit.message == TEST_PANIC {
                    panic!("injected by a test: {TEST_PANIC}");
                }
                let answer = match state.draining {
                    true => Err(TargetError::Retry),
                    false => state.submit(&myself, *submit).await,
                };
                let _ = reply.send(answer);
            }
            AppMsg::Cancel(id, reason, reply) => {
                state.stats.pending.fetch_sub(1, Ordering::Relaxed);
                let answer = match state.draining {
                    true => Err(TargetError::Retry),
                    false => state.cancel(&myself, id, reason).await,
                };
                let _ = reply.send(answer);
            }
            AppMsg::PhaseDone { id, phase, result } => {
                state.phase_done(&myself, id, phase, result).await
            }
            AppMsg::RenewLease => state.renew_lease(&myself).await,
            AppMsg::StartNext => state.start_next(&myself).await,
            AppMsg::IdleCheck(generation) => state.idle_check(&myself, generation),
        }
        state.publish_stats();
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<AppMsg>,
        state: &mut TargetState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(running) = state.running.take() {
            running.cancel.cancel();
        }
        if let Some(timer) = state.lease_timer.take() {
            timer.abort();
        }
        Ok(())
    }
}

/// A deploy whose message is this makes the actor panic, when built with the
/// `test-hooks` feature (tests only; release builds have no such hook).
#[cfg(feature = "test-hooks")]
pub const TEST_PANIC: &str = "deployd-test-hooks: panic";
