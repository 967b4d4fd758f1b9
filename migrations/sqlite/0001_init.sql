-- deployd schema, SQLite (mirrors ../postgres). The invariants live here, not only in the code:
-- one running deployment per target, a version wherever one is required,
-- unique idempotency keys, gapless per-deployment event sequences.

CREATE TABLE versions (
    app           text        NOT NULL,
    number        integer      NOT NULL CHECK (number > 0),
    version       text        NOT NULL,
    artifact      text        NOT NULL,
    git           text,
    deployment_id text        NOT NULL,
    created_at    text NOT NULL,
    pinned        integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (app, number),
    UNIQUE (app, version),
    CHECK (version = 'v' || CAST(number AS TEXT))
);

-- The per-app version counter: minting takes this row's lock, so concurrent
-- builds of one app on several clusters get v1, v2, … with no gaps.
CREATE TABLE app_version_counters (
    app          text   PRIMARY KEY,
    last_number  integer NOT NULL
);

CREATE TABLE deployments (
    id               text        PRIMARY KEY,
    app              text        NOT NULL,
    cluster          text        NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('deploy', 'rollback')),
    state            text        NOT NULL CHECK (state IN ('queued', 'building', 'pushing',
                         'activating', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    version          text,
    source           text,
    rollback_to      text,
    git              text,
    message          text        NOT NULL DEFAULT '',
    deployed_by      text        NOT NULL,
    error            text        CHECK (length(CAST(error AS BLOB)) <= 4096),
    superseded_by    text,
    idempotency_key  text,
    request_hash     text        NOT NULL DEFAULT '',
    created_at       text NOT NULL,
    started_at       text,
    finished_at      text,
    owner            text,
    lease_expires_at text,
    phase_deadline   text,
    last_seq         integer      NOT NULL DEFAULT 0,
    CONSTRAINT deployments_version_required
        CHECK (state NOT IN ('activating', 'succeeded') OR version IS NOT NULL),
    CONSTRAINT deployments_idempotency UNIQUE (app, cluster, idempotency_key),
    CONSTRAINT deployments_version_fk FOREIGN KEY (app, version) REFERENCES versions (app, version)
);

-- At most one deployment per target in a running phase: the lock is the index.
CREATE UNIQUE INDEX deployments_one_running ON deployments (app, cluster)
    WHERE state IN ('building', 'pushing', 'activating');
-- Keyset history, per target and per app: cost independent of table size.
CREATE INDEX deployments_target_history ON deployments (app, cluster, id DESC);
CREATE INDEX deployments_app_history ON deployments (app, id DESC);
CREATE INDEX deployments_queued ON deployments (app, cluster, id) WHERE state = 'queued';
CREATE INDEX deployments_leases ON deployments (lease_expires_at)
    WHERE state IN ('building', 'pushing', 'activating');

CREATE TABLE deployment_events (
    deployment_id text        NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    seq           integer      NOT NULL CHECK (seq > 0),
    kind          text        NOT NULL,
    data          text       NOT NULL,
    created_at    text NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (deployment_id, seq)
);

-- The active pointer: "active" is this row, never a flag on many deployments.
CREATE TABLE targets (
    app                  text        NOT NULL,
    cluster              text        NOT NULL,
    active_deployment_id text        NOT NULL REFERENCES deployments (id),
    active_version       text        NOT NULL,
    active_since         text NOT NULL,
    PRIMARY KEY (app, cluster),
    FOREIGN KEY (app, active_version) REFERENCES versions (app, version)
);
