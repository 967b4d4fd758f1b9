-- deployd schema, PostgreSQL. The invariants live here, not only in the code:
-- one running deployment per target, a version wherever one is required,
-- unique idempotency keys, gapless per-deployment event sequences.

CREATE TABLE versions (
    app           text        NOT NULL,
    number        bigint      NOT NULL CHECK (number > 0),
    version       text        NOT NULL,
    artifact      text        NOT NULL,
    git           jsonb,
    deployment_id uuid        NOT NULL,
    created_at    timestamptz NOT NULL,
    pinned        boolean     NOT NULL DEFAULT false,
    PRIMARY KEY (app, number),
    UNIQUE (app, version),
    CHECK (version = 'v' || number::text)
);

-- The per-app version counter: minting takes this row's lock, so concurrent
-- builds of one app on several clusters get v1, v2, … with no gaps.
CREATE TABLE app_version_counters (
    app          text   PRIMARY KEY,
    last_number  bigint NOT NULL
);

CREATE TABLE deployments (
    id               uuid        PRIMARY KEY,
    app              text        NOT NULL,
    cluster          text        NOT NULL,
    kind             text        NOT NULL CHECK (kind IN ('deploy', 'rollback')),
    state            text        NOT NULL CHECK (state IN ('queued', 'building', 'pushing',
                         'activating', 'succeeded', 'failed', 'cancelled', 'interrupted')),
    version          text,
    source           text,
    rollback_to      text,
    git              jsonb,
    message          text        NOT NULL DEFAULT '',
    deployed_by      text        NOT NULL,
    error            text        CHECK (octet_length(error) <= 4096),
    superseded_by    uuid,
    idempotency_key  text,
    request_hash     text        NOT NULL DEFAULT '',
    created_at       timestamptz NOT NULL,
    started_at       timestamptz,
    finished_at      timestamptz,
    owner            text,
    lease_expires_at timestamptz,
    phase_deadline   timestamptz,
    last_seq         bigint      NOT NULL DEFAULT 0,
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
    deployment_id uuid        NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    seq           bigint      NOT NULL CHECK (seq > 0),
    kind          text        NOT NULL,
    data          jsonb       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment_id, seq)
);

-- The active pointer: "active" is this row, never a flag on many deployments.
CREATE TABLE targets (
    app                  text        NOT NULL,
    cluster              text        NOT NULL,
    active_deployment_id uuid        NOT NULL REFERENCES deployments (id),
    active_version       text        NOT NULL,
    active_since         timestamptz NOT NULL,
    PRIMARY KEY (app, cluster),
    FOREIGN KEY (app, active_version) REFERENCES versions (app, version)
);
