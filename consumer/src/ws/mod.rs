//! `GET /ws`: live events and history over WebSocket. The protocol is in
//! [`protocol`] and documented in `docs/websocket.md`; one connection is a
//! [`session`].

pub mod protocol;
mod session;

use std::sync::Arc;
use std::time::Duration;

use common::Secret;
use common::http::{ApiError, bearer_auth};
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::hub::Hub;
use crate::store::Store;
use protocol::{SubscribeRequest, Subscription};

/// The limits of every connection.
#[derive(Debug, Clone, Copy)]
pub struct WsSettings {
    /// Events queued for a client before it is disconnected as too slow.
    pub send_queue: usize,
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

/// `GET /ws` (bearer token if configured; `?access_token=` works for
/// browsers).
pub fn route(
    ctx: Arc<WsContext>,
    token: Option<Secret>,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let upgrade = warp::header::optional::<String>("upgrade")
        .and_then(|upgrade: Option<String>| async move {
            if upgrade.is_some_and(|u| u.eq_ignore_ascii_case("websocket")) {
                Ok(())
            } else {
                Err(warp::reject::custom(ApiError::new(
                    StatusCode::UPGRADE_REQUIRED,
                    "upgrade_required",
                    "this is a WebSocket endpoint; see docs/websocket.md",
                )))
            }
        })
        .untuple_one();
    warp::path!("ws")
        .and(warp::get())
        .and(bearer_auth(token))
        .and(upgrade)
        .and(warp::ws())
        .and(warp::query::<WsQuery>())
        .and_then(move |ws: warp::ws::Ws, query: WsQuery| {
            let ctx = ctx.clone();
            async move {
                let initial = query
                    .subscription(ctx.settings.max_history)
                    .map_err(warp::reject::custom)?;
                let max = ctx.settings.max_frame_bytes;
                let ws = ws.max_message_size(max).max_frame_size(max);
                Ok::<_, Rejection>(ws.on_upgrade(move |socket| session::run(socket, ctx, initial)))
            }
        })
}
