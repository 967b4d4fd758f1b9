//! Who is calling, and what they may do: bearer tokens from `[[auth.tokens]]`.
//!
//! [`authenticate`] runs before every `/v1` handler. It hashes the presented
//! token and compares the digest with every configured one in constant time,
//! then puts the [`Caller`] in the request; handlers take it as an extractor
//! and ask [`Caller::may`] before they read or change anything. With no
//! tokens configured auth is off and every request is the anonymous admin
//! (the config then only allows a loopback listen address).
//!
//! What must stay true: a token and its hash never reach a log line or an
//! answer; a caller's name comes from here, never from the request body; a
//! handler that forgets the middleware fails closed (the extractor refuses).

use super::ApiError;
use crate::config::{AuthConfig, Role, TokenConfig};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Who deploys while auth is off.
pub const ANONYMOUS: &str = "anonymous";
/// The scope entry that matches every app or cluster.
const ANY: &str = "*";

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's configured name: what `deployed_by` records.
    pub name: String,
    pub role: Role,
    pub apps: Vec<String>,
    pub clusters: Vec<String>,
}

impl Caller {
    /// The caller while auth is off: may do everything.
    pub fn anonymous() -> Caller {
        Caller {
            name: ANONYMOUS.to_string(),
            role: Role::Admin,
            apps: vec![ANY.to_string()],
            clusters: vec![ANY.to_string()],
        }
    }

    /// Ok when the caller has at least `role` on `app` and, where the request
    /// names one, `cluster`; else 403 `forbidden`. A caller scoped to some
    /// clusters needs a cluster named: an app-wide request could otherwise
    /// show it other clusters.
    pub fn may(&self, role: Role, app: &str, cluster: Option<&str>) -> Result<(), ApiError> {
        self.may_app(role, app)?;
        match cluster {
            Some(cluster) if !covers(&self.clusters, cluster) => Err(forbidden(format!(
                "token {:?} may not act on cluster {cluster}",
                self.name
            ))),
            None if !covers_all(&self.clusters) => Err(forbidden(format!(
                "token {:?} may only act on clusters {}; name one",
                self.name,
                self.clusters.join(", ")
            ))),
            _ => Ok(()),
        }
    }

    /// Ok when the caller has at least `role` on `app`, on whichever of its
    /// clusters: for what belongs to the app as a whole (its versions).
    pub fn may_app(&self, role: Role, app: &str) -> Result<(), ApiError> {
        self.may_any_app(role)?;
        if !covers(&self.apps, app) {
            return Err(forbidden(format!(
                "token {:?} may not act on app {app}",
                self.name
            )));
        }
        Ok(())
    }

    /// Whether the caller's scope covers `cluster` (any role): which
    /// configured clusters it is shown.
    pub fn may_cluster(&self, cluster: &str) -> bool {
        covers(&self.clusters, cluster)
    }

    /// Ok when the caller has at least `role`, whatever the app: for requests
    /// that name no app (source uploads).
    pub fn may_any_app(&self, role: Role) -> Result<(), ApiError> {
        if self.role < role {
            return Err(forbidden(format!(
                "token {:?} has role {}, and this needs {}",
                self.name,
                role_name(self.role),
                role_name(role)
            )));
        }
        Ok(())
    }

    /// Ok when the caller has at least `role` on every app and cluster: for
    /// views that span all apps (the supervisor's).
    pub fn may_everything(&self, role: Role) -> Result<(), ApiError> {
        self.may_any_app(role)?;
        if !covers_all(&self.apps) || !covers_all(&self.clusters) {
            return Err(forbidden(format!(
                "token {:?} is limited to some apps or clusters; this needs all",
                self.name
            )));
        }
        Ok(())
    }
}

/// The configured tokens, by digest. Built once per router.
pub struct Tokens {
    known: Vec<Known>,
}

// No Debug: it would print the digests.
struct Known {
    digest: [u8; 32],
    caller: Caller,
}

impl Tokens {
    /// Tokens from the config; digests were checked to be 64 hex digits when
    /// the config was validated, and one that does not decode matches nothing.
    pub fn from_config(auth: &AuthConfig) -> Tokens {
        let known = auth
            .tokens
            .iter()
            .filter_map(|token| {
                let digest = hex::decode(&token.sha256).ok()?.try_into().ok()?;
                Some(Known {
                    digest,
                    caller: Caller {
                        name: token.name.clone(),
                        role: token.role,
                        apps: token.apps.clone(),
                        clusters: token.clusters.clone(),
                    },
                })
            })
            .collect();
        Tokens { known }
    }

    pub fn enabled(&self) -> bool {
        !self.known.is_empty()
    }

    /// The caller a request's headers authenticate, or 401.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if !self.enabled() {
            return Ok(Caller::anonymous());
        }
        let token = bearer(headers).ok_or_else(|| {
            unauthenticated("this server needs an Authorization: Bearer <token> header")
        })?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        // Every configured digest is compared, whether or not an earlier one
        // matched, so the time taken says nothing about which token is close.
        let mut found = None;
        for known in &self.known {
            if constant_time_eq(&known.digest, &digest) {
                found = Some(&known.caller);
            }
        }
        found
            .cloned()
            .ok_or_else(|| unauthenticated("the bearer token is not one this server knows"))
    }
}

/// Middleware: authenticate the request and hand its [`Caller`] on; 401
/// (with `WWW-Authenticate: Bearer`) when auth is on and the token is
/// missing or unknown.
pub async fn authenticate(
    State(tokens): State<Arc<Tokens>>,
    mut request: Request,
    next: Next,
) -> Response {
    match tokens.caller(request.headers()) {
        Ok(caller) => {
            request.extensions_mut().insert(caller);
            next.run(request).await
        }
        Err(error) => ([(header::WWW_AUTHENTICATE, "Bearer")], error).into_response(),
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Caller, ApiError> {
        // Absent only if a route skipped the middleware: refuse, never guess.
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| unauthenticated("this request was not authenticated"))
    }
}

/// A fresh token for `deployd token new`: 32 bytes from the kernel's CSPRNG
/// as 64 hex digits, and its config entry (which holds only the digest).
pub fn mint(
    name: &str,
    role: Role,
    apps: Vec<String>,
    clusters: Vec<String>,
) -> std::io::Result<(String, TokenConfig)> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    let token = hex::encode(bytes);
    let entry = TokenConfig {
        name: name.to_string(),
        sha256: hex::encode(Sha256::digest(token.as_bytes())),
        role,
        apps,
        clusters,
    };
    Ok((token, entry))
}

/// `entry` as the `[[auth.tokens]]` TOML block an operator pastes into the
/// config.
pub fn config_block(entry: &TokenConfig) -> String {
    #[derive(serde::Serialize)]
    struct Root<'a> {
        auth: Auth<'a>,
    }
    #[derive(serde::Serialize)]
    struct Auth<'a> {
        tokens: [&'a TokenConfig; 1],
    }
    let root = Root {
        auth: Auth { tokens: [entry] },
    };
    toml::to_string(&root).expect("a token entry is plain TOML")
}

/// The token of an `Authorization: Bearer <token>` header (scheme in any case).
pub(super) fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Equal digests, in time independent of where they differ (`subtle` keeps
/// the optimizer from short-circuiting the comparison).
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    bool::from(a[..].ct_eq(&b[..]))
}

fn covers(scope: &[String], name: &str) -> bool {
    covers_all(scope) || scope.iter().any(|s| s == name)
}

fn covers_all(scope: &[String]) -> bool {
    scope.iter().any(|s| s == ANY)
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Read => "read",
        Role::Deploy => "deploy",
        Role::Admin => "admin",
    }
}

fn unauthenticated(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
}

fn forbidden(message: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "forbidden", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(
        name: &str,
        secret: &str,
        role: Role,
        apps: &[&str],
        clusters: &[&str],
    ) -> TokenConfig {
        TokenConfig {
            name: name.to_string(),
            sha256: hex::encode(Sha256::digest(secret.as_bytes())),
            role,
            apps: apps.iter().map(|s| s.to_string()).collect(),
            clusters: clusters.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn headers(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().unwrap());
        headers
    }

    fn tokens() -> Tokens {
        Tokens::from_config(&AuthConfig {
            tokens: vec![
                token("ci", "s3cret-ci", Role::Deploy, &["web"], &["*"]),
                token("ops", "s3cret-ops", Role::Admin, &["*"], &["*"]),
                token("viewer", "s3cret-view", Role::Read, &["*"], &["staging"]),
            ],
        })
    }

    #[test]
    fn auth_off_is_the_anonymous_admin() {
        let off = Tokens::from_config(&AuthConfig::default());
        assert!(!off.enabled());
        assert_eq!(off.caller(&HeaderMap::new()).unwrap(), Caller::anonymous());
        assert!(Caller::anonymous().may_everything(Role::Admin).is_ok());
    }

    #[test]
    fn tokens_resolve_by_digest_and_unknown_ones_are_401() {
        let tokens = tokens();
        let ci = tokens.caller(&headers("Bearer s3cret-ci")).unwrap();
        assert_eq!((ci.name.as_str(), ci.role), ("ci", Role::Deploy));
        let ops = tokens.caller(&headers("bearer  s3cret-ops ")).unwrap();
        assert_eq!(ops.name, "ops");
        for bad in [
            "Bearer wrong",
            "Bearer",
            "Bearer ",
            "Basic s3cret-ci",
            "s3cret-ci",
        ] {
            let err = tokens.caller(&headers(bad)).unwrap_err();
            assert_eq!(
                (err.status, err.code),
                (StatusCode::UNAUTHORIZED, "unauthenticated"),
                "{bad}"
            );
            assert!(!err.message.contains("s3cret"), "{}", err.message);
        }
        assert_eq!(
            tokens.caller(&HeaderMap::new()).unwrap_err().code,
            "unauthenticated"
        );
        // A configured digest presented as the token is not the token.
        let digest = hex::encode(Sha256::digest(b"s3cret-ci"));
        assert!(
            tokens
                .caller(&headers(&format!("Bearer {digest}")))
                .is_err()
        );
    }

    #[test]
    fn roles_and_scopes() {
        let tokens = tokens();
        let ci = tokens.caller(&headers("Bearer s3cret-ci")).unwrap();
        assert!(ci.may(Role::Deploy, "web", Some("prod")).is_ok());
        assert!(ci.may(Role::Read, "web", None).is_ok());
        assert_eq!(
            ci.may(Role::Read, "api", Some("prod")).unwrap_err().code,
            "forbidden"
        );
        assert_eq!(
            ci.may(Role::Admin, "web", Some("prod")).unwrap_err().code,
            "forbidden"
        );
        assert!(ci.may_any_app(Role::Deploy).is_ok());
        assert!(ci.may_everything(Role::Admin).is_err());

        let viewer = tokens.caller(&headers("Bearer s3cret-view")).unwrap();
        assert!(viewer.may(Role::Read, "api", Some("staging")).is_ok());
        assert!(viewer.may(Role::Read, "api", Some("prod")).is_err());
        assert!(
            viewer.may(Role::Read, "api", None).is_err(),
            "must name its cluster"
        );
        assert!(viewer.may(Role::Deploy, "api", Some("staging")).is_err());
        assert!(viewer.may_any_app(Role::Deploy).is_err());
        assert!(
            viewer.may_app(Role::Read, "api").is_ok(),
            "versions are app-wide"
        );

        let ops = tokens.caller(&headers("Bearer s3cret-ops")).unwrap();
        assert!(ops.may_everything(Role::Admin).is_ok());
    }

    #[test]
    fn minted_tokens_are_fresh_and_their_block_admits_them() {
        let apps = vec!["web".to_string()];
        let (token, entry) = mint("ci", Role::Deploy, apps, vec!["*".into()]).unwrap();
        let (other, _) = mint("ci", Role::Deploy, vec![], vec![]).unwrap();
        assert_eq!(token.len(), 64);
        assert_ne!(token, other);
        let block = config_block(&entry);
        assert!(block.contains("[[auth.tokens]]"), "{block}");
        assert!(!block.contains(&token), "the config holds the digest only");
        let config = crate::config::Config::from_sources(Some(&block), Vec::new()).unwrap();
        let tokens = Tokens::from_config(&config.auth);
        let caller = tokens.caller(&headers(&format!("Bearer {token}"))).unwrap();
        assert_eq!(caller.name, "ci");
        assert!(caller.may(Role::Deploy, "web", Some("local")).is_ok());
        assert!(caller.may(Role::Read, "api", Some("local")).is_err());
    }

    #[test]
    fn digests_compare_whole() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
        b = a;
        b[0] ^= 0x80;
        assert!(!constant_time_eq(&a, &b));
    }
}
