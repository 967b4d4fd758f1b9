//! Issue 13, case 1: browsers cannot drive deployd. Each test sends exactly
//! what a web page could make a browser send, and checks the answer and that
//! nothing changed: no deployment, no stored source, no build run.

use super::{ADMIN, files, history_len, settled, with_tokens};
use crate::support::app::*;
use deployd::machine::State;
use reqwest::Method;
use serde_json::Value;

/// One request as a browser would send it: `headers` on top of nothing.
async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Value) {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", app.url));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.body(body.to_vec()).send().await.expect("answered");
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("")
}

/// A request's path, headers and body, and the status and code it must get.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a [u8], u16, &'a str);

/// Two good deploys of web/local, so a rollback would change something.
async fn two_versions(app: &TestApp) {
    for tag in ["one", "two"] {
        let d = app.deploy("web", "local", tag).await;
        assert_eq!(app.finished(d.id).await.state, State::Succeeded);
    }
    settled(app).await;
}

/// A page at https://evil.example posting `text/plain` (a "simple" request
/// the browser sends without asking) to roll back and to compact; and the
/// same bodies with no `Origin` (curl) but not JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cross_site_requests_are_refused_with_auth_off() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    two_versions(&app).await;
    let before = files(&app);
    let evil = [
        ("origin", "https://evil.example"),
        ("content-type", "text/plain"),
    ];
    let rollbacks = "/v1/apps/web/clusters/local/rollbacks";
    let cases: [Case; 6] = [
        (rollbacks, &evil, b"{}", 403, "cross_origin"),
        ("/v1/admin/compact", &evil, b"", 403, "cross_origin"),
        (
            rollbacks,
            &[("content-type", "text/plain")],
            b"{}",
            415,
            "unsupported_media_type",
        ),
        (
            rollbacks,
            &[("content-type", "application/x-www-form-urlencoded")],
            b"version=v1",
            415,
            "unsupported_media_type",
        ),
        (rollbacks, &[], b"{}", 415, "unsupported_media_type"),
        (
            rollbacks,
            &[("origin", "null"), ("content-type", "application/json")],
            b"{}",
            403,
            "cross_origin",
        ),
    ];
    for (path, headers, body, status, want) in cases {
        let (got, answer) = send(&app, Method::POST, path, headers, body).await;
        assert_eq!(
            (got, code(&answer)),
            (status, want),
            "{path} {headers:?}: {answer}"
        );
    }
    assert_eq!(history_len(&app, "web").await, 2, "no rollback was made");
    let target = app.client.target("web", "local").await.unwrap();
    assert_eq!(target.active.map(|a| a.version).as_deref(), Some("v2"));
    assert_eq!(files(&app), before);

    // deployd's own origin, and JSON, are fine.
    let own = app.url.clone();
    let headers = [
        ("origin", own.as_str()),
        ("content-type", "application/json"),
    ];
    let (status, answer) = send(&app, Method::POST, rollbacks, &headers, b"{}").await;
    assert_eq!(status, 201, "{answer}");
    app.stop().await;
}

/// `server.allowed_origins` lets a page of yours in, and only it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_origin_may_send_requests() {
    let app = spawn_app(Backend::Sqlite, |config| {
        config.server.allowed_origins = vec!["https://dash.example.com".into()];
    })
    .await;
    let json = ("content-type", "application/json");
    let path = "/v1/admin/compact";
    let ours = [("origin", "https://dash.example.com"), json];
    assert_eq!(send(&app, Method::POST, path, &ours, b"").await.0, 200);
    let theirs = [("origin", "https://dash.example.com.evil.example"), json];
    let (status, answer) = send(&app, Method::POST, path, &theirs, b"").await;
    assert_eq!((status, code(&answer)), (403, "cross_origin"));
    app.stop().await;
}

/// DNS rebinding: a page whose own name now points at 127.0.0.1 sends
/// same-origin requests with `Host: rebind.attacker.example`. With auth off
/// the upload and the deploy of a tar whose build.sh would run are refused,
/// and nothing runs; every other route too. With tokens, the token stops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_rebinding_cannot_upload_or_build() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let marker = app.data_dir.parent().unwrap().join("pwned");
    let script = format!("#!/bin/sh\nid > '{}'\n", marker.display());
    let tar = tar_of(&[("build.sh", &script, 0o755)]);
    let sha = sha256_hex(&tar);
    let port = app.url.rsplit(':').next().unwrap().to_string();
    let host = format!("rebind.attacker.example:{port}");
    let origin = format!("http://{host}");
    let headers = [("host", host.as_str()), ("origin", origin.as_str())];
    let before = files(&app);

    let (status, answer) = send(
        &app,
        Method::PUT,
        &format!("/v1/sources/{sha}"),
        &headers,
        &tar,
    )
    .await;
    assert_eq!(
        (status, code(&answer)),
        (403, "host_not_allowed"),
        "{answer}"
    );
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("token new"),
        "says how to turn auth on: {message}"
    );
    let deploy = format!("{{\"source\":\"{sha}\"}}");
    let json = [headers[0], headers[1], ("content-type", "application/json")];
    let path = "/v1/apps/web/clusters/local/deployments";
    let (status, answer) = send(&app, Method::POST, path, &json, deploy.as_bytes()).await;
    assert_eq!(
        (status, code(&answer)),
        (403, "host_not_allowed"),
        "{answer}"
    );
    for path in ["/healthz", "/metrics", "/v1/apps/web/deployments"] {
        let (status, _) = send(&app, Method::GET, path, &headers[..1], b"").await;
        assert_eq!(status, 403, "{path}");
    }
    assert!(!marker.exists(), "the build must not have run");
    assert_eq!(history_len(&app, "web").await, 0);
    assert_eq!(files(&app), before);
    // localhost, by name, is served.
    let local = format!("localhost:{port}");
    let (status, _) = send(&app, Method::GET, "/healthz", &[("host", &local)], b"").await;
    assert_eq!(status, 200);
    app.stop().await;

    let app = spawn_app(Backend::Sqlite, with_tokens).await;
    let (status, answer) = send(
        &app,
        Method::GET,
        "/v1/apps/web/deployments",
        &[("host", "deployd.internal")],
        b"",
    )
    .await;
    assert_eq!(
        (status, code(&answer)),
        (401, "unauthenticated"),
        "{answer}"
    );
    let bearer = format!("Bearer {ADMIN}");
    let headers = [
        ("host", "deployd.internal"),
        ("authorization", bearer.as_str()),
    ];
    let (status, _) = send(&app, Method::GET, "/v1/apps/web/deployments", &headers, b"").await;
    assert_eq!(
        status, 200,
        "with tokens, other names are served to token holders"
    );
    app.stop().await;
}
