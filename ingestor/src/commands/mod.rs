//! The command intake: takes `ChatCommand`s from the `chat.commands`
//! exchange, hands each to its platform's [`Sender`] and publishes its
//! receipt to the command's `reply_to`.
//!
//! ```text
//! chat.commands --(<platform>.#)--> queue chat.commands.ingestor (single active consumer)
//!   --> decode, validate, allow-list, journal (ids already attempted)
//!   --> one worker per channel, in order: check --> wait_turn (limits) --> journal "attempted" --> execute
//!   --> receipt to reply_to (same correlation_id) --> journal "done" --> ack
//!   rejected: the receipt, and the command dead-lettered to chat.commands.dlx with the reason
//! ```
//!
//! The queue is declared with `x-single-active-consumer`, so among several
//! ingestors one at a time takes commands and every account's send window
//! is kept in one place; the others wait to take over.
//!
//! A command is acked only after its receipt was published. A crash
//! between the platform call and the receipt leaves the id recorded as
//! attempted in the [`journal::Journal`]: its redelivery is answered
//! `failed: unknown_outcome`, never carried out again.

pub mod allow;
pub mod journal;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use common::amqp::commands::RECEIPT_TYPE;
use common::amqp::{
    AmqpError, CONTENT_TYPE, CommandTopology, QueueSpec, Session, SessionEnd, declare_queue,
    headers,
};
use common::command::{ChatCommand, CommandAction, Receipt, ReceiptStatus};
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueBindOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Acker, BasicProperties, Channel, Confirmation, Connection};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::platforms::seam::{Job, Outcome, Sender};
use allow::AllowList;
use journal::{Entry, Journal};

/// How the intake is set up.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The command exchange (`COMMANDS_EXCHANGE`, `chat.commands`).
    pub exchange: String,
    /// The intake queue (`COMMANDS_QUEUE`).
    pub queue: String,
    /// Who may act as whom (`COMMANDS_ALLOW`).
    pub allow: AllowList,
    /// Commands taken from the queue at once (`COMMANDS_PREFETCH`): every
    /// channel's queue of waiting commands together.
    pub prefetch: u16,
    /// Quorum queues (a cluster).
    pub replicated: bool,
    /// Expire the queues when unused (tests).
    pub queue_expires: Option<Duration>,
}

/// How long a channel's worker waits for another command before it ends.
const WORKER_IDLE: Duration = Duration::from_secs(60);

/// A received command's way back: where its receipt goes and how it is
/// acked.
#[derive(Debug)]
struct Reply {
    to: Option<ShortString>,
    correlation: Option<ShortString>,
    acker: Acker,
}

/// A received command as it came, for dead-lettering.
#[derive(Debug)]
struct Incoming {
    routing_key: String,
    properties: BasicProperties,
    body: Vec<u8>,
}

#[derive(Debug)]
struct Work {
    job: Job,
    reply: Reply,
    incoming: Incoming,
    received: std::time::Instant,
}

/// The intake: its settings, the platforms' senders and what outlives a
/// broker connection (the journal, commands in progress, channel workers).
#[derive(Debug, Clone)]
pub struct Intake {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    settings: Settings,
    senders: HashMap<&'static str, Arc<dyn Sender>>,
    journal: Arc<Journal>,
    /// The current connection's confirm channel for receipts and dead
    /// letters.
    out: Mutex<Option<Channel>>,
    /// Ids being carried out, with the later deliveries of the same id
    /// (a redelivery after a reconnect, a duplicate) that wait for its
    /// outcome.
    in_progress: Mutex<HashMap<String, Vec<Reply>>>,
    /// One worker per `(platform, channel)`, carrying out its commands in
    /// order.
    workers: Mutex<HashMap<(String, String), mpsc::UnboundedSender<Work>>>,
}

impl Intake {
    /// An intake for `senders` (one per platform that can speak),
    /// recording attempts in `journal`.
    pub fn new(settings: Settings, senders: Vec<Arc<dyn Sender>>, journal: Arc<Journal>) -> Self {
        Self {
            inner: Arc::new(Inner {
                settings,
                senders: senders.into_iter().map(|s| (s.platform(), s)).collect(),
                journal,
                out: Mutex::new(None),
                in_progress: Mutex::default(),
                workers: Mutex::default(),
            }),
        }
    }

    /// The platforms it takes commands for: those with a sender and an
    /// allowed account.
    pub fn platforms(&self) -> Vec<&'static str> {
        let allowed = self.inner.settings.allow.platforms();
        let mut p: Vec<&'static str> = self
            .inner
            .senders
            .keys()
            .copied()
            .filter(|p| allowed.contains(p))
            .collect();
        p.sort_unstable();
        p
    }
}

impl Session for Intake {
    const NAME: &'static str = "commands";
    const RECONNECTS_METRIC: &'static str = "chatbus_ingestor_commands_reconnects_total";

    async fn run(&mut self, connection: &Connection, cancel: &CancellationToken) -> SessionEnd {
        // (A declaration on a connection that died at the wrong moment can
        // wait forever: shutdown must not wait with it.)
        let subscribed = tokio::select! {
            () = cancel.cancelled() => return SessionEnd::Finished,
            s = self.subscribe(connection) => s,
        };
        let consumer = match subscribed {
            Ok(c) => c,
            Err(e) => return SessionEnd::lost(e),
        };
        let (channel, mut consumer) = consumer;
        tracing::info!(queue = %self.inner.settings.queue, platforms = ?self.platforms(), "taking commands");
        let end = loop {
            let next = tokio::select! {
                () = cancel.cancelled() => break SessionEnd::Finished,
                next = consumer.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    let intake = self.inner.clone();
                    intake.accept(delivery).await;
                }
                Some(Err(e)) => {
                    break SessionEnd::Lost {
                        error: AmqpError::protocol("basic.consume")(e).into(),
                        healthy: true,
                    };
                }
                None => {
                    break SessionEnd::Lost {
                        error: anyhow::anyhow!("the command consumer was cancelled"),
                        healthy: true,
                    };
                }
            }
        };
        self.inner.out.lock().expect("out lock").take();
        common::amqp::close_channel(&channel, "commands stopped").await;
        end
    }
}

impl Intake {
    /// Declares the topology and the intake queue, binds it for every
    /// platform it sends on, opens the receipt channel and starts
    /// consuming.
    async fn subscribe(
        &self,
        connection: &Connection,
    ) -> Result<(Channel, lapin::Consumer), AmqpError> {
        let s = &self.inner.settings;
        let topology = CommandTopology {
            queue_expires: s.queue_expires,
            replicated: s.replicated,
            ..CommandTopology::named(&s.exchange)
        };
        topology.declare(connection).await?;
        declare_queue(
            connection,
            &s.queue,
            &QueueSpec {
                durable: true,
                queue_type: s.replicated.then_some("quorum"),
                expires: s.queue_expires,
                single_active_consumer: true,
                ..QueueSpec::default()
            },
        )
        .await?;
        let out = connection
            .create_channel()
            .await
            .map_err(AmqpError::protocol("channel.open"))?;
        out.confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(AmqpError::protocol("confirm.select"))?;
        let channel = connection
            .create_channel()
            .await
            .map_err(AmqpError::protocol("channel.open"))?;
        channel
            .basic_qos(s.prefetch, BasicQosOptions::default())
            .await
            .map_err(AmqpError::protocol("basic.qos"))?;
        for platform in self.platforms() {
            channel
                .queue_bind(
                    s.queue.as_str().into(),
                    s.exchange.as_str().into(),
                    format!("{platform}.#").into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(AmqpError::protocol("queue.bind"))?;
        }
        let consumer = channel
            .basic_consume(
                s.queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(AmqpError::protocol("basic.consume"))?;
        *self.inner.out.lock().expect("out lock") = Some(out);
        Ok((channel, consumer))
    }
}

/// Why a received command is refused before anything is tried.
fn refuse(reason: impl Into<String>) -> Outcome {
    Outcome::rejected(reason)
}

impl Inner {
    /// Takes one delivery: refuses it, answers it from the journal, or
    /// hands it to its channel's worker.
    async fn accept(self: Arc<Self>, delivery: lapin::message::Delivery) {
        let received = std::time::Instant::now();
        let reply = Reply {
            to: delivery.properties.reply_to().clone(),
            correlation: delivery.properties.correlation_id().clone(),
            acker: delivery.acker,
        };
        let incoming = Incoming {
            routing_key: delivery.routing_key.as_str().to_owned(),
            properties: delivery.properties,
            body: delivery.data,
        };
        let fallback_id = incoming
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let command: ChatCommand = match serde_json::from_slice(&incoming.body) {
            Ok(c) => c,
            Err(e) => {
                let outcome = refuse(format!("malformed: {e}"));
                self.finish(
                    &fallback_id,
                    None,
                    outcome,
                    vec![reply],
                    Some(&incoming),
                    received,
                )
                .await;
                return;
            }
        };
        let user = incoming
            .properties
            .user_id()
            .as_ref()
            .map(|u| u.as_str().to_owned());
        let job = match self.admit(command, user.as_deref()) {
            Ok(job) => job,
            Err(refused) => {
                let (command, outcome) = *refused;
                self.finish(
                    &command.id,
                    Some(&command),
                    outcome,
                    vec![reply],
                    Some(&incoming),
                    received,
                )
                .await;
                return;
            }
        };
        let id = job.command.id.clone();
        {
            let mut in_progress = self.in_progress.lock().expect("in progress lock");
            if let Some(waiting) = in_progress.get_mut(&id) {
                // The same id is being carried out: this one gets its
                // receipt (a redelivery after a reconnect, or a duplicate).
                waiting.push(reply);
                return;
            }
            if self.journal.get(&id).is_none() {
                in_progress.insert(id.clone(), Vec::new());
                let work = Work {
                    job,
                    reply,
                    incoming,
                    received,
                };
                self.dispatch(work);
                return;
            }
        }
        let (outcome, record) = match self.journal.get(&id) {
            Some(Entry::Done(receipt)) => {
                // Answered before: the same receipt again.
                self.reply_all(&receipt, vec![reply]).await;
                return;
            }
            _ => (Outcome::failed("unknown_outcome"), true),
        };
        // Attempted, and no outcome recorded: a crash came between the
        // platform call and the receipt. Never a second try.
        let journal = record.then(|| self.journal.clone());
        self.finish_recorded(&job.command, outcome, vec![reply], journal, received)
            .await;
    }

    /// Decodes what serde cannot check, and applies the allow-list and the
    /// platform's text limit.
    fn admit(
        &self,
        command: ChatCommand,
        user: Option<&str>,
    ) -> Result<Job, Box<(ChatCommand, Outcome)>> {
        if let Err(e) = command.validate() {
            return Err(Box::new((command, refuse(format!("invalid: {e}")))));
        }
        let now = Utc::now();
        if command.is_expired(now) {
            return Err(Box::new((command, Outcome::expired())));
        }
        let Some(sender) = self.senders.get(command.platform.as_str()) else {
            let mut known: Vec<&str> = self.senders.keys().copied().collect();
            known.sort_unstable();
            let reason = format!(
                "unknown_platform: `{}` (this ingestor sends on: {})",
                command.platform,
                known.join(", ")
            );
            return Err(Box::new((command, refuse(reason))));
        };
        let account = match command
            .account
            .clone()
            .or_else(|| sender.default_account().map(str::to_owned))
        {
            Some(a) => a,
            None => {
                let reason = format!(
                    "unknown_account: the command names no account (`as`) and {}_SENDER is not set",
                    command.platform.to_ascii_uppercase()
                );
                return Err(Box::new((command, refuse(reason))));
            }
        };
        if let Err(reason) =
            self.settings
                .allow
                .check(&command.platform, &account, &command.action, user)
        {
            return Err(Box::new((command, refuse(reason))));
        }
        if let CommandAction::Send { text, .. } = &command.action {
            let chars = text.chars().count();
            if chars > sender.max_text_chars() {
                let reason = format!(
                    "text_too_long: {chars} characters, {} allows {}",
                    command.platform,
                    sender.max_text_chars()
                );
                return Err(Box::new((command, refuse(reason))));
            }
        }
        let left = (command.expires_at() - now).to_std().unwrap_or_default();
        Ok(Job {
            command,
            account,
            deadline: tokio::time::Instant::now() + left,
        })
    }

    /// Hands `work` to its channel's worker, starting one if needed.
    fn dispatch(self: &Arc<Self>, work: Work) {
        let key = (
            work.job.command.platform.clone(),
            work.job.command.channel.clone(),
        );
        let mut workers = self.workers.lock().expect("workers lock");
        let work = match workers.get(&key) {
            Some(tx) => match tx.send(work) {
                Ok(()) => return,
                Err(mpsc::error::SendError(work)) => work,
            },
            None => work,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        tx.send(work).expect("a new worker's queue is open");
        workers.insert(key.clone(), tx);
        tokio::spawn(self.clone().worker(key, rx));
    }

    /// Carries out one channel's commands, in order, until idle.
    async fn worker(self: Arc<Self>, key: (String, String), mut rx: mpsc::UnboundedReceiver<Work>) {
        loop {
            let work = match tokio::time::timeout(WORKER_IDLE, rx.recv()).await {
                Ok(Some(work)) => work,
                Ok(None) => return,
                Err(_) => {
                    let mut workers = self.workers.lock().expect("workers lock");
                    if rx.is_empty() {
                        workers.remove(&key);
                        return;
                    }
                    continue;
                }
            };
            self.carry_out(work).await;
        }
    }

    async fn carry_out(&self, work: Work) {
        let Work {
            job,
            reply,
            incoming,
            received,
        } = work;
        let sender = self.senders[job.command.platform.as_str()].clone();
        let mut attempted = false;
        let outcome = if tokio::time::Instant::now() >= job.deadline {
            Outcome::expired()
        } else if let Err(outcome) = sender.check(&job).await {
            outcome
        } else if let Err(outcome) = sender.wait_turn(&job).await {
            outcome
        } else {
            let (journal, id) = (self.journal.clone(), job.command.id.clone());
            match tokio::task::spawn_blocking(move || journal.attempted(&id)).await {
                Ok(Ok(())) => {
                    attempted = true;
                    sender.execute(&job).await
                }
                Ok(Err(e)) => Outcome::failed(format!("journal: {e}")),
                Err(e) => Outcome::failed(format!("journal: {e}")),
            }
        };
        let mut replies = vec![reply];
        replies.extend(
            self.in_progress
                .lock()
                .expect("in progress lock")
                .remove(&job.command.id)
                .unwrap_or_default(),
        );
        let journal = attempted.then(|| self.journal.clone());
        if outcome.status == ReceiptStatus::Rejected {
            self.dead_letter(&incoming, outcome.reason.as_deref().unwrap_or("rejected"))
                .await;
        }
        self.finish_recorded(&job.command, outcome, replies, journal, received)
            .await;
    }

    /// Answers a command refused before it reached a worker: dead-letters
    /// it when rejected, then publishes the receipt and acks.
    async fn finish(
        &self,
        id: &str,
        command: Option<&ChatCommand>,
        outcome: Outcome,
        replies: Vec<Reply>,
        incoming: Option<&Incoming>,
        received: std::time::Instant,
    ) {
        if outcome.status == ReceiptStatus::Rejected
            && let Some(incoming) = incoming
        {
            self.dead_letter(incoming, outcome.reason.as_deref().unwrap_or("rejected"))
                .await;
        }
        let receipt = receipt(id, &outcome);
        count(&self.senders, command, &receipt, received);
        self.reply_all(&receipt, replies).await;
    }

    /// Records the outcome in the journal (when the command was attempted),
    /// publishes the receipt to every waiting delivery and acks them.
    async fn finish_recorded(
        &self,
        command: &ChatCommand,
        outcome: Outcome,
        replies: Vec<Reply>,
        journal: Option<Arc<Journal>>,
        received: std::time::Instant,
    ) {
        let receipt = receipt(&command.id, &outcome);
        if let Some(journal) = journal {
            let r = receipt.clone();
            match tokio::task::spawn_blocking(move || journal.done(&r)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(id = %command.id, error = %e, "cannot record a command's outcome; a redelivery will be answered unknown_outcome");
                }
                Err(e) => tracing::error!(id = %command.id, error = %e, "journal task failed"),
            }
        }
        count(&self.senders, Some(command), &receipt, received);
        self.reply_all(&receipt, replies).await;
    }

    /// Publishes `receipt` to each reply's `reply_to` (waiting for the
    /// broker's confirm), then acks each delivery.
    async fn reply_all(&self, receipt: &Receipt, replies: Vec<Reply>) {
        let out = self.out.lock().expect("out lock").clone();
        let body = serde_json::to_vec(receipt).expect("a receipt encodes");
        for reply in replies {
            if let (Some(to), Some(out)) = (&reply.to, &out) {
                let mut props = BasicProperties::default()
                    .with_content_type(CONTENT_TYPE.into())
                    .with_type(RECEIPT_TYPE.into())
                    .with_app_id("chatbus-ingestor".into());
                if let Ok(id) = common::amqp::short("message_id", receipt.id.as_str()) {
                    props = props.with_message_id(id);
                }
                if let Some(c) = &reply.correlation {
                    props = props.with_correlation_id(c.clone());
                }
                if let Err(e) = publish(out, "", to.as_str(), &body, props).await {
                    // Not acked either: redelivered, and answered again
                    // from the journal.
                    tracing::warn!(id = %receipt.id, error = %e, "cannot publish a receipt");
                    continue;
                }
            }
            if let Err(e) = reply.acker.ack(BasicAckOptions::default()).await {
                tracing::debug!(id = %receipt.id, error = %e, "cannot ack a command (its channel is gone; it comes back)");
            }
        }
    }

    /// Publishes the command as it came to the dead-letter exchange with
    /// `reason` in a header.
    async fn dead_letter(&self, incoming: &Incoming, reason: &str) {
        let Some(out) = self.out.lock().expect("out lock").clone() else {
            return;
        };
        let mut table = incoming.properties.headers().clone().unwrap_or_default();
        let reason: String = reason.chars().take(1000).collect();
        table.insert(
            headers::DEAD_LETTER_REASON.into(),
            AMQPValue::LongString(reason.as_str().into()),
        );
        table.insert(
            headers::DEAD_LETTER_QUEUE.into(),
            AMQPValue::LongString(self.settings.queue.as_str().into()),
        );
        table.insert(
            headers::DEAD_LETTER_EXCHANGE.into(),
            AMQPValue::LongString(self.settings.exchange.as_str().into()),
        );
        let props = incoming.properties.clone().with_headers(table);
        let exchange = format!("{}.dlx", self.settings.exchange);
        match publish(
            &out,
            &exchange,
            &incoming.routing_key,
            &incoming.body,
            props,
        )
        .await
        {
            Ok(()) => {
                metrics::counter!("chatbus_amqp_dead_lettered_total", "queue" => self.settings.queue.clone())
                    .increment(1);
                tracing::warn!(routing_key = %incoming.routing_key, %reason, "rejected a command; dead-lettered it");
            }
            Err(e) => {
                tracing::warn!(error = %e, %reason, "cannot dead-letter a rejected command");
            }
        }
    }
}

/// Publishes and waits for the broker's confirm.
async fn publish(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    props: BasicProperties,
) -> Result<(), AmqpError> {
    let confirm = channel
        .basic_publish(
            exchange.into(),
            common::amqp::short("routing key", routing_key)?,
            BasicPublishOptions::default(),
            body,
            props,
        )
        .await
        .map_err(AmqpError::protocol("basic.publish"))?;
    match tokio::time::timeout(common::amqp::CONFIRM_TIMEOUT, confirm).await {
        Ok(Ok(Confirmation::Ack(_) | Confirmation::NotRequested)) => Ok(()),
        Ok(Ok(Confirmation::Nack(_))) => Err(AmqpError::Nacked {
            message_id: String::new(),
        }),
        Ok(Err(e)) => Err(AmqpError::protocol("publisher confirm")(e)),
        Err(_) => Err(AmqpError::Timeout {
            op: "publisher confirm",
            after: common::amqp::CONFIRM_TIMEOUT,
        }),
    }
}

fn receipt(id: &str, outcome: &Outcome) -> Receipt {
    Receipt {
        id: id.to_owned(),
        status: outcome.status,
        platform_message_id: outcome.platform_message_id.clone(),
        reason: outcome.reason.clone(),
        at: Utc::now(),
    }
}

fn status_name(status: ReceiptStatus) -> &'static str {
    match status {
        ReceiptStatus::Sent => "sent",
        ReceiptStatus::Dropped => "dropped",
        ReceiptStatus::Failed => "failed",
        ReceiptStatus::Expired => "expired",
        ReceiptStatus::Rejected => "rejected",
        ReceiptStatus::Unknown => "unknown",
    }
}

/// Counts an answered command. Its platform label is one this ingestor
/// sends on, else `(other)`: a publisher cannot create series.
fn count(
    platforms: &HashMap<&'static str, Arc<dyn Sender>>,
    command: Option<&ChatCommand>,
    receipt: &Receipt,
    received: std::time::Instant,
) {
    let (platform, kind) = command.map_or(("(other)", "(unknown)"), |c| {
        let platform = platforms
            .get_key_value(c.platform.as_str())
            .map_or("(other)", |(p, _)| *p);
        (platform, c.action.kind())
    });
    let status = status_name(receipt.status);
    metrics::counter!("chatbus_ingestor_commands_total", "platform" => platform, "kind" => kind, "status" => status)
        .increment(1);
    metrics::histogram!("chatbus_ingestor_command_seconds", "platform" => platform)
        .record(received.elapsed().as_secs_f64());
    tracing::debug!(id = %receipt.id, status, reason = ?receipt.reason, "command answered");
}
