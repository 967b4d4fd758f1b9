//! What a hostile review of retention found, each a kind now tested: only
//! what the layout names for a record is removed (never a path an artifact's
//! text names, never a name deployd did not make, never through a symlink),
//! a release some `current` points at stays however the link is spelled, a
//! "keep for ever" age keeps everything, and the dry run agrees with the run.

use super::cases::{FAILING_BUILD, deploy_files, no_minimum_ages};
use super::{compact, release_dir};
use crate::support::app::*;
use deployd::config::Config;
use deployd::machine::State;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Keep two releases, no attempts, nothing by age.
fn tight(config: &mut Config) {
    no_minimum_ages(config);
    config.deploy.keep_releases = 2;
    config.deploy.keep_attempts = 0;
}

/// Every path under `root`, not following symlinks.
fn tree(root: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                stack.push(path.clone());
            }
            found.insert(path);
        }
    }
    found
}

/// A cluster whose build makes the artifact `artifact` (a shell expression)
/// and copies the source there; activation does nothing.
fn artifact_cluster(config: &mut Config, name: &str, artifact: &str) {
    let build = format!(
        "d={artifact}; mkdir -p \"$d\"; cp -R \"$DEPLOY_SOURCE_DIR/.\" \"$d/\"; printf '%s' \"$d\" > \"$DEPLOY_ARTIFACT_FILE\""
    );
    let cluster = sh_cluster(Some(&build), None, Some("echo activated"));
    config.clusters.insert(name.to_string(), cluster);
}

async fn deploy_to(app: &TestApp, cluster: &str, tag: &str) -> deployd::model::Deployment {
    let source = app.upload(&[("index.html", tag, 0o644)]).await;
    let d = (app.client)
        .deploy("web", cluster, &deploy_request(&source))
        .await
        .expect("deploy accepted");
    let d = app.finished(d.id).await;
    assert_eq!(d.state, State::Succeeded, "{d:?}");
    d
}

/// Deleting a version removes only the release directory its build made
/// (`releases/<app>/<cluster>/<deployment>`): not a directory several
/// versions share (content-addressed), not a parent of other releases.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_a_version_never_removes_what_others_use() {
    let app = spawn_app(Backend::Sqlite, |config| {
        tight(config);
        let shared = "\"$DEPLOY_DATA_DIR/releases/$DEPLOY_APP/$DEPLOY_CLUSTER/build-same\"";
        artifact_cluster(config, "shared", shared);
        artifact_cluster(
            config,
            "appwide",
            "\"$DEPLOY_DATA_DIR/releases/$DEPLOY_APP\"",
        );
    })
    .await;
    let live = deploy_files(&app, &[]).await; // v1 on local, active
    for n in 0..3 {
        deploy_to(&app, "shared", &format!("same {n}")).await; // v2..v4
    }
    for n in 0..3 {
        deploy_to(&app, "appwide", &format!("wide {n}")).await; // v5..v7
    }
    let report = compact(&app).await;
    let deleted: Vec<&str> = (report["versions_deleted"].as_array().unwrap().iter())
        .map(|v| v["version"].as_str().unwrap())
        .collect();
    assert_eq!(deleted, ["v2", "v5"], "{report}");
    let data = app.data_dir.canonicalize().unwrap();
    assert!(
        data.join("releases/web/shared/build-same/index.html")
            .exists()
    );
    assert!(release_dir(&app, &live).join("tag").exists());
    assert!(data.join("releases/web/local/current").exists());
    app.stop().await;
}

/// Names deployd never writes are not taken for deployment ids, and a
/// symlink below an area is not followed: nothing outside is touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sweep_takes_only_its_own_names_and_follows_no_symlink() {
    let outside = tempfile::tempdir().unwrap();
    let outside = outside.path().canonicalize().unwrap();
    let victim = outside.join("victim");
    std::fs::create_dir_all(victim.join("c")).unwrap();
    let id = uuid::Uuid::now_v7();
    std::os::unix::fs::symlink(&victim, victim.join("c").join(id.to_string())).unwrap();
    std::fs::create_dir_all(victim.join("c").join(uuid::Uuid::now_v7().to_string())).unwrap();
    let strangers = [
        "d41d8cd98f00b204e9800998ecf8427e".to_string(),
        id.to_string().to_uppercase(),
        format!("{{{id}}}"),
        format!("urn:uuid:{id}"),
    ];
    let mut planted = Vec::new();
    let app = spawn_app(Backend::Sqlite, |config| {
        let data = &config.server.data_dir;
        for name in &strangers {
            std::fs::create_dir_all(data.join("releases/im/img").join(name)).unwrap();
            std::fs::create_dir_all(data.join("work").join(name)).unwrap();
        }
        std::fs::create_dir_all(data.join("releases")).unwrap();
        std::os::unix::fs::symlink(&victim, data.join("releases/evil")).unwrap();
        // Links named like deployments: deployd never makes those.
        let link = uuid::Uuid::now_v7().to_string();
        std::os::unix::fs::symlink(&victim, data.join("work").join(&link)).unwrap();
        std::os::unix::fs::symlink(&victim, data.join("releases/im/img").join(&link)).unwrap();
        planted.push(data.join("work").join(&link));
        planted.push(data.join("releases/im/img").join(&link));
    })
    .await;
    let before = tree(&outside);
    compact(&app).await;
    assert_eq!(
        tree(&outside),
        before,
        "nothing outside the data dir changed"
    );
    for link in &planted {
        assert!(
            std::fs::symlink_metadata(link).is_ok(),
            "{} was removed",
            link.display()
        );
    }
    for name in &strangers {
        assert!(
            app.data_dir.join("releases/im/img").join(name).exists(),
            "{name}"
        );
        assert!(app.data_dir.join("work").join(name).exists(), "{name}");
    }
    app.stop().await;
}

/// `work/` on another disk (a symlink) is still swept; a relative `current`
/// link, as an operator rolling back by hand writes it, protects its release.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symlinked_areas_are_swept_and_relative_current_links_protect() {
    let disk = tempfile::tempdir().unwrap();
    let fast = disk.path().join("fast-work");
    let app = spawn_app(Backend::Sqlite, |config| {
        tight(config);
        std::fs::create_dir_all(&fast).unwrap();
        std::fs::create_dir_all(&config.server.data_dir).unwrap();
        std::os::unix::fs::symlink(&fast, config.server.data_dir.join("work")).unwrap();
    })
    .await;
    let failed = deploy_files(&app, FAILING_BUILD).await;
    assert_eq!(failed.state, State::Failed);
    let v1 = deploy_files(&app, &[]).await;
    let _v2 = deploy_files(&app, &[]).await;
    let v3 = deploy_files(&app, &[]).await;
    // By hand: current -> <v1's id>, relative.
    let current = release_dir(&app, &v1).with_file_name("current");
    std::fs::remove_file(&current).unwrap();
    std::os::unix::fs::symlink(v1.id.to_string(), &current).unwrap();
    compact(&app).await;
    assert!(
        release_dir(&app, &v1).join("tag").exists(),
        "current points at it"
    );
    assert!(release_dir(&app, &v3).exists());
    let left: Vec<_> = std::fs::read_dir(&fast).unwrap().collect();
    assert!(
        left.is_empty(),
        "workspaces left on the other disk: {left:?}"
    );
    app.stop().await;
}

/// "Keep for ever" written as a huge minimum age keeps everything, and
/// compaction still runs (it overflowed into a 500 before).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimum_age_past_the_calendar_keeps_everything() {
    let app = spawn_app(Backend::Sqlite, |config| {
        tight(config);
        config.deploy.keep_min_age = humantime::parse_duration("300000y").unwrap();
        config.deploy.keep_attempts_min_age = humantime::parse_duration("300000y").unwrap();
    })
    .await;
    for _ in 0..3 {
        deploy_files(&app, &[]).await;
    }
    deploy_files(&app, FAILING_BUILD).await;
    let report = compact(&app).await;
    assert_eq!(report["deployments_deleted"], 0, "{report}");
    assert_eq!(report["versions_deleted"], Value::Array(vec![]));
    app.stop().await;
}

/// The dry run counts what the same compaction frees: a source named only
/// by a deployment it deletes would go too.
async fn the_dry_run_counts_what_the_run_frees(backend: Backend) {
    let app = spawn_app(backend, |config| {
        tight(config);
        config.limits.source_ttl = Duration::from_secs(3600);
    })
    .await;
    let failed = deploy_files(&app, FAILING_BUILD).await;
    deploy_files(&app, &[]).await;
    let source = failed.source.clone().unwrap();
    let path = app.data_dir.join("sources").join(format!("{source}.tar"));
    let file = std::fs::File::options().append(true).open(&path).unwrap();
    file.set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/v1/admin/compact?dry_run=true", app.url);
    let plan: Value = http.post(url).send().await.unwrap().json().await.unwrap();
    let paths = |v: &Value| -> BTreeSet<String> {
        (v["removed"].as_array().unwrap().iter())
            .map(|r| r["path"].as_str().unwrap().to_string())
            .collect()
    };
    let report = compact(&app).await;
    assert_eq!(paths(&plan), paths(&report), "plan {plan}\nrun {report}");
    assert!(
        paths(&report).iter().any(|p| p.contains(&source)),
        "{report}"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_the_dry_run_counts_what_the_run_frees() {
    the_dry_run_counts_what_the_run_frees(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_the_dry_run_counts_what_the_run_frees() {
    the_dry_run_counts_what_the_run_frees(Backend::Postgres).await;
}

/// A source a sweep had set aside when the daemon stopped is back under its
/// name at the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_set_aside_by_a_stopped_sweep_comes_back() {
    let tar = tar_of(&[("index.html", "set aside", 0o644)]);
    let sha = sha256_hex(&tar);
    let app = spawn_app(Backend::Sqlite, |config| {
        let sources = config.server.data_dir.join("sources");
        std::fs::create_dir_all(&sources).unwrap();
        std::fs::write(sources.join(format!(".sweep-{sha}.tar")), &tar).unwrap();
    })
    .await;
    assert!(app.client.source_exists(&sha).await.unwrap());
    let d = app
        .client
        .deploy("web", "local", &deploy_request(&sha))
        .await
        .unwrap();
    assert_eq!(app.finished(d.id).await.state, State::Succeeded);
    app.stop().await;
}

/// A cleanup step cut short by `kill -9` is still owed: the restarted
/// daemon runs it again (it must tolerate that) until it is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cleanup_cut_short_by_a_crash_runs_again_after_the_restart() {
    use crate::support::process::{Daemon, write_config};
    let dir = tempfile::tempdir().unwrap();
    let (heard, gate) = (dir.path().join("heard"), dir.path().join("gate"));
    let build = "printf 'registry/web:%s' \"$DEPLOY_ID\" > \"$DEPLOY_ARTIFACT_FILE\"";
    let cleanup = format!(
        "echo \"start $DEPLOY_VERSION\" >> '{heard}'; while [ ! -e '{gate}' ]; do sleep 0.05; done; echo \"done $DEPLOY_VERSION\" >> '{heard}'",
        heard = heard.display(),
        gate = gate.display()
    );
    let argv = |script: &str| serde_json::json!(["/bin/sh", "-c", script]).to_string();
    let toml = format!(
        "[deploy]\nkeep_releases = 2\nkeep_min_age = \"0s\"\n\n\
         [clusters.img.build]\nrun = {}\ntimeout = \"1m\"\n\n\
         [clusters.img.activate]\nrun = {}\ntimeout = \"1m\"\n\n\
         [clusters.img.cleanup]\nrun = {}\ntimeout = \"5m\"\n",
        argv(build),
        argv("echo activated"),
        argv(&cleanup)
    );
    let config = write_config(dir.path(), None, &toml);
    let daemon = Daemon::start(&config).await;
    for n in 0..3 {
        let tar = tar_of(&[("index.html", &n.to_string(), 0o644)]);
        let sha = sha256_hex(&tar);
        daemon.client.put_source(&sha, tar).await.unwrap();
        let d = daemon
            .client
            .deploy("web", "img", &deploy_request(&sha))
            .await
            .unwrap();
        let events = collect_events(&daemon.client, d.id, None).await;
        assert!(
            format!("{:?}", events.last()).contains("Succeeded"),
            "{events:?}"
        );
    }
    let url = daemon.client.base_url().trim_end_matches('/').to_string();
    let compacting = tokio::spawn(async move {
        let _ = reqwest::Client::new()
            .post(format!("{url}/v1/admin/compact"))
            .send()
            .await;
    });
    let read = || std::fs::read_to_string(&heard).unwrap_or_default();
    eventually("the cleanup step of v1 to start", || {
        read().contains("start v1")
    })
    .await;
    daemon.kill9();
    let _ = compacting.await;
    std::fs::write(&gate, "").unwrap();
    let restarted = Daemon::start(&config).await;
    eventually("the owed cleanup to run again and finish", || {
        read().contains("done v1")
    })
    .await;
    let versions = restarted.client.versions("web", None, None).await.unwrap();
    let names: Vec<&str> = versions
        .versions
        .iter()
        .map(|v| v.version.as_str())
        .collect();
    assert_eq!(names, ["v3", "v2"]);
    drop(restarted);
}
