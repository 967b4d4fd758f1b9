//! `deployctl` as a user runs it: the real binary against a real daemon on
//! port 0, checked by its output and exit codes (0 ok, 1 ended badly,
//! 2 request error, 3 unreachable, 130 detached).

use crate::support::app::*;
use crate::support::process::write_config;
use deployd::client::Client;
use deployd::machine::State;
use std::path::Path;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use uuid::Uuid;

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

fn deployctl(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_deployctl"));
    command
        .args(args)
        .env("DEPLOYD_URL", url)
        .env_remove("DEPLOYD_TOKEN")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

async fn run(url: &str, args: &[&str]) -> Run {
    let output = tokio::time::timeout(WAIT, deployctl(url, args).output())
        .await
        .expect("deployctl ends in time")
        .expect("deployctl runs");
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn source_dir(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for (path, text) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

fn path(dir: &tempfile::TempDir) -> &str {
    dir.path().to_str().expect("a UTF-8 temp path")
}

/// A build that waits for `gate` to exist, so a test decides when it ends.
fn gated(gate: &Path) -> deployd::config::ClusterConfig {
    let build = format!(
        "echo waiting; while [ ! -e '{}' ]; do sleep 0.05; done",
        gate.display()
    );
    sh_cluster(Some(&build), None, Some("echo activated"))
}

/// Wait until deployment `id` has printed `line` in its build output.
async fn wait_for_log(client: &Client, id: Uuid, line: &str) {
    let mut stream = client.events(id, None).await.expect("event stream");
    let found = async {
        use futures::StreamExt;
        while let Some(event) = stream.next().await {
            if let deployd::model::EventData::Log(log) = event.expect("event").data
                && log.line == line
            {
                return;
            }
        }
        panic!("the stream ended without {line:?}");
    };
    tokio::time::timeout(WAIT, found)
        .await
        .expect("the line in time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_packs_uploads_once_and_renders_phases() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let dir = source_dir(&[
        ("index.html", "hello"),
        (".gitignore", "*.log\n"),
        ("debug.log", "not for the server"),
    ]);
    let first = run(
        &app.url,
        &["deploy", "--app", "web", "--cluster", "local", path(&dir)],
    )
    .await;
    assert_eq!(first.code, Some(0), "{}{}", first.stdout, first.stderr);
    assert!(first.stderr.contains("uploaded source"), "{}", first.stderr);
    for line in ["✓ building", "✓ pushing", "✓ activating"] {
        assert!(first.stdout.contains(line), "{line}: {}", first.stdout);
    }
    assert!(
        first
            .stdout
            .contains("succeeded: web v1 is active on local"),
        "{}",
        first.stdout
    );
    let current = app.data_dir.join("releases/web/local/current");
    assert_eq!(
        std::fs::read_to_string(current.join("index.html")).unwrap(),
        "hello"
    );
    assert!(
        !current.join("debug.log").exists(),
        "gitignored files stay home"
    );

    // Unchanged source: the server has it, so nothing is uploaded again.
    let again = run(
        &app.url,
        &["deploy", "--app", "web", "--cluster", "local", path(&dir)],
    )
    .await;
    assert_eq!(again.code, Some(0), "{}{}", again.stdout, again.stderr);
    assert!(
        again.stderr.contains("source already on server"),
        "{}",
        again.stderr
    );
    assert!(
        again.stdout.contains("succeeded: web v2"),
        "{}",
        again.stdout
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_is_every_event_once_in_order() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let dir = source_dir(&[("index.html", "hello")]);
    let args = [
        "--output",
        "json",
        "deploy",
        "--app",
        "web",
        "--cluster",
        "local",
        path(&dir),
    ];
    let done = run(&app.url, &args).await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    let events: Vec<serde_json::Value> = done
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
        .collect();
    let seqs: Vec<i64> = events.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=events.len() as i64).collect::<Vec<_>>());
    assert_eq!(events[0]["kind"], "deployment");
    let last = events.last().unwrap();
    assert_eq!(
        (&last["kind"], &last["data"]["to"]),
        (&"state".into(), &"succeeded".into())
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_tell_failure_refusal_and_absence_apart() {
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("open");
    let app = spawn_app(Backend::Sqlite, |c| {
        let build = "echo compiling; echo 'error: missing semicolon' >&2; exit 3";
        c.clusters
            .insert("broken".into(), sh_cluster(Some(build), None, None));
        c.clusters.insert("gated".into(), gated(&gate_file));
    })
    .await;
    let dir = source_dir(&[("index.html", "hello")]);

    let failed = run(
        &app.url,
        &["deploy", "--app", "web", "--cluster", "broken", path(&dir)],
    )
    .await;
    assert_eq!(failed.code, Some(1), "{}{}", failed.stdout, failed.stderr);
    assert!(
        failed.stdout.contains("    error: missing semicolon"),
        "{}",
        failed.stdout
    );
    assert!(
        failed.stdout.contains("failed in building"),
        "{}",
        failed.stdout
    );

    let holder = app.deploy("web", "gated", "one").await;
    let args = [
        "deploy",
        "--app",
        "web",
        "--cluster",
        "gated",
        "--on-conflict",
        "reject",
        path(&dir),
    ];
    let refused = run(&app.url, &args).await;
    assert_eq!(
        refused.code,
        Some(2),
        "{}{}",
        refused.stdout,
        refused.stderr
    );
    assert!(
        refused.stderr.contains("(deploy_in_progress)"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains(&holder.id.to_string()),
        "{}",
        refused.stderr
    );

    let unknown = run(&app.url, &["watch", &Uuid::now_v7().to_string()]).await;
    assert_eq!(unknown.code, Some(2), "{}", unknown.stderr);
    assert!(unknown.stderr.contains("(not_found)"), "{}", unknown.stderr);

    std::fs::write(&gate_file, "").unwrap();
    app.finished(holder.id).await;
    app.stop().await;

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let absent = run(&closed, &["status", "--app", "web"]).await;
    assert_eq!(absent.code, Some(3), "{}", absent.stderr);
    assert!(
        absent.stderr.contains("cannot reach deployd"),
        "{}",
        absent.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detach_watch_and_cancel() {
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("open");
    let app = spawn_app(Backend::Sqlite, |c| {
        c.clusters.insert("gated".into(), gated(&gate_file));
    })
    .await;
    let dir = source_dir(&[("index.html", "hello")]);
    let args = [
        "deploy",
        "--detach",
        "--app",
        "web",
        "--cluster",
        "gated",
        path(&dir),
    ];
    let detached = run(&app.url, &args).await;
    assert_eq!(detached.code, Some(0), "{}", detached.stderr);
    let id: Uuid = detached
        .stdout
        .trim()
        .parse()
        .expect("--detach prints the id");
    wait_for_log(&app.client, id, "waiting").await;

    let watcher = deployctl(&app.url, &["watch", &id.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let cancel = run(
        &app.url,
        &["cancel", &id.to_string(), "--reason", "wrong branch"],
    )
    .await;
    assert_eq!(cancel.code, Some(0), "{}", cancel.stderr);
    assert!(cancel.stdout.contains("is cancelled"), "{}", cancel.stdout);

    let watched = tokio::time::timeout(WAIT, watcher.wait_with_output())
        .await
        .expect("watch ends with the deployment")
        .unwrap();
    let stdout = String::from_utf8_lossy(&watched.stdout);
    assert_eq!(watched.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("    waiting"),
        "the replay shows earlier output: {stdout}"
    );
    assert!(stdout.contains("cancelled in building"), "{stdout}");

    // Cancelling again is a refused request, not a crash.
    let again = run(&app.url, &["cancel", &id.to_string()]).await;
    assert_eq!(again.code, Some(2), "{}", again.stderr);
    assert!(
        again.stderr.contains("(invalid_transition)"),
        "{}",
        again.stderr
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_detaches_and_never_cancels() {
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("open");
    let app = spawn_app(Backend::Sqlite, |c| {
        c.clusters.insert("gated".into(), gated(&gate_file));
    })
    .await;
    let dir = source_dir(&[("index.html", "hello")]);
    let mut child = deployctl(
        &app.url,
        &["deploy", "--app", "web", "--cluster", "gated", path(&dir)],
    )
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // The first line names the deployment; from then on Ctrl-C detaches.
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the first line in time")
        .unwrap()
        .expect("a first line");
    let id: Uuid = first
        .strip_prefix("deployment ")
        .and_then(|rest| rest.split(':').next())
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"));
    wait_for_log(&app.client, id, "waiting").await;

    let pid = child.id().expect("running") as i32;
    // SAFETY: signalling a child we spawned and still own.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("deployctl detaches in time")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains(&format!("deployctl watch {id}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("deployctl cancel {id}")),
        "{stderr}"
    );

    assert_eq!(app.client.get(id).await.unwrap().state, State::Building);
    std::fs::write(&gate_file, "").unwrap();
    assert_eq!(app.finished(id).await.state, State::Succeeded);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_versions_status_and_rollback() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    for text in ["one", "two"] {
        let dir = source_dir(&[("index.html", text)]);
        let args = [
            "deploy",
            "--app",
            "web",
            "--cluster",
            "local",
            "-m",
            text,
            path(&dir),
        ];
        assert_eq!(run(&app.url, &args).await.code, Some(0));
    }

    let history = run(&app.url, &["history", "--app", "web"]).await;
    assert_eq!(history.code, Some(0), "{}", history.stderr);
    let rows: Vec<&str> = history.stdout.lines().collect();
    assert!(
        rows[0].starts_with("STATE      CLUSTER  VERSION  ACTIVE  WHO"),
        "{}",
        rows[0]
    );
    assert_eq!(rows.len(), 3, "{}", history.stdout);
    assert!(rows[1].contains("v2") && rows[1].contains('*') && rows[1].ends_with("two"));
    assert!(rows[2].contains("v1") && rows[2].ends_with("one"));

    let args = [
        "--output",
        "json",
        "history",
        "--app",
        "web",
        "--cluster",
        "local",
        "--limit",
        "1",
        "--all",
    ];
    let paged = run(&app.url, &args).await;
    let page: serde_json::Value = serde_json::from_str(paged.stdout.trim()).unwrap();
    assert_eq!(
        page["deployments"].as_array().unwrap().len(),
        2,
        "--all follows cursors"
    );
    assert!(page["next_cursor"].is_null());

    let versions = run(&app.url, &["versions", "--app", "web"]).await;
    assert_eq!(versions.code, Some(0), "{}", versions.stderr);
    assert!(
        versions.stdout.lines().nth(1).unwrap().starts_with("v2 "),
        "{}",
        versions.stdout
    );

    let rollback = run(
        &app.url,
        &[
            "rollback",
            "--app",
            "web",
            "--cluster",
            "local",
            "--to",
            "v1",
        ],
    )
    .await;
    assert_eq!(
        rollback.code,
        Some(0),
        "{}{}",
        rollback.stdout,
        rollback.stderr
    );
    assert!(
        rollback.stdout.contains("✓ activating"),
        "{}",
        rollback.stdout
    );
    assert!(!rollback.stdout.contains("building"), "{}", rollback.stdout);
    assert!(
        rollback
            .stdout
            .contains("succeeded: web v1 is active on local"),
        "{}",
        rollback.stdout
    );

    let status = run(&app.url, &["status", "--app", "web"]).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    assert!(
        status
            .stdout
            .starts_with("web on local\n  active   v1 since"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("  running  none"),
        "{}",
        status.stdout
    );
    app.stop().await;
}

/// `deployd serve` on a port of the test's choosing, so a restarted daemon
/// answers at the URL a running deployctl already has.
async fn start_daemon(config: &Path, port: u16) -> tokio::process::Child {
    let child = Command::new(env!("CARGO_BIN_EXE_deployd"))
        .args(["serve", "--config"])
        .arg(config)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("DEPLOYD_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start deployd");
    let client = Client::new(&format!("http://127.0.0.1:{port}"), None).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while client.readyz().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "deployd did not become ready"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_across_a_daemon_restart_without_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    let extra = format!(
        "[deploy]\nlease = \"3s\"\n\n[clusters.gated.build]\n\
         run = [\"/bin/sh\", \"-c\", \"echo waiting; while [ ! -e '{}' ]; do sleep 0.05; done\"]\n\
         timeout = \"10m\"\n",
        gate.display()
    );
    let config = write_config(dir.path(), None, &extra);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let mut daemon = start_daemon(&config, port).await;

    let source = source_dir(&[("index.html", "hello")]);
    let args = [
        "deploy",
        "--detach",
        "--app",
        "web",
        "--cluster",
        "gated",
        path(&source),
    ];
    let detached = run(&url, &args).await;
    let id: Uuid = detached
        .stdout
        .trim()
        .parse()
        .expect("--detach prints the id");
    let mut watcher = deployctl(&url, &["watch", &id.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while !seen.iter().any(|line: &String| line == "    waiting") {
        let line = tokio::time::timeout(WAIT, lines.next_line()).await;
        seen.push(
            line.expect("output in time")
                .unwrap()
                .expect("the build's output"),
        );
    }

    // SIGKILL: the stream drops mid-build. The daemon that comes back on
    // the same port finds the build's lease run out and interrupts it; the
    // watcher must reconnect and show just what it had not shown.
    daemon.kill().await.unwrap();
    let _restarted = start_daemon(&config, port).await;
    let rest = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line);
        }
    };
    tokio::time::timeout(WAIT, rest)
        .await
        .expect("the watch ends");
    let status = watcher.wait().await.unwrap();
    std::fs::write(&gate, "").unwrap(); // lets the orphaned build exit
    let text = seen.join("\n");
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("interrupted in building"), "{text}");
    assert_eq!(
        seen.iter().filter(|line| *line == "    waiting").count(),
        1,
        "{text}"
    );
    assert_eq!(
        seen.iter()
            .filter(|line| line.starts_with("deployment "))
            .count(),
        1,
        "{text}"
    );
}
