//! The Helix calls the Twitch sender makes (`TWITCH_HELIX_URL`): Get Users,
//! Get Moderated Channels, Send Chat Message, Delete Chat Messages, Ban User
//! and Unban User; and Get Streams for stream status (`status`), with the
//! `Ratelimit-*` headers of its answer. Each carries `Authorization: Bearer <user token>` and
//! `Client-Id` (Helix refuses a token issued to another client id).
//! Answers are read up to [`MAX_BODY`] bytes.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use common::Secret;
use common::body::{cut, read_limited};
use reqwest::Method;
use serde_json::{Value, json};

/// Largest Helix answer read.
pub const MAX_BODY: usize = 256 * 1024;

/// Pages of Get Moderated Channels read at most (100 channels each).
const MAX_PAGES: usize = 50;

/// Why a Helix call did not give an answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HelixError {
    /// Helix answered with an error status.
    #[error("Helix answered {status}: {message}")]
    Status {
        /// The HTTP status.
        status: u16,
        /// Helix's `message`.
        message: String,
    },
    /// The request was not made: the connection could not be opened.
    #[error("Helix is unreachable: {0}")]
    Unreachable(String),
    /// The request may have reached Helix, but no answer was read.
    #[error("no answer from Helix: {0}")]
    NoAnswer(String),
}

/// Send Chat Message's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendAnswer {
    /// The message's id, when sent.
    pub message_id: Option<String>,
    /// Whether Twitch delivered it.
    pub is_sent: bool,
    /// Twitch's `drop_reason.code` when not.
    pub drop_code: Option<String>,
}

/// Most logins one Get Streams call takes.
pub const STREAMS_PER_CALL: usize = 100;

/// A live stream, as Get Streams reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveStream {
    /// The stream id.
    pub id: String,
    /// The broadcaster's user id.
    pub user_id: String,
    /// The broadcaster's login.
    pub user_login: String,
    /// The title.
    pub title: String,
    /// The category (`game_name`), empty when none is set.
    pub game_name: String,
    /// Viewers now.
    pub viewer_count: u64,
    /// When it went live.
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// Helix's rate-limit headers of one answer: points left in the bucket
/// and when it is full again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// `Ratelimit-Remaining`.
    pub remaining: u64,
    /// `Ratelimit-Reset`, Unix seconds.
    pub reset: i64,
}

impl RateLimit {
    fn from_headers(headers: &reqwest::header::HeaderMap) -> Option<Self> {
        let number = |name: &str| headers.get(name)?.to_str().ok()?.trim().parse::<i64>().ok();
        Some(Self {
            remaining: u64::try_from(number("ratelimit-remaining")?).ok()?,
            reset: number("ratelimit-reset")?,
        })
    }
}

/// A Helix client.
#[derive(Debug, Clone)]
pub struct Helix {
    base: String,
    client_id: String,
    http: reqwest::Client,
}

impl Helix {
    /// A client of the Helix at `base` for app `client_id`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(base: &str, client_id: &str, timeout: Duration) -> anyhow::Result<Self> {
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            http: reqwest::Client::builder()
                .timeout(timeout)
                .connect_timeout(timeout)
                .build()?,
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        token: &Secret,
        body: Option<Value>,
    ) -> Result<(u16, Value), HelixError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .query(query)
            .bearer_auth(token.expose())
            .header("Client-Id", &self.client_id);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.map_err(|e| {
            if e.is_connect() {
                HelixError::Unreachable(e.to_string())
            } else {
                HelixError::NoAnswer(e.to_string())
            }
        })?;
        let status = res.status().as_u16();
        let bytes = read_limited(res, MAX_BODY)
            .await
            .map_err(|e| HelixError::NoAnswer(e.to_string()))?;
        let value: Value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap_or(Value::Null)
        };
        if (200..300).contains(&status) {
            return Ok((status, value));
        }
        let message = value["message"]
            .as_str()
            .map_or_else(|| cut(&String::from_utf8_lossy(&bytes), 300), |m| cut(m, 300));
        Err(HelixError::Status { status, message })
    }

    /// Get Streams for `logins` (at most [`STREAMS_PER_CALL`]): those live
    /// now. The rate-limit headers come back with the answer, an error
    /// (429 included) too, when Helix sent them.
    pub async fn streams(
        &self,
        token: &Secret,
        logins: &[String],
    ) -> (Result<Vec<LiveStream>, HelixError>, Option<RateLimit>) {
        let mut query: Vec<(&str, &str)> = logins.iter().map(|l| ("user_login", l.as_str())).collect();
        let first = logins.len().clamp(1, STREAMS_PER_CALL).to_string();
        query.push(("first", &first));
        let res = self
            .http
            .get(format!("{}/streams", self.base))
            .query(&query)
            .bearer_auth(token.expose())
            .header("Client-Id", &self.client_id)
            .send()
            .await;
        let res = match res {
            Ok(res) => res,
            Err(e) if e.is_connect() => return (Err(HelixError::Unreachable(e.to_string())), None),
            Err(e) => return (Err(HelixError::NoAnswer(e.to_string())), None),
        };
        let rate = RateLimit::from_headers(res.headers());
        let status = res.status().as_u16();
        let bytes = match read_limited(res, MAX_BODY).await {
            Ok(b) => b,
            Err(e) => return (Err(HelixError::NoAnswer(e.to_string())), rate),
        };
        let value: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let message = value["message"]
                .as_str()
                .map_or_else(|| cut(&String::from_utf8_lossy(&bytes), 300), |m| cut(m, 300));
            return (Err(HelixError::Status { status, message }), rate);
        }
        let streams = value["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|s| s["type"].as_str().is_none_or(|t| t == "live"))
            .filter_map(|s| {
                Some(LiveStream {
                    id: s["id"].as_str()?.to_owned(),
                    user_id: s["user_id"].as_str().unwrap_or_default().to_owned(),
                    user_login: s["user_login"].as_str()?.to_lowercase(),
                    title: s["title"].as_str().unwrap_or_default().to_owned(),
                    game_name: s["game_name"].as_str().unwrap_or_default().to_owned(),
                    viewer_count: s["viewer_count"].as_u64().unwrap_or(0),
                    started_at: s["started_at"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&chrono::Utc)),
                })
            })
            .collect();
        (Ok(streams), rate)
    }

    /// The user ids of `logins` (those Twitch knows).
    ///
    /// # Errors
    /// [`HelixError`].
    pub async fn user_ids(
        &self,
        token: &Secret,
        logins: &[&str],
    ) -> Result<HashMap<String, String>, HelixError> {
        let query: Vec<(&str, &str)> = logins.iter().map(|l| ("login", *l)).collect();
        let (_, v) = self
            .call(Method::GET, "/users", &query, token, None)
            .await?;
        Ok(v["data"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| Some((u["login"].as_str()?.to_owned(), u["id"].as_str()?.to_owned())))
            .collect())
    }

    /// The logins of the channels `user_id` moderates (needs
    /// `user:read:moderated_channels`).
    ///
    /// # Errors
    /// [`HelixError`].
    pub async fn moderated_channels(
        &self,
        token: &Secret,
        user_id: &str,
    ) -> Result<HashSet<String>, HelixError> {
        let mut out = HashSet::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query = vec![("user_id", user_id), ("first", "100")];
            if let Some(a) = &after {
                query.push(("after", a));
            }
            let (_, v) = self
                .call(Method::GET, "/moderation/channels", &query, token, None)
                .await?;
            out.extend(
                v["data"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|c| c["broadcaster_login"].as_str().map(str::to_owned)),
            );
            match v["pagination"]["cursor"].as_str() {
                Some(c) if !c.is_empty() => after = Some(c.to_owned()),
                _ => break,
            }
        }
        Ok(out)
    }

    /// Send Chat Message.
    ///
    /// # Errors
    /// [`HelixError`].
    pub async fn send(
        &self,
        token: &Secret,
        broadcaster_id: &str,
        sender_id: &str,
        text: &str,
        reply_to: Option<&str>,
    ) -> Result<SendAnswer, HelixError> {
        let mut body = json!({
            "broadcaster_id": broadcaster_id,
            "sender_id": sender_id,
            "message": text,
        });
        if let Some(parent) = reply_to {
            body["reply_parent_message_id"] = json!(parent);
        }
        let (_, v) = self
            .call(Method::POST, "/chat/messages", &[], token, Some(body))
            .await?;
        let d = &v["data"][0];
        let message_id = d["message_id"]
            .as_str()
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        Ok(SendAnswer {
            message_id,
            is_sent: d["is_sent"].as_bool().unwrap_or(false),
            drop_code: d["drop_reason"]["code"].as_str().map(str::to_owned),
        })
    }

    /// Delete Chat Messages (one message).
    ///
    /// # Errors
    /// [`HelixError`].
    pub async fn delete(
        &self,
        token: &Secret,
        broadcaster_id: &str,
        moderator_id: &str,
        message_id: &str,
    ) -> Result<(), HelixError> {
        self.call(
            Method::DELETE,
            "/moderation/chat",
            &[
                ("broadcaster_id", broadcaster_id),
                ("moderator_id", moderator_id),
                ("message_id", message_id),
            ],
            token,
            None,
        )
        .await
        .map(drop)
    }

    /// Ban User; with `duration` (seconds), a timeout.
    ///
    /// # Errors
    /// [`HelixError`].
    pub async fn ban(
        &self,
        token: &Secret,
        broadcaster_id: &str,
        moderator_id: &str,
        user_id: &str,
        duration: Option<u32>,
        reason: Option<&str>,
    ) -> Result<(), HelixError> {
        let mut data = json!({ "user_id": user_id });
        if let Some(d) = duration {
            data["duration"] = json!(d);
        }
        if let Some(r) = reason {
            data["reason"] = json!(r);
        }
        self.call(
            Method::POST,
            "/moderation/bans",
            &[
                ("broadcaster_id", broadcaster_id),
                ("moderator_id", moderator_id),
            ],
            token,
            Some(json!({ "data": data })),
        )
        .await
        .map(drop)
    }

    /// Unban User (lifts a ban or a timeout).
    ///
    /// # Errors
    /// [`HelixError`].
    pub async fn unban(
        &self,
        token: &Secret,
        broadcaster_id: &str,
        moderator_id: &str,
        user_id: &str,
    ) -> Result<(), HelixError> {
        self.call(
            Method::DELETE,
            "/moderation/bans",
            &[
                ("broadcaster_id", broadcaster_id),
                ("moderator_id", moderator_id),
                ("user_id", user_id),
            ],
            token,
            None,
        )
        .await
        .map(drop)
    }
}
