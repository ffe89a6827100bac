//! The publishing pipeline: outbox -> RabbitMQ with pipelined publisher
//! confirms (up to `max_in_flight` unconfirmed), reconnecting with backoff
//! and re-sending everything unconfirmed when the broker goes away.
//! An outbox entry is released only when the broker has confirmed it.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::amqp::{self, AmqpError, ConnectOptions, Publisher, Topology};
use futures::StreamExt;
use futures::future::BoxFuture;
use futures::stream::FuturesOrdered;
use tokio_util::sync::CancellationToken;

use crate::outbox::{Entry, Outbox};

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

type Confirm = BoxFuture<'static, Result<(), AmqpError>>;

/// Runs the pipeline until `cancel`; then waits briefly for outstanding
/// confirms. Unconfirmed entries stay in the spool for the next start.
///
/// # Errors
/// Only if the spool cannot be read.
pub async fn run(
    outbox: Arc<Outbox>,
    options: PipelineOptions,
    status: Arc<BrokerStatus>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    // Entries taken from the outbox but not confirmed, to send (again) first.
    let mut resend: VecDeque<Entry> = VecDeque::new();
    let mut failures: u32 = 0;
    let mut first = true;
    loop {
        if !first {
            failures += 1;
            let delay = options.connect.backoff.delay(failures);
            tracing::info!(retry_in = ?delay, unconfirmed = resend.len(), "reconnecting to RabbitMQ");
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
        first = false;
        let connection = match amqp::connect(&options.connect, &cancel).await {
            Ok(c) => c,
            Err(AmqpError::Cancelled) => return Ok(()),
            Err(e) => {
                tracing::error!(error = %e, "cannot connect to RabbitMQ");
                continue;
            }
        };
        let publisher = match Publisher::open(&connection, &options.topology, APP_ID).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot open the publishing channel");
                amqp::close(&connection, "channel setup failed").await;
                continue;
            }
        };
        status.set(true);
        metrics::counter!("chatbus_ingestor_amqp_sessions_total").increment(1);
        tracing::info!(resending = resend.len(), "publishing to RabbitMQ");
        let events = connection.events_listener();
        let outcome = publish_session(
            &outbox,
            &publisher,
            events,
            &options,
            &mut resend,
            &cancel,
            &mut failures,
        )
        .await;
        status.set(false);
        amqp::close(&connection, "ingestor session ended").await;
        match outcome {
            Session::Cancelled => return Ok(()),
            Session::SpoolError(e) => return Err(e.into()),
            Session::Failed(e) => {
                metrics::counter!("chatbus_ingestor_amqp_reconnects_total").increment(1);
                tracing::warn!(error = %e, unconfirmed = resend.len(), "lost the broker; will re-send unconfirmed events");
            }
        }
    }
}

enum Session {
    Cancelled,
    Failed(AmqpError),
    SpoolError(crate::spool::SpoolError),
}

async fn publish_session(
    outbox: &Outbox,
    publisher: &Publisher,
    events: impl futures::Stream<Item = lapin::Event> + Send,
    options: &PipelineOptions,
    resend: &mut VecDeque<Entry>,
    cancel: &CancellationToken,
    failures: &mut u32,
) -> Session {
    let mut confirms: FuturesOrdered<Confirm> = FuturesOrdered::new();
    let mut in_flight: VecDeque<(Entry, Instant)> = VecDeque::new();
    let max = options.max_in_flight.max(1);
    tokio::pin!(events);
    let mut health = tokio::time::interval(Duration::from_secs(1));
    health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let failure = loop {
        // Fill the window from the resend queue first, then the outbox.
        let next_entry = async {
            match resend.pop_front() {
                Some(e) => Ok(e),
                None => outbox.next().await,
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
                lapin::Event::Error(e) => break AmqpError::Protocol { op: "connection", source: e },
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
                tracing::trace!(in_flight = in_flight.len(), oldest = ?in_flight.front().map(|(_, t)| t.elapsed()), open = publisher.is_open(), resend = resend.len(), "publisher health");
                if !publisher.is_open() {
                    break AmqpError::ChannelClosed;
                }
                if let Some((_, sent)) = in_flight.front()
                    && sent.elapsed() > options.confirm_timeout
                {
                    break AmqpError::Timeout { op: "publisher confirm", after: options.confirm_timeout };
                }
            }
            Some(result) = confirms.next(), if !confirms.is_empty() => {
                let (entry, sent) = in_flight.pop_front().expect("a confirm per in-flight entry");
                match result {
                    Ok(()) => {
                        *failures = 0;
                        confirmed(outbox, &entry, sent);
                    }
                    Err(e) => {
                        resend.push_back(entry);
                        break e;
                    }
                }
            }
            entry = next_entry, if in_flight.len() < max => {
                let entry = match entry {
                    Ok(e) => e,
                    Err(e) => return Session::SpoolError(e),
                };
                match publisher.send(&entry.message).await {
                    Ok(pending) => {
                        metrics::counter!(
                            "chatbus_ingestor_events_published_total",
                            "channel" => entry.message.channel.clone(),
                            "kind" => entry.message.kind.as_str()
                        ).increment(1);
                        confirms.push_back(Box::pin(pending.wait()));
                        in_flight.push_back((entry, Instant::now()));
                    }
                    Err(e) => {
                        resend.push_front(entry);
                        break e;
                    }
                }
            }
        }
    };
    // Everything still in flight goes back, in order, ahead of the rest.
    for (entry, _) in in_flight.into_iter().rev() {
        resend.push_front(entry);
    }
    let mut v: Vec<Entry> = resend.drain(..).collect();
    v.sort_by_key(|e| e.seq);
    v.dedup_by_key(|e| e.seq);
    resend.extend(v);
    Session::Failed(failure)
}

fn confirmed(outbox: &Outbox, entry: &Entry, sent: Instant) {
    outbox.confirm(entry.seq);
    metrics::histogram!("chatbus_ingestor_publish_confirm_seconds")
        .record(sent.elapsed().as_secs_f64());
    metrics::counter!(
        "chatbus_ingestor_events_confirmed_total",
        "channel" => entry.message.channel.clone(),
        "kind" => entry.message.kind.as_str()
    )
    .increment(1);
}

async fn drain_on_shutdown(
    outbox: &Outbox,
    confirms: &mut FuturesOrdered<Confirm>,
    in_flight: &mut VecDeque<(Entry, Instant)>,
) {
    let deadline = tokio::time::sleep(SHUTDOWN_GRACE);
    tokio::pin!(deadline);
    while !confirms.is_empty() {
        tokio::select! {
            () = &mut deadline => break,
            Some(result) = confirms.next() => {
                let (entry, sent) = in_flight.pop_front().expect("a confirm per in-flight entry");
                if result.is_ok() {
                    confirmed(outbox, &entry, sent);
                }
            }
        }
    }
    if !in_flight.is_empty() {
        tracing::info!(
            unconfirmed = in_flight.len(),
            "shutting down with unconfirmed events; they stay in the spool"
        );
    }
}
