//! Retention in the background: every `deploy.compact_every`, delete what
//! [`Store::compact`](crate::store::Store::compact) no longer keeps, in small
//! batches, then remove the release directories of the versions it deleted.
//!
//! What must stay true:
//! - the store decides what goes; this job only repeats its short steps (no
//!   long transaction, no long lock) and cleans up after them;
//! - only a path strictly inside `<data_dir>/releases`, named exactly as it is
//!   on disk (no symlink, no `..`), is ever removed, and never the one a
//!   target's `current` link points at: an artifact is text a build step
//!   wrote, so it is checked, not trusted.

use crate::daemon::Daemon;

use crate::store::{CompactionReport, Retention, StoreError};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Deployments (and versions) one store step deletes at most.
pub const BATCH: u32 = 500;

/// Compact every `every` until `stop`; the first run is `every` after start.
pub async fn run(shared: Arc<Daemon>, every: Duration, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = compact_once(&shared).await {
            tracing::warn!(error = %e, "compaction failed; will try again");
        }
    }
}

/// One full compaction: store steps until one deletes nothing, each step's
/// release directories removed before the next. Judged against the time it
/// started, so it ends even while new deployments arrive.
pub async fn compact_once(shared: &Daemon) -> Result<CompactionReport, StoreError> {
    let started = Instant::now();
    let deploy = &shared.config.deploy;
    let policy = Retention {
        keep_per_target: deploy.keep_per_target,
        min_age: chrono::Duration::from_std(deploy.keep_min_age).unwrap_or(chrono::Duration::MAX),
        now: chrono::Utc::now(),
    };
    let (data_dir, metrics) = (&shared.data_dir, &shared.metrics);
    let releases = data_dir.releases();
    let mut total = CompactionReport::default();
    let outcome = loop {
        let step = match shared.store.compact(&policy, BATCH).await {
            Ok(step) => step,
            Err(e) => break Err(e),
        };
        if step.is_empty() {
            break Ok(());
        }
        metrics.compaction_deleted(step.deployments_deleted, step.versions_deleted.len() as u64);
        let artifacts: Vec<String> = step
            .versions_deleted
            .iter()
            .map(|v| v.artifact.clone())
            .collect();
        remove_releases(releases.clone(), artifacts).await;
        total.absorb(step);
    };
    let secs = started.elapsed().as_secs_f64();
    metrics.compaction_run(outcome.is_ok(), secs);
    if !total.is_empty() {
        tracing::info!(
            deployments = total.deployments_deleted,
            versions = total.versions_deleted.len(),
            secs,
            "compaction deleted old deployments"
        );
    }
    outcome.map(|()| total)
}

/// Remove the artifacts that are release directories (or files) of ours.
/// Failures are logged, not returned: the versions are gone either way, and
/// a directory left behind costs only disk.
async fn remove_releases(releases: PathBuf, artifacts: Vec<String>) {
    let removing = tokio::task::spawn_blocking(move || {
        for artifact in artifacts {
            match remove_release(&releases, Path::new(&artifact)) {
                Ok(true) => tracing::debug!(%artifact, "removed a release"),
                Ok(false) => {}
                Err(e) => tracing::warn!(%artifact, error = %e, "could not remove a release"),
            }
        }
    });
    if let Err(e) = removing.await {
        tracing::warn!(error = %e, "removing releases failed");
    }
}

/// Remove `artifact` if it is safely ours; whether anything was removed.
pub fn remove_release(releases: &Path, artifact: &Path) -> io::Result<bool> {
    let Ok(releases) = releases.canonicalize() else {
        return Ok(false); // no releases directory: nothing of ours to remove
    };
    let plain = artifact.is_absolute()
        && artifact
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !plain || !artifact.starts_with(&releases) || artifact == releases {
        return Ok(false);
    }
    let meta = match std::fs::symlink_metadata(artifact) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    // A symlinked parent would make the text name a place outside releases.
    if meta.file_type().is_symlink() || artifact.canonicalize()? != artifact {
        return Ok(false);
    }
    let current = artifact.parent().map(|dir| dir.join("current"));
    if current
        .and_then(|link| std::fs::read_link(link).ok())
        .as_deref()
        == Some(artifact)
    {
        return Ok(false);
    }
    if meta.is_dir() {
        std::fs::remove_dir_all(artifact)?;
    } else {
        std::fs::remove_file(artifact)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::DataDir;

    struct Scene {
        _dir: tempfile::TempDir,
        releases: PathBuf,
        outside: PathBuf,
    }

    fn scene() -> Scene {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().canonicalize().expect("canonical tempdir");
        let releases = DataDir::prepare(&root.join("data")).unwrap().releases();
        std::fs::create_dir_all(releases.join("web/local")).expect("mkdir");
        let outside = root.join("elsewhere");
        std::fs::create_dir_all(&outside).expect("mkdir");
        Scene {
            _dir: dir,
            releases,
            outside,
        }
    }

    fn release(scene: &Scene, name: &str) -> PathBuf {
        let path = scene.releases.join("web/local").join(name);
        std::fs::create_dir_all(&path).expect("mkdir release");
        std::fs::write(path.join("index.html"), "hi").expect("write");
        path
    }

    #[test]
    fn removes_an_old_release_directory() {
        let scene = scene();
        let old = release(&scene, "old");
        assert!(remove_release(&scene.releases, &old).unwrap());
        assert!(!old.exists());
        // Gone already: nothing to do, not an error.
        assert!(!remove_release(&scene.releases, &old).unwrap());
    }

    #[test]
    fn never_touches_anything_outside_releases() {
        let scene = scene();
        let cases = [
            scene.outside.clone(),
            scene.releases.clone(),
            scene.releases.join("web/local/../../../elsewhere"),
            PathBuf::from("web/local/old"),
        ];
        for artifact in cases {
            assert!(
                !remove_release(&scene.releases, &artifact).unwrap(),
                "{artifact:?}"
            );
        }
        assert!(scene.outside.exists() && scene.releases.exists());
    }

    #[test]
    fn never_follows_a_symlink() {
        let scene = scene();
        let link = scene.releases.join("web/local/link");
        std::os::unix::fs::symlink(&scene.outside, &link).expect("symlink");
        assert!(!remove_release(&scene.releases, &link).unwrap());
        let through = link.join("x");
        std::fs::create_dir_all(&through).expect("mkdir through the link");
        assert!(!remove_release(&scene.releases, &through).unwrap());
        assert!(scene.outside.join("x").exists() && link.exists());
    }

    #[test]
    fn never_removes_what_current_points_at() {
        let scene = scene();
        let active = release(&scene, "active");
        std::os::unix::fs::symlink(&active, scene.releases.join("web/local/current"))
            .expect("symlink");
        assert!(!remove_release(&scene.releases, &active).unwrap());
        assert!(active.join("index.html").exists());
    }
}
