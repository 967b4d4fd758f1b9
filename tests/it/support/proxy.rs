//! A TCP proxy the test controls, in front of a daemon: it can cut every
//! open connection mid-stream and refuse new ones for a while, which is how
//! a client's view of a flaky network is made without touching the daemon.
//!
//! What must stay true: once `set_refusing(true)` and `cut()` have returned,
//! no byte passes until `set_refusing(false)`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    /// Where clients connect instead of the daemon.
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    refusing: AtomicBool,
    /// Connections closed on arrival because the proxy was refusing.
    refused: AtomicUsize,
    /// One task per open connection; aborting it closes both ends. The
    /// accept loop checks `refusing` under this lock, so a connection that
    /// arrives while `cut` runs is either cut or refused, never missed.
    connections: Mutex<Vec<JoinHandle<()>>>,
}

impl Proxy {
    /// Listen on a free loopback port and forward to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            refusing: AtomicBool::new(false),
            refused: AtomicUsize::new(0),
            connections: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, upstream, Arc::clone(&shared)));
        Proxy {
            addr,
            shared,
            accept,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Close every open connection, and return once they are closed.
    pub async fn cut(&self) {
        let open: Vec<_> = self.connections().drain(..).collect();
        for connection in &open {
            connection.abort();
        }
        for connection in open {
            let _ = connection.await;
        }
    }

    /// While refusing, a new connection is closed as soon as it arrives.
    pub fn set_refusing(&self, refusing: bool) {
        self.shared.refusing.store(refusing, Ordering::SeqCst);
    }

    /// How many connections were refused since the proxy started.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.shared.connections.lock().expect("the proxy's lock")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        for connection in self.connections().drain(..) {
            connection.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, upstream: SocketAddr, shared: Arc<Shared>) {
    while let Ok((client, _)) = listener.accept().await {
        let mut connections = shared.connections.lock().expect("the proxy's lock");
        if shared.refusing.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            drop(client);
            continue;
        }
        connections.retain(|connection| !connection.is_finished());
        connections.push(tokio::spawn(forward(client, upstream)));
    }
}

async fn forward(mut client: TcpStream, upstream: SocketAddr) {
    // An unreachable daemon looks to the client like a closed connection.
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
}
