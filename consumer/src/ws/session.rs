//! One WebSocket connection: its subscriptions, their history-then-live
//! hand-over, pings, limits and the way it ends.
//!
//! # No gap, no duplicate between history and live
//!
//! A subscription is registered with the hub **before** its history is
//! read. Every event committed after that moment reaches the connection's
//! queue; every event committed before it is in the store when the history
//! query runs. While history is being sent, live events for the
//! subscription wait in a pending list; when history is complete the
//! pending events newer than the last history cursor follow, and from then
//! on only events newer than the last one sent pass. If the pending list
//! overflows it is dropped and history simply continues from the store,
//! which has everything the list lost.
//!
//! # Writing
//!
//! Handlers only append frames to one buffer, encoded by [`super::frame`];
//! after each wake-up the session writes the buffer in one go, under one
//! `CONSUMER_WS_WRITE_TIMEOUT`. tungstenite reads, answers pings and does
//! the closing handshake.
//!
//! Events (live batches, history pages) are not copied into the buffer
//! all at once: they wait as [`Chunk`]s, and at most [`COPY_LIMIT`] bytes
//! of their frames (plus the rest of the frame that crosses it) are
//! copied before each write; the rest of a chunk is resumed on the next
//! wake-up. A client whose socket is blocked so costs at most that much
//! buffer, however far behind it is: the events themselves are shared
//! with every other client. Small live batches already waiting are taken
//! together, so a client that is a little behind still gets several
//! frames per write.
//!
//! The client's backlog in bytes (see [`crate::hub::ClientLink`]) shrinks
//! when a live event's frame has been written, or when the event is
//! dropped: unsubscribed, already sent, or held back while the
//! subscription's history is sent.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use warp::hyper::upgrade::Upgraded;

use super::WsContext;
use super::frame;
use super::protocol::{
    CLOSE_GOING_AWAY, CLOSE_LAGGED, CLOSE_TOO_BIG, ClientFrame, History, Limits, PROTOCOL_VERSION,
    Refusal, ServerFrame, Subscription, event_prefix,
};
use crate::hub::{ClientLink, LiveEvent, Outgoing, Registration};
use crate::selector::Selector;
use crate::store::{Cursor, EventQuery, Order, StoreError, StoredEvent};

/// An upgraded connection.
pub(crate) type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Events read per history query.
const HISTORY_PAGE: usize = 500;
/// Most bytes of event frames copied into the write buffer before it is
/// written (the frame that crosses it is copied whole).
pub(crate) const COPY_LIMIT: usize = 64 * 1024;
/// A write buffer that grew past this is freed once written, so an idle
/// connection does not keep a burst's worth of memory.
const KEEP_BUFFER: usize = 4 * 1024;

type HistoryFuture =
    Pin<Box<dyn Future<Output = (u32, Result<Vec<StoredEvent>, StoreError>)> + Send>>;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The client closed or went away.
    ClientClosed,
    /// The client's queue overflowed.
    Lagged,
    /// The server is stopping.
    Shutdown,
    /// An inbound message was over the limit.
    TooBig,
    /// Nothing heard for two ping intervals.
    PingTimeout,
    /// A write did not complete in time, or failed.
    WriteFailed,
    /// The connection broke.
    ReadFailed,
}

impl End {
    fn label(self) -> &'static str {
        match self {
            Self::ClientClosed => "client_closed",
            Self::Lagged => "lagged",
            Self::Shutdown => "shutdown",
            Self::TooBig => "too_big",
            Self::PingTimeout => "ping_timeout",
            Self::WriteFailed => "write_failed",
            Self::ReadFailed => "read_failed",
        }
    }
}

enum Phase {
    /// Sending history; live events wait in `pending`.
    History {
        /// The next query is `last N` (first page) or `after last`.
        last_n: Option<usize>,
        pending: VecDeque<Arc<LiveEvent>>,
        /// Estimated frame bytes of `pending`.
        pending_bytes: usize,
        overflowed: bool,
    },
    /// Live: events newer than `last` are sent.
    Live,
}

impl Phase {
    fn history(last_n: Option<usize>) -> Self {
        Self::History {
            last_n,
            pending: VecDeque::new(),
            pending_bytes: 0,
            overflowed: false,
        }
    }
}

struct Sub {
    name: String,
    prefix: String,
    selector: Selector,
    /// The last cursor copied for it (history or live).
    last: Option<Cursor>,
    phase: Phase,
    _registration: Registration,
}

/// Frames waiting to be copied into the write buffer, in order.
enum Chunk {
    /// Live events of a subscription, from `next` on. `counted`: their
    /// bytes are in the client's backlog (they came from the hub's queue)
    /// and leave it once written.
    Live {
        slot: u32,
        events: Arc<[Arc<LiveEvent>]>,
        next: usize,
        counted: bool,
    },
    /// A page of a subscription's history, oldest first.
    History {
        slot: u32,
        events: std::vec::IntoIter<StoredEvent>,
    },
    /// The subscription's history is complete: its `live` frame.
    LiveMark { slot: u32 },
    /// A frame of the whole connection (`privacy`), encoded.
    Text(Arc<str>),
}

/// What woke the session up.
enum Wake {
    Shutdown,
    Inbound(Option<Result<Message, tungstenite::Error>>),
    Queue(Option<Outgoing>),
    History(u32, Result<Vec<StoredEvent>, StoreError>),
    Ping,
    /// Chunks are waiting to be copied.
    Copy,
}

struct Session {
    ctx: Arc<WsContext>,
    /// Read and written by this task alone, so not split: a split socket
    /// takes a lock for every read and write.
    socket: Socket,
    client: Arc<ClientLink>,
    subs: HashMap<u32, Sub>,
    next_slot: u32,
    next_auto_name: u32,
    waiting: VecDeque<u32>,
    last_heard: Instant,
    /// Frames to write at the end of this wake-up, encoded.
    out: Vec<u8>,
    /// Events not yet copied into `out`.
    chunks: VecDeque<Chunk>,
    /// Backlog bytes of the live events copied into `out`: released once
    /// `out` is written.
    unwritten: usize,
    /// `privacy` frames held while a subscription's history is being
    /// sent: history read before a purge could still show what it
    /// removes, so the frame follows it.
    held: Vec<Arc<str>>,
}

struct ConnectionGauge;

impl ConnectionGauge {
    fn new() -> Self {
        metrics::gauge!("chatbus_consumer_ws_connections").increment(1);
        Self
    }
}

impl Drop for ConnectionGauge {
    fn drop(&mut self) {
        metrics::gauge!("chatbus_consumer_ws_connections").decrement(1);
    }
}

/// Whether a subscription's `since` was already checked against the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SinceChecked {
    Yes,
    No,
}

/// Serves one upgraded connection until it ends.
pub(crate) async fn run(socket: Socket, ctx: Arc<WsContext>, initial: Option<Subscription>) {
    let _gauge = ConnectionGauge::new();
    let (client, queue) = ClientLink::new(ctx.settings.send_queue, ctx.settings.send_queue_bytes);
    let mut session = Session {
        ctx,
        socket,
        client,
        subs: HashMap::new(),
        next_slot: 0,
        next_auto_name: 0,
        waiting: VecDeque::new(),
        last_heard: Instant::now(),
        out: Vec::new(),
        chunks: VecDeque::new(),
        unwritten: 0,
        held: Vec::new(),
    };
    let end = session.drive(queue, initial).await;
    metrics::counter!("chatbus_consumer_ws_closed_total", "reason" => end.label()).increment(1);
    tracing::debug!(reason = end.label(), "WebSocket session over");
    session.finish(end).await;
}

impl Session {
    async fn drive(
        &mut self,
        mut queue: mpsc::UnboundedReceiver<Outgoing>,
        initial: Option<Subscription>,
    ) -> End {
        let s = self.ctx.settings;
        self.frame(&ServerFrame::Welcome {
            protocol: PROTOCOL_VERSION,
            head: self.ctx.hub.last_published(),
            limits: Limits {
                max_subscriptions: s.max_subscriptions,
                max_frame_bytes: s.max_frame_bytes,
                send_queue: s.send_queue,
                send_queue_bytes: s.send_queue_bytes,
                max_history: s.max_history,
                ping_interval_secs: s.ping_interval.as_secs(),
            },
        });
        if let Some(subscription) = initial {
            // Its `since` was checked before the upgrade (refused with an
            // HTTP status there).
            self.subscribe(subscription, SinceChecked::Yes).await;
        }
        let ping_every = s.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut history: Option<HistoryFuture> = None;
        // Made once: a `cancelled()` future made per wake-up registers
        // with the token anew every time.
        let shutdown = self.ctx.shutdown.clone().cancelled_owned();
        tokio::pin!(shutdown);

        loop {
            if self.client.is_kicked() {
                return End::Lagged;
            }
            if let Err(end) = self.send_out().await {
                return end;
            }
            // The next page is read from the last cursor copied, so only
            // once everything before it is copied (which also holds a slow
            // client to one page at a time).
            if history.is_none()
                && self.chunks.is_empty()
                && let Some(slot) = self.waiting.pop_front()
            {
                history = self.history_query(slot);
            }
            let copying = !self.chunks.is_empty();
            let wake = tokio::select! {
                biased;
                () = &mut shutdown => Wake::Shutdown,
                // Inbound first: pongs must be seen even while events flow.
                msg = self.socket.next() => Wake::Inbound(msg),
                _ = ping.tick() => Wake::Ping,
                () = std::future::ready(()), if copying => Wake::Copy,
                // Taken only once the chunks are copied: a client that is
                // behind leaves its events in the queue, where the hub
                // sees them.
                out = queue.recv(), if !copying => Wake::Queue(out),
                (slot, page) = async { match history.as_mut() {
                    Some(query) => query.await,
                    None => std::future::pending().await,
                } } => Wake::History(slot, page),
            };
            let step = match wake {
                Wake::Queue(None | Some(Outgoing::Kicked)) => Err(End::Lagged),
                Wake::Shutdown => Err(End::Shutdown),
                Wake::Inbound(msg) => self.inbound(msg).await,
                Wake::Queue(Some(out)) => {
                    self.dispatch(out);
                    self.copy();
                    // Small batches already waiting go out in the same
                    // write.
                    while self.chunks.is_empty() && self.out.len() < COPY_LIMIT {
                        match queue.try_recv() {
                            Ok(out) => {
                                self.dispatch(out);
                                self.copy();
                            }
                            Err(_) => break,
                        }
                    }
                    Ok(())
                }
                Wake::Copy => {
                    self.copy();
                    Ok(())
                }
                Wake::History(slot, page) => {
                    history = None;
                    self.history_page(slot, page);
                    Ok(())
                }
                Wake::Ping => self.ping(ping_every),
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn finish(mut self, end: End) {
        // Out of the hub now: nothing more is queued, and a queue nobody
        // reads any more is not counted as a client falling behind.
        self.subs.clear();
        self.chunks.clear();
        let close = match end {
            End::Lagged => Some((
                CLOSE_LAGGED,
                "too slow: send queue full; resubscribe with since=<last cursor received>",
            )),
            End::Shutdown => Some((CLOSE_GOING_AWAY, "server shutting down")),
            End::TooBig => {
                let limit = format!(
                    "messages are limited to {} bytes",
                    self.ctx.settings.max_frame_bytes
                );
                self.error(None, &Refusal::new("frame_too_large", limit));
                Some((CLOSE_TOO_BIG, "message too big"))
            }
            End::ClientClosed => None,
            End::PingTimeout | End::WriteFailed | End::ReadFailed => return,
        };
        // A lagging client gets as long as one write to read what is
        // already copied (at most `COPY_LIMIT` and a frame) and see why it
        // is closed. The close frame goes through tungstenite, after the
        // session's own bytes, so that it knows the closing handshake has
        // begun.
        let timeout = self.ctx.settings.write_timeout;
        let _ = tokio::time::timeout(timeout, async {
            if self.send_out().await.is_err() {
                return;
            }
            // `SinkExt::close`, not `WebSocketStream::close`: the latter
            // sends a close frame, which after the client's close is refused
            // before tungstenite's queued answer is written.
            if let Some((code, reason)) = close {
                let frame = Message::Close(Some(CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                }));
                if self.socket.send(frame).await.is_err() {
                    return;
                }
            }
            // Writes what tungstenite has queued: its answer to the client's
            // close, or the rest of ours.
            let _ = SinkExt::close(&mut self.socket).await;
        })
        .await;
    }

    /// Writes the buffered frames, all within the write timeout.
    async fn send_out(&mut self) -> Result<(), End> {
        if self.out.is_empty() {
            return Ok(());
        }
        let socket = &mut self.socket;
        let bytes = &self.out;
        let write = async move {
            // An automatic pong tungstenite could not finish writing must
            // not be cut in two by these frames: it goes first.
            socket.flush().await.map_err(std::io::Error::other)?;
            socket.get_mut().write_all(bytes).await
        };
        tokio::pin!(write);
        // Usually the socket takes it all at once: the timer (an insert and
        // a removal in the timer wheel per write) is only armed when not.
        let written = match futures::FutureExt::now_or_never(&mut write) {
            Some(result) => result,
            None => match tokio::time::timeout(self.ctx.settings.write_timeout, write).await {
                Ok(result) => result,
                Err(_) => return Err(End::WriteFailed),
            },
        };
        if self.out.capacity() > KEEP_BUFFER {
            self.out = Vec::new();
        } else {
            self.out.clear();
        }
        written.map_err(|_| End::WriteFailed)?;
        self.client.released(std::mem::take(&mut self.unwritten));
        Ok(())
    }

    fn text(&mut self, text: &str) {
        frame::push_text(&mut self.out, &[text]);
    }

    fn frame(&mut self, frame: &ServerFrame<'_>) {
        self.text(&frame.to_text());
    }

    fn error(&mut self, sub: Option<&str>, refusal: &Refusal) {
        self.frame(&ServerFrame::Error {
            sub,
            code: refusal.code,
            message: &refusal.message,
        });
    }

    fn ping(&mut self, every: Duration) -> Result<(), End> {
        if self.last_heard.elapsed() > every * 2 {
            return Err(End::PingTimeout);
        }
        frame::push_ping(&mut self.out);
        Ok(())
    }

    async fn inbound(
        &mut self,
        msg: Option<Result<Message, tungstenite::Error>>,
    ) -> Result<(), End> {
        let msg = match msg {
            None => return Err(End::ClientClosed),
            Some(Err(tungstenite::Error::Capacity(_))) => return Err(End::TooBig),
            Some(Err(e)) => {
                tracing::debug!(error = %e, "WebSocket read failed");
                return Err(End::ReadFailed);
            }
            Some(Ok(msg)) => msg,
        };
        self.last_heard = Instant::now();
        let text = match msg {
            Message::Text(text) => text,
            Message::Binary(_) => {
                self.error(
                    None,
                    &Refusal::new(
                        "invalid_frame",
                        "binary messages are not supported; send JSON text",
                    ),
                );
                return Ok(());
            }
            Message::Close(_) => return Err(End::ClientClosed),
            // Pings are answered by tungstenite; pongs only show life.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => return Ok(()),
        };
        match serde_json::from_str::<ClientFrame>(&text) {
            Err(e) => self.error(None, &Refusal::new("invalid_frame", e.to_string())),
            Ok(ClientFrame::Ping { id }) => self.frame(&ServerFrame::Pong { id }),
            Ok(ClientFrame::Unsubscribe { sub }) => self.unsubscribe(&sub),
            Ok(ClientFrame::Subscribe(request)) => {
                let name = request.sub.clone();
                match request.validate(self.ctx.settings.max_history) {
                    Ok(subscription) => self.subscribe(subscription, SinceChecked::No).await,
                    Err(refusal) => self.error(name.as_deref(), &refusal),
                }
            }
        }
        Ok(())
    }

    async fn subscribe(&mut self, subscription: Subscription, since: SinceChecked) {
        if self.subs.len() >= self.ctx.settings.max_subscriptions {
            let refusal = Refusal::new(
                "too_many_subscriptions",
                format!(
                    "at most {} subscriptions per connection",
                    self.ctx.settings.max_subscriptions
                ),
            );
            return self.error(subscription.sub.as_deref(), &refusal);
        }
        if since == SinceChecked::No
            && let Some(History::Since(Some(since))) = subscription.history
            && let Err(refusal) = self.ctx.check_since(since).await
        {
            return self.error(subscription.sub.as_deref(), &refusal);
        }
        let name = match subscription.sub {
            Some(name) => name,
            None => loop {
                self.next_auto_name += 1;
                let name = format!("s{}", self.next_auto_name);
                if !self.subs.values().any(|s| s.name == name) {
                    break name;
                }
            },
        };
        if self.subs.values().any(|s| s.name == name) {
            let refusal = Refusal::new(
                "duplicate_subscription",
                format!("a subscription `{name}` exists; unsubscribe it first"),
            );
            return self.error(Some(&name), &refusal);
        }
        let slot = self.next_slot;
        self.next_slot += 1;
        // Register before reading history: see the module docs.
        let registration =
            self.ctx
                .hub
                .register(subscription.selector.clone(), slot, self.client.clone());
        let (last, phase) = match subscription.history {
            None => (None, Phase::Live),
            Some(History::Last(n)) => (None, Phase::history(Some(n))),
            Some(History::Since(after)) => (after, Phase::history(None)),
        };
        let frame = ServerFrame::Subscribed {
            sub: &name,
            patterns: subscription
                .selector
                .patterns()
                .iter()
                .map(|p| p.as_str())
                .collect(),
            kinds: subscription.selector.kinds(),
            history: subscription.history,
        }
        .to_text();
        self.text(&frame);
        if matches!(phase, Phase::History { .. }) {
            self.waiting.push_back(slot);
        }
        self.subs.insert(
            slot,
            Sub {
                prefix: event_prefix(&name),
                name,
                selector: subscription.selector,
                last,
                phase,
                _registration: registration,
            },
        );
    }

    fn unsubscribe(&mut self, name: &str) {
        let slot = self
            .subs
            .iter()
            .find_map(|(slot, s)| (s.name == name).then_some(*slot));
        match slot {
            Some(slot) => {
                // Its chunks are dropped as they come up: the subscription
                // is gone.
                self.subs.remove(&slot);
                self.waiting.retain(|s| *s != slot);
                self.frame(&ServerFrame::Unsubscribed { sub: name });
                self.release_held();
            }
            None => {
                let refusal =
                    Refusal::new("unknown_subscription", format!("no subscription `{name}`"));
                self.error(Some(name), &refusal);
            }
        }
    }

    /// Whether a subscription's history is still being sent.
    fn loading(&self) -> bool {
        self.subs
            .values()
            .any(|s| matches!(s.phase, Phase::History { .. }))
    }

    /// A connection frame from the hub (`privacy`): after every history
    /// being sent, or now.
    fn notice(&mut self, frame: Arc<str>) {
        if self.loading() {
            self.held.push(frame);
        } else {
            self.chunks.push_back(Chunk::Text(frame));
        }
    }

    /// Queues the held connection frames once no history is being sent.
    fn release_held(&mut self) {
        if !self.held.is_empty() && !self.loading() {
            self.chunks.extend(self.held.drain(..).map(Chunk::Text));
        }
    }

    /// Live events from the hub: queued as a chunk, held back while their
    /// subscription's history is sent, or dropped.
    fn dispatch(&mut self, out: Outgoing) {
        let (slot, events) = match out {
            Outgoing::Events { slot, events } => (slot, events),
            Outgoing::Notice(frame) => return self.notice(frame),
            // The kick is seen at the top of the loop.
            Outgoing::Kicked => return,
        };
        self.client.taken(events.len());
        let s = self.ctx.settings;
        // Unsubscribed since it was queued: drop them.
        let Some(sub) = self.subs.get_mut(&slot) else {
            self.client
                .released(events.iter().map(|e| e.frame_bytes()).sum());
            return;
        };
        match &mut sub.phase {
            Phase::History {
                pending,
                pending_bytes,
                overflowed,
                ..
            } => {
                let mut released = 0;
                for event in events.iter() {
                    let bytes = event.frame_bytes();
                    released += bytes;
                    if pending.len() >= s.send_queue || *pending_bytes + bytes > s.send_queue_bytes
                    {
                        // The store has them all; history will read them.
                        pending.clear();
                        *pending_bytes = 0;
                        *overflowed = true;
                    }
                    pending.push_back(Arc::clone(event));
                    *pending_bytes += bytes;
                }
                // Held here, not in the backlog: the pending list has its
                // own bounds.
                self.client.released(released);
            }
            Phase::Live => self.chunks.push_back(Chunk::Live {
                slot,
                events,
                next: 0,
                counted: true,
            }),
        }
    }

    /// Copies waiting chunks into `out`, up to [`COPY_LIMIT`].
    fn copy(&mut self) {
        self.unwritten += copy_chunks(
            &mut self.chunks,
            &mut self.subs,
            &mut self.out,
            &self.client,
        );
    }

    fn history_query(&self, slot: u32) -> Option<HistoryFuture> {
        let sub = self.subs.get(&slot)?;
        let Phase::History { last_n, .. } = &sub.phase else {
            return None;
        };
        let query = match last_n {
            Some(n) => EventQuery {
                filter: sub.selector.filter(),
                order: Order::Desc,
                limit: *n,
                ..EventQuery::default()
            },
            None => EventQuery {
                filter: sub.selector.filter(),
                after: sub.last,
                order: Order::Asc,
                limit: HISTORY_PAGE,
                ..EventQuery::default()
            },
        };
        let store = self.ctx.store.clone();
        Some(Box::pin(async move { (slot, store.query(&query).await) }))
    }

    fn history_page(&mut self, slot: u32, page: Result<Vec<StoredEvent>, StoreError>) {
        let Some(sub) = self.subs.get_mut(&slot) else {
            return;
        };
        let mut page = match page {
            Ok(page) => page,
            Err(e) => {
                tracing::warn!(error = %e, "history query failed");
                let name = sub.name.clone();
                self.subs.remove(&slot);
                let refusal = Refusal::new(
                    "history_unavailable",
                    "the store could not be read; subscribe again later",
                );
                self.error(Some(&name), &refusal);
                return self.release_held();
            }
        };
        let Phase::History {
            last_n,
            pending,
            pending_bytes,
            overflowed,
        } = &mut sub.phase
        else {
            return;
        };
        let more = match last_n.take() {
            Some(_) => {
                page.reverse();
                false
            }
            None => page.len() == HISTORY_PAGE,
        };
        if !page.is_empty() {
            self.chunks.push_back(Chunk::History {
                slot,
                events: page.into_iter(),
            });
        }
        if more || *overflowed {
            // More in the store (or live events were dropped, which the
            // store has): read on from `last` once this page is copied.
            *overflowed = false;
            self.waiting.push_back(slot);
        } else {
            // Then `live`, then the events that arrived meanwhile (those
            // already sent as history are skipped as they are copied), then
            // whatever the hub queues next.
            self.chunks.push_back(Chunk::LiveMark { slot });
            if !pending.is_empty() {
                let events: Arc<[Arc<LiveEvent>]> = pending.drain(..).collect();
                self.chunks.push_back(Chunk::Live {
                    slot,
                    events,
                    next: 0,
                    counted: false,
                });
            }
            *pending_bytes = 0;
            sub.phase = Phase::Live;
            self.release_held();
        }
    }
}

/// Copies frames of `chunks`, in order, into `out` until it holds
/// [`COPY_LIMIT`] bytes (the frame that crosses it is copied whole) or the
/// chunks are done; a chunk copied in part keeps its place. Skips events
/// already sent and drops chunks of subscriptions that are gone,
/// releasing their backlog bytes from `client`. Returns the backlog bytes
/// of the live events copied, to release once `out` is written.
fn copy_chunks(
    chunks: &mut VecDeque<Chunk>,
    subs: &mut HashMap<u32, Sub>,
    out: &mut Vec<u8>,
    client: &ClientLink,
) -> usize {
    let mut copied = 0;
    while out.len() < COPY_LIMIT {
        let Some(chunk) = chunks.front_mut() else {
            break;
        };
        let done = match chunk {
            Chunk::Live {
                slot,
                events,
                next,
                counted,
            } => {
                let Some(sub) = subs.get_mut(slot) else {
                    if *counted {
                        client.released(events[*next..].iter().map(|e| e.frame_bytes()).sum());
                    }
                    chunks.pop_front();
                    continue;
                };
                let (mut written, mut skipped) = (0, 0);
                while *next < events.len() && out.len() < COPY_LIMIT {
                    let event = &events[*next];
                    *next += 1;
                    if sub.last.is_some_and(|last| event.cursor() <= last) {
                        skipped += event.frame_bytes();
                        continue;
                    }
                    sub.last = Some(event.cursor());
                    event.write_frame(&sub.prefix, out);
                    written += event.frame_bytes();
                }
                if *counted {
                    client.released(skipped);
                    copied += written;
                }
                *next == events.len()
            }
            Chunk::History { slot, events } => {
                let Some(sub) = subs.get_mut(slot) else {
                    chunks.pop_front();
                    continue;
                };
                while out.len() < COPY_LIMIT {
                    let Some(event) = events.next() else {
                        break;
                    };
                    if sub.last.is_none_or(|last| event.cursor > last) {
                        sub.last = Some(event.cursor);
                        LiveEvent::write_history_frame(&event, &sub.prefix, out);
                    }
                }
                events.len() == 0
            }
            Chunk::Text(text) => {
                frame::push_text(out, &[text]);
                true
            }
            Chunk::LiveMark { slot } => {
                if let Some(sub) = subs.get(slot) {
                    let live = ServerFrame::Live {
                        sub: &sub.name,
                        cursor: sub.last,
                    }
                    .to_text();
                    frame::push_text(out, &[&live]);
                }
                true
            }
        };
        if done {
            chunks.pop_front();
        }
    }
    copied
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::Hub;
    use common::routing::TopicPattern;
    use common::schema::EventKind;
    use serde_json::value::RawValue;

    fn stored(cursor: i64, size: usize) -> StoredEvent {
        StoredEvent {
            cursor: Cursor::new(cursor).unwrap(),
            moderation: None,
            event: RawValue::from_string(format!("{{\"t\":\"{}\"}}", "x".repeat(size))).unwrap(),
            platform: "twitch".into(),
            channel: "a".into(),
            id: cursor.to_string(),
            kind: EventKind::Message,
            routing_key: common::routing::routing_key("twitch", "a"),
        }
    }

    fn live(cursors: std::ops::RangeInclusive<i64>, size: usize) -> Arc<[Arc<LiveEvent>]> {
        cursors.map(|c| LiveEvent::new(stored(c, size))).collect()
    }

    /// A session's subscriptions without the session: one, live, in slot 0.
    fn subs(hub: &Arc<Hub>, client: &Arc<ClientLink>) -> HashMap<u32, Sub> {
        let selector = Selector::new(vec![TopicPattern::parse("chat.#").unwrap()], vec![]);
        let registration = hub.register(selector.clone(), 0, client.clone());
        HashMap::from([(
            0,
            Sub {
                name: "s".into(),
                prefix: event_prefix("s"),
                selector,
                last: None,
                phase: Phase::Live,
                _registration: registration,
            },
        )])
    }

    /// Copies until the chunks are done, "writing" after each call; checks
    /// the buffer never holds more than the limit plus one frame. Returns
    /// every frame and the backlog bytes reported copied.
    fn copy_all(
        chunks: &mut VecDeque<Chunk>,
        subs: &mut HashMap<u32, Sub>,
        client: &ClientLink,
        largest_frame: usize,
    ) -> (Vec<serde_json::Value>, usize) {
        let (mut frames, mut copied, mut out) = (Vec::new(), 0, Vec::new());
        while !chunks.is_empty() {
            copied += copy_chunks(chunks, subs, &mut out, client);
            assert!(
                out.len() < COPY_LIMIT + largest_frame,
                "{} bytes in the write buffer",
                out.len()
            );
            for text in frame::tests::texts(&out) {
                frames.push(serde_json::from_str(&text).unwrap());
            }
            out.clear();
        }
        (frames, copied)
    }

    fn event_cursors(frames: &[serde_json::Value]) -> Vec<i64> {
        frames
            .iter()
            .filter(|f| f["type"] == "event")
            .map(|f| f["cursor"].as_i64().unwrap())
            .collect()
    }

    #[test]
    fn a_large_batch_is_copied_a_bounded_slice_at_a_time_in_order() {
        let hub = Hub::new();
        let (client, _rx) = ClientLink::new(10_000, usize::MAX);
        let mut subs = subs(&hub, &client);
        // 1000 events of about 4 KB: 4 MB, where the buffer may take 64 KiB.
        let events = live(1..=1000, 4000);
        let bytes: usize = events.iter().map(|e| e.frame_bytes()).sum();
        let largest = events[0].frame_bytes();
        let mut chunks = VecDeque::from([Chunk::Live {
            slot: 0,
            events,
            next: 0,
            counted: true,
        }]);
        let mut calls = 0;
        let mut out = Vec::new();
        while !chunks.is_empty() {
            copy_chunks(&mut chunks, &mut subs, &mut out, &client);
            assert!(out.len() < COPY_LIMIT + largest, "{}", out.len());
            out.clear();
            calls += 1;
        }
        assert!(calls >= bytes / (COPY_LIMIT + largest), "{calls} copies");
        // Again, checking the frames and the bytes to release.
        subs.get_mut(&0).unwrap().last = None;
        let mut chunks = VecDeque::from([Chunk::Live {
            slot: 0,
            events: live(1..=1000, 4000),
            next: 0,
            counted: true,
        }]);
        let (frames, copied) = copy_all(&mut chunks, &mut subs, &client, largest);
        assert_eq!(event_cursors(&frames), (1..=1000).collect::<Vec<_>>());
        assert_eq!(copied, bytes);
    }

    #[test]
    fn history_pages_and_pending_events_are_copied_in_bounded_slices_without_duplicates() {
        let hub = Hub::new();
        let (client, _rx) = ClientLink::new(10_000, usize::MAX);
        let mut subs = subs(&hub, &client);
        let page: Vec<_> = (1..=300).map(|c| stored(c, 2000)).collect();
        let largest = LiveEvent::new(stored(300, 2000)).frame_bytes();
        // Live events that arrived during history: 251..=300 were sent as
        // history already.
        let pending = live(251..=320, 2000);
        let mut chunks = VecDeque::from([
            Chunk::History {
                slot: 0,
                events: page.into_iter(),
            },
            Chunk::LiveMark { slot: 0 },
            Chunk::Live {
                slot: 0,
                events: pending,
                next: 0,
                counted: false,
            },
        ]);
        let (frames, copied) = copy_all(&mut chunks, &mut subs, &client, largest);
        assert_eq!(event_cursors(&frames), (1..=320).collect::<Vec<_>>());
        let live_at = frames.iter().position(|f| f["type"] == "live").unwrap();
        assert_eq!(live_at, 300, "`live` after the history");
        assert_eq!(frames[live_at]["cursor"], 300);
        assert_eq!(copied, 0, "pending events are not in the backlog");
    }

    #[test]
    fn dropped_and_duplicate_events_release_their_backlog_at_once() {
        let hub = Hub::new();
        let (client, mut rx) = ClientLink::new(10_000, usize::MAX);
        let mut subs = subs(&hub, &client);
        // Queue 1..=20 through the hub so the backlog counts them.
        let events: Vec<_> = (1..=20).map(|c| LiveEvent::new(stored(c, 100))).collect();
        hub.publish_all(&events);
        let Some(Outgoing::Events { events: queued, .. }) = rx.try_recv().ok() else {
            panic!("nothing queued");
        };
        let bytes = |r: std::ops::Range<usize>| -> usize {
            events[r].iter().map(|e| e.frame_bytes()).sum()
        };
        assert_eq!(client.backlog_bytes(), bytes(0..20));
        // 1..=5 were sent already (as history, say): skipped and released.
        subs.get_mut(&0).unwrap().last = Cursor::new(5);
        let mut chunks = VecDeque::from([Chunk::Live {
            slot: 0,
            events: queued.clone(),
            next: 0,
            counted: true,
        }]);
        let mut out = Vec::new();
        let copied = copy_chunks(&mut chunks, &mut subs, &mut out, &client);
        assert_eq!(copied, bytes(5..20), "copied, released once written");
        assert_eq!(client.backlog_bytes(), bytes(5..20));
        client.released(copied);
        assert_eq!(client.backlog_bytes(), 0);
        // A chunk of a subscription that is gone is dropped and released.
        hub.publish_all(&events);
        subs.clear();
        let mut chunks = VecDeque::from([Chunk::Live {
            slot: 0,
            events: queued,
            next: 3,
            counted: true,
        }]);
        out.clear();
        assert_eq!(copy_chunks(&mut chunks, &mut subs, &mut out, &client), 0);
        assert!(out.is_empty() && chunks.is_empty());
        assert_eq!(client.backlog_bytes(), bytes(0..3), "3..20 released");
    }
}
