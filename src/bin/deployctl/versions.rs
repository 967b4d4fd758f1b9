//! An app's versions and what retention does with them: the listing (where
//! each version is or was live, whether it is pinned), pin and unpin, and
//! compaction now or as a dry run.

use crate::show::{json_line, short_sha};
use crate::style::{self, Column, Paint, table};
use crate::{Failure, Output, SUCCEEDED};
use deployd::client::Client;
use deployd::model::short_id;
use deployd::model::{LiveSpan, VersionInfo};
use serde_json::Value;

/// The retention rule in a user's words, for `--help`. It restates
/// `Store::compact`'s doc; keep the two saying the same.
pub const RETENTION: &str = "\
Pinned versions are never compacted. Besides them, for each cluster deployd
keeps the active version, the one active before it (where a rollback without
--to goes), the newest deploy.keep_releases versions that were live there and
the versions queued rollbacks need; versions younger than deploy.keep_min_age
stay too. Failed, cancelled and interrupted deploys never count against
releases: they have their own limit, deploy.keep_attempts. Compaction deletes
the other versions, with their releases.

  deployctl versions --app web             where each version is or was live
  deployctl versions pin --app web v12     keep v12 for good
  deployctl versions unpin --app web v12   let retention decide about v12 again
  deployctl compact --dry-run              what compaction would delete, and why";

pub async fn list(
    client: &Client,
    output: Output,
    app: &str,
    limit: Option<u32>,
    all: bool,
) -> Result<u8, Failure> {
    let mut versions: Vec<VersionInfo> = Vec::new();
    let mut cursor: Option<String> = None;
    let more = loop {
        let page = client.versions(app, limit, cursor.as_deref()).await?;
        versions.extend(page.versions);
        match page.next_cursor {
            Some(next) if all => cursor = Some(next),
            next => break next,
        }
    };
    if output == Output::Json {
        json_line(&serde_json::json!({"versions": versions, "next_cursor": more}));
        return Ok(SUCCEEDED);
    }
    let columns = [
        Column::fixed("VERSION"),
        Column::fixed("ACTIVE-ON"),
        Column::fixed("PINNED"),
        Column::fixed("CREATED").spare(5),
        Column::flexible("LIVE"),
        Column::fixed("GIT-SHA").spare(3),
        Column::fixed("BRANCH").spare(2),
        Column::fixed("DEPLOYMENT").spare(4),
        Column::flexible("ARTIFACT").spare(1),
    ];
    let rows = versions.iter().map(|v| {
        let git = v.git.as_ref();
        let active: Vec<&str> = (v.live.iter())
            .filter(|span| span.active)
            .map(|span| span.cluster.as_str())
            .collect();
        let plain = |text: String| (text, None);
        vec![
            match active.is_empty() {
                true => plain(v.version.clone()),
                false => (v.version.clone(), Some(Paint::Good)),
            },
            match active.is_empty() {
                true => plain(String::new()),
                false => (format!("* {}", active.join(",")), Some(Paint::Good)),
            },
            plain(if v.pinned { "*".into() } else { String::new() }),
            plain(style::when(v.created_at)),
            plain(live(&v.live)),
            plain(short_sha(git)),
            plain(git.and_then(|g| g.branch.clone()).unwrap_or_default()),
            (short_id(&v.deployment_id), Some(Paint::Dim)),
            plain(v.artifact.clone()),
        ]
    });
    table(&columns, rows.collect());
    if more.is_some() {
        eprintln!("(older versions: --all, or a larger --limit)");
    }
    Ok(SUCCEEDED)
}

/// `pin` (`pinned`) or `unpin` one version, and show it as it is now.
pub async fn pin(
    client: &Client,
    output: Output,
    app: &str,
    version: &str,
    pinned: bool,
) -> Result<u8, Failure> {
    let info = if pinned {
        client.pin(app, version).await?
    } else {
        client.unpin(app, version).await?
    };
    match output {
        Output::Json => json_line(&info),
        Output::Text if info.pinned => println!(
            "{app} {} is pinned: compaction never deletes it",
            info.version
        ),
        Output::Text => println!(
            "{app} {} is not pinned: retention decides about it",
            info.version
        ),
    }
    Ok(SUCCEEDED)
}

/// Compact now, or with `dry_run` ask what would go; print each item with
/// its reason.
pub async fn compact(client: &Client, output: Output, dry_run: bool) -> Result<u8, Failure> {
    let answer = client.compact(dry_run).await?;
    if output == Output::Json {
        json_line(&answer);
        return Ok(SUCCEEDED);
    }
    let list = |key: &str| answer[key].as_array().cloned().unwrap_or_default();
    let (deployments, versions, removed) = (list("deployments"), list("versions"), list("removed"));
    if dry_run {
        println!(
            "compaction would delete {}, {} and {}; nothing was changed",
            count(deployments.len(), "deployment", "deployments"),
            count(versions.len(), "version", "versions"),
            count(removed.len(), "data-dir entry", "data-dir entries"),
        );
        for d in &deployments {
            println!(
                "  deployment {} {}/{} ({}, {}): {}",
                text(d, "id"),
                text(d, "app"),
                text(d, "cluster"),
                text(d, "state"),
                d["version"].as_str().unwrap_or("no version"),
                text(d, "why")
            );
        }
        for v in &versions {
            println!(
                "  version    {} {} ({}): {}",
                text(v, "app"),
                text(v, "version"),
                text(v, "artifact"),
                text(v, "why")
            );
        }
    } else {
        let deleted = list("versions_deleted");
        println!(
            "compaction deleted {}, {} and {}",
            count(
                answer["deployments_deleted"].as_u64().unwrap_or(0) as usize,
                "deployment",
                "deployments"
            ),
            count(deleted.len(), "version", "versions"),
            count(removed.len(), "data-dir entry", "data-dir entries"),
        );
        for v in &deleted {
            println!(
                "  version    {} {} ({}): retention no longer keeps it",
                text(v, "app"),
                text(v, "version"),
                text(v, "artifact")
            );
        }
    }
    for r in &removed {
        let bytes = indicatif::HumanBytes(r["bytes"].as_u64().unwrap_or(0));
        println!(
            "  {}    {} {} ({bytes}): {}",
            if dry_run { "remove " } else { "removed" },
            text(r, "area"),
            text(r, "path"),
            text(r, "why")
        );
    }
    Ok(SUCCEEDED)
}

/// Where a version is or was live: `prod (active), staging (until
/// 2026-11-30 12:00)`; `-` when it never was.
fn live(spans: &[LiveSpan]) -> String {
    if spans.is_empty() {
        return "-".into();
    }
    let span = |s: &LiveSpan| match (s.active, s.until) {
        (true, _) | (false, None) => format!("{} (active)", s.cluster),
        (false, Some(until)) => format!("{} (until {})", s.cluster, style::when(until)),
    };
    spans.iter().map(span).collect::<Vec<_>>().join(", ")
}

/// `1 version`, `3 versions`.
fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn text<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key].as_str().unwrap_or("?")
}
