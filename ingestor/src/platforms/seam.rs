//! The platforms seam: what every platform folder hands the rest of the
//! ingestor ([`Started`]: its [`Source`], the background tasks it needs,
//! the HTTP routes it mounts), what it is given to start ([`Context`]),
//! and the [`EventSink`] every source writes to.
//!
//! A platform owns everything platform-specific: its settings, login and
//! credentials, channel resolution, normalisation, rate limits and quota.
//! Its source reports per-channel state through its [`ChannelManager`]
//! (with the manager options the platform needs) and emits batches of
//! `ChatEvent`s (chat and `gap` markers) into the sink. Everything after
//! the sink (outbox, spool, publisher, admin API, `/channels`, `/readyz`,
//! metrics) is shared and knows only events and a `platform` label.
//!
//! ```text
//!  platforms/<name>: its source --> EventSink --> outbox (spool) --> publisher --> RabbitMQ
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::amqp::OutgoingMessage;
use common::command::{ChatCommand, ReceiptStatus};
use common::schema::ChatEvent;
use futures::future::BoxFuture;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::channels::{ChannelManager, PersistedChannels};
use crate::outbox::{Appended, Outbox};
use crate::privacy::Privacy;

/// What a platform is given to start: what every platform shares.
#[derive(Debug, Clone)]
pub struct Context {
    /// Where its source puts its events.
    pub sink: EventSink,
    /// Token store and OAuth provider settings (`TOKEN_STORE_PATH`, each
    /// provider's client id ...).
    pub oauth: common::oauth::OAuthConfig,
    /// Carry the platform's raw form in each event (`INGEST_INCLUDE_RAW`).
    pub include_raw: bool,
    /// The process's shutdown signal, for the platform's own tasks.
    pub shutdown: CancellationToken,
    /// Largest webhook body a platform's routes accept
    /// (`WEBHOOK_MAX_BODY_BYTES`).
    pub webhook_max_body_bytes: u64,
    /// Part of a fleet (`INGESTOR_FLEET`): the platform does not join its
    /// configured channels itself; it lists them in
    /// [`Started::initial_channels`] and the fleet assigns them.
    pub fleet: bool,
}

/// HTTP routes a platform mounts on the webhook listener
/// (`WEBHOOK_HTTP_ADDR`, `crate::webhooks`): tried before the generic
/// signed sources, so a platform's own path (`/hooks/<platform>`, a name no
/// generic source may take) reaches it.
pub type Routes = warp::filters::BoxedFilter<(warp::reply::Response,)>;

/// A background task a platform needs beside its source (a token manager
/// keeping its account's token fresh, a status poller), supervised like
/// the source: one that fails stops the ingestor.
pub type Task = (&'static str, BoxFuture<'static, anyhow::Result<()>>);

/// A started platform: what the rest of the ingestor runs and serves.
///
/// Its hooks: its source (reading chat), its background tasks (token
/// managers; a status poller), the channel capacity it reports
/// ([`Source::capacity`], its per-account limits) and its [`Sender`]
/// (carrying out `common::command::ChatCommand`s, when the platform can
/// speak) and the HTTP routes it mounts on the webhook listener
/// ([`Routes`], for a platform that delivers by webhooks).
pub struct Started {
    /// Its source (reading chat).
    pub source: Arc<dyn Source>,
    /// Its background tasks (token managers, status pollers).
    pub tasks: Vec<Task>,
    /// Its sender, when commands may speak or moderate on it.
    pub sender: Option<Arc<dyn Sender>>,
    /// Its webhook routes, when the platform delivers by webhooks (the
    /// ingestor then needs `WEBHOOK_HTTP_ADDR`).
    pub routes: Option<Routes>,
    /// In a fleet, the channels its configuration names (not joined: the
    /// fleet's wanted set gets them); empty otherwise.
    pub initial_channels: Vec<String>,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("source", &self.source)
            .field("sender", &self.sender)
            .field("routes", &self.routes.is_some())
            .field(
                "tasks",
                &self.tasks.iter().map(|(name, _)| *name).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Started {
    /// A platform that is only a source.
    pub fn source(source: Arc<dyn Source>) -> Self {
        Self {
            source,
            tasks: Vec::new(),
            sender: None,
            routes: None,
            initial_channels: Vec::new(),
        }
    }
}

/// A command handed to a platform's [`Sender`]: decoded, checked, allowed,
/// with the account that acts resolved.
#[derive(Debug, Clone)]
pub struct Job {
    /// The command.
    pub command: ChatCommand,
    /// The token-store account (its login) that acts.
    pub account: String,
    /// When it expires (its `expires_at`, on this process's clock).
    pub deadline: tokio::time::Instant,
}

/// What became of a command on its platform: the receipt's status, the
/// platform's message id and the reason, in the platform's own words where
/// it gave some.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// The receipt's status.
    pub status: ReceiptStatus,
    /// The platform's id of the message sent.
    pub platform_message_id: Option<String>,
    /// Why it was not sent.
    pub reason: Option<String>,
}

impl Outcome {
    /// The platform took it (its message id, when it gives one).
    pub fn sent(platform_message_id: Option<String>) -> Self {
        Self {
            status: ReceiptStatus::Sent,
            platform_message_id,
            reason: None,
        }
    }

    /// An outcome without a message id.
    pub fn new(status: ReceiptStatus, reason: impl Into<String>) -> Self {
        Self {
            status,
            platform_message_id: None,
            reason: Some(reason.into()),
        }
    }

    /// Refused before anything was tried.
    pub fn rejected(reason: impl Into<String>) -> Self {
        Self::new(ReceiptStatus::Rejected, reason)
    }

    /// It tried and failed.
    pub fn failed(reason: impl Into<String>) -> Self {
        Self::new(ReceiptStatus::Failed, reason)
    }

    /// The platform answered but did not deliver it.
    pub fn dropped(reason: impl Into<String>) -> Self {
        Self::new(ReceiptStatus::Dropped, reason)
    }

    /// Its deadline passed before it could go.
    pub fn expired() -> Self {
        Self {
            status: ReceiptStatus::Expired,
            platform_message_id: None,
            reason: None,
        }
    }
}

/// A platform's sender: carries out commands, keeping the platform's rate
/// limits and quota. The command intake (`crate::commands`) calls it one
/// command at a time per channel, in order: [`Sender::check`], then
/// [`Sender::wait_turn`], then (after recording the attempt on disk)
/// [`Sender::execute`].
pub trait Sender: Send + Sync + std::fmt::Debug + 'static {
    /// The platform it speaks on.
    fn platform(&self) -> &'static str;

    /// The account commands act as when they name none
    /// (`<PLATFORM>_SENDER`).
    fn default_account(&self) -> Option<&str>;

    /// The longest text it may send, in characters (Unicode scalar values).
    fn max_text_chars(&self) -> usize;

    /// What can be known before waiting: the account has a token with the
    /// scope the kind needs, the channel can be written to. An `Err` is the
    /// command's outcome (`rejected` with the reason).
    fn check<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), Outcome>>;

    /// Waits until the platform's limits let `job` go, and takes its slot;
    /// `Err(expired)` when its deadline comes first.
    fn wait_turn<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), Outcome>>;

    /// Carries `job` out: one platform call, never repeated once it may
    /// have reached the platform.
    fn execute<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Outcome>;
}

/// A platform source. One ingestor process runs every configured source,
/// side by side, into one outbox (see docs/ingestor.md for why).
pub trait Source: Send + Sync + std::fmt::Debug + 'static {
    /// The platform: the second word of the routing key and the
    /// `platform` of every event and metric.
    fn platform(&self) -> &'static str;

    /// The channels this source is asked to read, with their states.
    fn channels(&self) -> &Arc<ChannelManager>;

    /// The channels this source can hold at once, and the setting or the
    /// platform's rule that says so (a per-account limit).
    fn capacity(&self) -> Capacity {
        Capacity {
            max: self.channels().limit(),
            why: self.channels().limit_reason().to_owned(),
        }
    }

    /// The file in `SPOOL_DIR` its wanted channels are remembered in.
    fn state_file(&self) -> String {
        PersistedChannels::file_name(self.platform())
    }

    /// The channel word for what a user asked for (admin API, config), or
    /// why it is not one.
    ///
    /// # Errors
    /// A user-facing message naming what is wrong with `input`.
    fn parse_channel(&self, input: &str) -> Result<String, String>;

    /// Whether the platform can be reached, for `/readyz` and `/channels`.
    fn health(&self) -> SourceHealth;

    /// The account this source reads as, when the platform limits an
    /// account across all its connections (Twitch: a logged-in login joins
    /// at most 100 channels, 20 JOINs per 10 s): a fleet keeps such limits
    /// per account, whichever instances share it.
    fn account(&self) -> Option<Account> {
        None
    }

    /// In a fleet, whether one instance at a time reads all of this
    /// platform's channels (the leader): a platform whose budget is one
    /// per deployment (YouTube's daily quota) or whose deliveries come to
    /// one subscriber (Kick's webhooks).
    fn fleet_singleton(&self) -> bool {
        false
    }

    /// What this source tells the fleet in each heartbeat so another
    /// instance can take over its budget (YouTube: the quota spent today).
    fn fleet_state(&self) -> Option<serde_json::Value> {
        None
    }

    /// Another instance's [`Source::fleet_state`]: counted in this one's
    /// budget (the larger of the two counts wins).
    fn adopt_fleet_state(&self, state: &serde_json::Value) {
        let _ = state;
    }

    /// This instance is one of `instances` reading as the same
    /// [`Source::account`]: it takes that share of the account's JOIN
    /// rate (1: all of it).
    fn set_join_share(&self, instances: usize) {
        let _ = instances;
    }

    /// Runs the source until `cancel`.
    fn run(self: Arc<Self>, cancel: CancellationToken) -> BoxFuture<'static, anyhow::Result<()>>;
}

/// An account whose limits hold across connections ([`Source::account`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Account {
    /// Its name (Twitch: the login).
    pub name: String,
    /// Most channels it may be joined to, over every instance.
    pub max_channels: usize,
}

/// How many channels a source can hold.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Capacity {
    /// Most channels wanted at once.
    pub max: usize,
    /// The setting or platform rule behind `max`.
    pub why: String,
}

/// A source's view of its platform.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SourceHealth {
    /// The platform.
    pub platform: &'static str,
    /// Whether the platform answered the last time it was tried (true
    /// while nothing has been tried yet).
    pub reachable: bool,
    /// Since when it has been unreachable.
    pub unreachable_since: Option<DateTime<Utc>>,
    /// The last error talking to it.
    pub last_error: Option<String>,
    /// Open connections (IRC connections, chat streams or pollers).
    pub connections: usize,
}

/// Tracks whether a platform answers, and says so in the log: one WARN
/// line when it stops answering, one every `repeat` while it stays away,
/// one INFO line when it is back.
#[derive(Debug)]
pub struct Reachability {
    platform: &'static str,
    what: String,
    repeat: Duration,
    state: Mutex<ReachState>,
}

#[derive(Debug, Default)]
struct ReachState {
    down_since: Option<(Instant, DateTime<Utc>)>,
    last_logged: Option<Instant>,
    attempts: u64,
    last_error: Option<String>,
}

impl Reachability {
    /// Tracking for `what` (e.g. `Twitch IRC at irc.chat.twitch.tv:6697`).
    pub fn new(platform: &'static str, what: impl Into<String>, repeat: Duration) -> Self {
        Self {
            platform,
            what: what.into(),
            repeat,
            state: Mutex::new(ReachState::default()),
        }
    }

    /// An attempt to reach the platform failed with `error`.
    pub fn failed(&self, error: &str) {
        let mut s = self.state.lock().expect("reachability lock");
        s.attempts += 1;
        s.last_error = Some(error.to_owned());
        let now = Instant::now();
        match s.down_since {
            None => {
                s.down_since = Some((now, Utc::now()));
                s.last_logged = Some(now);
                metrics::gauge!("chatbus_ingestor_platform_reachable", "platform" => self.platform)
                    .set(0.0);
                tracing::warn!(
                    platform = self.platform,
                    error,
                    "{} is unreachable; retrying with backoff",
                    self.what
                );
            }
            Some((since, _)) => {
                if s.last_logged
                    .is_none_or(|l| now.duration_since(l) >= self.repeat)
                {
                    s.last_logged = Some(now);
                    tracing::warn!(
                        platform = self.platform,
                        error,
                        attempts = s.attempts,
                        down_for = %humantime::format_duration(Duration::from_secs(now.duration_since(since).as_secs())),
                        "{} is still unreachable",
                        self.what
                    );
                }
            }
        }
        metrics::counter!("chatbus_ingestor_platform_errors_total", "platform" => self.platform)
            .increment(1);
    }

    /// The platform answered.
    pub fn succeeded(&self) {
        let mut s = self.state.lock().expect("reachability lock");
        if let Some((since, _)) = s.down_since.take() {
            tracing::info!(
                platform = self.platform,
                attempts = s.attempts,
                down_for = %humantime::format_duration(Duration::from_secs(since.elapsed().as_secs())),
                "{} is reachable again",
                self.what
            );
        }
        metrics::gauge!("chatbus_ingestor_platform_reachable", "platform" => self.platform)
            .set(1.0);
        s.attempts = 0;
        s.last_logged = None;
    }

    /// Whether the last attempt succeeded (or none was made).
    pub fn is_reachable(&self) -> bool {
        self.state
            .lock()
            .expect("reachability lock")
            .down_since
            .is_none()
    }

    /// The health figures, given the open connections.
    pub fn health(&self, connections: usize) -> SourceHealth {
        let s = self.state.lock().expect("reachability lock");
        SourceHealth {
            platform: self.platform,
            reachable: s.down_since.is_none(),
            unreachable_since: s.down_since.map(|(_, at)| at),
            last_error: s.last_error.clone(),
            connections,
        }
    }
}

/// Where sources put their events: drops those the privacy list refuses,
/// encodes the rest, counts them and appends them to the outbox (the disk
/// spool) in one write per batch. Every event of every platform enters the
/// outbox here.
#[derive(Debug, Clone)]
pub struct EventSink {
    outbox: Arc<Outbox>,
    privacy: Arc<Privacy>,
}

impl EventSink {
    /// A sink appending to `outbox` what `privacy` does not refuse.
    pub fn new(outbox: Arc<Outbox>, privacy: Arc<Privacy>) -> Self {
        Self { outbox, privacy }
    }

    /// Encodes and appends `events`, in order, with one spool write. An
    /// event of an opted-out user or channel (or one a purge covers) is
    /// dropped and counted (`chatbus_ingestor_privacy_dropped_total`), never
    /// logged. An event that cannot be encoded is logged, counted and
    /// dropped (it cannot be published either).
    pub fn emit(&self, events: &[ChatEvent]) -> Appended {
        if events.is_empty() {
            return Appended::default();
        }
        // From the check until the events are in the outbox: a notice that
        // lands in between marks them for the publisher's check.
        let _gate = self.privacy.gate();
        let mut messages = Vec::with_capacity(events.len());
        let mut refused = 0;
        for event in events {
            if self.privacy.refuses(event) {
                refused += 1;
                continue;
            }
            match OutgoingMessage::from_event(event) {
                Ok(m) => messages.push(m),
                Err(e) => {
                    metrics::counter!("chatbus_ingestor_events_dropped_total", "reason" => "unencodable")
                        .increment(1);
                    tracing::error!(id = %event.id, platform = %event.platform, error = %e, "event cannot be encoded; dropped");
                }
            }
        }
        Appended {
            refused,
            ..self.append(messages)
        }
    }

    /// Appends already encoded events, in order, with one spool write.
    fn append(&self, messages: Vec<OutgoingMessage>) -> Appended {
        if messages.is_empty() {
            return Appended::default();
        }
        crate::channel_metrics::count(
            crate::channel_metrics::Counter::Received,
            messages
                .iter()
                .map(|m| (m.platform.as_str(), m.channel.as_str(), m.kind)),
        );
        let appended = self.outbox.append(messages);
        if appended.dropped > 0 {
            tracing::warn!(
                dropped = appended.dropped,
                "events dropped by a full outbox"
            );
        }
        appended
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reachability_flips_and_reports() {
        let r = Reachability::new("twitch", "Twitch IRC", Duration::from_secs(60));
        assert!(r.is_reachable());
        r.failed("connection refused");
        r.failed("connection refused");
        let h = r.health(0);
        assert!(!h.reachable);
        assert!(h.unreachable_since.is_some());
        assert_eq!(h.last_error.as_deref(), Some("connection refused"));
        r.succeeded();
        assert!(r.is_reachable());
        assert!(r.health(2).reachable);
    }
}
