//! The active pointer is the desired state: an activation that does not
//! succeed puts the cluster back on the active version, through the HTTP API
//! with real step processes, on both stores.
//!
//! The `flaky` cluster is the built-in `local` one, whose activate step also
//! fails after switching (`fail-activate` in the source), or waits after
//! switching (`hang-activate`), refuses restores while
//! `<data_dir>/break-restore` exists, and takes 8 s to restore while
//! `<data_dir>/slow-restore` does.

mod crash;

use crate::support::app::*;
use crate::support::on_both_stores;
use deployd::config::{ClusterConfig, Config};
use deployd::machine::State;
use deployd::model::{Deployment, EventData, RollbackRequest};

on_both_stores!(
    a_failed_activation_is_restored,
    a_cancelled_activation_is_restored_and_rollback_still_works,
    a_failed_restore_shows_drift_until_a_success,
    a_failed_first_activation_leaves_nothing_current,
    a_restore_after_a_timeout_outlives_the_phase_deadline,
);

fn flaky(config: &mut Config) {
    let mut cluster: ClusterConfig = config.clusters["local"].clone();
    let activate = cluster
        .activate
        .as_mut()
        .expect("local has an activate step");
    let local = activate.run.last().expect("the local script").clone();
    let script = format!(
        r#"if [ "${{DEPLOY_RESTORE:-}}" = 1 ] && [ -e "$DEPLOY_DATA_DIR/break-restore" ]; then
  echo "restore refused" >&2; exit 4
fi
if [ "${{DEPLOY_RESTORE:-}}" = 1 ] && [ -e "$DEPLOY_DATA_DIR/slow-restore" ]; then sleep 8; fi
{local}
if [ "${{DEPLOY_RESTORE:-}}" != 1 ]; then
  if [ -e "$DEPLOY_ARTIFACT/fail-activate" ]; then echo "health check failed" >&2; exit 2; fi
  if [ -e "$DEPLOY_ARTIFACT/hang-activate" ]; then
    echo $$ > "$DEPLOY_DATA_DIR/activate-$DEPLOY_ID.pid"; sleep 300
  fi
fi"#
    );
    *activate.run.last_mut().expect("the local script") = script;
    config.clusters.insert("flaky".into(), cluster);
}

impl TestApp {
    /// Deploy `index.html` = `tag` to web/flaky, plus an empty `marker` file.
    async fn deploy_flaky(&self, tag: &str, marker: Option<&str>) -> Deployment {
        let mut files = vec![("index.html", tag, 0o644)];
        files.extend(marker.map(|m| (m, "", 0o644)));
        let source = self.upload(&files).await;
        self.client
            .deploy("web", "flaky", &deploy_request(&source))
            .await
            .expect("deploy accepted")
    }

    async fn succeed_flaky(&self, tag: &str) -> Deployment {
        let d = self.deploy_flaky(tag, None).await;
        let d = self.finished(d.id).await;
        assert_eq!(d.state, State::Succeeded, "{:?}", d.error);
        d
    }

    /// What `current` serves, or `None` when nothing is current.
    fn current(&self) -> Option<String> {
        let current = self.data_dir.join("releases/web/flaky/current/index.html");
        std::fs::read_to_string(current).ok()
    }

    async fn active_version(&self) -> Option<String> {
        let target = self.client.target("web", "flaky").await.expect("target");
        target.active.map(|a| a.version)
    }
}

fn restore_lines(events: &[(i64, EventData)]) -> Vec<String> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            EventData::Log(l) if l.step == "restore" => Some(l.line.clone()),
            _ => None,
        })
        .collect()
}

async fn a_failed_activation_is_restored(backend: Backend) {
    let app = spawn_app(backend, flaky).await;
    app.succeed_flaky("one").await;
    let d = app.deploy_flaky("two", Some("fail-activate")).await;
    let events = app.events_until_end(d.id).await;
    let failed = app.client.get(d.id).await.unwrap();
    assert_eq!(failed.state, State::Failed);
    let error = failed.error.unwrap();
    assert!(
        error.contains("health check failed") && error.ends_with("; restored v1 on the cluster"),
        "{error}"
    );
    assert_eq!(app.current().as_deref(), Some("one"), "the cluster is back");
    assert_eq!(app.active_version().await.as_deref(), Some("v1"));
    let restored = restore_lines(&events);
    assert!(
        restored.iter().any(|l| l.contains("(v1)")),
        "the restore's output is the deployment's, as step restore: {restored:?}"
    );
    let target = app.client.target("web", "flaky").await.unwrap();
    assert!(target.drift.is_none() && target.running.is_none());
    app.stop().await;
}

async fn a_cancelled_activation_is_restored_and_rollback_still_works(backend: Backend) {
    let app = spawn_app(backend, flaky).await;
    app.succeed_flaky("one").await;
    app.succeed_flaky("two").await;
    let d = app.deploy_flaky("three", Some("hang-activate")).await;
    let pid_file = app.data_dir.join(format!("activate-{}.pid", d.id));
    let pid = read_pid(&pid_file).await;
    assert_eq!(app.current().as_deref(), Some("three"), "it switched");

    let cancelled = app.client.cancel(d.id, None).await.unwrap();
    assert_eq!(cancelled.state, State::Cancelled);
    let error = cancelled.error.unwrap();
    assert_eq!(error, "cancelled; restored v2 on the cluster");
    assert!(!alive(pid), "the activate step was stopped first");
    assert_eq!(app.current().as_deref(), Some("two"));
    assert_eq!(app.active_version().await.as_deref(), Some("v2"));

    // The record and the cluster agree, so a plain rollback goes to v1.
    let back = app
        .client
        .rollback("web", "flaky", &RollbackRequest::default())
        .await
        .unwrap();
    let back = app.finished(back.id).await;
    assert_eq!(back.state, State::Succeeded, "{:?}", back.error);
    assert_eq!(back.version.as_deref(), Some("v1"));
    assert_eq!(app.current().as_deref(), Some("one"));
    assert_eq!(app.active_version().await.as_deref(), Some("v1"));
    app.stop().await;
}

async fn a_failed_restore_shows_drift_until_a_success(backend: Backend) {
    let app = spawn_app(backend, flaky).await;
    app.succeed_flaky("one").await;
    std::fs::write(app.data_dir.join("break-restore"), "").unwrap();
    let d = app.deploy_flaky("two", Some("fail-activate")).await;
    let failed = app.finished(d.id).await;
    assert_eq!(failed.state, State::Failed);
    let error = failed.error.unwrap();
    assert!(
        error.contains("health check failed")
            && error.contains("; restore of v1 failed: restore step failed")
            && error.contains("restore refused"),
        "{error}"
    );
    assert_eq!(app.current().as_deref(), Some("two"), "the cluster drifted");
    let target = app.client.target("web", "flaky").await.unwrap();
    assert_eq!(target.active.unwrap().version, "v1", "the record holds");
    let drift = target.drift.expect("the target shows drift");
    assert_eq!(drift.version.as_deref(), Some("v1"));
    assert_eq!(drift.deployment_id, d.id);
    assert!(drift.error.contains("restore refused"), "{}", drift.error);
    // Operators see it too: /v1/supervisor lists it, /metrics counts it.
    let (listed, gauge) = drift_seen_by_operators(&app).await;
    assert_eq!(
        listed,
        vec![("web".to_string(), "flaky".to_string(), d.id.to_string())]
    );
    assert_eq!(gauge, 1.0);

    std::fs::remove_file(app.data_dir.join("break-restore")).unwrap();
    app.succeed_flaky("three").await;
    let target = app.client.target("web", "flaky").await.unwrap();
    assert!(target.drift.is_none(), "a success clears the drift");
    assert_eq!(drift_seen_by_operators(&app).await, (Vec::new(), 0.0));
    assert_eq!(app.current().as_deref(), Some("three"));
    app.stop().await;
}

async fn a_failed_first_activation_leaves_nothing_current(backend: Backend) {
    let app = spawn_app(backend, flaky).await;
    let d = app.deploy_flaky("one", Some("fail-activate")).await;
    let failed = app.finished(d.id).await;
    let error = failed.error.unwrap();
    assert!(
        error.ends_with("; restored no active version on the cluster"),
        "{error}"
    );
    assert_eq!(app.current(), None, "nothing is current");
    assert_eq!(app.active_version().await, None);
    app.stop().await;
}

/// The drifted targets `/v1/supervisor` lists (app, cluster, deployment) and
/// the `deployd_drifted_targets` gauge of `/metrics`.
async fn drift_seen_by_operators(app: &TestApp) -> (Vec<(String, String, String)>, f64) {
    let supervisor = app.get_json("/v1/supervisor").await;
    let listed = supervisor["drifted"]
        .as_array()
        .expect("a list of drifted targets")
        .iter()
        .map(|t| {
            let field = |k: &str| t[k].as_str().unwrap().to_string();
            (field("app"), field("cluster"), field("deployment_id"))
        })
        .collect();
    let metrics = reqwest::get(format!("{}/metrics", app.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gauge = metrics
        .lines()
        .find_map(|l| l.strip_prefix("deployd_drifted_targets "))
        .expect("the drifted-targets gauge")
        .trim()
        .parse()
        .unwrap();
    (listed, gauge)
}

/// The restore after a timed-out activation starts at the phase's deadline;
/// it stores its own, so reconciliation (which fails phases past their
/// deadline plus the kill grace and 5 s) leaves it to finish.
async fn a_restore_after_a_timeout_outlives_the_phase_deadline(backend: Backend) {
    let app = spawn_app(backend, |config| {
        flaky(config);
        config.deploy.lease = std::time::Duration::from_secs(3); // the reaper runs every second
        config.deploy.kill_grace = std::time::Duration::from_secs(1);
        let flaky = config.clusters.get_mut("flaky").unwrap();
        flaky.activate.as_mut().unwrap().timeout = std::time::Duration::from_secs(10);
    })
    .await;
    app.succeed_flaky("one").await;
    std::fs::write(app.data_dir.join("slow-restore"), "").unwrap();
    let d = app.deploy_flaky("two", Some("hang-activate")).await;
    let failed = app.finished(d.id).await;
    assert_eq!(failed.state, State::Failed);
    let error = failed.error.unwrap();
    assert!(
        error.contains("timed out") && error.ends_with("; restored v1 on the cluster"),
        "the restore ran to its end: {error}"
    );
    assert_eq!(app.current().as_deref(), Some("one"));
    app.stop().await;
}
