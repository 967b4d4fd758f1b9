//! Removing what deployd made under the data dir, and nothing else.
//!
//! What must stay true: only a path strictly inside the area it belongs to
//! (`releases`, `work`), named exactly as it is on disk (no symlink, no `..`),
//! is ever removed, and never the release a target's `current` link points
//! at: an artifact is text a build step wrote, so it is checked, not trusted.

use std::io;
use std::path::{Component, Path};

/// Remove `path` if it is safely ours: strictly inside `area` (a directory
/// of the data dir, canonical), named as it is on disk, not a symlink and not
/// what a `current` link beside it points at. Whether anything was removed;
/// a path already gone is not an error.
pub fn remove_inside(area: &Path, path: &Path) -> io::Result<bool> {
    let Ok(area) = area.canonicalize() else {
        return Ok(false); // no such area: nothing of ours to remove
    };
    let plain = path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
    if !plain || !path.starts_with(&area) || path == area {
        return Ok(false);
    }
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    // A symlinked parent would make the text name a place outside the area.
    if meta.file_type().is_symlink() || path.canonicalize()? != path {
        return Ok(false);
    }
    let current = path.parent().map(|dir| dir.join("current"));
    if current
        .and_then(|link| std::fs::read_link(link).ok())
        .as_deref()
        == Some(path)
    {
        return Ok(false);
    }
    if meta.is_dir() {
        std::fs::remove_dir_all(path)?;
    } else {
        std::fs::remove_file(path)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::DataDir;
    use std::path::PathBuf;

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
}
