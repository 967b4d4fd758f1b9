//! `deployd`: parse the arguments, load the config, set up telemetry, then
//! serve until SIGTERM or SIGINT, or run a maintenance command. Everything
//! else lives in the library, starting at `deployd::server`.
//!
//! Exit codes: 0 done, 1 the command failed, 2 bad arguments or an invalid
//! config (clap uses 2 for bad arguments too).
//!
//! `serve` and `migrate` hold the store URL and the config's secrets, so
//! they first make the process non-dumpable: no other process of the same
//! user (a step, when deployd runs as the user its steps run as) can read
//! its `/proc/PID/environ` or memory, or attach to it; no core dump is
//! written either. Whatever this binary prints passes through the config's
//! redactor.

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use deployd::config::{Config, Role};
use deployd::redact::{Redactor, url_passwords};
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

/// Own the deployment lifecycle of apps on clusters. With no command, serve.
#[derive(Parser)]
#[command(name = "deployd", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API until SIGTERM or SIGINT (the default).
    Serve(ServeArgs),
    /// Apply pending database migrations, then exit.
    Migrate(ConfigArgs),
    /// Print the effective config with secrets hidden; exit 2 if it is invalid.
    CheckConfig(ConfigArgs),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Print a fresh random token, once, and the `[[auth.tokens]]` block that
    /// admits it (the config keeps only the token's sha256).
    New(NewToken),
}

#[derive(Args)]
struct NewToken {
    /// The token's name; deployments made with it record it as `deployed_by`.
    name: String,
    /// read: read only; deploy: also upload, deploy, roll back and cancel;
    /// admin: everything.
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// Apps the token may touch, comma-separated; `*` for all.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    apps: Vec<String>,
    /// Clusters the token may touch, comma-separated; `*` for all.
    #[arg(long, value_delimiter = ',', default_value = "*")]
    clusters: Vec<String>,
}

#[derive(Args)]
struct ConfigArgs {
    /// A TOML file merged over the built-in defaults; `DEPLOYD_SECTION__KEY`
    /// environment variables override both.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Listen on this address instead of `server.listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve(cli.serve));
    let (config_args, listen) = match &command {
        // Needs no config: it only prints what to add to one.
        Command::Token(TokenCommand::New(new)) => return new_token(new),
        Command::Serve(serve) => (&serve.config, serve.listen),
        Command::Migrate(args) | Command::CheckConfig(args) => (args, None),
    };
    if matches!(command, Command::Serve(_) | Command::Migrate(_))
        && let Err(error) = non_dumpable()
    {
        eprintln!("deployd: cannot make the process non-dumpable: {error}");
        return ExitCode::FAILURE;
    }
    let config = match load_config(config_args, listen) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("deployd: {}", url_passwords(&format!("{error:#}")));
            return ExitCode::from(2);
        }
    };
    let redactor = Redactor::of(&config);
    let result = match command {
        Command::CheckConfig(_) => {
            print!("{}", config.redacted());
            return ExitCode::SUCCESS;
        }
        Command::Serve(_) => {
            // Not a rule of the config: it depends on who runs it.
            if let Err(error) = config.check_step_users() {
                eprintln!("deployd: invalid configuration: {error}");
                return ExitCode::from(2);
            }
            serve(config, redactor.clone()).await
        }
        Command::Migrate(_) => migrate(config, redactor.clone()).await,
        Command::Token(_) => Ok(()), // answered above
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("deployd: {}", redactor.redact(&format!("{error:#}")));
            ExitCode::FAILURE
        }
    }
}

/// Make this process non-dumpable (see the module's doc). Its children get
/// the flag back when they exec.
fn non_dumpable() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_DUMPABLE takes plain integers.
    let rc = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    match rc {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// The config a command runs with: the layers, then `--listen` over them.
fn load_config(args: &ConfigArgs, listen: Option<SocketAddr>) -> anyhow::Result<Config> {
    let mut config = Config::load(args.config.as_deref()).context("invalid configuration")?;
    if let Some(listen) = listen {
        config.server.listen = listen;
        // The flag can break a rule the layers kept (loopback without auth).
        config
            .validate()
            .with_context(|| format!("--listen {listen}"))?;
    }
    Ok(config)
}

/// `deployd token new`: the token on the first line, alone, so a script can
/// take it; then the config block. The entry is checked by the config's own
/// rules before anything is printed.
fn new_token(new: &NewToken) -> ExitCode {
    let minted =
        deployd::http::auth::mint(&new.name, new.role, new.apps.clone(), new.clusters.clone());
    let (token, entry) = match minted {
        Ok(minted) => minted,
        Err(error) => {
            eprintln!("deployd: cannot read random bytes: {error}");
            return ExitCode::FAILURE;
        }
    };
    let block = deployd::http::auth::config_block(&entry);
    if let Err(error) = Config::from_sources(Some(&block), Vec::new()) {
        eprintln!("deployd: {error}");
        return ExitCode::from(2);
    }
    println!("{token}");
    println!();
    println!("# Add this to the deployd config. The token above is shown only now;");
    println!("# give it to the client (deployctl reads DEPLOYD_TOKEN).");
    print!("{block}");
    ExitCode::SUCCESS
}

fn parse_role(text: &str) -> Result<Role, String> {
    match text {
        "read" => Ok(Role::Read),
        "deploy" => Ok(Role::Deploy),
        "admin" => Ok(Role::Admin),
        _ => Err("expected read, deploy or admin".to_string()),
    }
}

async fn serve(config: Config, redactor: Redactor) -> anyhow::Result<()> {
    deployd::telemetry::init_redacting(redactor);
    deployd::listen::raise_fd_limit();
    let address = config.server.listen;
    let listener = TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let local = listener
        .local_addr()
        .context("the listener has no address")?;
    let shutdown = shutdown_signal()?;
    tracing::info!(address = %local, "listening");
    deployd::server::serve(listener, config, shutdown).await
}

async fn migrate(config: Config, redactor: Redactor) -> anyhow::Result<()> {
    deployd::telemetry::init_redacting(redactor);
    deployd::server::migrate(&config).await?;
    tracing::info!("migrations applied");
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT. The handlers are installed here,
/// before serving, so a signal is never missed once the address is logged.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    let mut terminate = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutting down");
    })
}
