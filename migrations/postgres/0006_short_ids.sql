-- Short ids (#15): a request may name a deployment by a prefix of its id's
-- random part (the hex digits after the UUIDv7's timestamp and version
-- digit, model::random_part). The random part is not a prefix of the uuid,
-- so the primary key cannot find it; this expression index can. `id::text`
-- is uuid_out, immutable, so it may be indexed. text_pattern_ops compares
-- bytes: `sql::BY_SHORT_ID` asks for the range [prefix, prefix || 'g') with
-- ~>=~ and ~<~, which this index answers in any plan, generic ones included
-- (a LIKE on a bound parameter would not use it there).
-- Building it locks writes to deployments for as long as it takes (about a
-- second per million rows).
CREATE INDEX deployments_random_part
    ON deployments ((replace(substr(id::text, 16), '-', '')) text_pattern_ops);
