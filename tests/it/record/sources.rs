//! A source deploys only as what its digest says, and the data dir's
//! subdirectories come back when something removed them.

use crate::support::app::*;
use deployd::machine::State;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_changed_on_disk_fails_its_build_and_a_new_upload_repairs_it() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let right = tar_of(&[("index.html", "the right one", 0o644)]);
    let sha = sha256_hex(&right);
    app.client.put_source(&sha, right.clone()).await.unwrap();
    let other = tar_of(&[("index.html", "another one", 0o644)]);
    let stored = app.data_dir.join("sources").join(format!("{sha}.tar"));
    std::fs::write(&stored, &other).unwrap();

    let d = app
        .client
        .deploy("web", "local", &deploy_request(&sha))
        .await
        .unwrap();
    let d = app.finished(d.id).await;
    assert_eq!(d.state, State::Failed);
    let error = d.error.expect("an error");
    assert!(
        error.contains(&format!("source {sha} on disk does not match its digest"))
            && error.contains("upload it again"),
        "{error}"
    );
    assert!(!stored.exists(), "the bad file is removed");
    assert!(!app.client.source_exists(&sha).await.unwrap());
    let current = app.data_dir.join("releases/web/local/current");
    assert!(!current.exists(), "nothing was activated");

    app.client.put_source(&sha, right.clone()).await.unwrap();
    assert_eq!(std::fs::read(&stored).unwrap(), right);
    let again = app
        .client
        .deploy("web", "local", &deploy_request(&sha))
        .await
        .unwrap();
    assert_eq!(app.finished(again.id).await.state, State::Succeeded);
    let index = std::fs::read_to_string(current.join("index.html")).unwrap();
    assert_eq!(index, "the right one");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_of_the_right_bytes_replaces_a_changed_file() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let right = tar_of(&[("index.html", "right", 0o644)]);
    let sha = sha256_hex(&right);
    app.client.put_source(&sha, right.clone()).await.unwrap();
    let stored = app.data_dir.join("sources").join(format!("{sha}.tar"));
    std::fs::write(&stored, tar_of(&[("index.html", "wrong", 0o644)])).unwrap();
    app.client.put_source(&sha, right.clone()).await.unwrap();
    assert_eq!(std::fs::read(&stored).unwrap(), right);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_subdirectories_removed_at_run_time_are_recreated() {
    let app = spawn_app(Backend::Sqlite, |_| {}).await;
    let first = app.deploy("web", "local", "one").await;
    assert_eq!(app.finished(first.id).await.state, State::Succeeded);
    for dir in ["sources", "work", "releases"] {
        std::fs::remove_dir_all(app.data_dir.join(dir)).unwrap();
    }
    let second = app.deploy("web", "local", "two").await;
    let second = app.finished(second.id).await;
    assert_eq!(second.state, State::Succeeded, "{:?}", second.error);
    let index = app.data_dir.join("releases/web/local/current/index.html");
    assert_eq!(std::fs::read_to_string(index).unwrap(), "two");
    app.stop().await;
}
