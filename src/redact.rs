//! Secrets never printed: [`Redactor`] masks, in any text deployd stores,
//! logs or prints, the values its config declares secret, and
//! [`url_passwords`] the password of anything that looks like a URL.
//!
//! What is secret: every value of a cluster's `env` unless declared
//! `secret = false`, and the password of `store.url` (in its user info or a
//! `password=` parameter, as written and percent-decoded). In free text
//! only secrets of at least [`MIN_SECRET`] bytes are masked — masking "1"
//! or "on" would garble every log — while `check-config` shows no secret
//! value at all, whatever its length. Every `scheme://user:password@`
//! becomes `scheme://user:***@`, secret or not.
//!
//! What must stay true: redaction happens where text leaves the daemon's
//! hands, so no other code has to remember it — a step's output before it
//! becomes `log` events, a step's error before it is stored, every line of
//! the daemon's log (telemetry's writer), `deployd`'s own error messages.
//! Each secret is masked as written and as the JSON log and `{:?}` escape
//! it, and so is each line of a secret that spans lines (a step prints it
//! line by line).

use crate::config::Config;
use std::borrow::Cow;
use std::fmt;

/// What a secret becomes.
pub const MASK: &str = "***";
/// Shorter secrets are not masked in free text.
pub const MIN_SECRET: usize = 4;

/// Masks a fixed set of secrets, and URL passwords, in text.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Each secret in every spelling it may be printed in, longest first,
    /// so one that contains another is masked whole.
    secrets: Vec<String>,
}

impl Redactor {
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Redactor {
        let mut spellings = Vec::new();
        for secret in secrets {
            let lines = secret.lines().map(|line| line.trim_end_matches('\r'));
            let lines: Vec<String> = match secret.contains('\n') {
                true => lines.map(str::to_string).collect(),
                false => Vec::new(),
            };
            for text in std::iter::once(secret).chain(lines) {
                if text.len() < MIN_SECRET {
                    continue;
                }
                let debug = format!("{text:?}");
                let json = serde_json::to_string(&text).unwrap_or_default();
                for escaped in [debug, json] {
                    let inner = escaped.get(1..escaped.len().saturating_sub(1));
                    if let Some(inner) = inner.filter(|inner| *inner != text) {
                        spellings.push(inner.to_string());
                    }
                }
                spellings.push(text);
            }
        }
        spellings.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        spellings.dedup();
        Redactor { secrets: spellings }
    }

    /// The secrets `config` holds: its clusters' secret env values and the
    /// store URL's password.
    pub fn of(config: &Config) -> Redactor {
        let env = (config.clusters.values())
            .flat_map(|cluster| cluster.env.values())
            .filter(|value| value.is_secret())
            .map(|value| value.value().to_string());
        let store = config.store.url.as_deref().map(url_secrets);
        Redactor::new(env.chain(store.into_iter().flatten()))
    }

    /// `text` with every secret and every URL password replaced by `***`.
    /// Every occurrence of every secret is found in `text` as given, and
    /// overlapping ones are masked as one: masking one first must not hide
    /// the start of another and show the rest of it.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for secret in &self.secrets {
            spans.extend(
                text.match_indices(secret.as_str())
                    .map(|(at, s)| (at, at + s.len())),
            );
        }
        let shown = if spans.is_empty() {
            Cow::Borrowed(text)
        } else {
            spans.sort_unstable();
            let mut masked = String::with_capacity(text.len());
            let mut done = 0;
            let mut spans = spans.into_iter().peekable();
            while let Some((start, mut end)) = spans.next() {
                while let Some(&(_, next_end)) = spans.peek().filter(|(next, _)| *next <= end) {
                    end = end.max(next_end);
                    spans.next();
                }
                masked.push_str(&text[done..start.max(done)]);
                masked.push_str(MASK);
                done = done.max(end);
            }
            masked.push_str(&text[done..]);
            Cow::Owned(masked)
        };
        match url_passwords(&shown) {
            Cow::Owned(masked) => Cow::Owned(masked),
            Cow::Borrowed(_) => shown,
        }
    }
}

/// Never shows a secret: only how many spellings it masks.
impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redactor({} spellings)", self.secrets.len())
    }
}

/// `text` with the password of every `scheme://user:password@…` in it
/// replaced by `***`, and every `password=` parameter of such a URL's
/// query. A URL ends at whitespace or a quote. When unsure, hide more: a
/// password with an unencoded `/` or `@` is hidden whole, at the price of
/// sometimes hiding part of a host.
pub fn url_passwords(text: &str) -> Cow<'_, str> {
    if !text.contains("://") {
        return Cow::Borrowed(text);
    }
    let mut shown = String::with_capacity(text.len());
    let mut changed = false;
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (before, after) = (&rest[..at], &rest[at + 3..]);
        let scheme = before
            .bytes()
            .rev()
            .take_while(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
            .count();
        let end = after
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .unwrap_or(after.len());
        shown.push_str(before);
        shown.push_str("://");
        match (scheme > 0).then(|| mask_url(&after[..end])).flatten() {
            Some(masked) => {
                shown.push_str(&masked);
                changed = true;
            }
            None => shown.push_str(&after[..end]),
        }
        rest = &after[end..];
    }
    shown.push_str(rest);
    match changed {
        true => Cow::Owned(shown),
        false => Cow::Borrowed(text),
    }
}

/// What follows `scheme://` with its passwords masked; `None` when it has
/// none.
fn mask_url(url: &str) -> Option<String> {
    let mut shown = url.to_string();
    if let Some((user_end, password_end)) = userinfo_password(url) {
        shown.replace_range(user_end + 1..password_end, MASK);
    }
    if let Some((before, query)) = shown.split_once('?') {
        let pairs = query.split('&').map(|pair| match pair.split_once('=') {
            Some((key, value)) if key.eq_ignore_ascii_case("password") && !value.is_empty() => {
                format!("{key}={MASK}")
            }
            _ => pair.to_string(),
        });
        shown = format!("{before}?{}", pairs.collect::<Vec<_>>().join("&"));
    }
    (shown != url).then_some(shown)
}

/// Where the password of `user:password@host…` lies: the byte offsets of
/// the `:` before it and of the last `@` after it. A `host:port/…` is not a
/// user and a password.
fn userinfo_password(url: &str) -> Option<(usize, usize)> {
    let at = url.rfind('@')?;
    let colon = url[..at].find(':')?;
    if url[..colon].contains(['/', '?', '#']) || colon + 1 == at {
        return None;
    }
    let after = &url[colon + 1..at];
    let port = after
        .split_once('/')
        .is_some_and(|(port, _)| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    (!port).then_some((colon, at))
}

/// The passwords a store URL holds, as written and percent-decoded.
fn url_secrets(url: &str) -> Vec<String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let mut found = Vec::new();
    if let Some((colon, at)) = userinfo_password(rest) {
        found.push(rest[colon + 1..at].to_string());
    }
    if let Some((_, query)) = rest.split_once('?') {
        let values = query.split('&').filter_map(|pair| pair.split_once('='));
        let passwords = values.filter(|(key, _)| key.eq_ignore_ascii_case("password"));
        found.extend(passwords.map(|(_, value)| value.to_string()));
    }
    let decoded: Vec<String> = found.iter().filter_map(|p| percent_decoded(p)).collect();
    found.extend(decoded);
    found
}

/// `text` with `%XX` escapes decoded, when it has any and the result is text.
fn percent_decoded(text: &str) -> Option<String> {
    if !text.contains('%') {
        return None;
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_passwords_are_masked_wherever_a_url_is() {
        let cases = [
            ("postgres://u:p4ss@h/db", "postgres://u:***@h/db"),
            (
                "fetching https://bot:hunter2@registry.example/v2 now",
                "fetching https://bot:***@registry.example/v2 now",
            ),
            (
                "\"git+ssh://git:t0k@host/x\"",
                "\"git+ssh://git:***@host/x\"",
            ),
            ("postgres://u:a@b/c@h/db", "postgres://u:***@h/db"),
            ("postgres://u:a/b@h/db", "postgres://u:***@h/db"),
            (
                "x=postgres://h/db?user=u&password=p",
                "x=postgres://h/db?user=u&password=***",
            ),
            (
                "a http://u:1@h and b ftp://v:2@k",
                "a http://u:***@h and b ftp://v:***@k",
            ),
        ];
        for (text, shown) in cases {
            assert_eq!(url_passwords(text), shown, "{text}");
        }
        let untouched = [
            "postgres://u@h/db",
            "http://h:8080/path@x",
            "https://registry.npmjs.org:443/@scope/pkg",
            "no url: user:pw@host",
            "://x:y@z",
            "http://u:@h",
            "plain text",
        ];
        for text in untouched {
            assert!(matches!(url_passwords(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn secrets_are_masked_in_every_spelling_and_short_ones_are_left() {
        let redactor = Redactor::new([
            "s3cr\"et\\x".to_string(),
            "ab".to_string(),
            "tok".to_string(),
            "token-long".to_string(),
            "line-one\nline-two".to_string(),
        ]);
        assert_eq!(redactor.redact("a s3cr\"et\\x b"), "a *** b");
        let json = serde_json::to_string("s3cr\"et\\x").unwrap();
        assert_eq!(redactor.redact(&json), "\"***\"");
        assert_eq!(redactor.redact(&format!("{:?}", "s3cr\"et\\x")), "\"***\"");
        assert_eq!(redactor.redact("ab tok token-long"), "ab tok ***");
        assert_eq!(redactor.redact("line-two"), "***");
        assert_eq!(redactor.redact("k https://u:pw12@h"), "k https://u:***@h");
        assert!(matches!(redactor.redact("nothing here"), Cow::Borrowed(_)));
        assert!(!format!("{redactor:?}").contains("s3cr"));
    }

    #[test]
    fn the_store_urls_password_is_a_secret_as_written_and_decoded() {
        let found = url_secrets("postgres://u:p%40ss@h/db?password=other1");
        assert_eq!(found, ["p%40ss", "other1", "p@ss"]);
        assert!(url_secrets("postgres://u@h/db").is_empty());
    }

    #[test]
    fn overlapping_secrets_are_masked_as_one() {
        let redactor = Redactor::new(["PASSWORD1234".to_string(), "1234XYZW".to_string()]);
        assert_eq!(redactor.redact("x PASSWORD1234XYZW y"), "x *** y");
        assert_eq!(redactor.redact("1234XYZW and PASSWORD1234"), "*** and ***");
        assert_eq!(redactor.redact("nothing here"), "nothing here");
    }
}
