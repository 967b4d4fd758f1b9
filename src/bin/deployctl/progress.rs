//! Rendering a deployment's progress stream until its final state: one line
//! per finished phase with how long it took, step output indented above it,
//! the queue position while queued, and a spinner for the phase in progress
//! when stdout is a terminal. `--output json` prints each event instead.
//!
//! Ctrl-C detaches and says how to come back or cancel: the deployment
//! belongs to the server and keeps running; so does `--timeout` running
//! out. Lines a step wrote to stderr are marked `!` (yellow on a terminal).
//! A failure ends with one summary line (phase, duration, error) and the
//! last stderr lines of the phase that failed.

use crate::style::{self, Paint};
use crate::{DETACHED, ENDED_BADLY, Failure, Output, SUCCEEDED, TIMED_OUT, show};
use chrono::{DateTime, Utc};
use deployd::client::Reconnect;
use deployd::client::{Client, ClientError, StreamEvent};
use deployd::machine::State;
use deployd::model::short_id;
use deployd::model::{Deployment, EventData, QueuedInfo, StateChange};
use futures::{Stream, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use uuid::Uuid;

/// Lines of a failed phase's stderr repeated under the failure summary.
const STDERR_TAIL: usize = 5;
/// stdout lines after the last stderr line that make it worth repeating.
const SCROLLED_AWAY: usize = 5;

/// Say on stderr that the stream is being picked up again: a watcher must
/// never sit silent while the daemon is away.
pub fn reconnecting(reconnect: &Reconnect) {
    eprintln!(
        "{}",
        Paint::Warn.err(&format!(
            "connection lost ({}); reconnecting in {:.1}s (attempt {} of {})",
            reconnect.reason,
            reconnect.after.as_secs_f64(),
            reconnect.attempt,
            reconnect.of
        ))
    );
}

/// Render `events` to the end, or until `timeout` has passed; the exit code
/// says how the deployment ended (or that we stopped waiting).
pub async fn watch(
    client: &Client,
    events: impl Stream<Item = Result<StreamEvent, ClientError>>,
    output: Output,
    timeout: Option<Duration>,
) -> Result<u8, Failure> {
    // Registered now, not on first poll as `tokio::signal::ctrl_c()` would
    // be: from the first line we print, Ctrl-C must detach, never kill.
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|error| Failure::Usage(format!("cannot watch for Ctrl-C: {error}")))?;
    let mut view = View::new(output);
    let _quiet = view.tty.then(QuietControlKeys::new);
    let mut events = std::pin::pin!(events);
    let deadline = timeout.map(|timeout| tokio::time::Instant::now() + timeout);
    let expired = async {
        match deadline {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        }
    };
    let mut expired = std::pin::pin!(expired);
    loop {
        let item = tokio::select! {
            item = events.next() => item,
            _ = interrupt.recv() => {
                view.detach("detached");
                view.json_as_it_stands(client).await;
                return Ok(DETACHED);
            }
            _ = &mut expired => {
                let waited = humantime::format_duration(timeout.unwrap_or_default());
                view.detach(&format!("gave up waiting after {waited} (--timeout)"));
                view.json_as_it_stands(client).await;
                return Ok(TIMED_OUT);
            }
        };
        match item {
            Some(Ok(event)) => {
                view.show(&event);
                if let EventData::State(change) = &event.data
                    && change.to.is_terminal()
                {
                    return Ok(view.finish(client, change).await);
                }
            }
            Some(Err(error)) => {
                view.lost();
                return Err(error.into());
            }
            None => {
                view.lost();
                let reason = "the stream ended before the deployment did".to_string();
                return Err(ClientError::Protocol(reason).into());
            }
        }
    }
}

/// While a spinner may be drawn, the terminal does not echo control keys:
/// indicatif pads the spinner's line to the terminal's width, so an echoed
/// `^C` wraps onto a row of its own, and clearing the spinner would then
/// clear that row and leave the spinner's last frame behind. Restores the
/// terminal's settings when dropped (a `kill -9` leaves `^C` unechoed, which
/// `stty echoctl` or `reset` puts back).
struct QuietControlKeys {
    saved: Option<libc::termios>,
}

impl QuietControlKeys {
    fn new() -> QuietControlKeys {
        let fd = libc::STDIN_FILENO;
        // SAFETY: termios is plain data; tcgetattr/tcsetattr only read and
        // write the one we pass, and fail harmlessly on a non-terminal.
        unsafe {
            if libc::isatty(fd) != 1 {
                return QuietControlKeys { saved: None };
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(fd, &mut saved) != 0 {
                return QuietControlKeys { saved: None };
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHOCTL;
            if libc::tcsetattr(fd, libc::TCSANOW, &quiet) != 0 {
                return QuietControlKeys { saved: None };
            }
            QuietControlKeys { saved: Some(saved) }
        }
    }
}

impl Drop for QuietControlKeys {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            // SAFETY: as in `new`; `saved` came from tcgetattr.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            }
        }
    }
}

struct View {
    json: bool,
    /// Spinners only on a terminal: a log file gets plain lines.
    tty: bool,
    spinner: Option<ProgressBar>,
    deployment: Option<Deployment>,
    /// When the phase in progress began, by the server's clock.
    phase_since: Option<DateTime<Utc>>,
    /// The deployment really waited in the queue (then `queued` gets a line).
    waited: bool,
    /// The last stderr lines of the phase in progress, for the summary.
    stderr_tail: std::collections::VecDeque<String>,
    /// stdout lines since the last stderr line.
    since_stderr: usize,
}

impl View {
    fn new(output: Output) -> View {
        View {
            json: output == Output::Json,
            tty: output == Output::Text && std::io::stdout().is_terminal(),
            spinner: None,
            deployment: None,
            phase_since: None,
            waited: false,
            stderr_tail: Default::default(),
            since_stderr: 0,
        }
    }

    fn id(&self) -> Option<Uuid> {
        self.deployment.as_ref().map(|deployment| deployment.id)
    }

    fn show(&mut self, event: &StreamEvent) {
        if let EventData::Deployment(deployment) = &event.data {
            self.phase_since.get_or_insert(deployment.created_at);
            self.deployment = Some((**deployment).clone());
        }
        if self.json {
            show::json_line(event);
            return;
        }
        match &event.data {
            EventData::Deployment(deployment) => self.started(deployment),
            EventData::State(change) => self.changed(change),
            EventData::Log(log) => self.log(log),
            EventData::Queued(queued) => self.queued(queued),
            EventData::Truncated(truncated) => self.line(&format!(
                "    … {} more lines of output dropped",
                truncated.dropped_lines
            )),
        }
    }

    /// A step's output line: stdout indented, stderr marked `!`.
    fn log(&mut self, log: &deployd::model::LogLine) {
        if log.stream == "stderr" {
            if self.stderr_tail.len() == STDERR_TAIL {
                self.stderr_tail.pop_front();
            }
            self.stderr_tail.push_back(log.line.clone());
            self.since_stderr = 0;
            self.line(&Paint::Warn.out(&format!("  ! {}", style::safe(&log.line))));
        } else {
            self.since_stderr += 1;
            self.line(&format!("    {}", style::safe(&log.line)));
        }
    }

    fn started(&mut self, deployment: &Deployment) {
        // "back to v10" would be wrong when v10 is newer than what is active.
        let what = match &deployment.rollback_to {
            Some(version) => format!(
                "rollback of {} on {}: re-activating {version}",
                deployment.app, deployment.cluster
            ),
            None if deployment.kind == deployd::machine::Kind::Rollback => {
                format!("rollback of {} on {}", deployment.app, deployment.cluster)
            }
            None => format!("deploying {} to {}", deployment.app, deployment.cluster),
        };
        let id = short_id(&deployment.id);
        self.line(&format!("deployment {}: {what}", Paint::Bold.out(&id)));
        if self.tty {
            self.line("  (Ctrl-C detaches; the deployment keeps running)");
        }
        if deployment.state == State::Queued {
            let message = match deployment.queue_position {
                Some(position) => format!("queued: position {position}"),
                None => "queued".to_string(),
            };
            self.spin(message, deployment.created_at);
        }
    }

    fn queued(&mut self, queued: &QueuedInfo) {
        self.waited = true;
        let message = format!(
            "queued: position {}, waiting for {}",
            queued.position,
            short_id(&queued.waiting_for)
        );
        match &self.spinner {
            Some(spinner) => spinner.set_message(message),
            None if self.tty => self.spin(message, self.phase_since.unwrap_or_else(Utc::now)),
            None => self.line(&message),
        }
    }

    fn changed(&mut self, change: &StateChange) {
        if change.from != State::Queued || self.waited {
            let mark = match change.to {
                State::Failed | State::Cancelled | State::Interrupted => "✗",
                _ => "✓",
            };
            let took = self
                .phase_since
                .map(|since| style::duration(change.at - since))
                .unwrap_or_default();
            let line = format!("{mark} {:<11}{took:>8}", change.from.as_str());
            self.line(&match mark {
                "✓" => Paint::Good.out(&line),
                _ => Paint::Bad.out(&line),
            });
        }
        if !change.to.is_terminal() {
            self.stderr_tail.clear();
            self.since_stderr = 0;
        }
        self.phase_since = Some(change.at);
        if change.to.is_terminal() {
            self.clear();
        } else {
            self.spin(change.to.to_string(), change.at);
        }
    }

    /// The summary line, with the version the server minted (in JSON, the
    /// Deployment as it ended is the last line); exit code.
    async fn finish(&mut self, client: &Client, change: &StateChange) -> u8 {
        self.clear();
        // The stream carries no version; the record has it.
        let current = match self.id() {
            Some(id) => client.get(id).await.ok(),
            None => None,
        };
        let ended = current.as_ref().or(self.deployment.as_ref());
        if self.json {
            if let Some(deployment) = ended {
                closing_line(deployment.clone());
            }
        } else {
            let line = summary(ended, change);
            println!("{}", ended_paint(change.to).out(&line));
            // Long output scrolls the cause away: bring the end of it back.
            if change.to != State::Succeeded
                && !self.stderr_tail.is_empty()
                && self.since_stderr >= SCROLLED_AWAY
            {
                println!("  last lines on stderr:");
                for line in &self.stderr_tail {
                    println!("{}", Paint::Warn.out(&format!("  ! {}", style::safe(line))));
                }
            }
        }
        match change.to {
            State::Succeeded => SUCCEEDED,
            _ => ENDED_BADLY,
        }
    }

    /// In JSON, the Deployment as it stands now, as the last line, so the
    /// last line of every stream is a Deployment (`--timeout`).
    async fn json_as_it_stands(&self, client: &Client) {
        let Some(id) = self.id().filter(|_| self.json) else {
            return;
        };
        if let Ok(deployment) = client.get(id).await {
            closing_line(deployment);
        }
    }

    /// Stop watching (Ctrl-C, `--timeout`): `why`, and how to come back.
    fn detach(&mut self, why: &str) {
        self.clear();
        match self.id() {
            Some(id) => {
                let id = short_id(&id);
                eprintln!("{why}; deployment {id} goes on without you on the server.");
                let again = crate::again();
                eprintln!("  follow it again: {again} watch {id}");
                eprintln!("  cancel it:       {again} cancel {id}");
            }
            None => eprintln!(
                "{why} before the server named the deployment; `deployctl status` shows it"
            ),
        }
    }

    /// The stream failed for good: say how to pick it up again.
    fn lost(&mut self) {
        self.clear();
        if let Some(id) = self.id() {
            let id = short_id(&id);
            eprintln!("lost the progress stream; deployment {id} goes on on the server.");
            eprintln!("  follow it again: {} watch {id}", crate::again());
        }
    }

    fn spin(&mut self, message: String, since: DateTime<Utc>) {
        if !self.tty {
            return;
        }
        self.clear();
        let style = ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .expect("the template is valid");
        let spinner = ProgressBar::with_draw_target(None, ProgressDrawTarget::stdout())
            .with_style(style)
            .with_message(message)
            .with_elapsed((Utc::now() - since).to_std().unwrap_or_default());
        spinner.enable_steady_tick(Duration::from_millis(120));
        self.spinner = Some(spinner);
    }

    fn clear(&mut self) {
        if let Some(spinner) = self.spinner.take() {
            spinner.finish_and_clear();
        }
    }

    /// Print above the spinner, if there is one.
    fn line(&self, text: &str) {
        match &self.spinner {
            Some(spinner) => spinner.println(text),
            None => println!("{text}"),
        }
    }
}

/// The colour of a line about how a deployment ended.
fn ended_paint(state: State) -> Paint {
    style::state_paint(state).unwrap_or(Paint::Bad)
}

/// The last line of a JSON stream: `deployment` as an event without a seq.
fn closing_line(deployment: Deployment) {
    show::json_line(&StreamEvent {
        seq: None,
        data: EventData::Deployment(Box::new(deployment)),
    });
}

/// One line: how it ended, in which phase, after how long, and why:
/// `✗ failed in building after 3.4s: build: exit code 3`.
fn summary(deployment: Option<&Deployment>, change: &StateChange) -> String {
    let took = deployment
        .map(|d| format!(" after {}", style::duration(change.at - d.created_at)))
        .unwrap_or_default();
    let superseded = deployment.and_then(|d| d.superseded_by);
    let error = change
        .error
        .as_deref()
        .or(deployment.and_then(|d| d.error.as_deref()))
        .and_then(|error| show::unstuttered(error, change.to));
    match (change.to, deployment) {
        (State::Succeeded, Some(d)) => format!(
            "✓ succeeded{took}: {} {} is active on {}",
            d.app,
            d.version.as_deref().unwrap_or("(version unknown)"),
            d.cluster
        ),
        (State::Succeeded, None) => format!("✓ succeeded{took}"),
        (to, _) => {
            let why = match (superseded, error) {
                (Some(by), _) => format!(": superseded by deployment {}", short_id(&by)),
                (None, Some(error)) => format!(": {}", style::one_line(error)),
                (None, None) => String::new(),
            };
            format!("✗ {to} in {}{took}{why}", change.from)
        }
    }
}

/// `deployctl logs`: deployment `id`'s output as stored now, with a heading
/// per phase, stderr marked; in JSON every stored event, one per line. Never
/// waits for more.
pub async fn logs(client: &Client, id: Uuid, output: Output) -> Result<u8, Failure> {
    let mut events = client.stored_events(id, None).await?;
    while let Some(event) = events.next().await {
        let event = event?;
        if output == Output::Json {
            show::json_line(&event);
            continue;
        }
        match &event.data {
            EventData::Deployment(deployment) => println!(
                "{}",
                Paint::Dim.out(&format!(
                    "deployment {} of {} on {}, created {}",
                    short_id(&deployment.id),
                    deployment.app,
                    deployment.cluster,
                    style::exact(deployment.created_at)
                ))
            ),
            EventData::State(change) if change.to.is_terminal() => {
                let line = format!("── {}", change.to);
                println!("{}", ended_paint(change.to).out(&line));
                if let Some(error) =
                    (change.error.as_deref()).and_then(|error| show::unstuttered(error, change.to))
                {
                    println!("   {}", style::one_line(error));
                }
            }
            EventData::State(change) => {
                println!("{}", Paint::Dim.out(&format!("── {}", change.to)))
            }
            EventData::Log(log) if log.stream == "stderr" => {
                println!(
                    "{}",
                    Paint::Warn.out(&format!("  ! {}", style::safe(&log.line)))
                )
            }
            EventData::Log(log) => println!("    {}", style::safe(&log.line)),
            EventData::Queued(_) => {}
            EventData::Truncated(truncated) => println!(
                "    … {} more lines of output dropped",
                truncated.dropped_lines
            ),
        }
    }
    Ok(SUCCEEDED)
}
