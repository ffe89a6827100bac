//! The YouTube source against the fake YouTube (HTTP/JSON and gRPC on
//! 127.0.0.1) and the real RabbitMQ: every message type, stream drops and
//! resumes, quota, ended and later broadcasts, polling, the admin API, and
//! Twitch beside YouTube in one ingestor.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::Secret;
use common::amqp::Delivery;
use common::routing::routing_key;
use common::schema::{EventBody, EventKind, Role};
use common::token_store::{AccountStatus, StoredToken, TokenStore};
use ingestor::Config;
use ingestor::platforms::youtube;
use serde_json::Value;
use testkit::eventually;
use testkit::fake_irc::FakeIrc;
use testkit::fake_oauth::{CLIENT_ID, CLIENT_SECRET, FakeOAuth, Flavour};
use testkit::fake_youtube::{self, End, FakeCall, FakeError, FakeYoutube, StreamEnd, msg};
use testkit::rabbit::{self, unique};

use crate::helpers::*;

/// A channel id (`UC` + 22) and video id (11) unique to this test.
pub(crate) fn ids() -> (String, String) {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    (format!("UC{}", &tag[..22]), format!("v{}", &tag[22..32]))
}

fn video_id() -> String {
    format!("w{}", &uuid::Uuid::new_v4().simple().to_string()[..10])
}

/// One test's world: the fake YouTube with one channel (not live yet), a
/// tap on a fresh exchange, and a spool directory (removed with `_dir`).
pub(crate) struct World {
    pub(crate) yt: FakeYoutube,
    pub(crate) channel: String,
    pub(crate) video: String,
    pub(crate) exchange: String,
    pub(crate) tap: Tap,
    pub(crate) spool: std::path::PathBuf,
    pub(crate) _dir: tempfile::TempDir,
}

impl World {
    /// The world of a test: the exchange named after `tag`, the channel
    /// known by `handle`.
    pub(crate) async fn new(tag: &str, handle: &str) -> Self {
        let yt = FakeYoutube::start().await;
        let (channel, video) = ids();
        yt.add_channel(&channel, handle);
        let exchange = unique(tag);
        let tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
        let (_dir, spool) = spool_dir();
        Self {
            yt,
            channel,
            video,
            exchange,
            tap,
            spool,
            _dir,
        }
    }

    /// The channel goes live with its video; returns the live chat's id.
    pub(crate) fn go_live(&self) -> String {
        self.yt.go_live(&self.channel, &self.video)
    }

    /// A config reading `entries` from this world's fake.
    pub(crate) fn config(&self, entries: &[&str]) -> Config {
        yt_config(&self.yt, &self.exchange, entries, &self.spool)
    }
}

/// A config reading `entries` from `yt` (and no Twitch channels).
pub(crate) fn yt_config(
    yt: &FakeYoutube,
    exchange: &str,
    entries: &[&str],
    spool: &std::path::Path,
) -> Config {
    let platforms = ingestor::platforms::Settings {
        youtube: youtube::Settings {
            youtube_channels: entries.iter().map(|e| (*e).to_owned()).collect(),
            youtube_api_key: Some(fake_youtube::API_KEY.into()),
            youtube_api_url: yt.api_url(),
            youtube_grpc_url: yt.grpc_url(),
            youtube_offline_poll_interval: Some(Duration::from_millis(300)),
            youtube_retry_max_delay: Duration::from_secs(1),
            youtube_request_timeout: Duration::from_secs(5),
            // The fake asks for polls every 200 ms: let it, and let the
            // quota afford it.
            youtube_min_poll_interval: Duration::from_millis(100),
            youtube_daily_quota: 1_000_000_000,
            ..youtube::Settings::default()
        },
        ..ingestor::platforms::Settings::default()
    };
    Config {
        amqp_url: rabbit::amqp_url(),
        chat_exchange: exchange.to_owned(),
        ingestor_http_addr: "127.0.0.1:0".into(),
        spool_dir: spool.to_owned(),
        amqp_reconnect_max_delay: Duration::from_millis(500),
        platforms,
        ..Config::default()
    }
}

pub(crate) fn youtube_of<'a>(got: &'a [Delivery], channel: &str) -> Vec<&'a Delivery> {
    got.iter()
        .filter(|d| d.event.platform == "youtube" && d.event.channel == channel)
        .collect()
}

/// `GET /channels`, the YouTube entries.
pub(crate) async fn youtube_channels(ing: &Running) -> Vec<Value> {
    let (status, body) = ing.get("/channels").await;
    assert_eq!(status, 200);
    serde_json::from_str::<Vec<Value>>(&body)
        .unwrap()
        .into_iter()
        .filter(|c| c["platform"] == "youtube")
        .collect()
}

/// Waits until the YouTube entry `channel` is in `state` (and `reason`).
pub(crate) async fn wait_state(
    ing: &Running,
    channel: &str,
    state: &str,
    reason: Option<&str>,
) -> Value {
    eventually(30, &format!("{channel} {state} {reason:?}"), || async {
        youtube_channels(ing).await.into_iter().find(|c| {
            c["channel"] == channel
                && c["state"] == state
                && reason.is_none_or(|r| c["reason"] == r)
        })
    })
    .await
}

#[tokio::test]
async fn every_message_type_arrives_once_with_its_kind_key_and_fields() {
    let mut w = World::new("test-yt-types", "@Every.Type").await;
    let chat = w.go_live();
    let ing = Running::start(w.config(&["@every.type"])).await;
    let info = wait_state(&ing, &w.channel, "joined", None).await;
    assert_eq!(info["requested_as"], "@every.type");
    assert_eq!(info["channel_id"], Value::Null, "no event yet");
    assert_eq!(info["source_detail"]["via"], "stream");
    assert_eq!(info["source_detail"]["video_id"], w.video.as_str());
    assert_eq!(info["source_detail"]["live_chat_id"], chat.as_str());

    let viewer = msg::author("UCviewer000000000000000A", "Viewer 👋", &["sponsor"]);
    let modr = msg::author(
        "UCmoderator0000000000000",
        "Mod",
        &["moderator", "verified"],
    );
    let owner = msg::author(&w.channel, "Owner", &["owner"]);
    let troll = msg::author("UCtroll00000000000000000", "Troll", &[]);
    let gifter = msg::author("UCgifter0000000000000000", "Giver", &[]);
    let items = vec![
        msg::text("t-1", &viewer, "héllo 👋 :wave:"),
        msg::text("t-2", &owner, "welcome"),
        msg::super_chat("sc-1", &viewer, 5_000_000, "USD", "$5.00", "Love it", 2),
        msg::super_sticker(
            "ss-1",
            &viewer,
            2_000_000,
            "EUR",
            "€2.00",
            "cat_dance",
            "A cat dancing",
        ),
        msg::new_sponsor("ns-1", &viewer, "Gold"),
        msg::milestone("mm-1", &viewer, "Gold", 7, "seven!"),
        msg::gifting("mg-1", &gifter, 5, "Gold"),
        msg::gift_received("gr-1", &viewer, "Gold", "UCgifter0000000000000000", "mg-1"),
        msg::text("t-3", &troll, "spam"),
        msg::deleted("del-1", &modr, "t-3"),
        msg::banned("ban-1", &modr, &troll, None),
        msg::banned("to-1", &modr, &viewer, Some(300)),
        msg::poll("poll-1", &owner, "Best game?"),
        msg::members_only_started("mo-1", &owner),
    ];
    let sent: BTreeMap<String, Value> = items
        .iter()
        .map(|i| (i["id"].as_str().unwrap().to_owned(), i.clone()))
        .collect();
    w.yt.push(&chat, items);

    let got = w
        .tap
        .collect_until(30, "every message", |g| {
            youtube_of(g, &w.channel).len() >= sent.len()
        })
        .await;
    let extra = w.tap.drain_quiet(Duration::from_millis(700)).await;
    assert!(
        extra.is_empty(),
        "{} extra events: {:?}",
        extra.len(),
        extra.iter().map(|d| &d.event.id).collect::<Vec<_>>()
    );
    let by_id: BTreeMap<&str, &Delivery> = got.iter().map(|d| (d.event.id.as_str(), d)).collect();
    assert_eq!(by_id.len(), sent.len(), "each once");
    let key = routing_key("youtube", &w.channel);
    assert_eq!(
        key,
        format!("chat.youtube.{}", w.channel),
        "upper case kept"
    );
    for d in &got {
        assert_eq!(d.routing_key, key);
        let e = &d.event;
        assert_eq!(e.channel_id.as_deref(), Some(w.channel.as_str()));
        let y = e.youtube.as_ref().expect("youtube extras");
        assert_eq!(
            (y.live_chat_id.as_str(), y.video_id.as_deref()),
            (chat.as_str(), Some(w.video.as_str()))
        );
        // The streamed protobuf, back in the API's JSON: the resource sent.
        let raw: Value = serde_json::from_str(e.raw.as_deref().expect("raw")).unwrap();
        let mut want = sent[&e.id].clone();
        want["snippet"]["liveChatId"] = Value::String(chat.clone());
        assert_eq!(raw, want, "raw of {}", e.id);
    }
    let kind = |id: &str| by_id[id].event.kind();
    for (id, k) in [
        ("t-1", EventKind::Message),
        ("sc-1", EventKind::SuperChat),
        ("ss-1", EventKind::SuperSticker),
        ("ns-1", EventKind::Subscription),
        ("mm-1", EventKind::Resub),
        ("mg-1", EventKind::MysteryGift),
        ("gr-1", EventKind::SubGift),
        ("del-1", EventKind::MessageDelete),
        ("ban-1", EventKind::Ban),
        ("to-1", EventKind::Timeout),
        ("poll-1", EventKind::OtherNotice),
        ("mo-1", EventKind::OtherNotice),
    ] {
        assert_eq!(kind(id), k, "{id}");
        assert_eq!(by_id[id].event.kind().as_str(), k.as_str());
    }
    let t1 = &by_id["t-1"].event;
    assert_eq!(t1.text.as_deref(), Some("héllo 👋 :wave:"));
    let a = t1.author.as_ref().unwrap();
    assert_eq!(
        (a.id.as_str(), a.login.as_str(), a.display_name.as_str()),
        (
            "UCviewer000000000000000A",
            "ucviewer000000000000000a",
            "Viewer 👋"
        )
    );
    assert_eq!(a.roles, [Role::Subscriber]);
    assert!(
        a.avatar_url
            .as_deref()
            .unwrap()
            .contains("UCviewer000000000000000A")
    );
    assert_eq!(
        by_id["t-2"].event.author.as_ref().unwrap().roles,
        [Role::Broadcaster]
    );
    let sc = &by_id["sc-1"].event;
    let paid = sc.paid.as_ref().unwrap();
    assert_eq!(
        (
            paid.amount_micros,
            paid.currency.as_str(),
            paid.display.as_str(),
            paid.tier
        ),
        (5_000_000, "USD", "$5.00", Some(2))
    );
    assert_eq!(sc.text.as_deref(), Some("Love it"));
    match &by_id["ss-1"].event.body {
        EventBody::SuperSticker(d) => assert_eq!(
            (d.sticker_id.as_str(), d.alt_text.as_deref()),
            ("cat_dance", Some("A cat dancing"))
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(by_id["ss-1"].event.paid.as_ref().unwrap().currency, "EUR");
    match &by_id["mm-1"].event.body {
        EventBody::Resub(d) => assert_eq!(d.cumulative_months, Some(7)),
        other => panic!("{other:?}"),
    }
    match &by_id["gr-1"].event.body {
        EventBody::SubGift(d) => {
            assert_eq!(d.recipient.id.as_deref(), Some("UCviewer000000000000000A"))
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        by_id["gr-1"].event.author.as_ref().unwrap().display_name,
        "Giver"
    );
    match &by_id["del-1"].event.body {
        EventBody::MessageDelete(d) => {
            assert_eq!(d.target_message_id, "t-3");
            assert!(
                by_id.contains_key(d.target_message_id.as_str()),
                "the target is an event id"
            );
        }
        other => panic!("{other:?}"),
    }
    match &by_id["ban-1"].event.body {
        EventBody::Ban(d) => assert_eq!(
            d.user.login,
            by_id["t-3"].event.author.as_ref().unwrap().login,
            "the ban finds the troll's messages"
        ),
        other => panic!("{other:?}"),
    }
    match &by_id["to-1"].event.body {
        EventBody::Timeout(d) => assert_eq!(d.duration_secs, 300),
        other => panic!("{other:?}"),
    }
    match &by_id["poll-1"].event.body {
        EventBody::OtherNotice(d) => assert_eq!(
            (d.notice_type.as_str(), d.tags["status"].as_str()),
            ("pollEvent", "active")
        ),
        other => panic!("{other:?}"),
    }
    let info = wait_state(&ing, &w.channel, "joined", None).await;
    assert_eq!(info["events"], sent.len());
    assert_eq!(info["channel_id"], w.channel.as_str());
    assert_eq!(
        w.yt.calls(FakeCall::Search),
        0,
        "found through the uploads, not search"
    );
    ing.stop().await;
    w.tap.cleanup().await;
}

#[tokio::test]
async fn a_dropped_stream_resumes_from_its_page_token_without_repeats_or_gaps() {
    let mut w = World::new("test-yt-drop", "@dropper").await;
    let chat = w.go_live();
    let ing = Running::start(w.config(&[&w.channel])).await;
    wait_state(&ing, &w.channel, "joined", None).await;
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    let batch = |round: usize| -> Vec<Value> {
        (0..10)
            .map(|i| msg::text(&format!("m-{round}-{i}"), &viewer, &format!("{round}/{i}")))
            .collect()
    };
    w.yt.push(&chat, batch(0));
    w.tap
        .collect_until(30, "the first ten", |g| {
            youtube_of(g, &w.channel).len() >= 10
        })
        .await;
    // Every resume from here starts 5 messages early (repeats the source
    // must drop). The stream ends cleanly; the next one drops mid-page
    // after 3 messages, with an error; the one after that stays.
    w.yt.set_resume_overlap(5);
    w.yt.drop_stream_after(3, StreamEnd::Error);
    w.yt.kick_streams(StreamEnd::Eof);
    eventually(30, "two more streams", || async {
        (w.yt.stream_requests().len() >= 3).then_some(())
    })
    .await;
    w.yt.push(&chat, batch(1));
    w.yt.kick_streams(StreamEnd::Error);
    w.yt.push(&chat, batch(2));
    let got = w
        .tap
        .collect_until(30, "every message", |g| {
            youtube_of(g, &w.channel).len() >= 20
        })
        .await;
    let extra = w.tap.drain_quiet(Duration::from_millis(1500)).await;
    let all: Vec<&Delivery> = got.iter().chain(&extra).collect();
    let ids: Vec<&str> = all.iter().map(|d| d.event.id.as_str()).collect();
    let unique_ids: BTreeSet<&str> = ids.iter().copied().collect();
    assert_eq!(ids.len(), unique_ids.len(), "no repeats: {ids:?}");
    assert_eq!(unique_ids.len(), 20, "{ids:?}");
    assert!(
        ids.iter().all(|id| !id.starts_with("m-0-")),
        "the first ten are not published again: {ids:?}"
    );
    assert!(
        all.iter().all(|d| d.event.kind() != EventKind::Gap),
        "a resume from a page token is no gap"
    );
    let requests = w.yt.stream_requests();
    assert!(requests.len() >= 4, "{requests:?}");
    assert_eq!(
        requests[0].1, None,
        "the first stream starts from the recent messages"
    );
    assert_eq!(requests[1].1.as_deref(), Some("p10"), "{requests:?}");
    assert_eq!(
        requests[2].1.as_deref(),
        Some("p8"),
        "3 sent from p5: {requests:?}"
    );
    assert!(
        requests[1..].iter().all(|(c, t)| c == &chat && t.is_some()),
        "resumed with tokens: {requests:?}"
    );
    assert!(
        ing.metric("chatbus_ingestor_youtube_repeats_dropped_total")
            .await
            >= 5.0
    );
    ing.stop().await;
    w.tap.cleanup().await;
}

#[tokio::test]
async fn a_lost_position_publishes_a_gap_and_still_no_repeats() {
    let mut w = World::new("test-yt-gap", "@lost").await;
    let chat = w.go_live();
    let ing = Running::start(w.config(&[&w.channel])).await;
    wait_state(&ing, &w.channel, "joined", None).await;
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    w.yt.push(
        &chat,
        (0..5).map(|i| msg::text(&format!("a-{i}"), &viewer, "x")),
    );
    w.tap
        .collect_until(30, "first five", |g| youtube_of(g, &w.channel).len() >= 5)
        .await;
    // The stream drops and its page token is then refused: the source
    // reads from the recent messages again (which repeat the first five).
    w.yt.fail_next(FakeCall::StreamList, FakeError::PageTokenInvalid, 1);
    w.yt.kick_streams(StreamEnd::Error);
    let got = w
        .tap
        .collect_until(30, "a gap", |g| {
            g.iter().any(|d| d.event.kind() == EventKind::Gap)
        })
        .await;
    let gap = got
        .iter()
        .find(|d| d.event.kind() == EventKind::Gap)
        .unwrap();
    assert_eq!(gap.routing_key, routing_key("youtube", &w.channel));
    match &gap.event.body {
        EventBody::Gap(d) => {
            assert_eq!(d.reason, "page_token_invalid");
            assert!(d.started_at <= d.ended_at);
        }
        other => panic!("{other:?}"),
    }
    w.yt.push(
        &chat,
        (0..5).map(|i| msg::text(&format!("b-{i}"), &viewer, "y")),
    );
    let more = w
        .tap
        .collect_until(30, "the b messages", |g| {
            g.iter().filter(|d| d.event.id.starts_with("b-")).count() >= 5
        })
        .await;
    let extra = w.tap.drain_quiet(Duration::from_millis(700)).await;
    let messages: Vec<&str> = got
        .iter()
        .chain(&more)
        .chain(&extra)
        .filter(|d| d.event.kind() == EventKind::Message)
        .map(|d| d.event.id.as_str())
        .collect();
    assert_eq!(
        messages.len(),
        5,
        "the b messages once, no a repeated: {messages:?}"
    );
    ing.stop().await;
    w.tap.cleanup().await;
}

#[tokio::test]
async fn quota_exceeded_waits_without_spinning_and_recovers() {
    let mut w = World::new("test-yt-quota", "@quota").await;
    let chat = w.go_live();
    w.yt.set_quota_exhausted(true);
    let mut cfg = w.config(&["@quota"]);
    cfg.platforms.youtube.youtube_quota_exceeded_wait = Some(Duration::from_secs(4));
    let retry_max = cfg.platforms.youtube.youtube_retry_max_delay;
    let ing = Running::start(cfg).await;
    let info = wait_state(&ing, "@quota", "waiting", Some("quota_exceeded")).await;
    let seen_at = chrono::Utc::now();
    assert!(info["next_check"].is_string(), "{info}");
    // The quota wait, not the ordinary backoff: the next check is further
    // out than the longest backoff step (YOUTUBE_RETRY_MAX_DELAY, 1 s from
    // yt_config): the 4 s wait set above, counted from the refusal.
    let next_check: chrono::DateTime<chrono::Utc> =
        info["next_check"].as_str().unwrap().parse().unwrap();
    let ahead = (next_check - seen_at).to_std().unwrap_or_default();
    assert!(
        ahead > retry_max,
        "next check {ahead:?} ahead, no more than an ordinary backoff step ({retry_max:?}): {info}"
    );
    assert!(info["detail"].as_str().unwrap().contains("quota"), "{info}");
    assert!(ing.metric("chatbus_ingestor_youtube_errors_total").await >= 1.0);
    // No call while the quota is out: one refused call, then silence.
    let calls = || FakeCall::Channels;
    let before = w.yt.calls(calls());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        w.yt.calls(calls()) <= before + 1,
        "{} calls in 1.5 s",
        w.yt.calls(calls()) - before
    );
    w.yt.set_quota_exhausted(false);
    wait_state(&ing, &w.channel, "joined", None).await;
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    w.yt.push(&chat, [msg::text("after-quota", &viewer, "back")]);
    w.tap
        .collect_until(30, "a message after the quota came back", |g| {
            g.iter().any(|d| d.event.id == "after-quota")
        })
        .await;
    ing.stop().await;
    w.tap.cleanup().await;
}

#[tokio::test]
async fn a_chat_that_ends_and_a_broadcast_that_starts_later_are_followed() {
    let yt = FakeYoutube::start().await;
    let (channel, _) = ids();
    yt.add_channel(&channel, "@later");
    yt.add_video(&channel, &video_id());
    let exchange = unique("test-yt-later");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let (_dir, spool) = spool_dir();
    let ing = Running::start(yt_config(&yt, &exchange, &[&channel], &spool)).await;
    let info = wait_state(&ing, &channel, "waiting", Some("offline")).await;
    assert!(info["next_check"].is_string());
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);

    // Three broadcasts, each ending its own way.
    for (n, end) in [End::ChatEndedEvent, End::OfflineAt, End::Silently]
        .into_iter()
        .enumerate()
    {
        let video = video_id();
        let chat = yt.go_live(&channel, &video);
        let info = wait_state(&ing, &channel, "joined", None).await;
        assert_eq!(info["source_detail"]["video_id"], video.as_str());
        let id = format!("b{n}");
        yt.push(&chat, [msg::text(&id, &viewer, "live!")]);
        tap.collect_until(30, "the broadcast's message", |g| {
            g.iter().any(|d| d.event.id == id)
        })
        .await;
        yt.end_broadcast(&video, end);
        let got = tap
            .collect_until(30, "chat_ended", |g| {
                g.iter().any(|d| d.event.kind() == EventKind::ChatEnded)
            })
            .await;
        let ended: Vec<_> = got
            .iter()
            .filter(|d| d.event.kind() == EventKind::ChatEnded)
            .collect();
        assert_eq!(ended.len(), 1, "{end:?}");
        assert_eq!(
            ended[0].event.youtube.as_ref().unwrap().video_id.as_deref(),
            Some(video.as_str())
        );
        assert_eq!(ended[0].routing_key, routing_key("youtube", &channel));
        wait_state(&ing, &channel, "waiting", Some("offline")).await;
    }
    let extra = tap.drain_quiet(Duration::from_millis(700)).await;
    assert!(
        extra.iter().all(|d| d.event.kind() != EventKind::ChatEnded),
        "one chat_ended per broadcast"
    );
    ing.stop().await;
    tap.cleanup().await;
}

#[tokio::test]
async fn a_video_entry_follows_that_video_and_no_other() {
    let mut w = World::new("test-yt-video", "@videos").await;
    w.yt.schedule(&w.channel, &w.video);
    let url = format!("https://www.youtube.com/watch?v={}", w.video);
    let ing = Running::start(w.config(&[&url])).await;
    let info = wait_state(&ing, &w.channel, "waiting", Some("offline")).await;
    assert_eq!(info["requested_as"], url.as_str());
    assert_eq!(info["source_detail"]["follows"], "video");
    assert!(info["source_detail"].to_string().contains(&w.video));
    let chat = w.go_live();
    wait_state(&ing, &w.channel, "joined", None).await;
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    w.yt.push(&chat, [msg::text("v-1", &viewer, "hi")]);
    w.tap
        .collect_until(30, "the video's message", |g| {
            g.iter().any(|d| d.event.id == "v-1")
        })
        .await;
    w.yt.end_broadcast(&w.video, End::ChatEndedEvent);
    wait_state(&ing, &w.channel, "waiting", Some("chat_ended")).await;
    // Another broadcast of the w.channel is not this entry's.
    let other = w.yt.go_live(&w.channel, &video_id());
    w.yt.push(&other, [msg::text("other-1", &viewer, "not followed")]);
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let got = w.tap.drain_quiet(Duration::from_millis(500)).await;
    assert!(got.iter().all(|d| d.event.id != "other-1"));
    wait_state(&ing, &w.channel, "waiting", Some("chat_ended")).await;
    ing.stop().await;
    w.tap.cleanup().await;
}

#[tokio::test]
async fn a_live_video_entry_is_joined_with_one_videos_list_call() {
    let mut w = World::new("test-yt-one-lookup", "@already.live").await;
    let chat = w.go_live();
    let ing = Running::start(w.config(&[&w.video])).await;
    wait_state(&ing, &w.channel, "joined", None).await;
    // The lookup that found the w.video's w.channel also gave its live chat:
    // joining costs one videos.list (1 quota unit), not two.
    assert_eq!(w.yt.calls(FakeCall::Videos), 1);
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    w.yt.push(&chat, [msg::text("live-1", &viewer, "hi")]);
    w.tap
        .collect_until(30, "the live video's message", |g| {
            g.iter().any(|d| d.event.id == "live-1")
        })
        .await;
    ing.stop().await;
    w.tap.cleanup().await;
}

#[tokio::test]
async fn polling_reads_the_chat_when_streaming_is_off_or_unavailable() {
    for streaming in [false, true] {
        let mut w = World::new("test-yt-poll", "@poller").await;
        let chat = w.go_live();
        w.yt.set_polling_interval(250);
        if streaming {
            // Configured on, but the server does not have it.
            w.yt.set_streaming(false);
        }
        let mut cfg = w.config(&[&w.channel]);
        cfg.platforms.youtube.youtube_streaming = streaming;
        let ing = Running::start(cfg).await;
        let info = eventually(30, "polling", || async {
            youtube_channels(&ing)
                .await
                .into_iter()
                .find(|c| c["state"] == "joined" && c["source_detail"]["via"] == "poll")
        })
        .await;
        assert_eq!(info["channel"], w.channel.as_str());
        let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
        for i in 0..3 {
            w.yt.push(
                &chat,
                (0..4).map(|j| msg::text(&format!("p-{i}-{j}"), &viewer, "polled")),
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let got = w
            .tap
            .collect_until(30, "every polled message", |g| {
                youtube_of(g, &w.channel).len() >= 12
            })
            .await;
        let extra = w.tap.drain_quiet(Duration::from_millis(600)).await;
        assert_eq!(
            youtube_of(&got, &w.channel).len() + extra.len(),
            12,
            "each once"
        );
        // pollingIntervalMillis is honoured: no more than about 4 polls a
        // second, and polling goes on (however slowly a loaded machine
        // lets it).
        let before = w.yt.calls(FakeCall::ChatList);
        tokio::time::sleep(Duration::from_secs(2)).await;
        let polls = w.yt.calls(FakeCall::ChatList) - before;
        assert!(polls <= 10, "{polls} polls in 2 s at 250 ms");
        eventually(30, "polling goes on", || {
            let more = w.yt.calls(FakeCall::ChatList) >= before + 4;
            async move { more.then_some(()) }
        })
        .await;
        if streaming {
            assert!(!w.yt.stream_requests().is_empty(), "streaming was tried");
            assert!(ing.metric("chatbus_ingestor_youtube_errors_total").await >= 1.0);
        } else {
            assert_eq!(w.yt.calls(FakeCall::StreamList), 0);
        }
        ing.stop().await;
        w.tap.cleanup().await;
    }
}

#[tokio::test]
async fn chat_errors_show_in_channels_and_back_off() {
    let mut w = World::new("test-yt-errors", "@errors").await;
    let chat = w.go_live();
    // Forbidden, then the service unavailable, then not found: each waits.
    w.yt.fail_next(FakeCall::StreamList, FakeError::Forbidden, 1);
    w.yt.fail_next(FakeCall::StreamList, FakeError::ServerError, 1);
    w.yt.fail_next(FakeCall::StreamList, FakeError::ChatNotFound, 1);
    let mut cfg = w.config(&[&w.channel]);
    cfg.platforms.youtube.youtube_retry_max_delay = Duration::from_millis(1500);
    let started = std::time::Instant::now();
    let ing = Running::start(cfg).await;
    let info = wait_state(&ing, &w.channel, "waiting", Some("forbidden")).await;
    assert!(
        info["detail"].as_str().unwrap().contains("permission"),
        "{info}"
    );
    wait_state(&ing, &w.channel, "joined", None).await;
    // Each failure waited its backoff step before the next try: from 1 s,
    // doubling, capped at the 1.5 s above, with jitter taking off at most
    // half (common's Backoff::delay): at least 0.5 + 0.75 + 0.75 s before
    // the stream that worked.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(2000),
        "joined {took:?} after the start: the three failures did not all back off"
    );
    for reason in ["forbidden", "unreachable", "chat_not_found"] {
        let (_, text) = ing.get("/metrics").await;
        assert!(
            text.lines()
                .any(|l| l.starts_with("chatbus_ingestor_youtube_errors_total")
                    && l.contains(&format!("reason=\"{reason}\""))),
            "{reason} counted"
        );
    }
    assert!(
        w.yt.calls(FakeCall::StreamList) <= 6,
        "{} stream calls: backoff",
        w.yt.calls(FakeCall::StreamList)
    );
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    w.yt.push(&chat, [msg::text("after-errors", &viewer, "ok")]);
    w.tap
        .collect_until(30, "reading after the errors", |g| {
            g.iter().any(|d| d.event.id == "after-errors")
        })
        .await;
    // A disabled chat waits for the broadcast to have one again.
    w.yt.disable_chat(&w.video);
    let info = wait_state(&ing, &w.channel, "waiting", Some("chat_disabled")).await;
    assert!(info["next_check"].is_string());
    ing.stop().await;
    w.tap.cleanup().await;
}

#[tokio::test]
async fn a_poll_past_the_request_timeout_counts_as_an_error_and_reading_goes_on() {
    let mut w = World::new("test-yt-timeout", "@slow").await;
    let chat = w.go_live();
    w.yt.set_polling_interval(200);
    let mut cfg = w.config(&[&w.channel]);
    cfg.platforms.youtube.youtube_streaming = false;
    // Long enough that only the delayed poll reaches it, even on a loaded
    // machine.
    cfg.platforms.youtube.youtube_request_timeout = Duration::from_secs(2);
    let ing = Running::start(cfg).await;
    let info = wait_state(&ing, &w.channel, "joined", None).await;
    assert_eq!(info["source_detail"]["via"], "poll");
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    w.yt.push(&chat, [msg::text("slow-0", &viewer, "before")]);
    w.tap
        .collect_until(30, "slow-0", |g| g.iter().any(|d| d.event.id == "slow-0"))
        .await;
    let timeouts = || ing.metric("chatbus_ingestor_youtube_errors_total{reason=\"timeout\"}");
    let before = timeouts().await;
    // The next poll is answered only after 12 s, six times the timeout.
    let polls = w.yt.calls(FakeCall::ChatList);
    w.yt.fail_next(
        FakeCall::ChatList,
        FakeError::Delay(Duration::from_secs(12)),
        1,
    );
    let info = wait_state(&ing, &w.channel, "waiting", Some("timeout")).await;
    assert!(
        info["detail"]
            .as_str()
            .unwrap()
            .contains("did not answer within 2s"),
        "{info}"
    );
    assert!(timeouts().await > before, "the timeout is counted");
    // Reading goes on from the same page token: what is said from now on
    // arrives, once each, with no gap.
    w.yt.push(
        &chat,
        (1..=3).map(|i| msg::text(&format!("slow-{i}"), &viewer, "after")),
    );
    let got = w
        .tap
        .collect_until(30, "the messages after the timeout", |g| {
            g.iter().filter(|d| d.event.id.starts_with("slow-")).count() >= 3
        })
        .await;
    let extra = w.tap.drain_quiet(Duration::from_millis(700)).await;
    let ids: Vec<&str> = got
        .iter()
        .chain(&extra)
        .map(|d| d.event.id.as_str())
        .collect();
    assert_eq!(ids, ["slow-1", "slow-2", "slow-3"]);
    wait_state(&ing, &w.channel, "joined", None).await;
    assert!(
        w.yt.calls(FakeCall::ChatList) >= polls + 2,
        "the slow poll, then at least one that read"
    );
    ing.stop().await;
    w.tap.cleanup().await;
}

#[tokio::test]
async fn the_admin_api_joins_and_parts_youtube_entries() {
    let mut w = World::new("test-yt-admin", "@admin.me").await;
    let chat = w.go_live();
    let mut cfg = w.config(&[]);
    cfg.ingestor_api_key = Some("k3y".into());
    let ing = Running::start(cfg).await;
    let client = reqwest::Client::new();
    let call = |method: reqwest::Method, entry: &str| {
        client
            .request(
                method,
                format!("http://{}/channels/youtube/{entry}", ing.http),
            )
            .bearer_auth("k3y")
            .send()
    };
    let res = call(reqwest::Method::POST, "@Admin.Me").await.unwrap();
    assert_eq!(res.status(), 202);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["platform"].as_str(), body["channel"].as_str()),
        (Some("youtube"), Some("@admin.me"))
    );
    let info = wait_state(&ing, &w.channel, "joined", None).await;
    assert_eq!(info["requested_as"], "@Admin.Me");
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    w.yt.push(&chat, [msg::text("admin-1", &viewer, "hi")]);
    w.tap
        .collect_until(30, "a message", |g| {
            g.iter().any(|d| d.event.id == "admin-1")
        })
        .await;
    // Asked again as the w.channel id, or the handle: already followed.
    assert_eq!(
        call(reqwest::Method::POST, &w.channel)
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        call(reqwest::Method::POST, "@admin.me")
            .await
            .unwrap()
            .status(),
        200
    );
    let res = call(reqwest::Method::POST, "not%20youtube").await.unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_channel");
    let (status, one) = ing.get("/channels/youtube").await;
    assert_eq!(status, 200);
    assert!(one.contains(&w.channel));
    let (_, ready) = ing.get("/readyz").await;
    let ready: Value = serde_json::from_str(&ready).unwrap();
    let source = ready["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["platform"] == "youtube")
        .unwrap()
        .clone();
    assert_eq!(
        (
            source["channels_wanted"].as_u64(),
            source["reachable"].as_bool()
        ),
        (Some(1), Some(true))
    );
    // Parted by the handle it was asked as.
    assert_eq!(
        call(reqwest::Method::DELETE, "@admin.me")
            .await
            .unwrap()
            .status(),
        202
    );
    eventually(30, "parted", || async {
        youtube_channels(&ing).await.is_empty().then_some(())
    })
    .await;
    eventually(30, "its stream closed", || async {
        (w.yt.open_streams() == 0).then_some(())
    })
    .await;
    assert_eq!(
        call(reqwest::Method::DELETE, &w.channel)
            .await
            .unwrap()
            .status(),
        404
    );
    ing.stop().await;
    w.tap.cleanup().await;
}

#[tokio::test]
async fn a_restart_remembers_youtube_entries_and_publishes_a_gap() {
    let mut w = World::new("test-yt-restart", "@restart").await;
    let chat = w.go_live();
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    let ing = Running::start(w.config(&["@restart"])).await;
    wait_state(&ing, &w.channel, "joined", None).await;
    w.yt.push(&chat, [msg::text("r-1", &viewer, "one")]);
    w.tap
        .collect_until(30, "r-1", |g| g.iter().any(|d| d.event.id == "r-1"))
        .await;
    // Confirmed by the broker before the stop: nothing is left in the w.spool
    // to publish again after the restart.
    eventually(30, "r-1 confirmed", || async {
        let (_, ready) = ing.get("/readyz").await;
        let ready: Value = serde_json::from_str(&ready).ok()?;
        (ready["outbox_unconfirmed"].as_u64()? == 0).then_some(())
    })
    .await;
    ing.stop().await;
    let streams_before = w.yt.stream_requests().len();
    // Not in the config any more: remembered, as the w.channel id.
    let ing = Running::start(w.config(&[])).await;
    let info = wait_state(&ing, &w.channel, "joined", None).await;
    assert_eq!(info["requested_as"], "@restart");
    w.yt.push(&chat, [msg::text("r-2", &viewer, "two")]);
    let got = w
        .tap
        .collect_until(30, "a gap and r-2", |g| {
            g.iter().any(|d| d.event.id == "r-2")
        })
        .await;
    let gap = got
        .iter()
        .position(|d| d.event.kind() == EventKind::Gap)
        .expect("a restart gap");
    match &got[gap].event.body {
        EventBody::Gap(d) => assert_eq!(d.reason, "ingestor_restart"),
        other => panic!("{other:?}"),
    }
    let r2 = got.iter().position(|d| d.event.id == "r-2").unwrap();
    assert!(
        gap < r2,
        "the gap comes before what is read after the restart"
    );
    // The recent messages YouTube sends first may repeat r-1: with its own
    // id, so the consumer's store keeps it once. Here they do: the position
    // is not kept across a restart, so the first stream after it opens
    // without a page token and gets the fake's recent messages, r-1 among
    // them, and a fresh ingestor has seen no ids to drop it by.
    let requests = w.yt.stream_requests();
    assert_eq!(
        requests.get(streams_before),
        Some(&(chat.clone(), None)),
        "the first stream after the restart starts from the recent messages: {requests:?}"
    );
    let extra = w.tap.drain_quiet(Duration::from_millis(700)).await;
    let after: Vec<&Delivery> = got.iter().chain(&extra).collect();
    let ones: Vec<&str> = after
        .iter()
        .filter(|d| d.event.text.as_deref() == Some("one"))
        .map(|d| d.event.id.as_str())
        .collect();
    assert_eq!(
        ones,
        ["r-1"],
        "r-1 repeated once after the restart, with its own id"
    );
    let r1 = after.iter().position(|d| d.event.id == "r-1").unwrap();
    assert!(
        gap < r1 && r1 < r2,
        "the repeat is read after the gap, before r-2: gap {gap}, r-1 {r1}, r-2 {r2}"
    );
    ing.stop().await;
    w.tap.cleanup().await;
}

#[tokio::test]
async fn twitch_and_youtube_run_side_by_side_in_one_ingestor() {
    let irc = FakeIrc::start().await;
    let yt = FakeYoutube::start().await;
    let (channel, video) = ids();
    yt.add_channel(&channel, "@side");
    let chat = yt.go_live(&channel, &video);
    let exchange = unique("test-yt-side");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let twitch = channels(1);
    let (_dir, spool) = spool_dir();
    let base = config(&irc, &rabbit::amqp_url(), &exchange, &twitch, &spool);
    let mut cfg = yt_config(&yt, &exchange, &["@side"], &spool);
    cfg.platforms.twitch = base.platforms.twitch;
    let ing = Running::start(cfg).await;
    irc.wait_joined(&[&twitch[0]], 30).await;
    wait_state(&ing, &channel, "joined", None).await;
    irc.send_lines(&privmsgs(&twitch, 3, "side"));
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    yt.push(
        &chat,
        (0..3).map(|i| msg::text(&format!("yt-{i}"), &viewer, "hello")),
    );
    let got = tap
        .collect_until(30, "both platforms", |g| {
            g.iter().filter(|d| d.event.id.starts_with("side-")).count() >= 3
                && youtube_of(g, &channel).len() >= 3
        })
        .await;
    for d in &got {
        let want = routing_key(&d.event.platform, &d.event.channel);
        assert_eq!(d.routing_key, want);
    }
    assert!(
        got.iter()
            .any(|d| d.routing_key == format!("chat.twitch.{}", twitch[0]))
    );
    assert!(
        got.iter()
            .any(|d| d.routing_key == routing_key("youtube", &channel))
    );
    let (status, ready) = ing.get("/readyz").await;
    assert_eq!(status, 200, "{ready}");
    let ready: Value = serde_json::from_str(&ready).unwrap();
    let platforms: BTreeSet<&str> = ready["sources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["platform"].as_str().unwrap())
        .collect();
    assert_eq!(platforms, BTreeSet::from(["twitch", "youtube"]));
    assert_eq!(ready["channels_wanted"], 2);
    let (_, list) = ing.get("/channels").await;
    let list: Vec<Value> = serde_json::from_str(&list).unwrap();
    assert_eq!(list.len(), 2);
    ing.stop().await;
    tap.cleanup().await;
}

#[tokio::test]
async fn the_search_check_finds_a_live_broadcast_too() {
    let mut w = World::new("test-yt-search", "@searched").await;
    let chat = w.go_live();
    let mut cfg = w.config(&[&w.channel]);
    cfg.platforms.youtube.youtube_live_check = ingestor::platforms::youtube::LiveCheck::Search;
    let ing = Running::start(cfg).await;
    wait_state(&ing, &w.channel, "joined", None).await;
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    w.yt.push(&chat, [msg::text("s-1", &viewer, "found by search")]);
    w.tap
        .collect_until(30, "s-1", |g| g.iter().any(|d| d.event.id == "s-1"))
        .await;
    assert_eq!(w.yt.calls(FakeCall::Search), 1);
    assert_eq!(w.yt.calls(FakeCall::PlaylistItems), 0);
    assert!(
        w.yt.quota_spent() >= 106,
        "search 100 + videos 1 + stream 5: {}",
        w.yt.quota_spent()
    );
    assert!(
        ing.metric("chatbus_ingestor_youtube_quota_units_total")
            .await
            >= 106.0
    );
    ing.stop().await;
    w.tap.cleanup().await;
}

fn google_token(login: &str, access: &str, refresh: Option<&str>) -> StoredToken {
    let now = chrono::Utc::now();
    StoredToken {
        platform: "youtube".into(),
        login: login.into(),
        user_id: "1234".into(),
        access_token: Secret::new(access),
        refresh_token: refresh.map(Secret::new),
        expires_at: Some(now + chrono::Duration::hours(1)),
        scopes: vec!["https://www.googleapis.com/auth/youtube.readonly".into()],
        obtained_at: now,
        last_refreshed_at: None,
        last_validated_at: None,
        status: AccountStatus::Valid,
        status_reason: None,
    }
}

#[tokio::test]
async fn a_token_store_account_reads_with_its_bearer_token() {
    let yt = FakeYoutube::start().await;
    let (channel, video) = ids();
    yt.add_channel(&channel, "@account");
    let chat = yt.go_live(&channel, &video);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("tokenStore.json");
    TokenStore::new(&store)
        .update_token(google_token(
            "me@example.com",
            fake_youtube::ACCESS_TOKEN,
            None,
        ))
        .await
        .unwrap();
    let exchange = unique("test-yt-account");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let mut cfg = yt_config(&yt, &exchange, &[&channel], &dir.path().join("spool"));
    cfg.platforms.youtube.youtube_api_key = None;
    cfg.platforms.youtube.youtube_login = Some("youtube:me@example.com".into());
    cfg.oauth.token_store_path = store;
    let ing = Running::start(cfg).await;
    wait_state(&ing, &channel, "joined", None).await;
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    yt.push(&chat, [msg::text("acc-1", &viewer, "as an account")]);
    tap.collect_until(30, "acc-1", |g| g.iter().any(|d| d.event.id == "acc-1"))
        .await;
    ing.stop().await;
    tap.cleanup().await;
}

#[tokio::test]
async fn a_refused_token_is_refreshed_and_reading_goes_on() {
    let oauth = std::sync::Arc::new(FakeOAuth::start_flavour(Flavour::Google).await);
    let issued = oauth.issue(&["https://www.googleapis.com/auth/youtube.readonly"]);
    let yt = FakeYoutube::start().await;
    {
        let oauth = oauth.clone();
        yt.accept_tokens(move |t| oauth.is_valid_access(t));
    }
    let (channel, video) = ids();
    yt.add_channel(&channel, "@refresh");
    let chat = yt.go_live(&channel, &video);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("tokenStore.json");
    TokenStore::new(&store)
        .update_token(google_token(
            "me@example.com",
            &issued.access_token,
            issued.refresh_token.as_deref(),
        ))
        .await
        .unwrap();
    let exchange = unique("test-yt-refresh");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let mut cfg = yt_config(&yt, &exchange, &[&channel], &dir.path().join("spool"));
    cfg.platforms.youtube.youtube_api_key = None;
    cfg.platforms.youtube.youtube_login = Some("me@example.com".into());
    cfg.oauth.token_store_path = store.clone();
    let base = oauth.base_url();
    cfg.oauth.google_client_id = CLIENT_ID.into();
    cfg.oauth.google_client_secret = Secret::new(CLIENT_SECRET);
    cfg.oauth.google_authorize_url = format!("{base}/oauth2/authorize");
    cfg.oauth.google_token_url = format!("{base}/oauth2/token");
    cfg.oauth.google_validate_url = format!("{base}/tokeninfo");
    cfg.oauth.google_revoke_url = format!("{base}/oauth2/revoke");
    let ing = Running::start(cfg).await;
    wait_state(&ing, &channel, "joined", None).await;
    // Google no longer takes the access token; the stream drops.
    oauth.invalidate_access_tokens();
    yt.kick_streams(StreamEnd::Error);
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    yt.push(&chat, [msg::text("ref-1", &viewer, "after the refresh")]);
    tap.collect_until(30, "ref-1", |g| g.iter().any(|d| d.event.id == "ref-1"))
        .await;
    let now = TokenStore::new(&store)
        .load_token("youtube", "me@example.com")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(now.access_token.expose(), issued.access_token, "refreshed");
    assert!(oauth.is_valid_access(now.access_token.expose()));
    ing.stop().await;
    tap.cleanup().await;
}

#[tokio::test]
async fn malformed_answers_and_messages_are_carried_or_retried_never_fatal() {
    let mut w = World::new("test-yt-odd", "@odd").await;
    let chat = w.go_live();
    w.yt.set_polling_interval(200);
    // A page that is not JSON first: retried from the same token.
    w.yt.fail_next(FakeCall::ChatList, FakeError::Malformed, 1);
    let mut cfg = w.config(&[&w.channel]);
    cfg.platforms.youtube.youtube_streaming = false;
    let ing = Running::start(cfg).await;
    wait_state(&ing, &w.channel, "joined", None).await;
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    let odd = vec![
        msg::text("ok-1", &viewer, "fine"),
        serde_json::json!({"id": "odd-1", "snippet": {"type": "superChatEvent", "superChatDetails": {"amountMicros": "lots"}}}),
        serde_json::json!({"id": "odd-2", "snippet": "not an object"}),
        serde_json::json!({"id": "odd-3", "snippet": {"type": "hologramEvent", "hologramDetails": {"depth": 3}}}),
        serde_json::json!({"snippet": {"type": "textMessageEvent", "textMessageDetails": {"messageText": "no id"}}}),
        msg::text("ok-2", &viewer, "still fine"),
    ];
    w.yt.push(&chat, odd.clone());
    let got = w
        .tap
        .collect_until(30, "all six", |g| youtube_of(g, &w.channel).len() >= 6)
        .await;
    let by_id: BTreeMap<&str, &Delivery> = got.iter().map(|d| (d.event.id.as_str(), d)).collect();
    assert_eq!(by_id["ok-1"].event.kind(), EventKind::Message);
    assert_eq!(by_id["ok-2"].event.kind(), EventKind::Message);
    for id in ["odd-1", "odd-2", "odd-3"] {
        let e = &by_id[id].event;
        assert_eq!(e.kind(), EventKind::OtherNotice, "{id}");
        let raw: Value = serde_json::from_str(e.raw.as_deref().unwrap()).unwrap();
        assert_eq!(raw["id"], id, "the resource travels in raw");
    }
    let derived = got
        .iter()
        .find(|d| d.event.text.as_deref() == Some("no id"))
        .expect("the message without an id");
    assert!(uuid::Uuid::parse_str(&derived.event.id).is_ok());
    let (_, text) = ing.get("/metrics").await;
    for reason in ["malformed", "unknown_type"] {
        assert!(
            text.lines().any(
                |l| l.starts_with("chatbus_ingestor_youtube_bad_messages_total")
                    && l.contains(&format!("reason=\"{reason}\""))
            ),
            "{reason} counted"
        );
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("chatbus_ingestor_youtube_errors_total")
                && l.contains("reason=\"malformed\"")),
        "the page that was not JSON is counted"
    );
    ing.stop().await;
    w.tap.cleanup().await;
}
