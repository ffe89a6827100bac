//! The AMQP toolkit (lapin): what every chatbus service, and any other Rust
//! service that wants chat events, uses to talk to RabbitMQ.
//!
//! * [`connect`]: connect from a URL with retry and exponential backoff.
//! * [`Topology`]: declare the `chat` topic exchange, its alternate exchange
//!   for unroutable events, and the dead-letter exchange and queue.
//! * [`Publisher`]: typed publishing with pipelined publisher confirms;
//!   [`RecoveringPublisher`] adds reconnect and re-send of the unconfirmed.
//! * [`Subscriber`]: declare a queue with bindings and a prefetch, receive
//!   typed [`Delivery`]s, ack/nack them, and dead-letter what cannot be
//!   decoded with the reason in a header.
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

mod connection;
mod message;
mod publisher;
mod subscriber;
mod topology;

pub use connection::{
    Backoff, CLOSE_TIMEOUT, ConnectOptions, close, close_channel, connect, redact_url,
};
pub use message::{CONTENT_TYPE, OutgoingMessage, header_str, headers};
pub use publisher::{
    CONFIRM_TIMEOUT, DEFAULT_MAX_IN_FLIGHT, PendingBatch, PendingConfirm, Publisher,
    RecoveringPublisher, SEND_TIMEOUT,
};
pub use subscriber::{ACK_TIMEOUT, Delivery, QueueType, Subscriber, SubscriberBuilder};
pub use topology::Topology;

/// What went wrong talking to the broker.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    /// The broker could not be reached (after the configured retries).
    #[error("cannot connect to {url}: {source}")]
    Connect {
        /// The URL, password redacted.
        url: String,
        /// The last error.
        #[source]
        source: lapin::Error,
    },
    /// An AMQP operation failed (channel or connection closed, refused ...).
    #[error("AMQP {op} failed: {source}")]
    Protocol {
        /// The operation, e.g. `basic.publish`.
        op: &'static str,
        /// lapin's error.
        #[source]
        source: lapin::Error,
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
}

impl AmqpError {
    pub(crate) fn protocol(op: &'static str) -> impl FnOnce(lapin::Error) -> Self {
        move |source| Self::Protocol { op, source }
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

pub(crate) fn short(
    what: &'static str,
    value: impl Into<String>,
) -> Result<lapin::types::ShortString, AmqpError> {
    lapin::types::ShortString::try_new(value).map_err(|_| AmqpError::TooLong { what })
}
