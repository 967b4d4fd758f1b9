//! `deployd-bench`: measure deployd, one scenario per command.
//!
//! ```text
//! cargo run --release --bin deployd-bench -- SCENARIO [--store embedded|postgres] [--json] [--quick]
//! ```
//!
//! Scenarios (issue 7): `history`, `lifecycle`, `lock`, `fanout`, `actors`,
//! `reconcile`; `instances` (issue 14: several instances on one PostgreSQL,
//! so PostgreSQL only); or `all`. Without `--store`, each runs on both stores.
//! PostgreSQL is the server `DATABASE_URL` names (default the local one);
//! every run makes fresh databases named `bench_<uuid>` there and drops them
//! at the end. `scripts/bench` finds or starts a server as the tests do.
//!
//! These are measurements, not tests: the goals are printed with a verdict,
//! never asserted. Each scenario compares its cases side by side within one
//! run, because the machines are noisy: read the ratios and the medians.

#[path = "deployd-bench/actors.rs"]
mod actors;
#[path = "deployd-bench/daemon.rs"]
mod daemon;
#[path = "deployd-bench/env.rs"]
mod env;
#[path = "deployd-bench/fanout.rs"]
mod fanout;
#[path = "deployd-bench/fill.rs"]
mod fill;
#[path = "deployd-bench/history.rs"]
mod history;
#[path = "deployd-bench/instances.rs"]
mod instances;
#[path = "deployd-bench/lifecycle.rs"]
mod lifecycle;
#[path = "deployd-bench/lock.rs"]
mod lock;
#[path = "deployd-bench/reconcile.rs"]
mod reconcile;
#[path = "deployd-bench/report.rs"]
mod report;
#[path = "deployd-bench/sink.rs"]
mod sink;

use clap::{Parser, ValueEnum};
use env::{Backend, Env};
use report::Report;
use serde_json::json;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "deployd-bench",
    about = "Measure deployd (issue 7's scenarios, and issue 14's instances)"
)]
struct Cli {
    scenario: Scenario,
    /// Which store; both when absent.
    #[arg(long)]
    store: Option<Backend>,
    /// Print one JSON document instead of tables.
    #[arg(long)]
    json: bool,
    /// Smaller sizes: checks that a scenario runs, figures mean little.
    #[arg(long)]
    quick: bool,
    /// Leave the databases and files for inspection instead of removing them.
    #[arg(long)]
    keep: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    History,
    Lifecycle,
    Lock,
    Fanout,
    Actors,
    Reconcile,
    /// Several instances on one PostgreSQL (issue 14); skipped on the embedded store.
    Instances,
    All,
}

impl Scenario {
    const EACH: [Scenario; 7] = [
        Scenario::History,
        Scenario::Lifecycle,
        Scenario::Lock,
        Scenario::Fanout,
        Scenario::Actors,
        Scenario::Reconcile,
        Scenario::Instances,
    ];

    async fn run(self, env: &Env, backend: Backend) -> anyhow::Result<Report> {
        match self {
            Scenario::History => history::run(env, backend).await,
            Scenario::Lifecycle => lifecycle::run(env, backend).await,
            Scenario::Lock => lock::run(env, backend).await,
            Scenario::Fanout => fanout::run(env, backend).await,
            Scenario::Actors => actors::run(env, backend).await,
            Scenario::Reconcile => reconcile::run(env, backend).await,
            Scenario::Instances => instances::run(env, backend).await,
            Scenario::All => unreachable!("expanded before running"),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if std::env::var_os("DEPLOYD_LOG").is_some() {
        deployd::telemetry::init();
    }
    env::raise_fd_limit();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("deployd-bench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("deployd-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let env = Env::new(cli.quick)?;
    let outcome = tokio::select! {
        outcome = run_all(&cli, &env) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if cli.keep {
        eprintln!("bench: kept the databases and {}", env.work().display());
    } else {
        env.cleanup().await;
    }
    let (reports, machine) = outcome?;
    if cli.json {
        let document = json!({
            "command": std::env::args().collect::<Vec<_>>().join(" "),
            "machine": machine,
            "reports": reports,
        });
        println!("{}", serde_json::to_string_pretty(&document)?);
    }
    Ok(())
}

async fn run_all(cli: &Cli, env: &Env) -> anyhow::Result<(Vec<Report>, serde_json::Value)> {
    let scenarios: Vec<Scenario> = match cli.scenario {
        Scenario::All => Scenario::EACH.to_vec(),
        one => vec![one],
    };
    let backends = match cli.store {
        Some(one) => vec![one],
        None => vec![Backend::Postgres, Backend::Embedded],
    };
    let mut machine = env::machine();
    if backends.contains(&Backend::Postgres) {
        machine["postgres"] = json!(env.pg_describe().await?);
    }
    if !cli.json {
        println!("machine: {machine}");
    }
    let mut reports = Vec::new();
    for scenario in scenarios {
        for &backend in &backends {
            eprintln!("bench: {scenario:?} on {}", backend.name());
            let report = scenario.run(env, backend).await?;
            if !cli.json {
                println!("{}", report.human());
            }
            reports.push(report);
        }
    }
    Ok((reports, machine))
}
