//! The Kick sender: carries out `ChatCommand`s in a Kick chat through
//! Kick's public API, as a token-store account (`KICK_SENDER`, key
//! `kick:<login>`, or the command's `as`), with that user's access token.
//!
//! | kind | Kick call | scope |
//! |---|---|---|
//! | `send` | `POST /public/v1/chat` `{broadcaster_user_id, content, type: "user", reply_to_message_id?}` | `chat:write` |
//! | `delete` | `DELETE /public/v1/chat/{message_id}` | `moderation:chat_message:manage` |
//! | `timeout` | `POST /public/v1/moderation/bans` `{broadcaster_user_id, user_id, duration, reason?}` | `moderation:ban` |
//! | `ban` | `POST /public/v1/moderation/bans` `{broadcaster_user_id, user_id, reason?}` | `moderation:ban` |
//! | `unban` | `DELETE /public/v1/moderation/bans` `{broadcaster_user_id, user_id}` | `moderation:ban` |
//!
//! The endpoints and scopes are Kick's (docs.kick.com/apis/chat,
//! /apis/moderation, /scopes); their bodies are only in Kick's OpenAPI
//! document, so the shapes above are those public Kick clients use (see
//! docs/commands.md). A send is answered `{data: {is_sent, message_id}}`:
//! the id is the receipt's `platform_message_id`, the same id the
//! `chat.message.sent` webhook carries, so the message is read back as an
//! event. Kick takes a timeout's `duration` in minutes: the command's
//! seconds are rounded up to whole minutes.
//!
//! * [`Sender::check`]: the account has a usable token with the kind's
//!   scope (else `rejected: missing_scope: <scope>`), a user id is Kick's
//!   (numeric), and the channel's slug resolves to a broadcaster id (with
//!   the app token, cached).
//! * [`Sender::wait_turn`]: Kick documents no chat rate limit; sends keep
//!   a sliding window per account (`KICK_SEND_LIMIT` per
//!   `KICK_SEND_WINDOW`, an assumption). Moderation is not limited.
//! * [`Sender::execute`]: one call, never repeated.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::command::CommandAction;
use common::token_manager::TokenManager;
use common::token_store::{StoredToken, TokenStore};
use futures::future::BoxFuture;
use serde::Deserialize;
use serde_json::{Value, json};

use super::api::{Api, KickApiError};
use super::normalise::PLATFORM;
use super::settings::Settings;
use crate::platforms::seam::{Job, Outcome, Sender};
use crate::platforms::send_limiter::{SendLimiter, SendLimits};
use crate::platforms::sender_token::{account_token, require_scope};

/// Kick's longest chat message, in characters: not in Kick's docs pages
/// (only in its OpenAPI document); 500 is the limit public Kick clients
/// check, an assumption.
pub const MAX_TEXT_CHARS: usize = 500;

/// The scope of sending (docs.kick.com/scopes).
pub const SCOPE_SEND: &str = "chat:write";
/// The scope of deleting a chat message.
pub const SCOPE_DELETE: &str = "moderation:chat_message:manage";
/// The scope of bans, timeouts and unbans.
pub const SCOPE_BAN: &str = "moderation:ban";

/// The Kick sender.
#[derive(Debug)]
pub struct KickSender {
    api: Arc<Api>,
    store: TokenStore,
    manager: Option<TokenManager>,
    default_account: Option<String>,
    limiter: SendLimiter,
    /// Channel slug → broadcaster id.
    ids: Mutex<HashMap<String, u64>>,
}

/// `POST /public/v1/chat`'s answer (inside `data`).
#[derive(Debug, Deserialize)]
struct ChatAnswer {
    #[serde(default)]
    is_sent: Option<bool>,
    #[serde(default)]
    message_id: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Data<T> {
    data: T,
}

impl KickSender {
    /// The sender `settings` ask for (`KICK_SENDER` set), calling Kick
    /// through `api`; tokens come from the store, refreshed by `manager`
    /// when this process has the Kick OAuth provider (else by the
    /// auth-server).
    pub fn from_settings(
        settings: &Settings,
        api: Arc<Api>,
        store: TokenStore,
        manager: Option<TokenManager>,
    ) -> Option<Self> {
        let account = settings.sender()?;
        Some(Self {
            api,
            store,
            manager,
            default_account: Some(account.to_ascii_lowercase()),
            limiter: SendLimiter::new(SendLimits {
                window: settings.kick_send_window,
                normal: settings.kick_send_limit,
                privileged: settings.kick_send_limit,
                channel_interval: Duration::ZERO,
                margin: Duration::ZERO,
            }),
            ids: Mutex::default(),
        })
    }

    /// `account`'s usable token, or the outcome that says why there is none.
    async fn token(&self, account: &str) -> Result<StoredToken, Outcome> {
        account_token(PLATFORM, account, &self.store, self.manager.as_ref()).await
    }

    /// The broadcaster id of channel `slug`, from the cache or Kick.
    async fn broadcaster(&self, slug: &str) -> Result<u64, Outcome> {
        if let Some(id) = self.ids.lock().expect("kick sender ids lock").get(slug) {
            return Ok(*id);
        }
        let Some(id) = self
            .api
            .broadcaster_id(slug)
            .await
            .map_err(|e| Outcome::failed(reason_of(&e)))?
        else {
            return Err(Outcome::rejected(format!(
                "unknown_channel: Kick knows no channel `{slug}`"
            )));
        };
        let mut ids = self.ids.lock().expect("kick sender ids lock");
        if ids.len() > 100_000 {
            ids.clear();
        }
        ids.insert(slug.to_owned(), id);
        Ok(id)
    }

    async fn carry_out(&self, job: &Job) -> Outcome {
        let token = match self.token(&job.account).await {
            Ok(t) => t,
            Err(o) => return o,
        };
        let broadcaster = match self.broadcaster(&job.command.channel).await {
            Ok(id) => id,
            Err(o) => return o,
        };
        let call = match call_of(&job.command.action, broadcaster) {
            Ok(call) => call,
            Err(o) => return o,
        };
        let answer = self
            .api
            .as_user(
                call.what,
                &token.access_token,
                call.method,
                &call.path,
                call.body.as_ref(),
            )
            .await;
        match (answer, &job.command.action) {
            (Err(e), _) => Outcome::failed(reason_of(&e)),
            (Ok(body), CommandAction::Send { .. }) => {
                match serde_json::from_slice::<Data<ChatAnswer>>(&body) {
                    Ok(Data { data }) if data.is_sent != Some(false) => {
                        Outcome::sent(data.message_id.filter(|id| !id.is_empty()))
                    }
                    Ok(_) => Outcome::dropped("not_sent: Kick answered is_sent: false"),
                    Err(e) => {
                        tracing::warn!(platform = PLATFORM, error = %e, "Kick's answer to a send has no message id");
                        Outcome::sent(None)
                    }
                }
            }
            (Ok(_), _) => Outcome::sent(None),
        }
    }
}

/// The scope `action` needs.
pub fn scope_of(action: &CommandAction) -> &'static str {
    match action {
        CommandAction::Send { .. } => SCOPE_SEND,
        CommandAction::Delete { .. } => SCOPE_DELETE,
        CommandAction::Timeout { .. } | CommandAction::Ban { .. } | CommandAction::Unban { .. } => {
            SCOPE_BAN
        }
    }
}

/// One Kick call, ready to go.
#[derive(Debug, PartialEq)]
struct Call {
    what: &'static str,
    method: reqwest::Method,
    path: String,
    body: Option<Value>,
}

/// A Kick user id: Kick's are numbers.
fn user_id(id: &str) -> Result<u64, Outcome> {
    id.trim().parse().map_err(|_| {
        Outcome::rejected(format!(
            "bad_user_id: `{id}` is not a Kick user id (a number)"
        ))
    })
}

/// The call carrying out `action` in `broadcaster`'s chat.
fn call_of(action: &CommandAction, broadcaster: u64) -> Result<Call, Outcome> {
    use reqwest::Method;
    Ok(match action {
        CommandAction::Send { text, reply_to } => {
            let mut body = json!({
                "broadcaster_user_id": broadcaster,
                "content": text,
                "type": "user",
            });
            if let Some(reply_to) = reply_to {
                body["reply_to_message_id"] = json!(reply_to);
            }
            Call {
                what: "POST /public/v1/chat",
                method: Method::POST,
                path: "/public/v1/chat".into(),
                body: Some(body),
            }
        }
        CommandAction::Delete { message_id } => {
            // Kick's message ids are UUIDs: nothing to escape in a path.
            if message_id.is_empty()
                || !message_id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(Outcome::rejected(format!(
                    "bad_message_id: `{message_id}` is not a Kick message id"
                )));
            }
            Call {
                what: "DELETE /public/v1/chat/{message_id}",
                method: Method::DELETE,
                path: format!("/public/v1/chat/{message_id}"),
                body: None,
            }
        }
        CommandAction::Timeout {
            user_id: user,
            seconds,
            reason,
        } => {
            let mut body = json!({
                "broadcaster_user_id": broadcaster,
                "user_id": user_id(user)?,
                "duration": seconds.div_ceil(60).max(1),
            });
            if let Some(reason) = reason {
                body["reason"] = json!(reason);
            }
            Call {
                what: "POST /public/v1/moderation/bans",
                method: Method::POST,
                path: "/public/v1/moderation/bans".into(),
                body: Some(body),
            }
        }
        CommandAction::Ban {
            user_id: user,
            reason,
        } => {
            let mut body = json!({
                "broadcaster_user_id": broadcaster,
                "user_id": user_id(user)?,
            });
            if let Some(reason) = reason {
                body["reason"] = json!(reason);
            }
            Call {
                what: "POST /public/v1/moderation/bans",
                method: Method::POST,
                path: "/public/v1/moderation/bans".into(),
                body: Some(body),
            }
        }
        CommandAction::Unban { user_id: user } => Call {
            what: "DELETE /public/v1/moderation/bans",
            method: Method::DELETE,
            path: "/public/v1/moderation/bans".into(),
            body: Some(json!({
                "broadcaster_user_id": broadcaster,
                "user_id": user_id(user)?,
            })),
        },
    })
}

/// A receipt's reason for a failed Kick call: `kick_<status>: <Kick's
/// answer>`, `unreachable: ...` (nothing was sent) or `no_answer: ...` (it
/// may have been).
fn reason_of(e: &KickApiError) -> String {
    match e {
        KickApiError::Status { status, body, .. } => format!("kick_{status}: {body}"),
        KickApiError::Http { source, .. } if source.is_connect() => {
            format!("unreachable: {}", common::telemetry::error_chain(source))
        }
        KickApiError::Http { source, .. } => {
            format!("no_answer: {}", common::telemetry::error_chain(source))
        }
        KickApiError::Decode { .. } => format!("bad_answer: {e}"),
    }
}

impl Sender for KickSender {
    fn platform(&self) -> &'static str {
        PLATFORM
    }

    fn default_account(&self) -> Option<&str> {
        self.default_account.as_deref()
    }

    fn max_text_chars(&self) -> usize {
        MAX_TEXT_CHARS
    }

    fn check<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), Outcome>> {
        Box::pin(async move {
            let token = self.token(&job.account).await?;
            require_scope(&token, scope_of(&job.command.action))?;
            // A user id that is not Kick's is refused before waiting.
            call_of(&job.command.action, 0)?;
            self.broadcaster(&job.command.channel).await?;
            Ok(())
        })
    }

    fn wait_turn<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), Outcome>> {
        Box::pin(async move {
            if !matches!(job.command.action, CommandAction::Send { .. }) {
                return Ok(());
            }
            let (id, account, channel) = (&job.command.id, &job.account, &job.command.channel);
            if self
                .limiter
                .reserve_command(id, account, channel, || false, job.deadline)
                .await
            {
                Ok(())
            } else {
                Err(Outcome::expired())
            }
        })
    }

    fn execute<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Outcome> {
        Box::pin(async move {
            let outcome = self.carry_out(job).await;
            self.limiter.settle_command(&job.command.id);
            outcome
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_is_its_kick_call() {
        let send = CommandAction::Send {
            text: "hi".into(),
            reply_to: Some("0b4f".into()),
        };
        let call = call_of(&send, 42).unwrap();
        assert_eq!(
            (call.method, call.path.as_str()),
            (reqwest::Method::POST, "/public/v1/chat")
        );
        assert_eq!(
            call.body.unwrap(),
            json!({"broadcaster_user_id": 42, "content": "hi", "type": "user", "reply_to_message_id": "0b4f"})
        );
        let timeout = CommandAction::Timeout {
            user_id: "777".into(),
            seconds: 61,
            reason: None,
        };
        assert_eq!(
            call_of(&timeout, 42).unwrap().body.unwrap(),
            json!({"broadcaster_user_id": 42, "user_id": 777, "duration": 2})
        );
        let delete = CommandAction::Delete {
            message_id: "0b4f-11".into(),
        };
        assert_eq!(call_of(&delete, 42).unwrap().path, "/public/v1/chat/0b4f-11");
        let bad = CommandAction::Delete {
            message_id: "../x".into(),
        };
        assert!(call_of(&bad, 42).is_err());
        let unban = CommandAction::Unban {
            user_id: "nope".into(),
        };
        let refused = call_of(&unban, 42).unwrap_err();
        assert!(
            refused.reason.unwrap().starts_with("bad_user_id"),
            "a user id must be a number"
        );
        assert_eq!(scope_of(&send), "chat:write");
        assert_eq!(scope_of(&unban), "moderation:ban");
        assert_eq!(scope_of(&delete), "moderation:chat_message:manage");
    }
}
