//! The process's metrics, rendered as Prometheus text for `GET /metrics`.
//!
//! A small registry of atomics, so recording is a few relaxed atomic adds and
//! never blocks or allocates: deployments by outcome, phase durations,
//! actor restarts, store latency and compaction. What the process already
//! holds (resident actors, their queues, open streams) is read at scrape time
//! and passed to [`Metrics::render`] as [`Live`] instead of being mirrored
//! here, so it cannot drift.
//!
//! The daemon records into the one [`global`] registry; tests may build their
//! own with [`Metrics::new`]. What must stay true: every series name starts
//! with `deployd_`, and counters only go up.

mod timed_store;

pub use timed_store::TimedStore;

use crate::machine::State;
use std::fmt::Write;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// The text format version `render` writes, for the Content-Type header.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The ends of deployments, in the order their counters are kept.
const OUTCOMES: [State; 4] = [
    State::Succeeded,
    State::Failed,
    State::Cancelled,
    State::Interrupted,
];

/// The phases a deployment spends time in, in the order their histograms are kept.
const PHASES: [State; 4] = [
    State::Queued,
    State::Building,
    State::Pushing,
    State::Activating,
];

/// Upper bounds (seconds) for phases: a queue wait or a step, from a blink
/// to the longest step timeout anyone configures.
const PHASE_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// Upper bounds (seconds) for one store call: sub-millisecond SQLite reads up
/// to a PostgreSQL that is struggling.
const STORE_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The registry the daemon records into.
pub fn global() -> &'static Metrics {
    static GLOBAL: OnceLock<Metrics> = OnceLock::new();
    GLOBAL.get_or_init(Metrics::new)
}

/// Values read at scrape time rather than recorded as they change.
#[derive(Debug, Clone, Copy, Default)]
pub struct Live {
    pub resident_actors: usize,
    /// Deployments queued behind a running one, over the resident actors.
    pub queue_depth: usize,
    pub stream_subscribers: usize,
}

pub struct Metrics {
    deployments: [AtomicU64; OUTCOMES.len()],
    phases: [Histogram; PHASES.len()],
    actor_restarts: AtomicU64,
    store: Histogram,
    compaction_runs: AtomicU64,
    compaction_failures: AtomicU64,
    compaction_deployments: AtomicU64,
    compaction_versions: AtomicU64,
    compaction_last_seconds: AtomicF64,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        Metrics {
            deployments: Default::default(),
            phases: PHASES.map(|_| Histogram::new(PHASE_BUCKETS)),
            actor_restarts: AtomicU64::new(0),
            store: Histogram::new(STORE_BUCKETS),
            compaction_runs: AtomicU64::new(0),
            compaction_failures: AtomicU64::new(0),
            compaction_deployments: AtomicU64::new(0),
            compaction_versions: AtomicU64::new(0),
            compaction_last_seconds: AtomicF64::default(),
        }
    }

    /// A deployment ended in `outcome`; a non-terminal state is ignored.
    pub fn deployment_finished(&self, outcome: State) {
        if let Some(i) = OUTCOMES.iter().position(|s| *s == outcome) {
            self.deployments[i].fetch_add(1, Relaxed);
        }
    }

    /// A deployment left `phase` after `secs` in it; a terminal state is ignored.
    pub fn phase_finished(&self, phase: State, secs: f64) {
        if let Some(i) = PHASES.iter().position(|s| *s == phase) {
            self.phases[i].observe(secs);
        }
    }

    /// The supervisor restarted a target's actor after a crash.
    pub fn actor_restarted(&self) {
        self.actor_restarts.fetch_add(1, Relaxed);
    }

    /// One store call took `secs`.
    pub fn observe_store(&self, secs: f64) {
        self.store.observe(secs);
    }

    /// A compaction step deleted these; counted as it happens, so a run that
    /// fails half-way still shows what it did.
    pub fn compaction_deleted(&self, deployments: u64, versions: u64) {
        self.compaction_deployments.fetch_add(deployments, Relaxed);
        self.compaction_versions.fetch_add(versions, Relaxed);
    }

    /// A compaction run ended after `secs`, successfully or not.
    pub fn compaction_run(&self, ok: bool, secs: f64) {
        self.compaction_runs.fetch_add(1, Relaxed);
        if !ok {
            self.compaction_failures.fetch_add(1, Relaxed);
        }
        self.compaction_last_seconds.set(secs);
    }

    /// Everything, in the Prometheus text format (version 0.0.4).
    pub fn render(&self, live: Live) -> String {
        let mut out = Text::default();
        out.header(
            "deployd_deployments_finished_total",
            "Deployments that ended, by outcome.",
            "counter",
        );
        for (outcome, count) in OUTCOMES.iter().zip(&self.deployments) {
            let labels = format!("outcome=\"{outcome}\"");
            out.sample(
                "deployd_deployments_finished_total",
                &labels,
                count.load(Relaxed),
            );
        }
        out.header(
            "deployd_phase_duration_seconds",
            "Time deployments spent in each phase (queued is the wait for the target).",
            "histogram",
        );
        for (phase, histogram) in PHASES.iter().zip(&self.phases) {
            histogram.render(
                &mut out,
                "deployd_phase_duration_seconds",
                &format!("phase=\"{phase}\""),
            );
        }
        out.gauge(
            "deployd_queue_depth",
            "Deployments waiting in a target's queue.",
            live.queue_depth,
        );
        out.gauge(
            "deployd_resident_actors",
            "Target actors resident in this process.",
            live.resident_actors,
        );
        out.counter(
            "deployd_actor_restarts_total",
            "Target actors restarted by the supervisor after a crash.",
            self.actor_restarts.load(Relaxed),
        );
        out.gauge(
            "deployd_stream_subscribers",
            "Open progress streams.",
            live.stream_subscribers,
        );
        out.header(
            "deployd_store_call_duration_seconds",
            "Duration of calls to the store.",
            "histogram",
        );
        self.store
            .render(&mut out, "deployd_store_call_duration_seconds", "");
        out.counter(
            "deployd_compaction_runs_total",
            "Compaction runs, failed ones included.",
            self.compaction_runs.load(Relaxed),
        );
        out.counter(
            "deployd_compaction_failures_total",
            "Compaction runs that ended with an error.",
            self.compaction_failures.load(Relaxed),
        );
        out.counter(
            "deployd_compaction_deleted_deployments_total",
            "Deployments (with their events) deleted by compaction.",
            self.compaction_deployments.load(Relaxed),
        );
        out.counter(
            "deployd_compaction_deleted_versions_total",
            "Versions deleted by compaction.",
            self.compaction_versions.load(Relaxed),
        );
        out.gauge(
            "deployd_compaction_last_duration_seconds",
            "How long the last compaction run took.",
            self.compaction_last_seconds.get(),
        );
        out.0
    }
}

/// A histogram with fixed upper bounds. Buckets are stored per range and
/// summed when rendered, so an observation touches one bucket.
struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then one for "above every bound".
    buckets: Vec<AtomicU64>,
    sum: AtomicF64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicF64::default(),
        }
    }

    fn observe(&self, value: f64) {
        let i = self.bounds.partition_point(|bound| *bound < value);
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum.add(value);
    }

    /// The `_bucket`, `_sum` and `_count` lines, each with `labels` (may be empty).
    fn render(&self, out: &mut Text, name: &str, labels: &str) {
        let with = |extra: String| match labels {
            "" => extra,
            _ => format!("{labels},{extra}"),
        };
        let mut cumulative = 0;
        for (i, bucket) in self.buckets.iter().enumerate() {
            cumulative += bucket.load(Relaxed);
            let le = match self.bounds.get(i) {
                Some(bound) => bound.to_string(),
                None => "+Inf".to_string(),
            };
            let labels = with(format!("le=\"{le}\""));
            out.sample(&format!("{name}_bucket"), &labels, cumulative);
        }
        out.sample(&format!("{name}_sum"), labels, self.sum.get());
        // The count is the +Inf bucket, so the two always agree.
        out.sample(&format!("{name}_count"), labels, cumulative);
    }
}

/// An f64 kept as its bits in an `AtomicU64`.
#[derive(Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Relaxed))
    }

    fn set(&self, value: f64) {
        self.0.store(value.to_bits(), Relaxed);
    }

    fn add(&self, value: f64) {
        // The closure always returns Some, so the update cannot fail.
        let _ = self.0.fetch_update(Relaxed, Relaxed, |bits| {
            Some((f64::from_bits(bits) + value).to_bits())
        });
    }
}

/// The exposition being written. Writing to a `String` cannot fail, so the
/// `fmt::Result`s are dropped here once.
#[derive(Default)]
struct Text(String);

impl Text {
    fn header(&mut self, name: &str, help: &str, kind: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = match labels {
            "" => writeln!(self.0, "{name} {value}"),
            _ => writeln!(self.0, "{name}{{{labels}}} {value}"),
        };
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.header(name, help, "counter");
        self.sample(name, "", value);
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.header(name, help, "gauge");
        self.sample(name, "", value);
    }
}

#[cfg(test)]
mod tests;
