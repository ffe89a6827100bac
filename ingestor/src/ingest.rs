//! The read side: everything twitch-irc delivers is normalised, counted and
//! appended to the outbox in batches; connection events drive the channel
//! manager (JOIN timing, gaps).

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::Utc;
use common::amqp::OutgoingMessage;
use common::schema::ChatEvent;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;
use twitch_irc::message::ServerMessage;

use crate::channels::ChannelManager;
use crate::outbox::Outbox;
use crate::twitch::login::IngestorLogin;
use crate::twitch::normalise::{Normalised, Normaliser};
use crate::twitch::transport::{Backpressure, ConnectionEvent};

/// Most messages handled per outbox append.
const BATCH: usize = 512;

/// How long the pipeline must be idle before the read-ahead counter is
/// settled (see [`Backpressure::settle_idle`]).
const IDLE_CHECK: std::time::Duration = std::time::Duration::from_secs(5);

/// Open IRC connections, for `/readyz`.
#[derive(Debug, Default)]
pub struct IrcStatus(AtomicI64);

impl IrcStatus {
    /// Open connections now.
    pub fn connections(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }

    fn add(&self, delta: i64) {
        let now = self.0.fetch_add(delta, Ordering::SeqCst) + delta;
        metrics::gauge!("chatbus_ingestor_irc_connections").set(now as f64);
    }
}

/// Everything the read loop needs.
#[derive(Debug)]
pub struct Ingest {
    /// Turns lines into events.
    pub normaliser: Normaliser,
    /// Channel states.
    pub manager: Arc<ChannelManager>,
    /// Where events go.
    pub outbox: Arc<Outbox>,
    /// Connection count.
    pub irc: Arc<IrcStatus>,
    /// How we log in (to refresh a rejected token).
    pub login: IngestorLogin,
    /// Tells the IRC readers how far behind we are.
    pub backpressure: Arc<Backpressure>,
}

impl Ingest {
    /// Runs until cancelled or the IRC client stops.
    ///
    /// # Errors
    /// When the IRC client's message stream ends without a shutdown.
    pub async fn run(
        self,
        mut messages: UnboundedReceiver<ServerMessage>,
        mut connections: UnboundedReceiver<ConnectionEvent>,
        cancel: CancellationToken,
    ) -> anyhow::Result<()> {
        let mut batch = Vec::with_capacity(BATCH);
        let mut idle = tokio::time::interval(IDLE_CHECK);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut received_since_check = false;
        loop {
            tokio::select! {
                biased;
                () = cancel.cancelled() => return Ok(()),
                Some(event) = connections.recv() => self.on_connection_event(event),
                _ = idle.tick() => {
                    if !received_since_check && messages.is_empty() {
                        self.backpressure.settle_idle();
                    }
                    received_since_check = false;
                }
                n = messages.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        anyhow::bail!("the IRC client stopped delivering messages");
                    }
                    received_since_check = true;
                    let counted = batch.iter().filter(|m| !matches!(m, ServerMessage::Whisper(_))).count();
                    let out = self.handle(batch.drain(..));
                    let appended = self.outbox.append(out);
                    self.backpressure.consumed(counted as u64);
                    if appended.dropped > 0 {
                        tracing::warn!(dropped = appended.dropped, "events dropped by a full outbox");
                    }
                }
            }
        }
    }

    fn on_connection_event(&self, event: ConnectionEvent) {
        match event {
            ConnectionEvent::Opened { .. } => self.irc.add(1),
            ConnectionEvent::JoinSent { conn, channel, at } => {
                self.manager.on_join_sent(conn, &channel, at)
            }
            ConnectionEvent::Closed {
                conn,
                at,
                reason,
                channels,
            } => {
                self.irc.add(-1);
                self.manager
                    .on_connection_closed(conn, at, reason.gap_reason(), &channels);
            }
        }
    }

    /// Normalises a batch of server messages into outgoing messages.
    pub fn handle(&self, messages: impl Iterator<Item = ServerMessage>) -> Vec<OutgoingMessage> {
        let mut out = Vec::new();
        for message in messages {
            let now = Utc::now();
            match &message {
                ServerMessage::Join(join) => {
                    if let Some(gap) = self.manager.on_joined(&join.channel_login, now) {
                        self.push(&mut out, &gap);
                    }
                }
                ServerMessage::Part(part) => self.manager.on_parted(&part.channel_login),
                ServerMessage::Notice(n) if n.channel_login.is_none() => {
                    if n.message_text.contains("authentication failed")
                        || n.message_text.contains("Improperly formatted auth")
                    {
                        metrics::counter!("chatbus_ingestor_irc_auth_failures_total").increment(1);
                        tracing::error!(notice = %n.message_text, login = self.login.login(), "Twitch refused the login");
                        let login = self.login.clone();
                        tokio::spawn(async move { login.on_auth_failure().await });
                    } else {
                        tracing::warn!(notice = %n.message_text, "server notice");
                    }
                }
                _ => {}
            }
            let source = message.source();
            match self.normaliser.normalise(source, now) {
                Ok(Normalised::Event(event)) => {
                    self.manager.on_event(&event);
                    self.push(&mut out, &event);
                }
                Ok(Normalised::Control) => {}
                Ok(Normalised::Unknown) => {
                    metrics::counter!("chatbus_ingestor_irc_unknown_commands_total").increment(1);
                    tracing::warn!(command = %source.command, "unknown IRC command skipped");
                }
                Err(e) => {
                    metrics::counter!("chatbus_ingestor_irc_bad_lines_total", "reason" => "unroutable").increment(1);
                    tracing::warn!(error = %e, "IRC message skipped");
                }
            }
        }
        out
    }

    fn push(&self, out: &mut Vec<OutgoingMessage>, event: &ChatEvent) {
        match OutgoingMessage::from_event(event) {
            Ok(m) => {
                metrics::counter!(
                    "chatbus_ingestor_events_received_total",
                    "channel" => event.channel.clone(),
                    "kind" => event.kind().as_str()
                )
                .increment(1);
                out.push(m);
            }
            Err(e) => {
                metrics::counter!("chatbus_ingestor_events_dropped_total", "reason" => "unencodable").increment(1);
                tracing::error!(id = %event.id, error = %e, "event cannot be encoded; dropped");
            }
        }
    }
}
