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
use crate::store::{OwnedTarget, StoreError};
use crate::supervisor::SupervisorHandle;
use crate::target::{TargetError, Unavailable};
use sha2::{Digest, Sha256};
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

/// How an instance shows the others that a request comes from it: a random
/// key made at start, kept in memory; the store holds only its sha256, which
/// the instance asked checks the key against ([`PeerKey::opens`]).
pub struct PeerKey {
    key: String,
    sha256: String,
}

impl PeerKey {
    /// A new random key (256 bits from the kernel).
    pub fn new() -> std::io::Result<PeerKey> {
        use std::io::Read;
        let mut bytes = [0u8; 32];
        std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
        let key = hex::encode(bytes);
        Ok(PeerKey {
            sha256: hex::encode(Sha256::digest(key.as_bytes())),
            key,
        })
    }

    /// The key, for the `Authorization` of requests to other instances.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// What the store keeps of it.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// Whether `presented` is the key whose sha256 is `stored` (compared in
    /// constant time).
    pub fn opens(presented: &str, stored: &str) -> bool {
        use subtle::ConstantTimeEq;
        let digest = hex::encode(Sha256::digest(presented.as_bytes()));
        digest.as_bytes().ct_eq(stored.as_bytes()).into()
    }
}

/// One heartbeat: this instance live for a lease, its target leases
/// renewed; the targets it still owns.
pub async fn beat_once(daemon: &Daemon) -> Result<Vec<OwnedTarget>, StoreError> {
    let (id, address) = (&daemon.instance, &daemon.address);
    let lease = daemon.config.deploy.lease;
    (daemon.store)
        .heartbeat(id, address, daemon.peer_key.sha256(), lease)
        .await
}

/// Announce this instance and renew its target leases now: before serving,
/// so the others can forward to it as soon as it owns anything.
pub async fn register(daemon: &Daemon) -> Result<(), StoreError> {
    beat_once(daemon).await.map(drop)
}

/// The heartbeat runs at a third of the lease, and at least this often: a
/// target another instance released on its way out is taken this soon
/// whatever the lease.
pub const HEARTBEAT_MAX_PERIOD: Duration = Duration::from_secs(2);

/// Every lease / 3 (at least every [`HEARTBEAT_MAX_PERIOD`]) until the
/// daemon stops: renew this instance and its target leases, stop the
/// actors of targets it lost, and take the targets nobody owns that have
/// work waiting.
pub async fn heartbeat(daemon: Arc<Daemon>, supervisor: SupervisorHandle) {
    let every = (daemon.config.deploy.lease / 3).min(HEARTBEAT_MAX_PERIOD);
    loop {
        tokio::select! {
            _ = daemon.stopping.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        beat(&daemon, &supervisor).await;
    }
}

async fn beat(daemon: &Daemon, supervisor: &SupervisorHandle) {
    let sent = Instant::now();
    match beat_once(daemon).await {
        Ok(owned) => {
            // A target held with no actor (its release failed as the actor
            // passivated) gets one back, so queued work there cannot wait
            // on a lease nobody else may take.
            let resident = supervisor.resident().await;
            for target in &owned {
                let here = |r: &crate::supervisor::ResidentActor| {
                    r.app == target.app && r.cluster == target.cluster
                };
                if resident.iter().any(here) {
                    continue;
                }
                match supervisor.wake(&target.app, &target.cluster).await {
                    // Degraded: its requests wait out the restart budget.
                    Ok(()) | Err(TargetError::Unavailable(Unavailable::Degraded { .. })) => {}
                    Err(e) => {
                        tracing::warn!(app = %target.app, cluster = %target.cluster, error = %e, "could not restart the actor of a target this instance holds")
                    }
                }
            }
            supervisor.still_owned(owned, sent);
        }
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

/// How long an instance holding a source may take to start sending it.
const FETCH_ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The header naming the instance a request between instances comes from;
/// its `Authorization: Bearer` is that instance's [`PeerKey`].
pub const PEER_HEADER: &str = "deployd-instance";

/// Fetch source `digest` from a live instance that holds it, into this
/// instance's sources (the digest checked as for any upload), and say this
/// instance holds it now. True once it is here; false when no live
/// instance has it or none could send it.
pub async fn fetch_source(daemon: &Daemon, digest: &str) -> bool {
    let holders = match daemon.store.source_holders(digest, &daemon.instance).await {
        Ok(holders) => holders,
        Err(e) => {
            tracing::warn!(%digest, error = %e, "cannot ask which instances hold the source");
            return false;
        }
    };
    for address in holders {
        let asked = (daemon.peers)
            .get(format!("{address}/v1/peers/sources/{digest}"))
            .header(PEER_HEADER, daemon.instance.as_str())
            .bearer_auth(daemon.peer_key.key())
            .send();
        // A paused holder must not hold the fetch for ever.
        let answer = match tokio::time::timeout(FETCH_ANSWER_TIMEOUT, asked).await {
            Ok(Ok(answer)) => answer.error_for_status(),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                tracing::warn!(%digest, %address, "the instance holding the source did not answer in time");
                continue;
            }
        };
        let answer = match answer {
            Ok(answer) => answer,
            Err(e) => {
                tracing::warn!(%digest, %address, error = %e, "could not fetch the source from another instance");
                continue;
            }
        };
        match daemon.sources.put(digest, answer.bytes_stream()).await {
            Ok(_) => {
                tracing::info!(%digest, %address, "fetched the source from another instance");
                record_source_copy(daemon, digest).await;
                return true;
            }
            Err(e) => {
                tracing::warn!(%digest, %address, error = %e, "the source another instance sent was refused")
            }
        }
    }
    false
}

/// Tell the other instances that this one holds source `digest`. A failure
/// only means they cannot fetch it from here.
pub async fn record_source_copy(daemon: &Daemon, digest: &str) {
    if let Err(e) = daemon
        .store
        .record_source_copy(digest, &daemon.instance)
        .await
    {
        tracing::warn!(%digest, error = %e, "could not record that this instance holds the source");
    }
}
