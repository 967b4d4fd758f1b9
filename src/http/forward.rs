//! Carrying a request to the instance that owns its target.
//!
//! With several instances on one PostgreSQL, one of them owns each target
//! and serializes its deploys, rollbacks and cancels. A request that reaches
//! another instance is sent on, as it came (method, path, headers, body),
//! to the owner's advertised address, and the owner's answer (status,
//! headers, body, a progress stream included) is passed back as it comes:
//! the caller gets exactly what the owner would have answered it, with the
//! same checks (the owner authenticates the same token again). A request is
//! forwarded at most once (`deployd-forwarded-by`): if ownership moved on
//! meanwhile, the answer is a 503 to retry.

use super::{ApiError, AppState};
use crate::target::Elsewhere;
use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderName, Method, Uri, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::time::Duration;

/// Names the instance that forwarded a request; a forwarded request is
/// never forwarded again.
pub const FORWARDED_BY: &str = "deployd-forwarded-by";
/// Names the instance that answered, on every answer ([`sign`]): a
/// forwarder passes an answer on only from the owner it meant to reach.
pub const ANSWERED_BY: &str = "deployd-answered-by";
/// How long connecting to the owner may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the owner may take to answer (the head of a progress stream,
/// or a whole plain answer): a paused owner must not hold the request for
/// ever. A little over the time an actor may take to answer a request.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(65);

/// A request as it reached this instance, kept to be sent on.
pub struct Original {
    pub method: Method,
    pub uri: Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The HTTP client instances use to talk to each other.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .build()
        .expect("a client with these settings builds")
}

/// Send `original` to the target's owner and pass its answer back.
/// Errors: 503 when the request was forwarded here already, the owner has
/// no address, or it cannot be reached.
pub async fn to_owner(
    state: &AppState,
    owner: &Elsewhere,
    original: Original,
) -> Result<Response, ApiError> {
    let unavailable =
        |why: String| ApiError::unavailable(format!("{owner}, which {why}; try again shortly"));
    if original.headers.contains_key(FORWARDED_BY) {
        return Err(unavailable(
            "took it over as the request was forwarded".into(),
        ));
    }
    let Some(address) = &owner.address else {
        return Err(unavailable("stopped sending heartbeats".into()));
    };
    let path = original.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut headers = end_to_end(&original.headers);
    headers.insert(
        HeaderName::from_static(FORWARDED_BY),
        (state.shared.instance.parse()).expect("an instance id is a header value"),
    );
    tracing::debug!(%address, %path, owner = %owner.owner, "forwarding to the target's owner");
    let sent = (state.shared.peers)
        .request(original.method, format!("{address}{path}"))
        .headers(headers)
        .body(original.body)
        .send();
    let answer = match tokio::time::timeout(ANSWER_TIMEOUT, sent).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(e)) => {
            tracing::warn!(%address, owner = %owner.owner, error = %e, "cannot reach the target's owner");
            return Err(unavailable(format!("cannot be reached at {address}")));
        }
        Err(_) => {
            tracing::warn!(%address, owner = %owner.owner, "the target's owner did not answer in time");
            return Err(unavailable(format!(
                "did not answer within {ANSWER_TIMEOUT:?}"
            )));
        }
    };
    let answered_by = answer.headers().get(ANSWERED_BY);
    if answered_by.is_none_or(|by| by.as_bytes() != owner.owner.as_bytes()) {
        let who = answered_by.map(|by| String::from_utf8_lossy(by.as_bytes()).into_owned());
        tracing::error!(%address, owner = %owner.owner, answered_by = ?who, "the target owner's advertised address is answered by something else; check its server.advertise_url");
        return Err(unavailable(format!(
            "advertises {address}, where {} answers",
            who.map_or("something that is not deployd".to_string(), |w| format!(
                "instance {w}"
            ))
        )));
    }
    let status = answer.status();
    let headers = end_to_end(answer.headers());
    let streaming = (headers.get(header::CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if !streaming {
        // A whole answer, or none: never a 201 with half a body.
        return match tokio::time::timeout(ANSWER_TIMEOUT, answer.bytes()).await {
            Ok(Ok(body)) => Ok((status, headers, body).into_response()),
            Ok(Err(e)) => {
                tracing::warn!(%address, error = %e, "the target's owner broke off its answer");
                Err(unavailable(format!("broke off its answer ({status})")))
            }
            Err(_) => Err(unavailable(format!(
                "did not finish its answer within {ANSWER_TIMEOUT:?}"
            ))),
        };
    }
    // A progress stream ends with this instance too, so shutdown never
    // waits on a stream it only relays; the client resumes it anywhere.
    let stopping = state.shared.stopping.clone();
    let body = answer
        .bytes_stream()
        .take_until(async move { stopping.cancelled().await });
    Ok((status, headers, Body::from_stream(body)).into_response())
}

/// Name this instance on an answer ([`ANSWERED_BY`]).
pub async fn sign(
    axum::extract::State(instance): axum::extract::State<String>,
    mut response: Response,
) -> Response {
    if let Ok(value) = instance.parse() {
        response.headers_mut().insert(ANSWERED_BY, value);
    }
    response
}

/// The end-to-end headers of `headers`: without those that describe one
/// connection (RFC 9110 §7.6.1) or its framing, which each hop sets itself.
/// `Origin` goes too: this instance already held the request to its
/// browser policy, against the `Host` the client used, which the owner does
/// not see.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let hop = [
        header::CONNECTION,
        header::HOST,
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
        header::ORIGIN,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static(ANSWERED_BY),
    ];
    let mut kept = headers.clone();
    for name in hop {
        kept.remove(name);
    }
    kept
}
