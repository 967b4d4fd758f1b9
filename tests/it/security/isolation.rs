//! Steps cannot see the daemon. A step that goes looking for the daemon's
//! secrets — the environment and memory of its parent (the guard, a fork of
//! the daemon) and of its grandparent (the daemon) — finds nothing, whether
//! it runs as another user (`clusters.NAME.user`) or as the daemon's own
//! user, where only the daemon being non-dumpable protects it. The probe
//! shows it can read what it may (its own shell's environment and memory),
//! so "nothing found" is not a probe that never worked.
//!
//! Steps of a cluster with a `user` run as that user, every one of them
//! (build, push, activate, restore, cleanup), with their workspace and
//! release directories theirs and the daemon's own files out of reach.

use crate::support::app::*;
use crate::support::pg::fresh_database;
use crate::support::process::{Daemon, free_port, write_config};
use deployd::config::Config;
use deployd::machine::State;
use deployd::model::EventData;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use uuid::Uuid;

/// `nobody`, the unprivileged user the tests run steps (or the daemon) as.
const NOBODY: u32 = 65534;

/// Prints the step's descriptors (`fd N -> TARGET`), then what it can read
/// of a process: `LABEL environ: denied` or every variable, `LABEL maps:
/// denied` or each match in its memory of a marker, a deploy id or a URL
/// with a password. Run as `sh probe.sh`, so `$$` is the step's shell and
/// `$PPID` its guard, whose parent is the daemon.
const PROBE: &str = r#"
probe() {
  label=$1 pid=$2
  if vars=$(tr '\0' '\n' < /proc/$pid/environ 2>/dev/null); then
    printf '%s\n' "$vars" | sed "s/^/$label environ: /"
  else
    echo "$label environ: denied"
  fi
  if maps=$(cat /proc/$pid/maps 2>/dev/null) && [ -n "$maps" ]; then
    printf '%s\n' "$maps" | while read -r range perms rest; do
      case "$perms $rest" in r*vsyscall*) continue ;; r*) ;; *) continue ;; esac
      start=$((0x${range%-*})) end=$((0x${range#*-}))
      dd if=/proc/$pid/mem bs=65536 iflag=skip_bytes,count_bytes skip=$start \
        count=$((end - start)) 2>/dev/null
    done | grep -a -o -E '(LEAK_MARKER|DEPLOY_ID)=[A-Za-z0-9-]+|postgres:/[/][^@ ]*@' \
      | sort -u | sed "s/^/$label mem: /"
  else
    echo "$label maps: denied"
  fi
}
echo "running as $(id -u)"
ls -l /proc/self/fd | sed -n 's/.* \([0-9]*\) -> /fd \1 -> /p'
probe self $$
probe guard $PPID
probe daemon "$(cut -d' ' -f4 /proc/$PPID/stat)"
"#;

/// A temp dir every user can enter: the data dir lives in it, and a step
/// running as another user must reach its workspace.
fn open_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the temp dir");
    dir
}

/// The test database's URL with a password in it, and that password (the
/// server trusts local connections, so any password is accepted).
fn with_password(url: &str) -> (String, String) {
    let (scheme, rest) = url.split_once("://").expect("a URL");
    let (userinfo, host) = rest.split_once('@').expect("the URL names a user");
    match userinfo.split_once(':') {
        Some((_, password)) => (url.to_string(), password.to_string()),
        None => {
            let password = format!("pw-{}", Uuid::now_v7().simple());
            (format!("{scheme}://{userinfo}:{password}@{host}"), password)
        }
    }
}

/// Deploy a one-file source to `cluster` and return the `log` lines of its
/// steps, once it ended, and the deployment as the API shows it.
async fn deploy_and_read(daemon: &Daemon, cluster: &str) -> (Uuid, Vec<String>, String) {
    let bytes = tar_of(&[("index.html", "probe", 0o644)]);
    let sha = sha256_hex(&bytes);
    daemon.client.put_source(&sha, bytes).await.expect("upload");
    let deployment = (daemon.client)
        .deploy("web", cluster, &deploy_request(&sha))
        .await
        .expect("deploy");
    let events = collect_events(&daemon.client, deployment.id, None).await;
    let lines = (events.into_iter())
        .filter_map(|(_, e)| match e {
            EventData::Log(log) => Some(log.line),
            _ => None,
        })
        .collect();
    let stored = daemon.client.get(deployment.id).await.expect("get");
    assert_eq!(stored.state, State::Succeeded, "{stored:?}");
    let stored = serde_json::to_string(&stored).expect("json");
    (deployment.id, lines, stored)
}

/// What the probe printed: it could read its own shell, and nothing of the
/// guard or the daemon; no secret is anywhere in `seen`.
fn assert_found_nothing(id: Uuid, lines: &[String], uid: u32, secrets: &[&str], seen: &str) {
    let has = |line: String| lines.contains(&line);
    assert!(has(format!("running as {uid}")), "{lines:#?}");
    assert!(has(format!("self environ: DEPLOY_ID={id}")), "{lines:#?}");
    assert!(has(format!("self mem: DEPLOY_ID={id}")), "{lines:#?}");
    for label in ["guard", "daemon"] {
        assert!(has(format!("{label} environ: denied")), "{lines:#?}");
        assert!(has(format!("{label} maps: denied")), "{lines:#?}");
    }
    // No descriptor of the daemon's: its sockets, its event loop, its database.
    let fds: Vec<&String> = lines.iter().filter(|l| l.starts_with("fd ")).collect();
    assert!(fds.iter().any(|l| l.starts_with("fd 0 -> ")), "{lines:#?}");
    for fd in fds {
        for daemons in ["socket:", "anon_inode:", "deployd.db"] {
            assert!(!fd.contains(daemons), "{fd}");
        }
    }
    for secret in secrets {
        assert!(!seen.contains(secret), "{secret} leaked: {seen}");
    }
}

#[tokio::test]
async fn a_step_running_as_another_user_cannot_read_the_daemon() {
    let db = fresh_database().await;
    let (url, password) = with_password(db.url());
    let marker = format!("marker-{}", Uuid::now_v7().simple());
    let dir = open_tempdir();
    let probe = dir.path().join("probe.sh");
    std::fs::write(&probe, PROBE).expect("write the probe");
    let config = write_config(
        dir.path(),
        None,
        &format!(
            "[clusters.sandbox]\nuser = \"nobody\"\n\
             [clusters.sandbox.build]\nrun = [\"/bin/sh\", \"{}\"]\ntimeout = \"1m\"\n",
            probe.display()
        ),
    );
    let log = dir.path().join("deployd.log");
    let stderr = std::fs::File::create(&log).expect("log file");
    let daemon = Daemon::start_with(&config, free_port(), |command| {
        command
            .env("DEPLOYD_STORE__URL", &url)
            .env("LEAK_MARKER", &marker)
            .env("DEPLOYD_LOG", "debug")
            .stderr(stderr);
    })
    .await;

    let (id, lines, stored) = deploy_and_read(&daemon, "sandbox").await;
    drop(daemon);
    let logged = std::fs::read_to_string(&log).expect("read the log");
    let seen = format!("{}\n{stored}\n{logged}", lines.join("\n"));
    assert_found_nothing(id, &lines, NOBODY, &[&marker, &password], &seen);
}

#[tokio::test]
async fn a_step_running_as_the_daemons_user_cannot_read_the_daemon() {
    let db = fresh_database().await;
    let (url, password) = with_password(db.url());
    let marker = format!("marker-{}", Uuid::now_v7().simple());
    let dir = open_tempdir();
    std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).expect("chown");
    let probe = dir.path().join("probe.sh");
    std::fs::write(&probe, PROBE).expect("write the probe");
    let config = write_config(
        dir.path(),
        None,
        &format!(
            "[clusters.probe.build]\nrun = [\"/bin/sh\", \"{}\"]\ntimeout = \"1m\"\n",
            probe.display()
        ),
    );
    let log = dir.path().join("deployd.log");
    let stderr = std::fs::File::create(&log).expect("log file");
    // The daemon itself is `nobody`, like its steps: no user boundary, only
    // the daemon (and its guards) being non-dumpable.
    let daemon = Daemon::start_with(&config, free_port(), |command| {
        command
            .uid(NOBODY)
            .gid(NOBODY)
            .env("DEPLOYD_STORE__URL", &url)
            .env("LEAK_MARKER", &marker)
            .env("DEPLOYD_LOG", "debug")
            .stderr(stderr);
    })
    .await;

    let (id, lines, stored) = deploy_and_read(&daemon, "probe").await;
    drop(daemon);
    let logged = std::fs::read_to_string(&log).expect("read the log");
    let seen = format!("{}\n{stored}\n{logged}", lines.join("\n"));
    assert_found_nothing(id, &lines, NOBODY, &[&marker, &password], &seen);
}

/// The clusters of `toml` over the defaults, for a test's `spawn_app`.
fn clusters_of(toml: &str) -> std::collections::BTreeMap<String, deployd::config::ClusterConfig> {
    let config = Config::from_sources(Some(toml), Vec::<(String, String)>::new());
    config.expect("the test's clusters load").clusters
}

/// Let every user enter the test's temp dir (the data dir's parent).
fn open_parent(config: &Config) {
    let parent = config.server.data_dir.parent().expect("a parent");
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

fn mode_and_owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::symlink_metadata(path).expect("stat");
    (meta.mode() & 0o777, meta.uid())
}

#[tokio::test]
async fn the_local_cluster_builds_and_activates_as_its_user() {
    let app = spawn_app(Backend::Sqlite, |config| {
        open_parent(config);
        config.clusters = clusters_of("[clusters.local]\nuser = \"nobody\"\n");
    })
    .await;
    let build = "#!/bin/sh\nid -u > built-by\necho \"built by $(id -u)\"\n";
    let first = app
        .upload(&[("index.html", "one", 0o644), ("build.sh", build, 0o755)])
        .await;
    let first = app
        .client
        .deploy("web", "local", &deploy_request(&first))
        .await;
    let first = app.finished(first.expect("deploy").id).await;
    assert_eq!(first.state, State::Succeeded, "{first:?}");
    let second = app.deploy("web", "local", "two").await;
    assert_eq!(app.finished(second.id).await.state, State::Succeeded);
    let back = app
        .client
        .rollback("web", "local", &Default::default())
        .await;
    let back = app.finished(back.expect("rollback").id).await;
    assert_eq!(back.state, State::Succeeded, "{back:?}");

    let releases = app.data_dir.join("releases/web/local");
    let current = std::fs::read_link(releases.join("current")).expect("current");
    let first_release = releases.canonicalize().unwrap().join(first.id.to_string());
    assert_eq!(current, first_release, "rolled back to the first");
    let built_by = std::fs::read_to_string(current.join("built-by")).expect("built-by");
    assert_eq!(built_by.trim(), NOBODY.to_string());
    assert_eq!(
        mode_and_owner(&current).1,
        NOBODY,
        "the release is the user's"
    );
    assert_eq!(mode_and_owner(&releases).1, NOBODY);
    assert_eq!(mode_and_owner(&releases.join("current")).1, NOBODY);
    // The daemon's own files stay the daemon's.
    assert_eq!(mode_and_owner(&app.data_dir.join("sources")), (0o700, 0));
    assert_eq!(mode_and_owner(&app.data_dir.join("deployd.db")), (0o600, 0));
}

#[tokio::test]
async fn every_step_of_a_cluster_with_a_user_runs_as_it() {
    let outbox = open_tempdir();
    std::fs::set_permissions(outbox.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let cleaned = outbox.path().join("cleanup");
    let app = spawn_app(Backend::Sqlite, |config| {
        open_parent(config);
        let say = |phase: &str| format!("[\"/bin/sh\", \"-c\", \"echo {phase} $(id -u)\"]");
        let toml = format!(
            "[clusters.jail]\nuser = \"nobody\"\n\
             [clusters.jail.build]\ntimeout = \"1m\"\n\
             run = [\"/bin/sh\", \"-c\", \"echo build $(id -u); test ! -f fail\"]\n\
             [clusters.jail.push]\ntimeout = \"1m\"\nrun = {1}\n\
             [clusters.jail.activate]\ntimeout = \"1m\"\nrun = [\"/bin/sh\", \"-c\", \
             \"echo activate $(id -u); test $DEPLOY_VERSION != v2 || test -n \\\"$DEPLOY_RESTORE\\\"\"]\n\
             [clusters.jail.cleanup]\ntimeout = \"1m\"\n\
             run = [\"/bin/sh\", \"-c\", \"id -u > {0}.new && mv {0}.new {0}\"]\n",
            cleaned.display(),
            say("push"),
        );
        config.clusters = clusters_of(&toml);
    })
    .await;
    let lines = |events: Vec<(i64, EventData)>| -> Vec<(String, String)> {
        (events.into_iter())
            .filter_map(|(_, e)| match e {
                EventData::Log(log) => Some((log.step, log.line)),
                _ => None,
            })
            .collect()
    };
    let as_nobody = |step: &str, phase: &str| (step.to_string(), format!("{phase} {NOBODY}"));

    let first = app.deploy("web", "jail", "one").await;
    let seen = lines(app.events_until_end(first.id).await);
    let expected = [
        ("build", "build"),
        ("push", "push"),
        ("activate", "activate"),
    ];
    let expected: Vec<_> = expected.iter().map(|(s, p)| as_nobody(s, p)).collect();
    assert_eq!(seen, expected);

    // v2's activation fails: the restore of v1 runs as the user too.
    let second = app.deploy("web", "jail", "two").await;
    let seen = lines(app.events_until_end(second.id).await);
    assert!(seen.contains(&as_nobody("restore", "activate")), "{seen:?}");
    assert_eq!(
        app.client.get(second.id).await.unwrap().state,
        State::Failed
    );

    // A build that fails ends an attempt without a version: cleanup runs.
    let source = app
        .upload(&[("index.html", "three", 0o644), ("fail", "", 0o644)])
        .await;
    let third = app
        .client
        .deploy("web", "jail", &deploy_request(&source))
        .await;
    let third = app.finished(third.expect("deploy").id).await;
    assert_eq!(third.state, State::Failed);
    eventually("the cleanup step to run", || cleaned.exists()).await;
    let uid = std::fs::read_to_string(&cleaned).expect("read");
    assert_eq!(uid.trim(), NOBODY.to_string());
}

#[tokio::test]
async fn a_build_cannot_make_the_daemon_read_a_file_for_it() {
    let app = spawn_app(Backend::Sqlite, |config| {
        open_parent(config);
        let toml = "[clusters.jail]\nuser = \"nobody\"\n[clusters.jail.build]\ntimeout = \"1m\"\n\
                    run = [\"/bin/sh\", \"-c\", \"ln -s /etc/shadow \\\"$DEPLOY_ARTIFACT_FILE\\\"\"]\n";
        config.clusters = clusters_of(toml);
    })
    .await;
    let deployment = app.deploy("web", "jail", "one").await;
    let deployment = app.finished(deployment.id).await;
    assert_eq!(deployment.state, State::Failed, "{deployment:?}");
    let error = deployment.error.expect("an error");
    assert!(error.contains("DEPLOY_ARTIFACT_FILE"), "{error}");
    assert!(!error.contains("root:"), "{error}");
}
