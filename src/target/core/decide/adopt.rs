//! Adopting a deployment whose instance stopped renewing its lease.
//!
//! An instance that died (`kill -9`, a lost host, a pause past its lease)
//! leaves its running deployment behind. Reconciliation does not settle it:
//! it hands it to the target's core here, on the instance that owns the
//! target now, which takes it over with a compare-and-set on the lapsed
//! lease (of several, one wins; the others let go), kills what is left of
//! the dead daemon's steps, and records it `interrupted` (with
//! reconciliation's authority). An activation may have switched the cluster
//! already (its steps died, the switch did not), so it ends as any
//! activation that did not succeed: restore the active version first, or
//! mark the target drifted if the restore fails.

use super::super::*;
use super::note;

impl TargetCore {
    pub(in crate::target::core) fn adopt(
        &mut self,
        deployment: Deployment,
        owner: Option<String>,
        previous: Result<Option<VersionInfo>, StoreError>,
        cause: Orphaned,
        now: DateTime<Utc>,
        out: &mut Vec<Effect>,
    ) {
        // Something runs here already (then the lapsed lease is ours and
        // renewing it tells us), the row moved on, the store is away, or we
        // are shutting down (a restore started now would be stopped with the
        // actor): reconciliation, here or elsewhere, hands it over again
        // while the lease stays lapsed.
        let Ok(previous) = previous else { return };
        if self.running.is_some() || self.shutting_down || !deployment.state.is_running() {
            return;
        }
        // An activation gets the activate step's time again, for the restore.
        let deadline = match deployment.state {
            State::Activating => self.config.timeouts.activate.map(|t| now + t),
            _ => None,
        };
        out.push(Effect::TakeOver {
            adoption: Box::new(Adoption {
                deployment,
                owner,
                previous,
                cause,
            }),
            lapsed_before: now,
            lease: self.lease(now),
            deadline,
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
            cause,
        } = adoption;
        let (id, phase) = (deployment.id, deployment.state);
        let owner = owner.as_deref().unwrap_or("unknown");
        let step = match phase {
            State::Building => "build step",
            State::Pushing => "push step",
            _ => "activate step",
        };
        let (to, error, why) = match cause {
            Orphaned::LeaseLapsed => (
                State::Interrupted,
                format!("interrupted during {phase}: instance {owner} stopped renewing its lease"),
                "stopped renewing its lease",
            ),
            Orphaned::PastDeadline => (
                State::Failed,
                format!("{step} timed out (deadline passed)"),
                "let its phase run past its deadline",
            ),
        };
        out.push(note(
            id,
            format!(
                "instance {owner} {why} during the {step}; \
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
            to,
            error,
            superseded_by: None,
            by: Authority::Reconciler,
        };
        self.end_with(ending, Vec::new(), now, out);
    }
}
