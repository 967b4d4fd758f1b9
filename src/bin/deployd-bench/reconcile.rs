//! Scenario 6, reconcile: start deployd on a store holding N running
//! deployments whose owner died (leases expired a minute ago), and time
//! from the start of `serve` to its first answer. Start-up reconciles before
//! it serves, so the time covers marking all N `interrupted`.
//!
//! N = 0, 1,000 and 10,000, each on a store of its own filled beforehand,
//! started in interleaved rounds; side by side, the empty store is the cost
//! of starting at all.

use crate::daemon::{self, Daemon};
use crate::env::{Backend, Env, Raw};
use crate::fill::{self, CLUSTERS};
use crate::report::{Report, int, num};
use crate::sink;
use std::time::Instant;

pub async fn run(env: &Env, backend: Backend) -> anyhow::Result<Report> {
    let (sizes, rounds): (&[usize], usize) = if env.quick {
        (&[0, 1000], 1)
    } else {
        (&[0, 1000, 10_000], 2)
    };
    let mut prepared = Vec::new();
    for _ in 0..rounds {
        for &n in sizes {
            let space = env.space(backend).await?;
            let raw = space.raw().await?;
            let (chunk, tail) = fill::expired_running(n);
            sink::write(&raw, chunk).await?;
            sink::finish(&raw, tail).await?;
            prepared.push((n, space, raw));
        }
    }
    let mut report = Report::new("reconcile", backend.name());
    let table = report.table(
        "start to serving, with N expired running deployments",
        &[
            "expired",
            "round",
            "start to serving ms",
            "interrupted after",
            "per deployment ms",
        ],
    );
    let mut largest: Vec<f64> = Vec::new();
    for (i, (n, space, raw)) in prepared.into_iter().enumerate() {
        let mut config = space.config()?;
        for cluster in CLUSTERS {
            config
                .clusters
                .insert(cluster.into(), daemon::cluster(None, None, None));
        }
        let started = Instant::now();
        let daemon = Daemon::launch(config).await?;
        daemon.ready().await?;
        let took = started.elapsed().as_secs_f64() * 1000.0;
        let interrupted = interrupted(&raw).await?;
        daemon.stop().await?;
        eprintln!("reconcile: {n} expired: serving after {took:.0} ms");
        let per = if n > 0 {
            num(took / n as f64)
        } else {
            serde_json::Value::Null
        };
        table.row(vec![
            int(n as i64),
            int((i / sizes.len() + 1) as i64),
            num(took),
            int(interrupted),
            per,
        ]);
        if n == sizes[sizes.len() - 1] {
            largest.push(took);
        }
    }
    largest.sort_by(f64::total_cmp);
    let middle = largest.len() / 2;
    let median = if largest.len().is_multiple_of(2) {
        (largest[middle - 1] + largest[middle]) / 2.0
    } else {
        largest[middle]
    };
    let n = sizes[sizes.len() - 1];
    let on = if backend == Backend::Postgres {
        ""
    } else {
        " (the goal is set for PostgreSQL)"
    };
    report.goal(
        &format!("{n} expired running deployments: start to serving ≤ 1 s{on}"),
        format!("{median:.0} ms (median of {})", largest.len()),
        median <= 1000.0,
    );
    Ok(report)
}

async fn interrupted(raw: &Raw) -> anyhow::Result<i64> {
    raw.scalar("SELECT count(*) FROM deployments WHERE state = 'interrupted'")
        .await
}
