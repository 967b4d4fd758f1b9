//! The target's actor: a thin async shell around [`TargetCore`].
//!
//! It turns mailbox messages into [`Input`]s (reading from the store first
//! what the core needs to decide), and carries out the core's [`Effect`]s in
//! order: each effect's answer is handled at once, depth first, before the
//! next effect, so the core always decides on the state the store confirmed.
//! It makes no decision of its own.
//!
//! What must stay true:
//! - long work never runs in `handle`: a phase runs in a task
//!   ([`super::step`]), which reports back with [`Input::StepEnded`];
//! - an actor passivates only when the core is idle, by draining itself: a
//!   request that reaches it while it drains is answered
//!   [`Unavailable::Retry`], and the supervisor hands it to a fresh actor;
//! - if the actor dies (a panic), its running step is killed by the drop guard.

use super::core::{
    Answer, CoreConfig, Effect, Input, Loaded, Orphaned, Passivation, PhaseResult, PhaseTimeouts,
    ReplyTo, RestoreOrder, StartFacts, StepOrder, SubmitFacts,
};
use super::step::{self, PhaseJob};
use super::{Submit, Submitted, TargetCore, TargetError, Unavailable};
use crate::daemon::Daemon;
use crate::machine::{Kind, State};
use crate::model::{Deployment, now};
use crate::pipeline::OutputCap;
use crate::store::{Fence, LeaseInfo, StoreError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::{CancellationToken, DropGuard};
use tracing::Instrument;
use uuid::Uuid;

mod effects;

/// How soon something the store refused for now is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

pub enum TargetMsg {
    Submit(Box<Submit>, RpcReplyPort<Result<Submitted, TargetError>>),
    Cancel(
        Uuid,
        Option<String>,
        RpcReplyPort<Result<Deployment, TargetError>>,
    ),
    /// Reconciliation found this running deployment's lease lapsed, or its
    /// deadline passed with nobody ending it: take it over. Answered once
    /// the core decided (a take-over that it won may be restoring).
    Adopt(
        Box<LeaseInfo>,
        Orphaned,
        RpcReplyPort<Result<(), TargetError>>,
    ),
    /// A step result or a timer, for the core.
    Input(Box<Input>),
    /// Passivate if still idle since the check numbered `generation` was set.
    IdleCheck(u64),
    /// Another instance owns the target now (this one's heartbeat found its
    /// lease gone, or the store fenced a write): stop the step, write
    /// nothing more, and stop.
    Lost,
}

impl std::fmt::Debug for TargetMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TargetMsg::Submit(s, _) => write!(f, "Submit({})", s.kind),
            TargetMsg::Cancel(id, _, _) => write!(f, "Cancel({id})"),
            TargetMsg::Adopt(lease, cause, _) => {
                write!(f, "Adopt({}, {cause:?})", lease.deployment.id)
            }
            TargetMsg::Input(input) => write!(f, "Input({input:?})"),
            TargetMsg::IdleCheck(g) => write!(f, "IdleCheck({g})"),
            TargetMsg::Lost => write!(f, "Lost"),
        }
    }
}

pub struct TargetActor;

pub struct Args {
    pub daemon: Arc<Daemon>,
    pub app: String,
    pub cluster: String,
    pub stats: Arc<ActorStats>,
    /// This instance's hold on the target; every write carries it.
    pub fence: Fence,
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

/// The actor's state: the core, and the I/O handles that carry out its effects.
pub struct Shell {
    daemon: Arc<Daemon>,
    app: String,
    cluster: String,
    core: TargetCore,
    stats: Arc<ActorStats>,
    /// This instance's hold on the target: every write carries it, so none
    /// lands once another instance took the target.
    fence: Fence,
    /// Set once the target was lost: nothing more is carried out.
    lost: bool,
    /// Callers waiting for an answer, by the [`ReplyTo`] the core names.
    ports: HashMap<ReplyTo, Port>,
    next_reply: u64,
    /// The running deployment's step task, if any.
    step: Option<StepSlot>,
    lease_timer: Option<tokio::task::JoinHandle<()>>,
    told_shutdown: bool,
    /// Set once the actor decided to passivate; requests get `Retry`.
    draining: bool,
    /// Only the newest scheduled idle check may passivate the actor.
    idle_generation: u64,
}

enum Port {
    Submit(RpcReplyPort<Result<Submitted, TargetError>>),
    Cancel(RpcReplyPort<Result<Deployment, TargetError>>),
}

/// One deployment's step tasks share its output budget and its stop token.
struct StepSlot {
    id: Uuid,
    cancel: CancellationToken,
    cap: Arc<Mutex<OutputCap>>,
    /// Stops the step if the actor's state is dropped without a clean stop (a panic).
    _kill_on_drop: DropGuard,
}

impl Actor for TargetActor {
    type Msg = TargetMsg;
    type State = Shell;
    type Arguments = Args;

    async fn pre_start(
        &self,
        _: ActorRef<TargetMsg>,
        args: Args,
    ) -> Result<Shell, ActorProcessingErr> {
        let config = core_config(&args.daemon, &args.app, &args.cluster);
        Ok(Shell {
            core: TargetCore::new(config),
            daemon: args.daemon,
            app: args.app,
            cluster: args.cluster,
            stats: args.stats,
            fence: args.fence,
            lost: false,
            ports: HashMap::new(),
            next_reply: 0,
            step: None,
            lease_timer: None,
            told_shutdown: false,
            draining: false,
            idle_generation: 0,
        })
    }

    /// Load the durable queue after starting, so spawning never waits on the store.
    async fn post_start(
        &self,
        myself: ActorRef<TargetMsg>,
        shell: &mut Shell,
    ) -> Result<(), ActorProcessingErr> {
        let effects = shell.core.start();
        shell.carry_out_all(&myself, effects).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<TargetMsg>,
        message: TargetMsg,
        shell: &mut Shell,
    ) -> Result<(), ActorProcessingErr> {
        if matches!(
            message,
            TargetMsg::Submit(..) | TargetMsg::Cancel(..) | TargetMsg::Adopt(..)
        ) {
            shell.stats.pending.fetch_sub(1, Ordering::Relaxed);
            *shell.stats.last_active.lock().expect("stats lock") = Instant::now();
        }
        match message {
            TargetMsg::Submit(submit, reply) => {
                #[cfg(feature = "test-hooks")]
                if submit.message == super::TEST_PANIC {
                    panic!("injected by a test: {}", super::TEST_PANIC);
                }
                if shell.draining {
                    let _ = reply.send(Err(Unavailable::Retry.into()));
                    return Ok(());
                }
                let reply = shell.register(Port::Submit(reply));
                let facts = shell.submit_facts(&submit).await;
                let input = Input::Submit {
                    reply,
                    id: Uuid::now_v7(),
                    request: submit,
                    facts,
                };
                shell.run(&myself, input).await;
            }
            TargetMsg::Cancel(id, reason, reply) => {
                if shell.draining {
                    let _ = reply.send(Err(Unavailable::Retry.into()));
                    return Ok(());
                }
                let reply = shell.register(Port::Cancel(reply));
                let found = match shell.core.holds(id) {
                    true => Ok(None),
                    false => shell.daemon.store.get(id).await,
                };
                let input = Input::Cancel {
                    reply,
                    id,
                    reason,
                    found,
                };
                shell.run(&myself, input).await;
            }
            TargetMsg::Adopt(lease, cause, reply) => {
                if shell.draining {
                    let _ = reply.send(Err(Unavailable::Retry.into()));
                    return Ok(());
                }
                let previous = shell.active_version().await;
                let LeaseInfo {
                    deployment, owner, ..
                } = *lease;
                let input = Input::Adopt {
                    deployment: Box::new(deployment),
                    owner,
                    previous,
                    cause,
                };
                shell.run(&myself, input).await;
                let _ = reply.send(Ok(()));
            }
            TargetMsg::Input(input) => {
                if matches!(*input, Input::StepEnded { .. } | Input::RestoreEnded { .. }) {
                    *shell.stats.last_active.lock().expect("stats lock") = Instant::now();
                }
                shell.run(&myself, *input).await
            }
            TargetMsg::IdleCheck(generation) => shell.idle_check(&myself, generation),
            TargetMsg::Lost => shell.lose(&myself),
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<TargetMsg>,
        shell: &mut Shell,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(step) = shell.step.take() {
            step.cancel.cancel();
        }
        if let Some(timer) = shell.lease_timer.take() {
            timer.abort();
        }
        // Passivated: let any instance take the target at once (a no-op
        // when it was lost: the fence no longer holds). At shutdown the
        // target stays held until what ran here is recorded, then the
        // instance retires (`instance::retire`) and releases it.
        if shell.daemon.stopping.is_cancelled() {
            return Ok(());
        }
        let (store, app, cluster) = (shell.daemon.store.clone(), &shell.app, &shell.cluster);
        if let Err(e) = store.release_target(app, cluster, &shell.fence).await {
            tracing::debug!(%app, %cluster, error = %e, "could not release the target; its lease will lapse");
        }
        Ok(())
    }
}

/// The core's fixed facts, from the daemon's config.
fn core_config(daemon: &Daemon, app: &str, cluster: &str) -> CoreConfig {
    let steps = daemon.config.clusters.get(cluster);
    let timeout = |step: Option<&crate::config::StepConfig>| step.map(|s| s.timeout);
    CoreConfig {
        app: app.to_string(),
        cluster: cluster.to_string(),
        instance: daemon.instance.clone(),
        lease: daemon.config.deploy.lease,
        retry_after: RETRY_AFTER,
        timeouts: PhaseTimeouts {
            build: steps.and_then(|c| timeout(c.build.as_ref())),
            push: steps.and_then(|c| timeout(c.push.as_ref())),
            activate: steps.and_then(|c| timeout(c.activate.as_ref())),
        },
    }
}

impl Shell {
    fn register(&mut self, port: Port) -> ReplyTo {
        self.next_reply += 1;
        let to = ReplyTo(self.next_reply);
        self.ports.insert(to, port);
        to
    }

    /// The target is another instance's now: stop the step (its process
    /// group is killed), answer waiting callers `Retry` (the supervisor
    /// resends them, and they reach the new owner), and drain: requests
    /// already queued are answered `Retry` too.
    fn lose(&mut self, myself: &ActorRef<TargetMsg>) {
        if self.lost {
            return;
        }
        tracing::warn!(app = %self.app, cluster = %self.cluster, epoch = self.fence.epoch, "another instance owns the target now; stopping here");
        self.lost = true;
        self.draining = true;
        if let Some(step) = self.step.take() {
            step.cancel.cancel();
        }
        for (_, port) in self.ports.drain() {
            match port {
                Port::Submit(port) => drop(port.send(Err(Unavailable::Retry.into()))),
                Port::Cancel(port) => drop(port.send(Err(Unavailable::Retry.into()))),
            }
        }
        let _ = myself.drain();
    }

    /// Feed one input to the core and carry out what it decides.
    async fn run(&mut self, myself: &ActorRef<TargetMsg>, input: Input) {
        if self.lost {
            return;
        }
        if self.daemon.stopping.is_cancelled() && !self.told_shutdown {
            self.told_shutdown = true;
            self.core.handle(Input::ShuttingDown, now());
        }
        let effects = self.core.handle(input, now());
        self.carry_out_all(myself, effects).await;
    }

    /// Carry out `effects` in order; an effect's answer goes back to the
    /// core at once, and its effects are carried out before the next one.
    async fn carry_out_all(&mut self, myself: &ActorRef<TargetMsg>, effects: Vec<Effect>) {
        let mut stack = vec![effects.into_iter()];
        while let Some(top) = stack.last_mut() {
            if self.lost {
                // Nothing more is carried out once the target is another's.
                return;
            }
            let Some(effect) = top.next() else {
                stack.pop();
                continue;
            };
            if let Some(answer) = self.carry_out(myself, effect).await {
                if answer.fenced() {
                    // Not ours any more: the core must not decide on it.
                    return self.lose(myself);
                }
                stack.push(self.core.handle(answer, now()).into_iter());
            }
        }
        self.after_effects(myself);
    }

    /// Keep the lease timer and the supervisor's view in step with the core.
    fn after_effects(&mut self, myself: &ActorRef<TargetMsg>) {
        let running = self.core.running_id();
        match (running, &self.lease_timer) {
            (Some(_), None) => {
                let every = self.daemon.config.deploy.lease / 3;
                let timer =
                    myself.send_interval(every, || TargetMsg::Input(Box::new(Input::RenewLease)));
                self.lease_timer = Some(timer);
            }
            (None, Some(_)) => {
                if let Some(timer) = self.lease_timer.take() {
                    timer.abort();
                }
            }
            _ => {}
        }
        self.stats
            .queued
            .store(self.core.queue_len(), Ordering::Relaxed);
        *self.stats.running.lock().expect("stats lock") = running;
    }

    fn schedule_idle_check(&mut self, myself: &ActorRef<TargetMsg>) {
        self.idle_generation += 1;
        let generation = self.idle_generation;
        let after = self.daemon.config.deploy.idle_actor_after;
        myself.send_after(after, move || TargetMsg::IdleCheck(generation));
    }

    /// Passivate when the core was idle for a whole idle period: drain, so
    /// requests already in the mailbox are answered (with `Retry`) and later
    /// ones are refused at the door and go to a fresh actor.
    fn idle_check(&mut self, myself: &ActorRef<TargetMsg>, generation: u64) {
        if generation != self.idle_generation || self.draining {
            return;
        }
        let idle_for = self.stats.last_active.lock().expect("stats lock").elapsed();
        let limit = self.daemon.config.deploy.idle_actor_after;
        match self.core.passivation(idle_for, limit) {
            Passivation::Stay => {}
            Passivation::CheckAgainIn(after) => {
                self.idle_generation += 1;
                let generation = self.idle_generation;
                myself.send_after(after, move || TargetMsg::IdleCheck(generation));
            }
            Passivation::Now => {
                self.draining = true;
                let _ = myself.drain();
            }
        }
    }
}
