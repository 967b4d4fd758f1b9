//! Logging for the daemon: `tracing` events to stderr, filtered by
//! `DEPLOYD_LOG` (an `EnvFilter` directive such as `debug` or
//! `info,deployd::pipeline=trace`; default `info,deployd=info`), as JSON
//! lines when `DEPLOYD_LOG_FORMAT=json` and as compact human text otherwise.
//!
//! These two variables are read here, before any config exists, which is why
//! the config loader does not take them for `DEPLOYD_*` key overrides.
//!
//! What must stay true: every line passes through a [`Redactor`] on its way
//! to stderr, whatever logged it (our code, a dependency, a field printed
//! with `?`), so no secret of the config and no URL password is ever
//! logged.

use crate::redact::Redactor;
use std::io::{IsTerminal, Write};
use std::sync::Arc;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

const DEFAULT_FILTER: &str = "info,deployd=info";

/// Install the global subscriber, masking URL passwords. Safe to call more
/// than once: only the first call installs one, later calls change nothing
/// (tests call it freely).
pub fn init() {
    init_redacting(Redactor::default());
}

/// Install the global subscriber, masking what `redactor` knows (the
/// config's secrets) and URL passwords in every line.
pub fn init_redacting(redactor: Redactor) {
    let (filter, bad_filter) = match std::env::var("DEPLOYD_LOG") {
        Ok(directives) => match EnvFilter::try_new(&directives) {
            Ok(filter) => (filter, None),
            Err(error) => (EnvFilter::new(DEFAULT_FILTER), Some((directives, error))),
        },
        Err(_) => (EnvFilter::new(DEFAULT_FILTER), None),
    };
    let json = std::env::var("DEPLOYD_LOG_FORMAT").is_ok_and(|format| format == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(RedactedStderr(Arc::new(redactor)));
    let installed = if json {
        builder.json().flatten_event(true).try_init().is_ok()
    } else {
        let ansi = std::io::stderr().is_terminal();
        builder.compact().with_ansi(ansi).try_init().is_ok()
    };
    // A typo in the filter must not silence the daemon: say so, loudly, once.
    if installed && let Some((directives, error)) = bad_filter {
        tracing::warn!(%directives, %error, "DEPLOYD_LOG is not a valid filter; using {DEFAULT_FILTER:?}");
    }
}

/// Stderr, each line redacted first. The fmt layer formats an event whole
/// and hands it over in one `write_all`, so a secret is never split between
/// two writes.
struct RedactedStderr(Arc<Redactor>);

impl<'a> MakeWriter<'a> for RedactedStderr {
    type Writer = RedactingWriter<'a>;

    fn make_writer(&'a self) -> RedactingWriter<'a> {
        RedactingWriter(&self.0)
    }
}

struct RedactingWriter<'a>(&'a Redactor);

impl Write for RedactingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(self.0.redact(&text).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn init_twice_is_harmless() {
        super::init();
        super::init();
        tracing::info!("logging works after two calls");
    }
}
