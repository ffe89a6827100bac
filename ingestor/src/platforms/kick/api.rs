//! Kick's public API and OAuth server, as the Kick platform uses them: the
//! app access token (client credentials grant, `POST {KICK_OAUTH_URL}/oauth/token`),
//! the webhook public key (`GET /public/v1/public-key`), a channel's
//! broadcaster id by slug (`GET /public/v1/channels?slug=`) and the event
//! subscriptions (`GET`/`POST`/`DELETE /public/v1/events/subscriptions`).
//!
//! The request and answer shapes of the `/public/v1` calls are in Kick's
//! OpenAPI document (api.kick.com/swagger/doc.yaml), which could not be
//! read in full here: the shapes below are those Kick's docs show where
//! they show them (the token endpoint, docs.kick.com/getting-started/
//! generating-tokens-oauth2-flow) and otherwise those public Kick clients
//! use (docs/ingestor.md lists which is which). Unknown fields are ignored.

use std::time::{Duration, Instant};

use common::Secret;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

/// What went wrong talking to Kick.
#[derive(Debug, thiserror::Error)]
pub enum KickApiError {
    /// No answer (connection, timeout).
    #[error("Kick did not answer {what}: {source}")]
    Http {
        /// The call.
        what: &'static str,
        /// Why.
        source: reqwest::Error,
    },
    /// An answer other than 2xx.
    #[error("Kick answered {what} with {status}: {body}")]
    Status {
        /// The call.
        what: &'static str,
        /// The HTTP status.
        status: u16,
        /// The start of its body.
        body: String,
    },
    /// An answer that is not the JSON expected.
    #[error("Kick's answer to {what} is not what its docs show: {reason}")]
    Decode {
        /// The call.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// One live stream (`GET /public/v2/livestreams`).
#[derive(Debug, Clone, Deserialize)]
pub struct Livestream {
    /// Whose stream.
    pub broadcaster_user_id: u64,
    /// Viewers now.
    #[serde(default)]
    pub viewer_count: Option<u64>,
    /// Its title.
    #[serde(default)]
    pub stream_title: Option<String>,
    /// When it went live (RFC 3339).
    #[serde(default)]
    pub started_at: Option<String>,
    /// Its category.
    #[serde(default)]
    pub category: Option<LivestreamCategory>,
}

/// A live stream's category.
#[derive(Debug, Clone, Deserialize)]
pub struct LivestreamCategory {
    /// Its name.
    #[serde(default)]
    pub name: Option<String>,
}

/// One event subscription of this app, as `GET /public/v1/events/subscriptions` lists it.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Subscription {
    /// Its id (for `DELETE ?id=`).
    pub id: String,
    /// The broadcaster whose events it delivers.
    #[serde(default)]
    pub broadcaster_user_id: Option<u64>,
    /// The event's name (`chat.message.sent` ...).
    pub event: String,
    /// The event's version.
    #[serde(default)]
    pub version: Option<u32>,
}

#[derive(Debug, Deserialize)]
struct Data<T> {
    data: T,
}

#[derive(Debug, Deserialize)]
struct PublicKey {
    public_key: String,
}

#[derive(Debug, Deserialize)]
struct Channel {
    broadcaster_user_id: u64,
    #[serde(default)]
    slug: Option<String>,
}

#[derive(Debug, Serialize)]
struct SubscribeRequest<'a> {
    broadcaster_user_id: u64,
    events: Vec<EventName<'a>>,
    method: &'static str,
}

#[derive(Debug, Serialize)]
struct EventName<'a> {
    name: &'a str,
    version: u32,
}

/// The token endpoint's answer. Kick's docs show `expires_in` as a string
/// (`""`) in their example: a number or a numeric string are both read.
#[derive(Debug, Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
}

/// Kick's API as the platform calls it, with its app access token.
#[derive(Debug)]
pub struct Api {
    http: reqwest::Client,
    api_url: String,
    oauth_url: String,
    client_id: String,
    client_secret: Secret,
    token: Mutex<Option<(Secret, Instant)>>,
}

/// Largest answer read from Kick.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

impl Api {
    /// A client of `api_url` and `oauth_url` as the app `client_id`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn new(
        api_url: &str,
        oauth_url: &str,
        client_id: &str,
        client_secret: Secret,
        timeout: Duration,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .user_agent("chatbus-ingestor")
                .build()?,
            api_url: api_url.trim_end_matches('/').to_owned(),
            oauth_url: oauth_url.trim_end_matches('/').to_owned(),
            client_id: client_id.to_owned(),
            client_secret,
            token: Mutex::new(None),
        })
    }

    /// The app access token, fetched again a minute before it expires (or
    /// after Kick refused it).
    ///
    /// # Errors
    /// [`KickApiError`] from the token endpoint.
    pub async fn token(&self) -> Result<Secret, KickApiError> {
        let mut token = self.token.lock().await;
        if let Some((t, until)) = token.as_ref()
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        const WHAT: &str = "the app token request";
        let res = self
            .http
            .post(format!("{}/oauth/token", self.oauth_url))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.expose()),
            ])
            .send()
            .await
            .map_err(|source| KickApiError::Http { what: WHAT, source })?;
        let answer: TokenAnswer = read(WHAT, res).await?;
        let secs = match &answer.expires_in {
            Some(serde_json::Value::Number(n)) => n.as_u64(),
            Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
            _ => None,
        }
        .unwrap_or(3600);
        let fresh = Duration::from_secs(secs.saturating_sub(60).max(30));
        let secret = Secret::new(answer.access_token);
        *token = Some((secret.clone(), Instant::now() + fresh));
        Ok(secret)
    }

    /// Forgets the token (Kick answered 401).
    async fn forget_token(&self) {
        *self.token.lock().await = None;
    }

    async fn call(
        &self,
        what: &'static str,
        build: impl Fn(&reqwest::Client, &str) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, KickApiError> {
        for attempt in 0..2 {
            let token = self.token().await?;
            let res = build(&self.http, &self.api_url)
                .bearer_auth(token.expose())
                .send()
                .await
                .map_err(|source| KickApiError::Http { what, source })?;
            if res.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                self.forget_token().await;
                continue;
            }
            return Ok(res);
        }
        unreachable!("the loop returns on its second attempt")
    }

    /// Kick's webhook public key, PEM.
    ///
    /// # Errors
    /// [`KickApiError`].
    pub async fn public_key(&self) -> Result<String, KickApiError> {
        const WHAT: &str = "GET /public/v1/public-key";
        let res = self
            .call(WHAT, |h, base| h.get(format!("{base}/public/v1/public-key")))
            .await?;
        let key: Data<PublicKey> = read(WHAT, res).await?;
        Ok(key.data.public_key)
    }

    /// The broadcaster user id of the channel `slug`, `None` when Kick
    /// has no such channel.
    ///
    /// # Errors
    /// [`KickApiError`].
    pub async fn broadcaster_id(&self, slug: &str) -> Result<Option<u64>, KickApiError> {
        const WHAT: &str = "GET /public/v1/channels";
        let res = self
            .call(WHAT, |h, base| {
                h.get(format!("{base}/public/v1/channels"))
                    .query(&[("slug", slug)])
            })
            .await?;
        if res.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let channels: Data<Vec<Channel>> = read(WHAT, res).await?;
        Ok(channels
            .data
            .iter()
            .find(|c| c.slug.as_deref().is_none_or(|s| s.eq_ignore_ascii_case(slug)))
            .map(|c| c.broadcaster_user_id))
    }

    /// The live streams among `broadcasters` (`GET /public/v2/livestreams`,
    /// several `broadcaster_user_id`; docs.kick.com apis/livestreams.md
    /// names the endpoint, its fields are those of the v1 answer as public
    /// Kick clients read it: not verified against Kick's OpenAPI document).
    ///
    /// # Errors
    /// [`KickApiError`].
    pub async fn livestreams(&self, broadcasters: &[u64]) -> Result<Vec<Livestream>, KickApiError> {
        const WHAT: &str = "GET /public/v2/livestreams";
        let query: Vec<(&str, String)> = broadcasters
            .iter()
            .map(|id| ("broadcaster_user_id", id.to_string()))
            .collect();
        let res = self
            .call(WHAT, |h, base| {
                h.get(format!("{base}/public/v2/livestreams")).query(&query)
            })
            .await?;
        let streams: Data<Vec<Livestream>> = read(WHAT, res).await?;
        Ok(streams.data)
    }

    /// This app's event subscriptions.
    ///
    /// # Errors
    /// [`KickApiError`].
    pub async fn subscriptions(&self) -> Result<Vec<Subscription>, KickApiError> {
        const WHAT: &str = "GET /public/v1/events/subscriptions";
        let res = self
            .call(WHAT, |h, base| {
                h.get(format!("{base}/public/v1/events/subscriptions"))
            })
            .await?;
        let subs: Data<Vec<Subscription>> = read(WHAT, res).await?;
        Ok(subs.data)
    }

    /// Subscribes this app's webhook to `events` (version 1) of `broadcaster`.
    ///
    /// # Errors
    /// [`KickApiError`].
    pub async fn subscribe(&self, broadcaster: u64, events: &[&str]) -> Result<(), KickApiError> {
        const WHAT: &str = "POST /public/v1/events/subscriptions";
        let body = SubscribeRequest {
            broadcaster_user_id: broadcaster,
            events: events
                .iter()
                .map(|name| EventName { name, version: 1 })
                .collect(),
            method: "webhook",
        };
        let res = self
            .call(WHAT, |h, base| {
                h.post(format!("{base}/public/v1/events/subscriptions"))
                    .json(&body)
            })
            .await?;
        let _: serde_json::Value = read(WHAT, res).await?;
        Ok(())
    }

    /// One call as a user, with the user's access `token` (the sender's
    /// calls): never repeated, since it may have reached Kick. The answer's
    /// body, or why there is none.
    ///
    /// # Errors
    /// [`KickApiError`]: [`KickApiError::Http`] when there was no answer,
    /// [`KickApiError::Status`] for an answer other than 2xx.
    pub async fn as_user(
        &self,
        what: &'static str,
        token: &Secret,
        method: reqwest::Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<bytes::Bytes, KickApiError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.api_url))
            .bearer_auth(token.expose());
        if let Some(body) = body {
            req = req.json(body);
        }
        let res = req
            .send()
            .await
            .map_err(|source| KickApiError::Http { what, source })?;
        check(what, res).await
    }

    /// Deletes the subscriptions `ids`.
    ///
    /// # Errors
    /// [`KickApiError`].
    pub async fn unsubscribe(&self, ids: &[String]) -> Result<(), KickApiError> {
        const WHAT: &str = "DELETE /public/v1/events/subscriptions";
        if ids.is_empty() {
            return Ok(());
        }
        let query: Vec<(&str, &str)> = ids.iter().map(|id| ("id", id.as_str())).collect();
        let res = self
            .call(WHAT, |h, base| {
                h.delete(format!("{base}/public/v1/events/subscriptions"))
                    .query(&query)
            })
            .await?;
        check(WHAT, res).await.map(drop)
    }
}

async fn check(what: &'static str, res: reqwest::Response) -> Result<bytes::Bytes, KickApiError> {
    let status = res.status();
    let body = res
        .bytes()
        .await
        .map_err(|source| KickApiError::Http { what, source })?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err(KickApiError::Status {
            what,
            status: status.as_u16(),
            body: text,
        });
    }
    if body.len() > MAX_ANSWER_BYTES {
        return Err(KickApiError::Decode {
            what,
            reason: format!("{} bytes is more than {MAX_ANSWER_BYTES}", body.len()),
        });
    }
    Ok(body)
}

async fn read<T: serde::de::DeserializeOwned>(
    what: &'static str,
    res: reqwest::Response,
) -> Result<T, KickApiError> {
    let body = check(what, res).await?;
    serde_json::from_slice(&body).map_err(|e| KickApiError::Decode {
        what,
        reason: e.to_string(),
    })
}
