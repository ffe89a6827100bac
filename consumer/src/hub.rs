//! The live hub: fans every committed event out to the live subscriptions
//! whose [`Selector`] matches.
//!
//! * Each client (WebSocket connection) has **one bounded queue**. The hub
//!   only ever `try_send`s into it: publishing never waits for a client, so
//!   a slow client cannot slow the others or the AMQP consumer.
//! * A client whose queue is full is **kicked**: its [`ClientLink`]'s token
//!   is cancelled and it stops receiving. The session closes the socket
//!   with a reason that says which cursor to resume from.
//! * Subscriptions with equal selectors share one match per event, so
//!   10,000 overlays on one channel cost one pattern match, not 10,000.
//! * Each event is encoded once ([`LiveEvent`]); every client reuses the
//!   bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;

use crate::selector::Selector;
use crate::store::{Cursor, StoredEvent};

/// A committed event ready to send: the stored event plus its encoded
/// frame tail, shared by every client.
#[derive(Debug)]
pub struct LiveEvent {
    /// The event.
    pub stored: StoredEvent,
    /// `"cursor":…,"moderation":…,"event":…}`: everything of an event frame
    /// after the subscription id.
    tail: String,
    /// The whole frame for the first subscription id it was built for.
    /// Clients usually name their subscriptions alike (the web page always
    /// says `chat`), so 10,000 of them share one buffer instead of building
    /// 10,000 copies.
    shared: OnceLock<(String, Utf8Bytes)>,
}

impl LiveEvent {
    /// Encodes `stored` once.
    pub fn new(stored: StoredEvent) -> Arc<Self> {
        let mut tail = String::with_capacity(stored.event.get().len() + 64);
        push_tail(&mut tail, &stored);
        Arc::new(Self {
            stored,
            tail,
            shared: OnceLock::new(),
        })
    }

    /// The frame of a history event for one subscription: written straight
    /// into one buffer, since no other client will reuse it.
    pub fn history_frame(stored: &StoredEvent, prefix: &str) -> Utf8Bytes {
        let mut frame = String::with_capacity(prefix.len() + stored.event.get().len() + 64);
        frame.push_str(prefix);
        push_tail(&mut frame, stored);
        Utf8Bytes::from(frame)
    }

    /// Its cursor.
    pub fn cursor(&self) -> Cursor {
        self.stored.cursor
    }

    /// The frame for one subscription: `prefix` is
    /// `{"type":"event","sub":"<id>",` (see `ws::protocol`). Cheap to clone.
    pub fn frame(&self, prefix: &str) -> Utf8Bytes {
        if let Some((shared_prefix, frame)) = self.shared.get()
            && shared_prefix == prefix
        {
            return frame.clone();
        }
        let mut frame = String::with_capacity(prefix.len() + self.tail.len());
        frame.push_str(prefix);
        frame.push_str(&self.tail);
        let frame = Utf8Bytes::from(frame);
        let _ = self.shared.set((prefix.to_owned(), frame.clone()));
        frame
    }
}

/// Appends `"cursor":…,"moderation":…,"event":…}`.
fn push_tail(out: &mut String, stored: &StoredEvent) {
    out.push_str("\"cursor\":");
    out.push_str(&stored.cursor.to_string());
    out.push_str(",\"moderation\":");
    out.push_str(&serde_json::to_string(&stored.moderation).expect("moderation always serialises"));
    out.push_str(",\"event\":");
    out.push_str(stored.event.get());
    out.push('}');
}

/// One event for one subscription of a client.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The client's subscription slot.
    pub slot: u32,
    /// The event.
    pub event: Arc<LiveEvent>,
}

/// The hub's side of one client: its bounded queue and its kick switch.
#[derive(Debug)]
pub struct ClientLink {
    tx: mpsc::Sender<Outgoing>,
    /// Checked by the hub for every event: an atomic, not the token's lock.
    kicked_flag: AtomicBool,
    kicked: CancellationToken,
}

impl ClientLink {
    /// A link with a queue of `capacity` events; the receiver goes to the
    /// client's session.
    pub fn new(capacity: usize) -> (Arc<Self>, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (
            Arc::new(Self {
                tx,
                kicked_flag: AtomicBool::new(false),
                kicked: CancellationToken::new(),
            }),
            rx,
        )
    }

    /// Cancelled when the hub gave up on this client (its queue was full).
    pub fn kicked(&self) -> &CancellationToken {
        &self.kicked
    }

    fn kick(&self) {
        if !self.kicked_flag.swap(true, Ordering::Relaxed) {
            self.kicked.cancel();
            metrics::counter!("chatbus_consumer_ws_lagged_total").increment(1);
        }
    }
}

struct Member {
    slot: u32,
    client: Arc<ClientLink>,
}

#[derive(Default)]
struct State {
    groups: HashMap<Selector, HashMap<u64, Member>>,
    next_key: u64,
    members: usize,
}

/// The hub. Cheap to share (`Arc`).
#[derive(Default)]
pub struct Hub {
    state: Mutex<State>,
    last: AtomicU64,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("last", &self.last.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// A live subscription in the hub; dropping it unsubscribes.
pub struct Registration {
    hub: Weak<Hub>,
    selector: Selector,
    key: u64,
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("selector", &self.selector)
            .field("key", &self.key)
            .finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(hub) = self.hub.upgrade() {
            hub.unregister(&self.selector, self.key);
        }
    }
}

impl Hub {
    /// An empty hub.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// From now on, events matching `selector` go to `client`'s queue,
    /// tagged with `slot`, until the registration is dropped.
    pub fn register(
        self: &Arc<Self>,
        selector: Selector,
        slot: u32,
        client: Arc<ClientLink>,
    ) -> Registration {
        let mut state = self.state.lock().expect("hub lock");
        let key = state.next_key;
        state.next_key += 1;
        state
            .groups
            .entry(selector.clone())
            .or_default()
            .insert(key, Member { slot, client });
        state.members += 1;
        metrics::gauge!("chatbus_consumer_live_subscriptions").set(state.members as f64);
        Registration {
            hub: Arc::downgrade(self),
            selector,
            key,
        }
    }

    fn unregister(&self, selector: &Selector, key: u64) {
        let mut state = self.state.lock().expect("hub lock");
        let Some(group) = state.groups.get_mut(selector) else {
            return;
        };
        if group.remove(&key).is_some() {
            if group.is_empty() {
                state.groups.remove(selector);
            }
            state.members -= 1;
            metrics::gauge!("chatbus_consumer_live_subscriptions").set(state.members as f64);
        }
    }

    /// Hands `event` to every matching subscription without waiting:
    /// a full queue kicks its client. Returns how many queues took it.
    /// Events must be published in cursor order (the live feed does).
    pub fn publish(&self, event: &Arc<LiveEvent>) -> usize {
        self.publish_all(std::slice::from_ref(event))
    }

    /// [`Hub::publish`] for several events in cursor order, client by
    /// client: each client's events of the batch land in its queue
    /// together, so its session writes them with one flush instead of one
    /// per event. Returns how many (event, subscription) deliveries were
    /// queued.
    pub fn publish_all(&self, events: &[Arc<LiveEvent>]) -> usize {
        let Some(last) = events.last() else {
            return 0;
        };
        let mut delivered = 0;
        {
            let state = self.state.lock().expect("hub lock");
            let mut matching = Vec::with_capacity(events.len());
            for (selector, members) in &state.groups {
                matching.clear();
                matching.extend(
                    events
                        .iter()
                        .filter(|e| selector.matches(&e.stored.routing_key, e.stored.kind)),
                );
                if matching.is_empty() {
                    continue;
                }
                for member in members.values() {
                    for event in &matching {
                        if member.client.kicked_flag.load(Ordering::Relaxed) {
                            break;
                        }
                        let outgoing = Outgoing {
                            slot: member.slot,
                            event: Arc::clone(event),
                        };
                        match member.client.tx.try_send(outgoing) {
                            Ok(()) => delivered += 1,
                            Err(mpsc::error::TrySendError::Full(_)) => member.client.kick(),
                            // The session ended; its registrations go with it.
                            Err(mpsc::error::TrySendError::Closed(_)) => break,
                        }
                    }
                }
            }
        }
        self.last.store(
            u64::try_from(last.stored.cursor.get()).unwrap_or(0),
            Ordering::Relaxed,
        );
        metrics::counter!("chatbus_consumer_live_events_total").increment(events.len() as u64);
        metrics::counter!("chatbus_consumer_live_deliveries_total").increment(delivered as u64);
        delivered
    }

    /// The cursor of the last published event.
    pub fn last_published(&self) -> Option<Cursor> {
        Cursor::new(i64::try_from(self.last.load(Ordering::Relaxed)).unwrap_or(0))
    }

    /// Live subscriptions right now.
    pub fn subscriptions(&self) -> usize {
        self.state.lock().expect("hub lock").members
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::routing::TopicPattern;
    use common::schema::EventKind;
    use serde_json::value::RawValue;

    fn event(cursor: i64, channel: &str, kind: EventKind) -> Arc<LiveEvent> {
        LiveEvent::new(StoredEvent {
            cursor: Cursor::new(cursor).unwrap(),
            moderation: None,
            event: RawValue::from_string(format!("{{\"n\":{cursor}}}")).unwrap(),
            platform: "twitch".into(),
            channel: channel.into(),
            id: cursor.to_string(),
            kind,
            routing_key: common::routing::routing_key("twitch", channel),
        })
    }

    fn selector(pattern: &str) -> Selector {
        Selector::new(vec![TopicPattern::parse(pattern).unwrap()], vec![])
    }

    #[test]
    fn frames_are_complete_json() {
        let e = event(7, "a", EventKind::Message);
        let frame = e.frame("{\"type\":\"event\",\"sub\":\"s\",");
        let v: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
        assert_eq!(v["cursor"], 7);
        assert_eq!(v["sub"], "s");
        assert_eq!(v["event"]["n"], 7);
        assert!(v["moderation"].is_null());
        // The same prefix shares the buffer; another one gets its own.
        let again = e.frame("{\"type\":\"event\",\"sub\":\"s\",");
        assert_eq!(again.as_str().as_ptr(), frame.as_str().as_ptr());
        let other = e.frame("{\"type\":\"event\",\"sub\":\"t\",");
        assert!(other.as_str().contains("\"sub\":\"t\""));
    }

    #[test]
    fn a_history_frame_is_the_live_frame_without_the_cache() {
        let e = event(9, "a", EventKind::Message);
        let prefix = "{\"type\":\"event\",\"sub\":\"h\",";
        let history = LiveEvent::history_frame(&e.stored, prefix);
        assert_eq!(history.as_str(), e.frame(prefix).as_str());
    }

    #[tokio::test]
    async fn matching_subscriptions_receive_in_order_and_others_nothing() {
        let hub = Hub::new();
        let (a, mut rx_a) = ClientLink::new(10);
        let (b, mut rx_b) = ClientLink::new(10);
        let _ra = hub.register(selector("chat.twitch.a"), 0, a);
        let _rb = hub.register(selector("chat.twitch.b"), 3, b);
        for n in 1..=4 {
            let channel = if n % 2 == 0 { "a" } else { "b" };
            hub.publish(&event(n, channel, EventKind::Message));
        }
        let got: Vec<_> = std::iter::from_fn(|| rx_a.try_recv().ok())
            .map(|o| (o.slot, o.event.cursor().get()))
            .collect();
        assert_eq!(got, [(0, 2), (0, 4)]);
        let got: Vec<_> = std::iter::from_fn(|| rx_b.try_recv().ok())
            .map(|o| (o.slot, o.event.cursor().get()))
            .collect();
        assert_eq!(got, [(3, 1), (3, 3)]);
    }

    #[tokio::test]
    async fn a_full_queue_kicks_only_that_client_and_never_blocks() {
        let hub = Hub::new();
        let (slow, _rx_slow) = ClientLink::new(2);
        let (fast, mut rx_fast) = ClientLink::new(100);
        let _r1 = hub.register(selector("chat.#"), 0, slow.clone());
        let _r2 = hub.register(selector("chat.#"), 0, fast.clone());
        for n in 1..=50 {
            hub.publish(&event(n, "a", EventKind::Message));
        }
        assert!(slow.kicked().is_cancelled());
        assert!(!fast.kicked().is_cancelled());
        let got = std::iter::from_fn(|| rx_fast.try_recv().ok()).count();
        assert_eq!(got, 50);
    }

    #[tokio::test]
    async fn a_batch_arrives_in_order_for_every_client() {
        let hub = Hub::new();
        let (a, mut rx_a) = ClientLink::new(10);
        let (b, mut rx_b) = ClientLink::new(10);
        let _ra = hub.register(selector("chat.twitch.a"), 0, a);
        let _rb = hub.register(selector("chat.#"), 1, b);
        let batch: Vec<_> = (1..=4)
            .map(|n| event(n, if n % 2 == 0 { "a" } else { "b" }, EventKind::Message))
            .collect();
        assert_eq!(hub.publish_all(&batch), 6);
        let got = |rx: &mut mpsc::Receiver<Outgoing>| {
            std::iter::from_fn(|| rx.try_recv().ok())
                .map(|o| o.event.cursor().get())
                .collect::<Vec<_>>()
        };
        assert_eq!(got(&mut rx_a), [2, 4]);
        assert_eq!(got(&mut rx_b), [1, 2, 3, 4]);
        assert_eq!(hub.last_published(), Cursor::new(4));
    }

    #[test]
    fn dropping_a_registration_unsubscribes() {
        let hub = Hub::new();
        let (c, _rx) = ClientLink::new(10);
        let r1 = hub.register(selector("chat.#"), 0, c.clone());
        let r2 = hub.register(selector("chat.#"), 1, c);
        assert_eq!(hub.subscriptions(), 2);
        drop(r1);
        assert_eq!(hub.subscriptions(), 1);
        drop(r2);
        assert_eq!(hub.subscriptions(), 0);
        assert!(hub.state.lock().unwrap().groups.is_empty());
    }
}
