//! Scenario 3, the lock decision: 1,000 deploys to one target at once with
//! `on_conflict: reject`. Exactly one may be accepted; the others must be
//! answered 409 `deploy_in_progress`, and fast.
//!
//! The accepted deploy's build waits (`sleep`), so it holds the target for
//! the whole burst; it is cancelled afterwards. Every request has its own
//! connection, opened and used once before the burst, so the figures time
//! the decision rather than TCP handshakes. Side by side in the same run: the
//! same 1,000 requests one after another, which shows the cost of one
//! decision without the queue in front of it.

use crate::daemon::{self, Daemon};
use crate::env::{Backend, Env};
use crate::report::{Report, Stats, int, num, text};
use deployd::client::{Client, ClientError};
use deployd::config::ConflictPolicy;
use deployd::model::{DeployRequest, RollbackRequest};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Barrier;

const BURSTS: usize = 3;

pub async fn run(env: &Env, backend: Backend) -> anyhow::Result<Report> {
    let requests = if env.quick { 200 } else { 1000 };
    let space = env.space(backend).await?;
    let mut config = space.config()?;
    let hold: &[&str] = &["/bin/sleep", "600"];
    config
        .clusters
        .insert("hold".into(), daemon::cluster(Some(hold), None, None));
    let daemon = Daemon::start(config).await?;
    let source = daemon.upload("lock").await?;
    let request = DeployRequest {
        source,
        git: None,
        message: None,
        on_conflict: Some(ConflictPolicy::Reject),
        idempotency_key: None,
    };

    let mut report = Report::new("lock", backend.name());
    let table = report.table(
        &format!("{requests} deploys to one target with reject"),
        &[
            "mode",
            "target",
            "accepted",
            "409",
            "other",
            "409 p50 ms",
            "409 p99 ms",
            "409 max ms",
            "accepted ms",
        ],
    );
    let mut all_burst = Vec::new();
    let mut exactly_one = true;
    for b in 0..BURSTS {
        let app = format!("lock-{b}");
        // Touch the target first, so its actor is resident: the burst times
        // the decision, not the actor's start.
        let _ = daemon
            .client
            .rollback(&app, "hold", &RollbackRequest::default())
            .await;
        let burst = burst(&daemon, &app, &request, requests).await?;
        exactly_one &= burst.accepted.len() == 1;
        let mut rejected = burst.rejected.clone();
        let stats = Stats::of(&mut rejected);
        table.row(vec![
            text("burst"),
            text(&app),
            int(burst.accepted.len() as i64),
            int(stats.n as i64),
            int(burst.other as i64),
            num(stats.p50_ms),
            num(stats.p99_ms),
            num(stats.max_ms),
            accepted_ms(&burst),
        ]);
        all_burst.extend(burst.rejected);
        let sequential = sequential(&daemon.client, &app, &request, requests).await?;
        let mut rejected = sequential.rejected.clone();
        let stats = Stats::of(&mut rejected);
        table.row(vec![
            text("one at a time"),
            text(&app),
            int(sequential.accepted.len() as i64),
            int(stats.n as i64),
            int(sequential.other as i64),
            num(stats.p50_ms),
            num(stats.p99_ms),
            num(stats.max_ms),
            text("-"),
        ]);
        for id in burst.ids {
            let _ = daemon
                .client
                .cancel(id, Some("benchmark over".into()))
                .await;
        }
    }
    daemon.stop().await?;
    let stats = Stats::of(&mut all_burst);
    report.goal(
        &format!("exactly one of {requests} accepted, in each of {BURSTS} bursts"),
        if exactly_one {
            "yes".into()
        } else {
            "no".into()
        },
        exactly_one,
    );
    report.goal(
        "p99 of the 409 answers ≤ 5 ms (all bursts pooled)",
        format!(
            "{:.2} ms (p50 {:.2} ms, n {})",
            stats.p99_ms, stats.p50_ms, stats.n
        ),
        stats.p99_ms <= 5.0,
    );
    report.note("latency is from sending the request to reading the whole answer, measured by the client in the same process as the daemon (both share the machine's cores)");
    Ok(report)
}

#[derive(Default)]
struct Outcome {
    accepted: Vec<Duration>,
    ids: Vec<uuid::Uuid>,
    rejected: Vec<Duration>,
    other: usize,
}

fn accepted_ms(outcome: &Outcome) -> serde_json::Value {
    outcome
        .accepted
        .first()
        .map_or(serde_json::Value::Null, |d| num(d.as_secs_f64() * 1000.0))
}

async fn burst(
    daemon: &Daemon,
    app: &str,
    request: &DeployRequest,
    n: usize,
) -> anyhow::Result<Outcome> {
    let barrier = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            // One client per request: its own pool, so its own connection.
            let client = Client::new(daemon.client.base_url(), None);
            let (app, request, barrier) = (app.to_string(), request.clone(), barrier.clone());
            tokio::spawn(async move {
                let client = client?;
                client.healthz().await?;
                barrier.wait().await;
                let sent = Instant::now();
                let answer = client.deploy(&app, "hold", &request).await;
                anyhow::Ok((sent.elapsed(), answer))
            })
        })
        .collect();
    let mut outcome = Outcome::default();
    for task in tasks {
        let (took, answer) = task.await??;
        record(&mut outcome, took, answer);
    }
    Ok(outcome)
}

async fn sequential(
    client: &Client,
    app: &str,
    request: &DeployRequest,
    n: usize,
) -> anyhow::Result<Outcome> {
    let mut outcome = Outcome::default();
    for _ in 0..n {
        let sent = Instant::now();
        let answer = client.deploy(app, "hold", request).await;
        record(&mut outcome, sent.elapsed(), answer);
    }
    Ok(outcome)
}

fn record(
    outcome: &mut Outcome,
    took: Duration,
    answer: Result<deployd::model::Deployment, ClientError>,
) {
    match answer {
        Ok(deployment) => {
            outcome.accepted.push(took);
            outcome.ids.push(deployment.id);
        }
        Err(ClientError::Api {
            status: 409, code, ..
        }) if code == "deploy_in_progress" => outcome.rejected.push(took),
        Err(e) => {
            eprintln!("lock: unexpected answer: {e}");
            outcome.other += 1;
        }
    }
}
