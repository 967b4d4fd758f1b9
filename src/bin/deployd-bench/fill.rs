//! Bulk fills straight into the schema of `migrations/*/0001_init.sql`:
//! binary COPY on PostgreSQL, prepared inserts in large transactions on
//! SQLite ([`crate::sink`]). Rows are valid (time-ordered UUIDv7 ids, versions wherever the
//! schema wants one, the active pointer naming a succeeded deployment), so
//! the store reads them exactly as it reads its own.
//!
//! Two fills: [`HistoryFill`], finished deployments spread over 1,000 apps ×
//! 3 clusters plus one busy target, and [`expired_running`], running
//! deployments whose owner died.

use crate::env::Rng;
use chrono::{DateTime, Duration, Utc};
use deployd::machine::{Kind, State};
use deployd::model::{Deployment, EventData, GitInfo, StateChange};
use uuid::Uuid;

pub const APPS: usize = 1000;
pub const CLUSTERS: [&str; 3] = ["prod", "staging", "dev"];
/// The busy target: the same number of deployments at every fill size.
pub const HOT: (&str, &str) = ("app-0000", "prod");

pub struct Dep {
    pub id: Uuid,
    pub app: String,
    pub cluster: String,
    pub kind: Kind,
    pub state: State,
    pub version: Option<String>,
    pub source: Option<String>,
    pub rollback_to: Option<String>,
    pub git: Option<GitInfo>,
    pub message: String,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub phase_deadline: Option<DateTime<Utc>>,
    pub last_seq: i64,
}

pub struct Ver {
    pub app: String,
    pub number: i64,
    pub artifact: String,
    pub git: Option<GitInfo>,
    pub deployment_id: Uuid,
    pub created_at: DateTime<Utc>,
}

pub struct Ev {
    pub deployment_id: Uuid,
    pub seq: i64,
    pub data: EventData,
    pub created_at: DateTime<Utc>,
}

pub struct TargetRow {
    pub app: String,
    pub cluster: String,
    pub deployment_id: Uuid,
    pub version: String,
    pub since: DateTime<Utc>,
}

/// Rows to write together; versions go first, so deployments can name them.
#[derive(Default)]
pub struct Chunk {
    pub deployments: Vec<Dep>,
    pub versions: Vec<Ver>,
    pub events: Vec<Ev>,
}

/// What a fill leaves besides deployments: the active pointers and the
/// per-app version counters.
#[derive(Default)]
pub struct Tail {
    pub targets: Vec<TargetRow>,
    pub counters: Vec<(String, i64)>,
}

/// A UUIDv7 for `at`; ids made at distinct milliseconds sort by time.
pub fn id_at(at: DateTime<Utc>, rng: &mut Rng) -> Uuid {
    let mut random = [0u8; 10];
    random[..8].copy_from_slice(&rng.next_u64().to_le_bytes());
    random[8..].copy_from_slice(&rng.next_u64().to_le_bytes()[..2]);
    uuid::Builder::from_unix_timestamp_millis(at.timestamp_millis() as u64, &random).into_uuid()
}

fn sha(rng: &mut Rng, hex_len: usize) -> String {
    let mut text = String::with_capacity(hex_len);
    while text.len() < hex_len {
        text.push_str(&format!("{:016x}", rng.next_u64()));
    }
    text.truncate(hex_len);
    text
}

fn git(rng: &mut Rng, n: usize) -> GitInfo {
    GitInfo {
        sha: Some(sha(rng, 40)),
        branch: Some("main".to_string()),
        message: Some(format!("change number {n}")),
        author: Some("dev@example.com".to_string()),
        dirty: false,
        repository: None,
    }
}

/// Finished deployments, one per millisecond: every `hot_every`-th goes to
/// the busy target [`HOT`], the others round-robin over 1,000 apps × 3
/// clusters. 85% succeed (minting the app's next version; a few are
/// rollbacks), 10% fail, 5% are cancelled.
pub struct HistoryFill {
    pub size: usize,
    hot_every: usize,
    next: usize,
    spread: usize,
    base: DateTime<Utc>,
    rng: Rng,
    versions: Vec<i64>,
    active: Vec<Option<(Uuid, String, DateTime<Utc>)>>,
    /// The busy target's ids, oldest first: where cursors come from.
    pub hot_ids: Vec<Uuid>,
}

impl HistoryFill {
    pub fn new(size: usize, hot: usize) -> HistoryFill {
        HistoryFill {
            size,
            hot_every: (size / hot).max(1),
            next: 0,
            spread: 0,
            base: Utc::now() - Duration::milliseconds(size as i64) - Duration::days(1),
            rng: Rng::new(size as u64),
            versions: vec![0; APPS],
            active: vec![None; APPS * CLUSTERS.len()],
            hot_ids: Vec::new(),
        }
    }

    pub fn app(index: usize) -> String {
        format!("app-{index:04}")
    }

    /// The next `n` deployments (fewer at the end).
    pub fn chunk(&mut self, n: usize) -> Chunk {
        let mut chunk = Chunk::default();
        while self.next < self.size && chunk.deployments.len() < n {
            let i = self.next;
            self.next += 1;
            let target = if i.is_multiple_of(self.hot_every) {
                0
            } else {
                self.spread += 1;
                self.spread % (APPS * CLUSTERS.len())
            };
            let (a, c) = (target / CLUSTERS.len(), target % CLUSTERS.len());
            let at = self.base + Duration::milliseconds(i as i64);
            let id = id_at(at, &mut self.rng);
            if target == 0 {
                self.hot_ids.push(id);
            }
            let roll = self.rng.below(100);
            let app = HistoryFill::app(a);
            let mut dep = Dep {
                id,
                app: app.clone(),
                cluster: CLUSTERS[c].to_string(),
                kind: Kind::Deploy,
                state: State::Succeeded,
                version: None,
                source: Some(sha(&mut self.rng, 64)),
                rollback_to: None,
                git: Some(git(&mut self.rng, i)),
                message: format!("deploy #{i}"),
                error: None,
                created_at: at,
                started_at: Some(at + Duration::milliseconds(50)),
                finished_at: Some(at + Duration::seconds(40)),
                owner: None,
                lease_expires_at: None,
                phase_deadline: None,
                last_seq: 0,
            };
            match roll {
                80..85 if self.versions[a] >= 2 => {
                    let back = format!("v{}", self.versions[a] - 1);
                    dep.kind = Kind::Rollback;
                    (dep.source, dep.git) = (None, None);
                    dep.version = Some(back.clone());
                    dep.rollback_to = Some(back);
                }
                0..85 => {
                    self.versions[a] += 1;
                    let number = self.versions[a];
                    dep.version = Some(format!("v{number}"));
                    chunk.versions.push(Ver {
                        app: app.clone(),
                        number,
                        artifact: format!("registry.example.com/{app}:v{number}"),
                        git: dep.git.clone(),
                        deployment_id: id,
                        created_at: at,
                    });
                }
                85..95 => {
                    dep.state = State::Failed;
                    dep.error = Some(
                        "build step failed (exit status 1):\nnpm ERR! missing script: build"
                            .to_string(),
                    );
                }
                _ => {
                    dep.state = State::Cancelled;
                    dep.error = Some("cancelled".to_string());
                }
            }
            if dep.state == State::Succeeded {
                let version = dep.version.clone().expect("succeeded has a version");
                self.active[target] = Some((id, version, dep.finished_at.expect("finished")));
            }
            chunk.deployments.push(dep);
        }
        chunk
    }

    pub fn tail(&self) -> Tail {
        let targets = self
            .active
            .iter()
            .enumerate()
            .filter_map(|(t, active)| {
                let (id, version, since) = active.clone()?;
                Some(TargetRow {
                    app: HistoryFill::app(t / CLUSTERS.len()),
                    cluster: CLUSTERS[t % CLUSTERS.len()].to_string(),
                    deployment_id: id,
                    version,
                    since,
                })
            })
            .collect();
        let counters = (0..APPS)
            .filter(|a| self.versions[*a] > 0)
            .map(|a| (HistoryFill::app(a), self.versions[a]))
            .collect();
        Tail { targets, counters }
    }
}

/// `n` deployments running on distinct targets (building, pushing or
/// activating), held by an instance that died: leases expired a minute ago.
pub fn expired_running(n: usize) -> (Chunk, Tail) {
    let mut rng = Rng::new(n as u64 + 7);
    let now = Utc::now();
    let base = now - Duration::hours(1);
    let mut chunk = Chunk::default();
    let mut counters: Vec<(String, i64)> = Vec::new();
    for k in 0..n {
        let at = base + Duration::milliseconds(k as i64);
        let app = format!("r-{:05}", k / CLUSTERS.len());
        let cluster = CLUSTERS[k % CLUSTERS.len()];
        let id = id_at(at, &mut rng);
        let phases = [State::Building, State::Pushing, State::Activating];
        let reached = k % phases.len() + 1;
        let state = phases[reached - 1];
        let mut model = Deployment {
            id,
            app: app.clone(),
            cluster: cluster.to_string(),
            kind: Kind::Deploy,
            state: State::Queued,
            active: false,
            version: None,
            source: Some(sha(&mut rng, 64)),
            rollback_to: None,
            git: Some(git(&mut rng, k)),
            message: format!("deploy #{k}"),
            deployed_by: "ci".to_string(),
            error: None,
            superseded_by: None,
            queue_position: Some(1),
            created_at: at,
            started_at: None,
            finished_at: None,
        };
        let mut events = vec![EventData::Deployment(Box::new(model.clone()))];
        let mut from = State::Queued;
        for phase in &phases[..reached] {
            events.push(EventData::State(StateChange {
                from,
                to: *phase,
                at,
                error: None,
            }));
            from = *phase;
        }
        if state != State::Building {
            match counters.last_mut() {
                Some((last, number)) if *last == app => *number += 1,
                _ => counters.push((app.clone(), 1)),
            }
            let number = counters.last().expect("just pushed").1;
            model.version = Some(format!("v{number}"));
            chunk.versions.push(Ver {
                app: app.clone(),
                number,
                artifact: format!("registry.example.com/{app}:v{number}"),
                git: model.git.clone(),
                deployment_id: id,
                created_at: at,
            });
        }
        for (seq, data) in (1..).zip(&events) {
            chunk.events.push(Ev {
                deployment_id: id,
                seq,
                data: data.clone(),
                created_at: at,
            });
        }
        chunk.deployments.push(Dep {
            id,
            app,
            cluster: cluster.to_string(),
            kind: Kind::Deploy,
            state,
            version: model.version,
            source: model.source,
            rollback_to: None,
            git: model.git,
            message: model.message,
            error: None,
            created_at: at,
            started_at: Some(at + Duration::seconds(1)),
            finished_at: None,
            owner: Some("bench-dead-instance".to_string()),
            lease_expires_at: Some(now - Duration::minutes(1)),
            phase_deadline: Some(now + Duration::minutes(10)),
            last_seq: events.len() as i64,
        });
    }
    let tail = Tail {
        targets: Vec::new(),
        counters,
    };
    (chunk, tail)
}
