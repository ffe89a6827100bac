//! Twitch stream status against the fake Helix and the real RabbitMQ:
//! one event per transition, `stream_update` only on a change, 100
//! channels per Get Streams call, and Helix's rate budget kept.

use std::time::Duration;

use common::amqp::Delivery;
use common::schema::{ChatEvent, EventBody};
use testkit::fake_helix::{self, FakeHelix};
use testkit::fake_irc::FakeIrc;
use testkit::rabbit::{self, unique};

use crate::helpers::{Running, Tap, channels, config, spool_dir};

/// A fake Twitch (IRC + Helix with its token endpoint) and an ingestor
/// reading `channels`' status every `interval`.
struct World {
    helix: FakeHelix,
    tap: Tap,
    ing: Option<Running>,
    _irc: FakeIrc,
    _dir: tempfile::TempDir,
}

impl World {
    async fn start(
        channels: &[String],
        interval: Duration,
        tweak: impl FnOnce(&FakeHelix),
    ) -> Self {
        let irc = FakeIrc::start().await;
        let helix = FakeHelix::start().await;
        tweak(&helix);
        let (dir, spool) = spool_dir();
        let exchange = unique("test-status");
        let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
        tap.include_status();
        let mut cfg = config(&irc, &rabbit::amqp_url(), &exchange, channels, &spool);
        cfg.oauth.token_store_path = dir.path().join("tokenStore.json");
        cfg.oauth.twitch_client_id = fake_helix::CLIENT_ID.into();
        cfg.oauth.twitch_client_secret = common::Secret::new(fake_helix::CLIENT_SECRET);
        cfg.oauth.twitch_token_url = helix.token_url();
        let t = &mut cfg.platforms.twitch;
        t.twitch_helix_url = helix.url();
        t.twitch_status_interval = interval;
        t.twitch_join_limit = 100_000;
        let ing = Running::start(cfg).await;
        Self {
            helix,
            tap,
            ing: Some(ing),
            _irc: irc,
            _dir: dir,
        }
    }

    /// Status events until `n` of them arrived.
    async fn status_events(&mut self, n: usize, what: &str) -> Vec<Delivery> {
        let got = self
            .tap
            .collect_until(60, what, |got| {
                got.iter()
                    .filter(|d| d.event.kind_name().starts_with("stream_"))
                    .count()
                    >= n
            })
            .await;
        got.into_iter()
            .filter(|d| d.event.kind_name().starts_with("stream_"))
            .collect()
    }

    async fn stop(mut self) {
        if let Some(ing) = self.ing.take() {
            ing.stop().await;
        }
        self.tap.cleanup().await;
    }
}

fn kinds(events: &[Delivery]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|d| (d.event.channel.clone(), d.event.kind_name().to_owned()))
        .collect()
}

#[tokio::test]
async fn offline_online_offline_publish_one_event_each_and_a_viewer_change_one_update() {
    let chans = channels(2);
    let (a, b) = (chans[0].clone(), chans[1].clone());
    let mut w = World::start(&chans, Duration::from_millis(200), |_| {}).await;

    // The initial state, once per channel.
    let first = w.status_events(2, "initial offline").await;
    let mut initial = kinds(&first);
    initial.sort();
    assert_eq!(
        initial,
        [
            (a.clone(), "stream_offline".into()),
            (b.clone(), "stream_offline".into())
        ]
    );

    let stream_id = w.helix.go_live(&a, "speedrun", "Celeste", 10);
    let online = w.status_events(1, "online").await;
    assert_eq!(kinds(&online), [(a.clone(), "stream_online".into())]);
    let e = &online[0].event;
    assert_eq!(e.id, format!("stream_online:{stream_id}"));
    let EventBody::StreamOnline(d) = &e.body else {
        panic!("{e:?}")
    };
    assert_eq!(d.title.as_deref(), Some("speedrun"));
    assert_eq!(d.category.as_deref(), Some("Celeste"));
    assert_eq!(d.viewer_count, Some(10));
    assert!(d.started_at.is_some());
    assert_eq!(online[0].routing_key, format!("chat.twitch.{a}"));

    // An expired app token is replaced; then a viewer change is one update.
    w.helix.expire_app_tokens();
    w.helix.update_stream(&a, |s| s.viewer_count = 25);
    let update = w.status_events(1, "update").await;
    assert_eq!(kinds(&update), [(a.clone(), "stream_update".into())]);
    let EventBody::StreamUpdate(d) = &update[0].event.body else {
        panic!()
    };
    assert_eq!(d.viewer_count, Some(25));
    assert!(w.helix.calls("token") >= 2, "a new app token was fetched");

    w.helix.go_offline(&a);
    let offline = w.status_events(1, "offline").await;
    assert_eq!(kinds(&offline), [(a.clone(), "stream_offline".into())]);
    assert_eq!(offline[0].event.id, format!("stream_offline:{stream_id}"));

    // Many more polls, nothing changed: nothing more is published.
    let polls = w.helix.calls("streams");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(w.helix.calls("streams") >= polls + 3, "still polling");
    let rest = w.tap.drain_quiet(Duration::from_millis(500)).await;
    assert!(kinds(&rest).is_empty(), "{:?}", kinds(&rest));
    assert_eq!(w.helix.rate_limited(), 0);
    w.stop().await;
}

/// The rounds of `log`: calls closer than `gap` to the previous one.
fn rounds(log: &[(std::time::Instant, usize)], gap: Duration) -> Vec<Vec<usize>> {
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut last: Option<std::time::Instant> = None;
    for (at, logins) in log {
        if last.is_none_or(|l| at.duration_since(l) > gap) {
            rounds.push(Vec::new());
        }
        rounds.last_mut().unwrap().push(*logins);
        last = Some(*at);
    }
    rounds
}

#[tokio::test]
async fn a_thousand_channels_cost_ten_get_streams_calls_per_interval() {
    let chans = channels(1000);
    // A 2-s interval: rounds are told apart by the pause between them,
    // which stays long even when a loaded machine slows a round down.
    let mut w = World::start(&chans, Duration::from_secs(2), |_| {}).await;
    w.helix.go_live(&chans[7], "live one", "Chess", 3);
    let initial = w.status_events(1000, "every channel's initial state").await;
    assert_eq!(initial.len(), 1000);
    assert_eq!(
        initial
            .iter()
            .filter(|d| d.event.kind_name() == "stream_online")
            .count(),
        1
    );
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let ing = w.ing.take().unwrap();
    ing.stop().await;
    let rounds = rounds(&w.helix.streams_log(), Duration::from_millis(900));
    assert!(rounds.len() >= 3, "{} rounds", rounds.len());
    // Every round but a last one cut short by the stop: 10 calls of 100.
    for round in &rounds[..rounds.len() - 1] {
        assert_eq!(round, &vec![100; 10]);
    }
    assert_eq!(w.helix.rate_limited(), 0);
    w.stop().await;
}

#[tokio::test]
async fn the_poller_waits_for_helix_rate_budget_and_is_never_refused() {
    let chans = channels(1000);
    // 4 points per 2 s: a round of 10 calls needs three windows.
    let mut w = World::start(&chans, Duration::from_secs(30), |h| {
        h.set_rate_limit(4, Duration::from_secs(2));
    })
    .await;
    let initial = w
        .status_events(1000, "every channel's state, in three windows")
        .await;
    assert_eq!(initial.len(), 1000);
    assert_eq!(w.helix.calls("streams"), 10);
    assert_eq!(w.helix.rate_limited(), 0, "never over the budget");
    w.stop().await;
}

/// The status events of `channel` among `got`.
fn status_of(got: &[Delivery], channel: &str) -> Vec<ChatEvent> {
    got.iter()
        .map(|d| &d.event)
        .filter(|e| e.channel == channel && e.kind_name().starts_with("stream_"))
        .cloned()
        .collect()
}

/// Collects until a status event of `channel` passes `ok`; keeps every
/// status event seen in `seen`.
async fn wait_status(
    tap: &mut Tap,
    channel: &str,
    seen: &mut Vec<ChatEvent>,
    what: &str,
    ok: impl Fn(&ChatEvent) -> bool,
) {
    let got = tap
        .collect_until(30, what, |g| status_of(g, channel).iter().any(&ok))
        .await;
    seen.extend(status_of(&got, channel));
}

fn with_viewers(n: u64) -> impl Fn(&ChatEvent) -> bool {
    move |d: &ChatEvent| match &d.body {
        EventBody::StreamOnline(s) | EventBody::StreamUpdate(s) => s.viewer_count == Some(n),
        _ => false,
    }
}

#[tokio::test]
async fn youtube_publishes_its_live_state_and_viewers_once_per_change() {
    let mut w = crate::youtube::World::new("test-yt-status", "@status").await;
    w.tap.include_status();
    let channel = w.channel.clone();
    let video = w.video.clone();
    let ing = Running::start(w.config(&[&channel])).await;
    let mut seen: Vec<ChatEvent> = Vec::new();
    wait_status(&mut w.tap, &channel, &mut seen, "initial offline", |d| {
        d.kind_name() == "stream_offline"
    })
    .await;

    w.go_live();
    w.yt.set_viewers(&video, 100);
    wait_status(
        &mut w.tap,
        &channel,
        &mut seen,
        "live, 100 viewers",
        with_viewers(100),
    )
    .await;
    w.yt.set_viewers(&video, 250);
    wait_status(
        &mut w.tap,
        &channel,
        &mut seen,
        "an update to 250",
        with_viewers(250),
    )
    .await;
    w.yt.end_broadcast(&video, testkit::fake_youtube::End::ChatEndedEvent);
    let ended = format!("stream_offline:{video}");
    wait_status(&mut w.tap, &channel, &mut seen, "offline at the end", |d| {
        d.id == ended
    })
    .await;
    let rest = w.tap.drain_quiet(Duration::from_millis(1000)).await;
    seen.extend(status_of(&rest, &channel));

    let kinds: Vec<&str> = seen.iter().map(|d| d.kind_name()).collect();
    assert_eq!(kinds.first(), Some(&"stream_offline"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|k| **k == "stream_online").count(),
        1,
        "{kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|k| **k == "stream_offline").count(),
        2,
        "{kinds:?}"
    );
    assert_eq!(kinds.last(), Some(&"stream_offline"), "{kinds:?}");
    let online = seen
        .iter()
        .find(|d| d.kind_name() == "stream_online")
        .unwrap();
    let EventBody::StreamOnline(d) = &online.body else {
        panic!()
    };
    assert_eq!(d.stream_id.as_deref(), Some(video.as_str()));
    assert!(d.title.is_some() && d.started_at.is_some(), "{d:?}");
    // Each update says something new.
    let counts: Vec<Option<u64>> = seen
        .iter()
        .filter_map(|d| match &d.body {
            EventBody::StreamOnline(s) | EventBody::StreamUpdate(s) => Some(s.viewer_count),
            _ => None,
        })
        .collect();
    assert!(counts.windows(2).all(|p| p[0] != p[1]), "{counts:?}");
    ing.stop().await;
    w.tap.cleanup().await;
}
