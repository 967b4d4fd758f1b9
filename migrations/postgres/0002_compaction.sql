-- Compaction deletes versions no deployment references. The foreign key from
-- deployments (app, version) is checked for every version deleted; without an
-- index on the referencing side each check would scan all deployments.
CREATE INDEX deployments_by_version ON deployments (app, version);
