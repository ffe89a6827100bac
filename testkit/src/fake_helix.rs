//! A fake Twitch Helix on 127.0.0.1, speaking Helix's HTTP/JSON: Get
//! Users, Get Moderated Channels, Send Chat Message, Delete Chat Messages,
//! Ban User (with and without `duration`) and Unban User, with Twitch's
//! `Authorization: Bearer` + `Client-Id` checks and its 401 for a missing
//! scope.
//!
//! Get Streams (`GET /streams?user_login=...`, at most 100 logins) answers
//! from the streams a test sets ([`FakeHelix::go_live`] ...), for a user
//! token or an app token, with Twitch's `Ratelimit-Limit`,
//! `Ratelimit-Remaining` and `Ratelimit-Reset` headers from one bucket
//! ([`FakeHelix::set_rate_limit`]; Twitch's app bucket is 800 points a
//! minute) and Twitch's 429 when it is empty. App tokens come from the
//! client-credentials grant of Twitch's token endpoint, which the fake
//! serves too at `POST /oauth2/token` ([`FakeHelix::token_url`];
//! [`CLIENT_ID`] + [`CLIENT_SECRET`]).
//!
//! Send Chat Message keeps Twitch's chat limits as Twitch documents them:
//! one sliding window per account, whose threshold depends on the target
//! channel (the privileged one where the account is the broadcaster, a
//! moderator or a VIP, else the normal one, counting every channel's
//! messages), at most one message per interval in a channel where it is
//! not privileged, and no message identical to one the account sent in
//! that channel within the duplicate window. What breaks a rule is
//! answered `is_sent: false` with Twitch's `drop_reason` (`msg_ratelimit`,
//! `msg_duplicate`). Every message received is logged with its account,
//! channel and arrival time, so tests can recompute the limits from the log
//! ([`violations`]) independently of the sender's own windows. An accepted
//! message is echoed into a [`FakeIrc`] (when attached) as a PRIVMSG from
//! the account, with its badges, so the ingestor reads it back.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::http::StatusCode;

use crate::fake_irc::FakeIrc;

/// The client id the fake expects in `Client-Id`.
pub const CLIENT_ID: &str = "fake-helix-client-id";
/// The client secret its token endpoint expects with [`CLIENT_ID`].
pub const CLIENT_SECRET: &str = "fake-helix-client-secret";

/// A live stream Get Streams reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeStream {
    /// The stream id.
    pub id: String,
    /// Its title.
    pub title: String,
    /// Its category (`game_name`).
    pub game_name: String,
    /// Its viewers.
    pub viewer_count: u64,
    /// When it went live (RFC 3339).
    pub started_at: String,
}

/// The rate-limit bucket Get Streams draws on: `limit` points per
/// `window`, refilled at its reset.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    limit: u32,
    window: Duration,
    used: u32,
    reset_at: Option<std::time::SystemTime>,
}

/// Twitch's chat limits, as the fake applies them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatLimits {
    /// The per-account sliding window.
    pub window: Duration,
    /// Messages per window to channels where the account is not privileged.
    pub normal: usize,
    /// Messages per window when the target channel is privileged.
    pub privileged: usize,
    /// At most one message per this in a channel where the account is not
    /// privileged.
    pub channel_interval: Duration,
    /// A message identical to one sent in the channel within this is
    /// dropped (`msg_duplicate`).
    pub duplicate_window: Duration,
}

impl ChatLimits {
    /// Twitch's values: 20 (or 100) per 30 s, 1 per second, duplicates
    /// within 30 s.
    pub fn twitch() -> Self {
        Self {
            window: Duration::from_secs(30),
            normal: 20,
            privileged: 100,
            channel_interval: Duration::from_secs(1),
            duplicate_window: Duration::from_secs(30),
        }
    }
}

/// One account the fake knows, with its token.
#[derive(Debug, Clone)]
pub struct HelixAccount {
    /// Its login.
    pub login: String,
    /// Its user id.
    pub user_id: String,
    /// Its access token.
    pub token: String,
    /// The scopes its token carries.
    pub scopes: Vec<String>,
}

/// A message Send Chat Message received.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The sending account's login.
    pub account: String,
    /// The target channel's login.
    pub channel: String,
    /// When it arrived.
    pub at: Instant,
    /// Its text.
    pub text: String,
    /// Whether the account was privileged in the channel then.
    pub privileged: bool,
    /// `None`: sent; else Twitch's drop reason code.
    pub dropped: Option<String>,
    /// The message id it was given (sent ones).
    pub message_id: Option<String>,
}

/// A moderation call the fake carried out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Moderation {
    /// Delete Chat Messages.
    Delete {
        /// The channel's login.
        channel: String,
        /// The message id.
        message_id: String,
    },
    /// Ban User; `duration` for a timeout.
    Ban {
        /// The channel's login.
        channel: String,
        /// The banned user's id.
        user_id: String,
        /// Seconds, for a timeout.
        duration: Option<u64>,
        /// The reason given.
        reason: String,
    },
    /// Unban User.
    Unban {
        /// The channel's login.
        channel: String,
        /// The user's id.
        user_id: String,
    },
}

#[derive(Debug, Default)]
struct State {
    users: HashMap<String, String>,
    accounts: HashMap<String, HelixAccount>,
    moderators: HashSet<(String, String)>,
    vips: HashSet<(String, String)>,
    limits: Option<ChatLimits>,
    log: Vec<Logged>,
    moderation: Vec<Moderation>,
    calls: HashMap<&'static str, usize>,
    next_id: u64,
    auto_users: bool,
    streams: HashMap<String, FakeStream>,
    app_tokens: HashSet<String>,
    bucket: Option<Bucket>,
    rate_limited: usize,
    streams_log: Vec<(Instant, usize)>,
}

/// A running fake Helix.
#[derive(Clone)]
pub struct FakeHelix {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    irc: Arc<Mutex<Option<Arc<FakeIrc>>>>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for FakeHelix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeHelix")
            .field("addr", &self.addr)
            .finish()
    }
}

impl FakeHelix {
    /// Starts it on an ephemeral port of 127.0.0.1, with Twitch's limits.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0")
            .await
            .expect("bind the fake Helix")
    }

    /// Starts it on `addr` (the demo's fixed port).
    ///
    /// # Errors
    /// When `addr` cannot be bound.
    pub async fn start_on(addr: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let fake = Self {
            addr: listener.local_addr().expect("addr"),
            state: Arc::new(Mutex::new(State {
                limits: Some(ChatLimits::twitch()),
                next_id: 1,
                ..State::default()
            })),
            irc: Arc::default(),
            cancel: CancellationToken::new(),
        };
        let routes = routes(fake.clone()).or(status_routes(fake.clone()));
        let cancel = fake.cancel.clone();
        tokio::spawn(async move {
            warp::serve(routes)
                .incoming(listener)
                .graceful(async move { cancel.cancelled().await })
                .run()
                .await;
        });
        Ok(fake)
    }

    /// Get Users answers for any login, with an id made up from it (the
    /// demo, whose channels are whatever the user joins).
    pub fn set_auto_users(&self, on: bool) {
        self.lock().auto_users = on;
    }

    /// Its base URL (`TWITCH_HELIX_URL`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Accepted messages are echoed into `irc` as PRIVMSGs.
    pub fn echo_to(&self, irc: Arc<FakeIrc>) {
        *self.irc.lock().expect("irc lock") = Some(irc);
    }

    /// A user (a channel) Get Users knows.
    pub fn add_user(&self, login: &str, user_id: &str) {
        self.lock()
            .users
            .insert(login.to_owned(), user_id.to_owned());
    }

    /// An account with a token carrying `scopes` (also a user).
    pub fn add_account(&self, login: &str, user_id: &str, token: &str, scopes: &[&str]) {
        let mut st = self.lock();
        st.users.insert(login.to_owned(), user_id.to_owned());
        st.accounts.insert(
            token.to_owned(),
            HelixAccount {
                login: login.to_owned(),
                user_id: user_id.to_owned(),
                token: token.to_owned(),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            },
        );
    }

    /// Makes `login` a moderator of `channel`.
    pub fn set_moderator(&self, channel: &str, login: &str) {
        self.lock()
            .moderators
            .insert((channel.to_owned(), login.to_owned()));
    }

    /// Makes `login` a VIP of `channel`.
    pub fn set_vip(&self, channel: &str, login: &str) {
        self.lock()
            .vips
            .insert((channel.to_owned(), login.to_owned()));
    }

    /// Applies `limits` (the tests' shorter windows).
    pub fn set_limits(&self, limits: ChatLimits) {
        self.lock().limits = Some(limits);
    }

    /// The limits applied.
    pub fn limits(&self) -> ChatLimits {
        self.lock().limits.unwrap_or_else(ChatLimits::twitch)
    }

    /// Every message Send Chat Message received, in arrival order.
    pub fn log(&self) -> Vec<Logged> {
        self.lock().log.clone()
    }

    /// Every moderation call carried out.
    pub fn moderation(&self) -> Vec<Moderation> {
        self.lock().moderation.clone()
    }

    /// Twitch's token endpoint on this fake (client credentials only).
    pub fn token_url(&self) -> String {
        format!("http://{}/oauth2/token", self.addr)
    }

    /// `login` goes live (a new stream id each time); returns the id.
    pub fn go_live(&self, login: &str, title: &str, game_name: &str, viewer_count: u64) -> String {
        let mut st = self.lock();
        st.next_id += 1;
        let id = format!("{}", 40_000_000_000 + st.next_id);
        st.streams.insert(
            login.to_owned(),
            FakeStream {
                id: id.clone(),
                title: title.to_owned(),
                game_name: game_name.to_owned(),
                viewer_count,
                started_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            },
        );
        id
    }

    /// Changes a live stream (no-op when `login` is offline).
    pub fn update_stream(&self, login: &str, change: impl FnOnce(&mut FakeStream)) {
        if let Some(stream) = self.lock().streams.get_mut(login) {
            change(stream);
        }
    }

    /// `login`'s stream ends.
    pub fn go_offline(&self, login: &str) {
        self.lock().streams.remove(login);
    }

    /// Get Streams' bucket: `limit` points per `window` (each call costs
    /// one). Twitch's app bucket is 800 a minute, the fake's default.
    pub fn set_rate_limit(&self, limit: u32, window: Duration) {
        self.lock().bucket = Some(Bucket {
            limit,
            window,
            used: 0,
            reset_at: None,
        });
    }

    /// Every Get Streams call answered (not 429): when, and how many logins
    /// it asked for.
    pub fn streams_log(&self) -> Vec<(Instant, usize)> {
        self.lock().streams_log.clone()
    }

    /// Get Streams calls answered 429 because the bucket was empty.
    pub fn rate_limited(&self) -> usize {
        self.lock().rate_limited
    }

    /// Every app token issued so far stops being valid (Helix answers
    /// 401, as for an expired one).
    pub fn expire_app_tokens(&self) {
        self.lock().app_tokens.clear();
    }

    /// Calls per endpoint (`users`, `moderated_channels`, `send`, `delete`,
    /// `ban`, `unban`, `streams`, `token`).
    pub fn calls(&self, endpoint: &str) -> usize {
        self.lock().calls.get(endpoint).copied().unwrap_or(0)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake helix lock")
    }

    /// Get Streams: the bucket, the token, at most 100 logins, then the
    /// live ones among them, with the `Ratelimit-*` headers.
    fn streams(&self, auth: Option<&str>, client_id: Option<&str>, query: &str) -> Response {
        let mut st = self.lock();
        *st.calls.entry("streams").or_default() += 1;
        let now = std::time::SystemTime::now();
        let mut bucket = st.bucket.unwrap_or(Bucket {
            limit: 800,
            window: Duration::from_secs(60),
            used: 0,
            reset_at: None,
        });
        if bucket.reset_at.is_none_or(|at| now >= at) {
            bucket.used = 0;
            bucket.reset_at = Some(now + bucket.window);
        }
        let empty = bucket.used >= bucket.limit;
        if !empty {
            bucket.used += 1;
        }
        st.bucket = Some(bucket);
        let reset_secs = bucket
            .reset_at
            .and_then(|at| at.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0));
        let with_headers = |r: Reply| {
            let mut res = warp::reply::Reply::into_response(r);
            let h = res.headers_mut();
            h.insert("ratelimit-limit", bucket.limit.into());
            h.insert("ratelimit-remaining", (bucket.limit - bucket.used).into());
            h.insert("ratelimit-reset", reset_secs.into());
            res
        };
        if empty {
            st.rate_limited += 1;
            return with_headers(error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"));
        }
        let token = auth.and_then(|a| a.strip_prefix("Bearer ")).unwrap_or("");
        if !st.app_tokens.contains(token) && !st.accounts.contains_key(token) {
            return with_headers(error(StatusCode::UNAUTHORIZED, "Invalid OAuth token"));
        }
        if client_id != Some(CLIENT_ID) {
            return with_headers(error(
                StatusCode::UNAUTHORIZED,
                "Client ID and OAuth token do not match",
            ));
        }
        let logins: Vec<String> = query_pairs(query)
            .into_iter()
            .filter(|(k, _)| k == "user_login")
            .map(|(_, v)| v)
            .collect();
        st.streams_log.push((Instant::now(), logins.len()));
        if logins.len() > 100 {
            return with_headers(error(
                StatusCode::BAD_REQUEST,
                "The parameter \"user_login\" may only be specified up to 100 times.",
            ));
        }
        let data: Vec<Value> = logins
            .iter()
            .filter_map(|login| {
                let s = st.streams.get(login)?;
                let user_id = st
                    .users
                    .get(login)
                    .cloned()
                    .unwrap_or_else(|| format!("id-{login}"));
                Some(json!({
                    "id": s.id,
                    "user_id": user_id,
                    "user_login": login,
                    "user_name": login,
                    "game_id": "1",
                    "game_name": s.game_name,
                    "type": "live",
                    "title": s.title,
                    "viewer_count": s.viewer_count,
                    "started_at": s.started_at,
                    "language": "en",
                    "thumbnail_url": "",
                    "tags": [],
                    "is_mature": false,
                }))
            })
            .collect();
        with_headers(reply(
            StatusCode::OK,
            json!({"data": data, "pagination": {}}),
        ))
    }

    /// Twitch's token endpoint, client-credentials grant only.
    fn app_token(&self, form: &HashMap<String, String>) -> Reply {
        let mut st = self.lock();
        *st.calls.entry("token").or_default() += 1;
        let field = |k: &str| form.get(k).map_or("", String::as_str);
        if field("grant_type") != "client_credentials" {
            return error(StatusCode::BAD_REQUEST, "unsupported grant_type");
        }
        if field("client_id") != CLIENT_ID || field("client_secret") != CLIENT_SECRET {
            return error(StatusCode::FORBIDDEN, "invalid client secret");
        }
        st.next_id += 1;
        let token = format!("app-token-{}", st.next_id);
        st.app_tokens.insert(token.clone());
        reply(
            StatusCode::OK,
            json!({"access_token": token, "expires_in": 5_000_000, "token_type": "bearer"}),
        )
    }

    /// Whether `login` is the broadcaster, a moderator or a VIP of `channel`.
    fn privileged(st: &State, channel: &str, login: &str) -> bool {
        let key = (channel.to_owned(), login.to_owned());
        channel == login || st.moderators.contains(&key) || st.vips.contains(&key)
    }
}

/// Breaks of Twitch's limits in `log`, recomputed from arrival times alone:
/// for every message, the account's messages in the sliding window ending
/// with it (over the normal threshold when its channel was not
/// privileged), and, in a channel where the account was not privileged,
/// a message less than `channel_interval` after the previous one there.
/// Empty when none.
pub fn violations(log: &[Logged], limits: ChatLimits) -> Vec<String> {
    let mut out = Vec::new();
    for (i, m) in log.iter().enumerate() {
        let in_window = log[..=i]
            .iter()
            .filter(|o| o.account == m.account && m.at.duration_since(o.at) < limits.window)
            .count();
        let limit = if m.privileged {
            limits.privileged
        } else {
            limits.normal
        };
        if in_window > limit {
            out.push(format!(
                "message {i} ({} in #{}): {in_window} messages in {:?}, over {limit}",
                m.account, m.channel, limits.window
            ));
        }
        if !m.privileged
            && let Some(prev) = log[..i]
                .iter()
                .rev()
                .find(|o| o.account == m.account && o.channel == m.channel)
            && m.at.duration_since(prev.at) < limits.channel_interval
        {
            out.push(format!(
                "message {i} ({} in #{}): {:?} after the previous one there",
                m.account,
                m.channel,
                m.at.duration_since(prev.at)
            ));
        }
    }
    out
}

type Reply = warp::reply::WithStatus<warp::reply::Json>;

fn reply(status: StatusCode, body: Value) -> Reply {
    warp::reply::with_status(warp::reply::json(&body), status)
}

fn error(status: StatusCode, message: &str) -> Reply {
    reply(
        status,
        json!({
            "error": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "message": message,
        }),
    )
}

/// The account behind the request's token, or the 401 Twitch answers.
fn authorize(
    st: &State,
    auth: Option<&str>,
    client_id: Option<&str>,
    scope: Option<&str>,
) -> Result<HelixAccount, Reply> {
    let token = auth.and_then(|a| a.strip_prefix("Bearer "));
    let Some(account) = token.and_then(|t| st.accounts.get(t)) else {
        return Err(error(StatusCode::UNAUTHORIZED, "Invalid OAuth token"));
    };
    if client_id != Some(CLIENT_ID) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "Client ID and OAuth token do not match",
        ));
    }
    if let Some(scope) = scope
        && !account.scopes.iter().any(|s| s == scope)
    {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            &format!("Missing scope: {scope}"),
        ));
    }
    Ok(account.clone())
}

fn login_of(st: &State, user_id: &str) -> Option<String> {
    st.users
        .iter()
        .find(|(_, id)| id.as_str() == user_id)
        .map(|(login, _)| login.clone())
}

fn query_pairs(raw: &str) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://helix/?{raw}")).map_or_else(
        |_| Vec::new(),
        |u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        },
    )
}

fn query_one(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

fn routes(fake: FakeHelix) -> impl Filter<Extract = (Reply,), Error = warp::Rejection> + Clone {
    let with = move || {
        let fake = fake.clone();
        warp::any().map(move || fake.clone())
    };
    let auth = warp::header::optional::<String>("authorization")
        .and(warp::header::optional::<String>("client-id"));
    let raw_query = warp::query::raw().or(warp::any().map(String::new)).unify();

    let users = warp::get()
        .and(warp::path!("users"))
        .and(with())
        .and(auth)
        .and(raw_query)
        .map(
            |fake: FakeHelix, a: Option<String>, c: Option<String>, q: String| {
                let mut st = fake.lock();
                *st.calls.entry("users").or_default() += 1;
                if let Err(r) = authorize(&st, a.as_deref(), c.as_deref(), None) {
                    return r;
                }
                let pairs = query_pairs(&q);
                if st.auto_users {
                    for (k, v) in &pairs {
                        if k == "login" && !st.users.contains_key(v) {
                            let id = 9_000_000 + st.users.len();
                            st.users.insert(v.clone(), id.to_string());
                        }
                    }
                }
                let data: Vec<Value> = pairs
                    .iter()
                    .filter_map(|(k, v)| match k.as_str() {
                        "login" => st.users.get(v).map(|id| (v.clone(), id.clone())),
                        "id" => login_of(&st, v).map(|login| (login, v.clone())),
                        _ => None,
                    })
                    .map(|(login, id)| json!({"id": id, "login": login, "display_name": login}))
                    .collect();
                reply(StatusCode::OK, json!({ "data": data }))
            },
        );

    let moderated = warp::get()
        .and(warp::path!("moderation" / "channels"))
        .and(with())
        .and(auth)
        .and(raw_query)
        .map(
            |fake: FakeHelix, a: Option<String>, c: Option<String>, q: String| {
                let mut st = fake.lock();
                *st.calls.entry("moderated_channels").or_default() += 1;
                let account = match authorize(
                    &st,
                    a.as_deref(),
                    c.as_deref(),
                    Some("user:read:moderated_channels"),
                ) {
                    Ok(a) => a,
                    Err(r) => return r,
                };
                let pairs = query_pairs(&q);
                if query_one(&pairs, "user_id").as_deref() != Some(account.user_id.as_str()) {
                    return error(
                        StatusCode::BAD_REQUEST,
                        "The ID in user_id must match the user ID found in the request's OAuth token.",
                    );
                }
                let data: Vec<Value> = st
                    .moderators
                    .iter()
                    .filter(|(_, login)| *login == account.login)
                    .map(|(channel, _)| {
                        json!({
                            "broadcaster_id": st.users.get(channel).cloned().unwrap_or_default(),
                            "broadcaster_login": channel,
                            "broadcaster_name": channel,
                        })
                    })
                    .collect();
                reply(StatusCode::OK, json!({ "data": data, "pagination": {} }))
            },
        );

    let send = warp::post()
        .and(warp::path!("chat" / "messages"))
        .and(with())
        .and(auth)
        .and(warp::body::json::<Value>())
        .map(
            |fake: FakeHelix, a: Option<String>, c: Option<String>, body: Value| {
                send_message(&fake, a.as_deref(), c.as_deref(), &body)
            },
        );

    let delete = warp::delete()
        .and(warp::path!("moderation" / "chat"))
        .and(with())
        .and(auth)
        .and(raw_query)
        .map(
            |fake: FakeHelix, a: Option<String>, c: Option<String>, q: String| {
                moderate(&fake, "delete", a.as_deref(), c.as_deref(), &q, None)
            },
        );

    let ban = warp::post()
        .and(warp::path!("moderation" / "bans"))
        .and(with())
        .and(auth)
        .and(raw_query)
        .and(warp::body::json::<Value>())
        .map(
            |fake: FakeHelix, a: Option<String>, c: Option<String>, q: String, body: Value| {
                moderate(&fake, "ban", a.as_deref(), c.as_deref(), &q, Some(&body))
            },
        );

    let unban = warp::delete()
        .and(warp::path!("moderation" / "bans"))
        .and(with())
        .and(auth)
        .and(raw_query)
        .map(
            |fake: FakeHelix, a: Option<String>, c: Option<String>, q: String| {
                moderate(&fake, "unban", a.as_deref(), c.as_deref(), &q, None)
            },
        );

    users
        .or(moderated)
        .unify()
        .or(send)
        .unify()
        .or(delete)
        .unify()
        .or(ban)
        .unify()
        .or(unban)
        .unify()
}

type Response = warp::reply::Response;

/// Get Streams and the token endpoint.
fn status_routes(
    fake: FakeHelix,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let token_fake = fake.clone();
    let streams = warp::get()
        .and(warp::path!("streams"))
        .and(warp::header::optional::<String>("authorization"))
        .and(warp::header::optional::<String>("client-id"))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .map(move |a: Option<String>, c: Option<String>, q: String| {
            fake.streams(a.as_deref(), c.as_deref(), &q)
        });
    let token = warp::post()
        .and(warp::path!("oauth2" / "token"))
        .and(warp::body::form::<HashMap<String, String>>())
        .map(move |form: HashMap<String, String>| {
            warp::reply::Reply::into_response(token_fake.app_token(&form))
        });
    streams.or(token).unify()
}

fn send_message(fake: &FakeHelix, auth: Option<&str>, client: Option<&str>, body: &Value) -> Reply {
    let now = Instant::now();
    let mut st = fake.lock();
    *st.calls.entry("send").or_default() += 1;
    let account = match authorize(&st, auth, client, Some("user:write:chat")) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let (Some(broadcaster_id), Some(sender_id), Some(text)) = (
        body["broadcaster_id"].as_str(),
        body["sender_id"].as_str(),
        body["message"].as_str(),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Missing required parameter: broadcaster_id, sender_id or message",
        );
    };
    if sender_id != account.user_id {
        return error(
            StatusCode::FORBIDDEN,
            "The sender must match the user ID in the access token.",
        );
    }
    if text.chars().count() > 500 {
        return error(StatusCode::BAD_REQUEST, "The message is too long.");
    }
    let Some(channel) = login_of(&st, broadcaster_id) else {
        return error(StatusCode::BAD_REQUEST, "The broadcaster was not found.");
    };
    let limits = st.limits.unwrap_or_else(ChatLimits::twitch);
    let privileged = FakeHelix::privileged(&st, &channel, &account.login);
    let mine = |m: &&Logged| m.account == account.login;
    let in_window = st
        .log
        .iter()
        .filter(mine)
        .filter(|m| now.duration_since(m.at) < limits.window)
        .count();
    let limit = if privileged {
        limits.privileged
    } else {
        limits.normal
    };
    let last_here = st
        .log
        .iter()
        .rev()
        .find(|m| m.account == account.login && m.channel == channel)
        .map(|m| m.at);
    let duplicate = st.log.iter().any(|m| {
        m.account == account.login
            && m.channel == channel
            && m.dropped.is_none()
            && m.text == text
            && now.duration_since(m.at) < limits.duplicate_window
    });
    let dropped = if in_window >= limit
        || (!privileged
            && last_here.is_some_and(|t| now.duration_since(t) < limits.channel_interval))
    {
        Some("msg_ratelimit")
    } else if duplicate {
        Some("msg_duplicate")
    } else {
        None
    };
    let message_id = dropped.is_none().then(|| {
        st.next_id += 1;
        format!("helix-msg-{}", st.next_id)
    });
    st.log.push(Logged {
        account: account.login.clone(),
        channel: channel.clone(),
        at: now,
        text: text.to_owned(),
        privileged,
        dropped: dropped.map(str::to_owned),
        message_id: message_id.clone(),
    });
    let badges = if channel == account.login {
        "broadcaster/1"
    } else if st
        .moderators
        .contains(&(channel.clone(), account.login.clone()))
    {
        "moderator/1"
    } else if st.vips.contains(&(channel.clone(), account.login.clone())) {
        "vip/1"
    } else {
        ""
    };
    let badges = badges.to_owned();
    drop(st);
    match (dropped, message_id) {
        (None, Some(id)) => {
            if let Some(irc) = fake.irc.lock().expect("irc lock").clone() {
                let ts = chrono::Utc::now().timestamp_millis();
                let login = &account.login;
                let line = format!(
                    "@badge-info=;badges={badges};color=;display-name={login};emotes=;first-msg=0;flags=;id={id};mod={m};returning-chatter=0;room-id={broadcaster_id};subscriber=0;tmi-sent-ts={ts};turbo=0;user-id={uid};user-type= :{login}!{login}@{login}.tmi.twitch.tv PRIVMSG #{channel} :{text}",
                    m = u8::from(badges.starts_with("moderator")),
                    uid = account.user_id,
                );
                irc.send_to_channel(&channel, &line);
            }
            reply(
                StatusCode::OK,
                json!({"data": [{"message_id": id, "is_sent": true}]}),
            )
        }
        (Some(code), _) => reply(
            StatusCode::OK,
            json!({"data": [{
                "message_id": "",
                "is_sent": false,
                "drop_reason": {"code": code, "message": format!("Your message was not sent: {code}")},
            }]}),
        ),
        (None, None) => unreachable!("a sent message has an id"),
    }
}

fn moderate(
    fake: &FakeHelix,
    what: &'static str,
    auth: Option<&str>,
    client: Option<&str>,
    query: &str,
    body: Option<&Value>,
) -> Reply {
    let mut st = fake.lock();
    *st.calls.entry(what).or_default() += 1;
    let scope = if what == "delete" {
        "moderator:manage:chat_messages"
    } else {
        "moderator:manage:banned_users"
    };
    let account = match authorize(&st, auth, client, Some(scope)) {
        Ok(a) => a,
        Err(r) => return r,
    };
    let pairs = query_pairs(query);
    let (Some(broadcaster_id), Some(moderator_id)) = (
        query_one(&pairs, "broadcaster_id"),
        query_one(&pairs, "moderator_id"),
    ) else {
        return error(
            StatusCode::BAD_REQUEST,
            "Missing required parameter: broadcaster_id or moderator_id",
        );
    };
    if moderator_id != account.user_id {
        return error(
            StatusCode::FORBIDDEN,
            "The moderator_id must match the user ID in the access token.",
        );
    }
    let Some(channel) = login_of(&st, &broadcaster_id) else {
        return error(StatusCode::BAD_REQUEST, "The broadcaster was not found.");
    };
    let is_mod = channel == account.login
        || st
            .moderators
            .contains(&(channel.clone(), account.login.clone()));
    if !is_mod {
        return error(
            StatusCode::FORBIDDEN,
            "The user in moderator_id is not one of the broadcaster's moderators.",
        );
    }
    let entry = match what {
        "delete" => {
            let Some(message_id) = query_one(&pairs, "message_id") else {
                return error(StatusCode::BAD_REQUEST, "Missing message_id");
            };
            Moderation::Delete {
                channel,
                message_id,
            }
        }
        "ban" => {
            let data = &body.unwrap_or(&Value::Null)["data"];
            let Some(user_id) = data["user_id"].as_str() else {
                return error(StatusCode::BAD_REQUEST, "Missing user_id");
            };
            Moderation::Ban {
                channel,
                user_id: user_id.to_owned(),
                duration: data["duration"].as_u64(),
                reason: data["reason"].as_str().unwrap_or_default().to_owned(),
            }
        }
        _ => {
            let Some(user_id) = query_one(&pairs, "user_id") else {
                return error(StatusCode::BAD_REQUEST, "Missing user_id");
            };
            Moderation::Unban { channel, user_id }
        }
    };
    let answer = match &entry {
        Moderation::Ban {
            user_id, duration, ..
        } => reply(
            StatusCode::OK,
            json!({"data": [{
                "broadcaster_id": broadcaster_id,
                "moderator_id": moderator_id,
                "user_id": user_id,
                "created_at": chrono::Utc::now().to_rfc3339(),
                "end_time": duration.map(|d| (chrono::Utc::now() + chrono::Duration::seconds(i64::try_from(d).unwrap_or(0))).to_rfc3339()),
            }]}),
        ),
        _ => reply(StatusCode::NO_CONTENT, Value::Null),
    };
    st.moderation.push(entry);
    answer
}
