//! The webhook listener (`WEBHOOK_HTTP_ADDR`, off unless set), separate
//! from the loopback admin API because senders on the internet must reach
//! it (TLS is left to a reverse proxy), and the generic signed webhook
//! sources it serves: `POST /hooks/<source>` for anything that is not a
//! built-in platform (a custom platform, a bot, a relay).
//!
//! Every request is checked before its body is parsed, in this order: a
//! `Content-Length` (411) within `WEBHOOK_MAX_BODY_BYTES` (413, before the
//! body is read), a known source (404), the
//! timestamp (`X-Chatbus-Timestamp`, Unix seconds) within
//! `WEBHOOK_MAX_AGE` of now (401), the signature (`X-Chatbus-Signature:
//! sha256=<hex>`, HMAC-SHA256 of `<timestamp>.<body>` under the source's
//! secret, compared in constant time; 401). Only then is the body read as a
//! `ChatEvent` v1 whose `platform` is the source's name (400 with the
//! reason otherwise). A delivery whose id was accepted in the last 24 hours
//! is answered 200 and not published again (senders retry); any other is
//! answered 200 only once it is in the outbox (written to the spool, which
//! is fsynced every second: a process crash loses nothing answered, a
//! machine crash at most that last second). A request that fails any check
//! publishes nothing.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::Secret;
use common::config::ConfigError;
use common::http::ApiError;
use common::schema::ChatEvent;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

use crate::platforms::seam::EventSink;

/// How long an accepted delivery's id is remembered.
pub const DEDUPLICATION_WINDOW: Duration = Duration::from_secs(24 * 60 * 60);

/// Most delivery ids remembered (the oldest are forgotten first).
const REMEMBERED_IDS: usize = 200_000;

/// One generic signed source, as `WEBHOOK_SOURCES` names it.
#[derive(Debug, Clone)]
pub struct HookSource {
    /// Its name: the `platform` of its events and the path `/hooks/<name>`.
    pub name: String,
    /// The shared secret of its HMAC.
    pub secret: Secret,
}

/// Whether `name` may name a source: `[a-z0-9_-]{1,48}`.
pub fn is_valid_source_name(name: &str) -> bool {
    (1..=48).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// Parses `WEBHOOK_SOURCES` entries (`name:secret-file`) and reads each
/// secret file (trimmed). `reserved` are the built-in platforms' names: a
/// hook may never speak as one of them.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `webhook_sources` and the entry.
pub fn parse_sources(
    entries: &[String],
    reserved: &[&str],
) -> Result<Vec<HookSource>, ConfigError> {
    let invalid = |reason: String| ConfigError::invalid("webhook_sources", reason);
    let mut sources: Vec<HookSource> = Vec::new();
    for entry in entries {
        let Some((name, file)) = entry.split_once(':') else {
            return Err(invalid(format!("`{entry}` is not name:secret-file")));
        };
        let name = name.trim();
        if !is_valid_source_name(name) {
            return Err(invalid(format!(
                "source name `{name}` must match [a-z0-9_-]{{1,48}}"
            )));
        }
        if reserved.contains(&name) {
            return Err(invalid(format!(
                "`{name}` is a built-in platform; a webhook source may not speak as one"
            )));
        }
        if sources.iter().any(|s| s.name == name) {
            return Err(invalid(format!("source `{name}` is named twice")));
        }
        let secret = std::fs::read_to_string(file.trim()).map_err(|e| {
            invalid(format!(
                "source `{name}`: cannot read its secret file {file}: {e}"
            ))
        })?;
        let secret = secret.trim();
        if secret.len() < 16 {
            return Err(invalid(format!(
                "source `{name}`: its secret is {} bytes; use at least 16",
                secret.len()
            )));
        }
        sources.push(HookSource {
            name: name.to_owned(),
            secret: Secret::new(secret),
        });
    }
    Ok(sources)
}

/// The signature header's value for `body` sent at `timestamp` under
/// `secret`: `sha256=<hex of HMAC-SHA256("<timestamp>.<body>")>`. What a
/// sender computes (and the tests).
pub fn signature(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest body accepted.
    pub max_body_bytes: u64,
    /// Oldest (and furthest in the future) timestamp accepted.
    pub max_age: Duration,
}

/// What the webhook handlers share.
#[derive(Debug)]
pub struct Webhooks {
    sources: HashMap<String, Secret>,
    sink: EventSink,
    limits: Limits,
    seen: Dedup,
}

/// The delivery ids accepted in the last [`DEDUPLICATION_WINDOW`], per
/// source: a retried delivery is answered and not published again. An id
/// is claimed before its event is appended, under the same lock as the
/// check, so two copies arriving together publish once; a claim whose
/// append failed is released (the sender's retry must be published).
#[derive(Debug, Default)]
pub struct Dedup {
    seen: Mutex<Seen>,
}

impl Dedup {
    /// Claims `id` of `source`: true when it was not seen in the window
    /// (the caller publishes it), false for a repeat.
    pub fn claim(&self, source: &str, id: &str) -> bool {
        let key = (source.to_owned(), id.to_owned());
        let now = Instant::now();
        let mut seen = self.seen.lock().expect("webhook ids lock");
        seen.forget_old(now);
        if seen.ids.contains_key(&key) {
            return false;
        }
        seen.ids.insert(key.clone(), now);
        seen.order.push_back((key, now));
        true
    }

    /// Forgets a claim whose event could not be appended.
    pub fn release(&self, source: &str, id: &str) {
        self.seen
            .lock()
            .expect("webhook ids lock")
            .ids
            .remove(&(source.to_owned(), id.to_owned()));
    }
}

/// Delivery ids accepted recently, oldest first.
#[derive(Debug, Default)]
struct Seen {
    ids: HashMap<(String, String), Instant>,
    order: VecDeque<((String, String), Instant)>,
}

impl Seen {
    fn forget_old(&mut self, now: Instant) {
        while let Some((key, at)) = self.order.front() {
            if now.duration_since(*at) < DEDUPLICATION_WINDOW && self.order.len() <= REMEMBERED_IDS
            {
                break;
            }
            if self.ids.get(key) == Some(at) {
                self.ids.remove(key);
            }
            self.order.pop_front();
        }
    }
}

/// The answer to a delivery.
#[derive(Debug, Serialize)]
struct Accepted<'a> {
    id: &'a str,
    /// True when the id was accepted before (not published again).
    duplicate: bool,
}

impl Webhooks {
    /// Handlers for `sources`, appending to `sink`.
    pub fn new(sources: Vec<HookSource>, sink: EventSink, limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            sources: sources.into_iter().map(|s| (s.name, s.secret)).collect(),
            sink,
            limits,
            seen: Dedup::default(),
        })
    }

    /// The configured sources' names, sorted.
    pub fn source_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.sources.keys().cloned().collect();
        names.sort();
        names
    }

    /// Checks one delivery and appends its event; the error is the answer.
    fn deliver(
        &self,
        source: &str,
        timestamp: Option<&str>,
        signature_header: Option<&str>,
        body: &[u8],
    ) -> Result<warp::reply::Response, ApiError> {
        let secret = self
            .sources
            .get(source)
            .ok_or_else(|| ApiError::not_found(format!("no webhook source `{source}`")))?;
        let unauthorized =
            |code: &'static str, why: &str| ApiError::new(StatusCode::UNAUTHORIZED, code, why);
        let (Some(timestamp), Some(given)) = (timestamp, signature_header) else {
            return Err(unauthorized(
                "unsigned",
                "X-Chatbus-Timestamp and X-Chatbus-Signature are required",
            ));
        };
        let sent: i64 = timestamp.trim().parse().map_err(|_| {
            unauthorized("bad_timestamp", "X-Chatbus-Timestamp is not Unix seconds")
        })?;
        let age = chrono::Utc::now().timestamp().abs_diff(sent);
        if age > self.limits.max_age.as_secs() {
            return Err(unauthorized(
                "stale",
                "X-Chatbus-Timestamp is too far from now (replayed, or a clock off)",
            ));
        }
        let expected = signature(secret.expose().as_bytes(), timestamp, body);
        if !common::http::constant_time_eq(expected.as_bytes(), given.trim().as_bytes()) {
            return Err(unauthorized(
                "bad_signature",
                "X-Chatbus-Signature does not match the body",
            ));
        }
        // Authenticated: only now is the body parsed.
        let mut event: ChatEvent = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(
                "invalid_event",
                format!("the body is not a ChatEvent v1: {e}"),
            )
        })?;
        event
            .validate()
            .map_err(|e| ApiError::bad_request("invalid_event", e.to_string()))?;
        if event.platform != source {
            return Err(ApiError::bad_request(
                "wrong_platform",
                format!(
                    "the event's platform is `{}`; a `{source}` hook publishes `{source}` events",
                    event.platform
                ),
            ));
        }
        event.received_at = chrono::Utc::now();
        // Claimed before the append: two copies arriving together publish once.
        if !self.seen.claim(source, &event.id) {
            metrics::counter!("chatbus_ingestor_webhook_duplicates_total", "source" => source.to_owned())
                .increment(1);
            return Ok(warp::reply::json(&Accepted {
                id: &event.id,
                duplicate: true,
            })
            .into_response());
        }
        let appended = self.sink.emit(std::slice::from_ref(&event));
        if appended.dropped > 0 || appended.taken() == 0 {
            // Not taken: the sender's retry must be published.
            self.seen.release(source, &event.id);
            return Err(ApiError::unavailable(
                "the outbox could not take the event; retry later",
            ));
        }
        Ok(warp::reply::json(&Accepted {
            id: &event.id,
            duplicate: false,
        })
        .into_response())
    }
}

/// `POST /hooks/<source>`.
pub fn routes(
    hooks: Arc<Webhooks>,
) -> impl Filter<Extract = (warp::reply::Response,), Error = Rejection> + Clone {
    let limit = hooks.limits.max_body_bytes;
    warp::path!("hooks" / String)
        .and(warp::post())
        .and(warp::header::optional::<String>("x-chatbus-timestamp"))
        .and(warp::header::optional::<String>("x-chatbus-signature"))
        .and(warp::body::content_length_limit(limit))
        .and(warp::body::bytes())
        .map(
            move |source: String,
                  timestamp: Option<String>,
                  signature: Option<String>,
                  body: Bytes| {
                let answer =
                    hooks.deliver(&source, timestamp.as_deref(), signature.as_deref(), &body);
                let (status, response) = match answer {
                    Ok(response) => (StatusCode::OK, response),
                    Err(e) => (e.status, e.into_response()),
                };
                let label = if hooks.sources.contains_key(&source) {
                    source
                } else {
                    "unknown".to_owned()
                };
                metrics::counter!(
                    "chatbus_ingestor_webhook_requests_total",
                    "source" => label,
                    "status" => status.as_str().to_owned()
                )
                .increment(1);
                response
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_names_are_checked() {
        assert!(is_valid_source_name("my-bot_2"));
        for bad in ["", "Upper", "a.b", "with space", &"x".repeat(49)] {
            assert!(!is_valid_source_name(bad), "{bad}");
        }
    }

    #[test]
    fn entries_need_a_valid_unreserved_name_and_a_readable_long_secret() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good");
        std::fs::write(&good, "a-secret-of-32-bytes-or-so-12345\n").unwrap();
        let short = dir.path().join("short");
        std::fs::write(&short, "tiny").unwrap();
        let g = good.display();
        let sources = parse_sources(&[format!("relay:{g}")], &["builtin"]).unwrap();
        assert_eq!(sources[0].name, "relay");
        assert_eq!(
            sources[0].secret.expose(),
            "a-secret-of-32-bytes-or-so-12345"
        );
        for (entry, why) in [
            (format!("builtin:{g}"), "built-in platform"),
            (format!("Bad:{g}"), "must match"),
            ("relay".to_owned(), "name:secret-file"),
            ("relay:/no/such/file".to_owned(), "cannot read"),
            (format!("relay:{}", short.display()), "at least 16"),
        ] {
            let err = parse_sources(std::slice::from_ref(&entry), &["builtin"]).unwrap_err();
            let err = err.to_string();
            assert!(
                err.contains("WEBHOOK_SOURCES") && err.contains(why),
                "{entry}: {err}"
            );
        }
        let twice = parse_sources(&[format!("a:{g}"), format!("a:{g}")], &[]).unwrap_err();
        assert!(twice.to_string().contains("twice"));
    }

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently: Python's
        // hmac.new(b"secret", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"secret", "1700000000", br#"{"a":1}"#),
            "sha256=49f24e537407743fa4a0242bb63b94b9a47ee99cbbe071ccd8a22550ae411686"
        );
    }
}
