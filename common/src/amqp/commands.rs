//! Making chatbus speak: [`CommandClient`] publishes a
//! [`ChatCommand`](crate::command::ChatCommand) to the `chat.commands`
//! exchange and awaits its [`Receipt`], on RabbitMQ's direct reply-to.
//!
//! ```text
//! client --mandatory, reply_to = amq.rabbitmq.reply-to--> chat.commands --> a sender's queue
//!    ^                                                                          |
//!    '------------------ Receipt (same correlation_id) -------------------------'
//! ```
//!
//! * The reply-to pseudo-queue is consumed in no-ack mode on the publishing
//!   channel before the first publish, as RabbitMQ requires.
//! * A command no sender's queue is bound for comes back (`mandatory`):
//!   answered `rejected` with reason `no_sender`.
//! * A receipt is lost if this connection drops before it arrives, so a
//!   command without a receipt by its `expires_at` + [`RECEIPT_GRACE`] is
//!   answered `unknown` here (it may or may not have been sent).
//!
//! ```no_run
//! # async fn demo(conn: &lapin::Connection) -> Result<(), common::amqp::AmqpError> {
//! use common::amqp::commands::CommandClient;
//! use common::command::ReceiptStatus;
//! let commands = CommandClient::open(conn, "chat.commands", "my-bot").await?;
//! let receipt = commands.send("twitch", "somechannel", "hello").await?;
//! if receipt.status != ReceiptStatus::Sent {
//!     eprintln!("not sent: {:?} {:?}", receipt.status, receipt.reason);
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::oneshot;

use super::{AmqpError, CONTENT_TYPE, CommandTopology, SEND_TIMEOUT, short};
use crate::command::{ChatCommand, CommandAction, Receipt, ReceiptStatus};
use crate::schema::ChatEvent;

/// RabbitMQ's direct reply-to pseudo-queue.
pub const DIRECT_REPLY_TO: &str = "amq.rabbitmq.reply-to";

/// How long after a command's `expires_at` its receipt is still awaited
/// before it is answered `unknown`.
pub const RECEIPT_GRACE: Duration = Duration::from_secs(5);

/// The AMQP `type` of a command message.
pub const COMMAND_TYPE: &str = "chat_command";

/// The AMQP `type` of a receipt message.
pub const RECEIPT_TYPE: &str = "command_receipt";

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Receipt>>>>;

/// Publishes commands and awaits their receipts. Cheap to clone; every
/// clone shares one channel (the direct reply-to consumer lives on it).
#[derive(Debug, Clone)]
pub struct CommandClient {
    channel: Channel,
    exchange: String,
    app_id: String,
    account: Option<String>,
    user_id: Option<String>,
    pending: Pending,
}

impl CommandClient {
    /// Declares the command topology of `exchange` (`chat.commands`),
    /// opens a channel, consumes direct reply-to on it and enables
    /// publisher confirms. `app_id` names the publishing service.
    ///
    /// # Errors
    /// [`AmqpError::Protocol`] when the broker refuses a step.
    pub async fn open(
        connection: &Connection,
        exchange: &str,
        app_id: &str,
    ) -> Result<Self, AmqpError> {
        Self::open_with(connection, &CommandTopology::named(exchange), app_id).await
    }

    /// As [`CommandClient::open`], declaring `topology` as it is (a
    /// cluster's quorum dead-letter queue; tests' auto-deleting exchanges).
    ///
    /// # Errors
    /// As [`CommandClient::open`].
    pub async fn open_with(
        connection: &Connection,
        topology: &CommandTopology,
        app_id: &str,
    ) -> Result<Self, AmqpError> {
        topology.declare(connection).await?;
        let exchange = topology.exchange.as_str();
        let channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::protocol("channel.open"))?;
        let mut replies = channel
            .basic_consume(
                short("queue", DIRECT_REPLY_TO)?,
                short("consumer tag", "")?,
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::protocol("basic.consume (direct reply-to)"))?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(AmqpError::protocol("confirm.select"))?;
        let pending: Pending = Arc::default();
        let waiting = pending.clone();
        tokio::spawn(async move {
            while let Some(Ok(reply)) = replies.next().await {
                let Some(correlation) = reply.properties.correlation_id().as_ref() else {
                    continue;
                };
                let Ok(receipt) = serde_json::from_slice::<Receipt>(&reply.data) else {
                    tracing::warn!(
                        correlation_id = correlation.as_str(),
                        "a reply that is not a receipt; ignored"
                    );
                    continue;
                };
                let to = waiting
                    .lock()
                    .expect("pending receipts lock")
                    .remove(correlation.as_str());
                if let Some(to) = to {
                    let _ = to.send(receipt);
                }
            }
        });
        Ok(Self {
            channel,
            exchange: exchange.to_owned(),
            app_id: app_id.to_owned(),
            account: None,
            user_id: None,
            pending,
        })
    }

    /// Commands act as `account` (a token-store account of the platform)
    /// unless they name one; without this, the platform's sender account.
    #[must_use]
    pub fn acting_as(mut self, account: impl Into<String>) -> Self {
        self.account = Some(account.into());
        self
    }

    /// Sets the AMQP `user_id` property: RabbitMQ checks it against the
    /// connection's user, and senders may narrow what each RabbitMQ user is
    /// allowed to do with it.
    #[must_use]
    pub fn with_user_id(mut self, user: impl Into<String>) -> Self {
        self.user_id = Some(user.into());
        self
    }

    /// Says `text` in `platform`'s `channel`.
    ///
    /// # Errors
    /// As [`CommandClient::execute`].
    pub async fn send(
        &self,
        platform: &str,
        channel: &str,
        text: &str,
    ) -> Result<Receipt, AmqpError> {
        self.execute(self.command(
            platform,
            channel,
            CommandAction::Send {
                text: text.to_owned(),
                reply_to: None,
            },
        ))
        .await
    }

    /// Answers `event` with `text` in its channel, as a reply to it.
    ///
    /// # Errors
    /// As [`CommandClient::execute`].
    pub async fn reply(&self, event: &ChatEvent, text: &str) -> Result<Receipt, AmqpError> {
        self.execute(self.command(
            &event.platform,
            &event.channel,
            CommandAction::Send {
                text: text.to_owned(),
                reply_to: Some(event.id.clone()),
            },
        ))
        .await
    }

    /// Deletes message `message_id`.
    ///
    /// # Errors
    /// As [`CommandClient::execute`].
    pub async fn delete(
        &self,
        platform: &str,
        channel: &str,
        message_id: &str,
    ) -> Result<Receipt, AmqpError> {
        self.execute(self.command(
            platform,
            channel,
            CommandAction::Delete {
                message_id: message_id.to_owned(),
            },
        ))
        .await
    }

    /// Times `user_id` out for `seconds`.
    ///
    /// # Errors
    /// As [`CommandClient::execute`].
    pub async fn timeout(
        &self,
        platform: &str,
        channel: &str,
        user_id: &str,
        seconds: u32,
        reason: Option<&str>,
    ) -> Result<Receipt, AmqpError> {
        self.execute(self.command(
            platform,
            channel,
            CommandAction::Timeout {
                user_id: user_id.to_owned(),
                seconds,
                reason: reason.map(str::to_owned),
            },
        ))
        .await
    }

    /// Bans `user_id`.
    ///
    /// # Errors
    /// As [`CommandClient::execute`].
    pub async fn ban(
        &self,
        platform: &str,
        channel: &str,
        user_id: &str,
        reason: Option<&str>,
    ) -> Result<Receipt, AmqpError> {
        self.execute(self.command(
            platform,
            channel,
            CommandAction::Ban {
                user_id: user_id.to_owned(),
                reason: reason.map(str::to_owned),
            },
        ))
        .await
    }

    /// Lifts `user_id`'s ban or timeout.
    ///
    /// # Errors
    /// As [`CommandClient::execute`].
    pub async fn unban(
        &self,
        platform: &str,
        channel: &str,
        user_id: &str,
    ) -> Result<Receipt, AmqpError> {
        self.execute(self.command(
            platform,
            channel,
            CommandAction::Unban {
                user_id: user_id.to_owned(),
            },
        ))
        .await
    }

    /// A new command (a fresh id, issued now, acting as this client's
    /// account) for [`CommandClient::execute`].
    pub fn command(&self, platform: &str, channel: &str, action: CommandAction) -> ChatCommand {
        let mut command =
            ChatCommand::new(uuid::Uuid::new_v4().to_string(), platform, channel, action);
        command.account.clone_from(&self.account);
        command
    }

    /// Publishes `command` (mandatory, persistent, with publisher confirm)
    /// and waits for its receipt: `rejected: no_sender` when the broker
    /// returns it, `unknown` when no receipt came by its `expires_at` +
    /// [`RECEIPT_GRACE`].
    ///
    /// # Errors
    /// [`AmqpError`] when it cannot be published (the channel is closed, the
    /// broker nacks it); it was then not taken.
    pub async fn execute(&self, command: ChatCommand) -> Result<Receipt, AmqpError> {
        let body = serde_json::to_vec(&command)?;
        let correlation = uuid::Uuid::new_v4().simple().to_string();
        let mut props = BasicProperties::default()
            .with_content_type(CONTENT_TYPE.into())
            .with_delivery_mode(2)
            .with_message_id(short("message_id", command.id.clone())?)
            .with_correlation_id(correlation.as_str().into())
            .with_reply_to(DIRECT_REPLY_TO.into())
            .with_type(COMMAND_TYPE.into())
            .with_app_id(self.app_id.as_str().into())
            .with_timestamp(u64::try_from(Utc::now().timestamp()).unwrap_or(0));
        if let Some(user) = &self.user_id {
            props = props.with_user_id(short("user_id", user.clone())?);
        }
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .expect("pending receipts lock")
            .insert(correlation.clone(), tx);
        let forget = || {
            self.pending
                .lock()
                .expect("pending receipts lock")
                .remove(&correlation);
        };
        let publish = self.channel.basic_publish(
            short("exchange", self.exchange.clone())?,
            short("routing key", command.routing_key())?,
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &body,
            props,
        );
        let confirm = match tokio::time::timeout(SEND_TIMEOUT, publish).await {
            Ok(Ok(confirm)) => confirm,
            Ok(Err(e)) => {
                forget();
                return Err(AmqpError::protocol("basic.publish")(e));
            }
            Err(_) => {
                forget();
                return Err(AmqpError::Timeout {
                    op: "basic.publish",
                    after: SEND_TIMEOUT,
                });
            }
        };
        match confirm.await {
            Ok(Confirmation::Ack(None) | Confirmation::NotRequested) => {}
            Ok(Confirmation::Ack(Some(_returned))) => {
                forget();
                return Ok(answer(&command, ReceiptStatus::Rejected, "no_sender"));
            }
            Ok(Confirmation::Nack(_)) => {
                forget();
                return Err(AmqpError::Nacked {
                    message_id: command.id,
                });
            }
            Err(e) => {
                forget();
                return Err(AmqpError::protocol("publisher confirm")(e));
            }
        }
        let wait = (command.expires_at() - Utc::now())
            .to_std()
            .unwrap_or_default()
            + RECEIPT_GRACE;
        match tokio::time::timeout(wait, rx).await {
            Ok(Ok(receipt)) => Ok(receipt),
            _ => {
                forget();
                Ok(answer(&command, ReceiptStatus::Unknown, "no_receipt"))
            }
        }
    }
}

/// A receipt this client makes up itself.
fn answer(command: &ChatCommand, status: ReceiptStatus, reason: &str) -> Receipt {
    Receipt {
        id: command.id.clone(),
        status,
        platform_message_id: None,
        reason: Some(reason.to_owned()),
        at: Utc::now(),
    }
}
