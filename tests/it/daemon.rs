//! The daemon through its HTTP API: real server on port 0, real step
//! processes, the real client, on both stores.

use crate::support::app::*;
use crate::support::on_both_stores;
use deployd::client::ClientError;
use deployd::config::ConflictPolicy;
use deployd::machine::{Kind, State};
use deployd::model::{EventData, RollbackRequest};
use futures::StreamExt;
use futures::future::join_all;

on_both_stores!(
    deploy_walks_every_phase_and_activates,
    second_deploy_takes_over_active,
    rollback_reactivates_without_building,
    rollback_errors,
    reject_policy_names_the_holder,
    queue_policy_runs_in_order,
    supersede_policy_cancels_the_running_one,
    cancel_kills_the_process_group_and_frees_the_target,
    failing_build_reports_stderr,
    phase_timeout_names_the_phase,
    idempotent_retry_returns_the_same_deployment,
    late_subscriber_gets_the_whole_replay,
    resume_with_last_event_id_gives_exactly_the_rest,
    hundred_subscribers_see_every_event_in_order,
    fifty_concurrent_rejects_let_exactly_one_run,
    fifty_queued_deploys_never_overlap,
    different_targets_run_in_parallel,
    history_and_versions_page_by_cursor,
    output_over_the_cap_ends_with_one_truncated_event,
    graceful_shutdown_ends_open_streams,
);

/// A cluster whose build waits until a file appears, so tests control when
/// it finishes without sleeping; it records its pid.
fn gated_cluster(gate: &std::path::Path) -> deployd::config::ClusterConfig {
    let script = format!(
        "echo $$ > \"$DEPLOY_SOURCE_DIR/../pid\"; echo waiting; while [ ! -e '{}' ]; do sleep 0.05; done; echo done",
        gate.display()
    );
    sh_cluster(Some(&script), None, Some("echo activated"))
}

async fn deploy_walks_every_phase_and_activates(backend: Backend) {
    let app = spawn_app(backend, |_| {}).await;
    let source = app
        .upload(&[
            ("index.html", "hello", 0o644),
            (
                "build.sh",
                "#!/bin/sh\necho built > built.txt\necho building on stdout\necho warn >&2\n",
                0o755,
            ),
        ])
        .await;
    let deployment = app
        .client
        .deploy("web", "local", &deploy_request(&source))
        .await
        .unwrap();
    assert_eq!(deployment.kind, Kind::Deploy);
    let events = app.events_until_end(deployment.id).await;

    let seqs: Vec<i64> = events.iter().map(|(seq, _)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=events.len() as i64).collect::<Vec<_>>(),
        "gapless seqs from 1"
    );
    assert!(matches!(&events[0].1, EventData::Deployment(d) if d.state == State::Queued));
    let phases = transitions(&events);
    let expected = [
        ("queued", "building"),
        ("building", "pushing"),
        ("pushing", "activating"),
        ("activating", "succeeded"),
    ];
    assert_eq!(
        phases,
        expected.map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let logs: Vec<&str> = events
        .iter()
        .filter_map(|(_, e)| match e {
            EventData::Log(l) => Some(l.line.as_str()),
            _ => None,
        })
        .collect();
    assert!(
        logs.contains(&"building on stdout"),
        "build output is streamed: {logs:?}"
    );
    assert!(logs.contains(&"warn"), "stderr is streamed too: {logs:?}");

    let done = app.client.get(deployment.id).await.unwrap();
    assert_eq!(done.state, State::Succeeded);
    assert!(done.active);
    assert_eq!(done.version.as_deref(), Some("v1"));
    assert!(done.started_at.is_some() && done.finished_at.is_some());

    let current = app.data_dir.join("releases/web/local/current");
    assert_eq!(
        std::fs::read_to_string(current.join("index.html")).unwrap(),
        "hello"
    );
    assert_eq!(
        std::fs::read_to_string(current.join("built.txt")).unwrap(),
        "built\n"
    );
    let target = app.client.target("web", "local").await.unwrap();
    assert_eq!(target.active.unwrap().deployment_id, deployment.id);
    assert!(target.running.is_none() && target.queued.is_empty());
    app.stop().await;
}

async fn second_deploy_takes_over_active(backend: Backend) {
    let app = spawn_app(backend, |_| {}).await;
    let first = app.deploy("web", "local", "one").await;
    app.finished(first.id).await;
    let second = app.deploy("web", "local", "two").await;
    let second = app.finished(second.id).await;
    assert_eq!(second.version.as_deref(), Some("v2"));
    assert!(second.active);
    let first = app.client.get(first.id).await.unwrap();
    assert!(!first.active, "exactly one deployment is active");
    let current = app.data_dir.join("releases/web/local/current/index.html");
    assert_eq!(std::fs::read_to_string(current).unwrap(), "two");
    app.stop().await;
}

async fn rollback_reactivates_without_building(backend: Backend) {
    let app = spawn_app(backend, |_| {}).await;
    for tag in ["one", "two", "three"] {
        let d = app.deploy("web", "local", tag).await;
        app.finished(d.id).await;
    }
    let request = RollbackRequest {
        version: Some("v1".into()),
        ..Default::default()
    };
    let rollback = app.client.rollback("web", "local", &request).await.unwrap();
    assert_eq!(rollback.kind, Kind::Rollback);
    assert_eq!(rollback.rollback_to.as_deref(), Some("v1"));
    let events = app.events_until_end(rollback.id).await;
    let expected = [("queued", "activating"), ("activating", "succeeded")];
    assert_eq!(
        transitions(&events),
        expected.map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let done = app.client.get(rollback.id).await.unwrap();
    assert_eq!(done.version.as_deref(), Some("v1"));
    assert!(done.active);
    let current = app.data_dir.join("releases/web/local/current/index.html");
    assert_eq!(std::fs::read_to_string(&current).unwrap(), "one");

    // No version: the one active before the current one (v3).
    let back = app
        .client
        .rollback("web", "local", &RollbackRequest::default())
        .await
        .unwrap();
    let back = app.finished(back.id).await;
    assert_eq!(back.version.as_deref(), Some("v3"));
    assert_eq!(std::fs::read_to_string(&current).unwrap(), "three");
    app.stop().await;
}

async fn rollback_errors(backend: Backend) {
    let app = spawn_app(backend, |_| {}).await;
    let none = app
        .client
        .rollback("web", "local", &RollbackRequest::default())
        .await
        .unwrap_err();
    assert_api_error(&none, 404, "not_found");
    let d = app.deploy("web", "local", "one").await;
    app.finished(d.id).await;
    let unknown = RollbackRequest {
        version: Some("v9".into()),
        ..Default::default()
    };
    assert_api_error(
        &app.client
            .rollback("web", "local", &unknown)
            .await
            .unwrap_err(),
        404,
        "not_found",
    );
    let malformed = RollbackRequest {
        version: Some("latest".into()),
        ..Default::default()
    };
    assert_api_error(
        &app.client
            .rollback("web", "local", &malformed)
            .await
            .unwrap_err(),
        400,
        "invalid_argument",
    );
    // Another app's version cannot be named: app `api` has no v1.
    let other = RollbackRequest {
        version: Some("v1".into()),
        ..Default::default()
    };
    assert_api_error(
        &app.client
            .rollback("api", "local", &other)
            .await
            .unwrap_err(),
        404,
        "not_found",
    );
    let history = app
        .client
        .history("api", &Default::default())
        .await
        .unwrap();
    assert!(
        history.deployments.is_empty(),
        "nothing written on an error"
    );
    app.stop().await;
}

async fn reject_policy_names_the_holder(backend: Backend) {
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("open");
    let app = spawn_app(backend, |c| {
        c.clusters.insert("gated".into(), gated_cluster(&gate_file));
    })
    .await;
    let first = app.deploy("web", "gated", "one").await;
    let source = app.upload(&[("x", "two", 0o644)]).await;
    let mut request = deploy_request(&source);
    request.on_conflict = Some(ConflictPolicy::Reject);
    let error = app
        .client
        .deploy("web", "gated", &request)
        .await
        .unwrap_err();
    assert_api_error(&error, 409, "deploy_in_progress");
    let ClientError::Api { details, .. } = error else {
        unreachable!()
    };
    assert_eq!(details["deployment_id"], first.id.to_string());
    assert_eq!(details["deployed_by"], "anonymous");
    assert!(details["state"].is_string() && details["started_at"].is_string());
    std::fs::write(&gate_file, "").unwrap();
    assert_eq!(app.finished(first.id).await.state, State::Succeeded);
    let page = app
        .client
        .history("web", &Default::default())
        .await
        .unwrap();
    assert_eq!(
        page.deployments.len(),
        1,
        "the rejected request wrote nothing"
    );
    app.stop().await;
}

async fn queue_policy_runs_in_order(backend: Backend) {
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("open");
    let app = spawn_app(backend, |c| {
        c.clusters.insert("gated".into(), gated_cluster(&gate_file));
    })
    .await;
    let first = app.deploy("web", "gated", "one").await;
    let source = app.upload(&[("x", "two", 0o644)]).await;
    let mut request = deploy_request(&source);
    request.on_conflict = Some(ConflictPolicy::Queue);
    let second = app.client.deploy("web", "gated", &request).await.unwrap();
    assert_eq!(second.state, State::Queued);
    assert_eq!(second.queue_position, Some(1));
    let target = app.client.target("web", "gated").await.unwrap();
    assert_eq!(target.running.unwrap().id, first.id);
    assert_eq!(
        target.queued.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![second.id]
    );

    std::fs::write(&gate_file, "").unwrap();
    let events = app.events_until_end(second.id).await;
    let queued = events.iter().find_map(|(_, e)| match e {
        EventData::Queued(q) => Some(q.clone()),
        _ => None,
    });
    let queued = queued.expect("a queued event");
    assert_eq!((queued.position, queued.waiting_for), (1, first.id));
    let first = app.client.get(first.id).await.unwrap();
    let second = app.client.get(second.id).await.unwrap();
    assert_eq!(
        (first.state, second.state),
        (State::Succeeded, State::Succeeded)
    );
    assert!(
        second.started_at.unwrap() >= first.finished_at.unwrap(),
        "one at a time"
    );
    assert!(second.active && !first.active);
    app.stop().await;
}

async fn supersede_policy_cancels_the_running_one(backend: Backend) {
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("open");
    let app = spawn_app(backend, |c| {
        c.clusters.insert("gated".into(), gated_cluster(&gate_file));
    })
    .await;
    let first = app.deploy("web", "gated", "one").await;
    let source = app.upload(&[("x", "two", 0o644)]).await;
    let mut queue = deploy_request(&source);
    queue.on_conflict = Some(ConflictPolicy::Queue);
    let queued = app.client.deploy("web", "gated", &queue).await.unwrap();
    let mut request = deploy_request(&source);
    request.on_conflict = Some(ConflictPolicy::Supersede);
    request.message = Some("hotfix".into());
    let newest = app.client.deploy("web", "gated", &request).await.unwrap();

    for old in [first.id, queued.id] {
        let old = app.finished(old).await;
        assert_eq!(old.state, State::Cancelled);
        assert_eq!(old.superseded_by, Some(newest.id));
    }
    std::fs::write(&gate_file, "").unwrap();
    let newest = app.finished(newest.id).await;
    assert_eq!(newest.state, State::Succeeded);
    assert_eq!(
        newest.version.as_deref(),
        Some("v1"),
        "the cancelled build minted no version"
    );
    app.stop().await;
}

async fn cancel_kills_the_process_group_and_frees_the_target(backend: Backend) {
    let app = spawn_app(backend, |c| {
        let build = "sleep 300 & echo $! > \"$DEPLOY_SOURCE_DIR/../child\"; echo $$ > \"$DEPLOY_SOURCE_DIR/../pid\"; wait";
        c.clusters.insert("slow".into(), sh_cluster(Some(build), None, None));
    })
    .await;
    let d = app.deploy("web", "slow", "one").await;
    let work = app.data_dir.join("work").join(d.id.to_string());
    let leader = read_pid(&work.join("pid")).await;
    let child = read_pid(&work.join("child")).await;
    let cancelled = app
        .client
        .cancel(d.id, Some("changed my mind".into()))
        .await
        .unwrap();
    assert_eq!(cancelled.state, State::Cancelled);
    assert!(cancelled.error.unwrap().contains("changed my mind"));
    eventually("the step's process group to be gone", || {
        !alive(leader) && !alive(child)
    })
    .await;

    let again = app.client.cancel(d.id, None).await.unwrap_err();
    assert_api_error(&again, 409, "invalid_transition");
    let next = app.deploy("web", "slow", "two").await;
    assert_eq!(next.state, State::Building, "the target is free at once");
    app.client.cancel(next.id, None).await.unwrap();
    app.stop().await;
}

async fn failing_build_reports_stderr(backend: Backend) {
    let app = spawn_app(backend, |c| {
        let build = "echo compiling; echo 'error: missing semicolon' >&2; exit 3";
        c.clusters.insert(
            "broken".into(),
            sh_cluster(Some(build), None, Some("echo never")),
        );
    })
    .await;
    let d = app.deploy("web", "broken", "one").await;
    let events = app.events_until_end(d.id).await;
    let last = transitions(&events).pop().unwrap();
    assert_eq!(last, ("building".to_string(), "failed".to_string()));
    let failed = app.client.get(d.id).await.unwrap();
    assert_eq!(failed.state, State::Failed);
    let error = failed.error.unwrap();
    assert!(
        error.contains("error: missing semicolon") && error.contains("exit code 3"),
        "{error}"
    );
    assert!(failed.version.is_none() && !failed.active);
    app.stop().await;
}

async fn phase_timeout_names_the_phase(backend: Backend) {
    let app = spawn_app(backend, |c| {
        let mut cluster = sh_cluster(None, Some("sleep 30"), None);
        cluster.push.as_mut().unwrap().timeout = std::time::Duration::from_millis(300);
        c.clusters.insert("stuck".into(), cluster);
    })
    .await;
    let d = app.deploy("web", "stuck", "one").await;
    let failed = app.finished(d.id).await;
    assert_eq!(failed.state, State::Failed);
    let error = failed.error.unwrap();
    assert!(
        error.contains("push") && error.contains("timed out"),
        "{error}"
    );
    app.stop().await;
}

async fn idempotent_retry_returns_the_same_deployment(backend: Backend) {
    let app = spawn_app(backend, |_| {}).await;
    let source = app.upload(&[("x", "one", 0o644)]).await;
    let mut request = deploy_request(&source);
    request.idempotency_key = Some("ci-run-42".into());
    let first = app.client.deploy("web", "local", &request).await.unwrap();
    let retry = app.client.deploy("web", "local", &request).await.unwrap();
    assert_eq!(retry.id, first.id);
    let raw = reqwest::Client::new()
        .post(format!(
            "{}/v1/apps/web/clusters/local/deployments",
            app.url
        ))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 200, "a repeated key answers 200");
    request.message = Some("different".into());
    let mismatch = app
        .client
        .deploy("web", "local", &request)
        .await
        .unwrap_err();
    assert_api_error(&mismatch, 409, "idempotency_mismatch");
    app.finished(first.id).await;
    let page = app
        .client
        .history("web", &Default::default())
        .await
        .unwrap();
    assert_eq!(page.deployments.len(), 1);
    app.stop().await;
}

async fn late_subscriber_gets_the_whole_replay(backend: Backend) {
    let app = spawn_app(backend, |_| {}).await;
    let d = app.deploy("web", "local", "one").await;
    let live = app.events_until_end(d.id).await;
    let replay = app.events_until_end(d.id).await;
    assert_same_events(&live, &replay);
    assert!(replay.last().unwrap().1.is_final());
    app.stop().await;
}

async fn resume_with_last_event_id_gives_exactly_the_rest(backend: Backend) {
    let app = spawn_app(backend, |_| {}).await;
    let d = app.deploy("web", "local", "one").await;
    let all = app.events_until_end(d.id).await;
    let middle = all.len() as i64 / 2;
    let rest = collect_events(&app.client, d.id, Some(middle)).await;
    assert_same_events(&rest, &all[middle as usize..]);
    let after_end = collect_events(&app.client, d.id, Some(all.len() as i64)).await;
    assert!(
        after_end.is_empty(),
        "nothing after the final event, and the stream ends"
    );
    app.stop().await;
}

async fn hundred_subscribers_see_every_event_in_order(backend: Backend) {
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("open");
    let app = spawn_app(backend, |c| {
        let build = format!(
            "for i in $(seq 1 200); do echo line $i; done; while [ ! -e '{}' ]; do sleep 0.05; done; for i in $(seq 201 400); do echo line $i; done",
            gate_file.display()
        );
        c.clusters.insert("chatty".into(), sh_cluster(Some(&build), None, None));
    })
    .await;
    let d = app.deploy("web", "chatty", "one").await;
    let watchers = (0..100).map(|_| {
        let client = app.client.clone();
        async move { collect_events(&client, d.id, None).await }
    });
    let opened = tokio::spawn(join_all(watchers));
    std::fs::write(&gate_file, "").unwrap();
    let seen = opened.await.unwrap();
    let reference = app.events_until_end(d.id).await;
    let lines = reference
        .iter()
        .filter(|(_, e)| matches!(e, EventData::Log(_)))
        .count();
    assert_eq!(lines, 400);
    for events in seen {
        assert_same_events(&events, &reference);
    }
    app.stop().await;
}

async fn fifty_concurrent_rejects_let_exactly_one_run(backend: Backend) {
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("open");
    let app = spawn_app(backend, |c| {
        c.clusters.insert("gated".into(), gated_cluster(&gate_file));
    })
    .await;
    let source = app.upload(&[("x", "one", 0o644)]).await;
    let mut request = deploy_request(&source);
    request.on_conflict = Some(ConflictPolicy::Reject);
    let attempts = (0..50).map(|_| app.client.deploy("web", "gated", &request));
    let answers = join_all(attempts).await;
    let accepted: Vec<_> = answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    assert_eq!(accepted.len(), 1, "exactly one runs");
    let winner = accepted[0].id;
    for error in answers.iter().filter_map(|a| a.as_ref().err()) {
        assert_api_error(error, 409, "deploy_in_progress");
        let ClientError::Api { details, .. } = error else {
            unreachable!()
        };
        assert_eq!(details["deployment_id"], winner.to_string());
    }
    std::fs::write(&gate_file, "").unwrap();
    app.finished(winner).await;
    app.stop().await;
}

async fn fifty_queued_deploys_never_overlap(backend: Backend) {
    let log = tempfile::tempdir().unwrap();
    let log_file = log.path().join("spans");
    let app = spawn_app(backend, |c| {
        // Each build appends "start" and "end" lines; overlap would interleave them.
        let build = format!(
            "echo \"start $DEPLOY_ID\" >> '{0}'; sleep 0.02; echo \"end $DEPLOY_ID\" >> '{0}'",
            log_file.display()
        );
        c.clusters
            .insert("serial".into(), sh_cluster(Some(&build), None, None));
    })
    .await;
    let source = app.upload(&[("x", "one", 0o644)]).await;
    let mut request = deploy_request(&source);
    request.on_conflict = Some(ConflictPolicy::Queue);
    let answers = join_all((0..50).map(|_| app.client.deploy("web", "serial", &request))).await;
    let ids: Vec<_> = answers
        .into_iter()
        .map(|a| a.expect("queued or started").id)
        .collect();
    for id in &ids {
        assert_eq!(app.finished(*id).await.state, State::Succeeded);
    }
    let spans = std::fs::read_to_string(&log_file).unwrap();
    let lines: Vec<&str> = spans.lines().collect();
    assert_eq!(lines.len(), 100);
    for pair in lines.chunks(2) {
        let start = pair[0].strip_prefix("start ").expect("a start line");
        assert_eq!(pair[1], format!("end {start}"), "builds never overlap");
    }
    let versions = app.client.versions("web", Some(100), None).await.unwrap();
    assert_eq!(versions.versions.len(), 50);
    assert_eq!(versions.versions[0].version, "v50");
    app.stop().await;
}

async fn different_targets_run_in_parallel(backend: Backend) {
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("open");
    let app = spawn_app(backend, |c| {
        c.clusters.insert("gated".into(), gated_cluster(&gate_file));
    })
    .await;
    let a = app.deploy("alpha", "gated", "a").await;
    let b = app.deploy("beta", "gated", "b").await;
    assert_eq!((a.state, b.state), (State::Building, State::Building));
    // Both builds are running at once: each wrote its pid while the gate is shut.
    for d in [&a, &b] {
        let pid = read_pid(&app.data_dir.join("work").join(d.id.to_string()).join("pid")).await;
        assert!(alive(pid));
    }
    std::fs::write(&gate_file, "").unwrap();
    assert_eq!(app.finished(a.id).await.state, State::Succeeded);
    assert_eq!(app.finished(b.id).await.state, State::Succeeded);
    app.stop().await;
}

async fn history_and_versions_page_by_cursor(backend: Backend) {
    let app = spawn_app(backend, |c| {
        c.clusters
            .insert("fast".into(), sh_cluster(None, None, None));
    })
    .await;
    let mut ids = Vec::new();
    for i in 0..7 {
        let d = app.deploy("web", "fast", &format!("v{i}")).await;
        app.finished(d.id).await;
        ids.push(d.id);
    }
    ids.reverse();
    let mut seen = Vec::new();
    let mut params = deployd::client::HistoryParams {
        limit: Some(3),
        ..Default::default()
    };
    loop {
        let page = app.client.history("web", &params).await.unwrap();
        seen.extend(page.deployments.iter().map(|d| d.id));
        match page.next_cursor {
            Some(cursor) => params.cursor = Some(cursor),
            None => break,
        }
    }
    assert_eq!(seen, ids, "newest first, no duplicates, no gaps");
    let first = app.client.versions("web", Some(2), None).await.unwrap();
    assert_eq!(
        first
            .versions
            .iter()
            .map(|v| v.version.as_str())
            .collect::<Vec<_>>(),
        ["v7", "v6"]
    );
    let next = app
        .client
        .versions("web", Some(2), first.next_cursor.as_deref())
        .await
        .unwrap();
    assert_eq!(next.versions[0].version, "v5");
    app.stop().await;
}

async fn output_over_the_cap_ends_with_one_truncated_event(backend: Backend) {
    let app = spawn_app(backend, |c| {
        c.limits.output_bytes_per_deployment = 2_000;
        let build = "for i in $(seq 1 300); do echo \"line $i of the build output\"; done";
        let push = "echo pushed";
        c.clusters
            .insert("loud".into(), sh_cluster(Some(build), Some(push), None));
    })
    .await;
    let d = app.deploy("web", "loud", "one").await;
    let events = app.events_until_end(d.id).await;
    let logs: Vec<_> = events
        .iter()
        .filter(|(_, e)| matches!(e, EventData::Log(_)))
        .collect();
    let bytes: usize = logs
        .iter()
        .map(|(_, e)| match e {
            EventData::Log(l) => l.line.len(),
            _ => 0,
        })
        .sum();
    assert!(
        bytes <= 2_000 && !logs.is_empty(),
        "{bytes} bytes of output kept"
    );
    let truncated: Vec<u64> = events
        .iter()
        .filter_map(|(_, e)| match e {
            EventData::Truncated(t) => Some(t.dropped_lines),
            _ => None,
        })
        .collect();
    // 300 build lines and 1 push line; what was not kept was dropped, and said so once.
    assert_eq!(truncated, vec![301 - logs.len() as u64]);
    let at = events
        .iter()
        .position(|(_, e)| matches!(e, EventData::Truncated(_)))
        .unwrap();
    assert_eq!(at, events.len() - 2, "just before the final state event");
    assert_eq!(app.client.get(d.id).await.unwrap().state, State::Succeeded);
    app.stop().await;
}

async fn graceful_shutdown_ends_open_streams(backend: Backend) {
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("never");
    let app = spawn_app(backend, |c| {
        c.server.shutdown_grace = std::time::Duration::from_millis(200);
        c.clusters.insert("gated".into(), gated_cluster(&gate_file));
    })
    .await;
    let d = app.deploy("web", "gated", "one").await;
    let mut stream = app.client.events(d.id, None).await.unwrap();
    let first = stream
        .next()
        .await
        .expect("an event")
        .expect("a good event");
    assert_eq!(first.seq, Some(1));
    // The grace is 200 ms: an open stream must not hold the server up.
    let client = app.client.clone();
    let stopped = tokio::time::timeout(std::time::Duration::from_secs(10), app.stop()).await;
    assert!(stopped.is_ok(), "an open stream held up graceful shutdown");
    let rest = tokio::time::timeout(WAIT, async {
        let mut n = 0;
        while let Some(Ok(_)) = stream.next().await {
            n += 1;
        }
        n
    })
    .await
    .expect("the stream ends when the server stops");
    assert!(rest < 10, "{rest} more events");
    assert!(client.healthz().await.is_err(), "the server is gone");
}

pub fn assert_api_error(error: &ClientError, status: u16, code: &str) {
    match error {
        ClientError::Api {
            status: s, code: c, ..
        } => {
            assert_eq!((*s, c.as_str()), (status, code), "{error:?}");
        }
        other => panic!("expected a {status} {code} API error, got {other:?}"),
    }
}

/// Equal event lists; on a difference, name the first one (not 400 events).
fn assert_same_events(got: &[(i64, EventData)], want: &[(i64, EventData)]) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!(
            "event {i} differs:\n got: {:?}\nwant: {:?}",
            got[i], want[i]
        );
    }
    assert_eq!(got.len(), want.len(), "as many events");
}
