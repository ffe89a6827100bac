//! The YouTube sender: carries out `ChatCommand`s in a live chat through
//! the Data API's writes, as a token-store account (`YOUTUBE_SENDER`, or
//! the command's `as`).
//!
//! ```text
//! send    --> POST   liveChat/messages  (liveChatMessages.insert, 20 units)
//! delete  --> DELETE liveChat/messages?id=<message id>  (liveChatMessages.delete, 20 units)
//! timeout --> POST   liveChat/bans  type temporary, banDurationSeconds  (liveChatBans.insert, 50 units assumed)
//! ban     --> POST   liveChat/bans  type permanent  (liveChatBans.insert)
//! unban   --> DELETE liveChat/bans?id=<ban id>  (liveChatBans.delete, 50 units assumed)
//! ```
//!
//! * Every write names the chat's `liveChatId`: the one the reader reads
//!   now ([`LiveChats`]). A channel that is not followed, or not live, is
//!   `rejected: not_live`.
//! * [`Sender::check`]: the account's stored token has the scope
//!   [`FORCE_SSL`] (or the broader `…/auth/youtube`), else
//!   `rejected: missing_scope: <scope>`; the chat is live; an unban is of a
//!   ban this process placed.
//! * [`Sender::wait_turn`]: YouTube documents no per-message window beyond
//!   its quota and `rateLimitExceeded`, so the turn is the quota: the
//!   write is charged to the commands' share of the daily budget
//!   ([`Quota::spend_command`]), else `rejected: quota_exceeded`.
//! * [`Sender::execute`]: one call; `rateLimitExceeded` means YouTube did
//!   not take it, so it is retried with backoff (each try charged again)
//!   until the command's deadline (`expired`). `quotaExceeded` stops every
//!   YouTube call as the reader does and answers `failed: quotaExceeded`.
//!   Any other error answers `failed` with YouTube's own `reason` word.
//! * Unban: YouTube lifts a ban by the ban's id, which only the call that
//!   placed it returns. The ids of the bans and timeouts placed here are
//!   kept in memory per channel and user (lost on a restart); an unban of
//!   any other ban is `rejected: unknown_ban`.
//! * YouTube chat has no replies and bans carry no reason: a send's
//!   `reply_to` and a ban's `reason` are not sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::Utc;
use common::Secret;
use common::command::CommandAction;
use common::schema::PLATFORM_YOUTUBE;
use common::telemetry::error_chain;
use common::token_manager::TokenManager;
use common::token_store::{AccountStatus, TokenStore, account_key};
use futures::future::BoxFuture;
use serde_json::{Value, json};

use super::api::{ApiError, Reason, google_error};
use super::live_chats::LiveChats;
use super::quota::{Call, Quota};
use super::settings::login_of;
use crate::platforms::seam::{Job, Outcome, Sender};

/// The scope YouTube's chat writes need.
pub const FORCE_SSL: &str = "https://www.googleapis.com/auth/youtube.force-ssl";

/// The broader scope that allows them too.
const YOUTUBE_SCOPE: &str = "https://www.googleapis.com/auth/youtube";

/// YouTube's longest chat message, in characters.
pub const MAX_TEXT_CHARS: usize = 200;

/// First wait after `rateLimitExceeded` (doubling up to
/// `YOUTUBE_RETRY_MAX_DELAY`).
const RATE_LIMIT_BACKOFF: Duration = Duration::from_millis(500);

/// How the sender is set up.
#[derive(Debug, Clone)]
pub struct SenderSettings {
    /// The Data API's base URL (`YOUTUBE_API_URL`).
    pub api_url: String,
    /// The account commands act as by default (`YOUTUBE_SENDER`, its login).
    pub account: String,
    /// Timeout of one call (`YOUTUBE_REQUEST_TIMEOUT`).
    pub request_timeout: Duration,
    /// Longest wait between retries (`YOUTUBE_RETRY_MAX_DELAY`).
    pub retry_max_delay: Duration,
    /// Largest answer read (`YOUTUBE_MAX_RESPONSE_BYTES`).
    pub max_response_bytes: usize,
}

/// Where the accounts' tokens come from.
#[derive(Debug, Clone)]
pub enum Tokens {
    /// Read from the store, which the auth-server keeps fresh.
    Stored(TokenStore),
    /// Read from the store and refreshed by this process when due or
    /// refused (a Google client id is configured).
    Managed(TokenManager),
}

impl Tokens {
    fn store(&self) -> &TokenStore {
        match self {
            Self::Stored(store) => store,
            Self::Managed(manager) => manager.store(),
        }
    }
}

/// The YouTube sender.
#[derive(Debug)]
pub struct YoutubeSender {
    http: reqwest::Client,
    settings: SenderSettings,
    tokens: Tokens,
    live_chats: Arc<LiveChats>,
    quota: Arc<Quota>,
    /// The bans and timeouts placed here: `(channel, user)` to the ban id.
    bans: Mutex<HashMap<(String, String), String>>,
}

/// One write, ready to go.
#[derive(Debug)]
struct Write {
    call: Call,
    method: reqwest::Method,
    path: &'static str,
    query: Vec<(&'static str, String)>,
    body: Option<Value>,
}

impl YoutubeSender {
    /// A sender writing to the chats in `live_chats`, charging `quota`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built (TLS setup).
    pub fn new(
        settings: SenderSettings,
        tokens: Tokens,
        live_chats: Arc<LiveChats>,
        quota: Arc<Quota>,
    ) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(settings.request_timeout)
            .user_agent(concat!("chatbus-ingestor/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            settings: SenderSettings {
                api_url: settings.api_url.trim_end_matches('/').to_owned(),
                ..settings
            },
            tokens,
            live_chats,
            quota,
            bans: Mutex::new(HashMap::new()),
        })
    }

    /// The ban id placed here on `user` in `channel`.
    fn ban_of(&self, channel: &str, user: &str) -> Option<String> {
        self.bans
            .lock()
            .expect("bans lock")
            .get(&(channel.to_owned(), user.to_owned()))
            .cloned()
    }

    /// The write `action` makes in chat `chat` of `channel`; `None` for an
    /// unban of a ban not placed here.
    fn write(&self, channel: &str, chat: &str, action: &CommandAction) -> Option<Write> {
        let post = |call, path, body| Write {
            call,
            method: reqwest::Method::POST,
            path,
            query: vec![("part", "snippet".to_owned())],
            body: Some(body),
        };
        let delete = |call, path, id: &str| Write {
            call,
            method: reqwest::Method::DELETE,
            path,
            query: vec![("id", id.to_owned())],
            body: None,
        };
        Some(match action {
            CommandAction::Send { text, .. } => post(
                Call::LiveChatMessagesInsert,
                "liveChat/messages",
                json!({"snippet": {
                    "liveChatId": chat,
                    "type": "textMessageEvent",
                    "textMessageDetails": {"messageText": text},
                }}),
            ),
            CommandAction::Delete { message_id } => {
                delete(Call::LiveChatMessagesDelete, "liveChat/messages", message_id)
            }
            CommandAction::Timeout {
                user_id, seconds, ..
            } => post(
                Call::LiveChatBansInsert,
                "liveChat/bans",
                json!({"snippet": {
                    "liveChatId": chat,
                    "type": "temporary",
                    "banDurationSeconds": seconds.to_string(),
                    "bannedUserDetails": {"channelId": user_id},
                }}),
            ),
            CommandAction::Ban { user_id, .. } => post(
                Call::LiveChatBansInsert,
                "liveChat/bans",
                json!({"snippet": {
                    "liveChatId": chat,
                    "type": "permanent",
                    "bannedUserDetails": {"channelId": user_id},
                }}),
            ),
            CommandAction::Unban { user_id } => delete(
                Call::LiveChatBansDelete,
                "liveChat/bans",
                &self.ban_of(channel, user_id)?,
            ),
        })
    }

    /// The account's access token.
    async fn token(&self, login: &str) -> Result<Secret, String> {
        match &self.tokens {
            Tokens::Stored(store) => store
                .load_token(PLATFORM_YOUTUBE, login)
                .await
                .map_err(|e| e.to_string())?
                .map(|t| t.access_token)
                .ok_or_else(|| format!("no token for youtube:{login} in the token store")),
            Tokens::Managed(manager) => manager
                .access_token(&account_key(PLATFORM_YOUTUBE, login))
                .await
                .map(|t| t.access_token)
                .map_err(|e| e.to_string()),
        }
    }

    /// Makes `write` once with `token`: the answer's JSON (none for 204).
    async fn request(&self, write: &Write, token: &Secret) -> Result<Option<Value>, ApiError> {
        let mut request = self
            .http
            .request(
                write.method.clone(),
                format!("{}/{}", self.settings.api_url, write.path),
            )
            .query(&write.query)
            .bearer_auth(token.expose());
        if let Some(body) = &write.body {
            request = request.json(body);
        }
        let res = match request.send().await {
            Ok(res) => res,
            Err(e) if e.is_timeout() => {
                return Err(ApiError::Timeout(self.settings.request_timeout));
            }
            Err(e) => return Err(ApiError::Transport(error_chain(&e))),
        };
        let status = res.status().as_u16();
        let body = match common::body::read_limited(res, self.settings.max_response_bytes).await {
            Ok(b) => b,
            Err(common::body::BodyError::TooLarge { .. }) => {
                return Err(ApiError::TooLarge(format!(
                    "an answer (HTTP {status}) larger than YOUTUBE_MAX_RESPONSE_BYTES"
                )));
            }
            Err(common::body::BodyError::Read(e)) if e.is_timeout() => {
                return Err(ApiError::Timeout(self.settings.request_timeout));
            }
            Err(common::body::BodyError::Read(e)) => {
                return Err(ApiError::Transport(error_chain(&e)));
            }
        };
        if !(200..300).contains(&status) {
            return Err(google_error(status, &body));
        }
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| ApiError::Malformed(e.to_string()))
    }

    /// What a successful write did: the message or ban id, and the bans
    /// kept for unbans.
    fn done(&self, job: &Job, answer: Option<Value>) -> Outcome {
        let id = answer
            .as_ref()
            .and_then(|a| a["id"].as_str())
            .filter(|id| !id.is_empty())
            .map(str::to_owned);
        let channel = job.command.channel.clone();
        match &job.command.action {
            CommandAction::Timeout { user_id, .. } | CommandAction::Ban { user_id, .. } => {
                if let Some(ban) = &id {
                    self.bans
                        .lock()
                        .expect("bans lock")
                        .insert((channel, user_id.clone()), ban.clone());
                }
            }
            CommandAction::Unban { user_id } => {
                self.bans
                    .lock()
                    .expect("bans lock")
                    .remove(&(channel, user_id.clone()));
            }
            CommandAction::Send { .. } | CommandAction::Delete { .. } => {}
        }
        Outcome::sent(id)
    }

    async fn carry_out(&self, job: &Job) -> Outcome {
        let Some(chat) = self.live_chats.get(&job.command.channel) else {
            return Outcome::rejected("not_live");
        };
        let Some(write) = self.write(&job.command.channel, &chat, &job.command.action) else {
            return Outcome::rejected(unknown_ban(job));
        };
        let login = login_of(&job.account);
        let mut delay = RATE_LIMIT_BACKOFF;
        let mut refreshed = false;
        loop {
            let token = match self.token(&login).await {
                Ok(t) => t,
                Err(e) => return Outcome::failed(format!("credentials: {e}")),
            };
            let error = match self.request(&write, &token).await {
                Ok(answer) => return self.done(job, answer),
                Err(e) => e,
            };
            let word = reason_word(&error);
            match error.reason() {
                Reason::RateLimited => {
                    if tokio::time::Instant::now() + delay >= job.deadline {
                        return Outcome::expired();
                    }
                    tracing::debug!(platform = PLATFORM_YOUTUBE, id = %job.command.id, ?delay, "rateLimitExceeded: retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(self.settings.retry_max_delay);
                }
                Reason::QuotaExceeded => {
                    let until = self.quota.exceeded(Utc::now());
                    tracing::warn!(platform = PLATFORM_YOUTUBE, id = %job.command.id, %until, "YouTube answered quotaExceeded to a command: no YouTube call until then");
                    return Outcome::failed(word);
                }
                Reason::Unauthorized if !refreshed && matches!(self.tokens, Tokens::Managed(_)) => {
                    refreshed = true;
                    if let Tokens::Managed(manager) = &self.tokens
                        && let Err(e) = manager
                            .refresh_if_current(&account_key(PLATFORM_YOUTUBE, &login), &token)
                            .await
                    {
                        return Outcome::failed(format!("{word}: {e}"));
                    }
                }
                _ => {
                    tracing::warn!(platform = PLATFORM_YOUTUBE, id = %job.command.id, kind = job.command.action.kind(), error = %error, "a YouTube command failed");
                    return Outcome::failed(word);
                }
            }
            // A retry is another call: charged again.
            if self.quota.spend_command(write.call, Utc::now()).is_err() {
                return Outcome::failed("quota_exceeded");
            }
        }
    }
}

/// The outcome's reason for `e`: YouTube's own word (`reason` of its error
/// JSON) where it gave one, else ours.
fn reason_word(e: &ApiError) -> String {
    match e {
        ApiError::Google { reason, .. } if !reason.is_empty() => reason.clone(),
        other => other.reason().as_str().to_owned(),
    }
}

fn unknown_ban(job: &Job) -> String {
    let user = match &job.command.action {
        CommandAction::Unban { user_id } => user_id.as_str(),
        _ => "",
    };
    format!(
        "unknown_ban: chatbus placed no ban on {user} in {} since it started (YouTube lifts a ban by the id only the banning call returns)",
        job.command.channel
    )
}

/// The quota call a command's kind makes.
fn call_of(action: &CommandAction) -> Call {
    match action {
        CommandAction::Send { .. } => Call::LiveChatMessagesInsert,
        CommandAction::Delete { .. } => Call::LiveChatMessagesDelete,
        CommandAction::Timeout { .. } | CommandAction::Ban { .. } => Call::LiveChatBansInsert,
        CommandAction::Unban { .. } => Call::LiveChatBansDelete,
    }
}

impl Sender for YoutubeSender {
    fn platform(&self) -> &'static str {
        PLATFORM_YOUTUBE
    }

    fn default_account(&self) -> Option<&str> {
        Some(&self.settings.account)
    }

    fn max_text_chars(&self) -> usize {
        MAX_TEXT_CHARS
    }

    fn check<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), Outcome>> {
        Box::pin(async move {
            let login = login_of(&job.account);
            let token = match self
                .tokens
                .store()
                .load_token(PLATFORM_YOUTUBE, &login)
                .await
            {
                Ok(Some(t)) => t,
                Ok(None) => {
                    return Err(Outcome::rejected(format!(
                        "unknown_account: no token for youtube:{login} in the token store"
                    )));
                }
                Err(e) => return Err(Outcome::rejected(format!("credentials: {e}"))),
            };
            if token.status == AccountStatus::ReauthRequired {
                return Err(Outcome::rejected(format!(
                    "reauth_required: youtube:{login} needs to be authorized again"
                )));
            }
            if !token
                .scopes
                .iter()
                .any(|s| s == FORCE_SSL || s == YOUTUBE_SCOPE)
            {
                return Err(Outcome::rejected(format!("missing_scope: {FORCE_SSL}")));
            }
            if self.live_chats.get(&job.command.channel).is_none() {
                return Err(Outcome::rejected("not_live"));
            }
            if let CommandAction::Unban { user_id } = &job.command.action
                && self.ban_of(&job.command.channel, user_id).is_none()
            {
                return Err(Outcome::rejected(unknown_ban(job)));
            }
            Ok(())
        })
    }

    fn wait_turn<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), Outcome>> {
        Box::pin(async move {
            self.quota
                .spend_command(call_of(&job.command.action), Utc::now())
                .map_err(|_| Outcome::rejected("quota_exceeded"))
        })
    }

    fn execute<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Outcome> {
        Box::pin(self.carry_out(job))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_its_call_and_youtube_words_are_kept() {
        assert_eq!(
            call_of(&CommandAction::Send {
                text: "hi".into(),
                reply_to: None
            })
            .cost(),
            20
        );
        assert_eq!(
            call_of(&CommandAction::Unban {
                user_id: "UCx".into()
            }),
            Call::LiveChatBansDelete
        );
        let e = ApiError::Google {
            status: 403,
            reason: "liveChatBanInsertionNotAllowed".into(),
            message: "no".into(),
        };
        assert_eq!(reason_word(&e), "liveChatBanInsertionNotAllowed");
        assert_eq!(
            reason_word(&ApiError::Timeout(Duration::from_secs(1))),
            "timeout"
        );
    }
}
