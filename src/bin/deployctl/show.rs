//! Showing what the server answered: targets and history as text tables,
//! or the API's own objects as JSON lines; and the small formatting helpers
//! (durations, ages, tables, error details) the CLI shares.

use crate::{Failure, Output, SUCCEEDED};
use chrono::{DateTime, TimeDelta, Utc};
use deployd::client::{Client, HistoryParams};
use deployd::model::{Deployment, GitInfo, TargetView};
use serde::Serialize;

/// Clusters looked for in this many recent deployments when `status` is
/// given no `--cluster`.
const RECENT: u32 = 100;
const MESSAGE_WIDTH: usize = 60;

pub async fn status(
    client: &Client,
    output: Output,
    app: &str,
    cluster: Option<String>,
) -> Result<u8, Failure> {
    let clusters = match cluster {
        Some(cluster) => vec![cluster],
        None => {
            let params = HistoryParams {
                limit: Some(RECENT),
                ..HistoryParams::default()
            };
            let mut clusters: Vec<String> = Vec::new();
            for deployment in client.history(app, &params).await?.deployments {
                if !clusters.contains(&deployment.cluster) {
                    clusters.push(deployment.cluster);
                }
            }
            if clusters.is_empty() && output == Output::Text {
                println!("{app} has no deployments yet");
            }
            clusters
        }
    };
    for (index, cluster) in clusters.iter().enumerate() {
        let target = client.target(app, cluster).await?;
        match output {
            Output::Json => json_line(&target),
            Output::Text => {
                if index > 0 {
                    println!();
                }
                print_target(&target);
            }
        }
    }
    Ok(SUCCEEDED)
}

fn print_target(target: &TargetView) {
    println!("{} on {}", target.app, target.cluster);
    match &target.active {
        Some(active) => println!(
            "  active   {} since {} (deployment {})",
            active.version,
            when(active.since),
            active.deployment_id
        ),
        None => println!("  active   none"),
    }
    match &target.rollback_to {
        Some(version) => println!("  rollback {version} (where a rollback without --to goes)"),
        None => println!("  rollback none"),
    }
    match &target.running {
        Some(running) => println!(
            "  running  {} {} {}, by {}, started {}",
            running.id,
            running.kind,
            running.state,
            running.deployed_by,
            running.started_at.map(ago).unwrap_or_default()
        ),
        None => println!("  running  none"),
    }
    if target.queued.is_empty() {
        println!("  queued   none");
    }
    for queued in &target.queued {
        println!(
            "  queued   {} {}, by {}, position {}",
            queued.id,
            queued.kind,
            queued.deployed_by,
            queued.queue_position.unwrap_or_default()
        );
    }
}

pub async fn history(
    client: &Client,
    output: Output,
    app: &str,
    mut params: HistoryParams,
    all: bool,
) -> Result<u8, Failure> {
    let with_cluster = params.cluster.is_none();
    let mut deployments = Vec::new();
    let more = loop {
        let page = client.history(app, &params).await?;
        deployments.extend(page.deployments);
        match page.next_cursor {
            Some(cursor) if all => params.cursor = Some(cursor),
            next => break next,
        }
    };
    if output == Output::Json {
        json_line(&serde_json::json!({"deployments": deployments, "next_cursor": more}));
        return Ok(SUCCEEDED);
    }
    let mut header = vec!["STATE"];
    if with_cluster {
        header.push("CLUSTER");
    }
    header.extend([
        "VERSION", "ACTIVE", "WHO", "WHEN", "GIT-SHA", "BRANCH", "MESSAGE",
    ]);
    let rows = deployments.iter().map(|d| {
        let mut row = vec![d.state.to_string()];
        if with_cluster {
            row.push(d.cluster.clone());
        }
        let git = d.git.as_ref();
        row.extend([
            d.version.clone().unwrap_or_else(|| "-".into()),
            if d.active { "*".into() } else { String::new() },
            d.deployed_by.clone(),
            ago(d.created_at),
            short_sha(git),
            git.and_then(|g| g.branch.clone()).unwrap_or_default(),
            message(d),
        ]);
        row
    });
    table(&header, rows.collect());
    if more.is_some() {
        eprintln!("(older deployments: --all, or a larger --limit)");
    }
    Ok(SUCCEEDED)
}

/// `--detach`: the id alone in text, so `ID=$(deployctl deploy --detach)`
/// works; the Deployment in JSON.
pub fn detached(output: Output, deployment: &Deployment) {
    match output {
        Output::Json => json_line(deployment),
        Output::Text => println!("{}", deployment.id),
    }
}

/// One deployment after an action on it (cancel).
pub fn deployment_line(output: Output, deployment: &Deployment) {
    match output {
        Output::Json => json_line(deployment),
        Output::Text => println!(
            "deployment {} ({} {} on {}) is {}",
            deployment.id, deployment.kind, deployment.app, deployment.cluster, deployment.state
        ),
    }
}

pub fn json_line(value: &impl Serialize) {
    match serde_json::to_string(value) {
        Ok(line) => println!("{line}"),
        Err(error) => eprintln!("error: cannot print as JSON: {error}"),
    }
}

/// Lines explaining an API error's details, where we know what they mean.
pub fn error_details(code: &str, details: &serde_json::Value) -> Vec<String> {
    let text = |key: &str| details.get(key).and_then(|v| v.as_str()).unwrap_or("?");
    match code {
        "deploy_in_progress" => vec![
            format!(
                "held by deployment {} ({}), by {}, started {}",
                text("deployment_id"),
                text("state"),
                text("deployed_by"),
                text("started_at"),
            ),
            "--on-conflict queue waits for it; --on-conflict supersede cancels it".into(),
        ],
        "invalid_transition" => vec![format!("from {} to {}", text("from"), text("to"))],
        _ => match details.as_object() {
            Some(fields) if !fields.is_empty() => vec![format!("details: {details}")],
            _ => Vec::new(),
        },
    }
}

/// `12.3s`, `4m05s`, `2h07m`.
pub fn duration(delta: TimeDelta) -> String {
    let millis = delta.num_milliseconds().max(0);
    let seconds = millis / 1000;
    match seconds {
        0..60 => format!("{:.1}s", millis as f64 / 1000.0),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// How long ago, compactly: `5s ago`, `3m ago`, `2h ago`, `4d ago`.
pub fn ago(at: DateTime<Utc>) -> String {
    let seconds = (Utc::now() - at).num_seconds();
    match seconds {
        ..5 => "just now".into(),
        5..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86400),
    }
}

fn when(at: DateTime<Utc>) -> String {
    format!("{} ({})", at.format("%Y-%m-%d %H:%M:%S UTC"), ago(at))
}

pub fn short_sha(git: Option<&GitInfo>) -> String {
    let Some(sha) = git.and_then(|g| g.sha.as_deref()) else {
        return String::new();
    };
    let dirty = if git.is_some_and(|g| g.dirty) {
        "+"
    } else {
        ""
    };
    format!("{}{dirty}", &sha[..sha.len().min(10)])
}

/// The deployment's note, else its commit subject, cut to fit a line.
fn message(deployment: &Deployment) -> String {
    let git = deployment.git.as_ref().and_then(|g| g.message.as_deref());
    let text = match (deployment.message.as_str(), &deployment.rollback_to) {
        ("", Some(version)) => format!("rollback to {version}"),
        ("", None) => git.unwrap_or("").to_string(),
        (note, _) => note.to_string(),
    };
    let first = text.lines().next().unwrap_or("");
    if first.chars().count() <= MESSAGE_WIDTH {
        return first.to_string();
    }
    let cut: String = first.chars().take(MESSAGE_WIDTH - 1).collect();
    format!("{cut}…")
}

/// The instances sharing the server's store: one row each, this one marked.
pub async fn instances(client: &Client, output: Output) -> Result<u8, Failure> {
    let answer = client.instances().await?;
    if output == Output::Json {
        json_line(&answer);
        return Ok(SUCCEEDED);
    }
    let this = answer["this"].as_str().unwrap_or_default();
    let listed = answer["instances"].as_array().cloned().unwrap_or_default();
    let rows = listed
        .iter()
        .map(|i| {
            let id = i["id"].as_str().unwrap_or("?");
            let heartbeat = i["heartbeat_at"].as_str().and_then(|t| t.parse().ok());
            let targets: Vec<String> = (i["targets"].as_array().into_iter().flatten())
                .map(|t| {
                    format!(
                        "{}/{}",
                        t["app"].as_str().unwrap_or("?"),
                        t["cluster"].as_str().unwrap_or("?")
                    )
                })
                .collect();
            vec![
                match id == this {
                    true => format!("{id} (this)"),
                    false => id.to_string(),
                },
                i["address"].as_str().unwrap_or("?").to_string(),
                heartbeat.map_or("?".into(), ago),
                match targets.is_empty() {
                    true => "-".into(),
                    false => targets.join(" "),
                },
            ]
        })
        .collect();
    table(&["INSTANCE", "ADDRESS", "HEARTBEAT", "TARGETS"], rows);
    Ok(SUCCEEDED)
}

/// Columns padded to their widest cell; the last one is not padded.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(&rows) {
        let mut line = String::new();
        for (index, (cell, width)) in row.iter().zip(&widths).enumerate() {
            if index + 1 == row.len() {
                line.push_str(cell);
            } else {
                line.push_str(&format!("{cell:<width$}  "));
            }
        }
        println!("{}", line.trim_end());
    }
}
