//! Scenario 2, lifecycle throughput: complete deploys through the HTTP API,
//! from the request to the `succeeded` event on its progress stream, on 1,
//! 100 and 1,000 targets at once; each target deploys again as soon as its
//! last deploy succeeded. Two clusters: steps that exit at once (`/bin/true`)
//! and no steps at all.
//!
//! The ceiling comes from the same run and the same database: the rate of
//! single-row committed inserts ([`commit_rate`]) with as many writers as
//! deployd can have at once (its pool: 16 on PostgreSQL, 1 on SQLite),
//! divided by the write transactions one deploy needs (counted, not assumed:
//! every write stores at least one event, and these deploys print nothing).

use crate::daemon::{self, Daemon};
use crate::env::{self, Backend, Env, Raw, Space};
use crate::report::{Report, Stats, int, num, text};
use deployd::config::ConflictPolicy;
use deployd::machine::State;
use deployd::model::{DeployRequest, EventData};
use futures::StreamExt;
use std::time::{Duration, Instant};

const PG_POOL: usize = 16;

pub async fn run(env: &Env, backend: Backend) -> anyhow::Result<Report> {
    let space = env.space(backend).await?;
    let mut config = space.config()?;
    let no_op: &[&str] = &["/bin/true"];
    config.clusters.insert(
        "noop".into(),
        daemon::cluster(Some(no_op), Some(no_op), Some(no_op)),
    );
    config
        .clusters
        .insert("nosteps".into(), daemon::cluster(None, None, None));
    let daemon = Daemon::start(config).await?;
    let source = daemon.upload("lifecycle").await?;
    let raw = space.raw().await?;
    let probe = if env.quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(3)
    };
    let pool = match backend {
        Backend::Postgres => PG_POOL,
        Backend::Embedded => 1,
    };
    let plan: &[(usize, usize)] = if env.quick {
        &[(1, 20), (100, 2), (1000, 1)]
    } else {
        &[(1, 200), (100, 10), (1000, 2)]
    };
    let mut report = Report::new("lifecycle", backend.name());
    let table = report.table(
        "complete deploys, request to succeeded; the ceiling is probed right before and after each run",
        &["steps", "targets", "deploys", "failed", "deploys/s", "p50 ms", "p99 ms", "max ms", "writes/deploy", "writers", "commits/s", "ceiling deploys/s", "% of ceiling"],
    );
    let mut goals = Vec::new();
    for &(targets, each) in plan {
        for cluster in ["noop", "nosteps"] {
            let writers = pool.min(targets);
            let probe_before = commit_rate(&space, &raw, writers, probe).await?;
            let before = counts(&raw).await?;
            let mut run = deploy_many(&daemon, &source, cluster, targets, each).await?;
            let after = counts(&raw).await?;
            let probe_after = commit_rate(&space, &raw, writers, probe).await?;
            let writes = (after.1 - before.1) as f64 / (after.0 - before.0).max(1) as f64;
            let commits = (probe_before + probe_after) / 2.0;
            let ceiling = commits / writes;
            let share = run.rate() / ceiling * 100.0;
            let steps = if cluster == "noop" {
                "/bin/true"
            } else {
                "none"
            };
            eprintln!(
                "lifecycle: steps {steps} × {targets} targets: {:.1} deploys/s, {share:.0}% of the ceiling",
                run.rate()
            );
            let stats = Stats::of(&mut run.latencies);
            table.row(vec![
                text(steps),
                int(targets as i64),
                int(stats.n as i64),
                int(run.failed as i64),
                num(run.rate()),
                num(stats.p50_ms),
                num(stats.p99_ms),
                num(stats.max_ms),
                num(writes),
                int(writers as i64),
                num(commits),
                num(ceiling),
                num(share),
            ]);
            goals.push((
                format!("≥ 50% of the ceiling, steps {steps}, {targets} targets"),
                share,
            ));
        }
    }
    daemon.stop().await?;
    for (goal, share) in goals {
        report.goal(&goal, format!("{share:.1}%"), share >= 50.0);
    }
    report.note(format!(
        "ceiling = single-row committed inserts per second on the same database with as many writers as the store can use at once \
         (min(targets, {pool})), mean of the probes ({} s each) right before and after the run, ÷ writes per deploy",
        probe.as_secs_f64()
    ));
    Ok(report)
}

struct Run {
    wall: Duration,
    latencies: Vec<Duration>,
    failed: usize,
}

impl Run {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
}

/// `targets` clients at once, each deploying `each` times in a row to its own target.
async fn deploy_many(
    daemon: &Daemon,
    source: &str,
    cluster: &str,
    targets: usize,
    each: usize,
) -> anyhow::Result<Run> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..targets)
        .map(|t| {
            let client = daemon.client.clone();
            let app = format!("lc-{cluster}-{targets}-{t}");
            let cluster = cluster.to_string();
            let request = DeployRequest {
                source: source.to_string(),
                git: None,
                message: None,
                on_conflict: Some(ConflictPolicy::Queue),
                idempotency_key: None,
            };
            tokio::spawn(async move {
                let mut latencies = Vec::with_capacity(each);
                let mut failed = 0;
                for _ in 0..each {
                    let sent = Instant::now();
                    let mut stream = client.deploy_stream(&app, &cluster, &request).await?;
                    let mut outcome = None;
                    while let Some(event) = stream.next().await {
                        if let EventData::State(change) = event?.data
                            && change.to.is_terminal()
                        {
                            outcome = Some(change.to);
                            break;
                        }
                    }
                    match outcome {
                        Some(State::Succeeded) => latencies.push(sent.elapsed()),
                        _ => failed += 1,
                    }
                }
                anyhow::Ok((latencies, failed))
            })
        })
        .collect();
    let mut run = Run {
        wall: Duration::ZERO,
        latencies: Vec::new(),
        failed: 0,
    };
    for task in tasks {
        let (latencies, failed) = task.await??;
        run.latencies.extend(latencies);
        run.failed += failed;
    }
    run.wall = started.elapsed();
    Ok(run)
}

/// (deployments, events) stored so far.
async fn counts(raw: &Raw) -> anyhow::Result<(i64, i64)> {
    Ok((
        raw.scalar("SELECT count(*) FROM deployments").await?,
        raw.scalar("SELECT count(*) FROM deployment_events").await?,
    ))
}

/// Single-row committed inserts per second with `writers` connections at
/// once, for `period`, into a table of the store's own database.
pub async fn commit_rate(
    space: &Space,
    raw: &Raw,
    writers: usize,
    period: Duration,
) -> anyhow::Result<f64> {
    match raw {
        Raw::Pg(client) => {
            client
                .batch_execute("CREATE TABLE IF NOT EXISTS bench_commit_probe (id bigserial PRIMARY KEY, n bigint NOT NULL, at timestamptz NOT NULL DEFAULT now())")
                .await?;
            let url = space.pg_url.clone().unwrap_or_default();
            let started = Instant::now();
            let tasks: Vec<_> = (0..writers)
                .map(|w| {
                    let url = url.clone();
                    tokio::spawn(async move {
                        let client = env::connect(&url).await?;
                        let insert = client.prepare("INSERT INTO bench_commit_probe (n) VALUES ($1)").await?;
                        let mut done = 0u64;
                        while started.elapsed() < period {
                            client.execute(&insert, &[&(w as i64)]).await?;
                            done += 1;
                        }
                        anyhow::Ok(done)
                    })
                })
                .collect();
            let mut total = 0;
            for task in tasks {
                total += task.await??;
            }
            Ok(total as f64 / started.elapsed().as_secs_f64())
        }
        Raw::Sqlite(conn) => Raw::sqlite(conn, move |c| {
            // The store's own settings: WAL, synchronous FULL (the default).
            c.execute_batch("CREATE TABLE IF NOT EXISTS bench_commit_probe (id integer PRIMARY KEY, n integer NOT NULL, at text NOT NULL)")?;
            c.pragma_update(None, "synchronous", "FULL")?;
            let started = Instant::now();
            let mut done = 0u64;
            while started.elapsed() < period {
                let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                tx.execute("INSERT INTO bench_commit_probe (n, at) VALUES (?1, ?2)", rusqlite::params![done as i64, "now"])?;
                tx.commit()?;
                done += 1;
            }
            Ok(done as f64 / started.elapsed().as_secs_f64())
        })
        .await,
    }
}
