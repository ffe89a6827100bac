//! Shared building blocks of chatbus.
//!
//! * [`schema`]: the versioned `ChatEvent` contract.
//! * [`routing`]: routing keys `chat.<platform>.<channel>` and topic patterns.
//! * [`amqp`]: the RabbitMQ toolkit (connect, topology, publisher, subscriber)
//!   that chatbus services and other Rust services use.
//! * [`config`]: layered, validated configuration.
//! * [`token_store`]: the OAuth token file shared by auth-server and ingestor.
//! * [`oauth`], [`token_manager`]: OAuth providers, and the manager that keeps
//!   the stored tokens refreshed and validated (auth-server and ingestor).
//! * [`secret`], [`telemetry`], [`shutdown`]: the small things every binary needs.

pub mod amqp;
pub mod body;
pub mod command;
pub mod config;
#[cfg(feature = "http")]
pub mod http;
pub mod log_limit;
pub mod oauth;
pub mod privacy;
pub mod routing;
pub mod schema;
pub mod secret;
#[cfg(feature = "http")]
pub mod service;
pub mod shutdown;
pub mod telemetry;
pub mod token_manager;
pub mod token_store;
pub mod urlcode;

pub use schema::{ChatEvent, EventBody, EventKind};
pub use secret::Secret;
