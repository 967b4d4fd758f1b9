//! deployctl as people use it every day (#15): acting on the short ids it
//! shows, failures where people look, JSON a CI job can use whole, waits
//! with an end, errors that say what to do, checks before work, and output
//! that suits a terminal (colour, human times, width) and a pipe alike.

use super::*;
use deployd::model::short_id;
use tokio::io::AsyncReadExt;

/// deployctl on a pseudo-terminal `cols` wide, with `env` set; answers
/// the screen as a terminal would show it and the raw bytes. `ctrl_c_after`:
/// send Ctrl-C once this text has appeared.
async fn on_terminal(
    url: &str,
    args: &[&str],
    env: &[(&str, &str)],
    cols: u16,
    ctrl_c_after: Option<&str>,
) -> (String, String) {
    let mut command = std::process::Command::new("/bin/sh");
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    command
        .arg("-c")
        .arg(format!(
            "stty cols {cols} rows 50 echo echoctl; exec '{}' {}",
            env!("CARGO_BIN_EXE_deployctl"),
            quoted.join(" ")
        ))
        .env("DEPLOYD_URL", url)
        .env_remove("DEPLOYD_TOKEN")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color");
    for (key, value) in env {
        command.env(key, value);
    }
    let ctrl_c_after = ctrl_c_after.map(str::to_string);
    let raw = tokio::task::spawn_blocking(move || {
        let mut session = rexpect::session::spawn_command(command, Some(WAIT.as_millis() as u64))
            .expect("deployctl on a pty");
        let mut before = String::new();
        if let Some(text) = ctrl_c_after {
            before = session.exp_string(&text).expect("the text before Ctrl-C");
            before.push_str(&text);
            session.send_control('c').expect("Ctrl-C");
        }
        before + &session.exp_eof().expect("deployctl ends")
    })
    .await
    .expect("the pty session");
    // rexpect hands the bytes over one char each.
    let raw = match raw.chars().all(|c| (c as u32) < 256) {
        true => {
            let bytes: Vec<u8> = raw.chars().map(|c| c as u32 as u8).collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        false => raw,
    };
    let mut screen = vt100::Parser::new(50, cols, 0);
    screen.process(raw.replace('\n', "\r\n").as_bytes());
    (screen.screen().contents(), raw)
}

/// A cluster whose build writes a few lines to stdout and stderr.
fn chatty() -> deployd::config::ClusterConfig {
    sh_cluster(
        Some(
            "echo compiling; echo 'warning: unused import' >&2; printf 'a \\033[31mred\\033]0;title\\007 line\\n'",
        ),
        None,
        Some("echo activated"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_ids_from_history_are_taken_by_watch_logs_and_cancel() {
    let (app, gate) = gated_app(|c| {
        c.clusters.insert("chatty".into(), chatty());
    })
    .await;
    let done = app.deploy("web", "chatty", "one").await;
    app.finished(done.id).await;
    let short = short_id(&done.id);

    let history = run(&app.url, &["history", "--app", "web"]).await;
    assert_eq!(history.code, Some(0), "{}", history.stderr);
    let mut lines = history.stdout.lines();
    assert!(
        lines.next().unwrap().starts_with("ID "),
        "{}",
        history.stdout
    );
    assert!(
        lines.next().unwrap().starts_with(&short),
        "{}",
        history.stdout
    );

    let watched = run(&app.url, &["watch", &short]).await;
    assert_eq!(watched.code, Some(0), "{}", watched.stderr);
    assert_eq!(watched.stderr, "", "nothing lost, nothing to say");
    assert!(
        watched.stdout.contains("web v1 is active on chatty"),
        "{}",
        watched.stdout
    );
    // Any unique prefix of six digits or more; the full id still works.
    let logs = run(&app.url, &["logs", &short[..6]]).await;
    assert_eq!(logs.code, Some(0), "{}", logs.stderr);
    assert!(logs.stdout.contains("\n    compiling\n"), "{}", logs.stdout);
    assert!(
        logs.stdout.contains("\n  ! warning: unused import\n"),
        "{}",
        logs.stdout
    );
    let full = run(&app.url, &["logs", &done.id.to_string()]).await;
    assert_eq!(full.stdout, logs.stdout);
    let events = format!("{}/v1/deployments/{short}/events?follow=maybe", app.url);
    let refused = reqwest::get(events).await.unwrap();
    assert_eq!(refused.status(), 400);

    // A running deployment: logs print what there is and return; watch
    // and cancel find it by its target.
    let running = app.deploy("web", "gated", "two").await;
    wait_for_log(&app.client, running.id, "waiting").await;
    let target = ["--app", "web", "--cluster", "gated"];
    let so_far = run(&app.url, &[&["logs"], &target[..]].concat()).await;
    assert_eq!(so_far.code, Some(0), "{}", so_far.stderr);
    assert!(so_far.stdout.contains("    waiting"), "{}", so_far.stdout);
    // The server given as a flag is in the hint: the hint must reach it.
    let flagged = ["-s", app.url.as_str(), "watch", "--timeout", "1s"];
    let waited = run("http://127.0.0.1:9", &[&flagged[..], &target[..]].concat()).await;
    assert_eq!(waited.code, Some(124), "{}{}", waited.stdout, waited.stderr);
    let running_short = short_id(&running.id);
    assert!(
        waited
            .stderr
            .contains("gave up waiting after 1s (--timeout)")
            && waited
                .stderr
                .contains(&format!("deployctl -s {} cancel {running_short}", app.url)),
        "{}",
        waited.stderr
    );
    let json = ["-o", "json", "watch", "--timeout", "1s"];
    let waited = run(&app.url, &[&json[..], &target[..]].concat()).await;
    assert_eq!(waited.code, Some(124), "{}", waited.stderr);
    let last: serde_json::Value =
        serde_json::from_str(waited.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        (&last["kind"], &last["data"]["state"]),
        (&"deployment".into(), &"building".into()),
        "the Deployment as it stands ends the output"
    );
    let zero = run(
        &app.url,
        &[&["watch", "--timeout", "0s"], &target[..]].concat(),
    )
    .await;
    assert_eq!(zero.code, Some(2), "{}", zero.stderr);
    assert!(
        zero.stderr.contains("must be more than 0"),
        "{}",
        zero.stderr
    );
    let cancel = run(
        &app.url,
        &[&["cancel", "--reason", "wrong branch"], &target[..]].concat(),
    )
    .await;
    assert_eq!(cancel.code, Some(0), "{}", cancel.stderr);
    assert!(
        cancel
            .stdout
            .contains(&format!("deployment {running_short} ")),
        "{}",
        cancel.stdout
    );
    assert_eq!(app.finished(running.id).await.state, State::Cancelled);
    let status = run(&app.url, &[&["status"], &target[..]].concat()).await;
    assert!(
        status
            .stdout
            .contains(&format!("  last     {running_short} cancelled "))
            && status.stdout.contains(": wrong branch")
            && !status.stdout.contains("cancelled: wrong branch"),
        "{}",
        status.stdout
    );
    let nothing = run(&app.url, &[&["cancel"], &target[..]].concat()).await;
    let as_json = run(&app.url, &[&["-o", "json", "cancel"], &target[..]].concat()).await;
    assert!(
        as_json.stdout.contains(r#""code":"not_found""#),
        "{}",
        as_json.stdout
    );
    assert_eq!(nothing.code, Some(2), "{}", nothing.stderr);
    assert!(
        nothing
            .stderr
            .contains("nothing is running on web/gated; the last one was")
            && nothing.stderr.contains(&running_short),
        "{}",
        nothing.stderr
    );
    let watched = run(&app.url, &["watch", &running_short]).await;
    assert_eq!(watched.code, Some(1), "{}", watched.stderr);
    assert!(
        watched.stdout.contains("✗ cancelled in building after")
            && watched.stdout.contains(": wrong branch")
            && !watched.stdout.contains("cancelled: wrong branch")
            && !watched.stdout.contains("last lines on stderr"),
        "{}",
        watched.stdout
    );

    // Bad ids are refused before anything is sent, and change nothing.
    let before = app
        .client
        .history("web", &Default::default())
        .await
        .unwrap();
    for bad in ["12345", "xyz12345", "v1", "-", "0193a1b2-c3d4"] {
        let refused = run(&app.url, &["cancel", bad]).await;
        assert_eq!(refused.code, Some(2), "{bad}: {}", refused.stderr);
        assert!(
            refused.stderr.contains("is not a deployment id"),
            "{bad}: {}",
            refused.stderr
        );
    }
    let unknown = run(&app.url, &["cancel", "fffffffffff"]).await;
    assert_eq!(unknown.code, Some(2), "{}", unknown.stderr);
    assert!(unknown.stderr.contains("(not_found)"), "{}", unknown.stderr);
    let after = app
        .client
        .history("web", &Default::default())
        .await
        .unwrap();
    assert_eq!(before.deployments, after.deployments);
    gate.open();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_shows_in_one_summary_line_in_history_and_in_status() {
    // The cause first; once the server has it, enough output to scroll it
    // away (the gate keeps the two pipes' lines in that order).
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("open");
    let build = format!(
        "echo compiling; echo 'error: missing semicolon' >&2; \
         echo '  --> src/main.rs:3' >&2; while [ ! -e '{}' ]; do sleep 0.05; done; \
         for i in 1 2 3 4 5 6 7 8; do echo step $i; done; exit 3",
        gate_file.display()
    );
    let app = spawn_app(Backend::Sqlite, |c| {
        c.clusters
            .insert("broken".into(), sh_cluster(Some(&build), None, None));
    })
    .await;
    let dir = source_dir(&[("index.html", "hello")]);
    let args = ["deploy", "--app", "web", "--cluster", "broken", path(&dir)];
    let mut child = deployctl(&app.url, &args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    tokio::time::timeout(WAIT, stdout.read_line(&mut first))
        .await
        .expect("the first line in time")
        .unwrap();
    let id = deployment_id(&app.client, &first).await;
    wait_for_log(&app.client, id, "  --> src/main.rs:3").await;
    std::fs::write(&gate_file, "").unwrap();
    let mut rest = String::new();
    tokio::time::timeout(WAIT, stdout.read_to_string(&mut rest))
        .await
        .expect("deployctl ends in time")
        .unwrap();
    let status = child.wait().await.unwrap();
    let failed_stdout = first + &rest;
    assert_eq!(status.code(), Some(1), "{failed_stdout}");
    let failed = Run {
        code: status.code(),
        stdout: failed_stdout,
        stderr: String::new(),
    };
    let lines: Vec<&str> = failed.stdout.lines().collect();
    let summary = lines
        .iter()
        .position(|line| line.starts_with("✗ failed in building after "))
        .unwrap_or_else(|| panic!("no summary in\n{}", failed.stdout));
    assert!(lines[summary].contains("exit code 3"), "{}", lines[summary]);
    assert!(
        !lines[summary].contains("\\u{a}"),
        "one line: {}",
        lines[summary]
    );
    // The cause, scrolled away by the output, comes back under it.
    assert_eq!(
        lines[summary + 1..],
        [
            "  last lines on stderr:",
            "  ! error: missing semicolon",
            "  !   --> src/main.rs:3"
        ]
    );
    // stdout and stderr are two pipes: their lines may interleave either way.
    assert!(
        failed.stdout.contains("\n    step 8\n"),
        "{}",
        failed.stdout
    );

    let record = app
        .client
        .history("web", &Default::default())
        .await
        .unwrap();
    let error = record.deployments[0].error.clone().expect("an error");
    let first_words: String = error.chars().take(20).collect();
    let history = run(&app.url, &["history", "--app", "web"]).await;
    let header = history.stdout.lines().next().unwrap();
    assert!(header.ends_with("ERROR"), "{header}");
    assert!(history.stdout.contains(&first_words), "{}", history.stdout);

    let status = run(&app.url, &["status", "--app", "web", "--cluster", "broken"]).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let short = short_id(&record.deployments[0].id);
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with(&format!("  last     {short} failed"))
                && l.contains(&first_words)),
        "{}",
        status.stdout
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_errors_are_objects_and_status_of_an_unknown_app_is_one() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let ghost = run(&app.url, &["-o", "json", "status", "--app", "ghost"]).await;
    assert_eq!(ghost.code, Some(0), "{}", ghost.stderr);
    let ghost: serde_json::Value = serde_json::from_str(&ghost.stdout).unwrap();
    assert_eq!(ghost, serde_json::json!({"app": "ghost", "targets": []}));

    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    for (url, args, exit, code) in [
        (
            &app.url,
            vec!["status", "--app", "web", "--cluster", "nope"],
            2,
            "not_found",
        ),
        (&app.url, vec!["watch", "nope"], 2, "usage"),
        (&closed, vec!["status", "--app", "web"], 3, "unreachable"),
        (
            &app.url,
            vec!["history", "--app", "web", "--limit", "0"],
            2,
            "usage",
        ),
        (
            &app.url,
            vec!["--request-timeout", "soon", "clusters"],
            2,
            "usage",
        ),
    ] {
        let failed = run(url, &[&["--output", "json"], &args[..]].concat()).await;
        assert_eq!(failed.code, Some(exit), "{args:?}: {}", failed.stderr);
        let error: serde_json::Value = serde_json::from_str(&failed.stdout)
            .unwrap_or_else(|e| panic!("{args:?}: {e}: {:?}", failed.stdout));
        assert_eq!(error["error"]["code"], code, "{error}");
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    app.stop().await;
}

/// A server on port 0 that answers every connection with `answer` (None:
/// accepts and never answers).
async fn fake_server(answer: Option<&'static str>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut socket, _)) = listener.accept().await {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
            match answer {
                Some(answer) => {
                    let _ = socket.write_all(answer.as_bytes()).await;
                }
                None => held.push(socket),
            }
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_to_do_and_waits_have_an_end() {
    let app = spawn_app(Backend::Sqlite, crate::security::with_tokens).await;
    // host:port is http://host:port.
    let bare = app.url.trim_start_matches("http://");
    let status = ["status", "--app", "web", "--cluster", "local"];
    let token = ["--token", crate::security::READER];
    let read = run(bare, &[&token[..], &status[..]].concat()).await;
    assert_eq!(read.code, Some(0), "{}", read.stderr);

    let anonymous = run(bare, &status).await;
    assert_eq!(anonymous.code, Some(2), "{}", anonymous.stderr);
    for advice in ["--token", "DEPLOYD_TOKEN", "deployctl login"] {
        assert!(anonymous.stderr.contains(advice), "{}", anonymous.stderr);
    }

    // Another server's web page is never printed.
    let page = "HTTP/1.1 404 Not Found\r\ncontent-type: text/html\r\ncontent-length: 60\r\n\
                connection: close\r\n\r\n<html><body><h1>404 Not Found</h1><hr>nginx</body></html>";
    let nginx = fake_server(Some(page)).await;
    let lost = run(&nginx, &status).await;
    assert_eq!(lost.code, Some(3), "not deployd answering: {}", lost.stderr);
    assert!(
        lost.stderr.contains("not deployd's API") && !lost.stderr.contains('<'),
        "{}",
        lost.stderr
    );

    // Another API's JSON 404 is not deployd's either; login checks it is
    // deployd before it saves anything.
    let other = "HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\n\
                 content-length: 22\r\nconnection: close\r\n\r\n{\"detail\":\"Not Found\"}";
    let other = fake_server(Some(other)).await;
    let lost = run(&other, &status).await;
    assert_eq!(lost.code, Some(3), "not deployd answering: {}", lost.stderr);
    assert!(!lost.stderr.contains("detail"), "{}", lost.stderr);
    let login = run(&other, &["login", "--token", "x"]).await;
    assert_eq!(login.code, Some(3), "{}", login.stderr);
    assert!(login.stderr.contains("is not deployd"), "{}", login.stderr);

    // A server that takes the request and never answers.
    let silent = fake_server(None).await;
    let started = std::time::Instant::now();
    let waited = run(
        &silent,
        &[&["--request-timeout", "1s"], &status[..]].concat(),
    )
    .await;
    assert_eq!(waited.code, Some(3), "{}", waited.stderr);
    assert!(
        waited
            .stderr
            .contains("no answer within the request timeout (deployctl: --request-timeout)"),
        "{}",
        waited.stderr
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));

    // Details in words, never raw JSON.
    let admin = ["--token", crate::security::ADMIN];
    let pin = run(
        &app.url,
        &[&admin[..], &["versions", "pin", "--app", "web", "latest"]].concat(),
    )
    .await;
    assert_eq!(pin.code, Some(2), "{}", pin.stderr);
    assert!(!pin.stderr.contains('{'), "{}", pin.stderr);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_cluster_gets_one_answer_from_every_command_before_any_upload() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let dir = source_dir(&[("index.html", "hello")]);
    let mut answers = Vec::new();
    for args in [
        vec!["deploy", "--app", "web", "--cluster", "nope", path(&dir)],
        vec!["rollback", "--app", "web", "--cluster", "nope"],
        vec!["status", "--app", "web", "--cluster", "nope"],
        vec!["history", "--app", "web", "--cluster", "nope"],
        vec!["watch", "--app", "web", "--cluster", "nope"],
    ] {
        let refused = run(&app.url, &args).await;
        assert_eq!(refused.code, Some(2), "{args:?}: {}", refused.stderr);
        assert!(!refused.stderr.contains("packed"), "{}", refused.stderr);
        answers.push(refused.stderr.lines().next().unwrap_or("").to_string());
    }
    assert!(answers[0].contains("(not_found)"), "{answers:?}");
    assert!(answers.iter().all(|a| a == &answers[0]), "{answers:#?}");
    let sources = std::fs::read_dir(app.data_dir.join("sources"))
        .map(|dir| dir.count())
        .unwrap_or(0);
    assert_eq!(sources, 0, "nothing was uploaded");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_gets_colour_human_times_and_tables_that_fit_a_pipe_gets_neither() {
    let app = spawn_app(Backend::Sqlite, |c| {
        let build = "echo 'error: missing semicolon' >&2; exit 3";
        c.clusters
            .insert("broken".into(), sh_cluster(Some(build), None, None));
    })
    .await;
    let dir = source_dir(&[("index.html", "hello")]);
    let broken = ["deploy", "--app", "web", "--cluster", "broken", path(&dir)];
    assert_eq!(run(&app.url, &broken).await.code, Some(1));
    let failed = app
        .client
        .history("web", &Default::default())
        .await
        .unwrap();
    let error = failed.deployments[0].error.clone().expect("an error");
    let note = "a long note about this change ".repeat(6);
    let deploy = [
        "deploy",
        "--app",
        "web",
        "--cluster",
        "local",
        "-m",
        &note,
        path(&dir),
    ];
    assert_eq!(run(&app.url, &deploy).await.code, Some(0));
    let history = ["history", "--app", "web"];

    let (screen, raw) = on_terminal(&app.url, &history, &[], 80, None).await;
    assert!(raw.contains("\x1b["), "colour on a terminal: {raw:?}");
    assert!(screen.contains("just now"), "{screen}");
    assert!(screen.contains('…'), "free text is cut to fit: {screen}");
    for line in screen.lines() {
        assert!(line.chars().count() <= 80, "{line:?} is wider than 80");
    }
    // Spare columns go before the error is cut to unreadable.
    let readable: String = error.chars().take(24).collect();
    assert!(screen.contains(&readable), "{readable:?} in\n{screen}");

    let (screen, raw) = on_terminal(&app.url, &history, &[("NO_COLOR", "1")], 80, None).await;
    assert!(
        !raw.contains("\x1b[3") && !raw.contains("\x1b[1m"),
        "{raw:?}"
    );
    assert!(screen.contains("just now"), "{screen}");

    let piped = run(&app.url, &history).await;
    assert!(!piped.stdout.contains('\x1b'), "{}", piped.stdout);
    assert!(
        piped.stdout.contains(note.trim()),
        "whole in a pipe: {}",
        piped.stdout
    );
    assert!(!piped.stdout.contains("ago") && !piped.stdout.contains("just now"));
    let exact = chrono::Utc::now().format("%Y-%m-%dT").to_string();
    assert!(
        piped.stdout.contains(&exact),
        "exact times in a pipe: {}",
        piped.stdout
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_on_a_terminal_leaves_no_spinner_behind() {
    let (app, gate) = gated_app(|_| {}).await;
    let dir = source_dir(&[("index.html", "hello")]);
    let deploy = ["deploy", "--app", "web", "--cluster", "gated", path(&dir)];
    let (screen, raw) = on_terminal(&app.url, &deploy, &[], 100, Some("    waiting")).await;
    let spinner = ['⠁', '⠂', '⠄', '⡀', '⢀', '⠠', '⠐', '⠈'];
    assert!(
        !screen.contains(spinner),
        "a spinner frame stayed:\n{screen}\n{raw:?}"
    );
    assert!(
        !screen.contains("building 0s") && !screen.contains("^C"),
        "{screen}"
    );
    assert!(screen.contains("detached; deployment"), "{screen}");
    gate.open();
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn superseding_replaying_and_dirty_trees_are_told() {
    let (app, gate) = gated_app(|_| {}).await;
    let holder = app.deploy("web", "gated", "one").await;
    wait_for_log(&app.client, holder.id, "waiting").await;
    let dir = source_dir(&[("index.html", "hello")]);
    let args = [
        "deploy",
        "--app",
        "web",
        "--cluster",
        "gated",
        "--on-conflict",
        "supersede",
        "--idempotency-key",
        "ci-run-7",
        "--detach",
        path(&dir),
    ];
    let superseding = run(&app.url, &args).await;
    assert_eq!(superseding.code, Some(0), "{}", superseding.stderr);
    assert!(
        superseding
            .stderr
            .contains(&format!("superseding deployment {}", short_id(&holder.id))),
        "{}",
        superseding.stderr
    );
    gate.open();
    let replay: Vec<&str> = args.iter().copied().filter(|a| *a != "--detach").collect();
    let replayed = run(&app.url, &replay).await;
    assert_eq!(replayed.code, Some(0), "{}", replayed.stderr);
    assert!(
        replayed
            .stderr
            .contains("the idempotency key was used before"),
        "{}",
        replayed.stderr
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clusters_and_apps_are_listed_without_secrets() {
    let app = spawn_app(Backend::Sqlite, |c| {
        let mut cluster = chatty();
        cluster.env.insert(
            "REGISTRY_PASSWORD".into(),
            deployd::config::EnvValue::secret("hunter2-secret"),
        );
        c.clusters.insert("chatty".into(), cluster);
    })
    .await;
    let done = app.deploy("web", "chatty", "one").await;
    app.finished(done.id).await;

    let clusters = run(&app.url, &["clusters"]).await;
    assert_eq!(clusters.code, Some(0), "{}", clusters.stderr);
    assert!(
        clusters
            .stdout
            .contains("chatty\n  build    /bin/sh -c echo compiling;"),
        "{}",
        clusters.stdout
    );
    assert!(clusters.stdout.contains("\nlocal"), "{}", clusters.stdout);
    let json = run(&app.url, &["-o", "json", "clusters"]).await;
    assert!(!json.stdout.contains("hunter2"), "{}", json.stdout);
    assert!(json.stdout.contains("REGISTRY_PASSWORD"), "{}", json.stdout);

    let apps = run(&app.url, &["apps"]).await;
    assert_eq!(apps.code, Some(0), "{}", apps.stderr);
    let rows: Vec<Vec<&str>> = apps
        .stdout
        .lines()
        .map(|line| line.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["APP", "CLUSTER", "ACTIVE", "RUNNING"],
            vec!["web", "chatty", "v1"]
        ]
    );
    app.stop().await;
}
