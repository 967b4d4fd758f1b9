//! Logging for the daemon: `tracing` events to stderr, filtered by
//! `DEPLOYD_LOG` (an `EnvFilter` directive such as `debug` or
//! `info,deployd::pipeline=trace`; default `info,deployd=info`), as JSON
//! lines when `DEPLOYD_LOG_FORMAT=json` and as compact human text otherwise.
//!
//! These two variables are read here, before any config exists, which is why
//! the config loader does not take them for `DEPLOYD_*` key overrides.

use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

const DEFAULT_FILTER: &str = "info,deployd=info";

/// Install the global subscriber. Safe to call more than once: only the first
/// call installs one, later calls change nothing (tests call it freely).
pub fn init() {
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
        .with_writer(std::io::stderr);
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

#[cfg(test)]
mod tests {
    #[test]
    fn init_twice_is_harmless() {
        super::init();
        super::init();
        tracing::info!("logging works after two calls");
    }
}
