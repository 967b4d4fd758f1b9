//! Lifecycle throughput with one and with three instances: complete deploys
//! (a cluster with no steps), TARGETS targets at once, each deploying again
//! as soon as its last deploy ended, timed from the request to the
//! `succeeded` event on the deploy's own progress stream (as in lifecycle).
//! The cases, each on fresh targets (the first request to a target makes
//! its instance the owner):
//! - one instance alone on its database;
//! - the same with migration 5's NOTIFY trigger disabled, an experiment: what
//!   telling other instances costs when there are none (one instance does
//!   not need it: its own subscribers hear its broadcast);
//! - three instances on one database, each target's requests sent to its
//!   owner: ownership spread, nothing forwarded;
//! - three instances, each target's requests spread evenly (request j of
//!   target t to instance (t + j) mod 3): two in three are forwarded, and
//!   the forwarding instance relays the owner's progress stream.
//!
//! Then, on the three instances alone, one deploy at a time to one target,
//! through its owner or through another instance: what the hop itself adds.
//!
//! Rounds take the cases in turn, each round starting at the next case: a
//! case run right after another fleet's was measured 8–14% slower than the
//! same case run again, so no case may always come first. An uncounted
//! round warms every fleet up first. Every source is uploaded to every
//! instance, so no instance fetches it from another during the run.

use super::Fleet;
use crate::daemon;
use crate::env::Raw;
use crate::report::{Report, Stats, int, num, text};
use deployd::client::{Client, ClientError};
use deployd::config::ConflictPolicy;
use deployd::machine::State;
use deployd::model::{DeployRequest, EventData};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Which instance takes request `nth` of target `target`.
type Route = fn(target: usize, nth: usize) -> usize;

struct Case {
    name: &'static str,
    key: &'static str,
    /// Which fleet: ALONE, QUIET or THREE.
    fleet: usize,
    route: Route,
}

/// The fleets the cases run on.
const ALONE: usize = 0;
const QUIET: usize = 1;
const THREE: usize = 2;

const CASES: [Case; 4] = [
    Case {
        name: "1 instance",
        key: "one",
        fleet: ALONE,
        route: |_, _| 0,
    },
    Case {
        name: "1 instance, NOTIFY trigger disabled (experiment)",
        key: "quiet",
        fleet: QUIET,
        route: |_, _| 0,
    },
    Case {
        name: "3 instances, each target through its owner",
        key: "owner",
        fleet: THREE,
        route: |target, _| target % 3,
    },
    Case {
        name: "3 instances, spread evenly",
        key: "spread",
        fleet: THREE,
        route: |target, nth| (target + nth) % 3,
    },
];

pub async fn measure(env: &crate::env::Env, report: &mut Report) -> anyhow::Result<()> {
    let (targets, each, rounds) = if env.quick { (10, 3, 1) } else { (50, 6, 4) };
    let clusters = [("nosteps", daemon::cluster(None, None, None))];
    let fleets = [
        Fleet::start(env, 1, &clusters).await?,
        Fleet::start(env, 1, &clusters).await?,
        Fleet::start(env, 3, &clusters).await?,
    ];
    if let Raw::Pg(quiet) = &fleets[QUIET].raw {
        quiet
            .batch_execute("ALTER TABLE deployment_events DISABLE TRIGGER deployment_events_notify")
            .await?;
    }
    let mut source = String::new();
    for fleet in &fleets {
        source = fleet.upload("throughput").await?;
    }
    let table = report.table(
        &format!(
            "{} deploys over {targets} targets at once, no steps; request → succeeded, \
             accepted = request → its first event",
            targets * each
        ),
        &[
            "round",
            "case",
            "succeeded",
            "failed",
            "refused",
            "forwarded",
            "changed hands",
            "deploys/s",
            "accepted p50 ms",
            "p99 ms",
            "succeeded p50 ms",
            "p99 ms",
            "max ms",
        ],
    );
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); CASES.len()];
    let mut refusals = BTreeMap::new();
    // Round 0 warms every fleet up and is not counted.
    for round in 0..=rounds {
        for i in 0..CASES.len() {
            let c = (i + round) % CASES.len();
            let (case, fleet) = (&CASES[c], &fleets[CASES[c].fleet]);
            let prefix = format!("r{round}-{}", case.key);
            let mut run = deploy_many(fleet, &source, &prefix, targets, each, case.route).await?;
            if round == 0 {
                continue;
            }
            let (forwarded, moved) = forwarded(fleet, &run).await?;
            let done = Stats::of(&mut run.done);
            let accepted = Stats::of(&mut run.accepted);
            let rate = done.n as f64 / run.wall.as_secs_f64();
            eprintln!(
                "instances: round {round}, {}: {rate:.0} deploys/s",
                case.name
            );
            let refused: usize = run.refused.values().map(|r| r.0).sum();
            for (kind, (n, message)) in run.refused {
                let key = format!("{}: {kind}", case.name);
                refusals.entry(key).or_insert((0, message)).0 += n;
            }
            table.row(vec![
                int(round as i64),
                text(case.name),
                int(done.n as i64),
                int(run.failed as i64),
                int(refused as i64),
                int(forwarded as i64),
                int(moved as i64),
                num(rate),
                num(accepted.p50_ms),
                num(accepted.p99_ms),
                num(done.p50_ms),
                num(done.p99_ms),
                num(done.max_ms),
            ]);
            rates[c].push(rate);
        }
    }
    one_at_a_time(&fleets[THREE], &source, env.quick, report).await?;
    for fleet in fleets {
        fleet.stop().await?;
    }

    let summary = report.table(
        "deploys/s, median of the rounds",
        &["case", "each round", "median", "÷ 1 instance"],
    );
    let alone = median(&rates[0]);
    for (case, rates) in CASES.iter().zip(&rates) {
        let each_round: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
        summary.row(vec![
            text(case.name),
            text(each_round.join(" / ")),
            num(median(rates)),
            num(median(rates) / alone),
        ]);
    }
    for (kind, (n, message)) in &refusals {
        report.note(format!("refused {n}×, {kind}, e.g. {message:?}"));
    }
    report.note(
        "forwarded: requests sent to an instance other than the target's owner at the end of the \
         round; changed hands: targets whose lease epoch went past 1 (ownership moved)",
    );
    Ok(())
}

/// One deploy at a time to one target of the three-instance fleet, sent to
/// its owner, or to either other instance, in blocks that take turns: what
/// one forwarding hop adds to a deploy when little else runs.
async fn one_at_a_time(
    fleet: &Fleet,
    source: &str,
    quick: bool,
    report: &mut Report,
) -> anyhow::Result<()> {
    const BLOCK: usize = 25;
    let blocks = if quick { 1 } else { 4 };
    let cases: [(&str, Route); 2] = [
        ("through its owner", |_, _| 0),
        ("through another instance", |_, nth| 1 + nth % 2),
    ];
    // Instance 0 takes the target with a first deploy.
    deploy_many(fleet, source, "single", 1, 1, |_, _| 0).await?;
    let mut runs = [Run::empty(), Run::empty()];
    for _ in 0..blocks {
        for (run, (_, route)) in runs.iter_mut().zip(&cases) {
            let block = deploy_many(fleet, source, "single", 1, BLOCK, *route).await?;
            run.absorb(block);
        }
    }
    let owner = fleet.owners().await?;
    let owner = owner.get(&("single-0".to_string(), "nosteps".to_string()));
    anyhow::ensure!(
        owner == Some(&(0, 1)),
        "the single target changed hands: {owner:?}"
    );
    let table = report.table(
        "one deploy at a time to one target, three instances",
        &[
            "sent",
            "succeeded",
            "failed",
            "refused",
            "accepted p50 ms",
            "p99 ms",
            "succeeded p50 ms",
            "p99 ms",
            "max ms",
        ],
    );
    for ((name, _), mut run) in cases.iter().zip(runs) {
        let done = Stats::of(&mut run.done);
        let accepted = Stats::of(&mut run.accepted);
        table.row(vec![
            text(*name),
            int(done.n as i64),
            int(run.failed as i64),
            int(run.refused.values().map(|r| r.0 as i64).sum::<i64>()),
            num(accepted.p50_ms),
            num(accepted.p99_ms),
            num(done.p50_ms),
            num(done.p99_ms),
            num(done.max_ms),
        ]);
    }
    Ok(())
}

struct Run {
    wall: Duration,
    /// Request → first event of its progress stream.
    accepted: Vec<Duration>,
    /// Request → `succeeded`.
    done: Vec<Duration>,
    /// Accepted, but ended otherwise than `succeeded`, or the stream broke.
    failed: usize,
    /// Answered with an error instead of a stream: by status and code, how
    /// many, and one of their messages.
    refused: BTreeMap<String, (usize, String)>,
    /// (app, the instance each request went to).
    sent_to: Vec<(String, usize)>,
}

/// `targets` clients at once, each deploying `each` times in a row to its
/// own target `{prefix}-{t}`, request j to the instance `route(t, j)` names.
async fn deploy_many(
    fleet: &Fleet,
    source: &str,
    prefix: &str,
    targets: usize,
    each: usize,
    route: Route,
) -> anyhow::Result<Run> {
    let clients: Vec<Client> = fleet.instances.iter().map(|d| d.client.clone()).collect();
    let request = DeployRequest {
        source: source.to_string(),
        git: None,
        message: None,
        on_conflict: Some(ConflictPolicy::Queue),
        idempotency_key: None,
    };
    let started = Instant::now();
    let tasks: Vec<_> = (0..targets)
        .map(|t| {
            let app = format!("{prefix}-{t}");
            let (clients, request) = (clients.clone(), request.clone());
            tokio::spawn(async move {
                let mut run = Run::empty();
                for nth in 0..each {
                    let to = route(t, nth);
                    run.sent_to.push((app.clone(), to));
                    run.one(&clients[to], &app, &request).await;
                }
                run
            })
        })
        .collect();
    let mut run = Run::empty();
    for task in tasks {
        run.absorb(task.await?);
    }
    run.wall = started.elapsed();
    Ok(run)
}

impl Run {
    fn empty() -> Run {
        Run {
            wall: Duration::ZERO,
            accepted: Vec::new(),
            done: Vec::new(),
            failed: 0,
            refused: BTreeMap::new(),
            sent_to: Vec::new(),
        }
    }

    /// Add `other`'s deploys to these (not its wall time).
    fn absorb(&mut self, other: Run) {
        self.accepted.extend(other.accepted);
        self.done.extend(other.done);
        self.failed += other.failed;
        for (kind, (n, message)) in other.refused {
            self.refused.entry(kind).or_insert((0, message)).0 += n;
        }
        self.sent_to.extend(other.sent_to);
    }

    /// One deploy, followed to its end on the stream its request opened.
    async fn one(&mut self, client: &Client, app: &str, request: &DeployRequest) {
        let sent = Instant::now();
        let mut stream = match client.deploy_stream(app, "nosteps", request).await {
            Ok(stream) => stream,
            Err(e) => {
                let (kind, message) = refusal(&e);
                self.refused.entry(kind).or_insert((0, message)).0 += 1;
                return;
            }
        };
        let mut outcome = None;
        let mut first = true;
        while let Some(event) = stream.next().await {
            let Ok(event) = event else { break };
            if std::mem::take(&mut first) {
                self.accepted.push(sent.elapsed());
            }
            if let EventData::State(change) = event.data
                && change.to.is_terminal()
            {
                outcome = Some(change.to);
                break;
            }
        }
        match outcome {
            Some(State::Succeeded) => self.done.push(sent.elapsed()),
            _ => self.failed += 1,
        }
    }
}

/// An error answer: what kind (status and code), and what it said.
fn refusal(e: &ClientError) -> (String, String) {
    match e {
        ClientError::Api {
            status,
            code,
            message,
            ..
        } => (format!("{status} {code}"), message.clone()),
        ClientError::Server { status, message } => (status.to_string(), message.clone()),
        other => (other.to_string(), String::new()),
    }
}

/// How many of `run`'s requests went to an instance that did not own the
/// target, and how many of its targets changed hands.
async fn forwarded(fleet: &Fleet, run: &Run) -> anyhow::Result<(usize, usize)> {
    let owners = fleet.owners().await?;
    let owner = |app: &str| owners.get(&(app.to_string(), "nosteps".to_string()));
    let forwarded = (run.sent_to.iter())
        .filter(|(app, to)| owner(app).is_none_or(|o| o.0 != *to))
        .count();
    let apps: std::collections::BTreeSet<&String> = run.sent_to.iter().map(|s| &s.0).collect();
    let moved = (apps.into_iter())
        .filter(|app| owner(app).is_some_and(|o| o.1 > 1))
        .count();
    Ok((forwarded, moved))
}

/// The middle value, or the mean of the two middle ones.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
