//! The publishing pipeline: outbox -> RabbitMQ in batches with pipelined
//! publisher confirms (up to `max_in_flight` unconfirmed), reconnecting
//! with backoff (common's `amqp::reconnect_loop`, which runs a
//! `PublishSession` per connection) and re-sending everything unconfirmed
//! when the broker goes away. An outbox entry is released only when the
//! broker has confirmed it.
//!
//! Each batch is what the outbox holds when the publisher asks (up to
//! 512), queued whole on the channel before lapin writes any of it
//! (`Publisher::send_batch`): under load many messages share a socket
//! write, and an idle pipeline sends a lone event at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::amqp::{self, AmqpError, ConnectOptions, Publisher, SessionEnd, Topology};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use lapin::Connection;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Entry, Outbox};
use crate::privacy::Privacy;

/// The AMQP `app_id` of everything the ingestor publishes.
pub const APP_ID: &str = "chatbus-ingestor";

/// How long shutdown waits for confirms of messages already sent.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Settings of the publishing pipeline.
#[derive(Debug, Clone)]
pub struct PipelineOptions {
    /// Broker connection (its backoff also paces reconnects).
    pub connect: ConnectOptions,
    /// Exchange and friends.
    pub topology: Topology,
    /// Unconfirmed messages in flight.
    pub max_in_flight: usize,
    /// How long the oldest unconfirmed message may wait for its confirm
    /// before the session is abandoned and everything unconfirmed re-sent.
    pub confirm_timeout: Duration,
}

/// Whether the pipeline currently has a working broker channel.
#[derive(Debug, Default)]
pub struct BrokerStatus(AtomicBool);

impl BrokerStatus {
    /// Connected and able to publish.
    pub fn connected(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    fn set(&self, up: bool) {
        self.0.store(up, Ordering::SeqCst);
        metrics::gauge!("chatbus_ingestor_broker_connected").set(if up { 1.0 } else { 0.0 });
    }
}

/// Most messages sent as one batch (queued whole before lapin writes).
const BATCH_MAX: usize = 512;

type Confirms = BoxFuture<'static, Vec<Result<(), AmqpError>>>;

/// A batch written to the broker, its confirms awaited.
struct InFlight {
    entries: Vec<Entry>,
    sent: Instant,
}

/// Runs the pipeline until `cancel`; then waits briefly for outstanding
/// confirms. Unconfirmed entries stay in the spool for the next start.
/// Nothing is published before `privacy`'s list is loaded, and entries
/// it refuses are released unpublished ([`Privacy::screen`]).
///
/// # Errors
/// If the spool cannot be read, or the broker refuses for good (a wrong
/// password, a topology conflict).
pub async fn run(
    outbox: Arc<Outbox>,
    options: PipelineOptions,
    status: Arc<BrokerStatus>,
    privacy: Arc<Privacy>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut session = PublishSession {
        outbox,
        options,
        status,
        privacy,
        resend: VecDeque::new(),
    };
    let connect = session.options.connect.clone();
    amqp::reconnect_loop(&connect, &mut session, &cancel).await
}

/// One broker connection's worth of publishing, and what it leaves
/// unconfirmed for the next.
struct PublishSession {
    outbox: Arc<Outbox>,
    options: PipelineOptions,
    status: Arc<BrokerStatus>,
    privacy: Arc<Privacy>,
    /// Entries taken from the outbox but not confirmed, to send (again) first.
    resend: VecDeque<Entry>,
}

impl amqp::Session for PublishSession {
    const NAME: &'static str = "publisher";
    const RECONNECTS_METRIC: &'static str = "chatbus_ingestor_amqp_reconnects_total";

    async fn run(&mut self, connection: &Connection, cancel: &CancellationToken) -> SessionEnd {
        let publisher = match Publisher::open(connection, &self.options.topology, APP_ID).await {
            Ok(p) => p,
            Err(e) => {
                return SessionEnd::lost(
                    anyhow::Error::new(e).context("opening the publishing channel"),
                );
            }
        };
        self.status.set(true);
        metrics::counter!("chatbus_ingestor_amqp_sessions_total").increment(1);
        if !self.privacy.is_loaded() {
            tracing::info!(
                stream = self.privacy.stream(),
                "waiting for the privacy list before publishing"
            );
            tokio::select! {
                () = cancel.cancelled() => {
                    self.status.set(false);
                    publisher.close().await;
                    return SessionEnd::Finished;
                }
                () = self.privacy.ready() => {}
            }
        }
        tracing::info!(resending = self.resend.len(), "publishing to RabbitMQ");
        let mut healthy = false;
        let outcome = publish_session(
            &self.outbox,
            &self.privacy,
            &publisher,
            connection.events_listener(),
            &self.options,
            &mut self.resend,
            cancel,
            &mut healthy,
        )
        .await;
        self.status.set(false);
        match outcome {
            Session::Cancelled => SessionEnd::Finished,
            Session::SpoolError(e) => SessionEnd::Fatal(e.into()),
            Session::Failed(error) => {
                tracing::info!(
                    unconfirmed = self.resend.len(),
                    "will re-send unconfirmed events after reconnecting"
                );
                SessionEnd::Lost {
                    error: error.into(),
                    healthy,
                }
            }
        }
    }
}

enum Session {
    Cancelled,
    Failed(AmqpError),
    SpoolError(crate::spool::SpoolError),
}

#[allow(clippy::too_many_arguments)]
async fn publish_session(
    outbox: &Outbox,
    privacy: &Privacy,
    publisher: &Publisher,
    events: impl futures::Stream<Item = lapin::Event> + Send,
    options: &PipelineOptions,
    resend: &mut VecDeque<Entry>,
    cancel: &CancellationToken,
    confirmed_any: &mut bool,
) -> Session {
    let mut confirms: FuturesOrdered<Confirms> = FuturesOrdered::new();
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let mut unconfirmed = 0usize;
    let max = options.max_in_flight.max(1);
    tokio::pin!(events);
    let mut health = tokio::time::interval(Duration::from_secs(1));
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let failure = loop {
        let room = max.saturating_sub(unconfirmed).min(BATCH_MAX);
        // Fill the window from the resend queue first, then the outbox.
        let next_batch = async {
            if resend.is_empty() {
                outbox.next_batch(room).await
            } else {
                let n = room.min(resend.len());
                Ok(resend.drain(..n).collect())
            }
        };
        tokio::select! {
            biased;
            () = cancel.cancelled() => {
                drain_on_shutdown(outbox, &mut confirms, &mut in_flight).await;
                return Session::Cancelled;
            }
            // Notice a dead connection even while idle, so /readyz and the
            // reconnect do not wait for the next event to publish.
            Some(event) = events.next() => match event {
                lapin::Event::Error(e) => break AmqpError::Protocol { op: "connection", error: e },
                lapin::Event::ConnectionBlocked(reason) => {
                    metrics::gauge!("chatbus_ingestor_broker_blocked").set(1.0);
                    tracing::warn!(%reason, "RabbitMQ blocked publishing (resource alarm); events wait in the spool");
                }
                lapin::Event::ConnectionUnblocked => {
                    metrics::gauge!("chatbus_ingestor_broker_blocked").set(0.0);
                    tracing::info!("RabbitMQ unblocked publishing");
                }
                _ => {}
            },
            // lapin can leave a publish or confirm pending forever when the
            // server drops the connection at the wrong moment
            // (amqp-rs/lapin#409): do not trust a silent channel.
            _ = health.tick() => {
                tracing::trace!(in_flight = unconfirmed, oldest = ?in_flight.front().map(|b| b.sent.elapsed()), open = publisher.is_open(), resend = resend.len(), "publisher health");
                if !publisher.is_open() {
                    break AmqpError::ChannelClosed;
                }
                if let Some(oldest) = in_flight.front()
                    && oldest.sent.elapsed() > options.confirm_timeout
                {
                    break AmqpError::Timeout { op: "publisher confirm", after: options.confirm_timeout };
                }
            }
            Some(outcomes) = confirms.next(), if !confirms.is_empty() => {
                let batch = in_flight.pop_front().expect("a batch per confirm future");
                unconfirmed -= batch.entries.len();
                let mut failed = None;
                let mut ok = Vec::with_capacity(batch.entries.len());
                for (entry, outcome) in batch.entries.into_iter().zip(outcomes) {
                    match outcome {
                        Ok(()) => ok.push(entry),
                        Err(e) => {
                            failed.get_or_insert(e);
                            resend.push_back(entry);
                        }
                    }
                }
                if !ok.is_empty() {
                    *confirmed_any = true;
                    confirmed(outbox, &ok, batch.sent);
                }
                if let Some(e) = failed {
                    break e;
                }
            }
            entries = next_batch, if room > 0 => {
                let entries = match entries {
                    Ok(e) => privacy.screen(outbox, e),
                    Err(e) => return Session::SpoolError(e),
                };
                if entries.is_empty() {
                    continue;
                }
                let pending = publisher.send_batch(entries.iter().map(|e| &*e.message)).await;
                count_entries(crate::channel_metrics::Counter::Published, &entries);
                unconfirmed += entries.len();
                in_flight.push_back(InFlight { entries, sent: Instant::now() });
                confirms.push_back(Box::pin(pending.wait()));
            }
        }
    };
    // Everything still in flight goes back, in order, ahead of the rest.
    for batch in in_flight.into_iter().rev() {
        for entry in batch.entries.into_iter().rev() {
            resend.push_front(entry);
        }
    }
    let mut v: Vec<Entry> = resend.drain(..).collect();
    v.sort_by_key(|e| e.seq);
    v.dedup_by_key(|e| e.seq);
    resend.extend(v);
    Session::Failed(failure)
}

fn count_entries(counter: crate::channel_metrics::Counter, entries: &[Entry]) {
    crate::channel_metrics::count(
        counter,
        entries.iter().map(|e| {
            (
                e.message.platform.as_str(),
                e.message.channel.as_str(),
                e.message.kind,
            )
        }),
    );
}

fn confirmed(outbox: &Outbox, entries: &[Entry], sent: Instant) {
    outbox.confirm_all(entries.iter().map(|e| e.seq));
    metrics::histogram!("chatbus_ingestor_publish_confirm_seconds")
        .record(sent.elapsed().as_secs_f64());
    count_entries(crate::channel_metrics::Counter::Confirmed, entries);
}

async fn drain_on_shutdown(
    outbox: &Outbox,
    confirms: &mut FuturesOrdered<Confirms>,
    in_flight: &mut VecDeque<InFlight>,
) {
    let deadline = tokio::time::sleep(SHUTDOWN_GRACE);
    tokio::pin!(deadline);
    while !confirms.is_empty() {
        tokio::select! {
            () = &mut deadline => break,
            Some(outcomes) = confirms.next() => {
                let batch = in_flight.pop_front().expect("a batch per confirm future");
                let ok: Vec<Entry> = batch
                    .entries
                    .into_iter()
                    .zip(outcomes)
                    .filter(|(_, o)| o.is_ok())
                    .map(|(e, _)| e)
                    .collect();
                confirmed(outbox, &ok, batch.sent);
            }
        }
    }
    let left: usize = in_flight.iter().map(|b| b.entries.len()).sum();
    if left > 0 {
        tracing::info!(
            unconfirmed = left,
            "shutting down with unconfirmed events; they stay in the spool"
        );
    }
}
