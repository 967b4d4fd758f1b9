//! [`TargetCore`]: every decision about one target, with no I/O, no clock and
//! no async. The target's actor ([`super::actor`]) feeds it [`Input`]s —
//! requests, store answers, step results, timer ticks — and carries out the
//! [`Effect`]s it returns, in order, feeding each effect's answer back as the
//! next input. So the whole policy reads, and is tested, as a table
//! (`core/tests.rs`), without a daemon.
//!
//! What must stay true:
//! - **one step per target**: a deployment whose step is being stopped
//!   (cancel, supersede, a lost lease) stays `running` here until its step
//!   reported that its whole process group is gone; only then is its end
//!   committed and the next deployment started;
//! - **record first, act second**: nothing is answered, started or announced
//!   on the strength of a write before the store confirmed it;
//! - **the active pointer is the desired state**: when an `activating` phase
//!   ends any way but `succeeded` (failed, timed out, cancelled,
//!   superseded), its activate step may have switched the cluster already,
//!   so before its end is committed the cluster's activate step runs again
//!   for the recorded active version (a *restore*); the target stays busy
//!   meanwhile, a restore is never stopped, never restored, and one that
//!   fails marks the target drifted; the same holds for an activation whose
//!   instance died: reconciliation hands it to the target's core, which
//!   takes it over (a compare-and-set on the lapsed lease), restores, and
//!   records it `interrupted`;
//! - a step result for a deployment or phase that is no longer running here
//!   is ignored;
//! - store errors are answers, not crashes: a request gets them back as an
//!   error, a result that could not be recorded is kept and retried.

use super::{Rejection, Submit, Submitted, TargetError, Unavailable};
use crate::config::ConflictPolicy;
use crate::machine::{self, Authority, Kind, State};
use crate::model::{Deployment, Drift, EventData, LogLine, QueuedInfo, Truncated, VersionInfo};
use crate::store::{Change, Created, Lease, NewDeployment, StoreError, VersionChange};
use chrono::{DateTime, Utc};
use std::collections::VecDeque;
use std::time::Duration;
use uuid::Uuid;

mod facts;
#[cfg(test)]
mod tests;

pub use facts::{
    Adoption, CoreConfig, Orphaned, PhaseResult, PhaseTimeouts, RestoreOrder, StartFacts,
    StepOrder, SubmitFacts,
};

/// Names a caller waiting for an answer; the shell maps it to a reply port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ReplyTo(pub u64);

/// What a waiting caller is answered with.
#[derive(Debug, Clone)]
pub enum Answer {
    Submitted(Submitted),
    Deployment(Deployment),
}

/// Everything that can happen to a target. Inputs live for one decision, so
/// their size does not matter; boxing them would only clutter the tables.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Input {
    /// The shell read the target's durable queue (at actor start).
    Loaded(Result<Loaded, StoreError>),
    Submit {
        reply: ReplyTo,
        /// Minted by the shell (UUIDv7) for the deployment this may create.
        id: Uuid,
        request: Box<Submit>,
        facts: Result<SubmitFacts, StoreError>,
    },
    Created {
        reply: ReplyTo,
        policy: ConflictPolicy,
        holder: Option<Box<Deployment>>,
        result: Result<Created, StoreError>,
    },
    Cancel {
        reply: ReplyTo,
        id: Uuid,
        reason: Option<String>,
        /// The stored row, read only when this core does not hold `id`.
        found: Result<Option<Deployment>, StoreError>,
    },
    Prepared {
        id: Uuid,
        reply: Option<ReplyTo>,
        facts: Result<StartFacts, StoreError>,
    },
    Committed {
        purpose: Purpose,
        result: Result<Deployment, StoreError>,
    },
    StepEnded {
        id: Uuid,
        phase: State,
        result: PhaseResult,
        /// Output lines the deployment's cap dropped so far.
        dropped_lines: u64,
    },
    /// The restore started by [`Effect::StartRestore`] ended.
    RestoreEnded {
        id: Uuid,
        result: PhaseResult,
        /// Output lines the deployment's cap dropped so far.
        dropped_lines: u64,
    },
    /// Reconciliation found this target's deployment `activating` under a
    /// lease its owner stopped renewing (a crash): its activate step may
    /// have switched the cluster, so take it over and restore.
    Adopt {
        deployment: Box<Deployment>,
        /// The instance that stopped renewing the lease.
        owner: Option<String>,
        /// The version active on the target, to restore.
        previous: Result<Option<VersionInfo>, StoreError>,
        cause: Orphaned,
    },
    /// The take-over's compare-and-set answered: `Ok(true)`, it is ours now.
    TakenOver {
        adoption: Box<Adoption>,
        result: Result<bool, StoreError>,
    },
    /// Time to extend the running deployment's lease.
    RenewLease,
    LeaseRenewed {
        id: Uuid,
        result: Result<u64, StoreError>,
    },
    /// A retry timer fired: load, start or record again what waited.
    Retry,
    /// The daemon is shutting down: start nothing new.
    ShuttingDown,
}

impl Input {
    /// Whether this is the store refusing a write because another instance
    /// owns the target now ([`StoreError::Fenced`]): the shell stops the
    /// actor instead of handing it to the core.
    pub fn fenced(&self) -> bool {
        match self {
            Input::Created { result: Err(e), .. } | Input::Committed { result: Err(e), .. } => {
                matches!(e, StoreError::Fenced { .. })
            }
            _ => false,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub queued: Vec<Deployment>,
    /// Another instance (or a dead one the reaper will free) runs a
    /// deployment of this target.
    pub held_elsewhere: bool,
}

/// Why a change was committed: says what to do with the store's answer.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)]
pub enum Purpose {
    /// The queue's head enters its first phase.
    Start {
        reply: Option<ReplyTo>,
        previous: Option<VersionInfo>,
        rollback_artifact: Option<String>,
        deadline: Option<DateTime<Utc>>,
    },
    /// The running deployment enters its next phase (or `succeeded`).
    Advance { deadline: Option<DateTime<Utc>> },
    /// The running deployment ends (its step is gone).
    End { waiters: Vec<ReplyTo> },
    /// A deployment that runs no step here ends: a queued one, or another
    /// instance's. `then_next`: then announce queue positions and start the
    /// queue's head (not when the deciding step goes on to do it itself).
    Settle {
        waiters: Vec<ReplyTo>,
        then_next: bool,
    },
}

/// Something for the shell to do. Effects are carried out in order.
#[derive(Debug)]
pub enum Effect {
    Reply {
        to: ReplyTo,
        answer: Result<Answer, TargetError>,
    },
    /// Read the target's durable queue → [`Input::Loaded`].
    Load,
    /// Create the deployment → [`Input::Created`].
    Create {
        reply: ReplyTo,
        policy: ConflictPolicy,
        holder: Option<Box<Deployment>>,
        new: Box<NewDeployment>,
    },
    /// Read what starting `id` needs → [`Input::Prepared`].
    Prepare { id: Uuid, reply: Option<ReplyTo> },
    /// Commit the change and broadcast it → [`Input::Committed`].
    Commit {
        change: Box<Change>,
        /// When the state being left began, for the phase-duration metric.
        since: DateTime<Utc>,
        purpose: Purpose,
    },
    /// Store and broadcast events (queue positions, notes, truncation).
    Append { id: Uuid, events: Vec<EventData> },
    /// Run the running deployment's current phase → [`Input::StepEnded`].
    StartStep(Box<StepOrder>),
    /// Run the cluster's activate step for the recorded active version (or
    /// for none) → [`Input::RestoreEnded`]. Never stopped by [`Effect::StopStep`].
    StartRestore(Box<RestoreOrder>),
    /// Make the lapsed deployment ours: a compare-and-set on its state and
    /// its lease having lapsed before `lapsed_before` → [`Input::TakenOver`].
    TakeOver {
        adoption: Box<Adoption>,
        /// The lease lapsed, or the deadline passed, before this.
        lapsed_before: DateTime<Utc>,
        lease: Lease,
        deadline: Option<DateTime<Utc>>,
    },
    /// Kill what is left on this host of a dead daemon's steps for `id`.
    KillLeftovers { id: Uuid },
    /// Move the running deployment's stored phase deadline (and lease), so
    /// reconciliation leaves a restore that runs past the phase's deadline
    /// alone.
    ExtendDeadline {
        id: Uuid,
        state: State,
        lease: Lease,
        deadline: Option<DateTime<Utc>>,
    },
    /// Record (`Some`) or clear (`None`) the target's drift.
    SetDrift(Option<Drift>),
    /// Stop the step: SIGTERM to its group, SIGKILL after the grace; it then
    /// reports [`Input::StepEnded`].
    StopStep { id: Uuid },
    /// Extend the lease → [`Input::LeaseRenewed`].
    RenewLease { id: Uuid, until: DateTime<Utc> },
    /// Send [`Input::Retry`] after the delay.
    RetryAfter(Duration),
    /// The deployment has ended: drop its step slot. (Its workspace goes
    /// with its final commit, in `Daemon::commit`, whoever ends it.)
    ForgetStep { id: Uuid },
    /// Nothing runs or waits: the shell may passivate the actor later.
    Idle,
}

/// One target's state in this process.
#[derive(Debug)]
pub struct TargetCore {
    config: CoreConfig,
    loaded: bool,
    shutting_down: bool,
    running: Option<Running>,
    queue: VecDeque<Deployment>,
}

/// The deployment whose phases this core runs.
#[derive(Debug)]
struct Running {
    deployment: Deployment,
    /// When the current phase began.
    since: DateTime<Utc>,
    previous: Option<VersionInfo>,
    rollback_artifact: Option<String>,
    /// `None` while the phase's step runs; its result once it reported.
    result: Option<PhaseResult>,
    dropped_lines: u64,
    stop: Option<Stop>,
    /// Set once an `activating` phase ended without success.
    restore: Option<Restore>,
}

/// The cluster is being put back on `previous` before `ending` is recorded.
#[derive(Debug)]
struct Restore {
    /// The end to record; once the restore reported, its error says what
    /// the restore did.
    ending: Ending,
    /// Everyone waiting for the end (cancels that came before or during).
    waiters: Vec<ReplyTo>,
    /// The restore step reported.
    done: bool,
}

/// A stop was asked for: the step is being stopped, then this is recorded.
#[derive(Debug)]
struct Stop {
    /// `None`: the deployment is no longer ours (its lease was lost); record
    /// nothing, only free the target.
    ending: Option<Ending>,
    waiters: Vec<ReplyTo>,
}

#[derive(Debug, Clone)]
struct Ending {
    to: State,
    error: String,
    superseded_by: Option<Uuid>,
    /// `Reconciler` only for `interrupted`: an adopted activation.
    by: Authority,
}

impl TargetCore {
    /// A core that has not loaded its queue yet: requests answer
    /// `unavailable` until [`Input::Loaded`] arrives.
    pub fn new(config: CoreConfig) -> TargetCore {
        TargetCore {
            config,
            loaded: false,
            shutting_down: false,
            running: None,
            queue: VecDeque::new(),
        }
    }

    /// The first effects of a fresh actor.
    pub fn start(&self) -> Vec<Effect> {
        vec![Effect::Load]
    }

    /// Decide what `input` means at `now`.
    pub fn handle(&mut self, input: Input, now: DateTime<Utc>) -> Vec<Effect> {
        let mut out = Vec::new();
        match input {
            Input::Loaded(result) => self.loaded(result, &mut out),
            Input::Submit {
                reply,
                id,
                request,
                facts,
            } => self.submit(reply, id, *request, facts, now, &mut out),
            Input::Created {
                reply,
                policy,
                holder,
                result,
            } => self.created(reply, policy, holder.map(|h| *h), result, now, &mut out),
            Input::Cancel {
                reply,
                id,
                reason,
                found,
            } => self.cancel(reply, id, reason, found, now, &mut out),
            Input::Prepared { id, reply, facts } => self.prepared(id, reply, facts, now, &mut out),
            Input::Committed { purpose, result } => self.committed(purpose, result, now, &mut out),
            Input::StepEnded {
                id,
                phase,
                result,
                dropped_lines,
            } => self.step_ended(id, phase, result, dropped_lines, now, &mut out),
            Input::RestoreEnded {
                id,
                result,
                dropped_lines,
            } => self.restore_ended(id, result, dropped_lines, now, &mut out),
            Input::Adopt {
                deployment,
                owner,
                previous,
                cause,
            } => self.adopt(*deployment, owner, previous, cause, now, &mut out),
            Input::TakenOver { adoption, result } => {
                self.taken_over(*adoption, result, now, &mut out)
            }
            Input::RenewLease => {
                if let Some(running) = &self.running {
                    let until = now + self.config.lease;
                    let id = running.deployment.id;
                    out.push(Effect::RenewLease { id, until });
                }
            }
            Input::LeaseRenewed { id, result } => self.lease_renewed(id, result, now, &mut out),
            Input::Retry => self.retry(now, &mut out),
            Input::ShuttingDown => self.shutting_down = true,
        }
        out
    }

    /// The deployment a new request would wait for: the running one, else
    /// the head of the queue.
    pub fn holder(&self) -> Option<&Deployment> {
        self.running
            .as_ref()
            .map(|r| &r.deployment)
            .or(self.queue.front())
    }

    /// Whether `id` runs or waits here.
    pub fn holds(&self, id: Uuid) -> bool {
        self.running_id() == Some(id) || self.queue.iter().any(|d| d.id == id)
    }

    pub fn running_id(&self) -> Option<Uuid> {
        self.running.as_ref().map(|r| r.deployment.id)
    }

    pub fn queue_len(&self) -> usize {
        self.queue.len()
    }

    /// Nothing runs or waits: the actor may passivate.
    pub fn is_idle(&self) -> bool {
        self.running.is_none() && self.queue.is_empty()
    }

    /// Whether an actor whose last request or result was `idle_for` ago
    /// should passivate, given the configured `limit`.
    pub fn passivation(&self, idle_for: Duration, limit: Duration) -> Passivation {
        match (self.is_idle(), idle_for >= limit) {
            (false, _) => Passivation::Stay,
            (true, true) => Passivation::Now,
            (true, false) => Passivation::CheckAgainIn(limit - idle_for),
        }
    }
}

/// What an idle check decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passivation {
    /// Work runs or waits: stay resident (the next idle moment schedules a check).
    Stay,
    /// Idle, but something happened recently: look again then.
    CheckAgainIn(Duration),
    /// Idle for the whole period: drain and stop.
    Now,
}

mod decide;
