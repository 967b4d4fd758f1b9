//! deployd itself, served in this process on a port-0 listener through
//! `deployd::server::serve`, with the clusters a scenario needs.

use anyhow::{Context, anyhow};
use deployd::client::Client;
use deployd::config::{ClusterConfig, Config, StepConfig};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// A cluster whose phases run `argv` (None: the phase has no step).
pub fn cluster(
    build: Option<&[&str]>,
    push: Option<&[&str]>,
    activate: Option<&[&str]>,
) -> ClusterConfig {
    let step = |argv: Option<&[&str]>| {
        argv.map(|argv| StepConfig {
            run: argv.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(600),
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

/// deployd serving on a port-0 listener inside this process.
pub struct Daemon {
    pub client: Client,
    pub data_dir: PathBuf,
    shutdown: Option<oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    /// Start serving; answers before the daemon is ready (see [`Daemon::ready`]).
    pub async fn launch(config: Config) -> anyhow::Result<Daemon> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (tx, rx) = oneshot::channel();
        let data_dir = config.server.data_dir.clone();
        let server = tokio::spawn(deployd::server::serve(listener, config, async {
            let _ = rx.await;
        }));
        Ok(Daemon {
            client: Client::new(&url, None)?,
            data_dir,
            shutdown: Some(tx),
            server,
        })
    }

    pub async fn start(config: Config) -> anyhow::Result<Daemon> {
        let daemon = Daemon::launch(config).await?;
        daemon.ready().await?;
        Ok(daemon)
    }

    /// Wait until the daemon answers `/readyz`. The listener is bound before
    /// `serve` runs, so a request sent now is answered as soon as it serves.
    pub async fn ready(&self) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        loop {
            match self.client.readyz().await {
                Ok(()) => return Ok(()),
                Err(e) if tokio::time::Instant::now() > deadline => {
                    return Err(anyhow!("deployd did not become ready: {e}"));
                }
                Err(_) if self.server.is_finished() => {
                    return Err(anyhow!("deployd stopped before it was ready"));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    }

    /// Upload a one-file source and return its digest.
    pub async fn upload(&self, tag: &str) -> anyhow::Result<String> {
        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(tag.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, "index.html", tag.as_bytes())?;
        let bytes = builder.into_inner()?;
        let sha = hex::encode(Sha256::digest(&bytes));
        self.client.put_source(&sha, bytes).await?;
        Ok(sha)
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(120), self.server)
            .await
            .context("deployd did not stop in time")??
    }
}
