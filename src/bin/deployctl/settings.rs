//! Where deployctl's settings come from, and which one wins: a flag, then
//! its `DEPLOYD_*` variable, then the project file `deployd.toml`, then the
//! chosen profile of `deployctl login`, then the built-in default. The
//! command arms get one resolved [`Settings`] and never look anywhere else.
//!
//! What must stay true: nothing here touches the network, so a missing app
//! is refused before any request; a token never comes from the project file
//! (it is committed), is never printed, and a profile's token is only sent to
//! that profile's server, so a project file naming another server cannot
//! collect it.

use crate::profiles::{self, Profile};
use crate::{Failure, Output};
use clap::ArgMatches;
use clap::parser::ValueSource;
use deployd::client::{Client, ClientError};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

/// The project file's name, looked for in the source directory.
pub const PROJECT_FILE: &str = "deployd.toml";
/// The server when nothing names one: a daemon started with the defaults.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7171";
/// The profile when nothing names one.
pub const DEFAULT_PROFILE: &str = "default";

const HEADING: &str = "Global options";

/// The long help of `deployctl config`, which `deployctl help config` shows:
/// the configuration topic.
pub const CONFIG_HELP: &str = "\
Print the settings deployctl would use here, and where each came from.

Each setting is taken from the first of these that has it:

  1. a flag            -s/--server, --token, -a/--app, -c/--cluster
  2. the environment   DEPLOYD_URL, DEPLOYD_TOKEN, DEPLOYD_APP, DEPLOYD_CLUSTER
  3. deployd.toml      in the source directory (deploy DIR: DIR; otherwise
                       the current one): app, cluster, server; never a token
  4. the profile       --profile/DEPLOYD_PROFILE, else \"default\", in
                       $XDG_CONFIG_HOME/deployd/profiles.toml (or
                       ~/.config/deployd/profiles.toml): server, token, app,
                       cluster; `deployctl login` writes it
  5. the default       server http://127.0.0.1:7171; no token, app or cluster

A profile's token is only sent to that profile's server. deployd.toml may also
say ignore = [\"pattern\", …]: .gitignore lines that deploy leaves out of the
packed source, besides .gitignore and .deployignore. For example:

  app = \"web\"
  cluster = \"staging\"
  server = \"https://deploy.example.com\"
  ignore = [\"*.md\", \"/fixtures/\"]

The token itself is never printed: only whether one is set, and from where.";

/// The options every command takes, shown under their own heading.
#[derive(clap::Args)]
pub struct Globals {
    /// The deployd server's URL; else deployd.toml's, the profile's, or
    /// http://127.0.0.1:7171.
    #[arg(short, long, env = "DEPLOYD_URL", value_name = "URL", global = true, help_heading = HEADING)]
    pub server: Option<String>,
    /// Bearer token, when the server has auth on (see `deployctl login`).
    #[arg(long, env = "DEPLOYD_TOKEN", hide_env_values = true, global = true, help_heading = HEADING)]
    pub token: Option<String>,
    /// A PEM file of CA certificates to trust for an https:// server, besides
    /// the system's: for a certificate your own CA signed.
    #[arg(long, env = "DEPLOYD_CA_CERT", value_name = "FILE", global = true, help_heading = HEADING)]
    pub ca_cert: Option<PathBuf>,
    /// The saved login (`deployctl login`) to use; else "default".
    #[arg(short, long, env = "DEPLOYD_PROFILE", value_name = "NAME", global = true, help_heading = HEADING)]
    pub profile: Option<String>,
    /// The app to act on; else deployd.toml's, or the profile's.
    #[arg(short, long, env = "DEPLOYD_APP", global = true, help_heading = HEADING)]
    pub app: Option<String>,
    /// The cluster it runs on; else deployd.toml's, or the profile's.
    #[arg(short, long, env = "DEPLOYD_CLUSTER", global = true, help_heading = HEADING)]
    pub cluster: Option<String>,
    /// How long one plain request may take to be answered (`30s`, `2m`);
    /// streams and uploads have no overall limit.
    #[arg(
        long,
        env = "DEPLOYD_REQUEST_TIMEOUT",
        value_parser = crate::positive_duration,
        default_value = "30s",
        value_name = "DURATION",
        global = true,
        help_heading = HEADING
    )]
    pub request_timeout: std::time::Duration,
    /// `json` prints the API's objects, one per line for streams.
    #[arg(short, long, value_enum, default_value_t = Output::Text, global = true, help_heading = HEADING)]
    pub output: Output,
}

/// What a deploy or rollback acts on.
pub struct Target {
    pub app: String,
    pub cluster: String,
}

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Flag(&'static str),
    Env(&'static str),
    Project(PathBuf),
    Profile(String),
    Default,
}

/// A value and where it came from.
#[derive(Clone)]
pub struct Setting {
    pub value: String,
    pub from: Source,
}

/// The settings a command runs with, resolved once.
pub struct Settings {
    pub server: Setting,
    /// Not Debug, not printed: only whether it is set, and from where.
    pub token: Option<Setting>,
    pub app: Option<Setting>,
    pub cluster: Option<Setting>,
    pub profile: Setting,
    pub ca_cert: Option<PathBuf>,
    /// The limit on one plain request (`--request-timeout`).
    pub request_timeout: std::time::Duration,
    /// The project file's extra ignore patterns for the packed source.
    pub ignore: Vec<String>,
    /// The project file, when there is one.
    pub project_file: Option<PathBuf>,
    /// Where profiles are kept, when deployctl can tell (HOME or
    /// XDG_CONFIG_HOME is set).
    pub profiles_file: Option<PathBuf>,
    /// Why the chosen profile's token is not used, when it is not.
    pub token_note: Option<String>,
    /// The profile was named (by flag or variable) but is not saved.
    profile_missing: bool,
}

impl Settings {
    /// Resolve the settings from the parsed `globals` (and `matches`, which
    /// tell a flag from its variable), the project file in `project_dir`
    /// and the profiles file. Errors name the file at fault.
    pub fn resolve(
        globals: &Globals,
        matches: &ArgMatches,
        project_dir: &Path,
    ) -> Result<Settings, Failure> {
        let given = |value: &Option<String>, id: &str, flag, var| {
            let value = value.as_ref().filter(|value| !value.is_empty())?;
            let from = match matches.value_source(id) {
                Some(ValueSource::EnvVariable) => Source::Env(var),
                _ => Source::Flag(flag),
            };
            Some(setting(value, from))
        };
        let (project_file, project) = ProjectFile::load(project_dir)?;
        let from_project = |value: &Option<String>| {
            let path = project_file.clone()?;
            Some(setting(value.as_ref()?, Source::Project(path)))
        };
        let profile = given(&globals.profile, "profile", "--profile", "DEPLOYD_PROFILE")
            .unwrap_or_else(|| setting(DEFAULT_PROFILE, Source::Default));
        let profiles_file = profiles::path();
        let saved = match &profiles_file {
            Some(path) => profiles::load(path)?.remove(&profile.value),
            None => None,
        };
        let profile_missing = saved.is_none() && profile.from != Source::Default;
        let saved = saved.unwrap_or_default();
        let from_profile = |value: &Option<String>| {
            Some(setting(
                value.as_ref()?,
                Source::Profile(profile.value.clone()),
            ))
        };
        let server = given(&globals.server, "server", "--server", "DEPLOYD_URL")
            .or_else(|| from_project(&project.server))
            .or_else(|| from_profile(&saved.server))
            .unwrap_or_else(|| setting(DEFAULT_SERVER, Source::Default));
        // `127.0.0.1:7171`, `http://127.0.0.1:7171/` and the rest are one
        // server: saved, compared and shown one way.
        let server = Setting {
            value: deployd::client::normalize_server(&server.value),
            ..server
        };
        let (profile_token, token_note) = profile_token(&saved, &profile.value, &server.value);
        Ok(Settings {
            token: given(&globals.token, "token", "--token", "DEPLOYD_TOKEN")
                .or_else(|| from_profile(&profile_token)),
            app: given(&globals.app, "app", "--app", "DEPLOYD_APP")
                .or_else(|| from_project(&project.app))
                .or_else(|| from_profile(&saved.app)),
            cluster: given(&globals.cluster, "cluster", "--cluster", "DEPLOYD_CLUSTER")
                .or_else(|| from_project(&project.cluster))
                .or_else(|| from_profile(&saved.cluster)),
            server,
            profile,
            ca_cert: globals.ca_cert.clone(),
            request_timeout: globals.request_timeout,
            ignore: project.ignore,
            project_file,
            profiles_file,
            token_note,
            profile_missing,
        })
    }

    /// `deployctl`, with the `-s`/`-p` flags this run was given: how to
    /// reach the same server again ([`crate::again`]).
    pub fn again(&self) -> String {
        let mut again = "deployctl".to_string();
        if let Source::Flag(_) = self.server.from {
            again.push_str(&format!(" -s {}", self.server.value));
        }
        if let Source::Flag(_) = self.profile.from {
            again.push_str(&format!(" -p {}", self.profile.value));
        }
        again
    }

    /// The app, or the usage error that says how to give one.
    pub fn app(&self) -> Result<&str, Failure> {
        match &self.app {
            Some(app) => Ok(&app.value),
            None => Err(Failure::Usage(format!(
                "no app given: pass -a/--app, set DEPLOYD_APP, put app = \"…\" in {PROJECT_FILE}, \
                 or in a profile"
            ))),
        }
    }

    /// The cluster for commands where it narrows what they show (status,
    /// history); none shows every cluster.
    pub fn cluster_if_any(&self) -> Option<String> {
        self.cluster.as_ref().map(|cluster| cluster.value.clone())
    }

    /// The app and cluster a deploy or rollback acts on, or the usage error
    /// for the first one missing.
    pub fn target(&self) -> Result<Target, Failure> {
        Ok(Target {
            app: self.app()?.to_string(),
            cluster: self.cluster()?.to_string(),
        })
    }

    /// The cluster, or the usage error that says how to give one.
    pub fn cluster(&self) -> Result<&str, Failure> {
        match &self.cluster {
            Some(cluster) => Ok(&cluster.value),
            None => Err(Failure::Usage(format!(
                "no cluster given: pass -c/--cluster, set DEPLOYD_CLUSTER, or put cluster = \"…\" \
                 in {PROJECT_FILE}"
            ))),
        }
    }

    /// A client of the server with the token; refused when a named profile
    /// is not saved, since the user meant its server and token.
    pub fn client(&self) -> Result<Client, Failure> {
        if self.profile_missing {
            let name = &self.profile.value;
            return Err(Failure::Usage(format!(
                "no profile \"{name}\" is saved: run `deployctl login --profile {name}`"
            )));
        }
        self.client_with(self.token.as_ref().map(|token| token.value.clone()))
    }

    /// A client of the server with `token` (none: anonymous).
    pub fn client_with(&self, token: Option<String>) -> Result<Client, Failure> {
        let ca_pem = self.ca_cert.as_deref().map(read_ca).transpose()?;
        Client::with_timeouts(
            &self.server.value,
            token,
            ca_pem.as_deref(),
            deployd::client::CONNECT_TIMEOUT,
            self.request_timeout,
        )
        .map_err(|error| match error {
            ClientError::Protocol(message) => Failure::Usage(message),
            error => Failure::Client(error),
        })
    }
}

fn setting(value: &str, from: Source) -> Setting {
    Setting {
        value: value.to_string(),
        from,
    }
}

/// The profile's token when `server` is the profile's server; otherwise
/// none, and a note that says why.
fn profile_token(saved: &Profile, name: &str, server: &str) -> (Option<String>, Option<String>) {
    let token = saved.token.clone();
    let home = saved.server.as_deref().unwrap_or(DEFAULT_SERVER);
    let same = deployd::client::normalize_server;
    if token.is_none() || same(home) == same(server) {
        return (token, None);
    }
    let note = format!("profile \"{name}\" holds a token for {home}, not sent to {server}");
    (None, Some(note))
}

/// The `--ca-cert` file's bytes, refused with its name when it cannot be
/// read or holds no certificate.
fn read_ca(path: &Path) -> Result<Vec<u8>, Failure> {
    let file = path.display();
    let pem = std::fs::read(path)
        .map_err(|error| Failure::Usage(format!("--ca-cert {file}: cannot read it: {error}")))?;
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        let message = format!("--ca-cert {file}: holds no PEM certificate");
        return Err(Failure::Usage(message));
    }
    Ok(pem)
}

/// `deployd.toml`: what a project says about where it deploys. Committed
/// with the source, so it holds no secret.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProjectFile {
    app: Option<String>,
    cluster: Option<String>,
    server: Option<String>,
    #[serde(default)]
    ignore: Vec<String>,
}

impl ProjectFile {
    /// The project file in `dir` and what it says; nothing when there is none.
    fn load(dir: &Path) -> Result<(Option<PathBuf>, ProjectFile), Failure> {
        let path = if dir == Path::new(".") {
            PathBuf::from(PROJECT_FILE)
        } else {
            dir.join(PROJECT_FILE)
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok((None, ProjectFile::default()));
            }
            Err(error) => {
                let file = path.display();
                return Err(Failure::Usage(format!("{file}: cannot read it: {error}")));
            }
        };
        let at_fault = |error: toml::de::Error| file_error(&path, &text, &error);
        let table: toml::Table = toml::from_str(&text).map_err(at_fault)?;
        if table.contains_key("token") {
            return Err(Failure::Usage(format!(
                "{}: a token does not belong in {PROJECT_FILE}, which is committed with the \
                 source; use `deployctl login` or DEPLOYD_TOKEN",
                path.display()
            )));
        }
        let project = toml::from_str(&text).map_err(at_fault)?;
        Ok((Some(path), project))
    }
}

/// `FILE:LINE: what is wrong`, from a TOML error in `text`, read from `path`.
pub fn file_error(path: &Path, text: &str, error: &toml::de::Error) -> Failure {
    let file = path.display();
    // serde says "field" for what a TOML file calls a key.
    let message = error
        .message()
        .trim()
        .replace("unknown field", "unknown key");
    match error.span() {
        Some(span) => {
            let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
            Failure::Usage(format!("{file}:{line}: {message}"))
        }
        None => Failure::Usage(format!("{file}: {message}")),
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => f.write_str(flag),
            Source::Env(var) => f.write_str(var),
            Source::Project(path) => write!(f, "{}", path.display()),
            Source::Profile(name) => write!(f, "profile \"{name}\""),
            Source::Default => f.write_str("built-in default"),
        }
    }
}

/// `deployctl config`: the effective settings and their sources, never the
/// token itself.
pub fn print(settings: &Settings, output: Output) {
    let json = |setting: Option<&Setting>| {
        setting.map(|s| serde_json::json!({"value": s.value, "from": s.from.to_string()}))
    };
    if output == Output::Json {
        let token = settings
            .token
            .as_ref()
            .map(|token| serde_json::json!({"set": true, "from": token.from.to_string()}));
        crate::show::json_line(&serde_json::json!({
            "server": json(Some(&settings.server)),
            "token": token.unwrap_or(serde_json::json!({"set": false})),
            "app": json(settings.app.as_ref()),
            "cluster": json(settings.cluster.as_ref()),
            "profile": json(Some(&settings.profile)),
            "ca_cert": settings.ca_cert,
            "ignore": settings.ignore,
            "project_file": settings.project_file,
            "profiles_file": settings.profiles_file,
        }));
        return;
    }
    let line = |key: &str, setting: Option<&Setting>| match setting {
        Some(Setting { value, from }) => println!("{key:<8} {value} ({})", origin(from)),
        None => println!("{key:<8} not set"),
    };
    line("server", Some(&settings.server));
    match &settings.token {
        Some(token) => println!("{:<8} set ({})", "token", origin(&token.from)),
        None => println!("{:<8} not set", "token"),
    }
    if let Some(note) = &settings.token_note {
        println!("{:<8} ({note})", "");
    }
    line("app", settings.app.as_ref());
    line("cluster", settings.cluster.as_ref());
    line("profile", Some(&settings.profile));
    if settings.profile_missing {
        println!("{:<8} (not saved: `deployctl login` saves it)", "");
    }
    if !settings.ignore.is_empty() {
        println!("{:<8} {}", "ignore", settings.ignore.join(" "));
    }
    let file = |path: &Option<PathBuf>| match path {
        Some(path) if path.exists() => path.display().to_string(),
        Some(path) => format!("{} (none yet)", path.display()),
        None => "none".to_string(),
    };
    println!("{:<8} {}", "project", file(&settings.project_file));
    println!("{:<8} {}", "profiles", file(&settings.profiles_file));
}

fn origin(from: &Source) -> String {
    match from {
        Source::Default => from.to_string(),
        from => format!("from {from}"),
    }
}
