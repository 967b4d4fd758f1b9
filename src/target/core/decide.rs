//! The core's decisions, one method per input. Each pushes the effects it
//! decides into `out`, in the order the shell must carry them out.

use super::*;

/// Who takes the blame in a step note.
const NOTE_STEP: &str = "deployd";

impl TargetCore {
    pub(super) fn loaded(&mut self, result: Result<Loaded, StoreError>, out: &mut Vec<Effect>) {
        match result {
            Ok(loaded) => {
                self.loaded = true;
                self.queue = loaded.queued.into();
                if loaded.held_elsewhere {
                    // Another instance holds the target; try again when its
                    // lease may have lapsed.
                    out.push(Effect::RetryAfter(self.config.lease / 3));
                } else {
                    self.start_next(None, out);
                }
            }
            Err(_) => out.push(Effect::RetryAfter(self.config.retry_after)),
        }
    }

    pub(super) fn submit(
        &mut self,
        reply: ReplyTo,
        id: Uuid,
        request: Submit,
        facts: Result<SubmitFacts, StoreError>,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        let answer = |answer| Effect::Reply { to: reply, answer };
        if !self.loaded {
            let why = "the target is still loading its queue from the store";
            out.push(answer(Err(Unavailable::Actor(why.to_string()).into())));
            return;
        }
        let facts = match facts {
            Ok(facts) => facts,
            Err(e) => return out.push(answer(Err(e.into()))),
        };
        if let Some((deployment, hash)) = facts.idempotent {
            out.push(answer(match hash == request.request_hash {
                true => Ok(Answer::Submitted(Submitted {
                    deployment,
                    repeated: true,
                })),
                false => Err(Rejection::IdempotencyMismatch.into()),
            }));
            return;
        }
        let rollback_to = match (request.kind, facts.rollback_to) {
            (Kind::Deploy, _) => None,
            (Kind::Rollback, Some(info)) => Some(info.version),
            (Kind::Rollback, None) => {
                let what = match &request.version {
                    Some(v) => format!("{v} of app {}", self.config.app),
                    None => format!(
                        "active before the current one on {}/{}",
                        self.config.app, self.config.cluster
                    ),
                };
                let kind = "version";
                return out.push(answer(Err(Rejection::NotFound { kind, what }.into())));
            }
        };
        let holder = self.holder().cloned().or(facts.foreign_holder);
        if let (Some(holder), ConflictPolicy::Reject) = (&holder, request.policy) {
            let busy = Rejection::InProgress(Box::new(holder.clone()));
            return out.push(answer(Err(busy.into())));
        }
        let new = NewDeployment {
            id,
            app: self.config.app.clone(),
            cluster: self.config.cluster.clone(),
            kind: request.kind,
            source: request.source,
            rollback_to,
            git: request.git,
            message: request.message,
            deployed_by: request.deployed_by,
            idempotency_key: request.idempotency_key,
            request_hash: request.request_hash,
            created_at: now,
            // The shell adds its hold on the target to every write.
            fence: None,
        };
        out.push(Effect::Create {
            reply,
            policy: request.policy,
            holder: holder.map(Box::new),
            new: Box::new(new),
        });
    }

    pub(super) fn created(
        &mut self,
        reply: ReplyTo,
        policy: ConflictPolicy,
        holder: Option<Deployment>,
        result: Result<Created, StoreError>,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        let answer = |answer| Effect::Reply { to: reply, answer };
        let deployment = match result {
            Err(e) => return out.push(answer(Err(e.into()))),
            // Another instance created it under the same key meanwhile.
            Ok(Created::Existing {
                deployment,
                same_request,
            }) => {
                return out.push(answer(match same_request {
                    true => Ok(Answer::Submitted(Submitted {
                        deployment,
                        repeated: true,
                    })),
                    false => Err(Rejection::IdempotencyMismatch.into()),
                }));
            }
            Ok(Created::New(deployment)) => deployment,
        };
        if let (Some(holder), ConflictPolicy::Supersede) = (&holder, policy) {
            self.supersede(holder, deployment.id, now, out);
        }
        let waiting_for = self.queue.back().map(|d| d.id).or(self.running_id());
        self.queue.push_back(deployment.clone());
        match waiting_for {
            Some(waiting_for) => {
                let position = self.queue.len() as i64;
                let info = QueuedInfo {
                    position,
                    waiting_for,
                };
                out.push(Effect::Append {
                    id: deployment.id,
                    events: vec![EventData::Queued(info)],
                });
                out.push(answer(Ok(Answer::Submitted(Submitted {
                    deployment,
                    repeated: false,
                }))));
            }
            None => self.start_next(Some(reply), out),
        }
    }

    /// End everything ahead of `by`: queued deployments at once, the running
    /// one once its step is gone, another instance's through the store.
    fn supersede(
        &mut self,
        holder: &Deployment,
        by: Uuid,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        let ending = Ending {
            to: State::Cancelled,
            error: "superseded".to_string(),
            superseded_by: Some(by),
            by: Authority::Actor,
        };
        let ours = self.holds(holder.id);
        for queued in std::mem::take(&mut self.queue) {
            settle(&queued, &ending, Vec::new(), false, now, out);
        }
        if self.running.is_some() {
            self.request_stop(Some(ending), None, now, out);
        } else if !ours && holder.state != State::Activating {
            settle(holder, &ending, Vec::new(), false, now, out);
        }
        // Another instance's activation is not ended here: it may have
        // switched the cluster, so it ends through adoption, restored, and
        // the superseding deployment waits behind it.
    }

    /// Record the running phase's result: the next phase, or the end.
    fn record_result(&mut self, now: DateTime<Utc>, out: &mut Vec<Effect>) {
        let running = self
            .running
            .as_ref()
            .expect("a result needs a running deployment");
        let result = running.result.clone().expect("the step reported");
        let d = &running.deployment;
        let artifact = match result {
            PhaseResult::Failed(error) => {
                let ending = Ending {
                    to: State::Failed,
                    error,
                    superseded_by: None,
                    by: Authority::Actor,
                };
                return self.end_with(ending, Vec::new(), now, out);
            }
            PhaseResult::Done { artifact } => artifact,
        };
        let to = machine::after(d.kind, d.state).expect("a running phase has a successor");
        let version = match machine::mints_version(d.kind, d.state, to) {
            true => VersionChange::Mint {
                artifact: artifact
                    .unwrap_or_else(|| format!("source:{}", d.source.clone().unwrap_or_default())),
            },
            false => VersionChange::Keep,
        };
        if to.is_terminal() {
            self.note_truncation(out);
        }
        let running = self.running.as_ref().expect("checked above");
        let Ok(change) = Change::new(&running.deployment, to, Authority::Actor, version, now)
        else {
            unreachable!("machine::after names only allowed edges with their version");
        };
        let change = self.with_lease_and_deadline(change, now);
        out.push(Effect::Commit {
            purpose: Purpose::Advance {
                deadline: change.deadline,
            },
            change: Box::new(change),
            since: running.since,
        });
    }

    /// Commit the running deployment's end; its step is gone.
    pub(super) fn end_running(
        &mut self,
        ending: &Ending,
        waiters: Vec<ReplyTo>,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        self.note_truncation(out);
        let running = self.running.as_ref().expect("ending a running deployment");
        let change = ending_change(&running.deployment, ending, now);
        out.push(Effect::Commit {
            change: Box::new(change),
            since: running.since,
            purpose: Purpose::End { waiters },
        });
    }

    /// One `truncated` event before the final state, if output was dropped.
    fn note_truncation(&self, out: &mut Vec<Effect>) {
        let Some(running) = &self.running else { return };
        if running.dropped_lines > 0 {
            let dropped_lines = running.dropped_lines;
            out.push(Effect::Append {
                id: running.deployment.id,
                events: vec![EventData::Truncated(Truncated { dropped_lines })],
            });
        }
    }

    /// A running phase gets a lease and a deadline; both are stored, so
    /// they survive a restart of this process.
    pub(super) fn with_lease_and_deadline(&self, change: Change, now: DateTime<Utc>) -> Change {
        if !change.to.is_running() {
            return change;
        }
        let change = change.with_lease(self.lease(now));
        match self.config.timeouts.get(change.to) {
            Some(timeout) => change.with_deadline(now + timeout),
            None => change,
        }
    }

    /// This instance's lease on a running deployment, from `now`.
    pub(super) fn lease(&self, now: DateTime<Utc>) -> Lease {
        Lease {
            owner: self.config.instance.clone(),
            expires_at: now + self.config.lease,
        }
    }

    pub(super) fn lease_renewed(
        &mut self,
        id: Uuid,
        result: Result<u64, StoreError>,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        // Zero rows: the lease lapsed (say, in a store outage) and
        // reconciliation ended the deployment. It is no longer ours to run.
        if matches!(result, Ok(0)) && self.running_id() == Some(id) {
            self.request_stop(None, None, now, out);
        }
    }

    pub(super) fn retry(&mut self, now: DateTime<Utc>, out: &mut Vec<Effect>) {
        if !self.loaded {
            return out.push(Effect::Load);
        }
        match &self.running {
            Some(running) if running.result.is_some() => match running.stop.is_some() {
                true => self.finish_stopped(now, out),
                false => self.record_result(now, out),
            },
            Some(_) => {}
            None => self.start_next(None, out),
        }
    }
}

/// Commit the end of a deployment that runs no step here.
fn settle(
    d: &Deployment,
    ending: &Ending,
    waiters: Vec<ReplyTo>,
    then_next: bool,
    now: DateTime<Utc>,
    out: &mut Vec<Effect>,
) {
    out.push(Effect::Commit {
        change: Box::new(ending_change(d, ending, now)),
        since: d.started_at.unwrap_or(d.created_at),
        purpose: Purpose::Settle { waiters, then_next },
    });
}

/// The change that ends `d`, which is not terminal: the machine allows
/// `failed` and `cancelled` from every other state.
fn ending_change(d: &Deployment, ending: &Ending, now: DateTime<Utc>) -> Change {
    let change = Change::new(d, ending.to, ending.by, VersionChange::Keep, now).expect(
        "failed and cancelled are allowed from every state that is not terminal, \
         interrupted too for reconciliation",
    );
    let change = change.with_error(&ending.error);
    match ending.superseded_by {
        Some(by) => change.with_superseded_by(by),
        None => change,
    }
}

/// A line in the deployment's log that deployd itself writes.
pub(super) fn note(id: Uuid, line: String) -> Effect {
    Effect::Append {
        id,
        events: vec![EventData::Log(LogLine {
            step: NOTE_STEP.to_string(),
            stream: "stderr".to_string(),
            line,
        })],
    }
}

pub(super) fn step_name(phase: State) -> &'static str {
    match phase {
        State::Building => "build",
        State::Pushing => "push",
        State::Activating => "activate",
        State::Queued
        | State::Succeeded
        | State::Failed
        | State::Cancelled
        | State::Interrupted => "no",
    }
}

mod adopt;
mod queue;
mod restore;
mod stop;
