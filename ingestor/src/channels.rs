//! The channel manager: which channels we want (desired) and where each one
//! really is (queued, JOIN sent, joined, disconnected), with
//!
//! * JOIN confirmation: a JOIN the server has not echoed within
//!   `join_timeout` is sent again (the "ghost JOIN");
//! * re-join after a reconnect (twitch-irc re-joins at once; the watchdog
//!   catches any it missed), every JOIN on the wire going through the
//!   transport's rate limiter;
//! * gap events: when a connection drops, each of its channels is marked
//!   disconnected; when the channel is joined again a `gap` event covering
//!   the outage is produced;
//! * per-channel figures for `GET /channels`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::schema::{ChatEvent, EventBody, EventKind, GapDetails, PLATFORM_TWITCH};
use serde::Serialize;

/// Channels remembered across restarts (`<SPOOL_DIR>/channels.json`).
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
}

impl PersistedChannels {
    const FILE: &'static str = "channels.json";

    /// Reads `dir/channels.json`; missing or unreadable means nothing
    /// remembered (logged).
    pub fn load(dir: &std::path::Path) -> Self {
        let path = dir.join(Self::FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable channel state file");
                Self::default()
            }),
            Err(_) => Self::default(),
        }
    }

    /// Writes `dir/channels.json` atomically.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(&self, dir: &std::path::Path) -> Result<(), common::token_store::TokenStoreError> {
        let bytes = serde_json::to_vec_pretty(self).expect("channel state serialises");
        common::token_store::write_atomic(&dir.join(Self::FILE), &bytes)
    }
}

/// What the manager needs from the IRC client.
pub trait JoinClient: Send + Sync + 'static {
    /// Ask to be joined to `channel` (sends JOIN unless already confirmed).
    fn join(&self, channel: &str);
    /// Ask to leave `channel`.
    fn part(&self, channel: &str);
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
    /// Leaving (PART sent).
    Parting,
}

/// One channel's state and figures, as `GET /channels` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelInfo {
    /// Channel login.
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
    /// The IRC connection it is on.
    pub connection: Option<u64>,
    #[serde(skip)]
    pending_gap: Option<(DateTime<Utc>, String)>,
    #[serde(skip)]
    last_retry: Option<DateTime<Utc>>,
}

impl ChannelInfo {
    fn new(channel: &str, now: DateTime<Utc>) -> Self {
        Self {
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
            pending_gap: None,
            last_retry: None,
        }
    }
}

/// The manager. Share it with `Arc`.
pub struct ChannelManager {
    client: Box<dyn JoinClient>,
    join_timeout: Duration,
    channels: Mutex<BTreeMap<String, ChannelInfo>>,
}

impl std::fmt::Debug for ChannelManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelManager")
            .field("join_timeout", &self.join_timeout)
            .finish()
    }
}

impl ChannelManager {
    /// A manager driving `client`; unconfirmed JOINs are retried after
    /// `join_timeout`.
    pub fn new(client: Box<dyn JoinClient>, join_timeout: Duration) -> Self {
        Self {
            client,
            join_timeout,
            channels: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, ChannelInfo>> {
        self.channels.lock().expect("channel manager lock")
    }

    /// Wants `channel` joined. Returns false if it was already wanted.
    pub fn join(&self, channel: &str) -> bool {
        let now = Utc::now();
        let added = {
            let mut channels = self.lock();
            match channels.get_mut(channel) {
                Some(info) if !matches!(info.state, JoinState::Parting) => false,
                Some(info) => {
                    info.state = JoinState::Queued { since: now };
                    true
                }
                None => {
                    channels.insert(channel.to_owned(), ChannelInfo::new(channel, now));
                    true
                }
            }
        };
        if added {
            tracing::info!(channel, "joining");
            self.client.join(channel);
            self.record_gauges();
        }
        added
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
            tracing::info!(channel, "parting");
            self.client.part(channel);
        }
        parted
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
            let (started_at, reason) = info.pending_gap.take()?;
            info.gaps += 1;
            let mut event = ChatEvent::new(
                uuid::Uuid::now_v7().to_string(),
                PLATFORM_TWITCH,
                channel,
                at,
                at,
                EventBody::Gap(GapDetails {
                    started_at,
                    ended_at: at,
                    reason,
                }),
            );
            event.channel_id = info.channel_id.clone();
            Some(event)
        };
        self.record_gauges();
        if let Some(g) = &gap
            && let EventBody::Gap(d) = &g.body
        {
            tracing::warn!(channel, from = %d.started_at, to = %d.ended_at, reason = %d.reason, "rejoined after an outage; publishing a gap event");
        }
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
        let mut channels = self.lock();
        if let Some(info) = channels.get_mut(&event.channel) {
            info.events += 1;
            *info.counts.entry(event.kind()).or_default() += 1;
            info.last_message_at = Some(event.received_at);
            if info.channel_id.is_none() {
                info.channel_id.clone_from(&event.channel_id);
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
            tracing::warn!(%channel, timeout = ?self.join_timeout, "JOIN not confirmed in time; sending it again");
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
                    (i.channel.clone(), PersistedChannel { last_seen: seen })
                })
                .collect(),
        }
    }

    /// After a restart: joins every channel remembered, and marks those that
    /// were being read for a gap (`reason = ingestor_restart`) from when we
    /// last saw them to when they are joined again.
    pub fn restore(&self, persisted: &PersistedChannels) {
        for (channel, state) in &persisted.channels {
            self.join(channel);
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
        metrics::gauge!("chatbus_ingestor_channels_wanted").set(wanted as f64);
        metrics::gauge!("chatbus_ingestor_channels_joined").set(joined as f64);
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
            ChannelManager::new(Box::new(rec.clone()), Duration::from_secs(10)),
            rec,
        )
    }

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    #[test]
    fn join_flow_and_figures() {
        let (m, rec) = manager();
        assert!(m.join("a"));
        assert!(!m.join("a"), "joining twice is a no-op");
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
        m.join("ghost");
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
            m.join(c);
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
        m.join("a");
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
        m.join("a");
        m.join("never_joined");
        m.on_join_sent(1, "a", t(0));
        m.on_joined("a", t(1));
        let mut e = ChatEvent::new(
            "x",
            "twitch",
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
        saved.save(dir.path()).unwrap();

        let (m2, rec) = manager();
        m2.restore(&PersistedChannels::load(dir.path()));
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
        m.join("a");
        m.on_join_sent(1, "a", t(0));
        m.on_joined("a", t(1));
        m.on_connection_closed(1, t(10), "disconnect", &["a".into()]);
        assert!(m.part("a"));
        assert!(m.on_joined("a", t(11)).is_none());
        m.on_parted("a");
        assert!(m.snapshot().is_empty());
        assert_eq!(rec.0.lock().unwrap().last().unwrap(), "PART a");
    }
}
