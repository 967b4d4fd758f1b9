//! Serving the router on a listener, over HTTP/1.1 or HTTPS, with the
//! connections bounded: our own accept loop rather than `axum::serve`, which
//! never closes a connection that sends nothing.
//!
//! What must stay true:
//! - At most `server.max_connections` connections are open (lowered to what
//!   the open-file limit leaves, see [`connection_cap`]). A connection
//!   arriving at the cap closes the one that has waited longest for its
//!   peer — between requests, or still sending its request head — so
//!   `/healthz`, `/readyz` and new requests are answered however many idle
//!   connections pile up. A connection answering a request is never closed
//!   for another; when all are, the new one is closed instead.
//! - A request head must arrive within `server.header_timeout` of the
//!   connection's accept or of its first byte; a connection with nothing in
//!   flight is closed after `server.idle_timeout`. Answering is not timed
//!   out: a progress stream may run for as long as its deploy.
//! - Shutdown: the `shutdown` future runs to its end first (the server
//!   stops its work and ends open streams there), then accepting stops,
//!   waiting connections close, in-flight answers finish, and [`serve`]
//!   returns when every connection is gone.
//!
//! Small answers and SSE frames go out at once (`TCP_NODELAY`): with
//! Nagle's algorithm a one-target deploy waited ~40 ms per round trip
//! (BENCHMARKS.md).

mod conns;
pub mod tls;

use crate::config::ServerConfig;
use axum::Router;
use conns::{Admitted, Conn, Connections, Tracking, Watched};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tls::Tls;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// File descriptors left for everything but connections: the store, step
/// pipes, uploads being written, the listener.
const RESERVED_FDS: u64 = 64;
/// How long accepting pauses after an error no closed connection answers.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How connections are bounded; see the module doc.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Limits {
    pub fn of(server: &ServerConfig) -> Limits {
        Limits {
            max_connections: server.max_connections,
            header_timeout: server.header_timeout,
            idle_timeout: server.idle_timeout,
        }
    }
}

/// Serve `router` on `listener` (HTTPS when `tls` is given) until
/// `shutdown` resolves and every connection is gone.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Tls>,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let cap = connection_cap(limits.max_connections);
    tracing::info!(
        max_connections = cap,
        header_timeout = %humantime::format_duration(limits.header_timeout),
        idle_timeout = %humantime::format_duration(limits.idle_timeout),
        tls = tls.is_some(),
        "serving"
    );
    let open = Connections::new(cap);
    let closing = CancellationToken::new();
    let tasks = TaskTracker::new();
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    accept_failed(error, &open).await;
                    continue;
                }
            },
        };
        let Some(admitted) = open.admit() else {
            tracing::warn!(%peer, max_connections = cap, "refused a connection: every open one is answering a request");
            continue;
        };
        if let Err(error) = tcp.set_nodelay(true) {
            tracing::warn!(%error, "could not set TCP_NODELAY");
        }
        let conn = admitted.conn().clone();
        let acceptor = tls.as_ref().map(Tls::acceptor);
        let serving = connection(tcp, acceptor, router.clone(), admitted, closing.clone());
        let closing = closing.clone();
        tasks.spawn(async move {
            tokio::select! {
                () = serving => {}
                why = conn.until_closed(&limits, &closing) => {
                    tracing::debug!(%peer, why, "closed a connection");
                }
            }
        });
    }
    drop(listener);
    closing.cancel();
    tasks.close();
    tasks.wait().await;
}

/// The TLS handshake, if any, then HTTP/1.1 until the peer or the server
/// ends it. Dropped, it closes the socket and gives up its place.
async fn connection(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    router: Router,
    admitted: Admitted,
    closing: CancellationToken,
) {
    let conn = admitted.conn().clone();
    match tls {
        None => http(tcp, conn, router, &closing).await,
        Some(acceptor) => match acceptor.accept(tcp).await {
            Ok(stream) => http(stream, conn, router, &closing).await,
            Err(error) => tracing::debug!(%error, "TLS handshake failed"),
        },
    }
    drop(admitted);
}

async fn http<S>(io: S, conn: Arc<Conn>, router: Router, closing: &CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = Tracking::new(router, conn.clone());
    let io = TokioIo::new(Watched::new(io, conn));
    let http = hyper::server::conn::http1::Builder::new()
        // Ours (`Conn::until_closed`) tells a slow head from an idle
        // connection; hyper's would close both after the same time.
        .header_read_timeout(None)
        .serve_connection(io, service);
    tokio::pin!(http);
    let ended = tokio::select! {
        ended = http.as_mut() => ended,
        () = closing.cancelled() => {
            // Finish the answer in flight, then close.
            http.as_mut().graceful_shutdown();
            http.await
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%error, "a connection ended with an error");
    }
}

/// Accepting failed. Out of file descriptors (EMFILE, ENFILE), closing the
/// connection idle longest frees one; anything else, or nothing to close,
/// waits a little rather than spin.
async fn accept_failed(error: io::Error, open: &Connections) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    // The peer gave up before we took the connection: nothing to do.
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    match open.evict_idlest() {
        Some(victim) => {
            tracing::warn!(%error, "accept failed: closed the connection idle longest");
            let _ = tokio::time::timeout(ACCEPT_BACKOFF, victim.gone()).await;
        }
        None => {
            tracing::warn!(%error, "accept failed");
            tokio::time::sleep(ACCEPT_BACKOFF).await;
        }
    }
}

/// `max_connections`, or fewer when the open-file limit leaves less room
/// (each connection holds a descriptor, and [`RESERVED_FDS`] stay for the
/// rest), so the cap is reached before accepting fails.
fn connection_cap(max_connections: usize) -> usize {
    let Ok((soft, _)) = fd_limit() else {
        return max_connections;
    };
    let room = soft.saturating_sub(RESERVED_FDS).max(1);
    let room = usize::try_from(room).unwrap_or(usize::MAX);
    if room < max_connections {
        tracing::warn!(
            max_connections,
            open_file_limit = soft,
            serving_at_most = room,
            "the open-file limit leaves room for fewer connections than server.max_connections"
        );
    }
    room.min(max_connections)
}

/// Raise the soft limit on open files to the hard limit, and log what was
/// done: every connection holds a file descriptor, and the soft limit is
/// often far below what the system allows this process.
pub fn raise_fd_limit() {
    match fd_limit().and_then(|(soft, hard)| {
        if soft < hard {
            set_fd_limit(hard, hard)?;
        }
        Ok((soft, hard))
    }) {
        Ok((soft, hard)) if soft < hard => {
            tracing::info!(
                from = soft,
                to = hard,
                "raised the open-file limit to its hard limit"
            )
        }
        Ok((soft, _)) => tracing::info!(limit = soft, "the open-file limit is at its hard limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
}

/// RLIMIT_NOFILE as (soft, hard).
fn fd_limit() -> io::Result<(u64, u64)> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass, nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

fn set_fd_limit(soft: u64, hard: u64) -> io::Result<()> {
    let limit = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
