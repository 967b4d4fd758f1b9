//! The client against a scripted peer: each connection gets a canned raw
//! HTTP answer, so a stream can be cut at an exact byte and the requests the
//! client made (headers included) can be read back.

use super::*;
use crate::machine::State;
use crate::model::{EventData, LogLine, StateChange};
use futures::Stream;
use futures::StreamExt;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

const WAIT: Duration = Duration::from_secs(10);

struct Canned {
    client: Client,
    /// The head (request line and headers) of each request, in order.
    requests: Arc<Mutex<Vec<String>>>,
}

impl Canned {
    fn request(&self, index: usize) -> String {
        self.requests.lock().unwrap()[index].to_lowercase()
    }

    /// The one `Accept` header of a request (a second one would be a bug).
    fn accept(&self, index: usize) -> String {
        let head = self.request(index);
        let values: Vec<&str> = head
            .lines()
            .filter_map(|line| line.strip_prefix("accept: "))
            .collect();
        assert_eq!(values.len(), 1, "{head}");
        values[0].to_string()
    }
}

/// Answer the n-th connection with `replies[n]`, then close it.
async fn canned(replies: Vec<String>) -> Canned {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    tokio::spawn(async move {
        for reply in replies {
            let (mut socket, _) = listener.accept().await.unwrap();
            let head = read_request(&mut socket).await;
            seen.lock().unwrap().push(head);
            socket.write_all(reply.as_bytes()).await.unwrap();
            socket.shutdown().await.unwrap();
        }
    });
    let client = Client::new(&format!("http://{addr}"), Some("s3cret".into())).unwrap();
    Canned { client, requests }
}

/// Read a request head and its body, so closing never resets the socket
/// under unread bytes.
async fn read_request(socket: &mut tokio::net::TcpStream) -> String {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0, "client closed before sending a request");
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_string();
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().unwrap())
        })
        .unwrap_or(0);
    while buffer.len() < head_end + length {
        let n = socket.read(&mut chunk).await.unwrap();
        assert!(n > 0);
        buffer.extend_from_slice(&chunk[..n]);
    }
    head
}

fn reply(status: &str, content_type: &str, body: &str) -> String {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// An SSE answer in chunked encoding; `cut` leaves off the last chunk, as a
/// connection that dies mid-stream does.
fn sse(frames: &[String], cut: bool) -> String {
    let mut out = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_string();
    for frame in frames {
        out.push_str(&format!("{:x}\r\n{frame}\r\n", frame.len()));
    }
    if !cut {
        out.push_str("0\r\n\r\n");
    }
    out
}

fn frame(seq: i64, data: &EventData) -> String {
    format!(
        "id: {seq}\nevent: {}\ndata: {}\n\n",
        data.kind(),
        data.payload()
    )
}

fn change(from: State, to: State) -> EventData {
    EventData::State(StateChange {
        from,
        to,
        at: chrono::Utc::now(),
        error: None,
    })
}

fn log(line: &str) -> EventData {
    EventData::Log(LogLine {
        step: "build".into(),
        stream: "stdout".into(),
        line: line.into(),
    })
}

fn deployment(id: Uuid) -> EventData {
    let value = serde_json::json!({
        "id": id, "app": "web", "cluster": "prod", "kind": "deploy", "state": "queued",
        "active": false, "version": null, "source": "ab", "rollback_to": null, "git": null,
        "message": "", "deployed_by": "anonymous", "error": null, "superseded_by": null,
        "queue_position": null, "created_at": "2026-01-01T00:00:00Z", "started_at": null,
        "finished_at": null
    });
    EventData::Deployment(Box::new(serde_json::from_value(value).unwrap()))
}

async fn collect(
    stream: impl Stream<Item = Result<StreamEvent, ClientError>>,
) -> Vec<Result<StreamEvent, ClientError>> {
    tokio::time::timeout(WAIT, stream.collect::<Vec<_>>())
        .await
        .expect("the stream ends")
}

fn seqs(items: &[Result<StreamEvent, ClientError>]) -> Vec<i64> {
    items
        .iter()
        .map(|item| item.as_ref().unwrap().seq.unwrap())
        .collect()
}

#[tokio::test]
async fn api_errors_carry_the_servers_code_and_details() {
    let body = r#"{"error": {"code": "deploy_in_progress", "message": "web on prod is building",
        "details": {"deployment_id": "0193", "state": "building"}}}"#;
    let server = canned(vec![reply("409 Conflict", "application/json", body)]).await;
    let request = DeployRequest {
        source: "ab".into(),
        git: None,
        message: None,
        on_conflict: None,
        idempotency_key: None,
    };
    let error = server
        .client
        .deploy("web", "prod", &request)
        .await
        .unwrap_err();
    let ClientError::Api {
        status,
        code,
        message,
        details,
    } = error
    else {
        panic!("expected an API error, got {error:?}");
    };
    assert_eq!((status, code.as_str()), (409, "deploy_in_progress"));
    assert_eq!(message, "web on prod is building");
    assert_eq!(details["state"], "building");
    let head = server.request(0);
    assert!(head.starts_with("post /v1/apps/web/clusters/prod/deployments "));
    assert!(head.contains("authorization: bearer s3cret"));
    assert_eq!(server.accept(0), "application/json");
}

#[tokio::test]
async fn a_5xx_without_our_body_is_a_server_error() {
    let server = canned(vec![reply("502 Bad Gateway", "text/html", "<h1>bad</h1>")]).await;
    let error = server.client.get(Uuid::nil()).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Server { status: 502, message }
            if message.starts_with("the server answered HTTP 502 Bad Gateway with a web page")
                && !message.contains("<h1>")),
        "{error:?}"
    );
    assert!(error.is_transient());
}

#[tokio::test]
async fn a_4xx_web_page_is_not_deployd_answering() {
    let server = canned(vec![reply("404 Not Found", "text/html", "<h1>nope</h1>")]).await;
    let error = server.client.get(Uuid::nil()).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Protocol(message) if !message.contains("<h1>")),
        "{error:?}"
    );
}

#[tokio::test]
async fn head_tells_presence_and_names_bodiless_errors() {
    let server = canned(vec![
        reply("200 OK", "application/octet-stream", ""),
        reply("404 Not Found", "application/json", ""),
        reply("401 Unauthorized", "application/json", ""),
    ])
    .await;
    assert!(server.client.source_exists("ab").await.unwrap());
    assert!(!server.client.source_exists("ab").await.unwrap());
    let error = server.client.source_exists("ab").await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Api { status: 401, code, .. } if code == "unauthenticated"),
        "{error:?}"
    );
    assert!(server.request(0).starts_with("head /v1/sources/ab "));
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let client = Client::new(&format!("http://{addr}"), None).unwrap();
    let error = client.healthz().await.unwrap_err();
    assert!(matches!(error, ClientError::Unreachable(_)), "{error:?}");
}

#[tokio::test]
async fn names_that_would_change_the_route_are_refused_locally() {
    // Nothing listens: a request that left the client would be Unreachable.
    let client = Client::new("http://127.0.0.1:9", None).unwrap();
    for name in ["..", ".", ""] {
        let error = client.target(name, "prod").await.unwrap_err();
        assert!(
            matches!(&error, ClientError::Api { status: 400, code, .. } if code == "invalid_argument"),
            "{name:?}: {error:?}"
        );
    }
}

#[tokio::test]
async fn events_parse_ids_kinds_and_data_and_skip_keepalives() {
    let id = Uuid::now_v7();
    let frames = [
        ": keep-alive\n\n".to_string(),
        frame(6, &log("compiling")),
        ":\n\n".to_string(),
        frame(7, &change(State::Building, State::Failed)),
    ];
    let server = canned(vec![sse(&frames, false)]).await;
    let stream = server.client.events(id, Some(5)).await.unwrap();
    let items = collect(stream).await;
    assert_eq!(seqs(&items), [6, 7]);
    assert_eq!(items[0].as_ref().unwrap().data, log("compiling"));
    assert!(items[1].as_ref().unwrap().data.is_final());
    let head = server.request(0);
    assert!(head.starts_with(&format!("get /v1/deployments/{id}/events ")));
    assert!(head.contains("last-event-id: 5"), "{head}");
    assert_eq!(server.accept(0), "text/event-stream");
}

#[tokio::test]
async fn a_malformed_event_is_a_protocol_error() {
    let frames = ["id: 1\nevent: log\ndata: {not json\n\n".to_string()];
    let server = canned(vec![sse(&frames, false)]).await;
    let stream = server.client.events(Uuid::nil(), None).await.unwrap();
    let items = collect(stream).await;
    assert!(
        matches!(items[0], Err(ClientError::Protocol(_))),
        "{items:?}"
    );
}

#[tokio::test]
async fn follow_resumes_after_the_last_event_without_repeats() {
    let id = Uuid::now_v7();
    let first = [
        frame(1, &deployment(id)),
        frame(2, &change(State::Queued, State::Building)),
    ];
    // The second connection replays event 2 again (as a server might when
    // the cut raced its write); the client must not show it twice.
    let second = [
        frame(2, &change(State::Queued, State::Building)),
        frame(3, &log("done")),
        frame(4, &change(State::Building, State::Failed)),
    ];
    let server = canned(vec![sse(&first, true), sse(&second, false)]).await;
    let items = collect(follow(&server.client, id, None)).await;
    assert_eq!(seqs(&items), [1, 2, 3, 4]);
    assert!(!server.request(0).contains("last-event-id"));
    assert!(server.request(1).contains("last-event-id: 2"));
}

#[tokio::test]
async fn resume_learns_the_deployment_from_the_first_event() {
    let id = Uuid::now_v7();
    let first = [
        frame(1, &deployment(id)),
        frame(2, &change(State::Queued, State::Building)),
    ];
    let second = [frame(3, &change(State::Building, State::Cancelled))];
    // The first stream ends cleanly but before the final event: a drop.
    let server = canned(vec![sse(&first, false), sse(&second, false)]).await;
    let request = RollbackRequest::default();
    let stream = server
        .client
        .rollback_stream("web", "prod", &request)
        .await
        .unwrap();
    let items = collect(resume(&server.client, stream)).await;
    assert_eq!(seqs(&items), [1, 2, 3]);
    assert!(
        server
            .request(0)
            .starts_with("post /v1/apps/web/clusters/prod/rollbacks ")
    );
    let second_head = server.request(1);
    assert!(second_head.starts_with(&format!("get /v1/deployments/{id}/events ")));
    assert!(second_head.contains("last-event-id: 2"));
}

#[tokio::test]
async fn follow_stops_at_a_permanent_error() {
    let id = Uuid::now_v7();
    let not_found = r#"{"error": {"code": "not_found", "message": "no such deployment", "details": {"kind": "deployment"}}}"#;
    let server = canned(vec![
        sse(&[frame(1, &deployment(id))], true),
        reply("404 Not Found", "application/json", not_found),
    ])
    .await;
    let items = collect(follow(&server.client, id, None)).await;
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].as_ref().unwrap().seq, Some(1));
    assert!(matches!(
        &items[1],
        Err(ClientError::Api { status: 404, .. })
    ));
}

#[test]
fn a_bare_host_and_port_means_http() {
    for bare in [
        "127.0.0.1:7171",
        "localhost:7171",
        "deploy.example.com",
        "[::1]:7171",
        "host:80/base",
    ] {
        assert!(super::is_host_port(bare), "{bare}");
        let client = Client::new(bare, None).unwrap();
        assert!(
            client.base_url().starts_with("http://"),
            "{bare}: {}",
            client.base_url()
        );
    }
    for other in [
        "unix:/run/deployd.sock",
        "ftp://host",
        "http://host",
        "host:port",
        "",
        ":7171",
    ] {
        assert!(!super::is_host_port(other), "{other}");
    }
}

#[tokio::test]
async fn a_json_404_in_another_shape_is_not_deployd_answering() {
    let server = canned(vec![reply(
        "404 Not Found",
        "application/json",
        r#"{"detail":"Not Found"}"#,
    )])
    .await;
    let error = server.client.get(Uuid::nil()).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Protocol(message) if !message.contains("detail")),
        "{error:?}"
    );
}

#[test]
fn a_server_is_kept_one_way_however_it_is_spelled() {
    for spelled in [
        "127.0.0.1:7171",
        "127.0.0.1:7171/",
        "http://127.0.0.1:7171",
        "HTTP://127.0.0.1:7171/",
        "http://127.0.0.1:07171",
        "http://127.0.0.1:7171/?x=1#f",
    ] {
        assert_eq!(
            super::normalize_server(spelled),
            "http://127.0.0.1:7171",
            "{spelled}"
        );
    }
    assert_eq!(
        super::normalize_server("https://Deploy.Example.com/base/"),
        "https://deploy.example.com/base"
    );
}

#[tokio::test]
async fn a_plain_text_5xx_is_not_printed() {
    let server = canned(vec![reply(
        "500 Internal Server Error",
        "text/plain",
        "SECRET-PLAIN-BODY",
    )])
    .await;
    let error = server.client.get(Uuid::nil()).await.unwrap_err();
    assert!(
        matches!(&error, ClientError::Server { status: 500, message }
            if message.starts_with("Internal Server Error, without deployd's error body")
                && !message.contains("SECRET")),
        "{error:?}"
    );
}
