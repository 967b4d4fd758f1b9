//! Queries and row decoding. `active` and `queue_position` are derived in
//! [`SELECT_DEPLOYMENT`] on every read, so no row ever stores a stale copy.

use super::TIME_FORMAT;
use crate::model::{
    ActiveInfo, Deployment, Drift, DriftedTarget, Event, EventData, GitInfo, LiveSpan,
    TargetSummary, TargetView, VersionInfo,
};
use crate::store::{HistoryQuery, LeaseInfo, MAX_PAGE, Page, StoreError};
use chrono::{DateTime, NaiveDateTime, Utc};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params, params_from_iter};
use std::str::FromStr;
use uuid::Uuid;

/// Columns 0..=17 are the Deployment, 18..=20 its lease.
const SELECT_DEPLOYMENT: &str = "SELECT d.id, d.app, d.cluster, d.kind, d.state, d.version,
        d.source, d.rollback_to, d.git, d.message, d.deployed_by, d.error, d.superseded_by,
        d.created_at, d.started_at, d.finished_at,
        EXISTS (SELECT 1 FROM targets t WHERE t.app = d.app AND t.cluster = d.cluster
                AND t.active_deployment_id = d.id),
        CASE WHEN d.state = 'queued' THEN
            (SELECT count(*) FROM deployments q WHERE q.app = d.app AND q.cluster = d.cluster
             AND q.state = 'queued' AND q.id <= d.id) END,
        d.owner, d.lease_expires_at, d.phase_deadline
    FROM deployments d";

const RUNNING: &str = "d.state IN ('building', 'pushing', 'activating')";

/// Versions with where they are or were live (column 8, a JSON array by
/// cluster, from `target_versions`).
const SELECT_VERSION: &str = "
    SELECT v.version, v.artifact, v.git, v.created_at, v.deployment_id, v.number,
           v.built_on, v.pinned,
           (SELECT json_group_array(json_object(
                'cluster', tv.cluster, 'since', tv.active_since, 'until', tv.active_until,
                'active', json(CASE WHEN EXISTS (SELECT 1 FROM targets t WHERE t.app = tv.app
                                                 AND t.cluster = tv.cluster
                                                 AND t.active_version = tv.version)
                               THEN 'true' ELSE 'false' END)))
            FROM (SELECT * FROM target_versions tv WHERE tv.app = v.app AND tv.version = v.version
                  ORDER BY tv.cluster) tv)
    FROM versions v";

pub(super) fn deployment(conn: &Connection, id: Uuid) -> Result<Option<Deployment>, StoreError> {
    let sql = format!("{SELECT_DEPLOYMENT} WHERE d.id = ?1");
    Ok(conn
        .query_row(&sql, [id.to_string()], deployment_row)
        .optional()?)
}

/// The deployment a target created under an idempotency key, with the
/// fingerprint of the request that created it.
pub(super) fn by_idempotency_key(
    conn: &Connection,
    app: &str,
    cluster: &str,
    key: &str,
) -> Result<Option<(Deployment, String)>, StoreError> {
    let found: Option<(String, String)> = conn
        .query_row(
            "SELECT id, request_hash FROM deployments
             WHERE app = ?1 AND cluster = ?2 AND idempotency_key = ?3",
            [app, cluster, key],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((id, hash)) = found else {
        return Ok(None);
    };
    let id = stored_uuid(&id)?;
    let deployment = deployment(conn, id)?.ok_or(StoreError::NotFound(id))?;
    Ok(Some((deployment, hash)))
}

pub(super) fn events_after(
    conn: &Connection,
    id: Uuid,
    after: i64,
    limit: u32,
) -> Result<Vec<Event>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, kind, data FROM deployment_events
         WHERE deployment_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3",
    )?;
    let rows = stmt.query_map(params![id.to_string(), after, limit], |r| {
        let kind: String = r.get(1)?;
        let payload = parse(r, 2, |s| serde_json::from_str::<serde_json::Value>(s))?;
        Ok(Event {
            deployment_id: id,
            seq: r.get(0)?,
            data: EventData::from_parts(&kind, payload).map_err(|e| conversion(2, e))?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Newest first by id, a keyset page: one more row than asked tells whether
/// there is a next page without counting.
pub(super) fn history(
    conn: &Connection,
    query: &HistoryQuery,
) -> Result<Page<Deployment, Uuid>, StoreError> {
    let limit = query.limit.clamp(1, MAX_PAGE) as usize;
    // Only fixed fragments go into the SQL, every value is a parameter; each
    // filter is a plain equality so the (app, cluster, id DESC) index applies.
    let mut sql = format!("{SELECT_DEPLOYMENT} WHERE d.app = ?");
    let mut values = vec![Value::Text(query.app.clone())];
    if let Some(cluster) = &query.cluster {
        sql.push_str(" AND d.cluster = ?");
        values.push(Value::Text(cluster.clone()));
    }
    if let Some(state) = query.state {
        sql.push_str(" AND d.state = ?");
        values.push(Value::Text(state.as_str().to_string()));
    }
    if let Some(before) = query.before {
        sql.push_str(" AND d.id < ?");
        values.push(Value::Text(before.to_string()));
    }
    sql.push_str(" ORDER BY d.id DESC LIMIT ?");
    values.push(Value::Integer(limit as i64 + 1));
    let items = conn
        .prepare_cached(&sql)?
        .query_map(params_from_iter(values), deployment_row)?
        .collect::<Result<_, _>>()?;
    Ok(page(items, limit, |d: &Deployment| d.id))
}

pub(super) fn target(
    conn: &Connection,
    app: String,
    cluster: String,
) -> Result<TargetView, StoreError> {
    let active = conn
        .query_row(
            "SELECT active_version, active_deployment_id, active_since FROM targets
             WHERE app = ?1 AND cluster = ?2",
            [&app, &cluster],
            |r| {
                Ok(ActiveInfo {
                    version: r.get(0)?,
                    deployment_id: parse(r, 1, Uuid::parse_str)?,
                    since: parse(r, 2, parse_time)?,
                })
            },
        )
        .optional()?;
    let running_sql =
        format!("{SELECT_DEPLOYMENT} WHERE d.app = ?1 AND d.cluster = ?2 AND {RUNNING}");
    let running = conn
        .query_row(&running_sql, [&app, &cluster], deployment_row)
        .optional()?;
    let queued_sql = format!(
        "{SELECT_DEPLOYMENT} WHERE d.app = ?1 AND d.cluster = ?2 AND d.state = 'queued'
         ORDER BY d.id"
    );
    let queued = conn
        .prepare_cached(&queued_sql)?
        .query_map([&app, &cluster], deployment_row)?
        .collect::<Result<_, _>>()?;
    let drift = conn
        .query_row(
            "SELECT version, error, deployment_id, since FROM target_drift
             WHERE app = ?1 AND cluster = ?2",
            [&app, &cluster],
            |r| {
                Ok(Drift {
                    version: r.get(0)?,
                    error: r.get(1)?,
                    deployment_id: parse(r, 2, Uuid::parse_str)?,
                    since: parse(r, 3, parse_time)?,
                })
            },
        )
        .optional()?;
    let rollback_to = conn
        .prepare_cached(ROLLBACK_TARGET)?
        .query_row([&app, &cluster], |r| r.get(0))
        .optional()?;
    Ok(TargetView {
        app,
        cluster,
        active,
        running,
        queued,
        drift,
        rollback_to,
    })
}

pub(super) fn versions(
    conn: &Connection,
    app: &str,
    before: Option<i64>,
    limit: u32,
) -> Result<Page<VersionInfo, i64>, StoreError> {
    let limit = limit.clamp(1, MAX_PAGE) as usize;
    let sql = format!(
        "{SELECT_VERSION} WHERE v.app = ?1 AND v.number < ?2 ORDER BY v.number DESC LIMIT ?3"
    );
    let before = before.unwrap_or(i64::MAX);
    let rows: Vec<(i64, VersionInfo)> = conn
        .prepare_cached(&sql)?
        .query_map(params![app, before, limit as i64 + 1], |r| {
            Ok((r.get(5)?, version_row(r)?))
        })?
        .collect::<Result<_, _>>()?;
    let page = page(rows, limit, |(number, _)| *number);
    Ok(Page {
        items: page.items.into_iter().map(|(_, v)| v).collect(),
        next: page.next,
    })
}

pub(super) fn version(
    conn: &Connection,
    app: &str,
    version: &str,
) -> Result<Option<VersionInfo>, StoreError> {
    let sql = format!("{SELECT_VERSION} WHERE v.app = ?1 AND v.version = ?2");
    Ok(conn
        .query_row(&sql, [app, version], version_row)
        .optional()?)
}

/// The name of the version a plain rollback of target (?1, ?2) goes to: of
/// the versions that were active on the target, the one that last became
/// active, other than the active one. The one place the rule is written.
const ROLLBACK_TARGET: &str = "
    SELECT p.version FROM target_versions p
    WHERE p.app = ?1 AND p.cluster = ?2
      AND p.version IS NOT (SELECT active_version FROM targets WHERE app = ?1 AND cluster = ?2)
    ORDER BY p.active_since DESC, p.deployment_id DESC LIMIT 1";

/// What a rollback that names no version goes to ([`ROLLBACK_TARGET`]).
pub(super) fn previous_version(
    conn: &Connection,
    app: &str,
    cluster: &str,
) -> Result<Option<VersionInfo>, StoreError> {
    let sql = format!("{SELECT_VERSION} WHERE v.app = ?1 AND v.version = ({ROLLBACK_TARGET})");
    Ok(conn
        .query_row(&sql, [app, cluster], version_row)
        .optional()?)
}

pub(super) enum LeaseFilter {
    ExpiredBefore(DateTime<Utc>),
    DeadlineBefore(DateTime<Utc>),
    Owner(String),
}

/// Running deployments with their leases, oldest first.
pub(super) fn leases(conn: &Connection, filter: LeaseFilter) -> Result<Vec<LeaseInfo>, StoreError> {
    let (condition, value) = match filter {
        LeaseFilter::ExpiredBefore(now) => ("d.lease_expires_at < ?1", ts(now)),
        LeaseFilter::DeadlineBefore(at) => ("d.phase_deadline < ?1", ts(at)),
        LeaseFilter::Owner(owner) => ("d.owner = ?1", owner),
    };
    let sql = format!("{SELECT_DEPLOYMENT} WHERE {RUNNING} AND {condition} ORDER BY d.id");
    let rows = conn
        .prepare_cached(&sql)?
        .query_map([value], lease_row)?
        .collect::<Result<_, _>>()?;
    Ok(rows)
}

/// A deployment id's random part (`model::random_part`) from its stored
/// hyphenated text: what `deployments_random_part` indexes, written the same
/// way so the planner matches it.
const RANDOM_PART: &str = "replace(substr(d.id, 16), '-', '')";

pub(super) fn by_short_id(
    conn: &Connection,
    prefix: &str,
    limit: u32,
) -> Result<Vec<Deployment>, StoreError> {
    let (from, to) = crate::store::short_id_range(prefix);
    let sql = format!(
        "{SELECT_DEPLOYMENT} WHERE {RANDOM_PART} >= ?1 AND {RANDOM_PART} < ?2
         ORDER BY {RANDOM_PART} LIMIT ?3"
    );
    let mut found: Vec<Deployment> = conn
        .prepare_cached(&sql)?
        .query_map(params![from, to, limit], deployment_row)?
        .collect::<Result<_, _>>()?;
    found.sort_by_key(|d| d.id);
    Ok(found)
}

/// Targets by a skip scan of `deployments_target_history`: each step seeks
/// the next (app, cluster) after the last, so the cost is per target.
pub(super) fn target_summaries(
    conn: &Connection,
    limit: u32,
) -> Result<Vec<TargetSummary>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "WITH RECURSIVE pairs(app, cluster) AS (
             SELECT * FROM (SELECT app, cluster FROM deployments ORDER BY app, cluster LIMIT 1)
             UNION ALL
             SELECT (SELECT n.app FROM deployments n WHERE (n.app, n.cluster) > (p.app, p.cluster)
                     ORDER BY n.app, n.cluster LIMIT 1),
                    (SELECT n.cluster FROM deployments n
                     WHERE (n.app, n.cluster) > (p.app, p.cluster)
                     ORDER BY n.app, n.cluster LIMIT 1)
             FROM pairs p WHERE p.app IS NOT NULL
             LIMIT ?1 + 1
         )
         SELECT p.app, p.cluster, t.active_version,
                EXISTS (SELECT 1 FROM deployments d WHERE d.app = p.app AND d.cluster = p.cluster
                        AND d.state IN ('building', 'pushing', 'activating'))
         FROM pairs p LEFT JOIN targets t ON t.app = p.app AND t.cluster = p.cluster
         WHERE p.app IS NOT NULL
         ORDER BY p.app, p.cluster
         LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit], |r| {
        Ok(TargetSummary {
            app: r.get(0)?,
            cluster: r.get(1)?,
            active_version: r.get(2)?,
            running: r.get(3)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub(super) fn queued_targets(conn: &Connection) -> Result<Vec<(String, String)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT app, cluster FROM deployments WHERE state = 'queued'
         ORDER BY app, cluster",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Cut a `limit + 1` fetch to a page; the extra row only says "there is more".
fn page<T, K>(mut items: Vec<T>, limit: usize, key: impl Fn(&T) -> K) -> Page<T, K> {
    let more = items.len() > limit;
    items.truncate(limit);
    let next = if more { items.last().map(key) } else { None };
    Page { items, next }
}

fn deployment_row(r: &Row) -> rusqlite::Result<Deployment> {
    Ok(Deployment {
        id: parse(r, 0, Uuid::parse_str)?,
        app: r.get(1)?,
        cluster: r.get(2)?,
        kind: parse(r, 3, FromStr::from_str)?,
        state: parse(r, 4, FromStr::from_str)?,
        version: r.get(5)?,
        source: r.get(6)?,
        rollback_to: r.get(7)?,
        git: parse_opt(r, 8, |s| serde_json::from_str::<GitInfo>(s))?,
        message: r.get(9)?,
        deployed_by: r.get(10)?,
        error: r.get(11)?,
        superseded_by: parse_opt(r, 12, Uuid::parse_str)?,
        created_at: parse(r, 13, parse_time)?,
        started_at: parse_opt(r, 14, parse_time)?,
        finished_at: parse_opt(r, 15, parse_time)?,
        active: r.get(16)?,
        queue_position: r.get(17)?,
    })
}

fn lease_row(r: &Row) -> rusqlite::Result<LeaseInfo> {
    Ok(LeaseInfo {
        deployment: deployment_row(r)?,
        owner: r.get(18)?,
        lease_expires_at: parse_opt(r, 19, parse_time)?,
        phase_deadline: parse_opt(r, 20, parse_time)?,
    })
}

fn version_row(r: &Row) -> rusqlite::Result<VersionInfo> {
    Ok(VersionInfo {
        version: r.get(0)?,
        artifact: r.get(1)?,
        git: parse_opt(r, 2, |s| serde_json::from_str::<GitInfo>(s))?,
        created_at: parse(r, 3, parse_time)?,
        deployment_id: parse(r, 4, Uuid::parse_str)?,
        built_on: r.get(6)?,
        pinned: r.get(7)?,
        live: parse(r, 8, |s| serde_json::from_str::<Vec<LiveSpan>>(s))?,
    })
}

pub(super) fn ts(at: DateTime<Utc>) -> String {
    at.format(TIME_FORMAT).to_string()
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.fZ").map(|t| t.and_utc())
}

pub(super) fn git_json(git: Option<&GitInfo>) -> Result<Option<String>, StoreError> {
    git.map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Backend(format!("encoding git info: {e}")))
}

pub(super) fn stored_uuid(text: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(text)
        .map_err(|e| StoreError::Backend(format!("sqlite: stored id {text:?}: {e}")))
}

/// Read column `idx` as text and parse it; a failure names the column.
pub(super) fn parse<T, E>(
    r: &Row,
    idx: usize,
    f: impl FnOnce(&str) -> Result<T, E>,
) -> rusqlite::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let text: String = r.get(idx)?;
    f(&text).map_err(|e| conversion(idx, e))
}

fn parse_opt<T, E>(
    r: &Row,
    idx: usize,
    f: impl FnOnce(&str) -> Result<T, E>,
) -> rusqlite::Result<Option<T>>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let text: Option<String> = r.get(idx)?;
    text.as_deref()
        .map(f)
        .transpose()
        .map_err(|e| conversion(idx, e))
}

fn conversion(idx: usize, e: impl std::error::Error + Send + Sync + 'static) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, Box::new(e))
}

/// Every drifted target, by app and cluster.
pub(super) fn drifted(conn: &Connection) -> Result<Vec<DriftedTarget>, StoreError> {
    conn.prepare_cached(
        "SELECT app, cluster, version, error, deployment_id, since FROM target_drift
         ORDER BY app, cluster",
    )?
    .query_map([], |r| {
        Ok(DriftedTarget {
            app: r.get(0)?,
            cluster: r.get(1)?,
            drift: Drift {
                version: r.get(2)?,
                error: r.get(3)?,
                deployment_id: parse(r, 4, Uuid::parse_str)?,
                since: parse(r, 5, parse_time)?,
            },
        })
    })?
    .collect::<Result<_, _>>()
    .map_err(Into::into)
}
