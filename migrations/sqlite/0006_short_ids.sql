-- Short ids (#15), mirrors ../postgres/0006_short_ids.sql: a request may
-- name a deployment by a prefix of its id's random part (the hex digits after
-- the UUIDv7's timestamp and version digit, model::random_part). Ids are
-- stored as hyphenated text, so the random part is the text from its 16th
-- character without hyphens; `read::by_short_id` writes the same expression,
-- and asks for a range of it, which this index answers whatever the number
-- of deployments. (Number 6, like PostgreSQL's: SQLite has no 0005.)
CREATE INDEX deployments_random_part ON deployments (replace(substr(id, 16), '-', ''));
