//! Scenario 1, history: the keyset queries against stores of 10k, 100k and
//! 1M deployments, side by side with the old design's approach (load every
//! deployment, filter and sort in memory).
//!
//! Each size gets its own store, filled once; the queries then run in
//! rounds that visit every size in turn, so machine noise lands on all sizes
//! alike. Besides random targets (about 3 deployments each at 10k), one busy
//! target holds 1,000 deployments at every size: its answers have the same
//! rows whatever the table size, which isolates the cost of the table's size.

use crate::env::{Backend, Env, Raw, Rng};
use crate::fill::{APPS, CLUSTERS, HOT, HistoryFill};
use crate::report::{Report, Stats, int, num, text};
use crate::sink;
use deployd::model::{Deployment, GitInfo};
use deployd::store::{DynStore, HistoryQuery};
use std::time::{Duration, Instant};
use uuid::Uuid;

const HOT_DEPLOYMENTS: usize = 1000;
const CHUNK: usize = 50_000;
/// Page 50 of 20: the cursor is the last id of page 49.
const PAGE: usize = 50;
const PAGE_SIZE: usize = 20;

struct SizedStore {
    size: usize,
    store: DynStore,
    raw: Raw,
    hot_ids: Vec<Uuid>,
    samples: [Vec<Duration>; 4],
    rows: [usize; 4],
    baseline: Vec<Duration>,
}

const QUERIES: [&str; 4] = [
    "newest 20, random target",
    "newest 20, busy target",
    "page 50 by cursor, busy target",
    "target view, random target",
];

pub async fn run(env: &Env, backend: Backend) -> anyhow::Result<Report> {
    let sizes: &[usize] = if env.quick {
        &[10_000, 100_000]
    } else {
        &[10_000, 100_000, 1_000_000]
    };
    let mut report = Report::new("history", backend.name());
    let fills = report.table(
        "fill (direct bulk insert, not timed as a goal)",
        &["deployments", "seconds", "rows/s"],
    );
    let mut stores = Vec::new();
    for &size in sizes {
        let space = env.space(backend).await?;
        let raw = space.raw().await?;
        let started = Instant::now();
        let hot_ids = fill_history(&raw, size).await?;
        let secs = started.elapsed().as_secs_f64();
        fills.row(vec![int(size as i64), num(secs), num(size as f64 / secs)]);
        eprintln!("history: filled {size} deployments in {secs:.1}s");
        stores.push(SizedStore {
            size,
            store: space.open_store().await?,
            raw,
            hot_ids,
            samples: Default::default(),
            rows: [0; 4],
            baseline: Vec::new(),
        });
    }
    let rounds = if env.quick { 300 } else { 2000 };
    let mut rng = Rng::new(42);
    for s in &mut stores {
        for _ in 0..50 {
            measure_round(s, &mut rng, false).await?;
        }
    }
    for round in 0..rounds {
        let count = stores.len();
        for k in 0..count {
            let s = &mut stores[(round + k) % count];
            measure_round(s, &mut rng, true).await?;
        }
    }
    eprintln!("history: keyset queries measured; now the baseline");
    let baseline_runs = |size: usize| match size {
        0..=10_000 => 30,
        10_001..=100_000 => 10,
        _ => 5,
    };
    for round in 0..30 {
        for s in stores.iter_mut().filter(|s| round < baseline_runs(s.size)) {
            let started = Instant::now();
            let old = load_all_and_filter(&s.raw, HOT.0, HOT.1).await?;
            s.baseline.push(started.elapsed());
            let new = newest(&s.store, HOT.0, Some(HOT.1), None, 20).await?;
            let same = old.iter().map(|d| d.id).eq(new.iter().map(|d| d.id));
            anyhow::ensure!(same, "the baseline and the store disagree on the newest 20");
        }
    }
    summarize(&mut report, backend, &mut stores);
    Ok(report)
}

async fn fill_history(raw: &Raw, size: usize) -> anyhow::Result<Vec<Uuid>> {
    if let Raw::Sqlite(conn) = raw {
        // The fill's own connection only: the store keeps its durable settings.
        Raw::sqlite(conn, |c| Ok(c.pragma_update(None, "synchronous", "OFF")?)).await?;
    }
    let mut plan = HistoryFill::new(size, HOT_DEPLOYMENTS);
    loop {
        let chunk = plan.chunk(CHUNK);
        if chunk.deployments.is_empty() {
            break;
        }
        sink::write(raw, chunk).await?;
    }
    sink::finish(raw, plan.tail()).await?;
    Ok(plan.hot_ids)
}

async fn newest(
    store: &DynStore,
    app: &str,
    cluster: Option<&str>,
    before: Option<Uuid>,
    limit: u32,
) -> anyhow::Result<Vec<Deployment>> {
    let query = HistoryQuery {
        app: app.to_string(),
        cluster: cluster.map(str::to_string),
        state: None,
        limit,
        before,
    };
    Ok(store.history(&query).await?.items)
}

/// One of each query on one store; samples are kept when `keep`.
async fn measure_round(s: &mut SizedStore, rng: &mut Rng, keep: bool) -> anyhow::Result<()> {
    let app = HistoryFill::app(rng.below(APPS));
    let cluster = CLUSTERS[rng.below(CLUSTERS.len())];
    let cursor = s.hot_ids[s.hot_ids.len() - PAGE_SIZE * (PAGE - 1)];
    let mut timings = [Duration::ZERO; 4];
    let mut rows = [0usize; 4];

    let started = Instant::now();
    rows[0] = newest(&s.store, &app, Some(cluster), None, 20).await?.len();
    timings[0] = started.elapsed();
    let started = Instant::now();
    rows[1] = newest(&s.store, HOT.0, Some(HOT.1), None, 20).await?.len();
    timings[1] = started.elapsed();
    let started = Instant::now();
    rows[2] = newest(&s.store, HOT.0, Some(HOT.1), Some(cursor), PAGE_SIZE as u32)
        .await?
        .len();
    timings[2] = started.elapsed();
    let started = Instant::now();
    let view = s.store.target(&app, cluster).await?;
    timings[3] = started.elapsed();
    rows[3] = usize::from(view.active.is_some())
        + usize::from(view.running.is_some())
        + view.queued.len();

    if keep {
        for q in 0..QUERIES.len() {
            s.samples[q].push(timings[q]);
            s.rows[q] += rows[q];
        }
    }
    Ok(())
}

fn summarize(report: &mut Report, backend: Backend, stores: &mut [SizedStore]) {
    // Per store, per query (in QUERIES order).
    let stats: Vec<Vec<Stats>> = stores
        .iter_mut()
        .map(|s| s.samples.iter_mut().map(|q| Stats::of(q)).collect())
        .collect();
    let table = report.table(
        "keyset queries through the Store trait, one at a time (ms)",
        &[
            "query",
            "deployments",
            "n",
            "rows/answer",
            "p50",
            "p99",
            "max",
        ],
    );
    for (q, name) in QUERIES.iter().enumerate() {
        for (s, st) in stores.iter().zip(&stats) {
            let st = st[q];
            let rows = s.rows[q] as f64 / st.n.max(1) as f64;
            table.row(vec![
                text(*name),
                int(s.size as i64),
                int(st.n as i64),
                num(rows),
                num(st.p50_ms),
                num(st.p99_ms),
                num(st.max_ms),
            ]);
        }
    }
    let table = report.table(
        "newest 20 of the busy target vs the old design (load all, filter in memory)",
        &[
            "deployments",
            "baseline n",
            "baseline p50 ms",
            "baseline p99 ms",
            "keyset p50 ms",
            "speed-up p50",
            "speed-up p99",
        ],
    );
    let mut speedups = Vec::new();
    for (s, st) in stores.iter_mut().zip(&stats) {
        let base = Stats::of(&mut s.baseline);
        let p50 = base.p50_ms / st[1].p50_ms;
        let p99 = base.p99_ms / st[1].p99_ms;
        speedups.push(p50);
        table.row(vec![
            int(s.size as i64),
            int(base.n as i64),
            num(base.p50_ms),
            num(base.p99_ms),
            num(st[1].p50_ms),
            num(p50),
            num(p99),
        ]);
    }

    let (first, last) = (&stats[0], &stats[stats.len() - 1]);
    let largest = stores[stores.len() - 1].size;
    let on = if backend == Backend::Postgres {
        ""
    } else {
        " (the goal is set for PostgreSQL)"
    };
    for (q, label) in [(0, "random target"), (1, "busy target")] {
        report.goal(
            &format!("newest 20 ({label}) p99 ≤ 2 ms at {largest}{on}"),
            format!("{:.3} ms", last[q].p99_ms),
            last[q].p99_ms <= 2.0,
        );
        let ratio = last[q].p99_ms / first[q].p99_ms;
        report.goal(
            &format!(
                "newest 20 ({label}) p99 at {largest} ≤ 1.5 × p99 at {}{on}",
                stores[0].size
            ),
            format!(
                "{ratio:.2}× ({:.3} ms vs {:.3} ms)",
                last[q].p99_ms, first[q].p99_ms
            ),
            ratio <= 1.5,
        );
    }
    let speedup = speedups[speedups.len() - 1];
    report.goal(
        &format!("≥ 1,000× faster than the baseline at {largest} (medians){on}"),
        format!("{speedup:.0}×"),
        speedup >= 1000.0,
    );
    report.note("random targets hold about size/3,000 deployments, so at 10k their answers have ~3 rows and at 1M 20; the busy target answers 20 rows at every size");
    report.note("page 50 by cursor: limit 20 after the cursor that ends page 49 (the last id of rows 961-980), i.e. rows 981-1,000 of the busy target");
}

/// The old design: every deployment ever made, decoded, then filtered and
/// sorted in memory.
async fn load_all_and_filter(
    raw: &Raw,
    app: &str,
    cluster: &str,
) -> anyhow::Result<Vec<Deployment>> {
    let mut all = load_all(raw).await?;
    all.retain(|d| d.app == app && d.cluster == cluster);
    all.sort_by_key(|d| std::cmp::Reverse(d.created_at));
    all.truncate(20);
    Ok(all)
}

const ALL_COLUMNS: &str = "SELECT id, app, cluster, kind, state, version, source, rollback_to, git, \
     message, deployed_by, error, superseded_by, created_at, started_at, finished_at FROM deployments";

async fn load_all(raw: &Raw) -> anyhow::Result<Vec<Deployment>> {
    match raw {
        Raw::Pg(client) => {
            let rows = client.query(ALL_COLUMNS, &[]).await?;
            rows.iter()
                .map(|r| {
                    let git: Option<tokio_postgres::types::Json<GitInfo>> = r.try_get(8)?;
                    Ok(Deployment {
                        id: r.try_get(0)?,
                        app: r.try_get(1)?,
                        cluster: r.try_get(2)?,
                        kind: r
                            .try_get::<_, &str>(3)?
                            .parse()
                            .map_err(anyhow::Error::msg)?,
                        state: r
                            .try_get::<_, &str>(4)?
                            .parse()
                            .map_err(anyhow::Error::msg)?,
                        active: false,
                        version: r.try_get(5)?,
                        source: r.try_get(6)?,
                        rollback_to: r.try_get(7)?,
                        git: git.map(|g| g.0),
                        message: r.try_get(9)?,
                        deployed_by: r.try_get(10)?,
                        error: r.try_get(11)?,
                        superseded_by: r.try_get(12)?,
                        queue_position: None,
                        created_at: r.try_get(13)?,
                        started_at: r.try_get(14)?,
                        finished_at: r.try_get(15)?,
                    })
                })
                .collect()
        }
        Raw::Sqlite(conn) => {
            Raw::sqlite(conn, |c| {
                let mut stmt = c.prepare_cached(ALL_COLUMNS)?;
                let mut rows = stmt.query([])?;
                let mut all = Vec::new();
                while let Some(r) = rows.next()? {
                    let time = |i: usize| -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
                        let t: Option<String> = r.get(i)?;
                        Ok(
                            t.map(|t| chrono::DateTime::parse_from_rfc3339(&t).map(|t| t.to_utc()))
                                .transpose()?,
                        )
                    };
                    let git: Option<String> = r.get(8)?;
                    let uuid = |i: usize| -> anyhow::Result<Option<Uuid>> {
                        let t: Option<String> = r.get(i)?;
                        Ok(t.map(|t| Uuid::parse_str(&t)).transpose()?)
                    };
                    all.push(Deployment {
                        id: uuid(0)?.unwrap_or_default(),
                        app: r.get(1)?,
                        cluster: r.get(2)?,
                        kind: r.get::<_, String>(3)?.parse().map_err(anyhow::Error::msg)?,
                        state: r.get::<_, String>(4)?.parse().map_err(anyhow::Error::msg)?,
                        active: false,
                        version: r.get(5)?,
                        source: r.get(6)?,
                        rollback_to: r.get(7)?,
                        git: git.map(|g| serde_json::from_str(&g)).transpose()?,
                        message: r.get(9)?,
                        deployed_by: r.get(10)?,
                        error: r.get(11)?,
                        superseded_by: uuid(12)?,
                        queue_position: None,
                        created_at: time(13)?.unwrap_or_default(),
                        started_at: time(14)?,
                        finished_at: time(15)?,
                    });
                }
                Ok(all)
            })
            .await
        }
    }
}
