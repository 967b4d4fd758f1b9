//! A daemon killed (`kill -9`) during an activate step that has already
//! switched the cluster: its step dies with it, the switch does not. The
//! instance that reaps the deployment (the restarted daemon, or another one
//! on the same PostgreSQL) restores the active version before recording it
//! `interrupted`, so the record and the cluster agree again.

use crate::support::app::*;
use crate::support::on_both_stores;
use crate::support::pg::fresh_database;
use crate::support::process::{Daemon, write_config};
use deployd::client::Client;
use deployd::machine::State;
use deployd::model::{Deployment, EventData};
use std::path::Path;

on_both_stores!(
    a_restarted_daemon_restores_what_a_killed_activation_switched,
    a_daemon_stopped_during_activation_restores_after_its_restart,
);

/// Settings and a `switching` cluster whose releases and `current` symlink
/// live in `cluster` (outside any daemon's data dir, as a real cluster is):
/// its activate step switches `current`, then, for a source with a `slow`
/// file, says so in `switched-<id>` and sleeps 6 s.
fn switching_toml(cluster: &Path) -> String {
    let cluster = cluster.display();
    let build = format!(
        r#"release="{cluster}/releases/$DEPLOY_ID"; mkdir -p "$release"
cp -R "$DEPLOY_SOURCE_DIR/." "$release/"; printf '%s' "$release" > "$DEPLOY_ARTIFACT_FILE""#
    );
    let activate = format!(
        r#"if [ -z "${{DEPLOY_ARTIFACT:-}}" ]; then rm -f "{cluster}/current"; exit 0; fi
ln -sfn "$DEPLOY_ARTIFACT" "{cluster}/.current.$DEPLOY_ID"
mv -fT "{cluster}/.current.$DEPLOY_ID" "{cluster}/current"
echo "current -> $DEPLOY_ARTIFACT ($DEPLOY_VERSION)"
if [ "${{DEPLOY_RESTORE:-}}" != 1 ] && [ -e "$DEPLOY_ARTIFACT/slow" ]; then
  echo switched > "{cluster}/switched-$DEPLOY_ID"; sleep 6
fi"#
    );
    let argv = |script: String| serde_json::json!(["/bin/sh", "-eu", "-c", script]);
    format!(
        "[deploy]\nlease = \"3s\"\nkill_grace = \"1s\"\n\n\
         [clusters.switching.build]\nrun = {}\ntimeout = \"1m\"\n\n\
         [clusters.switching.activate]\nrun = {}\ntimeout = \"1m\"\n",
        argv(build),
        argv(activate)
    )
}

async fn deploy(client: &Client, tag: &str, slow: bool) -> Deployment {
    let mut files = vec![("index.html", tag, 0o644)];
    if slow {
        files.push(("slow", "", 0o644));
    }
    let bytes = tar_of(&files);
    let sha = sha256_hex(&bytes);
    client.put_source(&sha, bytes).await.expect("upload");
    let request = deploy_request(&sha);
    let d = client.deploy("web", "switching", &request);
    d.await.expect("deploy accepted")
}

fn current(cluster: &Path) -> Option<String> {
    std::fs::read_to_string(cluster.join("current/index.html")).ok()
}

/// v1 succeeds; v2's activate step switches `current`, then its daemon is
/// killed. Returns v2.
async fn kill_during_a_switched_activation(daemon: Daemon, cluster: &Path) -> Deployment {
    let v2 = switch_to_v2(&daemon, cluster).await;
    daemon.kill9();
    v2
}

/// v1 succeeds; v2's activate step has switched `current` and sleeps.
async fn switch_to_v2(daemon: &Daemon, cluster: &Path) -> Deployment {
    let v1 = deploy(&daemon.client, "one", false).await;
    let events = collect_events(&daemon.client, v1.id, None).await;
    assert!(matches!(&events.last().unwrap().1, EventData::State(s) if s.to == State::Succeeded));
    let v2 = deploy(&daemon.client, "two", true).await;
    let switched = cluster.join(format!("switched-{}", v2.id));
    eventually("v2's activate step to switch", || switched.exists()).await;
    assert_eq!(current(cluster).as_deref(), Some("two"));
    v2
}

/// What the reaping instance must have recorded and done.
async fn assert_restored(client: &Client, v2: &Deployment, cluster: &Path) {
    let events = collect_events(client, v2.id, None).await;
    let EventData::State(end) = &events.last().unwrap().1 else {
        panic!("a state event last")
    };
    assert_eq!(end.to, State::Interrupted, "{end:?}");
    let error = end.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with("interrupted during activating: instance ")
            && error.ends_with("stopped renewing its lease; restored v1 on the cluster"),
        "{error}"
    );
    assert!(
        events
            .iter()
            .any(|(_, e)| matches!(e, EventData::Log(l) if l.step == "restore" && l.line.contains("(v1)"))),
        "the restore's output is v2's: {events:?}"
    );
    assert_eq!(
        current(cluster).as_deref(),
        Some("one"),
        "the cluster is back on v1"
    );
    let target = client.target("web", "switching").await.unwrap();
    assert_eq!(target.active.map(|a| a.version).as_deref(), Some("v1"));
    assert!(target.drift.is_none() && target.running.is_none());
}

/// The store URL for a daemon process (`None`: the embedded store), and the
/// database to keep alive meanwhile.
async fn store_for(backend: Backend) -> (Option<String>, Option<crate::support::pg::TestDatabase>) {
    match backend {
        Backend::Sqlite => (None, None),
        Backend::Postgres => {
            let db = fresh_database().await;
            (Some(db.url().to_string()), Some(db))
        }
    }
}

/// SIGTERM stops the activate step after the grace, but does not record the
/// deployment `interrupted` without a restore: the next start restores.
async fn a_daemon_stopped_during_activation_restores_after_its_restart(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    std::fs::create_dir_all(&cluster).unwrap();
    let (url, _db) = store_for(backend).await;
    let config = write_config(dir.path(), url.as_deref(), &switching_toml(&cluster));
    let daemon = Daemon::start(&config).await;
    let v2 = switch_to_v2(&daemon, &cluster).await;
    assert!(daemon.terminate().await.success());

    let restarted = Daemon::start(&config).await;
    assert_restored(&restarted.client, &v2, &cluster).await;
}

async fn a_restarted_daemon_restores_what_a_killed_activation_switched(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    std::fs::create_dir_all(&cluster).unwrap();
    let (url, _db) = store_for(backend).await;
    let config = write_config(dir.path(), url.as_deref(), &switching_toml(&cluster));
    let daemon = Daemon::start(&config).await;
    let v2 = kill_during_a_switched_activation(daemon, &cluster).await;

    let restarted = Daemon::start(&config).await;
    assert_restored(&restarted.client, &v2, &cluster).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_daemon_restores_what_a_killed_activation_switched() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = dir.path().join("cluster");
    std::fs::create_dir_all(&cluster).unwrap();
    let db = fresh_database().await;
    let toml = switching_toml(&cluster);
    let start = |name: &str| {
        let home = dir.path().join(name);
        std::fs::create_dir_all(&home).unwrap();
        write_config(&home, Some(db.url()), &toml)
    };
    let first = Daemon::start(&start("first")).await;
    let second = Daemon::start(&start("second")).await;
    let v2 = kill_during_a_switched_activation(first, &cluster).await;
    assert_restored(&second.client, &v2, &cluster).await;
}
