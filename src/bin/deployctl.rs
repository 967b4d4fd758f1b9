//! deployctl: the command line for deployd. It parses a command, calls the
//! typed [`Client`], and renders what comes back; the server owns every
//! deployment. So Ctrl-C while watching only detaches, and a dropped
//! connection is resumed, never retried as a second deploy.
//!
//! Exit codes, which scripts rely on: 0 the deployment succeeded or the
//! command did its job; 1 the deployment ended failed, cancelled or
//! interrupted; 2 a usage or request error (the server said 4xx, the server
//! URL's scheme is neither http nor https, the server's TLS certificate is
//! not trusted); 3 the server is unreachable or failed (5xx); 130 detached
//! with Ctrl-C before the deployment ended.

// Under deployctl/ rather than src/bin/, where Cargo would take each file
// for a binary of its own.
#[path = "deployctl/profiles.rs"]
mod profiles;
#[path = "deployctl/progress.rs"]
mod progress;
#[path = "deployctl/settings.rs"]
mod settings;
#[path = "deployctl/show.rs"]
mod show;
#[path = "deployctl/versions.rs"]
mod versions;

use clap::builder::TypedValueParser;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use deployd::client::{Client, ClientError, follow, resume};
use deployd::machine::State;
use deployd::model::{ConflictPolicy, DeployRequest, RollbackRequest};
use deployd::pack::{self, PackError};
use settings::{Globals, Settings, Target};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use uuid::Uuid;

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
    Deploy {
        /// The source directory; .gitignore, .deployignore and the ignore
        /// list of its deployd.toml apply.
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[command(flatten)]
        options: Options,
    },
    /// Re-activate an earlier version (no build) and watch.
    Rollback {
        /// The version to go back to; default: the one active before.
        #[arg(long, value_name = "VERSION")]
        to: Option<String>,
        #[command(flatten)]
        options: Options,
    },
    /// Cancel a running or queued deployment.
    Cancel {
        id: Uuid,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Follow a deployment's progress (replayed from its start) to its end.
    Watch { id: Uuid },
    /// What is active, running and queued on a target, or on every cluster
    /// the app was recently deployed to.
    Status,
    /// An app's deployments, newest first.
    History {
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
    Compact {
        /// Say what would be deleted, and why, and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The deployd instances sharing this server's store, where each is
    /// reached, its last heartbeat and the targets it owns; needs an admin
    /// token of every app and cluster.
    Instances,
    /// Check that the server answers and accepts the token, then save both
    /// as a profile that later commands use.
    #[command(
        long_about = "Check that the server answers and accepts the token, then save both as \
                      a profile (--profile, default \"default\") that later commands use. The \
                      token comes from --token or DEPLOYD_TOKEN, else standard input (asked \
                      for without echo on a terminal). With auth off on the server, only the \
                      server is saved. See `deployctl help config`."
    )]
    Login,
    /// Forget a saved profile (--profile, default "default").
    Logout,
    /// Print the settings in effect and where each came from.
    #[command(long_about = settings::CONFIG_HELP)]
    Config,
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

#[derive(Subcommand)]
enum Pin {
    /// Keep VERSION of APP for good: compaction never deletes a pinned
    /// version, so you can always roll back to it.
    Pin {
        /// The version to keep: v1, v2, …
        version: String,
    },
    /// Let retention decide about VERSION of APP again.
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

pub const SUCCEEDED: u8 = 0;
pub const ENDED_BADLY: u8 = 1;
pub const REQUEST_ERROR: u8 = 2;
pub const SERVER_ERROR: u8 = 3;
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
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    // SAFETY: nothing else runs yet, and SIG_DFL is a valid disposition. A
    // closed stdout (`deployctl watch ID | head`) then ends us quietly, as it
    // does any Unix filter, instead of panicking in println!.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|error| error.exit());
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
        Err(failure) => return ExitCode::from(report(&failure, "")),
    };
    let server = settings.server.value.clone();
    match run(cli, settings).await {
        Ok(code) => ExitCode::from(code),
        Err(failure) => ExitCode::from(report(&failure, &server)),
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
            let deployment = client.cancel(id, reason).await?;
            show::deployment_line(output, &deployment);
            Ok(SUCCEEDED)
        }
        Command::Watch { id } => progress::watch(&client, follow(&client, id, None), output).await,
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
    let request = DeployRequest {
        source: packed.sha256,
        git: pack::git_info(&dir),
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
    progress::watch(client, resume(client, stream), output).await
}

async fn rollback(
    client: &Client,
    output: Output,
    target: Target,
    to: Option<String>,
    options: Options,
) -> Result<u8, Failure> {
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
    progress::watch(client, resume(client, stream), output).await
}

/// Say why the command failed, on stderr, and pick its exit code.
fn report(failure: &Failure, server: &str) -> u8 {
    match failure {
        Failure::Client(ClientError::Api {
            status,
            code,
            message,
            details,
        }) => {
            eprintln!("error: {message} ({code})");
            for line in show::error_details(code, details) {
                eprintln!("  {line}");
            }
            if *status >= 500 {
                SERVER_ERROR
            } else {
                REQUEST_ERROR
            }
        }
        Failure::Client(ClientError::Unreachable(reason)) => {
            eprintln!("error: cannot reach deployd at {server}: {reason}");
            SERVER_ERROR
        }
        // Retrying does not help: the certificate or the URL must change.
        Failure::Client(ClientError::Tls(reason)) => {
            eprintln!("error: no TLS session with deployd at {server}: {reason}");
            REQUEST_ERROR
        }
        Failure::Client(error @ (ClientError::Server { .. } | ClientError::Protocol(_))) => {
            eprintln!("error: {error}");
            SERVER_ERROR
        }
        Failure::Pack(_) | Failure::Usage(_) => {
            eprintln!("error: {failure}");
            REQUEST_ERROR
        }
    }
}
