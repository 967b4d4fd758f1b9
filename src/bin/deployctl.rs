//! deployctl: the command line for deployd. It parses a command, calls the
//! typed [`Client`], and renders what comes back; the server owns every
//! deployment. So Ctrl-C while watching only detaches, and a dropped
//! connection is resumed, never retried as a second deploy.
//!
//! Exit codes, which scripts rely on: 0 the deployment succeeded or the
//! command did its job; 1 the deployment ended failed, cancelled or
//! interrupted; 2 a usage or request error (the server said 4xx, the server
//! URL's scheme is neither http nor https, the server's TLS certificate is
//! not trusted); 3 the server is unreachable or failed (5xx); 124 `--timeout`
//! ran out before the deployment ended; 130 detached with Ctrl-C before the
//! deployment ended. Under `--output json` an error is also printed on
//! stdout as API.md's error object.

// Under deployctl/ rather than src/bin/, where Cargo would take each file
// for a binary of its own.
#[path = "deployctl/pick.rs"]
mod pick;
#[path = "deployctl/profiles.rs"]
mod profiles;
#[path = "deployctl/progress.rs"]
mod progress;
#[path = "deployctl/report.rs"]
mod report;
#[path = "deployctl/settings.rs"]
mod settings;
#[path = "deployctl/show.rs"]
mod show;
#[path = "deployctl/style.rs"]
mod style;
#[path = "deployctl/versions.rs"]
mod versions;

use clap::builder::TypedValueParser;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use deployd::client::{Client, ClientError, follow_reporting, resume_reporting};
use deployd::machine::State;
use deployd::model::short_id;
use deployd::model::{ConflictPolicy, DeployRequest, RollbackRequest};
use deployd::pack::{self, PackError};
use settings::{Globals, Settings, Target};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Parser)]
#[command(
    name = "deployctl",
    version,
    about = "Deploy apps with deployd, and watch them go"
)]
struct Cli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Pack DIR, upload it unless the server has it, deploy it and watch.
    #[command(after_long_help = "Examples:
  deployctl deploy -a web -c prod                  deploy the current directory
  deployctl deploy -a web -c prod ./site -m 'fix the footer'
  deployctl deploy -a web -c prod --detach         print the id and return
  deployctl deploy -a web -c prod --timeout 15m    exit 124 if not done by then
  deployctl -o json deploy -a web -c prod | tail -n1 | jq -r .data.version

Exit codes: 0 succeeded, 1 failed/cancelled/interrupted, 2 refused (bad input,
busy target, unknown cluster), 3 server unreachable or failing, 124 --timeout
ran out, 130 Ctrl-C (the deployment keeps running).")]
    Deploy {
        /// The source directory; .gitignore, .deployignore and the ignore
        /// list of its deployd.toml apply.
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[command(flatten)]
        options: Options,
    },
    /// Re-activate an earlier version (no build) and watch.
    #[command(after_long_help = "Examples:
  deployctl rollback -a web -c prod                to the version active before
  deployctl rollback -a web -c prod --to v12       to v12 (see `deployctl versions`)")]
    Rollback {
        /// The version to go back to; default: the one active before.
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
        #[command(flatten)]
        options: Options,
    },
    /// Cancel a running or queued deployment.
    #[command(after_long_help = "Examples:
  deployctl cancel 3f9c2a1b                     by the short id history shows
  deployctl cancel -a web -c prod               whatever is running on web/prod
  deployctl cancel 3f9c2a1b --reason 'wrong branch'")]
    Cancel {
        /// The deployment: its short id (or a unique prefix of at least 6
        /// digits) or full id; without it, the one running on -a/-c.
        id: Option<String>,
        /// Why, kept with the deployment.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Follow a deployment's progress (replayed from its start) to its end.
    #[command(after_long_help = "Examples:
  deployctl watch 3f9c2a1b                      by the short id history shows
  deployctl watch -a web -c prod                what runs there (else is queued, else ran last)
  deployctl watch 3f9c2a1b --timeout 10m        exit 124 if not done in 10 minutes")]
    Watch {
        /// The deployment: its short id (or a unique prefix of at least 6
        /// digits) or full id; without it, the one running on -a/-c, else
        /// the first queued, else the newest.
        id: Option<String>,
        /// Stop watching after this long (`90s`, `10m`) and exit 124; the
        /// deployment keeps running.
        #[arg(long, value_parser = positive_duration, value_name = "DURATION")]
        timeout: Option<Duration>,
    },
    /// Print a deployment's output so far (replayed, not followed).
    #[command(after_long_help = "Examples:
  deployctl logs 3f9c2a1b                       the build, push and activate output
  deployctl logs -a web -c prod                 of what is running there, or ran last")]
    Logs {
        /// The deployment: its short id (or a unique prefix of at least 6
        /// digits) or full id; without it, the one running on -a/-c, else
        /// the first queued, else the newest.
        id: Option<String>,
    },
    /// What is active, running and queued on a target, or on every cluster
    /// the app was recently deployed to, and the last failure if the newest
    /// finished deployment did not succeed.
    #[command(after_long_help = "Examples:
  deployctl status -a web                          every cluster web runs on
  deployctl status -a web -c prod
  deployctl -o json status -a web                  {\"app\": …, \"targets\": [TargetView…]}")]
    Status,
    /// An app's deployments, newest first, with their short ids and errors.
    #[command(after_long_help = "Examples:
  deployctl history -a web
  deployctl history -a web -c prod --state failed
  deployctl history -a web --all -o json")]
    History {
        /// Only deployments in this state.
        #[arg(long, value_parser = state_parser())]
        state: Option<State>,
        /// Deployments per page (1-500).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: Option<u32>,
        /// Follow the pages to the oldest deployment.
        #[arg(long)]
        all: bool,
    },
    /// An app's versions, newest first: where each is or was live, and
    /// whether it is pinned; or pin or unpin one.
    #[command(args_conflicts_with_subcommands = true, after_help = versions::RETENTION)]
    #[command(after_long_help = "Examples:
  deployctl versions -a web                        where each version is or was live
  deployctl versions pin -a web v12                keep v12 for good
  deployctl versions unpin -a web v12
  deployctl -o json versions -a web --all")]
    Versions {
        #[command(subcommand)]
        pin: Option<Pin>,
        /// Versions per page (1-500).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: Option<u32>,
        /// Follow the pages to the oldest version.
        #[arg(long)]
        all: bool,
    },
    /// Delete what retention no longer keeps, now, and say what went; needs
    /// an admin token of every app and cluster.
    #[command(after_help = versions::RETENTION)]
    #[command(after_long_help = "Examples:
  deployctl compact --dry-run                      what would go, and why; changes nothing
  deployctl compact                                delete it now")]
    Compact {
        /// Say what would be deleted, and why, and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The deployd instances sharing this server's store, where each is
    /// reached, its last heartbeat and the targets it owns; needs an admin
    /// token of every app and cluster.
    #[command(after_long_help = "Examples:
  deployctl instances                              who owns which target
  deployctl -o json instances")]
    Instances,
    /// Check that the server answers and accepts the token, then save both
    /// as a profile that later commands use.
    #[command(
        long_about = "Check that the server answers and accepts the token, then save both as \
                      a profile (--profile, default \"default\") that later commands use. The \
                      token comes from --token or DEPLOYD_TOKEN, else standard input (asked \
                      for without echo on a terminal). With auth off on the server, only the \
                      server is saved. See `deployctl help config`.",
        after_long_help = "Examples:
  deployctl login -s https://deploy.example.com    asks for the token
  echo \"$TOKEN\" | deployctl login -s https://deploy.example.com -p ci"
    )]
    Login,
    /// Forget a saved profile (--profile, default "default").
    #[command(after_long_help = "Examples:
  deployctl logout                                 forget the default profile
  deployctl logout -p ci")]
    Logout,
    /// Print the settings in effect and where each came from.
    #[command(long_about = settings::CONFIG_HELP)]
    Config,
    /// The clusters this server deploys to, with their steps (no secrets).
    #[command(after_long_help = "Examples:
  deployctl clusters                               each cluster and its steps
  deployctl -o json clusters | jq -r '.clusters[].name'")]
    Clusters,
    /// The apps with deployments, each target's active version, and what
    /// is running.
    #[command(after_long_help = "Examples:
  deployctl apps                                   every target, its active version, what runs
  deployctl -o json apps | jq '.apps[] | select(.targets[].running)'")]
    Apps,
    /// Print a shell completion script.
    #[command(after_long_help = "Examples:
  deployctl completions bash > /etc/bash_completion.d/deployctl
  deployctl completions zsh > \"${fpath[1]}/_deployctl\"")]
    Completions {
        /// The shell to complete for.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum Pin {
    /// Keep VERSION of APP for good: compaction never deletes a pinned
    /// version, so you can always roll back to it.
    #[command(after_long_help = "Examples:
  deployctl versions pin -a web v12                compaction never deletes web v12")]
    Pin {
        /// The version to keep: v1, v2, …
        version: String,
    },
    /// Let retention decide about VERSION of APP again.
    #[command(after_long_help = "Examples:
  deployctl versions unpin -a web v12              retention decides about v12 again")]
    Unpin {
        /// The version to unpin: v1, v2, …
        version: String,
    },
}

#[derive(clap::Args)]
struct Options {
    /// A note kept with the deployment.
    #[arg(long, short)]
    message: Option<String>,
    /// What to do when the target is busy; default: the server's setting.
    #[arg(long, value_enum)]
    on_conflict: Option<OnConflict>,
    /// Print the deployment id and return instead of watching.
    #[arg(long)]
    detach: bool,
    /// Repeating a request with the same key answers the first deployment.
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Stop watching after this long (`90s`, `10m`) and exit 124; the
    /// deployment keeps running.
    #[arg(long, value_parser = positive_duration, value_name = "DURATION")]
    timeout: Option<Duration>,
}

#[derive(Clone, Copy, ValueEnum)]
enum OnConflict {
    Reject,
    Queue,
    Supersede,
}

impl From<OnConflict> for ConflictPolicy {
    fn from(value: OnConflict) -> Self {
        match value {
            OnConflict::Reject => ConflictPolicy::Reject,
            OnConflict::Queue => ConflictPolicy::Queue,
            OnConflict::Supersede => ConflictPolicy::Supersede,
        }
    }
}

fn state_parser() -> impl clap::builder::TypedValueParser<Value = State> {
    clap::builder::PossibleValuesParser::new(State::ALL.map(State::as_str))
        .map(|name| name.parse::<State>().expect("offered names parse"))
}

/// How to run deployctl again against the same server: `deployctl`, with
/// `-s`/`-p` when those came from flags (the environment stays in the
/// user's shell), for the hints that say how to reattach or cancel.
static AGAIN: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The command that reaches this run's server again; `deployctl` before
/// the settings are known.
pub fn again() -> &'static str {
    AGAIN.get().map(String::as_str).unwrap_or("deployctl")
}

pub const SUCCEEDED: u8 = 0;
pub const ENDED_BADLY: u8 = 1;
pub const REQUEST_ERROR: u8 = 2;
pub const SERVER_ERROR: u8 = 3;
pub const TIMED_OUT: u8 = 124;
pub const DETACHED: u8 = 130;

/// Why a command could not do its job.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("cannot pack the source: {0}")]
    Pack(#[from] PackError),
    #[error("{0}")]
    Usage(String),
    /// Nothing matches what the command asked for (nothing running to
    /// cancel): exit 2, JSON code `not_found`.
    #[error("{0}")]
    NotFound(String),
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // SAFETY: nothing else runs yet, and SIG_DFL is a valid disposition. A
    // closed stdout (`deployctl watch ID | head`) then ends us quietly, as it
    // does any Unix filter, instead of panicking in println!.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let matches = Cli::command()
        .try_get_matches()
        .unwrap_or_else(|error| report::usage_exit(error));
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| report::usage_exit(error));
    let output = cli.globals.output;
    if let Command::Completions { shell } = cli.command {
        let mut command = Cli::command();
        clap_complete::generate(shell, &mut command, "deployctl", &mut std::io::stdout());
        return ExitCode::from(SUCCEEDED);
    }
    // deployd.toml is the deployed directory's, else the current one's.
    let project_dir = match &cli.command {
        Command::Deploy { dir, .. } => dir.as_path(),
        _ => Path::new("."),
    };
    let settings = match Settings::resolve(&cli.globals, &matches, project_dir) {
        Ok(settings) => settings,
        Err(failure) => return ExitCode::from(report::report(&failure, "", output)),
    };
    let server = settings.server.value.clone();
    let _ = AGAIN.set(settings.again());
    match run(cli, settings).await {
        Ok(code) => ExitCode::from(code),
        Err(failure) => ExitCode::from(report::report(&failure, &server, output)),
    }
}

/// A `--timeout` or `--request-timeout`: a duration (`90s`, `10m`) above
/// zero; zero would fail every wait before it began.
pub fn positive_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text) {
        Ok(duration) if duration.is_zero() => Err("must be more than 0 (e.g. 30s, 10m)".into()),
        Ok(duration) => Ok(duration),
        Err(error) => Err(format!("{error} (e.g. 30s, 10m)")),
    }
}

async fn run(cli: Cli, settings: Settings) -> Result<u8, Failure> {
    let output = cli.globals.output;
    match cli.command {
        Command::Login => return profiles::login(&settings).await,
        Command::Logout => return profiles::logout(&settings),
        Command::Config => {
            settings::print(&settings, output);
            return Ok(SUCCEEDED);
        }
        _ => {}
    }
    let client = settings.client()?;
    match cli.command {
        Command::Deploy { dir, options } => {
            let target = settings.target()?;
            deploy(&client, output, target, dir, &settings.ignore, options).await
        }
        Command::Rollback { to, options } => {
            rollback(&client, output, settings.target()?, to, options).await
        }
        Command::Cancel { id, reason } => {
            let id = pick::pick(&client, &settings, id.as_deref(), pick::Pick::Running).await?;
            let deployment = client.cancel(id, reason).await?;
            show::deployment_line(output, &deployment);
            Ok(SUCCEEDED)
        }
        Command::Watch { id, timeout } => {
            let id = pick::pick(&client, &settings, id.as_deref(), pick::Pick::Newest).await?;
            let events = follow_reporting(&client, id, None, progress::reconnecting);
            progress::watch(&client, events, output, timeout).await
        }
        Command::Logs { id } => {
            let id = pick::pick(&client, &settings, id.as_deref(), pick::Pick::Newest).await?;
            progress::logs(&client, id, output).await
        }
        Command::Status => {
            let cluster = settings.cluster_if_any();
            show::status(&client, output, settings.app()?, cluster).await
        }
        Command::History { state, limit, all } => {
            let params = deployd::client::HistoryParams {
                cluster: settings.cluster_if_any(),
                state,
                limit,
                cursor: None,
            };
            show::history(&client, output, settings.app()?, params, all).await
        }
        Command::Versions { pin, limit, all } => {
            let app = settings.app()?;
            match pin {
                Some(Pin::Pin { version }) => {
                    versions::pin(&client, output, app, &version, true).await
                }
                Some(Pin::Unpin { version }) => {
                    versions::pin(&client, output, app, &version, false).await
                }
                None => versions::list(&client, output, app, limit, all).await,
            }
        }
        Command::Compact { dry_run } => versions::compact(&client, output, dry_run).await,
        Command::Instances => show::instances(&client, output).await,
        Command::Clusters => show::clusters(&client, output).await,
        Command::Apps => show::apps(&client, output).await,
        Command::Login | Command::Logout | Command::Config | Command::Completions { .. } => {
            unreachable!("answered before connecting")
        }
    }
}

async fn deploy(
    client: &Client,
    output: Output,
    target: Target,
    dir: PathBuf,
    ignore: &[String],
    options: Options,
) -> Result<u8, Failure> {
    // The target first: a cluster that does not exist, or a token that may
    // not read it, is told before anything is packed or sent.
    let view = client.target(&target.app, &target.cluster).await?;
    let git = pack::git_info(&dir);
    if git.as_ref().is_some_and(|git| git.dirty) {
        eprintln!(
            "{}",
            style::Paint::Warn.err(&format!(
                "warning: {} has uncommitted changes; they are deployed, and the commit is \
                 recorded with a + (dirty)",
                dir.display()
            ))
        );
    }
    let packed = {
        let (dir, ignore) = (dir.clone(), ignore.to_vec());
        tokio::task::spawn_blocking(move || pack::pack_dir_ignoring(&dir, &ignore))
            .await
            .map_err(|error| Failure::Usage(format!("packing stopped: {error}")))??
    };
    let size = indicatif::HumanBytes(packed.bytes.len() as u64);
    eprintln!(
        "packed {}: {} files, {size}, sha256 {}",
        dir.display(),
        packed.files,
        &packed.sha256[..12]
    );
    if client.source_exists(&packed.sha256).await? {
        eprintln!("source already on server");
    } else {
        client.put_source(&packed.sha256, packed.bytes).await?;
        eprintln!("uploaded source ({size})");
    }
    superseding(&view, options.on_conflict);
    let request = DeployRequest {
        source: packed.sha256,
        git,
        message: options.message,
        on_conflict: options.on_conflict.map(Into::into),
        idempotency_key: options.idempotency_key,
    };
    if options.detach {
        let deployment = client
            .deploy(&target.app, &target.cluster, &request)
            .await?;
        show::detached(output, &deployment);
        return Ok(SUCCEEDED);
    }
    let stream = client
        .deploy_stream(&target.app, &target.cluster, &request)
        .await?;
    watch_created(client, stream, output, options.timeout).await
}

/// Follow a deploy's or rollback's stream, saying first when the server
/// answered an earlier deployment for a repeated idempotency key.
async fn watch_created(
    client: &Client,
    stream: deployd::client::EventStream,
    output: Output,
    timeout: Option<Duration>,
) -> Result<u8, Failure> {
    if stream.repeated {
        eprintln!(
            "the idempotency key was used before: following the deployment it started \
             (nothing new was created)"
        );
    }
    let events = resume_reporting(client, stream, progress::reconnecting);
    progress::watch(client, events, output, timeout).await
}

/// Say which deployments an explicit `--on-conflict supersede` is about to
/// cancel.
fn superseding(view: &deployd::model::TargetView, policy: Option<OnConflict>) {
    if !matches!(policy, Some(OnConflict::Supersede)) {
        return;
    }
    for old in view.running.iter().chain(&view.queued) {
        eprintln!(
            "superseding deployment {} ({} by {}): it will be cancelled",
            short_id(&old.id),
            old.state,
            old.deployed_by
        );
    }
}

async fn rollback(
    client: &Client,
    output: Output,
    target: Target,
    to: Option<String>,
    options: Options,
) -> Result<u8, Failure> {
    let view = client.target(&target.app, &target.cluster).await?;
    superseding(&view, options.on_conflict);
    let request = RollbackRequest {
        version: to,
        message: options.message,
        on_conflict: options.on_conflict.map(Into::into),
        idempotency_key: options.idempotency_key,
    };
    if options.detach {
        let deployment = client
            .rollback(&target.app, &target.cluster, &request)
            .await?;
        show::detached(output, &deployment);
        return Ok(SUCCEEDED);
    }
    let stream = client
        .rollback_stream(&target.app, &target.cluster, &request)
        .await?;
    watch_created(client, stream, output, options.timeout).await
}

#[cfg(test)]
mod tests {
    use super::Cli;
    use clap::CommandFactory;

    /// `--help` tells what every option is for, groups the global ones,
    /// and shows examples for every command.
    #[test]
    fn every_option_is_described_and_every_command_has_examples() {
        let cli = Cli::command();
        cli.clone().debug_assert();
        for arg in cli.get_arguments() {
            let name = arg.get_id();
            assert!(arg.is_global_set(), "--{name} is global");
            assert_eq!(arg.get_help_heading(), Some("Global options"), "--{name}");
        }
        let mut commands: Vec<&clap::Command> = cli.get_subcommands().collect();
        while let Some(command) = commands.pop() {
            let name = command.get_name();
            if name == "help" {
                continue;
            }
            commands.extend(command.get_subcommands());
            for arg in command.get_arguments() {
                let described = arg
                    .get_help()
                    .is_some_and(|help| !help.to_string().is_empty());
                assert!(described, "{name}: {} has no description", arg.get_id());
            }
            let long = command.get_after_long_help().map(ToString::to_string);
            let examples = long.is_some_and(|text| text.contains("deployctl"))
                || command
                    .get_long_about()
                    .is_some_and(|text| text.to_string().contains("deployctl "));
            assert!(examples, "deployctl {name} has no examples");
        }
    }
}
