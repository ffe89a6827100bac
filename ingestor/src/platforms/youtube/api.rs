//! The YouTube Data API v3 over HTTP/JSON (`YOUTUBE_API_URL`): the calls
//! the source makes to resolve entries, find live broadcasts and, where
//! streaming is unavailable, poll a chat; with the credentials every call
//! carries, Google's error format, and the quota each call costs.
//!
//! Every call passes the quota gate first: after a `quotaExceeded` answer
//! no call is made until the quota resets ([`super::quota::Quota`]).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::Secret;
use common::telemetry::error_chain;
use common::token_manager::TokenManager;
use common::token_store::{AccountStatus, TokenStore};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::limits::{self, Limits, MAX_ERROR_TEXT, MAX_ERROR_WORD};
use super::quota::{Call, Quota};
use crate::platforms::seam::Reachability;

/// Why a call to YouTube failed, as a stable word: the `reason` label of
/// `chatbus_ingestor_youtube_errors_total` and of a channel's `waiting`
/// state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `quotaExceeded` (or a stream's `RESOURCE_EXHAUSTED` about quota).
    QuotaExceeded,
    /// Calls wait for the quota to reset (no call was made).
    QuotaWaiting,
    /// `rateLimitExceeded`: too fast.
    RateLimited,
    /// `liveChatEnded`: the chat is over.
    ChatEnded,
    /// `liveChatDisabled`: the broadcast has no chat.
    ChatDisabled,
    /// `liveChatNotFound`.
    ChatNotFound,
    /// A channel, handle or video that does not exist.
    NotFound,
    /// `forbidden` and other refusals: a human must act.
    Forbidden,
    /// The API key or token was refused.
    Unauthorized,
    /// No usable credentials (the token store has no usable token).
    Credentials,
    /// The page token was refused: the position in the chat is lost.
    PageTokenInvalid,
    /// A request YouTube calls invalid.
    BadRequest,
    /// `liveChatMessages.streamList` is not available here.
    StreamUnavailable,
    /// A 5xx answer.
    ServerError,
    /// No answer in time.
    Timeout,
    /// No connection.
    Unreachable,
    /// An answer that is not what the API documents.
    Malformed,
    /// An answer past a limit (`YOUTUBE_MAX_RESPONSE_BYTES`,
    /// `YOUTUBE_MAX_PAGE_ITEMS`), refused as a whole.
    TooLarge,
}

impl Reason {
    /// The stable word.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::QuotaExceeded | Self::QuotaWaiting => "quota_exceeded",
            Self::RateLimited => "rate_limited",
            Self::ChatEnded => "chat_ended",
            Self::ChatDisabled => "chat_disabled",
            Self::ChatNotFound => "chat_not_found",
            Self::NotFound => "not_found",
            Self::Forbidden => "forbidden",
            Self::Unauthorized => "unauthorized",
            Self::Credentials => "credentials",
            Self::PageTokenInvalid => "page_token_invalid",
            Self::BadRequest => "bad_request",
            Self::StreamUnavailable => "stream_unavailable",
            Self::ServerError => "server_error",
            Self::Timeout => "timeout",
            Self::Unreachable => "unreachable",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
        }
    }

    /// Whether a human must act (the log line is an ERROR).
    pub fn needs_human(self) -> bool {
        matches!(
            self,
            Self::Forbidden | Self::Unauthorized | Self::Credentials | Self::BadRequest
        )
    }

    /// Whether it says the platform could not be reached (for
    /// [`Reachability`]).
    pub fn is_unreachable(self) -> bool {
        matches!(self, Self::ServerError | Self::Timeout | Self::Unreachable)
    }

    /// The reason of a Google error `reason` string and HTTP status.
    pub fn of_google(status: u16, reason: &str) -> Self {
        match reason {
            "quotaExceeded" | "dailyLimitExceeded" => Self::QuotaExceeded,
            "rateLimitExceeded" | "userRateLimitExceeded" | "servingLimitExceeded" => {
                Self::RateLimited
            }
            "liveChatEnded" => Self::ChatEnded,
            "liveChatDisabled" => Self::ChatDisabled,
            "liveChatNotFound" => Self::ChatNotFound,
            "pageTokenInvalid" => Self::PageTokenInvalid,
            "keyInvalid" | "keyExpired" | "unauthorized" | "authError" | "expired" => {
                Self::Unauthorized
            }
            "forbidden" | "insufficientPermissions" | "accessNotConfigured" => Self::Forbidden,
            _ => match status {
                401 => Self::Unauthorized,
                403 => Self::Forbidden,
                404 => Self::NotFound,
                429 => Self::RateLimited,
                500..=599 => Self::ServerError,
                _ => Self::BadRequest,
            },
        }
    }
}

/// A failed call.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    /// Google answered with an error.
    #[error("YouTube answered {status} {reason}: {message}")]
    Google {
        /// HTTP status.
        status: u16,
        /// `error.errors[0].reason`.
        reason: String,
        /// `error.message`.
        message: String,
    },
    /// The quota is exhausted; no call is made until then.
    #[error("the YouTube quota is exhausted; calls wait until {0}")]
    QuotaWait(DateTime<Utc>),
    /// No answer within the request timeout.
    #[error("YouTube did not answer within {0:?}")]
    Timeout(Duration),
    /// No connection.
    #[error("cannot reach YouTube: {0}")]
    Transport(String),
    /// The answer is not what the API documents.
    #[error("YouTube's answer is not what the API documents: {0}")]
    Malformed(String),
    /// The answer is past a limit; refused as a whole.
    #[error("YouTube's answer is refused: {0}")]
    TooLarge(String),
    /// No usable credentials.
    #[error("{0}")]
    Credentials(String),
    /// What was asked for does not exist.
    #[error("{0}")]
    Missing(String),
    /// A streaming call failed (the `stream` module).
    #[error("streamList: {message} ({code})")]
    Stream {
        /// Its reason.
        reason: Reason,
        /// The gRPC code's name.
        code: String,
        /// The status message.
        message: String,
    },
}

impl ApiError {
    /// Its reason.
    pub fn reason(&self) -> Reason {
        match self {
            Self::Google { status, reason, .. } => Reason::of_google(*status, reason),
            Self::QuotaWait(_) => Reason::QuotaWaiting,
            Self::Timeout(_) => Reason::Timeout,
            Self::Transport(_) => Reason::Unreachable,
            Self::Malformed(_) => Reason::Malformed,
            Self::TooLarge(_) => Reason::TooLarge,
            Self::Credentials(_) => Reason::Credentials,
            Self::Missing(_) => Reason::NotFound,
            Self::Stream { reason, .. } => *reason,
        }
    }
}

/// How calls authenticate.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// `YOUTUBE_API_KEY`, sent as `x-goog-api-key`.
    ApiKey(Secret),
    /// `YOUTUBE_LOGIN`'s token read from the store, which the auth-server
    /// keeps fresh.
    Stored {
        /// The store.
        store: TokenStore,
        /// The account's login (e-mail).
        login: String,
    },
    /// `YOUTUBE_LOGIN`'s token, kept fresh by this process too.
    Managed {
        /// The token manager of the Google provider.
        manager: TokenManager,
        /// The account key (`youtube:<email>`).
        account: String,
    },
}

impl Credentials {
    /// The credentials `settings` ask for (`YOUTUBE_LOGIN`'s account, else
    /// `YOUTUBE_API_KEY`), and the token manager that keeps the account's
    /// token fresh when this process refreshes it itself (a Google client
    /// id is configured).
    ///
    /// # Errors
    /// When neither is set, or the Google OAuth provider settings are
    /// unusable.
    pub fn from_settings(
        settings: &super::settings::Settings,
        oauth: &common::oauth::OAuthConfig,
    ) -> anyhow::Result<(Self, Option<TokenManager>)> {
        use anyhow::Context as _;
        let Some(login) = settings.account() else {
            let key = settings
                .youtube_api_key
                .clone()
                .context("YOUTUBE_API_KEY or YOUTUBE_LOGIN is needed")?;
            return Ok((Self::ApiKey(key), None));
        };
        if settings.youtube_api_key.is_some() {
            tracing::info!(account = %login, "YOUTUBE_LOGIN and YOUTUBE_API_KEY are both set: reading as the account");
        }
        let account =
            common::token_store::account_key(common::schema::PLATFORM_YOUTUBE, &login);
        match oauth.google()? {
            Some(provider) => {
                let options = common::token_manager::TokenManagerOptions {
                    only_account: Some(account.clone()),
                    ..Default::default()
                };
                let manager = TokenManager::with_options(oauth.token_store(), provider, options);
                Ok((
                    Self::Managed {
                        manager: manager.clone(),
                        account,
                    },
                    Some(manager),
                ))
            }
            None => {
                tracing::warn!(%account, "no GOOGLE_CLIENT_ID: using the stored token as the auth-server keeps it fresh");
                Ok((
                    Self::Stored {
                        store: oauth.token_store(),
                        login,
                    },
                    None,
                ))
            }
        }
    }
}

/// The header a call carries.
#[derive(Debug, Clone)]
pub struct AuthHeader {
    /// `x-goog-api-key` or `authorization`.
    pub name: &'static str,
    /// Its value (`Bearer <token>` for a token).
    pub value: Secret,
    /// The OAuth token used, to refresh it if it is refused.
    token: Option<Secret>,
}

impl Credentials {
    /// What they are, for logs (no secret).
    pub fn describe(&self) -> String {
        match self {
            Self::ApiKey(_) => "API key".to_owned(),
            Self::Stored { login, .. } => format!("account youtube:{login} (token store)"),
            Self::Managed { account, .. } => format!("account {account}"),
        }
    }

    /// The header for the next call.
    ///
    /// # Errors
    /// [`ApiError::Credentials`] when the account has no usable token.
    pub async fn header(&self) -> Result<AuthHeader, ApiError> {
        let token = match self {
            Self::ApiKey(key) => {
                return Ok(AuthHeader {
                    name: "x-goog-api-key",
                    value: key.clone(),
                    token: None,
                });
            }
            Self::Stored { store, login } => {
                let token = store
                    .load_token(common::schema::PLATFORM_YOUTUBE, login)
                    .await
                    .map_err(|e| ApiError::Credentials(e.to_string()))?
                    .ok_or_else(|| {
                        ApiError::Credentials(format!(
                            "no token for youtube:{login} in the token store; authorize it with the auth-server (/auth/google)"
                        ))
                    })?;
                if token.status == AccountStatus::ReauthRequired {
                    return Err(ApiError::Credentials(format!(
                        "youtube:{login} needs to be authorized again (reauth_required)"
                    )));
                }
                token.access_token
            }
            Self::Managed { manager, account } => {
                manager
                    .access_token(account)
                    .await
                    .map_err(|e| ApiError::Credentials(format!("{account}: {e}")))?
                    .access_token
            }
        };
        Ok(AuthHeader {
            name: "authorization",
            value: Secret::new(format!("Bearer {}", token.expose())),
            token: Some(token),
        })
    }

    /// YouTube refused the token in `used`: refresh it (when this process
    /// refreshes tokens) so the next call uses a new one.
    pub async fn rejected(&self, used: &AuthHeader) {
        if let (Self::Managed { manager, account }, Some(token)) = (self, &used.token) {
            match manager.refresh_if_current(account, token).await {
                Ok(_) => tracing::warn!(%account, "YouTube refused the token; refreshed it"),
                Err(e) => {
                    tracing::error!(%account, error = %e, "YouTube refused the token and it cannot be refreshed");
                }
            }
        }
    }
}

/// A video (`videos.list`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Video {
    /// Its id.
    pub id: String,
    /// Channel and broadcast state.
    pub snippet: Option<VideoSnippet>,
    /// Present for broadcasts.
    pub live_streaming_details: Option<LiveStreamingDetails>,
}

/// `video.snippet`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VideoSnippet {
    /// The channel.
    pub channel_id: Option<String>,
    /// `none`, `upcoming`, `live`, `completed`.
    pub live_broadcast_content: Option<String>,
    /// The video's title.
    pub title: Option<String>,
}

/// `video.liveStreamingDetails`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LiveStreamingDetails {
    /// The chat, only while the broadcast is live and has one.
    pub active_live_chat_id: Option<String>,
    /// When it is scheduled to start.
    pub scheduled_start_time: Option<String>,
    /// When it started (RFC 3339).
    pub actual_start_time: Option<String>,
    /// Viewers now, while live (a decimal string; absent when the channel
    /// hides it).
    pub concurrent_viewers: Option<String>,
}

impl Video {
    /// The channel that owns it.
    pub fn channel_id(&self) -> Option<&str> {
        self.snippet
            .as_ref()
            .and_then(|s| s.channel_id.as_deref())
            .filter(|c| !c.is_empty())
    }

    /// `liveBroadcastContent`.
    pub fn broadcast(&self) -> &str {
        self.snippet
            .as_ref()
            .and_then(|s| s.live_broadcast_content.as_deref())
            .unwrap_or("none")
    }

    /// Its live chat, while it is live.
    pub fn live_chat_id(&self) -> Option<&str> {
        self.live_streaming_details
            .as_ref()
            .and_then(|d| d.active_live_chat_id.as_deref())
            .filter(|c| !c.is_empty())
    }
}

/// A channel (`channels.list`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Channel {
    /// `UC…`.
    pub id: String,
    /// Its playlists.
    pub content_details: Option<ChannelContentDetails>,
}

/// `channel.contentDetails`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ChannelContentDetails {
    /// `relatedPlaylists`.
    pub related_playlists: Option<RelatedPlaylists>,
}

/// `relatedPlaylists`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RelatedPlaylists {
    /// The playlist of every public upload, live broadcasts included.
    pub uploads: Option<String>,
}

/// One page of `liveChatMessages.list`.
#[derive(Debug, Clone, Default)]
pub struct ChatPage {
    /// The messages, as JSON (each normalised on its own, so one odd
    /// message does not lose the page).
    pub items: Vec<Value>,
    /// Where the next page starts.
    pub next_page_token: Option<String>,
    /// How long to wait before asking again.
    pub polling_interval: Option<Duration>,
    /// Set when the broadcast is offline.
    pub offline_at: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ListOf<T> {
    #[serde(default = "Vec::new")]
    items: Vec<T>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorObject,
}

#[derive(Deserialize)]
struct ErrorObject {
    #[serde(default)]
    code: u16,
    #[serde(default)]
    message: String,
    #[serde(default)]
    errors: Vec<ErrorItem>,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(default)]
    reason: String,
}

/// The REST client.
#[derive(Debug)]
pub struct Api {
    http: reqwest::Client,
    base: String,
    timeout: Duration,
    credentials: Credentials,
    quota: Arc<Quota>,
    reach: Arc<Reachability>,
    limits: Limits,
}

impl Api {
    /// A client of the API at `base` (`https://www.googleapis.com/youtube/v3`).
    ///
    /// # Errors
    /// When the HTTP client cannot be built (TLS setup).
    pub fn new(
        base: &str,
        timeout: Duration,
        credentials: Credentials,
        quota: Arc<Quota>,
        reach: Arc<Reachability>,
        limits: Limits,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("chatbus-ingestor/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            timeout,
            credentials,
            quota,
            reach,
            limits,
        })
    }

    /// `GET {base}/{path}?{query}`, charged as `call`; one retry with a
    /// refreshed token if the token is refused.
    async fn get<T: DeserializeOwned>(
        &self,
        call: Call,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<T, ApiError> {
        self.get_with(call, path, query, |body| serde_json::from_slice(body))
            .await
    }

    /// As [`Api::get`], the answer parsed by `parse`.
    async fn get_with<T>(
        &self,
        call: Call,
        path: &str,
        query: &[(&str, &str)],
        parse: impl Fn(&[u8]) -> Result<T, serde_json::Error>,
    ) -> Result<T, ApiError> {
        let mut refreshed = false;
        loop {
            let now = Utc::now();
            if let Some(until) = self.quota.blocked_until(now) {
                return Err(ApiError::QuotaWait(until));
            }
            let header = self.credentials.header().await?;
            self.quota.spend(call, now).map_err(ApiError::QuotaWait)?;
            let sent = self
                .http
                .get(format!("{}/{path}", self.base))
                .query(query)
                .header(header.name, header.value.expose())
                .send()
                .await;
            let result = match sent {
                Ok(res) => self.answer_with(res, &parse).await,
                Err(e) if e.is_timeout() => Err(ApiError::Timeout(self.timeout)),
                Err(e) => Err(ApiError::Transport(error_chain(&e))),
            };
            match &result {
                Err(e) if e.reason().is_unreachable() => self.reach.failed(&e.to_string()),
                _ => self.reach.succeeded(),
            }
            match result {
                Err(e) if e.reason() == Reason::QuotaExceeded => {
                    let until = self.quota.exceeded(Utc::now());
                    tracing::debug!(%until, "quota exhausted");
                    return Err(e);
                }
                Err(e)
                    if e.reason() == Reason::Unauthorized
                        && !refreshed
                        && header.token.is_some() =>
                {
                    refreshed = true;
                    self.credentials.rejected(&header).await;
                }
                other => return other,
            }
        }
    }

    /// Reads an answer within [`Limits::max_response_bytes`], repairs lone
    /// surrogate escapes, and parses a 2xx body with `parse`; an error body
    /// becomes [`ApiError::Google`] with its text cut.
    async fn answer_with<T>(
        &self,
        res: reqwest::Response,
        parse: impl FnOnce(&[u8]) -> Result<T, serde_json::Error>,
    ) -> Result<T, ApiError> {
        let status = res.status().as_u16();
        let limit = self.limits.max_response_bytes;
        let mut body = match common::body::read_limited(res, limit).await {
            Ok(b) => b,
            Err(common::body::BodyError::TooLarge { .. }) => {
                return Err(ApiError::TooLarge(format!(
                    "an answer (HTTP {status}) larger than YOUTUBE_MAX_RESPONSE_BYTES ({limit} bytes)"
                )));
            }
            Err(common::body::BodyError::Read(e)) if e.is_timeout() => {
                return Err(ApiError::Timeout(self.timeout));
            }
            Err(common::body::BodyError::Read(e)) => {
                return Err(ApiError::Transport(error_chain(&e)));
            }
        };
        let repaired = limits::repair_lone_surrogates(&mut body);
        if repaired > 0 {
            metrics::counter!("chatbus_ingestor_youtube_lone_surrogates_total")
                .increment(repaired as u64);
        }
        if (200..300).contains(&status) {
            return parse(&body).map_err(|e| {
                if limits::is_too_many_items(&e) {
                    ApiError::TooLarge(format!(
                        "a page with more messages than YOUTUBE_MAX_PAGE_ITEMS ({})",
                        self.limits.max_page_items
                    ))
                } else {
                    ApiError::Malformed(format!("{e} in {}", snippet(&body)))
                }
            });
        }
        Err(google_error(status, &body))
    }

    /// `videos.list?part=snippet,liveStreamingDetails&id=…` (1 unit, up to
    /// 50 ids).
    ///
    /// # Errors
    /// As the call.
    pub async fn videos(&self, ids: &[String]) -> Result<Vec<Video>, ApiError> {
        let ids = ids.iter().take(50).cloned().collect::<Vec<_>>().join(",");
        let list: ListOf<Video> = self
            .get(
                Call::VideosList,
                "videos",
                &[("part", "snippet,liveStreamingDetails"), ("id", &ids)],
            )
            .await?;
        Ok(list.items)
    }

    /// `channels.list?forHandle=@…` or `?id=UC…` (1 unit); `None` when no
    /// channel matches.
    ///
    /// # Errors
    /// As the call.
    pub async fn channel(&self, handle_or_id: &str) -> Result<Option<Channel>, ApiError> {
        let filter = if handle_or_id.starts_with('@') {
            "forHandle"
        } else {
            "id"
        };
        let list: ListOf<Channel> = self
            .get(
                Call::ChannelsList,
                "channels",
                &[("part", "id,contentDetails"), (filter, handle_or_id)],
            )
            .await?;
        Ok(list.items.into_iter().find(|c| !c.id.is_empty()))
    }

    /// The newest `max` videos of a playlist (`playlistItems.list`, 1 unit).
    ///
    /// # Errors
    /// As the call.
    pub async fn playlist_videos(&self, playlist: &str, max: u32) -> Result<Vec<String>, ApiError> {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase", default)]
        struct Item {
            content_details: Option<ItemDetails>,
        }
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase", default)]
        struct ItemDetails {
            video_id: Option<String>,
        }
        let max = max.clamp(1, 50).to_string();
        let list: ListOf<Item> = self
            .get(
                Call::PlaylistItemsList,
                "playlistItems",
                &[
                    ("part", "contentDetails"),
                    ("playlistId", playlist),
                    ("maxResults", &max),
                ],
            )
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|i| i.content_details?.video_id)
            .filter(|v| !v.is_empty())
            .collect())
    }

    /// The channel's live broadcasts by `search.list?eventType=live`
    /// (100 units).
    ///
    /// # Errors
    /// As the call.
    pub async fn search_live(&self, channel_id: &str) -> Result<Vec<String>, ApiError> {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase", default)]
        struct Item {
            id: Option<ItemId>,
        }
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase", default)]
        struct ItemId {
            video_id: Option<String>,
        }
        let list: ListOf<Item> = self
            .get(
                Call::SearchList,
                "search",
                &[
                    ("part", "id"),
                    ("channelId", channel_id),
                    ("eventType", "live"),
                    ("type", "video"),
                ],
            )
            .await?;
        Ok(list
            .items
            .into_iter()
            .filter_map(|i| i.id?.video_id)
            .filter(|v| !v.is_empty())
            .collect())
    }

    /// One page of a chat (`liveChatMessages.list`, 5 units), from
    /// `page_token` (or the recent messages without one).
    ///
    /// # Errors
    /// As the call.
    pub async fn chat_messages(
        &self,
        live_chat_id: &str,
        page_token: Option<&str>,
    ) -> Result<ChatPage, ApiError> {
        let mut query = vec![
            ("liveChatId", live_chat_id),
            ("part", "id,snippet,authorDetails"),
        ];
        if let Some(token) = page_token {
            query.push(("pageToken", token));
        }
        let max_items = self.limits.max_page_items;
        let page = self
            .get_with(Call::LiveChatMessagesList, "liveChat/messages", &query, |body| {
                limits::parse_page(body, max_items)
            })
            .await?;
        Ok(ChatPage {
            items: page.items,
            next_page_token: page.next_page_token.filter(|t| !t.is_empty()),
            polling_interval: page.polling_interval_millis.map(Duration::from_millis),
            offline_at: page.offline_at.filter(|t| !t.is_empty()),
        })
    }
}

/// The error of a non-2xx answer with `body`, in Google's error format
/// (`error.errors[0].reason`, else `error.status`), its text cut.
pub(crate) fn google_error(status: u16, body: &[u8]) -> ApiError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(ErrorBody { error }) => ApiError::Google {
            status: if error.code == 0 { status } else { error.code },
            reason: common::body::cut(
                &error
                    .errors
                    .first()
                    .map(|e| e.reason.clone())
                    .filter(|r| !r.is_empty())
                    .or(error.status)
                    .unwrap_or_default(),
                MAX_ERROR_WORD,
            ),
            message: common::body::cut(&error.message, MAX_ERROR_TEXT),
        },
        Err(_) => ApiError::Google {
            status,
            reason: String::new(),
            message: snippet(body),
        },
    }
}

/// The first 200 bytes of a body, for an error message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
    if text.is_empty() {
        "(empty body)".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_reasons_map_to_ours() {
        for (status, reason, want) in [
            (403, "quotaExceeded", Reason::QuotaExceeded),
            (403, "liveChatEnded", Reason::ChatEnded),
            (403, "liveChatDisabled", Reason::ChatDisabled),
            (404, "liveChatNotFound", Reason::ChatNotFound),
            (403, "forbidden", Reason::Forbidden),
            (403, "rateLimitExceeded", Reason::RateLimited),
            (400, "keyInvalid", Reason::Unauthorized),
            (400, "pageTokenInvalid", Reason::PageTokenInvalid),
            (503, "backendError", Reason::ServerError),
            (500, "", Reason::ServerError),
            (401, "", Reason::Unauthorized),
            (404, "notFound", Reason::NotFound),
            (400, "invalidParameter", Reason::BadRequest),
        ] {
            assert_eq!(Reason::of_google(status, reason), want, "{status} {reason}");
        }
        assert!(Reason::Forbidden.needs_human());
        assert!(!Reason::QuotaExceeded.needs_human());
        assert_eq!(Reason::QuotaWaiting.as_str(), "quota_exceeded");
    }
}
