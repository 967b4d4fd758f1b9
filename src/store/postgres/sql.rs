//! The statements [`PgStore`](super::PgStore) sends, and how their rows
//! become API types.
//!
//! Writes are single statements built from data-modifying CTEs: atomic on
//! their own, one round trip each. Every query that returns deployments
//! selects the same columns (`deployment_columns!`), so [`deployment`] reads
//! them all the same way.

use crate::model::{Deployment, VersionInfo};
use crate::store::{HistoryQuery, MAX_PAGE, StoreError};
use tokio_postgres::Row;
use tokio_postgres::types::{Json, ToSql};

/// A parameter of a statement built at run time.
pub type Param = Box<dyn ToSql + Sync + Send>;

/// The columns every deployment query returns, from a row source named `d`.
macro_rules! deployment_columns {
    () => {
        "d.id, d.app, d.cluster, d.kind, d.state, d.version, d.source, d.rollback_to, d.git, \
         d.message, d.deployed_by, d.error, d.superseded_by, d.request_hash, d.created_at, \
         d.started_at, d.finished_at, d.owner, d.lease_expires_at, d.phase_deadline"
    };
}

/// Deployments with `active` (the target's pointer names it) and
/// `queue_position` (rank among the target's queued rows, by id).
///
/// `active` is a scalar subquery on the targets primary key, not `EXISTS`:
/// PostgreSQL may run an `EXISTS` as a hashed subplan, which reads the whole
/// targets table once per statement, a cost that grows with the number of
/// targets; the scalar subquery is one index probe per row returned.
macro_rules! select_deployments {
    () => {
        concat!(
            "SELECT ",
            deployment_columns!(),
            ", COALESCE((SELECT t.active_deployment_id = d.id FROM targets t \
                         WHERE t.app = d.app AND t.cluster = d.cluster), false) AS active, \
             CASE WHEN d.state = 'queued' THEN \
                 (SELECT count(*) FROM deployments q WHERE q.app = d.app AND q.cluster = d.cluster \
                  AND q.state = 'queued' AND q.id <= d.id) \
             END AS queue_position \
             FROM deployments d "
        )
    };
}

/// True when the writer holds the target whose app and cluster the first two
/// expressions give: its fence (owner, epoch: the last two) is the target
/// lease's, or it passed none. `FOR SHARE` holds the lease row until the
/// write commits, so a take-over either waits for the write or fences it.
macro_rules! fenced {
    ($app:literal, $cluster:literal, $owner:literal, $epoch:literal) => {
        concat!(
            "(",
            $owner,
            "::text IS NULL OR EXISTS (SELECT 1 FROM target_leases tl \
             WHERE tl.app = ",
            $app,
            " AND tl.cluster = ",
            $cluster,
            " AND tl.owner = ",
            $owner,
            "::text AND tl.epoch = ",
            $epoch,
            "::bigint FOR SHARE))"
        )
    };
}

/// The states in which a step may run: at most one row per target.
macro_rules! running {
    () => {
        "('building', 'pushing', 'activating')"
    };
}

pub const GET: &str = concat!(select_deployments!(), "WHERE d.id = $1");

pub const BY_IDEMPOTENCY_KEY: &str = concat!(
    select_deployments!(),
    "WHERE d.app = $1 AND d.cluster = $2 AND d.idempotency_key = $3"
);

/// A deployment id's random part (`model::random_part`), written exactly as
/// the index `deployments_random_part` is.
macro_rules! random_part {
    () => {
        "replace(substr(d.id::text, 16), '-', '')"
    };
}

/// Deployments whose random part is in [$1, $2) (`store::short_id_range`),
/// at most $3. No ORDER BY: sorting by id could tempt the planner into
/// the primary key; the caller sorts the few rows.
pub const BY_SHORT_ID: &str = concat!(
    select_deployments!(),
    "WHERE ",
    random_part!(),
    " ~>=~ $1 AND ",
    random_part!(),
    " ~<~ $2 LIMIT $3"
);

/// Targets by a skip scan of `deployments_target_history` (each step one
/// index seek for the next (app, cluster)), at most $1, with the active
/// version and whether a deployment runs (`deployments_one_running`).
pub const TARGET_SUMMARIES: &str = "\
    WITH RECURSIVE pairs(app, cluster) AS ( \
        (SELECT app, cluster FROM deployments ORDER BY app, cluster LIMIT 1) \
        UNION ALL \
        SELECT n.app, n.cluster FROM pairs p, LATERAL ( \
            SELECT d.app, d.cluster FROM deployments d \
            WHERE (d.app, d.cluster) > (p.app, p.cluster) \
            ORDER BY d.app, d.cluster LIMIT 1) n \
    ) \
    SELECT p.app, p.cluster, t.active_version, \
           EXISTS (SELECT 1 FROM deployments d WHERE d.app = p.app AND d.cluster = p.cluster \
                   AND d.state IN ('building', 'pushing', 'activating')) AS running \
    FROM (SELECT * FROM pairs LIMIT $1) p \
    LEFT JOIN targets t ON t.app = p.app AND t.cluster = p.cluster \
    ORDER BY p.app, p.cluster";

pub const STATE: &str = "SELECT state FROM deployments WHERE id = $1";

pub const TARGET_OF: &str = "SELECT app, cluster FROM deployments WHERE id = $1";

/// Insert the deployment and its first event unless the target already used
/// the idempotency key. The event's payload gets the queue position the row
/// has when inserted; zero rows back means the key was taken.
pub const CREATE: &str = concat!(
    "
WITH inserted AS (
    INSERT INTO deployments (id, app, cluster, kind, state, source, rollback_to, git, message,
                             deployed_by, idempotency_key, request_hash, created_at, last_seq)
    SELECT $1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10, $11, $12, 1
    WHERE ",
    fenced!("$2", "$3", "$14", "$15"),
    "
    ON CONFLICT ON CONSTRAINT deployments_idempotency DO NOTHING
    RETURNING id
), position AS (
    SELECT count(*) + 1 AS n FROM deployments
    WHERE app = $2 AND cluster = $3 AND state = 'queued' AND id < $1
), event AS (
    INSERT INTO deployment_events (deployment_id, seq, kind, data, created_at)
    SELECT inserted.id, 1, 'deployment',
           jsonb_set($13::jsonb, '{queue_position}', to_jsonb(position.n)), $12
    FROM inserted, position
)
SELECT position.n FROM inserted, position"
);

/// The compare-and-set, the optional mint, the `state` event, the active
/// pointer and where the version was live, in one statement. Parameters: $1 id, $2 expected state, $3 new
/// state, $4 at, $5 artifact to mint, $6 version to set, $7 whether the new
/// state is terminal, $8 error, $9 superseded_by, $10 lease owner, $11 lease
/// expiry, $12 phase deadline, $13 the event's payload, $14 and $15 the
/// writer's fence (owner, epoch; NULL: unfenced).
///
/// `cur` locks the row first, so the counter only moves when the update will
/// match; zero rows back means nothing was written.
pub const TRANSITION: &str = concat!(
    "
WITH cur AS (
    SELECT id, app, cluster, git FROM deployments
    WHERE id = $1::uuid AND state = $2::text AND ",
    fenced!("deployments.app", "deployments.cluster", "$14", "$15"),
    "
    FOR UPDATE OF deployments
), counter AS (
    INSERT INTO app_version_counters AS c (app, last_number)
    SELECT app, 1 FROM cur WHERE $5::text IS NOT NULL
    ON CONFLICT (app) DO UPDATE SET last_number = c.last_number + 1
    RETURNING app, last_number
), minted AS (
    INSERT INTO versions (app, number, version, artifact, git, deployment_id, created_at, built_on)
    SELECT counter.app, counter.last_number, 'v' || counter.last_number, $5, cur.git, cur.id,
           $4::timestamptz, cur.cluster
    FROM counter, cur
    RETURNING version
), d AS (
    UPDATE deployments d SET
        state = $3::text,
        version = COALESCE((SELECT version FROM minted), $6::text, d.version),
        started_at = CASE WHEN d.state = 'queued' THEN COALESCE(d.started_at, $4)
                          ELSE d.started_at END,
        finished_at = CASE WHEN $7::boolean THEN $4 ELSE d.finished_at END,
        error = COALESCE($8::text, d.error),
        superseded_by = COALESCE($9::uuid, d.superseded_by),
        owner = CASE WHEN $7 THEN NULL ELSE COALESCE($10::text, d.owner) END,
        lease_expires_at = CASE WHEN $7 THEN NULL ELSE COALESCE($11::timestamptz, d.lease_expires_at) END,
        phase_deadline = CASE WHEN $7 THEN NULL ELSE $12::timestamptz END,
        last_seq = d.last_seq + 1
    FROM cur
    WHERE d.id = cur.id AND d.state = $2
    RETURNING d.*
), event AS (
    INSERT INTO deployment_events (deployment_id, seq, kind, data, created_at)
    SELECT id, last_seq, 'state', $13::jsonb, $4 FROM d
), target AS (
    INSERT INTO targets (app, cluster, active_deployment_id, active_version, active_since)
    SELECT app, cluster, id, version, $4 FROM d WHERE state = 'succeeded'
    ON CONFLICT (app, cluster) DO UPDATE SET
        active_deployment_id = excluded.active_deployment_id,
        active_version = excluded.active_version,
        active_since = excluded.active_since
), undrift AS (
    DELETE FROM target_drift td USING d
    WHERE d.state = 'succeeded' AND td.app = d.app AND td.cluster = d.cluster
), owed AS (
    -- A deploy that ended while building or pushing, with no version: its
    -- cluster is owed a cleanup.
    INSERT INTO owed_cleanups (id, app, cluster, since)
    SELECT id, app, cluster, $4 FROM d
    WHERE kind = 'deploy' AND version IS NULL AND $2::text IN ('building', 'pushing')
      AND state IN ('failed', 'cancelled', 'interrupted')
    ON CONFLICT (id) DO NOTHING
), live AS (
    INSERT INTO target_versions (app, cluster, version, active_since, active_until, deployment_id)
    SELECT app, cluster, version, $4, NULL, id FROM d WHERE state = 'succeeded'
    ON CONFLICT (app, cluster, version) DO UPDATE SET
        active_since = excluded.active_since,
        active_until = NULL,
        deployment_id = excluded.deployment_id
), replaced AS (
    -- `targets` as this statement's snapshot has it: the pointer before the move.
    UPDATE target_versions tv SET active_until = $4
    FROM d, targets t
    WHERE d.state = 'succeeded' AND t.app = d.app AND t.cluster = d.cluster
      AND tv.app = t.app AND tv.cluster = t.cluster AND tv.version = t.active_version
      AND t.active_version <> d.version
)
SELECT ",
    deployment_columns!(),
    ", d.last_seq, d.state = 'succeeded' AS active, NULL::bigint AS queue_position FROM d"
);

/// Whether the writer holds target ($1, $2) with fence ($3, $4); the drift
/// statements write only when it does, and answer it.
macro_rules! drift_fence {
    () => {
        concat!(
            "WITH fence AS (SELECT ",
            fenced!("$1", "$2", "$3", "$4"),
            " AS held) "
        )
    };
}

pub const SET_DRIFT: &str = concat!(
    drift_fence!(),
    ", written AS (\
    INSERT INTO target_drift (app, cluster, version, error, deployment_id, since) \
    SELECT $1, $2, $5, $6, $7, $8 FROM fence WHERE held \
    ON CONFLICT (app, cluster) DO UPDATE SET version = excluded.version, \
        error = excluded.error, deployment_id = excluded.deployment_id, since = excluded.since) \
    SELECT held FROM fence"
);

pub const DRIFTED: &str = "SELECT app, cluster, version, error, deployment_id, since \
     FROM target_drift ORDER BY app, cluster";

pub const CLEAR_DRIFT: &str = concat!(
    drift_fence!(),
    ", cleared AS (DELETE FROM target_drift \
     WHERE app = $1 AND cluster = $2 AND (SELECT held FROM fence)) \
     SELECT held FROM fence"
);

/// Bump `last_seq` by the number of events (the row lock orders concurrent
/// appenders) and insert the events under the seqs just reserved. Zero rows
/// back means the deployment ended or does not exist.
pub const APPEND: &str = concat!(
    "
WITH d AS (
    UPDATE deployments SET last_seq = last_seq + cardinality($2::text[])
    WHERE id = $1 AND (state = 'queued' OR state IN ",
    running!(),
    ") AND ",
    fenced!("deployments.app", "deployments.cluster", "$4", "$5"),
    "
    RETURNING id, last_seq
), inserted AS (
    INSERT INTO deployment_events (deployment_id, seq, kind, data)
    SELECT d.id, d.last_seq - cardinality($2::text[]) + e.n, e.kind, e.data
    FROM d, unnest($2::text[], $3::jsonb[]) WITH ORDINALITY AS e(kind, data, n)
)
SELECT last_seq FROM d"
);

pub const EVENTS_AFTER: &str = "SELECT seq, kind, data FROM deployment_events \
     WHERE deployment_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";

/// The name of the version a plain rollback of target ($1, $2) goes to, as
/// a scalar subquery: of the versions that were active on the target, the
/// one that last became active, other than the active one. The one place
/// the rule is written; the target view and `PREVIOUS_VERSION` use it.
macro_rules! rollback_target {
    () => {
        "(SELECT p.version FROM target_versions p WHERE p.app = $1 AND p.cluster = $2 \
            AND p.version IS DISTINCT FROM (SELECT t.active_version FROM targets t \
                                            WHERE t.app = $1 AND t.cluster = $2) \
          ORDER BY p.active_since DESC, p.deployment_id DESC LIMIT 1)"
    };
}

/// The target view in one round trip: its active pointer, its running
/// deployment, then its queued ones by id. One row per deployment, each
/// carrying the pointer's columns; one row of NULL deployment columns when
/// there is none (the pointer may still be there).
pub const TARGET: &str = concat!(
    "SELECT x.*, t.active_version, t.active_deployment_id, t.active_since, \
     td.version AS drift_version, td.error AS drift_error, \
     td.deployment_id AS drift_deployment_id, td.since AS drift_since, \
     ",
    rollback_target!(),
    " AS rollback_to_version \
     FROM (SELECT 1) AS one \
     LEFT JOIN targets t ON t.app = $1 AND t.cluster = $2 \
     LEFT JOIN target_drift td ON td.app = $1 AND td.cluster = $2 \
     LEFT JOIN LATERAL (",
    select_deployments!(),
    "WHERE d.app = $1 AND d.cluster = $2 AND d.state IN ",
    running!(),
    " UNION ALL (",
    select_deployments!(),
    "WHERE d.app = $1 AND d.cluster = $2 AND d.state = 'queued' ORDER BY d.id)\
     ) AS x ON true \
     ORDER BY x.state = 'queued', x.id"
);

/// Versions with where they are or were live (`live`, a JSON array by
/// cluster, from `target_versions`).
macro_rules! select_versions {
    () => {
        "SELECT v.number, v.version, v.artifact, v.git, v.created_at, v.deployment_id, \
                v.built_on, v.pinned, \
                COALESCE((SELECT jsonb_agg(jsonb_build_object( \
                    'cluster', tv.cluster, 'since', tv.active_since, 'until', tv.active_until, \
                    'active', EXISTS (SELECT 1 FROM targets t WHERE t.app = tv.app \
                                      AND t.cluster = tv.cluster \
                                      AND t.active_version = tv.version)) \
                    ORDER BY tv.cluster) \
                  FROM target_versions tv WHERE tv.app = v.app AND tv.version = v.version), \
                  '[]'::jsonb) AS live \
         FROM versions v "
    };
}

/// One more than the page, so the caller knows whether there is a next one.
pub const VERSIONS: &str = concat!(
    select_versions!(),
    "WHERE v.app = $1 AND v.number < $2 ORDER BY v.number DESC LIMIT $3"
);

pub const VERSION: &str = concat!(select_versions!(), "WHERE v.app = $1 AND v.version = $2");

pub const PREVIOUS_VERSION: &str = concat!(
    select_versions!(),
    "WHERE v.app = $1 AND v.version = ",
    rollback_target!()
);

pub const PIN: &str = "UPDATE versions SET pinned = $3 WHERE app = $1 AND version = $2";

pub const RENEW_LEASES: &str = concat!(
    "UPDATE deployments SET lease_expires_at = $3 \
     WHERE owner = $1 AND id = ANY($2) AND state IN ",
    running!()
);

pub const TAKE_OVER_LAPSED: &str = "UPDATE deployments \
     SET owner = $3, lease_expires_at = $4, phase_deadline = $5 \
     WHERE id = $1 AND state = $2 AND lease_expires_at < $6";

pub const TAKE_OVER_OWNED: &str = "UPDATE deployments \
     SET owner = $3, lease_expires_at = $4, phase_deadline = $5 \
     WHERE id = $1 AND state = $2 AND owner = $6";

pub const TAKE_OVER_OVERDUE: &str = "UPDATE deployments \
     SET owner = $3, lease_expires_at = $4, phase_deadline = $5 \
     WHERE id = $1 AND state = $2 AND phase_deadline < $6";

pub const OVERDUE_PHASES: &str = concat!(
    select_deployments!(),
    "WHERE d.state IN ",
    running!(),
    " AND d.phase_deadline < $1 ORDER BY d.id"
);

pub const EXPIRED_LEASES: &str = concat!(
    select_deployments!(),
    "WHERE d.state IN ",
    running!(),
    " AND d.lease_expires_at < $1 ORDER BY d.id"
);

pub const OWNED_BY: &str = concat!(
    select_deployments!(),
    "WHERE d.state IN ",
    running!(),
    " AND d.owner = $1 ORDER BY d.id"
);

/// Upsert instance $1 at address $2 with peer key hash $4, live for $3
/// milliseconds, and extend its target leases as long; the targets it still
/// owns.
pub const HEARTBEAT: &str = "\
WITH gone AS (
    -- Instances silent for a day (killed, never retired) are forgotten.
    DELETE FROM instances WHERE expires_at < clock_timestamp() - interval '1 day'
    RETURNING id
), copies AS (
    DELETE FROM source_copies c USING gone WHERE c.instance = gone.id
), me AS (
    INSERT INTO instances (id, address, expires_at, peer_key_sha256)
    VALUES ($1, $2, clock_timestamp() + $3::bigint * interval '1 millisecond', $4)
    ON CONFLICT (id) DO UPDATE SET address = excluded.address,
        peer_key_sha256 = excluded.peer_key_sha256,
        heartbeat_at = clock_timestamp(), expires_at = excluded.expires_at
)
UPDATE target_leases SET expires_at = clock_timestamp() + $3::bigint * interval '1 millisecond'
WHERE owner = $1
RETURNING app, cluster, epoch";

/// Take target ($1, $2) for owner $3 for $4 milliseconds when it is free,
/// lapsed, the owner's already, or held by $5 (an owner shown dead); the
/// epoch goes up when the owner changes.
pub const ACQUIRE_TARGET: &str = "\
INSERT INTO target_leases AS tl (app, cluster, owner, epoch, expires_at)
VALUES ($1, $2, $3, 1, clock_timestamp() + $4::bigint * interval '1 millisecond')
ON CONFLICT (app, cluster) DO UPDATE SET
    owner = excluded.owner,
    epoch = CASE WHEN tl.owner = excluded.owner THEN tl.epoch ELSE tl.epoch + 1 END,
    expires_at = excluded.expires_at
WHERE tl.owner = excluded.owner OR tl.expires_at < clock_timestamp()
   OR tl.owner = $5::text
RETURNING epoch";

/// Who holds target ($1, $2), and where it can be reached.
pub const TARGET_OWNER: &str = "\
SELECT tl.owner, i.address FROM target_leases tl
LEFT JOIN instances i ON i.id = tl.owner AND i.expires_at > clock_timestamp()
WHERE tl.app = $1 AND tl.cluster = $2";

/// Release target ($1, $2) if owner $3 holds it with epoch $4; the row (and
/// so the epoch) stays.
pub const RELEASE_TARGET: &str = "UPDATE target_leases SET expires_at = 'epoch' \
     WHERE app = $1 AND cluster = $2 AND owner = $3 AND epoch = $4";

/// Instance $1 goes away: its targets released, its running deployments'
/// leases expired, its row removed.
pub const RETIRE_INSTANCE: &str = concat!(
    "\
WITH targets AS (
    UPDATE target_leases SET expires_at = 'epoch' WHERE owner = $1
), leases AS (
    UPDATE deployments SET lease_expires_at = 'epoch'
    WHERE owner = $1 AND state IN ",
    running!(),
    "
)
DELETE FROM instances WHERE id = $1"
);

/// The live instances with the targets each owns (a lease not lapsed).
pub const INSTANCES: &str = "\
SELECT i.id, i.address, i.started_at, i.heartbeat_at,
       COALESCE(jsonb_agg(jsonb_build_object('app', tl.app, 'cluster', tl.cluster,
                                             'epoch', tl.epoch)
                          ORDER BY tl.app, tl.cluster)
                FILTER (WHERE tl.app IS NOT NULL), '[]') AS targets
FROM instances i
LEFT JOIN target_leases tl ON tl.owner = i.id AND tl.expires_at > clock_timestamp()
WHERE i.expires_at > clock_timestamp()
GROUP BY i.id ORDER BY i.started_at, i.id";

/// Targets with unended deployments and no live owner.
pub const ORPHANED_TARGETS: &str = concat!(
    "SELECT DISTINCT d.app, d.cluster FROM deployments d \
     LEFT JOIN target_leases tl ON tl.app = d.app AND tl.cluster = d.cluster \
     WHERE (d.state = 'queued' OR d.state IN ",
    running!(),
    ") AND (tl.app IS NULL OR tl.expires_at < clock_timestamp()) ORDER BY d.app, d.cluster"
);

/// The peer key hash of live instance $1.
pub const PEER_KEY: &str = "SELECT peer_key_sha256 FROM instances \
     WHERE id = $1 AND expires_at > clock_timestamp()";

pub const RECORD_SOURCE_COPY: &str = "INSERT INTO source_copies (digest, instance) \
     VALUES ($1, $2) ON CONFLICT DO NOTHING";

/// Addresses of live instances other than $2 holding source $1.
pub const SOURCE_HOLDERS: &str = "SELECT i.address FROM source_copies c \
     JOIN instances i ON i.id = c.instance AND i.expires_at > clock_timestamp() \
     WHERE c.digest = $1 AND c.instance <> $2 ORDER BY i.heartbeat_at DESC";

pub const QUEUED_TARGETS: &str =
    "SELECT DISTINCT app, cluster FROM deployments WHERE state = 'queued' ORDER BY app, cluster";

/// The history statement for `query`: newest first, one row more than the
/// page. Only the filters asked for are in the text, so each variant gets a
/// plan on its keyset index (`deployments_target_history` with a cluster,
/// `deployments_app_history` without) rather than one generic plan for all.
pub fn history_sql(query: &HistoryQuery) -> (String, Vec<Param>) {
    let mut sql = String::from(concat!(select_deployments!(), "WHERE d.app = $1"));
    let mut params: Vec<Param> = vec![Box::new(query.app.clone())];
    let mut filter = |condition: &str, value: Param| {
        params.push(value);
        sql.push_str(&format!(" AND d.{condition} ${}", params.len()));
    };
    if let Some(cluster) = &query.cluster {
        filter("cluster =", Box::new(cluster.clone()));
    }
    if let Some(state) = query.state {
        filter("state =", Box::new(state.as_str()));
    }
    if let Some(before) = query.before {
        filter("id <", Box::new(before));
    }
    params.push(Box::new(i64::from(page_size(query.limit)) + 1));
    sql.push_str(&format!(" ORDER BY d.id DESC LIMIT ${}", params.len()));
    (sql, params)
}

/// The page size a listing uses for a requested `limit`: 1..=[`MAX_PAGE`].
pub fn page_size(limit: u32) -> u32 {
    limit.clamp(1, MAX_PAGE)
}

/// A row of any query built on `select_deployments!` (or returning its columns).
pub fn deployment(row: &Row) -> Result<Deployment, StoreError> {
    let git: Option<Json<_>> = row.try_get("git")?;
    Ok(Deployment {
        id: row.try_get("id")?,
        app: row.try_get("app")?,
        cluster: row.try_get("cluster")?,
        kind: parse_column(row, "kind")?,
        state: parse_column(row, "state")?,
        active: row.try_get("active")?,
        version: row.try_get("version")?,
        source: row.try_get("source")?,
        rollback_to: row.try_get("rollback_to")?,
        git: git.map(|Json(git)| git),
        message: row.try_get("message")?,
        deployed_by: row.try_get("deployed_by")?,
        error: row.try_get("error")?,
        superseded_by: row.try_get("superseded_by")?,
        queue_position: row.try_get("queue_position")?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

pub fn version_info(row: &Row) -> Result<VersionInfo, StoreError> {
    let git: Option<Json<_>> = row.try_get("git")?;
    Ok(VersionInfo {
        version: row.try_get("version")?,
        artifact: row.try_get("artifact")?,
        git: git.map(|Json(git)| git),
        created_at: row.try_get("created_at")?,
        deployment_id: row.try_get("deployment_id")?,
        built_on: row.try_get("built_on")?,
        pinned: row.try_get("pinned")?,
        live: row.try_get::<_, Json<_>>("live")?.0,
    })
}

/// A text column holding a `State` or `Kind`.
pub fn parse_column<T: std::str::FromStr>(row: &Row, column: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    let text: &str = row.try_get(column)?;
    text.parse()
        .map_err(|e| StoreError::Backend(format!("stored {column} is unreadable: {e}")))
}
