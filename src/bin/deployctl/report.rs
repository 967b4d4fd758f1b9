//! How deployctl says it could not do its job: the message on stderr with
//! advice where there is some, and under `-o json` the API's error object on
//! stdout too, with the exit code scripts rely on; also for a command line
//! clap refused.

use crate::style;
use crate::{Failure, Output, REQUEST_ERROR, SERVER_ERROR, show};
use deployd::client::ClientError;

/// Leave on a command line clap refused: its message on stderr, as always,
/// and under `-o json` the API's error object on stdout too, so a script
/// reading stdout learns of it like of any other error. `--help` and
/// `--version` are not errors and print as they do.
pub fn usage_exit(error: clap::Error) -> ! {
    use clap::error::ErrorKind;
    let refused = !matches!(
        error.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    );
    if refused && wants_json(std::env::args().skip(1)) {
        let message = error.kind().as_str().unwrap_or("invalid command line");
        // What clap says before its usage line, on one line: a missing
        // argument's name is on the line after "were not provided:".
        let detail = error.to_string();
        let said: Vec<&str> = (detail.lines())
            .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more"))
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with("tip:"))
            .collect();
        let joined = said.join(" ");
        let first = match joined.is_empty() {
            true => message,
            false => joined.strip_prefix("error: ").unwrap_or(&joined),
        };
        show::json_line(&serde_json::json!({
            "error": {"code": "usage", "message": first, "details": null}
        }));
    }
    error.exit()
}

/// Whether a command line asks for JSON output, read without clap (which
/// refused it): `-o json`, `-ojson`, `--output json`, `--output=json`.
fn wants_json(args: impl Iterator<Item = String>) -> bool {
    let args: Vec<String> = args.collect();
    args.iter().enumerate().any(|(i, arg)| match arg.as_str() {
        "-o" | "--output" => args.get(i + 1).is_some_and(|next| next == "json"),
        "-ojson" | "--output=json" => true,
        _ => false,
    })
}

/// Say why the command failed, on stderr (and under `--output json` as
/// API.md's error object on stdout), and pick its exit code.
pub fn report(failure: &Failure, server: &str, output: Output) -> u8 {
    let (exit, code, message, details) = match failure {
        Failure::Client(ClientError::Api {
            status,
            code,
            message,
            details,
        }) => (
            if *status >= 500 {
                SERVER_ERROR
            } else {
                REQUEST_ERROR
            },
            code.clone(),
            message.clone(),
            details.clone(),
        ),
        Failure::Client(ClientError::Unreachable(reason)) => (
            SERVER_ERROR,
            "unreachable".into(),
            format!("cannot reach deployd at {server}: {reason}"),
            serde_json::Value::Null,
        ),
        // Retrying does not help: the certificate or the URL must change.
        Failure::Client(ClientError::Tls(reason)) => (
            REQUEST_ERROR,
            "tls".into(),
            format!("no TLS session with deployd at {server}: {reason}"),
            serde_json::Value::Null,
        ),
        Failure::Client(ClientError::Server { status, message }) => (
            SERVER_ERROR,
            "server_error".into(),
            format!("the server at {server} failed (HTTP {status}): {message}"),
            serde_json::Value::Null,
        ),
        Failure::Client(ClientError::Protocol(message)) => (
            SERVER_ERROR,
            "protocol".into(),
            message.clone(),
            serde_json::Value::Null,
        ),
        Failure::Pack(error) => (
            REQUEST_ERROR,
            "invalid_source".into(),
            format!("cannot pack the source: {error}"),
            serde_json::Value::Null,
        ),
        Failure::Usage(message) => (
            REQUEST_ERROR,
            "usage".into(),
            message.clone(),
            serde_json::Value::Null,
        ),
        Failure::NotFound(message) => (
            REQUEST_ERROR,
            "not_found".into(),
            message.clone(),
            serde_json::Value::Null,
        ),
    };
    if output == Output::Json {
        show::json_line(&serde_json::json!({
            "error": {"code": code, "message": message, "details": details}
        }));
    }
    let shown = match failure {
        Failure::Client(ClientError::Api { .. }) => format!("{message} ({code})"),
        _ => message,
    };
    eprintln!("{} {shown}", style::Paint::Bad.err("error:"));
    let mut advice = show::error_details(&code, &details);
    match code.as_str() {
        "unauthenticated" => advice.push(
            "give a token with --token or DEPLOYD_TOKEN, or save one with `deployctl login`".into(),
        ),
        "forbidden" => advice.push(
            "ask for a token whose role and scope cover this app and cluster, and give it \
             with --token, DEPLOYD_TOKEN or `deployctl login`"
                .into(),
        ),
        _ => {}
    }
    for line in advice {
        eprintln!("  {line}");
    }
    exit
}
