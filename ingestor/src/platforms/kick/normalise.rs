//! Kick's webhook events (docs.kick.com/events/event-types) to `ChatEvent`
//! v1. The channel word is the broadcaster's `channel_slug`, lowercased;
//! `channel_id` its `user_id`.
//!
//! | Kick event | kind |
//! |---|---|
//! | `chat.message.sent` | `message` (emotes: Kick's `e` is inclusive, chatbus's `end` exclusive) |
//! | `channel.subscription.new` | `subscription` |
//! | `channel.subscription.renewal` | `resub` |
//! | `channel.subscription.gifts` | one `sub_gift` per giftee (and a `mystery_gift` first when there are several) |
//! | `moderation.banned` | `ban` (`expires_at` null), else `timeout` for `expires_at - created_at` |
//! | `livestream.status.updated` | `stream_online` (`is_live`: title, `started_at`) or `stream_offline` |
//! | `livestream.metadata.updated` | `stream_update` (title, category name) |
//! | `channel.followed`, `kicks.gifted`, `channel.reward.redemption.updated`, any other | `other_notice` (`notice_type` = the Kick event, its fields in `tags`) |
//!
//! Kick's webhooks carry no viewer count. A known event whose body lacks a
//! field its kind needs becomes `other_notice` (nothing is lost).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use common::schema::{
    Author, Badge, BanDetails, ChatEvent, Emote, EventBody, MessageDetails, MysteryGiftDetails,
    OtherNoticeDetails, ReplyParent, Role, StreamDetails, StreamOfflineDetails, SubGiftDetails,
    SubscriptionDetails, TimeoutDetails, UserRef,
};
use serde::Deserialize;
use serde_json::Value;

/// The platform word.
pub const PLATFORM: &str = "kick";

/// A Kick user as the payloads show one.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KickUser {
    /// Anonymous (a gifter's fields are then null).
    #[serde(default)]
    pub is_anonymous: bool,
    /// The user's id.
    pub user_id: Option<u64>,
    /// The display name.
    pub username: Option<String>,
    /// Verified.
    #[serde(default)]
    pub is_verified: Option<bool>,
    /// Avatar.
    pub profile_picture: Option<String>,
    /// The channel slug (lowercase URL word).
    pub channel_slug: Option<String>,
    /// Colour and badges (senders only).
    pub identity: Option<Identity>,
}

/// A chat sender's identity.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Identity {
    /// `#RRGGBB`.
    pub username_color: Option<String>,
    /// Badges.
    #[serde(default)]
    pub badges: Vec<KickBadge>,
}

/// A badge.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KickBadge {
    /// Its text.
    pub text: Option<String>,
    /// Its type (`moderator`, `subscriber` ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// Months, gifts ...
    pub count: Option<u64>,
}

/// What every Kick event names: its broadcaster.
#[derive(Debug, Deserialize)]
pub struct Envelope {
    /// The channel's owner.
    pub broadcaster: KickUser,
}

impl Envelope {
    /// The channel word and id, when the broadcaster names them.
    pub fn channel(&self) -> Option<(String, u64)> {
        let id = self.broadcaster.user_id?;
        let slug = self.broadcaster.channel_slug.as_deref()?.to_ascii_lowercase();
        (!slug.is_empty()).then_some((slug, id))
    }
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    message_id: String,
    sender: KickUser,
    content: String,
    #[serde(default)]
    emotes: Vec<KickEmote>,
    replies_to: Option<Reply>,
    created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
struct KickEmote {
    emote_id: String,
    #[serde(default)]
    positions: Vec<Position>,
}

#[derive(Debug, Deserialize)]
struct Position {
    s: usize,
    e: usize,
}

#[derive(Debug, Deserialize)]
struct Reply {
    message_id: String,
    content: Option<String>,
    sender: Option<KickUser>,
}

#[derive(Debug, Deserialize)]
struct Sub {
    subscriber: KickUser,
    duration: Option<u32>,
    created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
struct Gifts {
    gifter: Option<KickUser>,
    giftees: Vec<KickUser>,
    created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
struct Banned {
    moderator: Option<KickUser>,
    banned_user: KickUser,
    metadata: BanMeta,
}

#[derive(Debug, Deserialize)]
struct BanMeta {
    reason: Option<String>,
    created_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
}

/// One delivery, as the webhook route hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// `Kick-Event-Type`.
    pub event_type: &'a str,
    /// `Kick-Event-Message-Id` (the delivery's id).
    pub message_id: &'a str,
    /// `Kick-Event-Message-Timestamp`, parsed.
    pub sent_at: DateTime<Utc>,
    /// The body.
    pub body: &'a Value,
    /// Carry the body as `raw`.
    pub include_raw: bool,
}

/// The events of one delivery, given its channel (`slug`, broadcaster id).
pub fn normalise(d: Delivery<'_>, slug: &str, broadcaster: u64, now: DateTime<Utc>) -> Vec<ChatEvent> {
    let typed = match d.event_type {
        "chat.message.sent" => chat(&d, slug, now),
        "channel.subscription.new" | "channel.subscription.renewal" => sub(&d, slug, now),
        "channel.subscription.gifts" => gifts(&d, slug, now),
        "moderation.banned" => banned(&d, slug, now),
        "livestream.status.updated" => status(&d, slug, now),
        "livestream.metadata.updated" => metadata(&d, slug, now),
        _ => None,
    };
    let mut events = typed.unwrap_or_else(|| vec![notice(&d, slug, now)]);
    for e in &mut events {
        e.channel_id = Some(broadcaster.to_string());
        if d.include_raw {
            e.raw = Some(d.body.to_string());
        }
    }
    events
}

/// A time field of a Kick body (RFC 3339).
fn time_of(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// `livestream.status.updated`: went live (`is_live`) or ended.
fn status(d: &Delivery<'_>, slug: &str, now: DateTime<Utc>) -> Option<Vec<ChatEvent>> {
    let started_at = time_of(&d.body["started_at"]);
    let body = match d.body["is_live"].as_bool()? {
        true => EventBody::StreamOnline(StreamDetails {
            stream_id: None,
            title: d.body["title"].as_str().map(str::to_owned),
            category: None,
            viewer_count: None,
            started_at,
        }),
        false => EventBody::StreamOffline(StreamOfflineDetails {
            stream_id: None,
            started_at,
        }),
    };
    Some(vec![ChatEvent::new(d.message_id, PLATFORM, slug, d.sent_at, now, body)])
}

/// `livestream.metadata.updated`: a new title or category.
fn metadata(d: &Delivery<'_>, slug: &str, now: DateTime<Utc>) -> Option<Vec<ChatEvent>> {
    let m = d.body.get("metadata")?;
    let body = EventBody::StreamUpdate(StreamDetails {
        stream_id: None,
        title: m["title"].as_str().map(str::to_owned),
        category: m["category"]["name"].as_str().map(str::to_owned),
        viewer_count: None,
        started_at: None,
    });
    Some(vec![ChatEvent::new(d.message_id, PLATFORM, slug, d.sent_at, now, body)])
}

fn login(u: &KickUser) -> Option<String> {
    u.channel_slug
        .as_deref()
        .or(u.username.as_deref())
        .filter(|s| !s.is_empty())
        .map(str::to_ascii_lowercase)
}

fn user_ref(u: &KickUser) -> Option<UserRef> {
    Some(UserRef {
        id: u.user_id.map(|id| id.to_string()),
        login: login(u)?,
        display_name: u.username.clone(),
    })
}

fn author(u: &KickUser, broadcaster: &str) -> Option<Author> {
    let login = login(u)?;
    let mut roles = Vec::new();
    let mut badges = Vec::new();
    let identity = u.identity.clone().unwrap_or_default();
    for b in &identity.badges {
        let role = match b.kind.as_str() {
            "broadcaster" => Some(Role::Broadcaster),
            "moderator" => Some(Role::Moderator),
            "vip" => Some(Role::Vip),
            "subscriber" => Some(Role::Subscriber),
            "staff" => Some(Role::Staff),
            "verified" => Some(Role::Verified),
            _ => None,
        };
        if let Some(role) = role
            && !roles.contains(&role)
        {
            roles.push(role);
        }
        badges.push(Badge {
            name: b.kind.clone(),
            version: b.count.map_or_else(|| "1".to_owned(), |c| c.to_string()),
            info: b.text.clone(),
        });
    }
    if login == broadcaster && !roles.contains(&Role::Broadcaster) {
        roles.push(Role::Broadcaster);
    }
    if u.is_verified == Some(true) && !roles.contains(&Role::Verified) {
        roles.push(Role::Verified);
    }
    Some(Author {
        id: u.user_id.map(|id| id.to_string()).unwrap_or_default(),
        display_name: u.username.clone().unwrap_or_else(|| login.clone()),
        login,
        color: identity.username_color,
        badges,
        roles,
        avatar_url: u.profile_picture.clone().filter(|p| !p.is_empty()),
    })
}

/// Kick's emote positions (`s`..=`e`, code points) as chatbus's
/// (`start`..`end`, end exclusive), with the emote's text; positions
/// outside the text are dropped.
fn emotes(text: &str, kick: &[KickEmote]) -> Vec<Emote> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    for emote in kick {
        for p in &emote.positions {
            let end = p.e.saturating_add(1);
            if p.s >= end || end > chars.len() {
                continue;
            }
            out.push(Emote {
                id: emote.emote_id.clone(),
                name: chars[p.s..end].iter().collect(),
                start: p.s,
                end,
            });
        }
    }
    out.sort_by_key(|e| e.start);
    out
}

fn chat(d: &Delivery<'_>, slug: &str, now: DateTime<Utc>) -> Option<Vec<ChatEvent>> {
    let m: ChatMessage = serde_json::from_value(d.body.clone()).ok()?;
    let mut e = ChatEvent::new(
        m.message_id.clone(),
        PLATFORM,
        slug,
        m.created_at.unwrap_or(d.sent_at),
        now,
        EventBody::Message(MessageDetails::default()),
    );
    e.author = Some(author(&m.sender, slug)?);
    e.emotes = emotes(&m.content, &m.emotes);
    e.text = Some(m.content);
    e.reply_to = m.replies_to.map(|r| ReplyParent {
        message_id: r.message_id,
        user_id: r.sender.as_ref().and_then(|s| s.user_id).map(|id| id.to_string()),
        user_login: r.sender.as_ref().and_then(login),
        display_name: r.sender.as_ref().and_then(|s| s.username.clone()),
        text: r.content,
        thread_message_id: None,
    });
    Some(vec![e])
}

fn sub(d: &Delivery<'_>, slug: &str, now: DateTime<Utc>) -> Option<Vec<ChatEvent>> {
    let s: Sub = serde_json::from_value(d.body.clone()).ok()?;
    // Kick has one subscription tier and names no plan; `duration` (months)
    // is read as the months subscribed so far.
    let details = SubscriptionDetails {
        plan: String::new(),
        cumulative_months: s.duration,
        ..SubscriptionDetails::default()
    };
    let body = if d.event_type == "channel.subscription.new" {
        EventBody::Subscription(details)
    } else {
        EventBody::Resub(details)
    };
    let mut e = ChatEvent::new(d.message_id, PLATFORM, slug, s.created_at.unwrap_or(d.sent_at), now, body);
    e.author = Some(author(&s.subscriber, slug)?);
    Some(vec![e])
}

fn gifts(d: &Delivery<'_>, slug: &str, now: DateTime<Utc>) -> Option<Vec<ChatEvent>> {
    let g: Gifts = serde_json::from_value(d.body.clone()).ok()?;
    let sent_at = g.created_at.unwrap_or(d.sent_at);
    let gifter = g.gifter.filter(|u| !u.is_anonymous && u.user_id.is_some());
    let anonymous = gifter.is_none();
    let gifter = gifter.as_ref().and_then(|u| author(u, slug));
    let mut out = Vec::new();
    if g.giftees.len() > 1 {
        let mut e = ChatEvent::new(
            format!("{}:gifts", d.message_id),
            PLATFORM,
            slug,
            sent_at,
            now,
            EventBody::MysteryGift(MysteryGiftDetails {
                count: u32::try_from(g.giftees.len()).unwrap_or(u32::MAX),
                plan: String::new(),
                sender_total: None,
                anonymous,
                system_message: None,
            }),
        );
        e.author = gifter.clone();
        out.push(e);
    }
    for (n, giftee) in g.giftees.iter().enumerate() {
        let mut e = ChatEvent::new(
            format!("{}:{n}", d.message_id),
            PLATFORM,
            slug,
            sent_at,
            now,
            EventBody::SubGift(SubGiftDetails {
                recipient: user_ref(giftee)?,
                plan: String::new(),
                plan_name: None,
                months: None,
                gift_months: None,
                anonymous,
                system_message: None,
            }),
        );
        e.author = gifter.clone();
        out.push(e);
    }
    (!out.is_empty()).then_some(out)
}

fn banned(d: &Delivery<'_>, slug: &str, now: DateTime<Utc>) -> Option<Vec<ChatEvent>> {
    let b: Banned = serde_json::from_value(d.body.clone()).ok()?;
    let user = user_ref(&b.banned_user)?;
    let body = match b.metadata.expires_at {
        None => EventBody::Ban(BanDetails { user }),
        Some(until) => {
            // Kick gives the end of the timeout; its length is the span
            // from the ban, in whole seconds (at least one).
            let secs = (until - b.metadata.created_at).num_milliseconds().max(1);
            EventBody::Timeout(TimeoutDetails {
                user,
                duration_secs: u64::try_from(secs).unwrap_or(1).div_ceil(1000),
            })
        }
    };
    let mut e = ChatEvent::new(d.message_id, PLATFORM, slug, b.metadata.created_at, now, body);
    e.author = b.moderator.as_ref().and_then(|m| author(m, slug));
    e.text = b.metadata.reason.filter(|r| !r.is_empty());
    Some(vec![e])
}

/// Flattens `value`'s fields into `prefix.key` tags (objects nested,
/// arrays as JSON).
fn flatten(prefix: &str, value: &Value, tags: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                flatten(&key, v, tags);
            }
        }
        Value::Null => {}
        Value::String(s) => {
            tags.insert(prefix.to_owned(), s.clone());
        }
        other => {
            tags.insert(prefix.to_owned(), other.to_string());
        }
    }
}

fn notice(d: &Delivery<'_>, slug: &str, now: DateTime<Utc>) -> ChatEvent {
    let mut tags = BTreeMap::new();
    if let Value::Object(map) = d.body {
        for (k, v) in map {
            if k != "broadcaster" {
                flatten(k, v, &mut tags);
            }
        }
    }
    let system_message = match d.event_type {
        "livestream.status.updated" => Some(
            if d.body["is_live"].as_bool() == Some(true) { "stream started" } else { "stream ended" }
                .to_owned(),
        ),
        "livestream.metadata.updated" => d.body["metadata"]["title"].as_str().map(str::to_owned),
        _ => None,
    };
    let who = ["follower", "sender", "redeemer", "user"]
        .iter()
        .find_map(|k| serde_json::from_value::<KickUser>(d.body[*k].clone()).ok())
        .and_then(|u| author(&u, slug));
    let text = match d.event_type {
        "kicks.gifted" => d.body["gift"]["message"].as_str(),
        "channel.reward.redemption.updated" => d.body["user_input"].as_str(),
        _ => None,
    }
    .filter(|t| !t.is_empty())
    .map(str::to_owned);
    let mut e = ChatEvent::new(
        d.message_id,
        PLATFORM,
        slug,
        d.sent_at,
        now,
        EventBody::OtherNotice(OtherNoticeDetails {
            notice_type: d.event_type.to_owned(),
            system_message,
            tags,
        }),
    );
    e.author = who;
    e.text = text;
    e
}

#[cfg(test)]
mod tests {
    use common::schema::EventKind;

    use super::*;

    fn deliver(event_type: &str, body: &str) -> Vec<ChatEvent> {
        let body: Value = serde_json::from_str(body).unwrap();
        let d = Delivery {
            event_type,
            message_id: "01JHGZ0000000000000000000A",
            sent_at: "2025-01-14T16:08:07Z".parse().unwrap(),
            body: &body,
            include_raw: false,
        };
        let env: Envelope = serde_json::from_value(body.clone()).unwrap();
        let (slug, id) = env.channel().unwrap();
        let events = normalise(d, &slug, id, Utc::now());
        for e in &events {
            e.validate().unwrap();
            assert_eq!(e.channel, "broadcaster_channel");
            assert_eq!(e.channel_id.as_deref(), Some("123456789"));
        }
        events
    }

    const BROADCASTER: &str = r#""broadcaster": {"is_anonymous": false, "user_id": 123456789, "username": "broadcaster_name", "is_verified": true, "profile_picture": "https://example.com/broadcaster_avatar.jpg", "channel_slug": "Broadcaster_Channel", "identity": null}"#;

    fn user(name: &str, id: u64) -> String {
        format!(r#"{{"is_anonymous": false, "user_id": {id}, "username": "{name}", "is_verified": false, "profile_picture": "https://example.com/a.jpg", "channel_slug": "{name}_channel", "identity": null}}"#)
    }

    #[test]
    fn a_chat_message_keeps_its_text_author_reply_and_emotes_with_exclusive_ends() {
        // Docs' example (docs.kick.com/events/event-types, Chat Message).
        let body = format!(
            r##"{{"message_id": "unique_message_id_123",
            "replies_to": {{"message_id": "unique_message_id_456", "content": "This is the parent message!", "sender": {}}},
            {BROADCASTER},
            "sender": {{"is_anonymous": false, "user_id": 987654321, "username": "sender_name", "is_verified": false,
              "profile_picture": "https://example.com/sender_avatar.jpg", "channel_slug": "sender_channel",
              "identity": {{"username_color": "#FF5733", "badges": [{{"text": "Moderator", "type": "moderator"}},
                {{"text": "Sub Gifter", "type": "sub_gifter", "count": 5}}, {{"text": "Subscriber", "type": "subscriber", "count": 3}}]}}}},
            "content": "Hello [emote:4148074:HYPERCLAP] [emote:4148074:HYPERCLAP] [emote:37226:KEKW]",
            "emotes": [{{"emote_id": "4148074", "positions": [{{"s": 6, "e": 30}}, {{"s": 32, "e": 56}}]}},
                       {{"emote_id": "37226", "positions": [{{"s": 58, "e": 75}}]}}],
            "created_at": "2025-01-14T16:08:06Z"}}"##,
            user("parent_sender_name", 12345)
        );
        let events = deliver("chat.message.sent", &body);
        let [e] = events.as_slice() else { panic!("{events:?}") };
        assert_eq!(e.kind(), EventKind::Message);
        assert_eq!(e.id, "unique_message_id_123");
        assert_eq!(e.text.as_deref(), Some("Hello [emote:4148074:HYPERCLAP] [emote:4148074:HYPERCLAP] [emote:37226:KEKW]"));
        assert_eq!(e.sent_at.to_rfc3339(), "2025-01-14T16:08:06+00:00");
        let a = e.author.as_ref().unwrap();
        assert_eq!((a.id.as_str(), a.login.as_str(), a.display_name.as_str()), ("987654321", "sender_channel", "sender_name"));
        assert_eq!(a.color.as_deref(), Some("#FF5733"));
        assert_eq!(a.roles, [Role::Moderator, Role::Subscriber]);
        assert_eq!(a.badges[2].version, "3");
        let spans: Vec<(&str, &str, usize, usize)> =
            e.emotes.iter().map(|m| (m.id.as_str(), m.name.as_str(), m.start, m.end)).collect();
        assert_eq!(
            spans,
            [
                ("4148074", "[emote:4148074:HYPERCLAP]", 6, 31),
                ("4148074", "[emote:4148074:HYPERCLAP]", 32, 57),
                ("37226", "[emote:37226:KEKW]", 58, 76)
            ]
        );
        let r = e.reply_to.as_ref().unwrap();
        assert_eq!(r.message_id, "unique_message_id_456");
        assert_eq!(r.user_login.as_deref(), Some("parent_sender_name_channel"));
        assert_eq!(r.text.as_deref(), Some("This is the parent message!"));
    }

    #[test]
    fn emote_positions_count_code_points_and_out_of_range_ones_are_dropped() {
        let kick = vec![KickEmote {
            emote_id: "1".into(),
            positions: vec![Position { s: 2, e: 5 }, Position { s: 5, e: 40 }],
        }];
        let got = emotes("é👋KEKW!", &kick);
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].name.as_str(), got[0].start, got[0].end), ("KEKW", 2, 6));
    }

    #[test]
    fn subscriptions_gifts_and_follows() {
        let sub = format!(
            r#"{{{BROADCASTER}, "subscriber": {}, "duration": 3, "created_at": "2025-01-14T16:08:06Z", "expires_at": "2025-02-14T16:08:06Z"}}"#,
            user("subscriber_name", 987654321)
        );
        let new = deliver("channel.subscription.new", &sub);
        assert_eq!(new[0].kind(), EventKind::Subscription);
        let renewal = deliver("channel.subscription.renewal", &sub);
        let EventBody::Resub(d) = &renewal[0].body else { panic!() };
        assert_eq!(d.cumulative_months, Some(3));
        assert_eq!(renewal[0].author.as_ref().unwrap().login, "subscriber_name_channel");

        let gifts = format!(
            r#"{{{BROADCASTER}, "gifter": {}, "giftees": [{}, {}], "created_at": "2025-01-14T16:08:06Z", "expires_at": "2025-02-14T16:08:06Z"}}"#,
            user("gifter_name", 5),
            user("giftee_a", 6),
            user("giftee_b", 7)
        );
        let events = deliver("channel.subscription.gifts", &gifts);
        let kinds: Vec<EventKind> = events.iter().map(ChatEvent::kind).collect();
        assert_eq!(kinds, [EventKind::MysteryGift, EventKind::SubGift, EventKind::SubGift]);
        let EventBody::SubGift(g) = &events[2].body else { panic!() };
        assert_eq!(g.recipient.login, "giftee_b_channel");
        assert!(!g.anonymous);
        let anonymous = format!(
            r#"{{{BROADCASTER}, "gifter": {{"is_anonymous": true, "user_id": null, "username": null, "is_verified": null, "profile_picture": null, "channel_slug": null, "identity": null}}, "giftees": [{}], "created_at": "2025-01-14T16:08:06Z"}}"#,
            user("giftee_a", 6)
        );
        let events = deliver("channel.subscription.gifts", &anonymous);
        let EventBody::SubGift(g) = &events[0].body else { panic!("{events:?}") };
        assert!(g.anonymous && events[0].author.is_none());

        let follow = format!(r#"{{{BROADCASTER}, "follower": {}}}"#, user("follower_name", 9));
        let events = deliver("channel.followed", &follow);
        let EventBody::OtherNotice(n) = &events[0].body else { panic!() };
        assert_eq!(n.notice_type, "channel.followed");
        assert_eq!(events[0].author.as_ref().unwrap().login, "follower_name_channel");
        assert_eq!(n.tags["follower.user_id"], "9");
    }

    #[test]
    fn bans_with_an_end_are_timeouts_in_seconds() {
        let ban = |expires: &str| {
            format!(
                r#"{{{BROADCASTER}, "moderator": {}, "banned_user": {}, "metadata": {{"reason": "banned reason", "created_at": "2025-01-14T16:08:05Z", "expires_at": {expires}}}}}"#,
                user("moderator_name", 1),
                user("banned_user_name", 135790135)
            )
        };
        let events = deliver("moderation.banned", &ban(r#""2025-01-14T16:10:06Z""#));
        let EventBody::Timeout(t) = &events[0].body else { panic!("{events:?}") };
        assert_eq!((t.user.login.as_str(), t.duration_secs), ("banned_user_name_channel", 121));
        assert_eq!(events[0].text.as_deref(), Some("banned reason"));
        assert_eq!(events[0].author.as_ref().unwrap().login, "moderator_name_channel");
        let events = deliver("moderation.banned", &ban("null"));
        let EventBody::Ban(b) = &events[0].body else { panic!() };
        assert_eq!(b.user.id.as_deref(), Some("135790135"));
    }

    #[test]
    fn livestream_events_are_stream_status() {
        let live = format!(
            r#"{{{BROADCASTER}, "is_live": true, "title": "Stream Title", "started_at": "2025-01-01T11:00:00+11:00", "ended_at": null}}"#
        );
        let events = deliver("livestream.status.updated", &live);
        let EventBody::StreamOnline(s) = &events[0].body else { panic!("{events:?}") };
        assert_eq!(s.title.as_deref(), Some("Stream Title"));
        assert_eq!(
            s.started_at.unwrap().to_rfc3339(),
            "2025-01-01T00:00:00+00:00"
        );
        let ended = format!(
            r#"{{{BROADCASTER}, "is_live": false, "title": "Stream Title", "started_at": "2025-01-01T11:00:00+11:00", "ended_at": "2025-01-01T15:00:00+11:00"}}"#
        );
        assert_eq!(deliver("livestream.status.updated", &ended)[0].kind(), EventKind::StreamOffline);
        let meta = format!(
            r#"{{{BROADCASTER}, "metadata": {{"title": "New", "language": "en", "has_mature_content": true, "category": {{"id": 123, "name": "Category name", "thumbnail": "http://example.com/image123"}}}}}}"#
        );
        let EventBody::StreamUpdate(s) = &deliver("livestream.metadata.updated", &meta)[0].body else {
            panic!()
        };
        assert_eq!(
            (s.title.as_deref(), s.category.as_deref()),
            (Some("New"), Some("Category name"))
        );
    }

    #[test]
    fn kicks_rewards_and_unknown_events_are_other_notices() {
        let kicks = format!(
            r#"{{{BROADCASTER}, "sender": {}, "gift": {{"amount": 500, "name": "Rage Quit", "type": "LEVEL_UP", "tier": "MID", "message": "w", "pinned_time_seconds": 600}}, "created_at": "2025-10-20T04:00:08.634Z"}}"#,
            user("gift_sender", 3)
        );
        let events = deliver("kicks.gifted", &kicks);
        assert_eq!(events[0].text.as_deref(), Some("w"));
        assert_eq!(events[0].author.as_ref().unwrap().login, "gift_sender_channel");
        let odd = format!(r#"{{{BROADCASTER}, "something": {{"new": 1}}}}"#);
        let EventBody::OtherNotice(n) = &deliver("channel.future.thing", &odd)[0].body else {
            panic!()
        };
        assert_eq!((n.notice_type.as_str(), n.tags["something.new"].as_str()), ("channel.future.thing", "1"));
        // A known event missing what its kind needs is not lost.
        let broken = format!(r#"{{{BROADCASTER}, "content": "no sender"}}"#);
        assert_eq!(deliver("chat.message.sent", &broken)[0].kind(), EventKind::OtherNotice);
    }
}
