//! What an upload may contain: hostile archives, bombs and oversized or
//! mislabelled bodies are refused at `PUT`, and nothing of them is kept.

use super::*;
use crate::support::app::*;
use std::io::Write;
use tar::{EntryType, Header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A header with `name` written raw, so `..` and absolute paths get through.
fn raw_header(name: &str, kind: EntryType, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o644);
    header
}

fn link(name: &str, kind: EntryType, target: &str) -> Header {
    let mut header = raw_header(name, kind, 0);
    header.set_link_name_literal(target).unwrap();
    header
}

type Entries<'a> = Vec<(Header, &'a [u8])>;

/// A tar of `(header, data)` pairs, checksums filled in, not finished with
/// end blocks when `finish` is false (a bomb needs none).
fn archive(entries: Entries, finish: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for (mut header, data) in entries {
        header.set_cksum();
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    if finish {
        out.resize(out.len() + 1024, 0);
    }
    out
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// Upload `bytes` under their own digest; expect `status`/`code`; check that
/// nothing changed on disk and the source is unknown afterwards.
async fn refused(app: &TestApp, what: &str, bytes: Vec<u8>, status: u16, code: &str) -> Value {
    let before = files(app);
    let sha = sha256_hex(&bytes);
    let details = expect_error(app, app.client.put_source(&sha, bytes).await, status, code);
    assert_eq!(files(app), before, "{what} left something behind");
    assert!(!app.client.source_exists(&sha).await.unwrap(), "{what}");
    let deploy = app
        .client
        .deploy("web", "local", &deploy_request(&sha))
        .await;
    let missing = expect_error(app, deploy, 404, "not_found");
    assert_eq!(missing["kind"], "source", "{what}");
    details
}

#[tokio::test]
async fn hostile_archives_are_400_at_upload_and_leave_nothing() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let outside = app.data_dir.parent().unwrap().join("escaped");
    let outside = outside.display().to_string();
    let under_root = format!("root{outside}");
    let hostile: Vec<(&str, Entries)> = vec![
        (
            "dot-dot",
            vec![(raw_header("../../etc/x", EntryType::Regular, 2), b"hi")],
        ),
        (
            "absolute",
            vec![(raw_header(&outside, EntryType::Regular, 2), b"hi")],
        ),
        (
            "symlink to / then a file under it",
            vec![
                (link("root", EntryType::Symlink, "/"), b""),
                (raw_header(&under_root, EntryType::Regular, 2), b"hi"),
            ],
        ),
        (
            "a file through an earlier inside symlink",
            vec![
                (raw_header("sub", EntryType::Directory, 0), b""),
                (link("inner", EntryType::Symlink, "sub"), b""),
                (raw_header("inner/x", EntryType::Regular, 2), b"hi"),
            ],
        ),
        (
            "symlink climbing out",
            vec![(link("up", EntryType::Symlink, "../.."), b"")],
        ),
        (
            "hard link to /etc/passwd",
            vec![(link("pw", EntryType::Link, "/etc/passwd"), b"")],
        ),
        (
            "hard link climbing out",
            vec![(link("pw", EntryType::Link, "../x"), b"")],
        ),
        ("fifo", vec![(raw_header("fifo", EntryType::Fifo, 0), b"")]),
        (
            "char device",
            vec![(raw_header("null", EntryType::Char, 0), b"")],
        ),
        (
            "block device",
            vec![(raw_header("sda", EntryType::Block, 0), b"")],
        ),
    ];
    for (what, entries) in hostile {
        let tar = archive(entries, true);
        for bytes in [gzip(&tar), tar] {
            let details = refused(&app, what, bytes, 400, "invalid_argument").await;
            assert_eq!(details["field"], "source", "{what}");
        }
    }
    let garbage = vec![0x42; 3000];
    let details = refused(&app, "not a tar", garbage, 400, "invalid_argument").await;
    assert_eq!(details["field"], "source");
    assert!(!std::path::Path::new(&outside).exists());
    assert!(!std::path::Path::new("/etc/x").exists());
    assert_eq!(history_len(&app, "web").await, 0);
}

#[tokio::test]
async fn a_gzip_bomb_is_413_at_its_first_header() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    // 10 GB declared; 8 MiB of zeros actually follow (a few KiB on the wire),
    // then the archive just ends: the header alone must stop it.
    let zeros = vec![0u8; 8 << 20];
    let header = raw_header("zeros", EntryType::Regular, 10_000_000_000);
    let bomb = gzip(&archive(vec![(header, &zeros)], false));
    assert!(bomb.len() < 64 << 10, "{} bytes on the wire", bomb.len());
    let started = std::time::Instant::now();
    let details = refused(&app, "gzip bomb", bomb, 413, "too_large").await;
    assert_eq!(details["limit"], 1u64 << 30, "the extracted_bytes limit");
    assert!(started.elapsed() < WAIT);
}

#[tokio::test]
async fn extracted_bytes_and_entries_over_their_limits_are_413() {
    let app = spawn_app(Backend::Sqlite, |config| {
        config.limits.extracted_bytes = 1000;
        config.limits.extracted_entries = 3;
    })
    .await;
    let big = tar_of(&[
        ("a", &"x".repeat(600), 0o644),
        ("b", &"y".repeat(600), 0o644),
    ]);
    let details = refused(&app, "over extracted_bytes", big, 413, "too_large").await;
    assert_eq!(details["limit"], 1000);
    let files4 = [
        ("a", "", 0o644),
        ("b", "", 0o644),
        ("c", "", 0o644),
        ("d", "", 0o644),
    ];
    let details = refused(
        &app,
        "over the entry cap",
        tar_of(&files4),
        413,
        "too_large",
    )
    .await;
    assert_eq!(details["limit"], 3);
    app.upload(&files4[..3]).await; // exactly the cap is fine
}

#[tokio::test]
async fn an_upload_one_byte_over_the_limit_is_413() {
    let source = tar_of(&[("index.html", "hello", 0o644)]);
    let limit = source.len() as u64;
    let app = spawn_app(Backend::Sqlite, move |config| {
        config.limits.upload_bytes = limit
    })
    .await;
    let mut over = source.clone();
    over.push(0);
    let details = refused(&app, "one byte over", over.clone(), 413, "too_large").await;
    assert_eq!(details["limit"], limit);

    // Without a Content-Length the limit holds on the streamed bytes.
    let before = files(&app);
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        over.chunks(100).map(|c| Ok(c.to_vec())).collect();
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let streamed = app.client.put_source(&sha256_hex(&over), body).await;
    expect_error(&app, streamed, 413, "too_large");
    assert_eq!(files(&app), before);

    // A declared length over the limit is answered before any body is sent.
    let address = app.url.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "PUT /v1/sources/{} HTTP/1.1\r\nhost: {address}\r\n\
         content-length: 10000000000\r\n\r\n",
        sha256_hex(b"never sent")
    );
    socket.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 1024];
    let read = tokio::time::timeout(WAIT, socket.read(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer[..read.unwrap().unwrap()]).into_owned();
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("too_large"), "{answer}");
    assert_eq!(files(&app), before);

    let sha = sha256_hex(&source);
    let stored = app.client.put_source(&sha, source).await.unwrap();
    assert_eq!(stored.size, limit, "exactly the limit is fine");
}

#[tokio::test]
async fn a_wrong_digest_is_400_and_leaves_nothing() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let before = files(&app);
    let source = tar_of(&[("index.html", "hello", 0o644)]);
    let claimed = sha256_hex(b"something else");
    let put = app.client.put_source(&claimed, source.clone()).await;
    let details = expect_error(&app, put, 400, "invalid_argument");
    assert_eq!(details["field"], "sha256");
    assert_eq!(files(&app), before);
    assert!(!app.client.source_exists(&claimed).await.unwrap());
    assert!(
        !app.client
            .source_exists(&sha256_hex(&source))
            .await
            .unwrap()
    );
    for bad in ["ABC", "../../../etc/passwd", &"g".repeat(64)] {
        let put = app.client.put_source(bad, source.clone()).await;
        let details = expect_error(&app, put, 400, "invalid_argument");
        assert_eq!(details["field"], "sha256", "{bad}");
    }
    assert_eq!(files(&app), before);
}
