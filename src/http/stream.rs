//! Progress streams: Server-Sent Events over the event hub.
//!
//! Each event carries `id: <seq>`, `event: <kind>` and `data: <json>`. A
//! stream replays from `Last-Event-ID` or `?after=`, follows live, and ends
//! after the final state event or when the server shuts down.

use super::deployments::{check_params, find_ref, parse_ref};
use super::{ApiError, ApiPath, ApiQuery, AppState, Caller};
use crate::config::Role;
use crate::store::StoreError;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use std::convert::Infallible;
use std::time::Duration;
use uuid::Uuid;

const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn events(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(reference): ApiPath<String>,
    ApiQuery(params): ApiQuery,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let reference = parse_ref(&reference)?;
    check_params(&params, &["after", "follow"])?;
    let follow = match params.get("follow").map(String::as_str) {
        None | Some("true") => true,
        Some("false") => false,
        Some(_) => {
            return Err(ApiError::invalid("follow", "follow must be true or false"));
        }
    };
    let from_header = headers
        .get("last-event-id")
        .map(|v| (v.to_str().unwrap_or("x"), "Last-Event-ID"));
    let from_query = params.get("after").map(|v| (v.as_str(), "after"));
    let after = match from_header.or(from_query) {
        Some((text, field)) => text
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|seq| *seq >= 0)
            .ok_or_else(|| {
                ApiError::invalid(
                    field,
                    format!("{field} must be an event seq (a whole number ≥ 0)"),
                )
            })?,
        None => 0,
    };
    let id = find_ref(&state, &caller, Role::Read, reference).await?.id;
    Ok(match follow {
        true => sse(id, state.shared.hub.subscribe(id, after).boxed()),
        false => sse(id, state.shared.hub.stored(id, after).boxed()),
    })
}

/// Deployment `id`'s events after seq `after`, as SSE.
pub fn progress(
    state: &AppState,
    id: Uuid,
    after: i64,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>> + use<>> {
    sse(id, state.shared.hub.subscribe(id, after).boxed())
}

/// Events as SSE frames; a store error ends the stream (the client resumes
/// from the last `id:` it saw).
fn sse(
    id: Uuid,
    events: futures::stream::BoxStream<'static, Result<crate::model::Event, StoreError>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>> + use<>> {
    let events = events.scan((), move |_, item| {
        futures::future::ready(match item {
        Ok(event) => Some(Ok(SseEvent::default()
            .id(event.seq.to_string())
            .event(event.data.kind())
            .json_data(event.data.payload())
            .expect("event payloads serialize"))),
        Err(e) => {
            // The client reconnects with Last-Event-ID and loses nothing.
            tracing::warn!(deployment = %id, error = %e, "ending a progress stream: store error");
            None
        }
    })
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
}
