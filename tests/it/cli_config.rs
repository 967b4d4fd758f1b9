//! The `deployd` binary as an operator meets it: `check-config` on good and
//! bad files, and `serve` as the default command, stopped by SIGTERM.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The built daemon, with none of this process's `DEPLOYD_*` variables, so
/// the test sees only the layers it sets up.
fn deployd() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deployd"));
    for (var, _) in std::env::vars_os() {
        if var.to_string_lossy().starts_with("DEPLOYD_") {
            command.env_remove(var);
        }
    }
    command.kill_on_drop(true);
    command
}

async fn check_config(file: &Path) -> Output {
    let run = deployd()
        .args(["check-config", "--config"])
        .arg(file)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(30), run).await;
    output
        .expect("check-config finishes")
        .expect("deployd runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn check_config_names_an_unknown_key_and_exits_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("deployd.toml");
    std::fs::write(&file, "[deploy]\nleese = \"30s\"\n").expect("write config");

    let output = check_config(&file).await;
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("deploy.leese: unknown key"), "{stderr}");
    assert!(stderr.contains(&file.display().to_string()), "{stderr}");
}

#[tokio::test]
async fn check_config_prints_the_effective_config_without_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("deployd.toml");
    let hash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
    let config = format!(
        "[store]\nurl = \"postgres://deployd:hunter2@db:5432/deployd\"\n\
         [deploy]\nlease = \"42s\"\n\
         [[auth.tokens]]\nname = \"ci\"\nsha256 = \"{hash}\"\nrole = \"deploy\"\n"
    );
    std::fs::write(&file, config).expect("write config");

    let output = check_config(&file).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert!(
        stdout.contains("postgres://deployd:***@db:5432/deployd"),
        "{stdout}"
    );
    assert!(stdout.contains("lease = \"42s\""), "{stdout}");
    assert!(stdout.contains("[clusters.local.build]"), "{stdout}");
    for secret in ["hunter2", hash] {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "{stdout}{stderr}"
        );
    }
}

#[tokio::test]
async fn serve_is_the_default_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut child = deployd()
        .args(["--listen", "127.0.0.1:0"])
        .env("DEPLOYD_SERVER__DATA_DIR", dir.path())
        .env("DEPLOYD_LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("deployd starts");

    // The first JSON log line that says where it listens.
    let stderr = child.stderr.take().expect("piped stderr");
    let mut lines = BufReader::new(stderr).lines();
    let address = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await.expect("read stderr") {
            let event: serde_json::Value = serde_json::from_str(&line).expect("a JSON log line");
            if event["message"] == "listening" {
                return event["address"].as_str().expect("an address").to_string();
            }
        }
        panic!("deployd exited before listening");
    })
    .await
    .expect("deployd listens within 30s");
    // The bound address, not the requested port 0.
    let address: std::net::SocketAddr = address.parse().expect("a socket address");
    assert_ne!(address.port(), 0);

    let pid = child.id().expect("still running") as libc::pid_t;
    // SAFETY: kill(2) on a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("deployd stops after SIGTERM")
        .expect("wait for deployd");
    assert!(status.success(), "{status}");
}
