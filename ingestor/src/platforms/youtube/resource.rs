//! The `liveChatMessage` resource: its JSON form (what
//! `liveChatMessages.list` answers, and what the normaliser reads), typed
//! views of the parts the normaliser uses, and the conversion of the gRPC
//! stream's protobuf messages into the same JSON, so both ways of reading
//! go through one normaliser and `raw` carries the same shape either way.
//!
//! JSON names are the lowerCamelCase of the proto's, enum values the
//! lowerCamelCase of their names, and 64-bit integers are strings, as in
//! Google's Discovery document.

use serde::Deserialize;
use serde_json::{Map, Value};

/// The protobuf messages and client of `stream_list.proto` (generated at
/// build time).
#[allow(
    unreachable_pub,
    dead_code,
    missing_docs,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
pub mod pb {
    tonic::include_proto!("youtube.api.v3");
}

/// A `liveChatMessage`, as far as the normaliser reads it. Every field is
/// optional: what is missing is left out of the event, never a failure.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LiveChatMessage {
    /// The message id.
    pub id: Option<String>,
    /// What happened.
    pub snippet: Option<Snippet>,
    /// Who did it.
    pub author_details: Option<AuthorDetails>,
}

/// `snippet`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Snippet {
    /// `textMessageEvent`, `superChatEvent` ...
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The chat.
    pub live_chat_id: Option<String>,
    /// The author's channel (for `userBannedEvent`, the moderator).
    pub author_channel_id: Option<String>,
    /// When it was sent (RFC 3339).
    pub published_at: Option<String>,
    /// The text YouTube shows for it.
    pub display_message: Option<String>,
    /// `textMessageEvent`.
    pub text_message_details: Option<TextMessageDetails>,
    /// `messageDeletedEvent`.
    pub message_deleted_details: Option<MessageDeletedDetails>,
    /// `messageRetractedEvent`.
    pub message_retracted_details: Option<MessageRetractedDetails>,
    /// `userBannedEvent`.
    pub user_banned_details: Option<UserBannedDetails>,
    /// `superChatEvent`.
    pub super_chat_details: Option<PaidDetails>,
    /// `superStickerEvent`.
    pub super_sticker_details: Option<PaidDetails>,
    /// `newSponsorEvent`.
    pub new_sponsor_details: Option<NewSponsorDetails>,
    /// `memberMilestoneChatEvent`.
    pub member_milestone_chat_details: Option<MemberMilestoneDetails>,
    /// `membershipGiftingEvent`.
    pub membership_gifting_details: Option<MembershipGiftingDetails>,
    /// `giftMembershipReceivedEvent`.
    pub gift_membership_received_details: Option<GiftMembershipReceivedDetails>,
    /// `giftEvent`: only its combo count is read (the rest travels in
    /// `other_notice`).
    pub gift_details: Option<GiftDetails>,
}

/// `authorDetails`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AuthorDetails {
    /// The author's channel id.
    pub channel_id: Option<String>,
    /// The author's channel URL.
    pub channel_url: Option<String>,
    /// The name YouTube shows.
    pub display_name: Option<String>,
    /// The author's picture.
    pub profile_image_url: Option<String>,
    /// A verified channel.
    pub is_verified: Option<bool>,
    /// The channel owner.
    pub is_chat_owner: Option<bool>,
    /// A member (sponsor).
    pub is_chat_sponsor: Option<bool>,
    /// A moderator.
    pub is_chat_moderator: Option<bool>,
}

/// `textMessageDetails`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct TextMessageDetails {
    /// The text.
    pub message_text: Option<String>,
}

/// `messageDeletedDetails`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MessageDeletedDetails {
    /// The deleted message.
    pub deleted_message_id: Option<String>,
}

/// `messageRetractedDetails`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MessageRetractedDetails {
    /// The retracted message.
    pub retracted_message_id: Option<String>,
}

/// `userBannedDetails`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UserBannedDetails {
    /// Who was banned.
    pub banned_user_details: Option<ChannelProfile>,
    /// `permanent` or `temporary`.
    pub ban_type: Option<String>,
    /// Length of a temporary ban.
    #[serde(deserialize_with = "lenient_u64")]
    pub ban_duration_seconds: Option<u64>,
}

/// A channel named by an event (`bannedUserDetails`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ChannelProfile {
    /// Its channel id.
    pub channel_id: Option<String>,
    /// Its URL.
    pub channel_url: Option<String>,
    /// Its name.
    pub display_name: Option<String>,
    /// Its picture.
    pub profile_image_url: Option<String>,
}

/// `superChatDetails` and `superStickerDetails`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct PaidDetails {
    /// The amount in micros.
    #[serde(deserialize_with = "lenient_u64")]
    pub amount_micros: Option<u64>,
    /// ISO 4217.
    pub currency: Option<String>,
    /// As YouTube shows it.
    pub amount_display_string: Option<String>,
    /// The user's comment (Super Chat).
    pub user_comment: Option<String>,
    /// The colour tier.
    pub tier: Option<u32>,
    /// The sticker (Super Sticker).
    pub super_sticker_metadata: Option<StickerMetadata>,
}

/// `superStickerMetadata`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StickerMetadata {
    /// The sticker's id.
    pub sticker_id: Option<String>,
    /// What it shows.
    pub alt_text: Option<String>,
    /// The language of `alt_text`.
    pub alt_text_language: Option<String>,
}

/// `newSponsorDetails`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct NewSponsorDetails {
    /// The membership level.
    pub member_level_name: Option<String>,
    /// An upgrade of an existing membership.
    pub is_upgrade: Option<bool>,
}

/// `memberMilestoneChatDetails`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MemberMilestoneDetails {
    /// The membership level.
    pub member_level_name: Option<String>,
    /// Months of membership.
    pub member_month: Option<u32>,
    /// The user's comment.
    pub user_comment: Option<String>,
}

/// `membershipGiftingDetails`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct MembershipGiftingDetails {
    /// Memberships gifted.
    pub gift_memberships_count: Option<i64>,
    /// Their level.
    pub gift_memberships_level_name: Option<String>,
}

/// `giftMembershipReceivedDetails`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GiftMembershipReceivedDetails {
    /// The membership level.
    pub member_level_name: Option<String>,
    /// Who paid for it.
    pub gifter_channel_id: Option<String>,
    /// The `membershipGiftingEvent` it came from.
    pub associated_membership_gifting_message_id: Option<String>,
}

/// `giftDetails`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct GiftDetails {
    /// Sends of the same gift in a row (the id is reused as it grows).
    pub combo_count: Option<i64>,
}

/// A `u64` written as a JSON number or, as Google writes 64-bit integers,
/// a string.
fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match Option::<Value>::deserialize(d)? {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a u64"))),
        Some(Value::String(s)) => s
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("`{s}` is not a u64"))),
        Some(other) => Err(serde::de::Error::custom(format!("{other} is not a number"))),
    }
}

/// `TEXT_MESSAGE_EVENT` -> `textMessageEvent`.
pub fn lower_camel(screaming: &str) -> String {
    let mut out = String::with_capacity(screaming.len());
    for (i, word) in screaming.split('_').filter(|w| !w.is_empty()).enumerate() {
        let lower = word.to_ascii_lowercase();
        if i == 0 {
            out.push_str(&lower);
        } else {
            let mut chars = lower.chars();
            if let Some(first) = chars.next() {
                out.push(first.to_ascii_uppercase());
                out.extend(chars);
            }
        }
    }
    out
}

/// Builds a JSON object from the fields that are set.
#[derive(Default)]
struct Obj(Map<String, Value>);

impl Obj {
    fn put(mut self, key: &str, value: Option<impl Into<Value>>) -> Self {
        if let Some(v) = value {
            self.0.insert(key.to_owned(), v.into());
        }
        self
    }

    fn put_u64(self, key: &str, value: Option<u64>) -> Self {
        self.put(key, value.map(|v| v.to_string()))
    }

    fn put_obj(self, key: &str, value: Option<Obj>) -> Self {
        self.put(key, value.map(|o| Value::Object(o.0)))
    }

    fn done(self) -> Value {
        Value::Object(self.0)
    }
}

fn enum_name<E: TryFrom<i32>>(
    value: Option<i32>,
    name: impl Fn(E) -> &'static str,
) -> Option<String> {
    value.map(|v| match E::try_from(v) {
        Ok(e) => lower_camel(name(e)),
        Err(_) => format!("unknown{v}"),
    })
}

fn profile(p: &pb::ChannelProfileDetails) -> Obj {
    Obj::default()
        .put("channelId", p.channel_id.clone())
        .put("channelUrl", p.channel_url.clone())
        .put("displayName", p.display_name.clone())
        .put("profileImageUrl", p.profile_image_url.clone())
}

fn duration(d: &prost_types::Duration) -> String {
    if d.nanos == 0 {
        format!("{}s", d.seconds)
    } else {
        let total = d.seconds as f64 + f64::from(d.nanos) / 1e9;
        format!("{total}s")
    }
}

/// The JSON resource of a streamed message, as `liveChatMessages.list`
/// would give it.
pub fn message_json(m: &pb::LiveChatMessage) -> Value {
    use pb::live_chat_message_snippet::DisplayedContent as C;

    let snippet = m.snippet.as_ref().map(|s| {
        let base = Obj::default()
            .put(
                "type",
                enum_name(s.r#type, |t: pb::live_chat_message_snippet::type_wrapper::Type| {
                    t.as_str_name()
                }),
            )
            .put("liveChatId", s.live_chat_id.clone())
            .put("authorChannelId", s.author_channel_id.clone())
            .put("publishedAt", s.published_at.clone())
            .put("hasDisplayContent", s.has_display_content)
            .put("displayMessage", s.display_message.clone());
        let (key, details) = match &s.displayed_content {
            None => return base,
            Some(C::TextMessageDetails(d)) => (
                "textMessageDetails",
                Obj::default().put("messageText", d.message_text.clone()),
            ),
            Some(C::MessageDeletedDetails(d)) => (
                "messageDeletedDetails",
                Obj::default().put("deletedMessageId", d.deleted_message_id.clone()),
            ),
            Some(C::MessageRetractedDetails(d)) => (
                "messageRetractedDetails",
                Obj::default().put("retractedMessageId", d.retracted_message_id.clone()),
            ),
            Some(C::UserBannedDetails(d)) => (
                "userBannedDetails",
                Obj::default()
                    .put_obj("bannedUserDetails", d.banned_user_details.as_ref().map(profile))
                    .put(
                        "banType",
                        enum_name(d.ban_type, |t: pb::live_chat_user_banned_message_details::ban_type_wrapper::BanType| {
                            t.as_str_name()
                        }),
                    )
                    .put_u64("banDurationSeconds", d.ban_duration_seconds),
            ),
            Some(C::SuperChatDetails(d)) => (
                "superChatDetails",
                Obj::default()
                    .put_u64("amountMicros", d.amount_micros)
                    .put("currency", d.currency.clone())
                    .put("amountDisplayString", d.amount_display_string.clone())
                    .put("userComment", d.user_comment.clone())
                    .put("tier", d.tier),
            ),
            Some(C::SuperStickerDetails(d)) => (
                "superStickerDetails",
                Obj::default()
                    .put_u64("amountMicros", d.amount_micros)
                    .put("currency", d.currency.clone())
                    .put("amountDisplayString", d.amount_display_string.clone())
                    .put("tier", d.tier)
                    .put_obj(
                        "superStickerMetadata",
                        d.super_sticker_metadata.as_ref().map(|m| {
                            Obj::default()
                                .put("stickerId", m.sticker_id.clone())
                                .put("altText", m.alt_text.clone())
                                .put("altTextLanguage", m.alt_text_language.clone())
                        }),
                    ),
            ),
            Some(C::NewSponsorDetails(d)) => (
                "newSponsorDetails",
                Obj::default()
                    .put("memberLevelName", d.member_level_name.clone())
                    .put("isUpgrade", d.is_upgrade),
            ),
            Some(C::MemberMilestoneChatDetails(d)) => (
                "memberMilestoneChatDetails",
                Obj::default()
                    .put("memberLevelName", d.member_level_name.clone())
                    .put("memberMonth", d.member_month)
                    .put("userComment", d.user_comment.clone()),
            ),
            Some(C::MembershipGiftingDetails(d)) => (
                "membershipGiftingDetails",
                Obj::default()
                    .put("giftMembershipsCount", d.gift_memberships_count)
                    .put(
                        "giftMembershipsLevelName",
                        d.gift_memberships_level_name.clone(),
                    ),
            ),
            Some(C::GiftMembershipReceivedDetails(d)) => (
                "giftMembershipReceivedDetails",
                Obj::default()
                    .put("memberLevelName", d.member_level_name.clone())
                    .put("gifterChannelId", d.gifter_channel_id.clone())
                    .put(
                        "associatedMembershipGiftingMessageId",
                        d.associated_membership_gifting_message_id.clone(),
                    ),
            ),
            Some(C::PollDetails(d)) => (
                "pollDetails",
                Obj::default()
                    .put_obj(
                        "metadata",
                        d.metadata.as_ref().map(|m| {
                            Obj::default()
                                .put("questionText", m.question_text.clone())
                                .put(
                                    "options",
                                    Some(Value::Array(
                                        m.options
                                            .iter()
                                            .map(|o| {
                                                Obj::default()
                                                    .put("optionText", o.option_text.clone())
                                                    .put("tally", o.tally.map(|t| t.to_string()))
                                                    .done()
                                            })
                                            .collect(),
                                    )),
                                )
                        }),
                    )
                    .put(
                        "status",
                        enum_name(d.status, |s: pb::live_chat_poll_details::poll_status_wrapper::PollStatus| {
                            s.as_str_name()
                        }),
                    ),
            ),
            Some(C::GiftDetails(d)) => (
                "giftDetails",
                Obj::default()
                    .put("giftName", d.gift_name.clone())
                    .put("giftDuration", d.gift_duration.as_ref().map(duration))
                    .put("jewelsAmount", d.jewels_amount)
                    .put("giftUrl", d.gift_url.clone())
                    .put("altText", d.alt_text.clone())
                    .put("language", d.language.clone())
                    .put("hasVisualEffect", d.has_visual_effect)
                    .put("comboCount", d.combo_count),
            ),
        };
        base.put_obj(key, Some(details))
    });
    let author = m.author_details.as_ref().map(|a| {
        Obj::default()
            .put("channelId", a.channel_id.clone())
            .put("channelUrl", a.channel_url.clone())
            .put("displayName", a.display_name.clone())
            .put("profileImageUrl", a.profile_image_url.clone())
            .put("isVerified", a.is_verified)
            .put("isChatOwner", a.is_chat_owner)
            .put("isChatSponsor", a.is_chat_sponsor)
            .put("isChatModerator", a.is_chat_moderator)
    });
    Obj::default()
        .put("kind", m.kind.clone())
        .put("etag", m.etag.clone())
        .put("id", m.id.clone())
        .put_obj("snippet", snippet)
        .put_obj("authorDetails", author)
        .done()
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::live_chat_message_snippet::DisplayedContent;
    use pb::live_chat_message_snippet::type_wrapper::Type;

    #[test]
    fn enum_names_become_lower_camel_case() {
        assert_eq!(lower_camel("TEXT_MESSAGE_EVENT"), "textMessageEvent");
        assert_eq!(lower_camel("PERMANENT"), "permanent");
        assert_eq!(
            lower_camel("SPONSOR_ONLY_MODE_STARTED_EVENT"),
            "sponsorOnlyModeStartedEvent"
        );
    }

    #[test]
    fn a_streamed_message_becomes_the_rest_json() {
        let m = pb::LiveChatMessage {
            kind: Some("youtube#liveChatMessage".into()),
            id: Some("m1".into()),
            snippet: Some(pb::LiveChatMessageSnippet {
                r#type: Some(Type::SuperChatEvent as i32),
                live_chat_id: Some("chat".into()),
                published_at: Some("2026-03-01T18:04:05Z".into()),
                displayed_content: Some(DisplayedContent::SuperChatDetails(
                    pb::LiveChatSuperChatDetails {
                        amount_micros: Some(5_000_000),
                        currency: Some("USD".into()),
                        amount_display_string: Some("$5.00".into()),
                        user_comment: Some("hi".into()),
                        tier: Some(2),
                    },
                )),
                ..Default::default()
            }),
            author_details: Some(pb::LiveChatMessageAuthorDetails {
                channel_id: Some("UCa".into()),
                is_chat_sponsor: Some(true),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            message_json(&m),
            serde_json::json!({
                "kind": "youtube#liveChatMessage",
                "id": "m1",
                "snippet": {
                    "type": "superChatEvent",
                    "liveChatId": "chat",
                    "publishedAt": "2026-03-01T18:04:05Z",
                    "superChatDetails": {
                        "amountMicros": "5000000",
                        "currency": "USD",
                        "amountDisplayString": "$5.00",
                        "userComment": "hi",
                        "tier": 2
                    }
                },
                "authorDetails": {"channelId": "UCa", "isChatSponsor": true}
            })
        );
    }

    #[test]
    fn unknown_enum_values_are_kept_as_numbers_in_their_name() {
        let m = pb::LiveChatMessage {
            snippet: Some(pb::LiveChatMessageSnippet {
                r#type: Some(99),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(message_json(&m)["snippet"]["type"], "unknown99");
    }

    #[test]
    fn numbers_are_read_from_strings_or_numbers() {
        let d: PaidDetails = serde_json::from_str(r#"{"amountMicros":"1500000"}"#).unwrap();
        assert_eq!(d.amount_micros, Some(1_500_000));
        let d: PaidDetails = serde_json::from_str(r#"{"amountMicros":7}"#).unwrap();
        assert_eq!(d.amount_micros, Some(7));
        assert!(serde_json::from_str::<PaidDetails>(r#"{"amountMicros":"lots"}"#).is_err());
    }
}
