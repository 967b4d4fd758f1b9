//! Starting the queue's head, and what each committed change leads to.

use super::super::*;

impl TargetCore {
    /// Start the head of the queue if nothing runs; `reply` waits for the
    /// head (a submit that found the target idle).
    pub(in crate::target::core) fn start_next(
        &mut self,
        reply: Option<ReplyTo>,
        out: &mut Vec<Effect>,
    ) {
        if self.running.is_some() {
            return;
        }
        let Some(head) = self.queue.front() else {
            return out.push(Effect::Idle);
        };
        if self.shutting_down {
            // Queued deployments stay queued for the next start.
            return reply_queued(reply, head, out);
        }
        out.push(Effect::Prepare { id: head.id, reply });
    }

    pub(in crate::target::core) fn prepared(
        &mut self,
        id: Uuid,
        reply: Option<ReplyTo>,
        facts: Result<StartFacts, StoreError>,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        let Some(head) = self.queue.front().filter(|d| d.id == id).cloned() else {
            // Started or ended meanwhile: answer with what is known.
            if let Some(to) = reply {
                let answer = match self.running.as_ref().filter(|r| r.deployment.id == id) {
                    Some(r) => Ok(Answer::Deployment(r.deployment.clone())),
                    None => {
                        Err(Unavailable::Actor(format!("deployment {id} left the queue")).into())
                    }
                };
                out.push(Effect::Reply { to, answer });
            }
            return;
        };
        let facts = match facts {
            Ok(facts) => facts,
            Err(_) => {
                // The store is away: keep the order and try again shortly.
                reply_queued(reply, &head, out);
                return out.push(Effect::RetryAfter(self.config.retry_after));
            }
        };
        let current = match facts.current {
            Some(current) if current.state == State::Queued => current,
            // Ended (or deleted) elsewhere: not ours to start.
            other => {
                self.queue.pop_front();
                reply_queued(reply, other.as_ref().unwrap_or(&head), out);
                return self.start_next(None, out);
            }
        };
        let (version, rollback_artifact) = match (current.kind, &current.rollback_to) {
            (Kind::Deploy, _) => (VersionChange::Keep, None),
            (Kind::Rollback, Some(_)) if facts.rollback_to.is_some() => {
                let info = facts.rollback_to.expect("checked by the guard");
                (VersionChange::Set(info.version), Some(info.artifact))
            }
            (Kind::Rollback, target) => {
                self.queue.pop_front();
                let missing = target.as_deref().unwrap_or("(none named)");
                let ending = Ending {
                    to: State::Failed,
                    error: format!(
                        "could not start: version {missing} of app {} not found",
                        current.app
                    ),
                    superseded_by: None,
                    by: Authority::Actor,
                };
                super::settle(
                    &current,
                    &ending,
                    reply.into_iter().collect(),
                    true,
                    now,
                    out,
                );
                return;
            }
        };
        let first = current.kind.first_phase();
        let change = Change::new(&current, first, Authority::Actor, version, now)
            .expect("a queued deployment may enter its first phase with its version");
        let change = self.with_lease_and_deadline(change, now);
        out.push(Effect::Commit {
            purpose: Purpose::Start {
                reply,
                previous: facts.previous,
                rollback_artifact,
                deadline: change.deadline,
            },
            change: Box::new(change),
            since: current.created_at,
        });
    }

    pub(in crate::target::core) fn committed(
        &mut self,
        purpose: Purpose,
        result: Result<Deployment, StoreError>,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        match purpose {
            Purpose::Start {
                reply,
                previous,
                rollback_artifact,
                deadline,
            } => {
                let order = (previous, rollback_artifact, deadline);
                self.started(reply, order, result, now, out)
            }
            Purpose::Advance { deadline } => self.advanced(result, deadline, now, out),
            Purpose::End { waiters } => self.ended(waiters, result, out),
            Purpose::Settle { waiters, then_next } => {
                answer_all(&waiters, &result, out);
                if then_next {
                    self.announce_positions(out);
                    self.start_next(None, out);
                }
            }
        }
    }

    fn started(
        &mut self,
        reply: Option<ReplyTo>,
        (previous, rollback_artifact, deadline): StartOrder,
        result: Result<Deployment, StoreError>,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        let Some(head) = self.queue.front().cloned() else {
            return;
        };
        match result {
            Ok(deployment) => {
                self.queue.pop_front();
                out.push(Effect::StartStep(Box::new(StepOrder {
                    deployment: deployment.clone(),
                    previous: previous.clone(),
                    rollback_artifact: rollback_artifact.clone(),
                    deadline,
                })));
                if let Some(to) = reply {
                    let submitted = Submitted {
                        deployment: deployment.clone(),
                        repeated: false,
                    };
                    out.push(Effect::Reply {
                        to,
                        answer: Ok(Answer::Submitted(submitted)),
                    });
                }
                self.running = Some(Running {
                    since: deployment.started_at.unwrap_or(now),
                    deployment,
                    previous,
                    rollback_artifact,
                    result: None,
                    dropped_lines: 0,
                    stop: None,
                    restore: None,
                });
                self.announce_positions(out);
            }
            // Another instance still holds the target, or the store is away:
            // keep the order and try again shortly.
            Err(StoreError::TargetBusy { .. } | StoreError::Unavailable(_)) => {
                reply_queued(reply, &head, out);
                out.push(Effect::RetryAfter(self.config.retry_after));
            }
            // Ended elsewhere meanwhile.
            Err(StoreError::Stale { .. } | StoreError::NotFound(_)) => {
                self.queue.pop_front();
                reply_queued(reply, &head, out);
                self.start_next(None, out);
            }
            Err(e) => {
                self.queue.pop_front();
                let ending = Ending {
                    to: State::Failed,
                    error: format!("could not start: {e}"),
                    superseded_by: None,
                    by: Authority::Actor,
                };
                super::settle(&head, &ending, reply.into_iter().collect(), true, now, out);
            }
        }
    }

    fn advanced(
        &mut self,
        result: Result<Deployment, StoreError>,
        deadline: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        match result {
            Ok(deployment) if deployment.state.is_terminal() => {
                let id = deployment.id;
                self.running = None;
                out.push(Effect::ForgetStep { id });
                self.start_next(None, out);
            }
            Ok(deployment) => {
                running.since = now;
                running.result = None;
                out.push(Effect::StartStep(Box::new(StepOrder {
                    deadline,
                    deployment: deployment.clone(),
                    previous: running.previous.clone(),
                    rollback_artifact: running.rollback_artifact.clone(),
                })));
                running.deployment = deployment;
            }
            // Keep the result until the store can record it (or the lease
            // lapses and reconciliation ends the deployment).
            Err(StoreError::Unavailable(_)) => {
                out.push(Effect::RetryAfter(self.config.retry_after))
            }
            // Changed behind our back (cancelled by another instance,
            // reaped): its step has ended; it is no longer ours.
            Err(_) => {
                let id = running.deployment.id;
                self.running = None;
                out.push(Effect::ForgetStep { id });
                self.start_next(None, out);
            }
        }
    }

    fn ended(
        &mut self,
        waiters: Vec<ReplyTo>,
        result: Result<Deployment, StoreError>,
        out: &mut Vec<Effect>,
    ) {
        let Some(running) = self.running.as_ref() else {
            return;
        };
        if matches!(result, Err(StoreError::Unavailable(_))) {
            return out.push(Effect::RetryAfter(self.config.retry_after));
        }
        let id = running.deployment.id;
        self.running = None;
        answer_all(&waiters, &result, out);
        out.push(Effect::ForgetStep { id });
        self.announce_positions(out);
        self.start_next(None, out);
    }

    /// Tell every queued deployment its position and what it waits for.
    fn announce_positions(&self, out: &mut Vec<Effect>) {
        let mut ahead = self.running_id();
        for (index, queued) in self.queue.iter().enumerate() {
            if let Some(waiting_for) = ahead {
                let info = QueuedInfo {
                    position: index as i64 + 1,
                    waiting_for,
                };
                out.push(Effect::Append {
                    id: queued.id,
                    events: vec![EventData::Queued(info)],
                });
            }
            ahead = Some(queued.id);
        }
    }
}

/// What a started deployment's step needs besides the deployment:
/// `DEPLOY_PREVIOUS_*`, a rollback's artifact, the phase's deadline.
type StartOrder = (Option<VersionInfo>, Option<String>, Option<DateTime<Utc>>);

/// Answer a submit whose deployment did not start (yet) with it as it is.
fn reply_queued(reply: Option<ReplyTo>, d: &Deployment, out: &mut Vec<Effect>) {
    if let Some(to) = reply {
        let submitted = Submitted {
            deployment: d.clone(),
            repeated: false,
        };
        out.push(Effect::Reply {
            to,
            answer: Ok(Answer::Submitted(submitted)),
        });
    }
}

/// Answer everyone waiting for an ending with what the store said.
fn answer_all(waiters: &[ReplyTo], result: &Result<Deployment, StoreError>, out: &mut Vec<Effect>) {
    for &to in waiters {
        let answer = match result {
            Ok(d) => Ok(Answer::Deployment(d.clone())),
            Err(StoreError::Stale { current, .. }) => Err(Rejection::InvalidTransition {
                from: *current,
                to: State::Cancelled,
            }
            .into()),
            Err(e) => Err(TargetError::from(e.clone())),
        };
        out.push(Effect::Reply { to, answer });
    }
}
