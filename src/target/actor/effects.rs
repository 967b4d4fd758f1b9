//! How the shell carries out the core's effects, and reads the store facts
//! the core decides with. Nothing here decides: each function does one
//! effect's I/O and returns the answer as the core's next input.

use super::*;
use crate::model::VersionInfo;
use crate::store::Holder;

impl Shell {
    pub(super) async fn carry_out(
        &mut self,
        myself: &ActorRef<TargetMsg>,
        effect: Effect,
    ) -> Option<Input> {
        let daemon = self.daemon.clone();
        match effect {
            Effect::Reply { to, answer } => self.reply(to, answer),
            Effect::Load => {
                let view = daemon.store.target(&self.app, &self.cluster).await;
                let loaded = view.map(|view| Loaded {
                    held_elsewhere: view.running.is_some(),
                    queued: view.queued,
                });
                if let Err(e) = &loaded {
                    tracing::warn!(app = %self.app, cluster = %self.cluster, error = %e, "could not load the target's queue; will retry");
                }
                return Some(Input::Loaded(loaded));
            }
            Effect::Create {
                reply,
                policy,
                holder,
                new,
            } => {
                let mut new = *new;
                new.fence = Some(self.fence.clone());
                let result = daemon.create(new).await;
                return Some(Input::Created {
                    reply,
                    policy,
                    holder,
                    result,
                });
            }
            Effect::Prepare { id, reply } => {
                let facts = self.start_facts(id).await;
                return Some(Input::Prepared { id, reply, facts });
            }
            Effect::Commit {
                change,
                since,
                purpose,
            } => {
                let change = change.with_fence(Some(self.fence.clone()));
                let result = daemon.commit(change, since).await;
                if let Err(e) = &result {
                    tracing::warn!(app = %self.app, cluster = %self.cluster, error = %e, "a change was not committed");
                }
                return Some(Input::Committed { purpose, result });
            }
            Effect::Append { id, events } => {
                match daemon.append(id, &events, Some(&self.fence)).await {
                    Ok(_) => {}
                    Err(StoreError::Fenced { .. }) => self.lose(myself),
                    Err(e) => {
                        tracing::warn!(deployment = %id, error = %e, "could not store events")
                    }
                }
            }
            Effect::StartStep(order) => self.start_step(myself, *order),
            Effect::StartRestore(order) => self.start_restore(myself, *order),
            Effect::TakeOver {
                adoption,
                lapsed_before,
                lease,
                deadline,
            } => {
                let d = &adoption.deployment;
                let lapsed = match adoption.cause {
                    Orphaned::LeaseLapsed => Holder::LapsedBefore(lapsed_before),
                    Orphaned::PastDeadline => Holder::PastDeadline(lapsed_before),
                };
                let result = daemon
                    .store
                    .take_over(d.id, d.state, &lapsed, &lease, deadline)
                    .await;
                match &result {
                    Ok(true) => {
                        tracing::warn!(deployment = %d.id, state = %d.state, cause = ?adoption.cause, "took over a deployment its instance left")
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(deployment = %d.id, error = %e, "could not take over a lapsed activation")
                    }
                }
                return Some(Input::TakenOver { adoption, result });
            }
            Effect::KillLeftovers { id } => {
                let killed = crate::pipeline::kill_orphans(id);
                if killed > 0 {
                    tracing::warn!(deployment = %id, killed, "killed a dead daemon's leftover step processes");
                }
            }
            Effect::ExtendDeadline {
                id,
                state,
                lease,
                deadline,
            } => {
                let own = Holder::Owner(lease.owner.clone());
                match daemon
                    .store
                    .take_over(id, state, &own, &lease, deadline)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(deployment = %id, "could not extend the deadline: the deployment is no longer ours")
                    }
                    Err(e) => {
                        tracing::warn!(deployment = %id, error = %e, "could not extend the deadline")
                    }
                }
            }
            Effect::SetDrift(drift) => {
                let (app, cluster) = (&self.app, &self.cluster);
                let fence = Some(&self.fence);
                match daemon
                    .store
                    .set_drift(app, cluster, drift.as_ref(), fence)
                    .await
                {
                    Ok(()) => {}
                    Err(StoreError::Fenced { .. }) => self.lose(myself),
                    Err(e) => {
                        tracing::warn!(%app, %cluster, error = %e, "could not record the target's drift")
                    }
                }
            }
            Effect::StopStep { id } => {
                if let Some(step) = self.step.as_ref().filter(|s| s.id == id) {
                    step.cancel.cancel();
                }
            }
            Effect::RenewLease { id, until } => {
                let result = daemon
                    .store
                    .renew_leases(&daemon.instance, &[id], until)
                    .await;
                match &result {
                    Ok(0) => tracing::warn!(deployment = %id, "lost the lease; stopping the step"),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(deployment = %id, error = %e, "could not renew the lease")
                    }
                }
                return Some(Input::LeaseRenewed { id, result });
            }
            Effect::RetryAfter(after) => {
                myself.send_after(after, || TargetMsg::Input(Box::new(Input::Retry)));
            }
            Effect::ForgetStep { id } => {
                if self.step.as_ref().is_some_and(|s| s.id == id) {
                    self.step = None;
                }
            }
            Effect::Idle => self.schedule_idle_check(myself),
        }
        None
    }

    fn reply(&mut self, to: ReplyTo, answer: Result<Answer, TargetError>) {
        match self.ports.remove(&to) {
            Some(Port::Submit(port)) => {
                let _ = port.send(answer.map(|answer| match answer {
                    Answer::Submitted(submitted) => submitted,
                    Answer::Deployment(deployment) => Submitted {
                        deployment,
                        repeated: false,
                    },
                }));
            }
            Some(Port::Cancel(port)) => {
                let _ = port.send(answer.map(|answer| match answer {
                    Answer::Submitted(submitted) => submitted.deployment,
                    Answer::Deployment(deployment) => deployment,
                }));
            }
            None => tracing::error!(?to, "the core answered a caller twice"),
        }
    }

    /// What the core needs to decide a submit: an earlier request under the
    /// same key, a rollback's version, another instance's holder.
    pub(super) async fn submit_facts(&self, submit: &Submit) -> Result<SubmitFacts, StoreError> {
        let store = &self.daemon.store;
        let (app, cluster) = (&self.app, &self.cluster);
        let mut facts = SubmitFacts::default();
        if let Some(key) = &submit.idempotency_key {
            facts.idempotent = store.find_by_idempotency_key(app, cluster, key).await?;
            if facts.idempotent.is_some() {
                return Ok(facts);
            }
        }
        if submit.kind == Kind::Rollback {
            facts.rollback_to = match &submit.version {
                Some(v) => store.version(app, v).await?,
                None => store.previous_version(app, cluster).await?,
            };
        }
        if self.core.holder().is_none() {
            let view = store.target(app, cluster).await?;
            facts.foreign_holder = view.running.or(view.queued.into_iter().next());
        }
        Ok(facts)
    }

    /// The version active on the target now.
    pub(super) async fn active_version(&self) -> Result<Option<VersionInfo>, StoreError> {
        let store = &self.daemon.store;
        let view = store.target(&self.app, &self.cluster).await?;
        match &view.active {
            Some(active) => store.version(&self.app, &active.version).await,
            None => Ok(None),
        }
    }

    /// What the core needs to start `id`: its row now, the active version,
    /// a rollback's version.
    async fn start_facts(&self, id: Uuid) -> Result<StartFacts, StoreError> {
        let store = &self.daemon.store;
        let current = store.get(id).await?;
        let previous = self.active_version().await?;
        let rollback_to = match current.as_ref().and_then(|d| d.rollback_to.as_ref()) {
            Some(v) => store.version(&self.app, v).await?,
            None => None,
        };
        Ok(StartFacts {
            current,
            previous,
            rollback_to,
        })
    }

    /// Run the running deployment's current phase in a tracked task.
    fn start_step(&mut self, myself: &ActorRef<TargetMsg>, order: StepOrder) {
        let d = order.deployment;
        let limit = self.daemon.config.limits.output_bytes_per_deployment;
        if self.step.as_ref().is_none_or(|s| s.id != d.id) {
            let cancel = CancellationToken::new();
            self.step = Some(StepSlot {
                id: d.id,
                _kill_on_drop: cancel.clone().drop_guard(),
                cancel,
                cap: Arc::new(Mutex::new(OutputCap::new(limit))),
            });
        }
        let slot = self.step.as_ref().expect("set above");
        let env = step::step_env(
            &self.daemon,
            &d,
            order.previous.as_ref(),
            order.rollback_artifact,
        );
        let job = PhaseJob {
            daemon: self.daemon.clone(),
            step: step::step_config(&self.daemon, &d.cluster, d.state),
            env,
            deadline: order.deadline,
            cancel: slot.cancel.clone(),
            cap: slot.cap.clone(),
            fence: self.fence.clone(),
            deployment: d,
        };
        self.spawn_job(myself, job, false);
    }

    /// Run the cluster's activate step as a restore. It gets a token of its
    /// own: the step's was cancelled if a stop led here, and a restore is
    /// never stopped; the drop guard still kills it if the actor dies.
    fn start_restore(&mut self, myself: &ActorRef<TargetMsg>, order: RestoreOrder) {
        let d = order.deployment;
        let limit = self.daemon.config.limits.output_bytes_per_deployment;
        let cap = match self.step.as_ref().filter(|s| s.id == d.id) {
            Some(slot) => slot.cap.clone(),
            None => Arc::new(Mutex::new(OutputCap::new(limit))),
        };
        let cancel = CancellationToken::new();
        self.step = Some(StepSlot {
            id: d.id,
            _kill_on_drop: cancel.clone().drop_guard(),
            cancel: cancel.clone(),
            cap: cap.clone(),
        });
        let job = PhaseJob {
            daemon: self.daemon.clone(),
            step: step::step_config(&self.daemon, &d.cluster, State::Activating),
            env: step::restore_env(&self.daemon, &d, order.version.as_ref()),
            deadline: order.deadline,
            cancel,
            cap,
            fence: self.fence.clone(),
            deployment: d,
        };
        self.spawn_job(myself, job, true);
    }

    /// Run `job` (a phase, or a restore) in a tracked task that reports
    /// back to the actor.
    fn spawn_job(&self, myself: &ActorRef<TargetMsg>, job: PhaseJob, restore: bool) {
        let cap = job.cap.clone();
        let myself = myself.clone();
        let d = &job.deployment;
        let phase = if restore { "restore" } else { d.state.as_str() };
        let span = tracing::info_span!("deployment", id = %d.id, app = %d.app, cluster = %d.cluster, phase);
        let task = async move {
            let (id, phase) = (job.deployment.id, job.deployment.state);
            tracing::info!("phase started");
            let result = match restore {
                true => job.restore().await,
                false => job.run().await,
            };
            if let PhaseResult::Failed(error) = &result {
                tracing::warn!(%error, "phase failed");
            }
            let dropped_lines = cap.lock().expect("output cap lock").dropped_lines();
            let ended = match restore {
                true => Input::RestoreEnded {
                    id,
                    result,
                    dropped_lines,
                },
                false => Input::StepEnded {
                    id,
                    phase,
                    result,
                    dropped_lines,
                },
            };
            let _ = myself.cast(TargetMsg::Input(Box::new(ended)));
        };
        self.daemon.tasks.spawn(task.instrument(span));
    }
}
