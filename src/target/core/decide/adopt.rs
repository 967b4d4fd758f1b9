//! Adopting a crashed instance's activation.
//!
//! An instance that died (`kill -9`, a lost host) during `activating` may
//! have switched the cluster already; its steps died with it, but the
//! switch did not. Reconciliation does not settle such a deployment: it
//! hands it to the target's core here, which takes it over with a
//! compare-and-set on the lapsed lease (of several instances, one wins; the
//! others let go), kills what is left of the dead daemon's steps, and ends
//! it as any activation that did not succeed: restore the active version,
//! then record `interrupted` (with reconciliation's authority), or drift if
//! the restore fails.

use super::super::*;
use super::note;

impl TargetCore {
    pub(in crate::target::core) fn adopt(
        &mut self,
        deployment: Deployment,
        owner: Option<String>,
        previous: Result<Option<VersionInfo>, StoreError>,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        // Something runs here already (then the lapsed lease is ours and
        // renewing it tells us), the row moved on, the store is away, or we
        // are shutting down (a restore started now would be stopped with the
        // actor): reconciliation, here or elsewhere, hands it over again
        // while the lease stays lapsed.
        let Ok(previous) = previous else { return };
        if self.running.is_some() || self.shutting_down || deployment.state != State::Activating {
            return;
        }
        out.push(Effect::TakeOver {
            adoption: Box::new(Adoption {
                deployment,
                owner,
                previous,
            }),
            lapsed_before: now,
            lease: self.lease(now),
            deadline: self.config.timeouts.activate.map(|t| now + t),
        });
    }

    pub(in crate::target::core) fn taken_over(
        &mut self,
        adoption: Adoption,
        result: Result<bool, StoreError>,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        // `false`: another instance took it over, or its owner came back.
        if !matches!(result, Ok(true)) || self.running.is_some() {
            return;
        }
        let Adoption {
            deployment,
            owner,
            previous,
        } = adoption;
        let id = deployment.id;
        let owner = owner.as_deref().unwrap_or("unknown");
        let error =
            format!("interrupted during activating: instance {owner} stopped renewing its lease");
        out.push(note(
            id,
            format!(
                "instance {owner} stopped renewing its lease during the activate step; \
                 instance {} took the deployment over",
                self.config.instance
            ),
        ));
        out.push(Effect::KillLeftovers { id });
        self.running = Some(Running {
            since: now,
            deployment,
            previous,
            rollback_artifact: None,
            // Kept for a retry of the end's commit: the step is gone.
            result: Some(PhaseResult::Failed(error.clone())),
            dropped_lines: 0,
            stop: None,
            restore: None,
        });
        let ending = Ending {
            to: State::Interrupted,
            error,
            superseded_by: None,
            by: Authority::Reconciler,
        };
        self.end_with(ending, Vec::new(), now, out);
    }
}
