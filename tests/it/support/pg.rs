//! A fresh PostgreSQL database per test, copied from a migrated template.
//!
//! The server comes from `DATABASE_URL`, a URL to an admin database on it
//! (default `postgres://postgres@127.0.0.1:5432/postgres`). The template is
//! named after a hash of the migrations, so test processes running different
//! schemas never share one; it is built once under an advisory lock and marked
//! `IS_TEMPLATE` only when complete, so a process that finds it marked can
//! copy it without waiting. Every [`TestDatabase`] drops its database when it
//! goes out of scope.

use deployd::store::DynStore;
use deployd::store::postgres::{MIGRATIONS, PgStore};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use tokio::sync::OnceCell;
use tokio_postgres::{Client, NoTls};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Serializes template builds across test processes ("tmpl" in ASCII).
const TEMPLATE_LOCK: i64 = 0x746d_706c;

/// A database that exists for one test.
pub struct TestDatabase {
    name: String,
    url: String,
}

impl TestDatabase {
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDatabase {
    /// Drops the database on a thread of its own, with its own runtime: this
    /// runs inside a test's runtime, where blocking on a future would panic.
    /// FORCE ends connections a store clone may still hold.
    fn drop(&mut self) {
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for dropping the test database");
            runtime.block_on(async {
                let admin = admin().await;
                admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .await
            })
        })
        .join();
        match dropped {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!(
                "could not drop test database {}: {}",
                self.name,
                describe(&e)
            ),
            Err(_) => eprintln!("could not drop test database {}", self.name),
        }
    }
}

/// An empty database with the schema applied.
pub async fn fresh_database() -> TestDatabase {
    let template = template().await;
    let name = format!("deployd_test_{}", uuid::Uuid::now_v7().simple());
    admin()
        .await
        .batch_execute(&format!(
            "CREATE DATABASE \"{name}\" TEMPLATE \"{template}\""
        ))
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {}", describe(&e)));
    TestDatabase {
        url: database_url(&name),
        name,
    }
}

/// A database without the schema, for tests of migrating itself.
pub async fn empty_database() -> TestDatabase {
    let name = format!("deployd_test_{}", uuid::Uuid::now_v7().simple());
    admin()
        .await
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| panic!("cannot create test database {name}: {}", describe(&e)));
    TestDatabase {
        url: database_url(&name),
        name,
    }
}

/// A [`PgStore`] on a fresh database, and the guard that drops it.
pub async fn pg_store() -> (DynStore, TestDatabase) {
    let database = fresh_database().await;
    let store = PgStore::connect(database.url())
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {}: {e}", database.name()));
    (Arc::new(store), database)
}

/// A connection to the admin database; the connection task runs on the
/// caller's runtime.
pub async fn admin() -> Client {
    connect(&server_url()).await
}

/// A raw connection (no pool, no store) to `url`.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot connect to PostgreSQL at {} (DATABASE_URL): {}",
                redact(url),
                describe(&e)
            )
        });
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            eprintln!("test database connection ended: {e}");
        }
    });
    client
}

fn server_url() -> String {
    std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_string())
}

/// The name of the migrated template, creating it if this is the first use
/// on this server of this set of migrations.
async fn template() -> &'static str {
    static TEMPLATE: OnceCell<String> = OnceCell::const_new();
    TEMPLATE.get_or_init(build_template).await
}

async fn build_template() -> String {
    let mut hash = Sha256::new();
    for migration in MIGRATIONS {
        hash.update(migration.number.to_be_bytes());
        hash.update(migration.sql);
    }
    let name = format!("deployd_template_{}", &hex::encode(hash.finalize())[..16]);
    let admin = admin().await;
    if is_ready(&admin, &name).await {
        return name;
    }
    // Session-level on a connection of our own, released below or when it closes.
    admin
        .execute("SELECT pg_advisory_lock($1)", &[&TEMPLATE_LOCK])
        .await
        .expect("the template lock");
    if !is_ready(&admin, &name).await {
        // A process that died half-way may have left an unmarked copy.
        for statement in [
            format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"),
            format!("CREATE DATABASE \"{name}\""),
        ] {
            admin.batch_execute(&statement).await.unwrap_or_else(|e| {
                panic!("cannot create template database {name}: {}", describe(&e))
            });
        }
        let store = PgStore::connect(&database_url(&name))
            .await
            .unwrap_or_else(|e| panic!("cannot migrate template database {name}: {e}"));
        drop(store);
        // Copies fail while anyone is connected to the template; PostgreSQL
        // waits a few seconds for the pool's closing sessions to go.
        admin
            .batch_execute(&format!("ALTER DATABASE \"{name}\" IS_TEMPLATE true"))
            .await
            .unwrap_or_else(|e| panic!("cannot mark template database {name}: {}", describe(&e)));
    }
    admin
        .execute("SELECT pg_advisory_unlock($1)", &[&TEMPLATE_LOCK])
        .await
        .expect("releasing the template lock");
    name
}

async fn is_ready(admin: &Client, name: &str) -> bool {
    let row = admin
        .query_opt(
            "SELECT 1 FROM pg_database WHERE datname = $1 AND datistemplate",
            &[&name],
        )
        .await
        .expect("reading pg_database");
    row.is_some()
}

/// The server URL with its database replaced by `database`.
fn database_url(database: &str) -> String {
    deployd::store::postgres::url_with_database(&server_url(), database)
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// An error with its causes: tokio-postgres puts the server's message in the cause.
pub fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{e}: {db}"),
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}
