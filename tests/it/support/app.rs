//! `spawn_app()`: a real deployd on port 0 with its own data dir and, for
//! PostgreSQL, its own fresh database; plus helpers to build sources and to
//! wait for events instead of sleeping.

use super::pg::{TestDatabase, fresh_database};
use deployd::client::Client;
use deployd::config::{ClusterConfig, Config, StepConfig};
use deployd::model::{DeployRequest, Deployment, EventData};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// How long any wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub url: String,
    pub client: Client,
    pub data_dir: PathBuf,

    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    _dir: tempfile::TempDir,
    _db: Option<TestDatabase>,
}

/// A cluster whose steps are the given shell scripts (None: no step).
pub fn sh_cluster(
    build: Option<&str>,
    push: Option<&str>,
    activate: Option<&str>,
) -> ClusterConfig {
    let step = |script: Option<&str>| {
        script.map(|s| StepConfig {
            run: vec!["/bin/sh".into(), "-c".into(), s.to_string()],
            timeout: Duration::from_secs(60),
        })
    };
    ClusterConfig {
        build: step(build),
        push: step(push),
        activate: step(activate),
        cleanup: None,
        env: Default::default(),
        user: None,
    }
}

/// Start deployd with the default config (the `local` cluster) changed by `tweak`.
pub async fn spawn_app(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    spawn_app_trusting(backend, None, tweak).await
}

/// [`spawn_app`], its client also trusting the CA certificate `ca_pem`; the
/// URL is `https://` when `tweak` set `server.tls`.
pub async fn spawn_app_trusting(
    backend: Backend,
    ca_pem: Option<&[u8]>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let db = match backend {
        Backend::Sqlite => None,
        Backend::Postgres => Some(fresh_database().await),
    };
    let store_url = db.as_ref().map(|db| db.url().to_string());
    start(store_url, db, ca_pem, tweak).await
}

/// Start deployd on the PostgreSQL database at `store_url`, which other
/// instances may share (one more instance of the same deployd fleet); the
/// caller keeps the database.
pub async fn spawn_app_on(store_url: &str, tweak: impl FnOnce(&mut Config)) -> TestApp {
    start(Some(store_url.to_string()), None, None, tweak).await
}

/// Start deployd with its own data dir on port 0, its store at `store_url`
/// (None: SQLite in the data dir); the app drops `db` when it goes.
async fn start(
    store_url: Option<String>,
    db: Option<TestDatabase>,
    ca_pem: Option<&[u8]>,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config =
        Config::from_sources(None, Vec::<(String, String)>::new()).expect("default config");
    config.server.data_dir = dir.path().join("data");
    config.deploy.kill_grace = Duration::from_secs(2);
    config.store.url = store_url;
    tweak(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    let scheme = match config.server.tls.files() {
        Some(_) => "https",
        None => "http",
    };
    let url = format!("{scheme}://{}", listener.local_addr().expect("local addr"));
    let (tx, rx) = oneshot::channel();
    let server = tokio::spawn(deployd::server::serve(listener, config.clone(), async {
        let _ = rx.await;
    }));
    let client = Client::trusting(&url, None, ca_pem).expect("client");
    let app = TestApp {
        url,
        client,
        data_dir: config.server.data_dir.clone(),

        shutdown: Some(tx),
        server: Some(server),
        _dir: dir,
        _db: db,
    };
    app.wait_ready().await;
    app
}

impl TestApp {
    async fn wait_ready(&self) {
        wait_ready(&self.client, "deployd to become ready").await;
    }

    /// Upload a source built from `files` and return its digest.
    pub async fn upload(&self, files: &[(&str, &str, u32)]) -> String {
        let bytes = tar_of(files);
        let sha = sha256_hex(&bytes);
        self.client
            .put_source(&sha, bytes)
            .await
            .expect("upload source");
        sha
    }

    /// Upload a one-file source (unique per `tag`) and deploy it.
    pub async fn deploy(&self, app: &str, cluster: &str, tag: &str) -> Deployment {
        let source = self.upload(&[("index.html", tag, 0o644)]).await;
        self.client
            .deploy(app, cluster, &deploy_request(&source))
            .await
            .expect("deploy accepted")
    }

    /// Every event of deployment `id` until its final state event.
    pub async fn events_until_end(&self, id: uuid::Uuid) -> Vec<(i64, EventData)> {
        collect_events(&self.client, id, None).await
    }

    /// `GET path` on the daemon, as JSON (for answers the client has no type for).
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let url = format!("{}{path}", self.url);
        reqwest::get(url).await.unwrap().json().await.unwrap()
    }

    /// Wait until `id` ends and return it.
    pub async fn finished(&self, id: uuid::Uuid) -> Deployment {
        self.events_until_end(id).await;
        self.client.get(id).await.expect("get deployment")
    }

    /// Stop the server gracefully and wait for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            let outcome = tokio::time::timeout(WAIT, server)
                .await
                .expect("server stops in time");
            outcome.expect("server task").expect("server ends cleanly");
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn deploy_request(source: &str) -> DeployRequest {
    DeployRequest {
        source: source.to_string(),
        git: None,
        message: None,
        on_conflict: None,
        idempotency_key: None,
    }
}

/// Events of `id` after `after`, until the final state event (or WAIT).
pub async fn collect_events(
    client: &Client,
    id: uuid::Uuid,
    after: Option<i64>,
) -> Vec<(i64, EventData)> {
    let mut stream = client
        .events(id, after)
        .await
        .expect("open the event stream");
    let mut events = Vec::new();
    let collect = async {
        while let Some(item) = stream.next().await {
            let event = item.expect("stream event");
            let is_final = event.data.is_final();
            events.push((event.seq.expect("events carry a seq"), event.data));
            if is_final {
                break;
            }
        }
    };
    tokio::time::timeout(WAIT, collect)
        .await
        .expect("the stream ends in time");
    events
}

/// The `state` transitions among `events`, as (from, to) names.
pub fn transitions(events: &[(i64, EventData)]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|(_, e)| match e {
            EventData::State(s) => Some((s.from.to_string(), s.to.to_string())),
            _ => None,
        })
        .collect()
}

/// A tar (not gzipped) holding `files` as (path, contents, mode).
pub fn tar_of(files: &[(&str, &str, u32)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(contents.len() as u64);
        header.set_mode(*mode);
        header.set_mtime(0);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, contents.as_bytes())
            .expect("append to tar");
    }
    builder.into_inner().expect("finish tar")
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Poll `check` until it holds (for facts outside the API, such as a
/// process being gone), failing the test after WAIT.
pub async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// [`eventually`] for a check that must await (an HTTP answer, say).
pub async fn eventually_async<F>(what: &str, mut check: impl FnMut() -> F)
where
    F: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Wait (within WAIT) until deployd answers `/readyz` with 200.
pub async fn wait_ready(client: &Client, what: &str) {
    eventually_async(what, || async { client.readyz().await.is_ok() }).await;
}

/// Whether process `pid` exists.
pub fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Read a pid a step wrote to `path`, waiting for the step to write it.
pub async fn read_pid(path: &Path) -> i32 {
    let mut pid = None;
    eventually("the step to write its pid", || {
        pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        pid.is_some()
    })
    .await;
    pid.expect("pid")
}
