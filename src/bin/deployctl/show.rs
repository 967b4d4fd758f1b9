//! Showing what the server answered: targets and history as text tables,
//! or the API's own objects as JSON; and the small formatting helpers
//! (short ids, commits, messages, error details) the CLI shares.

use crate::style::{self, Column, Paint, state_paint, table};
use crate::{Failure, Output, SUCCEEDED};
use deployd::client::{Client, HistoryParams};
use deployd::model::{Deployment, GitInfo, TargetView, short_id};
use serde::Serialize;

/// Clusters looked for in this many recent deployments when `status` is
/// given no `--cluster`.
const RECENT: u32 = 100;
/// Deployments `status` looks through for the target's last failure.
const LAST_FAILURE_WITHIN: u32 = 10;
/// How much of a message or error a table shows before cutting it.
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
            clusters
        }
    };
    let mut targets = Vec::new();
    for cluster in &clusters {
        let target = client.target(app, cluster).await?;
        let failure = last_failure(client, &target).await?;
        targets.push((target, failure));
    }
    if output == Output::Json {
        let targets: Vec<serde_json::Value> = targets
            .iter()
            .map(|(target, failure)| {
                let mut value = serde_json::to_value(target).expect("a target serializes");
                value["last_failure"] = serde_json::to_value(failure).expect("serializes");
                value
            })
            .collect();
        json_line(&serde_json::json!({"app": app, "targets": targets}));
        return Ok(SUCCEEDED);
    }
    if targets.is_empty() {
        println!("{app} has no deployments yet");
    }
    for (index, (target, failure)) in targets.iter().enumerate() {
        if index > 0 {
            println!();
        }
        print_target(target, failure.as_ref());
    }
    Ok(SUCCEEDED)
}

/// The target's newest finished deployment, when it did not succeed: what
/// someone looking at `status` after a red deploy wants to see.
async fn last_failure(client: &Client, target: &TargetView) -> Result<Option<Deployment>, Failure> {
    let params = HistoryParams {
        cluster: Some(target.cluster.clone()),
        limit: Some(LAST_FAILURE_WITHIN),
        ..HistoryParams::default()
    };
    let page = client.history(&target.app, &params).await?;
    let finished = page.deployments.into_iter().find(|d| d.state.is_terminal());
    Ok(finished.filter(|d| d.state != deployd::machine::State::Succeeded))
}

fn print_target(target: &TargetView, failure: Option<&Deployment>) {
    println!(
        "{}",
        Paint::Bold.out(&format!("{} on {}", target.app, target.cluster))
    );
    match &target.active {
        Some(active) => println!(
            "  active   {} since {} ({})",
            Paint::Good.out(&active.version),
            match style::term().tty {
                true => format!(
                    "{}, {}",
                    style::ago(active.since),
                    style::exact(active.since)
                ),
                false => style::exact(active.since),
            },
            short_id(&active.deployment_id)
        ),
        None => println!("  active   none"),
    }
    if let Some(drift) = &target.drift {
        let version = drift.version.as_deref().unwrap_or("nothing");
        println!(
            "  {}    the cluster may not be running {version}: restoring it failed {} ({}): {}",
            Paint::Bad.out("DRIFT"),
            style::when(drift.since),
            short_id(&drift.deployment_id),
            style::cell(&drift.error, MESSAGE_WIDTH)
        );
    }
    match &target.rollback_to {
        Some(version) => println!("  rollback {version} (where a rollback without --to goes)"),
        None => println!("  rollback none"),
    }
    match &target.running {
        Some(running) => println!(
            "  running  {} {} {}, by {}, started {}",
            short_id(&running.id),
            running.kind,
            running.state,
            running.deployed_by,
            running.started_at.map(style::when).unwrap_or_default()
        ),
        None => println!("  running  none"),
    }
    if target.queued.is_empty() {
        println!("  queued   none");
    }
    for queued in &target.queued {
        println!(
            "  queued   {} {}, by {}, position {}",
            short_id(&queued.id),
            queued.kind,
            queued.deployed_by,
            queued.queue_position.unwrap_or_default()
        );
    }
    if let Some(failed) = failure {
        let why = (failed.error.as_deref())
            .and_then(|error| unstuttered(error, failed.state))
            .unwrap_or("no reason recorded");
        // Plain, so it can be cut to the terminal's width without cutting
        // an escape sequence in two.
        let line = format!(
            "  last     {} {} {}: {}",
            short_id(&failed.id),
            failed.state,
            style::when(failed.finished_at.unwrap_or(failed.created_at)),
            style::one_line(why)
        );
        println!("{}", style::fit(&line));
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
    let mut columns = vec![Column::fixed("ID"), Column::fixed("STATE")];
    if with_cluster {
        columns.push(Column::fixed("CLUSTER"));
    }
    columns.extend([
        Column::fixed("VERSION"),
        Column::fixed("ACTIVE").spare(5),
        Column::fixed("WHO").spare(3),
        Column::fixed("WHEN").spare(6),
        Column::fixed("GIT-SHA").spare(2),
        Column::fixed("BRANCH").spare(1),
        Column::flexible("MESSAGE").spare(4),
    ]);
    let errors = deployments.iter().any(|d| d.error.is_some());
    if errors {
        columns.push(Column::flexible("ERROR"));
    }
    let rows = deployments.iter().map(|d| {
        let plain = |text: String| (text, None);
        let mut row = vec![
            (short_id(&d.id), Some(Paint::Dim)),
            (d.state.to_string(), state_paint(d.state)),
        ];
        if with_cluster {
            row.push(plain(d.cluster.clone()));
        }
        let git = d.git.as_ref();
        row.extend([
            plain(d.version.clone().unwrap_or_else(|| "-".into())),
            match d.active {
                true => ("*".into(), Some(Paint::Good)),
                false => plain(String::new()),
            },
            plain(d.deployed_by.clone()),
            plain(style::when(d.created_at)),
            plain(short_sha(git)),
            plain(git.and_then(|g| g.branch.clone()).unwrap_or_default()),
            plain(message(d)),
        ]);
        if errors {
            let error = d.error.as_deref().and_then(|e| unstuttered(e, d.state));
            row.push((
                style::cell(error.unwrap_or(""), MESSAGE_WIDTH),
                Some(Paint::Bad),
            ));
        }
        row
    });
    if deployments.is_empty() {
        eprintln!("no deployments of {app} match");
        return Ok(SUCCEEDED);
    }
    table(&columns, rows.collect());
    if more.is_some() {
        eprintln!("(older deployments: --all, or a larger --limit)");
    }
    Ok(SUCCEEDED)
}

/// `error` without a leading repeat of the state it ended in: the server
/// records a cancel as `cancelled: REASON` (or just `cancelled`), and
/// `✗ cancelled …: cancelled: REASON` says it twice. `None` when nothing
/// is left.
pub fn unstuttered(error: &str, state: deployd::machine::State) -> Option<&str> {
    let rest = match error.strip_prefix(state.as_str()) {
        Some("") => return None,
        // `cancelled: REASON`, `interrupted during building: WHY`.
        Some(rest) if rest.starts_with(':') || rest.starts_with(' ') => {
            let first = rest.lines().next().unwrap_or("");
            match first.find(": ") {
                Some(at) => &rest[at + 2..],
                None => error,
            }
        }
        _ => error,
    };
    Some(rest).filter(|rest| !rest.trim().is_empty())
}

/// `--detach`: the full id alone in text, so `ID=$(deployctl deploy
/// --detach)` works with any tool; the Deployment in JSON.
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
            "deployment {} ({} of {} on {}) is {}",
            short_id(&deployment.id),
            deployment.kind,
            deployment.app,
            deployment.cluster,
            deployment.state
        ),
    }
}

pub fn json_line(value: &impl Serialize) {
    match serde_json::to_string(value) {
        Ok(line) => println!("{line}"),
        Err(error) => eprintln!("error: cannot print as JSON: {error}"),
    }
}

/// Lines explaining an API error's details in words, where we know what
/// they mean; other details as `key: value` lines, never raw JSON.
pub fn error_details(code: &str, details: &serde_json::Value) -> Vec<String> {
    let text = |key: &str| details.get(key).and_then(|v| v.as_str()).unwrap_or("?");
    match code {
        "deploy_in_progress" => vec![
            format!(
                "held by deployment {} ({}), by {}, started {}",
                details
                    .get("deployment_id")
                    .and_then(|v| v.as_str())
                    .and_then(|id| id.parse().ok())
                    .map(|id| short_id(&id))
                    .unwrap_or_else(|| "?".into()),
                text("state"),
                text("deployed_by"),
                text("started_at"),
            ),
            "--on-conflict queue waits for it; --on-conflict supersede cancels it".into(),
        ],
        // The message names both states already.
        "invalid_transition" => Vec::new(),
        "ambiguous" => {
            let candidates = details.get("candidates").and_then(|c| c.as_array());
            let mut lines: Vec<String> = candidates
                .into_iter()
                .flatten()
                .map(|c| {
                    let field = |key: &str| c.get(key).and_then(|v| v.as_str()).unwrap_or("?");
                    format!(
                        "{} {} on {}, created {}",
                        field("id"),
                        field("app"),
                        field("cluster"),
                        field("created_at")
                    )
                })
                .collect();
            lines.push("give more digits, or the full id".into());
            lines
        }
        _ => match details.as_object() {
            // `kind` and `field` name what the message names already.
            Some(fields) => fields
                .iter()
                .filter(|(key, value)| {
                    !value.is_null() && !matches!(key.as_str(), "kind" | "field")
                })
                .map(|(key, value)| match value {
                    serde_json::Value::String(text) => format!("{key}: {text}"),
                    other => format!("{key}: {other}"),
                })
                .collect(),
            None => Vec::new(),
        },
    }
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
    style::cell(&text, MESSAGE_WIDTH)
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
                    true => (format!("{id} (this)"), Some(Paint::Bold)),
                    false => (id.to_string(), None),
                },
                (i["address"].as_str().unwrap_or("?").to_string(), None),
                (heartbeat.map_or("?".into(), style::when), None),
                match targets.is_empty() {
                    true => ("-".into(), None),
                    false => (targets.join(" "), None),
                },
            ]
        })
        .collect();
    let columns = [
        Column::fixed("INSTANCE"),
        Column::fixed("ADDRESS"),
        Column::fixed("HEARTBEAT"),
        Column::flexible("TARGETS"),
    ];
    table(&columns, rows);
    Ok(SUCCEEDED)
}

/// `deployctl clusters`: each cluster and the argv of each of its steps.
pub async fn clusters(client: &Client, output: Output) -> Result<u8, Failure> {
    let view = client.clusters().await?;
    if output == Output::Json {
        json_line(&view);
        return Ok(SUCCEEDED);
    }
    let rows = view.clusters.iter().flat_map(|cluster| {
        let name = Paint::Bold.out(&cluster.name);
        let first = std::iter::once(match cluster.steps.is_empty() {
            true => format!("{name}  (no steps: every phase passes straight through)"),
            false => name,
        });
        let steps = cluster.steps.iter().map(|step| {
            format!(
                "  {:<9}{}  (timeout {}s)",
                step.phase,
                step.run.join(" "),
                step.timeout_seconds
            )
        });
        let env = (!cluster.env.is_empty()).then(|| {
            format!(
                "  {:<9}{}  (values not shown)",
                "env",
                cluster.env.join(", ")
            )
        });
        let user = (cluster.user.as_ref()).map(|user| format!("  {:<9}{user}", "user"));
        first
            .chain(steps)
            .chain(env)
            .chain(user)
            .collect::<Vec<_>>()
    });
    for line in rows {
        println!("{line}");
    }
    Ok(SUCCEEDED)
}

/// `deployctl apps`: one row per target, its active version and whether
/// something runs there.
pub async fn apps(client: &Client, output: Output) -> Result<u8, Failure> {
    let view = client.apps().await?;
    if output == Output::Json {
        json_line(&view);
        return Ok(SUCCEEDED);
    }
    let rows: Vec<Vec<style::Cell>> = (view.apps.iter())
        .flat_map(|app| {
            app.targets.iter().map(|target| {
                vec![
                    (app.app.clone(), None),
                    (target.cluster.clone(), None),
                    match &target.active_version {
                        Some(version) => (version.clone(), Some(Paint::Good)),
                        None => ("-".into(), None),
                    },
                    match target.running {
                        true => ("running".into(), Some(Paint::Warn)),
                        false => (String::new(), None),
                    },
                ]
            })
        })
        .collect();
    if rows.is_empty() {
        eprintln!("no app has deployments yet");
        return Ok(SUCCEEDED);
    }
    let columns = [
        Column::fixed("APP"),
        Column::fixed("CLUSTER"),
        Column::fixed("ACTIVE"),
        Column::fixed("RUNNING"),
    ];
    table(&columns, rows);
    if view.truncated {
        eprintln!("(more targets than one answer lists)");
    }
    Ok(SUCCEEDED)
}

#[cfg(test)]
mod tests {
    use super::unstuttered;
    use deployd::machine::State;

    #[test]
    fn an_error_does_not_repeat_the_state_it_ended_in() {
        let cases = [
            ("cancelled", State::Cancelled, None),
            (
                "cancelled: wrong branch",
                State::Cancelled,
                Some("wrong branch"),
            ),
            (
                "interrupted during building: deployd shut down",
                State::Interrupted,
                Some("deployd shut down"),
            ),
            (
                "build step failed (exit code 3):\nerr",
                State::Failed,
                Some("build step failed (exit code 3):\nerr"),
            ),
            ("cancelledness", State::Cancelled, Some("cancelledness")),
        ];
        for (error, state, expected) in cases {
            assert_eq!(unstuttered(error, state), expected, "{error:?}");
        }
    }
}
