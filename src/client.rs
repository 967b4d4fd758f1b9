//! The typed HTTP client for API.md, used by `deployctl` and the integration
//! tests.
//!
//! Every method maps to one endpoint and answers the model type API.md names.
//! Errors come back as [`ClientError`]: the server's own error body as
//! [`ClientError::Api`], connection trouble as [`ClientError::Unreachable`],
//! so callers can tell "you asked for something wrong" from "try again later".
//! Progress streams are [`EventStream`]s; [`follow`] and [`resume`] wrap them
//! so a dropped connection is picked up again at the next sequence number and
//! no event is lost or seen twice.

mod stream;
mod tls;

pub use stream::{
    EventStream, Reconnect, StreamEvent, follow, follow_reporting, resume, resume_reporting,
};

use crate::machine::State;
use crate::model::{
    AppsView, CancelRequest, ClustersView, DeployRequest, Deployment, ErrorBody, HistoryPage,
    RollbackRequest, SourceInfo, TargetView, VersionInfo, VersionsPage,
};
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::Path;
use std::time::Duration;
use uuid::Uuid;

/// A short request answers well within this by default
/// ([`Client::with_timeouts`] changes it). Uploads and streams have no
/// overall limit (a build may run for many minutes); a stream that brings
/// not a byte, not even the server's keep-alive, for [`STREAM_IDLE`] is
/// taken for a dropped connection.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A cancel answers once the step has exited, which may take the cluster's
/// kill grace period: it gets this on top of the request timeout.
const CANCEL_EXTRA: Duration = Duration::from_secs(60);
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Three of the server's 15 s keep-alives missed.
pub const STREAM_IDLE: Duration = Duration::from_secs(45);
/// A stream may be silent for minutes while a build runs; TCP keep-alive is
/// what notices a peer that vanished without closing the connection.
const KEEPALIVE: Duration = Duration::from_secs(15);
const EVENT_STREAM: &str = "text/event-stream";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request with API.md's error body.
    #[error("{message} ({code})")]
    Api {
        status: u16,
        code: String,
        message: String,
        details: serde_json::Value,
    },
    /// No answer: connection refused, reset, or timed out.
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// No TLS session: the server's certificate is not trusted or not for
    /// this host, or the server does not speak TLS. Retrying will not help.
    #[error("TLS failed: {0}")]
    Tls(String),
    /// A 5xx without our error body (a proxy, a crash).
    #[error("server error (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    /// The server answered something that is not API.md.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// Worth retrying the same request later: the server may come back.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable(_) | ClientError::Server { .. } => true,
            ClientError::Api { status, .. } => *status >= 500,
            ClientError::Protocol(_) | ClientError::Tls(_) => false,
        }
    }
}

/// Filters for [`Client::history`]; `None` leaves the server's default.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HistoryParams {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<State>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cursor: Option<String>,
}

/// A deployd server at one base URL, with an optional bearer token. Cheap to
/// clone: clones share one connection pool.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
    /// The limit on one plain request, from sending to the whole answer.
    request_timeout: Duration,
}

impl std::fmt::Debug for Client {
    // The token is a secret: never let it reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl Client {
    /// A client of the server at `base_url` (`http://` or `https://`),
    /// trusting the system's certificate authorities.
    pub fn new(base_url: &str, token: Option<String>) -> Result<Client, ClientError> {
        Client::trusting(base_url, token, None)
    }

    /// Like [`Client::new`], also trusting the CA certificates in `ca_pem`
    /// (PEM): a server whose certificate your own CA signed.
    pub fn trusting(
        base_url: &str,
        token: Option<String>,
        ca_pem: Option<&[u8]>,
    ) -> Result<Client, ClientError> {
        Client::with_timeouts(base_url, token, ca_pem, CONNECT_TIMEOUT, REQUEST_TIMEOUT)
    }

    /// Like [`Client::trusting`], with the time allowed to connect and to
    /// answer one plain request (not a stream, not an upload). `HOST:PORT`
    /// without a scheme means `http://HOST:PORT`.
    ///
    /// Errors: [`ClientError::Protocol`] for a URL that is not http(s), or a
    /// CA file without certificates.
    pub fn with_timeouts(
        base_url: &str,
        token: Option<String>,
        ca_pem: Option<&[u8]>,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Client, ClientError> {
        let usage = "use http://HOST[:PORT] or https://HOST[:PORT]";
        let base_url = &normalize_server(base_url);
        let base = Url::parse(base_url).map_err(|e| {
            ClientError::Protocol(format!("invalid server URL {base_url:?}: {e}; {usage}"))
        })?;
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            let scheme = base.scheme();
            return Err(ClientError::Protocol(format!(
                "server URL {base_url:?} has the scheme {scheme:?}, which deployctl cannot \
                 speak; {usage}"
            )));
        }
        let mut http = reqwest::Client::builder()
            .user_agent(concat!("deployctl/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(connect_timeout)
            .tcp_keepalive(KEEPALIVE)
            .tcp_keepalive_interval(Duration::from_secs(5))
            .tcp_keepalive_retries(3);
        if let Some(pem) = ca_pem {
            let authorities = reqwest::Certificate::from_pem_bundle(pem)
                .ok()
                .filter(|found| !found.is_empty())
                .ok_or_else(|| {
                    ClientError::Protocol("the CA file holds no PEM certificate".to_string())
                })?;
            for authority in authorities {
                http = http.add_root_certificate(authority);
            }
        }
        let http = http
            .build()
            .map_err(|e| ClientError::Protocol(format!("cannot build the HTTP client: {e}")))?;
        Ok(Client {
            http,
            base,
            token,
            request_timeout,
        })
    }

    pub fn base_url(&self) -> &str {
        self.base.as_str()
    }

    /// Whether the server is deployd: every answer deployd gives carries
    /// `deployd-answered-by` (the instance that answered), so a `/healthz`
    /// without it came from something else (a web server, a proxy's own
    /// page). Errors: the server cannot be reached.
    pub async fn is_deployd(&self) -> Result<bool, ClientError> {
        let request = self
            .request(Method::GET, &["healthz"])?
            .timeout(self.request_timeout);
        let response = request.send().await.map_err(transport)?;
        Ok(response.headers().contains_key("deployd-answered-by"))
    }

    pub async fn healthz(&self) -> Result<(), ClientError> {
        self.send(self.request(Method::GET, &["healthz"])?).await?;
        Ok(())
    }

    /// Ok when the server is ready; a 503 carries the reason.
    pub async fn readyz(&self) -> Result<(), ClientError> {
        self.send(self.request(Method::GET, &["readyz"])?).await?;
        Ok(())
    }

    pub async fn source_exists(&self, sha256: &str) -> Result<bool, ClientError> {
        let request = self
            .request(Method::HEAD, &["v1", "sources", sha256])?
            .timeout(self.request_timeout);
        let response = request.send().await.map_err(transport)?;
        match response.status() {
            StatusCode::NOT_FOUND => Ok(false),
            status if status.is_success() => Ok(true),
            // A HEAD answer has no body; the status alone names the error.
            status => Err(error_from_body(status, "")),
        }
    }

    /// Upload a tar or gzipped tar whose SHA-256 is `sha256`.
    pub async fn put_source(
        &self,
        sha256: &str,
        body: impl Into<reqwest::Body>,
    ) -> Result<SourceInfo, ClientError> {
        let request = self
            .request(Method::PUT, &["v1", "sources", sha256])?
            .header(ACCEPT, HeaderValue::from_static("application/json"))
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(body);
        json(self.send(request).await?).await
    }

    /// Upload a file without reading it into memory.
    pub async fn put_source_file(
        &self,
        sha256: &str,
        path: &Path,
    ) -> Result<SourceInfo, ClientError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|e| ClientError::Protocol(format!("cannot open {}: {e}", path.display())))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        self.put_source(sha256, body).await
    }

    pub async fn deploy(
        &self,
        app: &str,
        cluster: &str,
        request: &DeployRequest,
    ) -> Result<Deployment, ClientError> {
        let path = ["v1", "apps", app, "clusters", cluster, "deployments"];
        self.call(self.request(Method::POST, &path)?.json(request))
            .await
    }

    /// Deploy and stream its progress; the first event is the Deployment.
    pub async fn deploy_stream(
        &self,
        app: &str,
        cluster: &str,
        request: &DeployRequest,
    ) -> Result<EventStream, ClientError> {
        let path = ["v1", "apps", app, "clusters", cluster, "deployments"];
        self.create_stream(self.request(Method::POST, &path)?.json(request))
            .await
    }

    pub async fn rollback(
        &self,
        app: &str,
        cluster: &str,
        request: &RollbackRequest,
    ) -> Result<Deployment, ClientError> {
        let path = ["v1", "apps", app, "clusters", cluster, "rollbacks"];
        self.call(self.request(Method::POST, &path)?.json(request))
            .await
    }

    pub async fn rollback_stream(
        &self,
        app: &str,
        cluster: &str,
        request: &RollbackRequest,
    ) -> Result<EventStream, ClientError> {
        let path = ["v1", "apps", app, "clusters", cluster, "rollbacks"];
        self.create_stream(self.request(Method::POST, &path)?.json(request))
            .await
    }

    pub async fn get(&self, id: Uuid) -> Result<Deployment, ClientError> {
        let id = id.to_string();
        self.call(self.request(Method::GET, &["v1", "deployments", &id])?)
            .await
    }

    /// The deployment `reference` names: its full id, its short id, or a
    /// prefix of 6 to 19 hex digits of its id's random part
    /// ([`DeploymentRef`](crate::model::DeploymentRef)). Errors:
    /// `ClientError::Api` with code `invalid_argument` (400) for a reference
    /// of neither form, `not_found` (404) when no deployment the token may
    /// read has it, `ambiguous` (409, `details.candidates`) when several do.
    pub async fn deployment(&self, reference: &str) -> Result<Deployment, ClientError> {
        self.call(self.request(Method::GET, &["v1", "deployments", reference])?)
            .await
    }

    /// The configured clusters the token may use, with their steps; no
    /// secret is in the answer.
    pub async fn clusters(&self) -> Result<ClustersView, ClientError> {
        self.call(self.request(Method::GET, &["v1", "clusters"])?)
            .await
    }

    /// The apps with deployments the token may read, with each target's
    /// active version and whether it is running (at most
    /// [`MAX_TARGETS`](crate::http::MAX_TARGETS) targets; `truncated` says
    /// when there were more).
    pub async fn apps(&self) -> Result<AppsView, ClientError> {
        self.call(self.request(Method::GET, &["v1", "apps"])?).await
    }

    /// One page of an app's deployments, newest first.
    pub async fn history(
        &self,
        app: &str,
        params: &HistoryParams,
    ) -> Result<HistoryPage, ClientError> {
        let request = self.request(Method::GET, &["v1", "apps", app, "deployments"])?;
        self.call(request.query(params)).await
    }

    pub async fn target(&self, app: &str, cluster: &str) -> Result<TargetView, ClientError> {
        self.call(self.request(Method::GET, &["v1", "apps", app, "clusters", cluster])?)
            .await
    }

    /// One page of an app's versions, newest first.
    pub async fn versions(
        &self,
        app: &str,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<VersionsPage, ClientError> {
        let mut request = self.request(Method::GET, &["v1", "apps", app, "versions"])?;
        if let Some(limit) = limit {
            request = request.query(&[("limit", limit)]);
        }
        if let Some(cursor) = cursor {
            request = request.query(&[("cursor", cursor)]);
        }
        self.call(request).await
    }

    /// Pin `version` of `app`, so compaction never deletes it; answers the
    /// version as it is now. Pinning a pinned version is not an error.
    pub async fn pin(&self, app: &str, version: &str) -> Result<VersionInfo, ClientError> {
        let path = ["v1", "apps", app, "versions", version, "pin"];
        self.call(self.request(Method::POST, &path)?).await
    }

    /// Unpin `version` of `app`: retention decides about it again.
    pub async fn unpin(&self, app: &str, version: &str) -> Result<VersionInfo, ClientError> {
        let path = ["v1", "apps", app, "versions", version, "pin"];
        self.call(self.request(Method::DELETE, &path)?).await
    }

    /// Run a compaction now and answer what it deleted and removed; with
    /// `dry_run`, what it would and why, changing nothing. Untyped: the
    /// report and the plan are the server's (`compaction::{Report, Plan}`)
    /// and only ever printed.
    pub async fn compact(&self, dry_run: bool) -> Result<serde_json::Value, ClientError> {
        let mut request = self.request(Method::POST, &["v1", "admin", "compact"])?;
        if dry_run {
            request = request.query(&[("dry_run", "true")]);
        }
        self.call(request).await
    }

    /// The live instances on the store and the targets each owns. Untyped:
    /// only ever printed.
    pub async fn instances(&self) -> Result<serde_json::Value, ClientError> {
        self.call(self.request(Method::GET, &["v1", "instances"])?)
            .await
    }

    /// Cancel a running or queued deployment; answers once it is cancelled.
    pub async fn cancel(
        &self,
        id: Uuid,
        reason: Option<String>,
    ) -> Result<Deployment, ClientError> {
        let id = id.to_string();
        let request = self
            .request(Method::POST, &["v1", "deployments", &id, "cancel"])?
            .json(&CancelRequest { reason })
            .timeout(self.request_timeout + CANCEL_EXTRA)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        json(self.send(request).await?).await
    }

    /// One connection to a deployment's stream: replays the events after
    /// `after` (all of them when `None`), then follows live.
    pub async fn events(&self, id: Uuid, after: Option<i64>) -> Result<EventStream, ClientError> {
        self.open_events(id, after, true).await
    }

    /// The events of deployment `id` stored so far, after `after`, ending
    /// there: a replay that never waits for more (`?follow=false`).
    pub async fn stored_events(
        &self,
        id: Uuid,
        after: Option<i64>,
    ) -> Result<EventStream, ClientError> {
        self.open_events(id, after, false).await
    }

    async fn open_events(
        &self,
        id: Uuid,
        after: Option<i64>,
        follow: bool,
    ) -> Result<EventStream, ClientError> {
        let id = id.to_string();
        let mut request = self
            .request(Method::GET, &["v1", "deployments", &id, "events"])?
            .header(ACCEPT, EVENT_STREAM);
        if !follow {
            request = request.query(&[("follow", "false")]);
        }
        if let Some(after) = after {
            request = request.header("Last-Event-ID", after.to_string());
        }
        let response = self.send(request).await?;
        if !is_event_stream(&response) {
            return Err(ClientError::Protocol(format!(
                "expected {EVENT_STREAM}, got {:?}",
                response.headers().get(CONTENT_TYPE)
            )));
        }
        Ok(stream::parse_sse(response))
    }

    /// POST a deploy or rollback asking for its stream. A server that answers
    /// with the JSON Deployment instead (an idempotent repeat may) is followed
    /// through the events endpoint, which starts with the same Deployment.
    async fn create_stream(&self, request: RequestBuilder) -> Result<EventStream, ClientError> {
        let request = request.header(ACCEPT, EVENT_STREAM);
        let response = self.send(request).await?;
        let repeated = response.status() == StatusCode::OK;
        let mut stream = match is_event_stream(&response) {
            true => stream::parse_sse(response),
            false => {
                let deployment: Deployment = json(response).await?;
                self.events(deployment.id, None).await?
            }
        };
        stream.repeated = repeated;
        Ok(stream)
    }

    fn request(&self, method: Method, segments: &[&str]) -> Result<RequestBuilder, ClientError> {
        let mut url = self.base.clone();
        {
            // `Client::new` refused URLs that cannot be a base.
            let mut path = url.path_segments_mut().expect("base URL has a path");
            path.pop_if_empty();
            for segment in segments {
                // A URL cannot carry `.` or `..` as a name: it would name
                // another route. The server would refuse such a name anyway.
                if matches!(*segment, "" | "." | "..") {
                    return Err(ClientError::Api {
                        status: 400,
                        code: "invalid_argument".into(),
                        message: format!("invalid name {segment:?}"),
                        details: serde_json::json!({"value": segment}),
                    });
                }
                path.push(segment);
            }
        }
        let request = self.http.request(method, url);
        Ok(match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        })
    }

    async fn call<T: DeserializeOwned>(&self, request: RequestBuilder) -> Result<T, ClientError> {
        let request = request
            .timeout(self.request_timeout)
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        json(self.send(request).await?).await
    }

    /// Send and turn any non-2xx answer into a [`ClientError`].
    async fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let html = content_type_is(&response, "text/html");
        let text = response.text().await.unwrap_or_default();
        if html || looks_like_html(&text) {
            // Not deployd answering, and a page is not meant for a
            // terminal. A 5xx page is a proxy whose deployd is away (worth
            // retrying); any other says nothing about the request.
            let message = format!(
                "the server answered HTTP {status} with a web page, not deployd's API: \
                 {NOT_DEPLOYD}"
            );
            return Err(match status.is_server_error() {
                true => ClientError::Server {
                    status: status.as_u16(),
                    message,
                },
                false => ClientError::Protocol(message),
            });
        }
        Err(error_from_body(status, &text))
    }
}

async fn json<T: DeserializeOwned>(response: Response) -> Result<T, ClientError> {
    let status = response.status();
    let html = content_type_is(&response, "text/html");
    let bytes = response.bytes().await.map_err(transport)?;
    if html || looks_like_html(&String::from_utf8_lossy(&bytes[..bytes.len().min(512)])) {
        return Err(ClientError::Protocol(format!(
            "the server answered HTTP {status} with a web page, not deployd's API: {NOT_DEPLOYD}"
        )));
    }
    serde_json::from_slice(&bytes).map_err(|e| {
        ClientError::Protocol(format!(
            "the server's HTTP {status} answer is not deployd's API ({e}): {NOT_DEPLOYD}"
        ))
    })
}

/// A server URL as deployctl keeps and compares it: `HOST[:PORT]` without
/// a scheme gets `http://`, and a trailing `/` goes. Anything else is left
/// for [`Client::with_timeouts`] to accept or refuse.
pub fn normalize_server(url: &str) -> String {
    let url = url.trim();
    let url = match is_host_port(url) {
        true => format!("http://{url}"),
        false => url.to_string(),
    };
    // As the URL parser reads it: scheme and host lowercased, `:07171` as
    // `:7171`; a query or fragment names no other server.
    let url = match Url::parse(&url) {
        Ok(mut parsed) if matches!(parsed.scheme(), "http" | "https") => {
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        _ => url,
    };
    match url.trim_end_matches('/') {
        "" => url,
        trimmed if trimmed.ends_with(':') => url,
        trimmed => trimmed.to_string(),
    }
}

/// `HOST`, `HOST:PORT` or `[V6]:PORT`, with no scheme: what people type
/// for a server and mean `http://` by. `unix:/path` is not one (its colon is
/// followed by no port).
fn is_host_port(text: &str) -> bool {
    if text.contains("://") {
        return false;
    }
    let authority = text.split('/').next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(':') => (host, Some(port)),
        _ => (authority, None),
    };
    let host_ok = match host.strip_prefix('[') {
        Some(v6) => v6.ends_with(']'),
        None => {
            !host.is_empty()
                && host
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        }
    };
    let port_ok =
        port.is_none_or(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// What to check when the server does not speak API.md.
const NOT_DEPLOYD: &str = "is the server URL deployd's address (--server, DEPLOYD_URL)?";

/// An HTML page (a proxy's or another server's), never to be printed whole.
fn looks_like_html(text: &str) -> bool {
    let start: String = text.trim_start().chars().take(15).collect();
    let start = start.to_ascii_lowercase();
    start.starts_with("<!doctype html")
        || start.starts_with("<html")
        || start.starts_with("<head")
        || start.starts_with("<body")
        || start.starts_with("<?xml")
}

fn is_event_stream(response: &Response) -> bool {
    content_type_is(response, EVENT_STREAM)
}

/// Whether the answer's `Content-Type` is `media` (parameters aside).
fn content_type_is(response: &Response, media: &str) -> bool {
    response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with(media))
}

/// Every reqwest error past building the request is about the connection:
/// reqwest labels a body cut short as a "decode" error, and we never let it
/// decode JSON for us.
fn transport(error: reqwest::Error) -> ClientError {
    if error.is_builder() {
        return ClientError::Protocol(error_chain(&error));
    }
    if let Some(tls) = tls::cause(&error) {
        return ClientError::Tls(tls::advice(tls));
    }
    if error.is_timeout() {
        return ClientError::Unreachable(
            "no answer within the request timeout (deployctl: --request-timeout)".into(),
        );
    }
    ClientError::Unreachable(error_chain(&error))
}

/// reqwest's own message is the outer layer ("error sending request for
/// url …"); the innermost cause (connection refused, reset, timed out) is
/// what a user needs to see.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut innermost = error;
    while let Some(cause) = innermost.source() {
        innermost = cause;
    }
    innermost.to_string()
}

/// Turn a non-2xx answer into an error: our body when there is one,
/// otherwise what the status alone says.
fn error_from_body(status: StatusCode, text: &str) -> ClientError {
    if let Ok(body) = serde_json::from_str::<ErrorBody>(text) {
        return ClientError::Api {
            status: status.as_u16(),
            code: body.error.code,
            message: body.error.message,
            details: body.error.details,
        };
    }
    let reason = status.canonical_reason().unwrap_or("no reason given");
    if !text.trim().is_empty() && !status.is_server_error() {
        // deployd's every 4xx with a body has API.md's error shape.
        return ClientError::Protocol(format!(
            "the server answered HTTP {status} in a shape that is not deployd's API: \
             {NOT_DEPLOYD}"
        ));
    }
    let message = match text.trim() {
        "" => reason.to_string(),
        page if looks_like_html(page) => {
            format!(
                "{reason}; the server answered with a web page, not deployd's API: {NOT_DEPLOYD}"
            )
        }
        // A proxy's or another server's own text: not ours to print.
        _ => format!("{reason}, without deployd's error body: {NOT_DEPLOYD}"),
    };
    if status.is_server_error() {
        return ClientError::Server {
            status: status.as_u16(),
            message,
        };
    }
    // API.md gives these statuses a single code each, so a bodiless answer
    // (HEAD, or a layer in front of our handlers) still names it.
    let code = match status.as_u16() {
        400 => "invalid_argument".to_string(),
        401 => "unauthenticated".to_string(),
        403 => "forbidden".to_string(),
        404 => "not_found".to_string(),
        413 => "too_large".to_string(),
        other => format!("http_{other}"),
    };
    ClientError::Api {
        status: status.as_u16(),
        code,
        message,
        details: serde_json::Value::Null,
    }
}

#[cfg(test)]
mod tests;
