//! A fake YouTube on 127.0.0.1, speaking the real wire protocols: the Data
//! API's HTTP/JSON (`videos.list`, `channels.list`, `playlistItems.list`,
//! `search.list`, `liveChatMessages.list`, with Google's error format) and
//! the gRPC `V3DataLiveChatMessageService/StreamList` (HTTP/2 without TLS).
//!
//! Tests steer it: channels and their broadcasts (live, scheduled, ended),
//! chat messages of every type ([`msg`]), errors injected per call, the
//! quota running out, streams that drop mid-page or end cleanly, streaming
//! switched off (`UNIMPLEMENTED`), and hostile answers (a huge or endless
//! body, a huge error message, a page of too many messages, any body at
//! all, every page token refused); and read what it saw: calls, quota
//! spent, the page tokens streams were opened with.
//!
//! It also takes the writes a sender makes (`liveChatMessages.insert` and
//! `.delete`, `liveChatBans.insert` and `.delete`), bearer token only: an
//! inserted message joins its chat as a message of the sender's channel
//! ([`FakeYoutube::set_sender`]), so the reader reads it back; a delete or
//! ban adds YouTube's own `messageDeletedEvent` / `userBannedEvent`. Every
//! write is logged ([`FakeYoutube::writes`]) and charged.
//!
//! Page tokens are `p<n>`: the next message's index in the chat. A request
//! without one gets the chat's last [`HISTORY`] messages, as YouTube sends
//! only recent messages first.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use futures::{Stream, StreamExt as _};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use warp::Filter;
use warp::http::StatusCode;

/// The protobuf messages and server of `stream_list.proto`.
#[allow(
    unreachable_pub,
    dead_code,
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod pb {
    tonic::include_proto!("youtube.api.v3");
}

/// The API key the fake accepts (`x-goog-api-key`).
pub const API_KEY: &str = "fake-youtube-api-key";
/// The OAuth access token the fake accepts (`Authorization: Bearer`).
pub const ACCESS_TOKEN: &str = "fake-youtube-access-token";
/// Messages a request without a page token gets.
pub const HISTORY: usize = 50;
/// Most messages in one page.
pub const PAGE: usize = 100;

/// A call the fake serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FakeCall {
    /// `videos.list`.
    Videos,
    /// `channels.list`.
    Channels,
    /// `playlistItems.list`.
    PlaylistItems,
    /// `search.list`.
    Search,
    /// `liveChatMessages.list`.
    ChatList,
    /// `liveChatMessages.streamList`.
    StreamList,
    /// `liveChatMessages.insert`.
    ChatInsert,
    /// `liveChatMessages.delete`.
    ChatDelete,
    /// `liveChatBans.insert`.
    BanInsert,
    /// `liveChatBans.delete`.
    BanDelete,
}

impl FakeCall {
    /// Its quota cost.
    pub fn cost(self) -> u64 {
        match self {
            Self::Videos | Self::Channels | Self::PlaylistItems => 1,
            Self::Search => 100,
            Self::ChatList | Self::StreamList => 5,
            Self::ChatInsert | Self::ChatDelete => 20,
            Self::BanInsert | Self::BanDelete => 50,
        }
    }
}

/// An error the fake answers, in Google's JSON format or as a gRPC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FakeError {
    /// 403 `quotaExceeded` / `RESOURCE_EXHAUSTED`.
    QuotaExceeded,
    /// 403 `liveChatEnded` / `FAILED_PRECONDITION`.
    ChatEnded,
    /// 403 `liveChatDisabled` / `FAILED_PRECONDITION`.
    ChatDisabled,
    /// 404 `liveChatNotFound` / `NOT_FOUND`.
    ChatNotFound,
    /// 403 `forbidden` / `PERMISSION_DENIED`.
    Forbidden,
    /// 403 `rateLimitExceeded` / `RESOURCE_EXHAUSTED`.
    RateLimited,
    /// 400 `pageTokenInvalid` / `INVALID_ARGUMENT`.
    PageTokenInvalid,
    /// 503 `backendError` / `UNAVAILABLE`.
    ServerError,
    /// 200 with a body that is not JSON (gRPC: `INTERNAL`).
    Malformed,
    /// Answer normally after this delay (a timeout for short timeouts).
    Delay(Duration),
    /// Hostile: 200 with a JSON body of this many bytes, sent chunked (no
    /// `Content-Length`), made as it is sent.
    HugeBody(usize),
    /// Hostile: 400 with a Google error whose `message` is this many bytes,
    /// sent chunked.
    HugeError(usize),
    /// Hostile: 200 with a chunked body that never ends.
    Endless,
    /// Hostile: a page of this many text messages (REST, or one streamList
    /// message).
    ManyItems(usize),
    /// 200 with exactly this body (e.g. JSON with a lone surrogate escape).
    Body(String),
}

impl FakeError {
    fn http(&self) -> (u16, &'static str, &'static str, &'static str) {
        match self {
            Self::QuotaExceeded => (
                403,
                "quotaExceeded",
                "youtube.quota",
                "The request cannot be completed because you have exceeded your <a href=\"/youtube/v3/getting-started#quota\">quota</a>.",
            ),
            Self::ChatEnded => (
                403,
                "liveChatEnded",
                "youtube.liveChat",
                "The live chat is no longer live.",
            ),
            Self::ChatDisabled => (
                403,
                "liveChatDisabled",
                "youtube.liveChat",
                "Live chat is not enabled for the specified broadcast.",
            ),
            Self::ChatNotFound => (
                404,
                "liveChatNotFound",
                "youtube.liveChat",
                "The live chat that you are trying to retrieve cannot be found.",
            ),
            Self::Forbidden => (
                403,
                "forbidden",
                "global",
                "The caller does not have permission",
            ),
            Self::PageTokenInvalid => (
                400,
                "pageTokenInvalid",
                "youtube.parameter",
                "The request specifies an invalid page token.",
            ),
            Self::ServerError => (503, "backendError", "global", "Backend Error"),
            Self::RateLimited => (
                403,
                "rateLimitExceeded",
                "youtube.liveChat",
                "The request was sent too quickly after the previous one.",
            ),
            _ => (200, "", "", ""),
        }
    }

    fn status(&self) -> Status {
        match self {
            Self::QuotaExceeded => {
                Status::resource_exhausted("Resource has been exhausted (e.g. check quota).")
            }
            Self::RateLimited => Status::resource_exhausted("Rate limit exceeded."),
            Self::ChatEnded | Self::ChatDisabled => {
                Status::failed_precondition("Precondition check failed.")
            }
            Self::ChatNotFound => Status::not_found("Requested entity was not found."),
            Self::Forbidden => Status::permission_denied("The caller does not have permission"),
            Self::PageTokenInvalid => {
                Status::invalid_argument("Request contains an invalid argument.")
            }
            Self::ServerError => Status::unavailable("The service is currently unavailable."),
            Self::Delay(_) => Status::ok(""),
            _ => Status::internal("Internal error encountered."),
        }
    }
}

/// Google's JSON error body.
pub fn google_error(code: u16, reason: &str, domain: &str, message: &str) -> Value {
    json!({
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}]
        }
    })
}

/// How a stream ends when told to drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEnd {
    /// With `UNAVAILABLE`, as when the connection is lost.
    Error,
    /// Cleanly (trailers OK), as YouTube ends streams from time to time.
    Eof,
}

/// How a broadcast ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// A `chatEndedEvent` in the chat, then `offlineAt`.
    ChatEndedEvent,
    /// Only `offlineAt` on the next page.
    OfflineAt,
    /// Nothing in the chat: calls answer `liveChatEnded` from now on.
    Silently,
}

#[derive(Debug, Default)]
struct FakeChannel {
    handle: String,
    /// Newest first.
    uploads: Vec<String>,
}

#[derive(Debug, Clone)]
struct FakeVideo {
    channel: String,
    broadcast: String,
    chat: Option<String>,
    /// `liveStreamingDetails.concurrentViewers` while live.
    viewers: Option<u64>,
}

#[derive(Debug, Default)]
struct FakeChat {
    messages: Vec<Value>,
    offline_at: Option<String>,
    /// Calls answer `liveChatEnded`.
    gone: bool,
    disabled: bool,
}

/// Which bearer tokens the fake accepts.
#[derive(Clone)]
struct TokenCheck(Arc<dyn Fn(&str) -> bool + Send + Sync>);

impl std::fmt::Debug for TokenCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenCheck")
    }
}

impl Default for TokenCheck {
    fn default() -> Self {
        Self(Arc::new(|t| t == ACCESS_TOKEN))
    }
}

/// A write the fake was asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeWrite {
    /// Which.
    pub call: FakeCall,
    /// The bearer token it carried.
    pub token: Option<String>,
    /// Its `id` query parameter (deletes).
    pub id: Option<String>,
    /// Its JSON body (inserts).
    pub body: Value,
    /// The HTTP status answered.
    pub status: u16,
}

#[derive(Debug, Default)]
struct State {
    tokens: TokenCheck,
    writes: Vec<FakeWrite>,
    /// The sender's channel id and name (authors of inserted messages).
    sender: Option<(String, String)>,
    /// Ban id to its chat and user.
    bans: BTreeMap<String, (String, String)>,
    next_write: u64,
    channels: BTreeMap<String, FakeChannel>,
    videos: BTreeMap<String, FakeVideo>,
    chats: BTreeMap<String, FakeChat>,
    errors: HashMap<FakeCall, VecDeque<FakeError>>,
    quota_exhausted: bool,
    streaming: bool,
    polling_interval_millis: u64,
    drop_after: VecDeque<(usize, StreamEnd)>,
    resume_overlap: usize,
    /// Bumped by `kick_streams`: streams opened before end as it says.
    kick: (u64, Option<StreamEnd>),
    calls: BTreeMap<FakeCall, u64>,
    quota: u64,
    stream_requests: Vec<(String, Option<String>)>,
    open_streams: usize,
    refuse_tokens: bool,
    refused_tokens: u64,
}

/// What tests see of the fake.
#[derive(Debug, Clone)]
pub struct FakeYoutube {
    rest: SocketAddr,
    grpc: SocketAddr,
    state: Arc<Mutex<State>>,
    version: Arc<watch::Sender<u64>>,
    cancel: CancellationToken,
}

impl FakeYoutube {
    /// Starts both servers on 127.0.0.1 (ports chosen by the OS).
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State {
            streaming: true,
            polling_interval_millis: 200,
            ..State::default()
        }));
        let (version, _) = watch::channel(0u64);
        let rest_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake YouTube API");
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake YouTube gRPC");
        let fake = Self {
            rest: rest_listener.local_addr().expect("addr"),
            grpc: grpc_listener.local_addr().expect("addr"),
            state,
            version: Arc::new(version),
            cancel: CancellationToken::new(),
        };
        {
            let routes = rest_routes(fake.clone());
            let cancel = fake.cancel.clone();
            tokio::spawn(async move {
                warp::serve(routes)
                    .incoming(rest_listener)
                    .graceful(async move { cancel.cancelled().await })
                    .run()
                    .await;
            });
        }
        {
            let svc = pb::v3_data_live_chat_message_service_server::V3DataLiveChatMessageServiceServer::new(
                Grpc(fake.clone()),
            );
            let cancel = fake.cancel.clone();
            let incoming = tonic::transport::server::TcpIncoming::from(grpc_listener);
            tokio::spawn(async move {
                let _ = tonic::transport::Server::builder()
                    .serve_with_incoming_shutdown(svc, incoming, async move {
                        cancel.cancelled().await;
                    })
                    .await;
            });
        }
        fake
    }

    /// `YOUTUBE_API_URL` for it.
    pub fn api_url(&self) -> String {
        format!("http://{}/youtube/v3", self.rest)
    }

    /// `YOUTUBE_GRPC_URL` for it.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.grpc)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("fake youtube lock")
    }

    /// Wakes the streams after a change.
    fn changed(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    /// Adds a channel `UC…` with `handle` (with its `@`).
    pub fn add_channel(&self, id: &str, handle: &str) {
        self.lock().channels.insert(
            id.to_owned(),
            FakeChannel {
                handle: handle.trim_start_matches('@').to_lowercase(),
                uploads: Vec::new(),
            },
        );
    }

    /// Adds a video of `channel` that is not a broadcast.
    pub fn add_video(&self, channel: &str, video: &str) {
        self.put_video(channel, video, "none", None);
    }

    /// Schedules a broadcast `video` of `channel` (not live yet).
    pub fn schedule(&self, channel: &str, video: &str) {
        self.put_video(channel, video, "upcoming", None);
    }

    /// Starts (or schedules then starts) broadcast `video` of `channel`,
    /// with a chat. Returns the chat id.
    pub fn go_live(&self, channel: &str, video: &str) -> String {
        let chat = format!("chat-{video}");
        self.put_video(channel, video, "live", Some(chat.clone()));
        self.lock().chats.entry(chat.clone()).or_default();
        self.changed();
        chat
    }

    fn put_video(&self, channel: &str, video: &str, broadcast: &str, chat: Option<String>) {
        let mut s = self.lock();
        s.videos.insert(
            video.to_owned(),
            FakeVideo {
                channel: channel.to_owned(),
                broadcast: broadcast.to_owned(),
                chat,
                viewers: None,
            },
        );
        let ch = s.channels.entry(channel.to_owned()).or_default();
        if !ch.uploads.iter().any(|v| v == video) {
            ch.uploads.insert(0, video.to_owned());
        }
    }

    /// A live broadcast's `concurrentViewers` (shown while it is live).
    pub fn set_viewers(&self, video: &str, viewers: u64) {
        if let Some(v) = self.lock().videos.get_mut(video) {
            v.viewers = Some(viewers);
        }
    }

    /// Ends broadcast `video` as `how` says.
    pub fn end_broadcast(&self, video: &str, how: End) {
        {
            let mut s = self.lock();
            let Some(v) = s.videos.get_mut(video) else {
                return;
            };
            v.broadcast = "completed".into();
            let chat = v.chat.take();
            if let Some(chat) = chat
                && let Some(c) = s.chats.get_mut(&chat)
            {
                match how {
                    End::ChatEndedEvent => {
                        let n = c.messages.len();
                        let mut ended = msg::chat_ended(&format!("{chat}-ended-{n}"));
                        ended["snippet"]["liveChatId"] = json!(chat);
                        c.messages.push(ended);
                        c.offline_at = Some(now());
                    }
                    End::OfflineAt => c.offline_at = Some(now()),
                    End::Silently => c.gone = true,
                }
            }
        }
        self.changed();
    }

    /// The broadcast's chat is switched off (`liveChatDisabled`); the video
    /// stays live without a chat.
    pub fn disable_chat(&self, video: &str) {
        {
            let mut s = self.lock();
            let chat = s.videos.get_mut(video).and_then(|v| v.chat.take());
            if let Some(chat) = chat
                && let Some(c) = s.chats.get_mut(&chat)
            {
                c.disabled = true;
            }
        }
        self.changed();
    }

    /// Appends `items` to chat `chat` (their `snippet.liveChatId` is set).
    pub fn push(&self, chat: &str, items: impl IntoIterator<Item = Value>) {
        {
            let mut s = self.lock();
            let c = s.chats.entry(chat.to_owned()).or_default();
            for mut item in items {
                if item["snippet"].is_object() && item["snippet"].get("liveChatId").is_none() {
                    item["snippet"]["liveChatId"] = json!(chat);
                }
                c.messages.push(item);
            }
        }
        self.changed();
    }

    /// `pollingIntervalMillis` of `liveChatMessages.list` answers.
    pub fn set_polling_interval(&self, millis: u64) {
        self.lock().polling_interval_millis = millis;
    }

    /// Whether streamList is served (else `UNIMPLEMENTED`).
    pub fn set_streaming(&self, available: bool) {
        self.lock().streaming = available;
    }

    /// The next `times` calls of `call` answer `error`.
    pub fn fail_next(&self, call: FakeCall, error: FakeError, times: usize) {
        let mut s = self.lock();
        let q = s.errors.entry(call).or_default();
        for _ in 0..times {
            q.push_back(error.clone());
        }
    }

    /// While true every call answers `quotaExceeded`.
    pub fn set_quota_exhausted(&self, exhausted: bool) {
        self.lock().quota_exhausted = exhausted;
        self.changed();
    }

    /// The next stream opened ends after sending `items` messages, as `how`
    /// says (queued: one per stream).
    pub fn drop_stream_after(&self, items: usize, how: StreamEnd) {
        self.lock().drop_after.push_back((items, how));
        self.changed();
    }

    /// Ends every stream open now, as `how` says (a connection lost, or a
    /// clean end).
    pub fn kick_streams(&self, how: StreamEnd) {
        {
            let mut s = self.lock();
            s.kick = (s.kick.0 + 1, Some(how));
        }
        self.changed();
    }

    /// A stream resumed from a page token starts this many messages before
    /// it (the repeats a client must drop).
    pub fn set_resume_overlap(&self, items: usize) {
        self.lock().resume_overlap = items;
    }

    /// Accepts the bearer tokens `check` approves (e.g. the fake OAuth
    /// provider's valid ones) instead of [`ACCESS_TOKEN`].
    pub fn accept_tokens(&self, check: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.lock().tokens = TokenCheck(Arc::new(check));
    }

    /// Whether `authorization` (`Bearer <token>`) carries an accepted token.
    fn token_ok(&self, authorization: &str) -> bool {
        let check = self.lock().tokens.clone();
        authorization
            .strip_prefix("Bearer ")
            .is_some_and(|t| (check.0)(t))
    }

    /// Inserted messages come from channel `channel_id` named `name`
    /// (default `UCchatbus000000000000000`, `chatbus`).
    pub fn set_sender(&self, channel_id: &str, name: &str) {
        self.lock().sender = Some((channel_id.to_owned(), name.to_owned()));
    }

    /// Every write so far, in order.
    pub fn writes(&self) -> Vec<FakeWrite> {
        self.lock().writes.clone()
    }

    /// Bans in force (placed and not lifted): ban id to chat and user.
    pub fn bans(&self) -> BTreeMap<String, (String, String)> {
        self.lock().bans.clone()
    }

    /// Calls of `call` so far.
    pub fn calls(&self, call: FakeCall) -> u64 {
        self.lock().calls.get(&call).copied().unwrap_or(0)
    }

    /// Quota units spent so far.
    pub fn quota_spent(&self) -> u64 {
        self.lock().quota
    }

    /// Every stream request: its chat and page token.
    pub fn stream_requests(&self) -> Vec<(String, Option<String>)> {
        self.lock().stream_requests.clone()
    }

    /// Streams open now.
    pub fn open_streams(&self) -> usize {
        self.lock().open_streams
    }

    /// While true, every request with a page token (REST or stream) is
    /// answered `pageTokenInvalid`, as a YouTube that lost them.
    pub fn refuse_page_tokens(&self, refuse: bool) {
        self.lock().refuse_tokens = refuse;
    }

    /// Requests refused because of their page token so far.
    pub fn refused_tokens(&self) -> u64 {
        self.lock().refused_tokens
    }

    /// Counts a call; the error it must answer, if any.
    fn begin(&self, call: FakeCall) -> Option<FakeError> {
        let mut s = self.lock();
        *s.calls.entry(call).or_default() += 1;
        s.quota += call.cost();
        if s.quota_exhausted {
            return Some(FakeError::QuotaExceeded);
        }
        s.errors.get_mut(&call).and_then(VecDeque::pop_front)
    }

    /// A page of `chat` from `token`: messages, next token, and whether the
    /// chat is offline.
    fn page(
        &self,
        chat: &str,
        token: Option<&str>,
    ) -> Result<(Vec<Value>, String, Option<String>), FakeError> {
        let s = self.lock();
        let c = s.chats.get(chat).ok_or(FakeError::ChatNotFound)?;
        if c.disabled {
            return Err(FakeError::ChatDisabled);
        }
        if c.gone {
            return Err(FakeError::ChatEnded);
        }
        let from = start_index(token, c.messages.len(), 0)?;
        let to = c.messages.len().min(from + PAGE);
        Ok((
            c.messages[from..to].to_vec(),
            format!("p{to}"),
            c.offline_at.clone().filter(|_| to == c.messages.len()),
        ))
    }
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// Where a page starts: the token's index (less `overlap`), or the last
/// [`HISTORY`] messages without a token.
fn start_index(token: Option<&str>, len: usize, overlap: usize) -> Result<usize, FakeError> {
    match token {
        None => Ok(len.saturating_sub(HISTORY)),
        Some(t) => {
            let n: usize = t
                .strip_prefix('p')
                .and_then(|n| n.parse().ok())
                .ok_or(FakeError::PageTokenInvalid)?;
            if n > len {
                return Err(FakeError::PageTokenInvalid);
            }
            Ok(n.saturating_sub(overlap))
        }
    }
}

// ------------------------------------------------------------ REST ----

type Query = HashMap<String, String>;

fn rest_routes(
    fake: FakeYoutube,
) -> impl Filter<Extract = (warp::reply::Response,), Error = warp::Rejection> + Clone {
    let writes = {
        let fake = fake.clone();
        warp::path("youtube")
            .and(warp::path("v3"))
            .and(warp::path::tail())
            .and(warp::post().or(warp::delete()).unify())
            .and(warp::method())
            .and(warp::query::<Query>())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::body::bytes())
            .and(warp::any().map(move || fake.clone()))
            .then(
                |tail: warp::path::Tail,
                 method: warp::http::Method,
                 q: Query,
                 auth: Option<String>,
                 body: bytes::Bytes,
                 fake: FakeYoutube| async move {
                    fake.write(tail.as_str(), &method, &q, auth.as_deref(), &body)
                        .await
                },
            )
    };
    let fake = warp::any().map(move || fake.clone());
    let reads = warp::path("youtube")
        .and(warp::path("v3"))
        .and(warp::path::tail())
        .and(warp::get())
        .and(warp::query::<Query>())
        .and(warp::header::optional::<String>("x-goog-api-key"))
        .and(warp::header::optional::<String>("authorization"))
        .and(fake)
        .then(
            |tail: warp::path::Tail,
             q: Query,
             key: Option<String>,
             auth: Option<String>,
             fake: FakeYoutube| async move {
                fake.rest(tail.as_str(), &q, key.as_deref(), auth.as_deref())
                    .await
            },
        );
    reads.or(writes).unify()
}

fn reply(status: u16, body: &Value) -> warp::reply::Response {
    let mut res = warp::reply::Response::new(body.to_string().into());
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    res.headers_mut().insert(
        "content-type",
        warp::http::HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    res
}

/// A body of `prefix`, `len` bytes of `x` in all, then `suffix`, sent
/// chunked and made as it is sent; endless when `len` is `None`.
fn chunked(
    status: u16,
    prefix: String,
    len: Option<usize>,
    suffix: &'static str,
) -> warp::reply::Response {
    use warp::Reply as _;
    const CHUNK: usize = 64 * 1024;
    let pad = len.map(|n| n.saturating_sub(prefix.len() + suffix.len()));
    let chunks = pad.map_or(usize::MAX, |p| p.div_ceil(CHUNK));
    let last = pad.map_or(CHUNK, |p| p - (chunks.saturating_sub(1)) * CHUNK);
    let body = std::iter::once(prefix.into_bytes())
        .chain((0..chunks).map(move |i| vec![b'x'; if i + 1 == chunks { last } else { CHUNK }]))
        .chain(std::iter::once(suffix.as_bytes().to_vec()))
        .map(Ok::<_, std::convert::Infallible>);
    let mut res = warp::reply::stream(futures::stream::iter(body)).into_response();
    *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    res.headers_mut().insert(
        "content-type",
        warp::http::HeaderValue::from_static("application/json; charset=UTF-8"),
    );
    res
}

/// A page of `n` distinct text messages of chat `chat`.
fn many_items(chat: &str, n: usize) -> Vec<Value> {
    let author = msg::author("UCflood00000000000000000", "Flood", &[]);
    (0..n)
        .map(|i| {
            let mut m = msg::text(&format!("flood-{i}"), &author, "flood");
            m["snippet"]["liveChatId"] = json!(chat);
            m
        })
        .collect()
}

fn error_reply(e: &FakeError) -> warp::reply::Response {
    match e {
        FakeError::HugeBody(n) => {
            return chunked(
                200,
                r#"{"kind":"youtube#liveChatMessageListResponse","items":[],"pad":""#.into(),
                Some(*n),
                r#""}"#,
            );
        }
        FakeError::HugeError(n) => {
            return chunked(
                400,
                r#"{"error":{"code":400,"errors":[{"reason":"badRequest"}],"message":""#.into(),
                Some(*n),
                r#""}}"#,
            );
        }
        FakeError::Endless => {
            return chunked(200, r#"{"items":[],"pad":""#.into(), None, "");
        }
        FakeError::Body(body) => {
            let mut res = warp::reply::Response::new(body.clone().into());
            res.headers_mut().insert(
                "content-type",
                warp::http::HeaderValue::from_static("application/json; charset=UTF-8"),
            );
            return res;
        }
        _ => {}
    }
    if *e == FakeError::Malformed {
        let mut res = warp::reply::Response::new("<html>not json</html>".into());
        res.headers_mut().insert(
            "content-type",
            warp::http::HeaderValue::from_static("application/json"),
        );
        return res;
    }
    let (code, reason, domain, message) = e.http();
    reply(code, &google_error(code, reason, domain, message))
}

impl FakeYoutube {
    async fn rest(
        &self,
        path: &str,
        q: &Query,
        key: Option<&str>,
        auth: Option<&str>,
    ) -> warp::reply::Response {
        let call = match path {
            "videos" => FakeCall::Videos,
            "channels" => FakeCall::Channels,
            "playlistItems" => FakeCall::PlaylistItems,
            "search" => FakeCall::Search,
            "liveChat/messages" => FakeCall::ChatList,
            _ => return reply(404, &google_error(404, "notFound", "global", "Not Found")),
        };
        let error = self.begin(call);
        if let Some(FakeError::Delay(d)) = &error {
            tokio::time::sleep(*d).await;
        } else if let Some(FakeError::ManyItems(n)) = &error {
            let items = many_items(q.get("liveChatId").map_or("", String::as_str), *n);
            return reply(
                200,
                &json!({"kind": "youtube#liveChatMessageListResponse", "pollingIntervalMillis": 200, "nextPageToken": "p0", "items": items}),
            );
        } else if let Some(e) = &error {
            return error_reply(e);
        }
        if call == FakeCall::ChatList && q.contains_key("pageToken") {
            let mut s = self.lock();
            if s.refuse_tokens {
                s.refused_tokens += 1;
                drop(s);
                return error_reply(&FakeError::PageTokenInvalid);
            }
        }
        match (key, auth) {
            (Some(API_KEY), _) => {}
            (_, Some(a)) if self.token_ok(a) => {}
            (Some(_), _) => {
                return reply(
                    400,
                    &google_error(400, "keyInvalid", "usageLimits", "Bad Request"),
                );
            }
            _ => {
                return reply(
                    401,
                    &google_error(
                        401,
                        "unauthorized",
                        "global",
                        "Request is missing required authentication credential.",
                    ),
                );
            }
        }
        let arg = |k: &str| q.get(k).map(String::as_str).unwrap_or_default();
        let body = match call {
            FakeCall::Videos => {
                let s = self.lock();
                let items: Vec<Value> = arg("id")
                    .split(',')
                    .filter_map(|id| s.videos.get(id).map(|v| video_json(id, v)))
                    .collect();
                json!({"kind": "youtube#videoListResponse", "etag": "e", "items": items, "pageInfo": {"totalResults": items.len(), "resultsPerPage": items.len()}})
            }
            FakeCall::Channels => {
                let s = self.lock();
                let found: Vec<Value> = if let Some(h) = q.get("forHandle") {
                    let h = h.trim_start_matches('@').to_lowercase();
                    s.channels
                        .iter()
                        .filter(|(_, c)| c.handle == h)
                        .map(|(id, c)| channel_json(id, c))
                        .collect()
                } else {
                    s.channels
                        .get(arg("id"))
                        .map(|c| channel_json(arg("id"), c))
                        .into_iter()
                        .collect()
                };
                json!({"kind": "youtube#channelListResponse", "etag": "e", "items": found})
            }
            FakeCall::PlaylistItems => {
                let s = self.lock();
                let max: usize = arg("maxResults").parse().unwrap_or(5);
                let channel = format!("UC{}", arg("playlistId").get(2..).unwrap_or_default());
                let items: Vec<Value> = s
                    .channels
                    .get(&channel)
                    .map(|c| c.uploads.iter().take(max).map(|v| json!({"kind": "youtube#playlistItem", "contentDetails": {"videoId": v}})).collect())
                    .unwrap_or_default();
                if !s.channels.contains_key(&channel) {
                    return reply(
                        404,
                        &google_error(
                            404,
                            "playlistNotFound",
                            "youtube.playlistItem",
                            "The playlist identified with the request's playlistId parameter cannot be found.",
                        ),
                    );
                }
                json!({"kind": "youtube#playlistItemListResponse", "items": items})
            }
            FakeCall::Search => {
                let s = self.lock();
                let items: Vec<Value> = s
                    .videos
                    .iter()
                    .filter(|(_, v)| v.channel == arg("channelId") && v.broadcast == arg("eventType"))
                    .map(|(id, _)| json!({"kind": "youtube#searchResult", "id": {"kind": "youtube#video", "videoId": id}}))
                    .collect();
                json!({"kind": "youtube#searchListResponse", "items": items})
            }
            FakeCall::ChatList => {
                match self.page(arg("liveChatId"), q.get("pageToken").map(String::as_str)) {
                    Ok((items, next, offline_at)) => {
                        let interval = self.lock().polling_interval_millis;
                        let mut body = json!({
                            "kind": "youtube#liveChatMessageListResponse",
                            "etag": "e",
                            "pollingIntervalMillis": interval,
                            "pageInfo": {"totalResults": items.len(), "resultsPerPage": items.len()},
                            "nextPageToken": next,
                            "items": items,
                        });
                        if let Some(at) = offline_at {
                            body["offlineAt"] = json!(at);
                        }
                        body
                    }
                    Err(e) => return error_reply(&e),
                }
            }
            FakeCall::StreamList
            | FakeCall::ChatInsert
            | FakeCall::ChatDelete
            | FakeCall::BanInsert
            | FakeCall::BanDelete => unreachable!("not a REST read"),
        };
        reply(200, &body)
    }
}

impl FakeYoutube {
    /// A write: checks the bearer token, charges the quota, answers an
    /// injected error, else carries it out and logs it.
    async fn write(
        &self,
        path: &str,
        method: &warp::http::Method,
        q: &Query,
        auth: Option<&str>,
        body: &[u8],
    ) -> warp::reply::Response {
        let post = method == warp::http::Method::POST;
        let call = match (path, post) {
            ("liveChat/messages", true) => FakeCall::ChatInsert,
            ("liveChat/messages", false) => FakeCall::ChatDelete,
            ("liveChat/bans", true) => FakeCall::BanInsert,
            ("liveChat/bans", false) => FakeCall::BanDelete,
            _ => return reply(404, &google_error(404, "notFound", "global", "Not Found")),
        };
        let token = auth
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(str::to_owned);
        let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let id = q.get("id").cloned();
        let (status, answer) = match self.begin(call) {
            Some(FakeError::Delay(d)) => {
                tokio::time::sleep(d).await;
                self.carry_out(call, auth, id.as_deref(), &body)
            }
            Some(e) => {
                let (code, reason, domain, message) = e.http();
                (code, google_error(code, reason, domain, message))
            }
            None => self.carry_out(call, auth, id.as_deref(), &body),
        };
        self.lock().writes.push(FakeWrite {
            call,
            token,
            id,
            body,
            status,
        });
        if status == 204 {
            let mut res = warp::reply::Response::new(Vec::new().into());
            *res.status_mut() = StatusCode::NO_CONTENT;
            return res;
        }
        reply(status, &answer)
    }

    /// Carries out a write: its status and answer.
    fn carry_out(
        &self,
        call: FakeCall,
        auth: Option<&str>,
        id: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        if !auth.is_some_and(|a| self.token_ok(a)) {
            return (
                401,
                google_error(
                    401,
                    "unauthorized",
                    "global",
                    "Request is missing required authentication credential.",
                ),
            );
        }
        let not_found = |reason: &str, what: &str| {
            (
                404,
                google_error(
                    404,
                    reason,
                    "youtube.liveChat",
                    &format!("{what} cannot be found."),
                ),
            )
        };
        let sn = &body["snippet"];
        let chat_id = sn["liveChatId"].as_str().unwrap_or_default().to_owned();
        let (result, changed) = {
            let mut s = self.lock();
            s.next_write += 1;
            let n = s.next_write;
            let (sender_id, sender_name) = s
                .sender
                .clone()
                .unwrap_or_else(|| ("UCchatbus000000000000000".to_owned(), "chatbus".to_owned()));
            let sender = msg::author(&sender_id, &sender_name, &["moderator"]);
            let live = |s: &State, chat: &str| -> Result<(), (u16, Value)> {
                match s.chats.get(chat) {
                    None => Err(not_found("liveChatNotFound", "The live chat")),
                    Some(c) if c.gone || c.offline_at.is_some() => {
                        Err(error_of(&FakeError::ChatEnded))
                    }
                    Some(c) if c.disabled => Err(error_of(&FakeError::ChatDisabled)),
                    Some(_) => Ok(()),
                }
            };
            match call {
                FakeCall::ChatInsert => match live(&s, &chat_id) {
                    Err(e) => (e, false),
                    Ok(()) => {
                        let text = sn["textMessageDetails"]["messageText"]
                            .as_str()
                            .unwrap_or_default();
                        let mut m = msg::text(&format!("sent-{n}"), &sender, text);
                        m["snippet"]["liveChatId"] = json!(chat_id);
                        s.chats
                            .get_mut(&chat_id)
                            .expect("live")
                            .messages
                            .push(m.clone());
                        ((200, m), true)
                    }
                },
                FakeCall::ChatDelete => {
                    let target = id.unwrap_or_default();
                    let chat = s.chats.iter().find_map(|(c, chat)| {
                        chat.messages
                            .iter()
                            .any(|m| m["id"] == target)
                            .then(|| c.clone())
                    });
                    match chat {
                        None => (not_found("liveChatMessageNotFound", "The message"), false),
                        Some(chat) => {
                            let mut m = msg::deleted(&format!("deleted-{n}"), &sender, target);
                            m["snippet"]["liveChatId"] = json!(chat);
                            s.chats.get_mut(&chat).expect("found").messages.push(m);
                            ((204, Value::Null), true)
                        }
                    }
                }
                FakeCall::BanInsert => match live(&s, &chat_id) {
                    Err(e) => (e, false),
                    Ok(()) => {
                        let user = sn["bannedUserDetails"]["channelId"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned();
                        let seconds =
                            (sn["type"] == "temporary").then(|| match &sn["banDurationSeconds"] {
                                Value::String(t) => t.parse().unwrap_or(300),
                                other => other.as_u64().unwrap_or(300),
                            });
                        let ban = format!("ban-{n}");
                        s.bans.insert(ban.clone(), (chat_id.clone(), user.clone()));
                        let target = msg::author(&user, &user, &[]);
                        let mut m = msg::banned(&format!("banned-{n}"), &sender, &target, seconds);
                        m["snippet"]["liveChatId"] = json!(chat_id);
                        s.chats.get_mut(&chat_id).expect("live").messages.push(m);
                        let mut snippet = sn.clone();
                        snippet["liveChatId"] = json!(chat_id);
                        (
                            (
                                200,
                                json!({"kind": "youtube#liveChatBan", "etag": "e", "id": ban, "snippet": snippet}),
                            ),
                            true,
                        )
                    }
                },
                FakeCall::BanDelete => match s.bans.remove(id.unwrap_or_default()) {
                    None => (not_found("liveChatBanNotFound", "The ban"), false),
                    Some(_) => ((204, Value::Null), false),
                },
                _ => ((400, Value::Null), false),
            }
        };
        if changed {
            self.changed();
        }
        result
    }
}

/// The status and Google error body of `e`.
fn error_of(e: &FakeError) -> (u16, Value) {
    let (code, reason, domain, message) = e.http();
    (code, google_error(code, reason, domain, message))
}

fn video_json(id: &str, v: &FakeVideo) -> Value {
    let mut details = json!({"scheduledStartTime": "2030-01-01T00:00:00Z"});
    if v.broadcast == "live" || v.broadcast == "completed" {
        details["actualStartTime"] = json!("2026-03-01T18:00:00Z");
    }
    if let Some(chat) = &v.chat {
        details["activeLiveChatId"] = json!(chat);
    }
    if let Some(n) = v.viewers.filter(|_| v.broadcast == "live") {
        // YouTube writes it as a decimal string.
        details["concurrentViewers"] = json!(n.to_string());
    }
    let mut video = json!({
        "kind": "youtube#video",
        "etag": "e",
        "id": id,
        "snippet": {
            "publishedAt": "2026-03-01T17:00:00Z",
            "channelId": v.channel,
            "title": format!("video {id}"),
            "liveBroadcastContent": if v.broadcast == "completed" { "none" } else { v.broadcast.as_str() },
        }
    });
    if v.broadcast != "none" {
        video["liveStreamingDetails"] = details;
    }
    video
}

fn channel_json(id: &str, c: &FakeChannel) -> Value {
    json!({
        "kind": "youtube#channel",
        "etag": "e",
        "id": id,
        "snippet": {"title": format!("channel {id}"), "customUrl": format!("@{}", c.handle)},
        "contentDetails": {"relatedPlaylists": {"likes": "", "uploads": format!("UU{}", id.get(2..).unwrap_or_default())}}
    })
}

// ------------------------------------------------------------ gRPC ----

struct Grpc(FakeYoutube);

type PageStream =
    Pin<Box<dyn Stream<Item = Result<pb::LiveChatMessageListResponse, Status>> + Send>>;

#[tonic::async_trait]
impl pb::v3_data_live_chat_message_service_server::V3DataLiveChatMessageService for Grpc {
    type StreamListStream = PageStream;

    async fn stream_list(
        &self,
        request: Request<pb::LiveChatMessageListRequest>,
    ) -> Result<Response<PageStream>, Status> {
        let fake = self.0.clone();
        let metadata = request.metadata();
        let authorized = metadata.get("x-goog-api-key").is_some_and(|k| k == API_KEY)
            || metadata
                .get("authorization")
                .is_some_and(|a| a.to_str().is_ok_and(|a| fake.token_ok(a)));
        let req = request.into_inner();
        let chat = req.live_chat_id.clone().unwrap_or_default();
        {
            let mut s = fake.lock();
            s.stream_requests
                .push((chat.clone(), req.page_token.clone()));
            if !s.streaming {
                return Err(Status::unimplemented("Method not found."));
            }
        }
        if req.page_token.is_some() {
            let mut s = fake.lock();
            if s.refuse_tokens {
                s.refused_tokens += 1;
                return Err(FakeError::PageTokenInvalid.status());
            }
        }
        if let Some(e) = fake.begin(FakeCall::StreamList) {
            match e {
                FakeError::Delay(d) => tokio::time::sleep(d).await,
                FakeError::ManyItems(n) => {
                    let page = pb::LiveChatMessageListResponse {
                        next_page_token: req.page_token.clone(),
                        items: many_items(&chat, n).iter().map(to_proto).collect(),
                        ..Default::default()
                    };
                    let stream =
                        futures::stream::iter([Ok(page)]).chain(futures::stream::pending());
                    return Ok(Response::new(Box::pin(stream)));
                }
                e => return Err(e.status()),
            }
        }
        if !authorized {
            return Err(Status::unauthenticated(
                "Request is missing required authentication credential.",
            ));
        }
        let (start, drop) = {
            let mut s = fake.lock();
            let overlap = s.resume_overlap;
            let c = s
                .chats
                .get(&chat)
                .ok_or_else(|| FakeError::ChatNotFound.status())?;
            if c.disabled || c.gone {
                return Err(FakeError::ChatEnded.status());
            }
            let start = start_index(req.page_token.as_deref(), c.messages.len(), overlap)
                .map_err(|e| e.status())?;
            (start, s.drop_after.pop_front())
        };
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(stream_pages(fake, chat, start, drop, tx));
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Sends `chat`'s pages from `start` as they come, until the chat goes
/// offline, the client goes away, or a planned drop.
async fn stream_pages(
    fake: FakeYoutube,
    chat: String,
    mut next: usize,
    drop: Option<(usize, StreamEnd)>,
    tx: mpsc::Sender<Result<pb::LiveChatMessageListResponse, Status>>,
) {
    let mut version = fake.version.subscribe();
    let kicked_at = {
        let mut s = fake.lock();
        s.open_streams += 1;
        s.kick.0
    };
    let mut sent = 0usize;
    let mut first = true;
    loop {
        let (items, offline_at, status) = {
            let s = fake.lock();
            let Some(c) = s.chats.get(&chat) else { break };
            if s.kick.0 != kicked_at {
                match s.kick.1 {
                    Some(StreamEnd::Error) => (
                        Vec::new(),
                        None,
                        Some(Status::unavailable("connection reset by the fake")),
                    ),
                    _ => break,
                }
            } else if s.quota_exhausted {
                (Vec::new(), None, Some(FakeError::QuotaExceeded.status()))
            } else if c.gone || c.disabled {
                (Vec::new(), None, Some(FakeError::ChatEnded.status()))
            } else {
                let mut to = c.messages.len().min(next + PAGE);
                if let Some((limit, _)) = drop {
                    to = to.min(next + limit.saturating_sub(sent));
                }
                let offline = c.offline_at.clone().filter(|_| to == c.messages.len());
                (c.messages[next..to].to_vec(), offline, None)
            }
        };
        if let Some(status) = status {
            let _ = tx.send(Err(status)).await;
            break;
        }
        if !items.is_empty() || offline_at.is_some() || first {
            first = false;
            next += items.len();
            sent += items.len();
            let response = pb::LiveChatMessageListResponse {
                kind: Some("youtube#liveChatMessageListResponse".into()),
                etag: Some("e".into()),
                offline_at: offline_at.clone(),
                next_page_token: Some(format!("p{next}")),
                items: items.iter().map(to_proto).collect(),
                ..Default::default()
            };
            if tx.send(Ok(response)).await.is_err() {
                break;
            }
            if offline_at.is_some() {
                break;
            }
        }
        if let Some((limit, how)) = drop
            && sent >= limit
        {
            if how == StreamEnd::Error {
                let _ = tx
                    .send(Err(Status::unavailable("connection reset by the fake")))
                    .await;
            }
            break;
        }
        tokio::select! {
            () = tx.closed() => break,
            r = version.changed() => if r.is_err() { break },
            () = fake.cancel.cancelled() => break,
        }
    }
    fake.lock().open_streams -= 1;
}

// ----------------------------------------------------- JSON -> proto ----

fn s(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn b(v: &Value, key: &str) -> Option<bool> {
    v.get(key).and_then(Value::as_bool)
}

fn u(v: &Value, key: &str) -> Option<u64> {
    match v.get(key)? {
        Value::String(t) => t.parse().ok(),
        other => other.as_u64(),
    }
}

fn i(v: &Value, key: &str) -> Option<i64> {
    match v.get(key)? {
        Value::String(t) => t.parse().ok(),
        other => other.as_i64(),
    }
}

/// `textMessageEvent` -> `TEXT_MESSAGE_EVENT`.
fn screaming(camel: &str) -> String {
    let mut out = String::new();
    for c in camel.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

fn profile(v: &Value) -> pb::ChannelProfileDetails {
    pb::ChannelProfileDetails {
        channel_id: s(v, "channelId"),
        channel_url: s(v, "channelUrl"),
        display_name: s(v, "displayName"),
        profile_image_url: s(v, "profileImageUrl"),
    }
}

/// A message as the gRPC stream sends it. A type the proto does not know
/// is sent as type 99.
pub fn to_proto(m: &Value) -> pb::LiveChatMessage {
    use pb::live_chat_message_snippet::DisplayedContent as C;
    use pb::live_chat_message_snippet::type_wrapper::Type;

    let sn = &m["snippet"];
    let type_value =
        s(sn, "type").map(|t| Type::from_str_name(&screaming(&t)).map_or(99, |t| t as i32));
    let content = if let Some(d) = sn.get("textMessageDetails") {
        Some(C::TextMessageDetails(pb::LiveChatTextMessageDetails {
            message_text: s(d, "messageText"),
        }))
    } else if let Some(d) = sn.get("messageDeletedDetails") {
        Some(C::MessageDeletedDetails(
            pb::LiveChatMessageDeletedDetails {
                deleted_message_id: s(d, "deletedMessageId"),
            },
        ))
    } else if let Some(d) = sn.get("messageRetractedDetails") {
        Some(C::MessageRetractedDetails(
            pb::LiveChatMessageRetractedDetails {
                retracted_message_id: s(d, "retractedMessageId"),
            },
        ))
    } else if let Some(d) = sn.get("userBannedDetails") {
        use pb::live_chat_user_banned_message_details::ban_type_wrapper::BanType;
        Some(C::UserBannedDetails(pb::LiveChatUserBannedMessageDetails {
            banned_user_details: d.get("bannedUserDetails").map(profile),
            ban_type: s(d, "banType")
                .and_then(|t| BanType::from_str_name(&screaming(&t)))
                .map(|t| t as i32),
            ban_duration_seconds: u(d, "banDurationSeconds"),
        }))
    } else if let Some(d) = sn.get("superChatDetails") {
        Some(C::SuperChatDetails(pb::LiveChatSuperChatDetails {
            amount_micros: u(d, "amountMicros"),
            currency: s(d, "currency"),
            amount_display_string: s(d, "amountDisplayString"),
            user_comment: s(d, "userComment"),
            tier: u(d, "tier").and_then(|t| u32::try_from(t).ok()),
        }))
    } else if let Some(d) = sn.get("superStickerDetails") {
        Some(C::SuperStickerDetails(pb::LiveChatSuperStickerDetails {
            amount_micros: u(d, "amountMicros"),
            currency: s(d, "currency"),
            amount_display_string: s(d, "amountDisplayString"),
            tier: u(d, "tier").and_then(|t| u32::try_from(t).ok()),
            super_sticker_metadata: d.get("superStickerMetadata").map(|m| {
                pb::SuperStickerMetadata {
                    sticker_id: s(m, "stickerId"),
                    alt_text: s(m, "altText"),
                    alt_text_language: s(m, "altTextLanguage"),
                }
            }),
        }))
    } else if let Some(d) = sn.get("newSponsorDetails") {
        Some(C::NewSponsorDetails(pb::LiveChatNewSponsorDetails {
            member_level_name: s(d, "memberLevelName"),
            is_upgrade: b(d, "isUpgrade"),
        }))
    } else if let Some(d) = sn.get("memberMilestoneChatDetails") {
        Some(C::MemberMilestoneChatDetails(
            pb::LiveChatMemberMilestoneChatDetails {
                member_level_name: s(d, "memberLevelName"),
                member_month: u(d, "memberMonth").and_then(|t| u32::try_from(t).ok()),
                user_comment: s(d, "userComment"),
            },
        ))
    } else if let Some(d) = sn.get("membershipGiftingDetails") {
        Some(C::MembershipGiftingDetails(
            pb::LiveChatMembershipGiftingDetails {
                gift_memberships_count: i(d, "giftMembershipsCount")
                    .and_then(|t| i32::try_from(t).ok()),
                gift_memberships_level_name: s(d, "giftMembershipsLevelName"),
            },
        ))
    } else if let Some(d) = sn.get("giftMembershipReceivedDetails") {
        Some(C::GiftMembershipReceivedDetails(
            pb::LiveChatGiftMembershipReceivedDetails {
                member_level_name: s(d, "memberLevelName"),
                gifter_channel_id: s(d, "gifterChannelId"),
                associated_membership_gifting_message_id: s(
                    d,
                    "associatedMembershipGiftingMessageId",
                ),
            },
        ))
    } else if let Some(d) = sn.get("pollDetails") {
        use pb::live_chat_poll_details::poll_status_wrapper::PollStatus;
        Some(C::PollDetails(pb::LiveChatPollDetails {
            metadata: d
                .get("metadata")
                .map(|m| pb::live_chat_poll_details::PollMetadata {
                    question_text: s(m, "questionText"),
                    options: m["options"]
                        .as_array()
                        .map(|o| {
                            o.iter()
                                .map(|o| pb::live_chat_poll_details::poll_metadata::PollOption {
                                    option_text: s(o, "optionText"),
                                    tally: i(o, "tally"),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                }),
            status: s(d, "status")
                .and_then(|t| PollStatus::from_str_name(&screaming(&t)))
                .map(|t| t as i32),
        }))
    } else {
        sn.get("giftDetails").map(|d| {
            C::GiftDetails(pb::LiveChatGiftDetails {
                gift_name: s(d, "giftName"),
                gift_duration: s(d, "giftDuration")
                    .and_then(|t| t.strip_suffix('s').and_then(|n| n.parse::<i64>().ok()))
                    .map(|seconds| prost_types::Duration { seconds, nanos: 0 }),
                jewels_amount: i(d, "jewelsAmount").and_then(|t| i32::try_from(t).ok()),
                gift_url: s(d, "giftUrl"),
                alt_text: s(d, "altText"),
                language: s(d, "language"),
                has_visual_effect: b(d, "hasVisualEffect"),
                combo_count: i(d, "comboCount").and_then(|t| i32::try_from(t).ok()),
            })
        })
    };
    let a = &m["authorDetails"];
    pb::LiveChatMessage {
        kind: s(m, "kind"),
        etag: s(m, "etag"),
        id: s(m, "id"),
        snippet: sn.is_object().then(|| pb::LiveChatMessageSnippet {
            r#type: type_value,
            live_chat_id: s(sn, "liveChatId"),
            author_channel_id: s(sn, "authorChannelId"),
            published_at: s(sn, "publishedAt"),
            has_display_content: b(sn, "hasDisplayContent"),
            display_message: s(sn, "displayMessage"),
            displayed_content: content,
        }),
        author_details: a.is_object().then(|| pb::LiveChatMessageAuthorDetails {
            channel_id: s(a, "channelId"),
            channel_url: s(a, "channelUrl"),
            display_name: s(a, "displayName"),
            profile_image_url: s(a, "profileImageUrl"),
            is_verified: b(a, "isVerified"),
            is_chat_owner: b(a, "isChatOwner"),
            is_chat_sponsor: b(a, "isChatSponsor"),
            is_chat_moderator: b(a, "isChatModerator"),
        }),
    }
}

/// Chat messages of every type, in the Data API's JSON form.
pub mod msg {
    use serde_json::{Value, json};

    /// An author: `roles` among `owner`, `moderator`, `sponsor`, `verified`.
    pub fn author(channel_id: &str, name: &str, roles: &[&str]) -> Value {
        json!({
            "channelId": channel_id,
            "channelUrl": format!("http://www.youtube.com/channel/{channel_id}"),
            "displayName": name,
            "profileImageUrl": format!("https://yt3.ggpht.com/fake/{channel_id}=s88-c-k"),
            "isVerified": roles.contains(&"verified"),
            "isChatOwner": roles.contains(&"owner"),
            "isChatSponsor": roles.contains(&"sponsor"),
            "isChatModerator": roles.contains(&"moderator"),
        })
    }

    /// A message of `kind` by `author` with its details object.
    pub fn message(
        id: &str,
        kind: &str,
        author: &Value,
        details: Option<(&str, Value)>,
        display: Option<&str>,
    ) -> Value {
        let mut snippet = json!({
            "type": kind,
            "authorChannelId": author["channelId"],
            "publishedAt": super::now(),
            "hasDisplayContent": display.is_some(),
        });
        if let Some(d) = display {
            snippet["displayMessage"] = json!(d);
        }
        if let Some((key, value)) = details {
            snippet[key] = value;
        }
        json!({
            "kind": "youtube#liveChatMessage",
            "etag": format!("etag-{id}"),
            "id": id,
            "snippet": snippet,
            "authorDetails": author,
        })
    }

    /// `textMessageEvent`.
    pub fn text(id: &str, author: &Value, text: &str) -> Value {
        message(
            id,
            "textMessageEvent",
            author,
            Some(("textMessageDetails", json!({"messageText": text}))),
            Some(text),
        )
    }

    /// `superChatEvent`.
    pub fn super_chat(
        id: &str,
        author: &Value,
        micros: u64,
        currency: &str,
        display: &str,
        comment: &str,
        tier: u32,
    ) -> Value {
        message(
            id,
            "superChatEvent",
            author,
            Some((
                "superChatDetails",
                json!({"amountMicros": micros.to_string(), "currency": currency, "amountDisplayString": display, "userComment": comment, "tier": tier}),
            )),
            Some(&format!(
                "{display} from {}: \"{comment}\"",
                author["displayName"].as_str().unwrap_or_default()
            )),
        )
    }

    /// `superStickerEvent`.
    pub fn super_sticker(
        id: &str,
        author: &Value,
        micros: u64,
        currency: &str,
        display: &str,
        sticker: &str,
        alt: &str,
    ) -> Value {
        message(
            id,
            "superStickerEvent",
            author,
            Some((
                "superStickerDetails",
                json!({"amountMicros": micros.to_string(), "currency": currency, "amountDisplayString": display, "tier": 1, "superStickerMetadata": {"stickerId": sticker, "altText": alt, "altTextLanguage": "en"}}),
            )),
            Some(&format!("Super Sticker {display}")),
        )
    }

    /// `newSponsorEvent`.
    pub fn new_sponsor(id: &str, author: &Value, level: &str) -> Value {
        message(
            id,
            "newSponsorEvent",
            author,
            Some((
                "newSponsorDetails",
                json!({"memberLevelName": level, "isUpgrade": false}),
            )),
            Some(&format!("Welcome to {level}!")),
        )
    }

    /// `memberMilestoneChatEvent`.
    pub fn milestone(id: &str, author: &Value, level: &str, months: u32, comment: &str) -> Value {
        message(
            id,
            "memberMilestoneChatEvent",
            author,
            Some((
                "memberMilestoneChatDetails",
                json!({"memberLevelName": level, "memberMonth": months, "userComment": comment}),
            )),
            Some(&format!("Member for {months} months")),
        )
    }

    /// `membershipGiftingEvent`.
    pub fn gifting(id: &str, author: &Value, count: i64, level: &str) -> Value {
        message(
            id,
            "membershipGiftingEvent",
            author,
            Some((
                "membershipGiftingDetails",
                json!({"giftMembershipsCount": count, "giftMembershipsLevelName": level}),
            )),
            Some(&format!("Gifted {count} memberships")),
        )
    }

    /// `giftMembershipReceivedEvent` (the author received it).
    pub fn gift_received(
        id: &str,
        author: &Value,
        level: &str,
        gifter: &str,
        gifting_message: &str,
    ) -> Value {
        message(
            id,
            "giftMembershipReceivedEvent",
            author,
            Some((
                "giftMembershipReceivedDetails",
                json!({"memberLevelName": level, "gifterChannelId": gifter, "associatedMembershipGiftingMessageId": gifting_message}),
            )),
            Some("Received a gift membership"),
        )
    }

    /// `messageDeletedEvent` (`author` is the moderator).
    pub fn deleted(id: &str, author: &Value, target: &str) -> Value {
        message(
            id,
            "messageDeletedEvent",
            author,
            Some(("messageDeletedDetails", json!({"deletedMessageId": target}))),
            Some("A message was deleted"),
        )
    }

    /// `userBannedEvent` (`author` is the moderator); a timeout when
    /// `seconds` is set.
    pub fn banned(id: &str, author: &Value, user: &Value, seconds: Option<u64>) -> Value {
        let mut details = json!({
            "bannedUserDetails": {"channelId": user["channelId"], "channelUrl": user["channelUrl"], "displayName": user["displayName"], "profileImageUrl": user["profileImageUrl"]},
            "banType": if seconds.is_some() { "temporary" } else { "permanent" },
        });
        if let Some(s) = seconds {
            details["banDurationSeconds"] = json!(s.to_string());
        }
        message(
            id,
            "userBannedEvent",
            author,
            Some(("userBannedDetails", details)),
            Some("A user was banned"),
        )
    }

    /// `chatEndedEvent`.
    pub fn chat_ended(id: &str) -> Value {
        json!({
            "kind": "youtube#liveChatMessage",
            "etag": format!("etag-{id}"),
            "id": id,
            "snippet": {"type": "chatEndedEvent", "publishedAt": super::now(), "hasDisplayContent": false},
        })
    }

    /// `pollEvent`.
    pub fn poll(id: &str, author: &Value, question: &str) -> Value {
        message(
            id,
            "pollEvent",
            author,
            Some((
                "pollDetails",
                json!({"metadata": {"questionText": question, "options": [{"optionText": "yes", "tally": "3"}, {"optionText": "no", "tally": "1"}]}, "status": "active"}),
            )),
            Some(question),
        )
    }

    /// `sponsorOnlyModeStartedEvent`.
    pub fn members_only_started(id: &str, author: &Value) -> Value {
        message(
            id,
            "sponsorOnlyModeStartedEvent",
            author,
            None,
            Some("Members-only mode is on"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_message_builder_survives_the_trip_to_protobuf() {
        let a = msg::author("UCa", "A", &["sponsor", "verified"]);
        let m = msg::super_chat("m1", &a, 5_000_000, "USD", "$5.00", "hi", 2);
        let p = to_proto(&m);
        let sn = p.snippet.unwrap();
        assert_eq!(
            sn.r#type,
            Some(pb::live_chat_message_snippet::type_wrapper::Type::SuperChatEvent as i32)
        );
        match sn.displayed_content {
            Some(pb::live_chat_message_snippet::DisplayedContent::SuperChatDetails(d)) => {
                assert_eq!((d.amount_micros, d.tier), (Some(5_000_000), Some(2)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(p.author_details.unwrap().is_verified, Some(true));
        assert_eq!(
            screaming("memberMilestoneChatEvent"),
            "MEMBER_MILESTONE_CHAT_EVENT"
        );
    }

    #[test]
    fn page_tokens_start_where_they_say() {
        assert_eq!(start_index(None, 120, 0), Ok(70));
        assert_eq!(start_index(None, 10, 0), Ok(0));
        assert_eq!(start_index(Some("p7"), 10, 0), Ok(7));
        assert_eq!(start_index(Some("p7"), 10, 3), Ok(4));
        assert_eq!(
            start_index(Some("p11"), 10, 0),
            Err(FakeError::PageTokenInvalid)
        );
        assert_eq!(
            start_index(Some("x"), 10, 0),
            Err(FakeError::PageTokenInvalid)
        );
    }
}
