//! Twitch IRC -> `ChatEvent`: PRIVMSG (with /me, bits, replies, first
//! message, badges, colours, emotes), USERNOTICE of every `msg-id`
//! (unknown ones become `other_notice`), CLEARCHAT, CLEARMSG, ROOMSTATE, and
//! channel NOTICE/HOSTTARGET as `other_notice`.
//!
//! Works on the parsed [`IRCMessage`] (tags, prefix, command, params), not on
//! twitch-irc's typed messages, so every tag stays reachable and a line
//! twitch-irc cannot type is still normalised. Nothing a line says is
//! dropped: if a known kind is missing something it needs, the line is
//! carried as `other_notice` with all its tags.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use common::schema::{
    AnnouncementDetails, Author, Badge, BanDetails, ChatClearDetails, ChatEvent, CheerDetails,
    Emote, EventBody, MessageDeleteDetails, MessageDetails, MysteryGiftDetails, OtherNoticeDetails,
    PLATFORM_TWITCH, Paid, RaidDetails, ReplyParent, Role, RoomStateDetails, SubGiftDetails,
    SubscriptionDetails, TimeoutDetails, TwitchExtras, UserRef,
};
use twitch_irc::message::{AsRawIRC, IRCMessage, IRCPrefix};
use uuid::Uuid;

/// Namespace of derived event ids (UUIDv5).
const ID_NAMESPACE: Uuid = Uuid::from_u128(0x6c1f_3e0a_9b7d_4f52_8a21_5d0c_e4b3_9f17);

/// Why a line could not become an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormaliseError {
    /// A channel command without a `#channel` parameter.
    #[error("{command} without a #channel parameter")]
    MissingChannel {
        /// The IRC command.
        command: String,
    },
    /// The channel parameter is not a Twitch login.
    #[error("{command} for invalid channel `{channel}`")]
    InvalidChannel {
        /// The IRC command.
        command: String,
        /// The channel as sent.
        channel: String,
    },
}

/// Turns IRC messages into `ChatEvent`s.
#[derive(Debug, Clone)]
pub struct Normaliser {
    include_raw: bool,
}

/// What a line is, for counting.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalised {
    /// A chat event.
    Event(Box<ChatEvent>),
    /// Connection control or our own state (PING, JOIN, USERSTATE,
    /// numerics, CAP, ...): not a chat event.
    Control,
    /// A command chatbus does not know; logged and skipped.
    Unknown,
}

/// Commands that are protocol control, never chat events.
const CONTROL: &[&str] = &[
    "PING",
    "PONG",
    "CAP",
    "JOIN",
    "PART",
    "USERSTATE",
    "GLOBALUSERSTATE",
    "RECONNECT",
    "WHISPER",
    "PASS",
    "NICK",
];

impl Normaliser {
    /// A normaliser; `include_raw` puts the raw line in each event.
    pub fn new(include_raw: bool) -> Self {
        Self { include_raw }
    }

    /// Normalises one message read at `received_at`; its raw line (when
    /// raw lines are included) is rebuilt from the parsed message.
    ///
    /// # Errors
    /// [`NormaliseError`] when a channel command has no usable channel (it
    /// cannot be routed).
    pub fn normalise(
        &self,
        msg: &IRCMessage,
        received_at: DateTime<Utc>,
    ) -> Result<Normalised, NormaliseError> {
        self.normalise_inner(msg, None, received_at)
    }

    /// Normalises one message read at `received_at` from the line `raw`
    /// (exactly as received, without its line ending), which events carry
    /// when raw lines are included.
    ///
    /// # Errors
    /// As [`Normaliser::normalise`].
    pub fn normalise_line(
        &self,
        raw: &str,
        msg: &IRCMessage,
        received_at: DateTime<Utc>,
    ) -> Result<Normalised, NormaliseError> {
        self.normalise_inner(msg, Some(raw), received_at)
    }

    /// Parses `line` (one IRC line without its ending) and normalises it;
    /// `None` when it does not parse or has no usable channel. For tools
    /// and benchmarks that start from text.
    pub fn normalise_text(&self, line: &str, received_at: DateTime<Utc>) -> Option<Normalised> {
        let msg = IRCMessage::parse(line).ok()?;
        self.normalise_inner(&msg, Some(line), received_at).ok()
    }

    fn normalise_inner(
        &self,
        msg: &IRCMessage,
        raw: Option<&str>,
        received_at: DateTime<Utc>,
    ) -> Result<Normalised, NormaliseError> {
        let command = msg.command.as_str();
        match command {
            // Channel-less NOTICEs are about our session; a PRIVMSG to a user
            // (not `#channel`) is a private notification, not channel chat.
            "NOTICE" | "PRIVMSG" if !msg.params.first().is_some_and(|p| p.starts_with('#')) => {
                return Ok(Normalised::Control);
            }
            "NOTICE" | "PRIVMSG" | "USERNOTICE" | "CLEARCHAT" | "CLEARMSG" | "ROOMSTATE"
            | "HOSTTARGET" => {}
            c if CONTROL.contains(&c) || c.bytes().all(|b| b.is_ascii_digit()) => {
                return Ok(Normalised::Control);
            }
            _ => return Ok(Normalised::Unknown),
        }
        let line = Line { msg, raw };
        let channel = line.channel()?;
        let event = self.event(&line, channel, received_at);
        Ok(Normalised::Event(Box::new(event)))
    }

    fn event(&self, line: &Line<'_>, channel: String, received_at: DateTime<Utc>) -> ChatEvent {
        let ts = line.tag("tmi-sent-ts").and_then(|t| t.parse::<i64>().ok());
        let sent_at = ts
            .filter(|ms| *ms > 0)
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single())
            .unwrap_or(received_at);
        let body = line.body();
        let id = line
            .tag("id")
            .filter(|id| !id.is_empty() && id.len() <= common::schema::MAX_ID_LEN)
            .map_or_else(|| line.derived_id(&channel, ts, received_at), str::to_owned);

        let mut event = ChatEvent::new(id, PLATFORM_TWITCH, channel, sent_at, received_at, body);
        event.channel_id = line
            .tag("room-id")
            .filter(|r| !r.is_empty())
            .map(str::to_owned);
        event.author = line.author(&event.body);
        if let EventBody::Cheer(cheer) = &event.body {
            event.paid = Some(bits_paid(cheer.bits));
        }
        if matches!(line.msg.command.as_str(), "PRIVMSG" | "USERNOTICE") {
            event.text = line.text().map(str::to_owned);
            event.emotes = event
                .text
                .as_deref()
                .map_or_else(Vec::new, |t| parse_emotes(line.tag("emotes"), t));
            event.reply_to = line.reply_parent();
        }
        event.twitch = Some(TwitchExtras {
            command: line.msg.command.clone(),
            msg_id: line.tag("msg-id").map(str::to_owned),
            tmi_sent_ts: ts,
            flags: line.tag("flags").map(str::to_owned),
            source_room_id: line
                .tag("source-room-id")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            source_id: line
                .tag("source-id")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            client_nonce: line
                .tag("client-nonce")
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
        });
        if self.include_raw {
            event.raw = Some(line.raw());
        }
        event
    }
}

/// One IRC message with convenient access to its parts.
struct Line<'a> {
    msg: &'a IRCMessage,
    /// The line as received, if known.
    raw: Option<&'a str>,
}

impl<'a> Line<'a> {
    fn tag(&self, key: &str) -> Option<&'a str> {
        self.msg.tags.0.get(key).map(String::as_str)
    }

    fn flag(&self, key: &str) -> bool {
        self.tag(key) == Some("1")
    }

    fn num<T: std::str::FromStr>(&self, key: &str) -> Option<T> {
        self.tag(key).and_then(|v| v.parse().ok())
    }

    fn nonempty(&self, key: &str) -> Option<String> {
        self.tag(key).filter(|v| !v.is_empty()).map(str::to_owned)
    }

    /// The platform's tags.
    fn platform_tags(&self) -> BTreeMap<String, String> {
        self.msg
            .tags
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    fn channel(&self) -> Result<String, NormaliseError> {
        let command = self.msg.command.clone();
        let raw = self
            .msg
            .params
            .first()
            .and_then(|p| p.strip_prefix('#'))
            .ok_or_else(|| NormaliseError::MissingChannel {
                command: command.clone(),
            })?;
        let channel = raw.to_ascii_lowercase();
        if channel.is_empty() || channel.len() > 64 || channel.contains([' ', ',']) {
            return Err(NormaliseError::InvalidChannel {
                command,
                channel: raw.to_owned(),
            });
        }
        Ok(channel)
    }

    /// The trailing text parameter (after the channel).
    fn trailing(&self) -> Option<&'a str> {
        self.msg.params.get(1).map(String::as_str)
    }

    /// The chat text, without the CTCP ACTION wrapper.
    fn text(&self) -> Option<&'a str> {
        let text = self.trailing()?;
        Some(strip_action(text).unwrap_or(text))
    }

    fn is_action(&self) -> bool {
        self.trailing().and_then(strip_action).is_some()
    }

    fn raw(&self) -> String {
        match self.raw {
            Some(raw) => raw.to_owned(),
            None => self.msg.as_raw_irc(),
        }
    }

    fn derived_id(&self, channel: &str, ts: Option<i64>, received_at: DateTime<Utc>) -> String {
        // Deterministic for lines that carry their own timestamp; lines
        // without one (ROOMSTATE, NOTICE, HOSTTARGET) are told apart by the
        // time we read them.
        let mut key = format!("twitch\n{channel}\n{}\n", self.msg.command);
        match ts {
            Some(ts) => key.push_str(&ts.to_string()),
            None => key.push_str(&received_at.timestamp_micros().to_string()),
        }
        for (k, v) in self.platform_tags() {
            key.push('\n');
            key.push_str(&k);
            key.push('=');
            key.push_str(&v);
        }
        for p in &self.msg.params {
            key.push('\n');
            key.push_str(p);
        }
        Uuid::new_v5(&ID_NAMESPACE, key.as_bytes()).to_string()
    }

    fn prefix_nick(&self) -> Option<&'a str> {
        match self.msg.prefix.as_ref()? {
            IRCPrefix::Full { nick, .. } => Some(nick.as_str()),
            IRCPrefix::HostOnly { .. } => None,
        }
    }

    fn user_login(&self) -> Option<String> {
        self.nonempty("login")
            .or_else(|| self.prefix_nick().map(str::to_owned))
            .map(|l| l.to_ascii_lowercase())
    }

    fn author(&self, body: &EventBody) -> Option<Author> {
        match self.msg.command.as_str() {
            "PRIVMSG" | "USERNOTICE" => {}
            _ => return None,
        }
        let anonymous = match body {
            EventBody::SubGift(d) => d.anonymous,
            EventBody::MysteryGift(d) => d.anonymous,
            _ => false,
        };
        if anonymous {
            return None;
        }
        let login = self.user_login()?;
        let badges = self.badges();
        let roles = self.roles(&badges);
        Some(Author {
            id: self.tag("user-id").unwrap_or_default().to_owned(),
            display_name: self
                .nonempty("display-name")
                .unwrap_or_else(|| login.clone()),
            login,
            color: self.nonempty("color"),
            badges,
            roles,
            avatar_url: None,
        })
    }

    fn badges(&self) -> Vec<Badge> {
        let info: BTreeMap<&str, &str> = self
            .tag("badge-info")
            .unwrap_or_default()
            .split(',')
            .filter_map(|b| b.split_once('/'))
            .collect();
        self.tag("badges")
            .unwrap_or_default()
            .split(',')
            .filter(|b| !b.is_empty())
            .map(|b| {
                let (name, version) = b.split_once('/').unwrap_or((b, ""));
                Badge {
                    name: name.to_owned(),
                    version: version.to_owned(),
                    info: info.get(name).map(|i| (*i).to_owned()),
                }
            })
            .collect()
    }

    fn roles(&self, badges: &[Badge]) -> Vec<Role> {
        let has = |name: &str| badges.iter().any(|b| b.name == name);
        let user_type = self.tag("user-type").unwrap_or_default();
        let mut roles = Vec::new();
        let mut add = |cond: bool, role: Role| {
            if cond {
                roles.push(role);
            }
        };
        add(has("broadcaster"), Role::Broadcaster);
        add(
            has("moderator") || self.flag("mod") || user_type == "mod",
            Role::Moderator,
        );
        add(has("vip") || self.flag("vip"), Role::Vip);
        add(
            has("subscriber") || has("founder") || self.flag("subscriber"),
            Role::Subscriber,
        );
        add(has("staff") || user_type == "staff", Role::Staff);
        add(has("admin") || user_type == "admin", Role::Admin);
        add(
            has("global_mod") || user_type == "global_mod",
            Role::GlobalModerator,
        );
        add(has("turbo") || self.flag("turbo"), Role::Turbo);
        add(has("partner"), Role::Partner);
        roles
    }

    fn reply_parent(&self) -> Option<ReplyParent> {
        let message_id = self.nonempty("reply-parent-msg-id")?;
        let thread = self
            .nonempty("reply-thread-parent-msg-id")
            .filter(|t| *t != message_id);
        Some(ReplyParent {
            message_id,
            user_id: self.nonempty("reply-parent-user-id"),
            user_login: self.nonempty("reply-parent-user-login"),
            display_name: self.nonempty("reply-parent-display-name"),
            text: self.nonempty("reply-parent-msg-body"),
            thread_message_id: thread,
        })
    }

    fn message_details(&self) -> MessageDetails {
        MessageDetails {
            first_message: self.flag("first-msg"),
            returning_chatter: self.flag("returning-chatter"),
            highlighted: self.tag("msg-id") == Some("highlighted-message"),
            reward_id: self.nonempty("custom-reward-id"),
        }
    }

    fn other_notice(&self, notice_type: String) -> EventBody {
        EventBody::OtherNotice(OtherNoticeDetails {
            notice_type,
            system_message: self.nonempty("system-msg"),
            tags: self.platform_tags(),
        })
    }

    fn body(&self) -> EventBody {
        match self.msg.command.as_str() {
            "PRIVMSG" => self.privmsg_body(),
            "USERNOTICE" => self.usernotice_body(),
            "CLEARCHAT" => self.clearchat_body(),
            "CLEARMSG" => self.clearmsg_body(),
            "ROOMSTATE" => self.roomstate_body(),
            "NOTICE" => EventBody::OtherNotice(OtherNoticeDetails {
                notice_type: self.nonempty("msg-id").unwrap_or_else(|| "notice".into()),
                system_message: self.trailing().map(str::to_owned),
                tags: self.platform_tags(),
            }),
            other => EventBody::OtherNotice(OtherNoticeDetails {
                notice_type: other.to_ascii_lowercase(),
                system_message: self.trailing().map(str::to_owned),
                tags: self.platform_tags(),
            }),
        }
    }

    fn privmsg_body(&self) -> EventBody {
        let details = self.message_details();
        match self.num::<u64>("bits").filter(|b| *b > 0) {
            Some(bits) => EventBody::Cheer(CheerDetails {
                bits,
                action: self.is_action(),
                message: details,
            }),
            None if self.is_action() => EventBody::Action(details),
            None => EventBody::Message(details),
        }
    }

    fn subscription(&self) -> SubscriptionDetails {
        SubscriptionDetails {
            plan: self
                .tag("msg-param-sub-plan")
                .unwrap_or_default()
                .to_owned(),
            plan_name: self.nonempty("msg-param-sub-plan-name"),
            cumulative_months: self.num("msg-param-cumulative-months"),
            streak_months: self
                .flag("msg-param-should-share-streak")
                .then(|| self.num("msg-param-streak-months"))
                .flatten(),
            multimonth_duration: self.num("msg-param-multimonth-duration"),
            system_message: self.nonempty("system-msg"),
        }
    }

    fn usernotice_body(&self) -> EventBody {
        let msg_id = self.tag("msg-id").unwrap_or_default();
        let anonymous_login = self.tag("login") == Some("ananonymousgifter");
        match msg_id {
            "sub" => EventBody::Subscription(self.subscription()),
            "resub" => EventBody::Resub(self.subscription()),
            "subgift" | "anonsubgift" => {
                let Some(login) = self.nonempty("msg-param-recipient-user-name") else {
                    return self.other_notice(msg_id.to_owned());
                };
                EventBody::SubGift(SubGiftDetails {
                    recipient: UserRef {
                        id: self.nonempty("msg-param-recipient-id"),
                        login: login.to_ascii_lowercase(),
                        display_name: self.nonempty("msg-param-recipient-display-name"),
                    },
                    plan: self
                        .tag("msg-param-sub-plan")
                        .unwrap_or_default()
                        .to_owned(),
                    plan_name: self.nonempty("msg-param-sub-plan-name"),
                    months: self.num("msg-param-months"),
                    gift_months: self.num("msg-param-gift-months"),
                    anonymous: msg_id == "anonsubgift" || anonymous_login,
                    system_message: self.nonempty("system-msg"),
                })
            }
            "submysterygift" | "anonsubmysterygift" => EventBody::MysteryGift(MysteryGiftDetails {
                count: self.num("msg-param-mass-gift-count").unwrap_or(0),
                plan: self
                    .tag("msg-param-sub-plan")
                    .unwrap_or_default()
                    .to_owned(),
                sender_total: self.num::<u32>("msg-param-sender-count").filter(|n| *n > 0),
                anonymous: msg_id == "anonsubmysterygift" || anonymous_login,
                system_message: self.nonempty("system-msg"),
            }),
            "raid" => EventBody::Raid(RaidDetails {
                viewer_count: self.num("msg-param-viewerCount").unwrap_or(0),
                system_message: self.nonempty("system-msg"),
            }),
            "announcement" => EventBody::Announcement(AnnouncementDetails {
                color: self.nonempty("msg-param-color"),
            }),
            "" => self.other_notice("usernotice".into()),
            other => self.other_notice(other.to_owned()),
        }
    }

    fn clearchat_body(&self) -> EventBody {
        let Some(login) = self.trailing().filter(|l| !l.is_empty()) else {
            return EventBody::ChatClear(ChatClearDetails {});
        };
        let user = UserRef {
            id: self.nonempty("target-user-id"),
            login: login.to_ascii_lowercase(),
            display_name: None,
        };
        match self.num::<u64>("ban-duration") {
            Some(duration_secs) => EventBody::Timeout(TimeoutDetails {
                user,
                duration_secs,
            }),
            None => EventBody::Ban(BanDetails { user }),
        }
    }

    fn clearmsg_body(&self) -> EventBody {
        let Some(target) = self.nonempty("target-msg-id") else {
            return self.other_notice("clearmsg".into());
        };
        let text = self
            .trailing()
            .map(|t| strip_action(t).unwrap_or(t).to_owned());
        EventBody::MessageDelete(MessageDeleteDetails {
            target_message_id: target,
            user_login: self.nonempty("login").map(|l| l.to_ascii_lowercase()),
            text,
        })
    }

    fn roomstate_body(&self) -> EventBody {
        let followers = self.num::<i64>("followers-only");
        EventBody::RoomState(RoomStateDetails {
            emote_only: self.tag("emote-only").map(|v| v == "1"),
            followers_only: followers.map(|m| m >= 0),
            followers_only_minutes: followers.and_then(|m| u64::try_from(m).ok()),
            unique_chat: self.tag("r9k").map(|v| v == "1"),
            slow_secs: self.num("slow"),
            subs_only: self.tag("subs-only").map(|v| v == "1"),
        })
    }
}

/// `\x01ACTION text\x01` -> `text` (the closing `\x01` is optional, as some
/// clients omit it).
fn strip_action(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("\u{1}ACTION ")?;
    Some(inner.strip_suffix('\u{1}').unwrap_or(inner))
}

/// Parses Twitch's `emotes` tag (`id:start-end,start-end/id:...`, inclusive
/// code point ranges) against `text`. Emote ids may themselves contain `/`
/// (modified emotes such as `80481_/3`), so a segment without `:ranges`
/// belongs to the next one. Ranges outside the text are dropped (counted);
/// the result is sorted by position with `end` exclusive.
pub fn parse_emotes(tag: Option<&str>, text: &str) -> Vec<Emote> {
    let Some(tag) = tag.filter(|t| !t.is_empty()) else {
        return Vec::new();
    };
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut pending_id = String::new();
    for segment in tag.split('/') {
        let parsed = segment
            .rsplit_once(':')
            .and_then(|(id, ranges)| parse_ranges(ranges).map(|r| (id, r)));
        let Some((id_part, ranges)) = parsed else {
            pending_id.push_str(segment);
            pending_id.push('/');
            continue;
        };
        let id = std::mem::take(&mut pending_id) + id_part;
        for (start, end_inclusive) in ranges {
            let end = end_inclusive + 1;
            if start >= end || end > chars.len() {
                metrics::counter!("chatbus_ingestor_emotes_out_of_range_total").increment(1);
                tracing::debug!(emote = %id, start, end_inclusive, len = chars.len(), "emote range outside the text; dropped");
                continue;
            }
            out.push(Emote {
                id: id.clone(),
                name: chars[start..end].iter().collect(),
                start,
                end,
            });
        }
    }
    out.sort_by_key(|e| (e.start, e.end));
    out
}

fn parse_ranges(ranges: &str) -> Option<Vec<(usize, usize)>> {
    ranges
        .split(',')
        .map(|r| {
            let (a, b) = r.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

/// Bits as a payment, in the shape every platform's money takes
/// (`currency` `BITS`, one bit = 1,000,000 micros).
pub fn bits_paid(bits: u64) -> Paid {
    Paid {
        amount_micros: i64::try_from(bits)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000),
        currency: "BITS".to_owned(),
        display: if bits == 1 {
            "1 bit".to_owned()
        } else {
            format!("{bits} bits")
        },
        tier: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::schema::EventKind;

    fn norm(line: &str) -> ChatEvent {
        let msg = IRCMessage::parse(line).unwrap();
        match Normaliser::new(true).normalise(&msg, Utc::now()).unwrap() {
            Normalised::Event(e) => *e,
            other => panic!("expected an event for {line}: {other:?}"),
        }
    }

    #[test]
    fn privmsg_with_badges_colour_and_emotes() {
        let e = norm(
            "@badge-info=subscriber/22;badges=moderator/1,subscriber/12;color=#19E6E6;display-name=randers;emotes=1902:6-10,29-33,35-39/499:45-46,48-49/490:51-52/25:0-4,12-16,18-22;flags=;id=f9c5774b-faa7-4378-b1af-c4e08b532dc2;mod=1;room-id=11148817;subscriber=1;tmi-sent-ts=1594556065407;turbo=0;user-id=40286300;user-type=mod :randers!randers@randers.tmi.twitch.tv PRIVMSG #pajlada :Kappa Keepo Kappa Kappa test Keepo Keepo 123 :) :) :P",
        );
        assert_eq!(e.kind(), EventKind::Message);
        assert_eq!(e.id, "f9c5774b-faa7-4378-b1af-c4e08b532dc2");
        assert_eq!(e.channel, "pajlada");
        assert_eq!(e.channel_id.as_deref(), Some("11148817"));
        assert_eq!(e.sent_at.timestamp_millis(), 1_594_556_065_407);
        let a = e.author.as_ref().unwrap();
        assert_eq!(
            (a.login.as_str(), a.id.as_str(), a.color.as_deref()),
            ("randers", "40286300", Some("#19E6E6"))
        );
        assert_eq!(a.roles, [Role::Moderator, Role::Subscriber]);
        assert_eq!(
            a.badges[1],
            Badge {
                name: "subscriber".into(),
                version: "12".into(),
                info: Some("22".into())
            }
        );
        let names: Vec<_> = e.emotes.iter().map(|x| x.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "Kappa", "Keepo", "Kappa", "Kappa", "Keepo", "Keepo", ":)", ":)", ":P"
            ]
        );
        assert_eq!((e.emotes[0].start, e.emotes[0].end), (0, 5));
        e.validate().unwrap();
        assert!(e.raw.as_deref().unwrap().contains("PRIVMSG #pajlada"));
    }

    #[test]
    fn emote_positions_count_code_points_in_non_ascii_text() {
        // 😂 is one code point but two UTF-16 units and four bytes.
        let e = norm(
            "@badge-info=;badges=;color=#FF0000;display-name=Mm2PL;emotes=25:0-4,8-12;id=2e0d3a1f-0000-4000-8000-000000000001;room-id=11148817;tmi-sent-ts=1594556065407;user-id=117691339 :mm2pl!mm2pl@mm2pl.tmi.twitch.tv PRIVMSG #pajlada :Kappa 😂 Kappa",
        );
        let spans: Vec<_> = e
            .emotes
            .iter()
            .map(|x| (x.name.as_str(), x.start, x.end))
            .collect();
        assert_eq!(spans, [("Kappa", 0, 5), ("Kappa", 8, 13)]);
        let e = norm(
            "@emotes=300235054:0-8,12-20;id=x1;room-id=1;tmi-sent-ts=1 :a!a@a PRIVMSG #c :forsenJoy 👌 forsenJoy 👌",
        );
        assert!(e.emotes.iter().all(|x| x.name == "forsenJoy"));
        assert_eq!((e.emotes[1].start, e.emotes[1].end), (12, 21));
        let e = norm(
            "@emotes=25:11-15;id=x2;room-id=1;tmi-sent-ts=1 :a!a@a PRIVMSG #c :Ça va? 你好吗 Kappa",
        );
        assert_eq!(e.emotes[0].name, "Kappa");
    }

    #[test]
    fn action_messages_drop_the_ctcp_wrapper_and_keep_emote_positions() {
        let e = norm(
            "@badge-info=subscriber/52;badges=broadcaster/1,subscriber/48,partner/1;color=#CC44FF;display-name=pajlada;emotes=25:6-10/1902:16-20;flags=;id=0c46c822-f668-4427-b19a-a1a0780a44ae;mod=0;room-id=11148817;subscriber=1;tmi-sent-ts=1587291881363;turbo=0;user-id=11148817;user-type= :pajlada!pajlada@pajlada.tmi.twitch.tv PRIVMSG #pajlada :\u{1}ACTION -tags Kappa 123 Keepo\u{1}",
        );
        assert_eq!(e.kind(), EventKind::Action);
        assert_eq!(e.text.as_deref(), Some("-tags Kappa 123 Keepo"));
        assert_eq!(e.emotes[0].name, "Kappa");
        assert_eq!(e.emotes[1].name, "Keepo");
        assert_eq!(
            e.author.unwrap().roles,
            [Role::Broadcaster, Role::Subscriber, Role::Partner]
        );
    }

    #[test]
    fn bits_make_a_cheer() {
        let e = norm(
            "@badge-info=;badges=bits/100;bits=1;color=#004B49;display-name=TETYYS;emotes=;flags=;id=d7f03a35-f339-41ca-b4d4-7c0721438570;mod=0;room-id=11148817;subscriber=0;tmi-sent-ts=1594571566672;turbo=0;user-id=36175310;user-type= :tetyys!tetyys@tetyys.tmi.twitch.tv PRIVMSG #pajlada :trihard1",
        );
        match e.body {
            EventBody::Cheer(d) => assert_eq!((d.bits, d.action), (1, false)),
            other => panic!("{other:?}"),
        }
        let paid = e.paid.expect("a cheer is paid");
        assert_eq!(
            (
                paid.amount_micros,
                paid.currency.as_str(),
                paid.display.as_str(),
                paid.tier
            ),
            (1_000_000, "BITS", "1 bit", None)
        );
        assert_eq!(bits_paid(100).display, "100 bits");
        assert!(norm_plain_has_no_paid());
    }

    fn norm_plain_has_no_paid() -> bool {
        norm("@badge-info=;badges=;color=;display-name=a;emotes=;id=x1;mod=0;room-id=1;subscriber=0;tmi-sent-ts=1594571566672;turbo=0;user-id=2;user-type= :a!a@a.tmi.twitch.tv PRIVMSG #pajlada :hi")
            .paid
            .is_none()
    }

    #[test]
    fn replies_and_first_messages() {
        let e = norm(
            "@badge-info=;badges=;client-nonce=cd56193132f934ac71b4d5ac488d4bd6;color=;display-name=LeftSwing;emotes=;first-msg=1;flags=;id=5b4f63a9-776f-4fce-bf3c-d9707f52e32d;mod=0;reply-parent-display-name=Retoon;reply-parent-msg-body=hello;reply-parent-msg-id=6b13e51b-7ecb-43b5-ba5b-2bb5288df696;reply-parent-user-id=37940952;reply-parent-user-login=retoon;returning-chatter=0;room-id=37940952;subscriber=0;tmi-sent-ts=1673925983585;turbo=0;user-id=133651738;user-type= :leftswing!leftswing@leftswing.tmi.twitch.tv PRIVMSG #retoon :@Retoon yes",
        );
        let r = e.reply_to.unwrap();
        assert_eq!(r.message_id, "6b13e51b-7ecb-43b5-ba5b-2bb5288df696");
        assert_eq!(r.user_login.as_deref(), Some("retoon"));
        assert_eq!(r.text.as_deref(), Some("hello"));
        assert!(matches!(
            e.body,
            EventBody::Message(MessageDetails {
                first_message: true,
                ..
            })
        ));
        let a = e.author.unwrap();
        assert_eq!(a.display_name, "LeftSwing");
        assert_eq!(a.color, None);
        assert_eq!(
            e.twitch.unwrap().client_nonce.as_deref(),
            Some("cd56193132f934ac71b4d5ac488d4bd6")
        );
    }

    #[test]
    fn usernotices_map_to_their_kinds() {
        let sub = norm(
            "@badge-info=subscriber/0;badges=subscriber/0,premium/1;color=;display-name=fallenseraphhh;emotes=;flags=;id=2a9bea11-a80a-49a0-a498-1642d457f775;login=fallenseraphhh;mod=0;msg-id=sub;msg-param-cumulative-months=1;msg-param-months=0;msg-param-should-share-streak=0;msg-param-sub-plan-name=Channel\\sSubscription\\s(xqcow);msg-param-sub-plan=Prime;room-id=71092938;subscriber=1;system-msg=fallenseraphhh\\ssubscribed\\swith\\sTwitch\\sPrime.;tmi-sent-ts=1582685713242;user-id=224005980;user-type= :tmi.twitch.tv USERNOTICE #xqcow",
        );
        match &sub.body {
            EventBody::Subscription(d) => {
                assert_eq!(d.plan, "Prime");
                assert_eq!(d.plan_name.as_deref(), Some("Channel Subscription (xqcow)"));
                assert_eq!(d.cumulative_months, Some(1));
                assert_eq!(
                    d.system_message.as_deref(),
                    Some("fallenseraphhh subscribed with Twitch Prime.")
                );
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(sub.author.unwrap().login, "fallenseraphhh");
        assert_eq!(sub.text, None);

        let resub = norm(
            "@badge-info=subscriber/2;badges=subscriber/0,battlerite_1/1;color=#0000FF;display-name=Gutrin;emotes=1035663:0-3;flags=;id=e0975c76-054c-4954-8cb0-91b8867ec1ca;login=gutrin;mod=0;msg-id=resub;msg-param-cumulative-months=2;msg-param-months=0;msg-param-should-share-streak=1;msg-param-streak-months=2;msg-param-sub-plan-name=Channel\\sSubscription\\s(xqcow);msg-param-sub-plan=1000;room-id=71092938;subscriber=1;system-msg=Gutrin\\ssubscribed\\sat\\sTier\\s1.;tmi-sent-ts=1581713640019;user-id=21156217;user-type= :tmi.twitch.tv USERNOTICE #xqcow :xqcL",
        );
        assert_eq!(resub.kind(), EventKind::Resub);
        assert_eq!(resub.text.as_deref(), Some("xqcL"));
        assert_eq!(resub.emotes[0].name, "xqcL");
        assert!(matches!(
            resub.body,
            EventBody::Resub(SubscriptionDetails {
                streak_months: Some(2),
                ..
            })
        ));

        let raid = norm(
            "@badge-info=;badges=glhf-pledge/1;color=#FF69B4;display-name=iamelisabete;emotes=;flags=;id=bb99dda7-3736-4583-9114-52aa11b23d17;login=iamelisabete;mod=0;msg-id=raid;msg-param-displayName=iamelisabete;msg-param-login=iamelisabete;msg-param-viewerCount=430;room-id=71092938;subscriber=0;system-msg=430\\sraiders\\sfrom\\siamelisabete\\shave\\sjoined!;tmi-sent-ts=1594517796120;user-id=155874595;user-type= :tmi.twitch.tv USERNOTICE #xqcow",
        );
        assert!(matches!(
            raid.body,
            EventBody::Raid(RaidDetails {
                viewer_count: 430,
                ..
            })
        ));
        assert_eq!(raid.author.unwrap().login, "iamelisabete");

        let gift = norm(
            "@badge-info=;badges=sub-gifter/50;color=;display-name=AdamAtReflectStudios;emotes=;flags=;id=e21409b1-d25d-4a1a-b5cf-ef27d8b7030e;login=adamatreflectstudios;mod=0;msg-id=subgift;msg-param-gift-months=1;msg-param-months=2;msg-param-recipient-display-name=qatarking24xd;msg-param-recipient-id=236653628;msg-param-recipient-user-name=qatarking24xd;msg-param-sender-count=0;msg-param-sub-plan-name=Channel\\sSubscription\\s(xqcow);msg-param-sub-plan=1000;room-id=71092938;subscriber=0;system-msg=AdamAtReflectStudios\\sgifted\\sa\\sTier\\s1\\ssub\\sto\\sqatarking24xd!;tmi-sent-ts=1594583782376;user-id=211711554;user-type= :tmi.twitch.tv USERNOTICE #xqcow",
        );
        match &gift.body {
            EventBody::SubGift(d) => {
                assert_eq!(d.recipient.login, "qatarking24xd");
                assert_eq!(d.recipient.id.as_deref(), Some("236653628"));
                assert_eq!(
                    (d.months, d.gift_months, d.anonymous),
                    (Some(2), Some(1), false)
                );
            }
            other => panic!("{other:?}"),
        }

        let anon = norm(
            "@badge-info=;badges=;color=;display-name=AnAnonymousGifter;emotes=;flags=;id=8db97752-3dee-460b-9001-e925d0e2ba5b;login=ananonymousgifter;mod=0;msg-id=submysterygift;msg-param-mass-gift-count=10;msg-param-sub-plan=1000;room-id=71092938;subscriber=0;system-msg=An\\sanonymous\\suser\\sis\\sgifting\\s10\\sTier\\s1\\sSubs;tmi-sent-ts=1594583777669;user-id=274598607;user-type= :tmi.twitch.tv USERNOTICE #xqcow",
        );
        assert!(matches!(
            anon.body,
            EventBody::MysteryGift(MysteryGiftDetails {
                count: 10,
                anonymous: true,
                ..
            })
        ));
        assert!(anon.author.is_none(), "anonymous gifts have no author");

        let ann = norm(
            "@badge-info=subscriber/88;badges=moderator/1,subscriber/72;color=#19E6E6;display-name=randers;emotes=185989:11-15/25:17-21/1902:23-27;flags=;id=9045a344-75b9-44fa-af49-c413bcb39559;login=randers;mod=1;msg-id=announcement;msg-param-color=PRIMARY;room-id=11148817;subscriber=1;system-msg=;tmi-sent-ts=1780872797175;user-id=40286300;user-type=mod;vip=0 :tmi.twitch.tv USERNOTICE #pajlada :hello pajs pajaH Kappa Keepo",
        );
        assert!(
            matches!(&ann.body, EventBody::Announcement(AnnouncementDetails { color: Some(c) }) if c == "PRIMARY")
        );
        assert_eq!(
            ann.emotes
                .iter()
                .map(|e| e.name.as_str())
                .collect::<Vec<_>>(),
            ["pajaH", "Kappa", "Keepo"]
        );
    }

    #[test]
    fn unknown_usernotices_are_carried_with_all_tags() {
        let e = norm(
            "@badge-info=;badges=;color=;display-name=Viewer;emotes=;flags=;id=aaaa0000-0000-4000-8000-000000000000;login=viewer;mod=0;msg-id=brand-new-thing;msg-param-x=1;room-id=11148817;subscriber=0;system-msg=Something\\snew;tmi-sent-ts=1594583777669;user-id=7;user-type= :tmi.twitch.tv USERNOTICE #pajlada",
        );
        match &e.body {
            EventBody::OtherNotice(d) => {
                assert_eq!(d.notice_type, "brand-new-thing");
                assert_eq!(d.system_message.as_deref(), Some("Something new"));
                assert_eq!(d.tags["msg-param-x"], "1");
                assert!(!d.tags.keys().any(|k| k.starts_with("chatbus-")));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn moderation_lines() {
        let t = norm(
            "@ban-duration=1;room-id=11148817;target-user-id=148973258;tmi-sent-ts=1594553828245 :tmi.twitch.tv CLEARCHAT #pajlada :fabzeef",
        );
        assert!(
            matches!(&t.body, EventBody::Timeout(TimeoutDetails { duration_secs: 1, user }) if user.login == "fabzeef" && user.id.as_deref() == Some("148973258"))
        );
        let b = norm(
            "@room-id=11148817;target-user-id=70948394;tmi-sent-ts=1594561360331 :tmi.twitch.tv CLEARCHAT #pajlada :weeb123",
        );
        assert!(matches!(&b.body, EventBody::Ban(BanDetails { user }) if user.login == "weeb123"));
        let c =
            norm("@room-id=40286300;tmi-sent-ts=1594561392337 :tmi.twitch.tv CLEARCHAT #randers");
        assert_eq!(c.kind(), EventKind::ChatClear);
        assert!(c.author.is_none());
        let d = norm(
            "@login=randers;room-id=;target-msg-id=15e5164d-f8e6-4aec-baf4-2d6a330760c4;tmi-sent-ts=1594562632383 :tmi.twitch.tv CLEARMSG #pajlada :\u{1}ACTION test\u{1}",
        );
        match &d.body {
            EventBody::MessageDelete(m) => {
                assert_eq!(m.target_message_id, "15e5164d-f8e6-4aec-baf4-2d6a330760c4");
                assert_eq!(m.user_login.as_deref(), Some("randers"));
                assert_eq!(m.text.as_deref(), Some("test"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(d.channel_id, None, "empty room-id is no id");
        // Derived ids are stable for lines with a timestamp.
        assert_eq!(d.id, norm("@login=randers;room-id=;target-msg-id=15e5164d-f8e6-4aec-baf4-2d6a330760c4;tmi-sent-ts=1594562632383 :tmi.twitch.tv CLEARMSG #pajlada :\u{1}ACTION test\u{1}").id);
    }

    #[test]
    fn roomstate_partial_and_full() {
        let full = norm(
            "@emote-only=1;followers-only=10;r9k=1;rituals=0;room-id=40286300;slow=5;subs-only=1 :tmi.twitch.tv ROOMSTATE #randers",
        );
        assert_eq!(
            full.body,
            EventBody::RoomState(RoomStateDetails {
                emote_only: Some(true),
                followers_only: Some(true),
                followers_only_minutes: Some(10),
                unique_chat: Some(true),
                slow_secs: Some(5),
                subs_only: Some(true),
            })
        );
        let partial = norm("@room-id=40286300;slow=10 :tmi.twitch.tv ROOMSTATE #randers");
        assert_eq!(
            partial.body,
            EventBody::RoomState(RoomStateDetails {
                slow_secs: Some(10),
                ..Default::default()
            })
        );
        let off = norm("@followers-only=-1;room-id=1 :tmi.twitch.tv ROOMSTATE #x");
        assert!(matches!(
            off.body,
            EventBody::RoomState(RoomStateDetails {
                followers_only: Some(false),
                followers_only_minutes: None,
                ..
            })
        ));
    }

    #[test]
    fn control_and_unknown_lines_are_not_events() {
        let n = Normaliser::new(false);
        for line in [
            "PING :tmi.twitch.tv",
            ":tmi.twitch.tv 001 justinfan1 :Welcome, GLHF!",
            ":justinfan1!justinfan1@justinfan1.tmi.twitch.tv JOIN #pajlada",
            ":tmi.twitch.tv NOTICE * :Login authentication failed",
            "@badge-info=;badges=;color=;display-name=x;emote-sets=0;mod=0;subscriber=0;user-type= :tmi.twitch.tv USERSTATE #x",
        ] {
            let msg = IRCMessage::parse(line).unwrap();
            assert_eq!(
                n.normalise(&msg, Utc::now()).unwrap(),
                Normalised::Control,
                "{line}"
            );
        }
        let msg = IRCMessage::parse(":tmi.twitch.tv FOOBAR #x :y").unwrap();
        assert_eq!(n.normalise(&msg, Utc::now()).unwrap(), Normalised::Unknown);
        let msg = IRCMessage::parse(":tmi.twitch.tv USERNOTICE").unwrap();
        assert!(matches!(
            n.normalise(&msg, Utc::now()),
            Err(NormaliseError::MissingChannel { .. })
        ));
        let msg =
            IRCMessage::parse(":jtv!jtv@jtv.tmi.twitch.tv PRIVMSG someuser :X is now hosting you.")
                .unwrap();
        assert_eq!(n.normalise(&msg, Utc::now()).unwrap(), Normalised::Control);
    }

    #[test]
    fn emote_tags_with_slashes_in_ids_and_bad_ranges() {
        let text = "\u{E0000}-tags pajaW_/3.0";
        let e = parse_emotes(Some("80481_/3:7-14"), text);
        assert_eq!(e.len(), 1);
        assert_eq!(
            (e[0].id.as_str(), e[0].name.as_str()),
            ("80481_/3", "pajaW_/3")
        );
        assert!(parse_emotes(Some("25:0-100"), "Kappa").is_empty());
        assert!(parse_emotes(Some("garbage"), "Kappa").is_empty());
        assert!(parse_emotes(Some("25:3-1"), "Kappa").is_empty());
        assert_eq!(parse_emotes(Some("25:0-4"), "Kappa")[0].end, 5);
    }

    #[test]
    fn negative_timestamps_fall_back_to_received_time() {
        let line = "@login=supinic;room-id=;target-msg-id=e8a4dcfe-9db3-43eb-98d4-b5101ba6a20e;tmi-sent-ts=-6795364578871 :tmi.twitch.tv CLEARMSG #pajlada :this is retarded";
        let now = Utc::now();
        let msg = IRCMessage::parse(line).unwrap();
        let Normalised::Event(e) = Normaliser::new(false).normalise(&msg, now).unwrap() else {
            panic!()
        };
        assert_eq!(e.sent_at, now);
        assert_eq!(e.twitch.unwrap().tmi_sent_ts, Some(-6_795_364_578_871));
        assert!(e.raw.is_none());
    }

    #[test]
    fn the_line_as_received_is_the_raw_line() {
        let raw = "@id=abc;room-id=1 :a!a@a PRIVMSG #c :hi";
        let msg = IRCMessage::parse(raw).unwrap();
        let Normalised::Event(e) = Normaliser::new(true)
            .normalise_line("exact line", &msg, Utc::now())
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(e.raw.as_deref(), Some("exact line"));
        let Normalised::Event(e) = Normaliser::new(true).normalise(&msg, Utc::now()).unwrap()
        else {
            panic!()
        };
        let rebuilt = IRCMessage::parse(e.raw.as_deref().unwrap()).unwrap();
        assert_eq!(rebuilt, msg, "rebuilt from the message (tags in any order)");
    }
}
