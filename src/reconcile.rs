//! Reconciliation: settling what no live owner will.
//!
//! Running deployments whose lease expired become `interrupted` (naming the
//! phase and the instance), those past their stored phase deadline become
//! `failed`, and a deployment this instance still runs at shutdown becomes
//! `interrupted`. An `activating` one is never settled here without a
//! restore: its activate step may have switched the cluster before its
//! instance died, so once its lease lapsed it goes to its target's actor
//! ([`SupervisorHandle::adopt`]), which restores the active version before
//! recording the end, and shutdown leaves it for that. Each is a compare-and-set through [`Daemon::commit`]: a live
//! owner that got there first wins, and nothing is recorded twice. The
//! [`reaper`] runs it every lease period / 3 (at least every
//! [`REAPER_MAX_PERIOD`]), and start-up runs it, once the supervisor runs,
//! before serving.

use crate::daemon::Daemon;
use crate::machine::{Authority, State};
use crate::model::now;
use crate::store::{Change, LeaseInfo, StoreError, VersionChange};
use crate::supervisor::SupervisorHandle;
use std::sync::Arc;
use std::time::Duration;

/// How long past a phase's deadline (and the kill grace) reconciliation
/// leaves a live owner to fail its own phase before doing it.
const OWNER_MARGIN: Duration = Duration::from_secs(5);
/// The reaper runs at a third of the lease, and at least this often (phase
/// deadlines do not depend on the lease).
pub const REAPER_MAX_PERIOD: Duration = Duration::from_secs(5);
/// How often shutdown checks whether the running steps are done.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

/// Until the grace runs out, wait for this instance's running deployments.
pub async fn wait_for_running(daemon: &Daemon, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        match daemon.store.owned_by(&daemon.instance).await {
            Ok(running) if running.is_empty() => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot see running deployments; not waiting");
                return;
            }
        }
        tokio::time::sleep(SHUTDOWN_POLL).await;
    }
}

/// Mark what this instance still runs `interrupted`: the record says exactly
/// what happened. The actors were stopped, which stopped their steps. An
/// activation is left `activating` under its lease: its step may have
/// switched the cluster, and the instance that adopts it once the lease
/// lapsed (this one restarted, or another) restores before recording it.
pub async fn interrupt_owned(daemon: &Daemon) {
    let owned = match daemon.store.owned_by(&daemon.instance).await {
        Ok(owned) => owned,
        Err(e) => {
            tracing::warn!(error = %e, "cannot mark running deployments interrupted; their leases will lapse");
            return;
        }
    };
    for lease in owned {
        if lease.deployment.state == State::Activating {
            // Its stopped activate step may have switched the cluster: leave
            // the lease to lapse, and the next instance to restore it.
            tracing::warn!(deployment = %lease.deployment.id, "left activating for the next instance to restore");
            continue;
        }
        let error = format!(
            "interrupted during {}: deployd shut down",
            lease.deployment.state
        );
        settle(daemon, &lease, State::Interrupted, &error).await;
    }
}

/// Every lease period / 3, free targets whose running deployment's owner
/// stopped renewing its lease, and end phases past their stored deadline.
pub async fn reaper(daemon: Arc<Daemon>, supervisor: SupervisorHandle) {
    let every = (daemon.config.deploy.lease / 3).min(REAPER_MAX_PERIOD);
    loop {
        tokio::select! {
            _ = daemon.stopping.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = reconcile(&daemon, &supervisor).await {
            tracing::warn!(error = %e, "reconciliation failed; will try again");
        }
    }
}

/// Settle what no live owner will: running deployments whose lease expired
/// become `interrupted` (naming the phase and the instance), and those past
/// their phase deadline (stored when the phase began, so it survives a
/// restart) become `failed`. Their leftover step processes are killed.
/// Activations whose lease expired are adopted through `supervisor`
/// instead, and not counted: their end is recorded after the restore.
pub async fn reconcile(
    daemon: &Daemon,
    supervisor: &SupervisorHandle,
) -> Result<usize, StoreError> {
    let now = now();
    let mut settled = 0;
    let lapsed_activation = |l: &LeaseInfo| {
        l.deployment.state == State::Activating && l.lease_expires_at.is_some_and(|t| t < now)
    };
    for lease in daemon.store.expired_leases(now).await? {
        if lapsed_activation(&lease) {
            if let Err(e) = supervisor.adopt(&lease).await {
                tracing::warn!(deployment = %lease.deployment.id, error = %e, "could not hand a lapsed activation to its target; will try again");
            }
            continue;
        }
        let owner = lease.owner.as_deref().unwrap_or("unknown");
        let error = format!(
            "interrupted during {}: instance {owner} stopped renewing its lease",
            lease.deployment.state
        );
        settled += settle(daemon, &lease, State::Interrupted, &error).await as usize;
    }
    // A live owner fails its own timed-out phase; give it the kill grace first.
    let margin = daemon.config.deploy.kill_grace + OWNER_MARGIN;
    for lease in daemon.store.overdue_phases(now - margin).await? {
        if lapsed_activation(&lease) {
            continue; // adopted above
        }
        let error = format!(
            "{} timed out (deadline passed)",
            step_name(lease.deployment.state)
        );
        settled += settle(daemon, &lease, State::Failed, &error).await as usize;
    }
    Ok(settled)
}

fn step_name(state: State) -> &'static str {
    match state {
        State::Building => "build step",
        State::Pushing => "push step",
        _ => "activate step",
    }
}

/// End one running deployment on behalf of reconciliation; true if this
/// call did it (a compare-and-set: a live owner may have got there first).
async fn settle(daemon: &Daemon, lease: &LeaseInfo, to: State, error: &str) -> bool {
    let d = &lease.deployment;
    let Ok(change) = Change::new(d, to, Authority::Reconciler, VersionChange::Keep, now()) else {
        return false;
    };
    let since = d.started_at.unwrap_or(d.created_at);
    match daemon.commit(change.with_error(error), since).await {
        Ok(_) => {
            tracing::warn!(deployment = %d.id, app = %d.app, cluster = %d.cluster, %error, "settled by reconciliation");
            crate::pipeline::kill_orphans(d.id);
            true
        }
        Err(StoreError::Stale { .. }) => false,
        Err(e) => {
            tracing::warn!(deployment = %d.id, error = %e, "could not settle a deployment");
            false
        }
    }
}
