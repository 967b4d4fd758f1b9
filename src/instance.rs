//! This instance among the others on one PostgreSQL: where it is reached,
//! its heartbeat, and handing its targets over when it stops.
//!
//! What must stay true:
//! - an instance owns a target only while its lease row in the store says so
//!   (`target_leases`, renewed by [`heartbeat`] every lease / 3); a resident
//!   actor whose target the heartbeat no longer finds is stopped
//!   ([`SupervisorHandle::still_owned`]), and its writes were already
//!   refused by their fence;
//! - a target with queued or running deployments and no live owner (its
//!   owner died, or went away) is taken by the next heartbeat of any
//!   instance ([`Store::orphaned_targets`](crate::store::Store::orphaned_targets)
//!   → [`SupervisorHandle::wake`]), whose actor then adopts what the dead
//!   owner left running once that lease lapsed;
//! - an instance that stops releases its targets and expires its running
//!   deployments' leases ([`retire`]), so the others take over at once.

use crate::config::Config;
use crate::daemon::Daemon;
use crate::supervisor::SupervisorHandle;
use crate::target::TargetError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Where the others reach this instance: `server.advertise_url`, else the
/// address it listens on (`listening`), with the host name in place of an
/// unspecified address.
pub fn address(config: &Config, listening: SocketAddr, tls: bool) -> String {
    if let Some(url) = &config.server.advertise_url {
        return url.trim_end_matches('/').to_string();
    }
    let scheme = if tls { "https" } else { "http" };
    let port = listening.port();
    match listening.ip() {
        ip if ip.is_unspecified() => format!("{scheme}://{}:{port}", host_name()),
        std::net::IpAddr::V6(ip) => format!("{scheme}://[{ip}]:{port}"),
        ip => format!("{scheme}://{ip}:{port}"),
    }
}

/// This machine's host name (`localhost` if it has none).
fn host_name() -> String {
    let mut buffer = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most
    // that many bytes and we read up to the first NUL.
    let status = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
    match std::str::from_utf8(&buffer[..end]) {
        Ok(name) if status == 0 && !name.is_empty() => name.to_string(),
        _ => "localhost".to_string(),
    }
}

/// Announce this instance and renew its target leases now: before serving,
/// so the others can forward to it as soon as it owns anything.
pub async fn register(daemon: &Daemon) -> Result<(), crate::store::StoreError> {
    let lease = daemon.config.deploy.lease;
    (daemon.store)
        .heartbeat(&daemon.instance, &daemon.address, lease)
        .await
        .map(drop)
}

/// Every lease / 3 until the daemon stops: renew this instance and its
/// target leases, stop the actors of targets it lost, and take the targets
/// nobody owns that have work waiting.
pub async fn heartbeat(daemon: Arc<Daemon>, supervisor: SupervisorHandle) {
    let every = daemon.config.deploy.lease / 3;
    loop {
        tokio::select! {
            _ = daemon.stopping.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        beat(&daemon, &supervisor).await;
    }
}

async fn beat(daemon: &Daemon, supervisor: &SupervisorHandle) {
    let lease = daemon.config.deploy.lease;
    let sent = Instant::now();
    match (daemon.store)
        .heartbeat(&daemon.instance, &daemon.address, lease)
        .await
    {
        Ok(owned) => supervisor.still_owned(owned, sent),
        // Leases run on; if this lasts past one, the others take over and
        // this instance's writes are fenced.
        Err(e) => tracing::warn!(error = %e, "heartbeat failed; will try again"),
    }
    let orphaned = match daemon.store.orphaned_targets().await {
        Ok(orphaned) => orphaned,
        Err(e) => return tracing::warn!(error = %e, "could not look for targets without an owner"),
    };
    for (app, cluster) in orphaned {
        match supervisor.wake(&app, &cluster).await {
            Ok(()) => tracing::info!(%app, %cluster, "took over a target that had no live owner"),
            // Another instance was quicker.
            Err(TargetError::Elsewhere(_)) => {}
            Err(e) => {
                tracing::warn!(%app, %cluster, error = %e, "could not take a target without an owner")
            }
        }
    }
}

/// How long retiring may take before the leases are left to lapse.
const RETIRE_TIMEOUT: Duration = Duration::from_secs(5);

/// This instance stops: release its targets, expire its running
/// deployments' leases (a left activation is adopted at once), and leave
/// the instances, so the others take over without waiting a lease.
pub async fn retire(daemon: &Daemon) {
    let retire = daemon.store.retire_instance(&daemon.instance);
    match tokio::time::timeout(RETIRE_TIMEOUT, retire).await {
        Ok(Ok(())) => tracing::info!("handed this instance's targets over"),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "could not hand the targets over; their leases will lapse")
        }
        Err(_) => tracing::warn!("handing the targets over timed out; their leases will lapse"),
    }
}
