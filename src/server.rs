//! Wiring: open the store, reconcile, start the supervisor, serve HTTP until
//! the shutdown signal, then shut down in order.

use crate::config::Config;
use std::future::Future;
use tokio::net::TcpListener;

/// Serve deployd on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let _ = (listener, config);
    shutdown.await;
    Ok(())
}

/// Open the configured store, applying pending migrations.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let _ = config;
    Ok(())
}
