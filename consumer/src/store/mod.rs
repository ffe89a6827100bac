//! Storage: where every event is persisted and read back as history.
//!
//! [`Store`] is the boundary the rest of the consumer talks to; [`sqlite`]
//! is the embedded default, [`postgres`] the store for deployments that
//! outgrow one machine, chosen by the scheme of `DATABASE_URL`
//! ([`StoreKind`]). The same contract tests run against both.
//!
//! What is the same for every backend lives in modules of its own, each
//! with a small trait for the backend's SQL: query planning (`plan`), the
//! channel-id cache (`channel_cache`), writing a batch (`batch`, with the
//! moderation rules of `moderation`), retention (`retention`) and decoding
//! the rows read back (`rows`). A backend
//! module holds its SQL and what only it does.
//!
//! # The contract every backend keeps
//!
//! * **Idempotent writes.** An event is identified by `(platform, id)`;
//!   writing it again is a no-op (it is reported as a duplicate, not stored).
//! * **Cursors in commit order.** Each stored event gets a [`Cursor`], a
//!   positive integer. Cursors only grow (there may be holes), are never
//!   reused (not even after retention deleted the newest rows), and become
//!   visible in order: once
//!   a reader sees cursor `c`, no event with a smaller cursor can appear
//!   later. (SQLite gives this for free: one writer at a time. PostgreSQL
//!   serialises its writers with a transaction-level advisory lock, because
//!   sequences alone do not.)
//!   The live feed and every WebSocket resume rely on this.
//! * **Moderation is applied to history.** A `message_delete` marks its
//!   target; `ban`/`timeout` mark the user's messages of the lookback
//!   window before it; `chat_clear` marks the channel's. Whichever arrives
//!   first, the mark ends up on the message.
//! * **Full-text search** over `text`, Unicode-aware, for any script that
//!   separates words with spaces: the indexed text and every `q` are folded
//!   in Rust ([`fold`]: compatibility forms, case, accents), so both stores
//!   find the same rows (`testdata/search-parity.tsv`). A search keeps the
//!   bounds of [`search`]: words and bytes in `q`, searches at once on
//!   connections of their own, a statement timeout.

mod batch;
mod channel_cache;
pub mod fold;
mod moderation;
mod plan;
pub mod postgres;
pub mod privacy;
mod retention;
mod rows;
pub mod search;
pub mod sqlite;
mod upgrade;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::ChatEvent;
use common::privacy::Subject;
use common::routing::TopicPattern;
use common::schema::EventKind;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use search::SearchLimits;

/// Position of a stored event: a positive integer, strictly increasing in
/// commit order (see the module docs). Below 2^53, so JavaScript numbers
/// hold it exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Cursor(i64);

impl Cursor {
    /// The largest cursor a client may send: 2^53 − 1, the largest integer
    /// a JavaScript number holds exactly. Stores never come near it.
    pub const MAX: i64 = (1 << 53) - 1;

    /// A cursor from its integer form; `None` unless it is positive.
    pub fn new(value: i64) -> Option<Self> {
        (value > 0).then_some(Self(value))
    }

    /// The integer form.
    pub fn get(self) -> i64 {
        self.0
    }

    /// The cursor right after this one. Stores may leave holes (a skipped
    /// duplicate can use up a value), so the next stored event may have a
    /// larger cursor.
    pub fn next(self) -> Self {
        Self(self.0 + 1)
    }
}

impl std::fmt::Display for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for Cursor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<i64>()
            .ok()
            .filter(|n| *n <= Self::MAX)
            .and_then(Self::new)
            .ok_or_else(|| format!("`{s}` is not a cursor (a positive integer up to 2^53 - 1)"))
    }
}

/// An event to store: the decoded event and its JSON exactly as published
/// (kept verbatim, so fields this reader does not know survive). Borrowed,
/// so a batch is written straight from the deliveries.
#[derive(Debug, Clone, Copy)]
pub struct NewEvent<'a> {
    /// The decoded, validated event.
    pub event: &'a ChatEvent,
    /// Its JSON as received.
    pub json: &'a str,
}

impl<'a> NewEvent<'a> {
    /// An event with its JSON as received.
    pub fn new(event: &'a ChatEvent, json: &'a str) -> Self {
        Self { event, json }
    }
}

/// Events with their JSON encoded by this crate, for tests and tools that
/// have no published bytes: `let owned = encode(events); write_batch(&new_events(&owned))`.
pub fn encode(events: impl IntoIterator<Item = ChatEvent>) -> Vec<(ChatEvent, String)> {
    events
        .into_iter()
        .map(|e| {
            let json = serde_json::to_string(&e).expect("a ChatEvent always serialises");
            (e, json)
        })
        .collect()
}

/// Borrows [`encode`]d events as [`NewEvent`]s.
pub fn new_events(encoded: &[(ChatEvent, String)]) -> Vec<NewEvent<'_>> {
    encoded.iter().map(|(e, j)| NewEvent::new(e, j)).collect()
}

/// What moderation did to a stored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModerationAction {
    /// The message was deleted (`message_delete`).
    Deleted,
    /// Its author was banned (`ban`).
    Banned,
    /// Its author was timed out (`timeout`).
    TimedOut,
    /// The whole chat was cleared (`chat_clear`).
    Cleared,
}

impl ModerationAction {
    /// The wire/database name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deleted => "deleted",
            Self::Banned => "banned",
            Self::TimedOut => "timed_out",
            Self::Cleared => "cleared",
        }
    }

    /// Parses the wire/database name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Deleted, Self::Banned, Self::TimedOut, Self::Cleared]
            .into_iter()
            .find(|a| a.as_str() == s)
    }
}

/// The moderation mark of a stored event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moderation {
    /// What happened.
    pub action: ModerationAction,
    /// Cursor of the moderation event that caused it.
    pub by: Cursor,
}

/// A stored event as read back. Serialises as
/// `{"cursor": 42, "moderation": null, "event": {...}}`.
#[derive(Debug, Clone, Serialize)]
pub struct StoredEvent {
    /// Its position in the store.
    pub cursor: Cursor,
    /// The moderation mark, if moderation touched it.
    pub moderation: Option<Moderation>,
    /// The event JSON as published.
    pub event: Box<RawValue>,
    /// The event's platform.
    #[serde(skip)]
    pub platform: String,
    /// The event's channel.
    #[serde(skip)]
    pub channel: String,
    /// The event's id.
    #[serde(skip)]
    pub id: String,
    /// The event's kind.
    #[serde(skip)]
    pub kind: EventKind,
    /// `chat.<platform>.<channel>`.
    #[serde(skip)]
    pub routing_key: String,
}

/// Which events a query selects. Every field narrows; the default selects
/// everything.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Routing-key patterns (AMQP topic syntax); empty = any.
    pub patterns: Vec<TopicPattern>,
    /// Only this platform.
    pub platform: Option<String>,
    /// Only this channel (login).
    pub channel: Option<String>,
    /// Only events whose author has this login.
    pub user: Option<String>,
    /// Only these kinds; empty = any.
    pub kinds: Vec<EventKind>,
    /// Full-text query over `text`: words (all must match), a trailing `*`
    /// makes a word a prefix.
    pub text: Option<String>,
}

/// Reading order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first.
    #[default]
    Desc,
}

/// A page of events.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// What to select.
    pub filter: EventFilter,
    /// Only cursors greater than this.
    pub after: Option<Cursor>,
    /// Only cursors smaller than this.
    pub before: Option<Cursor>,
    /// Reading order.
    pub order: Order,
    /// Most events returned.
    pub limit: usize,
}

/// A channel the store has seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelSummary {
    /// Platform.
    pub platform: String,
    /// Channel login.
    pub channel: String,
    /// `chat.<platform>.<channel>`.
    pub routing_key: String,
    /// Events stored for it (after retention).
    pub event_count: i64,
    /// Chat messages (`message`, `action`, `cheer`) among them.
    pub message_count: i64,
    /// Cursor of its newest event.
    pub last_cursor: Option<Cursor>,
    /// `sent_at` of its newest event.
    pub last_event_at: Option<DateTime<Utc>>,
    /// Cursor of its newest stream status event (`stream_online`,
    /// `stream_update`, `stream_offline`), if one was stored. Retention may
    /// have removed it since.
    #[serde(skip)]
    pub status_cursor: Option<Cursor>,
}

/// What a batch write did.
#[derive(Debug, Clone, Default)]
pub struct WriteOutcome {
    /// The store's head when the batch began: no other writer committed
    /// between it and this batch's events, so a reader that has seen
    /// everything through `after` may take the batch as the continuation.
    pub after: Option<Cursor>,
    /// The events newly stored, in cursor order.
    pub stored: Vec<StoredEvent>,
    /// Events that were already stored (redeliveries, republishes).
    pub duplicates: usize,
    /// Earlier events newly marked by moderation in this batch.
    pub moderated: u64,
    /// Events not stored because of an opt-out or a purge horizon
    /// ([`privacy`]).
    pub refused: usize,
}

/// What retention deletes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete events whose `sent_at` is older than this.
    pub max_age: Option<Duration>,
    /// Keep only the newest this many events of each channel.
    pub max_per_channel: Option<u64>,
}

impl RetentionPolicy {
    /// Whether the policy deletes anything at all.
    pub fn is_active(&self) -> bool {
        self.max_age.is_some() || self.max_per_channel.is_some_and(|n| n > 0)
    }
}

/// Settings every backend understands.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most connections in the read pool.
    pub max_connections: u32,
    /// How far back ban/timeout/chat clear mark messages.
    pub moderation_lookback: Duration,
    /// The bounds of a search (`q`).
    pub search: SearchLimits,
}

impl StoreOptions {
    /// [`moderation_lookback`](Self::moderation_lookback) in ms, as the
    /// stores compare it with `sent_at`.
    pub(crate) fn lookback_ms(&self) -> i64 {
        i64::try_from(self.moderation_lookback.as_millis()).unwrap_or(i64::MAX / 2)
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            moderation_lookback: Duration::from_secs(24 * 3600),
            search: SearchLimits::default(),
        }
    }
}

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `DATABASE_URL` names no backend this build has.
    #[error("unsupported database URL: {0}")]
    UnsupportedUrl(String),
    /// The database refused or failed an operation.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The schema could not be migrated.
    #[error("cannot migrate the database schema: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The database directory could not be created.
    #[error("cannot create {path}: {source}")]
    CreateDir {
        /// The directory.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The events' sequence did not move by the rows just inserted under
    /// the write lock. The transaction was rolled back. Not expected to
    /// happen; treated as transient, so the batch is retried rather than
    /// its events dead-lettered.
    #[error("{inserted} events inserted after cursor {after}, but the sequence moved by {moved}")]
    SequenceMismatch {
        /// The sequence before the insert.
        after: i64,
        /// Rows inserted.
        inserted: usize,
        /// How far the sequence moved.
        moved: i64,
    },
    /// A `q` has more words (after folding) or bytes than
    /// [`SearchLimits`] allow. `words` is `None` when the bytes alone
    /// refused it (it was not folded).
    #[error(
        "`q` is too long ({bytes} bytes{}): at most {max_words} words and {max_bytes} bytes",
        words.map(|w| format!(", {w} words")).unwrap_or_default()
    )]
    SearchTooLong {
        /// Its words, once folded.
        words: Option<usize>,
        /// Its bytes.
        bytes: usize,
        /// [`SearchLimits::max_words`].
        max_words: usize,
        /// [`SearchLimits::max_bytes`].
        max_bytes: usize,
    },
    /// Every search slot stayed taken for the whole
    /// [`SearchLimits::queue_wait`].
    #[error("too many searches at once; try again shortly")]
    SearchBusy,
    /// The database cancelled a search at [`SearchLimits::timeout`].
    #[error("the search ran longer than {0:?} and was cancelled; narrow it down")]
    SearchTimeout(Duration),
    /// A stored row does not decode (corruption or a newer writer).
    #[error("corrupt row {cursor}: {reason}")]
    Corrupt {
        /// Its cursor.
        cursor: i64,
        /// What is wrong.
        reason: String,
    },
}

impl StoreError {
    /// Whether retrying the same operation later may succeed (the database
    /// is busy, locked, unreachable or out of space), as opposed to the
    /// data itself being refused.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Database(e) => sqlite::is_transient(e) || postgres::is_transient(e),
            Self::UnsupportedUrl(_)
            | Self::Migrate(_)
            | Self::Corrupt { .. }
            | Self::SearchTooLong { .. }
            | Self::SearchBusy
            | Self::SearchTimeout(_) => false,
            Self::CreateDir { .. } | Self::SequenceMismatch { .. } => true,
        }
    }
}

/// The storage boundary. See the module docs for the contract.
#[async_trait::async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// Stores `events` in one transaction, in order; already stored ones
    /// are skipped. Returns the newly stored events with their cursors.
    ///
    /// # Errors
    /// [`StoreError`]; nothing of the batch is stored then.
    async fn write_batch(&self, events: &[NewEvent<'_>]) -> Result<WriteOutcome, StoreError>;

    /// Events matching `query`, in its order.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError>;

    /// One event by platform and id.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn get(&self, platform: &str, id: &str) -> Result<Option<StoredEvent>, StoreError>;

    /// The newest cursor, if anything was ever stored.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn head(&self) -> Result<Option<Cursor>, StoreError>;

    /// Every channel with its counts, busiest first.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn channels(&self) -> Result<Vec<ChannelSummary>, StoreError>;

    /// Deletes what `policy` says to; returns how many events went.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails (what was deleted before
    /// stays deleted).
    async fn apply_retention(&self, policy: &RetentionPolicy) -> Result<u64, StoreError>;

    /// Opts `subject` (a user or channel) out (`true`) or back in: its
    /// events are refused from the next batch on. Audited.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn set_opted_out(
        &self,
        subject: &Subject,
        opted_out: bool,
        requested_by: &str,
    ) -> Result<(), StoreError>;

    /// The opted-out users and channels.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn opt_outs(&self) -> Result<Vec<privacy::OptOut>, StoreError>;

    /// Deletes what `subject` covers, redacts what quotes it, refuses its
    /// late arrivals, and leaves no bytes of it on disk ([`privacy`]).
    /// Audited.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails; running it again finishes
    /// the job.
    async fn purge(
        &self,
        subject: &Subject,
        requested_by: &str,
    ) -> Result<privacy::PurgeReport, StoreError>;

    /// The newest `limit` audit rows, newest first.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn audit_log(&self, limit: i64) -> Result<Vec<privacy::AuditEntry>, StoreError>;

    /// Stores a self-service opt-out code for `login` of `platform`, valid
    /// until `expires_at` (ms).
    ///
    /// # Errors
    /// [`StoreError`] when the database fails (or the code exists).
    async fn issue_code(
        &self,
        code: &str,
        platform: &str,
        login: &str,
        expires_at: i64,
    ) -> Result<(), StoreError>;

    /// Uses up `code` if it is valid at `now` (ms) for `login` of
    /// `platform`: `true` once, `false` for a wrong, expired, used or
    /// someone else's code (which stays usable by its owner).
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn redeem_code(
        &self,
        code: &str,
        platform: &str,
        login: &str,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Records that the privacy notice `id` is (being) applied to this
    /// store; `false` when it already was recorded (by this instance or
    /// another sharing the store): the caller leaves it alone.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn record_notice(&self, id: &str) -> Result<bool, StoreError>;

    /// Forgets [`Store::record_notice`] of `id` (applying it failed: it is
    /// tried again later).
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn forget_notice(&self, id: &str) -> Result<(), StoreError>;

    /// Whether the privacy notice `id` was applied to this store.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn notice_applied(&self, id: &str) -> Result<bool, StoreError>;

    /// Closes the connections.
    async fn close(&self);
}

/// The backends, by URL scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreKind {
    /// `sqlite://path` or `sqlite:path`.
    Sqlite,
    /// `postgres://…` or `postgresql://…`.
    Postgres,
}

impl StoreKind {
    /// The backend `url` asks for.
    ///
    /// # Errors
    /// [`StoreError::UnsupportedUrl`] for any other scheme.
    pub fn from_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres)
        } else {
            Err(StoreError::UnsupportedUrl(
                "expected sqlite://<path> (e.g. sqlite://chatbus.sqlite) or postgres://user@host/db"
                    .into(),
            ))
        }
    }
}

/// Opens (creating and migrating if needed) the store `url` names.
///
/// # Errors
/// [`StoreError`] when the URL is unsupported or the database cannot be
/// opened or migrated.
pub async fn open(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>, StoreError> {
    match StoreKind::from_url(url)? {
        StoreKind::Sqlite => Ok(Arc::new(sqlite::SqliteStore::open(url, options).await?)),
        StoreKind::Postgres => Ok(Arc::new(postgres::PostgresStore::open(url, options).await?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_positive_and_parse() {
        assert_eq!("42".parse::<Cursor>().unwrap().get(), 42);
        assert!("0".parse::<Cursor>().is_err());
        assert!("-1".parse::<Cursor>().is_err());
        assert!("x".parse::<Cursor>().is_err());
        assert_eq!(
            "9007199254740991".parse::<Cursor>().unwrap().get(),
            Cursor::MAX
        );
        assert!("9007199254740992".parse::<Cursor>().is_err());
        assert!("9223372036854775807".parse::<Cursor>().is_err());
        assert_eq!(serde_json::to_string(&Cursor(7)).unwrap(), "7");
    }

    #[test]
    fn urls_choose_the_backend() {
        assert_eq!(
            StoreKind::from_url("sqlite://a.sqlite").unwrap(),
            StoreKind::Sqlite
        );
        assert_eq!(
            StoreKind::from_url("sqlite:///data/db/chatbus.sqlite").unwrap(),
            StoreKind::Sqlite
        );
        assert_eq!(
            StoreKind::from_url("postgres://u@h/db").unwrap(),
            StoreKind::Postgres
        );
        assert_eq!(
            StoreKind::from_url("postgresql://h/db").unwrap(),
            StoreKind::Postgres
        );
        assert!(StoreKind::from_url("mysql://x").is_err());
    }

    #[test]
    fn moderation_actions_round_trip() {
        for a in [
            ModerationAction::Deleted,
            ModerationAction::Banned,
            ModerationAction::TimedOut,
            ModerationAction::Cleared,
        ] {
            assert_eq!(ModerationAction::parse(a.as_str()), Some(a));
            assert_eq!(
                serde_json::to_value(a).unwrap(),
                serde_json::Value::String(a.as_str().into())
            );
        }
    }
}
