//! HTTPS: deployd serves TLS from `server.tls` and takes a new certificate
//! without dropping its listener (SIGHUP, or the files changing), keeping
//! the one it serves when the new one is bad; it warns when tokens would
//! cross the network in clear. deployctl speaks https with the system's CAs
//! and `--ca-cert`, says what to do when it does not trust the server, and
//! refuses a scheme it cannot speak. Certificates are made in the test.

use super::connections::closed;
use crate::support::app::*;
use crate::support::process::{Daemon, Log, free_port, serve_command, write_config};
use crate::support::tls::{TestCa, replace};
use deployd::client::{Client, ClientError};
use deployd::config::{Config, TlsConfig};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

fn serve_tls(config: &mut Config, (cert, key): (PathBuf, PathBuf)) {
    config.server.tls = TlsConfig {
        cert_file: Some(cert),
        key_file: Some(key),
    };
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// The real deployctl against `url`, with `env` set and nothing of ours.
async fn deployctl(url: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_deployctl"));
    command
        .args(args)
        .env("DEPLOYD_URL", url)
        .env_remove("DEPLOYD_TOKEN")
        .env_remove("DEPLOYD_CA_CERT")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(WAIT, command.output()).await;
    let output = output
        .expect("deployctl ends in time")
        .expect("deployctl runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn text(path: &Path) -> &str {
    path.to_str().expect("a UTF-8 temp path")
}

/// A fresh client (a fresh TLS handshake) trusting `ca`, and its health.
async fn healthz_trusting(url: &str, ca: &TestCa) -> Result<(), ClientError> {
    let client = Client::trusting(url, None, Some(ca.pem.as_bytes())).expect("client");
    client.healthz().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployctl_deploys_over_https_with_the_ca_it_is_given() {
    let ca = TestCa::new("deployd test CA");
    let dir = tempfile::tempdir().expect("temp dir");
    let pair = ca.write_server_pair(dir.path());
    let app = spawn_app_trusting(Backend::Sqlite, Some(ca.pem.as_bytes()), |config| {
        serve_tls(config, pair)
    })
    .await;
    assert!(app.url.starts_with("https://127.0.0.1:"), "{}", app.url);
    let ca_file = ca.write_pem(&dir.path().join("ca.pem"));
    let source = tempfile::tempdir().expect("temp dir");
    std::fs::write(source.path().join("index.html"), "over TLS").unwrap();

    let deploy = ["--ca-cert", text(&ca_file), "deploy", "--app", "web"];
    let deploy = [&deploy[..], &["--cluster", "local", text(source.path())]].concat();
    let run = deployctl(&app.url, &deploy, &[]).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("web v1 is active on local"),
        "{}",
        run.stdout
    );

    let status = ["status", "--app", "web", "--cluster", "local"];
    let run = deployctl(&app.url, &status, &[("DEPLOYD_CA_CERT", text(&ca_file))]).await;
    assert_eq!(run.code, Some(0), "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("v1"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployctl_refuses_an_untrusted_certificate_and_says_to_pass_ca_cert() {
    let ca = TestCa::new("deployd test CA");
    let dir = tempfile::tempdir().expect("temp dir");
    let pair = ca.write_server_pair(dir.path());
    let app = spawn_app_trusting(Backend::Sqlite, Some(ca.pem.as_bytes()), |config| {
        serve_tls(config, pair)
    })
    .await;
    let other = TestCa::new("another CA").write_pem(&dir.path().join("other.pem"));
    let status = ["status", "--app", "web", "--cluster", "local"];

    for extra in [&[][..], &["--ca-cert", text(&other)][..]] {
        let run = deployctl(&app.url, &[extra, &status[..]].concat(), &[]).await;
        // 2, not 3: retrying will not make the certificate trusted.
        assert_eq!(run.code, Some(2), "{extra:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr.contains("certificate is not trusted"),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("--ca-cert FILE"), "{}", run.stderr);
    }
    let run = deployctl(
        &app.url,
        &[&["--ca-cert", "/nonexistent/ca.pem"][..], &status[..]].concat(),
        &[],
    )
    .await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("--ca-cert /nonexistent/ca.pem: cannot read it"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn deployctl_refuses_a_scheme_it_cannot_speak_with_exit_2() {
    for server in [
        "ftp://127.0.0.1:7171",
        "unix:/run/deployd.sock",
        "mailto:ops@example.com",
    ] {
        let run = deployctl(
            server,
            &["status", "--app", "web", "--cluster", "local"],
            &[],
        )
        .await;
        assert_eq!(run.code, Some(2), "{server}: {}", run.stderr);
        let advice = "use http://HOST[:PORT] or https://HOST[:PORT]";
        assert!(run.stderr.contains(advice), "{server}: {}", run.stderr);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_is_served_without_a_restart() {
    let (first, second) = (TestCa::new("first CA"), TestCa::new("second CA"));
    let dir = tempfile::tempdir().expect("temp dir");
    let pair = first.write_server_pair(dir.path());
    let header_timeout = Duration::from_millis(300);
    let app = spawn_app_trusting(Backend::Sqlite, Some(first.pem.as_bytes()), |config| {
        serve_tls(config, pair);
        config.server.header_timeout = header_timeout;
    })
    .await;

    second.write_server_pair(dir.path());
    eventually_async("the new certificate to be served", || async {
        healthz_trusting(&app.url, &second).await.is_ok()
    })
    .await;
    let refused = healthz_trusting(&app.url, &first).await;
    assert!(matches!(refused, Err(ClientError::Tls(_))), "{refused:?}");

    // A connection that never starts its handshake is closed like a slow head.
    let address = app.url.trim_start_matches("https://");
    let start = std::time::Instant::now();
    let mut silent = tokio::net::TcpStream::connect(address)
        .await
        .expect("connect");
    let after = closed(&mut silent).await - start;
    assert!(after >= header_timeout, "closed after {after:?}");
}

/// The real daemon, serving HTTPS from `dir`'s pair on `listen`, logging
/// JSON at info, with `extra` config.
async fn tls_daemon(dir: &Path, ca: &TestCa, listen: &str, extra: &str) -> (Daemon, Log, String) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let tls = format!("[server.tls]\ncert_file = {cert:?}\nkey_file = {key:?}\n{extra}");
    let port = free_port();
    let mut command = serve_command(&write_config(dir, None, &tls), &format!("{listen}:{port}"));
    command
        .env("DEPLOYD_LOG", "info")
        .env("DEPLOYD_LOG_FORMAT", "json")
        .stderr(Stdio::piped());
    let url = format!("https://127.0.0.1:{port}");
    let client = Client::trusting(&url, None, Some(ca.pem.as_bytes())).expect("client");
    let mut daemon = Daemon::run(command, client).await;
    let log = Log::follow(daemon.take_stderr().expect("piped stderr"));
    (daemon, log, url)
}

fn hangup(daemon: &Daemon) {
    // SAFETY: kill(2) on the test's own child.
    assert_eq!(unsafe { libc::kill(daemon.pid(), libc::SIGHUP) }, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_and_a_bad_one_keeps_the_one_served() {
    let (first, second) = (TestCa::new("first CA"), TestCa::new("second CA"));
    let dir = tempfile::tempdir().expect("temp dir");
    let (cert, _) = first.write_server_pair(dir.path());
    let (daemon, mut log, url) = tls_daemon(dir.path(), &first, "127.0.0.1", "").await;
    let on_sighup = |message: &'static str| {
        move |event: &serde_json::Value| event["message"] == message && event["why"] == "SIGHUP"
    };

    replace(&cert, "not a certificate\n");
    hangup(&daemon);
    let kept = log
        .until(
            "keeping the certificate",
            on_sighup("keeping the TLS certificate being served"),
        )
        .await;
    let error = kept.last().unwrap()["error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("server.tls.cert_file") && error.contains("holds no PEM certificate"),
        "{error}"
    );
    healthz_trusting(&url, &first)
        .await
        .expect("the first pair is still served");

    second.write_server_pair(dir.path());
    hangup(&daemon);
    log.until("a reload", on_sighup("reloaded the TLS certificate"))
        .await;
    healthz_trusting(&url, &second)
        .await
        .expect("the new pair is served");
    let refused = healthz_trusting(&url, &first).await;
    assert!(matches!(refused, Err(ClientError::Tls(_))), "{refused:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_over_plain_http_on_a_public_address_are_warned_about() {
    let token = format!(
        "[[auth.tokens]]\nname = \"ci\"\nsha256 = \"{}\"\nrole = \"deploy\"\n",
        sha256_hex(b"ci-secret")
    );
    let warned = |lines: &[serde_json::Value]| {
        lines.iter().any(|event| {
            event["level"] == "WARN"
                && event["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("in clear"))
        })
    };
    let serving = |event: &serde_json::Value| event["message"] == "serving";

    // Plain HTTP on every address, with a token: warned.
    let dir = tempfile::tempdir().expect("temp dir");
    let port = free_port();
    let config = write_config(dir.path(), None, &token);
    let mut command = serve_command(&config, &format!("0.0.0.0:{port}"));
    command
        .env("DEPLOYD_LOG", "info")
        .env("DEPLOYD_LOG_FORMAT", "json")
        .stderr(Stdio::piped());
    let client = Client::new(&format!("http://127.0.0.1:{port}"), None).expect("client");
    let mut daemon = Daemon::run(command, client).await;
    let mut log = Log::follow(daemon.take_stderr().expect("piped stderr"));
    let lines = log.until("serving", serving).await;
    assert!(warned(&lines), "{lines:#?}");
    drop(daemon);

    // HTTPS on the same kind of address: not warned.
    let ca = TestCa::new("deployd test CA");
    let dir = tempfile::tempdir().expect("temp dir");
    ca.write_server_pair(dir.path());
    let (_daemon, mut log, _) = tls_daemon(dir.path(), &ca, "0.0.0.0", &token).await;
    let lines = log.until("serving", serving).await;
    assert!(!warned(&lines), "{lines:#?}");
}
