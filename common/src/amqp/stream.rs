//! A RabbitMQ stream read as a log: replayed from its first message when a
//! service starts, then followed (the privacy stream, a fleet's wanted
//! channels).
//!
//! AMQP 0-9-1 tells a stream reader no end (`queue.declare-ok` counts 0
//! messages on a stream), so a follower publishes a `sync` marker of its
//! own first (AMQP `type` `sync`, a fresh `message_id`) and knows it has
//! read everything published before it started once that marker comes
//! back ([`Follow::loaded`]). Markers, its own and others', are not
//! handed on. After a lost connection it resumes from the offset after
//! the last message it read, without a new marker.
//!
//! The queue is of type `stream`, which only a declaration argument can
//! set (the named exception to docs/rabbitmq.md's "arguments by policy").
//! A stream used as a log must get no retention policy (`max-age`,
//! `max-length-bytes`): what falls off it is forgotten by services that
//! start afterwards.

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    AmqpError, CONTENT_TYPE, ConnectOptions, QueueSpec, SEND_TIMEOUT, Session, SessionEnd,
    close_channel, declare_queue, reconnect_loop, short,
};

/// The AMQP `type` of a follower's marker.
pub const SYNC_TYPE: &str = "sync";

/// Unacknowledged messages a follower may hold (a stream consumer must set
/// a prefetch).
const PREFETCH: u16 = 256;

/// Declares the stream `queue` (durable, type `stream`).
///
/// # Errors
/// [`AmqpError::Conflict`] when a queue of that name exists with another
/// type; [`AmqpError::Protocol`] otherwise.
pub async fn declare(connection: &Connection, queue: &str) -> Result<(), AmqpError> {
    declare_queue(
        connection,
        queue,
        &QueueSpec {
            durable: true,
            queue_type: Some("stream"),
            type_required: true,
            ..QueueSpec::default()
        },
    )
    .await
    .map(|_| ())
}

/// Publishes `body` (JSON) to the stream `queue` (declared first) with AMQP
/// `type` `kind` and `message_id` `id`, and waits for the broker's confirm.
///
/// # Errors
/// [`AmqpError`] when the broker refuses or does not confirm it in time.
pub async fn publish(
    connection: &Connection,
    queue: &str,
    kind: &str,
    id: &str,
    body: &[u8],
) -> Result<(), AmqpError> {
    declare(connection, queue).await?;
    let channel = connection
        .create_channel()
        .await
        .map_err(AmqpError::protocol("channel.open"))?;
    let result = async {
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(AmqpError::protocol("confirm.select"))?;
        let confirm = channel
            .basic_publish(
                short("exchange", "")?,
                short("routing key", queue)?,
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_content_type(CONTENT_TYPE.into())
                    .with_delivery_mode(2)
                    .with_message_id(short("message_id", id)?)
                    .with_type(short("type", kind)?),
            )
            .await
            .map_err(AmqpError::protocol("basic.publish"))?;
        match tokio::time::timeout(SEND_TIMEOUT, confirm).await {
            Ok(Ok(lapin::Confirmation::Ack(_) | lapin::Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(lapin::Confirmation::Nack(_))) => Err(AmqpError::Nacked {
                message_id: id.to_owned(),
            }),
            Ok(Err(e)) => Err(AmqpError::protocol("publisher confirm")(e)),
            Err(_) => Err(AmqpError::Timeout {
                op: "publisher confirm",
                after: SEND_TIMEOUT,
            }),
        }
    }
    .await;
    close_channel(&channel, "published to a stream").await;
    result
}

/// A running follower: whether the whole stream was read once.
#[derive(Debug, Clone)]
pub struct Follow {
    loaded: watch::Receiver<bool>,
}

impl Follow {
    /// A follower of nothing: loaded at once.
    pub fn done() -> Self {
        let (_tx, loaded) = watch::channel(true);
        Self { loaded }
    }

    /// Whether every message published before the follower started has
    /// been handed on.
    pub fn is_loaded(&self) -> bool {
        *self.loaded.borrow()
    }

    /// Waits until [`is_loaded`](Self::is_loaded).
    pub async fn loaded(&self) {
        let mut rx = self.loaded.clone();
        let _ = rx.wait_for(|l| *l).await;
    }
}

/// What to follow and how to mark it.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// The broker.
    pub connect: ConnectOptions,
    /// The stream.
    pub queue: String,
    /// The body of this follower's `sync` marker (readers that decode every
    /// message see it; make it something they skip).
    pub sync_body: Vec<u8>,
    /// For logs and the reconnect metric's session name.
    pub what: &'static str,
}

/// Follows `options.queue` until `cancel`: replays it from its start, then
/// hands each message that decodes as a `T` (but markers) to `on_item`, in
/// stream order, before it reads the next one (so once [`Follow::loaded`],
/// `on_item` has seen everything published before the follower started).
/// Messages that do not decode are skipped with a warning (never their
/// body). Runs as a task; it ends on `cancel` or on a failure retrying
/// cannot fix (a queue of that name that is not a stream).
pub fn follow<T: DeserializeOwned + Send + 'static>(
    options: FollowOptions,
    on_item: impl FnMut(T) + Send + 'static,
    cancel: CancellationToken,
) -> (Follow, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let (loaded_tx, loaded) = watch::channel(false);
    let connect = options.connect.clone();
    let mut session = Follower {
        options,
        next_offset: None,
        sync_id: None,
        loaded: loaded_tx,
        on_item: Box::new(on_item),
    };
    let task = tokio::spawn(async move {
        let result = reconnect_loop(&connect, &mut session, &cancel).await;
        if let Err(e) = &result {
            tracing::error!(error = format!("{e:#}"), stream = %session.options.queue, "stream follower stopped");
        }
        result
    });
    (Follow { loaded }, task)
}

struct Follower<T> {
    options: FollowOptions,
    /// The offset after the last message read; `None` until one was.
    next_offset: Option<i64>,
    /// The id of this follower's own marker, once published.
    sync_id: Option<String>,
    loaded: watch::Sender<bool>,
    on_item: Box<dyn FnMut(T) + Send>,
}

impl<T: DeserializeOwned> Follower<T> {
    async fn consume(
        &mut self,
        connection: &Connection,
        cancel: &CancellationToken,
    ) -> Result<(), AmqpError> {
        declare(connection, &self.options.queue).await?;
        if self.sync_id.is_none() {
            let id = uuid::Uuid::new_v4().to_string();
            publish(
                connection,
                &self.options.queue,
                SYNC_TYPE,
                &id,
                &self.options.sync_body,
            )
            .await?;
            self.sync_id = Some(id);
        }
        let channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::protocol("channel.open"))?;
        let result = self.read(&channel, cancel).await;
        close_channel(&channel, "stream follower done").await;
        result
    }

    async fn read(
        &mut self,
        channel: &lapin::Channel,
        cancel: &CancellationToken,
    ) -> Result<(), AmqpError> {
        channel
            .basic_qos(PREFETCH, BasicQosOptions::default())
            .await
            .map_err(AmqpError::protocol("basic.qos"))?;
        let mut args = FieldTable::default();
        args.insert(
            "x-stream-offset".into(),
            match self.next_offset {
                Some(o) => AMQPValue::LongLongInt(o),
                None => AMQPValue::LongString("first".into()),
            },
        );
        let mut consumer = channel
            .basic_consume(
                short("queue", self.options.queue.clone())?,
                short("consumer tag", "")?,
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .map_err(AmqpError::protocol("basic.consume (stream)"))?;
        loop {
            let delivery = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                d = consumer.next() => d,
            };
            let delivery = match delivery {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    return Err(AmqpError::Protocol {
                        op: "stream delivery",
                        error: e,
                    });
                }
                None => return Err(AmqpError::ChannelClosed),
            };
            let offset = delivery
                .properties
                .headers()
                .as_ref()
                .and_then(|h| h.inner().get("x-stream-offset"))
                .and_then(|v| match v {
                    AMQPValue::LongLongInt(n) => Some(*n),
                    AMQPValue::LongInt(n) => Some(i64::from(*n)),
                    _ => None,
                });
            let is_sync = delivery
                .properties
                .kind()
                .as_ref()
                .is_some_and(|k| k.as_str() == SYNC_TYPE);
            if is_sync {
                let id = delivery.properties.message_id().as_ref();
                if id.is_some_and(|id| self.sync_id.as_deref() == Some(id.as_str())) {
                    self.loaded.send_replace(true);
                    tracing::info!(stream = %self.options.queue, what = self.options.what, "stream read to its end");
                }
            } else {
                match serde_json::from_slice::<T>(&delivery.data) {
                    Ok(item) => (self.on_item)(item),
                    // Never the body in the log: it could hold anything.
                    Err(e) => tracing::warn!(
                        stream = %self.options.queue,
                        offset,
                        error = %e,
                        "a stream message that does not decode; skipped"
                    ),
                }
            }
            if let Some(o) = offset {
                self.next_offset = Some(o + 1);
            }
            delivery
                .ack(BasicAckOptions::default())
                .await
                .map_err(AmqpError::protocol("basic.ack"))?;
        }
    }
}

impl<T: DeserializeOwned + Send> Session for Follower<T> {
    const NAME: &'static str = "stream";
    const RECONNECTS_METRIC: &'static str = "chatbus_stream_follower_reconnects_total";

    async fn run(&mut self, connection: &Connection, cancel: &CancellationToken) -> SessionEnd {
        // Its set-up (declare, the marker's confirm) must not hold up a
        // shutdown on a connection that died at the wrong moment.
        let consumed = tokio::select! {
            () = cancel.cancelled() => return SessionEnd::Finished,
            c = self.consume(connection, cancel) => c,
        };
        match consumed {
            Ok(()) => SessionEnd::Finished,
            Err(e) => SessionEnd::Lost {
                healthy: self.next_offset.is_some(),
                error: e.into(),
            },
        }
    }
}
