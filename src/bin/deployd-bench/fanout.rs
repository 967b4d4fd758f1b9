//! Scenario 4, fan-out: one deployment whose build prints 20,000 lines,
//! watched over SSE by 1, 100 and 2,000 subscribers (one deployment each, in
//! the same run). Every subscriber must get every event, in order, with no
//! gap; the delay of each line is its receipt minus its store commit.
//!
//! The commit time is the event row's `created_at`, which the database sets
//! when the appending transaction starts (PostgreSQL `now()`, SQLite
//! `strftime('%f')` to the millisecond), so the delays are if anything a
//! little long. Subscribers parse only what they check (seq, kind, line), so
//! the client's share of the two cores stays small; they are still in the
//! same process as the daemon.

use crate::daemon::{self, Daemon};
use crate::env::{self, Backend, Env, Raw};
use crate::report::{Report, int, num};
use deployd::model::DeployRequest;
use futures::StreamExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use uuid::Uuid;

const LINES: usize = 20_000;
const WAIT: Duration = Duration::from_secs(1200);

pub async fn run(env: &Env, backend: Backend) -> anyhow::Result<Report> {
    let audiences: &[usize] = if env.quick {
        &[1, 100, 500]
    } else {
        &[1, 100, 2000]
    };
    let space = env.space(backend).await?;
    let mut config = space.config()?;
    let script = format!(
        "while [ ! -e \"$DEPLOY_DATA_DIR/go-$DEPLOY_ID\" ]; do sleep 0.01; done; seq -f 'line %.0f' 1 {LINES}"
    );
    config.clusters.insert(
        "chatty".into(),
        daemon::cluster(Some(&["/bin/sh", "-c", &script]), None, None),
    );
    let daemon = Daemon::start(config).await?;
    let source = daemon.upload("fanout").await?;
    let raw = space.raw().await?;
    let http = reqwest::Client::new();

    let mut report = Report::new("fanout", backend.name());
    let table = report.table(
        &format!("{LINES} log lines of one build, delay from store commit to receipt"),
        &[
            "subscribers",
            "events checked",
            "errors",
            "p50 ms",
            "p99 ms",
            "max ms",
            "lines committed in s",
            "last receipt after go s",
        ],
    );
    let mut goal = None;
    for &n in audiences {
        let request = DeployRequest {
            source: source.clone(),
            git: None,
            message: None,
            on_conflict: None,
            idempotency_key: None,
        };
        let deployment = daemon
            .client
            .deploy(&format!("fan-{n}"), "chatty", &request)
            .await?;
        let clock = Clock::now();
        let (ready_tx, mut ready_rx) = mpsc::channel(n);
        let url = format!(
            "{}v1/deployments/{}/events",
            daemon.client.base_url(),
            deployment.id
        );
        let subscribers: Vec<_> = (0..n)
            .map(|_| {
                tokio::spawn(subscribe(
                    http.clone(),
                    url.clone(),
                    ready_tx.clone(),
                    clock.start,
                ))
            })
            .collect();
        drop(ready_tx);
        for _ in 0..n {
            ready_rx
                .recv()
                .await
                .ok_or_else(|| anyhow::anyhow!("a subscriber ended before the build started"))?;
        }
        let go = Instant::now();
        env::touch(&daemon.data_dir.join(format!("go-{}", deployment.id)))?;
        let mut received = Vec::with_capacity(n);
        for s in subscribers {
            received.push(tokio::time::timeout(WAIT, s).await??);
        }
        let commits = commit_times(&raw, deployment.id).await?;
        let result = delays(&clock, &commits, received);
        let produced =
            (commits.last().map_or(0, |c| c.1) - commits.first().map_or(0, |c| c.1)) as f64 / 1e6;
        let last = result
            .last_receipt
            .saturating_duration_since(go)
            .as_secs_f64();
        table.row(vec![
            int(n as i64),
            int(result.checked as i64),
            int(result.errors as i64),
            num(result.p50_ms),
            num(result.p99_ms),
            num(result.max_ms),
            num(produced),
            num(last),
        ]);
        eprintln!(
            "fanout: {n} subscribers: p99 {:.1} ms, {} errors",
            result.p99_ms, result.errors
        );
        goal = Some((n, result));
    }
    daemon.stop().await?;
    if let Some((n, result)) = goal {
        report.goal(
            &format!("every subscriber gets every line in order ({n} subscribers)"),
            format!("{} errors in {} events", result.errors, result.checked),
            result.errors == 0,
        );
        report.goal(
            &format!("p99 delay ≤ 100 ms at {n} subscribers"),
            format!("{:.1} ms", result.p99_ms),
            result.p99_ms <= 100.0,
        );
    }
    report.note("errors: a missing, repeated or out-of-order event or line, or a stream that did not end with the final state event");
    Ok(report)
}

/// Wall-clock and monotonic time taken together, to place receipts
/// (monotonic) next to commit times (wall clock).
pub struct Clock {
    pub start: Instant,
    pub start_unix_us: i64,
}

impl Clock {
    pub fn now() -> Clock {
        let start = Instant::now();
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Clock {
            start,
            start_unix_us: unix.as_micros() as i64,
        }
    }
}

/// What one subscriber saw: receipt time (µs after the clock's start) of
/// each line, by line number, and the seq of each line.
struct Received {
    at_us: Vec<u32>,
    seqs: Vec<i64>,
    errors: usize,
    last: Instant,
}

/// Follow one stream to its end, checking order as it goes.
async fn subscribe(
    http: reqwest::Client,
    url: String,
    ready: mpsc::Sender<()>,
    start: Instant,
) -> anyhow::Result<Received> {
    let response = http
        .get(&url)
        .header("accept", "text/event-stream")
        .send()
        .await?
        .error_for_status()?;
    let mut body = response.bytes_stream();
    let mut seen = Received {
        at_us: Vec::with_capacity(LINES),
        seqs: Vec::with_capacity(LINES),
        errors: 0,
        last: Instant::now(),
    };
    let mut buffer: Vec<u8> = Vec::new();
    let mut last_seq = 0i64;
    let mut ready = Some(ready);
    let mut ended = false;
    while let Some(chunk) = body.next().await {
        let now = Instant::now();
        let at = now.duration_since(start).as_micros() as u32;
        buffer.extend_from_slice(&chunk?);
        while let Some(frame) = next_frame(&mut buffer) {
            let (seq, kind, data) = fields(&frame);
            let Some(seq) = seq else { continue };
            if seq != last_seq + 1 {
                seen.errors += 1;
            }
            last_seq = seq;
            match kind {
                "log" => {
                    let number = data
                        .split("\"line\":\"line ")
                        .nth(1)
                        .and_then(|rest| rest.split('"').next())
                        .and_then(|n| n.parse::<usize>().ok());
                    if number != Some(seen.at_us.len() + 1) {
                        seen.errors += 1;
                    }
                    seen.at_us.push(at);
                    seen.seqs.push(seq);
                    seen.last = now;
                }
                "state" if data.contains("\"to\":\"building\"") => {
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(()).await;
                    }
                }
                "state"
                    if data.contains("\"to\":\"succeeded\"")
                        || data.contains("\"to\":\"failed\"") =>
                {
                    ended = true
                }
                _ => {}
            }
        }
    }
    if !ended || seen.at_us.len() != LINES {
        seen.errors += 1;
    }
    Ok(seen)
}

/// Take the first whole SSE frame off `buffer`, if one has arrived.
pub fn next_frame(buffer: &mut Vec<u8>) -> Option<String> {
    let end = buffer.windows(2).position(|w| w == b"\n\n")?;
    let frame = String::from_utf8_lossy(&buffer[..end]).into_owned();
    buffer.drain(..end + 2);
    Some(frame)
}

/// A frame's seq (`id:`), kind (`event:`) and `data:`.
pub fn fields(frame: &str) -> (Option<i64>, &str, &str) {
    let (mut seq, mut kind, mut data) = (None, "", "");
    for line in frame.lines() {
        if let Some(v) = line.strip_prefix("id:") {
            seq = v.trim().parse::<i64>().ok();
        } else if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim();
        } else if let Some(v) = line.strip_prefix("data:") {
            data = v.trim();
        }
    }
    (seq, kind, data)
}

/// (seq, commit time in µs since the Unix epoch) of every log event.
pub async fn commit_times(raw: &Raw, id: Uuid) -> anyhow::Result<Vec<(i64, i64)>> {
    match raw {
        Raw::Pg(client) => {
            let rows = client
                .query("SELECT seq, created_at FROM deployment_events WHERE deployment_id = $1 AND kind = 'log' ORDER BY seq", &[&id])
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get::<_, chrono::DateTime<chrono::Utc>>(1).timestamp_micros())).collect())
        }
        Raw::Sqlite(conn) => Raw::sqlite(conn, move |c| {
            let mut stmt = c.prepare("SELECT seq, created_at FROM deployment_events WHERE deployment_id = ?1 AND kind = 'log' ORDER BY seq")?;
            let rows = stmt.query_map([id.to_string()], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (seq, at) = row?;
                let at = chrono::NaiveDateTime::parse_from_str(&at, "%Y-%m-%dT%H:%M:%S%.fZ")?.and_utc();
                out.push((seq, at.timestamp_micros()));
            }
            Ok(out)
        })
        .await,
    }
}

struct Delays {
    checked: usize,
    errors: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    last_receipt: Instant,
}

fn delays(
    clock: &Clock,
    commits: &[(i64, i64)],
    received: Vec<anyhow::Result<Received>>,
) -> Delays {
    let commit_of = |seq: i64| {
        commits
            .binary_search_by_key(&seq, |c| c.0)
            .ok()
            .map(|i| commits[i].1 - clock.start_unix_us)
    };
    let mut all: Vec<u32> = Vec::new();
    let mut errors = 0;
    let mut last_receipt = clock.start;
    for r in received {
        let Ok(r) = r else {
            errors += 1;
            continue;
        };
        errors += r.errors;
        last_receipt = last_receipt.max(r.last);
        for (at, seq) in r.at_us.iter().zip(&r.seqs) {
            match commit_of(*seq) {
                Some(commit) => all.push((i64::from(*at) - commit).max(0) as u32),
                None => errors += 1,
            }
        }
    }
    let checked = all.len();
    let pick = |all: &mut Vec<u32>, p: f64| -> f64 {
        if all.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0 * all.len() as f64).ceil() as usize).clamp(1, all.len()) - 1;
        f64::from(*all.select_nth_unstable(rank).1) / 1000.0
    };
    Delays {
        checked,
        errors,
        p50_ms: pick(&mut all, 50.0),
        p99_ms: pick(&mut all, 99.0),
        max_ms: pick(&mut all, 100.0),
        last_receipt,
    }
}
