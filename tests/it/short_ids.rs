//! Issue 15's server side, through the HTTP API: short ids in every
//! Deployment, deployments named by a short id or a prefix of it (and the
//! refusals: bad, unknown, ambiguous, out of scope), `GET /v1/clusters`,
//! `GET /v1/apps`, and one 404 for an unconfigured cluster on every route.

use crate::security::{ADMIN, CI_WEB, READER, STAGING, client, raw, raw_error, with_tokens};
use crate::store_contract::short_ids::id_with_random_part;
use crate::support::app::*;
use crate::support::on_both_stores;
use crate::support::pg::fresh_database;
use deployd::config::EnvValue;
use deployd::machine::State;
use deployd::model::{AppSummary, AppTarget, Deployment, random_part, short_id};
use deployd::store::{NewDeployment, Store};
use reqwest::Method;
use serde_json::Value;

on_both_stores!(
    short_ids_are_in_every_deployment_and_name_it,
    apps_list_targets_with_active_versions_within_scope,
);

/// A prefix no deployment among `ids` has.
fn unused_prefix(ids: &[uuid::Uuid]) -> String {
    (0..16)
        .map(|digit| format!("{digit:x}").repeat(6))
        .find(|prefix| ids.iter().all(|id| !random_part(id).starts_with(prefix)))
        .expect("16 prefixes cannot all be taken by a few ids")
}

async fn short_ids_are_in_every_deployment_and_name_it(backend: Backend) {
    let app = spawn_app(backend, |config| {
        let slow = sh_cluster(Some("sleep 30"), None, None);
        config.clusters.insert("slow".to_string(), slow);
    })
    .await;
    let done = app.deploy("web", "local", "one").await;
    let done = app.finished(done.id).await;
    assert_eq!(done.state, State::Succeeded);
    let short = short_id(&done.id);

    // The short id is in the Deployment wherever it appears.
    let by_id = app.get_json(&format!("/v1/deployments/{}", done.id)).await;
    assert_eq!(by_id["short_id"], short.as_str());
    let history = app.get_json("/v1/apps/web/deployments").await;
    assert_eq!(history["deployments"][0]["short_id"], short.as_str());
    let running = app.deploy("web", "slow", "two").await;
    let view = app.get_json("/v1/apps/web/clusters/slow").await;
    let shown = view["running"]
        .as_object()
        .or(view["queued"][0].as_object());
    assert_eq!(shown.unwrap()["short_id"], short_id(&running.id).as_str());

    // GET and events by the 8-digit short id and by a 6-digit prefix.
    for reference in [short.clone(), short[..6].to_string()] {
        let found = app
            .client
            .deployment(&reference)
            .await
            .expect("by short id");
        assert_eq!(found.id, done.id, "{reference}");
        let url = format!("{}/v1/deployments/{reference}/events", app.url);
        let stream = reqwest::get(url).await.unwrap().text().await.unwrap();
        assert!(stream.starts_with("id: 1\nevent: deployment\n"), "{stream}");
        let first = stream
            .lines()
            .nth(2)
            .unwrap()
            .strip_prefix("data: ")
            .unwrap();
        let first: Value = serde_json::from_str(first).unwrap();
        assert_eq!(first["short_id"], short.as_str(), "{stream}");
        assert!(stream.contains("\"to\":\"succeeded\""), "{stream}");
    }

    // Bad references are 400 and change nothing; unknown ones are 404.
    let slow_prefix = short_id(&running.id)[..6].to_string();
    for bad in ["xyz", "abcde", "e5fa6b7c8d9e0f1a2b3a", "v12"] {
        let path = format!("/v1/deployments/{bad}/cancel");
        let details = raw_error(
            &app,
            None,
            (Method::POST, &path),
            Some(b"{}"),
            (400, "invalid_argument"),
        )
        .await;
        assert_eq!(details["field"], "id", "{bad}");
        let path = format!("/v1/deployments/{bad}");
        raw_error(
            &app,
            None,
            (Method::GET, &path),
            None,
            (400, "invalid_argument"),
        )
        .await;
    }
    let unused = unused_prefix(&[done.id, running.id]);
    for path in [
        format!("/v1/deployments/{unused}"),
        format!("/v1/deployments/{unused}/events"),
    ] {
        let details = raw_error(&app, None, (Method::GET, &path), None, (404, "not_found")).await;
        assert_eq!(details["kind"], "deployment");
    }
    let path = format!("/v1/deployments/{unused}/cancel");
    raw_error(
        &app,
        None,
        (Method::POST, &path),
        Some(b"{}"),
        (404, "not_found"),
    )
    .await;
    let still = app.client.get(running.id).await.unwrap();
    assert!(!still.state.is_terminal(), "{still:?}");

    // Cancel by a 6-digit prefix; the answer carries the short id too.
    let path = format!("/v1/deployments/{slow_prefix}/cancel");
    let answer = raw(&app, Method::POST, &path, None, Some(b"{}")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body["id"], running.id.to_string());
    assert_eq!(answer.body["short_id"], short_id(&running.id).as_str());
    assert_eq!(answer.body["state"], "cancelled");
}

/// Deployments with chosen random parts, written to the store beside the
/// daemon (the server mints random ones): three share the prefix `abc8ef`
/// (web/local, web/staging, api/local), one alone has `dd18ef` (api/local).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixes_resolve_among_what_the_token_may_read() {
    let db = fresh_database().await;
    let store = deployd::store::postgres::PgStore::connect(db.url())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for (app_name, cluster, random) in [
        ("web", "local", "abc8ef0000000000001"),
        ("web", "staging", "abc8ef0000000000002"),
        ("api", "local", "abc8ef0000000000003"),
        ("api", "local", "dd18ef0000000000001"),
    ] {
        let new = NewDeployment {
            id: id_with_random_part(random),
            app: app_name.into(),
            cluster: cluster.into(),
            kind: deployd::machine::Kind::Rollback,
            source: None,
            rollback_to: Some("v9".into()),
            git: None,
            message: String::new(),
            deployed_by: "test".into(),
            idempotency_key: None,
            request_hash: String::new(),
            created_at: deployd::model::now(),
            fence: None,
        };
        ids.push(new.id);
        store.create(new).await.unwrap();
    }
    let app = spawn_app_on(db.url(), with_tokens).await;

    let details = raw_error(
        &app,
        Some(ADMIN),
        (Method::GET, "/v1/deployments/abc8ef"),
        None,
        (409, "ambiguous"),
    )
    .await;
    let candidates = details["candidates"].as_array().unwrap();
    let listed: Vec<&str> = candidates
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    let expected: Vec<String> = ids[..3].iter().map(ToString::to_string).collect();
    assert_eq!(listed, expected);
    for (candidate, id) in candidates.iter().zip(&ids) {
        assert_eq!(candidate["short_id"], short_id(id).as_str());
        assert!(candidate["app"].is_string() && candidate["cluster"].is_string());
        assert!(candidate["created_at"].is_string(), "{candidate}");
    }
    let answer = raw(
        &app,
        Method::GET,
        "/v1/deployments/abc8ef",
        Some(ADMIN),
        None,
    )
    .await;
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("more digits"), "{message}");

    // A cancel by an ambiguous prefix changes nothing.
    let path = "/v1/deployments/abc8ef/cancel";
    raw_error(
        &app,
        Some(ADMIN),
        (Method::POST, path),
        Some(b"{}"),
        (409, "ambiguous"),
    )
    .await;

    // ci-web reads only web: two candidates, api's is never shown.
    let details = raw_error(
        &app,
        Some(CI_WEB),
        (Method::GET, "/v1/deployments/abc8ef"),
        None,
        (409, "ambiguous"),
    )
    .await;
    let apps: Vec<&str> = (details["candidates"].as_array().unwrap().iter())
        .map(|c| c["app"].as_str().unwrap())
        .collect();
    assert_eq!(apps, ["web", "web"]);
    // api's alone: not found for ci-web, not forbidden (it learns nothing).
    for path in [
        "/v1/deployments/dd18ef",
        "/v1/deployments/abc8ef0000000000003",
    ] {
        let details = raw_error(
            &app,
            Some(CI_WEB),
            (Method::GET, path),
            None,
            (404, "not_found"),
        )
        .await;
        assert_eq!(details["kind"], "deployment");
    }
    let found = client(&app, Some(READER))
        .deployment("dd18ef")
        .await
        .unwrap();
    assert_eq!(found.id, ids[3]);
    // staging-bot reads only staging: the prefix is unique for it.
    let found: Deployment = client(&app, Some(STAGING))
        .deployment("abc8ef")
        .await
        .unwrap();
    assert_eq!((found.id, found.cluster.as_str()), (ids[1], "staging"));
    // More digits tell them apart for anyone.
    let found = client(&app, Some(ADMIN))
        .deployment("abc8ef0000000000002")
        .await
        .unwrap();
    assert_eq!(found.id, ids[1]);
}

#[tokio::test]
async fn clusters_show_steps_and_env_names_never_secret_values() {
    const SECRET: &str = "hunter2-registry-password";
    let app = spawn_app(Backend::Sqlite, |config| {
        with_tokens(config);
        let mut prod = sh_cluster(
            Some("make build"),
            None,
            Some(&format!("deploy --password {SECRET}")),
        );
        prod.env
            .insert("REGISTRY_PASSWORD".into(), EnvValue::secret(SECRET));
        prod.env
            .insert("REGION".into(), EnvValue::not_secret("eu-west-1"));
        config.clusters.insert("prod".into(), prod);
    })
    .await;
    let answer = raw(&app, Method::GET, "/v1/clusters", Some(ADMIN), None).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    let text = answer.body.to_string();
    assert!(
        !text.contains(SECRET) && !text.contains("eu-west-1"),
        "{text}"
    );
    let names: Vec<&str> = (answer.body["clusters"].as_array().unwrap().iter())
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["local", "prod", "staging"]);
    let prod = &answer.body["clusters"][1];
    assert_eq!(
        prod["env"],
        serde_json::json!(["REGION", "REGISTRY_PASSWORD"])
    );
    let phases: Vec<&str> = (prod["steps"].as_array().unwrap().iter())
        .map(|s| s["phase"].as_str().unwrap())
        .collect();
    assert_eq!(phases, ["build", "activate"]);
    assert_eq!(
        prod["steps"][0]["run"],
        serde_json::json!(["/bin/sh", "-c", "make build"])
    );
    assert_eq!(prod["steps"][0]["timeout_seconds"], 60);
    // A token scoped to staging sees staging alone, through the client too.
    let seen = client(&app, Some(STAGING)).clusters().await.unwrap();
    let names: Vec<String> = seen.clusters.into_iter().map(|c| c.name).collect();
    assert_eq!(names, ["staging"]);
}

async fn apps_list_targets_with_active_versions_within_scope(backend: Backend) {
    let mut app = spawn_app(backend, with_tokens).await;
    app.client = client(&app, Some(ADMIN));
    assert!(app.client.apps().await.unwrap().apps.is_empty());
    for (name, cluster) in [("web", "local"), ("api", "staging")] {
        let d = app.deploy(name, cluster, name).await;
        assert_eq!(app.finished(d.id).await.state, State::Succeeded);
    }
    let target = |cluster: &str| AppTarget {
        cluster: cluster.into(),
        active_version: Some("v1".into()),
        running: false,
    };
    let summary = |name: &str, cluster: &str| AppSummary {
        app: name.into(),
        targets: vec![target(cluster)],
    };
    let all = app.client.apps().await.unwrap();
    assert_eq!(
        all.apps,
        [summary("api", "staging"), summary("web", "local")]
    );
    assert!(!all.truncated);
    assert_eq!(
        client(&app, Some(READER)).apps().await.unwrap().apps,
        all.apps
    );
    let web = client(&app, Some(CI_WEB)).apps().await.unwrap();
    assert_eq!(web.apps, [summary("web", "local")]);
    let staging = client(&app, Some(STAGING)).apps().await.unwrap();
    assert_eq!(staging.apps, [summary("api", "staging")]);
}

#[tokio::test]
async fn history_of_an_unconfigured_cluster_is_the_target_routes_404() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let target = raw(&app, Method::GET, "/v1/apps/web/clusters/nope", None, None).await;
    let history = raw(
        &app,
        Method::GET,
        "/v1/apps/web/deployments?cluster=nope",
        None,
        None,
    )
    .await;
    assert_eq!(target.status, 404, "{}", target.body);
    assert_eq!(history.status, target.status, "{}", history.body);
    assert_eq!(history.body, target.body);
    assert_eq!(history.body["error"]["details"]["kind"], "cluster");
    let known = raw(
        &app,
        Method::GET,
        "/v1/apps/web/deployments?cluster=local",
        None,
        None,
    )
    .await;
    assert_eq!(known.status, 200, "{}", known.body);
}
