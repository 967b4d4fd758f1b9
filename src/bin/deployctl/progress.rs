//! Rendering a deployment's progress stream until its final state: one line
//! per finished phase with how long it took, step output indented above it,
//! the queue position while queued, and a spinner for the phase in progress
//! when stdout is a terminal. `--output json` prints each event instead.
//!
//! Ctrl-C detaches and says how to come back or cancel: the deployment
//! belongs to the server and keeps running.

use crate::{DETACHED, ENDED_BADLY, Failure, Output, SUCCEEDED, show};
use chrono::{DateTime, Utc};
use deployd::client::{Client, ClientError, StreamEvent};
use deployd::machine::State;
use deployd::model::{Deployment, EventData, QueuedInfo, StateChange};
use futures::{Stream, StreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};
use uuid::Uuid;

/// Render `events` to the end; the exit code says how the deployment ended.
pub async fn watch(
    client: &Client,
    events: impl Stream<Item = Result<StreamEvent, ClientError>>,
    output: Output,
) -> Result<u8, Failure> {
    // Registered now, not on first poll as `tokio::signal::ctrl_c()` would
    // be: from the first line we print, Ctrl-C must detach, never kill.
    let mut interrupt = signal(SignalKind::interrupt())
        .map_err(|error| Failure::Usage(format!("cannot watch for Ctrl-C: {error}")))?;
    let mut view = View::new(output);
    let mut events = std::pin::pin!(events);
    loop {
        let item = tokio::select! {
            item = events.next() => item,
            _ = interrupt.recv() => {
                view.detach();
                return Ok(DETACHED);
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
            EventData::Log(log) => self.line(&format!("    {}", log.line)),
            EventData::Queued(queued) => self.queued(queued),
            EventData::Truncated(truncated) => self.line(&format!(
                "    … {} more lines of output dropped",
                truncated.dropped_lines
            )),
        }
    }

    fn started(&mut self, deployment: &Deployment) {
        let what = match &deployment.rollback_to {
            Some(version) => format!(
                "rolling {} on {} back to {version}",
                deployment.app, deployment.cluster
            ),
            None if deployment.kind == deployd::machine::Kind::Rollback => {
                format!("rolling {} on {} back", deployment.app, deployment.cluster)
            }
            None => format!("deploying {} to {}", deployment.app, deployment.cluster),
        };
        self.line(&format!("deployment {}: {what}", deployment.id));
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
            queued.position, queued.waiting_for
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
                .map(|since| show::duration(change.at - since))
                .unwrap_or_default();
            self.line(&format!("{mark} {:<11}{took:>8}", change.from.as_str()));
        }
        self.phase_since = Some(change.at);
        if change.to.is_terminal() {
            self.clear();
        } else {
            self.spin(change.to.to_string(), change.at);
        }
    }

    /// The summary line, with the version the server minted; exit code.
    async fn finish(&mut self, client: &Client, change: &StateChange) -> u8 {
        self.clear();
        if !self.json {
            // The stream carries no version; the record has it.
            let current = match self.id() {
                Some(id) => client.get(id).await.ok(),
                None => None,
            };
            println!(
                "{}",
                summary(current.as_ref().or(self.deployment.as_ref()), change)
            );
        }
        match change.to {
            State::Succeeded => SUCCEEDED,
            _ => ENDED_BADLY,
        }
    }

    fn detach(&mut self) {
        self.clear();
        match self.id() {
            Some(id) => {
                eprintln!("detached; deployment {id} keeps running on the server.");
                eprintln!("  follow it again: deployctl watch {id}");
                eprintln!("  cancel it:       deployctl cancel {id}");
            }
            None => eprintln!(
                "detached before the server named the deployment; `deployctl status` shows it"
            ),
        }
    }

    /// The stream failed for good: say how to pick it up again.
    fn lost(&mut self) {
        self.clear();
        if let Some(id) = self.id() {
            eprintln!("lost the progress stream; deployment {id} keeps running on the server.");
            eprintln!("  follow it again: deployctl watch {id}");
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

fn summary(deployment: Option<&Deployment>, change: &StateChange) -> String {
    let error = change
        .error
        .as_deref()
        .or(deployment.and_then(|d| d.error.as_deref()))
        .map(|error| format!(": {error}"))
        .unwrap_or_default();
    let took = deployment
        .map(|d| format!(" ({})", show::duration(change.at - d.created_at)))
        .unwrap_or_default();
    match (change.to, deployment) {
        (State::Succeeded, Some(d)) => format!(
            "succeeded: {} {} is active on {}{took}",
            d.app,
            d.version.as_deref().unwrap_or("(version unknown)"),
            d.cluster
        ),
        (State::Succeeded, None) => format!("succeeded{took}"),
        (
            State::Cancelled,
            Some(Deployment {
                superseded_by: Some(by),
                ..
            }),
        ) => format!("cancelled in {}: superseded by {by}{took}", change.from),
        (to, _) => format!("{to} in {}{error}{took}", change.from),
    }
}
