//! Cancel and stop: a running deployment whose step is being stopped stays
//! running until the step reported that it is gone; only then is its end
//! recorded (one step per target).

use super::super::*;
use super::{note, settle, step_name};

impl TargetCore {
    pub(in crate::target::core) fn cancel(
        &mut self,
        reply: ReplyTo,
        id: Uuid,
        reason: Option<String>,
        found: Result<Option<Deployment>, StoreError>,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        let ending = Ending {
            to: State::Cancelled,
            error: match reason {
                Some(reason) => format!("cancelled: {reason}"),
                None => "cancelled".to_string(),
            },
            superseded_by: None,
            by: Authority::Actor,
        };
        if self.running_id() == Some(id) {
            return self.request_stop(Some(ending), Some(reply), now, out);
        }
        if let Some(at) = self.queue.iter().position(|d| d.id == id) {
            let queued = self.queue.remove(at).expect("position is in range");
            return settle(&queued, &ending, vec![reply], true, now, out);
        }
        // Not ours to run: ended already, or held by another instance.
        let answer = |answer| Effect::Reply { to: reply, answer };
        match found {
            Err(e) => out.push(answer(Err(e.into()))),
            Ok(None) => {
                let what = id.to_string();
                let kind = "deployment";
                out.push(answer(Err(Rejection::NotFound { kind, what }.into())));
            }
            Ok(Some(d)) if d.state.is_terminal() => {
                let refused = Rejection::InvalidTransition {
                    from: d.state,
                    to: State::Cancelled,
                };
                out.push(answer(Err(refused.into())));
            }
            // Another instance's activation (it died, or lost the target)
            // may have switched the cluster: it ends through adoption, which
            // restores the active version first. Ending it here would not.
            Ok(Some(d)) if d.state == State::Activating => {
                let why = format!(
                    "deployment {id} was activating on an instance that stopped; it is being taken \
                     over and the active version restored; try again shortly"
                );
                out.push(answer(Err(Unavailable::Actor(why).into())));
            }
            Ok(Some(d)) => settle(&d, &ending, vec![reply], true, now, out),
        }
    }

    /// Stop the running deployment's step; `ending` is recorded once the
    /// step is gone (`None`: record nothing, the deployment is not ours).
    pub(super) fn request_stop(
        &mut self,
        ending: Option<Ending>,
        waiter: Option<ReplyTo>,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        let running = self
            .running
            .as_mut()
            .expect("a stop needs a running deployment");
        let id = running.deployment.id;
        if let Some(restore) = &mut running.restore {
            // A restore is never stopped: wait for the end it leads to.
            return restore.waiters.extend(waiter);
        }
        match &mut running.stop {
            // Already stopping: the first reason stands; wait with it.
            Some(stop) => stop.waiters.extend(waiter),
            None => {
                running.stop = Some(Stop {
                    ending,
                    waiters: waiter.into_iter().collect(),
                });
                if running.result.is_none() {
                    let phase = running.deployment.state;
                    let why = match &running.stop.as_ref().and_then(|s| s.ending.clone()) {
                        Some(e) if e.superseded_by.is_some() => "superseded",
                        Some(_) => "cancel requested",
                        None => "this instance lost the deployment's lease",
                    };
                    out.push(note(
                        id,
                        format!("stopping the {} step ({why})", step_name(phase)),
                    ));
                    out.push(Effect::StopStep { id });
                } else {
                    // The step already ended; its result waits for the store.
                    self.finish_stopped(now, out);
                }
            }
        }
    }

    pub(in crate::target::core) fn step_ended(
        &mut self,
        id: Uuid,
        phase: State,
        result: PhaseResult,
        dropped_lines: u64,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        let Some(running) = self.running.as_mut() else {
            return;
        };
        if running.deployment.id != id
            || running.deployment.state != phase
            || running.result.is_some()
        {
            return; // stale: not the step we are waiting for
        }
        running.result = Some(result);
        running.dropped_lines = dropped_lines;
        match running.stop.is_some() {
            true => self.finish_stopped(now, out),
            false => self.record_result(now, out),
        }
    }

    /// The stopped step is gone: record its ending, or let the target go.
    pub(super) fn finish_stopped(&mut self, now: DateTime<Utc>, out: &mut Vec<Effect>) {
        let running = self
            .running
            .as_mut()
            .expect("stopping a running deployment");
        let stop = running.stop.as_mut().expect("a stop was requested");
        match stop.ending.clone() {
            Some(ending) => {
                let waiters = stop.waiters.clone();
                self.end_with(ending, waiters, now, out);
            }
            None => {
                let waiters = std::mem::take(&mut stop.waiters);
                let id = running.deployment.id;
                self.running = None;
                for to in waiters {
                    let lost = Unavailable::Actor("the deployment's lease was lost".to_string());
                    out.push(Effect::Reply {
                        to,
                        answer: Err(lost.into()),
                    });
                }
                out.push(Effect::ForgetStep { id });
                self.start_next(None, out);
            }
        }
    }
}
