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

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::Instant;
use warp::ws::{Message, WebSocket};

use super::WsContext;
use super::protocol::{
    CLOSE_GOING_AWAY, CLOSE_LAGGED, CLOSE_TOO_BIG, ClientFrame, History, Limits, PROTOCOL_VERSION,
    Refusal, ServerFrame, Subscription, event_prefix,
};
use crate::hub::{ClientLink, LiveEvent, Outgoing, Registration};
use crate::selector::Selector;
use crate::store::{Cursor, EventQuery, Order, StoreError, StoredEvent};

/// Events read per history query.
const HISTORY_PAGE: usize = 500;
/// Queued events written before one flush.
const WRITE_BURST: usize = 64;

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
    Kicked,
    Shutdown,
    Inbound(Option<Result<Message, warp::Error>>),
    Queue(Option<Outgoing>),
    History(u32, Result<Vec<StoredEvent>, StoreError>),
    Ping,
}

struct Session {
    ctx: Arc<WsContext>,
    sink: SplitSink<WebSocket, Message>,
    client: Arc<ClientLink>,
    subs: HashMap<u32, Sub>,
    next_slot: u32,
    next_auto_name: u32,
    waiting: VecDeque<u32>,
    last_heard: Instant,
    unflushed: bool,
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
pub(crate) async fn run(socket: WebSocket, ctx: Arc<WsContext>, initial: Option<Subscription>) {
    let _gauge = ConnectionGauge::new();
    let (sink, stream) = socket.split();
    let (client, queue) = ClientLink::new(ctx.settings.send_queue);
    let mut session = Session {
        ctx,
        sink,
        client,
        subs: HashMap::new(),
        next_slot: 0,
        next_auto_name: 0,
        waiting: VecDeque::new(),
        last_heard: Instant::now(),
        unflushed: false,
    };
    let end = session.drive(stream, queue, initial).await;
    metrics::counter!("chatbus_consumer_ws_closed_total", "reason" => end.label()).increment(1);
    tracing::debug!(reason = end.label(), "WebSocket session over");
    session.finish(end).await;
}

impl Session {
    async fn drive(
        &mut self,
        mut stream: SplitStream<WebSocket>,
        mut queue: mpsc::Receiver<Outgoing>,
        initial: Option<Subscription>,
    ) -> End {
        let s = self.ctx.settings;
        let welcome = ServerFrame::Welcome {
            protocol: PROTOCOL_VERSION,
            head: self.ctx.hub.last_published(),
            limits: Limits {
                max_subscriptions: s.max_subscriptions,
                max_frame_bytes: s.max_frame_bytes,
                send_queue: s.send_queue,
                max_history: s.max_history,
                ping_interval_secs: s.ping_interval.as_secs(),
            },
        };
        if self.write(welcome.to_text()).await.is_err() {
            return End::WriteFailed;
        }
        if let Some(subscription) = initial
            && let Err(end) = self.subscribe(subscription).await
        {
            return end;
        }
        let ping_every = s.ping_interval;
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut history: Option<HistoryFuture> = None;

        loop {
            if self.unflushed && self.flush().await.is_err() {
                return End::WriteFailed;
            }
            if history.is_none()
                && let Some(slot) = self.waiting.pop_front()
            {
                history = self.history_query(slot);
            }
            let wake = tokio::select! {
                biased;
                () = self.client.kicked().cancelled() => Wake::Kicked,
                () = self.ctx.shutdown.cancelled() => Wake::Shutdown,
                msg = stream.next() => Wake::Inbound(msg),
                out = queue.recv() => Wake::Queue(out),
                (slot, page) = async { match history.as_mut() {
                    Some(query) => query.await,
                    None => std::future::pending().await,
                } } => Wake::History(slot, page),
                _ = ping.tick() => Wake::Ping,
            };
            let step = match wake {
                Wake::Kicked => Err(End::Lagged),
                Wake::Shutdown => Err(End::Shutdown),
                Wake::Inbound(msg) => self.inbound(msg).await,
                Wake::Queue(None) => Err(End::Lagged),
                Wake::Queue(Some(out)) => self.outgoing(out, &mut queue).await,
                Wake::History(slot, page) => {
                    history = None;
                    self.history_page(slot, page).await
                }
                Wake::Ping => self.ping(ping_every).await,
            };
            if let Err(end) = step {
                return end;
            }
        }
    }

    async fn finish(mut self, end: End) {
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
                let frame = ServerFrame::Error {
                    sub: None,
                    code: "frame_too_large",
                    message: &limit,
                };
                let _ = self.write(frame.to_text()).await;
                Some((CLOSE_TOO_BIG, "message too big"))
            }
            End::ClientClosed => None,
            End::PingTimeout | End::WriteFailed | End::ReadFailed => return,
        };
        let message = match close {
            Some((code, reason)) => Message::close_with(code, reason),
            None => Message::close(),
        };
        // A lagging client gets as long as any write to read what is queued
        // and see why it is closed.
        let _ = tokio::time::timeout(self.ctx.settings.write_timeout, async {
            let _ = self.sink.send(message).await;
            let _ = self.sink.close().await;
        })
        .await;
    }

    /// Queues a text frame (flushed at the end of the loop iteration).
    async fn write(&mut self, text: String) -> Result<(), End> {
        match tokio::time::timeout(
            self.ctx.settings.write_timeout,
            self.sink.feed(Message::text(text)),
        )
        .await
        {
            Ok(Ok(())) => {
                self.unflushed = true;
                Ok(())
            }
            _ => Err(End::WriteFailed),
        }
    }

    async fn flush(&mut self) -> Result<(), End> {
        match tokio::time::timeout(self.ctx.settings.write_timeout, self.sink.flush()).await {
            Ok(Ok(())) => {
                self.unflushed = false;
                Ok(())
            }
            _ => Err(End::WriteFailed),
        }
    }

    async fn error(&mut self, sub: Option<&str>, refusal: &Refusal) -> Result<(), End> {
        let frame = ServerFrame::Error {
            sub,
            code: refusal.code,
            message: &refusal.message,
        };
        self.write(frame.to_text()).await
    }

    async fn ping(&mut self, every: Duration) -> Result<(), End> {
        if self.last_heard.elapsed() > every * 2 {
            return Err(End::PingTimeout);
        }
        match tokio::time::timeout(
            self.ctx.settings.write_timeout,
            self.sink.feed(Message::ping(Vec::new())),
        )
        .await
        {
            Ok(Ok(())) => {
                self.unflushed = true;
                Ok(())
            }
            _ => Err(End::WriteFailed),
        }
    }

    async fn inbound(&mut self, msg: Option<Result<Message, warp::Error>>) -> Result<(), End> {
        let msg = match msg {
            None => return Err(End::ClientClosed),
            Some(Err(e)) => {
                let text = e.to_string();
                if text.contains("too long") {
                    return Err(End::TooBig);
                }
                tracing::debug!(error = %text, "WebSocket read failed");
                return Err(End::ReadFailed);
            }
            Some(Ok(msg)) => msg,
        };
        self.last_heard = Instant::now();
        if msg.is_close() {
            return Err(End::ClientClosed);
        }
        if msg.is_binary() {
            let refusal = Refusal::new(
                "invalid_frame",
                "binary messages are not supported; send JSON text",
            );
            return self.error(None, &refusal).await;
        }
        let Ok(text) = msg.to_str() else {
            // Ping/pong: tungstenite answers pings itself.
            return Ok(());
        };
        match serde_json::from_str::<ClientFrame>(text) {
            Err(e) => {
                let refusal = Refusal::new("invalid_frame", e.to_string());
                self.error(None, &refusal).await
            }
            Ok(ClientFrame::Ping { id }) => self.write(ServerFrame::Pong { id }.to_text()).await,
            Ok(ClientFrame::Unsubscribe { sub }) => self.unsubscribe(&sub).await,
            Ok(ClientFrame::Subscribe(request)) => {
                let name = request.sub.clone();
                match request.validate(self.ctx.settings.max_history) {
                    Ok(subscription) => self.subscribe(subscription).await,
                    Err(refusal) => self.error(name.as_deref(), &refusal).await,
                }
            }
        }
    }

    async fn subscribe(&mut self, subscription: Subscription) -> Result<(), End> {
        if self.subs.len() >= self.ctx.settings.max_subscriptions {
            let refusal = Refusal::new(
                "too_many_subscriptions",
                format!(
                    "at most {} subscriptions per connection",
                    self.ctx.settings.max_subscriptions
                ),
            );
            return self.error(subscription.sub.as_deref(), &refusal).await;
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
            return self.error(Some(&name), &refusal).await;
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
        self.write(frame).await?;
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
        Ok(())
    }

    async fn unsubscribe(&mut self, name: &str) -> Result<(), End> {
        let slot = self
            .subs
            .iter()
            .find_map(|(slot, s)| (s.name == name).then_some(*slot));
        match slot {
            Some(slot) => {
                self.subs.remove(&slot);
                self.waiting.retain(|s| *s != slot);
                self.write(ServerFrame::Unsubscribed { sub: name }.to_text())
                    .await
            }
            None => {
                let refusal =
                    Refusal::new("unknown_subscription", format!("no subscription `{name}`"));
                self.error(Some(name), &refusal).await
            }
        }
    }

    /// One live event from the hub, then whatever else is already queued.
    async fn outgoing(
        &mut self,
        first: Outgoing,
        queue: &mut mpsc::Receiver<Outgoing>,
    ) -> Result<(), End> {
        self.dispatch(first).await?;
        for _ in 1..WRITE_BURST {
            match queue.try_recv() {
                Ok(out) => self.dispatch(out).await?,
                Err(_) => break,
            }
        }
        Ok(())
    }

    async fn dispatch(&mut self, out: Outgoing) -> Result<(), End> {
        let capacity = self.ctx.settings.send_queue;
        // Unsubscribed since it was queued: drop it.
        let Some(sub) = self.subs.get_mut(&out.slot) else {
            return Ok(());
        };
        let frame = match &mut sub.phase {
            Phase::History {
                pending,
                overflowed,
                ..
            } => {
                if pending.len() >= capacity {
                    // The store has them all; history will read them.
                    pending.clear();
                    *overflowed = true;
                }
                pending.push_back(out.event);
                return Ok(());
            }
            Phase::Live => {
                let cursor = out.event.cursor();
                if sub.last.is_some_and(|last| cursor <= last) {
                    return Ok(());
                }
                sub.last = Some(cursor);
                out.event.frame(&sub.prefix)
            }
        };
        self.write(frame).await
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

    async fn history_page(
        &mut self,
        slot: u32,
        page: Result<Vec<StoredEvent>, StoreError>,
    ) -> Result<(), End> {
        let Some(sub) = self.subs.get_mut(&slot) else {
            return Ok(());
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
                return self.error(Some(&name), &refusal).await;
            }
        };
        let Phase::History {
            last_n,
            pending,
            overflowed,
        } = &mut sub.phase
        else {
            return Ok(());
        };
        let more = match last_n.take() {
            Some(_) => {
                page.reverse();
                false
            }
            None => page.len() == HISTORY_PAGE,
        };
        let mut frames = Vec::with_capacity(page.len() + pending.len() + 1);
        for event in page {
            if sub.last.is_none_or(|last| event.cursor > last) {
                sub.last = Some(event.cursor);
                frames.push(LiveEvent::new(event).frame(&sub.prefix));
            }
        }
        if more || *overflowed {
            // More in the store (or live events were dropped, which the
            // store has): read on from `last`.
            *overflowed = false;
            self.waiting.push_back(slot);
        } else {
            frames.push(
                ServerFrame::Live {
                    sub: &sub.name,
                    cursor: sub.last,
                }
                .to_text(),
            );
            for event in pending.drain(..) {
                if sub.last.is_none_or(|last| event.cursor() > last) {
                    sub.last = Some(event.cursor());
                    frames.push(event.frame(&sub.prefix));
                }
            }
            sub.phase = Phase::Live;
        }
        for frame in frames {
            self.write(frame).await?;
        }
        Ok(())
    }
}
