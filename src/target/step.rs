//! One phase of one deployment, run in a task the target's actor holds.
//!
//! A phase never writes state: it extracts the source (build), runs the
//! cluster's step for the phase as a real process, stores the step's output
//! as `log` events, and returns a [`PhaseResult`] for the actor to apply.
//! Its log events are all stored before the result is returned, so they come
//! before the next state event in every stream.
//!
//! Steps cannot see the daemon, and their output cannot show its secrets:
//! a cluster with a `user` runs its steps as that user, with the workspace
//! and `releases/<app>/<cluster>` handed to it first; every output line and
//! the step's error pass through the config's [`Redactor`] before they are
//! stored; the artifact file a build (perhaps as another user) wrote is read
//! without following a link, so a build cannot make the daemon read a file
//! for it.

use super::core::PhaseResult;
use crate::config::StepConfig;
use crate::daemon::Daemon;
use crate::events::EventHub;
use crate::machine::{Kind, State};
use crate::model::{Deployment, EventData, LogLine, VersionInfo};
use crate::pipeline::{OutputCap, OutputLine, Phase, StepCommand, StepOutcome, run_step};
use crate::redact::Redactor;
use crate::source::{ExtractLimits, extract_verified};
use crate::store::{Fence, StoreError};
use crate::users::StepUser;
use chrono::{DateTime, Utc};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Log lines stored per round trip to the store.
const LOG_BATCH: usize = 256;
/// The most an artifact reference may be: it names the artifact.
const ARTIFACT_BYTES: u64 = 64 * 1024;

pub(super) struct PhaseJob {
    pub daemon: Arc<Daemon>,
    pub deployment: Deployment,
    pub step: Option<StepConfig>,
    pub env: Vec<(String, String)>,
    /// When the phase must be over, as stored with it: the step's timeout
    /// is what is left of it when the step starts.
    pub deadline: Option<DateTime<Utc>>,
    pub cancel: CancellationToken,
    pub cap: Arc<Mutex<OutputCap>>,
    /// The actor's hold on the target: output is stored under it.
    pub fence: Fence,
}

/// Where a step's output goes: the deployment's events, stored under the
/// actor's fence; `stop` ends the step once the target was lost.
struct LogSink {
    hub: Arc<EventHub>,
    id: uuid::Uuid,
    fence: Fence,
    stop: CancellationToken,
}

/// The cluster's step for `phase`, if it configures one.
pub(super) fn step_config(daemon: &Daemon, cluster: &str, phase: State) -> Option<StepConfig> {
    let cluster = daemon.config.clusters.get(cluster)?;
    match phase {
        State::Building => cluster.build.clone(),
        State::Pushing => cluster.push.clone(),
        State::Activating => cluster.activate.clone(),
        State::Queued
        | State::Succeeded
        | State::Failed
        | State::Cancelled
        | State::Interrupted => None,
    }
}

/// The environment a step sees, besides a fixed PATH and HOME: the
/// `DEPLOY_*` variables and the cluster's own `env`. Nothing of the daemon's.
pub(super) fn step_env(
    daemon: &Daemon,
    deployment: &Deployment,
    previous: Option<&VersionInfo>,
    rollback_artifact: Option<String>,
) -> Vec<(String, String)> {
    let id = deployment.id;
    let mut env: Vec<(String, String)> = (daemon.config.clusters.get(&deployment.cluster))
        .map(|c| c.env_vars())
        .unwrap_or_default();
    let mut set = |key: &str, value: String| env.push((key.to_string(), value));
    set("DEPLOY_ID", id.to_string());
    set("DEPLOY_APP", deployment.app.clone());
    set("DEPLOY_CLUSTER", deployment.cluster.clone());
    set("DEPLOY_KIND", deployment.kind.to_string());
    set(
        "DEPLOY_DATA_DIR",
        daemon.data_dir.root().display().to_string(),
    );
    set(
        "DEPLOY_SOURCE_DIR",
        daemon.data_dir.workspace_source(id).display().to_string(),
    );
    set(
        "DEPLOY_ARTIFACT_FILE",
        daemon.data_dir.artifact_file(id).display().to_string(),
    );
    set(
        "DEPLOY_RELEASE_DIR",
        (daemon.data_dir)
            .release(&deployment.app, &deployment.cluster, id)
            .display()
            .to_string(),
    );
    if let Some(artifact) = rollback_artifact {
        set("DEPLOY_ARTIFACT", artifact);
    }
    if let Some(version) = &deployment.version {
        set("DEPLOY_VERSION", version.clone());
    }
    if let Some(previous) = previous {
        set("DEPLOY_PREVIOUS_VERSION", previous.version.clone());
        set("DEPLOY_PREVIOUS_ARTIFACT", previous.artifact.clone());
    }
    if let Some(sha) = deployment.git.as_ref().and_then(|g| g.sha.clone()) {
        set("DEPLOY_GIT_SHA", sha);
    }
    env
}

/// The environment of a restore: the cluster's activate step, told to put
/// `version` back (`DEPLOY_VERSION`, `DEPLOY_ARTIFACT`), or with both unset
/// when nothing was active, and `DEPLOY_RESTORE=1` either way. The other
/// `DEPLOY_*` variables name the deployment whose activation did not succeed.
pub(super) fn restore_env(
    daemon: &Daemon,
    deployment: &Deployment,
    version: Option<&VersionInfo>,
) -> Vec<(String, String)> {
    let mut restoring = deployment.clone();
    restoring.version = version.map(|v| v.version.clone());
    restoring.git = None;
    let artifact = version.map(|v| v.artifact.clone());
    let mut env = step_env(daemon, &restoring, None, artifact);
    env.push(("DEPLOY_RESTORE".to_string(), "1".to_string()));
    env
}

impl PhaseJob {
    /// Run the cluster's activate step as a restore: its output is stored
    /// under step `restore`, and nothing else is read or written.
    pub async fn restore(self) -> PhaseResult {
        let Some(step) = self.step.clone() else {
            return PhaseResult::Done { artifact: None };
        };
        match self.run_step(Phase::Activate, "restore", step).await {
            Ok(()) => PhaseResult::Done { artifact: None },
            Err(e) => PhaseResult::Failed(e),
        }
    }

    pub async fn run(mut self) -> PhaseResult {
        let phase = match self.deployment.state {
            State::Building => Phase::Build,
            State::Pushing => Phase::Push,
            _ => Phase::Activate,
        };
        if phase == Phase::Build
            && let Err(e) = self.extract_source().await
        {
            return PhaseResult::Failed(e);
        }
        if phase != Phase::Build {
            self.add_artifact_env().await;
        }
        if let Some(step) = self.step.clone()
            && let Err(e) = self.run_step(phase, phase.as_str(), step).await
        {
            return PhaseResult::Failed(e);
        }
        let artifact = match phase {
            Phase::Build => self.read_artifact().await,
            _ => Ok(None),
        };
        match artifact {
            Ok(artifact) => PhaseResult::Done { artifact },
            Err(e) => PhaseResult::Failed(e),
        }
    }

    /// The user the cluster runs its steps as, if it names one.
    fn user(&self) -> Option<StepUser> {
        let cluster = self.daemon.config.clusters.get(&self.deployment.cluster);
        cluster.and_then(|c| c.user.clone())
    }

    async fn extract_source(&self) -> Result<(), String> {
        let Some(sha) = self.deployment.source.clone() else {
            return Err("the deployment has no source".to_string());
        };
        // Taken over from an instance that held it, or accepted elsewhere:
        // fetch it from an instance that has it.
        if !self.daemon.sources.exists(&sha)
            && !crate::instance::fetch_source(&self.daemon, &sha).await
        {
            return Err(format!(
                "source {sha} is not on this instance, and no live instance holds it; upload it again"
            ));
        }
        let archive = self.daemon.sources.path(&sha);
        let id = self.deployment.id;
        let dest = self.daemon.data_dir.workspace_source(id);
        let limits = ExtractLimits {
            max_bytes: self.daemon.config.limits.extracted_bytes,
            max_entries: self.daemon.config.limits.extracted_entries,
        };
        let (data_dir, user) = (self.daemon.data_dir.clone(), self.user());
        let outcome = tokio::task::spawn_blocking(move || {
            let extract = || {
                // A build retried after a restart starts from a clean copy.
                let _ = std::fs::remove_dir_all(&dest);
                if let Some(parent) = dest.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                extract_verified(&archive, &sha, &dest, &limits).map(|_| ())
            };
            extract().map_err(|e| format!("could not extract the source: {e}"))?;
            match &user {
                Some(user) => (data_dir.give_workspace(id, user))
                    .map_err(|e| format!("could not give the workspace to {user}: {e}")),
                None => Ok(()),
            }
        })
        .await;
        outcome.unwrap_or_else(|e| Err(format!("could not extract the source: {e}")))
    }

    /// Push and activate of a deploy see the artifact its build reported.
    async fn add_artifact_env(&mut self) {
        if self.deployment.kind == Kind::Rollback {
            return;
        }
        let Some(version) = &self.deployment.version else {
            return;
        };
        if let Ok(Some(info)) = self
            .daemon
            .store
            .version(&self.deployment.app, version)
            .await
        {
            self.env
                .push(("DEPLOY_ARTIFACT".to_string(), info.artifact));
        }
    }

    /// What the build wrote to `DEPLOY_ARTIFACT_FILE`, trimmed; bytes that
    /// are not UTF-8 become U+FFFD (like step output), never a silent
    /// fallback. `None` when the file is missing or blank; an error when it
    /// is not a regular file (a link, a fifo) or is too long.
    async fn read_artifact(&self) -> Result<Option<String>, String> {
        let path = self.daemon.data_dir.artifact_file(self.deployment.id);
        let read = tokio::task::spawn_blocking(move || read_artifact_file(&path)).await;
        let bytes = match read {
            Ok(Ok(Some(bytes))) => bytes,
            Ok(Ok(None)) => return Ok(None),
            Ok(Err(e)) => return Err(format!("the build's DEPLOY_ARTIFACT_FILE {e}")),
            Err(e) => {
                return Err(format!(
                    "the build's DEPLOY_ARTIFACT_FILE cannot be read: {e}"
                ));
            }
        };
        let text = String::from_utf8_lossy(&bytes);
        let text = text.trim();
        Ok((!text.is_empty()).then(|| text.to_string()))
    }

    /// Run `step` for `phase`; `name` is the step's name in its log events
    /// and its errors.
    async fn run_step(
        &self,
        phase: Phase,
        name: &'static str,
        step: StepConfig,
    ) -> Result<(), String> {
        let redactor = Arc::new(Redactor::of(&self.daemon.config));
        let ran = self.run_step_as(phase, name, step, &redactor).await;
        ran.map_err(|error| redactor.redact(&error).into_owned())
    }

    async fn run_step_as(
        &self,
        phase: Phase,
        name: &'static str,
        step: StepConfig,
        redactor: &Arc<Redactor>,
    ) -> Result<(), String> {
        let user = self.user();
        if let Some(user) = &user {
            let d = &self.deployment;
            (self.daemon.data_dir.open_to(user, &d.app, &d.cluster)).map_err(|e| {
                format!("{name} step could not start: the data dir for {user}: {e}")
            })?;
        }
        let cwd = self.daemon.data_dir.workspace_source(self.deployment.id);
        let cwd = if cwd.is_dir() {
            cwd
        } else {
            self.daemon.data_dir.root().to_path_buf()
        };
        let timeout = match self.deadline {
            Some(deadline) => (deadline - crate::model::now())
                .to_std()
                .unwrap_or_default(),
            None => step.timeout,
        };
        let command = StepCommand {
            phase,
            argv: step.run.clone(),
            timeout,
            cwd,
            env: self.env.clone(),
            kill_grace: self.daemon.config.deploy.kill_grace,
            user,
            redactor: Some(redactor.clone()),
        };
        let (lines, receiver) = mpsc::channel(LOG_BATCH);
        let sink = LogSink {
            hub: self.daemon.hub.clone(),
            id: self.deployment.id,
            fence: self.fence.clone(),
            stop: self.cancel.clone(),
        };
        let pump = tokio::spawn(pump_logs(
            sink,
            name,
            receiver,
            self.cap.clone(),
            redactor.clone(),
        ));
        let outcome = run_step(command, lines, self.cancel.clone()).await;
        let _ = pump.await;
        match outcome {
            StepOutcome::Succeeded => Ok(()),
            StepOutcome::Failed { exit, stderr_tail } => {
                let mut error = format!("{name} step failed ({exit})");
                if !stderr_tail.is_empty() {
                    error.push_str(":\n");
                    error.push_str(&stderr_tail);
                }
                Err(error)
            }
            // The configured timeout, not what was left of the stored
            // deadline when the process started (extraction counts too).
            StepOutcome::TimedOut { .. } => Err(format!(
                "{name} step timed out after {}",
                humantime::format_duration(step.timeout)
            )),
            StepOutcome::Cancelled => Err(format!("{name} step cancelled")),
            StepOutcome::SpawnFailed(e) => Err(format!("{name} step could not start: {e}")),
        }
    }
}

/// The artifact file's bytes, opened without following a link and without
/// blocking on a fifo, refused unless it is a regular file of at most
/// [`ARTIFACT_BYTES`]; `None` when there is none.
fn read_artifact_file(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            return Err(std::io::Error::other("is a symlink, not a file"));
        }
        Err(e) => {
            return Err(std::io::Error::new(
                e.kind(),
                format!("cannot be read: {e}"),
            ));
        }
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(std::io::Error::other("is not a regular file"));
    }
    if meta.len() > ARTIFACT_BYTES {
        let message = format!("is over {ARTIFACT_BYTES} bytes; it names the artifact");
        return Err(std::io::Error::other(message));
    }
    let mut bytes = Vec::new();
    let read = file.take(ARTIFACT_BYTES).read_to_end(&mut bytes);
    read.map_err(|e| std::io::Error::new(e.kind(), format!("cannot be read: {e}")))?;
    Ok(Some(bytes))
}

/// Store a step's output as `log` events, in batches, within the
/// deployment's output budget, each line with its secrets masked. Stops
/// storing (but keeps draining) once the deployment ended, so a dying step
/// never holds up its pipes.
async fn pump_logs(
    sink: LogSink,
    step: &'static str,
    mut receiver: mpsc::Receiver<OutputLine>,
    cap: Arc<Mutex<OutputCap>>,
    redactor: Arc<Redactor>,
) {
    let mut ended = false;
    let mut batch = Vec::with_capacity(LOG_BATCH);
    while let Some(first) = receiver.recv().await {
        batch.clear();
        let mut next = Some(first);
        while let Some(line) = next {
            let shown = redactor.redact(&line.line).into_owned();
            let admitted = cap.lock().expect("output cap lock").admit(shown.len());
            if admitted {
                batch.push(EventData::Log(LogLine {
                    step: step.to_string(),
                    stream: line.stream.as_str().to_string(),
                    line: shown,
                }));
            }
            next = if batch.len() < LOG_BATCH {
                receiver.try_recv().ok()
            } else {
                None
            };
        }
        if ended || batch.is_empty() {
            continue;
        }
        let id = sink.id;
        match sink.hub.append(id, &batch, Some(&sink.fence)).await {
            Ok(_) => {}
            Err(StoreError::Ended(_)) | Err(StoreError::NotFound(_)) => ended = true,
            // Another instance owns the target now: this step must not go on.
            Err(StoreError::Fenced { .. }) => {
                ended = true;
                sink.stop.cancel();
            }
            Err(e) => tracing::warn!(deployment = %id, error = %e, "could not store step output"),
        }
    }
}
