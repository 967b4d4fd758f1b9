//! Packing a source directory into the gzipped tar that
//! `PUT /v1/sources/{sha256}` takes, and the git facts sent with a deploy.
//!
//! What must stay true: the same files pack to the same bytes, whatever their
//! mtimes, owners, or the order the file system lists them in. The digest then
//! names the content, and re-deploying unchanged source skips the upload.
//! So entries are sorted by path, carry mtime 0, uid/gid 0 and no user or
//! group names, modes are 0644 or 0755 (only the executable bit survives),
//! and the gzip header has no mtime or file name.
//!
//! Left out: anything a `.gitignore` (nested ones too, and those of parent
//! directories, as git reads them) or a `.deployignore` names, and every
//! `.git`, and whatever extra patterns the caller passes to [`pack_dir_ignoring`]
//! (a project file's `ignore = [..]`), read as lines of a `.gitignore` in
//! `dir`. Global and per-clone git excludes are not read: they differ from
//! machine to machine, and the pack must not.

use crate::model::GitInfo;
use flate2::{Compression, GzBuilder};
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use sha2::{Digest, Sha256};
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use tar::{EntryType, Header};

/// A packed source: the upload body and its digest.
#[derive(Debug, Clone)]
pub struct Packed {
    /// A gzipped tar.
    pub bytes: Vec<u8>,
    /// Lowercase hex SHA-256 of `bytes`.
    pub sha256: String,
    /// Regular files and symlinks packed (directories not counted).
    pub files: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("cannot list {dir}: {source}")]
    Walk { dir: PathBuf, source: ignore::Error },
    /// An extra ignore pattern that is not gitignore syntax.
    #[error("ignore pattern {pattern:?}: {source}")]
    Pattern {
        pattern: String,
        source: ignore::Error,
    },
}

/// The name of the file that lists what to leave out of a deploy, in
/// `.gitignore` syntax.
pub const DEPLOYIGNORE: &str = ".deployignore";

/// Pack `dir` into a reproducible gzipped tar.
pub fn pack_dir(dir: &Path) -> Result<Packed, PackError> {
    pack_dir_ignoring(dir, &[])
}

/// [`pack_dir`], also leaving out what `patterns` name: lines of a
/// `.gitignore` at the top of `dir`, applied after the ignore files there,
/// so a `!pattern` can only take back what an earlier pattern here left out.
pub fn pack_dir_ignoring(dir: &Path, patterns: &[String]) -> Result<Packed, PackError> {
    let io_error = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PackError::Io { path, source }
    };
    if !fs::metadata(dir).map_err(io_error(dir))?.is_dir() {
        return Err(PackError::NotADirectory(dir.to_path_buf()));
    }
    let extra = extra_ignores(dir, patterns)?;
    let paths = list(dir, extra)?;

    let gzip = GzBuilder::new()
        .operating_system(255) // "unknown": the same bytes on every OS
        .write(Vec::new(), Compression::default());
    let mut tar = tar::Builder::new(gzip);
    let mut files = 0;
    for relative in &paths {
        let path = dir.join(relative);
        let meta = fs::symlink_metadata(&path).map_err(io_error(&path))?;
        let mut header = Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        let written = if meta.file_type().is_symlink() {
            let target = fs::read_link(&path).map_err(io_error(&path))?;
            header.set_entry_type(EntryType::Symlink);
            header.set_mode(0o777);
            header.set_size(0);
            files += 1;
            tar.append_link(&mut header, relative, target)
        } else if meta.is_dir() {
            header.set_entry_type(EntryType::Directory);
            header.set_mode(0o755);
            header.set_size(0);
            tar.append_data(&mut header, relative, io::empty())
        } else if meta.is_file() {
            // Read whole, so a file that changes while we pack cannot make
            // the header's size disagree with the bytes that follow it.
            let data = fs::read(&path).map_err(io_error(&path))?;
            let executable = meta.permissions().mode() & 0o111 != 0;
            header.set_entry_type(EntryType::Regular);
            header.set_mode(if executable { 0o755 } else { 0o644 });
            header.set_size(data.len() as u64);
            files += 1;
            tar.append_data(&mut header, relative, data.as_slice())
        } else {
            // Sockets, FIFOs and devices are not source.
            continue;
        };
        written.map_err(io_error(&path))?;
    }
    let bytes = tar
        .into_inner()
        .and_then(|gzip| gzip.finish())
        .map_err(io_error(dir))?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok(Packed {
        bytes,
        sha256,
        files,
    })
}

/// `patterns` as one more `.gitignore` rooted at `dir`.
fn extra_ignores(dir: &Path, patterns: &[String]) -> Result<Gitignore, PackError> {
    let mut builder = GitignoreBuilder::new(dir);
    for pattern in patterns {
        builder
            .add_line(None, pattern)
            .map_err(|source| PackError::Pattern {
                pattern: pattern.clone(),
                source,
            })?;
    }
    builder.build().map_err(|source| PackError::Walk {
        dir: dir.to_path_buf(),
        source,
    })
}

/// Every path under `dir` the ignore rules keep, relative and sorted.
fn list(dir: &Path, extra: Gitignore) -> Result<Vec<PathBuf>, PackError> {
    let walker = ignore::WalkBuilder::new(dir)
        .standard_filters(false)
        .git_ignore(true)
        .parents(true)
        .require_git(false)
        .add_custom_ignore_filename(DEPLOYIGNORE)
        .follow_links(false)
        // A directory left out here is not walked, so its contents go too.
        .filter_entry(move |entry| {
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
            entry.file_name() != ".git"
                && (entry.depth() == 0 || !extra.matched(entry.path(), is_dir).is_ignore())
        })
        .build();
    let mut paths = Vec::new();
    for entry in walker {
        let entry = match entry {
            Ok(entry) => entry,
            // A bad pattern in an ignore file: git skips it, so do we.
            Err(error) if error.is_partial() => continue,
            Err(source) => {
                return Err(PackError::Walk {
                    dir: dir.to_path_buf(),
                    source,
                });
            }
        };
        if entry.depth() == 0 {
            continue;
        }
        let relative = entry
            .path()
            .strip_prefix(dir)
            .expect("the walk stays under its root");
        paths.push(relative.to_path_buf());
    }
    paths.sort();
    Ok(paths)
}

/// What git knows about the work tree `dir` is in; `None` outside a work
/// tree or without git. Each fact is left out when git cannot tell it (no
/// commit yet, a detached HEAD, no remote).
pub fn git_info(dir: &Path) -> Option<GitInfo> {
    if git(dir, &["rev-parse", "--is-inside-work-tree"])? != "true" {
        return None;
    }
    let head = git(dir, &["log", "-1", "--format=%H%x00%an <%ae>%x00%s"]);
    let mut head = head.as_deref().unwrap_or("").splitn(3, '\0');
    let mut field = || head.next().filter(|s| !s.is_empty()).map(str::to_string);
    let (sha, author, message) = (field(), field(), field());
    // Only changes under `dir` make the packed source differ from `sha`.
    let status = git(
        dir,
        &["--no-optional-locks", "status", "--porcelain", "--", "."],
    );
    Some(GitInfo {
        sha,
        branch: git(dir, &["symbolic-ref", "--short", "-q", "HEAD"]),
        message,
        author,
        dirty: status.is_some_and(|status| !status.is_empty()),
        repository: git(dir, &["config", "--get", "remote.origin.url"])
            .map(|url| strip_credentials(&url)),
    })
}

/// Run git in `dir`; its trimmed stdout on success.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Drop secrets from a remote URL before it is stored for everyone to read.
/// In http(s) URLs the whole user part goes, since a token often stands
/// alone where the user name would be; in other schemes (ssh) the user name
/// is a login, not a secret, so only a password goes. scp-like
/// `git@host:path` remotes carry no password and stay as they are.
pub fn strip_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    let scheme_lower = scheme.to_ascii_lowercase();
    if scheme_lower == "http" || scheme_lower == "https" {
        return format!("{scheme}://{host}{path}");
    }
    let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
    if user.is_empty() {
        format!("{scheme}://{host}{path}")
    } else {
        format!("{scheme}://{user}@{host}{path}")
    }
}

#[cfg(test)]
mod tests;
