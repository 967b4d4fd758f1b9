//! Who may do what: bearer tokens, roles, app and cluster scopes, and the
//! refusal to serve a public address with auth off.

use super::*;
use crate::support::app::*;
use deployd::client::HistoryParams;
use deployd::model::RollbackRequest;
use reqwest::Method;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

/// A server with the test tokens; its `client` is the admin.
async fn spawn_with_tokens(backend: Backend) -> TestApp {
    let mut app = spawn_app(backend, with_tokens).await;
    app.client = client(&app, Some(ADMIN));
    app
}

macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::app::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::app::Backend::Postgres).await
                }
            )*
        }
    };
}

on_both_stores!(
    an_app_scoped_token_cannot_see_another_apps_deployment,
    a_read_token_reads_but_cannot_act,
);

#[tokio::test]
async fn a_missing_or_wrong_token_is_401_and_health_stays_open() {
    let app = spawn_with_tokens(Backend::Sqlite).await;
    let before = files(&app);
    let hash = sha256_hex(ADMIN.as_bytes());
    for token in [None, Some("wrong"), Some(hash.as_str())] {
        let answer = raw(&app, Method::GET, "/v1/apps/web/deployments", token, None).await;
        assert_eq!(answer.status, 401, "{token:?}: {}", answer.body);
        assert_eq!(answer.body["error"]["code"], "unauthenticated");
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
        let caller = client(&app, token);
        let put = caller.put_source(&sha256_hex(b"x"), b"x".to_vec()).await;
        expect_error(&app, put, 401, "unauthenticated");
        let deploy = caller.deploy("web", "local", &deploy_request(&hash)).await;
        expect_error(&app, deploy, 401, "unauthenticated");
        let head = caller.source_exists(&hash).await;
        expect_error(&app, head, 401, "unauthenticated");
        let supervisor = raw(&app, Method::GET, "/v1/supervisor", token, None).await;
        assert_eq!(supervisor.status, 401);
    }
    // A malformed header is no token at all.
    let basic = reqwest::Client::new()
        .get(format!("{}/v1/apps/web/deployments", app.url))
        .header("authorization", format!("Basic {ADMIN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), 401);
    for open in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(raw(&app, Method::GET, open, None, None).await.status, 200);
    }
    assert_eq!(files(&app), before, "a refused request wrote something");
    assert_eq!(history_len(&app, "web").await, 0);
}

async fn a_read_token_reads_but_cannot_act(backend: Backend) {
    let app = spawn_with_tokens(backend).await;
    let done = app.deploy("web", "local", "one").await;
    app.finished(done.id).await;
    settled(&app).await;
    let reader = client(&app, Some(READER));
    let before = files(&app);

    let tar = tar_of(&[("index.html", "two", 0o644)]);
    let put = reader.put_source(&sha256_hex(&tar), tar.clone()).await;
    expect_error(&app, put, 403, "forbidden");
    let source = done.source.clone().unwrap();
    let deploy = reader
        .deploy("web", "local", &deploy_request(&source))
        .await;
    let details = expect_error(&app, deploy, 403, "forbidden");
    assert_eq!(details, serde_json::json!({}));
    let rollback = reader
        .rollback("web", "local", &RollbackRequest::default())
        .await;
    expect_error(&app, rollback, 403, "forbidden");
    expect_error(&app, reader.cancel(done.id, None).await, 403, "forbidden");
    let supervisor = raw(&app, Method::GET, "/v1/supervisor", Some(READER), None).await;
    assert_eq!(supervisor.body["error"]["code"], "forbidden");
    assert_eq!(files(&app), before, "a refused request wrote something");
    assert_eq!(history_len(&app, "web").await, 1);

    // Reading is what the role is for.
    assert_eq!(reader.get(done.id).await.unwrap().id, done.id);
    let page = reader.history("web", &HistoryParams::default()).await;
    assert_eq!(page.unwrap().deployments.len(), 1);
    assert!(
        reader
            .target("web", "local")
            .await
            .unwrap()
            .active
            .is_some()
    );
    assert_eq!(
        reader
            .versions("web", None, None)
            .await
            .unwrap()
            .versions
            .len(),
        1
    );
    assert!(reader.source_exists(&source).await.unwrap());
    assert!(!collect_events(&reader, done.id, None).await.is_empty());
}

async fn an_app_scoped_token_cannot_see_another_apps_deployment(backend: Backend) {
    let app = spawn_with_tokens(backend).await;
    let theirs = app.deploy("billing", "local", "secret-build").await;
    let theirs = app.finished(theirs.id).await;
    let ci = client(&app, Some(CI_WEB));

    // By id: 403, not 404, and nothing of the deployment in the answer.
    let id = theirs.id.to_string();
    for (method, path) in [
        (Method::GET, format!("/v1/deployments/{id}")),
        (Method::GET, format!("/v1/deployments/{id}/events")),
        (Method::POST, format!("/v1/deployments/{id}/cancel")),
    ] {
        let answer = raw(&app, method, &path, Some(CI_WEB), None).await;
        assert_eq!(answer.status, 403, "{path}: {}", answer.body);
        assert_eq!(answer.body["error"]["code"], "forbidden");
        let text = answer.body.to_string();
        for leak in [
            "billing",
            "succeeded",
            "admin",
            theirs.source.as_deref().unwrap(),
        ] {
            assert!(!text.contains(leak), "{path} leaks {leak}: {text}");
        }
    }
    expect_error(&app, ci.get(theirs.id).await, 403, "forbidden");
    // By app name: every read of another app is 403 too.
    let history = ci.history("billing", &HistoryParams::default()).await;
    expect_error(&app, history, 403, "forbidden");
    expect_error(&app, ci.target("billing", "local").await, 403, "forbidden");
    expect_error(
        &app,
        ci.versions("billing", None, None).await,
        403,
        "forbidden",
    );
    let source = theirs.source.clone().unwrap();
    let deploy = ci
        .deploy("billing", "local", &deploy_request(&source))
        .await;
    expect_error(&app, deploy, 403, "forbidden");
    assert_eq!(history_len(&app, "billing").await, 1);
    assert_eq!(
        app.client.get(theirs.id).await.unwrap(),
        theirs,
        "untouched"
    );

    // Its own app works, and the server, not the request, says who deployed.
    let mine = ci
        .deploy("web", "local", &deploy_request(&source))
        .await
        .unwrap();
    assert_eq!(mine.deployed_by, "ci-web");
    assert_eq!(ci.get(mine.id).await.unwrap().deployed_by, "ci-web");
    let unknown = uuid::Uuid::now_v7();
    expect_error(&app, ci.get(unknown).await, 404, "not_found");
}

#[tokio::test]
async fn deployed_by_cannot_come_from_the_request() {
    let app = spawn_with_tokens(Backend::Sqlite).await;
    let source = app.upload(&[("index.html", "x", 0o644)]).await;
    let body = serde_json::json!({ "source": source, "deployed_by": "mallory" });
    let body = serde_json::to_vec(&body).unwrap();
    let route = (Method::POST, "/v1/apps/web/clusters/local/deployments");
    let refused = (400, "invalid_argument");
    let details = raw_error(&app, Some(CI_WEB), route, Some(&body), refused).await;
    assert_eq!(details["field"], "deployed_by");
    assert_eq!(history_len(&app, "web").await, 0);
}

#[tokio::test]
async fn a_cluster_scoped_token_stays_on_its_cluster() {
    let app = spawn_with_tokens(Backend::Sqlite).await;
    let source = app.upload(&[("index.html", "x", 0o644)]).await;
    let bot = client(&app, Some(STAGING));
    let local = bot.deploy("web", "local", &deploy_request(&source)).await;
    expect_error(&app, local, 403, "forbidden");
    expect_error(&app, bot.target("web", "local").await, 403, "forbidden");
    // An app-wide list could show other clusters: it must name its cluster.
    let all = bot.history("web", &HistoryParams::default()).await;
    expect_error(&app, all, 403, "forbidden");
    let on = |cluster: &str| HistoryParams {
        cluster: Some(cluster.to_string()),
        ..Default::default()
    };
    expect_error(
        &app,
        bot.history("web", &on("local")).await,
        403,
        "forbidden",
    );
    assert_eq!(history_len(&app, "web").await, 0);

    let staged = bot
        .deploy("web", "staging", &deploy_request(&source))
        .await
        .unwrap();
    assert_eq!(staged.deployed_by, "staging-bot");
    let page = bot.history("web", &on("staging")).await.unwrap();
    assert_eq!(page.deployments.len(), 1);
    // Versions belong to the app, not to a cluster.
    bot.versions("web", None, None).await.unwrap();
    // Unconfigured clusters are not named to a token that may not use them.
    let elsewhere = bot.deploy("web", "nowhere", &deploy_request(&source)).await;
    expect_error(&app, elsewhere, 403, "forbidden");
}

#[tokio::test]
async fn supervisor_and_compaction_need_an_admin_of_everything() {
    let app = spawn_with_tokens(Backend::Sqlite).await;
    for token in [CI_WEB, READER, STAGING, WEB_ADMIN] {
        let answer = raw(&app, Method::GET, "/v1/supervisor", Some(token), None).await;
        assert_eq!(answer.status, 403, "{token}");
        assert_eq!(answer.body["error"]["code"], "forbidden");
    }
    let answer = raw(&app, Method::GET, "/v1/supervisor", Some(ADMIN), None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert!(answer.body["actors"].is_array());
    for token in [CI_WEB, READER, WEB_ADMIN] {
        let answer = raw(&app, Method::POST, "/v1/admin/compact", Some(token), None).await;
        assert_eq!(answer.status, 403, "{token}");
    }
    let answer = raw(&app, Method::POST, "/v1/admin/compact", Some(ADMIN), None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
}

/// The built daemon, with none of this process's `DEPLOYD_*` variables.
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

#[tokio::test]
async fn without_tokens_serve_refuses_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let run = deployd()
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env("DEPLOYD_SERVER__DATA_DIR", dir.path().join("data"))
        .output();
    let output = tokio::time::timeout(WAIT, run).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("server.listen"), "{stderr}");
    assert!(stderr.contains("only a loopback address"), "{stderr}");
    assert!(stderr.contains("deployd token new"), "says how: {stderr}");
    assert!(
        !dir.path().join("data").exists(),
        "refused before touching disk"
    );
}

/// `deployd token new` prints a token and a block; a server with the block
/// accepts the token (and only for its app), serves a public address, and
/// never logs the token or its hash, even at debug level.
#[tokio::test]
async fn a_new_token_works_and_is_never_logged() {
    let new = deployd()
        .args(["token", "new", "ci", "--role", "deploy", "--apps", "web"])
        .output();
    let output = tokio::time::timeout(WAIT, new).await.unwrap().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let (token, block) = stdout.split_once('\n').unwrap();
    assert_eq!(token.len(), 64, "{stdout}");
    let hash = sha256_hex(token.as_bytes());
    assert!(block.contains(&format!("sha256 = \"{hash}\"")), "{block}");
    assert!(block.contains("apps = [\"web\"]"), "{block}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deployd.toml");
    std::fs::write(&file, block).unwrap();
    let mut child = deployd()
        .args(["serve", "--listen", "0.0.0.0:0", "--config"])
        .arg(&file)
        .env("DEPLOYD_SERVER__DATA_DIR", dir.path().join("data"))
        .env("DEPLOYD_LOG_FORMAT", "json")
        .env("DEPLOYD_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let port = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            log.push_str(&line);
            let event: Value = serde_json::from_str(&line).unwrap_or_default();
            if event["message"] == "listening" {
                let address = event["address"].as_str().unwrap();
                return address.parse::<std::net::SocketAddr>().unwrap().port();
            }
        }
        panic!("deployd exited before listening: {log}");
    })
    .await
    .expect("deployd listens");

    let url = format!("http://127.0.0.1:{port}");
    let ci = deployd::client::Client::new(&url, Some(token.to_string())).unwrap();
    let tar = tar_of(&[("index.html", "hi", 0o644)]);
    let sha = sha256_hex(&tar);
    ci.put_source(&sha, tar).await.unwrap();
    let mine = ci
        .deploy("web", "local", &deploy_request(&sha))
        .await
        .unwrap();
    assert_eq!(mine.deployed_by, "ci");
    let theirs = ci.deploy("api", "local", &deploy_request(&sha)).await;
    assert!(
        matches!(theirs, Err(ClientError::Api { status: 403, .. })),
        "{theirs:?}"
    );
    let wrong = deployd::client::Client::new(&url, Some(hash.clone())).unwrap();
    assert!(matches!(
        wrong.get(mine.id).await,
        Err(ClientError::Api { status: 401, .. })
    ));
    collect_events(&ci, mine.id, None).await;

    let pid = child.id().unwrap() as libc::pid_t;
    // SAFETY: kill(2) on a child this test spawned and has not reaped.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let mut rest = String::new();
    let read = lines.get_mut().read_to_string(&mut rest);
    tokio::time::timeout(WAIT, read).await.unwrap().unwrap();
    log.push_str(&rest);
    let status = tokio::time::timeout(WAIT, child.wait()).await.unwrap();
    assert!(status.unwrap().success());
    assert!(log.contains("deployd"), "the log was captured: {log}");
    assert!(!log.contains(token), "the token is in the log");
    assert!(!log.contains(&hash), "the token's hash is in the log");
}
