//! Plumbing shared by `PgStore`'s `Store` methods: one-statement queries,
//! row mapping helpers, and how driver and pool errors become [`StoreError`]s
//! (unreachable → `Unavailable`, anything else → `Backend`).

use super::*;

/// Plumbing shared by the `Store` methods.
impl PgStore {
    pub(super) async fn query(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Row>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.query(&statement, params).await?)
    }

    pub(super) async fn deployments(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Deployment>, StoreError> {
        self.query(sql, params)
            .await?
            .iter()
            .map(deployment)
            .collect()
    }

    pub(super) async fn leases(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<LeaseInfo>, StoreError> {
        let rows = self.query(sql, params).await?;
        rows.iter()
            .map(|row| {
                Ok(LeaseInfo {
                    deployment: deployment(row)?,
                    owner: row.try_get("owner")?,
                    lease_expires_at: row.try_get("lease_expires_at")?,
                    phase_deadline: row.try_get("phase_deadline")?,
                })
            })
            .collect()
    }

    /// What went wrong when a compare-and-set matched no row: the state
    /// moved on, the deployment is gone, or (`fenced`: the write carried a
    /// fence, and the state is still the expected one) the fence refused it.
    pub(super) async fn stale_or_missing(
        &self,
        id: Uuid,
        expected: State,
        fenced: bool,
    ) -> StoreError {
        let rows = match self.query(sql::STATE, &[&id]).await {
            Ok(rows) => rows,
            Err(e) => return e,
        };
        match rows.first().map(|row| parse_column(row, "state")) {
            None => StoreError::NotFound(id),
            Some(Ok(current)) if fenced && current == expected => match self.target_of(id).await {
                Ok((app, cluster)) => StoreError::Fenced { app, cluster },
                Err(e) => e,
            },
            Some(Ok(current)) => StoreError::Stale {
                id,
                expected,
                current,
            },
            Some(Err(e)) => e,
        }
    }

    /// The (app, cluster) of a deployment, for errors that name the target.
    pub(super) async fn target_of(&self, id: Uuid) -> Result<(String, String), StoreError> {
        let rows = self.query(sql::TARGET_OF, &[&id]).await?;
        let row = rows.first().ok_or(StoreError::NotFound(id))?;
        Ok((row.try_get("app")?, row.try_get("cluster")?))
    }

    /// Name the constraint a transition ran into, or pass the error on.
    pub(super) async fn refusal(
        &self,
        id: Uuid,
        set: Option<&str>,
        e: tokio_postgres::Error,
    ) -> StoreError {
        let constraint = e
            .as_db_error()
            .and_then(|db| db.constraint())
            .map(str::to_owned);
        match (constraint.as_deref(), set) {
            (Some("deployments_one_running"), _) => match self.target_of(id).await {
                Ok((app, cluster)) => StoreError::TargetBusy { app, cluster },
                Err(e) => e,
            },
            (Some("deployments_version_fk"), Some(version)) => match self.target_of(id).await {
                Ok((app, _)) => StoreError::UnknownVersion {
                    app,
                    version: version.to_string(),
                },
                Err(e) => e,
            },
            _ => e.into(),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> StoreError {
        if is_unavailable(&e) {
            StoreError::Unavailable(describe(&e))
        } else {
            StoreError::Backend(describe(&e))
        }
    }
}

impl From<PoolError> for StoreError {
    /// Failing to get a connection means the server is unreachable, refuses
    /// us, or is saturated: all answered as "unavailable".
    fn from(e: PoolError) -> StoreError {
        match e {
            PoolError::Backend(e) => StoreError::Unavailable(describe(&e)),
            PoolError::NoRuntimeSpecified => StoreError::Backend(e.to_string()),
            _ => StoreError::Unavailable(e.to_string()),
        }
    }
}

/// The error with its causes on one line: tokio-postgres keeps the server's
/// message (never our SQL) in the cause, not in its own `Display`. A URL's
/// password in it, should a driver ever echo one, is masked.
fn describe(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(inner) = cause {
        text.push_str(": ");
        text.push_str(&inner.to_string().replace('\n', " "));
        cause = inner.source();
    }
    crate::redact::url_passwords(&text).into_owned()
}

/// Whether an error means the server cannot be reached or is going away,
/// rather than that this statement was wrong.
fn is_unavailable(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    if let Some(code) = e.code() {
        let code = code.code();
        // 08: connection exception; 57P0x: shutdown, cannot connect now;
        // 53300: too many connections.
        return code.starts_with("08") || code.starts_with("57P") || code == "53300";
    }
    std::error::Error::source(e).is_some_and(|source| source.is::<std::io::Error>())
}
