//! Scrubbing a queue of chatbus's own (`chat.unrouted`,
//! `chat.dead-letter`): the events a predicate matches are dropped, every
//! other message is put back. What a purge does to the events of its
//! subject waiting there ([`crate::privacy`]).
//!
//! AMQP has no "delete this message" for a queue, so [`scrub_queue`]
//! drains it with `basic.get`, as many messages as it held when the scrub
//! started, and for each one
//! * **acks** it when its body decodes to a [`ChatEvent`] the predicate
//!   matches (dropped), or
//! * **republishes** it (undecodable ones too) to the same queue through
//!   the default exchange, body, properties and headers unchanged, and
//!   acks the original only once the broker confirmed the copy.
//!
//! So nothing is lost when the scrub dies midway: an original not yet
//! acked goes back to the queue when the channel closes. A copy may then
//! be there twice; every reader of these queues deduplicates (the store on
//! `(platform, id)`). The copies go to the queue's tail, behind the
//! messages the scrub has not taken yet, so none is examined twice.
//!
//! The default exchange routes by queue name, so a copy's delivery names
//! the queue as its routing key and `""` as its exchange. The original
//! routing key and exchange are kept in the headers
//! [`HEADER_ROUTING_KEY`] and [`HEADER_EXCHANGE`] (set by the first scrub
//! a message goes through, left as they are by later ones).
//!
//! Message bodies are never logged.

use futures::future::try_join_all;
use lapin::options::{
    BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Confirmation, Connection};

use super::{AmqpError, CONFIRM_TIMEOUT, SEND_TIMEOUT, close_channel, short};
use crate::schema::ChatEvent;

/// Header a scrubbed message's copy keeps its original routing key in.
pub const HEADER_ROUTING_KEY: &str = "x-chatbus-routing-key";
/// Header a scrubbed message's copy keeps its original exchange in (`""`
/// for the default exchange).
pub const HEADER_EXCHANGE: &str = "x-chatbus-exchange";

/// Messages taken (unacked) before their copies are published and
/// confirmed together.
const WINDOW: usize = 256;

/// What [`scrub_queue`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrubReport {
    /// Messages taken from the queue: `dropped + kept`.
    pub examined: u64,
    /// Events the predicate matched, acked and gone.
    pub dropped: u64,
    /// Messages put back (undecodable ones included).
    pub kept: u64,
    /// Of `kept`, those whose body is not a `ChatEvent` (kept as they
    /// are).
    pub undecodable: u64,
}

/// Drops from `queue` every message whose body decodes to a [`ChatEvent`]
/// that `predicate` matches and puts every other one back (see the module
/// docs). Examines at most as many messages as the queue held when it
/// started (a passive declare's count: classic and quorum queues, not
/// streams), fewer if the queue empties sooner (another reader took
/// some).
///
/// A body counts as a `ChatEvent` when it parses as one, valid or not (a
/// dead-lettered event of the subject is dropped even if it broke a
/// limit).
///
/// # Errors
/// [`AmqpError`] when the queue does not exist (the broker refuses the
/// passive declare), the channel fails, or a copy is not confirmed (nack
/// or timeout). What was not yet acked returns to the queue.
pub async fn scrub_queue(
    connection: &Connection,
    queue: &str,
    predicate: impl Fn(&ChatEvent) -> bool + Sync,
) -> Result<ScrubReport, AmqpError> {
    let channel = connection
        .create_channel()
        .await
        .map_err(AmqpError::protocol("channel.open"))?;
    let result = scrub_on(&channel, queue, &predicate).await;
    close_channel(&channel, "queue scrubbed").await;
    match &result {
        Ok(report) => tracing::info!(
            queue,
            examined = report.examined,
            dropped = report.dropped,
            kept = report.kept,
            undecodable = report.undecodable,
            "queue scrubbed"
        ),
        Err(e) => {
            tracing::warn!(queue, error = %e, "scrubbing a queue failed; what was not acked stays")
        }
    }
    result
}

async fn scrub_on(
    channel: &Channel,
    queue: &str,
    predicate: &(dyn Fn(&ChatEvent) -> bool + Sync),
) -> Result<ScrubReport, AmqpError> {
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(AmqpError::protocol("confirm.select"))?;
    let declared = channel
        .queue_declare(
            short("queue", queue)?,
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(AmqpError::protocol("queue.declare (passive)"))?;
    let mut left = u64::from(declared.message_count());
    let mut report = ScrubReport::default();
    let routing_key = short("queue", queue)?;
    while left > 0 {
        // Take a window first, then publish its copies: the taken
        // originals do not count against a max-length, so the copies never
        // push an original out of a bounded queue (drop-head).
        let mut taken = Vec::with_capacity(WINDOW);
        while taken.len() < WINDOW && left > 0 {
            let got = channel
                .basic_get(routing_key.clone(), BasicGetOptions::default())
                .await
                .map_err(AmqpError::protocol("basic.get"))?;
            let Some(got) = got else {
                left = 0;
                break;
            };
            left -= 1;
            taken.push(got.delivery);
        }
        let mut confirms = Vec::new();
        let mut keep = Vec::new();
        for delivery in taken {
            report.examined += 1;
            match serde_json::from_slice::<ChatEvent>(&delivery.data) {
                Ok(event) if predicate(&event) => {
                    delivery
                        .acker
                        .ack(BasicAckOptions::default())
                        .await
                        .map_err(AmqpError::protocol("basic.ack"))?;
                    report.dropped += 1;
                    continue;
                }
                Ok(_) => {}
                Err(_) => report.undecodable += 1,
            }
            report.kept += 1;
            let properties = delivery
                .properties
                .clone()
                .with_headers(origin_headers(&delivery));
            let publish = channel.basic_publish(
                short("exchange", "")?,
                routing_key.clone(),
                BasicPublishOptions::default(),
                &delivery.data,
                properties,
            );
            let confirm = tokio::time::timeout(SEND_TIMEOUT, publish)
                .await
                .map_err(|_| AmqpError::Timeout {
                    op: "basic.publish",
                    after: SEND_TIMEOUT,
                })?
                .map_err(AmqpError::protocol("basic.publish"))?;
            confirms.push(confirm);
            keep.push(delivery);
        }
        let confirmations = tokio::time::timeout(CONFIRM_TIMEOUT, try_join_all(confirms))
            .await
            .map_err(|_| AmqpError::Timeout {
                op: "publisher confirm",
                after: CONFIRM_TIMEOUT,
            })?
            .map_err(AmqpError::protocol("publisher confirm"))?;
        if let Some(i) = confirmations
            .iter()
            .position(|c| matches!(c, Confirmation::Nack(_)))
        {
            return Err(AmqpError::Nacked {
                message_id: keep[i]
                    .properties
                    .message_id()
                    .as_ref()
                    .map_or_else(|| "(no message id)".to_owned(), ToString::to_string),
            });
        }
        // Every copy is the broker's now: the originals may go.
        for delivery in keep {
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(AmqpError::protocol("basic.ack"))?;
        }
    }
    Ok(report)
}

/// The delivery's headers, plus where it was first published to when no
/// earlier scrub recorded it.
fn origin_headers(delivery: &lapin::message::Delivery) -> FieldTable {
    let mut headers = delivery.properties.headers().clone().unwrap_or_default();
    if !headers.inner().contains_key(HEADER_ROUTING_KEY) {
        headers.insert(
            HEADER_ROUTING_KEY.into(),
            AMQPValue::LongString(delivery.routing_key.as_str().into()),
        );
        headers.insert(
            HEADER_EXCHANGE.into(),
            AMQPValue::LongString(delivery.exchange.as_str().into()),
        );
    }
    headers
}
