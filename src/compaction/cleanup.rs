//! What goes when a deployment ends or a version is deleted: the
//! deployment's workspace, the release directory of a build that made no
//! version, a deleted version's release directory, and then the cluster's
//! own `cleanup` step, for what a build left outside the data dir.
//!
//! What must stay true: only paths the data dir's layout names are removed
//! (through [`remove_inside`]); a cleanup step's failure is logged and
//! counted, never recorded on a deployment, whose record is already final;
//! a cleanup step runs as its cluster's `user`, like the cluster's other
//! steps, and what it prints is logged with its secrets masked.

use super::remove::remove_inside;
use crate::config::{Config, StepConfig};
use crate::daemon::Daemon;
use crate::layout::DataDir;
use crate::machine::{Kind, State};
use crate::metrics::{Area, Metrics};
use crate::model::Deployment;
use crate::pipeline::{OutputLine, Phase, StepCommand, StepOutcome, run_step};
use crate::redact::Redactor;
use crate::store::DeletedVersion;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What a deployment that just ended leaves for removal, in the background
/// on the daemon's task tracker: its workspace always; when it was a
/// deploy that started and minted no version, its release directory and
/// then the cluster's cleanup step (`DEPLOY_CLEANUP=attempt`). A
/// deployment that minted a version keeps its release directory: the
/// version is deleted later, by compaction.
pub fn ended(daemon: &Daemon, d: &Deployment) {
    debug_assert!(d.state.is_terminal(), "{}", d.state);
    let data_dir = daemon.data_dir.clone();
    let workspace = data_dir.workspace(d.id);
    let built_nothing = d.kind == Kind::Deploy
        && d.version.is_none()
        && d.started_at.is_some()
        && d.state != State::Succeeded;
    let release = built_nothing.then(|| data_dir.release(&d.app, &d.cluster, d.id));
    let step = built_nothing
        .then(|| CleanupStep::of(daemon, &d.cluster))
        .flatten();
    let metrics = Arc::clone(&daemon.metrics);
    let d = d.clone();
    daemon.tasks.spawn(async move {
        let removing = {
            let (data_dir, release) = (data_dir.clone(), release.clone());
            tokio::task::spawn_blocking(move || {
                remove(&data_dir.work(), &workspace, Area::Work, &metrics);
                if let Some(release) = &release {
                    remove(&data_dir.releases(), release, Area::Releases, &metrics);
                }
            })
        };
        let _ = removing.await;
        if let (Some(step), Some(release)) = (step, release) {
            let env = vec![
                ("DEPLOY_CLEANUP", "attempt".to_string()),
                ("DEPLOY_ID", d.id.to_string()),
                ("DEPLOY_RELEASE_DIR", release.display().to_string()),
            ];
            let what = format!("deployment {} of {}/{}", d.id, d.app, d.cluster);
            step.run(&d.app, env, &what).await;
        }
    });
}

/// After compaction deleted `version`: remove its artifact if it is a
/// release directory of ours, then run the cleanup step of the cluster that
/// built it (`DEPLOY_CLEANUP=version`), if that cluster declares one.
pub async fn version_deleted(daemon: &Daemon, version: &DeletedVersion) {
    let releases = daemon.data_dir.releases();
    let artifact = version.artifact.clone();
    let metrics = Arc::clone(&daemon.metrics);
    let removed = tokio::task::spawn_blocking(move || {
        remove(&releases, Path::new(&artifact), Area::Releases, &metrics)
    })
    .await
    .unwrap_or(false);
    tracing::info!(
        app = %version.app,
        version = %version.version,
        artifact = %version.artifact,
        release_removed = removed,
        "compaction deleted a version"
    );
    let step = (version.built_on.as_deref()).and_then(|cluster| CleanupStep::of(daemon, cluster));
    if let Some(step) = step {
        let env = vec![
            ("DEPLOY_CLEANUP", "version".to_string()),
            ("DEPLOY_VERSION", version.version.clone()),
            ("DEPLOY_ARTIFACT", version.artifact.clone()),
        ];
        let what = format!("version {} of {}", version.version, version.app);
        step.run(&version.app, env, &what).await;
    }
}

/// Remove `path` from `area` if it is ours, counting it; errors are logged.
pub(super) fn remove(area: &Path, path: &Path, label: Area, metrics: &Metrics) -> bool {
    match remove_inside(area, path) {
        Ok(true) => {
            metrics.data_dir_removed(label);
            tracing::debug!(path = %path.display(), "removed");
            true
        }
        Ok(false) => false,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "could not remove");
            false
        }
    }
}

/// A cluster's cleanup step with what running it needs of the daemon,
/// owned, so it can run in a spawned task.
struct CleanupStep {
    config: Arc<Config>,
    data_dir: DataDir,
    metrics: Arc<Metrics>,
    cluster: String,
    step: StepConfig,
}

impl CleanupStep {
    /// The step `cluster` declares, if any.
    fn of(daemon: &Daemon, cluster: &str) -> Option<CleanupStep> {
        let step = daemon.config.clusters.get(cluster)?.cleanup.clone()?;
        Some(CleanupStep {
            config: Arc::clone(&daemon.config),
            data_dir: daemon.data_dir.clone(),
            metrics: Arc::clone(&daemon.metrics),
            cluster: cluster.to_string(),
            step,
        })
    }

    /// Run it to its end, in the data dir, as the cluster's user, with the
    /// cluster's env, `DEPLOY_APP`, `DEPLOY_CLUSTER`, `DEPLOY_DATA_DIR` and
    /// `extra`; its output goes to the log, its failure is logged and counted.
    async fn run(self, app: &str, extra: Vec<(&str, String)>, what: &str) {
        let cluster = self.cluster.as_str();
        let root = self.data_dir.root();
        let config = self.config.clusters.get(cluster);
        let mut env: Vec<(String, String)> = config.map(|c| c.env_vars()).unwrap_or_default();
        let user = config.and_then(|c| c.user.clone());
        if let Some(user) = &user
            && let Err(e) = self.data_dir.open_to(user, app, cluster)
        {
            self.metrics.cleanup_failed();
            tracing::warn!(cluster, %what, %user, error = %e, "cleanup step: cannot ready the data dir");
            return;
        }
        env.push(("DEPLOY_APP".into(), app.to_string()));
        env.push(("DEPLOY_CLUSTER".into(), cluster.to_string()));
        env.push(("DEPLOY_DATA_DIR".into(), root.display().to_string()));
        env.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
        let command = StepCommand {
            phase: Phase::Cleanup,
            argv: self.step.run,
            timeout: self.step.timeout,
            cwd: root.to_path_buf(),
            env,
            kill_grace: self.config.deploy.kill_grace,
            user,
        };
        let redactor = Redactor::of(&self.config);
        let (lines, mut output) = mpsc::channel::<OutputLine>(64);
        let logging = async {
            while let Some(line) = output.recv().await {
                let line = redactor.redact(&line.line);
                tracing::info!(cluster, %what, %line, "cleanup step");
            }
        };
        let cancel = CancellationToken::new();
        let (outcome, ()) = tokio::join!(run_step(command, lines, cancel), logging);
        if outcome == StepOutcome::Succeeded {
            tracing::info!(cluster, %what, "cleanup step succeeded");
        } else {
            self.metrics.cleanup_failed();
            let outcome = format!("{outcome:?}");
            let outcome = redactor.redact(&outcome);
            tracing::warn!(cluster, %what, %outcome, "cleanup step did not succeed");
        }
    }
}
