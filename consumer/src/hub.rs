//! The live hub: fans every committed event out to the live subscriptions
//! whose [`Selector`] matches.
//!
//! * Each client (WebSocket connection) has **one queue, bounded in events
//!   and in bytes** ([`ClientLink`]). Publishing never waits for a client,
//!   so a slow client cannot slow the others or the AMQP consumer.
//! * The byte bound is the client's *backlog*: the estimated frame bytes
//!   of every event queued for it and not yet written to its socket
//!   (queued, or copied into its session's write buffer). The hub adds a
//!   batch's bytes when it queues it; the session subtracts them once
//!   written, or when it drops them.
//! * A client over either bound is **kicked**: it stops receiving and its
//!   session closes the socket with a reason that says which cursor to
//!   resume from.
//! * Subscriptions with equal selectors share one match per event, so
//!   10,000 overlays on one channel cost one pattern match, not 10,000;
//!   and one queue item per published batch, not one per event.
//! * Each event's WebSocket frame is encoded once ([`LiveEvent`]); every
//!   client copies the same bytes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

use tokio::sync::mpsc;

use common::schema::EventKind;

use crate::selector::Selector;
use crate::store::{Cursor, StoredEvent};
use crate::ws::frame;

/// A committed event ready to send: what the hub matches on plus its
/// encoded frame, shared by every client. The event's JSON is kept only
/// inside the frame (not also as a [`StoredEvent`]): queued events are
/// what a client that falls behind holds on to.
#[derive(Debug)]
pub struct LiveEvent {
    cursor: Cursor,
    kind: EventKind,
    routing_key: String,
    /// `"cursor":…,"moderation":…,"event":…}`: everything of an event frame
    /// after the subscription id.
    tail: String,
    /// The whole WebSocket frame, header included, for the first
    /// subscription id it was built for, with that id's prefix. Clients
    /// usually name their subscriptions alike (the web page always says
    /// `chat`), so 10,000 of them copy one frame instead of building
    /// 10,000.
    shared: OnceLock<(String, Box<[u8]>)>,
}

/// What an event frame costs beyond its tail: the header (at most 10
/// bytes) and the prefix `{"type":"event","sub":"<id>",` (23 bytes plus
/// the id, usually a few bytes).
const FRAME_OVERHEAD: usize = 64;

impl LiveEvent {
    /// Encodes `stored` once.
    pub fn new(stored: StoredEvent) -> Arc<Self> {
        let mut tail = String::with_capacity(stored.event.get().len() + 64);
        push_tail(&mut tail, &stored);
        Arc::new(Self {
            cursor: stored.cursor,
            kind: stored.kind,
            routing_key: stored.routing_key,
            tail,
            shared: OnceLock::new(),
        })
    }

    /// Appends the WebSocket frame of a history event for one
    /// subscription to `out`: built straight into it, since no other
    /// client will reuse it.
    pub fn write_history_frame(stored: &StoredEvent, prefix: &str, out: &mut Vec<u8>) {
        let mut tail = String::with_capacity(stored.event.get().len() + 64);
        push_tail(&mut tail, stored);
        frame::push_text(out, &[prefix, &tail]);
    }

    /// Its cursor.
    pub fn cursor(&self) -> Cursor {
        self.cursor
    }

    /// The estimated size of its frame for one subscription, in bytes:
    /// what it adds to a client's backlog.
    pub fn frame_bytes(&self) -> usize {
        self.tail.len() + FRAME_OVERHEAD
    }

    /// Appends the WebSocket frame of this event for one subscription to
    /// `out`; `prefix` is `{"type":"event","sub":"<id>",` (see
    /// `ws::protocol`).
    pub fn write_frame(&self, prefix: &str, out: &mut Vec<u8>) {
        let (shared_prefix, shared) = self.shared.get_or_init(|| {
            let mut frame = Vec::with_capacity(prefix.len() + self.tail.len() + 10);
            frame::push_text(&mut frame, &[prefix, &self.tail]);
            (prefix.to_owned(), frame.into_boxed_slice())
        });
        if shared_prefix == prefix {
            out.extend_from_slice(shared);
        } else {
            frame::push_text(out, &[prefix, &self.tail]);
        }
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

/// What the hub hands a client's session.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// Events of one published batch for one subscription of the client,
    /// in cursor order; shared by every client with an equal selector.
    Events {
        /// The client's subscription slot.
        slot: u32,
        /// The events.
        events: Arc<[Arc<LiveEvent>]>,
    },
    /// The client was too slow and is given up: wakes its session, which
    /// also checks [`ClientLink::is_kicked`] before every write.
    Kicked,
    /// A frame for the whole connection, not one subscription: a purge or
    /// opt-out (`privacy`), encoded once for every client.
    Notice(Arc<str>),
}

/// The hub's side of one client: its queue, its backlog and its kick
/// switch.
///
/// The queue is bounded in events, not in items: each published batch is
/// one item per subscription, and the link counts the events queued in
/// it. It is also bounded in bytes: the link counts the estimated frame
/// bytes of the client's backlog (queued, or taken by the session and not
/// yet written). The hub never waits on it: a client that would pass
/// either capacity is kicked instead. A client with no backlog at all
/// always takes the next batch, however large: a batch bigger than the
/// byte capacity must not kick every client, and a client that keeps up
/// has written its last one.
#[derive(Debug)]
pub struct ClientLink {
    tx: mpsc::UnboundedSender<Outgoing>,
    /// Events in the queue, counted up by the hub and down by the session.
    queued: AtomicUsize,
    capacity: usize,
    /// Estimated bytes of the backlog, counted up by the hub and down by
    /// the session once written or dropped.
    backlog: AtomicUsize,
    byte_capacity: usize,
    /// Checked by the hub for every batch and by the session for every
    /// write.
    kicked: AtomicBool,
}

impl ClientLink {
    /// A link with a queue of `capacity` events and a backlog of
    /// `byte_capacity` bytes; the receiver goes to the client's session.
    pub fn new(
        capacity: usize,
        byte_capacity: usize,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Outgoing>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(Self {
                tx,
                queued: AtomicUsize::new(0),
                capacity: capacity.max(1),
                backlog: AtomicUsize::new(0),
                byte_capacity: byte_capacity.max(1),
                kicked: AtomicBool::new(false),
            }),
            rx,
        )
    }

    /// Whether the hub gave up on this client (its queue was full).
    pub fn is_kicked(&self) -> bool {
        self.kicked.load(Ordering::Relaxed)
    }

    /// The session took `events` events out of the queue.
    pub fn taken(&self, events: usize) {
        self.queued.fetch_sub(events, Ordering::Relaxed);
    }

    /// The session wrote `bytes` of the backlog to the socket, or dropped
    /// them (unsubscribed, duplicates, held back while history is sent).
    pub fn released(&self, bytes: usize) {
        if bytes > 0 {
            self.backlog.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Estimated bytes queued for the client or copied and not yet
    /// written.
    pub fn backlog_bytes(&self) -> usize {
        self.backlog.load(Ordering::Relaxed)
    }

    fn kick(&self) {
        if !self.kicked.swap(true, Ordering::Relaxed) {
            let _ = self.tx.send(Outgoing::Kicked);
            metrics::counter!("chatbus_consumer_ws_lagged_total").increment(1);
        }
    }

    /// Queues `events` (`bytes` of frames, estimated) for `slot`, or
    /// kicks the client if they do not fit. Returns how many were queued.
    fn offer(&self, slot: u32, events: &Arc<[Arc<LiveEvent>]>, bytes: usize) -> usize {
        if self.is_kicked() {
            return 0;
        }
        let n = events.len();
        let over_events = self.queued.fetch_add(n, Ordering::Relaxed) + n > self.capacity;
        let backlog = self.backlog.fetch_add(bytes, Ordering::Relaxed);
        let over_bytes = backlog > 0 && backlog + bytes > self.byte_capacity;
        if over_events || over_bytes {
            self.kick();
            return 0;
        }
        let outgoing = Outgoing::Events {
            slot,
            events: Arc::clone(events),
        };
        // A send error means the session ended; its registrations go with it.
        self.tx.send(outgoing).map_or(0, |()| n)
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
            for (selector, members) in &state.groups {
                let matching: Arc<[Arc<LiveEvent>]> = events
                    .iter()
                    .filter(|e| selector.matches(&e.routing_key, e.kind))
                    .cloned()
                    .collect();
                if matching.is_empty() {
                    continue;
                }
                let bytes = matching.iter().map(|e| e.frame_bytes()).sum();
                for member in members.values() {
                    delivered += member.client.offer(member.slot, &matching, bytes);
                }
            }
        }
        self.last.store(
            u64::try_from(last.cursor.get()).unwrap_or(0),
            Ordering::Relaxed,
        );
        metrics::counter!("chatbus_consumer_live_events_total").increment(events.len() as u64);
        metrics::counter!("chatbus_consumer_live_deliveries_total").increment(delivered as u64);
        delivered
    }

    /// Hands `frame` (a whole JSON text frame, e.g. `privacy`) to every
    /// client with at least one subscription, once per client. Not counted
    /// in the clients' queue bounds: such frames are rare and small.
    /// Returns how many clients it was queued for.
    pub fn announce(&self, frame: &Arc<str>) -> usize {
        let state = self.state.lock().expect("hub lock");
        let mut seen = std::collections::HashSet::new();
        let mut told = 0;
        for member in state.groups.values().flat_map(HashMap::values) {
            if !seen.insert(Arc::as_ptr(&member.client)) || member.client.is_kicked() {
                continue;
            }
            // A send error means the session ended.
            if member
                .client
                .tx
                .send(Outgoing::Notice(Arc::clone(frame)))
                .is_ok()
            {
                told += 1;
            }
        }
        told
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

    /// Every (slot, cursor) queued for a client, in order; a kick shows
    /// as `None`.
    fn drain(rx: &mut mpsc::UnboundedReceiver<Outgoing>) -> Vec<Option<(u32, i64)>> {
        let mut got = Vec::new();
        while let Ok(out) = rx.try_recv() {
            match out {
                Outgoing::Events { slot, events } => {
                    got.extend(events.iter().map(|e| Some((slot, e.cursor().get()))));
                }
                Outgoing::Kicked => got.push(None),
                Outgoing::Notice(_) => {}
            }
        }
        got
    }

    #[test]
    fn frames_are_complete_json() {
        let e = event(7, "a", EventKind::Message);
        let mut out = Vec::new();
        e.write_frame("{\"type\":\"event\",\"sub\":\"s\",", &mut out);
        // The same prefix copies the shared frame; another one gets its own.
        e.write_frame("{\"type\":\"event\",\"sub\":\"s\",", &mut out);
        e.write_frame("{\"type\":\"event\",\"sub\":\"t\",", &mut out);
        let frames = frame::tests::texts(&out);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[0], frames[1]);
        let v: serde_json::Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(v["cursor"], 7);
        assert_eq!(v["sub"], "s");
        assert_eq!(v["event"]["n"], 7);
        assert!(v["moderation"].is_null());
        let v: serde_json::Value = serde_json::from_str(&frames[2]).unwrap();
        assert_eq!(v["sub"], "t");
        assert_eq!(v["event"]["n"], 7);
    }

    #[test]
    fn a_history_frame_is_the_live_frame_without_the_cache() {
        let stored = StoredEvent {
            cursor: Cursor::new(9).unwrap(),
            moderation: None,
            event: RawValue::from_string("{\"n\":9}".into()).unwrap(),
            platform: "twitch".into(),
            channel: "a".into(),
            id: "9".into(),
            kind: EventKind::Message,
            routing_key: common::routing::routing_key("twitch", "a"),
        };
        let e = LiveEvent::new(stored.clone());
        let prefix = "{\"type\":\"event\",\"sub\":\"h\",";
        let mut history = Vec::new();
        LiveEvent::write_history_frame(&stored, prefix, &mut history);
        let mut live = Vec::new();
        e.write_frame(prefix, &mut live);
        assert_eq!(history, live);
    }

    #[tokio::test]
    async fn matching_subscriptions_receive_in_order_and_others_nothing() {
        let hub = Hub::new();
        let (a, mut rx_a) = ClientLink::new(10, usize::MAX);
        let (b, mut rx_b) = ClientLink::new(10, usize::MAX);
        let _ra = hub.register(selector("chat.twitch.a"), 0, a);
        let _rb = hub.register(selector("chat.twitch.b"), 3, b);
        for n in 1..=4 {
            let channel = if n % 2 == 0 { "a" } else { "b" };
            hub.publish(&event(n, channel, EventKind::Message));
        }
        assert_eq!(drain(&mut rx_a), [Some((0, 2)), Some((0, 4))]);
        assert_eq!(drain(&mut rx_b), [Some((3, 1)), Some((3, 3))]);
    }

    #[tokio::test]
    async fn a_full_queue_kicks_only_that_client_and_never_blocks() {
        let hub = Hub::new();
        let (slow, mut rx_slow) = ClientLink::new(2, usize::MAX);
        let (fast, mut rx_fast) = ClientLink::new(100, usize::MAX);
        let _r1 = hub.register(selector("chat.#"), 0, slow.clone());
        let _r2 = hub.register(selector("chat.#"), 0, fast.clone());
        for n in 1..=50 {
            hub.publish(&event(n, "a", EventKind::Message));
        }
        assert!(slow.is_kicked());
        assert!(!fast.is_kicked());
        // Two fitted, the third kicked it, and nothing came after the kick.
        assert_eq!(drain(&mut rx_slow), [Some((0, 1)), Some((0, 2)), None]);
        assert_eq!(drain(&mut rx_fast).len(), 50);
    }

    #[tokio::test]
    async fn taking_events_makes_room_in_the_queue() {
        let hub = Hub::new();
        let (client, mut rx) = ClientLink::new(3, usize::MAX);
        let _r = hub.register(selector("chat.#"), 0, client.clone());
        for round in 0..10 {
            let batch: Vec<_> = (1..=3)
                .map(|n| event(round * 3 + n, "a", EventKind::Message))
                .collect();
            assert_eq!(hub.publish_all(&batch), 3);
            let got = drain(&mut rx);
            assert_eq!(got.len(), 3);
            client.taken(got.len());
        }
        assert!(!client.is_kicked());
        // Not taken: the next batch does not fit.
        hub.publish(&event(31, "a", EventKind::Message));
        hub.publish(&event(32, "a", EventKind::Message));
        hub.publish(&event(33, "a", EventKind::Message));
        hub.publish(&event(34, "a", EventKind::Message));
        assert!(client.is_kicked());
    }

    #[tokio::test]
    async fn a_batch_arrives_in_order_for_every_client() {
        let hub = Hub::new();
        let (a, mut rx_a) = ClientLink::new(10, usize::MAX);
        let (b, mut rx_b) = ClientLink::new(10, usize::MAX);
        let _ra = hub.register(selector("chat.twitch.a"), 0, a);
        let _rb = hub.register(selector("chat.#"), 1, b);
        let batch: Vec<_> = (1..=4)
            .map(|n| event(n, if n % 2 == 0 { "a" } else { "b" }, EventKind::Message))
            .collect();
        assert_eq!(hub.publish_all(&batch), 6);
        // One queue item per client for the whole batch.
        assert_eq!(rx_a.len(), 1);
        assert_eq!(rx_b.len(), 1);
        let cursors = |got: Vec<Option<(u32, i64)>>| -> Vec<i64> {
            got.into_iter().map(|g| g.unwrap().1).collect()
        };
        assert_eq!(cursors(drain(&mut rx_a)), [2, 4]);
        assert_eq!(cursors(drain(&mut rx_b)), [1, 2, 3, 4]);
        assert_eq!(hub.last_published(), Cursor::new(4));
    }

    /// An event whose frame is about `size` bytes.
    fn sized(cursor: i64, size: usize) -> Arc<LiveEvent> {
        LiveEvent::new(StoredEvent {
            cursor: Cursor::new(cursor).unwrap(),
            moderation: None,
            event: RawValue::from_string(format!("{{\"t\":\"{}\"}}", "x".repeat(size))).unwrap(),
            platform: "twitch".into(),
            channel: "a".into(),
            id: cursor.to_string(),
            kind: EventKind::Message,
            routing_key: common::routing::routing_key("twitch", "a"),
        })
    }

    #[test]
    fn frame_bytes_estimate_the_frame_from_above() {
        for size in [0, 10, 1000, 70_000] {
            let e = sized(123_456, size);
            let mut out = Vec::new();
            e.write_frame("{\"type\":\"event\",\"sub\":\"chat\",", &mut out);
            assert!(e.frame_bytes() >= out.len(), "{size}");
            assert!(e.frame_bytes() <= out.len() + FRAME_OVERHEAD, "{size}");
        }
    }

    #[tokio::test]
    async fn the_backlog_counts_bytes_queued_until_released() {
        let hub = Hub::new();
        let (client, mut rx) = ClientLink::new(1000, 10_000);
        let _r = hub.register(selector("chat.#"), 0, client.clone());
        let e = sized(1, 1000);
        let bytes = e.frame_bytes();
        hub.publish(&e);
        assert_eq!(client.backlog_bytes(), bytes);
        // Taken out of the queue but not yet written: still backlog.
        let got = drain(&mut rx);
        client.taken(got.len());
        assert_eq!(client.backlog_bytes(), bytes);
        client.released(bytes);
        assert_eq!(client.backlog_bytes(), 0);
        // A batch is counted once per subscription it reaches.
        let _r2 = hub.register(selector("chat.twitch.*"), 1, client.clone());
        let batch = [sized(2, 100), sized(3, 200)];
        hub.publish_all(&batch);
        let one: usize = batch.iter().map(|e| e.frame_bytes()).sum();
        assert_eq!(client.backlog_bytes(), 2 * one);
        assert!(!client.is_kicked());
    }

    #[tokio::test]
    async fn a_backlog_over_the_byte_capacity_kicks_only_that_client() {
        let hub = Hub::new();
        // Room for about four 1 KB frames.
        let (slow, mut rx_slow) = ClientLink::new(1000, 4500);
        let (fast, mut rx_fast) = ClientLink::new(1000, 4500);
        let _r1 = hub.register(selector("chat.#"), 0, slow.clone());
        let _r2 = hub.register(selector("chat.#"), 0, fast.clone());
        for n in 1..=20 {
            let e = sized(n, 1000);
            hub.publish(&e);
            // The fast client writes everything at once.
            let got = drain(&mut rx_fast);
            fast.taken(got.len());
            fast.released(got.len() * e.frame_bytes());
        }
        assert!(slow.is_kicked());
        assert!(!fast.is_kicked());
        assert_eq!(fast.backlog_bytes(), 0);
        // Four fitted, the fifth kicked it, and nothing came after.
        let got = drain(&mut rx_slow);
        assert_eq!(got.len(), 5, "{got:?}");
        assert_eq!(
            got[..4],
            [Some((0, 1)), Some((0, 2)), Some((0, 3)), Some((0, 4))]
        );
        assert_eq!(got[4], None);
    }

    #[tokio::test]
    async fn releasing_bytes_makes_room_and_an_empty_backlog_takes_any_batch() {
        let hub = Hub::new();
        let (client, mut rx) = ClientLink::new(100_000, 10_000);
        let _r = hub.register(selector("chat.#"), 0, client.clone());
        // A batch of about 50 KB, five times the capacity: the backlog was
        // empty, so it is taken.
        let big: Vec<_> = (1..=50).map(|n| sized(n, 1000)).collect();
        assert_eq!(hub.publish_all(&big), 50);
        assert!(!client.is_kicked());
        let bytes: usize = big.iter().map(|e| e.frame_bytes()).sum();
        assert_eq!(client.backlog_bytes(), bytes);
        client.taken(drain(&mut rx).len());
        // Written: the next one fits again.
        client.released(bytes);
        hub.publish(&sized(51, 1000));
        assert!(!client.is_kicked());
        // Not written: a second large batch on top of a backlog kicks.
        let more: Vec<_> = (52..=70).map(|n| sized(n, 1000)).collect();
        assert_eq!(hub.publish_all(&more), 0);
        assert!(client.is_kicked());
    }

    #[tokio::test]
    async fn an_announcement_reaches_each_client_with_a_subscription_once() {
        let hub = Hub::new();
        let (two_subs, mut rx_two) = ClientLink::new(10, usize::MAX);
        let (one_sub, mut rx_one) = ClientLink::new(10, usize::MAX);
        let _r1 = hub.register(selector("chat.twitch.a"), 0, two_subs.clone());
        let _r2 = hub.register(selector("chat.#"), 1, two_subs);
        let _r3 = hub.register(selector("chat.#"), 0, one_sub);
        let frame: Arc<str> = Arc::from("{\"type\":\"privacy\"}");
        assert_eq!(hub.announce(&frame), 2);
        for rx in [&mut rx_two, &mut rx_one] {
            assert!(matches!(rx.try_recv(), Ok(Outgoing::Notice(f)) if *f == *frame));
            assert!(rx.try_recv().is_err(), "once per client");
        }
    }

    #[test]
    fn dropping_a_registration_unsubscribes() {
        let hub = Hub::new();
        let (c, _rx) = ClientLink::new(10, usize::MAX);
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
