//! What goes when a deployment ends or a version is deleted: the
//! deployment's workspace, and what deployd owes the cluster — the release
//! directory the build made and the cluster's own `cleanup` step, for what a
//! build left outside the data dir.
//!
//! What must stay true: an owed cleanup is recorded by the store in the
//! transaction that ends the attempt or deletes the version
//! ([`Store::owed_cleanups`](crate::store::Store::owed_cleanups)) and is
//! forgotten only once it is done, so a crash only delays it (the next
//! compaction, or the start-up sweep, settles it); only paths the data dir's
//! layout names are removed (through [`remove_inside`]); a cleanup step's
//! failure is logged and counted, never recorded on a deployment, and the
//! cleanup stays owed; a cleanup step runs as its cluster's `user`, like the
//! cluster's other steps, and what it prints is logged with secrets masked.

use super::remove::remove_inside;
use crate::config::{Config, StepConfig};
use crate::daemon::Daemon;
use crate::layout::DataDir;
use crate::machine::{Kind, State};
use crate::metrics::{Area, Metrics};
use crate::model::Deployment;
use crate::pipeline::{OutputLine, Phase, StepCommand, StepOutcome, run_step};
use crate::redact::Redactor;
use crate::store::{DynStore, OwedCleanup, StoreError};
use std::path::Path;
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Owed cleanups one settling pass takes at most.
const SETTLE_BATCH: u32 = 1000;

/// What settling needs of the daemon, owned, so it runs in a spawned task.
#[derive(Clone)]
struct Janitor {
    store: DynStore,
    config: Arc<Config>,
    data_dir: DataDir,
    metrics: Arc<Metrics>,
}

impl Janitor {
    fn of(daemon: &Daemon) -> Janitor {
        Janitor {
            store: Arc::clone(&daemon.store),
            config: Arc::clone(&daemon.config),
            data_dir: daemon.data_dir.clone(),
            metrics: Arc::clone(&daemon.metrics),
        }
    }
}

/// A deployment just ended, from state `from`: its workspace goes, in the
/// background on the daemon's task tracker, and when it was a deploy that
/// ended while building or pushing (so it made no version), the cleanup the
/// store recorded for it in the same transaction is settled right away.
pub fn ended(daemon: &Daemon, d: &Deployment, from: State) {
    debug_assert!(d.state.is_terminal(), "{}", d.state);
    let janitor = Janitor::of(daemon);
    let workspace = janitor.data_dir.workspace(d.id);
    let building = matches!(from, State::Building | State::Pushing);
    let owed = (d.kind == Kind::Deploy && d.version.is_none() && building).then(|| OwedCleanup {
        id: d.id,
        app: d.app.clone(),
        cluster: d.cluster.clone(),
        version: None,
        artifact: None,
    });
    daemon.tasks.spawn(async move {
        let (work, metrics) = (janitor.data_dir.work(), Arc::clone(&janitor.metrics));
        let removing = tokio::task::spawn_blocking(move || {
            remove(&work, &workspace, Area::Work, &metrics);
        });
        let _ = removing.await;
        if let Some(owed) = owed {
            settle(&janitor, &owed).await;
        }
    });
}

/// Settle the cleanups owed (oldest first, one pass of at most
/// [`SETTLE_BATCH`]); how many were done. Those whose cleanup step fails
/// stay owed for the next pass.
pub async fn settle_owed(daemon: &Daemon) -> Result<usize, StoreError> {
    let janitor = Janitor::of(daemon);
    let owed = janitor.store.owed_cleanups(SETTLE_BATCH).await?;
    let mut done = 0;
    for cleanup in &owed {
        done += usize::from(settle(&janitor, cleanup).await);
    }
    Ok(done)
}

/// Remove the release directory the build of `owed.id` made,
/// `releases/<app>/<cluster>/<id>` (the layout's name for it, never a path
/// taken from an artifact's text), unless a kept version's artifact is in
/// it; then run the cluster's cleanup step, if it declares one. Whether the
/// cleanup is done (and forgotten by the store).
async fn settle(janitor: &Janitor, owed: &OwedCleanup) -> bool {
    let dir = (janitor.data_dir).release(&owed.app, &owed.cluster, owed.id);
    let kept = match janitor
        .store
        .artifacts_under(&dir.display().to_string())
        .await
    {
        Ok(artifacts) => !artifacts.is_empty(),
        Err(e) => {
            tracing::warn!(error = %e, "could not check a release for kept versions; cleanup stays owed");
            return false;
        }
    };
    let removed = !kept && {
        let (releases, metrics) = (janitor.data_dir.releases(), Arc::clone(&janitor.metrics));
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || remove(&releases, &dir, Area::Releases, &metrics))
            .await
            .unwrap_or(false)
    };
    let what = match &owed.version {
        Some(version) => format!("version {version} of {}", owed.app),
        None => format!("deployment {} of {}/{}", owed.id, owed.app, owed.cluster),
    };
    if owed.version.is_some() {
        tracing::info!(%what, artifact = owed.artifact.as_deref().unwrap_or(""),
            release_removed = removed, "compaction deleted a version");
    }
    let step = (janitor.config.clusters.get(&owed.cluster)).and_then(|c| c.cleanup.clone());
    let done = match step {
        None => true,
        Some(step) => {
            let mut env = vec![
                ("DEPLOY_ID", owed.id.to_string()),
                ("DEPLOY_RELEASE_DIR", dir.display().to_string()),
            ];
            match &owed.version {
                Some(version) => {
                    env.push(("DEPLOY_CLEANUP", "version".to_string()));
                    env.push(("DEPLOY_VERSION", version.clone()));
                    env.push(("DEPLOY_ARTIFACT", owed.artifact.clone().unwrap_or_default()));
                }
                None => env.push(("DEPLOY_CLEANUP", "attempt".to_string())),
            }
            run(janitor, owed, step, env, &what).await
        }
    };
    if !done {
        return false;
    }
    match janitor.store.cleaned(owed.id).await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(%what, error = %e, "cleanup done but still recorded as owed");
            false
        }
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

/// Run a cleanup step to its end, in the data dir, as the cluster's user,
/// with the cluster's env, `DEPLOY_APP`, `DEPLOY_CLUSTER`, `DEPLOY_DATA_DIR`
/// and `extra`; its output goes to the log, secrets masked. Whether it
/// succeeded; a failure is logged and counted.
async fn run(
    janitor: &Janitor,
    owed: &OwedCleanup,
    step: StepConfig,
    extra: Vec<(&str, String)>,
    what: &str,
) -> bool {
    let (app, cluster) = (owed.app.as_str(), owed.cluster.as_str());
    let root = janitor.data_dir.root();
    let config = janitor.config.clusters.get(cluster);
    let mut env: Vec<(String, String)> = config.map(|c| c.env_vars()).unwrap_or_default();
    let user = config.and_then(|c| c.user.clone());
    if let Some(user) = &user
        && let Err(e) = janitor.data_dir.open_to(user, app, cluster)
    {
        janitor.metrics.cleanup_failed();
        tracing::warn!(cluster, %what, %user, error = %e, "cleanup step: cannot ready the data dir");
        return false;
    }
    env.push(("DEPLOY_APP".into(), app.to_string()));
    env.push(("DEPLOY_CLUSTER".into(), cluster.to_string()));
    env.push(("DEPLOY_DATA_DIR".into(), root.display().to_string()));
    env.extend(extra.into_iter().map(|(k, v)| (k.to_string(), v)));
    let redactor = Arc::new(Redactor::of(&janitor.config));
    let command = StepCommand {
        phase: Phase::Cleanup,
        argv: step.run,
        timeout: step.timeout,
        cwd: root.to_path_buf(),
        env,
        kill_grace: janitor.config.deploy.kill_grace,
        user,
        redactor: Some(Arc::clone(&redactor)),
    };
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
        true
    } else {
        janitor.metrics.cleanup_failed();
        let outcome = format!("{outcome:?}");
        let outcome = redactor.redact(&outcome);
        tracing::warn!(cluster, %what, %outcome, "cleanup step did not succeed; it stays owed");
        false
    }
}
