//! The source store against a real temp directory.

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
    let store = SourceStore::new(dir.path().join("sources"), 1 << 20, LIMITS).unwrap();
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
    assert_eq!(
        files_in(&dir.path().join("sources")),
        [format!("{digest}.tar")]
    );
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
    assert!(matches!(err, SourceError::DigestMismatch { ref actual, .. } if *actual == sha(&tar)));
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
