//! The per-deployment event log: stored first, then broadcast, replayable.
//!
//! [`EventHub`] is the only way events reach subscribers, and the one commit
//! path: [`EventHub::create`], [`EventHub::commit`] and [`EventHub::append`]
//! write to the store and broadcast what the store returned. What must stay true:
//! - an event is broadcast only after the store committed it (write-ahead):
//!   `publish` is private, so nothing else can broadcast;
//! - a subscriber sees seq `after+1, after+2, …` with no gap and no repeat,
//!   whether the events come from the replay, the live channel, or a re-read
//!   after it lagged behind the channel;
//! - a stream ends right after the deployment's final state event, or when the
//!   hub shuts down, so open streams never hold up a graceful shutdown.
//!
//! When other instances write to the same store ([`Writers::Shared`]), their
//! events reach this hub's followers through the store only: a listener says
//! what was stored ([`EventHub::stored_elsewhere`], [`EventHub::resync`]) and
//! the followers concerned re-read from the store, so write-ahead holds for
//! them too. A follower that heard nothing for a while re-reads anyway, in
//! case a notification was lost.

use crate::model::{Event, EventData};
use crate::store::{Applied, Change, Created, DynStore, Fence, NewDeployment, StoreError};
use futures::Stream;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Events buffered per deployment for live subscribers; one that falls further
/// behind re-reads from the store instead of losing events.
const CHANNEL_CAPACITY: usize = 1024;
/// Events read from the store per round trip while replaying.
const REPLAY_BATCH: u32 = 500;

/// How long a follower on a shared store may hear nothing before it re-reads
/// the store once: the bound on a notification lost without the listener's
/// connection dropping.
pub const QUIET_RECHECK: Duration = Duration::from_secs(10);

/// Who writes events to the hub's store.
#[derive(Debug, Clone, Copy)]
pub enum Writers {
    /// This hub alone (SQLite): every event is committed through it, so a
    /// follower waits on the live channel and nothing else.
    Alone,
    /// Other instances too (PostgreSQL): their events are heard of through
    /// [`EventHub::stored_elsewhere`] and [`EventHub::resync`], and a
    /// follower that heard nothing for `recheck` re-reads the store once.
    Shared { recheck: Duration },
}

pub struct EventHub {
    store: DynStore,
    writers: Writers,
    channels: Mutex<HashMap<Uuid, Channel>>,
    /// Bumped by [`EventHub::resync`]: every follower re-reads the store.
    resynced: watch::Sender<()>,
    closed: CancellationToken,
}

/// What the followers of one deployment wait on.
struct Channel {
    /// Events committed through this hub.
    live: broadcast::Sender<Event>,
    /// The newest seq other writers said they stored.
    stored: watch::Sender<i64>,
}

impl Channel {
    fn new() -> Channel {
        Channel {
            live: broadcast::channel(CHANNEL_CAPACITY).0,
            stored: watch::channel(0).0,
        }
    }
}

impl EventHub {
    pub fn new(store: DynStore, writers: Writers) -> Arc<EventHub> {
        Arc::new(EventHub {
            store,
            writers,
            channels: Mutex::new(HashMap::new()),
            resynced: watch::channel(()).0,
            closed: CancellationToken::new(),
        })
    }

    /// Store `events` for deployment `id` (if `fence` still holds its
    /// target), then broadcast them.
    pub async fn append(
        &self,
        id: Uuid,
        events: &[EventData],
        fence: Option<&Fence>,
    ) -> Result<Vec<Event>, StoreError> {
        let stored = self.store.append(id, events, fence).await?;
        self.publish(&stored);
        Ok(stored)
    }

    /// Create a deployment ([`Store::create`](crate::store::Store::create)),
    /// then broadcast its first event (`deployment`, seq 1). An idempotent
    /// replay writes nothing and broadcasts nothing.
    pub async fn create(&self, new: NewDeployment) -> Result<Created, StoreError> {
        let created = self.store.create(new).await?;
        if let Created::New(deployment) = &created
            && let Ok(first) = self.store.events_after(deployment.id, 0, 1).await
        {
            self.publish(&first);
        }
        Ok(created)
    }

    /// Store a machine-approved change (a compare-and-set, with its `state`
    /// event in the same transaction), then broadcast that event.
    pub async fn commit(&self, change: Change) -> Result<Applied, StoreError> {
        let applied = self.store.transition(change).await?;
        self.publish(std::slice::from_ref(&applied.event));
        Ok(applied)
    }

    /// Another writer committed events of deployment `id`, up to `seq`: its
    /// followers here re-read them from the store. A deployment nobody here
    /// follows costs one map lookup.
    pub fn stored_elsewhere(&self, id: Uuid, seq: i64) {
        let channels = self.channels.lock().expect("event channels lock");
        if let Some(channel) = channels.get(&id) {
            channel.stored.send_if_modified(|newest| {
                let newer = seq > *newest;
                if newer {
                    *newest = seq;
                }
                newer
            });
        }
    }

    /// What other writers stored may have gone unheard (the listener was
    /// away): every follower re-reads the store.
    pub fn resync(&self) {
        self.resynced.send_replace(());
    }

    /// Broadcast events the store already committed. Private: only the
    /// commit path above may call it.
    fn publish(&self, events: &[Event]) {
        let mut channels = self.channels.lock().expect("event channels lock");
        for event in events {
            let id = event.deployment_id;
            let Some(channel) = channels.get(&id) else {
                continue;
            };
            // No receiver left, or the deployment is over: forget the channel.
            // Receivers still holding it drain what was sent, then see Closed.
            if channel.live.send(event.clone()).is_err() || event.data.is_final() {
                channels.remove(&id);
            }
        }
    }

    /// How many live subscribers deployment `id` has.
    pub fn subscribers(&self, id: Uuid) -> usize {
        let channels = self.channels.lock().expect("event channels lock");
        channels.get(&id).map_or(0, |c| c.live.receiver_count())
    }

    /// All live subscribers, for metrics.
    pub fn total_subscribers(&self) -> usize {
        let channels = self.channels.lock().expect("event channels lock");
        channels.values().map(|c| c.live.receiver_count()).sum()
    }

    /// End every open stream (graceful shutdown).
    pub fn close(&self) {
        self.closed.cancel();
        self.channels.lock().expect("event channels lock").clear();
    }

    /// Events of deployment `id` with seq > `after`: the stored ones, then live
    /// ones as they are committed, ending after the final state event.
    pub fn subscribe(
        self: &Arc<Self>,
        id: Uuid,
        after: i64,
    ) -> impl Stream<Item = Result<Event, StoreError>> + Send + 'static + use<> {
        // Subscribe before reading the store, so nothing committed in between
        // is missed; duplicates are skipped by seq.
        let resynced = self.resynced.subscribe();
        let (live, stored) = self.follow(id);
        let follower = Follower {
            hub: self.clone(),
            id,
            last: after,
            live,
            stored,
            resynced,
            pending: Vec::new().into_iter(),
            need_read: true,
            done: false,
        };
        futures::stream::unfold(follower, |mut f| async move {
            let item = f.next().await?;
            Some((item, f))
        })
    }

    /// Events of deployment `id` with seq > `after` that are stored now, and
    /// nothing after: a replay that ends where the record ends, for a reader
    /// that does not want to follow (`?follow=false`, `deployctl logs`).
    pub fn stored(
        self: &Arc<Self>,
        id: Uuid,
        after: i64,
    ) -> impl Stream<Item = Result<Event, StoreError>> + Send + 'static + use<> {
        let store = self.store.clone();
        let pages = futures::stream::unfold(Some(after), move |last| {
            let store = store.clone();
            async move {
                let last = last?;
                match store.events_after(id, last, REPLAY_BATCH).await {
                    Ok(events) if events.is_empty() => None,
                    Ok(events) => {
                        let next = events.last().map(|event| event.seq);
                        Some((Ok(events), next))
                    }
                    Err(error) => Some((Err(error), None)),
                }
            }
        });
        futures::StreamExt::flat_map(pages, |page| match page {
            Ok(events) => futures::stream::iter(events.into_iter().map(Ok).collect::<Vec<_>>()),
            Err(error) => futures::stream::iter(vec![Err(error)]),
        })
    }

    /// Receivers on deployment `id`'s channel, made on first use.
    fn follow(&self, id: Uuid) -> (BroadcastStream<Event>, watch::Receiver<i64>) {
        let mut channels = self.channels.lock().expect("event channels lock");
        let channel = channels.entry(id).or_insert_with(Channel::new);
        (
            BroadcastStream::new(channel.live.subscribe()),
            channel.stored.subscribe(),
        )
    }
}

/// The state of one subscription.
struct Follower {
    hub: Arc<EventHub>,
    id: Uuid,
    /// The last seq handed to the subscriber.
    last: i64,
    /// Events broadcast after they were committed.
    live: BroadcastStream<Event>,
    /// The newest seq other writers stored, as far as this hub heard.
    stored: watch::Receiver<i64>,
    /// Changes when anything may have been stored unheard.
    resynced: watch::Receiver<()>,
    /// Events read from the store, not yet handed out.
    pending: std::vec::IntoIter<Event>,
    /// The store may hold events after `last` that the channel did not bring.
    need_read: bool,
    done: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.pending.next() {
                return Some(Ok(self.hand_out(event)));
            }
            if self.need_read {
                self.need_read = false;
                match self.read_more().await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
                // Nothing newer was stored. If the deployment has ended by now,
                // its final event was committed with that change: read once
                // more (it may have landed since the read above), then stop.
                if self.finished().await {
                    if self.read_more().await.unwrap_or(false) {
                        continue;
                    }
                    self.done = true;
                    return None;
                }
            }
            // In this order: this hub's own commits are also heard of from
            // the store's notifications, usually after they were broadcast;
            // taking the broadcast first spares a read of what it brought.
            let received = tokio::select! {
                biased;
                _ = self.hub.closed.cancelled() => {
                    self.done = true;
                    return None;
                }
                received = self.live.next() => received,
                Ok(()) = self.stored.changed() => {
                    self.need_read = *self.stored.borrow_and_update() > self.last;
                    continue;
                }
                Ok(()) = self.resynced.changed() => {
                    self.need_read = true;
                    continue;
                }
                () = silence(self.hub.writers) => {
                    self.need_read = true;
                    continue;
                }
            };
            match received {
                Some(Ok(event)) if event.seq <= self.last => {}
                Some(Ok(event)) if event.seq == self.last + 1 => {
                    return Some(Ok(self.hand_out(event)));
                }
                // A gap (committed between our read and our subscribe) or a
                // lag behind the channel: the store has the missing ones.
                Some(Ok(_)) | Some(Err(BroadcastStreamRecvError::Lagged(_))) => {
                    self.need_read = true
                }
                // The channel was dropped (the deployment ended, or its last
                // subscriber left): follow a fresh one, then re-read.
                None => {
                    self.resubscribe();
                    self.need_read = true;
                }
            }
        }
    }

    /// Read stored events after `last` into `pending`; true when there were
    /// some (and then there may be more: read again after them).
    async fn read_more(&mut self) -> Result<bool, StoreError> {
        let events = self
            .hub
            .store
            .events_after(self.id, self.last, REPLAY_BATCH)
            .await?;
        if events.is_empty() {
            return Ok(false);
        }
        self.need_read = true;
        self.pending = events.into_iter();
        Ok(true)
    }

    fn hand_out(&mut self, event: Event) -> Event {
        self.last = event.seq;
        if event.data.is_final() {
            self.done = true;
        }
        event
    }

    /// Whether the deployment has ended (or no longer exists).
    async fn finished(&self) -> bool {
        match self.hub.store.get(self.id).await {
            Ok(Some(d)) => d.state.is_terminal(),
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// Follow a fresh channel after the old one closed, before re-reading.
    fn resubscribe(&mut self) {
        (self.live, self.stored) = self.hub.follow(self.id);
    }
}

/// Resolves once a follower has heard nothing for the hub's recheck interval;
/// never when the hub is the store's only writer.
async fn silence(writers: Writers) {
    match writers {
        Writers::Alone => std::future::pending().await,
        Writers::Shared { recheck } => tokio::time::sleep(recheck).await,
    }
}

impl Drop for Follower {
    /// The last subscriber of a channel nobody publishes to any more (the
    /// deployment ended) takes the channel with it.
    fn drop(&mut self) {
        let mut channels = self.hub.channels.lock().expect("event channels lock");
        if channels
            .get(&self.id)
            .is_some_and(|c| c.live.receiver_count() <= 1)
        {
            channels.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests;
