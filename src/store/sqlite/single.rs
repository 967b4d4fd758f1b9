//! Ownership on the embedded store: one instance, always the owner.
//!
//! SQLite serves one daemon (the data dir's lock refuses a second one), so
//! every target belongs to it and nothing needs fencing: [`OneInstance`]
//! answers the ownership part of the [`Store`](crate::store::Store) contract
//! from memory, the way PostgreSQL would for a lone instance.

use crate::store::{Fence, InstanceInfo, OwnedTarget, Ownership};
use chrono::{DateTime, Utc};
use std::collections::BTreeSet;
use std::sync::Mutex;

/// The epoch of every target on the embedded store: its owner never changes.
const EPOCH: i64 = 1;

#[derive(Default)]
pub struct OneInstance {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// (id, address, started at, last heartbeat) once it has beaten.
    me: Option<(String, String, DateTime<Utc>, DateTime<Utc>)>,
    owned: BTreeSet<(String, String)>,
}

impl OneInstance {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn heartbeat(&self, id: &str, address: &str) -> Vec<OwnedTarget> {
        let mut state = self.state();
        let now = Utc::now();
        let started = state.me.as_ref().map_or(now, |me| me.2);
        state.me = Some((id.to_string(), address.to_string(), started, now));
        owned(&state)
    }

    pub fn acquire(&self, app: &str, cluster: &str, owner: &str) -> Ownership {
        self.state()
            .owned
            .insert((app.to_string(), cluster.to_string()));
        Ownership::Ours(Fence {
            owner: owner.to_string(),
            epoch: EPOCH,
        })
    }

    pub fn release(&self, app: &str, cluster: &str) {
        self.state()
            .owned
            .remove(&(app.to_string(), cluster.to_string()));
    }

    pub fn retire(&self) {
        let mut state = self.state();
        state.owned.clear();
        state.me = None;
    }

    pub fn instances(&self) -> Vec<InstanceInfo> {
        let state = self.state();
        let Some((id, address, started_at, heartbeat_at)) = state.me.clone() else {
            return Vec::new();
        };
        vec![InstanceInfo {
            id,
            address,
            started_at,
            heartbeat_at,
            targets: owned(&state),
        }]
    }
}

fn owned(state: &State) -> Vec<OwnedTarget> {
    state
        .owned
        .iter()
        .map(|(app, cluster)| OwnedTarget {
            app: app.clone(),
            cluster: cluster.clone(),
            epoch: EPOCH,
        })
        .collect()
}
