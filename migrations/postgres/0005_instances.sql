-- Several deployd instances on one PostgreSQL (issue 14).

-- The live instances: each registers at start, renews `expires_at` with its
-- heartbeat, and deletes its row when it shuts down. `address` is where the
-- others forward requests for the targets it owns (`server.advertise_url`);
-- `peer_key_sha256` checks the key it shows when it fetches a source from
-- another instance (the key itself never leaves the process).
CREATE TABLE instances (
    id              text        PRIMARY KEY,
    address         text        NOT NULL,
    peer_key_sha256 text        NOT NULL,
    started_at   timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);

-- Which instance owns a target: the one whose actor serializes it. Taken
-- with a compare-and-set on a lapsed (or released) row; `epoch` goes up
-- each time the owner changes, and every write of the target's deployments
-- names the owner and epoch it holds, so a former owner (paused, cut off)
-- writes nothing once another took the target. Times are the database's
-- clock, so instances' clocks need not agree.
CREATE TABLE target_leases (
    app        text        NOT NULL,
    cluster    text        NOT NULL,
    owner      text        NOT NULL,
    epoch      bigint      NOT NULL,
    expires_at timestamptz NOT NULL,
    PRIMARY KEY (app, cluster)
);
CREATE INDEX target_leases_owner ON target_leases (owner);

-- Which instances hold an uploaded source in their data dir: an owner that
-- lacks a deploy's source fetches it from one of them.
CREATE TABLE source_copies (
    digest   text NOT NULL,
    instance text NOT NULL,
    PRIMARY KEY (digest, instance)
);

-- Every statement that stores events tells every listening instance, once
-- per deployment, the newest seq it stored: `<deployment id> <seq>`. The
-- notification is sent at commit, so a listener never hears of an event it
-- cannot read yet.
CREATE FUNCTION deployd_notify_events() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('deployd_events', e.deployment_id::text || ' ' || max(e.seq))
    FROM new_events e
    GROUP BY e.deployment_id;
    RETURN NULL;
END
$$;

CREATE TRIGGER deployment_events_notify
    AFTER INSERT ON deployment_events
    REFERENCING NEW TABLE AS new_events
    FOR EACH STATEMENT EXECUTE FUNCTION deployd_notify_events();
