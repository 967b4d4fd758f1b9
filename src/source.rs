//! Sources: content-addressed uploads on disk, and their safe extraction.
//!
//! An upload becomes `<dir>/<sha256>.tar` only once its bytes hash to that
//! digest: it streams to a temp file in the same directory (never whole in
//! memory), is hashed as it goes, fsynced and renamed into place. A reader
//! never sees a partial or wrong file, and a failed or abandoned upload leaves
//! nothing behind. Before the rename the archive is [`scan`]ned by every
//! extraction rule, so a hostile or oversized archive is refused at upload
//! and never stored. Extraction, which treats every archive as hostile again
//! (limits may have changed since the upload), lives in [`extract`](extract())
//! and its module.

mod extract;

pub use extract::{ExtractLimits, ExtractStats, MAX_PATH, extract, scan};

use crate::layout::DataDir;
use crate::names::SourceDigest;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("source {0} is not on the server; upload it again")]
    Missing(String),
    /// The stored file no longer hashes to its name: changed or damaged on
    /// disk since its upload. It has been removed.
    #[error("source {0} on disk does not match its digest; upload it again")]
    ChangedOnDisk(String),
    #[error("invalid source digest {0:?}: expected 64 lowercase hex characters")]
    InvalidDigest(String),
    #[error("upload does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("source is over the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("source has more than {limit} entries")]
    TooManyEntries { limit: u64 },
    #[error("unsafe archive entry {path:?}: {reason}")]
    Unsafe { path: String, reason: String },
    #[error("corrupt archive: {0}")]
    Corrupt(String),
    #[error("source storage failed: {0}")]
    Io(#[from] io::Error),
    #[error("upload body failed: {0}")]
    Body(String),
}

/// The content-addressed upload directory, `<data_dir>/sources`.
#[derive(Debug, Clone)]
pub struct SourceStore {
    dir: PathBuf,
    upload_limit: u64,
    extract_limits: ExtractLimits,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub size: u64,
    /// False when the store already had this source.
    pub created: bool,
}

/// Names temp files so they can never be mistaken for a source.
pub const TEMP_PREFIX: &str = ".upload-";

/// Names a source the sweep set aside while it decides
/// (`compaction::sweep`), so this module and the sweep agree on it.
pub const ASIDE_PREFIX: &str = ".sweep-";

/// Set a stored source's mtime to now: the start of its grace period.
fn touch(path: &Path) {
    let _ = fs::File::options()
        .append(true)
        .open(path)
        .and_then(|file| file.set_modified(std::time::SystemTime::now()));
}

impl SourceStore {
    /// The data dir's sources directory, as [`new`](Self::new) prepares it.
    pub fn open(
        data_dir: &DataDir,
        upload_limit: u64,
        extract_limits: ExtractLimits,
    ) -> io::Result<SourceStore> {
        SourceStore::new(data_dir.sources(), upload_limit, extract_limits)
    }

    /// Creates `dir` if needed and deletes temp files a crash left behind:
    /// an interrupted upload is never resumed. Uploads are refused over
    /// `upload_limit` bytes, or when they would not extract within
    /// `extract_limits`.
    pub fn new(
        dir: PathBuf,
        upload_limit: u64,
        extract_limits: ExtractLimits,
    ) -> io::Result<SourceStore> {
        fs::create_dir_all(&dir)?;
        // Uploads are the daemon's: a step running as another user
        // (`clusters.NAME.user`) reads its own workspace, not every source.
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700))?;
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name();
            if name.as_bytes().starts_with(TEMP_PREFIX.as_bytes()) {
                remove_if_present(&entry.path())?;
            } else if let Some(real) = name.as_bytes().strip_prefix(ASIDE_PREFIX.as_bytes()) {
                // A sweep stopped while judging it: back under its name, to
                // be judged again by the next sweep.
                let real = dir.join(std::ffi::OsStr::from_bytes(real));
                if real.exists() {
                    remove_if_present(&entry.path())?;
                } else {
                    fs::rename(entry.path(), real)?;
                }
            }
        }
        Ok(SourceStore {
            dir,
            upload_limit,
            extract_limits,
        })
    }

    pub fn exists(&self, sha256: &str) -> bool {
        check_digest(sha256).is_ok_and(|digest| self.path(digest.as_str()).is_file())
    }

    /// Whether source `sha256` is stored; if it is, its grace period starts
    /// again (its mtime becomes now), so a client that was just told it is
    /// there has `limits.source_ttl` to deploy it before an unused source is
    /// swept. A failure to touch the file is ignored: it only shortens that.
    pub fn keep(&self, sha256: &str) -> bool {
        if !self.exists(sha256) {
            return false;
        }
        touch(&self.path(sha256));
        true
    }

    /// Where a source lives. Only meaningful for a digest that passed
    /// [`check_digest`]; anything else could name a path outside the store.
    // Takes text: deployments store their source as text (`Deployment.source`).
    pub fn path(&self, sha256: &str) -> PathBuf {
        self.dir.join(format!("{sha256}.tar"))
    }

    /// Streams `body` into the store under `sha256`, checking the digest, then
    /// scans it by the extraction rules. On any error nothing is kept.
    pub async fn put<S, E>(&self, sha256: &str, mut body: S) -> Result<PutOutcome, SourceError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let digest = check_digest(sha256)?;
        // Recreated if it was removed while the daemon runs.
        tokio::fs::create_dir_all(&self.dir).await?;
        let mut temp = TempUpload {
            path: self
                .dir
                .join(format!("{TEMP_PREFIX}{}", uuid::Uuid::now_v7())),
            keep: false,
        };
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp.path)
            .await?;
        let mut hasher = Sha256::new();
        let mut size: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| SourceError::Body(e.to_string()))?;
            size = size.saturating_add(chunk.len() as u64);
            if size > self.upload_limit {
                return Err(SourceError::TooLarge {
                    limit: self.upload_limit,
                });
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await?;
        }
        let actual = hex::encode(hasher.finalize());
        if actual != sha256 {
            return Err(SourceError::DigestMismatch {
                expected: sha256.to_string(),
                actual,
            });
        }
        file.flush().await?;
        file.sync_all().await?;
        drop(file);
        let (scanned, limits) = (temp.path.clone(), self.extract_limits);
        tokio::task::spawn_blocking(move || scan(&scanned, &limits))
            .await
            .map_err(io::Error::other)??;

        let path = self.path(digest.as_str());
        let (existing, expected) = (path.clone(), digest.as_str().to_string());
        let intact = tokio::task::spawn_blocking(move || holds(&existing, &expected))
            .await
            .map_err(io::Error::other)??;
        if intact {
            touch(&path);
            return Ok(PutOutcome {
                size,
                created: false,
            });
        }
        // Absent, or changed on disk since it was stored: these bytes are right.
        tokio::fs::rename(&temp.path, &path).await?;
        temp.keep = true;
        // The rename is durable only once the directory itself is synced.
        tokio::fs::File::open(&self.dir).await?.sync_all().await?;
        Ok(PutOutcome {
            size,
            created: true,
        })
    }
}

/// Extracts source `sha256`, stored at `archive`, into `dest` (see
/// [`extract`]), once the file's bytes are checked to still hash to
/// `sha256`: a file changed on disk after its upload never deploys under the
/// digest it no longer has. Such a file is removed, so that the next upload
/// of the right bytes stores it again. Blocking, like `extract`.
pub fn extract_verified(
    archive: &Path,
    sha256: &str,
    dest: &Path,
    limits: &ExtractLimits,
) -> Result<ExtractStats, SourceError> {
    check_digest(sha256)?;
    let mut file = match fs::File::open(archive) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(SourceError::Missing(sha256.to_string()));
        }
        opened => opened?,
    };
    if digest_of(&mut file)? != sha256 {
        // Remove the file that was checked, not one a concurrent upload has
        // just renamed into its place.
        let checked = file.metadata()?;
        if fs::metadata(archive).is_ok_and(|now| now.ino() == checked.ino()) {
            remove_if_present(archive)?;
        }
        tracing::warn!(
            sha256,
            "a stored source does not match its digest; removed it"
        );
        return Err(SourceError::ChangedOnDisk(sha256.to_string()));
    }
    extract::extract_file(file, dest, limits)
}

/// Whether the file at `path` exists and hashes to `sha256`.
fn holds(path: &Path, sha256: &str) -> io::Result<bool> {
    match fs::File::open(path) {
        Ok(mut file) => Ok(digest_of(&mut file)? == sha256),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// The hex SHA-256 of what `file` holds from where it is read.
fn digest_of(file: &mut fs::File) -> io::Result<String> {
    let mut hasher = Sha256::new();
    io::copy(file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// A temp upload file, deleted on drop unless kept, so every early return (and
/// a dropped request future) cleans up.
struct TempUpload {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempUpload {
    fn drop(&mut self) {
        if !self.keep
            && let Err(e) = remove_if_present(&self.path)
        {
            tracing::warn!(path = %self.path.display(), error = %e, "could not delete a temp upload");
        }
    }
}

/// Accepts exactly 64 lowercase hex characters (a [`SourceDigest`]), the
/// only digests the store names files after.
pub fn check_digest(sha256: &str) -> Result<SourceDigest, SourceError> {
    sha256
        .parse()
        .map_err(|_| SourceError::InvalidDigest(sha256.to_string()))
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
