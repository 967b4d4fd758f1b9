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
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
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
const TEMP_PREFIX: &str = ".upload-";

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
        for entry in fs::read_dir(&dir)? {
            let entry = entry?;
            if entry
                .file_name()
                .as_bytes()
                .starts_with(TEMP_PREFIX.as_bytes())
            {
                remove_if_present(&entry.path())?;
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

    /// Where a source lives. Only meaningful for a digest that passed
    /// [`check_digest`]; anything else could name a path outside the store.
    // TODO(core): take `&SourceDigest` once app_actor/phase.rs holds one.
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
        if tokio::fs::try_exists(&path).await? {
            return Ok(PutOutcome {
                size,
                created: false,
            });
        }
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
mod tests {
    use super::*;
    use std::convert::Infallible;

    fn sha(data: &[u8]) -> String {
        hex::encode(Sha256::digest(data))
    }

    fn body(chunks: &[&[u8]]) -> impl Stream<Item = Result<Bytes, Infallible>> + Unpin {
        let chunks: Vec<_> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        futures::stream::iter(chunks)
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn digests_are_exactly_64_lowercase_hex() {
        assert!(check_digest(&sha(b"x")).is_ok());
        for bad in [
            &sha(b"x").to_uppercase(),
            &sha(b"x")[..63],
            "../../../../etc/passwd",
            "",
        ] {
            assert!(
                matches!(check_digest(bad), Err(SourceError::InvalidDigest(_))),
                "{bad}"
            );
        }
    }

    const LIMITS: ExtractLimits = ExtractLimits {
        max_bytes: 1 << 20,
        max_entries: 10,
    };

    /// A tar of one file `name` holding `data`.
    fn tar_file(name: &str, data: &[u8]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder.append_data(&mut header, name, data).unwrap();
        builder.into_inner().unwrap()
    }

    #[tokio::test]
    async fn put_stores_a_source_once_under_its_digest() {
        let dir = tempfile::tempdir().unwrap();
        let data_dir = DataDir::prepare(dir.path()).unwrap();
        let store = SourceStore::open(&data_dir, 1 << 20, LIMITS).unwrap();
        let tar = tar_file("index.html", b"hello world");
        let digest = sha(&tar);
        assert!(!store.exists(&digest));
        let put = store
            .put(&digest, body(&[&tar[..100], &tar[100..]]))
            .await
            .unwrap();
        let size = tar.len() as u64;
        assert_eq!(
            put,
            PutOutcome {
                size,
                created: true
            }
        );
        assert!(store.exists(&digest));
        assert_eq!(fs::read(store.path(&digest)).unwrap(), tar);
        let again = store.put(&digest, body(&[&tar])).await.unwrap();
        assert_eq!(
            again,
            PutOutcome {
                size,
                created: false
            }
        );
        assert_eq!(files_in(&data_dir.sources()), [format!("{digest}.tar")]);
    }

    #[tokio::test]
    async fn put_leaves_nothing_behind_on_mismatch_limit_or_body_error() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_file("f", b"x");
        let limit = tar.len() as u64;
        let store = SourceStore::new(dir.path().to_path_buf(), limit, LIMITS).unwrap();
        let err = store
            .put(&sha(b"expected"), body(&[&tar]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SourceError::DigestMismatch { ref actual, .. } if *actual == sha(&tar))
        );
        let mut over = tar.clone();
        over.push(0);
        let err = store
            .put(&sha(&over), body(&[&over[..5], &over[5..]]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SourceError::TooLarge { limit: l } if l == limit),
            "{err:?}"
        );
        let failing = futures::stream::iter(vec![
            Ok(Bytes::from_static(b"part")),
            Err("connection reset"),
        ]);
        let err = store.put(&sha(b"partial"), failing).await.unwrap_err();
        assert!(
            matches!(err, SourceError::Body(ref m) if m == "connection reset"),
            "{err:?}"
        );
        let err = store.put("not-a-digest", body(&[b"x"])).await.unwrap_err();
        assert!(matches!(err, SourceError::InvalidDigest(_)));
        assert!(
            files_in(dir.path()).is_empty(),
            "{:?}",
            files_in(dir.path())
        );
        assert!(
            store.put(&sha(&tar), body(&[&tar])).await.unwrap().created,
            "exactly the limit is fine"
        );
    }

    #[tokio::test]
    async fn put_scans_and_refuses_what_would_not_extract() {
        let dir = tempfile::tempdir().unwrap();
        let store = SourceStore::new(dir.path().to_path_buf(), 1 << 20, LIMITS).unwrap();
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        let mut builder = tar::Builder::new(Vec::new());
        builder.append_link(&mut link, "root", "/").unwrap();
        let hostile = builder.into_inner().unwrap();
        let err = store
            .put(&sha(&hostile), body(&[&hostile]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, SourceError::Unsafe { ref path, .. } if path == "root"),
            "{err:?}"
        );

        let big = tar_file("big", &vec![0u8; 2 << 20]);
        let err = store.put(&sha(&big), body(&[&big])).await.unwrap_err();
        assert!(
            matches!(err, SourceError::TooLarge { limit } if limit == 1 << 20),
            "{err:?}"
        );

        let mut builder = tar::Builder::new(Vec::new());
        for i in 0..11 {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            builder
                .append_data(&mut header, format!("f{i}"), io::empty())
                .unwrap();
        }
        let many = builder.into_inner().unwrap();
        let err = store.put(&sha(&many), body(&[&many])).await.unwrap_err();
        assert!(
            matches!(err, SourceError::TooManyEntries { limit: 10 }),
            "{err:?}"
        );

        let garbage = vec![0x42u8; 1000];
        let err = store
            .put(&sha(&garbage), body(&[&garbage]))
            .await
            .unwrap_err();
        assert!(matches!(err, SourceError::Corrupt(_)), "{err:?}");
        assert!(
            files_in(dir.path()).is_empty(),
            "{:?}",
            files_in(dir.path())
        );
    }

    #[test]
    fn new_sweeps_temp_files_left_by_a_crash() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(format!("{TEMP_PREFIX}0190")), b"half").unwrap();
        fs::write(dir.path().join(format!("{}.tar", sha(b"x"))), b"x").unwrap();
        SourceStore::new(dir.path().to_path_buf(), 10, LIMITS).unwrap();
        assert_eq!(files_in(dir.path()), [format!("{}.tar", sha(b"x"))]);
    }
}
