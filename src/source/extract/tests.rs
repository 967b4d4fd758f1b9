//! The extraction rules, one hostile archive at a time, plus a property
//! test over random entry lists.

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

/// Extracts `archive`, expecting a refusal that leaves nothing behind, and
/// checks that [`scan`] refuses it for the same reason.
fn rejected(archive: &[u8], limits: &ExtractLimits) -> SourceError {
    let scene = scene(archive);
    let scanned = scan(&scene.archive, limits).expect_err("the scan should refuse it too");
    let err =
        extract(&scene.archive, &scene.dest, limits).expect_err("extraction should be refused");
    assert_eq!(
        scanned.to_string(),
        err.to_string(),
        "scan and extract disagree"
    );
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
        assert_eq!(scan(&scene.archive, &LIMITS).unwrap(), stats);
        assert_eq!(scan(&scene.archive, &LIMITS).unwrap(), stats);
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
fn overlong_names_paths_and_targets_are_refused() {
    let cases = [
        (format!("{}/f", "n".repeat(256)), None),
        (format!("{}/f", ["d"; 1600].join("/")), None),
        ("link".to_string(), Some(["d"; 1600].join("/"))),
    ];
    for (path, target) in cases {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = Header::new_gnu();
        header.set_size(0);
        match &target {
            None => builder.append_data(&mut header, &path, io::empty()),
            Some(target) => {
                header.set_entry_type(EntryType::Symlink);
                builder.append_link(&mut header, &path, target)
            }
        }
        .unwrap();
        let err = rejected(&builder.into_inner().unwrap(), &LIMITS);
        assert_unsafe(err, &path);
    }
    // Just within the limits is fine.
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = Header::new_gnu();
    header.set_size(0);
    let path = format!("{}/{}", "n".repeat(255), ["d"; 1400].join("/"));
    builder
        .append_data(&mut header, &path, io::empty())
        .unwrap();
    let scene = scene(&builder.into_inner().unwrap());
    extract(&scene.archive, &scene.dest, &LIMITS).unwrap();
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
    assert_eq!(scan(&scene.archive, &LIMITS).unwrap(), stats);
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
fn too_many_entries_is_refused() {
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
    assert!(
        matches!(err, SourceError::TooManyEntries { limit: 3 }),
        "{err:?}"
    );
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

/// Random and hostile entry lists: whatever the archive, the scan and the
/// extraction agree, nothing is written outside `dest`, a refusal leaves no
/// `dest`, and every link in an accepted extraction resolves inside it.
/// Absolute names point into the scene's root, so a bug would show up there
/// instead of writing to the real filesystem.
mod fuzz {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    struct Spec {
        kind: EntryType,
        absolute: bool,
        path: Vec<&'static str>,
        trailing_slash: bool,
        link_absolute: bool,
        link: Vec<&'static str>,
        data: Vec<u8>,
    }

    /// Mostly names, so archives get past their first entry; sometimes the
    /// parts that make paths hostile.
    fn part() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            8 => prop::sample::select(vec!["a", "b", "c"]),
            1 => Just(".."),
            1 => Just("."),
            1 => Just(""),
        ]
    }

    fn kind() -> impl Strategy<Value = EntryType> {
        prop_oneof![
            12 => Just(EntryType::Regular),
            8 => Just(EntryType::Directory),
            8 => Just(EntryType::Symlink),
            6 => Just(EntryType::Link),
            1 => Just(EntryType::Fifo),
            1 => Just(EntryType::Char),
            1 => Just(EntryType::Continuous),
            1 => Just(EntryType::GNUSparse),
        ]
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            kind(),
            prop::bool::weighted(0.03),
            prop::collection::vec(part(), 1..=3),
            prop::bool::weighted(0.05),
            prop::bool::weighted(0.05),
            prop::collection::vec(part(), 1..=3),
            prop::collection::vec(any::<u8>(), 0..24),
        )
            .prop_map(
                |(kind, absolute, path, trailing_slash, link_absolute, link, data)| Spec {
                    kind,
                    absolute,
                    path,
                    trailing_slash,
                    link_absolute,
                    link,
                    data,
                },
            )
    }

    /// How the archive is damaged or wrapped after it is built.
    #[derive(Debug, Clone)]
    struct Damage {
        flips: Vec<(usize, u8)>,
        truncate: Option<usize>,
        gzip: bool,
    }

    fn damage() -> impl Strategy<Value = Damage> {
        (
            prop_oneof![
                6 => Just(Vec::new()),
                1 => prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            ],
            prop::option::weighted(0.05, any::<usize>()),
            any::<bool>(),
        )
            .prop_map(|(flips, truncate, gzip)| Damage {
                flips,
                truncate,
                gzip,
            })
    }

    /// `PROPTEST_CASES` for a long run, else `default` (sized for the suite).
    fn cases(default: u32) -> u32 {
        std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    fn render(parts: &[&str], absolute: bool, root: &Path) -> Vec<u8> {
        let mut text = parts.join("/");
        if absolute {
            text = format!("{}/{text}", root.display());
        }
        text.into_bytes()
    }

    fn build(specs: &[Spec], damage: &Damage, root: &Path) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for spec in specs {
            let mut name = render(&spec.path, spec.absolute, root);
            if spec.trailing_slash {
                name.push(b'/');
            }
            let mut header = raw_header(&name, spec.kind, spec.data.len() as u64);
            let link = render(&spec.link, spec.link_absolute, root);
            header.set_link_name_literal(&link).unwrap();
            header.set_cksum();
            builder.append(&header, &spec.data[..]).unwrap();
        }
        let mut data = builder.into_inner().unwrap();
        for (at, byte) in &damage.flips {
            let at = at % data.len();
            data[at] ^= byte;
        }
        if let Some(at) = damage.truncate {
            data.truncate(at % (data.len() + 1));
        }
        if damage.gzip { gzip(&data) } else { data }
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: cases(1000),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn nothing_escapes_and_scan_agrees(
            specs in prop::collection::vec(spec(), 0..10),
            damage in damage(),
        ) {
            let root = tempfile::tempdir().unwrap();
            fs::create_dir_all(root.path().join("a/b")).unwrap();
            let dest = root.path().join("a/b/dest");
            let archive_dir = tempfile::tempdir().unwrap();
            let archive = archive_dir.path().join("source.tar");
            fs::write(&archive, build(&specs, &damage, root.path())).unwrap();
            let limits = ExtractLimits { max_bytes: 100, max_entries: 6 };

            let scanned = scan(&archive, &limits);
            let extracted = extract(&archive, &dest, &limits);
            // An archive can be refused, never make the server fail.
            prop_assert!(!matches!(scanned, Err(SourceError::Io(_))), "{scanned:?}");
            match (&scanned, &extracted) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(a), Err(b)) => prop_assert_eq!(a.to_string(), b.to_string()),
                _ => prop_assert!(false, "scan {scanned:?} but extract {extracted:?}"),
            }
            for path in tree(root.path()) {
                prop_assert!(
                    path == "a" || path == "a/b" || path == "a/b/dest" || path.starts_with("a/b/dest/"),
                    "{path} was written outside dest"
                );
            }
            if extracted.is_err() {
                prop_assert!(!dest.exists(), "a refused extraction left dest behind");
                return Ok(());
            }
            let inside = dest.canonicalize().unwrap();
            for path in tree(&dest) {
                if let Ok(resolved) = dest.join(&path).canonicalize() {
                    prop_assert!(resolved.starts_with(&inside), "{path} resolves to {}", resolved.display());
                }
            }
        }
    }
}
