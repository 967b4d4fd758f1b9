//! One step per target: a stopped step is gone before its deployment ends
//! and the next one starts; a store outage is not a crash.

use crate::support::app::*;
use crate::support::on_both_stores;
use crate::support::process::ThrowawayPg;
use deployd::client::ClientError;
use deployd::config::ConflictPolicy;
use deployd::machine::State;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long a stopped step takes to exit after SIGTERM (its trap).
const TRAP_SECS: f64 = 1.5;

/// A build that refuses to start while the previous build's process is
/// alive (it fails with OVERLAP), records its pid, and exits `TRAP_SECS`
/// after SIGTERM. `sh` runs a trap only after its foreground child exits,
/// so the loop sleeps in short steps.
fn slow_to_die_build(dir: &Path) -> String {
    let pid = dir.join("pid");
    let pid = pid.display();
    format!(
        "if [ -e '{pid}' ] && kill -0 \"$(cat '{pid}')\" 2>/dev/null; then echo OVERLAP >&2; exit 1; fi; \
         trap 'sleep {TRAP_SECS}; exit 1' TERM; echo $$ > '{pid}'; echo started; \
         while true; do sleep 0.05; done"
    )
}

async fn slow_app(backend: Backend, dir: &Path) -> TestApp {
    let build = slow_to_die_build(dir);
    spawn_app(backend, |c| {
        // Long enough that SIGKILL never cuts the trap short.
        c.deploy.kill_grace = Duration::from_secs(10);
        c.clusters.insert(
            "slow".into(),
            sh_cluster(Some(&build), None, Some("echo activated")),
        );
    })
    .await
}

async fn deploy_with(
    app: &TestApp,
    tag: &str,
    policy: ConflictPolicy,
) -> deployd::model::Deployment {
    let source = app.upload(&[("index.html", tag, 0o644)]).await;
    let mut request = deploy_request(&source);
    request.on_conflict = Some(policy);
    app.client
        .deploy("web", "slow", &request)
        .await
        .expect("deploy accepted")
}

async fn running_pid(dir: &Path) -> i32 {
    read_pid(&dir.join("pid")).await
}

on_both_stores!(
    cancel_answers_once_the_step_is_gone,
    supersede_starts_the_next_build_only_after_the_old_one_is_gone,
    a_timed_out_step_is_gone_before_the_queue_moves,
);

async fn cancel_answers_once_the_step_is_gone(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = slow_app(backend, dir.path()).await;
    let d = deploy_with(&app, "one", ConflictPolicy::Reject).await;
    let pid = running_pid(dir.path()).await;

    let asked = Instant::now();
    let cancelled = app
        .client
        .cancel(d.id, Some("changed my mind".into()))
        .await
        .expect("cancel");
    let took = asked.elapsed();
    assert_eq!(cancelled.state, State::Cancelled);
    assert!(
        !alive(pid),
        "the step's process is gone when cancel answers"
    );
    assert!(
        took >= Duration::from_secs_f64(TRAP_SECS * 0.9),
        "answered after {took:?}"
    );

    // The target is free, and the next build sees no overlap.
    let next = deploy_with(&app, "two", ConflictPolicy::Reject).await;
    assert_eq!(next.state, State::Building);
    std::fs::remove_file(dir.path().join("pid")).ok();
    app.client
        .cancel(next.id, None)
        .await
        .expect("cancel the second");
    let events = app.events_until_end(d.id).await;
    let notes: Vec<String> = events
        .iter()
        .filter_map(|(_, e)| match e {
            deployd::model::EventData::Log(l) if l.step == "deployd" => Some(l.line.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        notes,
        vec!["stopping the build step (cancel requested)".to_string()]
    );
    app.stop().await;
}

async fn supersede_starts_the_next_build_only_after_the_old_one_is_gone(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let app = slow_app(backend, dir.path()).await;
    let first = deploy_with(&app, "one", ConflictPolicy::Reject).await;
    let pid = running_pid(dir.path()).await;

    let second = deploy_with(&app, "two", ConflictPolicy::Supersede).await;
    assert_eq!(
        second.state,
        State::Queued,
        "it waits for the old step to go"
    );
    let first = app.finished(first.id).await;
    assert_eq!(first.state, State::Cancelled);
    assert_eq!(first.superseded_by, Some(second.id));
    assert!(!alive(pid));
    // The second build started, found no overlap, and runs.
    eventually("the second build to record its pid", || {
        std::fs::read_to_string(dir.path().join("pid"))
            .is_ok_and(|p| p.trim().parse::<i32>().is_ok_and(|p| p != pid))
    })
    .await;
    let target = app.client.target("web", "slow").await.unwrap();
    let running = target.running.expect("the second deployment runs");
    assert_eq!(running.id, second.id);
    let second = app.client.cancel(second.id, None).await.expect("cancel");
    assert_eq!(second.state, State::Cancelled, "{:?}", second.error);
    assert!(second.error.unwrap_or_default().starts_with("cancelled"));
    app.stop().await;
}

async fn a_timed_out_step_is_gone_before_the_queue_moves(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let build = slow_to_die_build(dir.path());
    let app = spawn_app(backend, |c| {
        c.deploy.kill_grace = Duration::from_secs(10);
        let mut cluster = sh_cluster(Some(&build), None, Some("echo activated"));
        cluster.build.as_mut().unwrap().timeout = Duration::from_secs(1);
        c.clusters.insert("slow".into(), cluster);
    })
    .await;
    let first = deploy_with(&app, "one", ConflictPolicy::Reject).await;
    let second = deploy_with(&app, "two", ConflictPolicy::Queue).await;
    let first = app.finished(first.id).await;
    assert_eq!(first.state, State::Failed);
    // The configured timeout, not what was left of the stored deadline.
    let error = first.error.unwrap_or_default();
    assert!(
        error.starts_with("build step timed out after 1s"),
        "{error}"
    );
    assert!(!error.contains("ms"), "{error}");
    // The second build checked for the first's process and found none; it
    // then timed out the same way.
    let second = app.finished(second.id).await;
    let error = second.error.unwrap_or_default();
    assert!(!error.contains("OVERLAP"), "{error}");
    assert!(error.contains("timed out"), "{error}");
    app.stop().await;
}

/// PostgreSQL away for a moment while requests hit an idle target: each is
/// answered 503, none counts as an actor crash, and the target is usable as
/// soon as the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_store_outage_is_not_a_crash() {
    let pg = ThrowawayPg::start();
    let url = pg.url();
    let app = spawn_app(Backend::Sqlite, |c| c.store.url = Some(url)).await;
    let source = app.upload(&[("index.html", "one", 0o644)]).await;

    pg.stop();
    for _ in 0..3 {
        let refused = app
            .client
            .deploy("web", "local", &deploy_request(&source))
            .await
            .unwrap_err();
        assert!(
            matches!(refused, ClientError::Api { status: 503, .. }),
            "{refused:?}"
        );
    }
    pg.resume();
    wait_ready(&app.client, "the database to be back").await;

    let supervisor = app.get_json("/v1/supervisor").await;
    assert_eq!(
        supervisor["degraded"],
        serde_json::json!([]),
        "{supervisor}"
    );
    let restarts: Vec<u64> = supervisor["actors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["restarts"].as_u64().unwrap())
        .collect();
    assert!(restarts.iter().all(|r| *r == 0), "{supervisor}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let deployed = loop {
        match app
            .client
            .deploy("web", "local", &deploy_request(&source))
            .await
        {
            Ok(d) => break d,
            // The actor reloads its queue within its retry period.
            Err(ClientError::Api { status: 503, .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the target is usable again: {e:?}"),
        }
    };
    assert_eq!(app.finished(deployed.id).await.state, State::Succeeded);
    app.stop().await;
}
