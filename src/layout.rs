//! [`DataDir`]: where everything deployd keeps on disk lives, under one
//! `server.data_dir`.
//!
//! ```text
//! <data_dir>/
//!   deployd.db                      the embedded store (absent with PostgreSQL)
//!   sources/<sha256>.tar            uploads, content-addressed (source::SourceStore)
//!   work/<deployment>/src/          a deployment's extracted source: its steps' cwd
//!   work/<deployment>/artifact      what the build step says it built
//!   releases/<app>/<cluster>/<deployment>/
//!                                   what a deployment's build made (DEPLOY_RELEASE_DIR);
//!                                   the built-in `local` cluster's release directories
//!   releases/<app>/<cluster>/current
//!                                   the `local` cluster's active release (a symlink)
//! ```
//!
//! Every entry named by a deployment id belongs to that deployment's record
//! and goes with it: a workspace when the deployment ends, a release
//! directory when it ends without building a version (or later, with the
//! version, by compaction), a source once no deployment names it and
//! `limits.source_ttl` has passed (`compaction::sweep` finds leftovers).
//!
//! What must stay true: the root is resolved once, when the `DataDir` is
//! built, so every path handed out is absolute and canonical (compaction
//! compares artifact paths with `releases()` textually, and steps get the
//! root as `DEPLOY_DATA_DIR`); the names above are written here and nowhere
//! else.
//!
//! Steps of a cluster with a `user` get what they write, and no more
//! ([`DataDir::open_to`], [`DataDir::give_workspace`]): their workspace,
//! `releases/<app>/<cluster>`, and search permission (never read) on the
//! directories above those. `sources/` and `deployd.db` stay the daemon's
//! alone (made private by `SourceStore` and `SqliteStore`).

use crate::users::StepUser;
use std::io;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt, lchown};
use std::path::{Path, PathBuf};
use uuid::Uuid;

/// The embedded store's file name, directly under the data dir.
pub const DATABASE_FILE: &str = "deployd.db";
/// Held (a POSIX record lock) by the one daemon serving the data dir.
pub const LOCK_FILE: &str = "deployd.lock";
const SOURCES: &str = "sources";
const WORK: &str = "work";
const WORKSPACE_SOURCE: &str = "src";
const WORKSPACE_ARTIFACT: &str = "artifact";
const RELEASES: &str = "releases";

/// The data dir, canonicalized, and the places inside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    root: PathBuf,
}

impl DataDir {
    /// Create `dir` if it does not exist and resolve it once, for good.
    pub fn prepare(dir: &Path) -> io::Result<DataDir> {
        std::fs::create_dir_all(dir)?;
        Ok(DataDir {
            root: dir.canonicalize()?,
        })
    }

    /// A data dir already resolved (by [`prepare`](Self::prepare) or the
    /// caller); `root` must be absolute and canonical.
    pub fn from_canonical(root: PathBuf) -> DataDir {
        debug_assert!(root.is_absolute(), "{}", root.display());
        DataDir { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Claim the data dir for this process: one daemon per data dir (the
    /// sweep, the embedded store and the workspaces assume it). The lock is
    /// a POSIX record lock on `deployd.lock`: it goes with the process, is
    /// not inherited by the step guards it forks, and so never outlives a
    /// killed daemon. Errors: [`Claimed`] naming the holder's pid when
    /// another process has it; I/O errors otherwise.
    pub fn claim(&self) -> Result<Claim, ClaimError> {
        use std::io::{Seek, Write};
        use std::os::fd::AsRawFd;
        let path = self.root.join(LOCK_FILE);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        // SAFETY: a zeroed flock is a valid value; the fields set are its API.
        let mut lock: libc::flock = unsafe { std::mem::zeroed() };
        lock.l_type = libc::F_WRLCK as libc::c_short;
        lock.l_whence = libc::SEEK_SET as libc::c_short;
        // SAFETY: the descriptor is open for the call; `lock` lives across it.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &lock) } != 0 {
            let error = io::Error::last_os_error();
            if !matches!(error.raw_os_error(), Some(libc::EACCES | libc::EAGAIN)) {
                return Err(error.into());
            }
            // SAFETY: as above; F_GETLK fills `lock` with the holder.
            unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) };
            return Err(ClaimError::Claimed {
                dir: self.root.clone(),
                pid: (lock.l_type != libc::F_UNLCK as libc::c_short).then_some(lock.l_pid),
            });
        }
        file.set_len(0)?;
        file.rewind()?;
        writeln!(file, "{}", std::process::id())?;
        Ok(Claim { _file: file })
    }

    /// The embedded store: `<data_dir>/deployd.db`.
    pub fn database(&self) -> PathBuf {
        self.root.join(DATABASE_FILE)
    }

    /// Uploaded sources: `<data_dir>/sources`.
    pub fn sources(&self) -> PathBuf {
        self.root.join(SOURCES)
    }

    /// Every deployment's workspace: `<data_dir>/work`.
    pub fn work(&self) -> PathBuf {
        self.root.join(WORK)
    }

    /// One deployment's workspace: `<data_dir>/work/<deployment>`.
    pub fn workspace(&self, deployment: Uuid) -> PathBuf {
        self.work().join(deployment.to_string())
    }

    /// A deployment's extracted source, its steps' working directory:
    /// `<data_dir>/work/<deployment>/src`.
    pub fn workspace_source(&self, deployment: Uuid) -> PathBuf {
        self.workspace(deployment).join(WORKSPACE_SOURCE)
    }

    /// The file a build step writes its artifact reference to:
    /// `<data_dir>/work/<deployment>/artifact`.
    pub fn artifact_file(&self, deployment: Uuid) -> PathBuf {
        self.workspace(deployment).join(WORKSPACE_ARTIFACT)
    }

    /// Where builds keep releases: `<data_dir>/releases`.
    pub fn releases(&self) -> PathBuf {
        self.root.join(RELEASES)
    }

    /// The directory a deployment's build may make its release in, given
    /// to steps as `DEPLOY_RELEASE_DIR`:
    /// `<data_dir>/releases/<app>/<cluster>/<deployment>`. `app` and
    /// `cluster` are validated names, so this stays inside `releases`.
    pub fn release(&self, app: &str, cluster: &str, deployment: Uuid) -> PathBuf {
        self.releases()
            .join(app)
            .join(cluster)
            .join(deployment.to_string())
    }

    /// `dir` (one of the directories above), created again, with the data
    /// dir itself, if something removed it while the daemon ran: asking for a
    /// place to write is never an error because an operator cleaned up.
    pub fn writable(&self, dir: PathBuf) -> io::Result<PathBuf> {
        debug_assert!(dir.starts_with(&self.root), "{}", dir.display());
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Ready the data dir for a step of `app` on `cluster` run as `user`:
    /// the root, `work/`, `releases/` and `releases/<app>` searchable by
    /// everyone (`o+x`: a name must be known to be reached; nothing is
    /// listed), and `releases/<app>/<cluster>` the user's own, where builds
    /// make release directories and `local` keeps `current`. The user must
    /// be able to search the directories above the data dir; those are not
    /// deployd's to change. Cheap when already done: run before every step.
    pub fn open_to(&self, user: &StepUser, app: &str, cluster: &str) -> io::Result<()> {
        let app_releases = self.releases().join(app);
        let cluster_releases = app_releases.join(cluster);
        std::fs::create_dir_all(&cluster_releases)?;
        std::fs::create_dir_all(self.work())?;
        for dir in [&self.root, &self.work(), &self.releases(), &app_releases] {
            searchable(dir)?;
        }
        // `releases/<app>` is the daemon's, so nobody else can have put a
        // link in the cluster's place; lchown all the same.
        lchown(&cluster_releases, Some(user.uid()), Some(user.gid()))
    }

    /// Give `user` the workspace of `deployment`, every entry in it. Called
    /// right after the source is extracted and before any step ran there:
    /// only the daemon could write in it so far, so the walk meets no link
    /// a step planted (and follows none: `lchown`, never `chown`).
    pub fn give_workspace(&self, deployment: Uuid, user: &StepUser) -> io::Result<()> {
        let (uid, gid) = (Some(user.uid()), Some(user.gid()));
        let mut dirs = vec![self.workspace(deployment)];
        while let Some(dir) = dirs.pop() {
            lchown(&dir, uid, gid)?;
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                match entry.file_type()?.is_dir() {
                    true => dirs.push(entry.path()),
                    false => lchown(entry.path(), uid, gid)?,
                }
            }
        }
        Ok(())
    }
}

/// Make `dir` search-only for others: a step's user may pass through to
/// its own directories, never list what other deployments and apps have.
fn searchable(dir: &Path) -> io::Result<()> {
    let mut permissions = std::fs::metadata(dir)?.permissions();
    let mode = (permissions.mode() & !0o007) | 0o001;
    if permissions.mode() != mode {
        permissions.set_mode(mode);
        std::fs::set_permissions(dir, permissions)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_place_is_under_the_canonical_root() {
        let temp = tempfile::tempdir().expect("tempdir");
        // A relative spelling with a `..` resolves to the same canonical root.
        let spelled = temp.path().join("data").join("..").join("data");
        let data = DataDir::prepare(&spelled).expect("prepare");
        let root = temp.path().canonicalize().unwrap().join("data");
        assert_eq!(data.root(), root);
        let id = Uuid::now_v7();
        assert_eq!(data.database(), root.join("deployd.db"));
        assert_eq!(data.sources(), root.join("sources"));
        assert_eq!(data.workspace(id), root.join(format!("work/{id}")));
        assert_eq!(
            data.workspace_source(id),
            root.join(format!("work/{id}/src"))
        );
        assert_eq!(
            data.artifact_file(id),
            root.join(format!("work/{id}/artifact"))
        );
        assert_eq!(data.releases(), root.join("releases"));
        assert_eq!(
            data.release("web", "prod", id),
            root.join(format!("releases/web/prod/{id}"))
        );
        assert_eq!(DataDir::prepare(&root).unwrap(), data);
    }

    #[test]
    fn a_step_user_gets_its_directories_and_only_search_on_the_rest() {
        if crate::users::effective_uid() != 0 {
            return;
        }
        use std::os::unix::fs::MetadataExt;
        let temp = tempfile::tempdir().expect("tempdir");
        let data = DataDir::prepare(&temp.path().join("data")).expect("prepare");
        std::fs::set_permissions(data.root(), std::fs::Permissions::from_mode(0o700)).unwrap();
        let nobody: StepUser = "nobody".parse().expect("nobody exists");
        data.open_to(&nobody, "web", "prod")
            .expect("open to nobody");
        let stat = |path: PathBuf| std::fs::symlink_metadata(path).expect("stat");
        assert_eq!(stat(data.root().to_path_buf()).mode() & 0o777, 0o701);
        for dir in [data.work(), data.releases(), data.releases().join("web")] {
            let others = stat(dir.clone()).mode() & 0o007;
            assert_eq!(
                others,
                0o001,
                "{}: others may only pass through",
                dir.display()
            );
        }
        assert_eq!(stat(data.releases().join("web/prod")).uid(), 65534);
        assert_eq!(stat(data.releases().join("web")).uid(), 0);

        let id = Uuid::now_v7();
        let source = data.workspace_source(id);
        std::fs::create_dir_all(source.join("sub")).unwrap();
        std::fs::write(source.join("sub/file"), "x").unwrap();
        let outside = temp.path().join("outside");
        std::fs::write(&outside, "not the workspace's").unwrap();
        std::os::unix::fs::symlink(&outside, source.join("link")).unwrap();
        data.give_workspace(id, &nobody).expect("give");
        for path in [
            data.workspace(id),
            source.join("sub/file"),
            source.join("link"),
        ] {
            assert_eq!(stat(path.clone()).uid(), 65534, "{}", path.display());
        }
        assert_eq!(stat(outside).uid(), 0, "a link is not followed");
    }

    #[test]
    fn a_writable_directory_removed_at_run_time_comes_back() {
        let temp = tempfile::tempdir().expect("tempdir");
        let data = DataDir::prepare(&temp.path().join("data")).expect("prepare");
        let id = Uuid::now_v7();
        let workspace = data.writable(data.workspace(id)).expect("create");
        assert!(workspace.is_dir());
        std::fs::remove_dir_all(data.root()).expect("an operator cleans up");
        assert_eq!(data.writable(data.sources()).unwrap(), data.sources());
        assert!(data.sources().is_dir());
    }
}

/// This process serves the data dir while it holds this.
#[derive(Debug)]
pub struct Claim {
    _file: std::fs::File,
}

/// Why [`DataDir::claim`] failed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error(
        "another deployd{} serves the data dir {}: each instance needs a data dir of its own; \
         the embedded SQLite store serves one instance, so to run several, give each its own \
         data dir and one PostgreSQL (store.url)",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        dir.display()
    )]
    Claimed { dir: PathBuf, pid: Option<i32> },
    #[error("cannot lock the data dir: {0}")]
    Io(#[from] io::Error),
}
