//! Cross-instance stream latency: one deployment runs on instance A; k
//! subscribers on A and k on B read its progress stream at once. A's own
//! subscribers get each event from A's broadcast (the baseline); B's hear
//! of it from PostgreSQL's NOTIFY and re-read it from the store.
//!
//! The build is `cat` of a named pipe in A's data dir, so the harness
//! decides what it prints and when: once every subscriber saw `building`,
//! it writes LINES lines, one every PERIOD, each carrying the time it was
//! written (`line <n> <µs on the harness's clock>`), then closes the pipe,
//! which ends the build. Two delays per line:
//! - sent → received: the pipe, A's output pump and store commit, then A's
//!   broadcast, or the NOTIFY and B's re-read; one clock at both ends;
//! - committed → received: from the event row's `created_at` (as in
//!   fanout: the appending transaction's start, so a little long).
//!
//! Every subscriber checks every event: seqs 1, 2, … with no gap or repeat,
//! every line in order, and the stream ending with `succeeded`.

use super::Fleet;
use crate::daemon::{self, Daemon};
use crate::fanout::{Clock, commit_times, fields, next_frame};
use crate::report::{Report, Stats, int, num, text};
use deployd::machine::State;
use deployd::model::{DeployRequest, LogLine, StateChange};
use futures::StreamExt;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::io::AsRawFd as _;
use std::path::Path;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const PERIOD: Duration = Duration::from_millis(1);
const WAIT: Duration = Duration::from_secs(300);
/// The build: relay the pipe the harness writes to, once it exists.
const RELAY: &str = "f=\"$DEPLOY_DATA_DIR/lines-$DEPLOY_ID\"; while [ ! -p \"$f\" ]; do sleep 0.01; done; exec cat \"$f\"";

pub async fn measure(env: &crate::env::Env, report: &mut Report) -> anyhow::Result<()> {
    let (lines, audiences): (usize, &[usize]) = if env.quick {
        (300, &[1, 3])
    } else {
        (2000, &[1, 10])
    };
    let relay = daemon::cluster(Some(&["/bin/sh", "-c", RELAY]), None, None);
    let fleet = Fleet::start(env, 2, &[("paced", relay)]).await?;
    let source = fleet.upload("stream").await?;
    let mut rounds = Vec::new();
    for &k in audiences {
        let round = round(&fleet, &source, k, lines).await?;
        eprintln!(
            "instances: stream, {k} subscribers each: p99 on A {:.1} ms, on B {:.1} ms, errors on B {}",
            round.a.sent.p99_ms, round.b.sent.p99_ms, round.b.errors
        );
        rounds.push((k, round));
    }
    fleet.stop().await?;
    tabulate(report, lines, &rounds);
    Ok(())
}

/// The rounds' figures, B ÷ A, and the verdict on B's completeness.
fn tabulate(report: &mut Report, lines: usize, rounds: &[(usize, Round)]) {
    let table = report.table(
        &format!(
            "{lines} lines, one every {} ms, of a build running on A, read on A and on B at once",
            PERIOD.as_secs_f64() * 1000.0
        ),
        &[
            "subscribers each",
            "read on",
            "events checked",
            "errors",
            "sent→received p50 ms",
            "p99 ms",
            "max ms",
            "committed→received p50 ms",
            "p99 ms",
            "store calls per line",
            "lines written in s",
            "committed within s",
        ],
    );
    for (k, round) in rounds {
        for (side, seen) in [("A (runs it)", &round.a), ("B (NOTIFY)", &round.b)] {
            table.row(vec![
                int(*k as i64),
                text(side),
                int(seen.sent.n as i64),
                int(seen.errors as i64),
                num(seen.sent.p50_ms),
                num(seen.sent.p99_ms),
                num(seen.sent.max_ms),
                num(seen.committed.p50_ms),
                num(seen.committed.p99_ms),
                num(seen.store_calls as f64 / lines as f64),
                num(round.written.as_secs_f64()),
                num(round.committed_within.as_secs_f64()),
            ]);
        }
    }
    let ratios = report.table(
        "B ÷ A: what reading on another instance adds",
        &[
            "subscribers each",
            "sent→received p50",
            "p99",
            "committed→received p50",
            "p99",
        ],
    );
    for (k, round) in rounds {
        let (a, b) = (&round.a, &round.b);
        ratios.row(vec![
            int(*k as i64),
            num(b.sent.p50_ms / a.sent.p50_ms),
            num(b.sent.p99_ms / a.sent.p99_ms),
            num(b.committed.p50_ms / a.committed.p50_ms),
            num(b.committed.p99_ms / a.committed.p99_ms),
        ]);
    }
    let (checked, errors) =
        (rounds.iter()).fold((0, 0), |(n, e), (_, r)| (n + r.b.sent.n, e + r.b.errors));
    report.goal(
        "every event reaches B's subscribers, in order, no gap",
        format!("{errors} errors in {checked} lines"),
        errors == 0,
    );
    report.note(
        "errors: a missing, repeated or out-of-order event or line, a stream that did not end with \
         `succeeded`, or subscribers that disagree on the last seq",
    );
    report.note(
        "store calls per line: the instance's store calls (its /metrics) from the first line written \
         to the last stream's end, ÷ lines; A's include storing the lines, B's are its followers' re-reads",
    );
}

/// What one round measured on each side.
struct Round {
    a: Side,
    b: Side,
    /// How long writing every line took (PERIOD × lines if on pace).
    written: Duration,
    /// From the first line's commit to the last one's.
    committed_within: Duration,
}

/// Delays over every line every subscriber on one instance received.
struct Side {
    sent: Stats,
    committed: Stats,
    errors: usize,
    /// Store calls the instance made during the round.
    store_calls: u64,
}

/// One deployment on A, `k` subscribers on each of A and B.
async fn round(fleet: &Fleet, source: &str, k: usize, lines: usize) -> anyhow::Result<Round> {
    let (a, b) = (&fleet.instances[0], &fleet.instances[1]);
    let app = format!("stream-{k}");
    let request = DeployRequest {
        source: source.to_string(),
        git: None,
        message: None,
        on_conflict: None,
        idempotency_key: None,
    };
    let deployment = a.client.deploy(&app, "paced", &request).await?;
    let owner = fleet
        .owners()
        .await?
        .get(&(app, "paced".into()))
        .map(|o| o.0);
    anyhow::ensure!(
        owner == Some(0),
        "A was to run it, but {owner:?} owns the target"
    );
    let pipe = a.data_dir.join(format!("lines-{}", deployment.id));
    mkfifo(&pipe)?;

    let clock = Clock::now();
    let http = reqwest::Client::new();
    let (ready_tx, mut ready_rx) = mpsc::channel(2 * k);
    let follow = |on: &Daemon| {
        let url = format!(
            "{}v1/deployments/{}/events",
            on.client.base_url(),
            deployment.id
        );
        tokio::spawn(subscribe(
            http.clone(),
            url,
            ready_tx.clone(),
            clock.start,
            lines,
        ))
    };
    let on_a: Vec<_> = (0..k).map(|_| follow(a)).collect();
    let on_b: Vec<_> = (0..k).map(|_| follow(b)).collect();
    drop(ready_tx);
    for _ in 0..2 * k {
        (ready_rx.recv().await)
            .ok_or_else(|| anyhow::anyhow!("a subscriber ended before the build started"))?;
    }
    let calls_before = [store_calls(&http, a).await?, store_calls(&http, b).await?];
    let start = clock.start;
    let written = tokio::task::spawn_blocking(move || write_lines(&pipe, lines, start));
    let written = tokio::time::timeout(WAIT, written).await???;
    let mut seen = Vec::with_capacity(2 * k);
    for subscriber in on_a.into_iter().chain(on_b) {
        seen.push(tokio::time::timeout(WAIT, subscriber).await???);
    }
    let calls_on_a = store_calls(&http, a).await? - calls_before[0];
    let calls_on_b = store_calls(&http, b).await? - calls_before[1];

    let commits = commit_times(&fleet.raw, deployment.id).await?;
    let committed_within = match (commits.first(), commits.last()) {
        (Some(first), Some(last)) => Duration::from_micros((last.1 - first.1).max(0) as u64),
        _ => Duration::ZERO,
    };
    // Every subscriber, on either side, must end at the same seq.
    let last_seqs: std::collections::BTreeSet<i64> = seen.iter().map(|s| s.last_seq).collect();
    let disagree = usize::from(last_seqs.len() > 1);
    let on_b = seen.split_off(k);
    Ok(Round {
        a: side(&clock, &commits, &seen, disagree, calls_on_a),
        b: side(&clock, &commits, &on_b, disagree, calls_on_b),
        written,
        committed_within,
    })
}

/// What one subscriber saw: per line, when it was sent and received (µs on
/// the round's clock) and its seq.
struct Seen {
    lines: Vec<(u64, u64, i64)>,
    last_seq: i64,
    errors: usize,
}

/// Follow one stream to its end, checking every event as it comes.
async fn subscribe(
    http: reqwest::Client,
    url: String,
    ready: mpsc::Sender<()>,
    start: Instant,
    lines: usize,
) -> anyhow::Result<Seen> {
    let response = (http.get(&url))
        .header("accept", "text/event-stream")
        .send()
        .await?
        .error_for_status()?;
    let mut body = response.bytes_stream();
    let mut seen = Seen {
        lines: Vec::with_capacity(lines),
        last_seq: 0,
        errors: 0,
    };
    let mut buffer = Vec::new();
    let mut ready = Some(ready);
    let mut ended = None;
    while let Some(chunk) = body.next().await {
        let received = start.elapsed().as_micros() as u64;
        buffer.extend_from_slice(&chunk?);
        while let Some(frame) = next_frame(&mut buffer) {
            let (seq, kind, data) = fields(&frame);
            let Some(seq) = seq else { continue };
            if seq != seen.last_seq + 1 {
                seen.errors += 1;
            }
            seen.last_seq = seq;
            match kind {
                "log" => match serde_json::from_str::<LogLine>(data).ok().and_then(stamp) {
                    Some((n, sent)) if n == seen.lines.len() + 1 => {
                        seen.lines.push((sent, received, seq))
                    }
                    _ => seen.errors += 1,
                },
                "state" => {
                    let change: StateChange = serde_json::from_str(data)?;
                    if change.to == State::Building
                        && let Some(ready) = ready.take()
                    {
                        let _ = ready.send(()).await;
                    }
                    if change.to.is_terminal() {
                        ended = Some(change.to);
                    }
                }
                _ => {}
            }
        }
    }
    if ended != Some(State::Succeeded) || seen.lines.len() != lines {
        seen.errors += 1;
    }
    Ok(seen)
}

/// `line <n> <sent µs>` → (n, sent µs).
fn stamp(log: LogLine) -> Option<(usize, u64)> {
    let mut words = log.line.strip_prefix("line ")?.split(' ');
    Some((words.next()?.parse().ok()?, words.next()?.parse().ok()?))
}

/// The delays of every line `seen` by one side's subscribers.
fn side(
    clock: &Clock,
    commits: &[(i64, i64)],
    seen: &[Seen],
    disagree: usize,
    store_calls: u64,
) -> Side {
    let mut sent = Vec::new();
    let mut committed = Vec::new();
    let mut errors = disagree;
    for subscriber in seen {
        errors += subscriber.errors;
        for &(at, received, seq) in &subscriber.lines {
            sent.push(Duration::from_micros(received.saturating_sub(at)));
            match commits.binary_search_by_key(&seq, |c| c.0) {
                Ok(i) => {
                    let received_unix = clock.start_unix_us + received as i64;
                    let delay = (received_unix - commits[i].1).max(0) as u64;
                    committed.push(Duration::from_micros(delay));
                }
                Err(_) => errors += 1,
            }
        }
    }
    Side {
        sent: Stats::of(&mut sent),
        committed: Stats::of(&mut committed),
        errors,
        store_calls,
    }
}

/// How many store calls instance `on` has made so far, from its /metrics.
async fn store_calls(http: &reqwest::Client, on: &Daemon) -> anyhow::Result<u64> {
    let url = format!("{}metrics", on.client.base_url());
    let text = http
        .get(url)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    (text.lines())
        .find_map(|line| line.strip_prefix("deployd_store_call_duration_seconds_count "))
        .and_then(|count| count.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no store call count in /metrics"))
}

/// Write `lines` stamped lines into `pipe`, one every PERIOD, once the
/// build's `cat` has it open; closing it ends the build. Answers how long
/// the writing took.
fn write_lines(pipe: &Path, lines: usize, start: Instant) -> anyhow::Result<Duration> {
    let mut out = open_when_read(pipe)?;
    let began = Instant::now();
    for n in 1..=lines {
        let due = began + PERIOD * (n as u32 - 1);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let line = format!("line {n} {}\n", start.elapsed().as_micros());
        out.write_all(line.as_bytes())?;
    }
    Ok(began.elapsed())
}

/// Open `pipe` for writing once a reader has it open (so no line waits in
/// the pipe before the build reads it), then write to it blocking.
fn open_when_read(pipe: &Path) -> anyhow::Result<std::fs::File> {
    let deadline = Instant::now() + WAIT;
    let file = loop {
        let opened = (std::fs::OpenOptions::new().write(true))
            .custom_flags(libc::O_NONBLOCK)
            .open(pipe);
        match opened {
            Ok(file) => break file,
            // No reader yet.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1))
            }
            Err(e) => anyhow::bail!("cannot open {} for the build: {e}", pipe.display()),
        }
    };
    // SAFETY: fcntl on a descriptor this function owns.
    let cleared = unsafe {
        let flags = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(file.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK)
    };
    anyhow::ensure!(cleared == 0, "cannot make {} blocking", pipe.display());
    Ok(file)
}

fn mkfifo(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: a NUL-terminated path that outlives the call.
    if unsafe { libc::mkfifo(name.as_ptr(), 0o600) } != 0 {
        let e = std::io::Error::last_os_error();
        anyhow::bail!("cannot make the pipe {}: {e}", path.display());
    }
    Ok(())
}
