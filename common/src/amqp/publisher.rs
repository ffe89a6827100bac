//! Publishing with pipelined publisher confirms.
//!
//! [`Publisher::send`] writes a message and returns a [`PendingConfirm`]
//! at once; many can be in flight, and the broker's acks arrive
//! asynchronously. Nothing here waits one round trip per message.

use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::connection::{ConnectOptions, connect};
use super::message::OutgoingMessage;
use super::{AmqpError, Topology, short};
use crate::schema::ChatEvent;

/// Default number of unconfirmed messages a batch keeps in flight.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// Longest wait for `basic.publish` to be written before the connection is
/// presumed dead.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// Longest wait for the oldest outstanding publisher confirm before the
/// connection is presumed dead (and the message re-sent on a new one).
/// [`Publisher::publish_all`] and [`RecoveringPublisher`] apply it; a caller
/// awaiting [`PendingConfirm::wait`] itself applies its own (one timer per
/// pipeline, not per message), as the ingestor does.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(60);

/// A confirm channel bound to one exchange. It does not reconnect: when the
/// channel dies every call fails with an error whose
/// [`AmqpError::needs_reconnect`] is true; see [`RecoveringPublisher`].
#[derive(Debug, Clone)]
pub struct Publisher {
    channel: Channel,
    exchange: String,
    app_id: String,
}

/// The broker's answer to one published message, still to come.
#[derive(Debug)]
#[must_use = "a publish is only safe once its confirm has been awaited"]
pub struct PendingConfirm {
    confirm: PublisherConfirm,
    message_id: String,
}

impl PendingConfirm {
    /// Waits for the broker's ack.
    ///
    /// # Errors
    /// [`AmqpError::Nacked`] if the broker refused the message;
    /// [`AmqpError::Protocol`] if the channel closed before the answer came
    /// (the message may or may not have been taken: re-send it).
    pub async fn wait(self) -> Result<(), AmqpError> {
        match self
            .confirm
            .await
            .map_err(AmqpError::protocol("publisher confirm"))?
        {
            Confirmation::Ack(_) | Confirmation::NotRequested => Ok(()),
            Confirmation::Nack(_) => Err(AmqpError::Nacked {
                message_id: self.message_id,
            }),
        }
    }
}

impl Publisher {
    /// Opens a channel on `connection`, declares `topology` and enables
    /// publisher confirms. `app_id` names the publishing service.
    ///
    /// # Errors
    /// [`AmqpError::Protocol`] if the channel cannot be opened or the
    /// topology declared.
    pub async fn open(
        connection: &Connection,
        topology: &Topology,
        app_id: &str,
    ) -> Result<Self, AmqpError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::protocol("channel.open"))?;
        topology.declare(&channel).await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(AmqpError::protocol("confirm.select"))?;
        Ok(Self {
            channel,
            exchange: topology.exchange.clone(),
            app_id: app_id.to_owned(),
        })
    }

    /// Whether the channel is usable.
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    /// Closes the channel, for every clone (see [`super::close_channel`]).
    pub async fn close(&self) {
        super::close_channel(&self.channel, "publisher closed").await;
    }

    /// The underlying channel (for declarations the toolkit does not cover).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Publishes one encoded event to the exchange; returns without waiting
    /// for the broker's confirm.
    ///
    /// # Errors
    /// [`AmqpError::Protocol`] if the channel is closed.
    pub async fn send(&self, message: &OutgoingMessage) -> Result<PendingConfirm, AmqpError> {
        let props = message.properties(&self.app_id)?;
        let started = std::time::Instant::now();
        let pending = self
            .send_raw(&self.exchange, &message.routing_key, &message.body, props)
            .await?;
        metrics::histogram!("chatbus_amqp_publish_write_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(PendingConfirm {
            confirm: pending.confirm,
            message_id: message.message_id.clone(),
        })
    }

    /// Publishes arbitrary bytes with arbitrary properties. For
    /// dead-lettering, tools and tests (e.g. publishing a poison payload).
    ///
    /// # Errors
    /// [`AmqpError::Protocol`] if the channel is closed;
    /// [`AmqpError::TooLong`] for an over-long exchange or key.
    pub async fn send_raw(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<PendingConfirm, AmqpError> {
        let publish = self.channel.basic_publish(
            short("exchange", exchange)?,
            short("routing key", routing_key)?,
            BasicPublishOptions::default(),
            body,
            properties,
        );
        let confirm = tokio::time::timeout(SEND_TIMEOUT, publish)
            .await
            .map_err(|_| AmqpError::Timeout {
                op: "basic.publish",
                after: SEND_TIMEOUT,
            })?
            .map_err(AmqpError::protocol("basic.publish"))?;
        Ok(PendingConfirm {
            confirm,
            message_id: String::new(),
        })
    }

    /// Encodes and publishes one event and waits for its confirm.
    ///
    /// # Errors
    /// As [`Publisher::send`] and [`PendingConfirm::wait`].
    pub async fn publish(&self, event: &ChatEvent) -> Result<(), AmqpError> {
        self.send(&OutgoingMessage::from_event(event)?)
            .await?
            .wait()
            .await
    }

    /// Publishes every message, keeping up to `max_in_flight` unconfirmed at
    /// once, and returns when all are confirmed.
    ///
    /// # Errors
    /// The first error; some messages may have been confirmed before it.
    /// Use [`RecoveringPublisher::publish_batch`] for retry semantics.
    pub async fn publish_all(
        &self,
        messages: &[OutgoingMessage],
        max_in_flight: usize,
    ) -> Result<(), AmqpError> {
        let outcomes = self
            .publish_each(messages.iter().enumerate(), max_in_flight)
            .await;
        outcomes
            .into_iter()
            .find_map(|(_, r)| r.err())
            .map_or(Ok(()), Err)
    }

    /// Publishes each `(index, message)` pipelined and reports every
    /// message's outcome. A send failure fails that message and all after it
    /// (the channel is gone); so does [`CONFIRM_TIMEOUT`] without a confirm,
    /// which fails every message still unconfirmed with
    /// [`AmqpError::Timeout`].
    async fn publish_each<'a>(
        &self,
        messages: impl Iterator<Item = (usize, &'a OutgoingMessage)>,
        max_in_flight: usize,
    ) -> Vec<(usize, Result<(), AmqpError>)> {
        let max_in_flight = max_in_flight.max(1);
        let mut outcomes = Vec::new();
        let mut in_flight = FuturesOrdered::new();
        // The indices in `in_flight`, oldest first, to fail them on a timeout.
        let mut unconfirmed = std::collections::VecDeque::new();
        let mut broken = false;
        for (index, message) in messages {
            if broken {
                let message_id = message.message_id.clone();
                outcomes.push((index, Err(AmqpError::NotSent { message_id })));
                continue;
            }
            match self.send(message).await {
                Ok(pending) => {
                    in_flight.push_back(async move { (index, pending.wait().await) });
                    unconfirmed.push_back(index);
                }
                Err(e) => {
                    broken = true;
                    outcomes.push((index, Err(e)));
                    continue;
                }
            }
            while in_flight.len() >= max_in_flight {
                broken |= !next_confirm(&mut in_flight, &mut unconfirmed, &mut outcomes).await;
            }
        }
        while !in_flight.is_empty() {
            next_confirm(&mut in_flight, &mut unconfirmed, &mut outcomes).await;
        }
        outcomes
    }
}

/// Waits up to [`CONFIRM_TIMEOUT`] for the oldest confirm in `in_flight`
/// and records it. On a timeout every unconfirmed message fails with
/// [`AmqpError::Timeout`], `in_flight` is emptied and `false` returned.
async fn next_confirm<F>(
    in_flight: &mut FuturesOrdered<F>,
    unconfirmed: &mut std::collections::VecDeque<usize>,
    outcomes: &mut Vec<(usize, Result<(), AmqpError>)>,
) -> bool
where
    F: std::future::Future<Output = (usize, Result<(), AmqpError>)>,
{
    match tokio::time::timeout(CONFIRM_TIMEOUT, in_flight.next()).await {
        Ok(Some(outcome)) => {
            unconfirmed.pop_front();
            outcomes.push(outcome);
            true
        }
        Ok(None) => true,
        Err(_) => {
            *in_flight = FuturesOrdered::new();
            outcomes.extend(unconfirmed.drain(..).map(|index| {
                (
                    index,
                    Err(AmqpError::Timeout {
                        op: "publisher confirm",
                        after: CONFIRM_TIMEOUT,
                    }),
                )
            }));
            false
        }
    }
}

/// A publisher that owns its connection and recovers from broker restarts:
/// it reconnects with backoff and re-sends whatever was not confirmed.
/// Delivery is at-least-once: a message whose confirm was lost with the
/// connection is sent again.
#[derive(Debug)]
pub struct RecoveringPublisher {
    options: ConnectOptions,
    topology: Topology,
    app_id: String,
    cancel: CancellationToken,
    max_in_flight: usize,
    live: Mutex<Option<(Connection, Publisher)>>,
}

impl RecoveringPublisher {
    /// A publisher that connects lazily with `options` and gives up only
    /// when `cancel` fires.
    pub fn new(
        options: ConnectOptions,
        topology: Topology,
        app_id: &str,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            options,
            topology,
            app_id: app_id.to_owned(),
            cancel,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            live: Mutex::new(None),
        }
    }

    /// Changes how many unconfirmed messages a batch keeps in flight.
    pub fn with_max_in_flight(mut self, max_in_flight: usize) -> Self {
        self.max_in_flight = max_in_flight.max(1);
        self
    }

    /// The current publisher, connecting (with retry) if there is none or the
    /// last one died.
    ///
    /// # Errors
    /// [`AmqpError::Cancelled`] when cancelled; [`AmqpError::Connect`] if the
    /// connect options limit attempts.
    pub async fn publisher(&self) -> Result<Publisher, AmqpError> {
        let mut live = self.live.lock().await;
        if let Some((_, publisher)) = live.as_ref().filter(|(_, p)| p.is_open()) {
            return Ok(publisher.clone());
        }
        if let Some((connection, _)) = live.take() {
            super::close(&connection, "reconnecting").await;
        }
        let mut attempt = 0;
        loop {
            attempt += 1;
            let connection = connect(&self.options, &self.cancel).await?;
            match Publisher::open(&connection, &self.topology, &self.app_id).await {
                Ok(publisher) => {
                    *live = Some((connection, publisher.clone()));
                    return Ok(publisher);
                }
                Err(e) => {
                    let delay = self.options.backoff.delay(attempt);
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot open publisher channel");
                    tokio::select! {
                        () = self.cancel.cancelled() => return Err(AmqpError::Cancelled),
                        () = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// Publishes every message at least once: pipelined, and after any
    /// failure it reconnects and re-sends exactly the messages that were not
    /// confirmed, until all are confirmed or it is cancelled.
    ///
    /// # Errors
    /// [`AmqpError::Cancelled`] if cancelled before everything was confirmed.
    pub async fn publish_batch(&self, messages: &[OutgoingMessage]) -> Result<(), AmqpError> {
        let mut pending: Vec<usize> = (0..messages.len()).collect();
        let mut attempt: u32 = 0;
        while !pending.is_empty() {
            let publisher = self.publisher().await?;
            let outcomes = publisher
                .publish_each(
                    pending.iter().map(|&i| (i, &messages[i])),
                    self.max_in_flight,
                )
                .await;
            let mut failed = Vec::new();
            let mut reconnect = false;
            let mut last_error = None;
            for (index, outcome) in outcomes {
                if let Err(e) = outcome {
                    reconnect |= e.needs_reconnect();
                    last_error = Some(e);
                    failed.push(index);
                }
            }
            if failed.is_empty() {
                return Ok(());
            }
            failed.sort_unstable();
            attempt += 1;
            metrics::counter!("chatbus_amqp_publish_retries_total").increment(failed.len() as u64);
            if reconnect {
                // Drop the dead publisher so the next round reconnects.
                self.live.lock().await.take();
            }
            let delay = self.options.backoff.delay(attempt);
            tracing::warn!(
                unconfirmed = failed.len(),
                error = %last_error.map(|e| e.to_string()).unwrap_or_default(),
                retry_in = ?delay,
                "re-sending unconfirmed messages"
            );
            tokio::select! {
                () = self.cancel.cancelled() => return Err(AmqpError::Cancelled),
                () = tokio::time::sleep(delay) => {}
            }
            pending = failed;
        }
        Ok(())
    }

    /// Closes the connection, if any.
    pub async fn close(&self) {
        if let Some((connection, _)) = self.live.lock().await.take() {
            super::close(&connection, "bye").await;
        }
    }
}
