//! The live feed: follows the store in cursor order and publishes every
//! committed event to the [`Hub`] exactly once, in order, without gaps.
//!
//! Events reach it three ways:
//!
//! * this instance's own commits, handed over right after the commit
//!   ([`LiveFeedHandle::committed`]); when nothing else was committed
//!   between the feed's position and the batch they are published at once,
//!   without reading the store;
//! * a wake-up ([`LiveFeedHandle::wake`]) when another instance announces a
//!   commit (see `commit_signal`);
//! * a poll every `CONSUMER_LIVE_POLL_INTERVAL`, the safety net if an
//!   announcement was lost.
//!
//! Whenever what arrives does not continue the sequence (another instance
//! committed in between) the feed reads the store from its position
//! instead. Because the store makes cursors visible in commit order, the
//! hub sees every event once and in order on every instance, which is what
//! makes WebSocket resumption exact.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::hub::{Hub, LiveEvent};
use crate::store::{Cursor, EventQuery, Order, Store, StoredEvent};

/// Own batches that may wait for the feed; beyond that the feed is woken
/// to read them from the store instead (the writer never waits).
const HANDOFF_CAPACITY: usize = 64;

/// A batch this instance committed: its events in cursor order, and the
/// store's head before it (see [`crate::store::WriteOutcome::after`]).
#[derive(Debug)]
struct Committed {
    after: Option<Cursor>,
    events: Vec<StoredEvent>,
}

/// The writer's side: hand over commits, or wake the feed.
#[derive(Debug, Clone)]
pub struct LiveFeedHandle {
    tx: mpsc::Sender<Committed>,
    wake: Arc<Notify>,
}

impl LiveFeedHandle {
    /// Hands over events this instance just committed, in cursor order;
    /// `after` is the store's head before the batch. Never waits.
    pub fn committed(&self, after: Option<Cursor>, events: Vec<StoredEvent>) {
        if events.is_empty() {
            return;
        }
        if self.tx.try_send(Committed { after, events }).is_err() {
            // Full or closed: the events are in the store; reading them
            // from there is just as correct.
            self.wake.notify_one();
        }
    }

    /// Asks the feed to look for new events in the store.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// The feed task's state.
#[derive(Debug)]
pub struct LiveFeed {
    store: Arc<dyn Store>,
    hub: Arc<Hub>,
    last: Option<Cursor>,
    rx: mpsc::Receiver<Committed>,
    wake: Arc<Notify>,
    poll: Duration,
    page: usize,
}

impl LiveFeed {
    /// A feed starting after the store's current head (everything before
    /// is history). Create it before anything writes, so no commit is
    /// missed. When catching up it reads `page` events at a time (the batch
    /// size: the hub gets no bigger bursts from a catch-up than from a
    /// commit).
    ///
    /// # Errors
    /// When the store's head cannot be read.
    pub async fn start(
        store: Arc<dyn Store>,
        hub: Arc<Hub>,
        poll: Duration,
        page: usize,
    ) -> Result<(LiveFeedHandle, Self), crate::store::StoreError> {
        let last = store.head().await?;
        let (tx, rx) = mpsc::channel(HANDOFF_CAPACITY);
        let wake = Arc::new(Notify::new());
        Ok((
            LiveFeedHandle {
                tx,
                wake: wake.clone(),
            },
            Self {
                store,
                hub,
                last,
                rx,
                wake,
                poll,
                page: page.max(1),
            },
        ))
    }

    /// Runs until `cancel`.
    ///
    /// # Errors
    /// Never; store errors are logged and retried at the next poll.
    pub async fn run(mut self, cancel: CancellationToken) -> anyhow::Result<()> {
        let mut poll = tokio::time::interval(self.poll);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                Some(batch) = self.rx.recv() => self.own_batch(batch).await,
                () = self.wake.notified() => self.catch_up().await,
                _ = poll.tick() => self.catch_up().await,
            }
        }
    }

    async fn own_batch(&mut self, batch: Committed) {
        // `after <= last`: nothing was committed between what the feed has
        // published and this batch, so it continues the sequence.
        if batch.after > self.last {
            // Someone else committed in between: read it all in order.
            self.catch_up().await;
            return;
        }
        let fresh: Vec<StoredEvent> = batch
            .events
            .into_iter()
            .filter(|e| self.last.is_none_or(|last| e.cursor > last))
            .collect();
        self.publish(fresh);
    }

    async fn catch_up(&mut self) {
        loop {
            let page = match self
                .store
                .query(&EventQuery {
                    after: self.last,
                    order: Order::Asc,
                    limit: self.page,
                    ..EventQuery::default()
                })
                .await
            {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "live feed cannot read the store; retrying at the next poll");
                    return;
                }
            };
            let full = page.len() == self.page;
            self.publish(page);
            if !full {
                return;
            }
        }
    }

    /// Publishes `events` (in cursor order, all newer than `last`) as one
    /// batch.
    fn publish(&mut self, events: Vec<StoredEvent>) {
        let Some(last) = events.last().map(|e| e.cursor) else {
            return;
        };
        self.last = Some(last);
        let live: Vec<_> = events.into_iter().map(LiveEvent::new).collect();
        self.hub.publish_all(&live);
    }
}
