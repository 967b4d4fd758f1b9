//! Following progress: JSON lines, and resuming a stream that drops.

use super::*;
use crate::support::process::write_config;

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
