//! The Supervisor: one per process. It resolves (app, cluster) to that
//! target's [`AppActor`], spawning it linked on first use, and hears when one
//! stops or fails.
//!
//! What must stay true: exactly one live actor per target in this process, so
//! the target's mailbox is the only place its deployments change here. The
//! supervisor overrides `handle_supervisor_evt`; ractor's default would stop
//! the supervisor itself when any child exits.

use crate::app_actor::{AppActor, AppHandle, AppMsg, Args, Shared, TargetError};
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

type Target = (String, String);

/// Typed access to the supervisor.
#[derive(Clone)]
pub struct SupervisorHandle {
    actor: ActorRef<SupMsg>,
}

/// What the supervisor knows of one resident actor.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ResidentActor {
    pub app: String,
    pub cluster: String,
}

impl SupervisorHandle {
    /// Start the supervisor.
    pub async fn start(
        shared: Arc<Shared>,
    ) -> anyhow::Result<(SupervisorHandle, tokio::task::JoinHandle<()>)> {
        let (actor, join) = Actor::spawn(None, Supervisor, shared).await?;
        Ok((SupervisorHandle { actor }, join))
    }

    /// The actor of (app, cluster), spawned if it is not resident.
    pub async fn target(&self, app: &str, cluster: &str) -> Result<AppHandle, TargetError> {
        let key = (app.to_string(), cluster.to_string());
        match self
            .actor
            .call(|reply| SupMsg::Resolve(key, reply), Some(CALL_TIMEOUT))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(Ok(actor))) => Ok(AppHandle::new(actor)),
            Ok(ractor::rpc::CallResult::Success(Err(e))) => Err(TargetError::Unavailable(e)),
            Ok(other) => Err(TargetError::Unavailable(format!("supervisor: {other:?}"))),
            Err(e) => Err(TargetError::Unavailable(format!("supervisor: {e}"))),
        }
    }

    /// The resident actors.
    pub async fn resident(&self) -> Vec<ResidentActor> {
        match self.actor.call(SupMsg::Resident, Some(CALL_TIMEOUT)).await {
            Ok(ractor::rpc::CallResult::Success(list)) => list,
            _ => Vec::new(),
        }
    }

    /// Whether the supervisor is running.
    pub fn is_alive(&self) -> bool {
        matches!(self.actor.get_status(), ractor::ActorStatus::Running)
    }

    /// Stop the supervisor and, with it, every target actor.
    pub async fn stop(&self) {
        let _ = self.actor.stop_and_wait(None, Some(CALL_TIMEOUT)).await;
    }
}

pub enum SupMsg {
    Resolve(Target, RpcReplyPort<Result<ActorRef<AppMsg>, String>>),
    Resident(RpcReplyPort<Vec<ResidentActor>>),
}

struct Supervisor;

struct Registry {
    shared: Arc<Shared>,
    targets: HashMap<Target, ActorRef<AppMsg>>,
    by_id: HashMap<ActorId, Target>,
}

impl Actor for Supervisor {
    type Msg = SupMsg;
    type State = Registry;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _: ActorRef<SupMsg>,
        shared: Arc<Shared>,
    ) -> Result<Registry, ActorProcessingErr> {
        Ok(Registry {
            shared,
            targets: HashMap::new(),
            by_id: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<SupMsg>,
        message: SupMsg,
        state: &mut Registry,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupMsg::Resolve(target, reply) => {
                let answer = state.resolve(myself.get_cell(), target).await;
                let _ = reply.send(answer);
            }
            SupMsg::Resident(reply) => {
                let list = state
                    .targets
                    .keys()
                    .map(|(app, cluster)| ResidentActor {
                        app: app.clone(),
                        cluster: cluster.clone(),
                    })
                    .collect();
                let _ = reply.send(list);
            }
        }
        Ok(())
    }

    /// Every child exit is handled here, explicitly; the supervisor itself
    /// keeps running whatever a child does.
    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<SupMsg>,
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
                if let Some((app, cluster)) = state.forget(&cell) {
                    tracing::error!(%app, %cluster, %error, "target actor failed");
                }
            }
            SupervisionEvent::ActorStarted(_) | SupervisionEvent::ProcessGroupChanged(_) => {}
        }
        Ok(())
    }
}

impl Registry {
    async fn resolve(
        &mut self,
        supervisor: ActorCell,
        target: Target,
    ) -> Result<ActorRef<AppMsg>, String> {
        if let Some(actor) = self.targets.get(&target) {
            return Ok(actor.clone());
        }
        let args = Args {
            shared: self.shared.clone(),
            app: target.0.clone(),
            cluster: target.1.clone(),
        };
        let (actor, _) = Actor::spawn_linked(None, AppActor, args, supervisor)
            .await
            .map_err(|e| {
                format!(
                    "could not start the actor of {}/{}: {e}",
                    target.0, target.1
                )
            })?;
        self.by_id.insert(actor.get_id(), target.clone());
        self.targets.insert(target, actor.clone());
        Ok(actor)
    }

    fn forget(&mut self, cell: &ActorCell) -> Option<Target> {
        let target = self.by_id.remove(&cell.get_id())?;
        self.targets.remove(&target);
        Some(target)
    }
}
