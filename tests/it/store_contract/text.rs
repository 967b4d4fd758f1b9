//! Every byte is storable: PostgreSQL refuses NUL in `text` and `jsonb`,
//! SQLite keeps it. Whatever the caller hands a store, both backends store
//! it (NUL replaced by U+FFFD) and read back the same, so a step's odd
//! output never loses a batch of log lines or the error that ended it.

use super::{create, get, log, new_deploy, now, step};
use deployd::machine::{Authority, State};
use deployd::model::{EventData, GitInfo};
use deployd::store::{Change, DynStore, VersionChange};

const NUL: &str = "a\0b";
const STORED: &str = "a\u{FFFD}b";

pub(super) async fn nul_bytes_are_stored_replaced_the_same_on_every_backend(store: DynStore) {
    let mut new = new_deploy("web", "prod");
    new.message = NUL.into();
    new.git = Some(GitInfo {
        message: Some(NUL.into()),
        ..new.git.unwrap()
    });
    let d = create(&store, new).await;
    assert_eq!(d.message, STORED);
    assert_eq!(d.git.as_ref().unwrap().message.as_deref(), Some(STORED));

    let d = step(&store, &d, State::Building, VersionChange::Keep).await;
    let appended = store
        .append(d.id, &[log("before"), log(NUL), log("after")], None)
        .await
        .expect("a batch with a NUL is stored whole");
    let lines: Vec<_> = appended.iter().map(|e| e.data.clone()).collect();
    assert_eq!(lines, [log("before"), log(STORED), log("after")]);

    let artifact = format!("/releases/{NUL}");
    let d = step(&store, &d, State::Pushing, VersionChange::Mint { artifact }).await;
    let version = d.version.clone().expect("minted");
    let info = store.version("web", &version).await.unwrap().unwrap();
    assert_eq!(info.artifact, format!("/releases/{STORED}"));

    let change = Change::new(
        &d,
        State::Failed,
        Authority::Actor,
        VersionChange::Keep,
        now(),
    )
    .unwrap()
    .with_error(&format!("push step failed (exit code 1):\n{NUL}"));
    let applied = store
        .transition(change)
        .await
        .expect("an error with a NUL is stored");
    let error = format!("push step failed (exit code 1):\n{STORED}");
    assert_eq!(applied.deployment.error.as_deref(), Some(error.as_str()));
    assert_eq!(
        get(&store, d.id).await.error.as_deref(),
        Some(error.as_str())
    );

    // What was handed back at write time is what a later read replays.
    let events = store.events_after(d.id, 0, 100).await.unwrap();
    assert_eq!(events[2..5], appended[..]);
    match &events.last().unwrap().data {
        EventData::State(s) => assert_eq!(s.error.as_deref(), Some(error.as_str())),
        other => panic!("expected the final state event, got {other:?}"),
    }
    match &events[0].data {
        EventData::Deployment(created) => assert_eq!(created.message, STORED),
        other => panic!("expected the deployment event, got {other:?}"),
    }
}
