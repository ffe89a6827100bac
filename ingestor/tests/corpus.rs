//! Every line of the real Twitch IRC corpus (testdata/corpus, a copy of
//! ../shared/corpus) goes through the normaliser: no panic, the expected
//! kind for every chat command, valid events that survive the wire format.

use std::collections::{BTreeMap, HashSet};

use chrono::Utc;
use common::schema::{ChatEvent, EventBody, EventKind};
use ingestor::platforms::twitch::normalise::{Normalised, Normaliser};
use twitch_irc::message::IRCMessage;

fn tag<'a>(msg: &'a IRCMessage, key: &str) -> Option<&'a str> {
    msg.tags.0.get(key).map(String::as_str)
}

/// The kind a line must become, from the raw tags alone.
fn expected_kind(msg: &IRCMessage) -> Option<EventKind> {
    let is_channel = msg.params.first().is_some_and(|p| p.starts_with('#'));
    Some(match msg.command.as_str() {
        "PRIVMSG" if is_channel => {
            let action = msg
                .params
                .get(1)
                .is_some_and(|t| t.starts_with("\u{1}ACTION "));
            if tag(msg, "bits")
                .and_then(|b| b.parse::<u64>().ok())
                .is_some_and(|b| b > 0)
            {
                EventKind::Cheer
            } else if action {
                EventKind::Action
            } else {
                EventKind::Message
            }
        }
        "USERNOTICE" => match tag(msg, "msg-id").unwrap_or_default() {
            "sub" => EventKind::Subscription,
            "resub" => EventKind::Resub,
            "subgift" | "anonsubgift" => EventKind::SubGift,
            "submysterygift" | "anonsubmysterygift" => EventKind::MysteryGift,
            "raid" => EventKind::Raid,
            "announcement" => EventKind::Announcement,
            _ => EventKind::OtherNotice,
        },
        "CLEARCHAT" => match (msg.params.get(1), tag(msg, "ban-duration")) {
            (None, _) => EventKind::ChatClear,
            (Some(_), Some(_)) => EventKind::Timeout,
            (Some(_), None) => EventKind::Ban,
        },
        "CLEARMSG" => EventKind::MessageDelete,
        "ROOMSTATE" => EventKind::RoomState,
        "NOTICE" | "HOSTTARGET" if is_channel => EventKind::OtherNotice,
        _ => return None,
    })
}

#[test]
fn every_corpus_line_normalises_to_the_expected_kind() {
    let lines = testkit::corpus::lines();
    assert_eq!(lines.len(), 673, "the corpus has 673 lines");
    let normaliser = Normaliser::new(true);
    let mut kinds: BTreeMap<EventKind, usize> = BTreeMap::new();
    let mut control = 0;
    let mut ids = HashSet::new();
    for line in &lines {
        let msg = IRCMessage::parse(line)
            .unwrap_or_else(|e| panic!("corpus line does not parse ({e}): {line}"));
        let result = normaliser.normalise(&msg, Utc::now());
        match (expected_kind(&msg), result) {
            (Some(kind), Ok(Normalised::Event(event))) => {
                assert_eq!(event.kind(), kind, "{line}");
                event
                    .validate()
                    .unwrap_or_else(|e| panic!("invalid event ({e}) from {line}"));
                // The wire form round-trips.
                let back = ChatEvent::from_json(&event.to_json().unwrap()).unwrap();
                assert_eq!(&back, &*event);
                // The raw line re-parses to the same message.
                let raw = IRCMessage::parse(event.raw.as_deref().unwrap()).unwrap();
                assert_eq!(raw, msg, "raw line carries everything");
                let key = common::routing::routing_key(&event.platform, &event.channel);
                assert_eq!(key, format!("chat.twitch.{}", event.channel));
                ids.insert(event.id.clone());
                *kinds.entry(kind).or_default() += 1;
            }
            (None, Ok(Normalised::Control | Normalised::Unknown)) => control += 1,
            (want, got) => panic!("line {line}: expected {want:?}, got {got:?}"),
        }
    }
    // Every chat-command line became an event; the counts match SOURCES.md.
    let events: usize = kinds.values().sum();
    assert_eq!(events + control, lines.len());
    assert_eq!(kinds[&EventKind::MessageDelete], 5);
    assert_eq!(kinds[&EventKind::RoomState], 12);
    assert_eq!(
        kinds[&EventKind::Ban] + kinds[&EventKind::Timeout] + kinds[&EventKind::ChatClear],
        73
    );
    let privmsg = kinds[&EventKind::Message] + kinds[&EventKind::Action] + kinds[&EventKind::Cheer];
    // 389 PRIVMSG lines, one of them a private notice to a user (no #channel).
    assert_eq!(privmsg, 388);
    // Events are told apart (duplicate ids only where the corpus repeats a
    // message id, e.g. the same message seen in two fixtures).
    assert!(
        ids.len() as f64 > events as f64 * 0.97,
        "{} ids for {events} events",
        ids.len()
    );
    // Gaps come from the ingestor; the YouTube-only kinds have their own
    // tests (tests/it/youtube.rs and the youtube normaliser's); stream
    // status comes from Helix and the YouTube API (tests/it/status.rs);
    // privacy events come from the consumer's purges, not a platform.
    let not_from_irc = [
        EventKind::Gap,
        EventKind::SuperChat,
        EventKind::SuperSticker,
        EventKind::ChatEnded,
        EventKind::StreamOnline,
        EventKind::StreamOffline,
        EventKind::StreamUpdate,
        EventKind::Privacy,
    ];
    for kind in EventKind::ALL {
        if !not_from_irc.contains(&kind) {
            assert!(
                kinds.get(&kind).copied().unwrap_or(0) > 0,
                "the corpus exercises {kind}"
            );
        }
    }
}

#[test]
fn representative_lines_keep_their_key_fields() {
    let lines = testkit::corpus::lines();
    let n = Normaliser::new(false);
    let event = |needle: &str| -> ChatEvent {
        let line = lines
            .iter()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no corpus line with {needle}"));
        match n
            .normalise(&IRCMessage::parse(line).unwrap(), Utc::now())
            .unwrap()
        {
            Normalised::Event(e) => *e,
            other => panic!("{other:?}"),
        }
    };
    // Non-ASCII text with an emoji between emotes: code point positions.
    let e = event("Kappa 😂 Kappa");
    let names: Vec<_> = e
        .emotes
        .iter()
        .map(|x| (x.name.as_str(), x.start, x.end))
        .collect();
    assert_eq!(names, [("Kappa", 0, 5), ("Kappa", 8, 13)]);
    let e = event("forsenJoy 👌 forsenJoy 👌 forsenJoy 👌");
    assert!(e.emotes.len() == 3 && e.emotes.iter().all(|x| x.name == "forsenJoy"));
    let e = event("🎷 Jebaited");
    assert_eq!(
        (e.emotes[0].name.as_str(), e.emotes[0].start),
        ("Jebaited", 2)
    );
    // The ACTION fixture with emotes.
    let e = event("ACTION -tags Kappa 123 Keepo");
    assert_eq!(e.kind(), EventKind::Action);
    assert_eq!(
        e.emotes.iter().map(|x| x.name.as_str()).collect::<Vec<_>>(),
        ["Kappa", "Keepo"]
    );
    // A raid, a gift, a timeout, a delete.
    assert!(
        matches!(event("msg-param-viewerCount=430").body, EventBody::Raid(ref d) if d.viewer_count == 430)
    );
    assert!(
        matches!(event("msg-param-recipient-user-name=qatarking24xd").body, EventBody::SubGift(ref d) if d.recipient.login == "qatarking24xd")
    );
    assert!(
        matches!(event("ban-duration=1;room-id=11148817;target-user-id=148973258").body, EventBody::Timeout(ref d) if d.duration_secs == 1 && d.user.login == "fabzeef")
    );
    assert!(
        matches!(event("target-msg-id=3c92014f").body, EventBody::MessageDelete(ref d) if d.user_login.as_deref() == Some("alazymeme"))
    );
}

#[test]
fn the_vendored_corpus_is_the_shared_one() {
    let shared = testkit::repo::root().join("../shared/corpus/twitch-irc-real.txt");
    if let Ok(text) = std::fs::read_to_string(&shared) {
        let ours = std::fs::read_to_string(testkit::corpus::path()).unwrap();
        assert!(
            text == ours,
            "testdata/corpus differs from ../shared/corpus: copy it again"
        );
    }
}
