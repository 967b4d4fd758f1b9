//! Where scenarios run: fresh stores (a PostgreSQL database or an SQLite
//! file per use, all removed at the end), raw database handles for bulk
//! fills and probes, and facts about the machine.
//!
//! What must stay true: every database and directory a run creates is
//! registered here before it is used, so [`Env::cleanup`] removes it even
//! when a scenario fails half-way.

use anyhow::{Context, anyhow};
use deployd::config::Config;
use deployd::store::DynStore;
use deployd::store::postgres::PgStore;
use deployd::store::sqlite::SqliteStore;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/postgres";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    Embedded,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Embedded => "embedded",
            Backend::Postgres => "postgres",
        }
    }
}

pub struct Env {
    /// The admin URL of the PostgreSQL server (DATABASE_URL).
    pg_server: String,
    /// Everything on disk this run creates lives under here.
    work: PathBuf,
    databases: Mutex<Vec<String>>,
    /// Smaller sizes, for a quick check that a scenario runs at all.
    pub quick: bool,
}

/// A place for one store: a data dir, and a database when on PostgreSQL.
/// The schema is applied when the space is made.
pub struct Space {
    pub data_dir: PathBuf,
    pub pg_url: Option<String>,
}

impl Env {
    pub fn new(quick: bool) -> anyhow::Result<Env> {
        let pg_server = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_PG.to_string());
        let work = std::env::temp_dir().join(format!("deployd-bench-{}", uuid::Uuid::now_v7()));
        std::fs::create_dir_all(&work)
            .with_context(|| format!("cannot create {}", work.display()))?;
        Ok(Env {
            pg_server,
            work,
            databases: Mutex::new(Vec::new()),
            quick,
        })
    }

    /// A fresh, migrated store location.
    pub async fn space(&self, backend: Backend) -> anyhow::Result<Space> {
        let id = uuid::Uuid::now_v7().simple().to_string();
        let data_dir = self.work.join(&id);
        std::fs::create_dir_all(&data_dir)?;
        let pg_url = match backend {
            Backend::Embedded => None,
            Backend::Postgres => {
                let name = format!("bench_{id}");
                self.databases.lock().expect("lock").push(name.clone());
                self.admin()
                    .await?
                    .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .with_context(|| format!("cannot create database {name}"))?;
                Some(deployd::store::postgres::url_with_database(
                    &self.pg_server,
                    &name,
                ))
            }
        };
        let space = Space { data_dir, pg_url };
        drop(space.open_store().await?);
        Ok(space)
    }

    /// Another instance's place on `space`'s database: a data dir of its
    /// own, the same PostgreSQL database (already migrated).
    pub fn share(&self, space: &Space) -> anyhow::Result<Space> {
        let data_dir = self.work.join(uuid::Uuid::now_v7().simple().to_string());
        std::fs::create_dir_all(&data_dir)?;
        Ok(Space {
            data_dir,
            pg_url: space.pg_url.clone(),
        })
    }

    pub async fn admin(&self) -> anyhow::Result<tokio_postgres::Client> {
        connect(&self.pg_server).await
    }

    /// "PostgreSQL 15.4 (fsync=on, synchronous_commit=on)": what the figures depend on.
    pub async fn pg_describe(&self) -> anyhow::Result<String> {
        let admin = self.admin().await?;
        let mut facts = Vec::new();
        for setting in [
            "server_version",
            "fsync",
            "synchronous_commit",
            "shared_buffers",
        ] {
            let row = admin.query_one(&format!("SHOW {setting}"), &[]).await?;
            facts.push(row.get::<_, String>(0));
        }
        Ok(format!(
            "PostgreSQL {} (fsync={}, synchronous_commit={}, shared_buffers={})",
            facts[0], facts[1], facts[2], facts[3]
        ))
    }

    pub fn work(&self) -> &Path {
        &self.work
    }

    /// Drop every database and directory this run made.
    pub async fn cleanup(&self) {
        let names = std::mem::take(&mut *self.databases.lock().expect("lock"));
        if !names.is_empty() {
            match self.admin().await {
                Ok(admin) => {
                    for name in names {
                        let sql = format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)");
                        if let Err(e) = admin.batch_execute(&sql).await {
                            eprintln!("bench: could not drop database {name}: {e}");
                        }
                    }
                }
                Err(e) => eprintln!("bench: could not drop databases {names:?}: {e}"),
            }
        }
        let _ = std::fs::remove_dir_all(&self.work);
    }
}

impl Space {
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("deployd.db")
    }

    /// The default config, pointed at this space, with no clusters.
    pub fn config(&self) -> anyhow::Result<Config> {
        let mut config = Config::from_sources(None, Vec::<(String, String)>::new())?;
        config.server.data_dir = self.data_dir.clone();
        config.store.url = self.pg_url.clone();
        config.clusters.clear();
        config.deploy.kill_grace = Duration::from_secs(1);
        Ok(config)
    }

    pub async fn open_store(&self) -> anyhow::Result<DynStore> {
        Ok(match &self.pg_url {
            Some(url) => Arc::new(PgStore::connect(url).await?),
            None => {
                let path = self.sqlite_path();
                Arc::new(tokio::task::spawn_blocking(move || SqliteStore::open(&path)).await??)
            }
        })
    }

    /// A connection of our own, outside any store, for fills and probes.
    pub async fn raw(&self) -> anyhow::Result<Raw> {
        Ok(match &self.pg_url {
            Some(url) => Raw::Pg(connect(url).await?),
            None => {
                let conn = rusqlite::Connection::open(self.sqlite_path())?;
                conn.busy_timeout(Duration::from_secs(30))?;
                conn.pragma_update(None, "foreign_keys", "ON")?;
                Raw::Sqlite(Arc::new(Mutex::new(conn)))
            }
        })
    }
}

/// A direct database connection.
pub enum Raw {
    Pg(tokio_postgres::Client),
    Sqlite(Arc<Mutex<rusqlite::Connection>>),
}

impl Raw {
    /// Run `f` on the SQLite connection on the blocking pool.
    pub async fn sqlite<T, F>(conn: &Arc<Mutex<rusqlite::Connection>>, f: F) -> anyhow::Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut rusqlite::Connection) -> anyhow::Result<T> + Send + 'static,
    {
        let conn = conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock().expect("sqlite lock"))).await?
    }

    /// A single integer from `sql` (same text on both databases).
    pub async fn scalar(&self, sql: &str) -> anyhow::Result<i64> {
        match self {
            Raw::Pg(client) => Ok(client.query_one(sql, &[]).await?.get(0)),
            Raw::Sqlite(conn) => {
                let sql = sql.to_string();
                Raw::sqlite(conn, move |c| Ok(c.query_row(&sql, [], |r| r.get(0))?)).await
            }
        }
    }
}

pub async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| anyhow!("cannot connect to PostgreSQL (DATABASE_URL): {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Resident set size of this process.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * page.max(0) as u64
}

/// Allow as many open files as the hard limit: thousands of connections.
pub fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The machine the figures come from.
pub fn machine() -> Value {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, name)| name.trim().to_string())
        .unwrap_or_default();
    let meminfo = read("/proc/meminfo");
    let mem_kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "kernel": read("/proc/sys/kernel/osrelease").trim(),
        "loadavg_at_start": read("/proc/loadavg").split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

/// A small deterministic generator (splitmix64): reproducible fills and
/// samples without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Whether `path` exists, for steps that wait on a file.
pub fn touch(path: &Path) -> anyhow::Result<()> {
    std::fs::write(path, b"go").with_context(|| format!("cannot write {}", path.display()))
}
