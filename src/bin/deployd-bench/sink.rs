//! Writing fills: binary COPY on PostgreSQL, prepared inserts inside one
//! transaction per chunk on SQLite. Versions go before the deployments that
//! name them, events after theirs, the active pointers and counters last.

use crate::env::Raw;
use crate::fill::{Chunk, Tail};
use chrono::{DateTime, Utc};
use deployd::model::GitInfo;
use deployd::store::sqlite::TIME_FORMAT;
use rusqlite::params;
use std::pin::pin;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{Json, ToSql, Type};

/// Write a chunk: versions, then deployments, then events.
pub async fn write(raw: &Raw, chunk: Chunk) -> anyhow::Result<()> {
    match raw {
        Raw::Pg(client) => pg_write(client, &chunk).await,
        Raw::Sqlite(conn) => Raw::sqlite(conn, move |c| sqlite_write(c, &chunk)).await,
    }
}

/// Write the active pointers and version counters, after every chunk.
pub async fn finish(raw: &Raw, tail: Tail) -> anyhow::Result<()> {
    match raw {
        Raw::Pg(client) => {
            let rows: Vec<Vec<&(dyn ToSql + Sync)>> = tail
                .counters
                .iter()
                .map(|(app, n)| vec![app as &(dyn ToSql + Sync), n])
                .collect();
            copy(client, "app_version_counters (app, last_number)", &[Type::TEXT, Type::INT8], &rows).await?;
            let rows: Vec<Vec<&(dyn ToSql + Sync)>> = tail
                .targets
                .iter()
                .map(|t| vec![&t.app as &(dyn ToSql + Sync), &t.cluster, &t.deployment_id, &t.version, &t.since])
                .collect();
            let types = [Type::TEXT, Type::TEXT, Type::UUID, Type::TEXT, Type::TIMESTAMPTZ];
            let table = "targets (app, cluster, active_deployment_id, active_version, active_since)";
            copy(client, table, &types, &rows).await?;
            client.batch_execute("ANALYZE").await?;
            Ok(())
        }
        Raw::Sqlite(conn) => {
            Raw::sqlite(conn, move |c| {
                let tx = c.transaction()?;
                for (app, n) in &tail.counters {
                    tx.execute("INSERT INTO app_version_counters (app, last_number) VALUES (?1, ?2)", params![app, n])?;
                }
                for t in &tail.targets {
                    tx.execute(
                        "INSERT INTO targets (app, cluster, active_deployment_id, active_version, active_since)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                        params![t.app, t.cluster, t.deployment_id.to_string(), t.version, ts(t.since)],
                    )?;
                }
                tx.commit()?;
                Ok(())
            })
            .await
        }
    }
}

async fn pg_write(client: &tokio_postgres::Client, chunk: &Chunk) -> anyhow::Result<()> {
    let version_texts: Vec<String> = chunk
        .versions
        .iter()
        .map(|v| format!("v{}", v.number))
        .collect();
    let gits: Vec<Option<Json<&GitInfo>>> = chunk
        .versions
        .iter()
        .map(|v| v.git.as_ref().map(Json))
        .collect();
    let rows: Vec<Vec<&(dyn ToSql + Sync)>> = chunk
        .versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            vec![
                &v.app as &(dyn ToSql + Sync),
                &v.number,
                &v.artifact,
                &v.deployment_id,
                &v.created_at,
                &version_texts[i],
                &gits[i],
            ]
        })
        .collect();
    let types = [
        Type::TEXT,
        Type::INT8,
        Type::TEXT,
        Type::UUID,
        Type::TIMESTAMPTZ,
        Type::TEXT,
        Type::JSONB,
    ];
    let table = "versions (app, number, artifact, deployment_id, created_at, version, git)";
    copy(client, table, &types, &rows).await?;

    let kinds: Vec<&str> = chunk.deployments.iter().map(|d| d.kind.as_str()).collect();
    let states: Vec<&str> = chunk.deployments.iter().map(|d| d.state.as_str()).collect();
    let gits: Vec<Option<Json<&GitInfo>>> = chunk
        .deployments
        .iter()
        .map(|d| d.git.as_ref().map(Json))
        .collect();
    let rows: Vec<Vec<&(dyn ToSql + Sync)>> = chunk
        .deployments
        .iter()
        .enumerate()
        .map(|(i, d)| {
            vec![
                &d.id as &(dyn ToSql + Sync),
                &d.app,
                &d.cluster,
                &kinds[i],
                &states[i],
                &d.version,
                &d.source,
                &d.rollback_to,
                &gits[i],
                &d.message,
                &"ci",
                &d.error,
                &d.created_at,
                &d.started_at,
                &d.finished_at,
                &d.owner,
                &d.lease_expires_at,
                &d.phase_deadline,
                &d.last_seq,
            ]
        })
        .collect();
    let t = Type::TEXT;
    let z = Type::TIMESTAMPTZ;
    let types = [
        Type::UUID,
        t.clone(),
        t.clone(),
        t.clone(),
        t.clone(),
        t.clone(),
        t.clone(),
        t.clone(),
        Type::JSONB,
        t.clone(),
        t.clone(),
        t.clone(),
        z.clone(),
        z.clone(),
        z.clone(),
        t,
        z.clone(),
        z,
        Type::INT8,
    ];
    let table = "deployments (id, app, cluster, kind, state, version, source, rollback_to, git, message, \
                 deployed_by, error, created_at, started_at, finished_at, owner, lease_expires_at, \
                 phase_deadline, last_seq)";
    copy(client, table, &types, &rows).await?;

    let kinds: Vec<&str> = chunk.events.iter().map(|e| e.data.kind()).collect();
    let payloads: Vec<serde_json::Value> = chunk.events.iter().map(|e| e.data.payload()).collect();
    let rows: Vec<Vec<&(dyn ToSql + Sync)>> = chunk
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            vec![
                &e.deployment_id as &(dyn ToSql + Sync),
                &e.seq,
                &kinds[i],
                &payloads[i],
                &e.created_at,
            ]
        })
        .collect();
    let types = [
        Type::UUID,
        Type::INT8,
        Type::TEXT,
        Type::JSONB,
        Type::TIMESTAMPTZ,
    ];
    copy(
        client,
        "deployment_events (deployment_id, seq, kind, data, created_at)",
        &types,
        &rows,
    )
    .await
}

async fn copy(
    client: &tokio_postgres::Client,
    table: &str,
    types: &[Type],
    rows: &[Vec<&(dyn ToSql + Sync)>],
) -> anyhow::Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let sink = client
        .copy_in(&format!("COPY {table} FROM STDIN BINARY"))
        .await?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, types));
    for row in rows {
        writer.as_mut().write(row).await?;
    }
    writer.finish().await?;
    Ok(())
}

fn sqlite_write(conn: &mut rusqlite::Connection, chunk: &Chunk) -> anyhow::Result<()> {
    let json = |git: &Option<GitInfo>| {
        git.as_ref()
            .map(|g| serde_json::to_string(g).expect("git serializes"))
    };
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO versions (app, number, version, artifact, git, deployment_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for v in &chunk.versions {
            insert.execute(params![
                v.app,
                v.number,
                format!("v{}", v.number),
                v.artifact,
                json(&v.git),
                v.deployment_id.to_string(),
                ts(v.created_at)
            ])?;
        }
        let mut insert = tx.prepare_cached(
            "INSERT INTO deployments (id, app, cluster, kind, state, version, source, rollback_to, git,
                 message, deployed_by, error, created_at, started_at, finished_at, owner,
                 lease_expires_at, phase_deadline, last_seq)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 'ci', ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        )?;
        for d in &chunk.deployments {
            insert.execute(params![
                d.id.to_string(),
                d.app,
                d.cluster,
                d.kind.as_str(),
                d.state.as_str(),
                d.version,
                d.source,
                d.rollback_to,
                json(&d.git),
                d.message,
                d.error,
                ts(d.created_at),
                d.started_at.map(ts),
                d.finished_at.map(ts),
                d.owner,
                d.lease_expires_at.map(ts),
                d.phase_deadline.map(ts),
                d.last_seq
            ])?;
        }
        let mut insert = tx.prepare_cached(
            "INSERT INTO deployment_events (deployment_id, seq, kind, data, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for e in &chunk.events {
            insert.execute(params![
                e.deployment_id.to_string(),
                e.seq,
                e.data.kind(),
                e.data.payload().to_string(),
                ts(e.created_at)
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

pub fn ts(at: DateTime<Utc>) -> String {
    at.format(TIME_FORMAT).to_string()
}
