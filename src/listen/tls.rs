//! HTTPS: the certificate and key named by `server.tls`, loaded at start and
//! again on SIGHUP or when either file changes.
//!
//! What must stay true: the listener is never dropped for a reload, and a
//! pair that does not load (unreadable, not PEM, a key of another
//! certificate, a half-written file) leaves the pair being served in place
//! and says why in the log. Connections pick up the pair current when they
//! are accepted; open ones keep theirs. The config rules load the files with
//! [`load`] too, so a bad pair at start is a config error naming the file.

use rustls::ServerConfig;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

/// How often the files' metadata is compared with what was loaded.
const POLL: Duration = Duration::from_secs(2);

/// Why a pair did not load: `file` is the config key under `server.tls`
/// (`cert_file` or `key_file`), and the message names the path.
#[derive(Debug, thiserror::Error)]
#[error("server.tls.{file}: {message}")]
pub struct TlsError {
    pub file: &'static str,
    pub message: String,
}

/// The pair being served, and where it came from.
#[derive(Clone)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl Tls {
    /// Load the pair; an error names the file at fault.
    pub fn load(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        Ok(Tls {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: Arc::new(RwLock::new(load(cert, key)?)),
        })
    }

    /// An acceptor for one new connection, with the pair current now.
    pub fn acceptor(&self) -> TlsAcceptor {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        TlsAcceptor::from(current.clone())
    }

    /// A task that loads the pair again on SIGHUP, and whenever either
    /// file's metadata (modified time, size, inode: a rename counts)
    /// differs from what the last attempt saw, until `stopping`. SIGHUP is
    /// handled from this call on, not from the task's first poll: a signal
    /// that came in between would end the process.
    pub fn reload_on_change(self, stopping: CancellationToken) -> impl Future<Output = ()> {
        let hangup = match signal(SignalKind::hangup()) {
            Ok(hangup) => Some(hangup),
            Err(error) => {
                tracing::warn!(%error, "cannot handle SIGHUP: the certificate reloads only when its files change");
                None
            }
        };
        self.reload_loop(hangup, stopping)
    }

    async fn reload_loop(self, mut hangup: Option<Signal>, stopping: CancellationToken) {
        let mut seen = self.stamps();
        loop {
            let hup = async {
                match hangup.as_mut() {
                    Some(hangup) => hangup.recv().await,
                    None => std::future::pending().await,
                }
            };
            let why = tokio::select! {
                () = stopping.cancelled() => return,
                _ = hup => "SIGHUP",
                () = tokio::time::sleep(POLL) => {
                    if self.stamps() == seen {
                        continue;
                    }
                    "a file changed"
                }
            };
            seen = self.stamps();
            self.reload(why);
        }
    }

    fn reload(&self, why: &str) {
        let (cert, key) = (self.cert.display(), self.key.display());
        match load(&self.cert, &self.key) {
            Ok(config) => {
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = config;
                tracing::info!(why, %cert, %key, "reloaded the TLS certificate");
            }
            Err(error) => {
                tracing::warn!(why, %error, "keeping the TLS certificate being served");
            }
        }
    }

    fn stamps(&self) -> [Option<(SystemTime, u64, u64)>; 2] {
        [&self.cert, &self.key].map(|path| {
            use std::os::unix::fs::MetadataExt;
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len(), meta.ino()))
        })
    }
}

/// A rustls server config from PEM files: the certificate chain (leaf
/// first) and its private key. HTTP/1.1 only.
pub fn load(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read(cert, "cert_file")?;
    let chain = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad_pem("cert_file", cert, e, "certificate"))?;
    if chain.is_empty() {
        return Err(bad_pem(
            "cert_file",
            cert,
            pem::Error::NoItemsFound,
            "certificate",
        ));
    }
    let private = read(key, "key_file")?;
    let private = PrivateKeyDer::from_pem_slice(&private)
        .map_err(|e| bad_pem("key_file", key, e, "private key"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, private)
        })
        .map_err(|e| TlsError {
            file: "key_file",
            message: format!(
                "{} does not go with the certificate in {}: {e}",
                key.display(),
                cert.display()
            ),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path, file: &'static str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError {
        file,
        message: format!("cannot read {}: {e}", path.display()),
    })
}

fn bad_pem(file: &'static str, path: &Path, error: pem::Error, what: &str) -> TlsError {
    let message = match error {
        pem::Error::NoItemsFound => format!("{} holds no PEM {what}", path.display()),
        error => format!("{} is not a PEM {what}: {error}", path.display()),
    };
    TlsError { file, message }
}
