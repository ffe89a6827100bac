//! The exchanges and queues chatbus relies on, declared so that anyone may
//! have declared them first.
//!
//! ```text
//! publishers --> "chat" (topic, durable) --> bound queues (chat.<platform>.<channel>)
//!                  | alternate exchange (policy): nothing bound matched
//!                  v
//!                "chat.unrouted" (fanout) --> queue "chat.unrouted" (max-length by policy)
//!
//! consumers reject --> "chat.dlx" (topic) --> queue "chat.dead-letter"
//! ```
//!
//! Every declaration is argument-free (but for a queue's type and, in
//! tests, its expiry): any service may declare `chat` as a plain durable
//! topic exchange, before or after chatbus, and both work. What needs
//! arguments (the alternate exchange, max-length, dead-lettering) is set
//! by RabbitMQ policy ([`super::management`]), RabbitMQ's own advice, because
//! the arguments of an existing exchange or queue can never change.
//!
//! An exchange or queue that already exists with other arguments (an older
//! chatbus set them as arguments) is used as it is. One that exists as
//! something chatbus cannot use (another exchange type, not durable, a
//! queue of another type than explicitly asked for) is a
//! [`TopologyConflict`]: one clear error saying what exists, what was
//! expected and how to fix it, and the service stops (exit code 2).

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind, Queue};

use super::{AmqpError, TopologyConflict, reply_code, reply_text, short};

/// Names and limits of the shared topology.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// The topic exchange events are published to (`chat`).
    pub exchange: String,
    /// Alternate exchange receiving events no binding matched.
    pub unrouted_exchange: String,
    /// Queue keeping unrouted events.
    pub unrouted_queue: String,
    /// Most unrouted events kept (by policy); the oldest are dropped beyond it.
    pub unrouted_max_length: u32,
    /// Dead-letter exchange (topic; routing key of the original message).
    pub dead_letter_exchange: String,
    /// Queue bound to the dead-letter exchange with `#`.
    pub dead_letter_queue: String,
    /// Delete the exchanges when unused (tests only).
    pub auto_delete: bool,
    /// Expire the topology's queues after this long unused (tests only).
    pub queue_expires: Option<Duration>,
    /// Declare the topology's own queues (unrouted, dead-letter) as quorum
    /// queues, replicated over a cluster; set when a service is given
    /// several broker addresses. A preference: existing queues keep their
    /// type.
    pub replicated: bool,
}

impl Default for Topology {
    fn default() -> Self {
        Self::named("chat")
    }
}

/// How a queue is declared (see [`declare_queue`]).
#[derive(Debug, Clone, Default)]
pub struct QueueSpec {
    /// Survives broker restarts.
    pub durable: bool,
    /// Only this connection may use it.
    pub exclusive: bool,
    /// Deleted when its last consumer goes.
    pub auto_delete: bool,
    /// `x-queue-type`, when one is asked for.
    pub queue_type: Option<&'static str>,
    /// Whether the type was chosen by the user (a queue of another type is
    /// then a conflict) or is only a preference (the existing queue wins).
    pub type_required: bool,
    /// `x-expires` (tests).
    pub expires: Option<Duration>,
    /// `x-single-active-consumer`: one consumer at a time gets deliveries,
    /// the others wait to take over. A queue argument, since policies
    /// cannot set it (the one exception to "arguments by policy").
    pub single_active_consumer: bool,
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
            replicated: false,
        }
    }

    /// Declares everything, on channels of its own. Safe to call any
    /// number of times, from any number of services, whoever declared what
    /// first (see the module docs).
    ///
    /// # Errors
    /// [`AmqpError::Conflict`] when an exchange or queue exists in a shape
    /// chatbus cannot use; [`AmqpError::Protocol`] when the broker refuses
    /// otherwise (permissions, a closed connection).
    pub async fn declare(&self, connection: &Connection) -> Result<(), AmqpError> {
        let mut d = Declarer::open(connection).await?;
        let result = self.declare_all(&mut d).await;
        d.close().await;
        result
    }

    async fn declare_all(&self, d: &mut Declarer<'_>) -> Result<(), AmqpError> {
        let queue = QueueSpec {
            durable: true,
            expires: self.queue_expires,
            queue_type: self.replicated.then_some("quorum"),
            ..QueueSpec::default()
        };
        d.exchange(
            &self.unrouted_exchange,
            ExchangeKind::Fanout,
            self.auto_delete,
        )
        .await?;
        d.queue(&self.unrouted_queue, &queue).await?;
        d.bind(&self.unrouted_queue, &self.unrouted_exchange, "")
            .await?;
        d.exchange(&self.exchange, ExchangeKind::Topic, self.auto_delete)
            .await?;
        d.exchange(
            &self.dead_letter_exchange,
            ExchangeKind::Topic,
            self.auto_delete,
        )
        .await?;
        d.queue(&self.dead_letter_queue, &queue).await?;
        d.bind(&self.dead_letter_queue, &self.dead_letter_exchange, "#")
            .await?;
        Ok(())
    }
}

/// The command side of the bus: the topic exchange commands are published
/// to (`chat.commands`), and its dead-lettering (`<exchange>.dlx`, topic,
/// and the queue `<exchange>.dead-letter` bound with `#`), where senders
/// put what they reject as malformed, with the reason in a header.
///
/// No alternate exchange: commands are published `mandatory`, so one that
/// no sender's queue is bound for comes back to its publisher (the
/// toolkit's `rejected: no_sender`) instead of waiting somewhere unread.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTopology {
    /// The topic exchange commands are published to.
    pub exchange: String,
    /// Where rejected commands are dead-lettered.
    pub dead_letter_exchange: String,
    /// The queue bound to it.
    pub dead_letter_queue: String,
    /// Delete the exchanges when unused (tests only).
    pub auto_delete: bool,
    /// Expire the dead-letter queue after this long unused (tests only).
    pub queue_expires: Option<Duration>,
    /// Quorum queues (a cluster).
    pub replicated: bool,
}

impl CommandTopology {
    /// The command topology of exchange `exchange` (`chat.commands`).
    pub fn named(exchange: &str) -> Self {
        Self {
            exchange: exchange.to_owned(),
            dead_letter_exchange: format!("{exchange}.dlx"),
            dead_letter_queue: format!("{exchange}.dead-letter"),
            auto_delete: false,
            queue_expires: None,
            replicated: false,
        }
    }

    /// Declares the exchanges and the dead-letter queue, argument-free like
    /// [`Topology::declare`].
    ///
    /// # Errors
    /// As [`Topology::declare`].
    pub async fn declare(&self, connection: &Connection) -> Result<(), AmqpError> {
        let mut d = Declarer::open(connection).await?;
        let result = async {
            d.exchange(&self.exchange, ExchangeKind::Topic, self.auto_delete)
                .await?;
            d.exchange(
                &self.dead_letter_exchange,
                ExchangeKind::Topic,
                self.auto_delete,
            )
            .await?;
            let queue = QueueSpec {
                durable: true,
                expires: self.queue_expires,
                queue_type: self.replicated.then_some("quorum"),
                ..QueueSpec::default()
            };
            d.queue(&self.dead_letter_queue, &queue).await?;
            d.bind(&self.dead_letter_queue, &self.dead_letter_exchange, "#")
                .await
        }
        .await;
        d.close().await;
        result
    }
}

/// Declares `queue` as `spec` says, tolerating an existing queue with other
/// arguments (it is used as it is); returns it. Uses channels of its own.
///
/// # Errors
/// [`AmqpError::Conflict`] when the queue exists with another durability,
/// exclusivity, or (if `spec.type_required`) type; [`AmqpError::Protocol`]
/// otherwise.
pub async fn declare_queue(
    connection: &Connection,
    queue: &str,
    spec: &QueueSpec,
) -> Result<Queue, AmqpError> {
    let mut d = Declarer::open(connection).await?;
    let result = d.queue(queue, spec).await;
    d.close().await;
    result
}

/// Declarations on a channel that is replaced whenever the broker closes
/// it (every refused declaration closes its channel).
struct Declarer<'c> {
    connection: &'c Connection,
    channel: Channel,
}

impl<'c> Declarer<'c> {
    async fn open(connection: &'c Connection) -> Result<Self, AmqpError> {
        let channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::protocol("channel.open"))?;
        Ok(Self {
            connection,
            channel,
        })
    }

    async fn reopen(&mut self) -> Result<(), AmqpError> {
        self.channel = self
            .connection
            .create_channel()
            .await
            .map_err(AmqpError::protocol("channel.open"))?;
        Ok(())
    }

    async fn close(self) {
        super::close_channel(&self.channel, "declared").await;
    }

    async fn exchange(
        &mut self,
        name: &str,
        kind: ExchangeKind,
        auto_delete: bool,
    ) -> Result<(), AmqpError> {
        let kind_name = kind_name(&kind);
        let declared = self
            .channel
            .exchange_declare(
                short("exchange", name)?,
                kind,
                ExchangeDeclareOptions {
                    durable: true,
                    auto_delete,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await;
        let Err(e) = declared else { return Ok(()) };
        if reply_code(&e) != Some(406) {
            return Err(AmqpError::protocol("exchange.declare")(e));
        }
        self.reopen().await?;
        let text = reply_text(&e).unwrap_or_default();
        let what = format!("exchange \"{name}\"");
        if text.contains("'type'") || text.contains("'durable'") {
            return Err(conflict(
                what,
                &text,
                format!("a durable {kind_name} exchange"),
                format!(
                    "delete it (rabbitmqctl delete_exchange {name}) and let chatbus declare it, \
                     or point chatbus at another exchange (CHAT_EXCHANGE)"
                ),
            ));
        }
        // Other arguments (an alternate exchange set as an argument, by an
        // older chatbus or anyone): it works as it is.
        tracing::info!(exchange = name, broker_says = %text, "the exchange exists with other arguments; using it as it is");
        Ok(())
    }

    async fn queue(&mut self, name: &str, spec: &QueueSpec) -> Result<Queue, AmqpError> {
        let mut args = FieldTable::default();
        if let Some(queue_type) = spec.queue_type {
            args.insert(
                "x-queue-type".into(),
                AMQPValue::LongString(queue_type.into()),
            );
        }
        if let Some(expires) = spec.expires {
            let ms = i64::try_from(expires.as_millis()).unwrap_or(i64::MAX);
            args.insert("x-expires".into(), AMQPValue::LongLongInt(ms));
        }
        if spec.single_active_consumer {
            args.insert("x-single-active-consumer".into(), AMQPValue::Boolean(true));
        }
        let options = QueueDeclareOptions {
            durable: spec.durable,
            exclusive: spec.exclusive,
            auto_delete: spec.auto_delete,
            ..Default::default()
        };
        let declared = self
            .channel
            .queue_declare(short("queue", name)?, options, args)
            .await;
        let e = match declared {
            Ok(q) => return Ok(q),
            Err(e) => e,
        };
        if reply_code(&e) != Some(406) {
            return Err(AmqpError::protocol("queue.declare")(e));
        }
        self.reopen().await?;
        let text = reply_text(&e).unwrap_or_default();
        let what = format!("queue \"{name}\"");
        let type_conflict = text.contains("'x-queue-type'") && spec.type_required;
        if type_conflict
            || text.contains("'durable'")
            || text.contains("'exclusive'")
            || text.contains("'auto_delete'")
        {
            let expected = match spec.queue_type {
                Some(t) if spec.type_required => format!("a durable {t} queue"),
                _ => "a durable queue".to_owned(),
            };
            return Err(conflict(
                what,
                &text,
                expected,
                format!(
                    "let its messages be consumed, delete it (rabbitmqctl delete_queue {name}) \
                     and restart, or choose another queue name or type (CONSUMER_QUEUE, \
                     CONSUMER_QUEUE_TYPE=auto uses the existing type)"
                ),
            ));
        }
        tracing::info!(queue = name, broker_says = %text, "the queue exists with other arguments; using it as it is");
        self.channel
            .queue_declare(
                short("queue", name)?,
                QueueDeclareOptions {
                    passive: true,
                    ..options
                },
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::protocol("queue.declare (passive)"))
    }

    async fn bind(&mut self, queue: &str, exchange: &str, key: &str) -> Result<(), AmqpError> {
        self.channel
            .queue_bind(
                short("queue", queue)?,
                short("exchange", exchange)?,
                short("binding", key)?,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::protocol("queue.bind"))
    }
}

fn kind_name(kind: &ExchangeKind) -> &'static str {
    match kind {
        ExchangeKind::Direct => "direct",
        ExchangeKind::Fanout => "fanout",
        ExchangeKind::Headers => "headers",
        ExchangeKind::Topic => "topic",
        _ => "custom",
    }
}

fn conflict(what: String, broker_says: &str, expected: String, fix: String) -> AmqpError {
    let detail = broker_says
        .split_once(": ")
        .map_or(broker_says, |(_, d)| d)
        .to_owned();
    AmqpError::Conflict(Box::new(TopologyConflict {
        what,
        exists: format!("differently (RabbitMQ: {detail})"),
        expected,
        fix,
    }))
}
