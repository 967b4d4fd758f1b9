//! The typed configuration tree, loaded once and passed down explicitly.
//!
//! Layers, later ones win: `config/default.toml` (compiled in), then the file
//! given with `--config` (deep-merged: tables merge key by key, any other
//! value replaces), then `DEPLOYD_SECTION__KEY` environment variables.
//! Unknown keys and bad values are errors that name the key and the layer it
//! came from. What must stay true: the built-in defaults load and validate on
//! their own, and a loaded `Config` has passed [`Config::validate`].
//!
//! Environment overrides: `DEPLOYD_` then the key path with `__` between
//! levels, lowercased (`DEPLOYD_DEPLOY__LEASE` sets `deploy.lease`,
//! `DEPLOYD_CLUSTERS__LOCAL__BUILD__TIMEOUT` sets
//! `clusters.local.build.timeout`). Names below `clusters.<name>.env` keep
//! their case, since they are environment variable names. The value is read
//! as a TOML value when it parses as one (`30`, `true`, `["a", "b"]`) and as
//! text otherwise; a key that wants text gets the raw text either way.
//! `DEPLOYD_LOG` and `DEPLOYD_LOG_FORMAT` belong to telemetry and are not
//! config keys ([`NOT_CONFIG_VARS`]); any other `DEPLOYD_*` variable must name
//! a key, so a typo fails loudly instead of being ignored.
//!
//! Secrets need not sit in the environment or the file: `store.url_file`
//! (`DEPLOYD_STORE__URL_FILE`) and a cluster env value `{ file = "…" }`
//! (`DEPLOYD_CLUSTERS__<NAME>__ENV__<VAR>__FILE`) name a file whose content
//! is the value, read once at load ([`files`]). Cluster env values are
//! secret unless declared `{ value = "…", secret = false }` ([`EnvValue`]);
//! `clusters.<name>.user` is looked up at load ([`StepUser`]).

pub use crate::users::StepUser;

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod env_value;
mod files;
mod layers;
mod rules;
#[cfg(test)]
mod tests;

pub use env_value::EnvValue;

/// The built-in defaults, shipped in the binary.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    #[serde(default)]
    pub store: StoreConfig,
    pub deploy: DeployConfig,
    pub limits: Limits,
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterConfig>,
    #[serde(default)]
    pub auth: AuthConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    #[serde(with = "duration")]
    pub shutdown_grace: Duration,
    /// Web origins (`scheme://host[:port]`) besides deployd's own whose pages
    /// may send requests; empty by default: browsers may not drive deployd.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
    /// Connections open at once. A new one past the cap closes the one
    /// idle longest (no request in flight), so health checks and new
    /// requests are still answered; lowered to what the open-file limit
    /// allows.
    pub max_connections: usize,
    /// A request head must arrive within this of the connection opening
    /// (TLS handshake included) or of its first byte.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// A connection with no request in flight is closed after this.
    #[serde(with = "duration")]
    pub idle_timeout: Duration,
    /// HTTPS: both files, or neither (plain HTTP).
    #[serde(default, skip_serializing_if = "TlsConfig::is_off")]
    pub tls: TlsConfig,
    /// Where other instances on the same PostgreSQL reach this one
    /// (`http[s]://host:port`): they forward requests for the targets it
    /// owns there. Absent: the address it listens on (the host name when
    /// that is 0.0.0.0 or ::).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_url: Option<String>,
}

/// The PEM files deployd serves HTTPS with, read again on SIGHUP and when
/// either changes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// The certificate's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// (certificate, key) when TLS is on; validation made sure it is both
    /// or neither.
    pub fn files(&self) -> Option<(&Path, &Path)> {
        self.cert_file.as_deref().zip(self.key_file.as_deref())
    }

    fn is_off(&self) -> bool {
        self.cert_file.is_none() && self.key_file.is_none()
    }
}

// Debug by hand: the URL may carry a password, and configs get logged.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A `postgres://` URL; absent means the embedded SQLite file
    /// `<data_dir>/deployd.db`. Read from `url_file` when that is set.
    pub url: Option<String>,
    /// A file holding the URL, so the password need not be in the config
    /// or the environment; exclusive with `url`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictPolicy {
    Reject,
    Queue,
    Supersede,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployConfig {
    pub on_conflict: ConflictPolicy,
    #[serde(with = "duration")]
    pub lease: Duration,
    #[serde(with = "duration")]
    pub idle_actor_after: Duration,
    /// Versions kept per (app, cluster), newest by when they were last live
    /// there, on top of the active one and the one before it (always kept).
    pub keep_releases: u32,
    /// Deployments that ended without going live (failed, cancelled,
    /// interrupted) kept per (app, cluster), newest first.
    pub keep_attempts: u32,
    /// Compaction never deletes a version, or a succeeded deployment,
    /// younger than this.
    #[serde(with = "duration")]
    pub keep_min_age: Duration,
    /// Compaction never deletes an attempt that never went live younger
    /// than this.
    #[serde(with = "duration")]
    pub keep_attempts_min_age: Duration,
    /// How often the background compaction runs.
    #[serde(with = "duration")]
    pub compact_every: Duration,
    /// How long a cancelled step gets between SIGTERM and SIGKILL.
    #[serde(with = "duration")]
    pub kill_grace: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub upload_bytes: u64,
    pub extracted_bytes: u64,
    pub extracted_entries: u64,
    pub output_bytes_per_deployment: u64,
    /// How long an uploaded source no deployment names is kept (from its
    /// upload, or the last time a client checked for it or sent it again).
    #[serde(with = "duration")]
    pub source_ttl: Duration,
}

/// One cluster: the argv each phase runs. A phase with no step passes
/// straight through.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub build: Option<StepConfig>,
    pub push: Option<StepConfig>,
    pub activate: Option<StepConfig>,
    /// Run after deployd removes what it made for a deployment that never
    /// went live, and after compaction deletes a version built on this
    /// cluster: to delete what the build left outside the data dir (an
    /// image in a registry, say). Its failure is logged, never recorded.
    pub cleanup: Option<StepConfig>,
    /// Extra environment variables every step of this cluster gets;
    /// secret unless declared otherwise.
    #[serde(default)]
    pub env: BTreeMap<String, EnvValue>,
    /// Run this cluster's steps as this user (the daemon must be root, or
    /// be this user). Its workspaces and `releases/<app>/<cluster>` are
    /// handed to it; the daemon's own files stay out of its reach.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<StepUser>,
}

impl ClusterConfig {
    /// Its `env` as its steps get it.
    pub fn env_vars(&self) -> Vec<(String, String)> {
        let vars = self.env.iter();
        vars.map(|(var, value)| (var.clone(), value.value().to_string()))
            .collect()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// argv; never a shell string built from client input.
    pub run: Vec<String>,
    #[serde(with = "duration")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Deploy,
    Admin,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    pub name: String,
    /// Hex sha256 of the token; the token itself is never stored.
    pub sha256: String,
    pub role: Role,
    #[serde(default = "everything")]
    pub apps: Vec<String>,
    #[serde(default = "everything")]
    pub clusters: Vec<String>,
}

/// Written by hand so that `{:?}` of a config never shows a token's hash.
impl std::fmt::Debug for TokenConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenConfig")
            .field("name", &self.name)
            .field("sha256", &"***")
            .field("role", &self.role)
            .field("apps", &self.apps)
            .field("clusters", &self.clusters)
            .finish()
    }
}

fn everything() -> Vec<String> {
    vec!["*".to_string()]
}

/// Durations as humantime strings: "15s", "5m", "1h 30m".
mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*value).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = self.url.as_deref().map(redact_url);
        (f.debug_struct("StoreConfig"))
            .field("url", &url)
            .field("url_file", &self.url_file)
            .finish()
    }
}

/// `DEPLOYD_*` variables that are not config keys: telemetry reads the LOG
/// ones before any config exists, and `deployctl` reads URL, TOKEN and
/// CA_CERT (a shell that uses both must not stop the daemon from starting).
pub const NOT_CONFIG_VARS: &[&str] = &[
    "DEPLOYD_LOG",
    "DEPLOYD_LOG_FORMAT",
    "DEPLOYD_URL",
    "DEPLOYD_TOKEN",
    "DEPLOYD_CA_CERT",
];

/// The layer a value came from, so an error sends the operator to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    Defaults,
    /// The config file; `None` when its text came without a path.
    File(Option<PathBuf>),
    Env(String),
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Defaults => f.write_str("built-in defaults"),
            Layer::File(Some(path)) => write!(f, "file {}", path.display()),
            Layer::File(None) => f.write_str("config file"),
            Layer::Env(var) => write!(f, "environment variable {var}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("{origin}: invalid TOML: {message}")]
    Syntax { origin: Layer, message: String },
    /// A `DEPLOYD_*` variable that cannot be turned into a key path.
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    /// A key that is unknown, has a bad value, or breaks a rule. `origin` is
    /// `None` when the config was changed after loading.
    #[error("{key}: {message}{}", origin_suffix(.origin))]
    Invalid {
        key: String,
        message: String,
        origin: Option<Layer>,
    },
}

fn origin_suffix(origin: &Option<Layer>) -> String {
    origin
        .as_ref()
        .map(|o| format!(" (from {o})"))
        .unwrap_or_default()
}

impl Config {
    /// Load from the process: the defaults, `file` if given, then the
    /// `DEPLOYD_*` environment variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let text = match file {
            Some(path) => {
                Some(
                    std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
                        path: path.to_owned(),
                        error,
                    })?,
                )
            }
            None => None,
        };
        let file = file.zip(text.as_deref());
        let file = file.map(|(path, text)| (Layer::File(Some(path.to_owned())), text));
        layers::build(file, layers::process_env()?)
    }

    /// Load from explicit layers: `file_text` over the defaults, then `env`
    /// (any variables; only `DEPLOYD_*` ones are read).
    pub fn from_sources(
        file_text: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let file = file_text.map(|text| (Layer::File(None), text));
        layers::build(file, env.into_iter().collect())
    }

    /// Check the rules serde cannot express. Loading already did; call this
    /// again after changing a loaded config (e.g. from a command-line flag).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match rules::problem(self) {
            None => Ok(()),
            Some((key, message)) => Err(ConfigError::Invalid {
                key: layers::render(&key),
                message,
                origin: None,
            }),
        }
    }

    /// Refuse clusters whose steps this process could not start: a `user`
    /// other than the one it runs as, when it is not root. Checked when
    /// serving starts, not at load: `check-config` may run as anyone.
    pub fn check_step_users(&self) -> Result<(), ConfigError> {
        for (name, cluster) in &self.clusters {
            let Some(user) = cluster.user.as_ref().filter(|user| !user.reachable()) else {
                continue;
            };
            let uid = crate::users::effective_uid();
            let message = format!(
                "deployd runs as uid {uid}, not root, so its steps cannot run as {user} \
                 (uid {}); run deployd as root, or as {user}, or remove the key",
                user.uid()
            );
            return Err(ConfigError::Invalid {
                key: format!("clusters.{name}.user"),
                message,
                origin: None,
            });
        }
        Ok(())
    }

    /// The embedded SQLite file used when `store.url` is absent.
    pub fn store_path(&self) -> PathBuf {
        self.server.data_dir.join(crate::layout::DATABASE_FILE)
    }

    /// The effective config as TOML, with the store password, the token
    /// hashes, secret cluster env values (an [`EnvValue`] serializes masked)
    /// and any URL's password replaced by `***`: safe to print and to log.
    pub fn redacted(&self) -> String {
        let mut shown = self.clone();
        shown.store.url = shown.store.url.as_deref().map(redact_url);
        for token in &mut shown.auth.tokens {
            token.sha256 = "***".to_string();
        }
        let text = toml::to_string_pretty(&shown)
            .unwrap_or_else(|error| format!("# the config cannot be shown as TOML: {error}\n"));
        crate::redact::url_passwords(&text).into_owned()
    }
}

/// The URL with any password replaced by `***`, in the user info or in a
/// `password=` query parameter. When unsure, hide more: a stray `@` or `:`
/// may hide part of the host, never show part of a password.
fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".to_string();
    };
    let rest = match rest.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{user}:***@{host}"),
            None => rest.to_string(),
        },
        None => rest.to_string(),
    };
    let Some((before, query)) = rest.split_once('?') else {
        return format!("{scheme}://{rest}");
    };
    let pairs = query.split('&').map(|pair| match pair.split_once('=') {
        Some((key, _)) if key.eq_ignore_ascii_case("password") => format!("{key}=***"),
        _ => pair.to_string(),
    });
    format!(
        "{scheme}://{before}?{}",
        pairs.collect::<Vec<_>>().join("&")
    )
}
