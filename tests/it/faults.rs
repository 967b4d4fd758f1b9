//! Fault tests: each one really kills or stops something — the daemon
//! (SIGKILL, SIGTERM), an actor (an injected panic), the database — and
//! checks that no deployment is left stale, no target locked, no event lost.

use crate::support::app::*;
use crate::support::on_both_stores;
use crate::support::pg::fresh_database;
use crate::support::process::{Daemon, ThrowawayPg, write_config};
use deployd::client::{ClientError, follow};
use deployd::config::ConflictPolicy;
use deployd::machine::State;
use deployd::model::EventData;
use deployd::target::TEST_PANIC;
use futures::StreamExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// A 3 s lease (the smallest the config allows) keeps these tests short.
const LEASE: Duration = Duration::from_secs(3);

/// A build that records its pid and a background child's pid (both must be
/// gone once the step is stopped), then waits for the `gate` file.
fn gated_script(gate: &Path) -> String {
    format!(
        "echo $$ > \"$DEPLOY_SOURCE_DIR/../pid\"; sleep 300 & echo $! > \"$DEPLOY_SOURCE_DIR/../child\"; while [ ! -e '{}' ]; do sleep 0.05; done",
        gate.display()
    )
}

/// deploy settings and a `gated` cluster running [`gated_script`], for a
/// daemon process's config file.
fn gated_toml(gate: &Path, build_timeout: &str) -> String {
    let argv = serde_json::json!(["/bin/sh", "-c", gated_script(gate)]);
    format!(
        "[deploy]\nlease = \"3s\"\nkill_grace = \"1s\"\n\n[clusters.gated.build]\nrun = {argv}\ntimeout = \"{build_timeout}\"\n"
    )
}

/// A daemon process of its own in `parent/name`, on the PostgreSQL `url`,
/// with the `gated` cluster; several may share one database.
async fn gated_daemon(
    parent: &Path,
    name: &str,
    url: &str,
    gate: &Path,
) -> (std::path::PathBuf, Daemon) {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let daemon = Daemon::start(&write_config(&dir, Some(url), &gated_toml(gate, "10m"))).await;
    (dir, daemon)
}

/// The store URL for a daemon process: None for the embedded store.
async fn store_for(backend: Backend) -> (Option<String>, Option<crate::support::pg::TestDatabase>) {
    match backend {
        Backend::Sqlite => (None, None),
        Backend::Postgres => {
            let db = fresh_database().await;
            (Some(db.url().to_string()), Some(db))
        }
    }
}

async fn upload_and_deploy(
    client: &deployd::client::Client,
    cluster: &str,
    policy: ConflictPolicy,
) -> deployd::model::Deployment {
    let bytes = tar_of(&[("index.html", &uuid::Uuid::now_v7().to_string(), 0o644)]);
    let sha = sha256_hex(&bytes);
    client.put_source(&sha, bytes).await.expect("upload");
    let mut request = deploy_request(&sha);
    request.on_conflict = Some(policy);
    client
        .deploy("web", cluster, &request)
        .await
        .expect("deploy accepted")
}

async fn step_pids(data_dir: &Path, id: uuid::Uuid) -> (i32, i32) {
    let work = data_dir.join("work").join(id.to_string());
    (
        read_pid(&work.join("pid")).await,
        read_pid(&work.join("child")).await,
    )
}

on_both_stores!(
    kill9_during_a_build_frees_the_target_within_a_lease,
    a_queued_deployment_survives_a_restart,
    a_phase_deadline_survives_a_restart,
    sigterm_interrupts_a_running_build_and_exits_zero,
    an_actor_panic_fails_its_deployment_and_spares_other_targets,
    six_panics_in_a_minute_degrade_the_target,
    requests_racing_passivation_are_never_lost,
);

async fn kill9_during_a_build_frees_the_target_within_a_lease(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let (url, _db) = store_for(backend).await;
    let config = write_config(dir.path(), url.as_deref(), &gated_toml(&gate, "10m"));
    let daemon = Daemon::start(&config).await;
    let d = upload_and_deploy(&daemon.client, "gated", ConflictPolicy::Reject).await;
    let (leader, child) = step_pids(&dir.path().join("data"), d.id).await;
    daemon.kill9();
    let killed = Instant::now();
    eventually("the step's processes to die with their daemon", || {
        !alive(leader) && !alive(child)
    })
    .await;

    let restarted = Daemon::start(&config).await;
    let events = collect_events(&restarted.client, d.id, None).await;
    // README's bound: one lease plus one reaper tick (a third of the lease)
    // after the kill; the margin is the restarted process's own start.
    let bound = LEASE + LEASE / 3 + Duration::from_secs(1);
    let freed = killed.elapsed();
    assert!(
        freed <= bound,
        "freed {freed:?} after the kill; bound {bound:?}"
    );
    let last = events.last().expect("events").1.clone();
    let EventData::State(change) = last else {
        panic!("ends with a state event")
    };
    assert_eq!(
        (change.from, change.to),
        (State::Building, State::Interrupted)
    );
    let error = change.error.expect("an error naming phase and instance");
    assert!(
        error.contains("building") && error.contains("instance"),
        "{error}"
    );
    eventually("the dead daemon's step processes to be killed", || {
        !alive(leader) && !alive(child)
    })
    .await;
    // Issue 12, case 3: the workspace goes with the deployment the restarted
    // daemon's reconciliation ended.
    let workspace = dir.path().join("data/work").join(d.id.to_string());
    eventually("the interrupted deployment's workspace to go", || {
        !workspace.exists()
    })
    .await;

    std::fs::write(&gate, "").unwrap();
    let next = upload_and_deploy(&restarted.client, "gated", ConflictPolicy::Reject).await;
    let end = collect_events(&restarted.client, next.id, None).await;
    assert!(matches!(&end.last().unwrap().1, EventData::State(s) if s.to == State::Succeeded));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_daemon_takes_over_while_the_first_stays_dead() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let db = fresh_database().await;
    let (first_dir, first) = gated_daemon(dir.path(), "first", db.url(), &gate).await;
    let d = upload_and_deploy(&first.client, "gated", ConflictPolicy::Reject).await;
    step_pids(&first_dir.join("data"), d.id).await;
    first.kill9();

    let (_, second) = gated_daemon(dir.path(), "second", db.url(), &gate).await;
    let events = collect_events(&second.client, d.id, None).await;
    assert!(matches!(&events.last().unwrap().1, EventData::State(s) if s.to == State::Interrupted));
    std::fs::write(&gate, "").unwrap();
    let next = upload_and_deploy(&second.client, "gated", ConflictPolicy::Reject).await;
    let end = collect_events(&second.client, next.id, None).await;
    assert!(matches!(&end.last().unwrap().1, EventData::State(s) if s.to == State::Succeeded));
}

async fn a_queued_deployment_survives_a_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let (url, _db) = store_for(backend).await;
    let config = write_config(dir.path(), url.as_deref(), &gated_toml(&gate, "10m"));
    let daemon = Daemon::start(&config).await;
    let first = upload_and_deploy(&daemon.client, "gated", ConflictPolicy::Reject).await;
    let queued = upload_and_deploy(&daemon.client, "gated", ConflictPolicy::Queue).await;
    assert_eq!(queued.state, State::Queued);
    step_pids(&dir.path().join("data"), first.id).await;
    daemon.kill9();

    std::fs::write(&gate, "").unwrap();
    let restarted = Daemon::start(&config).await;
    let first_events = collect_events(&restarted.client, first.id, None).await;
    assert!(
        matches!(&first_events.last().unwrap().1, EventData::State(s) if s.to == State::Interrupted)
    );
    let events = collect_events(&restarted.client, queued.id, None).await;
    assert!(matches!(&events.last().unwrap().1, EventData::State(s) if s.to == State::Succeeded));
}

async fn a_phase_deadline_survives_a_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let (url, _db) = store_for(backend).await;
    // A long lease, so only the stored deadline can end the build early.
    let toml = gated_toml(&gate, "2s").replace("lease = \"3s\"", "lease = \"60s\"");
    let config = write_config(dir.path(), url.as_deref(), &toml);
    let daemon = Daemon::start(&config).await;
    let d = upload_and_deploy(&daemon.client, "gated", ConflictPolicy::Reject).await;
    step_pids(&dir.path().join("data"), d.id).await;
    daemon.kill9();

    let restarted = Daemon::start(&config).await;
    let events = collect_events(&restarted.client, d.id, None).await;
    let EventData::State(change) = &events.last().unwrap().1 else {
        panic!("a state event")
    };
    assert_eq!(
        change.to,
        State::Failed,
        "the deadline, not the 60 s lease, ended it"
    );
    assert!(
        change.error.as_deref().unwrap().contains("timed out"),
        "{change:?}"
    );
}

async fn sigterm_interrupts_a_running_build_and_exits_zero(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let (url, _db) = store_for(backend).await;
    let config = write_config(dir.path(), url.as_deref(), &gated_toml(&gate, "10m"));
    let daemon = Daemon::start(&config).await;
    let d = upload_and_deploy(&daemon.client, "gated", ConflictPolicy::Reject).await;
    let queued = upload_and_deploy(&daemon.client, "gated", ConflictPolicy::Queue).await;
    let (leader, child) = step_pids(&dir.path().join("data"), d.id).await;
    let status = daemon.terminate().await;
    assert!(status.success(), "exit status {status:?}");
    eventually("the step to be stopped", || !alive(leader) && !alive(child)).await;
    // The shutdown ended the deployment, and its workspace went with it.
    let workspace = dir.path().join("data/work").join(d.id.to_string());
    assert!(!workspace.exists(), "{} is left", workspace.display());

    let restarted = Daemon::start(&config).await;
    let stopped = restarted.client.get(d.id).await.unwrap();
    assert_eq!(stopped.state, State::Interrupted);
    assert!(stopped.error.unwrap().contains("shut down"));
    std::fs::write(&gate, "").unwrap();
    let events = collect_events(&restarted.client, queued.id, None).await;
    assert!(
        matches!(&events.last().unwrap().1, EventData::State(s) if s.to == State::Succeeded),
        "queued stayed queued"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_a_step_finish_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let extra = r#"[deploy]
lease = "3s"

[clusters.quick.build]
run = ["/bin/sh", "-c", "sleep 0.5; echo built"]
timeout = "1m"
"#;
    let config = write_config(dir.path(), None, extra);
    // A grace long enough for the half-second build.
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("shutdown_grace = \"1s\"", "shutdown_grace = \"30s\"");
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(&config).await;
    let d = upload_and_deploy(&daemon.client, "quick", ConflictPolicy::Reject).await;
    assert!(daemon.terminate().await.success());
    let restarted = Daemon::start(&config).await;
    assert_eq!(
        restarted.client.get(d.id).await.unwrap().state,
        State::Succeeded
    );
}

async fn an_actor_panic_fails_its_deployment_and_spares_other_targets(backend: Backend) {
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("gate");
    let app = spawn_app(backend, |c| {
        let build = gated_script(&gate);
        c.clusters
            .insert("gated".into(), sh_cluster(Some(&build), None, None));
    })
    .await;
    let victim = app.deploy("web", "gated", "one").await;
    let bystander = app.deploy("api", "gated", "two").await;
    let (leader, child) = step_pids(&app.data_dir, victim.id).await;
    step_pids(&app.data_dir, bystander.id).await;

    let source = app.upload(&[("x", "boom", 0o644)]).await;
    let mut request = deploy_request(&source);
    request.message = Some(TEST_PANIC.to_string());
    request.on_conflict = Some(ConflictPolicy::Queue);
    let error = app
        .client
        .deploy("web", "gated", &request)
        .await
        .unwrap_err();
    assert!(
        matches!(error, ClientError::Api { status: 503, .. }),
        "{error:?}"
    );

    let failed = app.finished(victim.id).await;
    assert_eq!(failed.state, State::Failed);
    assert!(
        failed.error.unwrap().contains(TEST_PANIC),
        "the error carries the panic's message"
    );
    eventually("the crashed actor's step to be killed", || {
        !alive(leader) && !alive(child)
    })
    .await;
    assert!(
        app.client
            .history("web", &Default::default())
            .await
            .unwrap()
            .deployments
            .len()
            == 1
    );

    std::fs::write(&gate, "").unwrap();
    assert_eq!(
        app.finished(bystander.id).await.state,
        State::Succeeded,
        "other targets are untouched"
    );
    let again = app.deploy("web", "gated", "three").await;
    assert_eq!(
        app.finished(again.id).await.state,
        State::Succeeded,
        "the target works after a restart"
    );
    app.stop().await;
}

async fn six_panics_in_a_minute_degrade_the_target(backend: Backend) {
    let app = spawn_app(backend, |_| {}).await;
    let source = app.upload(&[("x", "boom", 0o644)]).await;
    let mut request = deploy_request(&source);
    request.message = Some(TEST_PANIC.to_string());
    // Keep crashing the actor until the supervisor lists the target as
    // degraded. (A request that reaches an actor still unwinding from the
    // previous panic gets its 503 without a crash of its own.)
    let url = format!("{}/v1/supervisor", app.url);
    let mut attempts = 0;
    let crashes = loop {
        let error = app
            .client
            .deploy("web", "local", &request)
            .await
            .unwrap_err();
        assert!(
            matches!(error, ClientError::Api { status: 503, .. }),
            "{error:?}"
        );
        attempts += 1;
        let listed = eventually_listed(&url).await;
        if let Some(crashes) = listed {
            break crashes;
        }
        assert!(
            attempts < 20,
            "still not degraded after {attempts} crashing requests"
        );
    };
    assert!(
        crashes > 5,
        "degraded after {crashes} crashes, the budget is 5 in 60 s"
    );
    let plain = deploy_request(&source);
    let degraded = app.client.deploy("web", "local", &plain).await.unwrap_err();
    let ClientError::Api {
        status, details, ..
    } = &degraded
    else {
        panic!("{degraded:?}")
    };
    assert_eq!(
        (*status, details["reason"].as_str()),
        (503, Some("degraded"))
    );
    let other = app.client.deploy("api", "local", &plain).await.unwrap();
    assert_eq!(
        app.finished(other.id).await.state,
        State::Succeeded,
        "other targets are untouched"
    );
    app.stop().await;
}

/// The crash count of web/local once the supervisor has heard of the last
/// crash (it hears just after the caller's 503), if it lists it as degraded.
async fn eventually_listed(url: &str) -> Option<u64> {
    let crashes_heard = || async {
        let body: serde_json::Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        body["degraded"].as_array().and_then(|targets| {
            targets
                .iter()
                .find(|t| t["app"] == "web")
                .and_then(|t| t["crashes"].as_u64())
        })
    };
    // Give the supervisor a moment to record the crash before concluding.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(crashes) = crashes_heard().await {
            return Some(crashes);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn requests_racing_passivation_are_never_lost(backend: Backend) {
    // Actors passivate after 1 ms idle: nearly every request meets one that
    // is draining or gone, and must reach a fresh one.
    let app = spawn_app(backend, |c| {
        c.deploy.idle_actor_after = Duration::from_millis(1);
        c.clusters
            .insert("fast".into(), sh_cluster(None, None, None));
    })
    .await;
    let source = app.upload(&[("x", "one", 0o644)]).await;
    let mut request = deploy_request(&source);
    request.on_conflict = Some(ConflictPolicy::Queue);
    for round in 0..40 {
        let d = app
            .client
            .deploy("web", "fast", &request)
            .await
            .unwrap_or_else(|e| panic!("round {round}: {e:?}"));
        assert_eq!(app.finished(d.id).await.state, State::Succeeded);
    }
    let versions = app.client.versions("web", Some(100), None).await.unwrap();
    assert_eq!(versions.versions.len(), 40);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resident_actors_return_to_zero_after_ten_thousand_targets() {
    let app = spawn_app(Backend::Sqlite, |c| {
        c.deploy.idle_actor_after = Duration::from_millis(200);
    })
    .await;
    // A rollback with no version on a fresh target spawns its actor and is 404.
    let touch = futures::stream::iter(0..10_000).for_each_concurrent(32, |i| {
        let client = app.client.clone();
        async move {
            let error = client
                .rollback(&format!("app-{i}"), "local", &Default::default())
                .await
                .unwrap_err();
            assert!(
                matches!(error, ClientError::Api { status: 404, .. }),
                "{error:?}"
            );
        }
    });
    tokio::time::timeout(WAIT * 4, touch)
        .await
        .expect("10,000 targets touched in time");
    let mut resident = usize::MAX;
    let deadline = Instant::now() + WAIT;
    while resident > 0 {
        assert!(
            Instant::now() < deadline,
            "{resident} actors still resident"
        );
        let body: serde_json::Value = reqwest::get(format!("{}/v1/supervisor", app.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        resident = body["resident"].as_u64().unwrap() as usize;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_during_a_build_ends_in_a_reported_terminal_state() {
    let pg = ThrowawayPg::start();
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("gate");
    let url = pg.url();
    let app = spawn_app(Backend::Sqlite, |c| {
        c.store.url = Some(url);
        c.deploy.lease = LEASE;
        let build = format!(
            "echo started; while [ ! -e '{}' ]; do sleep 0.05; done; echo finished",
            gate.display()
        );
        c.clusters.insert(
            "gated".into(),
            sh_cluster(Some(&build), None, Some("echo activated")),
        );
    })
    .await;
    let d = app.deploy("web", "gated", "one").await;
    let stream = follow(&app.client, d.id, None);

    pg.stop();
    let readyz = app.client.readyz().await.unwrap_err();
    assert!(
        matches!(readyz, ClientError::Api { status: 503, .. }),
        "{readyz:?}"
    );
    // Uploads need no database; the deploy does, and is refused whole.
    let source = app.upload(&[("x", "two", 0o644)]).await;
    let refused = app
        .client
        .deploy("api", "local", &deploy_request(&source))
        .await
        .unwrap_err();
    assert!(
        matches!(refused, ClientError::Api { status: 503, .. }),
        "{refused:?}"
    );
    std::fs::write(&gate, "").unwrap();
    pg.resume();

    let events: Vec<_> = tokio::time::timeout(WAIT, stream.collect::<Vec<_>>())
        .await
        .expect("the stream ends");
    let events: Vec<_> = events
        .into_iter()
        .map(|e| e.expect("stream event"))
        .collect();
    let seqs: Vec<i64> = events.iter().map(|e| e.seq.unwrap()).collect();
    assert_eq!(
        seqs,
        (1..=seqs.len() as i64).collect::<Vec<_>>(),
        "no seq gap, no repeat"
    );
    let EventData::State(last) = &events.last().unwrap().data else {
        panic!("ends with a state event")
    };
    assert!(last.to.is_terminal());
    wait_ready(
        &app.client,
        "deployd to recover by itself when the database returns",
    )
    .await;
    let target = app.client.target("web", "gated").await.unwrap();
    assert!(target.running.is_none(), "nothing left running or locked");
    let refused_app = app
        .client
        .history("api", &Default::default())
        .await
        .unwrap();
    assert!(
        refused_app.deployments.is_empty(),
        "the refused deploy wrote nothing"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actor_that_loses_its_lease_stops_its_step() {
    let gate_dir = tempfile::tempdir().unwrap();
    let gate = gate_dir.path().join("gate");
    let app = spawn_app(Backend::Sqlite, |c| {
        c.deploy.lease = LEASE;
        let build = gated_script(&gate);
        c.clusters
            .insert("gated".into(), sh_cluster(Some(&build), None, None));
    })
    .await;
    let d = app.deploy("web", "gated", "one").await;
    let (leader, child) = step_pids(&app.data_dir, d.id).await;
    // Another instance now holds the row, with a lease far in the future, so
    // reconciliation will not touch it: only the renewal can tell the actor.
    let db = rusqlite::Connection::open(app.data_dir.join("deployd.db")).unwrap();
    db.busy_timeout(Duration::from_secs(5)).unwrap();
    let taken = db
        .execute(
            "UPDATE deployments SET owner = 'another-instance', lease_expires_at = '2999-01-01T00:00:00.000000Z' WHERE id = ?1",
            [d.id.to_string()],
        )
        .unwrap();
    assert_eq!(taken, 1);
    eventually("the step of a lost lease to be stopped", || {
        !alive(leader) && !alive(child)
    })
    .await;
    let view = app.client.target("web", "gated").await.unwrap();
    assert_eq!(
        view.running.map(|r| r.id),
        Some(d.id),
        "the record is the other owner's to settle"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_database_share_the_lock() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let db = fresh_database().await;
    let (a_dir, a) = gated_daemon(dir.path(), "a", db.url(), &gate).await;
    let (_, b) = gated_daemon(dir.path(), "b", db.url(), &gate).await;
    let first = upload_and_deploy(&a.client, "gated", ConflictPolicy::Reject).await;
    let (leader, child) = step_pids(&a_dir.join("data"), first.id).await;

    let bytes = tar_of(&[("index.html", "from b", 0o644)]);
    let sha = sha256_hex(&bytes);
    b.client.put_source(&sha, bytes).await.unwrap();
    let mut request = deploy_request(&sha);
    request.on_conflict = Some(ConflictPolicy::Reject);
    let refused = b.client.deploy("web", "gated", &request).await.unwrap_err();
    let ClientError::Api {
        status, details, ..
    } = &refused
    else {
        panic!("{refused:?}")
    };
    assert_eq!(
        (*status, details["deployment_id"].as_str()),
        (409, Some(first.id.to_string().as_str()))
    );

    request.on_conflict = Some(ConflictPolicy::Supersede);
    let second = b.client.deploy("web", "gated", &request).await.unwrap();
    let first_events = collect_events(&a.client, first.id, None).await;
    assert!(
        matches!(&first_events.last().unwrap().1, EventData::State(s) if s.to == State::Cancelled)
    );
    assert_eq!(
        a.client.get(first.id).await.unwrap().superseded_by,
        Some(second.id)
    );
    eventually("the superseded step on the other daemon to stop", || {
        !alive(leader) && !alive(child)
    })
    .await;
    std::fs::write(&gate, "").unwrap();
    let events = collect_events(&b.client, second.id, None).await;
    assert!(matches!(&events.last().unwrap().1, EventData::State(s) if s.to == State::Succeeded));
}
