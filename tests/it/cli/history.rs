//! What happened: history (paged), versions, status, and rollback.

use super::*;
use deployd::model::{ConflictPolicy, DeployRequest};

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
        rows[0].starts_with("ID        STATE      CLUSTER  VERSION  ACTIVE  WHO"),
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

    // No --to: back to the version active before the current one.
    let rollback = run(
        &app.url,
        &["rollback", "--app", "web", "--cluster", "local"],
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
        rollback.stdout.contains(": web v1 is active on local"),
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

    let forward = run(
        &app.url,
        &[
            "rollback",
            "--app",
            "web",
            "--cluster",
            "local",
            "--to",
            "v2",
        ],
    )
    .await;
    assert_eq!(
        forward.code,
        Some(0),
        "{}{}",
        forward.stdout,
        forward.stderr
    );
    assert!(
        forward
            .stdout
            .contains("rollback of web on local: re-activating v2"),
        "{}",
        forward.stdout
    );
    assert!(
        forward.stdout.contains(": web v2 is active on local"),
        "{}",
        forward.stdout
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_all_follows_the_pages_of_120_deployments() {
    const COUNT: usize = 120;
    let app = spawn_app(Backend::Sqlite, |c| {
        c.clusters
            .insert("bare".into(), sh_cluster(None, None, None));
    })
    .await;
    let source = app.upload(&[("index.html", "hello", 0o644)]).await;
    let request = DeployRequest {
        on_conflict: Some(ConflictPolicy::Queue),
        ..deploy_request(&source)
    };
    let mut created = Vec::new();
    for _ in 0..COUNT {
        let deployment = app.client.deploy("web", "bare", &request).await;
        created.push(deployment.expect("deploy accepted").id);
    }
    // The queue runs in order: when the last ends, all have.
    app.finished(created[COUNT - 1]).await;
    created.reverse();

    let args = ["history", "--app", "web", "--all", "--limit", "50"];
    let text = run(&app.url, &args).await;
    assert_eq!(text.code, Some(0), "{}", text.stderr);
    let rows: Vec<&str> = text.stdout.lines().collect();
    assert!(rows[0].starts_with("ID        STATE "), "{}", rows[0]);
    assert_eq!(rows.len(), 1 + COUNT, "{}", text.stdout);
    assert!(
        rows[1..]
            .iter()
            .all(|row| row.split_whitespace().nth(1) == Some("succeeded")),
        "{}",
        text.stdout
    );
    assert!(
        !text.stderr.contains("older deployments"),
        "{}",
        text.stderr
    );

    let json = run(&app.url, &[&["--output", "json"], &args[..]].concat()).await;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let page: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    let listed: Vec<Uuid> = page["deployments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().parse().unwrap())
        .collect();
    // Every one once, newest first.
    assert_eq!(listed, created);
    assert!(page["next_cursor"].is_null());

    // Without --all: one page, and a hint that there is more.
    let one = run(&app.url, &["history", "--app", "web", "--limit", "50"]).await;
    assert_eq!(one.code, Some(0), "{}", one.stderr);
    assert_eq!(one.stdout.lines().count(), 1 + 50, "{}", one.stdout);
    assert!(one.stderr.contains("older deployments"), "{}", one.stderr);
    app.stop().await;
}
