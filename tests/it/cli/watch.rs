//! Following progress: JSON lines, and resuming a stream that drops.

use super::*;
use crate::support::process::{Daemon, free_port, write_config};
use crate::support::proxy::Proxy;
use deployd::client::StreamEvent;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, Lines};
use tokio::process::ChildStdout;

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
    let mut events: Vec<serde_json::Value> = done
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
        .collect();
    // The last line is the Deployment as it ended, with its version.
    let ended = events.pop().expect("a last line");
    assert_eq!(
        (&ended["seq"], &ended["kind"]),
        (&serde_json::Value::Null, &"deployment".into())
    );
    assert_eq!(ended["data"]["version"], "v1", "{ended}");
    assert_eq!(ended["data"]["state"], "succeeded", "{ended}");
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
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let daemon = Daemon::start_on(&config, port).await;

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
    daemon.kill9();
    let _restarted = Daemon::start_on(&config, port).await;
    let rest = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push(line);
        }
    };
    tokio::time::timeout(WAIT, rest)
        .await
        .expect("the watch ends");
    let status = watcher.wait().await.unwrap();
    let stderr = stderr_of(&mut watcher).await;
    std::fs::write(&gate, "").unwrap(); // lets the orphaned build exit
    let text = seen.join("\n");
    assert_eq!(status.code(), Some(1), "{text}");
    assert!(text.contains("interrupted in building"), "{text}");
    // Never silent while the daemon is away.
    assert!(
        stderr.contains("connection lost (") && stderr.contains("(attempt 1 of 10)"),
        "{stderr}"
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_after_the_end_replays_everything() {
    let app = spawn_app(Backend::Sqlite, |c| {
        // One stream per step: a step's stdout and stderr may interleave
        // either way.
        let push = "echo 'warning: slow registry' >&2";
        let cluster = sh_cluster(Some("echo compiling"), Some(push), Some("echo switched"));
        c.clusters.insert("noisy".into(), cluster);
    })
    .await;
    let id = app.deploy("web", "noisy", "one").await.id;
    let stored = stored_events_as_json(&app, id).await;

    let text = run(&app.url, &["watch", &id.to_string()]).await;
    assert_eq!(text.code, Some(0), "{}{}", text.stdout, text.stderr);
    let expected = [
        &format!(
            "deployment {}: deploying web to noisy",
            deployd::model::short_id(&id)
        ),
        "    compiling",
        "✓ building",
        "  ! warning: slow registry",
        "✓ pushing",
        "    switched",
        "✓ activating",
        "web v1 is active on noisy",
    ];
    let mut rest = text.stdout.as_str();
    for line in expected {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} (in this order) in:\n{}", text.stdout));
        rest = &rest[at + line.len()..];
    }

    let json = run(&app.url, &["--output", "json", "watch", &id.to_string()]).await;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let printed: Vec<serde_json::Value> = json
        .stdout
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON event per line"))
        .collect();
    assert_eq!(printed[..printed.len() - 1], stored);
    assert_eq!(printed.last().unwrap()["data"]["state"], "succeeded");
    app.stop().await;
}

/// A build that prints line-1 to line-20, waits for `first`, prints up to
/// line-40, waits for `second`, and prints up to line-60.
fn numbered(first: &Path, second: &Path) -> deployd::config::ClusterConfig {
    let build = format!(
        "lines() {{ n=$1; while [ $n -le $2 ]; do echo line-$n; n=$((n+1)); done; }}\n\
         gate() {{ while [ ! -e \"$1\" ]; do sleep 0.05; done; }}\n\
         lines 1 20; gate '{}'; lines 21 40; gate '{}'; lines 41 60",
        first.display(),
        second.display()
    );
    sh_cluster(Some(&build), None, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_across_a_cut_connection_loses_and_repeats_nothing() {
    let gates = tempfile::tempdir().unwrap();
    let (first, second) = (gates.path().join("first"), gates.path().join("second"));
    let app = spawn_app(Backend::Sqlite, |c| {
        c.clusters
            .insert("numbered".into(), numbered(&first, &second));
    })
    .await;
    let daemon: SocketAddr = app
        .url
        .trim_start_matches("http://")
        .parse()
        .expect("the daemon's address");
    let proxy = Proxy::start(daemon).await;
    let id = app.deploy("web", "numbered", "one").await.id;

    let args = ["--output", "json", "watch", &id.to_string()];
    let mut watcher = deployctl(&proxy.url(), &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    read_json_lines(&mut lines, &mut printed, Some("line-20")).await;

    // The stream drops mid-build, and the watcher is kept out while the
    // build prints more: those lines reach it only through a resume.
    proxy.set_refusing(true);
    proxy.cut().await;
    std::fs::write(&first, "").unwrap();
    wait_for_log(&app.client, id, "line-40").await;
    eventually("the watcher to try again and be refused", || {
        proxy.refused() > 0
    })
    .await;
    proxy.set_refusing(false);
    std::fs::write(&second, "").unwrap();

    read_json_lines(&mut lines, &mut printed, None).await;
    let status = tokio::time::timeout(WAIT, watcher.wait())
        .await
        .expect("watch ends with the deployment")
        .unwrap();
    let stderr = stderr_of(&mut watcher).await;
    assert_eq!(status.code(), Some(0), "{stderr}");

    let ended = printed.pop().expect("the Deployment as it ended");
    assert_eq!(ended["kind"], "deployment", "{ended}");
    let seqs: Vec<i64> = printed.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, (1..=printed.len() as i64).collect::<Vec<_>>());
    let logged: Vec<&str> = printed
        .iter()
        .filter(|e| e["kind"] == "log")
        .map(|e| e["data"]["line"].as_str().unwrap())
        .collect();
    let numbered: Vec<String> = (1..=60).map(|n| format!("line-{n}")).collect();
    assert_eq!(logged, numbered);
    assert_eq!(printed, stored_events_as_json(&app, id).await);
    app.stop().await;
}

/// Every event of `id` to its end, as `--output json` prints them.
async fn stored_events_as_json(app: &TestApp, id: Uuid) -> Vec<serde_json::Value> {
    app.events_until_end(id)
        .await
        .into_iter()
        .map(|(seq, data)| {
            let event = StreamEvent {
                seq: Some(seq),
                data,
            };
            serde_json::to_value(event).expect("events serialize")
        })
        .collect()
}

/// All the watcher wrote on stderr, once it has ended.
async fn stderr_of(watcher: &mut tokio::process::Child) -> String {
    let mut stderr = String::new();
    let pipe = watcher.stderr.as_mut().expect("stderr is piped");
    pipe.read_to_string(&mut stderr).await.unwrap();
    stderr
}

/// Read the watcher's JSON lines into `printed` until the build's output
/// line `until`, or with `None` until the output ends.
async fn read_json_lines(
    lines: &mut Lines<BufReader<ChildStdout>>,
    printed: &mut Vec<serde_json::Value>,
    until: Option<&str>,
) {
    let read = async {
        while let Some(line) = lines.next_line().await.expect("read the watch output") {
            let event: serde_json::Value =
                serde_json::from_str(&line).expect("one JSON event per line");
            let reached = until.is_some() && event["data"]["line"].as_str() == until;
            printed.push(event);
            if reached {
                return;
            }
        }
        assert!(until.is_none(), "the output ended before {until:?}");
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the watch output in time");
}
