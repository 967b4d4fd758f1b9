//! A daemon's metrics, rendered in the OpenMetrics text format for
//! `GET /metrics` by the `prometheus-client` crate.
//!
//! One [`Metrics`] per daemon instance, made with [`Metrics::new`] and handed
//! to what records into it, so a test can assert exact counts. Recording is
//! an atomic add on a handle kept at construction (a histogram takes a
//! short lock), never a lookup or an allocation: deployments by outcome,
//! phase durations, actor restarts, store latency and compaction. What the
//! process already holds (resident actors, their queues, open streams) is
//! read at scrape time and passed to [`Metrics::render`] as [`Live`] instead
//! of being mirrored here, so it cannot drift.
//!
//! What must stay true: every series name starts with `deployd_` (the
//! registry's prefix), counters only go up, and the series (names, labels
//! and meanings) stay those scrapers know.

mod timed_store;

pub use timed_store::TimedStore;

use crate::machine::State;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

/// The exposition format `render` writes, for the Content-Type header.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

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

/// Values read at scrape time rather than recorded as they change.
#[derive(Debug, Clone, Default)]
pub struct Live {
    pub resident_actors: usize,
    /// Deployments queued behind a running one, over the resident actors.
    pub queue_depth: usize,
    pub stream_subscribers: usize,
    /// Targets whose last restore failed (`None`: the store did not answer;
    /// the gauge keeps its last value).
    pub drifted_targets: Option<usize>,
    /// Every live instance on the store, this one included (`None`: the
    /// store did not answer; the series keep their last values).
    pub instances: Option<Vec<LiveInstance>>,
}

/// One live instance as the store knows it, for the per-instance series.
#[derive(Debug, Clone)]
pub struct LiveInstance {
    pub id: String,
    pub targets_owned: usize,
    /// Seconds since its last heartbeat.
    pub heartbeat_age: f64,
}

type ByInstance<M> = Family<[(&'static str, String); 1], M>;

/// One daemon's metrics: the registry and a handle on every series in it.
pub struct Metrics {
    registry: Registry,
    deployments: [Counter; OUTCOMES.len()],
    phases: [Histogram; PHASES.len()],
    actor_restarts: Counter,
    store: Histogram,
    compaction_runs: Counter,
    compaction_failures: Counter,
    compaction_deployments: Counter,
    compaction_versions: Counter,
    compaction_last_seconds: Gauge<f64, AtomicU64>,
    data_dir_bytes: [Gauge; AREAS.len()],
    data_dir_entries: [Gauge; AREAS.len()],
    data_dir_removed: [Counter; AREAS.len()],
    cleanup_failures: Counter,
    resident_actors: Gauge,
    queue_depth: Gauge,
    drifted_targets: Gauge,
    stream_subscribers: Gauge,
    instance_targets: ByInstance<Gauge>,
    instance_heartbeat_age: ByInstance<Gauge<f64, AtomicU64>>,
    /// Held while the [`Live`] gauges are set and the text encoded, so a
    /// rendering shows the `Live` it was given even beside another scrape.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// The areas of the data dir the metrics report on, as `area` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Area {
    Sources = 0,
    Work = 1,
    Releases = 2,
}

impl Area {
    pub fn as_str(self) -> &'static str {
        match self {
            Area::Sources => "sources",
            Area::Work => "work",
            Area::Releases => "releases",
        }
    }
}

const AREAS: [Area; 3] = [Area::Sources, Area::Work, Area::Releases];

type Labelled<M> = Family<[(&'static str, &'static str); 1], M, fn() -> M>;

impl Metrics {
    /// A registry with every series at zero, registered in the order they are
    /// rendered. (The crate adds the `deployd_` prefix, a counter's `_total`,
    /// a unit's `_seconds` and the full stop that ends each help text.)
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("deployd");

        let deployments: Labelled<Counter> = Family::new_with_constructor(Counter::default);
        let deployment_handles = OUTCOMES.map(|s| {
            deployments
                .get_or_create(&[("outcome", s.as_str())])
                .clone()
        });
        registry.register(
            "deployments_finished",
            "Deployments that ended, by outcome",
            deployments,
        );

        let phases: Labelled<Histogram> = Family::new_with_constructor(phase_histogram);
        let phase_handles = PHASES.map(|s| phases.get_or_create(&[("phase", s.as_str())]).clone());
        registry.register_with_unit(
            "phase_duration",
            "Time deployments spent in each phase (queued is the wait for the target)",
            Unit::Seconds,
            phases,
        );

        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Deployments waiting in a target's queue",
            queue_depth.clone(),
        );
        let drifted_targets = Gauge::default();
        registry.register(
            "drifted_targets",
            "Targets whose cluster may not run the active version: their last restore failed",
            drifted_targets.clone(),
        );
        let resident_actors = Gauge::default();
        registry.register(
            "resident_actors",
            "Target actors resident in this process",
            resident_actors.clone(),
        );
        let actor_restarts = Counter::default();
        registry.register(
            "actor_restarts",
            "Target actors restarted by the supervisor after a crash",
            actor_restarts.clone(),
        );
        let stream_subscribers = Gauge::default();
        registry.register(
            "stream_subscribers",
            "Open progress streams",
            stream_subscribers.clone(),
        );
        let store = Histogram::new(STORE_BUCKETS.iter().copied());
        registry.register_with_unit(
            "store_call_duration",
            "Duration of calls to the store",
            Unit::Seconds,
            store.clone(),
        );
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let compaction_runs = counter(
            &mut registry,
            "compaction_runs",
            "Compaction runs, failed ones included",
        );
        let compaction_failures = counter(
            &mut registry,
            "compaction_failures",
            "Compaction runs that ended with an error",
        );
        let compaction_deployments = counter(
            &mut registry,
            "compaction_deleted_deployments",
            "Deployments (with their events) deleted by compaction",
        );
        let compaction_versions = counter(
            &mut registry,
            "compaction_deleted_versions",
            "Versions deleted by compaction",
        );
        let compaction_last_seconds = Gauge::<f64, AtomicU64>::default();
        registry.register_with_unit(
            "compaction_last_duration",
            "How long the last compaction run took",
            Unit::Seconds,
            compaction_last_seconds.clone(),
        );

        let bytes: Labelled<Gauge> = Family::new_with_constructor(Gauge::default);
        let data_dir_bytes = AREAS.map(|a| bytes.get_or_create(&[("area", a.as_str())]).clone());
        registry.register_with_unit(
            "data_dir",
            "Bytes on disk in each area of the data dir, as the last sweep measured them",
            Unit::Bytes,
            bytes,
        );
        let entries: Labelled<Gauge> = Family::new_with_constructor(Gauge::default);
        let data_dir_entries =
            AREAS.map(|a| entries.get_or_create(&[("area", a.as_str())]).clone());
        registry.register(
            "data_dir_entries",
            "Sources, workspaces or release directories in each area, as the last sweep counted them",
            entries,
        );
        let removed: Labelled<Counter> = Family::new_with_constructor(Counter::default);
        let data_dir_removed =
            AREAS.map(|a| removed.get_or_create(&[("area", a.as_str())]).clone());
        registry.register(
            "data_dir_removed",
            "Sources, workspaces and release directories removed because no record needs them",
            removed,
        );
        let cleanup_failures = counter(
            &mut registry,
            "cleanup_step_failures",
            "Cluster cleanup steps that did not succeed",
        );
        let instance_targets = ByInstance::<Gauge>::default();
        registry.register(
            "instance_targets_owned",
            "Targets each live instance on the store owns",
            instance_targets.clone(),
        );
        let instance_heartbeat_age = ByInstance::<Gauge<f64, AtomicU64>>::default();
        registry.register_with_unit(
            "instance_heartbeat_age",
            "Time since each live instance on the store last sent its heartbeat",
            Unit::Seconds,
            instance_heartbeat_age.clone(),
        );

        Metrics {
            registry,
            deployments: deployment_handles,
            phases: phase_handles,
            actor_restarts,
            store,
            compaction_runs,
            compaction_failures,
            compaction_deployments,
            compaction_versions,
            compaction_last_seconds,
            data_dir_bytes,
            data_dir_entries,
            data_dir_removed,
            cleanup_failures,
            resident_actors,
            queue_depth,
            drifted_targets,
            stream_subscribers,
            instance_targets,
            instance_heartbeat_age,
            scrape: Mutex::new(()),
        }
    }

    /// A deployment ended in `outcome`; a non-terminal state is ignored.
    pub fn deployment_finished(&self, outcome: State) {
        if let Some(i) = OUTCOMES.iter().position(|s| *s == outcome) {
            self.deployments[i].inc();
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
        self.actor_restarts.inc();
    }

    /// One store call took `secs`.
    pub fn observe_store(&self, secs: f64) {
        self.store.observe(secs);
    }

    /// A compaction step deleted these; counted as it happens, so a run that
    /// fails half-way still shows what it did.
    pub fn compaction_deleted(&self, deployments: u64, versions: u64) {
        self.compaction_deployments.inc_by(deployments);
        self.compaction_versions.inc_by(versions);
    }

    /// A compaction run ended after `secs`, successfully or not.
    pub fn compaction_run(&self, ok: bool, secs: f64) {
        self.compaction_runs.inc();
        if !ok {
            self.compaction_failures.inc();
        }
        self.compaction_last_seconds.set(secs);
    }

    /// What a sweep measured of one area: its bytes and its entries.
    pub fn data_dir_measured(&self, area: Area, bytes: u64, entries: u64) {
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.data_dir_bytes[area as usize].set(gauge(bytes));
        self.data_dir_entries[area as usize].set(gauge(entries));
    }

    /// An entry of `area` was removed because no record needs it.
    pub fn data_dir_removed(&self, area: Area) {
        self.data_dir_removed[area as usize].inc();
    }

    /// A cluster's cleanup step failed (or could not start).
    pub fn cleanup_failed(&self) {
        self.cleanup_failures.inc();
    }

    /// Everything, in the OpenMetrics text format (ending in `# EOF`).
    pub fn render(&self, live: Live) -> String {
        let _scrape = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        let gauge = |count: usize| i64::try_from(count).unwrap_or(i64::MAX);
        self.resident_actors.set(gauge(live.resident_actors));
        self.queue_depth.set(gauge(live.queue_depth));
        self.stream_subscribers.set(gauge(live.stream_subscribers));
        if let Some(drifted) = live.drifted_targets {
            self.drifted_targets.set(gauge(drifted));
        }
        if let Some(instances) = &live.instances {
            // Only the live ones: an instance that left has no series.
            self.instance_targets.clear();
            self.instance_heartbeat_age.clear();
            for instance in instances {
                let label = [("instance", instance.id.clone())];
                (self.instance_targets.get_or_create(&label)).set(gauge(instance.targets_owned));
                (self.instance_heartbeat_age.get_or_create(&label)).set(instance.heartbeat_age);
            }
        }
        let mut text = String::new();
        // Writing to a String cannot fail, and every series is ours.
        encode(&mut text, &self.registry).expect("metrics encode into a String");
        text
    }
}

fn phase_histogram() -> Histogram {
    Histogram::new(PHASE_BUCKETS.iter().copied())
}

#[cfg(test)]
mod tests;
