//! Browsers cannot drive deployd. deployd runs code it is sent, so a web page
//! the developer happens to open must not be able to reach it: not by a
//! cross-site request (a form or `fetch` to `http://127.0.0.1:7171`), and not
//! by DNS rebinding (the page's own host name re-pointed at 127.0.0.1, which
//! makes its requests same-origin to the browser).
//!
//! What must stay true, for every route, before authentication:
//! - a request carrying an `Origin` that is neither deployd's own (the
//!   scheme and `Host` it was sent to) nor listed in
//!   `server.allowed_origins` is refused (403 `cross_origin`); browsers add
//!   `Origin` to every cross-origin request that could change something;
//! - with auth off, a request whose `Host` names anything but `localhost` or
//!   a loopback address is refused (403 `host_not_allowed`): a rebinding page
//!   reaches us under its own name, which a token would stop, and with auth
//!   off nothing else does;
//! - JSON bodies must say so ([`json_request`](super::json_request), 415): a
//!   browser sends `text/plain` or form bodies to any site unasked, never JSON.

use super::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use std::sync::Arc;

/// What the guard checks requests against.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Auth is off (no tokens): only loopback `Host` values are served.
    pub loopback_hosts_only: bool,
    /// Origins besides deployd's own allowed to send requests, lowercased,
    /// as `scheme://host[:port]`.
    pub allowed_origins: Vec<String>,
}

/// The middleware: refuse what a browser could have sent on a page's behalf.
pub async fn guard(State(policy): State<Arc<Policy>>, request: Request, next: Next) -> Response {
    match refusal(&policy, request.headers()) {
        Some(error) => error.into_response(),
        None => next.run(request).await,
    }
}

/// Why `headers` are refused, if they are.
fn refusal(policy: &Policy, headers: &HeaderMap) -> Option<ApiError> {
    let host = headers
        .get(header::HOST)
        .map(|h| h.to_str().unwrap_or("\u{fffd}"));
    if policy.loopback_hosts_only
        && let Some(host) = host
        && !is_loopback_host(host)
    {
        return Some(ApiError::new(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            format!(
                "this deployd has auth off, so it only answers requests addressed to localhost \
                 or a loopback address, not {host:?}: that is what stops a web page from \
                 reaching it by DNS rebinding. To serve other names, turn auth on: run \
                 `deployd token new NAME --role admin` and add the [[auth.tokens]] block it \
                 prints to the config file"
            ),
        ));
    }
    let origin = headers.get(header::ORIGIN)?;
    let origin = origin.to_str().unwrap_or("\u{fffd}").trim_end_matches('/');
    let origin_lower = origin.to_ascii_lowercase();
    let own = host.is_some_and(|host| {
        let host = host.to_ascii_lowercase();
        origin_lower == format!("http://{host}") || origin_lower == format!("https://{host}")
    });
    if own || policy.allowed_origins.contains(&origin_lower) {
        return None;
    }
    Some(ApiError::new(
        StatusCode::FORBIDDEN,
        "cross_origin",
        format!(
            "a request from the web page at {origin:?} was refused: browsers may not drive \
             deployd. If a page of yours must, add its origin to server.allowed_origins"
        ),
    ))
}

/// `localhost`, a name under `.localhost` (browsers resolve those to
/// loopback themselves), or a loopback IP, with or without a port.
fn is_loopback_host(host: &str) -> bool {
    let name = match host.strip_prefix('[') {
        // [::1]:7171
        Some(rest) => rest.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(host: Option<&str>, origin: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(host) = host {
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
        }
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        }
        headers
    }

    fn code(policy: &Policy, host: Option<&str>, origin: Option<&str>) -> Option<&'static str> {
        refusal(policy, &headers(host, origin)).map(|e| e.code)
    }

    #[test]
    fn with_auth_off_only_loopback_hosts_are_served() {
        let policy = Policy {
            loopback_hosts_only: true,
            allowed_origins: Vec::new(),
        };
        for host in [
            "127.0.0.1:7171",
            "127.0.0.1",
            "127.1.2.3:80",
            "localhost:7171",
            "LOCALHOST",
            "app.localhost:7171",
            "[::1]:7171",
            "[::1]",
            "localhost.:7171",
        ] {
            assert_eq!(code(&policy, Some(host), None), None, "{host}");
        }
        for host in [
            "rebind.attacker.example:7171",
            "rebind.attacker.example",
            "10.0.0.1:7171",
            "localhost.attacker.example",
            "127.0.0.1.nip.io:7171",
            "[::2]:7171",
            "",
        ] {
            assert_eq!(
                code(&policy, Some(host), None),
                Some("host_not_allowed"),
                "{host}"
            );
        }
        // HTTP/1.0 without Host: no browser sends that.
        assert_eq!(code(&policy, None, None), None);
        // With tokens, the token is what stops a rebinding page.
        let open = Policy {
            loopback_hosts_only: false,
            ..policy
        };
        assert_eq!(code(&open, Some("deployd.internal:7171"), None), None);
    }

    #[test]
    fn only_its_own_and_allowed_origins_may_send_requests() {
        let policy = Policy {
            loopback_hosts_only: false,
            allowed_origins: vec!["https://dash.example.com".into()],
        };
        let host = Some("127.0.0.1:7171");
        for origin in [
            "http://127.0.0.1:7171",
            "https://127.0.0.1:7171/",
            "https://dash.example.com",
            "HTTPS://DASH.EXAMPLE.COM",
        ] {
            assert_eq!(code(&policy, host, Some(origin)), None, "{origin}");
        }
        for origin in [
            "https://evil.example",
            "null",
            "http://127.0.0.1:7172",
            "http://localhost:7171",
            "https://dash.example.com.evil",
        ] {
            assert_eq!(
                code(&policy, host, Some(origin)),
                Some("cross_origin"),
                "{origin}"
            );
        }
    }
}
