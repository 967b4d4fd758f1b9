//! The packer on real directories, and git_info on a real repository.

use super::*;
use flate2::read::GzDecoder;
use std::fs::File;
use std::time::{Duration, SystemTime};

fn write(root: &Path, relative: &str, text: &str) {
    let path = root.join(relative);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, text).unwrap();
}

fn chmod(root: &Path, relative: &str, mode: u32) {
    fs::set_permissions(root.join(relative), fs::Permissions::from_mode(mode)).unwrap();
}

/// (path, type, mode, uid, gid, mtime, user name, link target) per entry.
type Row = (
    String,
    EntryType,
    u32,
    u64,
    u64,
    u64,
    String,
    Option<String>,
);

fn entries(packed: &Packed) -> Vec<Row> {
    let mut archive = tar::Archive::new(GzDecoder::new(packed.bytes.as_slice()));
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            let header = entry.header();
            (
                entry
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_end_matches('/')
                    .to_string(),
                header.entry_type(),
                header.mode().unwrap(),
                header.uid().unwrap(),
                header.gid().unwrap(),
                header.mtime().unwrap(),
                header.username().unwrap().unwrap_or("").to_string(),
                entry
                    .link_name()
                    .unwrap()
                    .map(|target| target.to_string_lossy().to_string()),
            )
        })
        .collect()
}

fn paths(packed: &Packed) -> Vec<String> {
    entries(packed).into_iter().map(|row| row.0).collect()
}

#[test]
fn the_same_tree_packs_to_the_same_bytes() {
    let first = tempfile::tempdir().unwrap();
    write(first.path(), "b/two.txt", "two");
    write(first.path(), "a.txt", "one");
    write(first.path(), "b/a/three.txt", "three");
    let packed = pack_dir(first.path()).unwrap();
    assert_eq!(pack_dir(first.path()).unwrap().sha256, packed.sha256);
    assert_eq!(packed.sha256, hex::encode(Sha256::digest(&packed.bytes)));
    assert_eq!(packed.files, 3);

    // Touched files still pack the same.
    let then = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
    for file in ["a.txt", "b/two.txt"] {
        let file = File::options()
            .write(true)
            .open(first.path().join(file))
            .unwrap();
        file.set_modified(then).unwrap();
    }
    assert_eq!(pack_dir(first.path()).unwrap().sha256, packed.sha256);

    // So does the same content created in another order elsewhere.
    let second = tempfile::tempdir().unwrap();
    write(second.path(), "b/a/three.txt", "three");
    write(second.path(), "a.txt", "one");
    write(second.path(), "b/two.txt", "two");
    assert_eq!(pack_dir(second.path()).unwrap().bytes, packed.bytes);

    // And a change is a different digest.
    write(second.path(), "a.txt", "one!");
    assert_ne!(pack_dir(second.path()).unwrap().sha256, packed.sha256);
}

#[test]
fn headers_carry_no_time_owner_or_name() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "app.txt", "hi");
    let packed = pack_dir(dir.path()).unwrap();
    // gzip: no flags (so no file name), a zero mtime.
    assert_eq!(packed.bytes[3], 0);
    assert_eq!(packed.bytes[4..8], [0, 0, 0, 0]);
    for (path, _, _, uid, gid, mtime, user, _) in entries(&packed) {
        assert_eq!((uid, gid, mtime, user.as_str()), (0, 0, 0, ""), "{path}");
    }
}

#[test]
fn ignored_files_and_git_are_left_out() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "main.sh", "echo hi");
    write(root, ".gitignore", "*.log\n/secret.txt\n");
    write(root, "build.log", "noise");
    write(root, "secret.txt", "hunter2");
    write(root, "sub/.gitignore", "local.conf\n");
    write(root, "sub/local.conf", "mine");
    write(root, "sub/keep.conf", "ours");
    write(root, "sub/deep.log", "noise");
    write(root, ".deployignore", "node_modules/\n");
    write(root, "node_modules/left/index.js", "big");
    write(root, ".git/HEAD", "ref: refs/heads/main");
    write(root, "vendor/.git", "gitdir: ../.git/modules/vendor");
    write(root, "vendor/lib.sh", "true");

    let packed = pack_dir(root).unwrap();
    assert_eq!(
        paths(&packed),
        [
            ".deployignore",
            ".gitignore",
            "main.sh",
            "sub",
            "sub/.gitignore",
            "sub/keep.conf",
            "vendor",
            "vendor/lib.sh",
        ]
    );
    assert_eq!(packed.files, 6);
}

#[test]
fn extra_patterns_leave_out_more_as_gitignore_lines_would() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, ".gitignore", "*.log\n");
    write(root, "app.py", "print()");
    write(root, "debug.log", "noise");
    write(root, "notes.md", "mine");
    write(root, "docs/guide.md", "ours");
    write(root, "docs/README.md", "ours");
    write(root, "fixtures/big.bin", "big");
    write(root, "src/fixtures/small.bin", "small");
    let patterns = ["*.md", "!docs/README.md", "/fixtures/"].map(String::from);

    let packed = pack_dir_ignoring(root, &patterns).unwrap();
    assert_eq!(
        paths(&packed),
        [
            ".gitignore",
            "app.py",
            "docs",
            "docs/README.md",
            "src",
            "src/fixtures",
            "src/fixtures/small.bin",
        ]
    );
    assert_eq!(
        pack_dir_ignoring(root, &[]).unwrap().sha256,
        pack_dir(root).unwrap().sha256,
        "no patterns, the same pack"
    );
}

#[test]
fn a_bad_extra_pattern_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let error = pack_dir_ignoring(dir.path(), &["src/[z-a]".to_string()]).unwrap_err();
    assert!(error.to_string().contains("src/[z-a]"), "{error}");
}

#[test]
fn modes_are_normalized_and_the_executable_bit_kept() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "run.sh", "#!/bin/sh");
    write(dir.path(), "private.txt", "x");
    write(dir.path(), "shared.txt", "x");
    write(dir.path(), "tools/go", "x");
    chmod(dir.path(), "run.sh", 0o700);
    chmod(dir.path(), "private.txt", 0o600);
    chmod(dir.path(), "shared.txt", 0o666);
    chmod(dir.path(), "tools/go", 0o711);
    chmod(dir.path(), "tools", 0o700);
    let modes: Vec<(String, u32)> = entries(&pack_dir(dir.path()).unwrap())
        .into_iter()
        .map(|row| (row.0, row.2))
        .collect();
    let expected = [
        ("private.txt", 0o644),
        ("run.sh", 0o755),
        ("shared.txt", 0o644),
        ("tools", 0o755),
        ("tools/go", 0o755),
    ];
    let expected: Vec<(String, u32)> = expected
        .iter()
        .map(|(path, mode)| (path.to_string(), *mode))
        .collect();
    assert_eq!(modes, expected);
}

#[test]
fn symlinks_stay_symlinks() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "real.txt", "content");
    std::os::unix::fs::symlink("real.txt", dir.path().join("link.txt")).unwrap();
    let rows = entries(&pack_dir(dir.path()).unwrap());
    let link = rows.iter().find(|row| row.0 == "link.txt").unwrap();
    assert_eq!(link.1, EntryType::Symlink);
    assert_eq!(link.7.as_deref(), Some("real.txt"));
}

#[test]
fn a_file_is_not_a_directory() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "file", "x");
    let error = pack_dir(&dir.path().join("file")).unwrap_err();
    assert!(matches!(error, PackError::NotADirectory(_)), "{error}");
    let missing = pack_dir(&dir.path().join("missing")).unwrap_err();
    assert!(matches!(missing, PackError::Io { .. }), "{missing}");
}

#[test]
fn credentials_are_stripped_from_remote_urls() {
    let cases = [
        ("https://user:pass@host/x", "https://host/x"),
        (
            "https://ghp_token@github.com/o/r.git",
            "https://github.com/o/r.git",
        ),
        ("http://u:p@ss@host:8080/x?y=1", "http://host:8080/x?y=1"),
        ("HTTPS://u:p@host", "HTTPS://host"),
        ("ssh://git:secret@host/x.git", "ssh://git@host/x.git"),
        ("ssh://git@host/x.git", "ssh://git@host/x.git"),
        ("ssh://:secret@host/x.git", "ssh://host/x.git"),
        ("git@github.com:o/r.git", "git@github.com:o/r.git"),
        ("https://github.com/o/r", "https://github.com/o/r"),
        ("https://host/a@b", "https://host/a@b"),
        ("/srv/git/r.git", "/srv/git/r.git"),
    ];
    for (url, expected) in cases {
        assert_eq!(strip_credentials(url), expected, "{url}");
    }
}

/// Run git in `dir` with a fixed identity, failing the test on error.
fn run_git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "user.name=Ada",
            "-c",
            "user.email=ada@example.com",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

#[test]
fn git_info_reads_the_work_tree() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    assert_eq!(git_info(root), None, "not a work tree yet");

    run_git(root, &["init", "-q", "-b", "main"]);
    let empty = git_info(root).unwrap();
    assert_eq!((empty.sha, empty.branch.as_deref()), (None, Some("main")));

    write(root, "app/main.sh", "echo hi");
    run_git(root, &["add", "."]);
    run_git(root, &["commit", "-q", "-m", "First deployable"]);
    run_git(
        root,
        &[
            "remote",
            "add",
            "origin",
            "https://bot:tok@git.example.com/o/r.git",
        ],
    );
    let info = git_info(&root.join("app")).unwrap();
    assert_eq!(info.sha.as_deref().map(str::len), Some(40));
    assert_eq!(info.branch.as_deref(), Some("main"));
    assert_eq!(info.message.as_deref(), Some("First deployable"));
    assert_eq!(info.author.as_deref(), Some("Ada <ada@example.com>"));
    assert_eq!(
        info.repository.as_deref(),
        Some("https://git.example.com/o/r.git")
    );
    assert!(!info.dirty);

    write(root, "app/main.sh", "echo changed");
    assert!(git_info(&root.join("app")).unwrap().dirty);
}
