//! A fake Kick on 127.0.0.1: the OAuth token endpoint (client
//! credentials), the public API the Kick platform calls (`GET
//! /public/v1/public-key`, `GET /public/v1/channels?slug=`, the event
//! subscriptions `GET`/`POST`/`DELETE /public/v1/events/subscriptions`,
//! `POST /public/v1/chat`), and deliveries signed as Kick signs them (RSA
//! PKCS#1 v1.5, SHA-256 over `<message id>.<timestamp>.<body>`, base64)
//! with a key of its own: 2048 bits, generated once per process.

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
                .map(move |a: Option<String>, body: Value| {
                    if a.is_none() {
                        return reply(StatusCode::UNAUTHORIZED, json!({"message": "Unauthorized"}));
                    }
                    let mut state = fake.lock();
                    state.next += 1;
                    let id = format!("fake-kick-msg-{}", state.next);
                    state.chat.push(body);
                    reply(
                        StatusCode::OK,
                        json!({"data": {"is_sent": true, "message_id": id}, "message": "OK"}),
                    )
                })
        };
        token
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
            .boxed()
    }
}
