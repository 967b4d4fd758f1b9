//! The data the API speaks: deployments, events, versions, targets.
//!
//! These types are serialized exactly as API.md shows them; the store returns
//! them, the HTTP layer answers with them and the client parses them.

use crate::machine::{Kind, State};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Largest `error` text kept on a deployment (API.md: at most 4 KiB of UTF-8).
pub const MAX_ERROR_BYTES: usize = 4096;

/// Git facts the client collected about the source; informational only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub dirty: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
}

/// A deployment as API.md's "The Deployment" shows it. Its JSON also has
/// `short_id` ([`short_id`] of `id`), computed as it is serialized and
/// ignored when parsed: it is never stored, so it can never disagree with
/// `id`, and JSON written before it existed (stored first events) still
/// reads.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Deployment {
    pub id: Uuid,
    pub app: String,
    pub cluster: String,
    pub kind: Kind,
    pub state: State,
    /// True for exactly the deployment the target's active pointer names.
    pub active: bool,
    pub version: Option<String>,
    pub source: Option<String>,
    pub rollback_to: Option<String>,
    pub git: Option<GitInfo>,
    pub message: String,
    pub deployed_by: String,
    pub error: Option<String>,
    pub superseded_by: Option<Uuid>,
    /// 1-based position among the target's queued deployments, when queued.
    pub queue_position: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl Serialize for Deployment {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        /// The wire form: every field, and `short_id` after `id`.
        #[derive(Serialize)]
        struct Wire<'a> {
            id: &'a Uuid,
            short_id: String,
            app: &'a str,
            cluster: &'a str,
            kind: &'a Kind,
            state: &'a State,
            active: bool,
            version: &'a Option<String>,
            source: &'a Option<String>,
            rollback_to: &'a Option<String>,
            git: &'a Option<GitInfo>,
            message: &'a str,
            deployed_by: &'a str,
            error: &'a Option<String>,
            superseded_by: &'a Option<Uuid>,
            queue_position: &'a Option<i64>,
            created_at: &'a DateTime<Utc>,
            started_at: &'a Option<DateTime<Utc>>,
            finished_at: &'a Option<DateTime<Utc>>,
        }
        // No `..`: a new field fails to compile here until it is on the wire.
        let Deployment {
            id,
            app,
            cluster,
            kind,
            state,
            active,
            version,
            source,
            rollback_to,
            git,
            message,
            deployed_by,
            error,
            superseded_by,
            queue_position,
            created_at,
            started_at,
            finished_at,
        } = self;
        Wire {
            id,
            short_id: short_id(id),
            app,
            cluster,
            kind,
            state,
            active: *active,
            version,
            source,
            rollback_to,
            git,
            message,
            deployed_by,
            error,
            superseded_by,
            queue_position,
            created_at,
            started_at,
            finished_at,
        }
        .serialize(serializer)
    }
}

/// The kinds of event a deployment's stream carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "data", rename_all = "lowercase")]
pub enum EventData {
    /// The deployment as created; the first event of every deployment.
    Deployment(Box<Deployment>),
    State(StateChange),
    Log(LogLine),
    Queued(QueuedInfo),
    Truncated(Truncated),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    pub from: State,
    pub to: State,
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub step: String,
    pub stream: String,
    pub line: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedInfo {
    pub position: i64,
    pub waiting_for: Uuid,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncated {
    pub dropped_lines: u64,
}

/// One stored event: `seq` is 1, 2, … per deployment with no gaps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub deployment_id: Uuid,
    pub seq: i64,
    #[serde(flatten)]
    pub data: EventData,
}

impl EventData {
    /// The SSE `event:` name.
    pub fn kind(&self) -> &'static str {
        match self {
            EventData::Deployment(_) => "deployment",
            EventData::State(_) => "state",
            EventData::Log(_) => "log",
            EventData::Queued(_) => "queued",
            EventData::Truncated(_) => "truncated",
        }
    }

    /// The SSE `data:` payload.
    pub fn payload(&self) -> serde_json::Value {
        let value = match self {
            EventData::Deployment(d) => serde_json::to_value(d),
            EventData::State(s) => serde_json::to_value(s),
            EventData::Log(l) => serde_json::to_value(l),
            EventData::Queued(q) => serde_json::to_value(q),
            EventData::Truncated(t) => serde_json::to_value(t),
        };
        value.expect("event payloads are plain data")
    }

    /// Rebuild an event from its stored kind and payload.
    pub fn from_parts(kind: &str, payload: serde_json::Value) -> Result<Self, serde_json::Error> {
        serde_json::from_value(serde_json::json!({"kind": kind, "data": payload}))
    }

    /// A state event into a terminal state: the last event of a deployment.
    pub fn is_final(&self) -> bool {
        matches!(self, EventData::State(change) if change.to.is_terminal())
    }
}

/// A version of an app: minted when a build succeeds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: String,
    pub artifact: String,
    pub git: Option<GitInfo>,
    pub created_at: DateTime<Utc>,
    /// The deployment whose build minted it (it may since have been compacted).
    pub deployment_id: Uuid,
    /// The cluster whose build made it; `None` for versions minted before
    /// deployd recorded it.
    #[serde(default)]
    pub built_on: Option<String>,
    /// Pinned versions are never compacted.
    #[serde(default)]
    pub pinned: bool,
    /// Where it is or was the active version, one entry per cluster, by
    /// cluster name: what a rollback to it would put back.
    #[serde(default)]
    pub live: Vec<LiveSpan>,
}

/// One cluster where a version is or was active: the last time it became
/// the active version there, and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveSpan {
    pub cluster: String,
    /// It is the cluster's active version now.
    pub active: bool,
    /// When it last became the active version.
    pub since: DateTime<Utc>,
    /// When a later version replaced it; `None` while it is active.
    pub until: Option<DateTime<Utc>>,
}

/// What the target's active pointer names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveInfo {
    pub version: String,
    pub deployment_id: Uuid,
    pub since: DateTime<Utc>,
}

/// `GET /v1/apps/{app}/clusters/{cluster}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetView {
    pub app: String,
    pub cluster: String,
    pub active: Option<ActiveInfo>,
    pub running: Option<Deployment>,
    pub queued: Vec<Deployment>,
    /// Set when the cluster may not run the active version: a restore
    /// failed. Cleared when a later deployment of the target succeeds (or a
    /// later restore does).
    #[serde(default)]
    pub drift: Option<Drift>,
    /// The version a rollback that names none would go to: the one active
    /// before the active one. `None` when there is no such version.
    #[serde(default)]
    pub rollback_to: Option<String>,
}

/// A target whose cluster may not match its active pointer: after an
/// activation that did not succeed, putting `version` back failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drift {
    /// The version the restore tried to put back; `None`: nothing was active.
    pub version: Option<String>,
    /// What the restore reported.
    pub error: String,
    /// The deployment whose restore failed.
    pub deployment_id: Uuid,
    pub since: DateTime<Utc>,
}

/// One target that has deployments: [`Store::target_summaries`](crate::store::Store::target_summaries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetSummary {
    pub app: String,
    pub cluster: String,
    /// The version the target's active pointer names; `None` before any
    /// deployment of it succeeded.
    pub active_version: Option<String>,
    /// A deployment of the target is building, pushing or activating.
    pub running: bool,
}

/// `GET /v1/clusters`: the configured clusters the caller may use, by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClustersView {
    pub clusters: Vec<ClusterInfo>,
}

/// A configured cluster as `GET /v1/clusters` shows it: never a secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    pub name: String,
    /// Its steps in the order they run (build, push, activate, then
    /// cleanup); a phase with no step is left out.
    pub steps: Vec<StepInfo>,
    /// The names of the variables its steps get from `env`; never their
    /// values.
    pub env: Vec<String>,
    /// The user its steps run as, when not the daemon's.
    #[serde(default)]
    pub user: Option<String>,
}

/// One step of a cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepInfo {
    /// `build`, `push`, `activate` or `cleanup`.
    pub phase: String,
    /// The argv, with any secret env value in it masked.
    pub run: Vec<String>,
    /// How long the step may run, in seconds.
    pub timeout_seconds: u64,
}

/// `GET /v1/apps`: the apps that have deployments the caller may read, by
/// name, each with its targets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppsView {
    pub apps: Vec<AppSummary>,
    /// True when the server has more targets than one answer lists
    /// (`http::MAX_TARGETS`); the list is then the first ones by app and
    /// cluster.
    pub truncated: bool,
}

/// An app and its targets (clusters it has deployments on), by cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSummary {
    pub app: String,
    pub targets: Vec<AppTarget>,
}

/// One target of an app in `GET /v1/apps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppTarget {
    pub cluster: String,
    /// The active version; `None` before a deployment of it succeeded.
    pub active_version: Option<String>,
    /// A deployment of it is building, pushing or activating.
    pub running: bool,
}

/// A drifted target, as `/v1/supervisor` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DriftedTarget {
    pub app: String,
    pub cluster: String,
    #[serde(flatten)]
    pub drift: Drift,
}

/// The current time at the precision the stores keep (microseconds), so a
/// value read back equals the value written.
pub fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(6)
}

/// Cut `text` to at most [`MAX_ERROR_BYTES`] on a UTF-8 boundary.
pub fn clip_error(text: &str) -> String {
    if text.len() <= MAX_ERROR_BYTES {
        return text.to_string();
    }
    let mut end = MAX_ERROR_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// How many hex digits of a deployment id's random part people see: the
/// short id that `deployctl` prints and takes.
pub const SHORT_ID_LEN: usize = 8;
/// The fewest hex digits a short-id prefix may have.
pub const SHORT_ID_MIN: usize = 6;
/// The hex digits after a UUIDv7's 48-bit timestamp and version digit: its
/// random part (rand_a, then rand_b with the variant bits).
const RANDOM_PART: std::ops::Range<usize> = 13..32;

/// A deployment's short id: the first [`SHORT_ID_LEN`] hex digits of its
/// UUIDv7's random part, lowercase. The leading digits of a UUIDv7 are its
/// creation time, shared by everything made the same hour; the random part
/// tells deployments apart. Two deployments made in the same millisecond may
/// share it (the UUIDv7 counter), and then a longer prefix tells them apart.
pub fn short_id(id: &Uuid) -> String {
    let simple = id.simple().to_string();
    simple[RANDOM_PART][..SHORT_ID_LEN].to_string()
}

/// The random part of `id`, in hex: what a short-id prefix is matched
/// against (19 digits).
pub fn random_part(id: &Uuid) -> String {
    id.simple().to_string()[RANDOM_PART].to_string()
}

/// How a request names a deployment: its full id, or a prefix of its
/// random part ([`short_id`]) of [`SHORT_ID_MIN`] to 19 hex digits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeploymentRef {
    Id(Uuid),
    /// Lowercase hex, 6 to 19 digits.
    Prefix(String),
}

impl std::str::FromStr for DeploymentRef {
    type Err = String;

    /// Errors: a message saying which forms are taken, for anything that is
    /// neither a UUID nor 6 to 19 hex digits.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let longest = RANDOM_PART.len();
        if text.len() >= SHORT_ID_MIN
            && text.len() <= longest
            && text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return Ok(DeploymentRef::Prefix(text.to_ascii_lowercase()));
        }
        match Uuid::parse_str(text) {
            Ok(id) if text.len() == 32 || text.len() == 36 => Ok(DeploymentRef::Id(id)),
            _ => Err(format!(
                "{text:?} is not a deployment id: give the short id ({SHORT_ID_LEN} hex \
                 digits, or a unique prefix of at least {SHORT_ID_MIN}) or the full id"
            )),
        }
    }
}

impl std::fmt::Display for DeploymentRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeploymentRef::Id(id) => write!(f, "{id}"),
            DeploymentRef::Prefix(prefix) => f.write_str(prefix),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_come_from_the_random_part() {
        let id: Uuid = "0193a1b2-c3d4-7e5f-a6b7-c8d9e0f1a2b3".parse().unwrap();
        assert_eq!(short_id(&id), "e5fa6b7c");
        assert_eq!(random_part(&id), "e5fa6b7c8d9e0f1a2b3");
        assert_eq!(
            "E5FA6B".parse::<DeploymentRef>(),
            Ok(DeploymentRef::Prefix("e5fa6b".into()))
        );
        assert_eq!(
            "0193a1b2-c3d4-7e5f-a6b7-c8d9e0f1a2b3".parse::<DeploymentRef>(),
            Ok(DeploymentRef::Id(id))
        );
        assert_eq!(
            "0193a1b2c3d47e5fa6b7c8d9e0f1a2b3".parse::<DeploymentRef>(),
            Ok(DeploymentRef::Id(id))
        );
        for bad in [
            "e5fa6",
            "e5fa6g",
            "",
            "e5fa6b7c8d9e0f1a2b3a",
            "v12",
            "{0193a1b2-c3d4-7e5f-a6b7-c8d9e0f1a2b3}",
        ] {
            assert!(bad.parse::<DeploymentRef>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn deployments_serialize_their_short_id_and_parse_without_it() {
        let id: Uuid = "0193a1b2-c3d4-7e5f-a6b7-c8d9e0f1a2b3".parse().unwrap();
        let deployment = Deployment {
            id,
            app: "web".into(),
            cluster: "prod".into(),
            kind: Kind::Deploy,
            state: State::Queued,
            active: false,
            version: None,
            source: None,
            rollback_to: None,
            git: None,
            message: String::new(),
            deployed_by: "ci".into(),
            error: None,
            superseded_by: None,
            queue_position: Some(1),
            created_at: now(),
            started_at: None,
            finished_at: None,
        };
        let mut json = serde_json::to_value(&deployment).unwrap();
        assert_eq!(json["short_id"], "e5fa6b7c");
        assert_eq!(json["id"], id.to_string());
        let back: Deployment = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, deployment);
        json.as_object_mut().unwrap().remove("short_id");
        let stored: Deployment = serde_json::from_value(json).unwrap();
        assert_eq!(stored, deployment, "JSON from before short ids still reads");
    }

    #[test]
    fn clip_error_keeps_utf8_whole() {
        let text = "é".repeat(3000); // 6000 bytes, 2 bytes each
        let clipped = clip_error(&text);
        assert!(clipped.len() <= MAX_ERROR_BYTES);
        assert_eq!(clipped.len(), MAX_ERROR_BYTES);
        let odd = format!("a{}", "€".repeat(2000)); // 1 + 3 bytes each
        let clipped = clip_error(&odd);
        assert!(clipped.len() <= MAX_ERROR_BYTES && clipped.len() > MAX_ERROR_BYTES - 3);
        assert_eq!(clip_error("short"), "short");
    }

    #[test]
    fn events_round_trip_through_kind_and_payload() {
        let data = EventData::Log(LogLine {
            step: "build".into(),
            stream: "stdout".into(),
            line: "hello".into(),
        });
        let back = EventData::from_parts(data.kind(), data.payload()).unwrap();
        assert_eq!(back, data);
    }
}

/// `on_conflict` in a deploy or rollback request.
pub use crate::config::ConflictPolicy;

/// `POST /v1/apps/{app}/clusters/{cluster}/deployments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git: Option<GitInfo>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_conflict: Option<ConflictPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `POST /v1/apps/{app}/clusters/{cluster}/rollbacks`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_conflict: Option<ConflictPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// `POST /v1/deployments/{id}/cancel`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `PUT /v1/sources/{sha256}` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub sha256: String,
    pub size: u64,
}

/// `GET /v1/apps/{app}/deployments` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub deployments: Vec<Deployment>,
    pub next_cursor: Option<String>,
}

/// `GET /v1/apps/{app}/versions` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionsPage {
    pub versions: Vec<VersionInfo>,
    pub next_cursor: Option<String>,
}

/// The one error shape: `{"error": {"code", "message", "details"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorInfo,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorInfo {
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub details: serde_json::Value,
}
