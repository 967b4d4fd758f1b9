//! Removing what deployd made under the data dir, and nothing else.
//!
//! What must stay true: only a path strictly inside the area it belongs to
//! (`releases`, `work`), named exactly as it is on disk (no symlink, no `..`),
//! is ever removed, and never the release a target's `current` link points
//! at: an artifact is text a build step wrote, so it is checked, not trusted.

use std::io;
use std::path::{Component, Path, PathBuf};

/// Remove `path` if it is safely ours: strictly inside `area` (a directory
/// of the data dir, which may itself be a symlink to another disk), named as
/// it is on disk with no symlink below the area, not a symlink itself and
/// not what any `current` link of its app points at. Whether anything was
/// removed; a path already gone is not an error.
pub fn remove_inside(area: &Path, path: &Path) -> io::Result<bool> {
    let Some(target) = removable(area, path)? else {
        return Ok(false);
    };
    if std::fs::symlink_metadata(&target)?.is_dir() {
        std::fs::remove_dir_all(&target)?;
    } else {
        std::fs::remove_file(&target)?;
    }
    Ok(true)
}

/// The canonical path [`remove_inside`] would remove for `path`, or `None`
/// when it would refuse (or there is nothing): what a dry run reports.
pub fn removable(area: &Path, path: &Path) -> io::Result<Option<PathBuf>> {
    let canonical_area = match area.canonicalize() {
        Ok(dir) => dir,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // Spelled under the area as given, or under its canonical spelling.
    let Ok(rest) = path
        .strip_prefix(area)
        .or_else(|_| path.strip_prefix(&canonical_area))
    else {
        return Ok(None);
    };
    let plain = rest.components().next().is_some()
        && rest.components().all(|c| matches!(c, Component::Normal(_)));
    if !plain {
        return Ok(None);
    }
    let target = canonical_area.join(rest);
    let meta = match std::fs::symlink_metadata(&target) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // A symlinked parent would make the text name a place outside the area.
    if meta.file_type().is_symlink() || target.canonicalize()? != target {
        return Ok(None);
    }
    if is_current(&target) {
        return Ok(None);
    }
    Ok(Some(target))
}

/// Whether a `current` link of the release's app, in any of its clusters
/// (`releases/<app>/*/current`), points at `release`, spelled absolute or
/// relative.
fn is_current(release: &Path) -> bool {
    let Some(app) = release.parent().and_then(Path::parent) else {
        return false;
    };
    let Ok(clusters) = std::fs::read_dir(app) else {
        return false;
    };
    clusters.filter_map(Result::ok).any(|cluster| {
        let dir = cluster.path();
        std::fs::read_link(dir.join("current"))
            .ok()
            .and_then(|to| dir.join(to).canonicalize().ok())
            .is_some_and(|to| to == release)
    })
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
        assert!(remove_inside(&scene.releases, &old).unwrap());
        assert!(!old.exists());
        // Gone already: nothing to do, not an error.
        assert!(!remove_inside(&scene.releases, &old).unwrap());
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
                !remove_inside(&scene.releases, &artifact).unwrap(),
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
        assert!(!remove_inside(&scene.releases, &link).unwrap());
        let through = link.join("x");
        std::fs::create_dir_all(&through).expect("mkdir through the link");
        assert!(!remove_inside(&scene.releases, &through).unwrap());
        assert!(scene.outside.join("x").exists() && link.exists());
    }

    #[test]
    fn never_removes_what_current_points_at() {
        let scene = scene();
        let active = release(&scene, "active");
        std::os::unix::fs::symlink(&active, scene.releases.join("web/local/current"))
            .expect("symlink");
        assert!(!remove_inside(&scene.releases, &active).unwrap());
        assert!(active.join("index.html").exists());
    }

    #[test]
    fn a_relative_current_link_protects_its_release() {
        let scene = scene();
        let active = release(&scene, "active");
        std::os::unix::fs::symlink("active", scene.releases.join("web/local/current"))
            .expect("symlink");
        assert!(!remove_inside(&scene.releases, &active).unwrap());
        // So does another cluster's `current` of the same app.
        let other = release(&scene, "other");
        std::fs::create_dir_all(scene.releases.join("web/prod")).unwrap();
        std::os::unix::fs::symlink(&other, scene.releases.join("web/prod/current")).unwrap();
        assert!(!remove_inside(&scene.releases, &other).unwrap());
        assert!(active.exists() && other.exists());
    }

    #[test]
    fn an_area_that_is_a_symlink_to_another_disk_is_still_ours() {
        let scene = scene();
        let disk = scene.outside.join("fast-disk");
        std::fs::create_dir_all(disk.join("ws/src")).unwrap();
        let work = scene.releases.with_file_name("work");
        std::os::unix::fs::symlink(&disk, &work).unwrap();
        assert!(remove_inside(&work, &work.join("ws")).unwrap());
        assert!(!disk.join("ws").exists() && disk.exists());
        // But nothing above the area, and not the area itself.
        assert!(!remove_inside(&work, &work).unwrap());
        assert!(!remove_inside(&work, &scene.outside).unwrap());
    }
}
