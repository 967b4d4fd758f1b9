//! Restoring the cluster after an activation that did not succeed.
//!
//! An activate step may switch traffic before it fails, times out or is
//! stopped, so the record's active version is only true if the cluster is
//! put back: the core runs the cluster's activate step once more for the
//! recorded active version (or for none), stores what it did in the
//! deployment's error, and only then commits the end. A restore that fails
//! marks the target drifted; one that succeeds clears any earlier drift.

use super::super::*;
use super::note;
use crate::model::{MAX_ERROR_BYTES, clip_error};

impl TargetCore {
    /// End the running deployment with `ending`, first restoring the cluster
    /// if its activation may have switched it. `waiters` come from the stop,
    /// if any: a restore takes them over, so the stop's list is emptied.
    pub(in crate::target::core) fn end_with(
        &mut self,
        ending: Ending,
        waiters: Vec<ReplyTo>,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        let running = self.running.as_mut().expect("ending a running deployment");
        let activating = running.deployment.state == State::Activating;
        if running.restore.is_none() && !activating {
            return self.end_running(&ending, waiters, now, out);
        }
        if let Some(stop) = &mut running.stop {
            stop.waiters.clear();
        }
        match &mut running.restore {
            None => {
                running.restore = Some(Restore {
                    ending,
                    waiters,
                    done: false,
                });
                self.start_restore(now, out);
            }
            Some(restore) => {
                restore.waiters.extend(waiters);
                if restore.done {
                    let (ending, waiters) = (restore.ending.clone(), restore.waiters.clone());
                    self.end_running(&ending, waiters, now, out);
                }
            }
        }
    }

    fn start_restore(&self, now: DateTime<Utc>, out: &mut Vec<Effect>) {
        let running = self
            .running
            .as_ref()
            .expect("restoring a running deployment");
        let id = running.deployment.id;
        let what = restored_name(&running.previous);
        out.push(note(
            id,
            format!("the activate step did not succeed: restoring {what} on the cluster"),
        ));
        let deadline = self.config.timeouts.activate.map(|t| now + t);
        // The restore may run past the phase's stored deadline (after a
        // timeout, it starts there): store its own, or reconciliation would
        // fail the deployment and stop the restore.
        out.push(Effect::ExtendDeadline {
            id,
            state: running.deployment.state,
            lease: self.lease(now),
            deadline,
        });
        out.push(Effect::StartRestore(Box::new(RestoreOrder {
            deployment: running.deployment.clone(),
            version: running.previous.clone(),
            deadline,
        })));
    }

    pub(in crate::target::core) fn restore_ended(
        &mut self,
        id: Uuid,
        result: PhaseResult,
        dropped_lines: u64,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        let Some(running) = self.running.as_mut().filter(|r| r.deployment.id == id) else {
            return;
        };
        let Some(restore) = running.restore.as_mut().filter(|r| !r.done) else {
            return; // stale: no restore runs
        };
        running.dropped_lines = dropped_lines;
        restore.done = true;
        let what = restored_name(&running.previous);
        let outcome = match result {
            PhaseResult::Done { .. } => {
                out.push(Effect::SetDrift(None));
                format!("restored {what} on the cluster")
            }
            PhaseResult::Failed(why) => {
                out.push(note(
                    id,
                    format!(
                        "the restore of {what} failed: the cluster may not run the active \
                         version; the target is marked drifted until a deployment succeeds"
                    ),
                ));
                out.push(Effect::SetDrift(Some(Drift {
                    version: running.previous.as_ref().map(|v| v.version.clone()),
                    error: clip_error(&why),
                    deployment_id: id,
                    since: now,
                })));
                format!("restore of {what} failed: {why}")
            }
        };
        restore.ending.error = extend_error(&restore.ending.error, &outcome);
        let (ending, waiters) = (restore.ending.clone(), restore.waiters.clone());
        self.end_running(&ending, waiters, now, out);
    }
}

/// What a restore puts back, in words.
fn restored_name(previous: &Option<VersionInfo>) -> String {
    match previous {
        Some(v) => v.version.clone(),
        None => "no active version".to_string(),
    }
}

/// `error; outcome`, shortening `error` (not the outcome) to fit the limit.
fn extend_error(error: &str, outcome: &str) -> String {
    let room = MAX_ERROR_BYTES.saturating_sub(outcome.len() + 2);
    let mut end = error.len().min(room);
    while !error.is_char_boundary(end) {
        end -= 1;
    }
    clip_error(&format!("{}; {outcome}", &error[..end]))
}
