//! Safe extraction of an uploaded source into a fresh directory.
//!
//! Every archive is treated as hostile. Entries are walked one by one (tar's
//! own `unpack` is not trusted with safety) and the rules are:
//! - only regular files, directories, symlinks and hard links are created;
//! - no absolute path, no `..`, no entry reached through an earlier symlink;
//! - a symlink's target is relative, and its `..` components come first and
//!   climb no higher than `dest`. A `..` after a name is refused even when it
//!   looks harmless, because that name may be (or later become) a symlink, and
//!   the kernel would then climb from wherever it points (`b -> a/..` with
//!   `a -> .` leaves `dest`). With that rule every link resolves inside `dest`;
//! - a hard link names an already extracted regular file inside `dest`;
//! - an existing file is replaced, never opened, so nothing is written through
//!   a link; a directory is never replaced by anything else;
//! - the byte budget is charged with each entry's declared size before a byte
//!   of it is written, so a gzip bomb stops at its first header;
//! - modes keep only the executable bit (0755 or 0644), ownership is never set.
//!
//! - names are at most 255 bytes, paths and link targets at most
//!   [`MAX_PATH`] bytes, so what passes the rules can also be created.
//!
//! GNU long names and pax headers are decoded here too (the archive is read
//! raw) so their size can be bounded before they are read into memory.
//! On any error `dest` is removed whole.
//!
//! [`scan`] applies the same rules without writing: the one walk below runs
//! over a [`Tree`], which is the real directory for [`extract`] and an
//! in-memory model of it for [`scan`]. An upload is scanned before it is
//! stored, so a hostile archive is refused at the door; what passes the scan
//! passes extraction under the same limits.

mod tree;

use super::SourceError;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use tree::{Disk, Model, Node, Tree};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExtractLimits {
    /// Bytes of entry data as declared by the headers, summed over all
    /// entries (pax and long-name data included), and bytes actually written.
    pub max_bytes: u64,
    /// Files, directories and links (pax and long-name headers not counted).
    pub max_entries: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExtractStats {
    pub entries: u64,
    pub bytes: u64,
}

/// Extracts a tar or gzipped tar into `dest`, which must not exist yet.
/// Blocking: async callers use `spawn_blocking`. On error `dest` is gone.
pub fn extract(
    archive: &Path,
    dest: &Path,
    limits: &ExtractLimits,
) -> Result<ExtractStats, SourceError> {
    extract_file(fs::File::open(archive)?, dest, limits)
}

/// [`extract`] from an open archive, read from its start.
pub(super) fn extract_file(
    mut archive: fs::File,
    dest: &Path,
    limits: &ExtractLimits,
) -> Result<ExtractStats, SourceError> {
    archive.rewind()?;
    fs::create_dir(dest)?;
    let mut extractor = Extractor::new(Disk::new(dest), limits);
    let result = extractor.run(archive);
    if result.is_err()
        && let Err(e) = fs::remove_dir_all(dest)
    {
        tracing::warn!(dest = %dest.display(), error = %e, "could not remove a rejected extraction");
    }
    result.map(|()| extractor.stats)
}

/// Checks a tar or gzipped tar by every rule of [`extract`], writing nothing:
/// the same answer `extract` would give, without a directory to clean up.
/// Blocking, like `extract`.
pub fn scan(archive: &Path, limits: &ExtractLimits) -> Result<ExtractStats, SourceError> {
    let mut extractor = Extractor::new(Model::default(), limits);
    extractor
        .run(fs::File::open(archive)?)
        .map(|()| extractor.stats)
}

/// The largest GNU long name or pax header read into memory.
const MAX_META: u64 = 64 * 1024;
/// Extension headers allowed in a row before the member they describe.
const MAX_META_RUN: u32 = 4;
/// The longest name of one path component (Linux's NAME_MAX).
const MAX_NAME: usize = 255;
/// The longest entry path or link target, leaving room below PATH_MAX for
/// the directory the source is extracted into.
pub const MAX_PATH: usize = 3072;

struct Extractor<'a, T: Tree> {
    tree: T,
    limits: &'a ExtractLimits,
    stats: ExtractStats,
    /// Declared sizes of every entry so far, written or skipped.
    declared: u64,
}

/// What extension headers said about the next member.
#[derive(Default)]
struct Meta {
    path: Option<Vec<u8>>,
    link: Option<Vec<u8>>,
    size: Option<u64>,
    run: u32,
}

impl<'a, T: Tree> Extractor<'a, T> {
    fn new(tree: T, limits: &'a ExtractLimits) -> Self {
        Extractor {
            tree,
            limits,
            stats: ExtractStats::default(),
            declared: 0,
        }
    }

    fn run(&mut self, mut file: fs::File) -> Result<(), SourceError> {
        let mut magic = [0u8; 2];
        let sniffed = file.read(&mut magic)?;
        file.rewind()?;
        let reader: Box<dyn Read> = if sniffed == 2 && magic == [0x1f, 0x8b] {
            Box::new(flate2::read::MultiGzDecoder::new(io::BufReader::new(file)))
        } else {
            Box::new(io::BufReader::new(file))
        };
        let mut archive = tar::Archive::new(reader);
        let entries = archive.entries().map_err(corrupt)?.raw(true);
        let mut meta = Meta::default();
        for entry in entries {
            let mut entry = entry.map_err(corrupt)?;
            self.charge(entry.size())?;
            let kind = entry.header().entry_type();
            if kind.is_gnu_longname()
                || kind.is_gnu_longlink()
                || kind.is_pax_local_extensions()
                || kind.is_pax_global_extensions()
            {
                read_meta(&mut entry, &mut meta)?;
                continue;
            }
            self.stats.entries += 1;
            if self.stats.entries > self.limits.max_entries {
                return Err(SourceError::TooManyEntries {
                    limit: self.limits.max_entries,
                });
            }
            let meta = std::mem::take(&mut meta);
            // Read raw, the header's size is what gets read; a pax size that
            // disagrees would make us parse what other tools do not.
            if meta.size.is_some_and(|size| size != entry.size()) {
                return Err(SourceError::Corrupt(
                    "a pax size disagrees with its header".to_string(),
                ));
            }
            let raw_path = meta
                .path
                .unwrap_or_else(|| entry.header().path_bytes().into_owned());
            let raw_link = meta
                .link
                .or_else(|| entry.header().link_name_bytes().map(|l| l.into_owned()));
            self.entry(&mut entry, kind, &raw_path, raw_link.as_deref())?;
        }
        Ok(())
    }

    /// Charges an entry's declared size against the byte budget before any of
    /// it is read, so an oversized entry costs nothing.
    fn charge(&mut self, size: u64) -> Result<(), SourceError> {
        self.declared = self.declared.saturating_add(size);
        if self.declared > self.limits.max_bytes {
            return Err(SourceError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        Ok(())
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        kind: tar::EntryType,
        raw_path: &[u8],
        raw_link: Option<&[u8]>,
    ) -> Result<(), SourceError> {
        let shown = String::from_utf8_lossy(raw_path).into_owned();
        let unsafe_entry = |reason: &str| SourceError::Unsafe {
            path: shown.clone(),
            reason: reason.to_string(),
        };
        let rel = relative(raw_path).map_err(unsafe_entry)?;
        if rel.as_os_str().is_empty() {
            // `./` itself: dest already exists.
            return if kind.is_dir() {
                Ok(())
            } else {
                Err(unsafe_entry("names the source root"))
            };
        }
        self.prepare_parents(&rel, &shown)?;
        // Old (pre-POSIX) archives mark a directory by a trailing slash.
        let old_style_dir = kind == tar::EntryType::Regular && raw_path.ends_with(b"/");
        match if old_style_dir {
            tar::EntryType::Directory
        } else {
            kind
        } {
            tar::EntryType::Directory => match self.tree.node(&rel)? {
                Some(Node::Dir) => Ok(()),
                Some(_) => Err(unsafe_entry("replaces an earlier non-directory")),
                None => Ok(self.tree.make_dir(&rel)?),
            },
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.clear(&rel, &shown)?;
                let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
                let mode = if executable { 0o755 } else { 0o644 };
                self.write_file(entry, &rel, mode, &shown)
            }
            tar::EntryType::Symlink => {
                let link = raw_link.ok_or_else(|| unsafe_entry("symlink without a target"))?;
                symlink_stays_inside(&rel, link).map_err(unsafe_entry)?;
                self.clear(&rel, &shown)?;
                Ok(self.tree.symlink(&rel, OsStr::from_bytes(link))?)
            }
            tar::EntryType::Link => {
                let link = raw_link.ok_or_else(|| unsafe_entry("hard link without a target"))?;
                let original =
                    relative(link).map_err(|r| unsafe_entry(&format!("hard link target {r}")))?;
                if original == rel {
                    return Err(unsafe_entry("hard link to itself"));
                }
                self.check_link_original(&original).map_err(unsafe_entry)?;
                self.clear(&rel, &shown)?;
                Ok(self.tree.hard_link(&original, &rel)?)
            }
            tar::EntryType::Char | tar::EntryType::Block => {
                Err(unsafe_entry("device files are not allowed"))
            }
            tar::EntryType::Fifo => Err(unsafe_entry("fifos are not allowed")),
            other => Err(unsafe_entry(&format!(
                "entry type {:?} is not allowed",
                other.as_byte() as char
            ))),
        }
    }

    /// Creates missing parent directories, refusing to pass through anything
    /// that is not a real directory (an earlier symlink above all).
    fn prepare_parents(&mut self, rel: &Path, shown: &str) -> Result<(), SourceError> {
        let mut dir = PathBuf::new();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for part in parent.components() {
            dir.push(part);
            match self.tree.node(&dir)? {
                Some(Node::Dir) => {}
                Some(node) => {
                    let what = if node == Node::Symlink {
                        "an earlier symlink"
                    } else {
                        "an earlier file"
                    };
                    return Err(SourceError::Unsafe {
                        path: shown.to_string(),
                        reason: format!("passes through {what}"),
                    });
                }
                None => self.tree.make_dir(&dir)?,
            }
        }
        Ok(())
    }

    /// Makes room for a non-directory entry: an earlier file or link at that
    /// path is removed (never opened or followed); a directory stays.
    fn clear(&mut self, rel: &Path, shown: &str) -> Result<(), SourceError> {
        match self.tree.node(rel)? {
            Some(Node::Dir) => Err(SourceError::Unsafe {
                path: shown.to_string(),
                reason: "replaces an earlier directory".to_string(),
            }),
            Some(_) => Ok(self.tree.remove(rel)?),
            None => Ok(()),
        }
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        rel: &Path,
        mode: u32,
        shown: &str,
    ) -> Result<(), SourceError> {
        let mut file = self.tree.create_file(rel, mode)?;
        let mut buf = vec![0u8; 64 * 1024];
        let mut written: u64 = 0;
        loop {
            let n = match entry.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(SourceError::Corrupt(format!("{shown}: {e}"))),
            };
            // Declared sizes were charged already; this guards the bytes
            // actually written in case a reader ever disagrees with a header.
            written += n as u64;
            self.stats.bytes += n as u64;
            if self.stats.bytes > self.limits.max_bytes {
                return Err(SourceError::TooLarge {
                    limit: self.limits.max_bytes,
                });
            }
            file.write_all(&buf[..n])?;
        }
        if written != entry.size() {
            return Err(SourceError::Corrupt(format!(
                "{shown}: the archive ends inside this file"
            )));
        }
        Ok(())
    }

    /// A hard link's original must be a regular file already extracted,
    /// reached through real directories only.
    fn check_link_original(&self, original: &Path) -> Result<(), &'static str> {
        if original.as_os_str().is_empty() {
            return Err("hard link target is the source root");
        }
        let mut path = PathBuf::new();
        let mut parts = original.components().peekable();
        while let Some(part) = parts.next() {
            path.push(part);
            let node = self
                .tree
                .node(&path)
                .ok()
                .flatten()
                .ok_or("hard link target is not extracted yet")?;
            let wanted = if parts.peek().is_none() {
                Node::File
            } else {
                Node::Dir
            };
            if node != wanted {
                return Err("hard link target is not a regular file inside the source");
            }
        }
        Ok(())
    }
}

/// An archive path as a path relative to `dest`: normal components only.
fn relative(raw: &[u8]) -> Result<PathBuf, &'static str> {
    if raw.contains(&0) {
        return Err("contains a NUL byte");
    }
    if raw.len() > MAX_PATH {
        return Err("is longer than 3072 bytes");
    }
    let mut rel = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
            Component::Normal(part) if part.len() > MAX_NAME => {
                return Err("has a name longer than 255 bytes");
            }
            Component::Normal(part) => rel.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("has a `..` component"),
            Component::RootDir | Component::Prefix(_) => return Err("is absolute"),
        }
    }
    Ok(rel)
}

/// The symlink rule from the module doc: relative, `..` only leading, and no
/// higher than the link's own directory.
fn symlink_stays_inside(link: &Path, target: &[u8]) -> Result<(), &'static str> {
    if target.is_empty() || target.contains(&0) {
        return Err("symlink target is empty or has a NUL byte");
    }
    if target.len() > MAX_PATH {
        return Err("symlink target is longer than 3072 bytes");
    }
    let mut depth = link.components().count().saturating_sub(1);
    let mut seen_name = false;
    for component in Path::new(OsStr::from_bytes(target)).components() {
        match component {
            Component::RootDir | Component::Prefix(_) => return Err("symlink target is absolute"),
            Component::CurDir => {}
            Component::ParentDir if seen_name => {
                return Err("symlink target has `..` after a name");
            }
            Component::ParentDir if depth == 0 => return Err("symlink target leaves the source"),
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => seen_name = true,
        }
    }
    Ok(())
}

/// Reads one extension header (bounded) into `meta`.
fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>, meta: &mut Meta) -> Result<(), SourceError> {
    meta.run += 1;
    if meta.run > MAX_META_RUN {
        return Err(SourceError::Corrupt(
            "too many extension headers in a row".to_string(),
        ));
    }
    if entry.size() > MAX_META {
        return Err(SourceError::Corrupt(format!(
            "extension header of {} bytes",
            entry.size()
        )));
    }
    let kind = entry.header().entry_type();
    let mut data = Vec::new();
    entry.read_to_end(&mut data).map_err(corrupt)?;
    if kind.is_gnu_longname() || kind.is_gnu_longlink() {
        while data.last() == Some(&0) {
            data.pop();
        }
        let slot = if kind.is_gnu_longname() {
            &mut meta.path
        } else {
            &mut meta.link
        };
        *slot = Some(data);
    } else if kind.is_pax_local_extensions() {
        for ext in tar::PaxExtensions::new(&data) {
            let ext = ext.map_err(corrupt)?;
            match ext.key_bytes() {
                b"path" => meta.path = Some(ext.value_bytes().to_vec()),
                b"linkpath" => meta.link = Some(ext.value_bytes().to_vec()),
                b"size" => {
                    let size = std::str::from_utf8(ext.value_bytes())
                        .ok()
                        .and_then(|v| v.parse().ok());
                    meta.size =
                        Some(size.ok_or_else(|| {
                            SourceError::Corrupt("unreadable pax size".to_string())
                        })?);
                }
                _ => {}
            }
        }
    }
    Ok(())
}

fn corrupt(e: io::Error) -> SourceError {
    SourceError::Corrupt(e.to_string())
}

#[cfg(test)]
mod tests;
