//! Deploying from a directory, and the exit codes and Ctrl-C behaviour
//! scripts and people rely on.

use super::*;

/// Run git in `dir` as a user with no git config of their own would.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Ada", "-c", "user.email=ada@example.com"])
        .args(["-c", "commit.gpgsign=false"])
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "git {args:?}: {stdout}{stderr}");
    stdout.trim().to_string()
}

/// The packed source's digest prefix deployctl reports on stderr.
fn packed_sha(stderr: &str) -> &str {
    stderr
        .split("sha256 ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest in {stderr:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_of_a_git_repo_packs_uploads_once_and_renders_phases() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let dir = source_dir(&[
        ("index.html", "hello"),
        (".gitignore", "*.log\n"),
        ("debug.log", "not for the server"),
    ]);
    git(dir.path(), &["init", "-q", "-b", "main"]);
    git(dir.path(), &["add", "-A"]);
    git(dir.path(), &["commit", "-q", "-m", "first page"]);
    let head = git(dir.path(), &["rev-parse", "HEAD"]);
    let deploy = ["deploy", "--app", "web", "--cluster", "local", path(&dir)];

    let first = run(&app.url, &deploy).await;
    assert_eq!(first.code, Some(0), "{}{}", first.stdout, first.stderr);
    assert!(first.stderr.contains("uploaded source"), "{}", first.stderr);
    let mut rest = first.stdout.as_str();
    for line in [
        "✓ building",
        "✓ pushing",
        "✓ activating",
        "✓ succeeded after",
        "web v1 is active on local",
    ] {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("{line:?} (in this order) in:\n{}", first.stdout));
        rest = &rest[at + line.len()..];
    }
    let deployment = app
        .client
        .get(deployment_id(&app.client, &first.stdout).await)
        .await
        .unwrap();
    let git_info = deployment.git.expect("the deployment carries git facts");
    assert_eq!(git_info.sha.as_deref(), Some(head.as_str()));
    assert_eq!(git_info.branch.as_deref(), Some("main"));
    assert_eq!(git_info.message.as_deref(), Some("first page"));
    assert_eq!(git_info.author.as_deref(), Some("Ada <ada@example.com>"));
    assert!(!git_info.dirty, "ignored files do not make the tree dirty");
    let current = app.data_dir.join("releases/web/local/current");
    assert_eq!(
        std::fs::read_to_string(current.join("index.html")).unwrap(),
        "hello"
    );
    assert!(
        !current.join("debug.log").exists(),
        "gitignored files stay home"
    );
    assert!(!current.join(".git").exists(), ".git stays home");

    // The same tree packs to the same digest, which the server has: nothing
    // is uploaded again.
    let again = run(&app.url, &deploy).await;
    assert_eq!(again.code, Some(0), "{}{}", again.stdout, again.stderr);
    assert!(
        again.stderr.contains("source already on server"),
        "{}",
        again.stderr
    );
    assert_eq!(packed_sha(&again.stderr), packed_sha(&first.stderr));
    let second = app
        .client
        .get(deployment_id(&app.client, &again.stdout).await)
        .await
        .unwrap();
    assert_eq!(second.source, deployment.source);
    assert!(
        again.stdout.contains("succeeded after") && again.stdout.contains(": web v2"),
        "{}",
        again.stdout
    );

    // An uncommitted change: a new digest, uploaded, and the tree is dirty.
    std::fs::write(dir.path().join("index.html"), "hello again").unwrap();
    let changed = run(&app.url, &deploy).await;
    assert_eq!(
        changed.code,
        Some(0),
        "{}{}",
        changed.stdout,
        changed.stderr
    );
    assert!(
        changed.stderr.contains("uploaded source"),
        "{}",
        changed.stderr
    );
    assert_ne!(packed_sha(&changed.stderr), packed_sha(&first.stderr));
    let third = app
        .client
        .get(deployment_id(&app.client, &changed.stdout).await)
        .await
        .unwrap();
    let git_info = third.git.expect("git facts");
    assert_eq!(git_info.sha.as_deref(), Some(head.as_str()));
    assert!(git_info.dirty, "an uncommitted change makes the tree dirty");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_tell_failure_refusal_and_absence_apart() {
    let (app, gate) = gated_app(|c| {
        let build = "echo compiling; echo 'error: missing semicolon' >&2; exit 3";
        c.clusters
            .insert("broken".into(), sh_cluster(Some(build), None, None));
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
        failed.stdout.contains("  ! error: missing semicolon"),
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
        refused
            .stderr
            .contains(&deployd::model::short_id(&holder.id)),
        "{}",
        refused.stderr
    );

    let unknown = run(&app.url, &["watch", &Uuid::now_v7().to_string()]).await;
    assert_eq!(unknown.code, Some(2), "{}", unknown.stderr);
    assert!(unknown.stderr.contains("(not_found)"), "{}", unknown.stderr);

    gate.open();
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
    let (app, _gate) = gated_app(|_| {}).await;
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
    let (app, gate) = gated_app(|_| {}).await;
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
    let id = deployment_id(&app.client, &first).await;
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
    let short = deployd::model::short_id(&id);
    assert!(
        stderr.contains(&format!("deployctl watch {short}")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("deployctl cancel {short}")),
        "{stderr}"
    );

    assert_eq!(app.client.get(id).await.unwrap().state, State::Building);
    gate.open();
    assert_eq!(app.finished(id).await.state, State::Succeeded);
    app.stop().await;
}
