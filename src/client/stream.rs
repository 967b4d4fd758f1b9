//! Progress streams: one SSE connection parsed into [`StreamEvent`]s, and the
//! follower that strings connections together across drops.
//!
//! What must stay true: a follower yields each event at most once and in
//! sequence order, resumes with `Last-Event-ID` set to the last sequence it
//! yielded, and ends right after the final state event.

use super::{Client, ClientError, transport};
use crate::model::EventData;
use eventsource_stream::{EventStreamError, Eventsource};
use futures::stream::{BoxStream, Stream, StreamExt};
use reqwest::Response;
use serde::Serialize;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use uuid::Uuid;

/// One event of a progress stream. `seq` is the SSE `id:`, absent only if
/// the server sent none.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StreamEvent {
    pub seq: Option<i64>,
    #[serde(flatten)]
    pub data: EventData,
}

/// A deployment's progress stream as the server sends it, one connection.
pub struct EventStream {
    pub(super) inner: BoxStream<'static, Result<StreamEvent, ClientError>>,
    /// The server answered a deploy or rollback with an existing
    /// deployment (`200`, a repeated idempotency key), not a new one.
    pub repeated: bool,
}

impl Stream for EventStream {
    type Item = Result<StreamEvent, ClientError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Follow a deployment's progress from after `after` to its final state
/// event, reconnecting with back-off and `Last-Event-ID` whenever the
/// connection drops, so every event is yielded exactly once and in order.
pub fn follow(
    client: &Client,
    id: Uuid,
    after: Option<i64>,
) -> impl Stream<Item = Result<StreamEvent, ClientError>> + Send + 'static {
    Follower::new(client.clone(), Some(id), after, None).into_stream()
}

/// A reconnection about to be tried, for a follower that tells its user
/// ([`follow_reporting`], [`resume_reporting`]).
#[derive(Debug, Clone)]
pub struct Reconnect {
    /// 1 for the first retry after a drop; the follower gives up after
    /// `of` attempts in a row that bring no event.
    pub attempt: u32,
    pub of: u32,
    /// How long it waits before this attempt.
    pub after: Duration,
    /// Why the last connection ended.
    pub reason: String,
}

/// Like [`follow`], calling `report` before each reconnection attempt.
pub fn follow_reporting(
    client: &Client,
    id: Uuid,
    after: Option<i64>,
    report: impl FnMut(&Reconnect) + Send + 'static,
) -> impl Stream<Item = Result<StreamEvent, ClientError>> + Send + 'static {
    let mut follower = Follower::new(client.clone(), Some(id), after, None);
    follower.report = Some(Box::new(report));
    follower.into_stream()
}

/// Like [`resume`], calling `report` before each reconnection attempt.
pub fn resume_reporting(
    client: &Client,
    stream: EventStream,
    report: impl FnMut(&Reconnect) + Send + 'static,
) -> impl Stream<Item = Result<StreamEvent, ClientError>> + Send + 'static {
    let mut follower = Follower::new(client.clone(), None, None, Some(stream));
    follower.report = Some(Box::new(report));
    follower.into_stream()
}

/// Like [`follow`], starting from a stream already opened by
/// [`Client::deploy_stream`] or [`Client::rollback_stream`]; the deployment
/// id is learnt from its first event.
pub fn resume(
    client: &Client,
    stream: EventStream,
) -> impl Stream<Item = Result<StreamEvent, ClientError>> + Send + 'static {
    Follower::new(client.clone(), None, None, Some(stream)).into_stream()
}

/// Reconnection pacing: the first retry is quick, later ones back off.
const RETRY_FIRST: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Consecutive connections that brought no event before giving up (~35 s
/// of retrying with the pacing above).
const RETRY_ATTEMPTS: u32 = 10;

/// Told of each reconnection attempt.
type Report = Box<dyn FnMut(&Reconnect) + Send>;

struct Follower {
    client: Client,
    id: Option<Uuid>,
    last_seq: Option<i64>,
    current: Option<EventStream>,
    /// Connections in a row that ended or failed without an event.
    failures: u32,
    /// Whether the current connection has delivered anything yet.
    fresh: bool,
    done: bool,
    /// Why the last connection ended, for `report`.
    reason: String,
    report: Option<Report>,
}

impl Follower {
    fn new(
        client: Client,
        id: Option<Uuid>,
        after: Option<i64>,
        current: Option<EventStream>,
    ) -> Follower {
        Follower {
            client,
            id,
            last_seq: after,
            current,
            failures: 0,
            fresh: true,
            done: false,
            reason: String::new(),
            report: None,
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<StreamEvent, ClientError>> + Send + 'static {
        futures::stream::unfold(self, |mut follower| async move {
            let item = follower.next().await?;
            Some((item, follower))
        })
    }

    async fn next(&mut self) -> Option<Result<StreamEvent, ClientError>> {
        while !self.done {
            let Some(stream) = self.current.as_mut() else {
                if let Err(error) = self.reconnect().await {
                    return Some(Err(error));
                }
                continue;
            };
            match stream.next().await {
                Some(Ok(event)) => {
                    if let Some(event) = self.accept(event) {
                        return Some(Ok(event));
                    }
                }
                Some(Err(error)) if error.is_transient() => self.dropped(error.to_string()),
                Some(Err(error)) => {
                    self.done = true;
                    return Some(Err(error));
                }
                // The server ends a stream only after the final event, so
                // an end before it is a dropped connection.
                None => self.dropped("the server closed the stream".into()),
            }
        }
        None
    }

    /// Record `event`; `None` when it was already yielded before a reconnect.
    fn accept(&mut self, event: StreamEvent) -> Option<StreamEvent> {
        if let (Some(seq), Some(last)) = (event.seq, self.last_seq)
            && seq <= last
        {
            return None;
        }
        if let Some(seq) = event.seq {
            self.last_seq = Some(seq);
        }
        if let EventData::Deployment(deployment) = &event.data {
            self.id.get_or_insert(deployment.id);
        }
        self.fresh = false;
        self.failures = 0;
        self.done = event.data.is_final();
        Some(event)
    }

    fn dropped(&mut self, reason: String) {
        self.reason = reason;
        self.current = None;
        if self.fresh {
            self.failures += 1;
        }
        self.fresh = true;
    }

    /// Wait out the back-off, then open the stream again after the last
    /// event seen. Errors end the stream: permanent ones at once, transient
    /// ones once the attempts are used up.
    async fn reconnect(&mut self) -> Result<(), ClientError> {
        let Some(id) = self.id else {
            self.done = true;
            return Err(ClientError::Unreachable(
                "the connection dropped before the server named the deployment".into(),
            ));
        };
        loop {
            let after = match self.failures {
                0 => Duration::ZERO,
                failures => retry_delay(failures),
            };
            // The first connection of `follow` is no reconnection.
            if let Some(report) = self.report.as_mut().filter(|_| !self.reason.is_empty()) {
                report(&Reconnect {
                    attempt: self.failures + 1,
                    of: RETRY_ATTEMPTS,
                    after,
                    reason: self.reason.clone(),
                });
            }
            tokio::time::sleep(after).await;
            match self.client.events(id, self.last_seq).await {
                Ok(stream) => {
                    self.current = Some(stream);
                    return Ok(());
                }
                Err(error) if error.is_transient() && self.failures + 1 < RETRY_ATTEMPTS => {
                    self.reason = error.to_string();
                    self.failures += 1;
                }
                Err(error) => {
                    self.done = true;
                    return Err(error);
                }
            }
        }
    }
}

fn retry_delay(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(6);
    (RETRY_FIRST * factor).min(RETRY_MAX)
}

pub(super) fn parse_sse(response: Response) -> EventStream {
    // Any bytes, keep-alive comments included, show the connection lives.
    let bytes = tokio_stream::StreamExt::timeout(response.bytes_stream(), super::STREAM_IDLE).map(
        |chunk| match chunk {
            Ok(chunk) => chunk.map_err(IdleOr::Transport),
            Err(_) => Err(IdleOr::Idle),
        },
    );
    let inner = bytes
        .eventsource()
        .map(|item| match item {
            Ok(event) => stream_event(&event.id, &event.event, &event.data),
            Err(EventStreamError::Transport(IdleOr::Transport(error))) => Err(transport(error)),
            Err(EventStreamError::Transport(IdleOr::Idle)) => {
                Err(ClientError::Unreachable(format!(
                    "the stream brought nothing, not even a keep-alive, for {} s",
                    super::STREAM_IDLE.as_secs()
                )))
            }
            Err(error) => Err(ClientError::Protocol(format!("bad event stream: {error}"))),
        })
        .boxed();
    EventStream {
        inner,
        repeated: false,
    }
}

/// A stream's byte chunk failed to come: the transport broke, or nothing
/// came for [`super::STREAM_IDLE`].
#[derive(Debug)]
enum IdleOr {
    Transport(reqwest::Error),
    Idle,
}

impl std::fmt::Display for IdleOr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdleOr::Transport(error) => error.fmt(f),
            IdleOr::Idle => f.write_str("the stream went idle"),
        }
    }
}

/// Build one event from its SSE `id:`, `event:` and `data:` fields.
fn stream_event(id: &str, kind: &str, data: &str) -> Result<StreamEvent, ClientError> {
    let seq = match id {
        "" => None,
        id => Some(
            id.parse::<i64>()
                .map_err(|_| ClientError::Protocol(format!("event id {id:?} is not a number")))?,
        ),
    };
    let payload: serde_json::Value = serde_json::from_str(data)
        .map_err(|e| ClientError::Protocol(format!("{kind} event data is not JSON: {e}")))?;
    let data = EventData::from_parts(kind, payload)
        .map_err(|e| ClientError::Protocol(format!("bad {kind:?} event: {e}")))?;
    Ok(StreamEvent { seq, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_up_to_a_ceiling() {
        assert_eq!(retry_delay(1), RETRY_FIRST);
        assert_eq!(retry_delay(2), RETRY_FIRST * 2);
        assert_eq!(retry_delay(9), RETRY_MAX);
    }
}
