//! The connections being served: what each is doing, which one a new
//! connection at the cap closes, and when one has waited too long.
//!
//! A connection's [`Phase`] moves with its bytes: `Head` from its accept, or
//! from the first byte after an answer, until a request reaches the router;
//! `Busy` from then until the answer's last byte is flushed to the socket;
//! `Idle` after that. [`Watched`] (the socket) and [`Tracking`] (the service)
//! move it. What must stay true: a `Busy` connection is never closed for the
//! cap or shutdown, since that would cut an answer short, and is timed out
//! only when its peer has not taken a byte of its answer for `idle_timeout`
//! (a client that sends requests and never reads the answers would
//! otherwise hold its slot for ever, with no token); every other connection
//! may be, and the one waiting longest goes first.

use super::Limits;
use axum::Router;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::{Request, Response};
use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

#[derive(Debug, Clone, Copy)]
enum Phase {
    /// Waiting for a request head to complete (and, with TLS, the handshake).
    Head { since: Instant },
    /// Answering: `requests` are with the router or still sending their
    /// answers; at 0, the last answer is written but not yet flushed.
    Busy { requests: u32 },
    /// Between requests, everything written out.
    Idle { since: Instant },
}

impl Phase {
    /// Since when the connection has waited for its peer; `None` while busy.
    fn waiting_since(self) -> Option<Instant> {
        match self {
            Phase::Head { since } | Phase::Idle { since } => Some(since),
            Phase::Busy { .. } => None,
        }
    }
}

/// Every open connection, and the cap on how many there are.
pub(super) struct Connections {
    cap: usize,
    open: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
}

impl Connections {
    pub(super) fn new(cap: usize) -> Arc<Connections> {
        Arc::new(Connections {
            cap,
            open: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
        })
    }

    /// Register a new connection. At the cap, the connection waiting
    /// longest is closed to make room; `None` when every one is busy.
    pub(super) fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.len() >= self.cap {
            let victim = take_idlest(&mut open)?;
            tracing::debug!(
                open = open.len() + 1,
                "at max_connections: closing the connection idle longest"
            );
            victim.close.cancel();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (phase, _) = watch::channel(Phase::Head {
            since: Instant::now(),
        });
        let conn = Arc::new(Conn {
            phase,
            write_blocked: watch::Sender::new(None),
            close: CancellationToken::new(),
            gone: CancellationToken::new(),
        });
        open.insert(id, conn.clone());
        Some(Admitted {
            id,
            conn,
            all: self.clone(),
        })
    }

    /// Close the connection waiting longest, and answer it (to wait until
    /// it is gone); `None` when every connection is busy.
    pub(super) fn evict_idlest(&self) -> Option<Arc<Conn>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let victim = take_idlest(&mut open)?;
        victim.close.cancel();
        Some(victim)
    }
}

/// Remove and answer the connection that has waited longest, if any waits.
fn take_idlest(open: &mut HashMap<u64, Arc<Conn>>) -> Option<Arc<Conn>> {
    let (id, _) = open
        .iter()
        .filter_map(|(id, conn)| Some((*id, conn.phase.borrow().waiting_since()?)))
        .min_by_key(|(_, since)| *since)?;
    open.remove(&id)
}

/// A connection's place among the open ones, given up when dropped.
pub(super) struct Admitted {
    id: u64,
    conn: Arc<Conn>,
    all: Arc<Connections>,
}

impl Admitted {
    pub(super) fn conn(&self) -> &Arc<Conn> {
        &self.conn
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self.all.open.lock().unwrap_or_else(|e| e.into_inner());
        open.remove(&self.id);
        self.conn.gone.cancel();
    }
}

/// One connection's phase and the signals about it.
pub(super) struct Conn {
    phase: watch::Sender<Phase>,
    /// Since when a write has waited for the peer to take bytes; `None`
    /// while writes go through.
    write_blocked: watch::Sender<Option<Instant>>,
    /// Asks the connection's task to close it now (the cap).
    close: CancellationToken,
    /// Cancelled when the connection's task has let it go.
    gone: CancellationToken,
}

impl Conn {
    /// Resolves once the connection's task has let its socket go.
    pub(super) async fn gone(&self) {
        self.gone.cancelled().await
    }

    /// Resolves, with the reason, when the connection should be closed:
    /// the cap chose it, it waited past `header_timeout` for a request
    /// head or past `idle_timeout` between requests, or the server shuts
    /// down while it is not busy. Never while it is busy.
    pub(super) async fn until_closed(
        &self,
        limits: &Limits,
        shutdown: &CancellationToken,
    ) -> &'static str {
        let mut phase = self.phase.subscribe();
        let mut blocked = self.write_blocked.subscribe();
        loop {
            let now = *phase.borrow_and_update();
            let blocked_since = *blocked.borrow_and_update();
            let deadline = match now {
                Phase::Head { since } => Some((since + limits.header_timeout, "header_timeout")),
                Phase::Idle { since } => Some((since + limits.idle_timeout, "idle_timeout")),
                Phase::Busy { .. } => {
                    blocked_since.map(|since| (since + limits.idle_timeout, "not read"))
                }
            };
            let busy = matches!(now, Phase::Busy { .. });
            if !busy && deadline.is_some() && shutdown.is_cancelled() {
                return "shutting down";
            }
            let timer = async {
                match deadline {
                    Some((at, why)) => {
                        tokio::time::sleep_until(at).await;
                        why
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = self.close.cancelled() => return "max_connections",
                why = timer => return why,
                // The senders live in `self`: these never err.
                _ = phase.changed() => {}
                _ = blocked.changed() => {}
                () = shutdown.cancelled(), if !shutdown.is_cancelled() => {}
            }
        }
    }

    /// A write went through (`false`) or must wait for the peer (`true`).
    fn write_waits(&self, waits: bool) {
        self.write_blocked
            .send_if_modified(|since| match (waits, *since) {
                (true, None) => {
                    *since = Some(Instant::now());
                    true
                }
                (false, Some(_)) => {
                    *since = None;
                    true
                }
                _ => false,
            });
    }

    /// Bytes arrived: after an answer, they start the next request head.
    fn read_some(&self) {
        self.phase.send_if_modified(|phase| match phase {
            Phase::Idle { .. } => {
                *phase = Phase::Head {
                    since: Instant::now(),
                };
                true
            }
            Phase::Head { .. } | Phase::Busy { .. } => false,
        });
    }

    /// Everything written so far reached the socket.
    fn flushed(&self) {
        self.phase.send_if_modified(|phase| match phase {
            Phase::Busy { requests: 0 } => {
                *phase = Phase::Idle {
                    since: Instant::now(),
                };
                true
            }
            _ => false,
        });
    }

    fn begin(self: &Arc<Self>) -> InFlight {
        self.phase.send_modify(|phase| {
            *phase = match *phase {
                Phase::Busy { requests } => Phase::Busy {
                    requests: requests + 1,
                },
                Phase::Head { .. } | Phase::Idle { .. } => Phase::Busy { requests: 1 },
            }
        });
        InFlight(self.clone())
    }
}

/// One request from the router's call until its answer's body is done
/// (or dropped with the connection).
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.phase.send_modify(|phase| {
            if let Phase::Busy { requests } = phase {
                *requests = requests.saturating_sub(1);
            }
        });
    }
}

/// The socket (or the TLS stream over it), reporting reads and flushes.
pub(super) struct Watched<S> {
    io: S,
    conn: Arc<Conn>,
}

impl<S> Watched<S> {
    pub(super) fn new(io: S, conn: Arc<Conn>) -> Watched<S> {
        Watched { io, conn }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            this.conn.read_some();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write(cx, buf);
        this.conn.write_waits(polled.is_pending());
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.conn.write_waits(polled.is_pending());
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.io).poll_flush(cx);
        this.conn.write_waits(polled.is_pending());
        if let Poll::Ready(Ok(())) = polled {
            this.conn.flushed();
        }
        polled
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// The router as one connection's hyper service, marking it busy from each
/// call until the answer's body is done.
pub(super) struct Tracking {
    router: Router,
    conn: Arc<Conn>,
}

impl Tracking {
    pub(super) fn new(router: Router, conn: Arc<Conn>) -> Tracking {
        Tracking { router, conn }
    }
}

type Answer = Pin<Box<dyn Future<Output = Result<Response<Tracked>, Infallible>> + Send>>;

impl hyper::service::Service<Request<Incoming>> for Tracking {
    type Response = Response<Tracked>;
    type Error = Infallible;
    type Future = Answer;

    fn call(&self, request: Request<Incoming>) -> Answer {
        let in_flight = self.conn.begin();
        let answer = self.router.clone().oneshot(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| Tracked {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// An answer's body, holding its request in flight until it is dropped.
pub(super) struct Tracked {
    body: axum::body::Body,
    _in_flight: InFlight,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
