//! A step is only ever what the record says: it dies with its daemon, and
//! the `local` cluster does not switch to a release that is not there.

use crate::support::app::*;
use crate::support::on_both_stores;
use deployd::machine::State;
use deployd::model::RollbackRequest;

on_both_stores!(a_rollback_to_a_removed_release_fails_and_keeps_current);

async fn a_rollback_to_a_removed_release_fails_and_keeps_current(backend: Backend) {
    let app = spawn_app(backend, |_| {}).await;
    let mut ids = Vec::new();
    for tag in ["one", "two", "three"] {
        let d = app.deploy("web", "local", tag).await;
        assert_eq!(app.finished(d.id).await.state, State::Succeeded);
        ids.push(d.id);
    }
    let releases = app.data_dir.join("releases/web/local");
    std::fs::remove_dir_all(releases.join(ids[1].to_string())).unwrap();

    let request = RollbackRequest {
        version: Some("v2".into()),
        ..Default::default()
    };
    let rollback = app.client.rollback("web", "local", &request).await.unwrap();
    let rollback = app.finished(rollback.id).await;
    assert_eq!(rollback.state, State::Failed);
    let error = rollback.error.expect("the activate step's error");
    assert!(
        error.contains("activate step failed") && error.contains("does not exist"),
        "{error}"
    );
    let current = std::fs::read_link(releases.join("current")).unwrap();
    assert_eq!(current, releases.join(ids[2].to_string()));
    let target = app.client.target("web", "local").await.unwrap();
    let active = target.active.expect("an active version");
    assert_eq!(
        (active.version.as_str(), active.deployment_id),
        ("v3", ids[2])
    );
    app.stop().await;
}
