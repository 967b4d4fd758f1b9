//! Connections are bounded: more waiting connections than
//! `server.max_connections` give way to new requests, a slow request head
//! is closed after `server.header_timeout` and an idle connection after
//! `server.idle_timeout` (an answer in progress never is), and the daemon
//! raises its open-file limit at start.

use crate::support::app::*;
use crate::support::process::{Daemon, free_port, serve_command, write_config};
use deployd::client::Client;
use deployd::machine::State;
use futures::StreamExt;
use std::process::Command;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `GET /healthz` as bytes; without `whole`, its head stops short.
pub fn healthz(address: &str, whole: bool) -> Vec<u8> {
    let head = format!("GET /healthz HTTP/1.1\r\nHost: {address}\r\n");
    match whole {
        true => format!("{head}\r\n").into_bytes(),
        false => head.into_bytes(),
    }
}

/// Read one answer to `healthz`: a head and its small JSON body.
pub async fn read_answer(stream: &mut TcpStream) -> String {
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(WAIT, stream.read(&mut buf)).await;
        let n = read.expect("an answer in time").expect("read the answer");
        let text = String::from_utf8_lossy(&answer).into_owned();
        assert!(n > 0, "closed before answering: {text:?}");
        answer.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&answer);
        if text.contains("\r\n\r\n") && text.ends_with('}') {
            return text.into_owned();
        }
    }
}

/// Wait (within WAIT) until the server closes `stream`; answers when.
pub async fn closed(stream: &mut TcpStream) -> Instant {
    let mut buf = [0u8; 1024];
    loop {
        let read = tokio::time::timeout(WAIT, stream.read(&mut buf)).await;
        match read.expect("the server closes the connection in time") {
            Ok(0) | Err(_) => return Instant::now(),
            Ok(_) => {}
        }
    }
}

/// Whether the server has closed `stream`, without waiting.
fn is_closed(stream: &TcpStream) -> bool {
    let mut buf = [0u8; 64];
    match stream.try_read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(error) => error.kind() != std::io::ErrorKind::WouldBlock,
    }
}

fn address(url: &str) -> String {
    let (_, address) = url.split_once("://").expect("a URL");
    address.to_string()
}

/// A cluster whose build waits for `gate` to exist.
fn gated(gate: &std::path::Path) -> deployd::config::ClusterConfig {
    let build = format!("while [ ! -e '{}' ]; do sleep 0.05; done", gate.display());
    sh_cluster(Some(&build), None, Some("echo activated"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_the_cap_give_way_and_health_and_deploys_still_work() {
    const CAP: usize = 8;
    // Long timeouts: only the cap can make room here.
    let app = spawn_app(Backend::Sqlite, |config| {
        config.server.max_connections = CAP;
        config.server.header_timeout = Duration::from_secs(600);
        config.server.idle_timeout = Duration::from_secs(600);
    })
    .await;
    let address = address(&app.url);
    // 12 waiting connections: silent, half a request head, idle after an answer.
    let mut held = Vec::new();
    for i in 0..12 {
        let mut stream = TcpStream::connect(&address).await.expect("connect");
        match i % 3 {
            0 => {}
            1 => stream.write_all(&healthz(&address, false)).await.unwrap(),
            _ => {
                stream.write_all(&healthz(&address, true)).await.unwrap();
                let answer = read_answer(&mut stream).await;
                assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            }
        }
        held.push(stream);
    }

    app.client.healthz().await.expect("/healthz past the cap");
    app.client.readyz().await.expect("/readyz past the cap");
    let deployment = app.deploy("web", "local", "past the cap").await;
    assert_eq!(app.finished(deployment.id).await.state, State::Succeeded);
    // The server keeps at most CAP open: the ones waiting longest went.
    eventually("the oldest waiting connections to be closed", || {
        held.iter().filter(|s| is_closed(s)).count() >= held.len() - CAP
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_head_closes_after_header_timeout_an_idle_connection_after_idle_timeout() {
    let header_timeout = Duration::from_millis(300);
    let idle_timeout = Duration::from_secs(2);
    let gates = tempfile::tempdir().expect("temp dir");
    let gate = gates.path().join("open");
    let app = spawn_app(Backend::Sqlite, |config| {
        config.server.header_timeout = header_timeout;
        config.server.idle_timeout = idle_timeout;
        config.clusters.insert("gated".into(), gated(&gate));
    })
    .await;
    // A deploy watched over a stream that stays silent past both timeouts.
    let source = app.upload(&[("index.html", "slow", 0o644)]).await;
    let request = deploy_request(&source);
    let deploy = app.client.deploy("web", "gated", &request);
    let deployment = deploy.await.expect("deploy accepted");
    let mut events = app
        .client
        .events(deployment.id, None)
        .await
        .expect("stream");

    let address = address(&app.url);
    let start = Instant::now();
    let mut silent = TcpStream::connect(&address).await.expect("connect");
    let mut half = TcpStream::connect(&address).await.expect("connect");
    half.write_all(&healthz(&address, false)).await.unwrap();
    let mut idle = TcpStream::connect(&address).await.expect("connect");
    idle.write_all(&healthz(&address, true)).await.unwrap();
    read_answer(&mut idle).await;
    let answered = Instant::now();

    for stream in [&mut silent, &mut half] {
        let after = closed(stream).await - start;
        assert!(after >= header_timeout, "closed after {after:?}");
        assert!(
            after < idle_timeout,
            "closed after {after:?}: not by header_timeout"
        );
    }
    let after = closed(&mut idle).await - answered;
    // Not header_timeout: an idle connection waits for idle_timeout.
    assert!(after >= idle_timeout / 2, "closed after {after:?}");

    std::fs::write(&gate, "").expect("open the gate");
    let watch = async {
        while let Some(event) = events.next().await {
            let event = event.expect("the stream was not cut");
            if event.data.is_final() {
                return;
            }
        }
        panic!("the stream ended before the deployment did");
    };
    tokio::time::timeout(WAIT, watch)
        .await
        .expect("the deploy ends in time");
    let ended = app.client.get(deployment.id).await.expect("get");
    assert_eq!(ended.state, State::Succeeded);
}

/// Start the real daemon under an open-file limit of (soft, hard).
fn with_fd_limit(command: &mut Command, soft: u64, hard: u64) {
    use std::os::unix::process::CommandExt;
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: between fork and exec the closure only calls setrlimit(2),
    // which is async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_open_file_limit_is_raised_to_the_hard_limit_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), None, "");
    let port = free_port();
    let mut command = serve_command(&config, &format!("127.0.0.1:{port}"));
    with_fd_limit(&mut command, 256, 512);
    let client = Client::new(&format!("http://127.0.0.1:{port}"), None).expect("client");
    let daemon = Daemon::run(command, client).await;

    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).unwrap();
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .expect("a Max open files line");
    let values: Vec<&str> = line.split_whitespace().skip(3).take(2).collect();
    assert_eq!(values, ["512", "512"], "{line}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_idle_connections_under_a_192_file_limit_leave_health_and_deploys_working() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), None, "");
    let port = free_port();
    let mut command = serve_command(&config, &format!("127.0.0.1:{port}"));
    with_fd_limit(&mut command, 192, 192);
    // Long timeouts: only the cap, lowered to fit the limit, can make room.
    command
        .env("DEPLOYD_SERVER__HEADER_TIMEOUT", "10m")
        .env("DEPLOYD_SERVER__IDLE_TIMEOUT", "10m");
    let url = format!("http://127.0.0.1:{port}");
    let _daemon = Daemon::run(command, Client::new(&url, None).expect("client")).await;

    let address = address(&url);
    let mut held = Vec::new();
    for _ in 0..200 {
        held.push(TcpStream::connect(&address).await.expect("connect"));
    }
    let client = Client::new(&url, None).expect("client");
    let health = tokio::time::timeout(WAIT, client.healthz()).await;
    health.expect("/healthz answers in time").expect("/healthz");

    let source = tempfile::tempdir().expect("temp dir");
    std::fs::write(source.path().join("index.html"), "under pressure").unwrap();
    let deployctl = tokio::process::Command::new(env!("CARGO_BIN_EXE_deployctl"))
        .args(["deploy", "--app", "web", "--cluster", "local"])
        .arg(source.path())
        .env("DEPLOYD_URL", &url)
        .env_remove("DEPLOYD_TOKEN")
        .env_remove("DEPLOYD_CA_CERT")
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(WAIT, deployctl).await;
    let output = output
        .expect("deployctl ends in time")
        .expect("deployctl runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
    assert!(stdout.contains("web v1 is active on local"), "{stdout}");
}

/// A client that fills every slot with requests and never reads the
/// answers (pipelined, no token needed) holds them only until its answers
/// have waited `idle_timeout` for it: then its connections close, and
/// `/healthz` and a deploy are served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_whose_answers_are_never_read_are_closed_after_idle_timeout() {
    const CAP: usize = 6;
    let app = spawn_app(Backend::Sqlite, |config| {
        config.server.max_connections = CAP;
        config.server.idle_timeout = Duration::from_secs(2);
    })
    .await;
    let address = address(&app.url);
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {address}\r\n\r\n");
    let mut hogs = Vec::new();
    for _ in 0..CAP {
        // A small receive buffer, and requests until the server stops
        // reading them: its answers soon have nowhere to go.
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
        let stream = socket
            .connect(address.parse().unwrap())
            .await
            .expect("connect");
        let mut sent = 0;
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(3) {
            match stream.try_write(request.as_bytes()) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        assert!(sent > 0);
        hogs.push(stream);
    }
    // Before the fix every slot stayed busy for ever and new connections
    // were reset; now the hogs go after idle_timeout (2 s).
    let fresh = || Client::new(&app.url, None).expect("client");
    let started = Instant::now();
    let mut served = false;
    // Every slot free again: CAP clients each served while all hold their
    // connection (one served alone may have taken the first freed slot
    // while other hogs still held theirs).
    while started.elapsed() < WAIT && !served {
        let clients: Vec<Client> = (0..CAP).map(|_| fresh()).collect();
        let answers = futures::future::join_all(
            (clients.iter()).map(|c| tokio::time::timeout(Duration::from_secs(1), c.healthz())),
        )
        .await;
        served = answers.iter().all(|answer| matches!(answer, Ok(Ok(()))));
    }
    assert!(served, "/healthz is served again on every slot");
    let waited = started.elapsed();
    let client = fresh();
    let tar = tar_of(&[("index.html", "after the hogs", 0o644)]);
    let sha = sha256_hex(&tar);
    client.put_source(&sha, tar).await.expect("upload");
    let d = client
        .deploy("web", "local", &deploy_request(&sha))
        .await
        .expect("deploy");
    let events = collect_events(&client, d.id, None).await;
    assert!(
        format!("{:?}", events.last()).contains("Succeeded"),
        "{events:?}"
    );
    assert!(waited < WAIT, "served again after {waited:?}");
    drop(hogs);
    app.stop().await;
}
