//! The typed configuration tree, loaded once and passed down explicitly.
//!
//! Layers, later ones win: `config/default.toml` (compiled in), then the file
//! given with `--config`, then `DEPLOYD_SECTION__KEY` environment variables.
//! Unknown keys and bad values are errors that name the key.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

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
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// A `postgres://` URL; absent means the embedded SQLite file
    /// `<data_dir>/deployd.db`.
    pub url: Option<String>,
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
    pub keep_per_target: u32,
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
}

/// One cluster: the argv each phase runs. A phase with no step passes
/// straight through.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub build: Option<StepConfig>,
    pub push: Option<StepConfig>,
    pub activate: Option<StepConfig>,
    /// Extra environment variables every step of this cluster gets.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
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

#[derive(Debug, Clone, Serialize, Deserialize)]
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
