//! Subscribing: a queue bound to topic patterns, typed deliveries, manual
//! acks, and dead-lettering with a reason.

use std::time::Duration;

use futures::StreamExt;
use lapin::message::Delivery as RawDelivery;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions, QueueBindOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, Consumer};

use super::message::{CONTENT_TYPE, headers, long};
use super::topology::{QueueSpec, declare_queue};
use super::{AmqpError, Publisher, Topology, short};
use crate::routing::TopicPattern;
use crate::schema::ChatEvent;

/// The kind of queue to declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    /// A classic queue: one node, the default.
    #[default]
    Classic,
    /// A quorum queue: replicated over a RabbitMQ cluster (durable only).
    Quorum,
}

/// Builds a [`Subscriber`].
#[derive(Debug, Clone)]
pub struct SubscriberBuilder {
    queue: String,
    bindings: Vec<String>,
    prefetch: u16,
    durable: bool,
    exclusive: bool,
    auto_delete: bool,
    queue_type: QueueType,
    queue_type_required: bool,
    expires: Option<Duration>,
    consumer_tag: String,
}

impl SubscriberBuilder {
    /// Adds a binding pattern (`chat.twitch.*`, `chat.*.somechannel`, `chat.#`).
    pub fn bind(mut self, pattern: impl Into<String>) -> Self {
        self.bindings.push(pattern.into());
        self
    }

    /// Adds several binding patterns.
    pub fn bind_all<I, S>(mut self, patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.bindings.extend(patterns.into_iter().map(Into::into));
        self
    }

    /// Most unacknowledged deliveries the broker sends at once (default 256).
    pub fn prefetch(mut self, prefetch: u16) -> Self {
        self.prefetch = prefetch.max(1);
        self
    }

    /// A queue that survives broker restarts (default true).
    pub fn durable(mut self, durable: bool) -> Self {
        self.durable = durable;
        self
    }

    /// A queue only this connection may use, deleted when it closes.
    pub fn exclusive(mut self, exclusive: bool) -> Self {
        self.exclusive = exclusive;
        self
    }

    /// Delete the queue when its last consumer goes away.
    pub fn auto_delete(mut self, auto_delete: bool) -> Self {
        self.auto_delete = auto_delete;
        self
    }

    /// Classic or quorum queue, as a preference: an existing queue of the
    /// other type is used as it is.
    pub fn queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }

    /// Classic or quorum queue, required: an existing queue of the other
    /// type is a [`super::TopologyConflict`].
    pub fn require_queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self.queue_type_required = true;
        self
    }

    /// Delete the queue after it has been unused this long (`x-expires`).
    pub fn expires(mut self, after: Duration) -> Self {
        self.expires = Some(after);
        self
    }

    /// Names the consumer in the management UI.
    pub fn consumer_tag(mut self, tag: impl Into<String>) -> Self {
        self.consumer_tag = tag.into();
        self
    }

    /// Declares the topology, the queue (no arguments beyond its type and expiry:
    /// dead-lettering comes from the policy, and undecodable deliveries are
    /// republished to the topology's DLX by the subscriber itself) and its
    /// bindings, sets the prefetch and starts consuming.
    ///
    /// # Errors
    /// [`AmqpError::Pattern`] for a bad binding; [`AmqpError::Protocol`] if a
    /// declaration is refused (e.g. the queue exists with other arguments).
    pub async fn build(
        self,
        connection: &Connection,
        topology: &Topology,
    ) -> Result<Subscriber, AmqpError> {
        for pattern in &self.bindings {
            TopicPattern::parse(pattern)?;
        }
        topology.declare(connection).await?;
        let queue = declare_queue(
            connection,
            &self.queue,
            &QueueSpec {
                durable: self.durable,
                exclusive: self.exclusive,
                auto_delete: self.auto_delete,
                queue_type: match self.queue_type {
                    QueueType::Quorum => Some("quorum"),
                    QueueType::Classic if self.queue_type_required => Some("classic"),
                    QueueType::Classic => None,
                },
                type_required: self.queue_type_required,
                expires: self.expires,
                single_active_consumer: false,
            },
        )
        .await?;
        let channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::protocol("channel.open"))?;
        channel
            .basic_qos(self.prefetch, BasicQosOptions::default())
            .await
            .map_err(AmqpError::protocol("basic.qos"))?;
        let queue_name = queue.name().as_str().to_owned();
        for pattern in &self.bindings {
            channel
                .queue_bind(
                    short("queue", queue_name.clone())?,
                    short("exchange", topology.exchange.clone())?,
                    short("binding", pattern.clone())?,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(AmqpError::protocol("queue.bind"))?;
        }
        let consumer = channel
            .basic_consume(
                short("queue", queue_name.clone())?,
                short("consumer tag", self.consumer_tag.clone())?,
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::protocol("basic.consume"))?;
        let dead_letters =
            Publisher::open_declared(connection, topology, "chatbus-dead-letter").await?;
        Ok(Subscriber {
            channel,
            consumer,
            exchange: topology.exchange.clone(),
            dead_letter: std::sync::Arc::new(DeadLetter {
                queue: queue_name,
                exchange: topology.dead_letter_exchange.clone(),
                publisher: dead_letters,
            }),
            failed: None,
        })
    }
}

/// A consuming queue. Call [`Subscriber::next`] for typed deliveries;
/// payloads that are not valid `ChatEvent`s never reach you: they are
/// dead-lettered with the reason and acked.
#[derive(Debug)]
pub struct Subscriber {
    channel: Channel,
    consumer: Consumer,
    exchange: String,
    dead_letter: std::sync::Arc<DeadLetter>,
    /// A failure seen while a batch was being collected, for the next call.
    failed: Option<AmqpError>,
}

/// Where a subscriber's deliveries are dead-lettered; shared by every
/// delivery (one reference count each, nothing copied).
#[derive(Debug)]
struct DeadLetter {
    queue: String,
    exchange: String,
    publisher: Publisher,
}

impl Subscriber {
    /// Starts building a subscriber on queue `queue` (`""` lets the broker
    /// name it; combine with `exclusive`).
    pub fn builder(queue: impl Into<String>) -> SubscriberBuilder {
        SubscriberBuilder {
            queue: queue.into(),
            bindings: Vec::new(),
            prefetch: 256,
            durable: true,
            exclusive: false,
            auto_delete: false,
            queue_type: QueueType::Classic,
            queue_type_required: false,
            expires: None,
            consumer_tag: String::new(),
        }
    }

    /// The queue's name (useful when the broker named it).
    pub fn queue(&self) -> &str {
        &self.dead_letter.queue
    }

    /// The next valid event. Undecodable payloads are dead-lettered on the
    /// way. `None` when the consumer was cancelled (queue deleted, channel
    /// closed cleanly).
    ///
    /// # Errors
    /// [`AmqpError::Protocol`] when the channel or connection fails; the
    /// unacked deliveries are then redelivered by the broker.
    pub async fn next(&mut self) -> Option<Result<Delivery, AmqpError>> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        loop {
            let raw = match self.consumer.next().await? {
                Ok(raw) => raw,
                Err(e) => return Some(Err(AmqpError::protocol("basic.consume")(e))),
            };
            match self.accept(raw).await {
                Ok(Some(delivery)) => return Some(Ok(delivery)),
                Ok(None) => {}
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// The next valid events, for consumers that work in batches: waits for
    /// one, then takes every delivery already received, up to `max`, without
    /// waiting for more. Undecodable payloads are dead-lettered on the way.
    /// `None` when the consumer was cancelled.
    ///
    /// # Errors
    /// As [`Subscriber::next`]. A failure after some deliveries were taken
    /// returns those first and the failure on the next call.
    pub async fn next_batch(&mut self, max: usize) -> Option<Result<Vec<Delivery>, AmqpError>> {
        let first = match self.next().await? {
            Ok(d) => d,
            Err(e) => return Some(Err(e)),
        };
        let mut batch = vec![first];
        while batch.len() < max.max(1) {
            let Some(next) = futures::FutureExt::now_or_never(self.consumer.next()) else {
                break;
            };
            let raw = match next {
                None => break,
                Some(Ok(raw)) => raw,
                Some(Err(e)) => {
                    self.failed = Some(AmqpError::protocol("basic.consume")(e));
                    break;
                }
            };
            match self.accept(raw).await {
                Ok(Some(delivery)) => batch.push(delivery),
                Ok(None) => {}
                Err(e) => {
                    self.failed = Some(e);
                    break;
                }
            }
        }
        Some(Ok(batch))
    }

    /// Decodes `raw`; dead-letters it (`Ok(None)`) if it is not a valid
    /// event.
    async fn accept(&self, raw: RawDelivery) -> Result<Option<Delivery>, AmqpError> {
        match decode(&raw) {
            Ok(event) => Ok(Some(Delivery {
                event,
                routing_key: raw.routing_key.as_str().to_owned(),
                delivery_tag: raw.delivery_tag,
                redelivered: raw.redelivered,
                raw,
                dead_letter: self.dead_letter.clone(),
            })),
            Err(reason) => {
                let dead = dead_letter(&self.dead_letter, &raw, &reason);
                bounded("dead-lettering", dead).await?;
                Ok(None)
            }
        }
    }

    /// Acks every delivery up to and including `delivery_tag` in one frame,
    /// for consumers that commit in batches.
    ///
    /// # Errors
    /// [`AmqpError::Protocol`] if the channel is closed (the broker will
    /// redeliver those messages).
    pub async fn ack_up_to(&self, delivery_tag: u64) -> Result<(), AmqpError> {
        bounded("basic.ack", async {
            self.channel
                .basic_ack(delivery_tag, BasicAckOptions { multiple: true })
                .await
                .map_err(AmqpError::protocol("basic.ack"))
        })
        .await
    }

    /// Nacks every delivery up to and including `delivery_tag`, requeueing
    /// them if `requeue`.
    ///
    /// # Errors
    /// [`AmqpError::Protocol`] if the channel is closed.
    pub async fn nack_up_to(&self, delivery_tag: u64, requeue: bool) -> Result<(), AmqpError> {
        bounded("basic.nack", async {
            self.channel
                .basic_nack(
                    delivery_tag,
                    BasicNackOptions {
                        multiple: true,
                        requeue,
                    },
                )
                .await
                .map_err(AmqpError::protocol("basic.nack"))
        })
        .await
    }

    /// The exchange the queue is bound to.
    pub fn exchange(&self) -> &str {
        &self.exchange
    }

    /// Whether the channel is still usable.
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }

    /// Closes the subscriber's channels (see [`super::close_channel`]).
    /// Deliveries not yet acked go back to the queue.
    pub async fn close(self) {
        super::close_channel(&self.channel, "subscriber closed").await;
        self.dead_letter.publisher.close().await;
    }
}

/// One received event with its AMQP context.
#[derive(Debug)]
pub struct Delivery {
    /// The decoded, validated event.
    pub event: ChatEvent,
    /// The routing key it was published with.
    pub routing_key: String,
    /// Tag for [`Subscriber::ack_up_to`].
    pub delivery_tag: u64,
    /// The broker delivered it before (not acked then).
    pub redelivered: bool,
    raw: RawDelivery,
    dead_letter: std::sync::Arc<DeadLetter>,
}

impl Delivery {
    /// Acknowledges this delivery.
    ///
    /// # Errors
    /// [`AmqpError::Protocol`] if the channel is closed.
    pub async fn ack(&self) -> Result<(), AmqpError> {
        bounded("basic.ack", async {
            self.raw
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map(drop)
                .map_err(AmqpError::protocol("basic.ack"))
        })
        .await
    }

    /// Negatively acknowledges this delivery; `requeue` puts it back on the
    /// queue, otherwise the broker dead-letters it (without a reason header).
    ///
    /// # Errors
    /// [`AmqpError::Protocol`] if the channel is closed.
    pub async fn nack(&self, requeue: bool) -> Result<(), AmqpError> {
        bounded("basic.nack", async {
            self.raw
                .acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue,
                })
                .await
                .map(drop)
                .map_err(AmqpError::protocol("basic.nack"))
        })
        .await
    }

    /// Sends this delivery to the dead-letter exchange with `reason` in the
    /// `x-chatbus-reason` header, waits for the broker's confirm, then acks
    /// it. For events that decode but cannot be processed.
    ///
    /// # Errors
    /// [`AmqpError`] if the dead-letter publish or the ack fails; the
    /// delivery is then still unacked and will be redelivered.
    pub async fn dead_letter(&self, reason: &str) -> Result<(), AmqpError> {
        bounded(
            "dead-lettering",
            dead_letter(&self.dead_letter, &self.raw, reason),
        )
        .await
    }

    /// The AMQP properties as received.
    pub fn properties(&self) -> &lapin::BasicProperties {
        &self.raw.properties
    }

    /// The raw body as received.
    pub fn body(&self) -> &[u8] {
        &self.raw.data
    }

    /// Acknowledges this delivery and every earlier unacknowledged one of
    /// its channel in one frame (`multiple`): what [`Subscriber::ack_up_to`]
    /// does, for a batch consumer whose [`Subscriber`] is owned by another
    /// task. Never call it on a delivery that was already acked or
    /// dead-lettered (the broker closes the channel for an unknown tag).
    ///
    /// # Errors
    /// [`AmqpError::Protocol`] if the channel is closed (the broker will
    /// redeliver those messages).
    pub async fn ack_through(&self) -> Result<(), AmqpError> {
        bounded("basic.ack", async {
            self.raw
                .acker
                .ack(BasicAckOptions { multiple: true })
                .await
                .map(drop)
                .map_err(AmqpError::protocol("basic.ack"))
        })
        .await
    }
}

/// Longest any ack, nack or dead-lettering of this module may take before
/// it fails with [`AmqpError::Timeout`] and the channel is presumed dead
/// (lapin can leave them pending forever when the server drops the
/// connection at the wrong moment; amqp-rs/lapin#409). The broker
/// redelivers whatever was not acked.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(10);

/// `op` bounded by [`ACK_TIMEOUT`].
async fn bounded<T>(
    op: &'static str,
    fut: impl std::future::Future<Output = Result<T, AmqpError>>,
) -> Result<T, AmqpError> {
    tokio::time::timeout(ACK_TIMEOUT, fut)
        .await
        .map_err(|_| AmqpError::Timeout {
            op,
            after: ACK_TIMEOUT,
        })?
}

fn decode(raw: &RawDelivery) -> Result<ChatEvent, String> {
    if let Some(ct) = raw.properties.content_type().as_ref()
        && ct.as_str() != CONTENT_TYPE
    {
        return Err(format!(
            "content_type `{}` is not {CONTENT_TYPE}",
            ct.as_str()
        ));
    }
    ChatEvent::from_json(&raw.data).map_err(|e| e.to_string())
}

async fn dead_letter(to: &DeadLetter, raw: &RawDelivery, reason: &str) -> Result<(), AmqpError> {
    let (publisher, exchange, queue) = (&to.publisher, to.exchange.as_str(), to.queue.as_str());
    let mut table = raw.properties.headers().clone().unwrap_or_default();
    // Header values are long strings; keep the reason readable but bounded.
    let reason: String = reason.chars().take(1000).collect();
    table.insert(headers::DEAD_LETTER_REASON.into(), long(&reason));
    table.insert(headers::DEAD_LETTER_QUEUE.into(), long(queue));
    table.insert(
        headers::DEAD_LETTER_EXCHANGE.into(),
        long(raw.exchange.as_str()),
    );
    table.insert(
        headers::DEAD_LETTERED_AT.into(),
        AMQPValue::Timestamp(u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0)),
    );
    let props = raw.properties.clone().with_headers(table);
    publisher
        .send_raw(exchange, raw.routing_key.as_str(), &raw.data, props)
        .await?
        .wait()
        .await?;
    raw.acker
        .ack(BasicAckOptions::default())
        .await
        .map_err(AmqpError::protocol("basic.ack"))?;
    metrics::counter!("chatbus_amqp_dead_lettered_total", "queue" => queue.to_owned()).increment(1);
    tracing::warn!(queue, routing_key = raw.routing_key.as_str(), %reason, "dead-lettered a message");
    Ok(())
}
