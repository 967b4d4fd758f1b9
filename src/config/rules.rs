//! The rules serde cannot express: names, runnable steps, positive limits
//! and timeouts, TLS files that load, well-formed tokens, loopback without
//! auth. Each check answers with the first broken rule as (key path, what is
//! wrong); the loader adds the layer the key came from.

use super::layers::{KeyPath, Seg};
use super::{ClusterConfig, Config, ServerConfig, TokenConfig};
use crate::names::{AppName, ClusterName, NAME_RULE};
use std::time::Duration;

/// The first broken rule, as (key path, what is wrong).
pub(super) fn problem(config: &Config) -> Option<(KeyPath, String)> {
    let at = |keys: &[&str]| keys.iter().map(|k| Seg::Key(k.to_string())).collect();
    if config.deploy.lease < Duration::from_secs(3) {
        return Some((at(&["deploy", "lease"]), "must be at least 3s".into()));
    }
    let limits = [
        ("upload_bytes", config.limits.upload_bytes),
        ("extracted_bytes", config.limits.extracted_bytes),
        ("extracted_entries", config.limits.extracted_entries),
        (
            "output_bytes_per_deployment",
            config.limits.output_bytes_per_deployment,
        ),
    ];
    if let Some((name, _)) = limits.iter().find(|(_, value)| *value == 0) {
        return Some((at(&["limits", name]), "must be greater than 0".into()));
    }
    if config.limits.source_ttl < Duration::from_secs(1) {
        let message = "must be at least 1s: a source is uploaded before the deploy that names it";
        return Some((at(&["limits", "source_ttl"]), message.into()));
    }
    if config.deploy.compact_every < Duration::from_secs(1) {
        let key = at(&["deploy", "compact_every"]);
        return Some((key, "must be at least 1s".into()));
    }
    if let Some(url) = &config.store.url
        && !(url.starts_with("postgres://") || url.starts_with("postgresql://"))
    {
        // The URL itself is not echoed: it may hold a password.
        let (key, message) = match config.store.url_file {
            Some(_) => (
                "url_file",
                "the file must hold a URL starting with postgres://",
            ),
            None => ("url", "must start with postgres:// or postgresql://"),
        };
        return Some((at(&["store", key]), message.into()));
    }
    if let Some((i, origin)) =
        (config.server.allowed_origins.iter().enumerate()).find(|(_, origin)| !is_origin(origin))
    {
        let key = vec![
            Seg::Key("server".into()),
            Seg::Key("allowed_origins".into()),
            Seg::Index(i),
        ];
        let message = format!(
            "{origin:?} is not an origin: write scheme://host[:port], e.g. https://dash.example.com"
        );
        return Some((key, message));
    }
    if let Some(url) = &config.server.advertise_url
        && !is_origin(url)
    {
        let message = format!(
            "{url:?} is not a base URL: write scheme://host[:port], e.g. http://10.0.0.5:7171"
        );
        return Some((at(&["server", "advertise_url"]), message));
    }
    if let Some(problem) = server_problem(&config.server) {
        return Some(problem);
    }
    if config.auth.tokens.is_empty() && !config.server.listen.ip().is_loopback() {
        let message = "auth is off (no [[auth.tokens]] configured), so only a loopback \
            address is allowed; to enable auth, run `deployd token new NAME --role admin` \
            and add the [[auth.tokens]] block it prints to the config file";
        return Some((at(&["server", "listen"]), message.into()));
    }
    config
        .clusters
        .iter()
        .find_map(|(name, cluster)| cluster_problem(name, cluster))
        .or_else(|| tokens_problem(&config.auth.tokens))
}

/// Connection limits that can serve, and TLS files that load.
fn server_problem(server: &ServerConfig) -> Option<(KeyPath, String)> {
    let at = |keys: &[&str]| {
        let keys = ["server"].into_iter().chain(keys.iter().copied());
        keys.map(|k| Seg::Key(k.to_string())).collect()
    };
    if server.max_connections == 0 {
        return Some((at(&["max_connections"]), "must be at least 1".into()));
    }
    let timeouts = [
        ("header_timeout", server.header_timeout),
        ("idle_timeout", server.idle_timeout),
    ];
    if let Some((name, _)) = timeouts.iter().find(|(_, value)| value.is_zero()) {
        return Some((at(&[name]), "must be greater than 0".into()));
    }
    // The one set is named: its layer is where the mistake is.
    let both = "HTTPS needs both server.tls.cert_file and server.tls.key_file; plain HTTP neither";
    match (&server.tls.cert_file, &server.tls.key_file) {
        (None, None) => None,
        (Some(_), None) => Some((at(&["tls", "cert_file"]), format!("set alone: {both}"))),
        (None, Some(_)) => Some((at(&["tls", "key_file"]), format!("set alone: {both}"))),
        (Some(cert), Some(key)) => crate::listen::tls::load(cert, key)
            .err()
            .map(|error| (at(&["tls", error.file]), error.message)),
    }
}

fn cluster_problem(name: &str, cluster: &ClusterConfig) -> Option<(KeyPath, String)> {
    let at = |rest: &[&str]| {
        let keys = ["clusters", name].into_iter().chain(rest.iter().copied());
        keys.map(|k| Seg::Key(k.to_string())).collect()
    };
    if name.parse::<ClusterName>().is_err() {
        return Some((at(&[]), format!("invalid cluster name: use {NAME_RULE}")));
    }
    let steps = [
        ("build", &cluster.build),
        ("push", &cluster.push),
        ("activate", &cluster.activate),
        ("cleanup", &cluster.cleanup),
    ];
    for (phase, step) in steps {
        let Some(step) = step else { continue };
        if step.run.first().is_none_or(|program| program.is_empty()) {
            return Some((at(&[phase, "run"]), "must name a program to run".into()));
        }
        if step.timeout.is_zero() {
            return Some((at(&[phase, "timeout"]), "must be greater than 0".into()));
        }
    }
    let bad_var = |var: &&String| {
        let mut chars = var.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        !(first_ok && chars.all(|c| c.is_ascii_alphanumeric() || c == '_'))
    };
    let var = cluster.env.keys().find(bad_var)?;
    Some((
        at(&["env", var]),
        "not a valid environment variable name".into(),
    ))
}

/// `http(s)://host[:port]`, nothing more: what a browser sends as `Origin`.
fn is_origin(text: &str) -> bool {
    let Some(rest) = text
        .strip_prefix("http://")
        .or_else(|| text.strip_prefix("https://"))
    else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    !rest.is_empty()
        && rest
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b))
}

/// Whether a text is a valid name of one kind.
type NameCheck = fn(&str) -> bool;

fn tokens_problem(tokens: &[TokenConfig]) -> Option<(KeyPath, String)> {
    let at = |index: usize, key: &str| {
        let base = [Seg::Key("auth".into()), Seg::Key("tokens".into())];
        base.into_iter()
            .chain([Seg::Index(index), Seg::Key(key.to_string())])
            .collect()
    };
    for (index, token) in tokens.iter().enumerate() {
        if token.name.is_empty() {
            return Some((at(index, "name"), "must not be empty".into()));
        }
        if tokens[..index].iter().any(|t| t.name == token.name) {
            let message = format!("duplicate token name {:?}", token.name);
            return Some((at(index, "name"), message));
        }
        if token.sha256.len() != 64 || !token.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            let message = "must be the token's sha256 as 64 hex digits".into();
            return Some((at(index, "sha256"), message));
        }
        let scopes: [(&str, &[String], NameCheck); 2] = [
            ("apps", &token.apps, |n| n.parse::<AppName>().is_ok()),
            ("clusters", &token.clusters, |n| {
                n.parse::<ClusterName>().is_ok()
            }),
        ];
        for (key, names, valid) in scopes {
            if let Some(bad) = names.iter().find(|n| *n != "*" && !valid(n)) {
                let message = format!("invalid name {bad:?}: use \"*\" or {NAME_RULE}");
                return Some((at(index, key), message));
            }
        }
    }
    None
}
