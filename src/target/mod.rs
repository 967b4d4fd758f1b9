//! One target — an (app, cluster) — in this process: its actor, the only
//! writer of its deployments' state here.
//!
//! - [`core`]: every decision, pure ([`TargetCore`]: inputs in, effects out);
//! - [`actor`]: the thin async shell, a ractor actor whose mailbox serializes
//!   deploy, rollback and cancel for the target; it gathers what the store
//!   knows, feeds the core, and carries out its effects;
//! - [`step`]: one phase's work (extract, run the cluster's step, store its
//!   output) in a task the actor holds.
//!
//! Callers use [`TargetHandle`]; the messages stay private to the actor.

pub mod actor;
pub mod core;
mod step;

pub use self::core::{Orphaned, TargetCore};
pub use actor::{ActorStats, Args, TargetActor, TargetMsg};

use crate::config::ConflictPolicy;
use crate::machine::{Kind, State};
use crate::model::{Deployment, GitInfo};
use crate::store::{LeaseInfo, StoreError};
use ractor::{ActorRef, RpcReplyPort};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use uuid::Uuid;

/// How long a caller waits for the actor's answer before giving up. A
/// cancel answers once the step is gone, within `deploy.kill_grace`.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

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

/// Why a target did not do what was asked: a rejection (the request's
/// answer, as data: 404/409) or unavailability (try again: 503).
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
    /// Another live instance owns the target: the request is for it.
    #[error(transparent)]
    Elsewhere(#[from] Box<Elsewhere>),
}

/// The target is owned by another instance, which serializes its requests:
/// forward them to `address` (or, without one, retry once its lease lapsed).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{app}/{cluster} is owned by instance {owner}")]
pub struct Elsewhere {
    pub app: String,
    pub cluster: String,
    pub owner: String,
    /// Where the owner takes requests (`None`: it stopped sending heartbeats).
    pub address: Option<String>,
}

/// An expected outcome that refuses the request.
#[derive(Debug, thiserror::Error)]
pub enum Rejection {
    #[error("{} is already deploying {}/{} ({})", .0.deployed_by, .0.app, .0.cluster, .0.state)]
    InProgress(Box<Deployment>),
    #[error("{kind} {what} not found")]
    NotFound { kind: &'static str, what: String },
    #[error("a deployment in state {from} cannot become {to}")]
    InvalidTransition { from: State, to: State },
    #[error("this idempotency key was used for a different request")]
    IdempotencyMismatch,
}

/// The request could not be handled now; the same request may work later.
#[derive(Debug, thiserror::Error)]
pub enum Unavailable {
    #[error("the store could not be used")]
    Store(#[source] StoreError),
    #[error("the target's actor is not answering: {0}")]
    Actor(String),
    /// The actor is passivating and did not handle the request: send it to
    /// a fresh actor.
    #[error("the target's actor is stopping; retry")]
    Retry,
    /// The target's actor crashed too often; requests wait `retry_after`.
    #[error("the target is degraded after repeated actor crashes")]
    Degraded { retry_after: Duration },
}

impl From<StoreError> for TargetError {
    fn from(error: StoreError) -> TargetError {
        match error {
            StoreError::NotFound(id) => Rejection::NotFound {
                kind: "deployment",
                what: id.to_string(),
            }
            .into(),
            StoreError::UnknownVersion { app, version } => Rejection::NotFound {
                kind: "version",
                what: format!("{version} of app {app}"),
            }
            .into(),
            other => Unavailable::Store(other).into(),
        }
    }
}

/// Typed access to one target's actor.
#[derive(Clone)]
pub struct TargetHandle {
    actor: ActorRef<TargetMsg>,
    stats: Arc<ActorStats>,
}

impl TargetHandle {
    pub fn new(actor: ActorRef<TargetMsg>, stats: Arc<ActorStats>) -> TargetHandle {
        TargetHandle { actor, stats }
    }

    /// Deploy or roll back. Answers once the deployment is created, and
    /// started when the target was free.
    pub async fn submit(&self, submit: Submit) -> Result<Submitted, TargetError> {
        self.call(|reply| TargetMsg::Submit(Box::new(submit), reply))
            .await
    }

    /// Cancel deployment `id`. A running one is answered once its step is
    /// gone and `cancelled` is recorded.
    pub async fn cancel(
        &self,
        id: Uuid,
        reason: Option<String>,
    ) -> Result<Deployment, TargetError> {
        self.call(|reply| TargetMsg::Cancel(id, reason, reply))
            .await
    }

    /// Hand over a running deployment its instance left (`cause`): the
    /// core takes it over, restores the cluster if it was activating, and
    /// records the end. Answers once the core decided, not when a restore
    /// is over.
    pub async fn adopt(&self, lease: LeaseInfo, cause: Orphaned) -> Result<(), TargetError> {
        self.call(|reply| TargetMsg::Adopt(Box::new(lease), cause, reply))
            .await
    }

    async fn call<T: Send + 'static>(
        &self,
        message: impl FnOnce(RpcReplyPort<Result<T, TargetError>>) -> TargetMsg,
    ) -> Result<T, TargetError> {
        self.stats.pending.fetch_add(1, Ordering::Relaxed);
        let answer = self.actor.call(message, Some(CALL_TIMEOUT)).await;
        let unavailable = |why: &str| Err(Unavailable::Actor(why.to_string()).into());
        match answer {
            Ok(ractor::rpc::CallResult::Success(answer)) => answer,
            Ok(ractor::rpc::CallResult::Timeout) => unavailable("timed out"),
            Ok(ractor::rpc::CallResult::SenderError) => {
                unavailable("the actor stopped while handling the request")
            }
            // Never enqueued: the actor is draining or gone. Safe to resend.
            Err(_) => {
                self.stats.pending.fetch_sub(1, Ordering::Relaxed);
                Err(Unavailable::Retry.into())
            }
        }
    }
}

/// A deploy whose message is this makes the actor panic, when built with the
/// `test-hooks` feature (tests only; release builds have no such hook).
#[cfg(feature = "test-hooks")]
pub const TEST_PANIC: &str = "deployd-test-hooks: panic";
