//! Wiring: open the store, reconcile, start the supervisor, serve HTTP or
//! HTTPS ([`crate::listen`]) until the shutdown signal, then shut down in
//! order.
//!
//! Start-up starts the supervisor, then reconciles before it serves: expired
//! leases and overdue phases are settled (a crashed instance's activations
//! are handed to their target's actor, which restores the cluster first), and targets with durable `queued` rows get their actor back,
//! which resumes them in order. Shutdown: stop taking work, end open streams,
//! give running steps `server.shutdown_grace`, then stop them and mark their
//! deployments `interrupted`; queued ones stay queued for the next start.

use crate::config::Config;
use crate::daemon::Daemon;
use crate::events::{EventHub, QUIET_RECHECK, Writers};
use crate::http::{self, AppState};
use crate::instance;
use crate::layout::DataDir;
use crate::listen::{self, Limits, tls::Tls};
use crate::metrics::{Metrics, TimedStore};
use crate::reconcile::{interrupt_owned, reaper, reconcile, wait_for_running};
use crate::source::{ExtractLimits, SourceStore};
use crate::store::postgres::{Listener, Notice, PgStore};
use crate::store::{DynStore, sqlite::SqliteStore};
use crate::supervisor::SupervisorHandle;
use crate::target::TargetError;
use anyhow::Context;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for background tasks (phase tasks, recoveries,
/// compaction) after the actors stopped.
const TASKS_GRACE: Duration = Duration::from_secs(10);

/// Serve deployd on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let data_dir = DataDir::prepare(&config.server.data_dir).with_context(|| {
        let dir = config.server.data_dir.display();
        format!("could not prepare the data dir {dir}")
    })?;
    // One daemon per data dir; held until this function returns.
    let _claim = data_dir.claim()?;
    let metrics = Arc::new(Metrics::new());
    let (store, pg_listener) = open_store(&config, &data_dir).await?;
    let store: DynStore = Arc::new(TimedStore::new(store, metrics.clone()));
    // Other instances on the same PostgreSQL store events this hub never commits.
    let writers = match &pg_listener {
        Some(_) => Writers::Shared {
            recheck: QUIET_RECHECK,
        },
        None => Writers::Alone,
    };
    let sources = SourceStore::open(
        &data_dir,
        config.limits.upload_bytes,
        ExtractLimits {
            max_bytes: config.limits.extracted_bytes,
            max_entries: config.limits.extracted_entries,
        },
    )
    .context("could not prepare the sources directory")?;
    let listening = listener
        .local_addr()
        .context("the listener has no address")?;
    let address = instance::address(&config, listening, config.server.tls.files().is_some());
    let shared = Arc::new(Daemon {
        hub: EventHub::new(store.clone(), writers),
        store,
        sources: Arc::new(sources),
        config: Arc::new(config),
        instance: uuid::Uuid::now_v7().to_string(),
        address,
        peers: http::forward::client(),
        peer_key: instance::PeerKey::new().context("cannot make this instance's peer key")?,
        data_dir,
        metrics,
        stopping: CancellationToken::new(),
        tasks: TaskTracker::new(),
    });
    instance::register(&shared)
        .await
        .context("could not register this instance in the store")?;
    if let Some(pg_listener) = pg_listener {
        let hub = shared.hub.clone();
        let stopping = shared.stopping.clone();
        shared
            .tasks
            .spawn(pg_listener.run(stopping, move |notice| match notice {
                Notice::Stored { deployment, seq } => hub.stored_elsewhere(deployment, seq),
                Notice::Listening => hub.resync(),
            }));
    }
    // The supervisor runs first: reconciliation hands it the activations
    // of a crashed instance, to be restored before they are recorded.
    let (supervisor, _) = SupervisorHandle::start(shared.clone()).await?;
    tracing::info!(instance = %shared.instance, address = %shared.address, "reconciling before serving");
    reconcile(&shared, &supervisor)
        .await
        .context("start-up reconciliation failed")?;
    for (app, cluster) in shared.store.queued_targets().await? {
        match supervisor.wake(&app, &cluster).await {
            // Another live instance owns it and runs its queue.
            Ok(()) | Err(TargetError::Elsewhere(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    shared
        .tasks
        .spawn(instance::heartbeat(shared.clone(), supervisor.clone()));
    shared
        .tasks
        .spawn(reaper(shared.clone(), supervisor.clone()));
    // What a crash left (workspaces of deployments that reconciliation just
    // ended, half-made releases, cleanups still owed) goes now, not at the
    // first compaction.
    let sweeping = shared.clone();
    shared.tasks.spawn(async move {
        if let Err(e) = crate::compaction::settle_and_sweep(&sweeping).await {
            tracing::warn!(error = %e, "the start-up sweep of the data dir failed");
        }
    });
    let every = shared.config.deploy.compact_every;
    shared.tasks.spawn(crate::compaction::run(
        shared.clone(),
        every,
        shared.stopping.clone(),
    ));

    let router = http::router(AppState {
        shared: shared.clone(),
        supervisor: supervisor.clone(),
    });
    let tls = match shared.config.server.tls.files() {
        Some((cert, key)) => {
            let tls = Tls::load(cert, key).context("cannot serve HTTPS")?;
            let stopping = shared.stopping.clone();
            shared.tasks.spawn(tls.clone().reload_on_change(stopping));
            Some(tls)
        }
        None => None,
    };
    warn_of_clear_tokens(&shared.config, &listener, tls.is_some());
    let stopping = shared.clone();
    let limits = Limits::of(&shared.config.server);
    listen::serve(listener, router, tls, limits, async move {
        shutdown.await;
        tracing::info!("shutting down: no new work, ending open streams");
        stopping.stopping.cancel();
        // Open SSE streams would otherwise hold graceful shutdown forever.
        stopping.hub.close();
    })
    .await;
    let grace = shared.config.server.shutdown_grace;
    tracing::info!(grace = %humantime::format_duration(grace), "waiting for running steps");
    wait_for_running(&shared, grace).await;
    supervisor.stop().await;
    interrupt_owned(&shared).await;
    instance::retire(&shared).await;
    shared.tasks.close();
    if tokio::time::timeout(TASKS_GRACE, shared.tasks.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = shared.tasks.len(),
            "background tasks still running at exit"
        );
    }
    tracing::info!("stopped");
    Ok(())
}

/// Tokens sent in clear can be read on the way: say so when they would be,
/// at the address the listener really has.
fn warn_of_clear_tokens(config: &Config, listener: &TcpListener, tls: bool) {
    let Ok(address) = listener.local_addr() else {
        return;
    };
    if !address.ip().is_loopback() && !tls && !config.auth.tokens.is_empty() {
        tracing::warn!(
            %address,
            "serving plain HTTP on a non-loopback address: API tokens cross the network in clear; \
             set server.tls.cert_file and server.tls.key_file, or serve behind a TLS proxy"
        );
    }
}

/// Open the configured store, applying pending migrations.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let data_dir = DataDir::prepare(&config.server.data_dir).with_context(|| {
        let dir = config.server.data_dir.display();
        format!("could not prepare the data dir {dir}")
    })?;
    open_store(config, &data_dir).await?;
    Ok(())
}

/// The store, and for PostgreSQL the listener that hears other instances' events.
async fn open_store(
    config: &Config,
    data_dir: &DataDir,
) -> anyhow::Result<(DynStore, Option<Listener>)> {
    Ok(match &config.store.url {
        Some(url) => {
            let store = PgStore::connect(url)
                .await
                .context("could not open the PostgreSQL store")?;
            let listener = store.listener();
            (Arc::new(store), Some(listener))
        }
        None => {
            let path = data_dir.database();
            let store = SqliteStore::open(&path)
                .with_context(|| format!("could not open {}", path.display()))?;
            (Arc::new(store), None)
        }
    })
}
