//! [`Listener`]: what other instances stored, heard through PostgreSQL's
//! LISTEN/NOTIFY on a connection of its own (not the pool's: LISTEN belongs
//! to a session, and a pooled session serves anyone).
//!
//! Migration 5's trigger sends `<deployment id> <newest seq>` on
//! `deployd_events` once per deployment for each statement that stored
//! events, at commit. What must stay true:
//! - a notification only says that the store has more; events are read from
//!   the store, never taken from the payload;
//! - notifications sent while the connection was down are lost for good, so
//!   after every (re)connect the caller hears [`Notice::Listening`] and must
//!   assume anything may have been stored meanwhile;
//! - a lost connection is retried with a backoff until `stopping` is
//!   cancelled, and only that ends the task.

use super::StoreError;
use futures::StreamExt;
use std::time::Duration;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Migration 5's channel.
const LISTEN: &str = "LISTEN deployd_events";
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The connection only ever waits to read, so only keepalives notice a peer
/// that vanished without closing it (a cut network): within about 30 s.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(15);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_RETRIES: u32 = 3;

/// What the listener hears.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    /// A committed statement stored events of `deployment`, up to `seq`.
    Stored { deployment: Uuid, seq: i64 },
    /// The listener (re)connected and listens: what was stored while it was
    /// away went unheard.
    Listening,
}

/// Listens on `deployd_events`; built by
/// [`PgStore::listener`](super::PgStore::listener) from the store's own
/// connection settings.
pub struct Listener {
    config: tokio_postgres::Config,
}

impl Listener {
    pub(super) fn new(mut config: tokio_postgres::Config) -> Listener {
        // Told apart from the pool's sessions in pg_stat_activity.
        let name = format!(
            "{}-listen",
            config.get_application_name().unwrap_or("deployd")
        );
        config
            .application_name(name)
            .keepalives(true)
            .keepalives_idle(KEEPALIVE_IDLE)
            .keepalives_interval(KEEPALIVE_INTERVAL)
            .keepalives_retries(KEEPALIVE_RETRIES);
        Listener { config }
    }

    /// Listen until `stopping` is cancelled, handing every notice to `tell`.
    pub async fn run(self, stopping: CancellationToken, mut tell: impl FnMut(Notice) + Send) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            let lost = tokio::select! {
                () = stopping.cancelled() => return,
                lost = self.session(&mut tell, &mut backoff) => lost,
            };
            tracing::warn!(
                error = %lost,
                retry_in = ?backoff,
                "lost the connection that hears other instances' events; reconnecting"
            );
            tokio::select! {
                () = stopping.cancelled() => return,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// One connection: LISTEN, then hand on what it hears until it fails.
    /// Once it listens, the next failure is retried after the first backoff.
    async fn session(&self, tell: &mut impl FnMut(Notice), backoff: &mut Duration) -> StoreError {
        let (client, mut connection) = match self.config.connect(NoTls).await {
            Ok(connected) => connected,
            Err(e) => return e.into(),
        };
        // The connection moves only while polled, LISTEN's own answer included.
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        let listen = client.batch_execute(LISTEN);
        tokio::pin!(listen);
        let mut listening = false;
        loop {
            tokio::select! {
                answer = &mut listen, if !listening => {
                    if let Err(e) = answer {
                        return e.into();
                    }
                    listening = true;
                    *backoff = FIRST_BACKOFF;
                    tell(Notice::Listening);
                }
                message = messages.next() => match message {
                    Some(Ok(AsyncMessage::Notification(n))) => match parse(n.payload()) {
                        Some(notice) => tell(notice),
                        None => tracing::warn!(
                            payload = n.payload(),
                            "ignoring a deployd_events notification that names no deployment and seq"
                        ),
                    },
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return e.into(),
                    None => return StoreError::Unavailable("the connection closed".into()),
                },
            }
        }
    }
}

/// `<deployment id> <seq>`, as migration 5's trigger writes it.
fn parse(payload: &str) -> Option<Notice> {
    let (deployment, seq) = payload.split_once(' ')?;
    Some(Notice::Stored {
        deployment: deployment.parse().ok()?,
        seq: seq.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_names_a_deployment_and_its_newest_seq() {
        let id = Uuid::now_v7();
        assert_eq!(
            parse(&format!("{id} 42")),
            Some(Notice::Stored {
                deployment: id,
                seq: 42
            })
        );
        for bad in [
            "",
            "42",
            &id.to_string(),
            &format!("{id} x"),
            "x 1",
            &format!("{id}  1"),
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }
}
