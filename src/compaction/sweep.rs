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
//! than it; `<id>` is a deployment id exactly as deployd writes it (lower
//! case, hyphenated), so nothing else is ever taken for one; the areas
//! (`work`, `releases`, `sources`) may be symlinks to another disk, but a
//! symlink below them is not deployd's and is skipped with a warning;
//! nothing outside the areas is touched
//! ([`remove_inside`](super::remove::remove_inside)). A source is set
//! aside before its verdict is taken, so a client that checks for it or a
//! deploy that names it meanwhile finds it restored, or missing (and uploads
//! it again), never judged on stale facts.

use super::cleanup::remove;
use super::remove::removable;
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
/// store is asked; paths are under the areas' canonical roots.
#[derive(Debug, Default)]
struct Listing {
    workspaces: Vec<(Uuid, PathBuf)>,
    /// (deployment, path, a `.current.<id>` link rather than a release)
    releases: Vec<(Uuid, PathBuf, bool)>,
    /// Sources older than the grace period: (digest, path).
    stale_sources: Vec<(String, PathBuf)>,
    /// Symlinks below an area, which the sweep does not follow.
    skipped: Vec<PathBuf>,
}

use crate::source::ASIDE_PREFIX;

/// Sweep the data dir once: list, ask the store, remove (unless `dry_run`)
/// and, when removing, measure each area for `/metrics`. Returns what was
/// (or would be) removed. A dry run judges sources as if the deployments in
/// `deleting` (those the same compaction deletes first) were gone. Errors
/// only when the store cannot answer; then nothing more is removed.
pub async fn sweep(
    daemon: &Daemon,
    dry_run: bool,
    deleting: &[Uuid],
) -> Result<Vec<Removal>, StoreError> {
    let data_dir = daemon.data_dir.clone();
    let ttl = daemon.config.limits.source_ttl;
    let listing = tokio::task::spawn_blocking(move || list(&data_dir, ttl))
        .await
        .map_err(|e| StoreError::Backend(format!("listing the data dir: {e}")))?;
    for path in &listing.skipped {
        tracing::warn!(path = %path.display(),
            "not swept: a symlink inside the data dir's work, releases or sources is not deployd's");
    }
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
    let mut artifacts = store
        .artifacts_under(&releases_root.display().to_string())
        .await?;
    if let Ok(canonical) = releases_root.canonicalize()
        && canonical != releases_root
    {
        artifacts.extend(
            store
                .artifacts_under(&canonical.display().to_string())
                .await?,
        );
    }

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
    let data_dir = daemon.data_dir.clone();
    let metrics = std::sync::Arc::clone(&daemon.metrics);
    let mut removals =
        tokio::task::spawn_blocking(move || settle(&data_dir, doomed, dry_run, &metrics))
            .await
            .map_err(|e| StoreError::Backend(format!("sweeping the data dir: {e}")))?;
    let sources = sources(daemon, listing.stale_sources, dry_run, deleting).await;
    if !dry_run {
        let (data_dir, metrics) = (daemon.data_dir.clone(), daemon.metrics.clone());
        let _ = tokio::task::spawn_blocking(move || measure(&data_dir, &metrics)).await;
        for removal in removals
            .iter()
            .chain(sources.as_deref().unwrap_or_default())
        {
            tracing::info!(area = removal.area, path = %removal.path, bytes = removal.bytes,
                why = %removal.why, "swept from the data dir");
        }
    }
    removals.extend(sources?);
    Ok(removals)
}

/// Remove (unless `dry_run`) each doomed workspace or release entry; what
/// was or would be removed.
fn settle(
    data_dir: &DataDir,
    doomed: Vec<(Area, PathBuf, String)>,
    dry_run: bool,
    metrics: &Metrics,
) -> Vec<Removal> {
    let mut removals = Vec::new();
    for (area, path, why) in doomed {
        let root = match area {
            Area::Work => data_dir.work(),
            Area::Releases | Area::Sources => data_dir.releases(),
        };
        let bytes = disk_usage(&path);
        let is_link = is_symlink(&path);
        let gone = match (is_link, dry_run) {
            // Only a `.current.<id>` link is listed as a symlink (`list`
            // skips any other), in a cluster directory the listing found
            // real: the link itself goes, never what it points at.
            (true, true) => true,
            (true, false) => fs::remove_file(&path).is_ok_and(|()| {
                metrics.data_dir_removed(area);
                true
            }),
            (false, true) => removable(&root, &path).is_ok_and(|r| r.is_some()),
            (false, false) => remove(&root, &path, area, metrics),
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

/// The stale sources no deployment names, removed unless `dry_run`. Each
/// is set aside (renamed) before the store is asked, and put back if a
/// deployment names it or a client touched it meanwhile.
async fn sources(
    daemon: &Daemon,
    stale: Vec<(String, PathBuf)>,
    dry_run: bool,
    deleting: &[Uuid],
) -> Result<Vec<Removal>, StoreError> {
    let ttl = daemon.config.limits.source_ttl;
    let why = move |digest: &str| {
        format!(
            "source {digest}: no deployment names it, unused for over {}",
            humantime::format_duration(ttl)
        )
    };
    let removal = move |digest: &str, path: &Path, bytes: u64| Removal {
        area: Area::Sources.as_str(),
        path: path.display().to_string(),
        bytes,
        why: why(digest),
    };
    let store = &daemon.store;
    let digests: Vec<String> = stale.iter().map(|(d, _)| d.clone()).collect();
    let named: HashSet<String> = (store.sources_in_use(&digests, deleting).await?)
        .into_iter()
        .collect();
    let unnamed: Vec<(String, PathBuf)> = (stale.into_iter())
        .filter(|(digest, _)| !named.contains(digest))
        .collect();
    if dry_run {
        return Ok((unnamed.iter())
            .map(|(digest, path)| removal(digest, path, disk_usage(path)))
            .collect());
    }
    let aside = tokio::task::spawn_blocking(move || set_aside(unnamed, ttl))
        .await
        .map_err(|e| StoreError::Backend(format!("setting sources aside: {e}")))?;
    let digests: Vec<String> = aside.iter().map(|a| a.digest.clone()).collect();
    let verdict = store.sources_in_use(&digests, &[]).await;
    let named: HashSet<String> = match &verdict {
        Ok(named) => named.iter().cloned().collect(),
        // Nothing may go on facts the store could not give: all go back.
        Err(_) => digests.iter().cloned().collect(),
    };
    let sources_dir = daemon.data_dir.sources();
    let metrics = std::sync::Arc::clone(&daemon.metrics);
    let removed = tokio::task::spawn_blocking(move || {
        let mut removed = Vec::new();
        for a in aside {
            if named.contains(&a.digest) || is_fresh(&a.aside, ttl) {
                a.put_back();
            } else if remove(&sources_dir, &a.aside, Area::Sources, &metrics) {
                removed.push(removal(&a.digest, &a.path, a.bytes));
            }
        }
        removed
    })
    .await
    .map_err(|e| StoreError::Backend(format!("removing sources: {e}")))?;
    verdict.map(|_| removed)
}

/// A stale source renamed to `.sweep-<digest>.tar` while its verdict is taken.
struct Aside {
    digest: String,
    path: PathBuf,
    aside: PathBuf,
    bytes: u64,
}

impl Aside {
    /// Back under its name, unless an upload of the same bytes put it there
    /// meanwhile.
    fn put_back(self) {
        if self.path.exists() {
            let _ = fs::remove_file(&self.aside);
        } else if let Err(e) = fs::rename(&self.aside, &self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not put a source back");
        }
    }
}

/// Rename each source still stale out of its name; the ones renamed.
fn set_aside(stale: Vec<(String, PathBuf)>, ttl: Duration) -> Vec<Aside> {
    let mut aside = Vec::new();
    for (digest, path) in stale {
        if is_fresh(&path, ttl) {
            continue; // checked for, or sent again, since the listing
        }
        let renamed = path.with_file_name(format!("{ASIDE_PREFIX}{digest}.tar"));
        let bytes = disk_usage(&path);
        if fs::rename(&path, &renamed).is_ok() {
            aside.push(Aside {
                digest,
                path,
                aside: renamed,
                bytes,
            });
        }
    }
    aside
}

/// Whether a source was uploaded, sent again or checked for within `ttl`.
fn is_fresh(path: &Path, ttl: Duration) -> bool {
    fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_none_or(|age| age <= ttl)
}

/// A deployment id exactly as deployd writes one (lower case, hyphenated):
/// nothing else is taken for one.
fn deployment_id(name: &str) -> Option<Uuid> {
    let id = name.parse::<Uuid>().ok()?;
    (id.hyphenated().to_string() == name).then_some(id)
}

/// What the data dir holds that a record might own. Unreadable directories
/// are skipped: a sweep never fails for what it cannot see.
fn list(data_dir: &DataDir, ttl: Duration) -> Listing {
    let mut listing = Listing::default();
    let canonical = |dir: PathBuf| dir.canonicalize().ok();
    if let Some(work) = canonical(data_dir.work()) {
        for (name, path) in entries(&work) {
            if let Some(id) = deployment_id(&name) {
                match is_symlink(&path) {
                    false => listing.workspaces.push((id, path)),
                    true => listing.skipped.push(path),
                }
            }
        }
    }
    if let Some(releases) = canonical(data_dir.releases()) {
        for (_, app) in real_dirs(&releases, &mut listing.skipped) {
            for (_, cluster) in real_dirs(&app, &mut listing.skipped) {
                // deployd makes releases as directories (or files) and
                // `.current.<id>` as links: anything else under those names
                // is not its own.
                for (name, path) in entries(&cluster) {
                    let link = is_symlink(&path);
                    if let Some(id) = deployment_id(&name) {
                        match link {
                            false => listing.releases.push((id, path, false)),
                            true => listing.skipped.push(path),
                        }
                    } else if let Some(id) = name.strip_prefix(".current.").and_then(deployment_id)
                        && link
                    {
                        listing.releases.push((id, path, true));
                    }
                }
            }
        }
    }
    if let Some(sources) = canonical(data_dir.sources()) {
        for (name, path) in entries(&sources) {
            let Some(digest) = name.strip_suffix(".tar") else {
                continue;
            };
            if digest.parse::<SourceDigest>().is_ok() && !is_fresh(&path, ttl) {
                listing.stale_sources.push((digest.to_string(), path));
            }
        }
    }
    listing
}

fn is_symlink(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

/// The entries of `dir` that are directories, not symlinks to one; the
/// symlinks are added to `skipped`.
fn real_dirs(dir: &Path, skipped: &mut Vec<PathBuf>) -> Vec<(String, PathBuf)> {
    let mut dirs = Vec::new();
    for (name, path) in entries(dir) {
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => skipped.push(path),
            Ok(meta) if meta.is_dir() => dirs.push((name, path)),
            _ => {}
        }
    }
    dirs
}

/// Bytes and entries of each area, for `/metrics`.
fn measure(data_dir: &DataDir, metrics: &Metrics) {
    let areas = [
        (Area::Sources, data_dir.sources()),
        (Area::Work, data_dir.work()),
        (Area::Releases, data_dir.releases()),
    ];
    for (area, dir) in areas {
        let Ok(dir) = dir.canonicalize() else {
            metrics.data_dir_measured(area, 0, 0);
            continue;
        };
        let (mut bytes, mut count) = (0, 0);
        match area {
            Area::Releases => {
                for (_, app) in real_dirs(&dir, &mut Vec::new()) {
                    for (_, cluster) in real_dirs(&app, &mut Vec::new()) {
                        for (name, path) in entries(&cluster) {
                            bytes += disk_usage(&path);
                            count += u64::from(deployment_id(&name).is_some());
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

#[cfg(test)]
mod tests {
    use super::deployment_id;

    #[test]
    fn only_ids_as_deployd_writes_them_are_deployments() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(deployment_id(&id.to_string()), Some(id));
        for other in [
            "d41d8cd98f00b204e9800998ecf8427e".to_string(),
            id.to_string().to_uppercase(),
            format!("{{{id}}}"),
            format!("urn:uuid:{id}"),
            id.simple().to_string(),
            "not-a-uuid".to_string(),
        ] {
            assert_eq!(deployment_id(&other), None, "{other}");
        }
    }
}
