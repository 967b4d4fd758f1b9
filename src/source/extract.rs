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
//! GNU long names and pax headers are decoded here too (the archive is read
//! raw) so their size can be bounded before they are read into memory.
//! On any error `dest` is removed whole.

use super::SourceError;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Seek, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

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
    fs::create_dir(dest)?;
    let mut extractor = Extractor {
        dest,
        limits,
        stats: ExtractStats::default(),
        declared: 0,
    };
    let result = extractor.run(archive);
    if result.is_err()
        && let Err(e) = fs::remove_dir_all(dest)
    {
        tracing::warn!(dest = %dest.display(), error = %e, "could not remove a rejected extraction");
    }
    result.map(|()| extractor.stats)
}

/// The largest GNU long name or pax header read into memory.
const MAX_META: u64 = 64 * 1024;
/// Extension headers allowed in a row before the member they describe.
const MAX_META_RUN: u32 = 4;

struct Extractor<'a> {
    dest: &'a Path,
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

impl Extractor<'_> {
    fn run(&mut self, archive: &Path) -> Result<(), SourceError> {
        let mut file = fs::File::open(archive)?;
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
                return Err(SourceError::TooLarge {
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
        let target = self.dest.join(&rel);
        // Old (pre-POSIX) archives mark a directory by a trailing slash.
        let old_style_dir = kind == tar::EntryType::Regular && raw_path.ends_with(b"/");
        match if old_style_dir {
            tar::EntryType::Directory
        } else {
            kind
        } {
            tar::EntryType::Directory => match fs::symlink_metadata(&target) {
                Ok(existing) if existing.is_dir() => Ok(()),
                Ok(_) => Err(unsafe_entry("replaces an earlier non-directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    Ok(fs::DirBuilder::new().mode(0o755).create(&target)?)
                }
                Err(e) => Err(e.into()),
            },
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                self.clear(&target, &shown)?;
                let executable = entry.header().mode().is_ok_and(|m| m & 0o111 != 0);
                let mode = if executable { 0o755 } else { 0o644 };
                self.write_file(entry, &target, mode, &shown)
            }
            tar::EntryType::Symlink => {
                let link = raw_link.ok_or_else(|| unsafe_entry("symlink without a target"))?;
                symlink_stays_inside(&rel, link).map_err(unsafe_entry)?;
                self.clear(&target, &shown)?;
                Ok(std::os::unix::fs::symlink(
                    OsStr::from_bytes(link),
                    &target,
                )?)
            }
            tar::EntryType::Link => {
                let link = raw_link.ok_or_else(|| unsafe_entry("hard link without a target"))?;
                let original =
                    relative(link).map_err(|r| unsafe_entry(&format!("hard link target {r}")))?;
                self.check_link_original(&original).map_err(unsafe_entry)?;
                self.clear(&target, &shown)?;
                Ok(fs::hard_link(self.dest.join(&original), &target)?)
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
    fn prepare_parents(&self, rel: &Path, shown: &str) -> Result<(), SourceError> {
        let mut dir = self.dest.to_path_buf();
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        for part in parent.components() {
            dir.push(part);
            match fs::symlink_metadata(&dir) {
                Ok(meta) if meta.is_dir() => {}
                Ok(meta) => {
                    let what = if meta.file_type().is_symlink() {
                        "an earlier symlink"
                    } else {
                        "an earlier file"
                    };
                    return Err(SourceError::Unsafe {
                        path: shown.to_string(),
                        reason: format!("passes through {what}"),
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    fs::DirBuilder::new().mode(0o755).create(&dir)?
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Makes room for a non-directory entry: an earlier file or link at that
    /// path is removed (never opened or followed); a directory stays.
    fn clear(&self, target: &Path, shown: &str) -> Result<(), SourceError> {
        match fs::symlink_metadata(target) {
            Ok(meta) if meta.is_dir() => Err(SourceError::Unsafe {
                path: shown.to_string(),
                reason: "replaces an earlier directory".to_string(),
            }),
            Ok(_) => Ok(fs::remove_file(target)?),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn write_file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        target: &Path,
        mode: u32,
        shown: &str,
    ) -> Result<(), SourceError> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(target)?;
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
        let mut path = self.dest.to_path_buf();
        let mut parts = original.components().peekable();
        while let Some(part) = parts.next() {
            path.push(part);
            let meta =
                fs::symlink_metadata(&path).map_err(|_| "hard link target is not extracted yet")?;
            let last = parts.peek().is_none();
            if (last && !meta.is_file()) || (!last && !meta.is_dir()) {
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
    let mut rel = PathBuf::new();
    for component in Path::new(OsStr::from_bytes(raw)).components() {
        match component {
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
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::os::unix::fs::PermissionsExt;
    use tar::{EntryType, Header};

    const LIMITS: ExtractLimits = ExtractLimits {
        max_bytes: 1 << 20,
        max_entries: 100,
    };

    /// Every path under `root`, relative, without following symlinks.
    fn tree(root: &Path) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                found.insert(path.strip_prefix(root).unwrap().display().to_string());
                if fs::symlink_metadata(&path).unwrap().is_dir() {
                    stack.push(path);
                }
            }
        }
        found
    }

    /// A header with `name` written raw, so `..` and absolute paths get through.
    fn raw_header(name: &[u8], kind: EntryType, size: u64) -> Header {
        let mut header = Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(kind);
        header.set_size(size);
        header.set_mode(0o644);
        header
    }

    fn link_header(name: &[u8], kind: EntryType, target: &[u8]) -> Header {
        let mut header = raw_header(name, kind, 0);
        header.set_link_name_literal(target).unwrap();
        header
    }

    /// A tar of `(header, data)` pairs, checksums filled in.
    fn tar_of(entries: Vec<(Header, &[u8])>) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (mut header, data) in entries {
            header.set_cksum();
            builder.append(&header, data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    }

    fn pax(records: &[(&str, &str)]) -> Vec<u8> {
        let mut out = String::new();
        for (key, value) in records {
            let body = format!(" {key}={value}\n");
            let mut len = body.len() + 1;
            while len.to_string().len() + body.len() != len {
                len += 1;
            }
            out.push_str(&format!("{len}{body}"));
        }
        out.into_bytes()
    }

    /// Writes `archive` next to (not inside) the extraction root and extracts
    /// it into `<root>/a/b/dest`, so an escape by `..` would land in `root`.
    struct Scene {
        _archives: tempfile::TempDir,
        archive: PathBuf,
        root: tempfile::TempDir,
        dest: PathBuf,
    }

    fn scene(archive: &[u8]) -> Scene {
        let archives = tempfile::tempdir().unwrap();
        let path = archives.path().join("source.tar");
        fs::write(&path, archive).unwrap();
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("a/b")).unwrap();
        let dest = root.path().join("a/b/dest");
        Scene {
            _archives: archives,
            archive: path,
            root,
            dest,
        }
    }

    fn rejected(archive: &[u8], limits: &ExtractLimits) -> SourceError {
        let scene = scene(archive);
        let err =
            extract(&scene.archive, &scene.dest, limits).expect_err("extraction should be refused");
        let left: Vec<_> = tree(scene.root.path()).into_iter().collect();
        assert_eq!(
            left,
            ["a", "a/b"],
            "something stayed or escaped after {err}"
        );
        err
    }

    fn assert_unsafe(err: SourceError, expected_path: &str) {
        match err {
            SourceError::Unsafe { path, .. } => assert_eq!(path, expected_path),
            other => panic!("expected Unsafe for {expected_path}, got {other:?}"),
        }
    }

    fn happy_tar() -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut dir = Header::new_gnu();
        dir.set_entry_type(EntryType::Directory);
        dir.set_mode(0o755);
        dir.set_size(0);
        builder
            .append_data(&mut dir.clone(), "./", io::empty())
            .unwrap();
        builder.append_data(&mut dir, "app", io::empty()).unwrap();
        let mut file = Header::new_gnu();
        file.set_mode(0o644);
        file.set_size(6);
        builder
            .append_data(&mut file.clone(), "app/src/lib/main.txt", &b"hello\n"[..])
            .unwrap();
        file.set_mode(0o4755); // setuid must not survive
        file.set_size(10);
        builder
            .append_data(&mut file.clone(), "app/build.sh", &b"#!/bin/sh\n"[..])
            .unwrap();
        let long = format!("app/{}/deep.txt", "d".repeat(120)); // a GNU long name
        file.set_mode(0o644);
        file.set_size(4);
        builder.append_data(&mut file, &long, &b"deep"[..]).unwrap();
        let mut link = Header::new_gnu();
        link.set_entry_type(EntryType::Symlink);
        link.set_size(0);
        builder
            .append_link(&mut link.clone(), "app/current", "src/lib/main.txt")
            .unwrap();
        builder
            .append_link(&mut link, "app/src/up", "../build.sh")
            .unwrap();
        let mut hard = Header::new_gnu();
        hard.set_entry_type(EntryType::Link);
        hard.set_size(0);
        builder
            .append_link(&mut hard, "app/copy.txt", "app/src/lib/main.txt")
            .unwrap();
        let mut data = builder.into_inner().unwrap();
        // A pax-named file, the way GNU tar --format=posix and git write them.
        data.truncate(data.len() - 1024); // drop the end-of-archive blocks
        let records = pax(&[("path", "app/pax name.txt"), ("mtime", "1.5")]);
        let mut tail = tar_of(vec![
            (
                raw_header(b"PaxHeaders/x", EntryType::XHeader, records.len() as u64),
                &records,
            ),
            (raw_header(b"placeholder", EntryType::Regular, 3), b"pax"),
        ]);
        data.append(&mut tail);
        data
    }

    #[test]
    fn extracts_tar_and_tar_gz_with_dirs_modes_and_links() {
        for archive in [happy_tar(), gzip(&happy_tar())] {
            let scene = scene(&archive);
            let stats = extract(&scene.archive, &scene.dest, &LIMITS).unwrap();
            let dest = &scene.dest;
            assert_eq!(
                stats,
                ExtractStats {
                    entries: 9,
                    bytes: 23
                }
            );
            assert_eq!(
                fs::read(dest.join("app/src/lib/main.txt")).unwrap(),
                b"hello\n"
            );
            assert_eq!(
                fs::read(dest.join(format!("app/{}/deep.txt", "d".repeat(120)))).unwrap(),
                b"deep"
            );
            assert_eq!(fs::read(dest.join("app/pax name.txt")).unwrap(), b"pax");
            let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().permissions().mode() & 0o7777;
            assert_eq!(mode("app/build.sh"), 0o755, "executable, without setuid");
            assert_eq!(mode("app/src/lib/main.txt"), 0o644);
            assert_eq!(
                fs::read_link(dest.join("app/current")).unwrap(),
                Path::new("src/lib/main.txt")
            );
            assert_eq!(fs::read(dest.join("app/current")).unwrap(), b"hello\n");
            assert_eq!(fs::read(dest.join("app/src/up")).unwrap(), b"#!/bin/sh\n");
            assert_eq!(fs::read(dest.join("app/copy.txt")).unwrap(), b"hello\n");
        }
    }

    #[test]
    fn refuses_paths_that_leave_dest() {
        let archive = tar_of(vec![(
            raw_header(b"../../escaped", EntryType::Regular, 2),
            b"hi",
        )]);
        assert_unsafe(rejected(&archive, &LIMITS), "../../escaped");
        let archive = tar_of(vec![(
            raw_header(b"/tmp/deployd-abs-escape", EntryType::Regular, 2),
            b"hi",
        )]);
        assert_unsafe(rejected(&archive, &LIMITS), "/tmp/deployd-abs-escape");
        assert!(!Path::new("/tmp/deployd-abs-escape").exists());
    }

    #[test]
    fn refuses_symlinks_that_leave_dest() {
        let archive = tar_of(vec![
            (link_header(b"root", EntryType::Symlink, b"/"), b""),
            (
                raw_header(b"root/tmp/deployd-via-link", EntryType::Regular, 2),
                b"hi",
            ),
        ]);
        assert_unsafe(rejected(&archive, &LIMITS), "root");
        let archive = tar_of(vec![(link_header(b"a", EntryType::Symlink, b"../.."), b"")]);
        assert_unsafe(rejected(&archive, &LIMITS), "a");
        let archive = tar_of(vec![(
            link_header(b"d/a", EntryType::Symlink, b"../../x"),
            b"",
        )]);
        assert_unsafe(rejected(&archive, &LIMITS), "d/a");
        // Lexically `b -> a/..` is dest itself, but with `a -> .` the kernel
        // would climb out of dest.
        let archive = tar_of(vec![
            (link_header(b"a", EntryType::Symlink, b"."), b""),
            (link_header(b"b", EntryType::Symlink, b"a/.."), b""),
        ]);
        assert_unsafe(rejected(&archive, &LIMITS), "b");
    }

    #[test]
    fn refuses_entries_through_an_earlier_symlink() {
        let mut dir = raw_header(b"sub", EntryType::Directory, 0);
        dir.set_mode(0o755);
        let archive = tar_of(vec![
            (dir, b""),
            (link_header(b"inner", EntryType::Symlink, b"sub"), b""),
            (raw_header(b"inner/x", EntryType::Regular, 2), b"hi"),
        ]);
        assert_unsafe(rejected(&archive, &LIMITS), "inner/x");
    }

    #[test]
    fn replaces_a_symlink_instead_of_writing_through_it() {
        let archive = tar_of(vec![
            (
                raw_header(b"target.txt", EntryType::Regular, 8),
                b"original",
            ),
            (link_header(b"s", EntryType::Symlink, b"target.txt"), b""),
            (raw_header(b"s", EntryType::Regular, 3), b"new"),
        ]);
        let scene = scene(&archive);
        extract(&scene.archive, &scene.dest, &LIMITS).unwrap();
        assert_eq!(
            fs::read(scene.dest.join("target.txt")).unwrap(),
            b"original"
        );
        assert!(
            fs::symlink_metadata(scene.dest.join("s"))
                .unwrap()
                .is_file()
        );
    }

    #[test]
    fn refuses_hard_links_outside_or_ahead() {
        let archive = tar_of(vec![(
            link_header(b"pw", EntryType::Link, b"/etc/passwd"),
            b"",
        )]);
        assert_unsafe(rejected(&archive, &LIMITS), "pw");
        let archive = tar_of(vec![(
            link_header(b"up", EntryType::Link, b"../outside"),
            b"",
        )]);
        assert_unsafe(rejected(&archive, &LIMITS), "up");
        let archive = tar_of(vec![
            (link_header(b"early", EntryType::Link, b"later"), b""),
            (raw_header(b"later", EntryType::Regular, 2), b"hi"),
        ]);
        assert_unsafe(rejected(&archive, &LIMITS), "early");
    }

    #[test]
    fn refuses_fifos_and_devices() {
        let archive = tar_of(vec![(raw_header(b"fifo", EntryType::Fifo, 0), b"")]);
        assert_unsafe(rejected(&archive, &LIMITS), "fifo");
        let mut null = raw_header(b"null", EntryType::Char, 0);
        null.set_device_major(1).unwrap();
        null.set_device_minor(3).unwrap();
        assert_unsafe(rejected(&tar_of(vec![(null, b"")]), &LIMITS), "null");
        let archive = tar_of(vec![(raw_header(b"sda", EntryType::Block, 0), b"")]);
        assert_unsafe(rejected(&archive, &LIMITS), "sda");
    }

    #[test]
    fn a_gzip_bomb_stops_at_its_header() {
        let zeros = vec![0u8; 50 << 20];
        let bomb = gzip(&tar_of(vec![(
            raw_header(b"zeros", EntryType::Regular, zeros.len() as u64),
            &zeros,
        )]));
        assert!(bomb.len() < 1 << 20, "the bomb is small on the wire");
        let err = rejected(&bomb, &LIMITS);
        assert!(
            matches!(err, SourceError::TooLarge { limit } if limit == 1 << 20),
            "{err:?}"
        );
    }

    #[test]
    fn the_byte_budget_spans_all_entries() {
        let half = vec![1u8; 600 << 10];
        let archive = tar_of(vec![
            (
                raw_header(b"one", EntryType::Regular, half.len() as u64),
                &half,
            ),
            (
                raw_header(b"two", EntryType::Regular, half.len() as u64),
                &half,
            ),
        ]);
        let err = rejected(&archive, &LIMITS);
        assert!(
            matches!(err, SourceError::TooLarge { limit } if limit == 1 << 20),
            "{err:?}"
        );
    }

    #[test]
    fn extension_headers_are_bounded_and_checked() {
        let huge = vec![b'n'; 100 << 10];
        let archive = tar_of(vec![
            (
                raw_header(b"././@LongLink", EntryType::GNULongName, huge.len() as u64),
                &huge,
            ),
            (raw_header(b"f", EntryType::Regular, 0), b""),
        ]);
        assert!(matches!(
            rejected(&archive, &LIMITS),
            SourceError::Corrupt(_)
        ));
        let records = pax(&[("size", "3")]);
        let archive = tar_of(vec![
            (
                raw_header(b"x", EntryType::XHeader, records.len() as u64),
                &records,
            ),
            (raw_header(b"f", EntryType::Regular, 5), b"hello"),
        ]);
        assert!(matches!(
            rejected(&archive, &LIMITS),
            SourceError::Corrupt(_)
        ));
        let globals = (0..5).map(|_| (raw_header(b"g", EntryType::XGlobalHeader, 0), &b""[..]));
        let err = rejected(&tar_of(globals.collect()), &LIMITS);
        assert!(matches!(err, SourceError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn a_directory_is_never_replaced() {
        let archive = tar_of(vec![
            (raw_header(b"d", EntryType::Directory, 0), b""),
            (raw_header(b"d", EntryType::Regular, 2), b"hi"),
        ]);
        assert_unsafe(rejected(&archive, &LIMITS), "d");
    }

    #[test]
    fn accepts_old_style_dirs_and_global_pax_headers() {
        let comment = pax(&[("comment", "0123abcd")]); // what `git archive` writes
        let archive = tar_of(vec![
            (
                raw_header(
                    b"pax_global_header",
                    EntryType::XGlobalHeader,
                    comment.len() as u64,
                ),
                &comment,
            ),
            (raw_header(b"old/", EntryType::Regular, 0), b""),
            (raw_header(b"old/f", EntryType::Regular, 2), b"hi"),
        ]);
        let scene = scene(&archive);
        let stats = extract(&scene.archive, &scene.dest, &LIMITS).unwrap();
        assert_eq!(
            stats,
            ExtractStats {
                entries: 2,
                bytes: 2
            }
        );
        assert_eq!(fs::read(scene.dest.join("old/f")).unwrap(), b"hi");
    }

    /// What real tools write: GNU tar in its own and in POSIX (pax) format.
    #[test]
    fn extracts_what_gnu_tar_writes() {
        let src = tempfile::tempdir().unwrap();
        let deep = format!("app/{}/{}", "d".repeat(80), "é".repeat(60));
        fs::create_dir_all(src.path().join(&deep)).unwrap();
        fs::write(src.path().join(&deep).join("f.txt"), b"deep").unwrap();
        fs::write(src.path().join("app/run.sh"), b"#!/bin/sh\n").unwrap();
        fs::set_permissions(
            src.path().join("app/run.sh"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("run.sh", src.path().join("app/start")).unwrap();
        for format in ["gnu", "posix"] {
            let archives = tempfile::tempdir().unwrap();
            let archive = archives.path().join("source.tgz");
            let status = std::process::Command::new("tar")
                .arg(format!("--format={format}"))
                .arg("-czf")
                .arg(&archive)
                .arg("-C")
                .arg(src.path())
                .arg(".")
                .status()
                .unwrap();
            assert!(status.success());
            let dest = archives.path().join("dest");
            extract(&archive, &dest, &LIMITS).unwrap();
            assert_eq!(
                fs::read(dest.join(&deep).join("f.txt")).unwrap(),
                b"deep",
                "{format}"
            );
            let mode = fs::metadata(dest.join("app/run.sh"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o755, "{format}");
            assert_eq!(
                fs::read_link(dest.join("app/start")).unwrap(),
                Path::new("run.sh")
            );
        }
    }

    #[test]
    fn too_many_entries_is_too_large() {
        let entries = (0..5).map(|i| {
            (
                raw_header(format!("f{i}").as_bytes(), EntryType::Regular, 0),
                &b""[..],
            )
        });
        let limits = ExtractLimits {
            max_bytes: 1 << 20,
            max_entries: 3,
        };
        let err = rejected(&tar_of(entries.collect()), &limits);
        assert!(matches!(err, SourceError::TooLarge { limit: 3 }), "{err:?}");
    }

    #[test]
    fn garbage_and_truncation_are_corrupt() {
        let err = rejected(&[0x42; 2000], &LIMITS);
        assert!(matches!(err, SourceError::Corrupt(_)), "{err:?}");
        let mut truncated = tar_of(vec![(
            raw_header(b"f", EntryType::Regular, 4000),
            &[7u8; 4000],
        )]);
        truncated.truncate(2048);
        let err = rejected(&truncated, &LIMITS);
        assert!(matches!(err, SourceError::Corrupt(_)), "{err:?}");
        let err = rejected(&gzip(&happy_tar())[..300], &LIMITS);
        assert!(matches!(err, SourceError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn dest_must_not_exist_and_is_left_alone() {
        let scene = scene(&happy_tar());
        fs::create_dir(&scene.dest).unwrap();
        fs::write(scene.dest.join("keep"), b"mine").unwrap();
        assert!(matches!(
            extract(&scene.archive, &scene.dest, &LIMITS),
            Err(SourceError::Io(_))
        ));
        assert_eq!(fs::read(scene.dest.join("keep")).unwrap(), b"mine");
    }
}
