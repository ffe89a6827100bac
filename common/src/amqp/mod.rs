//! The AMQP toolkit (lapin): what every chatbus service, and any other Rust
//! service that wants chat events, uses to talk to RabbitMQ.
//!
//! * [`connect`]: connect from a URL with retry and exponential backoff
//!   ([`Backoff`]).
//! * [`reconnect_loop`]: run a [`Session`] on a connection, and again on a
//!   new one after every loss, until shutdown.
//! * [`Topology`]: declare the `chat` topic exchange, its alternate exchange
//!   for unroutable events, and the dead-letter exchange and queue, without
//!   arguments, so anyone may declare them first; [`management`] sets what
//!   needs arguments (alternate exchange, max-length, dead-lettering) by
//!   RabbitMQ policy.
//! * [`Publisher`]: typed publishing with pipelined publisher confirms.
//! * [`Subscriber`]: declare a queue with bindings and a prefetch, receive
//!   typed [`Delivery`]s, ack/nack them, and dead-letter what cannot be
//!   decoded with the reason in a header.
//! * [`commands::CommandClient`]: make chatbus speak or moderate: publish a
//!   `ChatCommand` to `chat.commands` and await its `Receipt`.
//! * [`privacy`]: the `chat.privacy` stream of opt-outs and purges;
//!   [`scrub::scrub_queue`]: drop a purged subject's events from a queue
//!   (`chat.unrouted`, `chat.dead-letter`) and put the rest back.
//!
//! ```no_run
//! # async fn demo() -> Result<(), common::amqp::AmqpError> {
//! use common::amqp::{self, ConnectOptions, Subscriber, Topology};
//! let cancel = tokio_util::sync::CancellationToken::new();
//! let conn = amqp::connect(&ConnectOptions::new("amqp://127.0.0.1:5672/%2f", "example"), &cancel).await?;
//! let mut sub = Subscriber::builder("my-service")
//!     .bind("chat.twitch.*")
//!     .prefetch(100)
//!     .build(&conn, &Topology::default())
//!     .await?;
//! while let Some(delivery) = sub.next().await {
//!     let delivery = delivery?;
//!     println!("{}: {:?}", delivery.routing_key, delivery.event.text);
//!     delivery.ack().await?;
//! }
//! # Ok(()) }
//! ```

mod backoff;
pub mod commands;
mod connection;
pub mod management;
mod message;
pub mod privacy;
mod publisher;
mod reconnect;
pub mod scrub;
pub mod stream;
mod subscriber;
mod topology;

pub use backoff::Backoff;
pub use connection::{
    CLOSE_TIMEOUT, ConnectOptions, close, close_channel, connect, redact_url, split_urls,
};
pub use message::{CONTENT_TYPE, OutgoingMessage, header_str, headers};
pub use publisher::{
    CONFIRM_TIMEOUT, DEFAULT_MAX_IN_FLIGHT, PendingBatch, PendingConfirm, Publisher, SEND_TIMEOUT,
};
pub use reconnect::{Session, SessionEnd, reconnect_loop};
pub use subscriber::{ACK_TIMEOUT, Delivery, QueueType, Subscriber, SubscriberBuilder};
pub use topology::{CommandTopology, QueueSpec, Topology, declare_queue};

/// What went wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The broker could not be reached (after the configured retries).
    /// (lapin's error is part of the message, not a separate source, so a
    /// report of the whole chain says it once.)
    #[error("cannot connect to {url}: {error}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The last error.
        error: lapin::Error,
    },
    /// An AMQP operation failed (channel or connection closed, refused ...).
    #[error("AMQP {op} failed: {error}")]
    Protocol {
        /// The operation, e.g. `basic.publish`.
        op: &'static str,
        /// lapin's error.
        error: lapin::Error,
    },
    /// The broker refused to take responsibility for a message (nack).
    #[error("broker nacked message {message_id}")]
    Nacked {
        /// The message's id.
        message_id: String,
    },
    /// The message was not sent because the channel failed before its turn.
    #[error("message {message_id} not sent: the channel failed earlier in the batch")]
    NotSent {
        /// The message's id.
        message_id: String,
    },
    /// The broker did not answer in time; the connection is presumed dead.
    /// (lapin can leave a publish or a confirm pending forever when the
    /// server drops the connection at the wrong moment; amqp-rs/lapin#409.)
    #[error("AMQP {op} got no answer within {after:?}")]
    Timeout {
        /// The operation.
        op: &'static str,
        /// How long we waited.
        after: std::time::Duration,
    },
    /// The channel is closed (the broker or the connection closed it).
    #[error("the AMQP channel is closed")]
    ChannelClosed,
    /// A value does not fit an AMQP short string (255 bytes).
    #[error("{what} is longer than 255 bytes")]
    TooLong {
        /// Which value.
        what: &'static str,
    },
    /// The event could not be encoded.
    #[error("cannot encode event: {0}")]
    Encode(#[from] serde_json::Error),
    /// A topic pattern is invalid.
    #[error(transparent)]
    Pattern(#[from] crate::routing::PatternError),
    /// Shutdown was requested while waiting.
    #[error("cancelled")]
    Cancelled,
    /// No broker address is configured.
    #[error("no RabbitMQ URL configured (AMQP_URL)")]
    NoUrl,
    /// An exchange or queue exists in a shape chatbus cannot use.
    #[error("{0}")]
    Conflict(Box<TopologyConflict>),
}

/// An exchange or queue that exists with a type or options chatbus cannot
/// work with (declarations cannot change it). Fatal: it says what exists,
/// what was expected and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} exists {exists}, but chatbus needs {expected}. To fix: {fix}")]
pub struct TopologyConflict {
    /// E.g. `exchange "chat"`.
    pub what: String,
    /// What is there, e.g. `as a fanout exchange`.
    pub exists: String,
    /// What chatbus declares, e.g. `a durable topic exchange`.
    pub expected: String,
    /// What an operator can do.
    pub fix: String,
}

impl AmqpError {
    /// Wraps a lapin error of operation `op`.
    pub fn protocol(op: &'static str) -> impl FnOnce(lapin::Error) -> Self {
        move |error| Self::Protocol { op, error }
    }

    /// Whether retrying cannot help: the broker refused the login
    /// (`ACCESS_REFUSED`: wrong user or password), the virtual host does
    /// not exist (`NOT_ALLOWED`), no URL is configured, or the topology
    /// conflicts with what exists. A service stops on these (exit code 2)
    /// instead of retrying forever.
    pub fn is_permanent(&self) -> bool {
        match self {
            Self::NoUrl | Self::Conflict(_) => true,
            Self::Connect { error, .. } | Self::Protocol { error, .. } => {
                reply_code(error).is_some_and(|code| code == 403 || code == 530)
            }
            _ => false,
        }
    }

    /// Whether the error means the connection or channel is gone and a
    /// reconnect (not a retry on the same channel) is needed.
    pub fn needs_reconnect(&self) -> bool {
        matches!(
            self,
            Self::Connect { .. }
                | Self::Protocol { .. }
                | Self::NotSent { .. }
                | Self::Timeout { .. }
                | Self::ChannelClosed
        )
    }
}

/// Whether `error` is one that retrying cannot fix (a refused login, a
/// missing virtual host, a conflicting exchange or queue): an
/// [`AmqpError::is_permanent`] anywhere in its chain. The reconnect loop
/// ends on it, and a service stops with exit code 2.
pub fn is_permanent(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause
            .downcast_ref::<AmqpError>()
            .is_some_and(AmqpError::is_permanent)
    })
}

/// The AMQP reply code of a broker error (403 `ACCESS_REFUSED`, 406
/// `PRECONDITION_FAILED` ...), if it is one.
pub fn reply_code(error: &lapin::Error) -> Option<u16> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some(e.get_id()),
        _ => None,
    }
}

/// The broker's reply text of a broker error, if it is one.
pub fn reply_text(error: &lapin::Error) -> Option<String> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(e) => Some(e.get_message().to_string()),
        _ => None,
    }
}

/// `value` as an AMQP short string (at most 255 bytes).
///
/// # Errors
/// [`AmqpError::TooLong`] naming `what`.
pub fn short(
    what: &'static str,
    value: impl Into<String>,
) -> Result<lapin::types::ShortString, AmqpError> {
    lapin::types::ShortString::try_new(value).map_err(|_| AmqpError::TooLong { what })
}
