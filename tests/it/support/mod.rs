//! Test helpers shared by every integration test.

pub mod app;
pub mod pg;
pub mod process;
pub mod proxy;
pub mod tls;

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

/// Run each named `async fn NAME(backend: Backend)` of the calling module as
/// two tests, `sqlite::NAME` and `postgres::NAME`.
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            use crate::support::app::Backend;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            use crate::support::app::Backend;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(Backend::Postgres).await
                }
            )*
        }
    };
}
pub(crate) use on_both_stores;
