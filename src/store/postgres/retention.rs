//! Retention's statements: what [`Store::compact`](crate::store::Store::compact)
//! keeps, written once as CTEs that the compaction step and the dry run
//! ([`Store::compaction_plan`](crate::store::Store::compaction_plan)) share.
//!
//! Parameters, in every statement: $1 releases kept per target (at least 2),
//! $2 attempts kept per target, $3 the cutoff for versions and succeeded
//! deployments, $4 the cutoff for attempts, $5 how many rows at most.
//!
//! Ended rows never change, so what one statement's snapshot saw of them
//! still holds when the next runs.

/// `kept_versions`: the versions kept for their own sake (active, among a
/// target's newest releases, pinned, young, needed by a deployment not yet
/// ended). `doomed_deployments`: the ended deployments retention lets go.
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
    UNION SELECT app, version FROM live WHERE rank <= $1::bigint
    UNION SELECT app, version FROM versions WHERE pinned OR created_at > $3::timestamptz
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
    WHERE d.state = 'succeeded' AND d.created_at <= $3::timestamptz
      AND NOT EXISTS (SELECT 1 FROM targets t WHERE t.app = d.app AND t.cluster = d.cluster
                      AND t.active_deployment_id = d.id)
      AND NOT EXISTS (SELECT 1 FROM target_versions tv
                      JOIN kept_versions k ON k.app = tv.app AND k.version = tv.version
                      WHERE tv.deployment_id = d.id)
    UNION ALL
    SELECT a.id FROM attempts a
    WHERE a.rank > $2::bigint AND a.created_at <= $4::timestamptz
)"
    };
}

/// One step's deployments: at most $5 of the doomed, oldest first.
pub const DELETE_DEPLOYMENTS: &str = concat!(
    retention!(),
    "
DELETE FROM deployments d
USING (SELECT id FROM doomed_deployments ORDER BY id LIMIT $5) doomed
WHERE d.id = doomed.id"
);

/// One step's versions: at most $5 not kept that no deployment has any more
/// (this statement sees the deployments the step just deleted). Rows a
/// concurrent writer holds (a rollback's foreign key check) are skipped for
/// the next step rather than waited for.
pub const DELETE_VERSIONS: &str = concat!(
    retention!(),
    ", doomed AS (
    SELECT v.app, v.number FROM versions v
    WHERE NOT EXISTS (SELECT 1 FROM kept_versions k WHERE k.app = v.app AND k.version = v.version)
      AND NOT EXISTS (SELECT 1 FROM deployments d WHERE d.app = v.app AND d.version = v.version)
    ORDER BY v.app, v.number LIMIT $5
    FOR UPDATE OF v SKIP LOCKED
), deleted AS (
    DELETE FROM versions v USING doomed WHERE v.app = doomed.app AND v.number = doomed.number
    RETURNING v.app, v.version, v.artifact, v.built_on, v.deployment_id
), owed AS (
    INSERT INTO owed_cleanups (id, app, cluster, version, artifact, since)
    SELECT deployment_id, app, built_on, version, artifact, now() FROM deleted
    WHERE built_on IS NOT NULL
    ON CONFLICT (id) DO UPDATE SET version = excluded.version, artifact = excluded.artifact
)
SELECT * FROM deleted"
);

/// The dry run's deployments: what [`DELETE_DEPLOYMENTS`] would delete over
/// all its steps, at most $5.
pub const PLAN_DEPLOYMENTS: &str = concat!(
    retention!(),
    "
SELECT d.id, d.app, d.cluster, d.state, d.version
FROM deployments d JOIN doomed_deployments doomed ON doomed.id = d.id
ORDER BY d.id LIMIT $5"
);

/// The dry run's versions: not kept, and every deployment that has one is
/// doomed; with the clusters where each was live. At most $5.
pub const PLAN_VERSIONS: &str = concat!(
    retention!(),
    "
SELECT v.app, v.version, v.artifact,
       ARRAY(SELECT tv.cluster FROM target_versions tv
             WHERE tv.app = v.app AND tv.version = v.version ORDER BY tv.cluster) AS live_on
FROM versions v
WHERE NOT EXISTS (SELECT 1 FROM kept_versions k WHERE k.app = v.app AND k.version = v.version)
  AND NOT EXISTS (SELECT 1 FROM deployments d WHERE d.app = v.app AND d.version = v.version
                  AND d.id NOT IN (SELECT id FROM doomed_deployments))
ORDER BY v.app, v.number LIMIT $5"
);

/// Which of $1 (digests) a deployment other than those in $2 names.
pub const SOURCES_IN_USE: &str = "SELECT DISTINCT source FROM deployments \
     WHERE source = ANY($1::text[]) AND NOT (id = ANY($2::uuid[]))";

/// Which of $1 (ids) have not ended.
pub const UNENDED: &str = "SELECT id FROM deployments WHERE id = ANY($1::uuid[]) \
     AND state IN ('queued', 'building', 'pushing', 'activating')";

/// Owed cleanups, oldest first, at most $1.
pub const OWED: &str =
    "SELECT id, app, cluster, version, artifact FROM owed_cleanups ORDER BY since, id LIMIT $1";

pub const CLEANED: &str = "DELETE FROM owed_cleanups WHERE id = $1";

/// Which of $1 (ids) minted a version that still exists.
pub const BUILDERS: &str =
    "SELECT DISTINCT deployment_id FROM versions WHERE deployment_id = ANY($1::uuid[])";

/// Every version artifact that begins with $1.
pub const ARTIFACTS_UNDER: &str =
    "SELECT artifact FROM versions WHERE left(artifact, length($1)) = $1";
