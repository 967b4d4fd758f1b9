use super::*;
use crate::store::Store;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The samples of a rendering, keyed by `name{labels}`, after checking that
/// it ends in `# EOF` and every other line is a HELP, a TYPE, a UNIT or a
/// sample of a declared `deployd_` series.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut declared = Vec::new();
    let mut samples = BTreeMap::new();
    let text = text.strip_suffix("# EOF\n").expect("ends in # EOF");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has a text");
            assert!(name.starts_with("deployd_"), "{line}");
            assert!(!help.is_empty(), "{line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            declared.push(name.to_string());
            continue;
        }
        if let Some(rest) = line.strip_prefix("# UNIT ") {
            let (name, unit) = rest.split_once(' ').expect("UNIT has a unit");
            assert!(declared.iter().any(|d| d == name), "{line}");
            assert!(name.ends_with(&format!("_{unit}")), "{line}");
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect("a sample is `key value`");
        let name = key.split('{').next().unwrap_or(key);
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .filter(|base| declared.iter().any(|d| d == base))
            .unwrap_or(name);
        assert!(declared.iter().any(|d| d == family), "undeclared: {line}");
        let labels = &key[name.len()..];
        let key = if labels.is_empty() {
            key.to_string()
        } else {
            let inner = labels.strip_prefix('{').and_then(|l| l.strip_suffix('}'));
            let inner = inner.unwrap_or_else(|| panic!("labels of {line}"));
            // Label order carries no meaning (the crate writes `le` first);
            // keys here put it last, as the series were always written.
            let (le, mut labels): (Vec<&str>, Vec<&str>) =
                inner.split(',').partition(|l| l.starts_with("le="));
            labels.extend(le);
            format!("{name}{{{}}}", labels.join(","))
        };
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value of {line}"));
        assert!(samples.insert(key, value).is_none(), "twice: {line}");
    }
    samples
}

#[test]
fn a_fresh_registry_renders_every_series_at_zero() {
    let samples = parse(&Metrics::new().render(Live::default()));
    for key in [
        "deployd_deployments_finished_total{outcome=\"succeeded\"}",
        "deployd_deployments_finished_total{outcome=\"interrupted\"}",
        "deployd_phase_duration_seconds_count{phase=\"queued\"}",
        "deployd_phase_duration_seconds_bucket{phase=\"activating\",le=\"+Inf\"}",
        "deployd_queue_depth",
        "deployd_resident_actors",
        "deployd_actor_restarts_total",
        "deployd_stream_subscribers",
        "deployd_store_call_duration_seconds_bucket{le=\"0.001\"}",
        "deployd_store_call_duration_seconds_sum",
        "deployd_compaction_runs_total",
        "deployd_compaction_deleted_deployments_total",
        "deployd_compaction_deleted_versions_total",
        "deployd_compaction_last_duration_seconds",
    ] {
        assert_eq!(samples.get(key), Some(&0.0), "{key}");
    }
}

#[test]
fn recordings_show_up_and_counters_only_grow() {
    let metrics = Metrics::new();
    metrics.deployment_finished(State::Succeeded);
    metrics.deployment_finished(State::Succeeded);
    metrics.deployment_finished(State::Failed);
    metrics.deployment_finished(State::Building); // not an outcome: ignored
    metrics.actor_restarted();
    metrics.compaction_deleted(7, 2);
    metrics.compaction_run(true, 0.25);
    metrics.compaction_run(false, 0.5);
    let live = Live {
        resident_actors: 4,
        queue_depth: 2,
        stream_subscribers: 9,
        drifted_targets: Some(3),
        instances: None,
    };
    let first = parse(&metrics.render(live.clone()));
    let at = |samples: &BTreeMap<String, f64>, key: &str| {
        *samples.get(key).unwrap_or_else(|| panic!("no {key}"))
    };
    let succeeded = "deployd_deployments_finished_total{outcome=\"succeeded\"}";
    assert_eq!(at(&first, succeeded), 2.0);
    assert_eq!(
        at(
            &first,
            "deployd_deployments_finished_total{outcome=\"failed\"}"
        ),
        1.0
    );
    assert_eq!(at(&first, "deployd_actor_restarts_total"), 1.0);
    assert_eq!(at(&first, "deployd_queue_depth"), 2.0);
    assert_eq!(at(&first, "deployd_resident_actors"), 4.0);
    assert_eq!(at(&first, "deployd_stream_subscribers"), 9.0);
    assert_eq!(at(&first, "deployd_drifted_targets"), 3.0);
    assert_eq!(at(&first, "deployd_compaction_runs_total"), 2.0);
    assert_eq!(at(&first, "deployd_compaction_failures_total"), 1.0);
    assert_eq!(
        at(&first, "deployd_compaction_deleted_deployments_total"),
        7.0
    );
    assert_eq!(at(&first, "deployd_compaction_deleted_versions_total"), 2.0);
    assert_eq!(at(&first, "deployd_compaction_last_duration_seconds"), 0.5);

    metrics.deployment_finished(State::Succeeded);
    let second = parse(&metrics.render(live));
    assert_eq!(at(&second, succeeded), 3.0);
    for (key, value) in &first {
        let counter = key.contains("_total") || key.contains("_bucket") || key.ends_with("_count");
        if counter {
            assert!(second[key] >= *value, "{key} went down");
        }
    }
}

#[test]
fn histograms_are_cumulative_with_sum_and_count() {
    let metrics = Metrics::new();
    metrics.phase_finished(State::Building, 3.0);
    metrics.phase_finished(State::Building, 0.05);
    metrics.phase_finished(State::Building, 7200.0);
    metrics.phase_finished(State::Succeeded, 1.0); // not a phase: ignored
    let samples = parse(&metrics.render(Live::default()));
    let bucket = |le: &str| {
        samples[&format!("deployd_phase_duration_seconds_bucket{{phase=\"building\",le=\"{le}\"}}")]
    };
    assert_eq!(bucket("0.1"), 1.0);
    assert_eq!(bucket("2.5"), 1.0);
    assert_eq!(bucket("5.0"), 2.0);
    assert_eq!(bucket("3600.0"), 2.0);
    assert_eq!(bucket("+Inf"), 3.0);
    let key =
        |suffix: &str| format!("deployd_phase_duration_seconds_{suffix}{{phase=\"building\"}}");
    assert_eq!(samples[&key("count")], 3.0);
    assert_eq!(samples[&key("sum")], 7203.05);
    // An observation on a bound falls in that bucket (`le` is "less or equal").
    metrics.phase_finished(State::Pushing, 1.0);
    let samples = parse(&metrics.render(Live::default()));
    let pushing = |le: &str| {
        samples[&format!("deployd_phase_duration_seconds_bucket{{phase=\"pushing\",le=\"{le}\"}}")]
    };
    assert_eq!((pushing("0.5"), pushing("1.0")), (0.0, 1.0));
}

#[tokio::test]
async fn a_timed_store_records_every_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("deployd.db");
    let store = tokio::task::spawn_blocking(move || crate::store::sqlite::SqliteStore::open(&path))
        .await
        .expect("open task")
        .expect("open");
    let metrics = Arc::new(Metrics::new());
    let store = TimedStore::new(Arc::new(store), metrics.clone());
    let count =
        || parse(&metrics.render(Live::default()))["deployd_store_call_duration_seconds_count"];
    assert_eq!(count(), 0.0);
    store.ping().await.expect("ping");
    store.get(uuid::Uuid::now_v7()).await.expect("get");
    // The daemon's own registry: exactly these two calls, nobody else's.
    assert_eq!(count(), 2.0);
}
