//! Scenario 7, several instances on one PostgreSQL (issue 14): what it costs
//! that each target belongs to one instance, which the others forward its
//! requests to, and whose events they follow through the store.
//!
//! - [`stream`]: a deployment running on instance A, read at once on A (the
//!   baseline: its own broadcast) and on B (commit on A → NOTIFY → B re-reads
//!   the store); receipt latency on each side, and every event on B, in order;
//! - [`throughput`]: complete deploys through one instance alone, and over
//!   three instances on one database, side by side in one run; and one
//!   deploy at a time through a target's owner or through another instance.
//!
//! Every instance is `deployd::server::serve` in this process, with a data dir
//! of its own, so all of them and the clients share this machine's cores:
//! three instances measure what ownership and forwarding cost, not scale-out.
//! PostgreSQL only: the embedded store belongs to one instance (it claims its
//! data dir), so on it the scenario is skipped with a note.

#[path = "instances/stream.rs"]
mod stream;
#[path = "instances/throughput.rs"]
mod throughput;

use crate::daemon::Daemon;
use crate::env::{Backend, Env, Raw};
use crate::report::Report;
use deployd::config::ClusterConfig;
use std::collections::HashMap;

pub async fn run(env: &Env, backend: Backend) -> anyhow::Result<Report> {
    let mut report = Report::new("instances", backend.name());
    if backend == Backend::Embedded {
        eprintln!("instances: skipped on the embedded store (one instance only)");
        report.note(
            "skipped: the embedded store serves one instance (it claims its data dir); \
             run with --store postgres",
        );
        return Ok(report);
    }
    stream::measure(env, &mut report).await?;
    throughput::measure(env, &mut report).await?;
    Ok(report)
}

/// `n` instances sharing one fresh database, each with a data dir of its
/// own and the same clusters. Instance `i` is `instances[i]`.
pub struct Fleet {
    pub instances: Vec<Daemon>,
    /// A connection of our own to the shared database.
    pub raw: Raw,
}

impl Fleet {
    pub async fn start(
        env: &Env,
        n: usize,
        clusters: &[(&str, ClusterConfig)],
    ) -> anyhow::Result<Fleet> {
        let first = env.space(Backend::Postgres).await?;
        let raw = first.raw().await?;
        let mut spaces = vec![first];
        for _ in 1..n {
            spaces.push(env.share(&spaces[0])?);
        }
        let mut instances = Vec::with_capacity(n);
        for space in &spaces {
            let mut config = space.config()?;
            for (name, cluster) in clusters {
                config.clusters.insert(name.to_string(), cluster.clone());
            }
            instances.push(Daemon::start(config).await?);
        }
        Ok(Fleet { instances, raw })
    }

    /// Upload the same one-file source to every instance, so none has to
    /// fetch it from another before its first deploy; returns its digest.
    pub async fn upload(&self, tag: &str) -> anyhow::Result<String> {
        let mut digest = String::new();
        for instance in &self.instances {
            digest = instance.upload(tag).await?;
        }
        Ok(digest)
    }

    /// Which instance owns each target, by index, and the owner's epoch:
    /// the epoch goes up each time a target changes hands.
    pub async fn owners(&self) -> anyhow::Result<HashMap<(String, String), (usize, i64)>> {
        let Raw::Pg(client) = &self.raw else {
            anyhow::bail!("a fleet runs on PostgreSQL");
        };
        let index: HashMap<String, usize> = (self.instances.iter().enumerate())
            .map(|(i, d)| (d.client.base_url().trim_end_matches('/').to_string(), i))
            .collect();
        let rows = client
            .query(
                "SELECT tl.app, tl.cluster, i.address, tl.epoch FROM target_leases tl
                 JOIN instances i ON i.id = tl.owner",
                &[],
            )
            .await?;
        let mut owners = HashMap::new();
        for row in rows {
            let address: String = row.get(2);
            if let Some(&i) = index.get(address.trim_end_matches('/')) {
                owners.insert((row.get(0), row.get(1)), (i, row.get(3)));
            }
        }
        Ok(owners)
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        for instance in self.instances {
            instance.stop().await?;
        }
        Ok(())
    }
}
