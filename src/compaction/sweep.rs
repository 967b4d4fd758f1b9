//! The sweep: every entry of the data dir named by a deployment or a source
//! belongs to a record, and an entry whose record no longer needs it goes.
//! It runs at start-up (the leftovers of a crash) and after every
//! compaction; it also measures each area for `/metrics`.
//!
//! What is removed, and why:
//! - `work/<id>`: the deployment has ended (or is gone);
//! - `releases/<app>/<cluster>/<id>`: the deployment has ended (or is gone)
//!   and no version it built, nor any version's artifact, is there;
//! - `releases/<app>/<cluster>/.current.<id>`: a `local` activation's
//!   half-made link whose deployment has ended;
//! - `sources/<sha256>.tar`: no deployment names it, and it was uploaded,
//!   sent again or checked for more than `limits.source_ttl` ago.
//!
//! What must stay true: entries are listed before the store is asked about
//! them, so an entry made after the listing is never judged on facts older
//! than it; entries not named as above (an operator's files, `current`,
//! upload temp files) are left alone; nothing outside the data dir is
//! touched ([`remove_inside`](super::remove::remove_inside)).

use super::cleanup::remove;
use crate::daemon::Daemon;
use crate::layout::DataDir;
use crate::metrics::{Area, Metrics};
use crate::names::SourceDigest;
use crate::store::StoreError;
use serde::Serialize;
use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use uuid::Uuid;

/// An entry the sweep removes (or, in a dry run, would).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Removal {
    pub area: &'static str,
    pub path: String,
    /// Bytes on disk, as measured before removal.
    pub bytes: u64,
    pub why: String,
}

/// What the data dir holds that a record might own, listed before the
/// store is asked.
#[derive(Debug, Default)]
struct Listing {
    workspaces: Vec<(Uuid, PathBuf)>,
    /// (deployment, path, a `.current.<id>` link rather than a release)
    releases: Vec<(Uuid, PathBuf, bool)>,
    /// Sources older than the grace period: (digest, path).
    stale_sources: Vec<(String, PathBuf)>,
}

/// Sweep the data dir once: list, ask the store, remove (unless `dry_run`)
/// and, when removing, measure each area for `/metrics`. Returns what was
/// (or would be) removed. Errors only when the store cannot answer; then
/// nothing is removed.
pub async fn sweep(daemon: &Daemon, dry_run: bool) -> Result<Vec<Removal>, StoreError> {
    let data_dir = daemon.data_dir.clone();
    let ttl = daemon.config.limits.source_ttl;
    let listing = tokio::task::spawn_blocking(move || list(&data_dir, ttl))
        .await
        .map_err(|e| StoreError::Backend(format!("listing the data dir: {e}")))?;
    let store = &daemon.store;
    let ids: Vec<Uuid> = (listing.workspaces.iter().map(|(id, _)| *id))
        .chain(listing.releases.iter().map(|(id, _, _)| *id))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let unended: HashSet<Uuid> = store.unended(&ids).await?.into_iter().collect();
    let release_ids: Vec<Uuid> = listing.releases.iter().map(|(id, _, _)| *id).collect();
    let builders: HashSet<Uuid> = store.builders(&release_ids).await?.into_iter().collect();
    let releases_root = daemon.data_dir.releases();
    let artifacts = store
        .artifacts_under(&releases_root.display().to_string())
        .await?;
    let digests: Vec<String> = listing
        .stale_sources
        .iter()
        .map(|(d, _)| d.clone())
        .collect();
    let named: HashSet<String> = store.sources_in_use(&digests).await?.into_iter().collect();

    let mut doomed: Vec<(Area, PathBuf, String)> = Vec::new();
    for (id, path) in listing.workspaces {
        if !unended.contains(&id) {
            let why = format!("workspace of deployment {id}, which has ended");
            doomed.push((Area::Work, path, why));
        }
    }
    for (id, path, link) in listing.releases {
        if unended.contains(&id) {
            continue;
        }
        if link {
            let why = format!("half-made `current` link of deployment {id}, which has ended");
            doomed.push((Area::Releases, path, why));
            continue;
        }
        let holds_artifact = artifacts
            .iter()
            .any(|a| Path::new(a).starts_with(&path) || path.starts_with(a));
        if !builders.contains(&id) && !holds_artifact {
            let why = format!(
                "release directory of deployment {id}, which has ended and has no version kept"
            );
            doomed.push((Area::Releases, path, why));
        }
    }
    for (digest, path) in listing.stale_sources {
        if !named.contains(&digest) {
            let why = format!(
                "source {digest}: no deployment names it, unused for over {}",
                humantime::format_duration(ttl)
            );
            doomed.push((Area::Sources, path, why));
        }
    }

    let data_dir = daemon.data_dir.clone();
    let metrics = std::sync::Arc::clone(&daemon.metrics);
    let removals = tokio::task::spawn_blocking(move || {
        let removals = settle(&data_dir, doomed, dry_run, &metrics);
        if !dry_run {
            measure(&data_dir, &metrics);
        }
        removals
    })
    .await
    .map_err(|e| StoreError::Backend(format!("sweeping the data dir: {e}")))?;
    for removal in removals.iter().filter(|_| !dry_run) {
        tracing::info!(area = removal.area, path = %removal.path, bytes = removal.bytes,
            why = %removal.why, "swept from the data dir");
    }
    Ok(removals)
}

/// Remove (unless `dry_run`) each doomed entry; what was or would be removed.
fn settle(
    data_dir: &DataDir,
    doomed: Vec<(Area, PathBuf, String)>,
    dry_run: bool,
    metrics: &Metrics,
) -> Vec<Removal> {
    let mut removals = Vec::new();
    for (area, path, why) in doomed {
        let bytes = disk_usage(&path);
        let root = match area {
            Area::Work => data_dir.work(),
            Area::Releases => data_dir.releases(),
            Area::Sources => data_dir.sources(),
        };
        let gone = if dry_run {
            true
        } else if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            // Only a `.current.<id>` link is listed as a symlink: remove the
            // link itself, never what it points at.
            fs::remove_file(&path).is_ok_and(|()| {
                metrics.data_dir_removed(area);
                true
            })
        } else {
            remove(&root, &path, area, metrics)
        };
        if gone {
            removals.push(Removal {
                area: area.as_str(),
                path: path.display().to_string(),
                bytes,
                why,
            });
        }
    }
    removals
}

/// What the data dir holds that a record might own. Unreadable directories
/// are skipped: a sweep never fails for what it cannot see.
fn list(data_dir: &DataDir, ttl: Duration) -> Listing {
    let mut listing = Listing::default();
    for (name, path) in entries(&data_dir.work()) {
        if let Ok(id) = name.parse::<Uuid>() {
            listing.workspaces.push((id, path));
        }
    }
    for (_, app) in entries(&data_dir.releases()) {
        for (_, cluster) in entries(&app) {
            for (name, path) in entries(&cluster) {
                if let Ok(id) = name.parse::<Uuid>() {
                    listing.releases.push((id, path, false));
                } else if let Some(id) = name
                    .strip_prefix(".current.")
                    .and_then(|id| id.parse::<Uuid>().ok())
                {
                    listing.releases.push((id, path, true));
                }
            }
        }
    }
    let now = SystemTime::now();
    for (name, path) in entries(&data_dir.sources()) {
        let Some(digest) = name.strip_suffix(".tar") else {
            continue;
        };
        if digest.parse::<SourceDigest>().is_err() {
            continue;
        }
        let age = fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok());
        if age.is_some_and(|age| age > ttl) {
            listing.stale_sources.push((digest.to_string(), path));
        }
    }
    listing
}

/// Bytes and entries of each area, for `/metrics`.
fn measure(data_dir: &DataDir, metrics: &Metrics) {
    let areas = [
        (Area::Sources, data_dir.sources()),
        (Area::Work, data_dir.work()),
        (Area::Releases, data_dir.releases()),
    ];
    for (area, dir) in areas {
        let (mut bytes, mut count) = (0, 0);
        match area {
            Area::Releases => {
                for (_, app) in entries(&dir) {
                    for (_, cluster) in entries(&app) {
                        for (name, path) in entries(&cluster) {
                            bytes += disk_usage(&path);
                            count += u64::from(name.parse::<Uuid>().is_ok());
                        }
                    }
                }
            }
            Area::Sources | Area::Work => {
                for (_, path) in entries(&dir) {
                    bytes += disk_usage(&path);
                    count += 1;
                }
            }
        }
        metrics.data_dir_measured(area, bytes, count);
    }
}

/// The entries of `dir` as (name, path); none when it cannot be read.
fn entries(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(read) = fs::read_dir(dir) else {
        return Vec::new();
    };
    read.filter_map(Result::ok)
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .collect()
}

/// Bytes under `path` (files' lengths; symlinks are not followed).
fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return meta.len();
    }
    entries(path).iter().map(|(_, p)| disk_usage(p)).sum()
}
