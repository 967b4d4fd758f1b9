//! What goes when a deployment ends or a version is deleted: the
//! deployment's workspace, the release directory of a build that made no
//! version, a deleted version's release directory, and then the cluster's
//! own `cleanup` step, for what a build left outside the data dir.
//!
//! What must stay true: only paths the data dir's layout names are removed
//! (through [`remove_inside`]); a cleanup step's failure is logged and
//! counted, never recorded on a deployment, whose record is already final.

use super::remove::remove_inside;
use crate::config::{Config, StepConfig};
use crate::daemon::Daemon;
use crate::layout::DataDir;
use crate::machine::{Kind, State};
use crate::metrics::{Area, Metrics};
use crate::model::Deployment;
use crate::pipeline::{OutputLine, Phase, StepCommand, StepOutcome, run_step};
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
        .then(|| cleanup_step(&daemon.config, &d.cluster))
        .flatten();
    let metrics = Arc::clone(&daemon.metrics);
    let (config, d) = (Arc::clone(&daemon.config), d.clone());
    daemon.tasks.spawn(async move {
        let removing = {
            let data_dir = data_dir.clone();
            let metrics = Arc::clone(&metrics);
            tokio::task::spawn_blocking(move || {
                remove(&data_dir.work(), &workspace, Area::Work, &metrics);
                if let Some(release) = &release {
                    remove(&data_dir.releases(), release, Area::Releases, &metrics);
                }
            })
        };
        let _ = removing.await;
        if let Some(step) = step {
            let release = data_dir.release(&d.app, &d.cluster, d.id);
            let env = vec![
                ("DEPLOY_CLEANUP", "attempt".to_string()),
                ("DEPLOY_ID", d.id.to_string()),
                ("DEPLOY_RELEASE_DIR", release.display().to_string()),
            ];
            let what = format!("deployment {} of {}/{}", d.id, d.app, d.cluster);
            run(&config, &data_dir, &metrics, &d.app, &d.cluster, step, env, &what).await;
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
    let Some(cluster) = &version.built_on else {
        return;
    };
    let Some(step) = cleanup_step(&daemon.config, cluster) else {
        return;
    };
    let env = vec![
        ("DEPLOY_CLEANUP", "version".to_string()),
        ("DEPLOY_VERSION", version.version.clone()),
        ("DEPLOY_ARTIFACT", version.artifact.clone()),
    ];
    let what = format!("version {} of {}", version.version, version.app);
    let (config, data_dir, metrics) = (&daemon.config, &daemon.data_dir, &daemon.metrics);
    run(config, data_dir, metrics, &version.app, cluster, step, env, &what).await;
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

fn cleanup_step(config: &Config, cluster: &str) -> Option<StepConfig> {
    config.clusters.get(cluster)?.cleanup.clone()
}

/// Run a cleanup step to its end with the cluster's env, `DEPLOY_APP`,
/// `DEPLOY_CLUSTER`, `DEPLOY_DATA_DIR` and `extra`, in the data dir; its
/// output goes to the log.
#[allow(clippy::too_many_arguments)]
async fn run(
    config: &Config,
    data_dir: &DataDir,
    metrics: &Metrics,
    app: &str,
    cluster: &str,
    step: StepConfig,
    extra: Vec<(&str, String)>,
    what: &str,
) {
    let mut env: Vec<(String, String)> = config
        .clusters
        .get(cluster)
        .map(|c| c.env.clone().into_iter().collect())
        .unwrap_or_default();
    env.push(("DEPLOY_APP".into(), app.to_string()));
    env.push(("DEPLOY_CLUSTER".into(), cluster.to_string()));
    env.push(("DEPLOY_DATA_DIR".into(), data_dir.root().display().to_string()));
    env.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
    let command = StepCommand {
        phase: Phase::Cleanup,
        argv: step.run,
        timeout: step.timeout,
        cwd: data_dir.root().to_path_buf(),
        env,
        kill_grace: config.deploy.kill_grace,
    };
    let (lines, mut output) = mpsc::channel::<OutputLine>(64);
    let logging = async {
        while let Some(line) = output.recv().await {
            tracing::info!(cluster, %what, line = %line.line, "cleanup step");
        }
    };
    let (outcome, ()) = tokio::join!(run_step(command, lines, CancellationToken::new()), logging);
    if outcome == StepOutcome::Succeeded {
        tracing::info!(cluster, %what, "cleanup step succeeded");
    } else {
        metrics.cleanup_failed();
        tracing::warn!(cluster, %what, ?outcome, "cleanup step did not succeed");
    }
}
