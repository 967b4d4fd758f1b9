//! A progress stream opened on one instance follows a deployment that runs on
//! another: the events reach it through the shared store, told by PostgreSQL's
//! LISTEN/NOTIFY, and it ends after the final state like the running
//! instance's own stream.
//!
//! Every deploy is sent to instance A and streams are read on B, so nothing
//! here depends on which instance owns a target.

use crate::support::app::{
    TestApp, WAIT, collect_events, eventually_async, sh_cluster, spawn_app_on,
};
use crate::support::pg::{TestDatabase, connect, fresh_database};
use deployd::client::EventStream;
use deployd::config::ClusterConfig;
use deployd::machine::State;
use deployd::model::EventData;
use futures::StreamExt;
use std::path::Path;
use std::sync::Mutex;
use uuid::Uuid;

/// Two instances on one fresh database. Fields drop in order: the
/// instances before the database they share.
struct Fleet {
    a: TestApp,
    b: TestApp,
    db: TestDatabase,
}

impl Fleet {
    /// A and B, each with `cluster` as `gated`.
    async fn start(cluster: ClusterConfig) -> Fleet {
        let db = fresh_database().await;
        let instance = || {
            let cluster = cluster.clone();
            spawn_app_on(db.url(), move |c| {
                c.clusters.insert("gated".into(), cluster);
            })
        };
        let a = instance().await;
        let b = instance().await;
        Fleet { a, b, db }
    }

    /// The pids of the instances' listening sessions.
    async fn listeners(&self) -> Vec<i32> {
        let admin = connect(self.db.url()).await;
        let rows = admin
            .query(
                "SELECT pid FROM pg_stat_activity
                 WHERE application_name = 'deployd-listen' AND datname = current_database()",
                &[],
            )
            .await
            .expect("pg_stat_activity");
        rows.iter().map(|row| row.get(0)).collect()
    }

    /// The instances' listening sessions, once `check` holds for them.
    async fn listening(&self, what: &str, check: impl Fn(&[i32]) -> bool) -> Vec<i32> {
        let seen = Mutex::new(Vec::new());
        eventually_async(what, || async {
            let pids = self.listeners().await;
            let done = check(&pids);
            *seen.lock().unwrap() = pids;
            done
        })
        .await;
        seen.into_inner().unwrap()
    }
}

/// A build that waits for `gate`, so the test decides when the deployment
/// goes on; push and activate are quick.
fn gated_cluster(gate: &Path) -> ClusterConfig {
    let build = format!(
        "echo waiting; while [ ! -e '{}' ]; do sleep 0.05; done; echo x; sleep 1; echo y",
        gate.display()
    );
    sh_cluster(Some(&build), Some("echo pushed"), Some("echo activated"))
}

/// The rest of an open stream, up to and including the final state event.
async fn until_end(stream: &mut EventStream) -> Vec<(i64, EventData)> {
    let mut events = Vec::new();
    let collect = async {
        while let Some(item) = stream.next().await {
            let event = item.expect("stream event");
            let is_final = event.data.is_final();
            events.push((event.seq.expect("events carry a seq"), event.data));
            if is_final {
                return;
            }
        }
        panic!("the stream ended before the final state event");
    };
    tokio::time::timeout(WAIT, collect)
        .await
        .expect("the stream reaches the final state in time");
    events
}

/// Read `stream` up to and including the `waiting` line of the build.
async fn until_waiting(stream: &mut EventStream) -> Vec<(i64, EventData)> {
    let mut events = Vec::new();
    let read = async {
        while let Some(item) = stream.next().await {
            let event = item.expect("stream event");
            let waiting = matches!(&event.data, EventData::Log(l) if l.line == "waiting");
            events.push((event.seq.expect("events carry a seq"), event.data));
            if waiting {
                return;
            }
        }
        panic!("the stream ended before the build started");
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the build's first line in time");
    events
}

/// `events` are seq 1, 2, … in order and end with a `succeeded` state.
fn assert_whole(events: &[(i64, EventData)]) {
    let seqs: Vec<i64> = events.iter().map(|(seq, _)| *seq).collect();
    let expected: Vec<i64> = (1..=events.len() as i64).collect();
    assert_eq!(seqs, expected, "no gap and no duplicate");
    match events.last() {
        Some((_, EventData::State(s))) => assert_eq!(s.to, State::Succeeded),
        other => panic!("the last event is not the final state: {other:?}"),
    }
}

/// Deploy to A, open its stream on B and read it through the build's first
/// line: B's stream is open while the build waits for its gate.
async fn deploy_watched_on_b(fleet: &Fleet) -> (Uuid, EventStream, Vec<(i64, EventData)>) {
    let deployment = fleet.a.deploy("web", "gated", "one").await;
    let mut on_b = fleet
        .b
        .client
        .events(deployment.id, None)
        .await
        .expect("open the stream on B");
    let seen = until_waiting(&mut on_b).await;
    (deployment.id, on_b, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_on_another_instance_gets_every_event_and_ends() {
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("open");
    let fleet = Fleet::start(gated_cluster(&gate_file)).await;
    let (id, mut on_b, mut seen_on_b) = deploy_watched_on_b(&fleet).await;
    // B's stream is open and has replayed: what follows, B hears of live.
    std::fs::write(&gate_file, "").unwrap();
    seen_on_b.extend(until_end(&mut on_b).await);
    let on_a = collect_events(&fleet.a.client, id, None).await;
    assert_whole(&on_a);
    assert_eq!(seen_on_b, on_a, "B's stream is A's, event for event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_opened_on_another_instance_after_the_end_replays_and_ends() {
    let fleet = Fleet::start(sh_cluster(Some("echo x; sleep 1; echo y"), None, None)).await;
    let deployment = fleet.a.deploy("web", "gated", "one").await;
    let on_a = fleet.a.events_until_end(deployment.id).await;
    let on_b = fleet.b.events_until_end(deployment.id).await;
    assert_whole(&on_a);
    assert_eq!(on_b, on_a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_whose_connection_was_killed_misses_nothing() {
    let gate = tempfile::tempdir().unwrap();
    let gate_file = gate.path().join("open");
    let fleet = Fleet::start(gated_cluster(&gate_file)).await;
    let before = fleet
        .listening("both instances to listen", |pids| pids.len() == 2)
        .await;
    let (id, mut on_b, mut seen_on_b) = deploy_watched_on_b(&fleet).await;

    let admin = connect(fleet.db.url()).await;
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'deployd-listen' AND datname = current_database()",
            &[],
        )
        .await
        .expect("terminate the listeners");
    assert_eq!(killed.len(), 2, "both instances' listeners were killed");
    // The build goes on while the listeners are away: what it stores then,
    // B hears of only by reading the store again once it is back.
    std::fs::write(&gate_file, "").unwrap();
    fleet
        .listening("both listeners to connect again", |pids| {
            pids.len() == 2 && pids.iter().all(|pid| !before.contains(pid))
        })
        .await;

    seen_on_b.extend(until_end(&mut on_b).await);
    let on_a = collect_events(&fleet.a.client, id, None).await;
    assert_whole(&on_a);
    assert_eq!(seen_on_b, on_a, "B's stream is A's, event for event");
}
