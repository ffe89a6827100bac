//! The command contract, `ChatCommand` v1: what any service publishes to
//! make chatbus speak or moderate in a channel, and the [`Receipt`] it gets
//! back. Documented in `docs/schema.md` (Commands); schema in
//! `docs/chat-command.schema.json`, which a test keeps equal to these types.
//!
//! A command goes to the topic exchange `chat.commands` with the routing
//! key [`command_routing_key`] (`<platform>.<channel>`, each word escaped as
//! chat keys are). Its receipt follows AMQP's RPC convention: published to
//! the command's `reply_to` with its `correlation_id`. A command's `id` is
//! the client's idempotency key: one id is never sent twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::routing::{MAX_CHANNEL_WORD, MAX_PLATFORM_WORD, escape_word};

/// The command contract's version.
pub const COMMAND_SCHEMA_VERSION: u32 = 1;

/// How long a command without `expires_at` may wait to be carried out,
/// from `issued_at`.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(30);

/// Longest `id`, in bytes.
pub const MAX_COMMAND_ID_LEN: usize = 128;

/// Longest timeout a command may ask for (Twitch's maximum: two weeks).
pub const MAX_TIMEOUT_SECONDS: u32 = 14 * 24 * 60 * 60;

/// A command to a platform: say something in a channel, or moderate it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChatCommand {
    /// Always 1 for this contract.
    pub schema_version: u32,
    /// The client's idempotency key (at most 128 bytes): a command with an
    /// id already attempted is never sent again.
    pub id: String,
    /// The platform, as in `ChatEvent` (`twitch`, `youtube` ...).
    pub platform: String,
    /// The channel word, as in `ChatEvent`.
    pub channel: String,
    /// The token-store account that acts; absent: the platform's sender
    /// account (`<PLATFORM>_SENDER`).
    #[serde(rename = "as", default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// When the client issued it.
    pub issued_at: DateTime<Utc>,
    /// After this it is answered `expired` instead of carried out; absent:
    /// `issued_at` + 30 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    /// What to do.
    #[serde(flatten)]
    pub action: CommandAction,
}

/// What a command does; `kind` on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CommandAction {
    /// Send `text` to the channel's chat, as a reply to `reply_to` (a
    /// message id of the platform) when given.
    Send {
        /// The message (each platform has its own length limit).
        text: String,
        /// The platform's id of the message this replies to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reply_to: Option<String>,
    },
    /// Delete one message.
    Delete {
        /// The platform's id of the message.
        message_id: String,
    },
    /// Time a user out.
    Timeout {
        /// The user's platform id.
        user_id: String,
        /// How long, 1 s to two weeks.
        seconds: u32,
        /// Why, shown where the platform shows it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Ban a user.
    Ban {
        /// The user's platform id.
        user_id: String,
        /// Why, shown where the platform shows it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// Lift a ban or timeout.
    Unban {
        /// The user's platform id.
        user_id: String,
    },
}

impl CommandAction {
    /// The kind's wire name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Send { .. } => "send",
            Self::Delete { .. } => "delete",
            Self::Timeout { .. } => "timeout",
            Self::Ban { .. } => "ban",
            Self::Unban { .. } => "unban",
        }
    }

    /// Whether the kind moderates (an account needs moderation rights).
    pub fn moderates(&self) -> bool {
        !matches!(self, Self::Send { .. })
    }
}

/// Why a command is refused before anything is tried.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// Another contract version.
    #[error("unsupported command schema_version {0} (this is version 1)")]
    UnsupportedVersion(u32),
    /// A required word is empty.
    #[error("`{0}` is empty")]
    EmptyField(&'static str),
    /// The id is longer than [`MAX_COMMAND_ID_LEN`].
    #[error("`id` is {0} bytes, over 128")]
    IdTooLong(usize),
    /// A timeout outside 1 s to two weeks.
    #[error("`seconds` is {0}: a timeout lasts 1 to 1209600 seconds")]
    TimeoutOutOfRange(u32),
    /// `expires_at` is not after `issued_at`.
    #[error("`expires_at` is not after `issued_at`")]
    ExpiresBeforeIssued,
}

impl ChatCommand {
    /// A command of `action` in `platform`'s `channel`, issued now.
    pub fn new(
        id: impl Into<String>,
        platform: impl Into<String>,
        channel: impl Into<String>,
        action: CommandAction,
    ) -> Self {
        Self {
            schema_version: COMMAND_SCHEMA_VERSION,
            id: id.into(),
            platform: platform.into(),
            channel: channel.into(),
            account: None,
            issued_at: Utc::now(),
            expires_at: None,
            action,
        }
    }

    /// When it stops being worth carrying out.
    pub fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at.unwrap_or_else(|| {
            self.issued_at
                + chrono::Duration::from_std(DEFAULT_LIFETIME).expect("30 s fits a chrono duration")
        })
    }

    /// Whether it has expired at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        now >= self.expires_at()
    }

    /// Checks what serde cannot: the version, non-empty words, the id's
    /// length, a timeout's range and the expiry's order.
    ///
    /// # Errors
    /// The first [`CommandError`] found.
    pub fn validate(&self) -> Result<(), CommandError> {
        if self.schema_version != COMMAND_SCHEMA_VERSION {
            return Err(CommandError::UnsupportedVersion(self.schema_version));
        }
        let mut words = vec![
            ("id", self.id.as_str()),
            ("platform", self.platform.as_str()),
            ("channel", self.channel.as_str()),
        ];
        match &self.action {
            CommandAction::Send { text, .. } => words.push(("text", text)),
            CommandAction::Delete { message_id } => words.push(("message_id", message_id)),
            CommandAction::Timeout { user_id, .. }
            | CommandAction::Ban { user_id, .. }
            | CommandAction::Unban { user_id } => words.push(("user_id", user_id)),
        }
        if let Some(account) = &self.account {
            words.push(("as", account));
        }
        if let Some((field, _)) = words.iter().find(|(_, v)| v.trim().is_empty()) {
            return Err(CommandError::EmptyField(field));
        }
        if self.id.len() > MAX_COMMAND_ID_LEN {
            return Err(CommandError::IdTooLong(self.id.len()));
        }
        if let CommandAction::Timeout { seconds, .. } = self.action
            && !(1..=MAX_TIMEOUT_SECONDS).contains(&seconds)
        {
            return Err(CommandError::TimeoutOutOfRange(seconds));
        }
        if self.expires_at.is_some_and(|at| at <= self.issued_at) {
            return Err(CommandError::ExpiresBeforeIssued);
        }
        Ok(())
    }

    /// Its routing key on `chat.commands`.
    pub fn routing_key(&self) -> String {
        command_routing_key(&self.platform, &self.channel)
    }
}

/// The routing key of a command for `platform`'s `channel` on
/// `chat.commands`: `<platform>.<channel>`, each word escaped as chat
/// routing keys are, so a sender binds `twitch.*` or `*.somechannel`.
///
/// ```
/// use common::command::command_routing_key;
/// assert_eq!(command_routing_key("twitch", "xqcow"), "twitch.xqcow");
/// assert_eq!(command_routing_key("youtube", "UCx.y"), "youtube.UCx-2ey");
/// ```
pub fn command_routing_key(platform: &str, channel: &str) -> String {
    format!(
        "{}.{}",
        escape_word(platform, MAX_PLATFORM_WORD),
        escape_word(channel, MAX_CHANNEL_WORD)
    )
}

/// What became of a command: published to its `reply_to` with its
/// `correlation_id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Receipt {
    /// The command's `id`.
    pub id: String,
    /// The outcome.
    pub status: ReceiptStatus,
    /// The platform's id of the message sent, when it gives one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_message_id: Option<String>,
    /// Why it was not sent: the platform's own words where it gave some
    /// (Twitch's `drop_reason.code`, e.g. `msg_duplicate`), else chatbus's
    /// (`not_allowed`, `no_sender`, `not_live`, `unknown_outcome` ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When the outcome was known.
    pub at: DateTime<Utc>,
}

/// A command's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptStatus {
    /// The platform took it.
    Sent,
    /// The platform answered but did not deliver it (its reason in `reason`).
    Dropped,
    /// It could not be carried out (an error; or a crash left its outcome
    /// unknown: `failed` with `unknown_outcome`, never a second try).
    Failed,
    /// Its `expires_at` passed before it could go.
    Expired,
    /// Refused before anything was tried (not allowed, malformed, too long,
    /// a missing scope, no sender).
    Rejected,
    /// No receipt came by `expires_at` + 5 s (the requester's own answer:
    /// a direct reply-to receipt is lost when its connection drops).
    Unknown,
}

/// The JSON Schema of [`ChatCommand`] and [`Receipt`], as committed in
/// `docs/chat-command.schema.json`.
pub fn json_schema() -> serde_json::Value {
    let command = schemars::schema_for!(ChatCommand);
    let receipt = schemars::schema_for!(Receipt);
    serde_json::json!({
        "ChatCommand": command,
        "Receipt": receipt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn send() -> ChatCommand {
        ChatCommand::new(
            "c-1",
            "twitch",
            "pajlada",
            CommandAction::Send {
                text: "pong".into(),
                reply_to: Some("m-9".into()),
            },
        )
    }

    #[test]
    fn the_wire_form_is_flat_with_kind_and_as() {
        let mut c = send();
        c.account = Some("chatbus_bot".into());
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(v["kind"], "send");
        assert_eq!(v["text"], "pong");
        assert_eq!(v["reply_to"], "m-9");
        assert_eq!(v["as"], "chatbus_bot");
        assert!(v.get("expires_at").is_none());
        let back: ChatCommand = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
        let ban: ChatCommand = serde_json::from_str(
            r#"{"schema_version":1,"id":"b","platform":"youtube","channel":"UCx",
                "issued_at":"2026-12-04T12:00:00Z","kind":"timeout","user_id":"UCy","seconds":600}"#,
        )
        .unwrap();
        assert_eq!(ban.action.kind(), "timeout");
        assert!(ban.action.moderates());
        assert_eq!(ban.routing_key(), "youtube.UCx");
    }

    #[test]
    fn it_expires_thirty_seconds_after_it_was_issued_unless_it_says() {
        let c = send();
        assert_eq!(c.expires_at() - c.issued_at, chrono::Duration::seconds(30));
        assert!(!c.is_expired(c.issued_at + chrono::Duration::seconds(29)));
        assert!(c.is_expired(c.issued_at + chrono::Duration::seconds(30)));
        let mut later = send();
        later.expires_at = Some(later.issued_at + chrono::Duration::seconds(90));
        assert!(!later.is_expired(later.issued_at + chrono::Duration::seconds(60)));
    }

    #[test]
    fn validation_names_what_is_wrong() {
        assert_eq!(send().validate(), Ok(()));
        let mut c = send();
        c.schema_version = 2;
        assert_eq!(c.validate(), Err(CommandError::UnsupportedVersion(2)));
        let mut c = send();
        c.action = CommandAction::Send {
            text: "  ".into(),
            reply_to: None,
        };
        assert_eq!(c.validate(), Err(CommandError::EmptyField("text")));
        let mut c = send();
        c.id = "x".repeat(129);
        assert_eq!(c.validate(), Err(CommandError::IdTooLong(129)));
        let mut c = send();
        c.action = CommandAction::Timeout {
            user_id: "1".into(),
            seconds: 0,
            reason: None,
        };
        assert_eq!(c.validate(), Err(CommandError::TimeoutOutOfRange(0)));
        let mut c = send();
        c.expires_at = Some(c.issued_at);
        assert_eq!(c.validate(), Err(CommandError::ExpiresBeforeIssued));
        let mut c = send();
        c.account = Some(String::new());
        assert_eq!(c.validate(), Err(CommandError::EmptyField("as")));
    }

    #[test]
    fn receipts_carry_the_platform_words() {
        let r = Receipt {
            id: "c-1".into(),
            status: ReceiptStatus::Dropped,
            platform_message_id: None,
            reason: Some("msg_duplicate".into()),
            at: Utc::now(),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["status"], "dropped");
        assert_eq!(v["reason"], "msg_duplicate");
        assert!(v.get("platform_message_id").is_none());
    }
}
