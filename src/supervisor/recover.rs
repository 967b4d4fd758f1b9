//! What the supervisor does after a target's actor crashed.

use super::{SupervisorHandle, Target};
use crate::daemon::Daemon;
use crate::machine::{Authority, State};
use crate::store::{Change, Fence, VersionChange};
use std::sync::Arc;

/// After a crash: fail the deployment the actor was running (its step was
/// killed when the actor's state dropped), then restart the actor if work is
/// queued — unless the target is degraded, in which case the next request
/// after the budget period restarts it.
pub(super) async fn recover(
    daemon: Arc<Daemon>,
    supervisor: SupervisorHandle,
    target: Target,
    fence: Option<Fence>,
    error: String,
) {
    let (app, cluster) = &target;
    // An actor that had lost the target leaves its deployments to the owner.
    let Some(fence) = fence else { return };
    let message = format!("the target's actor crashed: {error}");
    if let Ok(owned) = daemon.store.owned_by(&daemon.instance).await {
        for lease in owned
            .iter()
            .filter(|l| &l.deployment.app == app && &l.deployment.cluster == cluster)
        {
            let d = &lease.deployment;
            crate::pipeline::kill_orphans(d.id);
            let Ok(change) = Change::new(
                d,
                State::Failed,
                Authority::Actor,
                VersionChange::Keep,
                crate::model::now(),
            ) else {
                continue;
            };
            let since = d.started_at.unwrap_or(d.created_at);
            let change = change.with_error(&message).with_fence(Some(fence.clone()));
            match daemon.commit(change, since).await {
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(deployment = %d.id, error = %e, "could not fail the crashed actor's deployment")
                }
            }
        }
    }
    match daemon.store.target(app, cluster).await {
        Ok(view) if !view.queued.is_empty() => {
            if let Err(e) = supervisor.wake(app, cluster).await {
                tracing::warn!(%app, %cluster, error = %e, "not restarting the target's actor");
            }
        }
        _ => {}
    }
}
