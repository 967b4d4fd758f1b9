//! Security and bad input, through the HTTP API: who may do what (auth),
//! what an upload may contain (uploads), what a request may say (input),
//! what a step sees (steps), how connections are bounded (connections) and
//! HTTPS (tls). README's "Security" section names the test
//! behind each of its claims.
//!
//! Every refusal is checked for API.md's error shape and for leaving
//! nothing behind: the data dir holds the same files before and after.

mod auth;
mod browser;
mod connections;
mod input;
mod isolation;
mod secrets;
mod steps;
mod tls;
mod uploads;

use crate::support::app::TestApp;
use deployd::client::{Client, ClientError};
use deployd::config::{Config, Role, TokenConfig};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

/// The test tokens' secrets. The config holds only their sha256.
pub const ADMIN: &str = "admin-secret";
pub const READER: &str = "reader-secret";
pub const CI_WEB: &str = "ci-web-secret";
pub const STAGING: &str = "staging-secret";
pub const WEB_ADMIN: &str = "web-admin-secret";

/// A test token: secret, name, role, apps, clusters.
type Token = (
    &'static str,
    &'static str,
    Role,
    &'static [&'static str],
    &'static [&'static str],
);

const TOKENS: &[Token] = &[
    (ADMIN, "admin", Role::Admin, &["*"], &["*"]),
    (READER, "reader", Role::Read, &["*"], &["*"]),
    (CI_WEB, "ci-web", Role::Deploy, &["web"], &["*"]),
    (STAGING, "staging-bot", Role::Deploy, &["*"], &["staging"]),
    (WEB_ADMIN, "web-admin", Role::Admin, &["web"], &["*"]),
];

/// Turns auth on with the test tokens, and adds a `staging` cluster.
pub fn with_tokens(config: &mut Config) {
    config.auth.tokens = TOKENS
        .iter()
        .map(|(secret, name, role, apps, clusters)| TokenConfig {
            name: name.to_string(),
            sha256: crate::support::app::sha256_hex(secret.as_bytes()),
            role: *role,
            apps: apps.iter().map(|s| s.to_string()).collect(),
            clusters: clusters.iter().map(|s| s.to_string()).collect(),
        })
        .collect();
    config.clusters.insert(
        "staging".to_string(),
        crate::support::app::sh_cluster(None, None, Some("echo activated")),
    );
}

pub fn client(app: &TestApp, token: Option<&str>) -> Client {
    Client::new(&app.url, token.map(String::from)).expect("client")
}

/// An answer to a request the typed client would not send.
pub struct Raw {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

pub async fn raw(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&[u8]>,
) -> Raw {
    let mut request = reqwest::Client::new().request(method, format!("{}{path}", app.url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_vec());
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("a body");
    // Errors are JSON; /metrics is text, kept as a string.
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Raw {
        status,
        headers,
        body,
    }
}

/// `raw` expecting an error: checks API.md's shape and that it shows nothing
/// of the server's insides; answers `details`.
pub async fn raw_error(
    app: &TestApp,
    token: Option<&str>,
    (method, path): (reqwest::Method, &str),
    body: Option<&[u8]>,
    (status, code): (u16, &str),
) -> Value {
    let answer = raw(app, method, path, token, body).await;
    assert_eq!(answer.status, status, "{path}: {}", answer.body);
    let error = &answer.body["error"];
    assert_eq!(error["code"], code, "{path}: {}", answer.body);
    assert_no_insides(app, error["message"].as_str().expect("a message"));
    assert!(error["details"].is_object(), "{}", answer.body);
    error["details"].clone()
}

/// A refused client call: the status and code it must carry; answers
/// `details`.
pub fn expect_error<T: std::fmt::Debug>(
    app: &TestApp,
    result: Result<T, ClientError>,
    status: u16,
    code: &str,
) -> Value {
    match result {
        Err(ClientError::Api {
            status: got,
            code: got_code,
            message,
            details,
        }) => {
            assert_eq!(
                (got, got_code.as_str()),
                (status, code),
                "{message} {details}"
            );
            assert_no_insides(app, &message);
            details
        }
        other => panic!("expected {status} {code}, got {other:?}"),
    }
}

/// An answer never shows server paths, SQL or store names.
fn assert_no_insides(app: &TestApp, message: &str) {
    let data_dir = app.data_dir.display().to_string();
    let lower = message.to_lowercase();
    for inside in [
        data_dir.as_str(),
        "select ",
        "insert ",
        "sqlite",
        "postgres",
    ] {
        assert!(!lower.contains(inside), "{message:?} shows {inside:?}");
    }
}

/// Wait until the workspaces of ended deployments are gone (the actor
/// removes them just after the final event), so `files` is stable.
pub async fn settled(app: &TestApp) {
    let work = app.data_dir.join("work");
    crate::support::app::eventually("ended workspaces to be removed", || {
        std::fs::read_dir(&work).map_or(true, |mut entries| entries.next().is_none())
    })
    .await;
}

/// Every path under the test's whole temp dir (the data dir's parent), not
/// following symlinks: what a refused request must leave unchanged.
pub fn files(app: &TestApp) -> BTreeSet<String> {
    let root = app.data_dir.parent().expect("the data dir has a parent");
    let mut found = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries {
            let path = entry.expect("a dir entry").path();
            found.insert(relative(root, &path));
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                stack.push(path);
            }
        }
    }
    found
}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .expect("under root")
        .display()
        .to_string()
}

/// The app's deployments on every cluster, newest first.
pub async fn history_len(app: &TestApp, name: &str) -> usize {
    // With auth off the token is ignored.
    let admin = client(app, Some(ADMIN));
    let page = admin.history(name, &Default::default()).await;
    page.expect("history").deployments.len()
}
