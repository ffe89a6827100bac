//! The Twitch sender: carries out commands through Helix, keeping Twitch's
//! chat limits ([`SendLimiter`]) with each account's standing per channel
//! ([`Standing`]).
//!
//! | kind | Helix | scope |
//! |---|---|---|
//! | `send` | Send Chat Message | `user:write:chat` |
//! | `delete` | Delete Chat Messages | `moderator:manage:chat_messages` |
//! | `timeout`, `ban` | Ban User (with / without `duration`) | `moderator:manage:banned_users` |
//! | `unban` | Unban User | `moderator:manage:banned_users` |
//!
//! The account's token comes from the token store (refreshed by this
//! process when a Twitch client secret is configured, else by the
//! auth-server); its `scopes` decide before anything is sent: a command
//! whose account lacks the kind's scope is `rejected: missing_scope: ...`.
//! Channel logins are resolved to user ids through Get Users, cached.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::command::CommandAction;
use common::oauth::OAuthConfig;
use common::token_manager::{TokenManager, TokenManagerOptions};
use common::token_store::{StoredToken, TokenStore};
use futures::future::BoxFuture;
use tokio::time::Instant;

use super::helix::{Helix, HelixError};
use crate::platforms::send_limiter::{SendLimiter, SendLimits};
use crate::platforms::sender_token::{account_token, require_scope};
use super::settings::Settings;
use super::standing::Standing;
use crate::platforms::seam::{Job, Outcome, Sender};

/// Twitch's longest chat message, in characters.
pub const MAX_TEXT_CHARS: usize = 500;

/// The scope `user:write:chat` (sending).
pub const SCOPE_SEND: &str = "user:write:chat";
/// The scope of Delete Chat Messages.
pub const SCOPE_DELETE: &str = "moderator:manage:chat_messages";
/// The scope of Ban and Unban User.
pub const SCOPE_BAN: &str = "moderator:manage:banned_users";
/// The scope of Get Moderated Channels (optional: without it only the
/// account's own channel and its badges tell its standing).
pub const SCOPE_MODERATED: &str = "user:read:moderated_channels";

/// Longest a Helix call may take.
const HELIX_TIMEOUT: Duration = Duration::from_secs(10);

/// The Twitch sender.
#[derive(Debug)]
pub struct TwitchSender {
    helix: Helix,
    store: TokenStore,
    manager: Option<TokenManager>,
    default_account: Option<String>,
    limiter: SendLimiter,
    standing: Arc<Standing>,
    refresh: Duration,
    /// Channel login → user id.
    ids: Mutex<HashMap<String, String>>,
    /// Account → when its moderated channels were last read.
    read_at: Mutex<HashMap<String, Instant>>,
}

impl TwitchSender {
    /// The sender `settings` ask for, when Twitch has a client id
    /// (`TWITCH_CLIENT_ID`: Helix wants it with every token; the secret is
    /// not needed, the auth-server refreshes the tokens); `standing` is
    /// shared with the reader, which sees the accounts' badges.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub fn from_settings(
        settings: &Settings,
        oauth: &OAuthConfig,
        standing: Arc<Standing>,
    ) -> anyhow::Result<Option<Self>> {
        if oauth.twitch_client_id.is_empty() {
            return Ok(None);
        }
        // With the client secret too, this process refreshes the tokens
        // itself; without it, the auth-server keeps them fresh in the store.
        let manager = oauth.twitch().ok().flatten().map(|provider| {
            TokenManager::with_options(
                oauth.token_store(),
                provider,
                TokenManagerOptions::default(),
            )
        });
        Ok(Some(Self {
            helix: Helix::new(
                &settings.twitch_helix_url,
                &oauth.twitch_client_id,
                HELIX_TIMEOUT,
            )?,
            store: oauth.token_store(),
            manager,
            default_account: settings.twitch_sender.clone(),
            limiter: SendLimiter::new(SendLimits {
                window: settings.twitch_send_window,
                normal: settings.twitch_send_limit,
                privileged: settings.twitch_send_limit_privileged,
                channel_interval: settings.twitch_send_channel_interval,
                margin: settings.twitch_send_margin,
            }),
            standing,
            refresh: settings.twitch_standing_refresh,
            ids: Mutex::default(),
            read_at: Mutex::default(),
        }))
    }

    /// `account`'s usable token, or the outcome that says why there is none.
    async fn token(&self, account: &str) -> Result<StoredToken, Outcome> {
        account_token(
            common::schema::PLATFORM_TWITCH,
            account,
            &self.store,
            self.manager.as_ref(),
        )
        .await
    }

    /// The user id of channel `login`, from the cache or Get Users.
    async fn channel_id(&self, token: &StoredToken, login: &str) -> Result<String, Outcome> {
        if let Some(id) = self.ids.lock().expect("ids lock").get(login) {
            return Ok(id.clone());
        }
        let ids = self
            .helix
            .user_ids(&token.access_token, &[login])
            .await
            .map_err(|e| Outcome::failed(helix_reason(&e)))?;
        let Some(id) = ids.get(login) else {
            return Err(Outcome::rejected(format!(
                "unknown_channel: Twitch knows no channel `{login}`"
            )));
        };
        let mut cache = self.ids.lock().expect("ids lock");
        if cache.len() > 100_000 {
            cache.clear();
        }
        cache.insert(login.to_owned(), id.clone());
        Ok(id.clone())
    }

    /// Reads `token`'s account's moderated channels when it was never done
    /// or `refresh` has passed. Without the scope, its own channel and its
    /// badges are all that is known (the lowest limit elsewhere).
    async fn learn_standing(&self, token: &StoredToken) {
        let account = token.login.clone();
        self.standing.follow(&account);
        let due = self
            .read_at
            .lock()
            .expect("read_at lock")
            .get(&account)
            .is_none_or(|at| at.elapsed() >= self.refresh);
        if !due {
            return;
        }
        self.read_at
            .lock()
            .expect("read_at lock")
            .insert(account.clone(), Instant::now());
        if !token.scopes.iter().any(|s| s == SCOPE_MODERATED) {
            tracing::info!(%account, "the token lacks {SCOPE_MODERATED}: the account counts as a moderator only where its badges say so");
            return;
        }
        match self
            .helix
            .moderated_channels(&token.access_token, &token.user_id)
            .await
        {
            Ok(channels) => {
                tracing::debug!(%account, channels = channels.len(), "read the moderated channels");
                self.standing.set_moderated(&account, channels);
            }
            Err(e) => {
                tracing::warn!(%account, error = %e, "cannot read the moderated channels; keeping what was known");
            }
        }
    }

    async fn carry_out(&self, job: &Job) -> Outcome {
        let token = match self.token(&job.account).await {
            Ok(t) => t,
            Err(o) => return o,
        };
        let channel = &job.command.channel;
        let broadcaster = match self.channel_id(&token, channel).await {
            Ok(id) => id,
            Err(o) => return o,
        };
        let t = &token.access_token;
        let me = token.user_id.as_str();
        let result = match &job.command.action {
            CommandAction::Send { text, reply_to } => {
                return match self
                    .helix
                    .send(t, &broadcaster, me, text, reply_to.as_deref())
                    .await
                {
                    Ok(answer) if answer.is_sent => Outcome::sent(answer.message_id),
                    Ok(answer) => Outcome::dropped(
                        answer
                            .drop_code
                            .unwrap_or_else(|| "dropped without a reason".into()),
                    ),
                    Err(e) => Outcome::failed(helix_reason(&e)),
                };
            }
            CommandAction::Delete { message_id } => {
                self.helix.delete(t, &broadcaster, me, message_id).await
            }
            CommandAction::Timeout {
                user_id,
                seconds,
                reason,
            } => {
                self.helix
                    .ban(
                        t,
                        &broadcaster,
                        me,
                        user_id,
                        Some(*seconds),
                        reason.as_deref(),
                    )
                    .await
            }
            CommandAction::Ban { user_id, reason } => {
                self.helix
                    .ban(t, &broadcaster, me, user_id, None, reason.as_deref())
                    .await
            }
            CommandAction::Unban { user_id } => {
                self.helix.unban(t, &broadcaster, me, user_id).await
            }
        };
        match result {
            Ok(()) => Outcome::sent(None),
            Err(e) => Outcome::failed(helix_reason(&e)),
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

/// A receipt's reason for a Helix failure: `helix_<status>: <Twitch's
/// message>`, `unreachable: ...` (nothing was sent) or `no_answer: ...` (it
/// may have been).
fn helix_reason(e: &HelixError) -> String {
    match e {
        HelixError::Status { status, message } => format!("helix_{status}: {message}"),
        HelixError::Unreachable(m) => format!("unreachable: {m}"),
        HelixError::NoAnswer(m) => format!("no_answer: {m}"),
    }
}

impl Sender for TwitchSender {
    fn platform(&self) -> &'static str {
        common::schema::PLATFORM_TWITCH
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
            if matches!(job.command.action, CommandAction::Send { .. }) {
                self.learn_standing(&token).await;
            }
            self.channel_id(&token, &job.command.channel).await?;
            Ok(())
        })
    }

    fn wait_turn<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<(), Outcome>> {
        Box::pin(async move {
            if !matches!(job.command.action, CommandAction::Send { .. }) {
                return Ok(());
            }
            let (account, channel) = (job.account.as_str(), job.command.channel.as_str());
            let standing = &self.standing;
            if self
                .limiter
                .reserve_command(
                    &job.command.id,
                    account,
                    channel,
                    || standing.is_privileged(account, channel),
                    job.deadline,
                )
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
