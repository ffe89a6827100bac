//! `POST /hooks/kick` on the webhook listener: Kick's deliveries.
//!
//! Every request is checked before its body is parsed, in this order: its
//! size (`WEBHOOK_MAX_BODY_BYTES`, 413, before the body is read), the
//! headers `Kick-Event-Message-Id`, `Kick-Event-Message-Timestamp` (RFC
//! 3339) and `Kick-Event-Signature` (401 when missing), the timestamp within
//! `KICK_WEBHOOK_MAX_AGE` of now (401), the signature under Kick's public
//! key ([`super::signature`]; 401; 503 when the key cannot be fetched).
//! Only then is the body read as JSON (400 otherwise). A delivery for a
//! broadcaster this deployment does not read is answered 200, counted and
//! dropped; a message id accepted in the last 24 hours is answered 200 and
//! not published again (Kick retries); any other is answered 200 only once
//! its events are in the outbox.

use std::sync::Arc;

use bytes::Bytes;
use common::http::ApiError;
use serde::Serialize;
use serde_json::Value;
use warp::http::{HeaderMap, StatusCode};
use warp::{Filter, Reply};

use super::normalise::{self, Delivery, Envelope, PLATFORM};
use super::signature::KeyCache;
use super::Shared;
use crate::platforms::seam::{EventSink, Routes};
use crate::webhooks::Dedup;

/// What the Kick route needs.
#[derive(Debug)]
pub struct KickHooks {
    pub(super) keys: KeyCache,
    pub(super) shared: Arc<Shared>,
    pub(super) sink: EventSink,
    pub(super) max_age: std::time::Duration,
    pub(super) include_raw: bool,
    pub(super) seen: Dedup,
}

#[derive(Debug, Serialize)]
struct Answer<'a> {
    id: &'a str,
    duplicate: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    dropped: Option<&'static str>,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn unauthorized(code: &'static str, why: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, code, why)
}

impl KickHooks {
    async fn deliver(&self, headers: &HeaderMap, body: &[u8]) -> Result<warp::reply::Response, ApiError> {
        let (Some(id), Some(timestamp), Some(signature)) = (
            header(headers, "kick-event-message-id"),
            header(headers, "kick-event-message-timestamp"),
            header(headers, "kick-event-signature"),
        ) else {
            return Err(unauthorized(
                "unsigned",
                "Kick-Event-Message-Id, Kick-Event-Message-Timestamp and Kick-Event-Signature are required",
            ));
        };
        let sent_at = chrono::DateTime::parse_from_rfc3339(timestamp)
            .map_err(|_| unauthorized("bad_timestamp", "Kick-Event-Message-Timestamp is not RFC 3339"))?
            .with_timezone(&chrono::Utc);
        let now = chrono::Utc::now();
        let age = (now - sent_at).num_seconds().unsigned_abs();
        if age > self.max_age.as_secs() {
            return Err(unauthorized(
                "stale",
                "Kick-Event-Message-Timestamp is too far from now (replayed, or a clock off)",
            ));
        }
        match self.keys.check(id, timestamp, body, signature).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(unauthorized(
                    "bad_signature",
                    "Kick-Event-Signature does not verify under Kick's public key",
                ));
            }
            Err(e) => {
                tracing::warn!(error = %e, "a Kick delivery cannot be checked");
                return Err(ApiError::unavailable("Kick's public key is not available; retry later"));
            }
        }
        // Authenticated: only now is the body parsed.
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("the body is not JSON: {e}"))
        })?;
        let event_type = header(headers, "kick-event-type").unwrap_or("unknown");
        let channel = serde_json::from_value::<Envelope>(value.clone())
            .ok()
            .and_then(|e| e.channel());
        let Some((slug, broadcaster)) = channel else {
            return Ok(self.dropped(id, event_type, "no_broadcaster"));
        };
        if !self.shared.is_wanted(broadcaster) {
            return Ok(self.dropped(id, event_type, "not_subscribed"));
        }
        if !self.seen.claim(PLATFORM, id) {
            metrics::counter!("chatbus_ingestor_webhook_duplicates_total", "source" => PLATFORM)
                .increment(1);
            return Ok(warp::reply::json(&Answer { id, duplicate: true, dropped: None }).into_response());
        }
        let mut events = normalise::normalise(
            Delivery {
                event_type,
                message_id: id,
                sent_at,
                body: &value,
                include_raw: self.include_raw,
            },
            &slug,
            broadcaster,
            now,
        );
        // Online and offline once per transition: the status poller may
        // have published this one already.
        events.retain(|e| self.shared.is_news(e));
        self.shared.channels().on_events(&events);
        let appended = self.sink.emit(&events);
        if appended.dropped > 0 || appended.taken() < events.len() {
            self.seen.release(PLATFORM, id);
            return Err(ApiError::unavailable("the outbox could not take the event; retry later"));
        }
        Ok(warp::reply::json(&Answer { id, duplicate: false, dropped: None }).into_response())
    }

    fn dropped(&self, id: &str, event_type: &str, why: &'static str) -> warp::reply::Response {
        metrics::counter!("chatbus_ingestor_kick_dropped_total", "reason" => why).increment(1);
        tracing::info!(id, event_type, reason = why, "a signed Kick delivery for no channel read here; dropped");
        warp::reply::json(&Answer { id, duplicate: false, dropped: Some(why) }).into_response()
    }
}

/// `POST /hooks/kick`, bodies up to `max_body_bytes`.
pub fn routes(hooks: Arc<KickHooks>, max_body_bytes: u64) -> Routes {
    warp::path!("hooks" / "kick")
        .and(warp::post())
        .and(warp::header::headers_cloned())
        .and(warp::body::content_length_limit(max_body_bytes))
        .and(warp::body::bytes())
        .then(move |headers: HeaderMap, body: Bytes| {
            let hooks = hooks.clone();
            async move {
                let (status, response) = match hooks.deliver(&headers, &body).await {
                    Ok(response) => (StatusCode::OK, response),
                    Err(e) => (e.status, e.into_response()),
                };
                metrics::counter!(
                    "chatbus_ingestor_webhook_requests_total",
                    "source" => PLATFORM,
                    "status" => status.as_str().to_owned()
                )
                .increment(1);
                response
            }
        })
        .boxed()
}
