//! Retention through the daemon: real deploys on the `local` cluster,
//! compaction triggered by `POST /v1/admin/compact`, then what history,
//! versions, rollbacks and the data dir still hold; and `GET /metrics`.
//! Issue 12's cases are here, each on both stores.

use crate::support::app::*;
use crate::support::on_both_stores;
use deployd::client::HistoryParams;
use deployd::machine::State;
use deployd::model::{Deployment, RollbackRequest};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

mod cases;
mod hostile;
mod property;

on_both_stores!(
    compaction_keeps_the_newest_active_and_rollback_targets,
    metrics_answer_prometheus_text,
);

pub(crate) async fn compact(app: &TestApp) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{}/v1/admin/compact", app.url))
        .send()
        .await
        .expect("POST /v1/admin/compact");
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON report")
}

async fn metrics(app: &TestApp) -> String {
    let response = reqwest::get(format!("{}/metrics", app.url))
        .await
        .expect("GET /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    response.text().await.expect("the metrics text")
}

/// The value of an unlabelled sample in a metrics text.
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{text}"))
}

/// Where the `local` cluster built `d`, as the daemon (canonical data dir) names it.
pub(crate) fn release_dir(app: &TestApp, d: &Deployment) -> PathBuf {
    app.data_dir
        .canonicalize()
        .expect("the data dir exists")
        .join("releases/web/local")
        .join(d.id.to_string())
}

/// Five deploys and a rollback to v2, keeping two releases per target: v2
/// (active, by the rollback) and v5 (the one before it) stay with the
/// deployments that made them active; v1, v3 and v4 go with their
/// deployments and release directories, and so does deploy 2, an earlier
/// activation of v2 (its release directory stays: it is v2's).
async fn compaction_keeps_the_newest_active_and_rollback_targets(backend: Backend) {
    let app = spawn_app(backend, |config| {
        config.deploy.keep_releases = 2;
        config.deploy.keep_min_age = Duration::ZERO;
    })
    .await;
    let mut deploys = Vec::new();
    for n in 1..=5 {
        let d = app.deploy("web", "local", &format!("release {n}")).await;
        let d = app.finished(d.id).await;
        assert_eq!(d.state, State::Succeeded);
        assert!(release_dir(&app, &d).is_dir());
        deploys.push(d);
    }
    let request = RollbackRequest {
        version: Some("v2".into()),
        message: None,
        on_conflict: None,
        idempotency_key: None,
    };
    let rollback = app
        .client
        .rollback("web", "local", &request)
        .await
        .expect("rollback");
    let rollback = app.finished(rollback.id).await;
    assert_eq!((rollback.state, rollback.active), (State::Succeeded, true));
    let runs_before = sample(&metrics(&app).await, "deployd_compaction_runs_total");

    let report = compact(&app).await;
    // Deploys 1, 3 and 4 with their versions, and deploy 2: the rollback is
    // now the deployment that made v2 active.
    assert_eq!(report["deployments_deleted"], 4, "{report}");
    let deleted: BTreeSet<&str> = report["versions_deleted"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|v| v["version"].as_str().expect("a version"))
        .collect();
    assert_eq!(deleted, ["v1", "v3", "v4"].into());

    let params = HistoryParams {
        cluster: Some("local".into()),
        ..HistoryParams::default()
    };
    let history = app.client.history("web", &params).await.expect("history");
    let ids: Vec<_> = history.deployments.iter().map(|d| d.id).collect();
    assert_eq!(ids, [rollback.id, deploys[4].id]);
    let versions = app
        .client
        .versions("web", None, None)
        .await
        .expect("versions");
    let names: Vec<&str> = versions
        .versions
        .iter()
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(names, ["v5", "v2"]);
    for (n, d) in deploys.iter().enumerate() {
        let kept = n == 1 || n == 4;
        assert_eq!(
            release_dir(&app, d).is_dir(),
            kept,
            "release of deploy {}",
            n + 1
        );
    }
    let current = std::fs::read_link(release_dir(&app, &deploys[0]).with_file_name("current"))
        .expect("the current link");
    assert_eq!(current, release_dir(&app, &deploys[1]));
    let target = app.client.target("web", "local").await.expect("target");
    assert_eq!(target.active.map(|a| a.version), Some("v2".into()));

    // Nothing left to do; both runs counted.
    let again = compact(&app).await;
    assert_eq!(again["deployments_deleted"], 0, "{again}");
    let text = metrics(&app).await;
    assert!(sample(&text, "deployd_compaction_runs_total") >= runs_before + 2.0);
    assert!(sample(&text, "deployd_compaction_deleted_deployments_total") >= 3.0);
    assert!(sample(&text, "deployd_compaction_deleted_versions_total") >= 3.0);
    app.stop().await;
}

async fn metrics_answer_prometheus_text(backend: Backend) {
    let app = spawn_app(backend, |_| {}).await;
    let d = app.deploy("web", "local", "hello").await;
    app.finished(d.id).await;
    let text = metrics(&app).await;
    // The series scrapers know, each with a sample (OpenMetrics names a
    // counter's family without its `_total`, so samples are what to check).
    for series in [
        "deployd_deployments_finished_total{outcome=\"succeeded\"}",
        "deployd_phase_duration_seconds_count{phase=\"building\"}",
        "deployd_queue_depth",
        "deployd_resident_actors",
        "deployd_actor_restarts_total",
        "deployd_stream_subscribers",
        "deployd_store_call_duration_seconds_count",
        "deployd_compaction_runs_total",
        "deployd_data_dir_bytes{area=\"releases\"}",
        "deployd_data_dir_entries{area=\"sources\"}",
        "deployd_data_dir_removed_total{area=\"work\"}",
        "deployd_cleanup_step_failures_total",
    ] {
        assert!(
            text.lines()
                .any(|line| line.starts_with(&format!("{series} "))),
            "{series} in\n{text}"
        );
    }
    assert!(text.ends_with("# EOF\n"), "{text}");
    // Read at scrape time: the target's actor is resident after its deploy.
    assert!(sample(&text, "deployd_resident_actors") >= 1.0, "{text}");
    // Measured by the sweep: after a compaction, the release and its source.
    compact(&app).await;
    let text = metrics(&app).await;
    assert!(
        sample(&text, "deployd_data_dir_bytes{area=\"releases\"}") > 0.0,
        "{text}"
    );
    assert_eq!(
        sample(&text, "deployd_data_dir_entries{area=\"releases\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "deployd_data_dir_entries{area=\"sources\"}"),
        1.0
    );
    assert_eq!(
        sample(&text, "deployd_data_dir_entries{area=\"work\"}"),
        0.0
    );
    app.stop().await;
}
