//! Commit announcements between consumer instances that share one store.
//!
//! ```text
//! instance A: commit --> "<CONSUMER_QUEUE>.commits" (fanout) --> amq.gen-… (exclusive, per instance) --> B's live feed wakes
//! ```
//!
//! The competing consumers of `CONSUMER_QUEUE` each store a share of the
//! events; an instance learns of the others' commits from these tiny
//! announcements (`{"instance": "...", "through": 1234}`) and then reads the
//! new rows from the shared store, in cursor order. Announcements are
//! hints, not data: they are transient, unconfirmed, expire after a few
//! seconds, and a lost one only delays live delivery until the next poll.
//!
//! They are not `ChatEvent`s, so this module talks to lapin directly
//! rather than through `common::amqp::Subscriber`.

use std::time::Duration;

use futures::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicPublishOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, Consumer, ExchangeKind};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::live_feed::LiveFeedHandle;
use crate::store::Cursor;

/// Most announcements waiting in an instance's queue; older ones are
/// dropped (one is enough to wake the feed).
const QUEUE_MAX_LENGTH: i64 = 1000;
/// Announcements older than this are useless (the poll has run since).
const TTL_MS: &str = "10000";

/// The exchange instances sharing `queue` announce their commits on.
pub fn exchange_for(queue: &str) -> String {
    format!("{queue}.commits")
}

#[derive(Debug, Serialize, Deserialize)]
struct Announcement {
    instance: String,
    through: Cursor,
}

/// The publishing side.
#[derive(Debug, Clone)]
pub struct CommitSignal {
    channel: Channel,
    exchange: String,
    instance: String,
}

impl CommitSignal {
    /// Declares the exchange (deleted when unused if `auto_delete`, as test
    /// topologies are) and this instance's queue on `connection`; returns
    /// the announcer and the consumer of the others' announcements.
    ///
    /// # Errors
    /// When a declaration is refused or the connection is gone.
    pub async fn open(
        connection: &Connection,
        exchange: &str,
        auto_delete: bool,
        instance: &str,
    ) -> Result<(Self, Consumer), lapin::Error> {
        let channel = connection.create_channel().await?;
        channel
            .exchange_declare(
                exchange.into(),
                ExchangeKind::Fanout,
                ExchangeDeclareOptions {
                    durable: true,
                    auto_delete,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let mut args = FieldTable::default();
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(QUEUE_MAX_LENGTH),
        );
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    durable: false,
                    ..Default::default()
                },
                args,
            )
            .await?;
        channel
            .queue_bind(
                queue.name().clone(),
                exchange.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    exclusive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok((
            Self {
                channel,
                exchange: exchange.to_owned(),
                instance: instance.to_owned(),
            },
            consumer,
        ))
    }

    /// Tells the other instances that everything through `cursor` is
    /// committed. Best effort: a failure is only logged.
    pub async fn announce(&self, through: Cursor) {
        let body = serde_json::to_vec(&Announcement {
            instance: self.instance.clone(),
            through,
        })
        .expect("announcements serialise");
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_delivery_mode(1)
            .with_expiration(TTL_MS.into());
        let publish = self.channel.basic_publish(
            self.exchange.as_str().into(),
            "".into(),
            BasicPublishOptions::default(),
            &body,
            props,
        );
        // Never hold up ingest for a hint: a second at most.
        match tokio::time::timeout(Duration::from_secs(1), publish).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "cannot announce a commit"),
            Err(_) => tracing::debug!("announcing a commit timed out"),
        }
    }

    /// Closes the channel, which also ends the announcements' consumer.
    pub async fn close(&self) {
        common::amqp::close_channel(&self.channel, "commit announcements closed").await;
    }
}

/// Wakes `feed` for every announcement of another instance, until the
/// consumer ends (connection closed) or `cancel`.
pub async fn listen(
    mut consumer: Consumer,
    instance: String,
    feed: LiveFeedHandle,
    cancel: CancellationToken,
) {
    loop {
        let delivery = tokio::select! {
            () = cancel.cancelled() => return,
            d = consumer.next() => d,
        };
        match delivery {
            Some(Ok(d)) => match serde_json::from_slice::<Announcement>(&d.data) {
                Ok(a) if a.instance == instance => {}
                Ok(_) => feed.wake(),
                Err(e) => tracing::debug!(error = %e, "ignoring a malformed commit announcement"),
            },
            Some(Err(e)) => {
                tracing::debug!(error = %e, "commit announcements stopped");
                return;
            }
            None => return,
        }
    }
}
