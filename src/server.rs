//! Wiring: open the store, reconcile, start the supervisor, serve HTTP until
//! the shutdown signal, then shut down in order.
//!
//! Start-up reconciles before it serves: expired leases become `interrupted`
//! and targets with durable `queued` rows get their actor, which resumes them.

use crate::app_actor::Shared;
use crate::config::Config;
use crate::events::EventHub;
use crate::http::{self, AppState};
use crate::machine::{Authority, State};
use crate::source::{ExtractLimits, SourceStore};
use crate::store::{
    Change, DynStore, StoreError, VersionChange, postgres::PgStore, sqlite::SqliteStore,
};
use crate::supervisor::SupervisorHandle;
use anyhow::Context;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Serve deployd on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data_dir = prepare_data_dir(&config.server.data_dir)?;
    let store = open_store(&config, &data_dir).await?;
    let sources = SourceStore::new(
        data_dir.join("sources"),
        config.limits.upload_bytes,
        ExtractLimits {
            max_bytes: config.limits.extracted_bytes,
            max_entries: config.limits.extracted_entries,
        },
    )
    .context("could not prepare the sources directory")?;
    let shared = Arc::new(Shared {
        hub: EventHub::new(store.clone()),
        store,
        sources: Arc::new(sources),
        config: Arc::new(config),
        instance: uuid::Uuid::now_v7().to_string(),
        data_dir,
    });
    tracing::info!(instance = %shared.instance, "reconciling before serving");
    reap_expired(&shared)
        .await
        .context("start-up reconciliation failed")?;
    let (supervisor, _) = SupervisorHandle::start(shared.clone()).await?;
    for (app, cluster) in shared.store.queued_targets().await? {
        supervisor.target(&app, &cluster).await?;
    }
    let stop = CancellationToken::new();
    tokio::spawn(reaper(shared.clone(), stop.clone()));

    let router = http::router(AppState {
        shared: shared.clone(),
        supervisor: supervisor.clone(),
    });
    let hub = shared.hub.clone();
    let stopping = stop.clone();
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: ending open streams");
            stopping.cancel();
            // Open SSE streams would otherwise hold graceful shutdown forever.
            hub.close();
        })
        .await
        .context("the HTTP server failed")?;
    stop.cancel();
    supervisor.stop().await;
    tracing::info!("stopped");
    Ok(())
}

/// Open the configured store, applying pending migrations.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let data_dir = prepare_data_dir(&config.server.data_dir)?;
    open_store(config, &data_dir).await?;
    Ok(())
}

fn prepare_data_dir(dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("could not create the data dir {}", dir.display()))?;
    dir.canonicalize()
        .with_context(|| format!("could not resolve the data dir {}", dir.display()))
}

async fn open_store(config: &Config, data_dir: &Path) -> anyhow::Result<DynStore> {
    let store: DynStore = match &config.store.url {
        Some(url) => Arc::new(
            PgStore::connect(url)
                .await
                .context("could not open the PostgreSQL store")?,
        ),
        None => {
            let path = data_dir.join("deployd.db");
            Arc::new(
                SqliteStore::open(&path)
                    .with_context(|| format!("could not open {}", path.display()))?,
            )
        }
    };
    Ok(store)
}

/// Every lease period / 3, free targets whose running deployment's owner
/// stopped renewing its lease (a crashed or partitioned instance).
async fn reaper(shared: Arc<Shared>, stop: CancellationToken) {
    let every = shared.config.deploy.lease / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = reap_expired(&shared).await {
            tracing::warn!(error = %e, "lease reaper failed; will try again");
        }
    }
}

/// Mark running deployments whose lease expired `interrupted`, with an event
/// naming the phase and the instance that held them.
pub async fn reap_expired(shared: &Shared) -> Result<usize, StoreError> {
    let now = chrono::Utc::now();
    let mut reaped = 0;
    for lease in shared.store.expired_leases(now).await? {
        let d = &lease.deployment;
        let owner = lease.owner.as_deref().unwrap_or("unknown");
        let error = format!(
            "interrupted during {}: instance {owner} stopped renewing its lease",
            d.state
        );
        let Ok(change) = Change::new(
            d,
            State::Interrupted,
            Authority::Reconciler,
            VersionChange::Keep,
            now,
        ) else {
            continue;
        };
        match shared.store.transition(change.with_error(&error)).await {
            Ok(applied) => {
                tracing::warn!(deployment = %d.id, app = %d.app, cluster = %d.cluster, %error, "reaped");
                shared.hub.publish(&[applied.event]);
                reaped += 1;
            }
            Err(StoreError::Stale { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(reaped)
}
