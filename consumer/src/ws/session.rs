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
//! `CONSUMER_WS_WRITE_TIMEOUT`. Live events already waiting are taken in
//! bursts, so a client that is a little behind gets several frames per
//! write. tungstenite reads, answers pings and does the closing handshake.

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
/// Queued live events taken in one go.
const WRITE_BURST: usize = 64;
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
        overflowed: bool,
    },
    /// Live: events newer than `last` are sent.
    Live,
}

struct Sub {
    name: String,
    prefix: String,
    selector: Selector,
    last: Option<Cursor>,
    phase: Phase,
    _registration: Registration,
}

/// What woke the session up.
enum Wake {
    Shutdown,
    Inbound(Option<Result<Message, tungstenite::Error>>),
    Queue(Option<Outgoing>),
    History(u32, Result<Vec<StoredEvent>, StoreError>),
    Ping,
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

/// Serves one upgraded connection until it ends.
pub(crate) async fn run(socket: Socket, ctx: Arc<WsContext>, initial: Option<Subscription>) {
    let _gauge = ConnectionGauge::new();
    let (client, queue) = ClientLink::new(ctx.settings.send_queue);
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
                max_history: s.max_history,
                ping_interval_secs: s.ping_interval.as_secs(),
            },
        });
        if let Some(subscription) = initial {
            self.subscribe(subscription);
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
            if history.is_none()
                && let Some(slot) = self.waiting.pop_front()
            {
                history = self.history_query(slot);
            }
            let wake = tokio::select! {
                biased;
                () = &mut shutdown => Wake::Shutdown,
                // Inbound first: pongs must be seen even while events flow.
                msg = self.socket.next() => Wake::Inbound(msg),
                out = queue.recv() => Wake::Queue(out),
                (slot, page) = async { match history.as_mut() {
                    Some(query) => query.await,
                    None => std::future::pending().await,
                } } => Wake::History(slot, page),
                _ = ping.tick() => Wake::Ping,
            };
            let step = match wake {
                Wake::Queue(None | Some(Outgoing::Kicked)) => Err(End::Lagged),
                Wake::Shutdown => Err(End::Shutdown),
                Wake::Inbound(msg) => self.inbound(msg),
                Wake::Queue(Some(out)) => {
                    let mut taken = self.dispatch(out);
                    while taken < WRITE_BURST {
                        match queue.try_recv() {
                            Ok(out) => taken += self.dispatch(out),
                            Err(_) => break,
                        }
                    }
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
        // A lagging client gets as long as one write to read what is queued
        // and see why it is closed. The close frame goes through
        // tungstenite, after the session's own bytes, so that it knows the
        // closing handshake has begun.
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
        written.map_err(|_| End::WriteFailed)
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

    fn inbound(&mut self, msg: Option<Result<Message, tungstenite::Error>>) -> Result<(), End> {
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
                    Ok(subscription) => self.subscribe(subscription),
                    Err(refusal) => self.error(name.as_deref(), &refusal),
                }
            }
        }
        Ok(())
    }

    fn subscribe(&mut self, subscription: Subscription) {
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
            Some(History::Last(n)) => (
                None,
                Phase::History {
                    last_n: Some(n),
                    pending: VecDeque::new(),
                    overflowed: false,
                },
            ),
            Some(History::Since(after)) => (
                after,
                Phase::History {
                    last_n: None,
                    pending: VecDeque::new(),
                    overflowed: false,
                },
            ),
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
                self.subs.remove(&slot);
                self.waiting.retain(|s| *s != slot);
                self.frame(&ServerFrame::Unsubscribed { sub: name });
            }
            None => {
                let refusal =
                    Refusal::new("unknown_subscription", format!("no subscription `{name}`"));
                self.error(Some(name), &refusal);
            }
        }
    }

    /// Live events from the hub; returns how many were taken.
    fn dispatch(&mut self, out: Outgoing) -> usize {
        let Outgoing::Events { slot, events } = out else {
            // The kick is seen at the top of the loop.
            return 0;
        };
        self.client.taken(events.len());
        let capacity = self.ctx.settings.send_queue;
        // Unsubscribed since it was queued: drop them.
        let Some(sub) = self.subs.get_mut(&slot) else {
            return events.len();
        };
        match &mut sub.phase {
            Phase::History {
                pending,
                overflowed,
                ..
            } => {
                for event in events.iter() {
                    if pending.len() >= capacity {
                        // The store has them all; history will read them.
                        pending.clear();
                        *overflowed = true;
                    }
                    pending.push_back(Arc::clone(event));
                }
            }
            Phase::Live => {
                for event in events.iter() {
                    let cursor = event.cursor();
                    if sub.last.is_some_and(|last| cursor <= last) {
                        continue;
                    }
                    sub.last = Some(cursor);
                    event.write_frame(&sub.prefix, &mut self.out);
                }
            }
        }
        events.len()
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
                return self.error(Some(&name), &refusal);
            }
        };
        let Phase::History {
            last_n,
            pending,
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
        for event in page {
            if sub.last.is_none_or(|last| event.cursor > last) {
                sub.last = Some(event.cursor);
                LiveEvent::write_history_frame(&event, &sub.prefix, &mut self.out);
            }
        }
        if more || *overflowed {
            // More in the store (or live events were dropped, which the
            // store has): read on from `last`.
            *overflowed = false;
            self.waiting.push_back(slot);
        } else {
            let live = ServerFrame::Live {
                sub: &sub.name,
                cursor: sub.last,
            }
            .to_text();
            frame::push_text(&mut self.out, &[&live]);
            for event in pending.drain(..) {
                if sub.last.is_none_or(|last| event.cursor() > last) {
                    sub.last = Some(event.cursor());
                    event.write_frame(&sub.prefix, &mut self.out);
                }
            }
            sub.phase = Phase::Live;
        }
    }
}
