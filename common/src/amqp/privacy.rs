//! The `chat.privacy` stream: where opt-outs and purges are announced
//! ([`crate::privacy`]), and how a service keeps its [`PrivacyList`].
//!
//! The queue is of type `stream` (`x-queue-type` is a declaration argument
//! that no policy can set; like single-active-consumer it is the named
//! exception to docs/rabbitmq.md's "arguments by policy"). A stream keeps
//! every notice after it was read, so each service replays it from its
//! first offset when it starts and then follows it. **Give it no
//! `max-age` or `max-length-bytes` policy**: an opt-out that falls off the
//! stream is forgotten by services that start afterwards (the consumer's
//! store still keeps it).
//!
//! Reading "everything there is" needs an end, and AMQP 0-9-1 tells a
//! stream reader none (`queue.declare-ok` counts 0 messages on a stream).
//! So a follower publishes a `sync` notice of its own first and knows it
//! has the whole list once that comes back ([`PrivacyFeed::loaded`]).
//! After a lost connection it resumes from the offset after the last one
//! it read, without a new `sync`.

use std::sync::{Arc, RwLock};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::{
    AmqpError, CONTENT_TYPE, ConnectOptions, QueueSpec, SEND_TIMEOUT, Session, SessionEnd,
    close_channel, declare_queue, reconnect_loop, short,
};
use crate::privacy::{PrivacyAction, PrivacyList, PrivacyNotice};

/// Unacknowledged notices a follower may hold (a stream consumer must
/// set a prefetch).
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

/// Publishes `notice` to the stream `queue` (declared first) and waits for
/// the broker's confirm.
///
/// # Errors
/// [`AmqpError`] when the broker refuses or does not confirm it in time.
pub async fn publish(
    connection: &Connection,
    queue: &str,
    notice: &PrivacyNotice,
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
        let body = serde_json::to_vec(notice).expect("a notice always serialises");
        let confirm = channel
            .basic_publish(
                short("exchange", "")?,
                short("routing key", queue)?,
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_content_type(CONTENT_TYPE.into())
                    .with_delivery_mode(2)
                    .with_message_id(notice.id.as_str().into())
                    .with_type(notice.action.as_str().into()),
            )
            .await
            .map_err(AmqpError::protocol("basic.publish"))?;
        match tokio::time::timeout(SEND_TIMEOUT, confirm).await {
            Ok(Ok(lapin::Confirmation::Ack(_) | lapin::Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(lapin::Confirmation::Nack(_))) => Err(AmqpError::Nacked {
                message_id: notice.id.clone(),
            }),
            Ok(Err(e)) => Err(AmqpError::protocol("publisher confirm")(e)),
            Err(_) => Err(AmqpError::Timeout {
                op: "publisher confirm",
                after: SEND_TIMEOUT,
            }),
        }
    }
    .await;
    close_channel(&channel, "privacy notice published").await;
    result
}

/// A service's view of the stream: its [`PrivacyList`], kept current by
/// [`follow`], and whether the whole stream has been read once.
#[derive(Debug, Clone)]
pub struct PrivacyFeed {
    list: Arc<RwLock<PrivacyList>>,
    loaded: watch::Receiver<bool>,
}

impl PrivacyFeed {
    /// A feed that never changes (no stream configured): an empty list,
    /// loaded.
    pub fn empty() -> Self {
        let (_tx, loaded) = watch::channel(true);
        Self {
            list: Arc::default(),
            loaded,
        }
    }

    /// Whether `event` must be dropped ([`PrivacyList::refuses`]).
    pub fn refuses(&self, event: &crate::ChatEvent) -> bool {
        self.list.read().expect("privacy list lock").refuses(event)
    }

    /// A copy of the list as it is now.
    pub fn snapshot(&self) -> PrivacyList {
        self.list.read().expect("privacy list lock").clone()
    }

    /// Whether every notice published before this service started has
    /// been applied.
    pub fn is_loaded(&self) -> bool {
        *self.loaded.borrow()
    }

    /// Waits until [`is_loaded`](Self::is_loaded).
    pub async fn loaded(&self) {
        let mut rx = self.loaded.clone();
        let _ = rx.wait_for(|l| *l).await;
    }
}

/// Follows the stream `queue` on connections made with `options` until
/// `cancel`: replays it from its start, then applies each new notice to
/// the returned feed's list, and sends each (but `sync`s) to `notices` if
/// given. `service` names the follower in its `sync` notice.
///
/// Runs as a task; it ends when `cancel` fires or a failure that retrying
/// cannot fix (a queue of that name that is not a stream) stops it.
pub fn follow(
    options: ConnectOptions,
    queue: String,
    service: String,
    notices: Option<mpsc::UnboundedSender<PrivacyNotice>>,
    cancel: CancellationToken,
) -> (PrivacyFeed, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let list = Arc::new(RwLock::new(PrivacyList::default()));
    let (loaded_tx, loaded) = watch::channel(false);
    let feed = PrivacyFeed {
        list: list.clone(),
        loaded,
    };
    let mut session = Follower {
        queue,
        service,
        next_offset: None,
        sync_id: None,
        list,
        loaded: loaded_tx,
        notices,
    };
    let task = tokio::spawn(async move {
        let result = reconnect_loop(&options, &mut session, &cancel).await;
        if let Err(e) = &result {
            tracing::error!(error = format!("{e:#}"), "privacy stream follower stopped");
        }
        result
    });
    (feed, task)
}

struct Follower {
    queue: String,
    service: String,
    /// The offset after the last notice read; `None` until one was.
    next_offset: Option<i64>,
    /// The id of this follower's own `sync`, once published.
    sync_id: Option<String>,
    list: Arc<RwLock<PrivacyList>>,
    loaded: watch::Sender<bool>,
    notices: Option<mpsc::UnboundedSender<PrivacyNotice>>,
}

impl Follower {
    async fn consume(
        &mut self,
        connection: &Connection,
        cancel: &CancellationToken,
    ) -> Result<(), AmqpError> {
        declare(connection, &self.queue).await?;
        if self.sync_id.is_none() {
            let sync = PrivacyNotice::new(PrivacyAction::Sync, None, &self.service);
            publish(connection, &self.queue, &sync).await?;
            self.sync_id = Some(sync.id);
        }
        let channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::protocol("channel.open"))?;
        let result = self.read(&channel, cancel).await;
        close_channel(&channel, "privacy follower done").await;
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
                short("queue", self.queue.clone())?,
                short("consumer tag", "")?,
                BasicConsumeOptions::default(),
                args,
            )
            .await
            .map_err(AmqpError::protocol("basic.consume (privacy stream)"))?;
        loop {
            let delivery = tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                d = consumer.next() => d,
            };
            let delivery = match delivery {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    return Err(AmqpError::Protocol {
                        op: "privacy stream delivery",
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
            match serde_json::from_slice::<PrivacyNotice>(&delivery.data) {
                Ok(notice) if notice.action == PrivacyAction::Sync => {
                    if self.sync_id.as_deref() == Some(notice.id.as_str()) {
                        self.loaded.send_replace(true);
                        tracing::info!(queue = %self.queue, "privacy list loaded");
                    }
                }
                Ok(notice) => {
                    self.list.write().expect("privacy list lock").apply(&notice);
                    if let Some(tx) = &self.notices {
                        let _ = tx.send(notice);
                    }
                }
                // Never the body in the log: it could hold anything.
                Err(e) => tracing::warn!(
                    queue = %self.queue,
                    offset,
                    error = %e,
                    "a privacy notice that does not decode; skipped"
                ),
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

impl Session for Follower {
    const NAME: &'static str = "privacy";
    const RECONNECTS_METRIC: &'static str = "chatbus_privacy_stream_reconnects_total";

    async fn run(&mut self, connection: &Connection, cancel: &CancellationToken) -> SessionEnd {
        match self.consume(connection, cancel).await {
            Ok(()) => SessionEnd::Finished,
            Err(e) => SessionEnd::Lost {
                healthy: self.next_offset.is_some(),
                error: e.into(),
            },
        }
    }
}
