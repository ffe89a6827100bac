//! Ingest: the AMQP side of the consumer.
//!
//! ```text
//! queue --Subscriber::next_batch (pull task)--> bounded channel of batches
//!     --> batcher --> store.write_batch (one transaction)
//!            |--> live feed (committed events)
//!            |--> commit announcement (other instances)
//!            '--> ack (one multiple-ack per batch)
//! ```
//!
//! Deliveries move in batches at every hop: the pull task takes every
//! delivery lapin has already received (`next_batch`) and hands them over
//! as one item, so a busy queue costs one hand-off per batch, not one per
//! event, and an idle one still passes a lone event on at once.
//!
//! * **Acks only after the commit.** A crash anywhere before the ack means
//!   redelivery, and the store ignores what it already has, so nothing is
//!   lost and nothing is stored twice.
//! * **Poison.** Undecodable payloads are dead-lettered by the
//!   `Subscriber` itself. An event that decodes but breaks the envelope
//!   rules ([`check_envelope`]: too large, a platform not in lowercase, a
//!   platform or channel its routing key contradicts) is dead-lettered
//!   with the reason and never stored. An event the store refuses (not a
//!   transient error: those are retried) is isolated by writing the batch
//!   one event at a time, and only the refused one is dead-lettered, with
//!   the store's reason. The stream keeps going.
//! * **Never cancelled half-way.** One task owns the `Subscriber` and only
//!   stops at shutdown, so a dead-lettering in progress is never cut off;
//!   the batcher reads a channel, which is safe to time out.
//! * **Reconnects.** Any broker failure ends the session; the batch in hand
//!   is still committed (it is idempotent) but not acked, and a new session
//!   starts after a backoff (common's `amqp::reconnect_loop` runs `Ingest`
//!   as its session; the backoff starts over after a session that
//!   subscribed).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use common::amqp::{
    self, AmqpError, Backoff, ConnectOptions, Delivery, QueueType, SessionEnd, Subscriber, Topology,
};
use serde::Serialize;

use crate::config::QueueTypeChoice;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::commands::Commands;
use crate::commit_signal::{self, CommitSignal};
use crate::live_feed::LiveFeedHandle;
use crate::store::{NewEvent, Store, StoreError, WriteOutcome};

/// How ingest connects and batches.
#[derive(Debug, Clone)]
pub struct IngestSettings {
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// The exchange topology to declare and bind to.
    pub topology: Topology,
    /// The durable queue (shared by every instance).
    pub queue: String,
    /// Classic, quorum, or auto (quorum on a cluster).
    pub queue_type: QueueTypeChoice,
    /// Binding patterns.
    pub bindings: Vec<String>,
    /// Broker prefetch.
    pub prefetch: u16,
    /// Most events per transaction.
    pub batch_size: usize,
    /// Longest a batch waits to fill.
    pub batch_wait: Duration,
    /// What an event may weigh.
    pub limits: EventLimits,
    /// This instance's id (connection name, announcements).
    pub instance: String,
    /// Where `POST /api/commands` finds its client, opened on each
    /// connection; `None` when sending is off.
    pub commands: Option<Arc<Commands>>,
    /// Where `!optout <code>` messages go (they are never stored);
    /// `None`: stored like any message.
    pub self_service: Option<crate::privacy::SelfServiceInbox>,
}

/// Size limits of the events accepted from the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventLimits {
    /// Largest body, bytes.
    pub max_event_bytes: usize,
    /// Largest `text`, bytes (UTF-8).
    pub max_text_bytes: usize,
}

/// Why a decoded event is refused, or `None` if it may be stored: the
/// body is within `limits`, the platform is a lowercase identifier
/// (`[a-z0-9_-]+`, as routing keys and the store's `(platform, id)` key
/// expect: `TWITCH` would be another platform), and the routing key is the
/// one its platform and channel give (`routing_key(platform, channel)`),
/// so a subscription to one channel never receives another's events.
///
/// For one release the key of the previous escape (upper case as `-hh`,
/// [`previous_routing_key`](common::routing::previous_routing_key)) is
/// accepted too: events spooled or queued before the upgrade carry it. The
/// two escapes never give one key to two channels.
pub fn check_envelope(
    event: &common::ChatEvent,
    body_len: usize,
    routing_key: &str,
    limits: &EventLimits,
) -> Option<String> {
    if body_len > limits.max_event_bytes {
        return Some(format!(
            "the event is {body_len} bytes, over CONSUMER_MAX_EVENT_BYTES ({})",
            limits.max_event_bytes
        ));
    }
    let text = event.text.as_deref().map_or(0, str::len);
    if text > limits.max_text_bytes {
        return Some(format!(
            "its text is {text} bytes, over CONSUMER_MAX_TEXT_BYTES ({})",
            limits.max_text_bytes
        ));
    }
    let valid_platform = event
        .platform
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !valid_platform {
        return Some(format!(
            "platform {:?} is not a lowercase identifier ([a-z0-9_-]+)",
            event.platform
        ));
    }
    let expected = common::routing::routing_key(&event.platform, &event.channel);
    if routing_key != expected
        && routing_key != common::routing::previous_routing_key(&event.platform, &event.channel)
    {
        return Some(format!(
            "routing key `{routing_key}` contradicts the event's platform and channel, \
             whose key is `{expected}`"
        ));
    }
    None
}

/// Whether ingest can consume and store, for `/readyz`.
#[derive(Debug, Default)]
pub struct IngestStatus {
    consuming: std::sync::atomic::AtomicBool,
    store_failing: std::sync::atomic::AtomicBool,
    last_error: std::sync::Mutex<Option<String>>,
}

/// What `/readyz` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    /// Consuming and able to store.
    pub ready: bool,
    /// Subscribed to the queue (connected to the broker).
    pub consuming: bool,
    /// The last write to the store succeeded (or none failed yet).
    pub store_ok: bool,
    /// The last broker or store error, if any.
    pub last_error: Option<String>,
}

impl IngestStatus {
    /// The readiness figures.
    pub fn readiness(&self) -> Readiness {
        use std::sync::atomic::Ordering;
        let consuming = self.is_consuming();
        let store_ok = !self.store_failing.load(Ordering::SeqCst);
        Readiness {
            ready: consuming && store_ok,
            consuming,
            store_ok,
            last_error: self.last_error.lock().expect("status lock").clone(),
        }
    }

    fn is_consuming(&self) -> bool {
        self.consuming.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn set_consuming(&self, up: bool) {
        self.consuming
            .store(up, std::sync::atomic::Ordering::SeqCst);
        metrics::gauge!("chatbus_consumer_consuming").set(if up { 1.0 } else { 0.0 });
    }

    fn set_store_ok(&self, ok: bool) {
        self.store_failing
            .store(!ok, std::sync::atomic::Ordering::SeqCst);
    }

    fn failed(&self, error: &str) {
        *self.last_error.lock().expect("status lock") = Some(error.to_owned());
    }
}

/// Consumes until `cancel`, reconnecting after any broker failure.
///
/// # Errors
/// A permanent failure (the broker refused the login, the queue exists as
/// something the configuration rules out): retrying cannot help, the
/// consumer stops. Returns `Ok` after `cancel`.
pub async fn run(
    settings: IngestSettings,
    store: Arc<dyn Store>,
    feed: LiveFeedHandle,
    status: Arc<IngestStatus>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let connect = ConnectOptions::new(
        &settings.amqp_url,
        format!("chatbus-consumer {}", settings.instance),
    );
    let mut ingest = Ingest {
        settings,
        connect,
        store,
        feed,
        status,
    };
    let connect = ingest.connect.clone();
    amqp::reconnect_loop(&connect, &mut ingest, &cancel).await
}

struct Ingest {
    settings: IngestSettings,
    connect: ConnectOptions,
    store: Arc<dyn Store>,
    feed: LiveFeedHandle,
    status: Arc<IngestStatus>,
}

/// Why a write did not happen.
enum WriteFailure {
    /// The store refused the data.
    Refused(StoreError),
    /// Shutdown came while the store was unavailable.
    Aborted,
}

type Pulled = Option<Result<Vec<Delivery>, AmqpError>>;

impl amqp::Session for Ingest {
    const NAME: &'static str = "ingest";
    const RECONNECTS_METRIC: &'static str = "chatbus_consumer_ingest_reconnects_total";

    async fn run(
        &mut self,
        connection: &lapin::Connection,
        cancel: &CancellationToken,
    ) -> SessionEnd {
        let session = cancel.child_token();
        let result = self.consume(connection, &session, cancel).await;
        session.cancel();
        // Subscribed: the broker took the whole session set-up.
        let healthy = self.status.is_consuming();
        self.status.set_consuming(false);
        if cancel.is_cancelled() {
            return SessionEnd::Finished;
        }
        let error = match result {
            Ok(()) => anyhow!("the ingest session ended"),
            Err(e) => {
                self.status.failed(&format!("{e:#}"));
                e
            }
        };
        SessionEnd::Lost { error, healthy }
    }
}

impl Ingest {
    async fn consume(
        &self,
        conn: &lapin::Connection,
        session: &CancellationToken,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let s = &self.settings;
        let mut builder = Subscriber::builder(&s.queue)
            .bind_all(&s.bindings)
            .prefetch(s.prefetch)
            .consumer_tag(format!("chatbus-consumer {}", s.instance));
        builder = match s.queue_type {
            // Several broker addresses: a cluster, where the queue should
            // be replicated. An existing queue keeps its type either way.
            QueueTypeChoice::Auto if self.connect.urls().len() > 1 => {
                builder.queue_type(QueueType::Quorum)
            }
            QueueTypeChoice::Auto => builder.queue_type(QueueType::Classic),
            QueueTypeChoice::Classic => builder.require_queue_type(QueueType::Classic),
            QueueTypeChoice::Quorum => builder.require_queue_type(QueueType::Quorum),
        };
        if let Some(expires) = s.topology.queue_expires {
            builder = builder.expires(expires);
        }
        let subscriber = builder
            .build(conn, &s.topology)
            .await
            .with_context(|| format!("subscribing to queue {}", s.queue))?;
        let (signal, announcements) = CommitSignal::open(
            conn,
            &commit_signal::exchange_for(&s.queue),
            s.topology.auto_delete,
            &s.instance,
        )
        .await
        .context("declaring the commit announcements")?;
        tokio::spawn(commit_signal::listen(
            announcements,
            s.instance.clone(),
            self.feed.clone(),
            session.clone(),
        ));
        // On this connection too: commands from the page (opened before
        // readiness, so a ready consumer can send).
        if let Some(commands) = &s.commands {
            commands
                .open(conn)
                .await
                .context("opening the command channel")?;
        }
        tracing::info!(queue = %s.queue, bindings = ?s.bindings, "consuming");
        self.status.set_consuming(true);

        // Batches in the channel: the prefetch bounds the deliveries.
        let (tx, mut rx) = mpsc::channel(64);
        let puller = tokio::spawn(pull(subscriber, tx, s.batch_size, session.clone()));
        let result = match &s.commands {
            Some(commands) => tokio::select! {
                result = self.batches(&mut rx, &signal, shutdown) => result,
                () = commands.keep(conn) => unreachable!("keeping the command channel never ends"),
            },
            None => self.batches(&mut rx, &signal, shutdown).await,
        };
        if let Some(commands) = &s.commands {
            commands.closed();
        }
        session.cancel();
        // Closed here, after the last ack, rather than dropped: see
        // `amqp::close_channel`.
        if let Ok(subscriber) = puller.await {
            subscriber.close().await;
        }
        signal.close().await;
        result
    }

    /// Collects batches and commits them until shutdown or a broker failure.
    async fn batches(
        &self,
        rx: &mut mpsc::Receiver<Pulled>,
        signal: &CommitSignal,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let s = &self.settings;
        // Deliveries received beyond a full batch, for the next one.
        let mut carry: Vec<Delivery> = Vec::new();
        loop {
            let mut batch = Vec::with_capacity(s.batch_size);
            if carry.is_empty() {
                let first = tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return Ok(()),
                    item = rx.recv() => item,
                };
                match first.flatten() {
                    None => return Err(anyhow!("the broker cancelled the consumer")),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(d)) => carry = d,
                }
            }
            take_up_to(&mut carry, &mut batch, s.batch_size);
            let deadline = Instant::now() + s.batch_wait;
            let mut failure = None;
            while batch.len() < s.batch_size {
                let item = match rx.try_recv() {
                    Ok(item) => item,
                    Err(mpsc::error::TryRecvError::Disconnected) => None,
                    Err(mpsc::error::TryRecvError::Empty) => tokio::select! {
                        biased;
                        () = shutdown.cancelled() => break,
                        r = tokio::time::timeout_at(deadline, rx.recv()) => match r {
                            Err(_) => break,
                            Ok(item) => item.flatten(),
                        },
                    },
                };
                match item {
                    None => {
                        failure = Some(anyhow!("the broker cancelled the consumer"));
                        break;
                    }
                    Some(Err(e)) => {
                        failure = Some(e.into());
                        break;
                    }
                    Some(Ok(d)) => {
                        carry = d;
                        take_up_to(&mut carry, &mut batch, s.batch_size);
                    }
                }
            }
            self.commit(&batch, failure.is_none(), signal, shutdown)
                .await?;
            if let Some(e) = failure {
                return Err(e);
            }
        }
    }

    /// Stores `batch`, dead-letters what the store refuses, then (if the
    /// channel is still good) acks the rest in one frame.
    async fn commit(
        &self,
        batch: &[Delivery],
        ack: bool,
        signal: &CommitSignal,
        shutdown: &CancellationToken,
    ) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let mut refused: Vec<(usize, String)> = Vec::new();
        let mut events = Vec::with_capacity(batch.len());
        let mut positions = Vec::with_capacity(batch.len());
        for (i, d) in batch.iter().enumerate() {
            if let Some(reason) = check_envelope(
                &d.event,
                d.body().len(),
                &d.routing_key,
                &self.settings.limits,
            ) {
                refused.push((i, reason));
                continue;
            }
            if let Some(inbox) = &self.settings.self_service
                && let Some(attempt) = crate::privacy::optout_command(&d.event)
            {
                // Acked with the batch, never stored: the code is redeemed
                // (or not) by the self-service task.
                inbox.offer(attempt);
                continue;
            }
            match std::str::from_utf8(d.body()) {
                Ok(json) => {
                    events.push(NewEvent::new(&d.event, json));
                    positions.push(i);
                }
                Err(_) => refused.push((i, "the body is not UTF-8".into())),
            }
        }
        let redelivered = batch.iter().filter(|d| d.redelivered).count();

        let (outcomes, store_refused) = match self.store_isolating(&events, shutdown).await {
            Some(result) => result,
            // Shutdown while the store was down: leave the batch unacked;
            // the broker redelivers it to whoever consumes next.
            None => return Ok(()),
        };
        refused.extend(store_refused.into_iter().map(|(i, reason)| {
            (
                positions[i],
                format!("the store refused the event: {reason}"),
            )
        }));
        refused.sort_unstable_by_key(|(i, _)| *i);
        let stored: usize = outcomes.iter().map(|o| o.stored.len()).sum();
        let duplicates: usize = outcomes.iter().map(|o| o.duplicates).sum();
        let moderated: u64 = outcomes.iter().map(|o| o.moderated).sum();
        metrics::histogram!("chatbus_consumer_commit_seconds")
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("chatbus_consumer_batch_events").record(batch.len() as f64);
        metrics::counter!("chatbus_consumer_events_stored_total").increment(stored as u64);
        metrics::counter!("chatbus_consumer_duplicates_total").increment(duplicates as u64);
        metrics::counter!("chatbus_consumer_redelivered_total").increment(redelivered as u64);
        metrics::counter!("chatbus_consumer_moderated_total").increment(moderated);
        tracing::debug!(
            events = batch.len(),
            stored,
            duplicates,
            redelivered,
            "batch committed"
        );

        for outcome in outcomes {
            if let Some(last) = outcome.stored.last() {
                let through = last.cursor;
                self.feed.committed(outcome.after, outcome.stored);
                signal.announce(through).await;
            }
        }
        if !ack {
            return Ok(());
        }
        for (i, reason) in &refused {
            // Bounded by common::amqp::ACK_TIMEOUT: a broker that went away
            // without closing the connection ends the session, not ingest.
            batch[*i]
                .dead_letter(reason)
                .await
                .context("dead-lettering a refused event")?;
            metrics::counter!("chatbus_consumer_dead_lettered_total").increment(1);
        }
        // One frame acks the batch; skip deliveries already settled by
        // dead-lettering (their tag would be unknown to the broker now).
        let last_ok = (0..batch.len())
            .rev()
            .find(|i| !refused.iter().any(|(r, _)| r == i));
        if let Some(i) = last_ok {
            batch[i].ack_through().await.context("acking a batch")?;
            let acked = batch.len() - refused.len();
            metrics::counter!("chatbus_consumer_acked_total").increment(acked as u64);
        }
        Ok(())
    }

    /// Writes `events` in one transaction; if the store refuses the batch,
    /// writes them one at a time (one outcome each) and returns the refused
    /// ones with the reason. `None` if shutdown came while the store was
    /// unavailable.
    async fn store_isolating(
        &self,
        events: &[NewEvent<'_>],
        shutdown: &CancellationToken,
    ) -> Option<(Vec<WriteOutcome>, Vec<(usize, String)>)> {
        match self.write(events, shutdown).await {
            Ok(outcome) => return Some((vec![outcome], Vec::new())),
            Err(WriteFailure::Aborted) => return None,
            Err(WriteFailure::Refused(e)) if events.len() == 1 => {
                return Some((Vec::new(), vec![(0, e.to_string())]));
            }
            Err(WriteFailure::Refused(e)) => {
                tracing::warn!(error = %e, events = events.len(), "the store refused a batch; writing its events one by one");
            }
        }
        let mut outcomes = Vec::new();
        let mut refused = Vec::new();
        for (i, event) in events.iter().enumerate() {
            match self.write(std::slice::from_ref(event), shutdown).await {
                Ok(outcome) => outcomes.push(outcome),
                Err(WriteFailure::Aborted) => return None,
                Err(WriteFailure::Refused(e)) => {
                    tracing::warn!(error = %e, id = %event.event.id, "the store refused an event; dead-lettering it");
                    refused.push((i, e.to_string()));
                }
            }
        }
        Some((outcomes, refused))
    }

    /// Writes, retrying transient failures with backoff until shutdown.
    async fn write(
        &self,
        events: &[NewEvent<'_>],
        shutdown: &CancellationToken,
    ) -> Result<WriteOutcome, WriteFailure> {
        let backoff = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(5),
            max_attempts: None,
        };
        let mut attempt = 0;
        loop {
            match self.store.write_batch(events).await {
                Ok(outcome) => {
                    self.status.set_store_ok(true);
                    return Ok(outcome);
                }
                Err(e) if e.is_transient() => {
                    self.status.set_store_ok(false);
                    self.status.failed(&format!("store: {e}"));
                    attempt += 1;
                    let delay = backoff.delay(attempt);
                    metrics::counter!("chatbus_consumer_store_retries_total").increment(1);
                    tracing::warn!(error = %e, attempt, retry_in = ?delay, "store unavailable; retrying the batch");
                    tokio::select! {
                        () = shutdown.cancelled() => return Err(WriteFailure::Aborted),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Err(e) => return Err(WriteFailure::Refused(e)),
            }
        }
    }
}

/// Moves deliveries from the front of `from` to `batch` until it holds
/// `max`.
fn take_up_to(from: &mut Vec<Delivery>, batch: &mut Vec<Delivery>, max: usize) {
    let n = from.len().min(max.saturating_sub(batch.len()));
    batch.extend(from.drain(..n));
}

/// Owns the subscriber: forwards deliveries in batches of up to `max` (or
/// the failure that ends the stream) until the session ends, then hands it
/// back to be closed.
async fn pull(
    mut subscriber: Subscriber,
    tx: mpsc::Sender<Pulled>,
    max: usize,
    session: CancellationToken,
) -> Subscriber {
    loop {
        let next = tokio::select! {
            () = session.cancelled() => break,
            next = subscriber.next_batch(max) => next,
        };
        let end = !matches!(next, Some(Ok(_)));
        if tx.send(next).await.is_err() || end {
            break;
        }
    }
    subscriber
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::ChatEvent;
    use common::routing::routing_key;
    use common::schema::{EventBody, MessageDetails};

    fn event(platform: &str, channel: &str, text: &str) -> ChatEvent {
        let now = chrono::Utc::now();
        let mut e = ChatEvent::new(
            "x",
            platform,
            channel,
            now,
            now,
            EventBody::Message(MessageDetails::default()),
        );
        e.text = Some(text.into());
        e
    }

    #[test]
    fn envelopes_are_checked_against_size_platform_and_routing_key() {
        let limits = EventLimits {
            max_event_bytes: 1000,
            max_text_bytes: 100,
        };
        let ok = event("twitch", "chan", "hi");
        let key = routing_key("twitch", "chan");
        assert_eq!(check_envelope(&ok, 500, &key, &limits), None);
        let why = check_envelope(&ok, 1001, &key, &limits).unwrap();
        assert!(
            why.contains("1001 bytes") && why.contains("CONSUMER_MAX_EVENT_BYTES"),
            "{why}"
        );
        let long = event("twitch", "chan", &"é".repeat(51));
        let why = check_envelope(&long, 500, &key, &limits).unwrap();
        assert!(why.contains("text is 102 bytes"), "{why}");
        for platform in ["TWITCH", "Twitch", "twitch.tv", "tw itch", "twïtch"] {
            let e = event(platform, "chan", "hi");
            let why = check_envelope(&e, 500, &routing_key(platform, "chan"), &limits).unwrap();
            assert!(why.contains("lowercase"), "{platform}: {why}");
        }
        assert_eq!(
            check_envelope(
                &event("you_tube-2", "c", "x"),
                10,
                &routing_key("you_tube-2", "c"),
                &limits
            ),
            None
        );
        let why = check_envelope(&ok, 500, "chat.twitch.other", &limits).unwrap();
        assert!(
            why.contains("chat.twitch.other") && why.contains("chat.twitch.chan"),
            "{why}"
        );
    }

    #[test]
    fn the_previous_escape_of_a_key_is_accepted_for_one_release() {
        let limits = EventLimits {
            max_event_bytes: 1000,
            max_text_bytes: 100,
        };
        let e = event("youtube", "UCabc", "hi");
        for key in ["chat.youtube.UCabc", "chat.youtube.-55-43abc"] {
            assert_eq!(check_envelope(&e, 10, key, &limits), None, "{key}");
        }
        // Another channel's key, in either escape, is still refused.
        for key in [
            "chat.youtube.UCabd",
            "chat.youtube.-55-43abd",
            "chat.youtube.uCabc",
        ] {
            let why = check_envelope(&e, 10, key, &limits).unwrap();
            assert!(why.contains("chat.youtube.UCabc"), "{key}: {why}");
        }
    }
}
