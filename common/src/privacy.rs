//! The privacy contract, `PrivacyNotice` v1: opt-outs and purges, as every
//! chatbus service and every other holder of chat data hears of them.
//!
//! Notices travel on the RabbitMQ **stream** `chat.privacy`
//! ([`crate::amqp::privacy`]), which each service replays from its start
//! when it starts, so an opt-out outlives restarts of everything. The
//! consumer's store is where they are decided and recorded (its admin API
//! and CLI, `consumer privacy …`); the stream is how everyone else is told
//! (GDPR Art. 17(2)). docs/privacy.md has the whole story.
//!
//! A service that keeps events honours the stream by
//! * dropping every event of an opted-out user (matched by the author's
//!   platform **id**, never the login: logins change) or channel, and
//! * deleting what a `purge` names from its own copies, and refusing
//!   events of that subject received at or before the purge's `horizon`
//!   (they were in flight when it ran).
//!
//! [`PrivacyList`] is that state, built by [`PrivacyList::apply`]ing the
//! notices in stream order.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::schema::ChatEvent;

/// The notice contract's version.
pub const PRIVACY_SCHEMA_VERSION: u32 = 1;

/// The stream notices travel on.
pub const PRIVACY_STREAM: &str = "chat.privacy";

/// Who or what a notice is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Subject {
    /// One user of one platform, by the platform's user id, in every
    /// channel.
    User {
        /// `twitch`, `youtube`, `kick` …
        platform: String,
        /// The platform's stable user id (not the login).
        user_id: String,
    },
    /// One channel, by its channel word (as in `ChatEvent::channel`).
    Channel {
        /// The platform.
        platform: String,
        /// The channel word.
        channel: String,
    },
    /// One event, by its `ChatEvent::id`.
    Message {
        /// The platform.
        platform: String,
        /// The event's id.
        message_id: String,
    },
    /// Everything sent before a moment.
    Before {
        /// Events with `sent_at` before this.
        before: DateTime<Utc>,
    },
}

impl Subject {
    /// Parses the CLI's and admin API's form of a user or channel:
    /// `<platform>:<id or channel>` (`twitch:12345`, `youtube:UCabc`).
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse_pair(kind: &str, value: &str) -> Result<Self, String> {
        let (platform, rest) = value
            .split_once(':')
            .filter(|(p, r)| !p.is_empty() && !r.is_empty())
            .ok_or_else(|| format!("`{value}`: expected <platform>:<{kind} id>"))?;
        if !platform
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!(
                "`{platform}` is not a platform name (lowercase letters, digits, _)"
            ));
        }
        let platform = platform.to_owned();
        let rest = rest.to_owned();
        match kind {
            "user" => Ok(Self::User {
                platform,
                user_id: rest,
            }),
            "channel" => Ok(Self::Channel {
                platform,
                channel: rest,
            }),
            "message" => Ok(Self::Message {
                platform,
                message_id: rest,
            }),
            other => Err(format!("unknown subject kind `{other}`")),
        }
    }

    /// The subject in one line, for logs and the audit table: `user
    /// twitch:123`, `channel twitch:foo`, `message twitch:abc`, `before
    /// 2026-01-01T00:00:00Z`. Never message text: a subject holds none.
    pub fn describe(&self) -> String {
        match self {
            Self::User { platform, user_id } => format!("user {platform}:{user_id}"),
            Self::Channel { platform, channel } => format!("channel {platform}:{channel}"),
            Self::Message {
                platform,
                message_id,
            } => format!("message {platform}:{message_id}"),
            Self::Before { before } => format!(
                "before {}",
                before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            ),
        }
    }

    /// Whether `event` is the subject's own (written by the user, in the
    /// channel, the message itself, or sent before the moment).
    pub fn covers(&self, event: &ChatEvent) -> bool {
        match self {
            Self::User { platform, user_id } => {
                event.platform == *platform
                    && event.author.as_ref().is_some_and(|a| a.id == *user_id)
            }
            Self::Channel { platform, channel } => {
                event.platform == *platform && event.channel == *channel
            }
            Self::Message {
                platform,
                message_id,
            } => event.platform == *platform && event.id == *message_id,
            Self::Before { before } => event.sent_at < *before,
        }
    }
}

/// What a notice says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PrivacyAction {
    /// The subject (a user or channel) opted out: nothing of theirs is
    /// stored or published from now on.
    OptOut,
    /// The subject opted back in.
    OptIn,
    /// What the subject covers was deleted; delete your copies too.
    Purge,
    /// A service started reading the stream (it reads until its own
    /// `sync` to know it has the whole list). Carries nothing; ignore it.
    Sync,
}

impl PrivacyAction {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OptOut => "opt_out",
            Self::OptIn => "opt_in",
            Self::Purge => "purge",
            Self::Sync => "sync",
        }
    }
}

/// One opt-out, opt-in, purge or sync, as published on [`PRIVACY_STREAM`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrivacyNotice {
    /// Always [`PRIVACY_SCHEMA_VERSION`].
    pub schema_version: u32,
    /// A unique id (UUID).
    pub id: String,
    /// When it was decided.
    pub at: DateTime<Utc>,
    /// What happened.
    pub action: PrivacyAction,
    /// To whom (absent for `sync`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Subject>,
    /// Who asked: `admin-api`, `cli`, `self-service`, or the service of a
    /// `sync`. Never a person's data.
    pub requested_by: String,
    /// For a purge: events of the subject received (`received_at`) at or
    /// before this are deleted, and refused if they arrive later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon: Option<DateTime<Utc>>,
    /// For a purge: how many events the store deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u64>,
}

impl PrivacyNotice {
    /// A notice of `action` about `subject`, decided now.
    pub fn new(action: PrivacyAction, subject: Option<Subject>, requested_by: &str) -> Self {
        Self {
            schema_version: PRIVACY_SCHEMA_VERSION,
            id: uuid::Uuid::new_v4().to_string(),
            at: Utc::now(),
            action,
            subject,
            requested_by: requested_by.to_owned(),
            horizon: None,
            rows: None,
        }
    }
}

/// The opt-outs and purge horizons a service honours, built from the
/// notices in stream order. Matching an event is a few hash lookups, and
/// nothing at all while the list is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrivacyList {
    users: HashSet<(String, String)>,
    channels: HashSet<(String, String)>,
    /// Purge horizons: events of the subject received at or before it are
    /// refused. By kind, so an event costs one lookup per kind.
    user_horizons: HashMap<(String, String), DateTime<Utc>>,
    channel_horizons: HashMap<(String, String), DateTime<Utc>>,
    message_horizons: HashMap<(String, String), DateTime<Utc>>,
    /// `(before, horizon)` of `before` purges.
    before_horizons: Vec<(DateTime<Utc>, DateTime<Utc>)>,
}

fn raise(
    map: &mut HashMap<(String, String), DateTime<Utc>>,
    key: (String, String),
    h: DateTime<Utc>,
) {
    let e = map.entry(key).or_insert(h);
    *e = (*e).max(h);
}

impl PrivacyList {
    /// Applies one notice (in stream order: a later opt-in undoes an
    /// earlier opt-out).
    pub fn apply(&mut self, notice: &PrivacyNotice) {
        let Some(subject) = &notice.subject else {
            return;
        };
        match notice.action {
            PrivacyAction::OptOut => self.set_opted_out(subject, true),
            PrivacyAction::OptIn => self.set_opted_out(subject, false),
            PrivacyAction::Purge => {
                if let Some(h) = notice.horizon {
                    self.set_horizon(subject.clone(), h);
                }
            }
            PrivacyAction::Sync => {}
        }
    }

    /// Records an opt-out (`true`) or opt-in of a user or channel (other
    /// subjects cannot opt out).
    pub fn set_opted_out(&mut self, subject: &Subject, opted_out: bool) {
        let (set, key) = match subject {
            Subject::User { platform, user_id } => {
                (&mut self.users, (platform.clone(), user_id.clone()))
            }
            Subject::Channel { platform, channel } => {
                (&mut self.channels, (platform.clone(), channel.clone()))
            }
            Subject::Message { .. } | Subject::Before { .. } => return,
        };
        if opted_out {
            set.insert(key);
        } else {
            set.remove(&key);
        }
    }

    /// Records a purge horizon: events `subject` covers that were received
    /// at or before `horizon` are refused from now on.
    pub fn set_horizon(&mut self, subject: Subject, horizon: DateTime<Utc>) {
        match subject {
            Subject::User { platform, user_id } => {
                raise(&mut self.user_horizons, (platform, user_id), horizon);
            }
            Subject::Channel { platform, channel } => {
                raise(&mut self.channel_horizons, (platform, channel), horizon);
            }
            Subject::Message {
                platform,
                message_id,
            } => raise(&mut self.message_horizons, (platform, message_id), horizon),
            Subject::Before { before } => self.before_horizons.push((before, horizon)),
        }
    }

    /// Whether nothing is listed.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
            && self.channels.is_empty()
            && self.user_horizons.is_empty()
            && self.channel_horizons.is_empty()
            && self.message_horizons.is_empty()
            && self.before_horizons.is_empty()
    }

    /// Whether `event`'s author or channel opted out.
    pub fn opted_out(&self, event: &ChatEvent) -> bool {
        if self.users.is_empty() && self.channels.is_empty() {
            return false;
        }
        // (Lookups by borrowed pairs would need a key type of their own;
        // this runs only while the list is not empty.)
        (!self.channels.is_empty()
            && self
                .channels
                .contains(&(event.platform.clone(), event.channel.clone())))
            || (!self.users.is_empty()
                && event
                    .author
                    .as_ref()
                    .is_some_and(|a| self.users.contains(&(event.platform.clone(), a.id.clone()))))
    }

    /// Whether `event` must not be kept: its author or channel opted out,
    /// or a purge of it (its user, channel, id or time) ran after it was
    /// read.
    pub fn refuses(&self, event: &ChatEvent) -> bool {
        if self.is_empty() {
            return false;
        }
        let within = |map: &HashMap<(String, String), DateTime<Utc>>, value: &str| {
            !map.is_empty()
                && map
                    .get(&(event.platform.clone(), value.to_owned()))
                    .is_some_and(|h| event.received_at <= *h)
        };
        self.opted_out(event)
            || event
                .author
                .as_ref()
                .is_some_and(|a| within(&self.user_horizons, &a.id))
            || within(&self.channel_horizons, &event.channel)
            || within(&self.message_horizons, &event.id)
            || self
                .before_horizons
                .iter()
                .any(|(before, h)| event.sent_at < *before && event.received_at <= *h)
    }

    /// The opted-out users, as `(platform, user id)`.
    pub fn users(&self) -> impl Iterator<Item = &(String, String)> {
        self.users.iter()
    }

    /// The opted-out channels, as `(platform, channel)`.
    pub fn channels(&self) -> impl Iterator<Item = &(String, String)> {
        self.channels.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{Author, EventBody, MessageDetails};

    fn message(user: &str, channel: &str, received: DateTime<Utc>) -> ChatEvent {
        let mut e = ChatEvent::new(
            format!("m-{user}-{channel}"),
            "twitch",
            channel,
            received,
            received,
            EventBody::Message(MessageDetails::default()),
        );
        e.author = Some(Author {
            id: user.into(),
            login: format!("login{user}"),
            display_name: user.into(),
            color: None,
            badges: vec![],
            roles: vec![],
            avatar_url: None,
        });
        e.text = Some("hi".into());
        e
    }

    #[test]
    fn opt_out_then_in_follows_the_stream_order_and_matches_ids_not_logins() {
        let mut list = PrivacyList::default();
        let user = Subject::parse_pair("user", "twitch:42").unwrap();
        let now = Utc::now();
        assert!(!list.refuses(&message("42", "chan", now)));
        list.apply(&PrivacyNotice::new(
            PrivacyAction::OptOut,
            Some(user.clone()),
            "cli",
        ));
        assert!(list.refuses(&message("42", "chan", now)));
        assert!(!list.refuses(&message("43", "chan", now)));
        // A different platform's user 42 is someone else.
        let mut yt = message("42", "chan", now);
        yt.platform = "youtube".into();
        assert!(!list.refuses(&yt));
        list.apply(&PrivacyNotice::new(PrivacyAction::OptIn, Some(user), "cli"));
        assert!(list.is_empty());
        assert!(!list.refuses(&message("42", "chan", now)));
    }

    #[test]
    fn a_purge_horizon_refuses_what_was_read_before_it_only() {
        let mut list = PrivacyList::default();
        let now = Utc::now();
        let mut purge = PrivacyNotice::new(
            PrivacyAction::Purge,
            Some(Subject::parse_pair("channel", "twitch:chan").unwrap()),
            "admin-api",
        );
        purge.horizon = Some(now);
        list.apply(&purge);
        assert!(list.refuses(&message("1", "chan", now)));
        assert!(list.refuses(&message("1", "chan", now - chrono::Duration::seconds(5))));
        assert!(!list.refuses(&message(
            "1",
            "chan",
            now + chrono::Duration::milliseconds(1)
        )));
        assert!(!list.refuses(&message("1", "other", now)));
    }

    #[test]
    fn subjects_parse_and_describe_without_text() {
        assert_eq!(
            Subject::parse_pair("user", "twitch:123")
                .unwrap()
                .describe(),
            "user twitch:123"
        );
        assert!(Subject::parse_pair("user", "twitch").is_err());
        assert!(Subject::parse_pair("user", ":1").is_err());
        assert!(Subject::parse_pair("user", "Twitch:1").is_err());
        let json =
            serde_json::to_value(Subject::parse_pair("channel", "kick:abc").unwrap()).unwrap();
        assert_eq!(json["type"], "channel");
        assert_eq!(json["channel"], "abc");
    }
}
