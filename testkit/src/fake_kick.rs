//! A fake Kick on 127.0.0.1: the OAuth token endpoint (client
//! credentials), the public API the Kick platform calls (`GET
//! /public/v1/public-key`, `GET /public/v1/channels?slug=`, the event
//! subscriptions `GET`/`POST`/`DELETE /public/v1/events/subscriptions`,
//! `POST /public/v1/chat`), and deliveries signed as Kick signs them (RSA
//! PKCS#1 v1.5, SHA-256 over `<message id>.<timestamp>.<body>`, base64)
//! with a key of its own: 2048 bits, generated once per process.
//!
//! As users (the sender's calls, with the user tokens of
//! [`FakeKick::add_user`]): `POST /public/v1/chat` (scope `chat:write`),
//! `DELETE /public/v1/chat/{id}` (`moderation:chat_message:manage`),
//! `POST`/`DELETE /public/v1/moderation/bans` (`moderation:ban`) and `GET
//! /public/v1/users` (the token's own user). A message it takes is logged
//! and, once [`FakeKick::deliver_to`] names the ingestor's webhook, sent
//! back to it as a signed `chat.message.sent` delivery, as Kick does.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};

use base64::Engine as _;
use rsa::pkcs1v15::Pkcs1v15Sign;
use rsa::pkcs8::{EncodePublicKey as _, LineEnding};
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tokio_util::sync::CancellationToken;
use warp::Filter;
use warp::http::StatusCode;

/// The app token the fake hands out.
pub const APP_TOKEN: &str = "fake-kick-app-token";

fn key() -> &'static RsaPrivateKey {
    static KEY: OnceLock<RsaPrivateKey> = OnceLock::new();
    KEY.get_or_init(|| {
        RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 2048).expect("generate an RSA key")
    })
}

/// One subscription the fake holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sub {
    /// Its id.
    pub id: String,
    /// The broadcaster.
    pub broadcaster_user_id: u64,
    /// The event name.
    pub event: String,
}

#[derive(Debug, Default)]
struct State {
    channels: BTreeMap<String, u64>,
    subs: Vec<Sub>,
    next: u64,
    tokens_issued: u64,
    chat: Vec<Value>,
    /// User access token → the user.
    users: BTreeMap<String, User>,
    moderation: Vec<Value>,
    deliver_to: Option<String>,
    /// Broadcaster id → its live stream (`GET /public/v2/livestreams`).
    live: BTreeMap<u64, Value>,
    livestream_calls: u64,
}

/// A Kick user the fake knows, with its token's scopes.
#[derive(Debug, Clone)]
struct User {
    login: String,
    user_id: u64,
    scopes: Vec<String>,
}

/// The fake. Clones share it.
#[derive(Clone)]
pub struct FakeKick {
    addr: std::net::SocketAddr,
    state: Arc<Mutex<State>>,
    cancel: CancellationToken,
}

impl std::fmt::Debug for FakeKick {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeKick")
            .field("addr", &self.addr)
            .finish()
    }
}

fn authorized(auth: Option<String>) -> bool {
    auth.as_deref() == Some(&format!("Bearer {APP_TOKEN}"))
}

fn reply(status: StatusCode, body: Value) -> warp::reply::Response {
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

use warp::Reply as _;

impl FakeKick {
    /// Starts it on an ephemeral port of 127.0.0.1.
    pub async fn start() -> Self {
        let _ = key();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Kick");
        let fake = Self {
            addr: listener.local_addr().expect("addr"),
            state: Arc::default(),
            cancel: CancellationToken::new(),
        };
        let routes = fake.routes();
        let cancel = fake.cancel.clone();
        tokio::spawn(async move {
            warp::serve(routes)
                .incoming(listener)
                .graceful(async move { cancel.cancelled().await })
                .run()
                .await;
        });
        fake
    }

    /// Stops serving.
    pub fn stop(&self) {
        self.cancel.cancel();
    }

    /// Its base URL (`KICK_API_URL` and `KICK_OAUTH_URL`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("fake kick lock")
    }

    /// `broadcaster` is live with `viewers` and `title` (as
    /// `GET /public/v2/livestreams` answers).
    pub fn set_live(&self, broadcaster: u64, viewers: u64, title: &str) {
        self.lock().live.insert(
            broadcaster,
            json!({
                "broadcaster_user_id": broadcaster,
                "stream_title": title,
                "viewer_count": viewers,
                "started_at": "2026-12-04T10:00:00Z",
                "category": {"id": 15, "name": "Just Chatting"},
            }),
        );
    }

    /// `broadcaster` is offline.
    pub fn set_offline(&self, broadcaster: u64) {
        self.lock().live.remove(&broadcaster);
    }

    /// Calls to `GET /public/v2/livestreams` so far.
    pub fn livestream_calls(&self) -> u64 {
        self.lock().livestream_calls
    }

    /// Kick knows the channel `slug` with broadcaster id `id`.
    pub fn add_channel(&self, slug: &str, id: u64) {
        self.lock().channels.insert(slug.to_owned(), id);
    }

    /// The subscriptions held now.
    pub fn subscriptions(&self) -> Vec<Sub> {
        self.lock().subs.clone()
    }

    /// Drops every subscription (as Kick does when webhooks fail for a day).
    pub fn drop_subscriptions(&self) {
        self.lock().subs.clear();
    }

    /// App tokens issued so far.
    pub fn tokens_issued(&self) -> u64 {
        self.lock().tokens_issued
    }

    /// The chat messages posted, as their JSON bodies.
    pub fn chat(&self) -> Vec<Value> {
        self.lock().chat.clone()
    }

    /// Kick knows the user `login` (`user_id`), whose access token `token`
    /// holds `scopes`.
    pub fn add_user(&self, login: &str, user_id: u64, token: &str, scopes: &[&str]) {
        self.lock().users.insert(
            token.to_owned(),
            User {
                login: login.to_owned(),
                user_id,
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            },
        );
    }

    /// The messages it takes are delivered back to `url` (the ingestor's
    /// `/hooks/kick`) as signed `chat.message.sent` events.
    pub fn deliver_to(&self, url: &str) {
        self.lock().deliver_to = Some(url.to_owned());
    }

    /// The moderation calls taken: `{"call": "ban"|"unban"|"delete", ...}`
    /// with the request's body.
    pub fn moderation(&self) -> Vec<Value> {
        self.lock().moderation.clone()
    }

    /// The user of a bearer token, or the refusal: 401 for an unknown
    /// token, 403 when it lacks `scope`.
    fn user(&self, auth: Option<&str>, scope: &str) -> Result<User, Box<warp::reply::Response>> {
        let token = auth
            .and_then(|a| a.strip_prefix("Bearer "))
            .unwrap_or_default();
        let Some(user) = self.lock().users.get(token).cloned() else {
            return Err(Box::new(reply(
                StatusCode::UNAUTHORIZED,
                json!({"message": "Unauthorized"}),
            )));
        };
        if !scope.is_empty() && !user.scopes.iter().any(|s| s == scope) {
            return Err(Box::new(reply(
                StatusCode::FORBIDDEN,
                json!({"message": format!("Forbidden: missing scope {scope}")}),
            )));
        }
        Ok(user)
    }

    /// The public key, PEM (`PUBLIC KEY`).
    pub fn public_key_pem() -> String {
        RsaPublicKey::from(key())
            .to_public_key_pem(LineEnding::LF)
            .expect("encode the public key")
    }

    /// Kick's `Kick-Event-Signature` of a delivery.
    pub fn sign(message_id: &str, timestamp: &str, body: &[u8]) -> String {
        let mut signed = format!("{message_id}.{timestamp}.").into_bytes();
        signed.extend_from_slice(body);
        let digest = Sha256::digest(&signed);
        let signature = key()
            .sign(Pkcs1v15Sign::new::<Sha256>(), &digest)
            .expect("sign");
        base64::engine::general_purpose::STANDARD.encode(signature)
    }

    /// POSTs a delivery to `url` as Kick does, signed (or with `signature`
    /// instead when given), stamped `timestamp` (RFC 3339); its status and
    /// JSON answer.
    pub async fn deliver(
        url: &str,
        event_type: &str,
        message_id: &str,
        timestamp: &str,
        body: Vec<u8>,
        signature: Option<String>,
    ) -> (u16, Value) {
        let signature = signature.unwrap_or_else(|| Self::sign(message_id, timestamp, &body));
        let res = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header("Kick-Event-Message-Id", message_id)
            .header("Kick-Event-Subscription-Id", "01FAKESUBSCRIPTION")
            .header("Kick-Event-Message-Timestamp", timestamp)
            .header("Kick-Event-Signature", signature)
            .header("Kick-Event-Type", event_type)
            .header("Kick-Event-Version", "1")
            .body(body)
            .send()
            .await;
        match res {
            Ok(res) => {
                let status = res.status().as_u16();
                (status, res.json().await.unwrap_or(Value::Null))
            }
            // A server refusing a large body may close before reading it.
            Err(e) => (0, json!({ "error": e.to_string() })),
        }
    }

    /// `POST /public/v1/chat`: checks the token, its scope and the body,
    /// logs the message and delivers it back to the ingestor.
    fn take_chat(&self, auth: Option<&str>, body: Value) -> warp::reply::Response {
        let user = match self.user(auth, "chat:write") {
            Ok(u) => u,
            Err(refused) => return *refused,
        };
        let content = body["content"].as_str().unwrap_or_default().to_owned();
        let broadcaster = match body["type"].as_str() {
            Some("user") => body["broadcaster_user_id"].as_u64(),
            // A bot's message goes to its own channel.
            Some("bot") => Some(user.user_id),
            _ => None,
        };
        let (Some(broadcaster), false, true) = (
            broadcaster,
            content.is_empty(),
            content.chars().count() <= 500,
        ) else {
            return reply(
                StatusCode::BAD_REQUEST,
                json!({"message": "Invalid request"}),
            );
        };
        let (id, slug, url, n) = {
            let mut state = self.lock();
            state.next += 1;
            let n = state.next;
            state.chat.push(body.clone());
            let slug = state
                .channels
                .iter()
                .find(|(_, id)| **id == broadcaster)
                .map(|(slug, _)| slug.clone())
                .unwrap_or_default();
            (
                format!("00000000-0000-4000-8000-{n:012}"),
                slug,
                state.deliver_to.clone(),
                n,
            )
        };
        if let Some(url) = url {
            let event = json!({
                "message_id": id,
                "replies_to": body.get("reply_to_message_id").filter(|r| !r.is_null())
                    .map(|r| json!({"message_id": r, "content": "", "sender": null})),
                "broadcaster": {"is_anonymous": false, "user_id": broadcaster, "username": slug,
                    "is_verified": false, "profile_picture": "", "channel_slug": slug, "identity": null},
                "sender": {"is_anonymous": false, "user_id": user.user_id, "username": user.login,
                    "is_verified": false, "profile_picture": "", "channel_slug": user.login, "identity": null},
                "content": content,
                "emotes": [],
                "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            });
            tokio::spawn(async move {
                let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                let body = serde_json::to_vec(&event).expect("encode the event");
                let message_id = format!("01FAKEDELIVERY{n:012}");
                let (status, answer) =
                    Self::deliver(&url, "chat.message.sent", &message_id, &at, body, None).await;
                if status != 200 {
                    tracing::warn!(status, %answer, "the fake Kick's delivery was refused");
                }
            });
        }
        reply(
            StatusCode::OK,
            json!({"data": {"is_sent": true, "message_id": id}, "message": "OK"}),
        )
    }

    fn routes(&self) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
        let auth = warp::header::optional::<String>("authorization");
        let token = {
            let fake = self.clone();
            warp::path!("oauth" / "token")
                .and(warp::post())
                .and(warp::body::form::<BTreeMap<String, String>>())
                .map(move |form: BTreeMap<String, String>| {
                    if form.get("grant_type").map(String::as_str) != Some("client_credentials")
                        || form.get("client_id").is_none_or(String::is_empty)
                        || form.get("client_secret").is_none_or(String::is_empty)
                    {
                        return reply(StatusCode::BAD_REQUEST, json!({"error": "Invalid request"}));
                    }
                    fake.lock().tokens_issued += 1;
                    // Kick's docs show expires_in as a string.
                    reply(
                        StatusCode::OK,
                        json!({"access_token": APP_TOKEN, "token_type": "Bearer", "expires_in": "3600"}),
                    )
                })
        };
        let public_key = warp::path!("public" / "v1" / "public-key")
            .and(warp::get())
            .map(|| {
                reply(
                    StatusCode::OK,
                    json!({"data": {"public_key": Self::public_key_pem()}, "message": "OK"}),
                )
            });
        let channels = {
            let fake = self.clone();
            warp::path!("public" / "v1" / "channels")
                .and(warp::get())
                .and(auth)
                .and(warp::query::<BTreeMap<String, String>>())
                .map(move |a: Option<String>, q: BTreeMap<String, String>| {
                    if !authorized(a) {
                        return reply(StatusCode::UNAUTHORIZED, json!({"message": "Unauthorized"}));
                    }
                    let state = fake.lock();
                    let data: Vec<Value> = q
                        .get("slug")
                        .and_then(|s| state.channels.get_key_value(s))
                        .map(|(slug, id)| json!({"broadcaster_user_id": id, "slug": slug}))
                        .into_iter()
                        .collect();
                    reply(StatusCode::OK, json!({"data": data, "message": "OK"}))
                })
        };
        let subs_path = warp::path!("public" / "v1" / "events" / "subscriptions");
        let list = {
            let fake = self.clone();
            subs_path.and(warp::get()).and(auth).map(move |a: Option<String>| {
                if !authorized(a) {
                    return reply(StatusCode::UNAUTHORIZED, json!({"message": "Unauthorized"}));
                }
                let data: Vec<Value> = fake
                    .lock()
                    .subs
                    .iter()
                    .map(|s| {
                        json!({"id": s.id, "app_id": "fake-app", "broadcaster_user_id": s.broadcaster_user_id,
                               "event": s.event, "method": "webhook", "version": 1,
                               "created_at": "2025-01-14T16:08:06Z", "updated_at": "2025-01-14T16:08:06Z"})
                    })
                    .collect();
                reply(StatusCode::OK, json!({"data": data, "message": "OK"}))
            })
        };
        let create = {
            let fake = self.clone();
            subs_path
                .and(warp::post())
                .and(auth)
                .and(warp::body::json::<Value>())
                .map(move |a: Option<String>, body: Value| {
                    if !authorized(a) {
                        return reply(StatusCode::UNAUTHORIZED, json!({"message": "Unauthorized"}));
                    }
                    let (Some(broadcaster), Some(events)) = (
                        body["broadcaster_user_id"].as_u64(),
                        body["events"].as_array(),
                    ) else {
                        return reply(
                            StatusCode::BAD_REQUEST,
                            json!({"message": "Invalid request"}),
                        );
                    };
                    let mut state = fake.lock();
                    let mut data = Vec::new();
                    for e in events {
                        let name = e["name"].as_str().unwrap_or_default().to_owned();
                        state.next += 1;
                        let id = format!("01FAKESUB{:08}", state.next);
                        state
                            .subs
                            .retain(|s| !(s.broadcaster_user_id == broadcaster && s.event == name));
                        state.subs.push(Sub {
                            id: id.clone(),
                            broadcaster_user_id: broadcaster,
                            event: name.clone(),
                        });
                        data.push(
                            json!({"name": name, "version": 1, "subscription_id": id, "error": ""}),
                        );
                    }
                    reply(StatusCode::OK, json!({"data": data, "message": "OK"}))
                })
        };
        let delete = {
            let fake = self.clone();
            subs_path
                .and(warp::delete())
                .and(auth)
                .and(warp::query::<Vec<(String, String)>>())
                .map(move |a: Option<String>, q: Vec<(String, String)>| {
                    if !authorized(a) {
                        return reply(StatusCode::UNAUTHORIZED, json!({"message": "Unauthorized"}));
                    }
                    let ids: Vec<&str> = q
                        .iter()
                        .filter(|(k, _)| k == "id")
                        .map(|(_, v)| v.as_str())
                        .collect();
                    fake.lock().subs.retain(|s| !ids.contains(&s.id.as_str()));
                    warp::reply::with_status(warp::reply(), StatusCode::NO_CONTENT).into_response()
                })
        };
        let chat = {
            let fake = self.clone();
            warp::path!("public" / "v1" / "chat")
                .and(warp::post())
                .and(warp::header::optional::<String>("authorization"))
                .and(warp::body::json::<Value>())
                .map(move |a: Option<String>, body: Value| fake.take_chat(a.as_deref(), body))
        };
        let delete_message = {
            let fake = self.clone();
            warp::path!("public" / "v1" / "chat" / String)
                .and(warp::delete())
                .and(warp::header::optional::<String>("authorization"))
                .map(move |id: String, a: Option<String>| {
                    if let Err(refused) = fake.user(a.as_deref(), "moderation:chat_message:manage")
                    {
                        return *refused;
                    }
                    fake.lock()
                        .moderation
                        .push(json!({"call": "delete", "message_id": id}));
                    reply(StatusCode::OK, json!({"data": {}, "message": "OK"}))
                })
        };
        let bans = {
            let fake = self.clone();
            warp::path!("public" / "v1" / "moderation" / "bans")
                .and(
                    warp::post()
                        .map(|| "ban")
                        .or(warp::delete().map(|| "unban"))
                        .unify(),
                )
                .and(warp::header::optional::<String>("authorization"))
                .and(warp::body::json::<Value>())
                .map(move |call: &str, a: Option<String>, body: Value| {
                    if let Err(refused) = fake.user(a.as_deref(), "moderation:ban") {
                        return *refused;
                    }
                    if body["broadcaster_user_id"].as_u64().is_none()
                        || body["user_id"].as_u64().is_none()
                    {
                        return reply(
                            StatusCode::BAD_REQUEST,
                            json!({"message": "Invalid request"}),
                        );
                    }
                    fake.lock()
                        .moderation
                        .push(json!({"call": call, "body": body}));
                    reply(StatusCode::OK, json!({"data": {}, "message": "OK"}))
                })
        };
        let users = {
            let fake = self.clone();
            warp::path!("public" / "v1" / "users")
                .and(warp::get())
                .and(warp::header::optional::<String>("authorization"))
                .map(move |a: Option<String>| match fake.user(a.as_deref(), "") {
                    Ok(u) => reply(
                        StatusCode::OK,
                        json!({"data": [{"user_id": u.user_id, "name": u.login, "email": "",
                                         "profile_picture": ""}], "message": "OK"}),
                    ),
                    Err(refused) => *refused,
                })
        };
        let livestreams = {
            let fake = self.clone();
            warp::path!("public" / "v2" / "livestreams")
                .and(warp::get())
                .and(auth)
                .and(warp::query::raw().or(warp::any().map(String::new)).unify())
                .map(move |a: Option<String>, q: String| {
                    if !authorized(a) {
                        return reply(StatusCode::UNAUTHORIZED, json!({"message": "Unauthorized"}));
                    }
                    let mut state = fake.lock();
                    state.livestream_calls += 1;
                    let data: Vec<Value> = q
                        .split('&')
                        .filter_map(|kv| kv.strip_prefix("broadcaster_user_id="))
                        .filter_map(|id| id.parse::<u64>().ok())
                        .filter_map(|id| state.live.get(&id).cloned())
                        .collect();
                    reply(StatusCode::OK, json!({"data": data, "message": "OK"}))
                })
        };
        token
            .or(livestreams)
            .unify()
            .or(public_key)
            .unify()
            .or(channels)
            .unify()
            .or(list)
            .unify()
            .or(create)
            .unify()
            .or(delete)
            .unify()
            .or(chat)
            .unify()
            .or(delete_message)
            .unify()
            .or(bans)
            .unify()
            .or(users)
            .unify()
            .boxed()
    }
}
