//! Scenario 5, actors: touch 100,000 targets so each gets a resident actor,
//! then watch them passivate after `deploy.idle_actor_after`.
//!
//! Touching is a rollback with no version on a target that never deployed:
//! it spawns the target's actor and is answered 404. The daemon runs in this
//! process, so RSS is this process's; a warm-up touches 1,000 targets before
//! the starting figure, so pools, caches and the client's connections are
//! already counted there. Per actor = RSS growth ÷ actors added.
//!
//! RSS is only meaningful in a process that ran nothing else: memory freed by
//! an earlier scenario stays mapped (glibc keeps it) and would be reused
//! unseen. So each store's run happens in a fresh child process of this
//! binary, whose JSON report is read back.

use crate::daemon::{self, Daemon};
use crate::env::{Backend, Env, rss_bytes};
use crate::report::{Report, int, num, text};
use deployd::client::{Client, ClientError};
use deployd::model::RollbackRequest;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const WARM: usize = 1000;
const CONCURRENCY: usize = 64;
const MIB: f64 = 1024.0 * 1024.0;

/// Set in the child process that really runs the scenario.
const CHILD: &str = "BENCH_ACTORS_CHILD";

pub async fn run(env: &Env, backend: Backend) -> anyhow::Result<Report> {
    if std::env::var_os(CHILD).is_none() {
        return in_child(env, backend).await;
    }
    let (targets, idle) = if env.quick {
        (10_000, Duration::from_secs(20))
    } else {
        (100_000, Duration::from_secs(150))
    };
    let space = env.space(backend).await?;
    let mut config = space.config()?;
    config
        .clusters
        .insert("c".into(), daemon::cluster(None, None, None));
    config.deploy.idle_actor_after = idle;
    let daemon = Daemon::start(config).await?;
    let http = reqwest::Client::new();
    let supervisor = format!("{}v1/supervisor", daemon.client.base_url());

    touch(&daemon.client, "warm", WARM).await?;
    let resident0 = resident(&http, &supervisor).await?;
    let rss0 = rss_bytes();
    let started = Instant::now();
    let unexpected = touch(&daemon.client, "t", targets).await?;
    let touched_in = started.elapsed();
    let touched_at = Instant::now();
    let resident1 = resident(&http, &supervisor).await?;
    let rss1 = rss_bytes();
    eprintln!(
        "actors: {targets} touched in {:.1}s; {resident1} resident; waiting for passivation",
        touched_in.as_secs_f64()
    );

    let deadline = touched_at + idle + Duration::from_secs(600);
    let mut first_drop = None;
    let mut zero_at = None;
    while Instant::now() < deadline {
        let now_resident = resident(&http, &supervisor).await?;
        if now_resident < resident1 && first_drop.is_none() {
            first_drop = Some(Instant::now());
        }
        if now_resident == 0 {
            zero_at = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let rss2 = rss_bytes();
    let rss3 = trimmed_rss();
    let left = resident(&http, &supervisor).await?;
    daemon.stop().await?;

    let added = resident1.saturating_sub(resident0).max(1);
    let per_actor_kib = (rss1 as f64 - rss0 as f64) / added as f64 / 1024.0;
    let mut report = Report::new("actors", backend.name());
    let table = report.table(
        &format!(
            "touch {targets} targets (rollback with no version: spawns the actor, answers 404)"
        ),
        &["figure", "value"],
    );
    table.row(vec![text("touch time s"), num(touched_in.as_secs_f64())]);
    table.row(vec![
        text("touches/s"),
        num(targets as f64 / touched_in.as_secs_f64()),
    ]);
    table.row(vec![text("answers other than 404"), int(unexpected as i64)]);
    table.row(vec![
        text("resident before (warm-up)"),
        int(resident0 as i64),
    ]);
    table.row(vec![text("resident after touching"), int(resident1 as i64)]);
    table.row(vec![text("RSS before MiB"), num(rss0 as f64 / MIB)]);
    table.row(vec![text("RSS with actors MiB"), num(rss1 as f64 / MIB)]);
    table.row(vec![text("KiB per resident actor"), num(per_actor_kib)]);
    table.row(vec![text("idle_actor_after s"), num(idle.as_secs_f64())]);
    let since = |at: Option<Instant>| {
        at.map_or(serde_json::Value::Null, |at| {
            num(at.duration_since(touched_at).as_secs_f64())
        })
    };
    table.row(vec![
        text("first passivation, s after touching ended"),
        since(first_drop),
    ]);
    table.row(vec![
        text("all passivated, s after touching ended"),
        since(zero_at),
    ]);
    let beyond = zero_at.map(|z| z.duration_since(touched_at).as_secs_f64() - idle.as_secs_f64());
    table.row(vec![
        text("all passivated, s beyond the idle period"),
        beyond.map_or(serde_json::Value::Null, num),
    ]);
    table.row(vec![text("resident at the end"), int(left as i64)]);
    table.row(vec![
        text("RSS after passivation MiB"),
        num(rss2 as f64 / MIB),
    ]);
    table.row(vec![
        text("RSS after malloc_trim MiB"),
        num(rss3 as f64 / MIB),
    ]);

    report.goal(
        "≤ 10 KiB per resident actor",
        format!("{per_actor_kib:.1} KiB"),
        per_actor_kib <= 10.0,
    );
    let back = rss2 as f64 / rss0 as f64;
    report.goal(
        "RSS back within 10% of the start after passivation",
        format!(
            "{:.0}% of the start ({:.0} → {:.0} → {:.0} MiB; {:.0} MiB after malloc_trim)",
            back * 100.0,
            rss0 as f64 / MIB,
            rss1 as f64 / MIB,
            rss2 as f64 / MIB,
            rss3 as f64 / MIB
        ),
        back <= 1.10 && left == 0,
    );
    report.note(match beyond {
        Some(b) => format!(
            "time to passivate: every actor gone {b:.1} s after the last one's idle period ended"
        ),
        None => format!(
            "{left} actors were still resident {:.0} s after touching ended",
            Instant::now().duration_since(touched_at).as_secs_f64()
        ),
    });
    Ok(report)
}

/// Run this scenario in a fresh process and read its report back.
async fn in_child(env: &Env, backend: Backend) -> anyhow::Result<Report> {
    let mut command = tokio::process::Command::new(std::env::current_exe()?);
    command.args(["actors", "--json", "--store", backend.name()]);
    if env.quick {
        command.arg("--quick");
    }
    let output = command
        .env(CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()?
        .wait_with_output()
        .await?;
    anyhow::ensure!(
        output.status.success(),
        "the actors child process failed ({})",
        output.status
    );
    let mut document: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let report = document["reports"][0].take();
    Ok(serde_json::from_value(report)?)
}

/// Touch `n` fresh targets `{prefix}-{k}` with CONCURRENCY requests in
/// flight; answers how many were not the expected 404.
async fn touch(client: &Client, prefix: &str, n: usize) -> anyhow::Result<usize> {
    let next = Arc::new(AtomicUsize::new(0));
    let unexpected = Arc::new(AtomicUsize::new(0));
    let workers: Vec<_> = (0..CONCURRENCY)
        .map(|_| {
            let (client, next, unexpected, prefix) = (
                client.clone(),
                next.clone(),
                unexpected.clone(),
                prefix.to_string(),
            );
            tokio::spawn(async move {
                loop {
                    let k = next.fetch_add(1, Ordering::Relaxed);
                    if k >= n {
                        return;
                    }
                    match client
                        .rollback(&format!("{prefix}-{k}"), "c", &RollbackRequest::default())
                        .await
                    {
                        Err(ClientError::Api { status: 404, .. }) => {}
                        _ => {
                            unexpected.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        w.await?;
    }
    Ok(unexpected.load(Ordering::Relaxed))
}

async fn resident(http: &reqwest::Client, url: &str) -> anyhow::Result<usize> {
    let body: serde_json::Value = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    body["resident"]
        .as_u64()
        .map(|n| n as usize)
        .ok_or_else(|| anyhow::anyhow!("/v1/supervisor has no \"resident\""))
}

/// RSS after asking the allocator to give freed memory back to the system.
fn trimmed_rss() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
    rss_bytes()
}
