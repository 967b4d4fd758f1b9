//! A hub on a store that another writer also writes to: the other writer is
//! played by calling the store directly, as another instance would.

use super::*;
use crate::machine::Kind;
use crate::model::LogLine;
use crate::store::NewDeployment;
use crate::store::sqlite::SqliteStore;
use futures::StreamExt;

/// Longer than any test waits: only what the test tells the hub wakes it.
const NEVER: Duration = Duration::from_secs(3600);
const WAIT: Duration = Duration::from_secs(10);

struct Setup {
    store: DynStore,
    hub: Arc<EventHub>,
    _dir: tempfile::TempDir,
}

fn setup(writers: Writers) -> Setup {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store: DynStore =
        Arc::new(SqliteStore::open(&dir.path().join("deployd.db")).expect("open SQLite"));
    Setup {
        hub: EventHub::new(store.clone(), writers),
        store,
        _dir: dir,
    }
}

impl Setup {
    /// A deployment created elsewhere (its `deployment` event is seq 1).
    async fn deployment_elsewhere(&self) -> Uuid {
        let id = Uuid::now_v7();
        self.store
            .create(NewDeployment {
                id,
                app: "web".into(),
                cluster: "local".into(),
                kind: Kind::Deploy,
                source: Some("ab".repeat(32)),
                rollback_to: None,
                git: None,
                message: String::new(),
                deployed_by: "tester".into(),
                idempotency_key: None,
                request_hash: "hash".into(),
                created_at: chrono::Utc::now(),
                fence: None,
            })
            .await
            .expect("create");
        id
    }

    /// Store a log line of `id` elsewhere, returning its seq.
    async fn log_elsewhere(&self, id: Uuid, line: &str) -> i64 {
        let log = EventData::Log(LogLine {
            step: "build".into(),
            stream: "stdout".into(),
            line: line.into(),
        });
        let stored = self.store.append(id, &[log], None).await.expect("append");
        stored[0].seq
    }
}

/// Drive the follower until it waits for news, checking it has none to hand
/// out: what it yields after this, it did not read on its own.
async fn waits(stream: &mut (impl Stream<Item = Result<Event, StoreError>> + Unpin)) {
    let quiet = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
    assert!(quiet.is_err(), "the follower had nothing to hand out");
}

async fn next_seq(stream: &mut (impl Stream<Item = Result<Event, StoreError>> + Unpin)) -> i64 {
    let item = tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("the follower hands out the next event in time")
        .expect("the stream goes on");
    item.expect("no store error").seq
}

#[tokio::test]
async fn a_follower_reads_what_another_writer_stored_when_told() {
    let s = setup(Writers::Shared { recheck: NEVER });
    let id = s.deployment_elsewhere().await;
    let mut stream = Box::pin(s.hub.subscribe(id, 0));
    assert_eq!(next_seq(&mut stream).await, 1);
    waits(&mut stream).await;
    let seq = s.log_elsewhere(id, "one").await;
    waits(&mut stream).await;
    s.hub.stored_elsewhere(id, seq);
    assert_eq!(next_seq(&mut stream).await, 2);
}

#[tokio::test]
async fn a_resync_makes_every_follower_read_the_store() {
    let s = setup(Writers::Shared { recheck: NEVER });
    let (first, second) = (
        s.deployment_elsewhere().await,
        s.deployment_elsewhere().await,
    );
    let mut one = Box::pin(s.hub.subscribe(first, 0));
    let mut two = Box::pin(s.hub.subscribe(second, 0));
    assert_eq!((next_seq(&mut one).await, next_seq(&mut two).await), (1, 1));
    waits(&mut one).await;
    waits(&mut two).await;
    s.log_elsewhere(first, "one").await;
    s.log_elsewhere(second, "two").await;
    s.hub.resync();
    assert_eq!((next_seq(&mut one).await, next_seq(&mut two).await), (2, 2));
}

#[tokio::test]
async fn a_quiet_follower_reads_the_store_after_the_recheck_interval() {
    let s = setup(Writers::Shared {
        recheck: Duration::from_millis(50),
    });
    let id = s.deployment_elsewhere().await;
    let mut stream = Box::pin(s.hub.subscribe(id, 0));
    assert_eq!(next_seq(&mut stream).await, 1);
    waits(&mut stream).await;
    // Stored, and the notification lost: nobody tells the hub.
    s.log_elsewhere(id, "one").await;
    assert_eq!(next_seq(&mut stream).await, 2);
}

#[tokio::test]
async fn news_of_a_deployment_nobody_follows_makes_no_channel() {
    let s = setup(Writers::Shared { recheck: NEVER });
    let id = s.deployment_elsewhere().await;
    s.hub.stored_elsewhere(id, 1);
    s.hub.resync();
    assert!(s.hub.channels.lock().unwrap().is_empty());
    assert_eq!(s.hub.subscribers(id), 0);
}
