//! The tree an archive is walked into: the real directory ([`Disk`]) or a
//! model of one ([`Model`]), so extraction and the upload-time scan share one
//! walk and one set of rules.
//!
//! Paths here are relative to the tree's root and made of normal components
//! only (the walk checked them). What must stay true: a [`Model`] answers
//! [`Tree::node`] exactly as the disk would after the same calls, or the scan
//! and the extraction could disagree about an archive.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What is at a path, without following a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Node {
    Dir,
    File,
    Symlink,
    /// Anything else (never created by the walk).
    Other,
}

/// The operations the walk needs. Each one acts on exactly the path it is
/// given and never follows a symlink at it.
pub(super) trait Tree {
    type File: Write;

    /// What is at `rel`; `None` if nothing. The empty path is the root.
    fn node(&self, rel: &Path) -> io::Result<Option<Node>>;
    fn make_dir(&mut self, rel: &Path) -> io::Result<()>;
    /// Removes a file or symlink (never a directory).
    fn remove(&mut self, rel: &Path) -> io::Result<()>;
    /// Creates a new regular file; fails if anything is at `rel`.
    fn create_file(&mut self, rel: &Path, mode: u32) -> io::Result<Self::File>;
    fn symlink(&mut self, rel: &Path, target: &OsStr) -> io::Result<()>;
    fn hard_link(&mut self, original: &Path, rel: &Path) -> io::Result<()>;
}

/// The real directory `root`.
pub(super) struct Disk {
    root: PathBuf,
}

impl Disk {
    pub fn new(root: &Path) -> Disk {
        Disk {
            root: root.to_path_buf(),
        }
    }
}

impl Tree for Disk {
    type File = fs::File;

    fn node(&self, rel: &Path) -> io::Result<Option<Node>> {
        match fs::symlink_metadata(self.root.join(rel)) {
            Ok(meta) => Ok(Some(if meta.is_dir() {
                Node::Dir
            } else if meta.is_file() {
                Node::File
            } else if meta.file_type().is_symlink() {
                Node::Symlink
            } else {
                Node::Other
            })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn make_dir(&mut self, rel: &Path) -> io::Result<()> {
        fs::DirBuilder::new()
            .mode(0o755)
            .create(self.root.join(rel))
    }

    fn remove(&mut self, rel: &Path) -> io::Result<()> {
        fs::remove_file(self.root.join(rel))
    }

    fn create_file(&mut self, rel: &Path, mode: u32) -> io::Result<fs::File> {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(self.root.join(rel))
    }

    fn symlink(&mut self, rel: &Path, target: &OsStr) -> io::Result<()> {
        std::os::unix::fs::symlink(target, self.root.join(rel))
    }

    fn hard_link(&mut self, original: &Path, rel: &Path) -> io::Result<()> {
        fs::hard_link(self.root.join(original), self.root.join(rel))
    }
}

/// A directory that exists only as the kinds of its paths. File contents are
/// read and dropped, so the walk still checks every byte count.
#[derive(Default)]
pub(super) struct Model {
    nodes: HashMap<PathBuf, Node>,
}

impl Model {
    fn add(&mut self, rel: &Path, node: Node) -> io::Result<()> {
        if rel.as_os_str().is_empty() || self.nodes.contains_key(rel) {
            return Err(io::ErrorKind::AlreadyExists.into());
        }
        self.nodes.insert(rel.to_path_buf(), node);
        Ok(())
    }
}

impl Tree for Model {
    type File = io::Sink;

    fn node(&self, rel: &Path) -> io::Result<Option<Node>> {
        if rel.as_os_str().is_empty() {
            return Ok(Some(Node::Dir));
        }
        Ok(self.nodes.get(rel).copied())
    }

    fn make_dir(&mut self, rel: &Path) -> io::Result<()> {
        self.add(rel, Node::Dir)
    }

    fn remove(&mut self, rel: &Path) -> io::Result<()> {
        match self.nodes.get(rel) {
            Some(Node::Dir) => Err(io::ErrorKind::IsADirectory.into()),
            Some(_) => {
                self.nodes.remove(rel);
                Ok(())
            }
            None => Err(io::ErrorKind::NotFound.into()),
        }
    }

    fn create_file(&mut self, rel: &Path, _mode: u32) -> io::Result<io::Sink> {
        self.add(rel, Node::File).map(|()| io::sink())
    }

    fn symlink(&mut self, rel: &Path, _target: &OsStr) -> io::Result<()> {
        self.add(rel, Node::Symlink)
    }

    fn hard_link(&mut self, original: &Path, rel: &Path) -> io::Result<()> {
        match self.nodes.get(original) {
            Some(Node::File) => self.add(rel, Node::File),
            _ => Err(io::ErrorKind::NotFound.into()),
        }
    }
}
