//! `liveChatMessage` (JSON, see [`super::resource`]) -> `ChatEvent`.
//!
//! | `snippet.type` | kind |
//! | --- | --- |
//! | `textMessageEvent` | `message` |
//! | `superChatEvent` / `superStickerEvent` | `super_chat` / `super_sticker`, with `paid` |
//! | `newSponsorEvent` / `memberMilestoneChatEvent` | `subscription` / `resub` |
//! | `membershipGiftingEvent` / `giftMembershipReceivedEvent` | `mystery_gift` / `sub_gift` |
//! | `messageDeletedEvent`, `messageRetractedEvent` | `message_delete` |
//! | `userBannedEvent` | `ban` (permanent) or `timeout` |
//! | `chatEndedEvent` | `chat_ended` |
//! | anything else | `other_notice`, with the whole resource in `raw` |
//!
//! Nothing is dropped: a resource that does not have the shape of a
//! `liveChatMessage`, or lacks what its type needs, becomes an
//! `other_notice` carrying it, and is logged and counted.

use std::cell::OnceCell;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use common::schema::{
    Author, BanDetails, ChatEndedDetails, ChatEvent, EventBody, MessageDeleteDetails,
    MessageDetails, MysteryGiftDetails, OtherNoticeDetails, PLATFORM_YOUTUBE, Paid, Role,
    SubGiftDetails, SubscriptionDetails, SuperChatDetails, SuperStickerDetails, TimeoutDetails,
    UserRef, YoutubeExtras,
};
use serde::Deserialize;
use serde_json::Value;
use uuid::Uuid;

use super::recent::Recent;
use super::resource::{AuthorDetails, ChannelProfile, LiveChatMessage, PaidDetails, Snippet};

/// Namespace of the ids derived for resources without a usable id.
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x3d5e_1b7a_04c2_4e8f_9a61_b2f0_7c3d_58e4);

/// Namespace of the ids of the `chat_ended` events made for chats that
/// ended without YouTube's own `chatEndedEvent` ([`chat_ended`]). Ids are
/// idempotency keys: changing it would store such events twice.
const CHAT_ENDED_ID_NAMESPACE: Uuid = Uuid::from_u128(0x3d5e_1b7a_04c2_4e8f_9a61_b2f0_7c3d_58e5);

/// Gifters remembered to name the giver of a received gift membership.
const GIFTERS_REMEMBERED: usize = 1_000;

/// The chat a message was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatContext {
    /// The channel word (`UC…`).
    pub channel: String,
    /// The live chat.
    pub live_chat_id: String,
    /// Its broadcast.
    pub video_id: Option<String>,
}

/// What was wrong with a resource (it is still carried, as `other_notice`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// Not the shape of a `liveChatMessage`, or missing what its type needs.
    Malformed(String),
    /// A `snippet.type` chatbus does not know (carried as `other_notice`).
    UnknownType(String),
}

/// One normalised resource.
#[derive(Debug, Clone)]
pub struct Normalised {
    /// The event.
    pub event: ChatEvent,
    /// The resource ends the chat (`chatEndedEvent`).
    pub ends_chat: bool,
    /// What was wrong with it, if anything.
    pub problem: Option<Problem>,
}

/// Normalises the messages of one chat, in order. It remembers recent
/// gifters, to name the giver of a gift membership.
#[derive(Debug)]
pub struct Normaliser {
    include_raw: bool,
    gifters: Recent<String, (String, String)>,
}

/// Types carried as `other_notice` that are known, so not a problem (the
/// types normalised to their own kind never get as far as this list).
const KNOWN_TYPES: &[&str] = &[
    "tombstone",
    "fanFundingEvent",
    "sponsorOnlyModeStartedEvent",
    "sponsorOnlyModeEndedEvent",
    "pollEvent",
    "giftEvent",
];

impl Normaliser {
    /// A normaliser; `include_raw` puts the resource in each event's `raw`
    /// (an `other_notice` always carries it).
    pub fn new(include_raw: bool) -> Self {
        Self {
            include_raw,
            gifters: Recent::new(GIFTERS_REMEMBERED),
        }
    }

    /// The event for `item`, read at `received_at`.
    pub fn normalise(
        &mut self,
        ctx: &ChatContext,
        item: &Value,
        received_at: DateTime<Utc>,
    ) -> Normalised {
        let raw = RawJson::new(item);
        let parsed = match LiveChatMessage::deserialize(item) {
            Ok(m) => m,
            Err(e) => {
                let notice_type = item["snippet"]["type"]
                    .as_str()
                    .unwrap_or("malformed")
                    .to_owned();
                let mut tags = BTreeMap::new();
                tags.insert("error".to_owned(), e.to_string());
                let body = EventBody::OtherNotice(OtherNoticeDetails {
                    notice_type,
                    system_message: None,
                    tags,
                });
                let mut event = self.base(ctx, item["id"].as_str(), None, &raw, received_at, body);
                event.raw = Some(raw.into_string());
                return Normalised {
                    event,
                    ends_chat: false,
                    problem: Some(Problem::Malformed(e.to_string())),
                };
            }
        };
        let LiveChatMessage {
            id: message_id,
            snippet,
            author_details,
        } = parsed;
        let snippet = snippet.unwrap_or_default();
        let kind = snippet.kind.clone().unwrap_or_default();
        let combo = snippet.gift_details.as_ref().and_then(|g| g.combo_count);
        let mut author = author_of(
            author_details.as_ref(),
            snippet.author_channel_id.as_deref(),
        );
        let mut text = None;
        let mut paid = None;
        let mut problem = None;
        let system_message = snippet.display_message.clone();
        let body = match kind.as_str() {
            "textMessageEvent" => {
                text = snippet
                    .text_message_details
                    .as_ref()
                    .and_then(|d| d.message_text.clone())
                    .or_else(|| snippet.display_message.clone());
                EventBody::Message(MessageDetails::default())
            }
            "superChatEvent" => match &snippet.super_chat_details {
                Some(d) => {
                    text = d.user_comment.clone().filter(|c| !c.is_empty());
                    paid = Some(paid_of(d));
                    EventBody::SuperChat(SuperChatDetails::default())
                }
                None => missing(&mut problem, &kind, "superChatDetails", item),
            },
            "superStickerEvent" => match &snippet.super_sticker_details {
                Some(d) => {
                    paid = Some(paid_of(d));
                    let meta = d.super_sticker_metadata.clone().unwrap_or_default();
                    EventBody::SuperSticker(SuperStickerDetails {
                        sticker_id: meta.sticker_id.unwrap_or_default(),
                        alt_text: meta.alt_text,
                        alt_text_language: meta.alt_text_language,
                    })
                }
                None => missing(&mut problem, &kind, "superStickerDetails", item),
            },
            "newSponsorEvent" => {
                let level = snippet
                    .new_sponsor_details
                    .as_ref()
                    .and_then(|d| d.member_level_name.clone());
                EventBody::Subscription(membership(level, None, system_message.clone()))
            }
            "memberMilestoneChatEvent" => {
                let d = snippet
                    .member_milestone_chat_details
                    .clone()
                    .unwrap_or_default();
                text = d.user_comment.filter(|c| !c.is_empty());
                EventBody::Resub(membership(
                    d.member_level_name,
                    d.member_month,
                    system_message.clone(),
                ))
            }
            "membershipGiftingEvent" => {
                let d = snippet
                    .membership_gifting_details
                    .clone()
                    .unwrap_or_default();
                if let (Some(id), Some(a)) = (&message_id, &author) {
                    self.gifters
                        .insert(id.clone(), (a.id.clone(), a.display_name.clone()));
                    self.gifters
                        .insert(a.id.clone(), (a.id.clone(), a.display_name.clone()));
                }
                EventBody::MysteryGift(MysteryGiftDetails {
                    count: d
                        .gift_memberships_count
                        .and_then(|c| u32::try_from(c).ok())
                        .unwrap_or(0),
                    plan: d
                        .gift_memberships_level_name
                        .unwrap_or_else(|| "member".to_owned()),
                    sender_total: None,
                    anonymous: false,
                    system_message: system_message.clone(),
                })
            }
            "giftMembershipReceivedEvent" => {
                let d = snippet
                    .gift_membership_received_details
                    .clone()
                    .unwrap_or_default();
                match author.take() {
                    Some(recipient) => {
                        author = self.gifter(
                            &d.associated_membership_gifting_message_id,
                            &d.gifter_channel_id,
                        );
                        let level = d.member_level_name.unwrap_or_else(|| "member".to_owned());
                        EventBody::SubGift(SubGiftDetails {
                            recipient: UserRef {
                                id: Some(recipient.id),
                                login: recipient.login,
                                display_name: Some(recipient.display_name),
                            },
                            plan: level.clone(),
                            plan_name: Some(level),
                            months: None,
                            gift_months: None,
                            anonymous: false,
                            system_message: system_message.clone(),
                        })
                    }
                    None => missing(&mut problem, &kind, "authorDetails", item),
                }
            }
            "messageDeletedEvent" | "messageRetractedEvent" => {
                let target = snippet
                    .message_deleted_details
                    .as_ref()
                    .and_then(|d| d.deleted_message_id.clone())
                    .or_else(|| {
                        snippet
                            .message_retracted_details
                            .as_ref()
                            .and_then(|d| d.retracted_message_id.clone())
                    })
                    .filter(|id| !id.is_empty());
                match target {
                    Some(target_message_id) => EventBody::MessageDelete(MessageDeleteDetails {
                        target_message_id,
                        user_login: None,
                        text: None,
                    }),
                    None => missing(&mut problem, &kind, "the deleted message's id", item),
                }
            }
            "userBannedEvent" => {
                let d = snippet.user_banned_details.clone().unwrap_or_default();
                match d.banned_user_details.as_ref().and_then(user_ref) {
                    Some(user) if d.ban_type.as_deref() == Some("temporary") => {
                        EventBody::Timeout(TimeoutDetails {
                            user,
                            duration_secs: d.ban_duration_seconds.unwrap_or(0),
                        })
                    }
                    Some(user) => EventBody::Ban(BanDetails { user }),
                    None => missing(&mut problem, &kind, "bannedUserDetails.channelId", item),
                }
            }
            "chatEndedEvent" => {
                author = None;
                EventBody::ChatEnded(ChatEndedDetails {})
            }
            other => {
                if !KNOWN_TYPES.contains(&other) {
                    problem = Some(Problem::UnknownType(if other.is_empty() {
                        "(none)".to_owned()
                    } else {
                        other.to_owned()
                    }));
                }
                other_notice(other, &snippet, item)
            }
        };
        let mut event = self.base(ctx, message_id.as_deref(), combo, &raw, received_at, body);
        event.sent_at = snippet
            .published_at
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map_or(received_at, |t| t.with_timezone(&Utc));
        event.author = author;
        event.text = text;
        event.paid = paid;
        let ends_chat = kind == "chatEndedEvent";
        event.youtube = Some(YoutubeExtras {
            message_type: kind,
            live_chat_id: snippet
                .live_chat_id
                .unwrap_or_else(|| ctx.live_chat_id.clone()),
            video_id: ctx.video_id.clone(),
            published_at: snippet.published_at,
            author_channel_url: author_details.and_then(|a| a.channel_url),
            display_message: system_message,
        });
        // An other_notice always carries the resource.
        if self.include_raw || matches!(event.body, EventBody::OtherNotice(_)) {
            event.raw = Some(raw.into_string());
        }
        Normalised {
            ends_chat,
            event,
            problem,
        }
    }

    /// The event with its identity set.
    fn base(
        &self,
        ctx: &ChatContext,
        id: Option<&str>,
        combo: Option<i64>,
        raw: &RawJson<'_>,
        received_at: DateTime<Utc>,
        body: EventBody,
    ) -> ChatEvent {
        let id = match (id.filter(|i| !i.is_empty()), combo) {
            (Some(id), Some(c)) if c > 1 => format!("{id}:{c}"),
            (Some(id), _) => id.to_owned(),
            (None, _) => derived_id(ctx, raw.get()),
        };
        let id = if id.len() > common::schema::MAX_ID_LEN {
            derived_id(ctx, &id)
        } else {
            id
        };
        new_event(ctx, id, received_at, body)
    }

    /// The giver of a gift membership: from the gifting event when it was
    /// seen, else the channel id alone.
    fn gifter(&self, gifting_message: &Option<String>, gifter: &Option<String>) -> Option<Author> {
        let known = gifting_message
            .as_ref()
            .and_then(|m| self.gifters.get(m))
            .or_else(|| gifter.as_ref().and_then(|g| self.gifters.get(g)));
        let (id, name) = match (known, gifter) {
            (Some((id, name)), _) => (id.clone(), name.clone()),
            (None, Some(id)) if !id.is_empty() => (id.clone(), id.clone()),
            _ => return None,
        };
        Some(Author {
            login: id.to_lowercase(),
            id,
            display_name: name,
            color: None,
            badges: Vec::new(),
            roles: Vec::new(),
            avatar_url: None,
        })
    }
}

/// The `chat_ended` event, at `now`, for a chat that ended without
/// YouTube's own `chatEndedEvent` (its `offlineAt`, or a `liveChatEnded`
/// answer). Its id depends on the chat alone.
pub fn chat_ended(ctx: &ChatContext, now: DateTime<Utc>) -> ChatEvent {
    let id = Uuid::new_v5(
        &CHAT_ENDED_ID_NAMESPACE,
        format!("chat_ended\n{}", ctx.live_chat_id).as_bytes(),
    )
    .to_string();
    let mut event = new_event(ctx, id, now, EventBody::ChatEnded(ChatEndedDetails {}));
    event.youtube = Some(YoutubeExtras {
        message_type: "chatEndedEvent".to_owned(),
        live_chat_id: ctx.live_chat_id.clone(),
        video_id: ctx.video_id.clone(),
        ..YoutubeExtras::default()
    });
    event
}

/// An event of `ctx`'s channel, received (and, unless set later, sent) at
/// `received_at`.
fn new_event(
    ctx: &ChatContext,
    id: String,
    received_at: DateTime<Utc>,
    body: EventBody,
) -> ChatEvent {
    let mut event = ChatEvent::new(
        id,
        PLATFORM_YOUTUBE,
        ctx.channel.clone(),
        received_at,
        received_at,
        body,
    );
    event.channel_id = Some(ctx.channel.clone());
    event
}

/// A resource's JSON text, written when first asked for: only an event
/// that carries `raw`, or whose id is derived from it, needs it.
struct RawJson<'a> {
    item: &'a Value,
    text: OnceCell<String>,
}

impl<'a> RawJson<'a> {
    fn new(item: &'a Value) -> Self {
        Self {
            item,
            text: OnceCell::new(),
        }
    }

    fn get(&self) -> &str {
        self.text
            .get_or_init(|| serde_json::to_string(self.item).unwrap_or_default())
    }

    fn into_string(self) -> String {
        self.get();
        self.text.into_inner().unwrap_or_default()
    }
}

/// A stable id for a resource without one: a UUIDv5 of the channel and the
/// resource, so reading it again gives the same id.
fn derived_id(ctx: &ChatContext, raw: &str) -> String {
    let key = format!("youtube\n{}\n{}", ctx.channel, raw);
    Uuid::new_v5(&ID_NAMESPACE, key.as_bytes()).to_string()
}

/// The `other_notice` carrying a resource of type `kind` that lacks `what`
/// (a malformed one).
fn missing(problem: &mut Option<Problem>, kind: &str, what: &str, item: &Value) -> EventBody {
    *problem = Some(Problem::Malformed(format!("{kind} without {what}")));
    EventBody::OtherNotice(OtherNoticeDetails {
        notice_type: kind.to_owned(),
        system_message: None,
        tags: other_notice_tags(kind, item),
    })
}

fn author_of(details: Option<&AuthorDetails>, fallback_id: Option<&str>) -> Option<Author> {
    let id = details
        .and_then(|a| a.channel_id.as_deref())
        .or(fallback_id)
        .filter(|id| !id.is_empty())?
        .to_owned();
    let none = AuthorDetails::default();
    let a = details.unwrap_or(&none);
    let mut roles = Vec::new();
    for (flag, role) in [
        (a.is_chat_owner, Role::Broadcaster),
        (a.is_chat_moderator, Role::Moderator),
        (a.is_chat_sponsor, Role::Subscriber),
        (a.is_verified, Role::Verified),
    ] {
        if flag == Some(true) {
            roles.push(role);
        }
    }
    Some(Author {
        login: id.to_lowercase(),
        display_name: a
            .display_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .map_or_else(|| id.clone(), str::to_owned),
        id,
        color: None,
        badges: Vec::new(),
        roles,
        avatar_url: a
            .profile_image_url
            .as_deref()
            .filter(|u| !u.is_empty())
            .map(str::to_owned),
    })
}

fn user_ref(p: &ChannelProfile) -> Option<UserRef> {
    let id = p.channel_id.clone().filter(|id| !id.is_empty())?;
    Some(UserRef {
        login: id.to_lowercase(),
        display_name: p.display_name.clone(),
        id: Some(id),
    })
}

fn paid_of(d: &PaidDetails) -> Paid {
    let amount_micros = i64::try_from(d.amount_micros.unwrap_or(0)).unwrap_or(i64::MAX);
    let currency = d.currency.clone().unwrap_or_default();
    Paid {
        display: d
            .amount_display_string
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| format!("{:.2} {currency}", amount_micros as f64 / 1e6)),
        amount_micros,
        currency,
        tier: d.tier,
    }
}

fn membership(
    level: Option<String>,
    months: Option<u32>,
    system_message: Option<String>,
) -> SubscriptionDetails {
    SubscriptionDetails {
        plan: level.clone().unwrap_or_else(|| "member".to_owned()),
        plan_name: level,
        cumulative_months: months,
        streak_months: None,
        multimonth_duration: None,
        system_message,
    }
}

fn other_notice(kind: &str, snippet: &Snippet, item: &Value) -> EventBody {
    EventBody::OtherNotice(OtherNoticeDetails {
        notice_type: if kind.is_empty() {
            "unknown".to_owned()
        } else {
            kind.to_owned()
        },
        system_message: snippet.display_message.clone(),
        tags: other_notice_tags(kind, item),
    })
}

/// `type`, and the fields of the snippet's `…Details` objects, as text.
fn other_notice_tags(kind: &str, item: &Value) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::new();
    if !kind.is_empty() {
        tags.insert("type".to_owned(), kind.to_owned());
    }
    if let Some(snippet) = item["snippet"].as_object() {
        for (key, details) in snippet {
            if !key.ends_with("Details") {
                continue;
            }
            if let Some(fields) = details.as_object() {
                for (k, v) in fields {
                    let text = match v {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    tags.insert(k.clone(), text);
                }
            }
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::schema::EventKind;
    use serde_json::json;

    fn ctx() -> ChatContext {
        ChatContext {
            channel: "UCX6OQ3DkcsbYNE6H8uQQuVA".into(),
            live_chat_id: "chat1".into(),
            video_id: Some("liveVideo01".into()),
        }
    }

    fn now() -> DateTime<Utc> {
        "2026-03-01T18:10:00Z".parse().unwrap()
    }

    fn author(id: &str) -> Value {
        json!({
            "channelId": id,
            "channelUrl": format!("http://www.youtube.com/channel/{id}"),
            "displayName": format!("name of {id}"),
            "profileImageUrl": format!("https://yt3.ggpht.com/{id}=s88"),
            "isVerified": false,
            "isChatOwner": false,
            "isChatSponsor": true,
            "isChatModerator": false
        })
    }

    fn item(id: &str, kind: &str, details: Option<(&str, Value)>) -> Value {
        let mut snippet = json!({
            "type": kind,
            "liveChatId": "chat1",
            "authorChannelId": "UCauthor0000000000000001",
            "publishedAt": "2026-03-01T18:04:05.123+00:00",
            "hasDisplayContent": true,
            "displayMessage": format!("display of {id}")
        });
        if let Some((key, value)) = details {
            snippet[key] = value;
        }
        json!({
            "kind": "youtube#liveChatMessage",
            "etag": "e",
            "id": id,
            "snippet": snippet,
            "authorDetails": author("UCauthor0000000000000001")
        })
    }

    fn norm(item: &Value) -> Normalised {
        let n = Normaliser::new(false).normalise(&ctx(), item, now());
        n.event.validate().unwrap();
        n
    }

    #[test]
    fn a_text_message_keeps_its_id_text_author_and_time() {
        let n = norm(&item(
            "m1",
            "textMessageEvent",
            Some(("textMessageDetails", json!({"messageText": "héllo 👋"}))),
        ));
        let e = n.event;
        assert_eq!(e.kind(), EventKind::Message);
        assert_eq!((e.id.as_str(), e.platform.as_str()), ("m1", "youtube"));
        assert_eq!(e.channel, "UCX6OQ3DkcsbYNE6H8uQQuVA");
        assert_eq!(e.channel_id.as_deref(), Some("UCX6OQ3DkcsbYNE6H8uQQuVA"));
        assert_eq!(e.text.as_deref(), Some("héllo 👋"));
        assert_eq!(
            e.sent_at,
            "2026-03-01T18:04:05.123Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(e.received_at, now());
        let a = e.author.unwrap();
        assert_eq!(a.id, "UCauthor0000000000000001");
        assert_eq!(a.login, "ucauthor0000000000000001");
        assert_eq!(a.display_name, "name of UCauthor0000000000000001");
        assert_eq!(a.roles, [Role::Subscriber]);
        assert_eq!(
            a.avatar_url.as_deref(),
            Some("https://yt3.ggpht.com/UCauthor0000000000000001=s88")
        );
        let y = e.youtube.unwrap();
        assert_eq!(y.message_type, "textMessageEvent");
        assert_eq!(y.live_chat_id, "chat1");
        assert_eq!(y.video_id.as_deref(), Some("liveVideo01"));
        assert_eq!(
            y.published_at.as_deref(),
            Some("2026-03-01T18:04:05.123+00:00")
        );
        assert_eq!(
            y.author_channel_url.as_deref(),
            Some("http://www.youtube.com/channel/UCauthor0000000000000001")
        );
        assert!(e.raw.is_none() && e.paid.is_none() && n.problem.is_none());
    }

    #[test]
    fn every_role_flag_maps_to_a_role() {
        let mut i = item("m", "textMessageEvent", None);
        i["authorDetails"] = json!({"channelId": "UCo", "isChatOwner": true, "isChatModerator": true, "isChatSponsor": true, "isVerified": true});
        let a = norm(&i).event.author.unwrap();
        assert_eq!(
            a.roles,
            [
                Role::Broadcaster,
                Role::Moderator,
                Role::Subscriber,
                Role::Verified
            ]
        );
        assert_eq!(a.display_name, "UCo", "no name: the id");
    }

    #[test]
    fn super_chats_and_stickers_are_paid() {
        let n = norm(&item(
            "sc",
            "superChatEvent",
            Some((
                "superChatDetails",
                json!({"amountMicros": "5000000", "currency": "USD", "amountDisplayString": "$5.00", "userComment": "Love it", "tier": 2}),
            )),
        ));
        assert_eq!(n.event.kind(), EventKind::SuperChat);
        assert!(n.event.kind().is_chat());
        assert_eq!(n.event.text.as_deref(), Some("Love it"));
        assert_eq!(
            n.event.paid,
            Some(Paid {
                amount_micros: 5_000_000,
                currency: "USD".into(),
                display: "$5.00".into(),
                tier: Some(2)
            })
        );
        let n = norm(&item(
            "st",
            "superStickerEvent",
            Some((
                "superStickerDetails",
                json!({"amountMicros": "2000000", "currency": "EUR", "tier": 1, "superStickerMetadata": {"stickerId": "cat", "altText": "A cat", "altTextLanguage": "en"}}),
            )),
        ));
        match &n.event.body {
            EventBody::SuperSticker(d) => {
                assert_eq!(
                    (
                        d.sticker_id.as_str(),
                        d.alt_text.as_deref(),
                        d.alt_text_language.as_deref()
                    ),
                    ("cat", Some("A cat"), Some("en"))
                );
            }
            other => panic!("{other:?}"),
        }
        let paid = n.event.paid.unwrap();
        assert_eq!(
            paid.display, "2.00 EUR",
            "no display string: made from the amount"
        );
        assert!(n.event.text.is_none());
    }

    #[test]
    fn memberships_use_the_platform_neutral_kinds() {
        let n = norm(&item(
            "s1",
            "newSponsorEvent",
            Some((
                "newSponsorDetails",
                json!({"memberLevelName": "Gold", "isUpgrade": false}),
            )),
        ));
        match &n.event.body {
            EventBody::Subscription(d) => {
                assert_eq!(
                    (d.plan.as_str(), d.plan_name.as_deref()),
                    ("Gold", Some("Gold"))
                );
                assert_eq!(d.system_message.as_deref(), Some("display of s1"));
            }
            other => panic!("{other:?}"),
        }
        let n = norm(&item(
            "r1",
            "memberMilestoneChatEvent",
            Some((
                "memberMilestoneChatDetails",
                json!({"memberLevelName": "Gold", "memberMonth": 7, "userComment": "7 months!"}),
            )),
        ));
        match &n.event.body {
            EventBody::Resub(d) => assert_eq!(d.cumulative_months, Some(7)),
            other => panic!("{other:?}"),
        }
        assert_eq!(n.event.text.as_deref(), Some("7 months!"));

        // A gift of 5, then one received: the gifter is named from the gift.
        let mut normaliser = Normaliser::new(false);
        let mut gift = item(
            "g1",
            "membershipGiftingEvent",
            Some((
                "membershipGiftingDetails",
                json!({"giftMembershipsCount": 5, "giftMembershipsLevelName": "Gold"}),
            )),
        );
        gift["authorDetails"] = author("UCgifter000000000000000A");
        let g = normaliser.normalise(&ctx(), &gift, now());
        match &g.event.body {
            EventBody::MysteryGift(d) => assert_eq!((d.count, d.plan.as_str()), (5, "Gold")),
            other => panic!("{other:?}"),
        }
        assert_eq!(g.event.author.unwrap().id, "UCgifter000000000000000A");
        let mut got = item(
            "g2",
            "giftMembershipReceivedEvent",
            Some((
                "giftMembershipReceivedDetails",
                json!({"memberLevelName": "Gold", "gifterChannelId": "UCgifter000000000000000A", "associatedMembershipGiftingMessageId": "g1"}),
            )),
        );
        got["authorDetails"] = author("UCreceiver00000000000000");
        let r = normaliser.normalise(&ctx(), &got, now());
        match &r.event.body {
            EventBody::SubGift(d) => {
                assert_eq!(d.recipient.id.as_deref(), Some("UCreceiver00000000000000"));
                assert_eq!(d.recipient.login, "ucreceiver00000000000000");
                assert_eq!(d.plan, "Gold");
            }
            other => panic!("{other:?}"),
        }
        let gifter = r.event.author.unwrap();
        assert_eq!(
            (gifter.id.as_str(), gifter.display_name.as_str()),
            (
                "UCgifter000000000000000A",
                "name of UCgifter000000000000000A"
            )
        );
        // Without the gifting event: the gifter by id.
        let r = Normaliser::new(false).normalise(&ctx(), &got, now());
        assert_eq!(
            r.event.author.unwrap().display_name,
            "UCgifter000000000000000A"
        );
    }

    #[test]
    fn deletions_bans_and_timeouts_target_what_the_consumer_moderates() {
        let n = norm(&item(
            "d1",
            "messageDeletedEvent",
            Some(("messageDeletedDetails", json!({"deletedMessageId": "m1"}))),
        ));
        match &n.event.body {
            EventBody::MessageDelete(d) => assert_eq!(d.target_message_id, "m1"),
            other => panic!("{other:?}"),
        }
        let n = norm(&item(
            "d2",
            "messageRetractedEvent",
            Some((
                "messageRetractedDetails",
                json!({"retractedMessageId": "m2"}),
            )),
        ));
        assert!(
            matches!(&n.event.body, EventBody::MessageDelete(d) if d.target_message_id == "m2")
        );

        let banned = json!({"channelId": "UCBad00000000000000000000", "displayName": "Troll"});
        let n = norm(&item(
            "b1",
            "userBannedEvent",
            Some((
                "userBannedDetails",
                json!({"bannedUserDetails": banned, "banType": "permanent"}),
            )),
        ));
        match &n.event.body {
            EventBody::Ban(d) => {
                assert_eq!(d.user.login, "ucbad00000000000000000000");
                assert_eq!(d.user.display_name.as_deref(), Some("Troll"));
            }
            other => panic!("{other:?}"),
        }
        let n = norm(&item(
            "t1",
            "userBannedEvent",
            Some((
                "userBannedDetails",
                json!({"bannedUserDetails": banned, "banType": "temporary", "banDurationSeconds": "300"}),
            )),
        ));
        match &n.event.body {
            EventBody::Timeout(d) => assert_eq!(d.duration_secs, 300),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn chat_ended_ends_the_chat() {
        let mut i = item("end", "chatEndedEvent", None);
        i["snippet"]
            .as_object_mut()
            .unwrap()
            .remove("displayMessage");
        let n = norm(&i);
        assert_eq!(n.event.kind(), EventKind::ChatEnded);
        assert!(n.ends_chat && n.event.author.is_none());
    }

    #[test]
    fn other_types_are_carried_with_their_details_and_the_raw_resource() {
        let i = item(
            "p1",
            "pollEvent",
            Some((
                "pollDetails",
                json!({"metadata": {"questionText": "Best?", "options": []}, "status": "active"}),
            )),
        );
        let n = norm(&i);
        match &n.event.body {
            EventBody::OtherNotice(d) => {
                assert_eq!(d.notice_type, "pollEvent");
                assert_eq!(d.system_message.as_deref(), Some("display of p1"));
                assert_eq!(d.tags["type"], "pollEvent");
                assert_eq!(d.tags["status"], "active");
                assert!(d.tags["metadata"].contains("Best?"));
            }
            other => panic!("{other:?}"),
        }
        assert!(n.problem.is_none(), "a known type is no problem");
        let raw: Value = serde_json::from_str(n.event.raw.as_deref().unwrap()).unwrap();
        assert_eq!(
            raw, i,
            "raw is the resource, even with INGEST_INCLUDE_RAW off"
        );

        let n = norm(&item(
            "x1",
            "hologramEvent",
            Some(("hologramDetails", json!({"depth": 3}))),
        ));
        assert_eq!(
            n.problem,
            Some(Problem::UnknownType("hologramEvent".into()))
        );
        assert!(matches!(&n.event.body, EventBody::OtherNotice(d) if d.tags["depth"] == "3"));
    }

    #[test]
    fn gift_updates_get_their_own_ids() {
        let i = item(
            "gift",
            "giftEvent",
            Some(("giftDetails", json!({"giftName": "Rose", "comboCount": 1}))),
        );
        assert_eq!(norm(&i).event.id, "gift");
        let i = item(
            "gift",
            "giftEvent",
            Some(("giftDetails", json!({"giftName": "Rose", "comboCount": 3}))),
        );
        assert_eq!(norm(&i).event.id, "gift:3");
    }

    #[test]
    fn malformed_resources_are_carried_not_dropped() {
        for bad in [
            json!({"id": "bad1", "snippet": {"type": "superChatEvent", "superChatDetails": {"amountMicros": "lots"}}}),
            json!({"id": "bad2", "snippet": "not an object"}),
            json!({"id": "bad3", "snippet": {"type": "superChatEvent"}}),
            json!({"id": "bad4", "snippet": {"type": "userBannedEvent", "userBannedDetails": {}}}),
            json!({"id": "bad5", "snippet": {"type": "messageDeletedEvent"}}),
            json!([1, 2, 3]),
            json!({"snippet": {"type": "textMessageEvent"}}),
        ] {
            let n = Normaliser::new(false).normalise(&ctx(), &bad, now());
            n.event.validate().unwrap();
            let raw: Value =
                serde_json::from_str(n.event.raw.as_deref().unwrap_or("null")).unwrap();
            if n.problem.is_some() {
                assert_eq!(n.event.kind(), EventKind::OtherNotice, "{bad}");
                assert_eq!(raw, bad, "the resource travels in raw");
            }
        }
        // No id: a stable derived one.
        let no_id = json!({"snippet": {"type": "textMessageEvent", "textMessageDetails": {"messageText": "x"}}});
        let a = Normaliser::new(false)
            .normalise(&ctx(), &no_id, now())
            .event
            .id;
        let b = Normaliser::new(false)
            .normalise(&ctx(), &no_id, now())
            .event
            .id;
        assert_eq!(a, b);
        assert!(uuid::Uuid::parse_str(&a).is_ok());
        // Too long for an AMQP message id: derived too.
        let long = item(&"x".repeat(300), "textMessageEvent", None);
        assert!(norm(&long).event.id.len() <= common::schema::MAX_ID_LEN);
    }

    #[test]
    fn a_chat_ended_without_its_event_gets_one_with_a_stable_id() {
        let e = chat_ended(&ctx(), now());
        e.validate().unwrap();
        assert_eq!(e.kind(), EventKind::ChatEnded);
        // An idempotency key: the id the follower has always given it.
        assert_eq!(e.id, "2af795ab-c327-5621-84e2-3c27c36b47f3");
        assert_eq!(
            e.id,
            chat_ended(&ctx(), now() + chrono::Duration::hours(1)).id
        );
        assert_eq!(
            (e.channel.as_str(), e.channel_id.as_deref()),
            ("UCX6OQ3DkcsbYNE6H8uQQuVA", Some("UCX6OQ3DkcsbYNE6H8uQQuVA"))
        );
        assert_eq!((e.sent_at, e.received_at), (now(), now()));
        assert!(e.author.is_none() && e.raw.is_none());
        let y = e.youtube.unwrap();
        assert_eq!(
            (
                y.message_type.as_str(),
                y.live_chat_id.as_str(),
                y.video_id.as_deref()
            ),
            ("chatEndedEvent", "chat1", Some("liveVideo01"))
        );
    }

    #[test]
    fn raw_is_carried_when_configured() {
        let i = item(
            "m1",
            "textMessageEvent",
            Some(("textMessageDetails", json!({"messageText": "x"}))),
        );
        let e = Normaliser::new(true).normalise(&ctx(), &i, now()).event;
        let raw: Value = serde_json::from_str(e.raw.as_deref().unwrap()).unwrap();
        assert_eq!(raw, i);
    }
}
