//! One task per wanted YouTube entry: resolve it to its channel, find the
//! live chat, read it (stream, or polling where streaming is unavailable),
//! follow it to its end, and — for a channel — watch for the next
//! broadcast.
//!
//! ```text
//! resolve (@handle, video -> UC…) -> find the live chat --(live)--> read: stream | poll
//!        ^                               |  (not live: wait)          |  drop: resume from the page token
//!        |                               v                            v
//!        +------------------------ wait (offline interval) <-- chat ended (channel entry)
//! ```
//!
//! Every error waits (exponential backoff, or until the quota resets) in a
//! `waiting` state that `/channels` shows with its reason and next check;
//! nothing spins.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::schema::{ChatEvent, PLATFORM_YOUTUBE};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::shared::Shared;
use super::api::{ApiError, Reason, Video};
use super::entry::Entry;
use super::limits::Clamped;
use super::normalise::{self, ChatContext, Normaliser, Problem};
use super::quota::Call;
use super::recent::Recent;
use super::status::{Broadcast, LiveStatus};
use super::resource::message_json;
use crate::channels::{JoinState, Renamed};
use crate::platforms::reconnect::Reconnect;

/// Message ids remembered per chat to drop repeats (a resumed stream, a
/// reconnect without a page token).
const SEEN_IDS: usize = 20_000;

/// Ended chats remembered per channel, so a broadcast that still shows as
/// live for a while after its chat ended is not read again.
const ENDED_CHATS: usize = 64;

/// Newest uploads looked at for a live broadcast (one `playlistItems.list`
/// and one `videos.list` either way: 2 units).
pub const UPLOADS_SCANNED: u32 = 25;

/// How long a chat is polled, not streamed, after its stream failed
/// [`STREAM_FAILURES_BEFORE_POLLING`] times in a row.
const POLL_AFTER_STREAM_FAILURES: Duration = Duration::from_secs(600);

/// Stream failures in a row (no connection, server errors) before a chat is
/// polled for a while.
const STREAM_FAILURES_BEFORE_POLLING: u32 = 3;

/// The wait before re-checking what will not change soon (a video that is
/// over, a handle no channel has).
const PARKED_RECHECK: Duration = Duration::from_secs(3600);

/// Default wait between polls when YouTube does not say.
const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(5);

/// Times in a row one page may be refused (not JSON, past a limit) before
/// the reader skips past it: it reads on from the chat's newest messages
/// and publishes a gap, instead of asking for that page forever.
pub const REFUSED_PAGE_ATTEMPTS: u32 = 3;

/// A live chat to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LiveChat {
    pub(crate) live_chat_id: String,
    pub(crate) video_id: String,
    /// The broadcast as found (title, viewers, start).
    pub(crate) broadcast: Broadcast,
}

/// What looking for the chat found.
enum Found {
    /// Live, with a chat.
    Live(LiveChat),
    /// Not live now; look again later.
    NotLive(String),
    /// Live, but without a chat.
    NoChat(String),
    /// The video's broadcast is over (or it is not a broadcast).
    Over(String),
}

/// How reading a chat ended.
enum ReadEnd {
    /// The chat ended.
    Ended,
    /// The chat is gone (not found, disabled): look again.
    Lost(ApiError),
    /// The source stopped, or the channel was parted.
    Cancelled,
}

/// What one read step did.
enum Step {
    /// Go on after `delay`.
    Continue(Duration),
    /// The chat ended.
    Ended,
    /// Failed.
    Failed(ApiError),
    /// Cancelled.
    Cancelled,
}

/// The reader's place in a chat.
struct Position {
    ctx: ChatContext,
    token: Option<String>,
    seen: Recent<String>,
    normaliser: Normaliser,
    /// The last moment everything up to then was surely read.
    synced_at: Option<DateTime<Utc>>,
    chat_ended_sent: bool,
    /// Refusals in a row of the page at `token`.
    refused: u32,
    /// A `pageTokenInvalid` episode is on: its one gap is marked, and the
    /// backoff goes on until a page is read from a page token again.
    token_episode: bool,
    /// Held while the chat is polled (the quota paces polled chats).
    polling: Option<PollingGuard>,
}

/// Counts a polled chat in `Shared::polling` while it lives.
struct PollingGuard(Arc<Shared>);

impl PollingGuard {
    fn new(shared: &Arc<Shared>) -> Self {
        shared.polling.fetch_add(1, Ordering::SeqCst);
        Self(shared.clone())
    }
}

impl Drop for PollingGuard {
    fn drop(&mut self) {
        self.0.polling.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A running follower.
pub(crate) struct Follower {
    shared: Arc<Shared>,
    /// The channel manager's name for it: the entry's key until resolved,
    /// then the channel id.
    key: String,
    task: u64,
    cancel: CancellationToken,
    /// Follows this video only (a video entry).
    video: Option<String>,
    /// The video as `resolve` looked it up, for the first check to use
    /// instead of asking `videos.list` again.
    looked_up: Option<Video>,
    uploads: Option<String>,
    ended: Recent<String>,
    /// Errors in a row since the last answer (every call's answer resets it).
    backoff: Reconnect,
    /// The live state published for the channel (`status`).
    status: Arc<std::sync::Mutex<LiveStatus>>,
}

impl Follower {
    pub(crate) fn new(
        shared: Arc<Shared>,
        key: String,
        task: u64,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            key,
            task,
            cancel,
            video: None,
            looked_up: None,
            uploads: None,
            ended: Recent::new(ENDED_CHATS),
            // Any answer resets the backoff, so no connection needs to
            // last to count as healthy.
            backoff: Reconnect::new(shared.tuning.backoff, Duration::ZERO),
            status: Arc::default(),
            shared,
        }
    }

    /// Follows until cancelled (or the entry turns out to be a duplicate).
    pub(crate) async fn run(mut self) {
        self.shared.followers.fetch_add(1, Ordering::SeqCst);
        if self.resolve().await {
            self.follow().await;
        }
        self.shared.followers.fetch_sub(1, Ordering::SeqCst);
        self.finish();
    }

    fn manager(&self) -> &crate::channels::ChannelManager {
        &self.shared.manager
    }

    /// Leaves the task table; confirms a part.
    fn finish(&self) {
        self.shared.remove_task(&self.key, self.task);
        if matches!(self.manager().state(&self.key), Some(JoinState::Parting)) {
            self.manager().on_parted(&self.key);
        }
    }

    /// Resolves the entry to its channel id and takes that name. False if
    /// there is nothing (more) to follow.
    async fn resolve(&mut self) -> bool {
        let entry = match Entry::parse(&self.key) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(platform = PLATFORM_YOUTUBE, key = %self.key, error = %e, "cannot follow a channel the source cannot parse");
                return false;
            }
        };
        let requested = self.manager().requested_as(&self.key);
        self.video = match &entry {
            Entry::Video(v) => Some(v.clone()),
            Entry::Channel(_) => requested
                .as_deref()
                .and_then(|r| Entry::parse(r).ok())
                .and_then(|e| match e {
                    Entry::Video(v) => Some(v),
                    _ => None,
                }),
            Entry::Handle(_) => None,
        };
        self.manager().set_state(
            &self.key,
            JoinState::Joining {
                sent_at: Utc::now(),
            },
        );
        let channel = match entry {
            Entry::Channel(id) => id,
            Entry::Handle(handle) => loop {
                match self.shared.api.channel(&handle).await {
                    Ok(Some(channel)) => {
                        self.uploads = channel
                            .content_details
                            .and_then(|d| d.related_playlists?.uploads);
                        break channel.id;
                    }
                    Ok(None) => {
                        let detail = format!("no YouTube channel has the handle {handle}");
                        tracing::warn!(platform = PLATFORM_YOUTUBE, %handle, "{detail}");
                        metrics::counter!("chatbus_ingestor_youtube_errors_total", "reason" => "not_found").increment(1);
                        if !self.wait("not_found", detail, PARKED_RECHECK).await {
                            return false;
                        }
                    }
                    Err(e) => {
                        if !self.wait_after(&e, "resolving the handle").await {
                            return false;
                        }
                    }
                }
            },
            Entry::Video(video) => loop {
                match self.shared.api.videos(std::slice::from_ref(&video)).await {
                    Ok(list) => {
                        let found = list.into_iter().find(|v| v.id == video);
                        if let Some(channel) = found
                            .as_ref()
                            .and_then(Video::channel_id)
                            .map(str::to_owned)
                        {
                            self.looked_up = found;
                            break channel;
                        }
                        let detail = format!("no YouTube video has the id {video}");
                        tracing::warn!(platform = PLATFORM_YOUTUBE, %video, "{detail}");
                        metrics::counter!("chatbus_ingestor_youtube_errors_total", "reason" => "not_found").increment(1);
                        if !self.wait("not_found", detail, PARKED_RECHECK).await {
                            return false;
                        }
                    }
                    Err(e) => {
                        if !self.wait_after(&e, "looking up the video").await {
                            return false;
                        }
                    }
                }
            },
        };
        self.backoff.reset();
        if channel != self.key {
            self.shared.remember_resolved(&self.key, &channel);
            match self.manager().rename(&self.key, &channel) {
                Renamed::Moved => {
                    self.shared.rename_task(&self.key, &channel, self.task);
                    self.key = channel;
                }
                // finish() takes the task out of the table.
                Renamed::Merged | Renamed::Gone => return false,
            }
        }
        self.manager()
            .set_detail(&self.key, Some(self.detail(None, None)));
        !self.cancel.is_cancelled()
    }

    /// `/channels` detail: what it follows, and the chat it reads.
    fn detail(&self, chat: Option<&LiveChat>, via: Option<&str>) -> serde_json::Value {
        let mut d = json!({
            "follows": if self.video.is_some() { "video" } else { "channel" },
        });
        if let Some(v) = &self.video {
            d["video"] = json!(v);
        }
        if let Some(chat) = chat {
            d["video_id"] = json!(chat.video_id);
            d["live_chat_id"] = json!(chat.live_chat_id);
        }
        if let Some(via) = via {
            d["via"] = json!(via);
        }
        d
    }

    async fn follow(&mut self) {
        loop {
            let found = match self.video.clone() {
                Some(video) => self.check_video(&video).await,
                None => self.find_live().await,
            };
            let go_on = match found {
                Ok(Found::Live(chat)) => {
                    self.backoff.reset();
                    tracing::info!(platform = PLATFORM_YOUTUBE, channel = %self.key, video = %chat.video_id, "live: reading its chat");
                    self.observe(Some(&chat.broadcast));
                    let live_chats = self.shared.live_chats.clone();
                    live_chats.set(&self.key, &chat.live_chat_id);
                    let viewers = watch_viewers(
                        self.shared.clone(),
                        self.key.clone(),
                        chat.video_id.clone(),
                        self.status.clone(),
                        self.cancel.clone(),
                    );
                    let end = tokio::select! {
                        end = self.read(&chat) => end,
                        () = viewers => ReadEnd::Cancelled,
                    };
                    live_chats.clear(&self.key, &chat.live_chat_id);
                    match end {
                        ReadEnd::Cancelled => false,
                        ReadEnd::Ended => {
                            self.observe(None);
                            self.ended.insert(chat.live_chat_id.clone(), ());
                            tracing::info!(platform = PLATFORM_YOUTUBE, channel = %self.key, video = %chat.video_id, "the live chat ended");
                            self.manager()
                                .set_detail(&self.key, Some(self.detail(None, None)));
                            if self.video.is_some() {
                                self.wait(
                                    "chat_ended",
                                    format!("the chat of video {} ended", chat.video_id),
                                    PARKED_RECHECK,
                                )
                                .await
                            } else {
                                let interval = self.offline_interval();
                                self.wait(
                                    "offline",
                                    format!(
                                        "broadcast {} ended; watching for the next one",
                                        chat.video_id
                                    ),
                                    interval,
                                )
                                .await
                            }
                        }
                        ReadEnd::Lost(e) => self.wait_after(&e, "reading the chat").await,
                    }
                }
                Ok(Found::NotLive(detail)) => {
                    self.backoff.reset();
                    self.observe(None);
                    let interval = self.offline_interval();
                    self.wait("offline", detail, interval).await
                }
                Ok(Found::NoChat(detail)) => {
                    self.backoff.reset();
                    metrics::counter!("chatbus_ingestor_youtube_errors_total", "reason" => "chat_disabled").increment(1);
                    let already = matches!(
                        self.manager().state(&self.key),
                        Some(JoinState::Waiting { reason, .. }) if reason == "chat_disabled"
                    );
                    if !already {
                        tracing::warn!(platform = PLATFORM_YOUTUBE, channel = %self.key, "{detail}; checking again at the offline interval");
                    }
                    let interval = self.offline_interval();
                    self.wait("chat_disabled", detail, interval).await
                }
                Ok(Found::Over(detail)) => {
                    self.backoff.reset();
                    self.observe(None);
                    self.wait("chat_ended", detail, PARKED_RECHECK).await
                }
                Err(e) => self.wait_after(&e, "looking for the live broadcast").await,
            };
            if !go_on {
                return;
            }
        }
    }

    /// How long a channel that is not live waits before the next check:
    /// `YOUTUBE_OFFLINE_POLL_INTERVAL`, or what the quota affords for every
    /// followed channel.
    fn offline_interval(&self) -> Duration {
        offline_interval(&self.shared)
    }

    /// Publishes what the channel's live state became (`status`).
    fn observe(&self, live: Option<&Broadcast>) {
        let events = self
            .status
            .lock()
            .expect("status lock")
            .observe(&self.key, live, Utc::now());
        // Not `emit`: a status event says nothing of the chat being read.
        if !events.is_empty() {
            self.shared.sink.emit(&events);
        }
    }

    /// Looks at the followed video: as `resolve` just found it the first
    /// time, by `videos.list` after that.
    async fn check_video(&mut self, video: &str) -> Result<Found, ApiError> {
        let v = match self.looked_up.take().filter(|v| v.id == video) {
            Some(v) => Some(v),
            None => self
                .shared
                .api
                .videos(&[video.to_owned()])
                .await?
                .into_iter()
                .find(|v| v.id == video),
        };
        let Some(v) = v else {
            return Err(ApiError::Missing(format!(
                "no YouTube video has the id {video}"
            )));
        };
        if v.live_chat_id()
            .is_some_and(|c| self.ended.contains(&c.to_owned()))
        {
            // YouTube may list it as live a while after its chat ended.
            return Ok(Found::Over(format!("the chat of video {video} ended")));
        }
        Ok(self.judge(&v).unwrap_or_else(|| match v.broadcast() {
            "upcoming" => Found::NotLive(format!(
                "video {video} is scheduled{}",
                v.live_streaming_details
                    .as_ref()
                    .and_then(|d| d.scheduled_start_time.as_deref())
                    .map(|t| format!(" for {t}"))
                    .unwrap_or_default()
            )),
            "live" => Found::NoChat(format!("video {video} is live without a chat")),
            "completed" => Found::Over(format!("the broadcast of video {video} is over")),
            _ => Found::Over(format!("video {video} is not a live broadcast")),
        }))
    }

    /// A live video with a chat not read to its end yet.
    fn judge(&self, v: &Video) -> Option<Found> {
        let chat = v.live_chat_id()?;
        if self.ended.contains(&chat.to_owned()) {
            return None;
        }
        Some(Found::Live(LiveChat {
            live_chat_id: chat.to_owned(),
            video_id: v.id.clone(),
            broadcast: Broadcast::of(v),
        }))
    }

    /// Looks for the channel's live broadcast: its newest uploads
    /// (`YOUTUBE_LIVE_CHECK=uploads`, 2 units) or `search.list`
    /// (`search`, 101 units), then `videos.list` for their chats.
    async fn find_live(&mut self) -> Result<Found, ApiError> {
        let ids = match self.shared.tuning.live_check {
            super::settings::LiveCheck::Uploads => {
                let uploads = match &self.uploads {
                    Some(u) => u.clone(),
                    None => {
                        let channel =
                            self.shared.api.channel(&self.key).await?.ok_or_else(|| {
                                ApiError::Missing(format!(
                                    "no YouTube channel has the id {}",
                                    self.key
                                ))
                            })?;
                        let uploads = channel
                            .content_details
                            .and_then(|d| d.related_playlists?.uploads)
                            .ok_or_else(|| {
                                ApiError::Missing(format!(
                                    "channel {} has no uploads playlist",
                                    self.key
                                ))
                            })?;
                        self.uploads = Some(uploads.clone());
                        uploads
                    }
                };
                self.shared
                    .api
                    .playlist_videos(&uploads, UPLOADS_SCANNED)
                    .await?
            }
            super::settings::LiveCheck::Search => self.shared.api.search_live(&self.key).await?,
        };
        if ids.is_empty() {
            return Ok(Found::NotLive("not live".to_owned()));
        }
        let videos = self.shared.api.videos(&ids).await?;
        let live: Vec<&Video> = videos
            .iter()
            .filter(|v| v.broadcast() == "live" && v.channel_id().is_none_or(|c| c == self.key))
            .collect();
        if let Some(found) = live.iter().find_map(|v| self.judge(v)) {
            return Ok(found);
        }
        Ok(match live.iter().find(|v| v.live_chat_id().is_none()) {
            Some(v) => Found::NoChat(format!("broadcast {} is live without a chat", v.id)),
            None if live.is_empty() => Found::NotLive("not live".to_owned()),
            None => {
                Found::NotLive("the broadcast's chat ended; watching for the next one".to_owned())
            }
        })
    }

    /// Reads `chat` to its end.
    async fn read(&mut self, chat: &LiveChat) -> ReadEnd {
        let mut pos = Position {
            ctx: ChatContext {
                channel: self.key.clone(),
                live_chat_id: chat.live_chat_id.clone(),
                video_id: Some(chat.video_id.clone()),
            },
            token: None,
            seen: Recent::new(SEEN_IDS),
            normaliser: Normaliser::new(self.shared.tuning.include_raw),
            synced_at: None,
            chat_ended_sent: false,
            refused: 0,
            token_episode: false,
            polling: None,
        };
        let mut stream_failures = 0u32;
        let mut poll_until: Option<tokio::time::Instant> = None;
        loop {
            if self.cancel.is_cancelled() {
                return ReadEnd::Cancelled;
            }
            let streaming = self.shared.stream.is_some()
                && !self.shared.stream_unavailable()
                && poll_until.is_none_or(|t| tokio::time::Instant::now() >= t);
            let step = if streaming {
                pos.polling = None;
                let (step, opened) = self.stream_session(chat, &mut pos).await;
                if opened {
                    // It worked: a later drop starts the counts afresh.
                    stream_failures = 0;
                    if !pos.token_episode {
                        self.backoff.reset();
                    }
                }
                step
            } else {
                if pos.polling.is_none() {
                    pos.polling = Some(PollingGuard::new(&self.shared));
                }
                self.poll_once(chat, &mut pos).await
            };
            let failed = match step {
                Step::Cancelled => return ReadEnd::Cancelled,
                Step::Ended => {
                    self.send_chat_ended(&mut pos);
                    return ReadEnd::Ended;
                }
                Step::Continue(delay) => {
                    pos.refused = 0;
                    if !pos.token_episode {
                        self.backoff.reset();
                    }
                    if streaming {
                        stream_failures = 0;
                    }
                    if !delay.is_zero() && !self.sleep(delay).await {
                        return ReadEnd::Cancelled;
                    }
                    continue;
                }
                Step::Failed(e) => e,
            };
            match failed.reason() {
                Reason::ChatEnded => {
                    // streamList cannot tell an ended chat from a disabled
                    // one (FAILED_PRECONDITION): the video says which.
                    if streaming && self.still_live(chat).await {
                        self.report(&failed, "reading the chat");
                        return ReadEnd::Lost(ApiError::Stream {
                            reason: Reason::ChatDisabled,
                            code: "FailedPrecondition".into(),
                            message: "the broadcast is live but its chat is disabled".into(),
                        });
                    }
                    self.send_chat_ended(&mut pos);
                    return ReadEnd::Ended;
                }
                Reason::ChatDisabled | Reason::ChatNotFound | Reason::NotFound => {
                    return ReadEnd::Lost(failed);
                }
                Reason::PageTokenInvalid => {
                    // One gap and one log line per episode; the backoff
                    // grows until a page token is accepted again.
                    if pos.token_episode {
                        self.count(&failed);
                        pos.token = None;
                    } else {
                        self.report(&failed, "resuming the chat");
                        self.lose_position(&mut pos, "page_token_invalid");
                        pos.token_episode = true;
                    }
                    if !self.wait_for(&failed, "resuming the chat").await {
                        return ReadEnd::Cancelled;
                    }
                }
                Reason::Malformed | Reason::TooLarge => {
                    pos.refused += 1;
                    if pos.refused >= REFUSED_PAGE_ATTEMPTS && pos.token.is_some() {
                        pos.refused = 0;
                        metrics::counter!("chatbus_ingestor_youtube_pages_skipped_total")
                            .increment(1);
                        tracing::warn!(platform = PLATFORM_YOUTUBE, channel = %self.key, attempts = REFUSED_PAGE_ATTEMPTS, error = %failed, "a chat page was refused {REFUSED_PAGE_ATTEMPTS} times in a row: skipping past it to the chat's newest messages (a gap covers what may be lost)");
                        self.lose_position(&mut pos, "page_refused");
                    }
                    if !self.wait_after(&failed, "reading the chat").await {
                        return ReadEnd::Cancelled;
                    }
                }
                Reason::StreamUnavailable => {
                    self.report(&failed, "opening the chat stream");
                    self.shared
                        .stream_unavailable_for(POLL_AFTER_STREAM_FAILURES);
                    tracing::warn!(platform = PLATFORM_YOUTUBE, channel = %self.key, "streamList is not available: polling liveChatMessages.list instead, trying the stream again in 10 minutes");
                }
                reason if streaming && reason.is_unreachable() => {
                    stream_failures += 1;
                    if stream_failures >= STREAM_FAILURES_BEFORE_POLLING {
                        stream_failures = 0;
                        poll_until = Some(tokio::time::Instant::now() + POLL_AFTER_STREAM_FAILURES);
                        tracing::warn!(platform = PLATFORM_YOUTUBE, channel = %self.key, "the chat stream failed {STREAM_FAILURES_BEFORE_POLLING} times in a row: polling liveChatMessages.list for 10 minutes");
                        self.report(&failed, "reading the chat stream");
                        continue;
                    }
                    if !self.wait_after(&failed, "reading the chat stream").await {
                        return ReadEnd::Cancelled;
                    }
                }
                _ => {
                    if !self.wait_after(&failed, "reading the chat").await {
                        return ReadEnd::Cancelled;
                    }
                }
            }
        }
    }

    /// Whether the chat's broadcast is still live (so its chat was
    /// disabled, not ended).
    async fn still_live(&self, chat: &LiveChat) -> bool {
        match self
            .shared
            .api
            .videos(std::slice::from_ref(&chat.video_id))
            .await
        {
            Ok(list) => list
                .iter()
                .any(|v| v.id == chat.video_id && v.broadcast() == "live"),
            Err(_) => false,
        }
    }

    /// Opens the stream from the page token and reads it until it ends;
    /// also says whether it opened.
    async fn stream_session(&mut self, chat: &LiveChat, pos: &mut Position) -> (Step, bool) {
        let Some(client) = self.shared.stream.clone() else {
            return (Step::Continue(Duration::ZERO), false);
        };
        let opened = tokio::select! {
            () = self.cancel.cancelled() => return (Step::Cancelled, false),
            r = client.open(&chat.live_chat_id, pos.token.as_deref()) => r,
        };
        let mut stream = match opened {
            Ok(s) => s,
            Err(e) => return (Step::Failed(e), false),
        };
        if pos.token.is_some() {
            pos.token_episode = false;
        }
        let max_items = self.shared.tuning.limits.max_page_items;
        self.reading(chat, "stream");
        metrics::gauge!("chatbus_ingestor_youtube_streams").increment(1.0);
        let started = tokio::time::Instant::now();
        let mut pages = 0u64;
        let step = loop {
            let next = tokio::select! {
                () = self.cancel.cancelled() => break Step::Cancelled,
                m = stream.message() => m,
            };
            match next {
                Ok(Some(page)) if page.items.len() > max_items => {
                    break Step::Failed(ApiError::TooLarge(format!(
                        "a page of {} messages, more than YOUTUBE_MAX_PAGE_ITEMS ({max_items})",
                        page.items.len()
                    )));
                }
                Ok(Some(page)) => {
                    pages += 1;
                    let items = page.items.iter().map(message_json).collect();
                    if self.page(pos, items, page.next_page_token, page.offline_at) {
                        break Step::Ended;
                    }
                }
                // A clean end: open it again from the page token. At once
                // after a stream that lasted; after a second if it ended at
                // once (never spin).
                Ok(None) => {
                    let quick = started.elapsed() < Duration::from_secs(5) && pages <= 1;
                    tracing::debug!(platform = PLATFORM_YOUTUBE, channel = %self.key, pages, "the chat stream ended; resuming");
                    break Step::Continue(if quick {
                        Duration::from_secs(1)
                    } else {
                        Duration::from_millis(50)
                    });
                }
                Err(status) => break Step::Failed(client.error(&status, pos.token.is_some())),
            }
        };
        metrics::gauge!("chatbus_ingestor_youtube_streams").decrement(1.0);
        (step, true)
    }

    /// One `liveChatMessages.list` call; waits what YouTube asks before the
    /// next.
    ///
    /// The wait is YouTube's `pollingIntervalMillis` clamped to
    /// `YOUTUBE_MIN_POLL_INTERVAL`..=`YOUTUBE_MAX_POLL_INTERVAL`, and never
    /// shorter than what the daily quota affords every polled chat; a
    /// clamped interval shows in `/channels`.
    async fn poll_once(&mut self, chat: &LiveChat, pos: &mut Position) -> Step {
        let with_token = pos.token.is_some();
        let result = tokio::select! {
            () = self.cancel.cancelled() => return Step::Cancelled,
            r = self.shared.api.chat_messages(&chat.live_chat_id, pos.token.as_deref()) => r,
        };
        match result {
            Ok(page) => {
                if with_token {
                    pos.token_episode = false;
                }
                self.reading(chat, "poll");
                let asked = page.polling_interval.unwrap_or(DEFAULT_POLL_INTERVAL);
                let (interval, clamped) = self.shared.tuning.limits.poll_interval(asked);
                let polled = self.shared.polling.load(Ordering::SeqCst);
                let paced = self.shared.quota.poll_interval(polled);
                let delay = interval.max(paced);
                let mut detail = self.detail(Some(chat), Some("poll"));
                detail["poll_interval_ms"] = json!(delay.as_millis() as u64);
                if clamped != Clamped::No {
                    detail["poll_interval_clamped"] = json!({
                        "asked_ms": asked.as_millis() as u64,
                        "to": if clamped == Clamped::Floor { "YOUTUBE_MIN_POLL_INTERVAL" } else { "YOUTUBE_MAX_POLL_INTERVAL" },
                    });
                }
                if paced > interval {
                    detail["poll_interval_by_quota"] = json!(true);
                }
                self.manager().set_detail(&self.key, Some(detail));
                if self.page(pos, page.items, page.next_page_token, page.offline_at) {
                    Step::Ended
                } else {
                    Step::Continue(delay)
                }
            }
            Err(e) => Step::Failed(e),
        }
    }

    /// The chat is being read (again): `joined`, and the gap of an outage
    /// that came before, if any.
    fn reading(&self, chat: &LiveChat, via: &str) {
        let now = Utc::now();
        if !matches!(
            self.manager().state(&self.key),
            Some(JoinState::Joined { .. })
        ) {
            self.manager()
                .set_state(&self.key, JoinState::Joined { since: now });
        }
        self.manager()
            .set_detail(&self.key, Some(self.detail(Some(chat), Some(via))));
        if let Some(gap) = self.manager().on_resumed(&self.key, now, None) {
            self.emit(&[gap]);
        }
    }

    /// Normalises and emits a page. True if it ends the chat.
    fn page(
        &self,
        pos: &mut Position,
        items: Vec<serde_json::Value>,
        next_token: Option<String>,
        offline_at: Option<String>,
    ) -> bool {
        let now = Utc::now();
        let mut events = Vec::with_capacity(items.len());
        let mut ended = false;
        let mut repeats = 0u64;
        for item in &items {
            let n = pos.normaliser.normalise(&pos.ctx, item, now);
            if !pos.seen.insert(n.event.id.clone(), ()) {
                repeats += 1;
                continue;
            }
            match &n.problem {
                Some(Problem::Malformed(why)) => {
                    metrics::counter!("chatbus_ingestor_youtube_bad_messages_total", "reason" => "malformed").increment(1);
                    tracing::warn!(platform = PLATFORM_YOUTUBE, channel = %self.key, id = %n.event.id, error = %why, "a chat message is not what the API documents; carried as other_notice with the resource in raw");
                }
                Some(Problem::UnknownType(t)) => {
                    metrics::counter!("chatbus_ingestor_youtube_bad_messages_total", "reason" => "unknown_type").increment(1);
                    tracing::warn!(platform = PLATFORM_YOUTUBE, channel = %self.key, id = %n.event.id, message_type = %t, "unknown chat message type; carried as other_notice with the resource in raw");
                }
                None => {}
            }
            if n.ends_chat {
                ended = true;
                pos.chat_ended_sent = true;
            }
            events.push(n.event);
        }
        if repeats > 0 {
            metrics::counter!("chatbus_ingestor_youtube_repeats_dropped_total").increment(repeats);
        }
        if let Some(token) = next_token.filter(|t| !t.is_empty()) {
            pos.token = Some(token);
        }
        pos.synced_at = Some(now);
        self.emit(&events);
        ended || offline_at.is_some()
    }

    /// A `chat_ended` event when the chat ended without YouTube's own
    /// `chatEndedEvent` (its `offlineAt`, or a `liveChatEnded` answer).
    fn send_chat_ended(&self, pos: &mut Position) {
        if pos.chat_ended_sent {
            return;
        }
        pos.chat_ended_sent = true;
        self.emit(&[normalise::chat_ended(&pos.ctx, Utc::now())]);
    }

    /// The position in the chat is lost: reading starts again from the
    /// recent messages (repeats are dropped) and a gap covers what may be
    /// missing.
    fn lose_position(&self, pos: &mut Position, reason: &str) {
        pos.token = None;
        let since = pos.synced_at.unwrap_or_else(Utc::now);
        self.manager().mark_outage(&self.key, since, reason);
    }

    fn emit(&self, events: &[ChatEvent]) {
        if events.is_empty() {
            return;
        }
        self.shared.sink.emit(events);
        self.manager().on_events(events);
    }

    /// Counts an error (without a log line).
    fn count(&self, e: &ApiError) {
        metrics::counter!("chatbus_ingestor_youtube_errors_total", "reason" => e.reason().as_str())
            .increment(1);
    }

    /// Logs an error once, and counts it.
    fn report(&self, e: &ApiError, what: &str) {
        let reason = e.reason();
        if reason == Reason::QuotaWaiting {
            return;
        }
        self.count(e);
        if reason.needs_human() {
            tracing::error!(platform = PLATFORM_YOUTUBE, channel = %self.key, reason = reason.as_str(), error = %e, "{what} failed: check YOUTUBE_API_KEY / YOUTUBE_LOGIN and what they may read");
        } else {
            tracing::warn!(platform = PLATFORM_YOUTUBE, channel = %self.key, reason = reason.as_str(), error = %e, "{what} failed; retrying");
        }
    }

    /// Reports `e` and waits as it asks: until the quota resets, or the
    /// next backoff step. False if cancelled.
    async fn wait_after(&mut self, e: &ApiError, what: &str) -> bool {
        self.report(e, what);
        self.wait_for(e, what).await
    }

    /// Waits as `e` asks (as [`Follower::wait_after`], without reporting).
    async fn wait_for(&mut self, e: &ApiError, what: &str) -> bool {
        let reason = e.reason();
        let delay = match reason {
            Reason::QuotaExceeded | Reason::QuotaWaiting => {
                let now = Utc::now();
                let until = self
                    .shared
                    .quota
                    .blocked_until(now)
                    .unwrap_or(now + chrono::Duration::seconds(1));
                (until - now).to_std().unwrap_or(Duration::from_secs(1))
            }
            _ => {
                self.backoff.failed()
            }
        };
        self.wait(reason.as_str(), format!("{what}: {e}"), delay)
            .await
    }

    /// Shows `waiting` with `reason` and sleeps `delay`. False if
    /// cancelled.
    async fn wait(&self, reason: &str, detail: String, delay: Duration) -> bool {
        let now = Utc::now();
        let since = match self.manager().state(&self.key) {
            Some(JoinState::Waiting {
                since, reason: r, ..
            }) if r == reason => since,
            _ => now,
        };
        self.manager().set_state(
            &self.key,
            JoinState::Waiting {
                since,
                reason: reason.to_owned(),
                detail: Some(detail),
                next_check: chrono::Duration::from_std(delay).ok().map(|d| now + d),
            },
        );
        self.sleep(delay).await
    }

    async fn sleep(&self, delay: Duration) -> bool {
        tokio::select! {
            () = self.cancel.cancelled() => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

impl super::settings::LiveCheck {
    /// Units one check of a channel costs.
    pub fn cost(self) -> u64 {
        match self {
            Self::Uploads => Call::PlaylistItemsList.cost() + Call::VideosList.cost(),
            Self::Search => Call::SearchList.cost() + Call::VideosList.cost(),
        }
    }
}

/// How long a channel that is not live waits before the next check:
/// `YOUTUBE_OFFLINE_POLL_INTERVAL`, or what the quota affords for every
/// followed channel.
fn offline_interval(shared: &Shared) -> Duration {
    if let Some(fixed) = shared.tuning.offline_poll_interval {
        return fixed;
    }
    let (channels, videos) = shared.following();
    let per_channel = shared.tuning.live_check.cost();
    // A video entry's check is one videos.list.
    let cost = per_channel * channels as u64 + videos as u64;
    let mean = cost as f64 / (channels + videos).max(1) as f64;
    shared
        .quota
        .offline_interval((channels + videos).max(1), mean.ceil() as u64)
}

/// While a chat is read: every offline interval, the broadcast's
/// `videos.list` (1 unit, within the share the interval is computed for)
/// for its viewers and title; a change is a `stream_update`. A failed look
/// changes nothing. Returns only when cancelled.
async fn watch_viewers(
    shared: Arc<Shared>,
    channel: String,
    video: String,
    status: Arc<std::sync::Mutex<LiveStatus>>,
    cancel: CancellationToken,
) {
    loop {
        let wait = offline_interval(&shared);
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let videos = tokio::select! {
            () = cancel.cancelled() => return,
            r = shared.api.videos(std::slice::from_ref(&video)) => r,
        };
        let Ok(videos) = videos else { continue };
        let Some(v) = videos.iter().find(|v| v.id == video && v.broadcast() == "live") else {
            // Over or gone: the chat reader sees the end and says so.
            continue;
        };
        let events = status
            .lock()
            .expect("status lock")
            .observe(&channel, Some(&Broadcast::of(v)), Utc::now());
        if !events.is_empty() {
            shared.sink.emit(&events);
        }
    }
}
