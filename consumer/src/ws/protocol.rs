//! The WebSocket protocol's frames (documented in `docs/websocket.md`).
//! Every frame is one JSON text message with a `type`.

use common::routing::TopicPattern;
use common::schema::{EventKind, PrivacyDetails};
use serde::{Deserialize, Deserializer, Serialize};

use crate::selector::{Selector, channel_pattern};
use crate::store::Cursor;

/// Version of this protocol, sent in `welcome`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Longest subscription id.
pub const MAX_SUB_ID: usize = 64;
/// Most patterns plus channels in one subscription.
pub const MAX_PATTERNS: usize = 64;

/// Close code: the client's send queue was full, in events or in bytes
/// (too slow); it may resume each subscription with `since` = the last
/// cursor it received.
pub const CLOSE_LAGGED: u16 = 4000;
/// Close code: the server is shutting down.
pub const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code: an inbound message was larger than allowed.
pub const CLOSE_TOO_BIG: u16 = 1009;

/// What a client may send.
#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// Start a subscription.
    Subscribe(SubscribeRequest),
    /// End a subscription.
    Unsubscribe {
        /// Its id.
        sub: String,
    },
    /// Application-level ping (browsers cannot send WebSocket pings).
    Ping {
        /// Echoed back in the `pong`.
        #[serde(default)]
        id: Option<serde_json::Value>,
    },
}

/// `{"type":"subscribe", ...}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeRequest {
    /// The client's name for the subscription (default `s1`, `s2`, ...).
    #[serde(default)]
    pub sub: Option<String>,
    /// Routing-key patterns, AMQP topic syntax.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Channels as `platform:channel` or `channel` (any platform).
    #[serde(default)]
    pub channels: Vec<String>,
    /// Only these kinds.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// History first: the last N matching events.
    #[serde(default)]
    pub last: Option<usize>,
    /// History first: every matching event after this cursor (resume);
    /// `0` means from the oldest stored event.
    #[serde(default, deserialize_with = "since_cursor")]
    pub since: Option<Since>,
}

/// A `since` value: `Since(None)` is `0`, the start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since(pub Option<Cursor>);

fn since_cursor<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Since>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Number(i64),
        Text(String),
    }
    let parse = |n: i64| match n {
        0 => Ok(Since(None)),
        n => Cursor::new(n)
            .map(|c| Since(Some(c)))
            .ok_or_else(|| format!("{n} is not a cursor (a positive integer, or 0 for the start)")),
    };
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Number(n)) => parse(n).map(Some).map_err(serde::de::Error::custom),
        Some(Raw::Text(s)) => s
            .parse::<i64>()
            .map_err(|_| format!("`{s}` is not a cursor"))
            .and_then(parse)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// History asked for by a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum History {
    /// The last N events.
    Last(usize),
    /// Everything after a cursor (`None`: from the start).
    Since(Option<Cursor>),
}

/// A validated subscription.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// Its id.
    pub sub: Option<String>,
    /// What it selects.
    pub selector: Selector,
    /// History first, if asked.
    pub history: Option<History>,
}

/// A refused request: a stable code and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Stable snake_case code.
    pub code: &'static str,
    /// For humans.
    pub message: String,
}

impl Refusal {
    /// A refusal.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl SubscribeRequest {
    /// Checks and converts the request; `max_history` bounds `last`.
    ///
    /// # Errors
    /// A [`Refusal`] naming what is wrong.
    pub fn validate(self, max_history: usize) -> Result<Subscription, Refusal> {
        if let Some(sub) = &self.sub
            && (sub.is_empty() || sub.len() > MAX_SUB_ID)
        {
            return Err(Refusal::new(
                "invalid_subscription",
                format!("`sub` must be 1 to {MAX_SUB_ID} bytes"),
            ));
        }
        if self.patterns.is_empty() && self.channels.is_empty() {
            return Err(Refusal::new(
                "invalid_subscription",
                "give `patterns` (e.g. [\"chat.twitch.*\"]) or `channels` (e.g. [\"twitch:somechannel\"])",
            ));
        }
        if self.patterns.len() + self.channels.len() > MAX_PATTERNS {
            return Err(Refusal::new(
                "invalid_subscription",
                format!("at most {MAX_PATTERNS} patterns and channels per subscription"),
            ));
        }
        let mut patterns = Vec::with_capacity(self.patterns.len() + self.channels.len());
        for p in &self.patterns {
            patterns.push(
                TopicPattern::parse(p)
                    .map_err(|e| Refusal::new("invalid_pattern", e.to_string()))?,
            );
        }
        for c in &self.channels {
            patterns.push(channel_pattern(c).map_err(|e| Refusal::new("invalid_channel", e))?);
        }
        let mut kinds = Vec::with_capacity(self.kinds.len());
        for k in &self.kinds {
            kinds.push(
                k.parse::<EventKind>()
                    .map_err(|e| Refusal::new("invalid_kind", e.to_string()))?,
            );
        }
        let history = match (self.last, self.since) {
            (Some(_), Some(_)) => {
                return Err(Refusal::new(
                    "invalid_history",
                    "give `last` or `since`, not both",
                ));
            }
            (Some(n), None) if n > max_history => {
                return Err(Refusal::new(
                    "invalid_history",
                    format!("`last` is at most {max_history}"),
                ));
            }
            (Some(0), None) => None,
            (Some(n), None) => Some(History::Last(n)),
            (None, Some(Since(Some(c)))) if c.get() > Cursor::MAX => {
                return Err(Refusal::new(
                    "invalid_cursor",
                    format!(
                        "`since` {c} is not a cursor: cursors are at most 2^53 - 1 ({}), \
                         the largest integer a JavaScript number holds exactly",
                        Cursor::MAX
                    ),
                ));
            }
            (None, Some(Since(c))) => Some(History::Since(c)),
            (None, None) => None,
        };
        Ok(Subscription {
            sub: self.sub,
            selector: Selector::new(patterns, kinds),
            history,
        })
    }
}

/// Limits announced in `welcome`.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Limits {
    /// Subscriptions per connection.
    pub max_subscriptions: usize,
    /// Largest inbound message, bytes.
    pub max_frame_bytes: usize,
    /// Events queued for the client before it is disconnected as too slow.
    pub send_queue: usize,
    /// Bytes of frames queued for the client and not yet written before it
    /// is disconnected as too slow.
    pub send_queue_bytes: usize,
    /// Largest `last`.
    pub max_history: usize,
    /// Seconds between the server's pings.
    pub ping_interval_secs: u64,
}

/// What the server sends, except events (see `LiveEvent::frame`).
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    /// First frame of every connection.
    Welcome {
        /// [`PROTOCOL_VERSION`].
        protocol: u32,
        /// The newest cursor the server has published live.
        head: Option<Cursor>,
        /// The connection's limits.
        limits: Limits,
    },
    /// A subscription is registered; its history (if any) follows, then
    /// `live`.
    Subscribed {
        /// Its id.
        sub: &'a str,
        /// Its patterns, canonical.
        patterns: Vec<&'a str>,
        /// Its kinds (empty = all).
        kinds: &'a [EventKind],
        /// The history it asked for.
        history: Option<History>,
    },
    /// History is complete; every later event of this subscription is live.
    Live {
        /// Its id.
        sub: &'a str,
        /// The last cursor sent so far (null if none).
        cursor: Option<Cursor>,
    },
    /// A subscription ended.
    Unsubscribed {
        /// Its id.
        sub: &'a str,
    },
    /// A request was refused; the connection stays open.
    Error {
        /// The subscription concerned, if any.
        #[serde(skip_serializing_if = "Option::is_none")]
        sub: Option<&'a str>,
        /// Stable snake_case code.
        code: &'a str,
        /// For humans.
        message: &'a str,
    },
    /// Answer to a `ping`.
    Pong {
        /// The ping's id.
        id: Option<serde_json::Value>,
    },
    /// A purge or opt-out (from the privacy stream): the client removes
    /// every event it shows that the subject covers. Sent once per
    /// connection with a subscription, not per subscription, after the
    /// history of subscriptions being loaded. Carries ids, never text.
    Privacy {
        /// `action`, `subject`, `horizon`, `notice_id`: as a `privacy`
        /// event's details.
        #[serde(flatten)]
        details: &'a PrivacyDetails,
    },
}

impl ServerFrame<'_> {
    /// The JSON text.
    pub fn to_text(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialise")
    }
}

/// The constant start of every event frame of subscription `sub`:
/// `{"type":"event","sub":"<sub>",`.
pub fn event_prefix(sub: &str) -> String {
    format!(
        "{{\"type\":\"event\",\"sub\":{},",
        serde_json::to_string(sub).expect("strings serialise")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<ClientFrame, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn subscribe_frames_parse_and_validate() {
        let ClientFrame::Subscribe(req) = parse(
            r#"{"type":"subscribe","sub":"a","patterns":["chat.twitch.*"],"kinds":["message"],"since":"42"}"#,
        )
        .unwrap() else {
            panic!("not a subscribe");
        };
        let s = req.validate(100).unwrap();
        assert_eq!(s.history, Some(History::Since(Cursor::new(42))));
        assert!(s.selector.matches("chat.twitch.x", EventKind::Message));
        assert!(!s.selector.matches("chat.twitch.x", EventKind::Ban));

        let ClientFrame::Subscribe(req) =
            parse(r#"{"type":"subscribe","channels":["twitch:x"],"last":5,"since":null}"#).unwrap()
        else {
            panic!("not a subscribe");
        };
        assert_eq!(req.validate(100).unwrap().history, Some(History::Last(5)));
    }

    #[test]
    fn bad_requests_are_refused_with_a_code() {
        let cases = [
            (r#"{"type":"subscribe"}"#, "invalid_subscription"),
            (
                r#"{"type":"subscribe","patterns":["chat.tw*"]}"#,
                "invalid_pattern",
            ),
            (
                r#"{"type":"subscribe","patterns":["chat.#"],"kinds":["nope"]}"#,
                "invalid_kind",
            ),
            (
                r#"{"type":"subscribe","patterns":["chat.#"],"last":101}"#,
                "invalid_history",
            ),
            (
                r#"{"type":"subscribe","patterns":["chat.#"],"last":1,"since":3}"#,
                "invalid_history",
            ),
            (
                r#"{"type":"subscribe","channels":["twitch:"]}"#,
                "invalid_channel",
            ),
            (
                r#"{"type":"subscribe","patterns":["chat.#"],"since":9223372036854775807}"#,
                "invalid_cursor",
            ),
            (
                r#"{"type":"subscribe","patterns":["chat.#"],"since":"9007199254740992"}"#,
                "invalid_cursor",
            ),
        ];
        for (json, code) in cases {
            let ClientFrame::Subscribe(req) = parse(json).unwrap() else {
                panic!("{json}");
            };
            assert_eq!(req.validate(100).unwrap_err().code, code, "{json}");
        }
        assert!(
            parse(r#"{"type":"subscribe","pattern":["x"]}"#).is_err(),
            "typos are errors"
        );
        assert!(parse(r#"{"type":"subscribe","since":-3}"#).is_err());
        // The largest cursor a browser can hold is accepted.
        let ClientFrame::Subscribe(req) =
            parse(r#"{"type":"subscribe","patterns":["chat.#"],"since":9007199254740991}"#)
                .unwrap()
        else {
            panic!("not a subscribe");
        };
        assert_eq!(
            req.validate(100).unwrap().history,
            Some(History::Since(Cursor::new(Cursor::MAX)))
        );
        assert!(parse(r#"{"type":"dance"}"#).is_err());
        assert!(parse("[]").is_err());
    }

    #[test]
    fn server_frames_are_tagged() {
        let text = ServerFrame::Live {
            sub: "s1",
            cursor: Cursor::new(9),
        }
        .to_text();
        assert_eq!(text, r#"{"type":"live","sub":"s1","cursor":9}"#);
        assert_eq!(event_prefix("a\"b"), r#"{"type":"event","sub":"a\"b","#);
        let details = PrivacyDetails {
            action: common::privacy::PrivacyAction::Purge,
            subject: common::privacy::Subject::User {
                platform: "twitch".into(),
                user_id: "42".into(),
            },
            horizon: None,
            notice_id: "n1".into(),
        };
        assert_eq!(
            ServerFrame::Privacy { details: &details }.to_text(),
            r#"{"type":"privacy","action":"purge","subject":{"type":"user","platform":"twitch","user_id":"42"},"notice_id":"n1"}"#
        );
    }
}
