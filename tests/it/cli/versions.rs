//! What is kept: `versions` (pinned, and where each version is or was
//! live), `versions pin`/`unpin`, the rollback target in `status`, and
//! `compact [--dry-run]`.

use super::*;
use crate::support::on_both_stores;
use deployd::model::RollbackRequest;
use std::time::Duration;

on_both_stores!(versions_show_pins_and_where_each_was_live);

/// v1 and v2 deployed on local, then v1 rolled back to on staging.
async fn two_versions(backend: Backend) -> TestApp {
    let app = spawn_app(backend, |c| {
        let staging = sh_cluster(None, None, Some("echo activated"));
        c.clusters.insert("staging".into(), staging);
    })
    .await;
    for tag in ["one", "two"] {
        let d = app.deploy("web", "local", tag).await;
        assert_eq!(app.finished(d.id).await.state, State::Succeeded);
    }
    let back = RollbackRequest {
        version: Some("v1".into()),
        ..RollbackRequest::default()
    };
    let back = app.client.rollback("web", "staging", &back).await.unwrap();
    assert_eq!(app.finished(back.id).await.state, State::Succeeded);
    app
}

/// `versions --app web` as JSON: what a refused command must leave as it was.
async fn listed(url: &str) -> serde_json::Value {
    let json = run(url, &["--output", "json", "versions", "--app", "web"]).await;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    serde_json::from_str(json.stdout.trim()).expect("one JSON object")
}

/// Whether the versions table's row for `version` has a `*` under PINNED.
fn pinned_in_table(table: &str, version: &str) -> bool {
    let mut lines = table.lines();
    let column = lines.next().and_then(|h| h.find("PINNED")).expect("header");
    let row = lines
        .find(|row| row.split_whitespace().next() == Some(version))
        .unwrap_or_else(|| panic!("no {version} in\n{table}"));
    row[column..].starts_with('*')
}

async fn versions_show_pins_and_where_each_was_live(backend: Backend) {
    let app = two_versions(backend).await;
    let v1_until = app
        .client
        .versions("web", None, None)
        .await
        .unwrap()
        .versions[1]
        .live[0]
        .until
        .expect("v1 was replaced on local");

    for _ in 0..2 {
        let pin = run(&app.url, &["versions", "pin", "--app", "web", "v1"]).await;
        assert_eq!(pin.code, Some(0), "{}", pin.stderr);
        assert_eq!(
            pin.stdout,
            "web v1 is pinned: compaction never deletes it\n"
        );
    }
    let table = run(&app.url, &["versions", "--app", "web"]).await;
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    let rows: Vec<&str> = table.stdout.lines().collect();
    let header: Vec<&str> = rows[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "VERSION",
            "ACTIVE-ON",
            "PINNED",
            "CREATED",
            "LIVE",
            "GIT-SHA",
            "BRANCH",
            "DEPLOYMENT",
            "ARTIFACT"
        ]
    );
    assert!(rows[1].starts_with("v2 ") && rows[1].contains(" local (active) "));
    let v1_live = format!(
        " local (until {}), staging (active) ",
        v1_until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    assert!(
        rows[2].starts_with("v1 ") && rows[2].contains(&v1_live),
        "{}",
        rows[2]
    );
    assert!(pinned_in_table(&table.stdout, "v1"), "{}", table.stdout);
    assert!(!pinned_in_table(&table.stdout, "v2"), "{}", table.stdout);
    let json = listed(&app.url).await;
    assert_eq!(json["versions"][1]["pinned"], true);
    assert_eq!(json["versions"][1]["live"][1]["cluster"], "staging");
    assert_eq!(json["versions"][1]["live"][1]["active"], true);
    assert_eq!(json["versions"][0]["pinned"], false);

    let unpin = run(&app.url, &["versions", "unpin", "--app", "web", "v1"]).await;
    assert_eq!(unpin.code, Some(0), "{}", unpin.stderr);
    assert_eq!(
        unpin.stdout,
        "web v1 is not pinned: retention decides about it\n"
    );
    let table = run(&app.url, &["versions", "--app", "web"]).await;
    assert!(!pinned_in_table(&table.stdout, "v1"), "{}", table.stdout);

    // Refusals exit 2 with the server's reason, and change nothing.
    let before = listed(&app.url).await;
    for (args, code) in [
        (
            ["versions", "pin", "--app", "web", "latest"],
            "(invalid_argument)",
        ),
        (["versions", "pin", "--app", "web", "v9"], "(not_found)"),
        (["versions", "unpin", "--app", "web", "v9"], "(not_found)"),
        (["versions", "pin", "--app", "billing", "v1"], "(not_found)"),
        (
            ["versions", "pin", "--app", "Web", "v1"],
            "(invalid_argument)",
        ),
    ] {
        let refused = run(&app.url, &args).await;
        assert_eq!(refused.code, Some(2), "{args:?}: {}", refused.stderr);
        assert!(
            refused.stderr.contains(code),
            "{args:?}: {}",
            refused.stderr
        );
        assert_eq!(refused.stdout, "", "{args:?}");
    }
    assert_eq!(listed(&app.url).await, before);

    // status names where a rollback without --to goes.
    let status = run(&app.url, &["status", "--app", "web", "--cluster", "local"]).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    assert!(
        status
            .stdout
            .contains("\n  rollback v1 (where a rollback without --to goes)\n"),
        "{}",
        status.stdout
    );
    let staging = ["status", "--app", "web", "--cluster", "staging"];
    let status = run(&app.url, &staging).await;
    assert!(
        status.stdout.contains("\n  rollback none\n"),
        "{}",
        status.stdout
    );
    let json = run(&app.url, &[&["--output", "json"], &staging[..]].concat()).await;
    let view: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert!(view["rollback_to"].is_null(), "{view}");
    app.stop().await;
}

/// Four versions on local, keeping two releases, with v1 pinned: v4
/// (active), v3 (the one before) and v1 (pinned) stay; v2 and the
/// deployment that made it go. The dry run says so and deletes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compact_dry_run_says_what_would_go_and_why_and_pins_hold() {
    let app = spawn_app(Backend::Sqlite, |c| {
        c.deploy.keep_releases = 2;
        c.deploy.keep_min_age = Duration::ZERO;
    })
    .await;
    let mut deploys = Vec::new();
    for n in 1..=4 {
        let d = app.deploy("web", "local", &format!("release {n}")).await;
        deploys.push(app.finished(d.id).await);
    }
    let pin = run(&app.url, &["versions", "pin", "--app", "web", "v1"]).await;
    assert_eq!(pin.code, Some(0), "{}", pin.stderr);
    let all = listed(&app.url).await;

    let dry = run(&app.url, &["compact", "--dry-run"]).await;
    assert_eq!(dry.code, Some(0), "{}", dry.stderr);
    let first = dry.stdout.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("compaction would delete 1 deployment, 1 version and ")
            && first.ends_with("; nothing was changed"),
        "{}",
        dry.stdout
    );
    let deployment = format!("  deployment {} web/local (succeeded, v2): ", deploys[1].id);
    assert!(dry.stdout.contains(&deployment), "{}", dry.stdout);
    let version = dry
        .stdout
        .lines()
        .find(|line| line.starts_with("  version    web v2 ("))
        .unwrap_or_else(|| panic!("no v2 in\n{}", dry.stdout));
    assert!(version.contains("was live on local"), "{version}");
    let json = run(&app.url, &["--output", "json", "compact", "--dry-run"]).await;
    let plan: serde_json::Value = serde_json::from_str(json.stdout.trim()).unwrap();
    assert_eq!(plan["dry_run"], true, "{plan}");
    assert_eq!(listed(&app.url).await, all, "a dry run changes nothing");

    let done = run(&app.url, &["compact"]).await;
    assert_eq!(done.code, Some(0), "{}", done.stderr);
    assert!(
        done.stdout
            .starts_with("compaction deleted 1 deployment, 1 version and "),
        "{}",
        done.stdout
    );
    assert!(
        done.stdout.contains("  version    web v2 ("),
        "{}",
        done.stdout
    );
    let kept: Vec<String> = listed(&app.url).await["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kept, ["v4", "v3", "v1"]);
    app.stop().await;
}
