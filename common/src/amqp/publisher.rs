//! Publishing with pipelined publisher confirms, in batches.
//!
//! [`Publisher::send_batch`] queues a whole batch on the channel before any
//! of it is written, so lapin's I/O loop writes many messages per socket
//! write, and returns a [`PendingBatch`] whose confirms arrive
//! asynchronously; [`Publisher::publish_batch`] keeps several batches in
//! flight and reports each message's outcome in order. Nothing here waits
//! one round trip, or one socket write, per message. [`Publisher::send`]
//! publishes a single message the same way.

use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use futures::stream::{FuturesOrdered, StreamExt};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use lapin::{BasicProperties, Channel, Confirmation, Connection, PublisherConfirm};

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
/// [`Publisher::publish_batch`] and [`Publisher::publish_all`] apply it; a caller
/// awaiting [`PendingConfirm::wait`] itself applies its own (one timer per
/// pipeline, not per message), as the ingestor does.
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(60);

/// A confirm channel bound to one exchange. It does not reconnect: when the
/// channel dies every call fails with an error whose
/// [`AmqpError::needs_reconnect`] is true; run it in a [`Session`](super::Session)
/// under [`reconnect_loop`](super::reconnect_loop) to carry on after one.
#[derive(Debug, Clone)]
pub struct Publisher {
    channel: Channel,
    exchange: ShortString,
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
        topology.declare(connection).await?;
        Self::open_declared(connection, topology, app_id).await
    }

    /// [`Publisher::open`] for a topology already declared on `connection`.
    pub(crate) async fn open_declared(
        connection: &Connection,
        topology: &Topology,
        app_id: &str,
    ) -> Result<Self, AmqpError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::protocol("channel.open"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(AmqpError::protocol("confirm.select"))?;
        Ok(Self {
            channel,
            exchange: short("exchange", topology.exchange.as_str())?,
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
            .send_raw(
                self.exchange.as_str(),
                &message.routing_key,
                &message.body,
                props,
            )
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

    /// Queues every message of a batch on the channel before any of them is
    /// written, so lapin's I/O loop writes them together (many frames per
    /// socket write), then waits until they are written. Returns their
    /// confirms, still to come, in the batch's order.
    ///
    /// Order is kept: the messages are queued in the order given, on one
    /// channel, and the broker confirms them in that order.
    ///
    /// A message that cannot be queued or written (the channel closed, or
    /// lapin wrote nothing for [`SEND_TIMEOUT`]) fails, and so does every
    /// message after it: [`PendingBatch::wait`] reports it.
    pub async fn send_batch<'a, I>(&self, messages: I) -> PendingBatch
    where
        I: IntoIterator<Item = &'a OutgoingMessage>,
    {
        let started = std::time::Instant::now();
        let mut ids = Vec::new();
        let mut slots: Vec<Slot> = Vec::new();
        let mut sends = Vec::new();
        for message in messages {
            ids.push(message.message_id.clone());
            let prepared = message
                .properties(&self.app_id)
                .and_then(|props| Ok((short("routing key", message.routing_key.as_str())?, props)));
            match prepared {
                Ok((routing_key, props)) => {
                    slots.push(Slot::Sending);
                    sends.push(Some(Box::pin(self.channel.basic_publish(
                        self.exchange.clone(),
                        routing_key,
                        BasicPublishOptions::default(),
                        &message.body,
                        props,
                    ))));
                }
                Err(e) => {
                    // Refused before anything was queued: only this one fails.
                    slots.push(Slot::Done(Err(e)));
                    sends.push(None);
                }
            }
        }
        // lapin's `basic_publish` queues its frames on its first poll and
        // then waits for the I/O loop to write them. Polling every publish
        // once, in order, queues the whole batch before anything is written;
        // writes complete in queue order, so later polls resume at the first
        // publish not yet written.
        let mut next = 0;
        let mut first_pass = true;
        let written = std::future::poll_fn(|cx| {
            let mut i = next;
            while i < sends.len() {
                if let Some(send) = sends[i].as_mut() {
                    match send.as_mut().poll(cx) {
                        Poll::Ready(result) => {
                            sends[i] = None;
                            slots[i] = match result {
                                Ok(confirm) => Slot::Waiting(confirm),
                                Err(error) => Slot::Done(Err(AmqpError::Protocol {
                                    op: "basic.publish",
                                    error,
                                })),
                            };
                        }
                        Poll::Pending if first_pass => {}
                        Poll::Pending => break,
                    }
                }
                if next == i && sends[i].is_none() {
                    next = i + 1;
                }
                i += 1;
            }
            first_pass = false;
            if next >= sends.len() {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        });
        if tokio::time::timeout(SEND_TIMEOUT, written).await.is_err() {
            for (slot, send) in slots.iter_mut().zip(&sends) {
                if send.is_some() {
                    *slot = Slot::Done(Err(AmqpError::Timeout {
                        op: "basic.publish",
                        after: SEND_TIMEOUT,
                    }));
                }
            }
        }
        drop(sends);
        // Once one message could not be sent the channel is gone: whatever
        // lapin still took after it is not trusted to be confirmed either.
        if let Some(broken) = slots
            .iter()
            .position(|s| matches!(s, Slot::Done(Err(e)) if e.needs_reconnect()))
        {
            for (slot, id) in slots.iter_mut().zip(&ids).skip(broken + 1) {
                if !matches!(slot, Slot::Done(Err(_))) {
                    *slot = Slot::Done(Err(AmqpError::NotSent {
                        message_id: id.clone(),
                    }));
                }
            }
        }
        metrics::histogram!("chatbus_amqp_publish_write_seconds")
            .record(started.elapsed().as_secs_f64());
        PendingBatch { slots, ids }
    }

    /// Publishes every message, pipelined in batches (each queued whole
    /// before any of it is written, see [`Publisher::send_batch`]) with up to
    /// `max_in_flight` unconfirmed, and reports each message's outcome, in
    /// order.
    ///
    /// A message that cannot be sent fails with every message after it (the
    /// channel is gone). When no confirm arrives for [`CONFIRM_TIMEOUT`],
    /// every message still unconfirmed fails with [`AmqpError::Timeout`],
    /// and nothing more is sent.
    pub async fn publish_batch(
        &self,
        messages: &[OutgoingMessage],
        max_in_flight: usize,
    ) -> Vec<Result<(), AmqpError>> {
        self.publish_indexed(messages.iter().enumerate(), max_in_flight)
            .await
            .into_iter()
            .map(|(_, r)| r)
            .collect()
    }

    /// Publishes every message (as [`Publisher::publish_batch`]) and returns
    /// when all are confirmed.
    ///
    /// # Errors
    /// The first error; some messages may have been confirmed before it.
    /// To re-send what failed on a new connection, publish in a
    /// [`Session`](super::Session) (see [`reconnect_loop`](super::reconnect_loop)).
    pub async fn publish_all(
        &self,
        messages: &[OutgoingMessage],
        max_in_flight: usize,
    ) -> Result<(), AmqpError> {
        self.publish_batch(messages, max_in_flight)
            .await
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), Err)
    }

    /// [`Publisher::publish_batch`] over `(index, message)` pairs; returns
    /// `(index, outcome)` for every message, in order.
    async fn publish_indexed<'a>(
        &self,
        messages: impl Iterator<Item = (usize, &'a OutgoingMessage)>,
        max_in_flight: usize,
    ) -> Vec<(usize, Result<(), AmqpError>)> {
        let max_in_flight = max_in_flight.max(1);
        // Up to four batches in flight: one being written while the broker
        // confirms the others.
        let chunk = max_in_flight.div_ceil(4);
        let mut outcomes = Vec::new();
        let mut in_flight = FuturesOrdered::new();
        let mut unconfirmed = 0;
        let mut broken = false;
        let mut messages = messages.peekable();
        loop {
            let room = max_in_flight - unconfirmed;
            if !broken && room > 0 && messages.peek().is_some() {
                let batch: Vec<(usize, &OutgoingMessage)> =
                    messages.by_ref().take(chunk.min(room)).collect();
                let pending = self.send_batch(batch.iter().map(|(_, m)| *m)).await;
                broken |= pending.has_send_failure();
                unconfirmed += batch.len();
                let indices: Vec<usize> = batch.into_iter().map(|(i, _)| i).collect();
                in_flight.push_back(async move {
                    (indices, pending.wait_timeout(CONFIRM_TIMEOUT).await)
                });
                continue;
            }
            let Some((indices, results)) = in_flight.next().await else {
                break;
            };
            unconfirmed -= indices.len();
            for (index, result) in indices.into_iter().zip(results) {
                broken |= matches!(&result, Err(e) if e.needs_reconnect());
                outcomes.push((index, result));
            }
        }
        // Nothing more is sent on a broken channel.
        outcomes.extend(messages.map(|(index, message)| {
            let message_id = message.message_id.clone();
            (index, Err(AmqpError::NotSent { message_id }))
        }));
        outcomes
    }
}

/// Where one message of a [`PendingBatch`] stands.
enum Slot {
    /// Queued, not written yet (only inside [`Publisher::send_batch`]).
    Sending,
    /// Written; the broker's confirm is to come.
    Waiting(PublisherConfirm),
    /// Settled.
    Done(Result<(), AmqpError>),
}

/// A batch whose messages are written; their confirms are still to come.
/// [`PendingBatch::wait`] reports each message's outcome in the batch's
/// order.
#[must_use = "a publish is only safe once its confirm has been awaited"]
pub struct PendingBatch {
    slots: Vec<Slot>,
    ids: Vec<String>,
}

impl std::fmt::Debug for PendingBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingBatch")
            .field("messages", &self.slots.len())
            .finish()
    }
}

impl PendingBatch {
    /// Messages in the batch.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the batch is empty.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Whether some message could not be sent because the channel or the
    /// connection failed: a reconnect is needed, and every message after it
    /// failed too.
    pub fn has_send_failure(&self) -> bool {
        self.slots
            .iter()
            .any(|s| matches!(s, Slot::Done(Err(e)) if e.needs_reconnect()))
    }

    /// Waits for every confirm and returns each message's outcome, in
    /// order: `Ok` once the broker took responsibility for it,
    /// [`AmqpError::Nacked`] if it refused it, or the error that kept it
    /// from being sent or confirmed (re-send it on a new channel).
    pub async fn wait(self) -> Vec<Result<(), AmqpError>> {
        self.settle(None).await
    }

    /// As [`PendingBatch::wait`], but when no confirm arrives for `timeout`
    /// every message still unconfirmed fails with [`AmqpError::Timeout`]
    /// (the connection is presumed dead: lapin can leave a confirm pending
    /// forever, amqp-rs/lapin#409).
    pub async fn wait_timeout(self, timeout: Duration) -> Vec<Result<(), AmqpError>> {
        self.settle(Some(timeout)).await
    }

    async fn settle(self, timeout: Option<Duration>) -> Vec<Result<(), AmqpError>> {
        let Self { mut slots, ids } = self;
        // The broker confirms in publish order (one multiple-ack settles
        // many), so each poll resumes at the first unsettled message and
        // stops at the first still pending.
        let mut next = 0;
        while next < slots.len() {
            let progress = std::future::poll_fn(|cx| {
                let start = next;
                while let Some(slot) = slots.get_mut(next) {
                    if let Slot::Waiting(confirm) = slot {
                        let Poll::Ready(result) = Pin::new(confirm).poll(cx) else {
                            break;
                        };
                        *slot = Slot::Done(match result {
                            Ok(Confirmation::Ack(_) | Confirmation::NotRequested) => Ok(()),
                            Ok(Confirmation::Nack(_)) => Err(AmqpError::Nacked {
                                message_id: ids[next].clone(),
                            }),
                            Err(error) => Err(AmqpError::Protocol {
                                op: "publisher confirm",
                                error,
                            }),
                        });
                    }
                    next += 1;
                }
                if next > start || next == slots.len() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            });
            let stalled = match timeout {
                Some(after) => tokio::time::timeout(after, progress).await.is_err(),
                None => {
                    progress.await;
                    false
                }
            };
            if stalled {
                let after = timeout.unwrap_or_default();
                for slot in &mut slots[next..] {
                    if matches!(slot, Slot::Waiting(_)) {
                        *slot = Slot::Done(Err(AmqpError::Timeout {
                            op: "publisher confirm",
                            after,
                        }));
                    }
                }
                break;
            }
        }
        slots
            .into_iter()
            .map(|slot| match slot {
                Slot::Done(result) => result,
                Slot::Sending | Slot::Waiting(_) => unreachable!("every message is settled"),
            })
            .collect()
    }
}
