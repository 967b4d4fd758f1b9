//! Issue 12's cases through the daemon, each on both stores: failed
//! attempts never crowd out a rollback target, and every entry of the data
//! dir belongs to a record and goes with it.

use super::{compact, release_dir};
use crate::support::app::*;
use crate::support::on_both_stores;
use deployd::config::{Config, StepConfig};
use deployd::machine::State;
use deployd::model::{Deployment, RollbackRequest};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

on_both_stores!(
    failed_attempts_never_crowd_out_a_rollback_target,
    a_failed_build_leaves_no_release_directory,
    the_start_up_sweep_removes_what_a_crash_left,
    unused_sources_go_after_their_grace_period,
    the_dry_run_answers_what_would_go_and_changes_nothing,
    cleanup_steps_hear_of_attempts_and_deleted_versions,
);

/// A source whose `build.sh` fails: the `local` build has copied it into its
/// release directory by then.
pub(super) const FAILING_BUILD: &[(&str, &str, u32)] =
    &[("build.sh", "#!/bin/sh\necho broken >&2\nexit 1\n", 0o755)];

/// Retention with no minimum ages, so what the tests just made may go.
pub(super) fn no_minimum_ages(config: &mut Config) {
    config.deploy.keep_min_age = Duration::ZERO;
    config.deploy.keep_attempts_min_age = Duration::ZERO;
}

/// The `local` cluster, except that activating a release holding a
/// `fail-activate` file fails (a restore still works).
pub(super) fn failing_activation(config: &mut Config) {
    let activate = config.clusters.get_mut("local").unwrap();
    let step = activate.activate.as_mut().expect("local activates");
    let script = step.run.last_mut().expect("a script");
    *script = format!(
        "if [ -z \"${{DEPLOY_RESTORE:-}}\" ] && [ -e \"${{DEPLOY_ARTIFACT:-/nonexistent}}/fail-activate\" ]; then echo 'refusing to activate' >&2; exit 1; fi\n{script}"
    );
}

/// Upload `files` (plus a unique file), deploy them to web/local, wait.
pub(super) async fn deploy_files(app: &TestApp, files: &[(&str, &str, u32)]) -> Deployment {
    let tag = uuid::Uuid::now_v7().to_string();
    let mut all = files.to_vec();
    all.push(("tag", &tag, 0o644));
    let source = app.upload(&all).await;
    let d = app
        .client
        .deploy("web", "local", &deploy_request(&source))
        .await
        .expect("deploy accepted");
    app.finished(d.id).await
}

fn versions_of(listing: &deployd::model::VersionsPage) -> BTreeSet<String> {
    listing.versions.iter().map(|v| v.version.clone()).collect()
}

fn removed_paths(report: &Value) -> BTreeSet<String> {
    (report["removed"]
        .as_array()
        .expect("a list of removals")
        .iter())
    .map(|r| r["path"].as_str().expect("a path").to_string())
    .collect()
}

/// Case 1: two good deploys, then two that fail in build and two in
/// activation. Compaction keeping three releases and no attempts keeps v1
/// (the version before the active one) and its release directory, so a
/// plain rollback works; v3 and v4, never live, go with their directories.
async fn failed_attempts_never_crowd_out_a_rollback_target(backend: Backend) {
    let app = spawn_app(backend, |config| {
        failing_activation(config);
        no_minimum_ages(config);
        config.deploy.keep_releases = 3;
        config.deploy.keep_attempts = 0;
    })
    .await;
    let v1 = deploy_files(&app, &[]).await;
    let v2 = deploy_files(&app, &[]).await;
    assert_eq!((v1.state, v2.state), (State::Succeeded, State::Succeeded));
    let mut failed = Vec::new();
    for _ in 0..2 {
        failed.push(deploy_files(&app, FAILING_BUILD).await);
    }
    for _ in 0..2 {
        failed.push(deploy_files(&app, &[("fail-activate", "", 0o644)]).await);
    }
    let states: Vec<(State, Option<&str>)> = (failed.iter())
        .map(|d| (d.state, d.version.as_deref()))
        .collect();
    assert_eq!(
        states,
        [
            (State::Failed, None),
            (State::Failed, None),
            (State::Failed, Some("v3")),
            (State::Failed, Some("v4")),
        ]
    );
    let report = compact(&app).await;
    assert_eq!(report["deployments_deleted"], 4, "{report}");
    let listing = app.client.versions("web", None, None).await.unwrap();
    assert_eq!(versions_of(&listing), ["v1", "v2"].map(String::from).into());
    assert!(release_dir(&app, &v1).is_dir() && release_dir(&app, &v2).is_dir());
    for d in &failed {
        assert!(!release_dir(&app, d).exists(), "{} is left", d.id);
    }
    let target = app.client.target("web", "local").await.unwrap();
    assert_eq!(target.rollback_to.as_deref(), Some("v1"));

    let request = RollbackRequest {
        version: None,
        message: None,
        on_conflict: None,
        idempotency_key: None,
    };
    let rollback = app.client.rollback("web", "local", &request).await.unwrap();
    let rollback = app.finished(rollback.id).await;
    assert_eq!(
        (rollback.state, rollback.version.as_deref()),
        (State::Succeeded, Some("v1"))
    );
    let current = std::fs::read_link(release_dir(&app, &v1).with_file_name("current")).unwrap();
    assert_eq!(current, release_dir(&app, &v1));
    app.stop().await;
}

/// Case 2: the release directory a failed build filled goes when the
/// deployment ends; leftovers of a crash (a release directory and a
/// workspace named by deployments that are gone) go at compaction, while
/// what deployd did not make, `current` and live releases stay.
async fn a_failed_build_leaves_no_release_directory(backend: Backend) {
    let app = spawn_app(backend, |_| {}).await;
    let live = deploy_files(&app, &[]).await;
    let failed = deploy_files(&app, FAILING_BUILD).await;
    assert_eq!(failed.state, State::Failed);
    let dir = release_dir(&app, &failed);
    eventually("the failed build's release directory to go", || {
        !dir.exists()
    })
    .await;
    let workspace = app.data_dir.join("work").join(failed.id.to_string());
    eventually("its workspace to go", || !workspace.exists()).await;

    let releases = release_dir(&app, &live).with_file_name("");
    let orphan = releases.join(uuid::Uuid::now_v7().to_string());
    let theirs = releases.join("operator-notes");
    let stale_work = app
        .data_dir
        .join("work")
        .join(uuid::Uuid::now_v7().to_string());
    for made in [&orphan, &theirs, &stale_work] {
        std::fs::create_dir_all(made.join("sub")).unwrap();
        std::fs::write(made.join("sub/file"), "x").unwrap();
    }
    let report = compact(&app).await;
    let removed = removed_paths(&report);
    let orphan_path = releases
        .canonicalize()
        .unwrap()
        .join(orphan.file_name().unwrap());
    assert!(
        removed.contains(&orphan_path.display().to_string()),
        "{report}"
    );
    assert!(!orphan.exists() && !stale_work.exists());
    assert!(
        theirs.join("sub/file").exists(),
        "not deployd's: left alone"
    );
    assert!(release_dir(&app, &live).is_dir());
    assert_eq!(
        std::fs::read_link(releases.join("current")).unwrap(),
        release_dir(&app, &live)
    );
    app.stop().await;
}

/// Case 3: what a crash left, workspaces and release directories named by
/// deployments the store does not have running, goes at start-up.
async fn the_start_up_sweep_removes_what_a_crash_left(backend: Backend) {
    let (work, release, link) = (
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
        uuid::Uuid::now_v7(),
    );
    let app = spawn_app(backend, |config| {
        let data = &config.server.data_dir;
        let releases = data.join("releases/web/local");
        std::fs::create_dir_all(data.join("work").join(work.to_string()).join("src")).unwrap();
        std::fs::create_dir_all(data.join("work/notes")).unwrap();
        std::fs::create_dir_all(releases.join(release.to_string())).unwrap();
        std::os::unix::fs::symlink(
            releases.join(release.to_string()),
            releases.join(format!(".current.{link}")),
        )
        .unwrap();
    })
    .await;
    let data = app.data_dir.clone();
    let releases = data.join("releases/web/local");
    eventually("the start-up sweep to remove the leftovers", || {
        !data.join("work").join(work.to_string()).exists()
            && !releases.join(release.to_string()).exists()
            && std::fs::symlink_metadata(releases.join(format!(".current.{link}"))).is_err()
    })
    .await;
    assert!(
        data.join("work/notes").is_dir(),
        "not deployd's: left alone"
    );
    app.stop().await;
}

/// Set `path`'s mtime to `ago` before now.
fn backdate(path: &Path, ago: Duration) {
    let file = std::fs::File::options().append(true).open(path).unwrap();
    file.set_modified(SystemTime::now() - ago).unwrap();
}

/// Case 4: an upload no deployment names goes once `limits.source_ttl` has
/// passed since it was uploaded, sent again or checked for; one a
/// deployment names stays. Deploying a swept source is a clear error.
async fn unused_sources_go_after_their_grace_period(backend: Backend) {
    let app = spawn_app(backend, |config| {
        config.limits.source_ttl = Duration::from_secs(3600);
    })
    .await;
    let unused = app.upload(&[("index.html", "never deployed", 0o644)]).await;
    let checked = app.upload(&[("index.html", "checked for", 0o644)]).await;
    let fresh = app.upload(&[("index.html", "just uploaded", 0o644)]).await;
    let deployed = deploy_files(&app, &[]).await;
    let named = deployed.source.clone().expect("a deploy names its source");
    let path = |sha: &str| app.data_dir.join("sources").join(format!("{sha}.tar"));
    for sha in [&unused, &checked, &named] {
        backdate(&path(sha), Duration::from_secs(2 * 3600));
    }
    // A client checking for a source starts its grace period again.
    assert!(app.client.source_exists(&checked).await.unwrap());

    let report = compact(&app).await;
    let canonical = app.data_dir.canonicalize().unwrap();
    let swept = canonical.join("sources").join(format!("{unused}.tar"));
    assert_eq!(
        removed_paths(&report),
        [swept.display().to_string()].into(),
        "{report}"
    );
    assert!(!path(&unused).exists());
    for sha in [&checked, &fresh, &named] {
        assert!(path(sha).exists(), "{sha} stays");
    }
    let refused = app
        .client
        .deploy("web", "local", &deploy_request(&unused))
        .await
        .expect_err("a swept source is not deployable");
    assert!(
        refused.to_string().contains("is not on the server"),
        "{refused}"
    );
    app.stop().await;
}

/// The dry run names what would go, and why, and changes nothing; a bad
/// query is refused and changes nothing either.
async fn the_dry_run_answers_what_would_go_and_changes_nothing(backend: Backend) {
    let app = spawn_app(backend, |config| {
        no_minimum_ages(config);
        config.deploy.keep_releases = 2;
        config.deploy.keep_attempts = 0;
    })
    .await;
    for _ in 0..3 {
        deploy_files(&app, &[]).await;
    }
    let attempt = deploy_files(&app, FAILING_BUILD).await;
    let orphan = app
        .data_dir
        .join("work")
        .join(uuid::Uuid::now_v7().to_string());
    std::fs::create_dir_all(&orphan).unwrap();

    let http = reqwest::Client::new();
    let url = format!("{}/v1/admin/compact", app.url);
    for bad in ["?dry_run=maybe", "?dry_run=true&force=1"] {
        let response = http.post(format!("{url}{bad}")).send().await.unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_argument", "{body}");
    }
    let response = http
        .post(format!("{url}?dry_run=true"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let plan: Value = response.json().await.unwrap();
    assert_eq!(plan["dry_run"], true);
    let versions: Vec<(&str, &str)> = (plan["versions"].as_array().unwrap().iter())
        .map(|v| (v["version"].as_str().unwrap(), v["why"].as_str().unwrap()))
        .collect();
    assert_eq!(versions.len(), 1, "{plan}");
    assert_eq!(versions[0].0, "v1");
    assert!(versions[0].1.contains("keep_releases"), "{plan}");
    let deployments = plan["deployments"].as_array().unwrap();
    let attempt_why = (deployments.iter())
        .find(|d| d["id"] == attempt.id.to_string())
        .map(|d| d["why"].as_str().unwrap())
        .expect("the failed attempt is named");
    assert!(attempt_why.contains("keep_attempts"), "{attempt_why}");
    assert!(
        removed_paths(&plan)
            .iter()
            .any(|p| p.ends_with(orphan.file_name().unwrap().to_str().unwrap())),
        "{plan}"
    );
    // Nothing changed.
    let listing = app.client.versions("web", None, None).await.unwrap();
    assert_eq!(versions_of(&listing).len(), 3);
    assert!(orphan.exists());
    assert!(app.client.get(attempt.id).await.is_ok());
    app.stop().await;
}

/// A cluster's cleanup step hears of an attempt that built nothing (with
/// its id) and of a version compaction deleted (with its artifact), and
/// runs outside any deployment's record.
async fn cleanup_steps_hear_of_attempts_and_deleted_versions(backend: Backend) {
    let outside = tempfile::tempdir().unwrap();
    let heard = outside.path().join("heard");
    let build = "if [ -e fail ]; then exit 1; fi; printf 'registry/web:%s' \"$DEPLOY_ID\" > \"$DEPLOY_ARTIFACT_FILE\"";
    let app = spawn_app(backend, |config| {
        no_minimum_ages(config);
        config.deploy.keep_releases = 2;
        let mut cluster = sh_cluster(Some(build), None, Some("echo activated"));
        cluster.cleanup = Some(StepConfig {
            run: vec![
                "/bin/sh".into(),
                "-c".into(),
                format!(
                    "echo \"$DEPLOY_CLEANUP $DEPLOY_APP $DEPLOY_CLUSTER ${{DEPLOY_ID:-}} ${{DEPLOY_VERSION:-}} ${{DEPLOY_ARTIFACT:-}}\" >> '{}'",
                    heard.display()
                ),
            ],
            timeout: Duration::from_secs(30),
        });
        config.clusters.insert("registry".into(), cluster);
    })
    .await;
    let mut first = None;
    for n in 0..3 {
        let source = app.upload(&[("index.html", &n.to_string(), 0o644)]).await;
        let d = app
            .client
            .deploy("web", "registry", &deploy_request(&source))
            .await
            .unwrap();
        let d = app.finished(d.id).await;
        assert_eq!(d.state, State::Succeeded);
        first.get_or_insert(d);
    }
    let source = app.upload(&[("fail", "", 0o644)]).await;
    let failed = app
        .client
        .deploy("web", "registry", &deploy_request(&source))
        .await
        .unwrap();
    let failed = app.finished(failed.id).await;
    assert_eq!(failed.state, State::Failed);
    let read = || std::fs::read_to_string(&heard).unwrap_or_default();
    let attempt_line = format!("attempt web registry {}", failed.id);
    eventually("the cleanup step to hear of the attempt", || {
        read().lines().any(|l| l.trim_end() == attempt_line)
    })
    .await;
    compact(&app).await;
    let first = first.unwrap();
    let version_line = format!(
        "version web registry {} v1 registry/web:{}",
        first.id, first.id
    );
    assert!(read().lines().any(|l| l == version_line), "{}", read());
    app.stop().await;
}
