//! Table tests over the target core: each row is a situation, a request or
//! result, and the effects the core decides, written as a log a reader can
//! check against the rules without a daemon.
//!
//! The [`Harness`] plays the shell: it carries out effects in order, depth
//! first, answering store effects from an in-memory table of rows (a
//! compare-and-set on the expected state, the one-running-per-target rule),
//! and writes one line per effect.

use super::*;
use crate::model::GitInfo;
use chrono::TimeZone;
use std::collections::HashMap;

struct Harness {
    core: TargetCore,
    now: DateTime<Utc>,
    rows: HashMap<Uuid, Deployment>,
    /// Labels (d0, d1, …) for ids, in creation order.
    labels: HashMap<Uuid, String>,
    log: Vec<String>,
    next_reply: u64,
    minted: u32,
    /// The next commits answer these errors instead of applying.
    fail_commits: VecDeque<StoreError>,
    versions: HashMap<String, VersionInfo>,
    /// The active pointer, moved by commits to `succeeded`.
    active: Option<VersionInfo>,
    /// What the next take-over's compare-and-set answers.
    take_over: VecDeque<Result<bool, StoreError>>,
}

impl Harness {
    fn new() -> Harness {
        Harness::loaded(Loaded::default())
    }

    fn loaded(loaded: Loaded) -> Harness {
        let config = CoreConfig {
            app: "web".into(),
            cluster: "prod".into(),
            instance: "i1".into(),
            lease: Duration::from_secs(15),
            retry_after: Duration::from_secs(1),
            timeouts: PhaseTimeouts {
                build: Some(Duration::from_secs(600)),
                push: Some(Duration::from_secs(60)),
                activate: Some(Duration::from_secs(60)),
            },
        };
        let mut h = Harness {
            core: TargetCore::new(config),
            now: Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap(),
            rows: HashMap::new(),
            labels: HashMap::new(),
            log: Vec::new(),
            next_reply: 0,
            minted: 0,
            fail_commits: VecDeque::new(),
            versions: HashMap::new(),
            active: None,
            take_over: VecDeque::new(),
        };
        for d in &loaded.queued {
            h.remember(d.clone());
        }
        h.feed(Input::Loaded(Ok(loaded)));
        h.log.clear();
        h
    }

    fn remember(&mut self, d: Deployment) {
        let label = format!("d{}", self.labels.len() + 1);
        self.labels.entry(d.id).or_insert(label);
        self.rows.insert(d.id, d);
    }

    fn label(&self, id: Uuid) -> String {
        self.labels.get(&id).cloned().unwrap_or_else(|| "?".into())
    }

    fn id(&self, label: &str) -> Uuid {
        *self
            .labels
            .iter()
            .find(|(_, l)| *l == label)
            .expect("a known label")
            .0
    }

    /// Feed `input` and carry out every effect, depth first.
    fn feed(&mut self, input: Input) {
        let mut stack = vec![self.core.handle(input, self.now).into_iter()];
        while let Some(top) = stack.last_mut() {
            let Some(effect) = top.next() else {
                stack.pop();
                continue;
            };
            if let Some(answer) = self.carry_out(effect) {
                stack.push(self.core.handle(answer, self.now).into_iter());
            }
        }
    }

    /// The log since the last call.
    fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }

    fn submit(&mut self, kind: Kind, policy: ConflictPolicy) -> ReplyTo {
        self.submit_with(request(kind, policy), SubmitFacts::default())
    }

    fn submit_with(&mut self, request: Submit, facts: SubmitFacts) -> ReplyTo {
        self.next_reply += 1;
        let reply = ReplyTo(self.next_reply);
        let id = Uuid::now_v7();
        let input = Input::Submit {
            reply,
            id,
            request: Box::new(request),
            facts: Ok(facts),
        };
        self.feed(input);
        reply
    }

    fn cancel(&mut self, label: &str) -> ReplyTo {
        let id = self.id(label);
        self.next_reply += 1;
        let reply = ReplyTo(self.next_reply);
        let found = match self.core.holds(id) {
            true => Ok(None),
            false => Ok(self.rows.get(&id).cloned()),
        };
        let reason = None;
        self.feed(Input::Cancel {
            reply,
            id,
            reason,
            found,
        });
        reply
    }

    fn step_ends(&mut self, label: &str, result: PhaseResult) {
        let id = self.id(label);
        let phase = self.rows[&id].state;
        self.feed(Input::StepEnded {
            id,
            phase,
            result,
            dropped_lines: 0,
        });
    }

    fn step_succeeds(&mut self, label: &str) {
        self.step_ends(label, PhaseResult::Done { artifact: None });
    }

    /// Run `label` from its current phase to `succeeded`.
    fn run_to_success(&mut self, label: &str) {
        while !self.rows[&self.id(label)].state.is_terminal() {
            self.step_succeeds(label);
        }
    }

    fn carry_out(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::Reply { to, answer } => {
                let line = match answer {
                    Ok(Answer::Submitted(s)) if s.repeated => {
                        format!("reply#{} {} (repeated)", to.0, self.label(s.deployment.id))
                    }
                    Ok(Answer::Submitted(s)) => {
                        format!(
                            "reply#{} {} {}",
                            to.0,
                            self.label(s.deployment.id),
                            s.deployment.state
                        )
                    }
                    Ok(Answer::Deployment(d)) => {
                        format!("reply#{} {} {}", to.0, self.label(d.id), d.state)
                    }
                    Err(e) => format!("reply#{} error: {e}", to.0),
                };
                self.log.push(line);
                None
            }
            Effect::Load => {
                self.log.push("load".into());
                Some(Input::Loaded(Ok(Loaded::default())))
            }
            Effect::Create {
                reply,
                policy,
                holder,
                new,
            } => {
                let d = created(*new);
                self.remember(d.clone());
                self.log.push(format!("create {}", self.label(d.id)));
                let result = Ok(Created::New(d));
                Some(Input::Created {
                    reply,
                    policy,
                    holder,
                    result,
                })
            }
            Effect::Prepare { id, reply } => {
                self.log.push(format!("prepare {}", self.label(id)));
                let current = self.rows.get(&id).cloned();
                let rollback_to = current
                    .as_ref()
                    .and_then(|d| d.rollback_to.clone())
                    .and_then(|v| self.versions.get(&v).cloned());
                let facts = Ok(StartFacts {
                    current,
                    previous: self.active.clone(),
                    rollback_to,
                });
                Some(Input::Prepared { id, reply, facts })
            }
            Effect::Commit {
                change, purpose, ..
            } => {
                let result = self.apply(*change);
                Some(Input::Committed { purpose, result })
            }
            Effect::Append { id, events } => {
                for event in events {
                    let line = match event {
                        EventData::Queued(q) => {
                            format!(
                                "{} queued {} behind {}",
                                self.label(id),
                                q.position,
                                self.label(q.waiting_for)
                            )
                        }
                        EventData::Log(l) => format!("{} note: {}", self.label(id), l.line),
                        EventData::Truncated(t) => {
                            format!("{} truncated {}", self.label(id), t.dropped_lines)
                        }
                        other => format!("{} {}", self.label(id), other.kind()),
                    };
                    self.log.push(line);
                }
                None
            }
            Effect::StartStep(order) => {
                let d = &order.deployment;
                self.log
                    .push(format!("step {} {}", self.label(d.id), d.state));
                None
            }
            Effect::StartRestore(order) => {
                let what = order.version.map(|v| v.version);
                let what = what.as_deref().unwrap_or("(nothing)");
                let label = self.label(order.deployment.id);
                self.log.push(format!("restore {label} {what}"));
                None
            }
            Effect::TakeOver {
                adoption,
                lapsed_before,
                lease,
                deadline,
            } => {
                let d = &adoption.deployment;
                let result = self.take_over.pop_front().unwrap_or(Ok(true));
                let how = match adoption.cause {
                    Orphaned::LeaseLapsed => "lapsed",
                    Orphaned::PastDeadline => "past its deadline",
                };
                self.log.push(format!(
                    "take over {} {how} before {} as {} until {}, deadline {}{}",
                    self.label(d.id),
                    lapsed_before.format("%H:%M:%S"),
                    lease.owner,
                    lease.expires_at.format("%H:%M:%S"),
                    deadline.map_or("none".into(), |t| t.format("%H:%M:%S").to_string()),
                    match &result {
                        Ok(true) => "",
                        Ok(false) => " lost",
                        Err(_) => " refused",
                    },
                ));
                Some(Input::TakenOver { adoption, result })
            }
            Effect::KillLeftovers { id } => {
                self.log.push(format!("kill leftovers {}", self.label(id)));
                None
            }
            Effect::ExtendDeadline {
                id,
                state,
                deadline,
                ..
            } => {
                let deadline = deadline.map_or("none".into(), |t| t.format("%H:%M:%S").to_string());
                let label = self.label(id);
                self.log
                    .push(format!("deadline {label} {state} {deadline}"));
                None
            }
            Effect::SetDrift(drift) => {
                self.log.push(match drift {
                    Some(d) => {
                        let what = d.version.as_deref().unwrap_or("(nothing)");
                        format!(
                            "drift {what} by {}: {}",
                            self.label(d.deployment_id),
                            d.error
                        )
                    }
                    None => "no drift".into(),
                });
                None
            }
            Effect::StopStep { id } => {
                self.log.push(format!("stop step {}", self.label(id)));
                None
            }
            Effect::RenewLease { id, .. } => {
                self.log.push(format!("renew {}", self.label(id)));
                Some(Input::LeaseRenewed { id, result: Ok(1) })
            }
            Effect::RetryAfter(_) => {
                self.log.push("retry later".into());
                None
            }
            Effect::ForgetStep { id } => {
                self.log.push(format!("forget {}", self.label(id)));
                None
            }
            Effect::Idle => {
                self.log.push("idle".into());
                None
            }
        }
    }

    /// The store's compare-and-set, as both backends do it.
    fn apply(&mut self, change: Change) -> Result<Deployment, StoreError> {
        let label = self.label(change.id);
        let line = format!("commit {label} {}->{}", change.from, change.to);
        let result = self.try_apply(change);
        self.log.push(match &result {
            Ok(_) => line,
            Err(e) => format!("{line} refused: {}", short(e)),
        });
        result
    }

    fn try_apply(&mut self, change: Change) -> Result<Deployment, StoreError> {
        if let Some(e) = self.fail_commits.pop_front() {
            return Err(e);
        }
        let row = self
            .rows
            .get(&change.id)
            .ok_or(StoreError::NotFound(change.id))?;
        if row.state != change.from {
            let (id, expected, current) = (change.id, change.from, row.state);
            return Err(StoreError::Stale {
                id,
                expected,
                current,
            });
        }
        let busy = self
            .rows
            .values()
            .any(|d| d.id != change.id && d.state.is_running());
        if change.to.is_running() && busy {
            let (app, cluster) = ("web".into(), "prod".into());
            return Err(StoreError::TargetBusy { app, cluster });
        }
        let row = self.rows.get_mut(&change.id).expect("checked above");
        row.state = change.to;
        row.error = change.error.clone();
        row.superseded_by = change.superseded_by;
        match change.version {
            VersionChange::Keep => {}
            VersionChange::Set(v) => row.version = Some(v),
            VersionChange::Mint { artifact } => {
                self.minted += 1;
                let version = format!("v{}", self.minted);
                row.version = Some(version.clone());
                let info = VersionInfo {
                    version: version.clone(),
                    artifact,
                    git: None,
                    created_at: change.at,
                    deployment_id: change.id,
                    built_on: None,
                    pinned: false,
                    live: Vec::new(),
                };
                self.versions.insert(version, info);
            }
        }
        if change.to == State::Succeeded {
            let version = row.version.clone().expect("succeeded has a version");
            self.active = self.versions.get(&version).cloned();
        }
        if change.from == State::Queued {
            row.started_at = Some(change.at);
        }
        Ok(row.clone())
    }
}

fn short(e: &StoreError) -> &'static str {
    match e {
        StoreError::Stale { .. } => "stale",
        StoreError::TargetBusy { .. } => "busy",
        StoreError::Unavailable(_) => "unavailable",
        StoreError::NotFound(_) => "not found",
        _ => "other",
    }
}

fn request(kind: Kind, policy: ConflictPolicy) -> Submit {
    Submit {
        kind,
        source: (kind == Kind::Deploy).then(|| "ab".repeat(32)),
        version: None,
        git: Some(GitInfo::default()),
        message: String::new(),
        deployed_by: "ci".into(),
        policy,
        idempotency_key: None,
        request_hash: "hash".into(),
    }
}

fn created(new: NewDeployment) -> Deployment {
    Deployment {
        id: new.id,
        app: new.app,
        cluster: new.cluster,
        kind: new.kind,
        state: State::Queued,
        active: false,
        version: None,
        source: new.source,
        rollback_to: new.rollback_to,
        git: new.git,
        message: new.message,
        deployed_by: new.deployed_by,
        error: None,
        superseded_by: None,
        queue_position: None,
        created_at: new.created_at,
        started_at: None,
        finished_at: None,
    }
}

/// Another instance's deployment of the same target, running.
fn foreign_running(h: &mut Harness) -> Deployment {
    let mut d = created(NewDeployment {
        id: Uuid::now_v7(),
        app: "web".into(),
        cluster: "prod".into(),
        kind: Kind::Deploy,
        source: None,
        rollback_to: None,
        git: None,
        message: String::new(),
        deployed_by: "other".into(),
        idempotency_key: None,
        request_hash: String::new(),
        created_at: h.now,
        fence: None,
    });
    d.state = State::Building;
    h.remember(d.clone());
    d
}

fn lines(expected: &[&str]) -> Vec<String> {
    expected.iter().map(|s| s.to_string()).collect()
}

mod adopts;
mod conflicts;
mod restores;
mod stops;
