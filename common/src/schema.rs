//! The `ChatEvent` v1 message contract: one platform-neutral JSON object per
//! chat event, with kind-specific details and platform-specific extras.
//!
//! The contract is documented in `docs/schema.md` and published as a JSON
//! Schema in `docs/chat-event.schema.json`; a test keeps that file equal to
//! what [`json_schema`] generates from these types.
//!
//! # Compatibility
//!
//! `schema_version` is bumped for any change a v1 reader could misread.
//! Additive changes (a new optional field) keep the version; readers must
//! ignore fields they do not know. New kinds are rare and announced: v1 got
//! `super_chat`, `super_sticker` and `chat_ended` with YouTube, then
//! `stream_online`, `stream_offline` and `stream_update` (a reader older
//! than them refuses those events, so update readers before the ingestor),
//! then `privacy` (a channel's purge or opt-out, announced on its routing
//! key; readers of the stream-status release on carry it as unknown).
//! From the release that added the stream kinds on, a reader decodes a kind
//! it does not know as [`EventBody::Unknown`], keeping its name and
//! details, so later kinds need no deploy order. Platform notices that v1 does not model are carried as
//! [`EventBody::OtherNotice`] instead of being dropped.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::privacy::{PrivacyAction, PrivacyNotice, Subject};

/// The version of the schema this crate writes. Readers reject other values.
pub const SCHEMA_VERSION: u32 = 1;

/// Longest event id, in bytes: the id is also the AMQP `message_id`
/// (a shortstr).
pub const MAX_ID_LEN: usize = 255;

/// Platform identifier for Twitch.
pub const PLATFORM_TWITCH: &str = "twitch";
/// Platform identifier for YouTube live chat.
pub const PLATFORM_YOUTUBE: &str = "youtube";

/// One chat event, as published on the bus and stored by the consumer.
///
/// The core (identity, channel, author, text, emotes, reply, payment) is the
/// same for every platform; `kind` + `details` say what happened; `twitch`
/// and `youtube` hold typed platform-only facts; `raw` optionally carries the
/// platform's own line or resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(
    title = "ChatEvent",
    description = "One chat event on the chatbus `chat` exchange (schema v1)."
)]
pub struct ChatEvent {
    /// Always [`SCHEMA_VERSION`] (1) for this contract.
    pub schema_version: u32,
    /// Stable id of the event, unique within its platform. For Twitch it is
    /// the message's `id` tag where the platform gives one; otherwise it is a
    /// UUIDv5 derived from the event's content, so re-ingesting the same line
    /// yields the same id. The store deduplicates on `(platform, id)`.
    pub id: String,
    /// Lowercase platform identifier: `twitch`, `youtube`, ...
    pub platform: String,
    /// The channel word: the platform's stable lowercase login (Twitch) or
    /// its stable channel id (YouTube `UC…`, case kept). The routing key's
    /// third word is this, escaped: `A-Z`, `a-z`, `0-9` and `_` as they are,
    /// any other byte as `-hh` (`chat.youtube.UC…`). Changed within v1:
    /// the previous release escaped upper case too (`UC` was `-55-43`).
    pub channel: String,
    /// The platform's numeric/opaque id of the channel, when known.
    pub channel_id: Option<String>,
    /// When the platform says the event happened (Twitch: `tmi-sent-ts`),
    /// or `received_at` when the platform gives no time.
    pub sent_at: DateTime<Utc>,
    /// When the ingestor read the event from the platform.
    pub received_at: DateTime<Utc>,
    /// Who caused the event (the chatter, subscriber, raider, gifter). `None`
    /// for events without a user, such as room state, chat clear and gaps.
    pub author: Option<Author>,
    /// The message text, or the user's attached message for notices. Never
    /// includes Twitch's CTCP `ACTION` wrapper.
    pub text: Option<String>,
    /// Emotes inside `text`, by Unicode code point position.
    #[serde(default)]
    pub emotes: Vec<Emote>,
    /// The message this one replies to, if it is a reply.
    pub reply_to: Option<ReplyParent>,
    /// What happened: the kind name and its details.
    #[serde(flatten)]
    pub body: EventBody,
    /// Money attached to the event (a YouTube Super Chat or Super Sticker,
    /// Twitch bits), in one shape for every platform. Absent when nothing
    /// was paid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid: Option<Paid>,
    /// Twitch-specific details; present on Twitch events.
    pub twitch: Option<TwitchExtras>,
    /// YouTube-specific details; present on YouTube events, absent
    /// otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub youtube: Option<YoutubeExtras>,
    /// The platform's raw form (Twitch: the IRC line; YouTube: the
    /// `liveChatMessage` resource as JSON), when the ingestor is configured
    /// to carry it.
    pub raw: Option<String>,
}

impl ChatEvent {
    /// A new event with the core fields set and everything optional empty.
    pub fn new(
        id: impl Into<String>,
        platform: impl Into<String>,
        channel: impl Into<String>,
        sent_at: DateTime<Utc>,
        received_at: DateTime<Utc>,
        body: EventBody,
    ) -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            id: id.into(),
            platform: platform.into(),
            channel: channel.into(),
            channel_id: None,
            sent_at,
            received_at,
            author: None,
            text: None,
            emotes: Vec::new(),
            reply_to: None,
            body,
            paid: None,
            twitch: None,
            youtube: None,
            raw: None,
        }
    }

    /// The kind of this event ([`EventKind::Unknown`] for a kind this
    /// reader does not know).
    pub fn kind(&self) -> EventKind {
        self.body.kind()
    }

    /// The kind's wire name, an unknown kind's included.
    pub fn kind_name(&self) -> &str {
        self.body.kind_name()
    }

    /// Checks the invariants that serde cannot express: the schema version,
    /// non-empty identity fields and emote ranges that fit the text.
    ///
    /// # Errors
    /// A [`SchemaError`] naming the first field that is wrong.
    pub fn validate(&self) -> Result<(), SchemaError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(SchemaError::UnsupportedVersion(self.schema_version));
        }
        for (field, value) in [
            ("id", &self.id),
            ("platform", &self.platform),
            ("channel", &self.channel),
        ] {
            if value.is_empty() {
                return Err(SchemaError::EmptyField(field));
            }
        }
        if self.id.len() > MAX_ID_LEN {
            return Err(SchemaError::IdTooLong(self.id.len()));
        }
        let len = self.text.as_deref().map_or(0, |t| t.chars().count());
        for emote in &self.emotes {
            if emote.start >= emote.end || emote.end > len {
                return Err(SchemaError::EmoteOutOfRange {
                    emote: emote.id.clone(),
                    start: emote.start,
                    end: emote.end,
                    len,
                });
            }
        }
        Ok(())
    }

    /// Serialises the event to its JSON wire form.
    ///
    /// # Errors
    /// Only if serde_json fails, which it does not for this type.
    pub fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        serde_json::to_vec(self)
    }

    /// Parses and validates one event from its JSON wire form.
    ///
    /// # Errors
    /// [`SchemaError::Json`] for malformed JSON or a shape that does not match
    /// the contract, or the error of [`ChatEvent::validate`].
    pub fn from_json(bytes: &[u8]) -> Result<Self, SchemaError> {
        let event: ChatEvent = serde_json::from_slice(bytes)?;
        event.validate()?;
        Ok(event)
    }
}

/// Why a payload is not a valid `ChatEvent`.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The bytes are not JSON, or not the shape of a `ChatEvent`.
    #[error("invalid ChatEvent JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// `schema_version` is not one this reader understands.
    #[error("unsupported schema_version {0} (this reader understands {SCHEMA_VERSION})")]
    UnsupportedVersion(u32),
    /// A required identity field is empty.
    #[error("field `{0}` must not be empty")]
    EmptyField(&'static str),
    /// The id does not fit an AMQP `message_id`.
    #[error("id is {0} bytes, longer than {MAX_ID_LEN}")]
    IdTooLong(usize),
    /// An emote range does not fit inside the text.
    #[error("emote {emote} range {start}..{end} does not fit text of {len} code points")]
    EmoteOutOfRange {
        /// The emote id.
        emote: String,
        /// Range start (code points).
        start: usize,
        /// Range end, exclusive (code points).
        end: usize,
        /// Length of `text` in code points.
        len: usize,
    },
}

/// The user behind an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Author {
    /// The platform's stable user id.
    pub id: String,
    /// Lowercase login/handle.
    pub login: String,
    /// The name as the user styles it (may contain non-ASCII).
    pub display_name: String,
    /// The user's chosen name colour as `#RRGGBB`, if any.
    pub color: Option<String>,
    /// Badges in the order the platform lists them.
    #[serde(default)]
    pub badges: Vec<Badge>,
    /// Roles derived from badges and flags, for easy filtering.
    #[serde(default)]
    pub roles: Vec<Role>,
    /// The user's picture, when the platform gives one (YouTube).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar_url: Option<String>,
}

/// A chat badge, e.g. `subscriber` version `12` with info `14` (months).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Badge {
    /// Badge set name, e.g. `subscriber`, `moderator`, `bits`.
    pub name: String,
    /// Badge version within the set, e.g. `12` or `1000`.
    pub version: String,
    /// Extra information the platform attaches (Twitch `badge-info`), e.g.
    /// the exact number of subscribed months.
    pub info: Option<String>,
}

/// A role a user holds in the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The channel owner.
    Broadcaster,
    /// A channel moderator.
    Moderator,
    /// A channel VIP.
    Vip,
    /// A paying subscriber / channel member.
    Subscriber,
    /// Platform staff.
    Staff,
    /// Platform admin.
    Admin,
    /// Platform-wide moderator.
    GlobalModerator,
    /// Twitch Turbo / platform premium.
    Turbo,
    /// Verified partner / artist.
    Partner,
    /// A channel the platform has verified (YouTube's check mark).
    Verified,
}

/// An emote inside `text`.
///
/// `start` and `end` count **Unicode code points** (Rust `char`s, JavaScript
/// `Array.from(text)` elements), not bytes and not UTF-16 units: the emote is
/// `text.chars().skip(start).take(end - start)`. `end` is exclusive (Twitch's
/// own tag is inclusive; the normaliser converts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Emote {
    /// The platform's emote id (Twitch: usable in the emote CDN URL).
    pub id: String,
    /// The emote's text as it appears in the message.
    pub name: String,
    /// First code point of the emote (inclusive).
    pub start: usize,
    /// Code point after the emote (exclusive).
    pub end: usize,
}

/// The message a reply answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ReplyParent {
    /// Id of the parent message.
    pub message_id: String,
    /// Parent author's user id.
    pub user_id: Option<String>,
    /// Parent author's login.
    pub user_login: Option<String>,
    /// Parent author's display name.
    pub display_name: Option<String>,
    /// The parent message's text.
    pub text: Option<String>,
    /// Id of the message that started the thread, if different from the parent.
    pub thread_message_id: Option<String>,
}

/// A user referenced by an event that is not its author (ban target, gift
/// recipient, raid source ...).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct UserRef {
    /// The platform's user id, when known.
    pub id: Option<String>,
    /// Lowercase login.
    pub login: String,
    /// Display name, when known.
    pub display_name: Option<String>,
}

/// The kind of an event, without its details. Its snake_case name is the
/// `kind` field, the AMQP `type` property and the `kind` header.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A chat message.
    Message,
    /// A `/me` action message.
    Action,
    /// A message with bits/cheers attached.
    Cheer,
    /// A paid, highlighted chat message (YouTube Super Chat).
    SuperChat,
    /// A paid sticker (YouTube Super Sticker).
    SuperSticker,
    /// A first-time subscription.
    Subscription,
    /// A renewed subscription shared in chat.
    Resub,
    /// One gifted subscription to a named recipient.
    SubGift,
    /// A batch of gifted subscriptions to random viewers.
    MysteryGift,
    /// Another channel raided this one.
    Raid,
    /// A highlighted moderator/broadcaster announcement.
    Announcement,
    /// A user was banned permanently.
    Ban,
    /// A user was timed out.
    Timeout,
    /// The whole chat was cleared.
    ChatClear,
    /// A single message was deleted.
    MessageDelete,
    /// The room's modes changed (or were announced on join).
    RoomState,
    /// The live chat ended (YouTube: the broadcast is over).
    ChatEnded,
    /// The ingestor may have missed events in this interval.
    Gap,
    /// A platform notice v1 does not model; carried with its type and tags.
    OtherNotice,
    /// The channel went live.
    StreamOnline,
    /// The channel's stream ended.
    StreamOffline,
    /// The live stream's title, category or viewer count changed.
    StreamUpdate,
    /// A channel's events were purged (or it opted out): readers delete
    /// what the subject covers from their copies.
    Privacy,
    /// A kind this reader does not know (added after it was built); the
    /// event's body is [`EventBody::Unknown`], which keeps the real name.
    /// Not in [`EventKind::ALL`] and not parsed from a name: it stands for
    /// every name that is not a known kind.
    Unknown,
}

impl EventKind {
    /// Every known kind, in declaration order.
    pub const ALL: [EventKind; 23] = [
        EventKind::Message,
        EventKind::Action,
        EventKind::Cheer,
        EventKind::SuperChat,
        EventKind::SuperSticker,
        EventKind::Subscription,
        EventKind::Resub,
        EventKind::SubGift,
        EventKind::MysteryGift,
        EventKind::Raid,
        EventKind::Announcement,
        EventKind::Ban,
        EventKind::Timeout,
        EventKind::ChatClear,
        EventKind::MessageDelete,
        EventKind::RoomState,
        EventKind::ChatEnded,
        EventKind::Gap,
        EventKind::OtherNotice,
        EventKind::StreamOnline,
        EventKind::StreamOffline,
        EventKind::StreamUpdate,
        EventKind::Privacy,
    ];

    /// The snake_case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Message => "message",
            EventKind::Action => "action",
            EventKind::Cheer => "cheer",
            EventKind::SuperChat => "super_chat",
            EventKind::SuperSticker => "super_sticker",
            EventKind::Subscription => "subscription",
            EventKind::Resub => "resub",
            EventKind::SubGift => "sub_gift",
            EventKind::MysteryGift => "mystery_gift",
            EventKind::Raid => "raid",
            EventKind::Announcement => "announcement",
            EventKind::Ban => "ban",
            EventKind::Timeout => "timeout",
            EventKind::ChatClear => "chat_clear",
            EventKind::MessageDelete => "message_delete",
            EventKind::RoomState => "room_state",
            EventKind::ChatEnded => "chat_ended",
            EventKind::Gap => "gap",
            EventKind::OtherNotice => "other_notice",
            EventKind::StreamOnline => "stream_online",
            EventKind::StreamOffline => "stream_offline",
            EventKind::StreamUpdate => "stream_update",
            EventKind::Privacy => "privacy",
            EventKind::Unknown => "unknown",
        }
    }

    /// Whether this kind carries a user's chat text (message, action,
    /// cheer, super chat).
    pub fn is_chat(self) -> bool {
        matches!(
            self,
            EventKind::Message | EventKind::Action | EventKind::Cheer | EventKind::SuperChat
        )
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventKind {
    type Err = UnknownKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKind(s.to_owned()))
    }
}

/// A string that is not the name of an [`EventKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown event kind `{0}`")]
pub struct UnknownKind(pub String);

/// The kind of an event together with its kind-specific details. On the
/// wire: `"kind": "<snake_case>", "details": { ... }`.
///
/// A kind this reader does not know decodes as [`EventBody::Unknown`] with
/// its name and details as they came, and encodes back to the same wire
/// form, so a reader passes on (and the consumer stores and serves) kinds
/// added after it was built. A known kind whose details do not match its
/// type is still an error, as is a `kind` that is missing, not a string
/// or not a snake_case name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(
    remote = "Self",
    tag = "kind",
    content = "details",
    rename_all = "snake_case"
)]
pub enum EventBody {
    /// A chat message.
    Message(MessageDetails),
    /// A `/me` action message.
    Action(MessageDetails),
    /// A message with bits attached.
    Cheer(CheerDetails),
    /// A paid, highlighted chat message; the payment is in `paid`.
    SuperChat(SuperChatDetails),
    /// A paid sticker; the payment is in `paid`.
    SuperSticker(SuperStickerDetails),
    /// A first-time subscription.
    Subscription(SubscriptionDetails),
    /// A renewed subscription shared in chat.
    Resub(SubscriptionDetails),
    /// One gifted subscription.
    SubGift(SubGiftDetails),
    /// A batch of gifted subscriptions to random viewers.
    MysteryGift(MysteryGiftDetails),
    /// Another channel raided this one; `author` is the raider.
    Raid(RaidDetails),
    /// A highlighted announcement; `author` is who announced it.
    Announcement(AnnouncementDetails),
    /// A user was banned permanently.
    Ban(BanDetails),
    /// A user was timed out.
    Timeout(TimeoutDetails),
    /// The whole chat was cleared by a moderator.
    ChatClear(ChatClearDetails),
    /// A single message was deleted.
    MessageDelete(MessageDeleteDetails),
    /// The room's modes.
    RoomState(RoomStateDetails),
    /// The live chat ended.
    ChatEnded(ChatEndedDetails),
    /// The ingestor may have missed events between `started_at` and `ended_at`.
    Gap(GapDetails),
    /// A notice v1 does not model, carried with its type name and tags.
    OtherNotice(OtherNoticeDetails),
    /// The channel went live; `sent_at` is when the platform says it did.
    StreamOnline(StreamDetails),
    /// The channel's stream ended.
    StreamOffline(StreamOfflineDetails),
    /// The live stream's title, category or viewer count changed.
    StreamUpdate(StreamDetails),
    /// A channel was purged or opted out (announced on its own routing key
    /// as well as on the `chat.privacy` stream); no author, no text.
    Privacy(PrivacyDetails),
    /// A kind this reader does not know, kept as it came (see the type's
    /// docs). Not part of the published JSON Schema, which lists the known
    /// kinds.
    #[serde(skip)]
    Unknown {
        /// The kind's wire name.
        kind: String,
        /// Its `details`, verbatim; `None` when the event had none.
        details: Option<serde_json::Value>,
    },
}

/// Longest kind name an unknown kind may have.
pub const MAX_KIND_LEN: usize = 64;

impl Serialize for EventBody {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match self {
            EventBody::Unknown { kind, details } => {
                let mut map = serializer.serialize_map(None)?;
                map.serialize_entry("kind", kind)?;
                if let Some(details) = details {
                    map.serialize_entry("details", details)?;
                }
                map.end()
            }
            known => EventBody::serialize(known, serializer),
        }
    }
}

impl<'de> Deserialize<'de> for EventBody {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut map = serde_json::Map::<String, serde_json::Value>::deserialize(deserializer)?;
        let kind = match map.remove("kind") {
            Some(serde_json::Value::String(kind)) => kind,
            Some(_) => return Err(D::Error::custom("`kind` is not a string")),
            None => return Err(D::Error::missing_field("kind")),
        };
        let details = map.remove("details");
        if kind.parse::<EventKind>().is_ok() {
            let mut known = serde_json::Map::with_capacity(2);
            known.insert("kind".into(), serde_json::Value::String(kind));
            if let Some(details) = details {
                known.insert("details".into(), details);
            }
            return EventBody::deserialize(serde_json::Value::Object(known))
                .map_err(D::Error::custom);
        }
        let well_formed = !kind.is_empty()
            && kind.len() <= MAX_KIND_LEN
            && kind.starts_with(|c: char| c.is_ascii_lowercase())
            && kind
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !well_formed {
            return Err(D::Error::custom(format!(
                "`kind` {kind:?} is not a snake_case name of at most {MAX_KIND_LEN} bytes"
            )));
        }
        Ok(EventBody::Unknown { kind, details })
    }
}

impl EventBody {
    /// The kind of this body.
    pub fn kind(&self) -> EventKind {
        match self {
            EventBody::Message(_) => EventKind::Message,
            EventBody::Action(_) => EventKind::Action,
            EventBody::Cheer(_) => EventKind::Cheer,
            EventBody::SuperChat(_) => EventKind::SuperChat,
            EventBody::SuperSticker(_) => EventKind::SuperSticker,
            EventBody::Subscription(_) => EventKind::Subscription,
            EventBody::Resub(_) => EventKind::Resub,
            EventBody::SubGift(_) => EventKind::SubGift,
            EventBody::MysteryGift(_) => EventKind::MysteryGift,
            EventBody::Raid(_) => EventKind::Raid,
            EventBody::Announcement(_) => EventKind::Announcement,
            EventBody::Ban(_) => EventKind::Ban,
            EventBody::Timeout(_) => EventKind::Timeout,
            EventBody::ChatClear(_) => EventKind::ChatClear,
            EventBody::MessageDelete(_) => EventKind::MessageDelete,
            EventBody::RoomState(_) => EventKind::RoomState,
            EventBody::ChatEnded(_) => EventKind::ChatEnded,
            EventBody::Gap(_) => EventKind::Gap,
            EventBody::OtherNotice(_) => EventKind::OtherNotice,
            EventBody::StreamOnline(_) => EventKind::StreamOnline,
            EventBody::StreamOffline(_) => EventKind::StreamOffline,
            EventBody::StreamUpdate(_) => EventKind::StreamUpdate,
            EventBody::Privacy(_) => EventKind::Privacy,
            EventBody::Unknown { .. } => EventKind::Unknown,
        }
    }

    /// The kind's wire name: the known kind's name, or an unknown kind's
    /// own.
    pub fn kind_name(&self) -> &str {
        match self {
            EventBody::Unknown { kind, .. } => kind,
            known => known.kind().as_str(),
        }
    }
}

/// Details of a chat message or `/me` action.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MessageDetails {
    /// The user's first message ever in this channel.
    #[serde(default)]
    pub first_message: bool,
    /// The user is a returning chatter (platform heuristic).
    #[serde(default)]
    pub returning_chatter: bool,
    /// The message was highlighted with channel points.
    #[serde(default)]
    pub highlighted: bool,
    /// Channel-points custom reward redeemed with this message.
    pub reward_id: Option<String>,
}

/// Details of a message with bits.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CheerDetails {
    /// Number of bits cheered.
    pub bits: u64,
    /// The cheer was sent as a `/me` action.
    #[serde(default)]
    pub action: bool,
    /// Message flags as for a normal message.
    #[serde(flatten)]
    pub message: MessageDetails,
}

/// Money attached to an event, the same for every platform: a consumer
/// shows a YouTube Super Chat and a Twitch cheer alike.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Paid {
    /// The amount in millionths of `currency` (YouTube `amountMicros`;
    /// Twitch: bits × 1,000,000).
    pub amount_micros: i64,
    /// ISO 4217 code (`USD`, `JPY` ...), or `BITS` for Twitch bits.
    pub currency: String,
    /// The amount as the platform shows it, e.g. `$5.00` or `100 bits`.
    pub display: String,
    /// The platform's tier of the payment (YouTube's colour tier), if any.
    pub tier: Option<u32>,
}

/// Details of a Super Chat (the amount is in the event's `paid`; the
/// user's comment, if any, in `text`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SuperChatDetails {}

/// Details of a Super Sticker (the amount is in the event's `paid`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SuperStickerDetails {
    /// The platform's sticker id.
    pub sticker_id: String,
    /// The sticker's description, for readers and screen readers.
    pub alt_text: Option<String>,
    /// The language of `alt_text` (BCP-47).
    pub alt_text_language: Option<String>,
}

/// Details of a chat that ended (no fields in v1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChatEndedDetails {}

/// Details of a subscription or resubscription.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubscriptionDetails {
    /// Plan code: `Prime`, `1000`, `2000`, `3000`.
    pub plan: String,
    /// The plan's display name.
    pub plan_name: Option<String>,
    /// Total months subscribed.
    pub cumulative_months: Option<u32>,
    /// Current streak, if the user shares it.
    pub streak_months: Option<u32>,
    /// Months paid in advance with this (multi-month) subscription.
    pub multimonth_duration: Option<u32>,
    /// The platform's system message, e.g. "X subscribed at Tier 1."
    pub system_message: Option<String>,
}

/// Details of one gifted subscription. `author` is the gifter (absent for
/// anonymous gifts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SubGiftDetails {
    /// Who received the subscription.
    pub recipient: UserRef,
    /// Plan code: `1000`, `2000`, `3000`.
    pub plan: String,
    /// The plan's display name.
    pub plan_name: Option<String>,
    /// Months of the recipient's subscription.
    pub months: Option<u32>,
    /// Months gifted at once.
    pub gift_months: Option<u32>,
    /// The gift was anonymous.
    #[serde(default)]
    pub anonymous: bool,
    /// The platform's system message.
    pub system_message: Option<String>,
}

/// Details of a batch of gifted subscriptions to random viewers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MysteryGiftDetails {
    /// Number of subscriptions gifted.
    pub count: u32,
    /// Plan code.
    pub plan: String,
    /// Gifter's total gifts in this channel, when shared.
    pub sender_total: Option<u32>,
    /// The gift was anonymous.
    #[serde(default)]
    pub anonymous: bool,
    /// The platform's system message.
    pub system_message: Option<String>,
}

/// Details of a raid. `author` is the raiding broadcaster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RaidDetails {
    /// Viewers brought along.
    pub viewer_count: u64,
    /// The platform's system message.
    pub system_message: Option<String>,
}

/// Details of an announcement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct AnnouncementDetails {
    /// Highlight colour name chosen by the announcer (`PRIMARY`, `BLUE` ...).
    pub color: Option<String>,
}

/// Details of a permanent ban.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct BanDetails {
    /// The banned user.
    pub user: UserRef,
}

/// Details of a timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TimeoutDetails {
    /// The timed-out user.
    pub user: UserRef,
    /// Length of the timeout in seconds.
    pub duration_secs: u64,
}

/// Details of a chat clear (no fields in v1).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ChatClearDetails {}

/// Details of a single-message delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct MessageDeleteDetails {
    /// Id of the deleted message (its `ChatEvent::id`).
    pub target_message_id: String,
    /// Login of the deleted message's author.
    pub user_login: Option<String>,
    /// Text of the deleted message, as the platform reports it.
    pub text: Option<String>,
}

/// Room modes. Each field is `None` when the update does not mention it
/// (Twitch sends partial ROOMSTATE updates).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RoomStateDetails {
    /// Only emotes may be sent.
    pub emote_only: Option<bool>,
    /// Followers-only mode (Twitch `followers-only`: `-1` = off, else on).
    pub followers_only: Option<bool>,
    /// Minimum follow age in minutes when followers-only is on.
    pub followers_only_minutes: Option<u64>,
    /// Unique-chat (r9k) mode.
    pub unique_chat: Option<bool>,
    /// Slow mode delay in seconds (0 = off).
    pub slow_secs: Option<u64>,
    /// Subscribers-only mode.
    pub subs_only: Option<bool>,
}

/// Details of an ingest gap.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct GapDetails {
    /// Last moment the ingestor is sure it saw everything.
    pub started_at: DateTime<Utc>,
    /// Moment reading resumed (the channel was joined again).
    pub ended_at: DateTime<Utc>,
    /// Why: `disconnect`, `reconnect_requested`, `ingestor_restart` ...
    pub reason: String,
}

/// Details of a notice that v1 does not model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct OtherNoticeDetails {
    /// The platform's type name (Twitch: the USERNOTICE/NOTICE `msg-id`, or
    /// the IRC command).
    pub notice_type: String,
    /// The platform's system message, if any.
    pub system_message: Option<String>,
    /// Every tag the platform sent, so nothing is lost.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// Details of a live stream (`stream_online`, `stream_update`): what the
/// platform says about it when the ingestor looked. Every field is optional
/// because not every platform knows every one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StreamDetails {
    /// The platform's id of the broadcast (Twitch stream id, YouTube video
    /// id).
    pub stream_id: Option<String>,
    /// The stream's title.
    pub title: Option<String>,
    /// The category or game (Twitch `game_name`).
    pub category: Option<String>,
    /// Concurrent viewers when the ingestor looked.
    pub viewer_count: Option<u64>,
    /// When the stream went live.
    pub started_at: Option<DateTime<Utc>>,
}

/// Details of a stream that ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StreamOfflineDetails {
    /// The platform's id of the broadcast that ended, when known.
    pub stream_id: Option<String>,
    /// When that broadcast went live, when known.
    pub started_at: Option<DateTime<Utc>>,
}

/// Details of a `privacy` event: the `chat.privacy` notice it announces on
/// the channel's routing key. It never carries message text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PrivacyDetails {
    /// What happened: `purge` or `opt_out` (the notice's action).
    pub action: PrivacyAction,
    /// What it covers: readers delete their copies of every event the
    /// subject covers ([`Subject::covers`]).
    pub subject: Subject,
    /// For a purge: events of the subject received at or before this were
    /// deleted, and are refused if they arrive later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon: Option<DateTime<Utc>>,
    /// The id of the notice on the `chat.privacy` stream.
    pub notice_id: String,
}

impl PrivacyDetails {
    /// What `notice` says, as a `privacy` event's details (and the
    /// consumer's WebSocket `privacy` frame); `None` for a notice without a
    /// subject (a `sync`).
    pub fn from_notice(notice: &PrivacyNotice) -> Option<Self> {
        Some(Self {
            action: notice.action,
            subject: notice.subject.clone()?,
            horizon: notice.horizon,
            notice_id: notice.id.clone(),
        })
    }
}

impl ChatEvent {
    /// The `privacy` event that announces `notice` on the channel
    /// `platform`/`channel`: its id is the notice's id, its `sent_at` and
    /// `received_at` the notice's `at`; no author, no text.
    ///
    /// # Panics
    /// When `notice` has no subject (a `sync`): there is nothing to
    /// announce.
    pub fn privacy(
        platform: impl Into<String>,
        channel: impl Into<String>,
        notice: &PrivacyNotice,
    ) -> ChatEvent {
        let details = PrivacyDetails::from_notice(notice)
            .expect("a privacy event announces a notice with a subject");
        ChatEvent::new(
            notice.id.clone(),
            platform,
            channel,
            notice.at,
            notice.at,
            EventBody::Privacy(details),
        )
    }
}

/// Twitch-only facts about an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TwitchExtras {
    /// The IRC command the event came from (`PRIVMSG`, `USERNOTICE` ...).
    pub command: String,
    /// The `msg-id` tag of USERNOTICE/NOTICE lines (`sub`, `raid` ...).
    pub msg_id: Option<String>,
    /// Twitch's `tmi-sent-ts` in milliseconds since the epoch.
    pub tmi_sent_ts: Option<i64>,
    /// The `flags` tag (AutoMod flags), verbatim.
    pub flags: Option<String>,
    /// For shared chat: the room id the message was originally sent in.
    pub source_room_id: Option<String>,
    /// For shared chat: the original message id.
    pub source_id: Option<String>,
    /// The `client-nonce` tag.
    pub client_nonce: Option<String>,
}

/// YouTube-only facts about an event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct YoutubeExtras {
    /// The `liveChatMessage`'s `snippet.type` (`textMessageEvent`,
    /// `superChatEvent` ...), verbatim.
    pub message_type: String,
    /// The live chat the message was read from.
    pub live_chat_id: String,
    /// The broadcast (video) of that chat, when known.
    pub video_id: Option<String>,
    /// `snippet.publishedAt` as YouTube wrote it.
    pub published_at: Option<String>,
    /// The author's channel URL.
    pub author_channel_url: Option<String>,
    /// `snippet.displayMessage`: the text YouTube shows for the event
    /// (for notices, its own sentence, e.g. "Welcome to Level 1!").
    pub display_message: Option<String>,
}

/// The JSON Schema of [`ChatEvent`], as committed in
/// `docs/chat-event.schema.json`.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(ChatEvent);
    serde_json::to_value(schema).expect("a JSON schema is always valid JSON")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(ms: i64) -> DateTime<Utc> {
        Utc.timestamp_millis_opt(ms).unwrap()
    }

    fn message() -> ChatEvent {
        let mut e = ChatEvent::new(
            "a1",
            PLATFORM_TWITCH,
            "pajlada",
            at(1_594_556_065_407),
            at(1_594_556_065_500),
            EventBody::Message(MessageDetails::default()),
        );
        e.text = Some("héllo Kappa 👋".into());
        e.emotes = vec![Emote {
            id: "25".into(),
            name: "Kappa".into(),
            start: 6,
            end: 11,
        }];
        e
    }

    #[test]
    fn every_kind_has_a_distinct_wire_name_that_parses_back() {
        let mut names: Vec<_> = EventKind::ALL.iter().map(|k| k.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), EventKind::ALL.len());
        for kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>().unwrap(), kind);
            let json = serde_json::to_value(kind).unwrap();
            assert_eq!(json, serde_json::Value::String(kind.as_str().into()));
        }
        assert!("nope".parse::<EventKind>().is_err());
    }

    #[test]
    fn wire_form_has_kind_and_details_at_top_level() {
        let json = serde_json::to_value(message()).unwrap();
        assert_eq!(json["kind"], "message");
        assert_eq!(json["details"]["first_message"], false);
        assert_eq!(json["schema_version"], 1);
        let back = ChatEvent::from_json(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(back, message());
    }

    #[test]
    fn validate_rejects_wrong_version_and_bad_emotes() {
        let mut e = message();
        e.schema_version = 2;
        assert!(matches!(
            e.validate(),
            Err(SchemaError::UnsupportedVersion(2))
        ));
        let mut e = message();
        e.emotes[0].end = 14;
        assert!(matches!(
            e.validate(),
            Err(SchemaError::EmoteOutOfRange { .. })
        ));
        let mut e = message();
        e.channel.clear();
        assert!(matches!(
            e.validate(),
            Err(SchemaError::EmptyField("channel"))
        ));
    }

    #[test]
    fn emote_positions_are_code_points() {
        let e = message();
        let text: Vec<char> = e.text.as_deref().unwrap().chars().collect();
        let emote = &e.emotes[0];
        let name: String = text[emote.start..emote.end].iter().collect();
        assert_eq!(name, "Kappa");
    }

    #[test]
    fn unknown_fields_are_ignored_for_forward_compatibility() {
        let mut json = serde_json::to_value(message()).unwrap();
        json["added_in_v1_5"] = serde_json::json!({"x": 1});
        assert!(ChatEvent::from_json(&serde_json::to_vec(&json).unwrap()).is_ok());
    }

    #[test]
    fn additive_fields_are_left_out_when_empty_and_round_trip_when_set() {
        let json = serde_json::to_value(message()).unwrap();
        for absent in ["paid", "youtube"] {
            assert!(json.get(absent).is_none(), "{absent} is left out");
        }
        assert!(json["author"].is_null());
        let mut e = message();
        e.body = EventBody::SuperChat(SuperChatDetails::default());
        e.paid = Some(Paid {
            amount_micros: 5_000_000,
            currency: "USD".into(),
            display: "$5.00".into(),
            tier: Some(2),
        });
        e.youtube = Some(YoutubeExtras {
            message_type: "superChatEvent".into(),
            live_chat_id: "chat".into(),
            ..YoutubeExtras::default()
        });
        let bytes = e.to_json().unwrap();
        assert_eq!(ChatEvent::from_json(&bytes).unwrap(), e);
        assert!(e.kind().is_chat());
        assert!(!EventKind::SuperSticker.is_chat());
        // A v1 event written before these fields existed still parses.
        let old = serde_json::to_value(message()).unwrap();
        assert!(ChatEvent::from_json(&serde_json::to_vec(&old).unwrap()).is_ok());
    }

    #[test]
    fn an_unknown_kind_decodes_and_encodes_back_unchanged() {
        let mut json = serde_json::to_value(message()).unwrap();
        json["kind"] = "some_future_kind".into();
        json["details"] = serde_json::json!({"level": 3, "nested": {"a": [1, "b"]}});
        let event = ChatEvent::from_json(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(event.kind(), EventKind::Unknown);
        assert_eq!(event.kind_name(), "some_future_kind");
        assert_eq!(serde_json::to_value(&event).unwrap(), json);
        // Without details, none are added.
        json.as_object_mut().unwrap().remove("details");
        let event = ChatEvent::from_json(&serde_json::to_vec(&json).unwrap()).unwrap();
        assert_eq!(
            event.body,
            EventBody::Unknown {
                kind: "some_future_kind".into(),
                details: None
            }
        );
        assert_eq!(serde_json::to_value(&event).unwrap(), json);
    }

    #[test]
    fn known_kinds_with_bad_details_and_bad_kind_names_are_still_errors() {
        let good = serde_json::to_value(message()).unwrap();
        let mut cases = Vec::new();
        for (kind, details) in [
            (serde_json::json!("ban"), serde_json::json!({"user": 5})),
            (serde_json::json!("timeout"), serde_json::json!(null)),
            (serde_json::json!(7), serde_json::json!({})),
            (serde_json::json!(""), serde_json::json!({})),
            (serde_json::json!("Not Snake"), serde_json::json!({})),
            (
                serde_json::json!("x".repeat(MAX_KIND_LEN + 1)),
                serde_json::json!({}),
            ),
        ] {
            let mut json = good.clone();
            json["kind"] = kind;
            json["details"] = details;
            cases.push(json);
        }
        let mut json = good.clone();
        json.as_object_mut().unwrap().remove("kind");
        cases.push(json);
        for json in cases {
            assert!(
                ChatEvent::from_json(&serde_json::to_vec(&json).unwrap()).is_err(),
                "{json}"
            );
        }
    }

    #[test]
    fn stream_kinds_round_trip() {
        let mut e = message();
        e.text = None;
        e.emotes.clear();
        e.body = EventBody::StreamUpdate(StreamDetails {
            stream_id: Some("40952121085".into()),
            title: Some("speedrun".into()),
            category: Some("Celeste".into()),
            viewer_count: Some(1234),
            started_at: Some(at(1_594_556_000_000)),
        });
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "stream_update");
        assert_eq!(json["details"]["viewer_count"], 1234);
        assert_eq!(ChatEvent::from_json(&e.to_json().unwrap()).unwrap(), e);
        e.body = EventBody::StreamOffline(StreamOfflineDetails::default());
        assert_eq!(ChatEvent::from_json(&e.to_json().unwrap()).unwrap(), e);
    }

    #[test]
    fn a_privacy_event_announces_its_notice_without_text() {
        let mut notice = crate::privacy::PrivacyNotice::new(
            PrivacyAction::Purge,
            Some(Subject::Channel {
                platform: PLATFORM_TWITCH.into(),
                channel: "pajlada".into(),
            }),
            "admin-api",
        );
        notice.horizon = Some(at(1_594_556_065_500));
        let e = ChatEvent::privacy(PLATFORM_TWITCH, "pajlada", &notice);
        assert_eq!(e.id, notice.id);
        assert_eq!((e.sent_at, e.received_at), (notice.at, notice.at));
        assert!(e.author.is_none() && e.text.is_none());
        assert!(!e.kind().is_chat());
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(json["kind"], "privacy");
        assert_eq!(json["details"]["action"], "purge");
        assert_eq!(json["details"]["subject"]["type"], "channel");
        assert_eq!(json["details"]["subject"]["channel"], "pajlada");
        assert_eq!(json["details"]["notice_id"], notice.id.as_str());
        assert_eq!(ChatEvent::from_json(&e.to_json().unwrap()).unwrap(), e);
        // Without a horizon (an opt-out) the field is left out.
        notice.action = PrivacyAction::OptOut;
        notice.horizon = None;
        let json = serde_json::to_value(ChatEvent::privacy("twitch", "pajlada", &notice)).unwrap();
        assert!(json["details"].get("horizon").is_none());
        assert_eq!(json["details"]["action"], "opt_out");
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        for bad in [
            &b"{"[..],
            b"[]",
            b"null",
            b"{\"schema_version\":1}",
            &[0xff, 0xfe],
        ] {
            assert!(ChatEvent::from_json(bad).is_err());
        }
    }
}
