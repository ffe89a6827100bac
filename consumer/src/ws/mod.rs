//! `GET /ws`: live events and history over WebSocket. The protocol is in
//! [`protocol`] and documented in `docs/websocket.md`; one connection is a
//! [`session`].

pub mod admission;
pub(crate) mod frame;
pub mod protocol;
mod session;

use std::sync::Arc;
use std::time::Duration;

use common::Secret;
use common::amqp::privacy::PrivacyFeed;
use common::http::{ApiError, bearer_auth};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_util::sync::CancellationToken;
use warp::http::StatusCode;
use warp::http::header::{CONNECTION, HeaderValue, SEC_WEBSOCKET_ACCEPT, UPGRADE};
use warp::hyper::upgrade::OnUpgrade;
use warp::{Filter, Rejection, Reply};

use crate::hub::Hub;
use crate::store::{Cursor, Store};
use admission::Admission;
use protocol::{History, Refusal, SubscribeRequest, Subscription};

/// The limits of every connection.
#[derive(Debug, Clone, Copy)]
pub struct WsSettings {
    /// Events queued for a client before it is disconnected as too slow.
    pub send_queue: usize,
    /// Bytes of frames a client may have queued or not yet written before
    /// it is disconnected as too slow.
    pub send_queue_bytes: usize,
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Largest inbound message, bytes.
    pub max_frame_bytes: usize,
    /// Time between the server's pings.
    pub ping_interval: Duration,
    /// Longest a write may block.
    pub write_timeout: Duration,
    /// Largest `last`.
    pub max_history: usize,
}

/// What every session shares.
#[derive(Debug)]
pub struct WsContext {
    /// History comes from here.
    pub store: Arc<dyn Store>,
    /// Live events come from here.
    pub hub: Arc<Hub>,
    /// Limits.
    pub settings: WsSettings,
    /// Cancelled at shutdown: sessions close with 1001.
    pub shutdown: CancellationToken,
    /// The connection caps.
    pub admission: Arc<Admission>,
    /// The opt-outs and purge horizons of the privacy stream
    /// (`PRIVACY_STREAM`; empty when off): the consumer's app-wide
    /// [`PrivacyFeed`], for whatever must honour it. Purges and opt-outs
    /// reach the sessions through the hub ([`crate::privacy_live`]).
    pub privacy: PrivacyFeed,
}

impl WsContext {
    /// Refuses a `since` beyond the store's head: nothing would ever come
    /// after it on this store (a cursor from another store, or made up),
    /// and the subscription would wait in silence. Asks the store only
    /// when `since` is beyond what the hub has published.
    ///
    /// # Errors
    /// `cursor_beyond_head` naming the head, or `history_unavailable` when
    /// the store cannot say.
    pub async fn check_since(&self, since: Cursor) -> Result<(), Refusal> {
        if self.hub.last_published().is_some_and(|head| since <= head) {
            return Ok(());
        }
        match self.store.head().await {
            Ok(Some(head)) if since <= head => Ok(()),
            Ok(head) => Err(Refusal::new(
                "cursor_beyond_head",
                format!(
                    "`since` {since} is beyond the newest stored cursor ({}); resume from a \
                     cursor this server sent, or 0 for the start",
                    head.map_or_else(|| "none: the store is empty".to_owned(), |h| h.to_string())
                ),
            )),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the store's head");
                Err(Refusal::new(
                    "history_unavailable",
                    "the store could not be read; subscribe again later",
                ))
            }
        }
    }
}

/// An optional first subscription in the query string, for clients that
/// cannot send frames easily: `/ws?patterns=chat.twitch.*&kinds=message&last=50`.
/// Lists are comma-separated.
#[derive(Debug, Default, Deserialize)]
struct WsQuery {
    sub: Option<String>,
    patterns: Option<String>,
    channels: Option<String>,
    kinds: Option<String>,
    last: Option<String>,
    since: Option<String>,
}

fn list(value: Option<&String>) -> Vec<String> {
    value
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl WsQuery {
    fn subscription(&self, max_history: usize) -> Result<Option<Subscription>, ApiError> {
        let patterns = list(self.patterns.as_ref());
        let channels = list(self.channels.as_ref());
        let kinds = list(self.kinds.as_ref());
        if patterns.is_empty() && channels.is_empty() {
            if self.last.is_some() || self.since.is_some() || !kinds.is_empty() {
                return Err(ApiError::bad_request(
                    "invalid_subscription",
                    "`last`, `since` and `kinds` need `patterns` or `channels`",
                ));
            }
            return Ok(None);
        }
        let mut request = serde_json::json!({
            "patterns": patterns,
            "channels": channels,
            "kinds": kinds,
        });
        if let Some(sub) = &self.sub {
            request["sub"] = sub.clone().into();
        }
        for (key, value) in [("last", &self.last), ("since", &self.since)] {
            if let Some(value) = value {
                let n: i64 = value.parse().map_err(|_| {
                    ApiError::bad_request("invalid_history", format!("`{key}` must be a number"))
                })?;
                request[key] = n.into();
            }
        }
        let request: SubscribeRequest = serde_json::from_value(request)
            .map_err(|e| ApiError::bad_request("invalid_subscription", e.to_string()))?;
        request
            .validate(max_history)
            .map(Some)
            .map_err(|r| ApiError::bad_request(r.code, r.message))
    }
}

/// Bytes tungstenite reads at a time (its buffer grows when a frame is
/// larger). It zeroes that much before every read attempt, and the session
/// polls the socket on every wake-up, data or not: its default, 128 KiB,
/// would cost that much memory per connection and a 128 KiB memset per
/// event written. Clients send small frames (subscriptions, pongs).
const READ_BUFFER: usize = 1024;

impl WsSettings {
    fn socket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER)
            .max_message_size(Some(self.max_frame_bytes))
            .max_frame_size(Some(self.max_frame_bytes))
    }
}

fn bad_handshake(message: &str) -> Rejection {
    warp::reject::custom(ApiError::bad_request("invalid_handshake", message))
}

/// The WebSocket handshake headers (RFC 6455 4.2.1); yields the key.
fn handshake() -> impl Filter<Extract = (String,), Error = Rejection> + Clone {
    warp::header::optional::<String>("upgrade")
        .and(warp::header::optional::<String>("connection"))
        .and(warp::header::optional::<String>("sec-websocket-version"))
        .and(warp::header::optional::<String>("sec-websocket-key"))
        .and_then(
            |upgrade: Option<String>,
             connection: Option<String>,
             version: Option<String>,
             key: Option<String>| async move {
                let websocket = upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
                let connection_upgrade = connection.is_some_and(|c| {
                    c.split(',')
                        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
                });
                if !websocket || !connection_upgrade {
                    return Err(warp::reject::custom(ApiError::new(
                        StatusCode::UPGRADE_REQUIRED,
                        "upgrade_required",
                        "this is a WebSocket endpoint; see docs/websocket.md",
                    )));
                }
                if version.as_deref() != Some("13") {
                    return Err(bad_handshake("Sec-WebSocket-Version must be 13"));
                }
                key.filter(|k| !k.is_empty())
                    .ok_or_else(|| bad_handshake("Sec-WebSocket-Key is missing"))
            },
        )
}

/// `GET /ws` (bearer token if configured; `?access_token=` works for
/// browsers). The upgrade is done here rather than with `warp::ws` so the
/// socket's buffers can be sized (see [`READ_BUFFER`]).
pub fn route(
    ctx: Arc<WsContext>,
    token: Option<Secret>,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    warp::path!("ws")
        .and(warp::get())
        .and(bearer_auth(token))
        .and(handshake())
        .and(warp::ext::optional::<OnUpgrade>())
        .and(warp::query::<WsQuery>())
        .and(warp::addr::remote())
        .and_then(
            move |key: String,
                  on_upgrade: Option<OnUpgrade>,
                  query: WsQuery,
                  remote: Option<std::net::SocketAddr>| {
                let ctx = ctx.clone();
                async move {
                    // Counted from here until the session ends; refused
                    // before the upgrade (503) when over a cap.
                    let admitted = ctx
                        .admission
                        .admit(remote.map(|a| a.ip()))
                        .map_err(warp::reject::custom)?;
                    let initial = query
                        .subscription(ctx.settings.max_history)
                        .map_err(warp::reject::custom)?;
                    if let Some(Subscription {
                        history: Some(History::Since(Some(since))),
                        ..
                    }) = &initial
                    {
                        ctx.check_since(*since).await.map_err(|r| {
                            warp::reject::custom(if r.code == "history_unavailable" {
                                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, r.code, r.message)
                            } else {
                                ApiError::bad_request(r.code, r.message)
                            })
                        })?;
                    }
                    let on_upgrade = on_upgrade.ok_or_else(|| {
                        warp::reject::custom(ApiError::internal(
                            "the connection cannot be upgraded (HTTP/2?)",
                        ))
                    })?;
                    let config = ctx.settings.socket_config();
                    tokio::spawn(async move {
                        let _admitted = admitted;
                        match on_upgrade.await {
                            Ok(upgraded) => {
                                let socket = WebSocketStream::from_raw_socket(
                                    TokioIo::new(upgraded),
                                    Role::Server,
                                    Some(config),
                                )
                                .await;
                                session::run(socket, ctx, initial).await;
                            }
                            Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
                        }
                    });
                    let mut response = warp::reply::Response::new(Default::default());
                    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
                    let headers = response.headers_mut();
                    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
                    headers.insert(CONNECTION, HeaderValue::from_static("Upgrade"));
                    let accept = derive_accept_key(key.as_bytes());
                    headers.insert(
                        SEC_WEBSOCKET_ACCEPT,
                        HeaderValue::from_str(&accept).expect("base64 is a valid header"),
                    );
                    Ok::<_, Rejection>(response)
                }
            },
        )
}
