//! What a request may say: every malformed name, body, field, cursor or
//! limit is a 400 naming it, in API.md's error shape, and writes nothing.

use super::*;
use crate::support::app::*;
use deployd::client::HistoryParams;
use reqwest::Method;

const DEPLOYS: &str = "/v1/apps/web/clusters/local/deployments";

async fn invalid(app: &TestApp, route: (Method, &str), body: Option<&[u8]>) -> String {
    let details = raw_error(app, None, route, body, (400, "invalid_argument")).await;
    details["field"]
        .as_str()
        .expect("details.field")
        .to_string()
}

#[tokio::test]
async fn malformed_json_and_unknown_fields_are_400_naming_the_field() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let source = app.upload(&[("index.html", "x", 0o644)]).await;
    let before = files(&app);
    let post = || (Method::POST, DEPLOYS);
    let cases: Vec<(String, &str)> = vec![
        ("{".into(), "body"),
        ("[1, 2]".into(), "body"),
        (format!(r#"{{"source": "{source}"}} {{}}"#), "body"),
        ("{}".into(), "source"),
        (format!(r#"{{"source": "{source}", "bogus": 1}}"#), "bogus"),
        (
            format!(r#"{{"source": "{source}", "git": {{"sha": "a", "x": 1}}}}"#),
            "git.x",
        ),
        (
            format!(r#"{{"source": "{source}", "on_conflict": "always"}}"#),
            "on_conflict",
        ),
        (
            format!(r#"{{"source": "{source}", "message": 7}}"#),
            "message",
        ),
        (r#"{"source": "not-a-digest"}"#.into(), "source"),
    ];
    for (body, field) in &cases {
        assert_eq!(
            invalid(&app, post(), Some(body.as_bytes())).await,
            *field,
            "{body}"
        );
    }
    let rollbacks = (Method::POST, "/v1/apps/web/clusters/local/rollbacks");
    assert_eq!(
        invalid(&app, rollbacks.clone(), Some(br#"{"version": "7"}"#)).await,
        "version"
    );
    assert_eq!(
        invalid(&app, rollbacks, Some(br#"{"source": "x"}"#)).await,
        "source"
    );
    let too_big = vec![b' '; 65 * 1024];
    let route = post();
    raw_error(&app, None, route, Some(&too_big), (413, "too_large")).await;
    assert_eq!(files(&app), before);
    assert_eq!(history_len(&app, "web").await, 0);
}

#[tokio::test]
async fn bad_names_are_400_naming_app_or_cluster() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let source = app.upload(&[("index.html", "x", 0o644)]).await;
    let before = files(&app);
    let request = deploy_request(&source);
    for (app_name, cluster, field) in [
        ("Web", "local", "app"),
        ("-web", "local", "app"),
        ("we_b", "local", "app"),
        (&"a".repeat(64) as &str, "local", "app"),
        ("web", "Local", "cluster"),
        ("web", "lo cal", "cluster"),
    ] {
        let deploy = app.client.deploy(app_name, cluster, &request).await;
        let details = expect_error(&app, deploy, 400, "invalid_argument");
        assert_eq!(details["field"], field, "{app_name}/{cluster}");
    }
    let history = app.client.history("We$b", &HistoryParams::default()).await;
    assert_eq!(
        expect_error(&app, history, 400, "invalid_argument")["field"],
        "app"
    );
    let unknown = app.client.deploy("web", "nowhere", &request).await;
    assert_eq!(
        expect_error(&app, unknown, 404, "not_found")["kind"],
        "cluster"
    );
    assert_eq!(files(&app), before);
    assert_eq!(history_len(&app, "web").await, 0);
}

#[tokio::test]
async fn message_and_git_fields_over_1_kib_are_400() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let source = app.upload(&[("index.html", "x", 0o644)]).await;
    let before = files(&app);
    let kib = "m".repeat(1024);
    let over = "é".repeat(513); // 1026 bytes: the limit counts bytes
    let mut request = deploy_request(&source);
    request.message = Some(over.clone());
    let deploy = app.client.deploy("web", "local", &request).await;
    assert_eq!(
        expect_error(&app, deploy, 400, "invalid_argument")["field"],
        "message"
    );
    for field in ["sha", "branch", "message", "author", "repository"] {
        let mut git = serde_json::json!({});
        git[field] = serde_json::json!(over);
        let body = serde_json::json!({ "source": source, "git": git });
        let body = serde_json::to_vec(&body).unwrap();
        let got = invalid(&app, (Method::POST, DEPLOYS), Some(&body)).await;
        assert_eq!(got, format!("git.{field}"));
    }
    let mut request = deploy_request(&source);
    request.idempotency_key = Some("k".repeat(257));
    let deploy = app.client.deploy("web", "local", &request).await;
    assert_eq!(
        expect_error(&app, deploy, 400, "invalid_argument")["field"],
        "idempotency_key"
    );
    let rollback = serde_json::to_vec(&serde_json::json!({ "message": over })).unwrap();
    let route = (Method::POST, "/v1/apps/web/clusters/local/rollbacks");
    assert_eq!(invalid(&app, route, Some(&rollback)).await, "message");
    assert_eq!(files(&app), before);
    assert_eq!(history_len(&app, "web").await, 0);

    request = deploy_request(&source);
    request.message = Some(kib);
    let deployed = app.client.deploy("web", "local", &request).await.unwrap();
    assert_eq!(deployed.message.len(), 1024, "exactly 1 KiB is fine");
}

#[tokio::test]
async fn tampered_cursors_and_limits_out_of_range_are_400() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let first = app.deploy("web", "local", "one").await;
    app.finished(first.id).await;
    settled(&app).await;
    let before = files(&app);
    let page = |limit: Option<u32>, cursor: Option<&str>| HistoryParams {
        limit,
        cursor: cursor.map(String::from),
        ..Default::default()
    };
    let real = first.id.simple().to_string();
    let v4 = uuid::Builder::from_random_bytes([7; 16]).into_uuid();
    let v4 = v4.simple().to_string();
    for cursor in [
        "x",
        &real[..31],
        &format!("{real}0"),
        &v4,
        "' OR 1=1 --",
        &first.id.to_string(),
    ] {
        let history = app.client.history("web", &page(None, Some(cursor))).await;
        assert_eq!(
            expect_error(&app, history, 400, "invalid_argument")["field"],
            "cursor"
        );
    }
    for cursor in ["x", "v", "v-1", "1"] {
        let versions = app.client.versions("web", None, Some(cursor)).await;
        assert_eq!(
            expect_error(&app, versions, 400, "invalid_argument")["field"],
            "cursor"
        );
    }
    for limit in [0, 501] {
        let history = app.client.history("web", &page(Some(limit), None)).await;
        assert_eq!(
            expect_error(&app, history, 400, "invalid_argument")["field"],
            "limit"
        );
        let versions = app.client.versions("web", Some(limit), None).await;
        assert_eq!(
            expect_error(&app, versions, 400, "invalid_argument")["field"],
            "limit"
        );
    }
    for query in ["limit=-1", "limit=abc", "limit=1e3", "bogus=1"] {
        let path = format!("/v1/apps/web/deployments?{query}");
        raw_error(
            &app,
            None,
            (Method::GET, &path),
            None,
            (400, "invalid_argument"),
        )
        .await;
    }
    for after in ["-1", "x"] {
        let path = format!("/v1/deployments/{}/events?after={after}", first.id);
        raw_error(
            &app,
            None,
            (Method::GET, &path),
            None,
            (400, "invalid_argument"),
        )
        .await;
    }
    assert_eq!(files(&app), before);
    let ok = app
        .client
        .history("web", &page(Some(500), Some(&real)))
        .await
        .unwrap();
    assert!(
        ok.deployments.is_empty(),
        "the real cursor pages past the only one"
    );
}

#[tokio::test]
async fn unknown_deployments_are_404_and_ended_ones_cannot_be_cancelled() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let unknown = uuid::Uuid::now_v7();
    let get = app.client.get(unknown).await;
    assert_eq!(
        expect_error(&app, get, 404, "not_found")["kind"],
        "deployment"
    );
    let cancel = app.client.cancel(unknown, None).await;
    assert_eq!(
        expect_error(&app, cancel, 404, "not_found")["kind"],
        "deployment"
    );
    let path = format!("/v1/deployments/{unknown}/events");
    raw_error(&app, None, (Method::GET, &path), None, (404, "not_found")).await;
    let field = invalid(&app, (Method::GET, "/v1/deployments/not-an-id"), None).await;
    assert_eq!(field, "id");

    let done = app.deploy("web", "local", "one").await;
    let done = app.finished(done.id).await;
    settled(&app).await;
    let before = files(&app);
    let cancel = app.client.cancel(done.id, Some("too late".into())).await;
    let details = expect_error(&app, cancel, 409, "invalid_transition");
    assert_eq!(details["from"], "succeeded");
    assert_eq!(details["to"], "cancelled");
    assert_eq!(app.client.get(done.id).await.unwrap(), done, "untouched");
    let path = format!("/v1/deployments/{}/cancel", done.id);
    let field = invalid(&app, (Method::POST, &path), Some(br#"{"why": 1}"#)).await;
    assert_eq!(field, "why");
    assert_eq!(files(&app), before);
}

#[tokio::test]
async fn odd_paths_and_methods_keep_the_error_shape() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let before = files(&app);
    raw_error(
        &app,
        None,
        (Method::GET, "/v1/nothing"),
        None,
        (404, "not_found"),
    )
    .await;
    let route = (Method::GET, "/v1/deployments/%FF%FE");
    raw_error(&app, None, route, None, (400, "invalid_argument")).await;
    let route = (Method::GET, "/v1/apps/web/deployments?limit=%FF");
    raw_error(&app, None, route, None, (400, "invalid_argument")).await;
    let route = (Method::DELETE, "/v1/apps/web/deployments");
    raw_error(&app, None, route, None, (405, "method_not_allowed")).await;
    assert_eq!(files(&app), before);
}
