//! Wiring: open the store, reconcile, start the supervisor, serve HTTP until
//! the shutdown signal, then shut down in order.
//!
//! Start-up reconciles before it serves: expired leases and overdue phases
//! are settled, and targets with durable `queued` rows get their actor back,
//! which resumes them in order. Shutdown: stop taking work, end open streams,
//! give running steps `server.shutdown_grace`, then stop them and mark their
//! deployments `interrupted`; queued ones stay queued for the next start.

use crate::app_actor::Shared;
use crate::config::Config;
use crate::events::EventHub;
use crate::http::{self, AppState};
use crate::machine::{Authority, State};
use crate::model::now;
use crate::source::{ExtractLimits, SourceStore};
use crate::store::{
    Change, DynStore, LeaseInfo, StoreError, VersionChange, postgres::PgStore, sqlite::SqliteStore,
};
use crate::supervisor::SupervisorHandle;
use anyhow::Context;
use axum::serve::ListenerExt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// How long past a phase's deadline (and the kill grace) reconciliation
/// leaves a live owner to fail its own phase before doing it.
const OWNER_MARGIN: Duration = Duration::from_secs(5);
/// The reaper runs at a third of the lease, and at least this often (phase
/// deadlines do not depend on the lease).
const REAPER_MAX_PERIOD: Duration = Duration::from_secs(5);
/// How often shutdown checks whether the running steps are done.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);

/// Serve deployd on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data_dir = prepare_data_dir(&config.server.data_dir)?;
    let store = crate::metrics::TimedStore::wrap(open_store(&config, &data_dir).await?);
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
        stopping: CancellationToken::new(),
    });
    tracing::info!(instance = %shared.instance, "reconciling before serving");
    reconcile(&shared)
        .await
        .context("start-up reconciliation failed")?;
    let (supervisor, _) = SupervisorHandle::start(shared.clone()).await?;
    for (app, cluster) in shared.store.queued_targets().await? {
        supervisor.wake(&app, &cluster).await?;
    }
    tokio::spawn(reaper(shared.clone()));
    let every = shared.config.deploy.compact_every;
    tokio::spawn(crate::compaction::run(
        shared.clone(),
        every,
        shared.stopping.clone(),
    ));

    let router = http::router(AppState {
        shared: shared.clone(),
        supervisor: supervisor.clone(),
    });
    let stopping = shared.clone();
    // Small answers and SSE frames go out at once: with Nagle's algorithm a
    // one-target deploy waited ~40 ms per round trip (BENCHMARKS.md).
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "could not set TCP_NODELAY");
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down: no new work, ending open streams");
            stopping.stopping.cancel();
            // Open SSE streams would otherwise hold graceful shutdown forever.
            stopping.hub.close();
        })
        .await
        .context("the HTTP server failed")?;
    let grace = shared.config.server.shutdown_grace;
    tracing::info!(grace = %humantime::format_duration(grace), "waiting for running steps");
    wait_for_running(&shared, grace).await;
    supervisor.stop().await;
    interrupt_owned(&shared).await;
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

/// Until the grace runs out, wait for this instance's running deployments.
async fn wait_for_running(shared: &Shared, grace: Duration) {
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        match shared.store.owned_by(&shared.instance).await {
            Ok(running) if running.is_empty() => return,
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "cannot see running deployments; not waiting");
                return;
            }
        }
        tokio::time::sleep(SHUTDOWN_POLL).await;
    }
}

/// Mark what this instance still runs `interrupted`: the record says exactly
/// what happened. The actors were stopped, which stopped their steps.
async fn interrupt_owned(shared: &Shared) {
    let owned = match shared.store.owned_by(&shared.instance).await {
        Ok(owned) => owned,
        Err(e) => {
            tracing::warn!(error = %e, "cannot mark running deployments interrupted; their leases will lapse");
            return;
        }
    };
    for lease in owned {
        let error = format!(
            "interrupted during {}: deployd shut down",
            lease.deployment.state
        );
        settle(shared, &lease, State::Interrupted, &error).await;
    }
}

/// Every lease period / 3, free targets whose running deployment's owner
/// stopped renewing its lease, and end phases past their stored deadline.
async fn reaper(shared: Arc<Shared>) {
    let every = (shared.config.deploy.lease / 3).min(REAPER_MAX_PERIOD);
    loop {
        tokio::select! {
            _ = shared.stopping.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if let Err(e) = reconcile(&shared).await {
            tracing::warn!(error = %e, "reconciliation failed; will try again");
        }
    }
}

/// Settle what no live owner will: running deployments whose lease expired
/// become `interrupted` (naming the phase and the instance), and those past
/// their phase deadline (stored when the phase began, so it survives a
/// restart) become `failed`. Their leftover step processes are killed.
pub async fn reconcile(shared: &Shared) -> Result<usize, StoreError> {
    let now = now();
    let mut settled = 0;
    for lease in shared.store.expired_leases(now).await? {
        let owner = lease.owner.as_deref().unwrap_or("unknown");
        let error = format!(
            "interrupted during {}: instance {owner} stopped renewing its lease",
            lease.deployment.state
        );
        settled += settle(shared, &lease, State::Interrupted, &error).await as usize;
    }
    // A live owner fails its own timed-out phase; give it the kill grace first.
    let margin = shared.config.deploy.kill_grace + OWNER_MARGIN;
    for lease in shared.store.overdue_phases(now - margin).await? {
        let error = format!(
            "{} timed out (deadline passed)",
            step_name(lease.deployment.state)
        );
        settled += settle(shared, &lease, State::Failed, &error).await as usize;
    }
    Ok(settled)
}

fn step_name(state: State) -> &'static str {
    match state {
        State::Building => "build step",
        State::Pushing => "push step",
        _ => "activate step",
    }
}

/// End one running deployment on behalf of reconciliation; true if this
/// call did it (a compare-and-set: a live owner may have got there first).
async fn settle(shared: &Shared, lease: &LeaseInfo, to: State, error: &str) -> bool {
    let d = &lease.deployment;
    let Ok(change) = Change::new(d, to, Authority::Reconciler, VersionChange::Keep, now()) else {
        return false;
    };
    match shared.store.transition(change.with_error(error)).await {
        Ok(applied) => {
            tracing::warn!(deployment = %d.id, app = %d.app, cluster = %d.cluster, %error, "settled by reconciliation");
            shared.hub.publish(&[applied.event]);
            crate::metrics::global().deployment_finished(to);
            crate::pipeline::kill_orphans(d.id);
            true
        }
        Err(StoreError::Stale { .. }) => false,
        Err(e) => {
            tracing::warn!(deployment = %d.id, error = %e, "could not settle a deployment");
            false
        }
    }
}
