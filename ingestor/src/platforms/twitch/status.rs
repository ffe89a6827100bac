//! Twitch stream status: every `TWITCH_STATUS_INTERVAL` the live state of
//! every wanted channel is read with Helix Get Streams, 100 logins a call,
//! and its changes are published as `stream_online`, `stream_offline` and
//! `stream_update` events on the channel's own routing key.
//!
//! ```text
//!  ChannelManager (wanted) --chunks of 100--> Get Streams (app token) --> transition --> EventSink
//! ```
//!
//! * **An app token.** Get Streams takes an app access token, from the
//!   client-credentials grant at `TWITCH_TOKEN_URL` with `TWITCH_CLIENT_ID`
//!   and `TWITCH_CLIENT_SECRET`; it is fetched again before it expires and
//!   when Helix answers 401. Without client credentials status is off
//!   (said once, at start).
//! * **Within Helix's rate budget.** Each answer's `Ratelimit-Remaining` and
//!   `Ratelimit-Reset` are kept; with nothing remaining no call is made
//!   until the reset, and a 429 waits for its reset too. So 1,000 channels
//!   cost 10 points an interval, and a shared bucket is never overdrawn by
//!   this task.
//! * **Once per transition.** The first answer for a channel publishes its
//!   state (`stream_online` or `stream_offline`); after that only changes:
//!   online and offline once each, `stream_update` only when the title,
//!   category or viewer count changed. A call that fails changes nothing:
//!   its channels keep their state until an answer says otherwise.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::Secret;
use common::body::read_limited;
use common::schema::{
    ChatEvent, EventBody, PLATFORM_TWITCH, StreamDetails, StreamOfflineDetails,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::helix::{Helix, HelixError, LiveStream, RateLimit, STREAMS_PER_CALL};
use crate::channels::ChannelManager;
use crate::platforms::seam::EventSink;

/// Timeout of one Helix or token request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// An app token is fetched again this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// Tries of one chunk in one round (a 401 or 429 is retried).
const TRIES: usize = 3;
/// Waited past a bucket's reset, for clocks that disagree a little.
const RESET_SLACK: Duration = Duration::from_millis(250);

/// How status is read.
#[derive(Debug, Clone)]
pub struct StatusSettings {
    /// Helix (`TWITCH_HELIX_URL`).
    pub helix_url: String,
    /// Twitch's token endpoint (`TWITCH_TOKEN_URL`).
    pub token_url: String,
    /// The app's client id.
    pub client_id: String,
    /// The app's client secret.
    pub client_secret: Secret,
    /// How often every wanted channel is read.
    pub interval: Duration,
}

/// What the poller last knew of a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Known {
    /// Offline; the stream that ended, when one was seen.
    Offline(Option<LiveStream>),
    /// Live.
    Live(LiveStream),
}

/// The events a new answer for `channel` gives, after `before` (`None`: the
/// first answer), and what is known after it. `live` is the channel's
/// stream in the answer (`None`: offline); `now` is the poll's time.
pub fn transition(
    channel: &str,
    before: Option<&Known>,
    live: Option<&LiveStream>,
    now: DateTime<Utc>,
) -> (Vec<ChatEvent>, Known) {
    let online = |s: &LiveStream| {
        let at = s.started_at.unwrap_or(now);
        event(
            format!("stream_online:{}", s.id),
            channel,
            Some(&s.user_id),
            at,
            now,
            EventBody::StreamOnline(details(s)),
        )
    };
    let offline = |ended: Option<&LiveStream>| {
        let id = ended.map_or_else(
            || format!("stream_offline:{channel}:{}", now.timestamp_millis()),
            |s| format!("stream_offline:{}", s.id),
        );
        event(
            id,
            channel,
            ended.map(|s| s.user_id.as_str()),
            now,
            now,
            EventBody::StreamOffline(StreamOfflineDetails {
                stream_id: ended.map(|s| s.id.clone()),
                started_at: ended.and_then(|s| s.started_at),
            }),
        )
    };
    match (before, live) {
        (None, None) => (vec![offline(None)], Known::Offline(None)),
        (None | Some(Known::Offline(_)), Some(s)) => (vec![online(s)], Known::Live(s.clone())),
        (Some(Known::Offline(last)), None) => (Vec::new(), Known::Offline(last.clone())),
        (Some(Known::Live(was)), None) => (vec![offline(Some(was))], Known::Offline(Some(was.clone()))),
        (Some(Known::Live(was)), Some(s)) if was.id != s.id => {
            // A new stream between two looks: the old one ended.
            (vec![offline(Some(was)), online(s)], Known::Live(s.clone()))
        }
        (Some(Known::Live(was)), Some(s)) => {
            let changed = was.title != s.title
                || was.game_name != s.game_name
                || was.viewer_count != s.viewer_count;
            let events = if changed {
                vec![event(
                    format!("stream_update:{}:{}", s.id, now.timestamp_millis()),
                    channel,
                    Some(&s.user_id),
                    now,
                    now,
                    EventBody::StreamUpdate(details(s)),
                )]
            } else {
                Vec::new()
            };
            (events, Known::Live(s.clone()))
        }
    }
}

fn details(s: &LiveStream) -> StreamDetails {
    StreamDetails {
        stream_id: Some(s.id.clone()),
        title: Some(s.title.clone()),
        category: (!s.game_name.is_empty()).then(|| s.game_name.clone()),
        viewer_count: Some(s.viewer_count),
        started_at: s.started_at,
    }
}

fn event(
    id: String,
    channel: &str,
    channel_id: Option<&str>,
    sent_at: DateTime<Utc>,
    now: DateTime<Utc>,
    body: EventBody,
) -> ChatEvent {
    let mut e = ChatEvent::new(id, PLATFORM_TWITCH, channel, sent_at, now, body);
    e.channel_id = channel_id.filter(|id| !id.is_empty()).map(str::to_owned);
    e
}

/// The app access token, from the client-credentials grant.
#[derive(Debug)]
struct AppToken {
    http: reqwest::Client,
    settings: StatusSettings,
    current: Option<(Secret, Instant)>,
}

impl AppToken {
    async fn get(&mut self) -> Result<Secret, String> {
        if let Some((token, until)) = &self.current
            && Instant::now() < *until
        {
            return Ok(token.clone());
        }
        let res = self
            .http
            .post(&self.settings.token_url)
            .form(&[
                ("client_id", self.settings.client_id.as_str()),
                ("client_secret", self.settings.client_secret.expose()),
                ("grant_type", "client_credentials"),
            ])
            .send()
            .await
            .map_err(|e| format!("token endpoint: {e}"))?;
        let status = res.status();
        let body = read_limited(res, 64 * 1024)
            .await
            .map_err(|e| format!("token endpoint: {e}"))?;
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let Some(token) = value["access_token"].as_str().filter(|_| status.is_success()) else {
            return Err(format!(
                "the token endpoint refused the client credentials ({status}): {}",
                common::body::cut(&String::from_utf8_lossy(&body), 200)
            ));
        };
        let lifetime = Duration::from_secs(value["expires_in"].as_u64().unwrap_or(3600));
        let until = Instant::now() + lifetime.saturating_sub(TOKEN_MARGIN);
        let token = Secret::new(token.to_owned());
        self.current = Some((token.clone(), until));
        Ok(token)
    }

    fn forget(&mut self) {
        self.current = None;
    }
}

/// Helix's rate budget as its last answer gave it.
#[derive(Debug, Default, Clone, Copy)]
struct Budget {
    last: Option<RateLimit>,
}

impl Budget {
    /// How long to wait before the next call: until the reset when nothing
    /// remains, else not at all.
    fn wait(&self, now: DateTime<Utc>) -> Option<Duration> {
        let last = self.last?;
        if last.remaining > 0 {
            return None;
        }
        let reset = DateTime::<Utc>::from_timestamp(last.reset, 0)?;
        let wait = (reset - now).to_std().unwrap_or_default();
        Some(wait + RESET_SLACK)
    }
}

/// Reads every wanted channel's live state and publishes its changes.
pub struct StatusPoller {
    helix: Helix,
    token: AppToken,
    channels: Arc<ChannelManager>,
    sink: EventSink,
    interval: Duration,
    known: BTreeMap<String, Known>,
    budget: Budget,
}

impl std::fmt::Debug for StatusPoller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusPoller")
            .field("interval", &self.interval)
            .field("channels", &self.known.len())
            .finish()
    }
}

impl StatusPoller {
    /// A poller of `channels`' wanted channels, publishing into `sink`.
    ///
    /// # Errors
    /// When the HTTP clients cannot be built.
    pub fn new(
        settings: StatusSettings,
        channels: Arc<ChannelManager>,
        sink: EventSink,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            helix: Helix::new(&settings.helix_url, &settings.client_id, REQUEST_TIMEOUT)?,
            interval: settings.interval,
            token: AppToken {
                http: reqwest::Client::builder()
                    .timeout(REQUEST_TIMEOUT)
                    .build()?,
                settings,
                current: None,
            },
            channels,
            sink,
            known: BTreeMap::new(),
            budget: Budget::default(),
        })
    }

    /// Polls every interval until `shutdown`.
    ///
    /// # Errors
    /// None today: a failed round is logged and the next one tries again.
    pub async fn run(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                _ = tick.tick() => {}
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                events = self.poll() => {
                    if !events.is_empty() {
                        self.sink.emit(&events);
                    }
                }
            }
        }
    }

    /// One round: every wanted channel, 100 a call; the events of what
    /// changed.
    pub async fn poll(&mut self) -> Vec<ChatEvent> {
        let wanted: Vec<String> = self.channels.persisted().channels.into_keys().collect();
        let keep: HashSet<&String> = wanted.iter().collect();
        self.known.retain(|c, _| keep.contains(c));
        let mut events = Vec::new();
        for chunk in wanted.chunks(STREAMS_PER_CALL) {
            let Some(streams) = self.read(chunk).await else {
                continue;
            };
            let now = Utc::now();
            for channel in chunk {
                let live = streams.iter().find(|s| &s.user_login == channel);
                let (mut changed, known) =
                    transition(channel, self.known.get(channel), live, now);
                events.append(&mut changed);
                self.known.insert(channel.clone(), known);
            }
        }
        events
    }

    /// Get Streams for one chunk, within the budget; `None` when no answer
    /// came (logged).
    async fn read(&mut self, logins: &[String]) -> Option<Vec<LiveStream>> {
        for _ in 0..TRIES {
            if let Some(wait) = self.budget.wait(Utc::now()) {
                tracing::debug!(?wait, "Helix rate budget spent; waiting for its reset");
                metrics::counter!("chatbus_ingestor_status_budget_waits_total", "platform" => PLATFORM_TWITCH)
                    .increment(1);
                tokio::time::sleep(wait).await;
                self.budget.last = None;
            }
            let token = match self.token.get().await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "Twitch status: no app token; this round is skipped");
                    return None;
                }
            };
            metrics::counter!("chatbus_ingestor_status_calls_total", "platform" => PLATFORM_TWITCH)
                .increment(1);
            let (answer, rate) = self.helix.streams(&token, logins).await;
            if rate.is_some() {
                self.budget.last = rate;
            }
            match answer {
                Ok(streams) => return Some(streams),
                Err(HelixError::Status { status: 401, .. }) => self.token.forget(),
                Err(HelixError::Status { status: 429, .. }) => {
                    if rate.is_none() {
                        // No headers: wait a second rather than hammer.
                        self.budget.last = Some(RateLimit {
                            remaining: 0,
                            reset: Utc::now().timestamp() + 1,
                        });
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, channels = logins.len(), "Twitch status: Get Streams failed; these channels keep their state");
                    return None;
                }
            }
        }
        tracing::warn!(channels = logins.len(), "Twitch status: Get Streams kept failing this round");
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn live(id: &str, viewers: u64, title: &str) -> LiveStream {
        LiveStream {
            id: id.into(),
            user_id: "42".into(),
            user_login: "chan".into(),
            title: title.into(),
            game_name: "Celeste".into(),
            viewer_count: viewers,
            started_at: DateTime::from_timestamp(1_700_000_000, 0),
        }
    }

    fn kinds(events: &[ChatEvent]) -> Vec<&str> {
        events.iter().map(ChatEvent::kind_name).collect()
    }

    #[test]
    fn the_first_answer_says_the_state_then_only_changes_do() {
        let now = Utc::now();
        let (e, k) = transition("chan", None, None, now);
        assert_eq!(kinds(&e), ["stream_offline"]);
        let (e, k) = transition("chan", Some(&k), None, now);
        assert!(e.is_empty());
        let s = live("s1", 10, "t");
        let (e, k) = transition("chan", Some(&k), Some(&s), now);
        assert_eq!(kinds(&e), ["stream_online"]);
        assert_eq!(e[0].id, "stream_online:s1");
        assert_eq!(e[0].sent_at, s.started_at.unwrap());
        assert_eq!(e[0].channel_id.as_deref(), Some("42"));
        let (e, k) = transition("chan", Some(&k), Some(&s), now);
        assert!(e.is_empty(), "nothing changed");
        let (e, k) = transition("chan", Some(&k), Some(&live("s1", 11, "t")), now);
        assert_eq!(kinds(&e), ["stream_update"]);
        let EventBody::StreamUpdate(d) = &e[0].body else { panic!() };
        assert_eq!(d.viewer_count, Some(11));
        let (e, k) = transition("chan", Some(&k), Some(&live("s1", 11, "new title")), now);
        assert_eq!(kinds(&e), ["stream_update"]);
        let (e, k) = transition("chan", Some(&k), None, now);
        assert_eq!(kinds(&e), ["stream_offline"]);
        assert_eq!(e[0].id, "stream_offline:s1");
        let (e, _) = transition("chan", Some(&k), None, now);
        assert!(e.is_empty());
    }

    #[test]
    fn a_first_answer_that_is_live_is_online_and_a_new_stream_ends_the_old() {
        let now = Utc::now();
        let (e, k) = transition("chan", None, Some(&live("s1", 1, "t")), now);
        assert_eq!(kinds(&e), ["stream_online"]);
        let (e, _) = transition("chan", Some(&k), Some(&live("s2", 1, "t")), now);
        assert_eq!(kinds(&e), ["stream_offline", "stream_online"]);
    }

    #[test]
    fn the_budget_waits_for_the_reset_only_when_nothing_remains() {
        let now = Utc::now();
        let mut b = Budget::default();
        assert_eq!(b.wait(now), None);
        b.last = Some(RateLimit {
            remaining: 3,
            reset: now.timestamp() + 30,
        });
        assert_eq!(b.wait(now), None);
        b.last = Some(RateLimit {
            remaining: 0,
            reset: now.timestamp() + 30,
        });
        let wait = b.wait(now).unwrap();
        assert!(wait > Duration::from_secs(28) && wait <= Duration::from_secs(31), "{wait:?}");
    }
}
