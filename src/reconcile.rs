//! Reconciliation: settling what no live owner will.
//!
//! Running deployments whose lease expired go to their target's actor
//! ([`SupervisorHandle::adopt`]), on whichever instance owns the target
//! (taking it when nobody does): it restores the cluster first if the
//! deployment was activating (its step may have switched the cluster before
//! its instance died), then records it `interrupted`, naming the phase and
//! the instance. A deployment this instance still runs at shutdown becomes
//! `interrupted` here, under the fence of its target; an activation is left
//! for the next owner to restore. Each is a compare-and-set through
//! [`Daemon::commit`]: a live owner that got there first wins, and nothing
//! is recorded twice. The [`reaper`] runs it every lease period / 3 (at
//! least every [`REAPER_MAX_PERIOD`]), and start-up runs it, once the
//! supervisor runs, before serving.

use crate::daemon::Daemon;
use crate::machine::{Authority, State};
use crate::model::now;
use crate::store::{Change, Fence, LeaseInfo, StoreError, VersionChange};
use crate::supervisor::SupervisorHandle;
use crate::target::{Orphaned, TargetError};
use std::sync::Arc;
use std::time::Duration;

/// How long past a phase's deadline (and the kill grace) reconciliation
/// leaves a live owner to fail its own phase before taking it over.
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
    // The targets still held (the actors stopped without releasing them):
    // each end is written under its target's fence.
    let held = match crate::instance::beat_once(daemon).await {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(error = %e, "cannot mark running deployments interrupted; their leases will lapse");
            return;
        }
    };
    for lease in owned {
        let d = &lease.deployment;
        let Some(target) = (held.iter()).find(|t| t.app == d.app && t.cluster == d.cluster) else {
            continue; // another instance owns the target now: it settles this
        };
        let fence = Fence {
            owner: daemon.instance.clone(),
            epoch: target.epoch,
        };
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
        settle(daemon, &lease, &fence, &error).await;
    }
}

/// Every lease period / 3 (at least every [`REAPER_MAX_PERIOD`]), hand
/// over running deployments whose owner stopped renewing its lease or let
/// their phase run past its deadline.
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

/// Settle what no live owner will, each through its target's actor
/// ([`SupervisorHandle::adopt`]) on whichever instance owns the target
/// (this one takes it when nobody does), so every write is fenced:
/// - a running deployment whose lease expired is taken over (a
///   compare-and-set on the lapsed lease), its leftover steps killed, the
///   cluster restored if it was activating, and recorded `interrupted`,
///   naming the phase and the instance;
/// - one past its stored phase deadline (plus the kill grace and a margin,
///   which a live owner uses to fail its own phase) is taken over the same
///   way and recorded `failed`, timed out: a dead instance with a long
///   lease does not hold its target until the lease ends.
///
/// Returns how many deployments it handed over.
pub async fn reconcile(
    daemon: &Daemon,
    supervisor: &SupervisorHandle,
) -> Result<usize, StoreError> {
    let now = now();
    let mut handed = 0;
    let expired = daemon.store.expired_leases(now).await?;
    let margin = daemon.config.deploy.kill_grace + OWNER_MARGIN;
    let overdue = daemon.store.overdue_phases(now - margin).await?;
    let overdue = overdue
        .into_iter()
        .filter(|o| !expired.iter().any(|e| e.deployment.id == o.deployment.id));
    let orphans = (expired.iter().cloned().map(|l| (l, Orphaned::LeaseLapsed)))
        .chain(overdue.map(|l| (l, Orphaned::PastDeadline)));
    for (lease, cause) in orphans {
        match supervisor.adopt(&lease, cause).await {
            Ok(()) => handed += 1,
            // Another live instance owns the target: its actor adopts it.
            Err(TargetError::Elsewhere(_)) => {}
            Err(e) => {
                tracing::warn!(deployment = %lease.deployment.id, error = %e, "could not hand a deployment its instance left to its target; will try again")
            }
        }
    }
    Ok(handed)
}

/// Record a deployment this instance ran `interrupted` at shutdown, under
/// `fence` (a compare-and-set: its actor may have got there first).
async fn settle(daemon: &Daemon, lease: &LeaseInfo, fence: &Fence, error: &str) {
    let d = &lease.deployment;
    let to = State::Interrupted;
    let Ok(change) = Change::new(d, to, Authority::Reconciler, VersionChange::Keep, now()) else {
        return;
    };
    let change = change.with_error(error).with_fence(Some(fence.clone()));
    let since = d.started_at.unwrap_or(d.created_at);
    match daemon.commit(change, since).await {
        Ok(_) => {
            tracing::warn!(deployment = %d.id, app = %d.app, cluster = %d.cluster, %error, "interrupted at shutdown");
            crate::pipeline::kill_orphans(d.id);
        }
        Err(StoreError::Stale { .. }) => {}
        Err(e) => tracing::warn!(deployment = %d.id, error = %e, "could not settle a deployment"),
    }
}
