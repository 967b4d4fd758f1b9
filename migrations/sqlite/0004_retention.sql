-- SQLite mirror of ../postgres/0004_retention.sql.
-- Retention counts releases you can go back to, so the store remembers where
-- each version was live: one row per (target, version) that ever became the
-- target's active version. `active_since` is when it last did, `active_until`
-- when a later version replaced it (NULL while it is active, or for a version
-- no later one has replaced). Written in the transaction that moves the
-- active pointer; deleted with the version.
CREATE TABLE target_versions (
    app           text        NOT NULL,
    cluster       text        NOT NULL,
    version       text        NOT NULL,
    active_since  text NOT NULL,
    active_until  text,
    deployment_id text        NOT NULL,  -- the deployment that last made it active
    PRIMARY KEY (app, cluster, version),
    FOREIGN KEY (app, version) REFERENCES versions (app, version) ON DELETE CASCADE
);
CREATE INDEX target_versions_by_version ON target_versions (app, version);
-- Compaction asks, per succeeded deployment, whether it last made a kept version active.
CREATE INDEX target_versions_by_deployment ON target_versions (deployment_id);

-- The cluster whose build made a version: compaction runs that cluster's
-- cleanup step when it deletes the version. NULL for versions older than this.
ALTER TABLE versions ADD COLUMN built_on text;
UPDATE versions SET built_on = (SELECT d.cluster FROM deployments d WHERE d.id = versions.deployment_id);

-- What deployd still owes a cluster after a record went: an attempt that
-- ended without a version (its release directory, its cleanup step) or a
-- version compaction deleted (the same, with its artifact). Written in the
-- transaction that ends the attempt or deletes the version, deleted once the
-- cleanup is done, so a crash in between only delays it.
CREATE TABLE owed_cleanups (
    id       text        PRIMARY KEY,  -- the deployment whose build made what is owed
    app      text        NOT NULL,
    cluster  text        NOT NULL,     -- whose cleanup step runs
    version  text,                     -- NULL: an attempt
    artifact text,
    since    text NOT NULL
);

-- Sources are deleted once no deployment names them: find those that do.
CREATE INDEX deployments_by_source ON deployments (source) WHERE source IS NOT NULL;

-- Every activation the history still holds: the newest per (target, version).
INSERT INTO target_versions (app, cluster, version, active_since, active_until, deployment_id)
SELECT app, cluster, version, finished_at, replaced_at, id FROM (
    SELECT d.app, d.cluster, d.version, d.finished_at, d.id,
           lead(d.finished_at) OVER (PARTITION BY d.app, d.cluster
                                     ORDER BY d.finished_at, d.id) AS replaced_at,
           row_number() OVER (PARTITION BY d.app, d.cluster, d.version
                              ORDER BY d.finished_at DESC, d.id DESC) AS newest
    FROM deployments d
    WHERE d.state = 'succeeded' AND d.version IS NOT NULL AND d.finished_at IS NOT NULL
) activations
WHERE newest = 1;
