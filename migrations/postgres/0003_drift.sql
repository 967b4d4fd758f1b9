-- A target whose cluster may not run its active version: after an activation
-- that did not succeed, putting the active version back (a restore) failed.
-- One row per drifted target; a later `succeeded` deletes it in the same
-- transaction that moves the active pointer, and so does a restore that works.
-- No foreign keys: compaction may delete the deployment or the version named.
CREATE TABLE target_drift (
    app           text        NOT NULL,
    cluster       text        NOT NULL,
    version       text,       -- what the restore tried to put back; NULL: nothing was active
    error         text        NOT NULL,
    deployment_id uuid        NOT NULL,
    since         timestamptz NOT NULL,
    PRIMARY KEY (app, cluster)
);
