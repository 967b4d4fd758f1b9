//! What the core is configured with and what the shell tells it: the fixed
//! facts of a target, and the store's answers a decision needs; and the
//! orders the core gives a step task.

use crate::machine::State;
use crate::model::{Deployment, VersionInfo};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// The fixed facts a core decides with: who we are and how long things last.
#[derive(Debug, Clone)]
pub struct CoreConfig {
    pub app: String,
    pub cluster: String,
    /// This daemon's instance id, the owner written into leases.
    pub instance: String,
    pub lease: Duration,
    /// How soon a start or a record that the store refused for now is retried.
    pub retry_after: Duration,
    /// The cluster's step timeout per phase; `None` where no step is configured.
    pub timeouts: PhaseTimeouts,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct PhaseTimeouts {
    pub build: Option<Duration>,
    pub push: Option<Duration>,
    pub activate: Option<Duration>,
}

impl PhaseTimeouts {
    pub fn get(&self, phase: State) -> Option<Duration> {
        match phase {
            State::Building => self.build,
            State::Pushing => self.push,
            State::Activating => self.activate,
            State::Queued
            | State::Succeeded
            | State::Failed
            | State::Cancelled
            | State::Interrupted => None,
        }
    }
}

/// How a phase's work ended, as the step task reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhaseResult {
    /// The phase's work is done; a build reports its artifact.
    Done { artifact: Option<String> },
    /// The phase failed (or was stopped); the text becomes the `error`.
    Failed(String),
}

/// What the store told the shell before a submit could be decided.
#[derive(Debug, Clone, Default)]
pub struct SubmitFacts {
    /// The deployment created earlier under the request's idempotency key,
    /// with that request's fingerprint.
    pub idempotent: Option<(Deployment, String)>,
    /// For a rollback: the version it goes to (`None`: no such version).
    pub rollback_to: Option<VersionInfo>,
    /// What another instance runs or queues on the target; asked only when
    /// this core holds nothing ([`TargetCore::holder`]).
    pub foreign_holder: Option<Deployment>,
}

/// What the store told the shell before the queue's head could start.
#[derive(Debug, Clone)]
pub struct StartFacts {
    /// The head's row as stored now (it may have been cancelled elsewhere).
    pub current: Option<Deployment>,
    /// The version active on the target: `DEPLOY_PREVIOUS_*`.
    pub previous: Option<VersionInfo>,
    /// For a rollback: the version it re-activates, if it still exists.
    pub rollback_to: Option<VersionInfo>,
}

/// A crashed instance's activation this core takes over.
#[derive(Debug, Clone)]
pub struct Adoption {
    pub deployment: Deployment,
    pub owner: Option<String>,
    pub previous: Option<VersionInfo>,
    pub cause: Orphaned,
}

/// Why reconciliation handed a running deployment to its target's core.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orphaned {
    /// Its instance stopped renewing its lease: it is `interrupted`.
    LeaseLapsed,
    /// Its stored phase deadline passed and nobody ended it (its instance
    /// died under a long lease): it `failed`, timed out.
    PastDeadline,
}

/// What a step task needs to run one phase.
#[derive(Debug, Clone)]
pub struct StepOrder {
    pub deployment: Deployment,
    pub previous: Option<VersionInfo>,
    pub rollback_artifact: Option<String>,
    /// When the phase must be over (stored with the phase).
    pub deadline: Option<DateTime<Utc>>,
}

/// What a restore needs: the deployment whose activation did not succeed,
/// and what the cluster should run again.
#[derive(Debug, Clone)]
pub struct RestoreOrder {
    pub deployment: Deployment,
    /// The active version to put back; `None`: nothing was active.
    pub version: Option<VersionInfo>,
    /// When the restore must be over: the activate step's timeout from now.
    pub deadline: Option<DateTime<Utc>>,
}
