//! A step is only ever what the record says: it dies with its daemon, and
//! the `local` cluster does not switch to a release that is not there.

use crate::support::app::*;
use crate::support::on_both_stores;
use crate::support::process::{Daemon, write_config};
use deployd::machine::State;
use deployd::model::RollbackRequest;
use std::path::Path;
use std::time::Duration;

on_both_stores!(a_rollback_to_a_removed_release_fails_and_keeps_current);

/// Whether `pid` runs: exists and is not a zombie (a killed orphan waits
/// for init to reap it, which may take its time).
fn running(pid: i32) -> bool {
    alive(pid) && stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// State and process group of `pid`, from /proc/PID/stat.
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) S ppid pgrp ..."; comm may hold spaces, so split after ')'.
    let mut rest = text.rsplit_once(')')?.1.split_whitespace();
    let state = rest.next()?.chars().next()?;
    let pgrp = rest.nth(1)?.parse().ok()?;
    Some((state, pgrp))
}

/// Processes (not zombies) in process group `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| stat(*pid).is_some_and(|(state, pgrp)| pgrp == pgid && state != 'Z'))
        .collect()
}

/// An activate step that records its pid and a backgrounded grandchild's,
/// then sleeps and writes `marker` (what switching a release stands for).
fn slow_activate(dir: &Path) -> String {
    let script = format!(
        "echo $$ > '{d}/pid'; (sleep 30; echo switched > '{d}/marker') & echo $! > '{d}/child'; wait",
        d = dir.display()
    );
    let argv = serde_json::json!(["/bin/sh", "-c", script]);
    format!("[clusters.slow.activate]\nrun = {argv}\ntimeout = \"1m\"\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_and_its_group_die_with_a_sigkilled_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), None, &slow_activate(dir.path()));
    let daemon = Daemon::start(&config).await;
    let bytes = tar_of(&[("index.html", "x", 0o644)]);
    let sha = sha256_hex(&bytes);
    daemon.client.put_source(&sha, bytes).await.unwrap();
    daemon
        .client
        .deploy("web", "slow", &deploy_request(&sha))
        .await
        .unwrap();
    let leader = read_pid(&dir.path().join("pid")).await;
    let child = read_pid(&dir.path().join("child")).await;
    let (_, pgid) = stat(leader).expect("the step runs");
    assert!(running(leader) && running(child));

    daemon.kill9();
    // Well under the step's 30 s sleep: if anything of the step were left
    // running, it would still be there when this poll gives up.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while running(leader) || running(child) || !group_members(pgid).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the step outlived its daemon: group {pgid} still has {:?}",
            group_members(pgid)
                .iter()
                .map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !dir.path().join("marker").exists(),
        "the orphaned step switched the release"
    );
}

async fn a_rollback_to_a_removed_release_fails_and_keeps_current(backend: Backend) {
    let app = spawn_app(backend, |_| {}).await;
    let mut ids = Vec::new();
    for tag in ["one", "two", "three"] {
        let d = app.deploy("web", "local", tag).await;
        assert_eq!(app.finished(d.id).await.state, State::Succeeded);
        ids.push(d.id);
    }
    let releases = app.data_dir.join("releases/web/local");
    std::fs::remove_dir_all(releases.join(ids[1].to_string())).unwrap();

    let request = RollbackRequest {
        version: Some("v2".into()),
        ..Default::default()
    };
    let rollback = app.client.rollback("web", "local", &request).await.unwrap();
    let rollback = app.finished(rollback.id).await;
    assert_eq!(rollback.state, State::Failed);
    let error = rollback.error.expect("the activate step's error");
    assert!(
        error.contains("activate step failed") && error.contains("does not exist"),
        "{error}"
    );
    let current = std::fs::read_link(releases.join("current")).unwrap();
    assert_eq!(current, releases.join(ids[2].to_string()));
    let target = app.client.target("web", "local").await.unwrap();
    let active = target.active.expect("an active version");
    assert_eq!(
        (active.version.as_str(), active.deployment_id),
        ("v3", ids[2])
    );
    app.stop().await;
}
