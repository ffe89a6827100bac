//! The normal flow: channels joined, corpus lines routed; bad input;
//! JOIN throttling and ghost JOINs.

use std::collections::BTreeMap;
use std::time::Duration;

use common::schema::EventKind;
use ingestor::platforms::twitch::normalise::{Normalised, Normaliser};
use testkit::fake_irc::FakeIrc;
use testkit::rabbit::{self, unique};
use twitch_irc::message::IRCMessage;

use crate::helpers::*;

fn expected_kind(line: &str) -> EventKind {
    let msg = IRCMessage::parse(line).unwrap();
    match Normaliser::new(false)
        .normalise(&msg, chrono::Utc::now())
        .unwrap()
    {
        Normalised::Event(e) => e.kind(),
        other => panic!("{other:?} for {line}"),
    }
}

#[tokio::test]
async fn ten_channels_each_corpus_line_arrives_once_with_its_kind_and_routing_key() {
    let fake = FakeIrc::start().await;
    let exchange = unique("test-ing-flow");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let chans = channels(10);
    let (_dir, spool) = spool_dir();
    let ing = Running::start(config(
        &fake,
        &rabbit::amqp_url(),
        &exchange,
        &chans,
        &spool,
    ))
    .await;
    let refs: Vec<&str> = chans.iter().map(String::as_str).collect();
    fake.wait_joined(&refs, 30).await;

    let lines = corpus_lines_for(&chans);
    assert!(lines.len() > 500, "{} corpus event lines", lines.len());
    assert_eq!(fake.send_lines(&lines), lines.len());

    // 10 ROOMSTATEs from the JOINs, then every line.
    let want = lines.len() + chans.len();
    let got = tap
        .collect_until(60, "every corpus line", |g| g.len() >= want)
        .await;
    let extra = tap.drain_quiet(Duration::from_millis(500)).await;
    assert!(extra.is_empty(), "{} unexpected extra events", extra.len());

    let mut by_raw: BTreeMap<&str, Vec<&common::amqp::Delivery>> = BTreeMap::new();
    for d in &got {
        by_raw
            .entry(d.event.raw.as_deref().expect("raw carried"))
            .or_default()
            .push(d);
    }
    for line in &lines {
        let ds = by_raw
            .get(line.as_str())
            .unwrap_or_else(|| panic!("never arrived: {line}"));
        assert_eq!(ds.len(), 1, "arrived {} times: {line}", ds.len());
        let d = ds[0];
        assert_eq!(d.event.kind(), expected_kind(line), "{line}");
        let channel = testkit::fake_irc::channel_of(line).unwrap();
        assert_eq!(d.routing_key, format!("chat.twitch.{channel}"));
        assert_eq!(d.event.channel, channel);
    }
    let gaps = got
        .iter()
        .filter(|d| d.event.kind() == EventKind::Gap)
        .count();
    assert_eq!(gaps, 0, "no gaps without faults");
    // Per channel, events arrive in the order the server sent them.
    for ch in &chans {
        let sent: Vec<&str> = lines
            .iter()
            .filter(|l| testkit::fake_irc::channel_of(l) == Some(ch.as_str()))
            .map(String::as_str)
            .collect();
        let received: Vec<&str> = got
            .iter()
            .filter(|d| d.event.channel == *ch)
            .filter_map(|d| d.event.raw.as_deref())
            .filter(|r| sent.contains(r))
            .collect();
        assert_eq!(received, sent, "order in {ch}");
    }
    ing.stop().await;
    tap.cleanup().await;
}

#[tokio::test]
async fn bad_input_is_logged_and_skipped_and_the_connection_carries_on() {
    let fake = FakeIrc::start().await;
    let exchange = unique("test-ing-bad");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let chans = channels(1);
    let ch = chans[0].as_str();
    let (_dir, spool) = spool_dir();
    let ing = Running::start(config(
        &fake,
        &rabbit::amqp_url(),
        &exchange,
        &chans,
        &spool,
    ))
    .await;
    fake.wait_joined(&[ch], 30).await;
    let _roomstate = tap
        .collect_until(30, "join roomstate", |g| !g.is_empty())
        .await;
    let connections_before = fake.connections();

    let good = |id: &str| {
        format!(
            "@id={id};room-id=1;tmi-sent-ts=1594556065407;user-id=5 :u!u@u.tmi.twitch.tv PRIVMSG #{ch} :ok {id}"
        )
    };
    fake.send_to_channel(ch, &good("before"));
    // Malformed: tags without a command, a bare prefix, a command with bad characters.
    fake.send_to_channel(ch, "@tags-but-nothing-else");
    fake.send_to_channel(ch, ":only.a.prefix");
    fake.send_to_channel(ch, "PRIV$MSG #x :y");
    // Invalid UTF-8 inside an otherwise good PRIVMSG: decoded lossily.
    let mut bad_utf8 = format!("@id=utf8;room-id=1;tmi-sent-ts=1594556065407;user-id=5 :u!u@u.tmi.twitch.tv PRIVMSG #{ch} :caf").into_bytes();
    bad_utf8.extend_from_slice(b"\xff\xfe!\r\n");
    fake.send_bytes_to_channel(ch, bad_utf8);
    // A 10 MB line.
    let mut huge = format!(":u!u@u.tmi.twitch.tv PRIVMSG #{ch} :").into_bytes();
    huge.resize(10 * 1024 * 1024, b'x');
    huge.extend_from_slice(b"\r\n");
    fake.send_bytes_to_channel(ch, huge);
    // An unknown command.
    fake.send_to_channel(ch, &format!(":tmi.twitch.tv FROBNICATE #{ch} :what"));
    fake.send_to_channel(ch, &good("after"));

    let got = tap
        .collect_until(60, "the good lines", |g| {
            g.iter().any(|d| d.event.id == "after")
        })
        .await;
    let ids: Vec<&str> = got.iter().map(|d| d.event.id.as_str()).collect();
    assert_eq!(ids, ["before", "utf8", "after"]);
    assert_eq!(got[1].event.text.as_deref(), Some("caf\u{FFFD}\u{FFFD}!"));
    assert!(tap.drain_quiet(Duration::from_millis(300)).await.is_empty());
    // Same connection throughout: nothing reconnected.
    assert_eq!(fake.connections(), connections_before);
    assert_eq!(fake.received_command("JOIN").len(), 1);
    assert_eq!(
        ing.metric("chatbus_ingestor_irc_disconnects_total").await,
        0.0
    );
    let page = ing.get("/metrics").await.1;
    assert_eq!(
        metric_value(
            &page,
            "chatbus_ingestor_irc_bad_lines_total{reason=\"malformed\"}"
        ),
        3.0,
        "{page}"
    );
    assert_eq!(
        metric_value(
            &page,
            "chatbus_ingestor_irc_bad_lines_total{reason=\"too_long\"}"
        ),
        1.0
    );
    assert_eq!(
        metric_value(
            &page,
            "chatbus_ingestor_irc_bad_lines_total{reason=\"invalid_utf8\"}"
        ),
        1.0
    );
    assert_eq!(
        metric_value(&page, "chatbus_ingestor_irc_unknown_commands_total"),
        1.0
    );
    ing.stop().await;
    tap.cleanup().await;
}

#[tokio::test]
async fn joins_are_throttled_on_the_wire_and_ghost_joins_are_retried() {
    let fake = FakeIrc::start().await;
    let exchange = unique("test-ing-join");
    let tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let chans = channels(12);
    // The server ignores the first JOIN of one channel (the ghost JOIN).
    fake.ignore_joins(&chans[3], 1);
    let (_dir, spool) = spool_dir();
    let mut cfg = config(&fake, &rabbit::amqp_url(), &exchange, &chans, &spool);
    cfg.platforms.twitch.twitch_join_limit = 5;
    cfg.platforms.twitch.twitch_join_window = Duration::from_secs(1);
    cfg.platforms.twitch.twitch_join_timeout = Duration::from_secs(2);
    let ing = Running::start(cfg).await;
    let refs: Vec<&str> = chans.iter().map(String::as_str).collect();
    fake.wait_joined(&refs, 60).await;

    let joins = fake.received_command("JOIN");
    assert_eq!(joins.len(), 13, "12 channels + 1 retry of the ghost JOIN");
    // The server timestamps JOINs when it reads them, so a busy machine can
    // bunch a few together; allow that jitter, but unthrottled the 12 JOINs
    // would all arrive within milliseconds.
    for (i, first) in joins.iter().enumerate() {
        let in_window = joins[i..]
            .iter()
            .take_while(|j| j.at.duration_since(first.at) < Duration::from_millis(990))
            .count();
        assert!(in_window <= 7, "{in_window} JOINs within 1s (limit 5)");
    }
    // 12 JOINs at 5 per second need at least two further windows.
    let span = joins[11].at.duration_since(joins[0].at);
    assert!(
        span >= Duration::from_millis(1_500),
        "12 JOINs within {span:?}"
    );
    let retried = joins.iter().filter(|j| j.line.ends_with(&chans[3])).count();
    assert_eq!(retried, 2);
    let (_, body) = ing.get("/channels").await;
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ghost = list
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["channel"] == chans[3].as_str())
        .unwrap();
    assert_eq!(ghost["state"], "joined");
    assert_eq!(ghost["join_attempts"], 2);
    ing.stop().await;
    tap.cleanup().await;
}

#[tokio::test]
async fn a_flood_beyond_the_memory_outbox_loses_nothing_and_keeps_each_channels_order() {
    let fake = FakeIrc::start().await;
    let exchange = unique("test-ing-flood");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let chans = channels(3);
    let refs: Vec<&str> = chans.iter().map(String::as_str).collect();
    let (_dir, spool) = spool_dir();
    let mut cfg = config(&fake, &rabbit::amqp_url(), &exchange, &chans, &spool);
    // 50 events in memory: the rest of the flood goes through the disk
    // spool and is read back in order.
    cfg.outbox_memory_events = 50;
    let ing = Running::start(cfg).await;
    fake.wait_joined(&refs, 30).await;
    let lines = privmsgs(&chans, 20_000, "flood");
    assert_eq!(fake.send_lines(&lines), lines.len());
    let got = tap
        .collect_until(120, "the whole flood", |g| {
            g.iter()
                .filter(|d| d.event.id.starts_with("flood-"))
                .count()
                >= 20_000
        })
        .await;
    assert_eq!(ids_with_prefix(&got, "flood-").len(), 20_000);
    // Per channel, events arrive in the order the server sent them.
    for (c, channel) in chans.iter().enumerate() {
        let seq: Vec<usize> = got
            .iter()
            .filter(|d| d.event.channel == *channel && d.event.id.starts_with("flood-"))
            .map(|d| d.event.id["flood-".len()..].parse().unwrap())
            .collect();
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "{channel} in order");
        assert_eq!(seq.len(), (0..20_000).filter(|i| i % 3 == c).count());
    }
    let page = ing.get("/metrics").await.1;
    assert_eq!(
        metric_value(&page, "chatbus_ingestor_irc_disconnects_total"),
        0.0,
        "no reconnect needed"
    );
    ing.stop().await;
    tap.cleanup().await;
}
