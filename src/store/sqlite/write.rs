//! Every statement that changes rows. Each fn runs inside the caller's
//! IMMEDIATE transaction, so what it reads first is still true when it writes.

use super::read::{self, git_json, ts};
use crate::machine::{Kind, State};
use crate::model::{Drift, Event, EventData, StateChange};
use crate::store::{
    Applied, Change, Created, Holder, Lease, NewDeployment, StoreError, VersionChange,
};
use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};
use std::str::FromStr;
use uuid::Uuid;

pub(super) fn create(tx: &Transaction, new: &NewDeployment) -> Result<Created, StoreError> {
    if let Some(key) = &new.idempotency_key
        && let Some((deployment, hash)) = read::by_idempotency_key(tx, &new.app, &new.cluster, key)?
    {
        return Ok(Created::Existing {
            deployment,
            same_request: hash == new.request_hash,
        });
    }
    tx.execute(
        "INSERT INTO deployments (id, app, cluster, kind, state, source, rollback_to, git, message,
                                  deployed_by, idempotency_key, request_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, 'queued', ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
        params![
            new.id.to_string(),
            new.app,
            new.cluster,
            new.kind.as_str(),
            new.source,
            new.rollback_to,
            git_json(new.git.as_ref())?,
            new.message,
            new.deployed_by,
            new.idempotency_key,
            new.request_hash,
            ts(new.created_at),
        ],
    )?;
    // The first event carries the row as stored, derived fields included.
    let created = read::deployment(tx, new.id)?.ok_or(StoreError::NotFound(new.id))?;
    let first = EventData::Deployment(Box::new(created.clone()));
    insert_events(tx, new.id, &[first])?;
    Ok(Created::New(created))
}

/// The row's facts a transition needs before it writes.
struct Current {
    app: String,
    cluster: String,
    state: State,
    git: Option<String>,
    version: Option<String>,
}

pub(super) fn transition(tx: &Transaction, change: &Change) -> Result<Applied, StoreError> {
    let id = change.id;
    let current = tx
        .query_row(
            "SELECT app, cluster, state, git, version FROM deployments WHERE id = ?1",
            [id.to_string()],
            |r| {
                Ok(Current {
                    app: r.get(0)?,
                    cluster: r.get(1)?,
                    state: read::parse(r, 2, State::from_str)?,
                    git: r.get(3)?,
                    version: r.get(4)?,
                })
            },
        )
        .optional()?
        .ok_or(StoreError::NotFound(id))?;
    let stale = || StoreError::Stale {
        id,
        expected: change.from,
        current: current.state,
    };
    if current.state != change.from {
        return Err(stale());
    }
    let new_version = match &change.version {
        VersionChange::Keep => None,
        VersionChange::Mint { artifact } => Some(mint(tx, &current, artifact, id, change.at)?),
        VersionChange::Set(version) => Some(known_version(tx, &current.app, version)?),
    };
    let ended = change.to.is_terminal();
    let error = change.error.clone();
    let at = ts(change.at);
    // The compare-and-set: only a row still in `from` changes. Owner, lease
    // and deadline belong to a running phase and go when the deployment ends.
    let updated = tx
        .execute(
            "UPDATE deployments SET
                 state = ?3,
                 version = COALESCE(?4, version),
                 started_at = CASE WHEN ?2 = 'queued' AND started_at IS NULL
                                   THEN ?5 ELSE started_at END,
                 finished_at = CASE WHEN ?6 THEN ?5 ELSE finished_at END,
                 error = COALESCE(?7, error),
                 superseded_by = COALESCE(?8, superseded_by),
                 owner = CASE WHEN ?6 THEN NULL ELSE COALESCE(?9, owner) END,
                 lease_expires_at = CASE WHEN ?6 THEN NULL
                                         ELSE COALESCE(?10, lease_expires_at) END,
                 phase_deadline = CASE WHEN ?6 THEN NULL ELSE ?11 END
             WHERE id = ?1 AND state = ?2",
            params![
                id.to_string(),
                change.from.as_str(),
                change.to.as_str(),
                new_version,
                at,
                ended,
                error,
                change.superseded_by.map(|s| s.to_string()),
                change.lease.as_ref().map(|l| l.owner.clone()),
                change.lease.as_ref().map(|l| ts(l.expires_at)),
                change.deadline.map(ts),
            ],
        )
        .map_err(|e| target_busy(e, &current))?;
    if updated != 1 {
        return Err(stale());
    }
    if change.to == State::Succeeded {
        let version = new_version.as_ref().or(current.version.as_ref());
        // Where the version was live: the one active until now is replaced.
        tx.execute(
            "UPDATE target_versions SET active_until = ?3
             WHERE app = ?1 AND cluster = ?2 AND version IS NOT ?4
               AND version = (SELECT active_version FROM targets WHERE app = ?1 AND cluster = ?2)",
            params![current.app, current.cluster, at, version],
        )?;
        tx.execute(
            "INSERT INTO target_versions (app, cluster, version, active_since, active_until,
                                          deployment_id)
             VALUES (?1, ?2, ?3, ?4, NULL, ?5)
             ON CONFLICT (app, cluster, version) DO UPDATE SET
                 active_since = excluded.active_since,
                 active_until = NULL,
                 deployment_id = excluded.deployment_id",
            params![current.app, current.cluster, version, at, id.to_string()],
        )?;
        tx.execute(
            "INSERT INTO targets (app, cluster, active_deployment_id, active_version, active_since)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (app, cluster) DO UPDATE SET
                 active_deployment_id = excluded.active_deployment_id,
                 active_version = excluded.active_version,
                 active_since = excluded.active_since",
            params![
                current.app,
                current.cluster,
                id.to_string(),
                new_version.as_ref().or(current.version.as_ref()),
                at
            ],
        )?;
        tx.execute(
            "DELETE FROM target_drift WHERE app = ?1 AND cluster = ?2",
            params![current.app, current.cluster],
        )?;
    }
    let data = EventData::State(StateChange {
        from: change.from,
        to: change.to,
        at: change.at,
        error,
    });
    let event = insert_events(tx, id, &[data])?.remove(0);
    let deployment = read::deployment(tx, id)?.ok_or(StoreError::NotFound(id))?;
    let d = &deployment;
    let building = matches!(change.from, State::Building | State::Pushing);
    if d.kind == Kind::Deploy && d.version.is_none() && building && ended {
        // Its cluster is owed a cleanup (`owed_cleanups`).
        tx.execute(
            "INSERT INTO owed_cleanups (id, app, cluster, since) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (id) DO NOTHING",
            params![id.to_string(), d.app, d.cluster, at],
        )?;
    }
    Ok(Applied { deployment, event })
}

/// Mint the app's next version. The counter row's upsert is the serialization
/// point, so numbers never repeat or skip.
fn mint(
    tx: &Transaction,
    current: &Current,
    artifact: &str,
    id: Uuid,
    at: DateTime<Utc>,
) -> Result<String, StoreError> {
    let number: i64 = tx.query_row(
        "INSERT INTO app_version_counters (app, last_number) VALUES (?1, 1)
         ON CONFLICT (app) DO UPDATE SET last_number = last_number + 1
         RETURNING last_number",
        [&current.app],
        |r| r.get(0),
    )?;
    let version = format!("v{number}");
    tx.execute(
        "INSERT INTO versions (app, number, version, artifact, git, deployment_id, created_at,
                               built_on)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            current.app,
            number,
            version,
            artifact,
            current.git,
            id.to_string(),
            ts(at),
            current.cluster
        ],
    )?;
    Ok(version)
}

/// A rollback may only name a version this app already has.
fn known_version(tx: &Transaction, app: &str, version: &str) -> Result<String, StoreError> {
    let known: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM versions WHERE app = ?1 AND version = ?2)",
        [app, version],
        |r| r.get(0),
    )?;
    if !known {
        return Err(StoreError::UnknownVersion {
            app: app.to_string(),
            version: version.to_string(),
        });
    }
    Ok(version.to_string())
}

pub(super) fn append(
    tx: &Transaction,
    id: Uuid,
    events: &[EventData],
) -> Result<Vec<Event>, StoreError> {
    let state: Option<State> = tx
        .query_row(
            "SELECT state FROM deployments WHERE id = ?1",
            [id.to_string()],
            |r| read::parse(r, 0, State::from_str),
        )
        .optional()?;
    match state {
        None => Err(StoreError::NotFound(id)),
        Some(state) if state.is_terminal() => Err(StoreError::Ended(id)),
        Some(_) => insert_events(tx, id, events),
    }
}

/// Store `events` with the deployment's next seqs; `last_seq` is bumped in
/// the same transaction, so seqs never repeat or skip. Callers decide whether
/// the deployment may still take events.
fn insert_events(
    tx: &Transaction,
    id: Uuid,
    events: &[EventData],
) -> Result<Vec<Event>, StoreError> {
    let count = events.len() as i64;
    let last: i64 = tx.query_row(
        "UPDATE deployments SET last_seq = last_seq + ?2 WHERE id = ?1 RETURNING last_seq",
        params![id.to_string(), count],
        |r| r.get(0),
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO deployment_events (deployment_id, seq, kind, data) VALUES (?1, ?2, ?3, ?4)",
    )?;
    let mut stored = Vec::with_capacity(events.len());
    for (seq, data) in (last - count + 1..).zip(events) {
        let payload = data.payload().to_string();
        insert.execute(params![id.to_string(), seq, data.kind(), payload])?;
        stored.push(Event {
            deployment_id: id,
            seq,
            data: data.clone(),
        });
    }
    Ok(stored)
}

pub(super) fn set_drift(
    tx: &Transaction,
    app: &str,
    cluster: &str,
    drift: Option<&Drift>,
) -> Result<(), StoreError> {
    match drift {
        Some(d) => tx.execute(
            "INSERT INTO target_drift (app, cluster, version, error, deployment_id, since)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (app, cluster) DO UPDATE SET version = excluded.version,
                 error = excluded.error, deployment_id = excluded.deployment_id,
                 since = excluded.since",
            params![
                app,
                cluster,
                d.version,
                crate::store::text::storable(&d.error),
                d.deployment_id.to_string(),
                ts(d.since)
            ],
        )?,
        None => tx.execute(
            "DELETE FROM target_drift WHERE app = ?1 AND cluster = ?2",
            params![app, cluster],
        )?,
    };
    Ok(())
}

pub(super) fn renew_leases(
    tx: &Transaction,
    owner: &str,
    ids: &[Uuid],
    expires_at: DateTime<Utc>,
) -> Result<u64, StoreError> {
    // The ids travel as one JSON array parameter, whatever their number.
    let ids: Vec<String> = ids.iter().map(Uuid::to_string).collect();
    let ids = serde_json::to_string(&ids)
        .map_err(|e| StoreError::Backend(format!("encoding lease ids: {e}")))?;
    let renewed = tx.execute(
        "UPDATE deployments SET lease_expires_at = ?1
         WHERE owner = ?2 AND id IN (SELECT value FROM json_each(?3))
           AND state IN ('building', 'pushing', 'activating')",
        params![ts(expires_at), owner, ids],
    )?;
    Ok(renewed as u64)
}

/// [`Store::take_over`](crate::store::Store::take_over): one compare-and-set
/// on the state and the holder.
pub(super) fn take_over(
    tx: &Transaction,
    id: Uuid,
    state: State,
    holder: &Holder,
    lease: &Lease,
    deadline: Option<DateTime<Utc>>,
) -> Result<bool, StoreError> {
    let (condition, held_by) = match holder {
        Holder::LapsedBefore(before) => ("lease_expires_at < ?6", ts(*before)),
        Holder::Owner(owner) => ("owner = ?6", owner.clone()),
        Holder::PastDeadline(before) => ("phase_deadline < ?6", ts(*before)),
    };
    let taken = tx.execute(
        &format!(
            "UPDATE deployments SET owner = ?3, lease_expires_at = ?4, phase_deadline = ?5
             WHERE id = ?1 AND state = ?2 AND {condition}"
        ),
        params![
            id.to_string(),
            state.as_str(),
            lease.owner,
            ts(lease.expires_at),
            deadline.map(ts),
            held_by
        ],
    )?;
    Ok(taken == 1)
}

/// The running-deployment index is the only unique constraint a state change
/// can hit. SQLite names a partial index by its columns, `(app, cluster)`,
/// which tells it apart from the idempotency key's three columns.
fn target_busy(e: rusqlite::Error, current: &Current) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, Some(msg))
            if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
                && msg == "UNIQUE constraint failed: deployments.app, deployments.cluster" =>
        {
            StoreError::TargetBusy {
                app: current.app.clone(),
                cluster: current.cluster.clone(),
            }
        }
        _ => e.into(),
    }
}
