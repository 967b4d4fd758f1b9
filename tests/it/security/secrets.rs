//! Secrets never printed: a cluster's secret env values, and the password of
//! anything that looks like a URL, are masked in step output (the `log`
//! events), in deployment errors and in the daemon's log. Secrets can come
//! from files, so they need not sit in the daemon's environment at all.

use crate::support::app::*;
use crate::support::pg::{connect, fresh_database};
use crate::support::process::{Daemon, free_port, write_config};
use deployd::machine::State;
use deployd::model::EventData;
use uuid::Uuid;

#[tokio::test]
async fn a_step_printing_a_secret_gets_it_masked_in_events_and_errors() {
    let token = format!("tok-{}", Uuid::now_v7().simple());
    let script = r#"echo "token=$API_TOKEN"
echo "pulling https://bot:hunter22@registry.example/v2"
echo "short=$SHORT"
echo "denied for $API_TOKEN" >&2
exit 3"#;
    let app = spawn_app(Backend::Sqlite, |config| {
        let mut cluster = sh_cluster(Some(script), None, None);
        cluster.env.insert("API_TOKEN".into(), token.clone().into());
        cluster.env.insert("SHORT".into(), "ab".into());
        config.clusters.insert("leaky".into(), cluster);
    })
    .await;
    let deployment = app.deploy("web", "leaky", "x").await;
    let events = app.events_until_end(deployment.id).await;
    let lines: Vec<String> = (events.into_iter())
        .filter_map(|(_, e)| match e {
            EventData::Log(log) => Some(log.line),
            _ => None,
        })
        .collect();
    assert_eq!(
        lines,
        [
            "token=***",
            "pulling https://bot:***@registry.example/v2",
            // Shorter than 4 bytes: too common to mask in free text.
            "short=ab",
            "denied for ***",
        ]
    );
    let ended = app.client.get(deployment.id).await.expect("get");
    assert_eq!(ended.state, State::Failed);
    let error = ended.error.expect("an error");
    assert_eq!(error, "build step failed (exit code 3):\ndenied for ***");
}

#[tokio::test]
async fn a_value_declared_not_secret_is_shown() {
    let toml = r#"
[clusters.open.env]
REGION = { value = "eu-west-1", secret = false }
TOKEN = { value = "eu-west-1-token" }

[clusters.open.build]
timeout = "1m"
run = ["/bin/sh", "-c", 'echo "$REGION $TOKEN"']
"#;
    let app = spawn_app(Backend::Sqlite, |config| {
        let loaded =
            deployd::config::Config::from_sources(Some(toml), Vec::<(String, String)>::new());
        config.clusters = loaded.expect("the test's clusters load").clusters;
    })
    .await;
    let deployment = app.deploy("web", "open", "x").await;
    let events = app.events_until_end(deployment.id).await;
    let lines: Vec<String> = (events.into_iter())
        .filter_map(|(_, e)| match e {
            EventData::Log(log) => Some(log.line),
            _ => None,
        })
        .collect();
    assert_eq!(lines, ["eu-west-1 ***"]);
}

#[tokio::test]
async fn the_log_never_shows_a_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A quote and a backslash: the JSON log escapes them, and the escaped
    // spelling is masked too.
    let unique = Uuid::now_v7().simple().to_string();
    let clusters = r#"
[clusters.leaky.env]
API_TOKEN = 'tok"\UNIQUE'

[clusters.leaky.build]
timeout = "1m"
run = ["/bin/sh", "-c", 'printf "%s\n" "$API_TOKEN" >&2; exit 3']

[clusters.leaky.cleanup]
timeout = "1m"
run = ["/bin/sh", "-c", 'printf "cleanup sees %s and %s\n" "$API_TOKEN" https://bot:hunter22@registry.example']
"#;
    let config = write_config(dir.path(), None, &clusters.replace("UNIQUE", &unique));
    let log = dir.path().join("deployd.log");
    let stderr = std::fs::File::create(&log).expect("log file");
    let daemon = Daemon::start_with(&config, free_port(), |command| {
        command
            .env("DEPLOYD_LOG", "debug")
            .env("DEPLOYD_LOG_FORMAT", "json")
            .stderr(stderr);
    })
    .await;
    let bytes = tar_of(&[("index.html", "x", 0o644)]);
    let sha = sha256_hex(&bytes);
    daemon.client.put_source(&sha, bytes).await.expect("upload");
    let deployment = (daemon.client)
        .deploy("web", "leaky", &deploy_request(&sha))
        .await
        .expect("deploy");
    collect_events(&daemon.client, deployment.id, None).await;
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    eventually("the cleanup step to be logged", || {
        read().contains("cleanup step succeeded")
    })
    .await;
    drop(daemon);

    let logged = read();
    assert!(!logged.contains(&unique), "{logged}");
    assert!(!logged.contains("hunter22"), "{logged}");
    assert!(
        logged.contains("cleanup sees *** and https://bot:***@registry.example"),
        "{logged}"
    );
}

#[tokio::test]
async fn the_store_url_can_come_from_a_file() {
    let db = fresh_database().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let url_file = dir.path().join("store-url");
    std::fs::write(&url_file, format!("{}\n", db.url())).expect("write the URL");
    let config = write_config(dir.path(), None, "");
    let daemon = Daemon::start_with(&config, free_port(), |command| {
        command.env("DEPLOYD_STORE__URL_FILE", &url_file);
    })
    .await;
    let bytes = tar_of(&[("index.html", "x", 0o644)]);
    let sha = sha256_hex(&bytes);
    daemon.client.put_source(&sha, bytes).await.expect("upload");
    let deployment = (daemon.client)
        .deploy("web", "local", &deploy_request(&sha))
        .await
        .expect("deploy");
    collect_events(&daemon.client, deployment.id, None).await;

    // The record is in the database the file named, not in a SQLite file.
    let rows = connect(db.url())
        .await
        .query(
            "SELECT state FROM deployments WHERE id = $1",
            &[&deployment.id],
        )
        .await
        .expect("query");
    let state: String = rows.first().expect("the deployment's row").get(0);
    assert_eq!(state, "succeeded");
    assert!(!dir.path().join("data/deployd.db").exists());
}

/// A secret at the start of a stderr line too long for the 4 KiB tail an
/// error keeps: the tail is cut after masking, so no piece of the secret is
/// left in the error (the hostile review found its last 18 bytes there).
#[tokio::test]
async fn a_secret_in_a_line_cut_to_the_error_tail_leaves_no_piece() {
    let token = format!("tok-{}", Uuid::now_v7().simple());
    let script = r#"printf '%s%s\n' "$API_TOKEN" "$(head -c 4078 /dev/zero | tr '\0' x)" >&2
exit 1"#;
    let app = spawn_app(Backend::Sqlite, |config| {
        let mut cluster = sh_cluster(Some(script), None, None);
        cluster.env.insert("API_TOKEN".into(), token.clone().into());
        config.clusters.insert("leaky".into(), cluster);
    })
    .await;
    let deployment = app.deploy("web", "leaky", "x").await;
    app.events_until_end(deployment.id).await;
    let ended = app.client.get(deployment.id).await.expect("get");
    let error = ended.error.expect("an error");
    for piece in token.as_bytes().windows(6) {
        let piece = std::str::from_utf8(piece).unwrap();
        assert!(
            !error.contains(piece),
            "{piece:?} of the secret is in the error"
        );
    }
    assert!(error.ends_with("xxxx"), "the tail is still there");
}
