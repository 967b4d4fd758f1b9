//! Retention's statements, mirroring the PostgreSQL backend's
//! (`store/postgres/retention.rs`, where the rules are explained): the same
//! CTEs, shared by the compaction step and the dry run. Parameters: ?1
//! releases kept per target (at least 2), ?2 attempts kept per target, ?3
//! the cutoff for versions and succeeded deployments, ?4 the cutoff for
//! attempts, ?5 how many rows at most. Each fn runs inside the caller's
//! transaction.

use super::read::{parse, ts};
use crate::machine::State;
use crate::store::{
    CompactionPlan, CompactionReport, DeletedVersion, OwedCleanup, PlannedDeployment,
    PlannedVersion, Retention, StoreError,
};
use rusqlite::{Connection, Transaction, params};
use std::str::FromStr;
use uuid::Uuid;

macro_rules! retention {
    () => {
        "
WITH live AS (
    SELECT app, version,
           row_number() OVER (PARTITION BY app, cluster
                              ORDER BY active_since DESC, deployment_id DESC) AS rank
    FROM target_versions
), kept_versions AS (
    SELECT app, active_version AS version FROM targets
    UNION SELECT app, version FROM live WHERE rank <= ?1
    UNION SELECT app, version FROM versions WHERE pinned OR created_at > ?3
    UNION SELECT app, version FROM deployments
          WHERE state IN ('queued', 'building', 'pushing', 'activating') AND version IS NOT NULL
    UNION SELECT app, rollback_to FROM deployments
          WHERE state IN ('queued', 'building', 'pushing', 'activating')
            AND rollback_to IS NOT NULL
), attempts AS (
    SELECT id, created_at,
           row_number() OVER (PARTITION BY app, cluster ORDER BY id DESC) AS rank
    FROM deployments WHERE state IN ('failed', 'cancelled', 'interrupted')
), doomed_deployments AS (
    SELECT d.id FROM deployments d
    WHERE d.state = 'succeeded' AND d.created_at <= ?3
      AND NOT EXISTS (SELECT 1 FROM targets t WHERE t.app = d.app AND t.cluster = d.cluster
                      AND t.active_deployment_id = d.id)
      AND NOT EXISTS (SELECT 1 FROM target_versions tv
                      JOIN kept_versions k ON k.app = tv.app AND k.version = tv.version
                      WHERE tv.deployment_id = d.id)
    UNION ALL
    SELECT a.id FROM attempts a WHERE a.rank > ?2 AND a.created_at <= ?4
)"
    };
}

/// One compaction step: the deployments, then the versions, retention no
/// longer keeps; the rules are [`Store::compact`](crate::store::Store::compact)'s.
pub(super) fn compact(
    tx: &Transaction,
    policy: &Retention,
    batch: u32,
) -> Result<CompactionReport, StoreError> {
    let params = retention_params(policy, batch);
    let deployments_deleted = tx.execute(
        concat!(
            retention!(),
            "
DELETE FROM deployments WHERE id IN (SELECT id FROM doomed_deployments ORDER BY id LIMIT ?5)"
        ),
        params.clone(),
    )?;
    let mut delete_versions = tx.prepare(concat!(
        retention!(),
        ", doomed AS (
    SELECT v.app, v.number FROM versions v
    WHERE NOT EXISTS (SELECT 1 FROM kept_versions k WHERE k.app = v.app AND k.version = v.version)
      AND NOT EXISTS (SELECT 1 FROM deployments d WHERE d.app = v.app AND d.version = v.version)
    ORDER BY v.app, v.number LIMIT ?5
)
DELETE FROM versions WHERE (app, number) IN (SELECT app, number FROM doomed)
RETURNING app, version, artifact, built_on, deployment_id"
    ))?;
    let versions_deleted: Vec<DeletedVersion> = delete_versions
        .query_map(params, |r| {
            Ok(DeletedVersion {
                app: r.get(0)?,
                version: r.get(1)?,
                artifact: r.get(2)?,
                built_on: r.get(3)?,
                deployment_id: parse(r, 4, Uuid::parse_str)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let mut owe = tx.prepare_cached(
        "INSERT INTO owed_cleanups (id, app, cluster, version, artifact, since)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version, artifact = excluded.artifact",
    )?;
    for v in &versions_deleted {
        if let Some(cluster) = &v.built_on {
            let id = v.deployment_id.to_string();
            let now = ts(chrono::Utc::now());
            owe.execute(params![id, v.app, cluster, v.version, v.artifact, now])?;
        }
    }
    Ok(CompactionReport {
        deployments_deleted: deployments_deleted as u64,
        versions_deleted,
    })
}

/// What [`compact`] would delete over all its steps, at most `limit` of each.
pub(super) fn plan(
    conn: &Connection,
    policy: &Retention,
    limit: u32,
) -> Result<CompactionPlan, StoreError> {
    let params = retention_params(policy, limit);
    let deployments = conn
        .prepare(concat!(
            retention!(),
            "
SELECT d.id, d.app, d.cluster, d.state, d.version
FROM deployments d JOIN doomed_deployments doomed ON doomed.id = d.id
ORDER BY d.id LIMIT ?5"
        ))?
        .query_map(params.clone(), |r| {
            Ok(PlannedDeployment {
                id: parse(r, 0, Uuid::parse_str)?,
                app: r.get(1)?,
                cluster: r.get(2)?,
                state: parse(r, 3, State::from_str)?,
                version: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    let versions = conn
        .prepare(concat!(
            retention!(),
            "
SELECT v.app, v.version, v.artifact,
       (SELECT json_group_array(cluster) FROM
            (SELECT tv.cluster FROM target_versions tv
             WHERE tv.app = v.app AND tv.version = v.version ORDER BY tv.cluster))
FROM versions v
WHERE NOT EXISTS (SELECT 1 FROM kept_versions k WHERE k.app = v.app AND k.version = v.version)
  AND NOT EXISTS (SELECT 1 FROM deployments d WHERE d.app = v.app AND d.version = v.version
                  AND d.id NOT IN (SELECT id FROM doomed_deployments))
ORDER BY v.app, v.number LIMIT ?5"
        ))?
        .query_map(params, |r| {
            Ok(PlannedVersion {
                app: r.get(0)?,
                version: r.get(1)?,
                artifact: r.get(2)?,
                live_on: parse(r, 3, |s| serde_json::from_str::<Vec<String>>(s))?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(CompactionPlan {
        deployments,
        versions,
    })
}

/// [`Retention`] as the statements' five parameters.
fn retention_params(policy: &Retention, limit: u32) -> (i64, i64, String, String, i64) {
    (
        policy.releases_per_target(),
        i64::from(policy.keep_attempts),
        ts(policy.cutoff()),
        ts(policy.attempts_cutoff()),
        i64::from(limit),
    )
}

/// Which of `sources` a deployment other than those in `ignoring` names.
pub(super) fn sources_in_use(
    conn: &Connection,
    sources: &[String],
    ignoring: &[Uuid],
) -> Result<Vec<String>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT DISTINCT source FROM deployments
         WHERE source IN (SELECT value FROM json_each(?1))
           AND id NOT IN (SELECT value FROM json_each(?2))",
    )?;
    let json = |v: serde_json::Value| v.to_string();
    let ignoring: Vec<String> = ignoring.iter().map(Uuid::to_string).collect();
    let params = [json(sources.into()), json(ignoring.into())];
    Ok(statement
        .query_map(params, |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// Owed cleanups, oldest first, at most `limit`.
pub(super) fn owed(conn: &Connection, limit: u32) -> Result<Vec<OwedCleanup>, StoreError> {
    Ok(conn
        .prepare_cached(
            "SELECT id, app, cluster, version, artifact FROM owed_cleanups
             ORDER BY since, id LIMIT ?1",
        )?
        .query_map([limit], |r| {
            Ok(OwedCleanup {
                id: parse(r, 0, Uuid::parse_str)?,
                app: r.get(1)?,
                cluster: r.get(2)?,
                version: r.get(3)?,
                artifact: r.get(4)?,
            })
        })?
        .collect::<Result<_, _>>()?)
}

pub(super) fn cleaned(tx: &Transaction, id: Uuid) -> Result<(), StoreError> {
    tx.execute("DELETE FROM owed_cleanups WHERE id = ?1", [id.to_string()])?;
    Ok(())
}

/// Which of `ids` have not ended.
pub(super) fn unended(conn: &Connection, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
    ids_where(
        conn,
        "SELECT id FROM deployments WHERE id IN (SELECT value FROM json_each(?1))
         AND state IN ('queued', 'building', 'pushing', 'activating')",
        ids,
    )
}

/// Which of `ids` minted a version that still exists.
pub(super) fn builders(conn: &Connection, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
    ids_where(
        conn,
        "SELECT DISTINCT deployment_id FROM versions
         WHERE deployment_id IN (SELECT value FROM json_each(?1))",
        ids,
    )
}

/// The ids `sql` returns when given `ids` as a JSON array in ?1.
fn ids_where(conn: &Connection, sql: &str, ids: &[Uuid]) -> Result<Vec<Uuid>, StoreError> {
    let list = serde_json::to_string(&ids.iter().map(Uuid::to_string).collect::<Vec<_>>())
        .map_err(|e| StoreError::Backend(e.to_string()))?;
    Ok(conn
        .prepare_cached(sql)?
        .query_map([list], |r| parse(r, 0, Uuid::parse_str))?
        .collect::<Result<_, _>>()?)
}

/// Every version artifact that begins with `prefix`.
pub(super) fn artifacts_under(conn: &Connection, prefix: &str) -> Result<Vec<String>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT artifact FROM versions WHERE substr(artifact, 1, length(?1)) = ?1",
    )?;
    Ok(statement
        .query_map([prefix], |r| r.get(0))?
        .collect::<Result<_, _>>()?)
}

/// Pin or unpin a version; false when the app has no such version.
pub(super) fn pin(
    tx: &Transaction,
    app: &str,
    version: &str,
    pinned: bool,
) -> Result<bool, StoreError> {
    Ok(tx.execute(
        "UPDATE versions SET pinned = ?3 WHERE app = ?1 AND version = ?2",
        params![app, version, pinned],
    )? == 1)
}
