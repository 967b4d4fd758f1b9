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

#[tokio::test]
async fn check_config_masks_cluster_env_values_unless_declared_not_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("deployd.toml");
    std::fs::write(&file, "[clusters.local.env]\nAPI_TOKEN = \"tok-7d1e9a\"\n").expect("write");
    let output = check_config(&file).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    assert!(!stdout.contains("tok-7d1e9a"), "{stdout}");
    assert!(stdout.contains("API_TOKEN = \"***\""), "{stdout}");

    let token_file = dir.path().join("registry-token");
    std::fs::write(&token_file, "from-a-file-5c2b\n").expect("write the secret");
    let config = format!(
        "[clusters.local.env]\n\
         API_TOKEN = \"tok-7d1e9a\"\n\
         REGION = {{ value = \"eu-west-1\", secret = false }}\n\
         REGISTRY = {{ value = \"https://bot:hunter22@registry.example\", secret = false }}\n\
         REGISTRY_TOKEN = {{ file = \"{}\" }}\n",
        token_file.display()
    );
    std::fs::write(&file, config).expect("write config");
    let output = check_config(&file).await;
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "stderr: {stderr}");
    for secret in ["tok-7d1e9a", "from-a-file-5c2b", "hunter22"] {
        assert!(!stdout.contains(secret), "{secret}: {stdout}");
    }
    // What is shown reads back as the same config, secrets aside.
    let shown: toml::Table = stdout.parse().expect("check-config prints TOML");
    let env = &shown["clusters"]["local"]["env"];
    assert_eq!(env["API_TOKEN"].as_str(), Some("***"), "{stdout}");
    assert_eq!(
        env["REGION"]["value"].as_str(),
        Some("eu-west-1"),
        "{stdout}"
    );
    assert_eq!(env["REGION"]["secret"].as_bool(), Some(false), "{stdout}");
    let registry = env["REGISTRY"]["value"].as_str();
    assert_eq!(
        registry,
        Some("https://bot:***@registry.example"),
        "{stdout}"
    );
    let from = env["REGISTRY_TOKEN"]["file"].as_str();
    assert_eq!(from, Some(token_file.to_str().unwrap()), "{stdout}");
}

/// `deployd serve` with `config` (and `env`) must exit 2 with `expected`
/// (the key, then what is wrong) on stderr, having created nothing.
async fn refused(dir: &Path, config: &str, env: &[(&str, &str)], expected: &[&str]) {
    let data_dir = dir.join(format!("data-{}", uuid::Uuid::now_v7().simple()));
    let file = dir.join("deployd.toml");
    let whole = format!("[server]\ndata_dir = \"{}\"\n{config}", data_dir.display());
    std::fs::write(&file, whole).expect("write config");
    let mut command = deployd();
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .envs(env.iter().copied());
    let run = command.output();
    let output = tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("deployd exits")
        .expect("deployd runs");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{config}: {stderr}");
    for part in expected {
        assert!(
            stderr.contains(part),
            "{config}: expected {part:?} in {stderr}"
        );
    }
    assert!(!data_dir.exists(), "{config}: the data dir was created");
}

#[tokio::test]
async fn bad_secret_inputs_are_refused_naming_the_key_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing");
    let present = dir.path().join("present");
    std::fs::write(&present, "postgres://u:secret-in-file@db/x\n").expect("write");
    let (missing, present) = (missing.display(), present.display());
    let cases: &[(String, &[&str])] = &[
        (
            format!("[store]\nurl_file = \"{missing}\"\n"),
            &["store.url_file: cannot read", "No such file"],
        ),
        (
            format!("[store]\nurl = \"postgres://u@db/x\"\nurl_file = \"{present}\"\n"),
            &["store.url_file: set either store.url or store.url_file, not both"],
        ),
        (
            "[clusters.local]\nuser = \"no-such-user-x\"\n".to_string(),
            &["clusters.local.user: no such user \"no-such-user-x\""],
        ),
        (
            format!("[clusters.local.env]\nTOKEN = {{ file = \"{missing}\" }}\n"),
            &["clusters.local.env.TOKEN: cannot read", "No such file"],
        ),
        (
            format!("[clusters.local.env]\nTOKEN = {{ value = \"x\", file = \"{present}\" }}\n"),
            &["clusters.local.env.TOKEN: set either value or file, not both"],
        ),
    ];
    for (config, expected) in cases {
        refused(dir.path(), config, &[], expected).await;
    }
    let var = "DEPLOYD_CLUSTERS__LOCAL__ENV__TOKEN__FILE";
    let expected = ["clusters.local.env.TOKEN: cannot read", var];
    refused(dir.path(), "", &[(var, &missing.to_string())], &expected).await;
    let var = "DEPLOYD_STORE__URL_FILE";
    let expected = ["store.url_file: cannot read", var];
    refused(dir.path(), "", &[(var, &missing.to_string())], &expected).await;
    // Nothing of the file that was read is echoed.
    let config = format!("[store]\nurl = \"postgres://u@db/x\"\nurl_file = \"{present}\"\n");
    let output = check_config_text(dir.path(), &config).await;
    assert!(!text(&output.stderr).contains("secret-in-file"));
}

async fn check_config_text(dir: &Path, config: &str) -> Output {
    let file = dir.join("check.toml");
    std::fs::write(&file, config).expect("write config");
    check_config(&file).await
}

#[tokio::test]
async fn a_daemon_that_is_not_root_refuses_to_run_steps_as_another_user() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::chown(dir.path(), Some(65534), Some(65534)).expect("chown");
    let data_dir = dir.path().join("data");
    let file = dir.path().join("deployd.toml");
    let config = format!(
        "[server]\ndata_dir = \"{}\"\n[clusters.local]\nuser = \"root\"\n",
        data_dir.display()
    );
    std::fs::write(&file, config).expect("write config");
    let mut command = deployd();
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&file)
        .uid(65534)
        .gid(65534);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("deployd exits")
        .expect("deployd runs");
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("clusters.local.user:"), "{stderr}");
    assert!(stderr.contains("not root"), "{stderr}");
    assert!(!data_dir.exists(), "the data dir was created");
}
