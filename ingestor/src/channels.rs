//! The channel manager of one source: which channels we want (desired,
//! capped per platform) and where each one really is (queued, JOIN sent,
//! joined, disconnected, unreachable, waiting), with
//!
//! * join confirmation, where the platform asks for it
//!   ([`ChannelManager::retrying_unconfirmed_joins`]): a join not confirmed
//!   within `join_timeout` is asked for again (a "ghost JOIN");
//! * re-join after a reconnect (the source re-joins at once; the watchdog
//!   catches any it missed);
//! * gap events: when a connection drops, each of its channels is marked
//!   disconnected; when the channel is joined again a `gap` event covering
//!   the outage is produced;
//! * per-channel figures for `GET /channels`.
//!
//! The manager is platform-neutral: the source drives the platform through
//! [`JoinClient`] and reports back through the `on_*` methods.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::schema::{ChatEvent, EventBody, EventKind, GapDetails};
use serde::Serialize;

/// Channels remembered across restarts, one file per platform in
/// `SPOOL_DIR` (named by the platform's source: `channels-<platform>.json`,
/// or a name it kept from an older release).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PersistedChannels {
    /// By channel login.
    pub channels: BTreeMap<String, PersistedChannel>,
}

/// One remembered channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PersistedChannel {
    /// Last moment its chat was surely read.
    pub last_seen: Option<DateTime<Utc>>,
    /// What the user asked for, when it differs from the channel word (a
    /// YouTube video id keeps the channel following that one video).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_as: Option<String>,
}

impl PersistedChannels {
    /// The file a platform's channels are remembered in, unless its source
    /// names another (its `state_file`).
    pub fn file_name(platform: &str) -> String {
        format!("channels-{platform}.json")
    }

    /// Reads the file `name` in `dir`; missing or unreadable means nothing
    /// remembered (logged).
    pub fn load(dir: &std::path::Path, name: &str) -> Self {
        let path = dir.join(name);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable channel state file");
                Self::default()
            }),
            Err(_) => Self::default(),
        }
    }

    /// Writes the file `name` in `dir` atomically (mode 0600).
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(
        &self,
        dir: &std::path::Path,
        name: &str,
    ) -> Result<(), common::token_store::TokenStoreError> {
        let bytes = serde_json::to_vec_pretty(self).expect("channel state serialises");
        common::token_store::write_atomic(&dir.join(name), &bytes)
    }

    /// The same channels, each seen or never seen alike, ignoring when
    /// exactly each was last seen: what makes a save urgent.
    pub fn same_shape(&self, other: &Self) -> bool {
        self.channels.len() == other.channels.len()
            && self
                .channels
                .iter()
                .zip(&other.channels)
                .all(|((a, x), (b, y))| {
                    a == b
                        && x.last_seen.is_some() == y.last_seen.is_some()
                        && x.requested_as == y.requested_as
                })
    }
}

/// What the manager needs from its source.
pub trait JoinClient: Send + Sync + 'static {
    /// Ask to be joined to `channel` (asks again if not yet confirmed).
    fn join(&self, channel: &str);
    /// Ask to leave `channel`.
    fn part(&self, channel: &str);
}

/// Why a channel cannot be joined.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// The platform's channel cap is reached.
    #[error("{platform} already has {max} channels, its limit ({why}); part one first")]
    Limit {
        /// The platform.
        platform: &'static str,
        /// The cap.
        max: usize,
        /// Which setting or rule sets it.
        why: String,
    },
}

/// Where a channel is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum JoinState {
    /// Wanted; the JOIN waits for the rate limiter.
    Queued {
        /// Since when.
        since: DateTime<Utc>,
    },
    /// JOIN written; waiting for the server's echo.
    Joining {
        /// When the JOIN went out.
        sent_at: DateTime<Utc>,
    },
    /// The server confirmed the JOIN.
    Joined {
        /// When it was confirmed.
        since: DateTime<Utc>,
    },
    /// Its connection dropped; waiting to be joined again.
    Disconnected {
        /// When the connection dropped.
        since: DateTime<Utc>,
        /// Why.
        reason: String,
    },
    /// The platform cannot be reached; retrying with backoff.
    Unreachable {
        /// Since when.
        since: DateTime<Utc>,
        /// The last error.
        error: String,
    },
    /// Nothing to read yet, or the platform asked us to wait (not live,
    /// chat ended, quota exhausted ...): checked again at `next_check`.
    Waiting {
        /// Since when.
        since: DateTime<Utc>,
        /// Why, as a stable word (`offline`, `chat_ended`,
        /// `quota_exceeded`, `chat_disabled`, `not_found`, `forbidden`,
        /// ...; YouTube's are listed in docs/ingestor.md).
        reason: String,
        /// Details for a human.
        detail: Option<String>,
        /// When it is tried again.
        next_check: Option<DateTime<Utc>>,
    },
    /// Leaving (PART sent).
    Parting,
}

/// What [`ChannelManager::rename`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renamed {
    /// The channel now goes by its new name.
    Moved,
    /// The new name was already wanted: the old entry is gone and the
    /// existing one stays as it was.
    Merged,
    /// The old name is not wanted (any more): nothing changed.
    Gone,
}

/// One channel's state and figures, as `GET /channels` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelInfo {
    /// The platform.
    pub platform: &'static str,
    /// The channel word (Twitch login, YouTube channel id ...).
    pub channel: String,
    /// Where it is.
    #[serde(flatten)]
    pub state: JoinState,
    /// When it was last confirmed joined.
    pub joined_at: Option<DateTime<Utc>>,
    /// When its last event arrived.
    pub last_message_at: Option<DateTime<Utc>>,
    /// Events received in total.
    pub events: u64,
    /// Events received by kind.
    pub counts: BTreeMap<EventKind, u64>,
    /// JOINs sent (more than one means retries or reconnects).
    pub join_attempts: u32,
    /// Gaps published.
    pub gaps: u32,
    /// The platform's channel id, once seen.
    pub channel_id: Option<String>,
    /// The connection it is on (IRC connection, chat stream).
    pub connection: Option<u64>,
    /// What the user asked for, when it differs from the channel word
    /// (a YouTube handle or video id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_as: Option<String>,
    /// Source-specific details (a YouTube channel's live video and chat),
    /// as `source_detail` (a `waiting` state has its own `detail`).
    #[serde(rename = "source_detail", skip_serializing_if = "Option::is_none")]
    pub detail: Option<serde_json::Value>,
    #[serde(skip)]
    pending_gap: Option<(DateTime<Utc>, String)>,
    #[serde(skip)]
    last_retry: Option<DateTime<Utc>>,
}

impl ChannelInfo {
    fn new(platform: &'static str, channel: &str, now: DateTime<Utc>) -> Self {
        Self {
            platform,
            channel: channel.to_owned(),
            state: JoinState::Queued { since: now },
            joined_at: None,
            last_message_at: None,
            events: 0,
            counts: BTreeMap::new(),
            join_attempts: 0,
            gaps: 0,
            channel_id: None,
            connection: None,
            requested_as: None,
            detail: None,
            pending_gap: None,
            last_retry: None,
        }
    }
}

/// The manager. Share it with `Arc`.
pub struct ChannelManager {
    platform: &'static str,
    client: Box<dyn JoinClient>,
    join_timeout: Duration,
    retry_joins: bool,
    limit: (usize, String),
    channels: Mutex<BTreeMap<String, ChannelInfo>>,
}

impl std::fmt::Debug for ChannelManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelManager")
            .field("platform", &self.platform)
            .field("join_timeout", &self.join_timeout)
            .field("limit", &self.limit.0)
            .finish()
    }
}

impl ChannelManager {
    /// A manager of `platform`'s channels driving `client`. Joins not
    /// confirmed within `join_timeout` are asked for again only with
    /// [`ChannelManager::retrying_unconfirmed_joins`]; no limit on the
    /// number of channels until [`ChannelManager::with_limit`].
    pub fn new(
        platform: &'static str,
        client: Box<dyn JoinClient>,
        join_timeout: Duration,
    ) -> Self {
        Self {
            platform,
            client,
            join_timeout,
            retry_joins: false,
            limit: (usize::MAX, String::new()),
            channels: Mutex::new(BTreeMap::new()),
        }
    }

    /// Asks again, after `join_timeout`, for joins and re-joins the
    /// platform has not confirmed: for a platform that can lose a join
    /// without an error (Twitch's "ghost JOIN").
    pub fn retrying_unconfirmed_joins(mut self) -> Self {
        self.retry_joins = true;
        self
    }

    /// At most `max` wanted channels; `why` names the setting or rule.
    pub fn with_limit(mut self, max: usize, why: impl Into<String>) -> Self {
        self.limit = (max, why.into());
        self
    }

    /// The platform.
    pub fn platform(&self) -> &'static str {
        self.platform
    }

    /// The channel cap.
    pub fn limit(&self) -> usize {
        self.limit.0
    }

    /// The setting or rule behind the cap (empty when there is none).
    pub fn limit_reason(&self) -> &str {
        &self.limit.1
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ChannelInfo>> {
        self.channels.lock().expect("channel manager lock")
    }

    /// Wants `channel` joined. Returns false if it was already wanted.
    ///
    /// # Errors
    /// [`JoinError::Limit`] when the platform's channel cap is reached.
    pub fn join(&self, channel: &str) -> Result<bool, JoinError> {
        let now = Utc::now();
        let added = {
            let mut channels = self.lock();
            let wanted = channels
                .values()
                .filter(|i| !matches!(i.state, JoinState::Parting))
                .count();
            let parting = channels
                .get(channel)
                .is_some_and(|i| matches!(i.state, JoinState::Parting));
            if (!channels.contains_key(channel) || parting) && wanted >= self.limit.0 {
                return Err(JoinError::Limit {
                    platform: self.platform,
                    max: self.limit.0,
                    why: self.limit.1.clone(),
                });
            }
            match channels.get_mut(channel) {
                Some(info) if !matches!(info.state, JoinState::Parting) => false,
                Some(info) => {
                    info.state = JoinState::Queued { since: now };
                    true
                }
                None => {
                    channels.insert(
                        channel.to_owned(),
                        ChannelInfo::new(self.platform, channel, now),
                    );
                    true
                }
            }
        };
        if added {
            tracing::info!(platform = self.platform, channel, "joining");
            self.client.join(channel);
            self.record_gauges();
        }
        Ok(added)
    }

    /// Records what the user asked for when it differs from the channel
    /// word (a YouTube handle, a video id).
    pub fn set_requested_as(&self, channel: &str, requested: &str) {
        if let Some(info) = self.lock().get_mut(channel)
            && requested != channel
        {
            info.requested_as = Some(requested.to_owned());
        }
    }

    /// Gives a wanted channel its real channel word once the source has
    /// resolved what the user asked for (a YouTube handle or video id to
    /// the channel id): its state, figures and pending gap move to `to`,
    /// and `requested_as` keeps `from`. If `to` is already wanted, `from`
    /// is dropped instead ([`Renamed::Merged`]).
    pub fn rename(&self, from: &str, to: &str) -> Renamed {
        if from == to {
            return Renamed::Moved;
        }
        let outcome = {
            let mut channels = self.lock();
            match channels.get(from) {
                None => Renamed::Gone,
                Some(info) if matches!(info.state, JoinState::Parting) => Renamed::Gone,
                Some(_) if channels.contains_key(to) => {
                    channels.remove(from);
                    Renamed::Merged
                }
                Some(_) => {
                    let mut info = channels.remove(from).expect("present");
                    info.channel = to.to_owned();
                    if info.requested_as.is_none() {
                        info.requested_as = Some(from.to_owned());
                    }
                    channels.insert(to.to_owned(), info);
                    Renamed::Moved
                }
            }
        };
        match outcome {
            Renamed::Moved => {
                tracing::info!(platform = self.platform, from, to, "channel resolved");
            }
            Renamed::Merged => {
                tracing::info!(
                    platform = self.platform,
                    from,
                    to,
                    "channel resolved to one already wanted; the duplicate is dropped"
                );
            }
            Renamed::Gone => {}
        }
        self.record_gauges();
        outcome
    }

    /// A channel's current state, if it is wanted or parting.
    pub fn state(&self, channel: &str) -> Option<JoinState> {
        self.lock().get(channel).map(|i| i.state.clone())
    }

    /// What the user asked for, if it differs from the channel word.
    pub fn requested_as(&self, channel: &str) -> Option<String> {
        self.lock()
            .get(channel)
            .and_then(|i| i.requested_as.clone())
    }

    /// Stops wanting `channel`. Returns false if it was not wanted.
    pub fn part(&self, channel: &str) -> bool {
        let parted = {
            let mut channels = self.lock();
            match channels.get_mut(channel) {
                Some(info) if !matches!(info.state, JoinState::Parting) => {
                    info.state = JoinState::Parting;
                    info.pending_gap = None;
                    true
                }
                _ => false,
            }
        };
        if parted {
            tracing::info!(platform = self.platform, channel, "parting");
            self.client.part(channel);
        }
        parted
    }

    /// Sets a channel's state (sources whose states are not JOIN/PART:
    /// waiting for a broadcast, reading a stream ...). A parting channel
    /// keeps its state.
    pub fn set_state(&self, channel: &str, state: JoinState) {
        let mut channels = self.lock();
        if let Some(info) = channels.get_mut(channel)
            && !matches!(info.state, JoinState::Parting)
        {
            info.state = state;
        }
        drop(channels);
        self.record_gauges();
    }

    /// Sets a channel's source-specific details.
    pub fn set_detail(&self, channel: &str, detail: Option<serde_json::Value>) {
        if let Some(info) = self.lock().get_mut(channel) {
            info.detail = detail;
        }
    }

    /// The connection for `channels` could not be made: they are marked
    /// unreachable (until their JOIN goes out on a new connection).
    pub fn on_unreachable(&self, channels: &[String], error: &str) {
        let now = Utc::now();
        let mut all = self.lock();
        for channel in channels {
            if let Some(info) = all.get_mut(channel) {
                match &mut info.state {
                    JoinState::Parting => {}
                    JoinState::Unreachable { error: e, .. } => error.clone_into(e),
                    state => {
                        *state = JoinState::Unreachable {
                            since: now,
                            error: error.to_owned(),
                        };
                    }
                }
            }
        }
    }

    /// The channel is being read again after an outage that started at
    /// `started_at` (or, if `None`, its pending outage): the gap event to
    /// publish, if there was an outage.
    pub fn on_resumed(
        &self,
        channel: &str,
        at: DateTime<Utc>,
        outage: Option<(DateTime<Utc>, String)>,
    ) -> Option<ChatEvent> {
        let gap = {
            let mut channels = self.lock();
            let info = channels.get_mut(channel)?;
            if let Some(outage) = outage
                && info.pending_gap.is_none()
            {
                info.pending_gap = Some(outage);
            }
            Self::take_gap(self.platform, info, channel, at)
        };
        self.log_gap(channel, gap.as_ref());
        gap
    }

    /// Marks `channel` as possibly missing events from `since` for
    /// `reason`, to be published as a gap when it is read again.
    pub fn mark_outage(&self, channel: &str, since: DateTime<Utc>, reason: &str) {
        if let Some(info) = self.lock().get_mut(channel)
            && info.pending_gap.is_none()
            && !matches!(info.state, JoinState::Parting)
        {
            info.pending_gap = Some((since, reason.to_owned()));
        }
    }

    fn take_gap(
        platform: &'static str,
        info: &mut ChannelInfo,
        channel: &str,
        at: DateTime<Utc>,
    ) -> Option<ChatEvent> {
        let (started_at, reason) = info.pending_gap.take()?;
        info.gaps += 1;
        let mut event = ChatEvent::new(
            uuid::Uuid::now_v7().to_string(),
            platform,
            channel,
            at,
            at,
            EventBody::Gap(GapDetails {
                started_at: started_at.min(at),
                ended_at: at,
                reason,
            }),
        );
        event.channel_id = info.channel_id.clone();
        Some(event)
    }

    fn log_gap(&self, channel: &str, gap: Option<&ChatEvent>) {
        if let Some(g) = gap
            && let EventBody::Gap(d) = &g.body
        {
            tracing::warn!(platform = self.platform, channel, from = %d.started_at, to = %d.ended_at, reason = %d.reason, "resumed after an outage; publishing a gap event");
        }
    }

    /// The transport wrote a JOIN for `channel` on connection `conn`.
    pub fn on_join_sent(&self, conn: u64, channel: &str, at: DateTime<Utc>) {
        let mut channels = self.lock();
        if let Some(info) = channels.get_mut(channel) {
            info.join_attempts += 1;
            // A JOIN on another connection while joined on the old one means
            // the old one is gone, even if its `Closed` has not arrived yet.
            if info.connection.is_some_and(|old| old != conn)
                && matches!(info.state, JoinState::Joined { .. })
                && info.pending_gap.is_none()
            {
                info.pending_gap = Some((at, "disconnect".to_owned()));
                info.state = JoinState::Disconnected {
                    since: at,
                    reason: "disconnect".to_owned(),
                };
            }
            info.connection = Some(conn);
            if !matches!(info.state, JoinState::Parting | JoinState::Joined { .. }) {
                info.state = JoinState::Joining { sent_at: at };
            }
        }
    }

    /// The server echoed our JOIN of `channel`. Returns the gap event to
    /// publish if the channel had been disconnected.
    pub fn on_joined(&self, channel: &str, at: DateTime<Utc>) -> Option<ChatEvent> {
        let gap = {
            let mut channels = self.lock();
            let info = channels.get_mut(channel)?;
            if matches!(info.state, JoinState::Parting) {
                return None;
            }
            info.state = JoinState::Joined { since: at };
            info.joined_at = Some(at);
            Self::take_gap(self.platform, info, channel, at)
        };
        self.record_gauges();
        self.log_gap(channel, gap.as_ref());
        gap
    }

    /// The server confirmed our PART of `channel`.
    pub fn on_parted(&self, channel: &str) {
        let mut channels = self.lock();
        if channels
            .get(channel)
            .is_some_and(|i| matches!(i.state, JoinState::Parting))
        {
            channels.remove(channel);
            crate::channel_metrics::forget(self.platform, channel);
        }
        drop(channels);
        self.record_gauges();
    }

    /// Connection `conn` closed at `at`; `channels` were on it.
    pub fn on_connection_closed(
        &self,
        conn: u64,
        at: DateTime<Utc>,
        reason: &str,
        channels: &[String],
    ) {
        let mut all = self.lock();
        for channel in channels {
            let Some(info) = all.get_mut(channel) else {
                continue;
            };
            if matches!(info.state, JoinState::Parting) {
                continue;
            }
            if info.connection.is_some_and(|c| c != conn) {
                // Already moved to a new connection: only make a pending gap
                // start at the real moment of the drop.
                if let Some((start, _)) = info.pending_gap.as_mut()
                    && at < *start
                {
                    *start = at;
                }
                continue;
            }
            // Keep the earliest start if it was already disconnected.
            if info.pending_gap.is_none() {
                info.pending_gap = Some((at, reason.to_owned()));
            }
            info.state = JoinState::Disconnected {
                since: at,
                reason: reason.to_owned(),
            };
            info.connection = None;
        }
        drop(all);
        self.record_gauges();
    }

    /// Counts an event of `channel`.
    pub fn on_event(&self, event: &ChatEvent) {
        self.on_events(std::slice::from_ref(event));
    }

    /// Keeps only the events of channels this manager has (wanted,
    /// joining, joined or parting), counts them (one lock for the batch),
    /// and returns how many it dropped: a platform may send lines for
    /// channels nobody asked for, which must not be published nor grow a
    /// series per channel (`chatbus_ingestor_events_dropped_total{reason="not_joined"}`).
    pub fn retain_wanted(&self, events: &mut Vec<ChatEvent>) -> usize {
        let before = events.len();
        {
            let channels = self.lock();
            events.retain(|e| channels.contains_key(&e.channel));
        }
        let dropped = before - events.len();
        if dropped > 0 {
            metrics::counter!("chatbus_ingestor_events_dropped_total", "reason" => "not_joined")
                .increment(dropped as u64);
        }
        self.on_events(events);
        dropped
    }

    /// Counts a batch of events (one lock for the batch).
    pub fn on_events(&self, events: &[ChatEvent]) {
        let mut channels = self.lock();
        for event in events {
            if let Some(info) = channels.get_mut(&event.channel) {
                info.events += 1;
                *info.counts.entry(event.kind()).or_default() += 1;
                info.last_message_at = Some(event.received_at);
                if info.channel_id.is_none() {
                    info.channel_id.clone_from(&event.channel_id);
                }
            }
        }
    }

    /// Re-sends JOINs that were not confirmed in time and re-joins channels
    /// still disconnected after `join_timeout`. Returns the channels retried.
    pub fn retry_unconfirmed(&self, now: DateTime<Utc>) -> Vec<String> {
        let timeout =
            chrono::Duration::from_std(self.join_timeout).unwrap_or(chrono::Duration::MAX);
        let mut retry = Vec::new();
        {
            let mut channels = self.lock();
            for info in channels.values_mut() {
                let waited_since = match &info.state {
                    JoinState::Joining { sent_at } => *sent_at,
                    JoinState::Disconnected { since, .. } => *since,
                    _ => continue,
                };
                if !self.retry_joins {
                    continue;
                }
                let since = info
                    .last_retry
                    .map_or(waited_since, |r| r.max(waited_since));
                if now - since >= timeout {
                    info.last_retry = Some(now);
                    retry.push(info.channel.clone());
                }
            }
        }
        for channel in &retry {
            tracing::warn!(platform = self.platform, %channel, timeout = ?self.join_timeout, "join not confirmed in time; asking again");
            metrics::counter!("chatbus_ingestor_join_retries_total").increment(1);
            self.client.join(channel);
        }
        retry
    }

    /// What to remember across a restart: every wanted channel and the last
    /// moment we are sure we saw its chat (its last event, or when it was
    /// joined; `None` if it never was).
    pub fn persisted(&self) -> PersistedChannels {
        let channels = self.lock();
        PersistedChannels {
            channels: channels
                .values()
                .filter(|i| !matches!(i.state, JoinState::Parting))
                .map(|i| {
                    let seen = match (&i.state, i.last_message_at, i.joined_at) {
                        // Not receiving now: the outage started before.
                        (JoinState::Disconnected { since, .. }, _, _) => Some(*since),
                        (_, last, joined) => last.max(joined),
                    };
                    (
                        i.channel.clone(),
                        PersistedChannel {
                            last_seen: seen,
                            requested_as: i.requested_as.clone(),
                        },
                    )
                })
                .collect(),
        }
    }

    /// After a restart: joins every channel remembered, and marks those that
    /// were being read for a gap (`reason = ingestor_restart`) from when we
    /// last saw them to when they are joined again.
    pub fn restore(&self, persisted: &PersistedChannels) {
        for (channel, state) in &persisted.channels {
            if let Err(e) = self.join(channel) {
                tracing::warn!(platform = self.platform, %channel, error = %e, "a channel remembered from the last run is not joined");
                continue;
            }
            // Sources start after the restore, so they see it when they
            // handle the join.
            if let Some(requested) = &state.requested_as {
                self.set_requested_as(channel, requested);
            }
            if let Some(last_seen) = state.last_seen
                && let Some(info) = self.lock().get_mut(channel)
                && info.pending_gap.is_none()
            {
                info.pending_gap = Some((last_seen, "ingestor_restart".to_owned()));
            }
        }
    }

    /// Every channel's state, by name.
    pub fn snapshot(&self) -> Vec<ChannelInfo> {
        self.lock().values().cloned().collect()
    }

    /// How many channels are wanted and how many are joined.
    pub fn counts(&self) -> (usize, usize) {
        let channels = self.lock();
        let wanted = channels
            .values()
            .filter(|i| !matches!(i.state, JoinState::Parting))
            .count();
        let joined = channels
            .values()
            .filter(|i| matches!(i.state, JoinState::Joined { .. }))
            .count();
        (wanted, joined)
    }

    fn record_gauges(&self) {
        let (wanted, joined) = self.counts();
        metrics::gauge!("chatbus_ingestor_channels_wanted", "platform" => self.platform)
            .set(wanted as f64);
        metrics::gauge!("chatbus_ingestor_channels_joined", "platform" => self.platform)
            .set(joined as f64);
    }

    /// Runs the JOIN watchdog until cancelled.
    pub async fn watchdog(&self, cancel: tokio_util::sync::CancellationToken) {
        let period =
            (self.join_timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => { self.retry_unconfirmed(Utc::now()); }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<String>>);

    impl JoinClient for Arc<Recorder> {
        fn join(&self, channel: &str) {
            self.0.lock().unwrap().push(format!("JOIN {channel}"));
        }
        fn part(&self, channel: &str) {
            self.0.lock().unwrap().push(format!("PART {channel}"));
        }
    }

    fn manager() -> (ChannelManager, Arc<Recorder>) {
        let rec = Arc::new(Recorder::default());
        (
            ChannelManager::new("demo", Box::new(rec.clone()), Duration::from_secs(10))
                .retrying_unconfirmed_joins(),
            rec,
        )
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn join_flow_and_figures() {
        let (m, rec) = manager();
        assert!(m.join("a").unwrap());
        assert!(!m.join("a").unwrap(), "joining twice is a no-op");
        m.on_join_sent(1, "a", t(0));
        assert!(matches!(m.snapshot()[0].state, JoinState::Joining { .. }));
        assert!(m.on_joined("a", t(1)).is_none(), "first join is no gap");
        assert_eq!(m.counts(), (1, 1));
        assert_eq!(rec.0.lock().unwrap().as_slice(), ["JOIN a"]);
        let info = &m.snapshot()[0];
        assert_eq!((info.join_attempts, info.joined_at), (1, Some(t(1))));
    }

    #[test]
    fn unconfirmed_joins_are_retried_after_the_timeout_only() {
        let (m, rec) = manager();
        m.join("ghost").unwrap();
        m.on_join_sent(1, "ghost", t(0));
        assert!(m.retry_unconfirmed(t(5)).is_empty());
        assert_eq!(m.retry_unconfirmed(t(10)), ["ghost"]);
        assert!(
            m.retry_unconfirmed(t(12)).is_empty(),
            "not again before another timeout"
        );
        assert_eq!(m.retry_unconfirmed(t(20)), ["ghost"]);
        m.on_joined("ghost", t(21));
        assert!(m.retry_unconfirmed(t(60)).is_empty());
        assert_eq!(rec.0.lock().unwrap().len(), 3);
    }

    #[test]
    fn a_dropped_connection_yields_one_gap_per_channel_when_rejoined() {
        let (m, _) = manager();
        for c in ["a", "b", "other"] {
            m.join(c).unwrap();
        }
        m.on_join_sent(1, "a", t(0));
        m.on_join_sent(1, "b", t(0));
        m.on_join_sent(2, "other", t(0));
        for c in ["a", "b", "other"] {
            m.on_joined(c, t(1));
        }
        m.on_connection_closed(1, t(100), "disconnect", &["a".into(), "b".into()]);
        assert_eq!(m.counts(), (3, 1));
        m.on_join_sent(3, "a", t(101));
        let gap = m.on_joined("a", t(102)).expect("gap for a");
        match &gap.body {
            EventBody::Gap(d) => {
                assert_eq!(
                    (d.started_at, d.ended_at, d.reason.as_str()),
                    (t(100), t(102), "disconnect")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(gap.channel, "a");
        gap.validate().unwrap();
        assert!(m.on_joined("a", t(103)).is_none(), "one gap per outage");
        assert!(
            m.on_joined("other", t(104)).is_none(),
            "channels on other connections had no gap"
        );
        assert!(m.on_joined("b", t(105)).is_some());
    }

    #[test]
    fn a_rejoin_seen_before_the_close_still_yields_a_gap_from_the_close() {
        let (m, _) = manager();
        m.join("a").unwrap();
        m.on_join_sent(1, "a", t(0));
        m.on_joined("a", t(1));
        // twitch-irc re-joined on connection 2 before connection 1 reported.
        m.on_join_sent(2, "a", t(50));
        m.on_connection_closed(1, t(45), "disconnect", &["a".into()]);
        let gap = m.on_joined("a", t(51)).expect("gap");
        match gap.body {
            EventBody::Gap(d) => assert_eq!((d.started_at, d.ended_at), (t(45), t(51))),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_restart_remembers_channels_and_publishes_a_restart_gap() {
        let (m, _) = manager();
        m.join("a").unwrap();
        m.join("never_joined").unwrap();
        m.on_join_sent(1, "a", t(0));
        m.on_joined("a", t(1));
        let mut e = ChatEvent::new(
            "x",
            "demo",
            "a",
            t(5),
            t(5),
            EventBody::Message(Default::default()),
        );
        e.channel_id = Some("42".into());
        m.on_event(&e);
        let saved = m.persisted();
        assert_eq!(saved.channels["a"].last_seen, Some(t(5)));
        assert_eq!(saved.channels["never_joined"].last_seen, None);
        let dir = tempfile::tempdir().unwrap();
        saved.save(dir.path(), "channels-demo.json").unwrap();

        let (m2, rec) = manager();
        m2.restore(&PersistedChannels::load(dir.path(), "channels-demo.json"));
        assert_eq!(rec.0.lock().unwrap().len(), 2, "both joined again");
        let gap = m2.on_joined("a", t(100)).expect("a restart gap");
        match &gap.body {
            EventBody::Gap(d) => assert_eq!(
                (d.started_at, d.ended_at, d.reason.as_str()),
                (t(5), t(100), "ingestor_restart")
            ),
            other => panic!("{other:?}"),
        }
        assert!(m2.on_joined("never_joined", t(100)).is_none());
    }

    #[test]
    fn parted_channels_do_not_produce_gaps() {
        let (m, rec) = manager();
        m.join("a").unwrap();
        m.on_join_sent(1, "a", t(0));
        m.on_joined("a", t(1));
        m.on_connection_closed(1, t(10), "disconnect", &["a".into()]);
        assert!(m.part("a"));
        assert!(m.on_joined("a", t(11)).is_none());
        m.on_parted("a");
        assert!(m.snapshot().is_empty());
        assert_eq!(rec.0.lock().unwrap().last().unwrap(), "PART a");
    }

    #[test]
    fn a_resolved_channel_moves_to_its_word_and_remembers_what_was_asked() {
        let (m, _) = manager();
        m.join("@handle").unwrap();
        m.mark_outage("@handle", t(1), "ingestor_restart");
        assert_eq!(m.rename("@handle", "UCabc"), Renamed::Moved);
        let info = &m.snapshot()[0];
        assert_eq!(
            (info.channel.as_str(), info.requested_as.as_deref()),
            ("UCabc", Some("@handle"))
        );
        let gap = m
            .on_resumed("UCabc", t(5), None)
            .expect("the outage moved too");
        assert_eq!(gap.channel, "UCabc");
        assert_eq!(
            m.persisted().channels["UCabc"].requested_as.as_deref(),
            Some("@handle")
        );

        m.join("dQw4w9WgXcQ").unwrap();
        assert_eq!(m.rename("dQw4w9WgXcQ", "UCabc"), Renamed::Merged);
        assert_eq!(m.counts().0, 1, "the duplicate is dropped");
        assert_eq!(m.rename("gone", "UCx"), Renamed::Gone);
        m.part("UCabc");
        assert_eq!(
            m.rename("UCabc", "UCy"),
            Renamed::Gone,
            "a parting channel stays"
        );
    }

    #[test]
    fn the_channel_cap_refuses_one_more_until_one_is_parted() {
        let rec = Arc::new(Recorder::default());
        let m = ChannelManager::new("demo", Box::new(rec.clone()), Duration::from_secs(10))
            .with_limit(2, "DEMO_MAX_CHANNELS");
        assert!(m.join("a").unwrap());
        assert!(m.join("b").unwrap());
        let err = m.join("c").unwrap_err();
        assert!(err.to_string().contains("DEMO_MAX_CHANNELS"), "{err}");
        assert!(!m.join("a").unwrap(), "an already wanted channel is fine");
        assert!(m.part("a"));
        assert!(m.join("c").unwrap());
        assert_eq!(m.counts().0, 2);
    }
}
