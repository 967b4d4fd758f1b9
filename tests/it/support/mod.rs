//! Test helpers shared by every integration test.

pub mod app;
pub mod pg;
pub mod process;
pub mod proxy;

use deployd::store::DynStore;
use deployd::store::sqlite::SqliteStore;
use std::sync::Arc;

/// A fresh SQLite store in its own temporary directory, removed when the
/// returned guard drops.
pub async fn sqlite_store() -> (DynStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("data").join("deployd.db");
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
        .await
        .expect("open task")
        .expect("open the SQLite store");
    (Arc::new(store), dir)
}
