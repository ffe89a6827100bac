//! The exchanges and queues chatbus relies on, declared idempotently.
//!
//! ```text
//! publishers --> "chat" (topic, durable) --> bound queues (chat.<platform>.<channel>)
//!                  | alternate-exchange: nothing bound matched
//!                  v
//!                "chat.unrouted" (fanout) --> queue "chat.unrouted" (bounded)
//!
//! consumers reject --> "chat.dlx" (topic) --> queue "chat.dead-letter"
//! ```
//!
//! The alternate exchange means an event published while no consumer queue
//! is bound is kept (up to `unrouted_max_length`) instead of being dropped by
//! the broker without a word.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, ExchangeKind};

use super::message::long;
use super::{AmqpError, short};

/// Names and limits of the shared topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The topic exchange events are published to (`chat`).
    pub exchange: String,
    /// Alternate exchange receiving events no binding matched.
    pub unrouted_exchange: String,
    /// Queue keeping unrouted events.
    pub unrouted_queue: String,
    /// Most unrouted events kept; the oldest are dropped beyond it.
    pub unrouted_max_length: u32,
    /// Dead-letter exchange (topic; routing key of the original message).
    pub dead_letter_exchange: String,
    /// Queue bound to the dead-letter exchange with `#`.
    pub dead_letter_queue: String,
    /// Delete the exchanges when unused (tests only).
    pub auto_delete: bool,
    /// Expire the topology's queues after this long unused (tests only).
    pub queue_expires: Option<Duration>,
}

impl Default for Topology {
    fn default() -> Self {
        Self::named("chat")
    }
}

impl Topology {
    /// The topology for exchange `exchange`, with the other names derived
    /// from it: `<exchange>.unrouted`, `<exchange>.dlx`, `<exchange>.dead-letter`.
    pub fn named(exchange: &str) -> Self {
        Self {
            exchange: exchange.to_owned(),
            unrouted_exchange: format!("{exchange}.unrouted"),
            unrouted_queue: format!("{exchange}.unrouted"),
            unrouted_max_length: 1_000_000,
            dead_letter_exchange: format!("{exchange}.dlx"),
            dead_letter_queue: format!("{exchange}.dead-letter"),
            auto_delete: false,
            queue_expires: None,
        }
    }

    /// Declares everything. Safe to call any number of times, from any
    /// number of services: declarations with equal arguments are no-ops.
    ///
    /// # Errors
    /// [`AmqpError::Protocol`], e.g. `PRECONDITION_FAILED` if an exchange
    /// already exists with other arguments (the channel is then closed).
    pub async fn declare(&self, channel: &Channel) -> Result<(), AmqpError> {
        let exchange_opts = ExchangeDeclareOptions {
            durable: true,
            auto_delete: self.auto_delete,
            ..Default::default()
        };
        let queue_opts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };

        // Unrouted: fanout exchange -> bounded queue.
        channel
            .exchange_declare(
                short("exchange", self.unrouted_exchange.clone())?,
                ExchangeKind::Fanout,
                exchange_opts,
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::protocol("exchange.declare (unrouted)"))?;
        let mut args = self.queue_args();
        args.insert(
            "x-max-length".into(),
            AMQPValue::LongLongInt(self.unrouted_max_length.into()),
        );
        channel
            .queue_declare(
                short("queue", self.unrouted_queue.clone())?,
                queue_opts,
                args,
            )
            .await
            .map_err(AmqpError::protocol("queue.declare (unrouted)"))?;
        channel
            .queue_bind(
                short("queue", self.unrouted_queue.clone())?,
                short("exchange", self.unrouted_exchange.clone())?,
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::protocol("queue.bind (unrouted)"))?;

        // The main topic exchange, with the alternate exchange.
        let mut args = FieldTable::default();
        args.insert("alternate-exchange".into(), long(&self.unrouted_exchange));
        channel
            .exchange_declare(
                short("exchange", self.exchange.clone())?,
                ExchangeKind::Topic,
                exchange_opts,
                args,
            )
            .await
            .map_err(AmqpError::protocol("exchange.declare"))?;

        // Dead letters: topic exchange -> queue bound with `#`.
        channel
            .exchange_declare(
                short("exchange", self.dead_letter_exchange.clone())?,
                ExchangeKind::Topic,
                exchange_opts,
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::protocol("exchange.declare (dead letter)"))?;
        channel
            .queue_declare(
                short("queue", self.dead_letter_queue.clone())?,
                queue_opts,
                self.queue_args(),
            )
            .await
            .map_err(AmqpError::protocol("queue.declare (dead letter)"))?;
        channel
            .queue_bind(
                short("queue", self.dead_letter_queue.clone())?,
                short("exchange", self.dead_letter_exchange.clone())?,
                "#".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::protocol("queue.bind (dead letter)"))?;
        Ok(())
    }

    fn queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        if let Some(expires) = self.queue_expires {
            let ms = i64::try_from(expires.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
        }
        args
    }
}
