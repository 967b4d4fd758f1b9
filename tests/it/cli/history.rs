//! What happened: history (paged), versions, status, and rollback.

use super::*;

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
