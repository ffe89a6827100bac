//! The admin HTTP API: channels, readiness, metrics.

use std::time::Duration;

use testkit::fake_irc::FakeIrc;
use testkit::rabbit::{self, unique};
use testkit::{eventually, within};

use crate::helpers::*;

async fn send(method: reqwest::Method, url: String, key: Option<&str>) -> (u16, serde_json::Value) {
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn channels_can_be_listed_joined_and_parted_with_the_api_key() {
    let fake = FakeIrc::start().await;
    let exchange = unique("test-ing-admin");
    let tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let chans = channels(2);
    let (_dir, spool) = spool_dir();
    let mut cfg = config(&fake, &rabbit::amqp_url(), &exchange, &chans[..1], &spool);
    cfg.ingestor_api_key = Some("s3cret-key".into());
    let ing = Running::start(cfg).await;
    fake.wait_joined(&[&chans[0]], 30).await;
    let base = format!("http://{}", ing.http);

    let (status, list) = send(reqwest::Method::GET, format!("{base}/channels"), None).await;
    assert_eq!(status, 200);
    assert_eq!(list[0]["channel"], chans[0].as_str());
    assert_eq!(list[0]["state"], "joined");
    assert!(list[0]["joined_at"].is_string());

    let join_url = format!("{base}/channels/{}", chans[1]);
    let (status, body) = send(reqwest::Method::POST, join_url.clone(), None).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _) = send(reqwest::Method::POST, join_url.clone(), Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, body) = send(reqwest::Method::POST, join_url.clone(), Some("s3cret-key")).await;
    assert_eq!((status, body["changed"].as_bool()), (202, Some(true)));
    fake.wait_joined(&[&chans[1]], 30).await;
    let (status, body) = send(reqwest::Method::POST, join_url.clone(), Some("s3cret-key")).await;
    assert_eq!(
        (status, body["changed"].as_bool()),
        (200, Some(false)),
        "joining twice is idempotent"
    );

    let (status, body) = send(
        reqwest::Method::POST,
        format!("{base}/channels/not%20a%20login"),
        Some("s3cret-key"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_channel"))
    );

    let (status, _) = send(
        reqwest::Method::DELETE,
        join_url.clone(),
        Some("s3cret-key"),
    )
    .await;
    assert_eq!(status, 202);
    eventually(30, "PART confirmed", || async {
        (!fake.joined_channels().contains(&chans[1])).then_some(())
    })
    .await;
    eventually(30, "channel gone from the list", || async {
        let (_, list) = send(reqwest::Method::GET, format!("{base}/channels"), None).await;
        (list.as_array().unwrap().len() == 1).then_some(())
    })
    .await;
    let (status, body) = send(reqwest::Method::DELETE, join_url, Some("s3cret-key")).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    ing.stop().await;
    tap.cleanup().await;
}

#[tokio::test]
async fn join_and_part_are_refused_without_a_configured_key() {
    let fake = FakeIrc::start().await;
    let (_dir, spool) = spool_dir();
    let ing = Running::start(config(
        &fake,
        &rabbit::amqp_url(),
        &unique("test-ing-nokey"),
        &[],
        &spool,
    ))
    .await;
    let (status, body) = send(
        reqwest::Method::POST,
        format!("http://{}/channels/somebody", ing.http),
        Some("anything"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("admin_disabled"))
    );
    ing.stop().await;
}

#[tokio::test]
async fn readiness_follows_the_broker_and_metrics_count_events() {
    let fake = FakeIrc::start().await;
    let exchange = unique("test-ing-ready");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let chans = channels(1);
    // The broker sits behind a proxy this test cuts.
    let proxy = testkit::proxy::TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let (_dir, spool) = spool_dir();
    let ing = Running::start(config(
        &fake,
        &proxy.url(&rabbit::amqp_url()),
        &exchange,
        &chans,
        &spool,
    ))
    .await;
    fake.wait_joined(&[&chans[0]], 30).await;
    eventually(30, "ready", || async {
        (ing.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(ing.get("/healthz").await, (200, "ok".to_owned()));

    fake.send_lines(&privmsgs(&chans, 20, "m"));
    tap.collect_until(30, "21 events", |g| g.len() >= 21).await;
    eventually(10, "confirm counters", || async {
        // This channel's series only: under `cargo test` other tests'
        // ingestors count into the same process-wide registry.
        let label = format!("channel=\"{}\"", chans[0]);
        let page: String = ing
            .get("/metrics")
            .await
            .1
            .lines()
            .filter(|l| l.contains(&label))
            .map(|l| format!("{l}\n"))
            .collect();
        let received = metric_value(&page, "chatbus_ingestor_events_received_total");
        let confirmed = metric_value(&page, "chatbus_ingestor_events_confirmed_total");
        (received == 21.0 && confirmed == 21.0).then_some(page)
    })
    .await;
    let page = ing.get("/metrics").await.1;
    assert!(
        page.contains(&format!(
            "chatbus_ingestor_events_received_total{{platform=\"twitch\",channel=\"{}\",kind=\"message\"}} 20",
            chans[0]
        )),
        "{page}"
    );
    assert!(
        page.contains("chatbus_ingestor_publish_confirm_seconds"),
        "latency histogram"
    );
    assert!(page.contains("chatbus_ingestor_spool_bytes"));

    proxy.cut();
    let (status, body) = eventually(30, "not ready without the broker", || async {
        let (s, b) = ing.get("/readyz").await;
        (s == 503).then_some((s, b))
    })
    .await;
    let body: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, body["broker_connected"].as_bool()),
        (503, Some(false))
    );
    proxy.restore();
    within(60, "ready again", async {
        while ing.get("/readyz").await.0 != 200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    ing.stop().await;
    tap.cleanup().await;
}

#[tokio::test]
async fn the_api_key_counts_only_in_the_authorization_header() {
    let fake = FakeIrc::start().await;
    let (_dir, spool) = spool_dir();
    let mut cfg = config(
        &fake,
        &rabbit::amqp_url(),
        &unique("test-ing-keyq"),
        &[],
        &spool,
    );
    cfg.ingestor_api_key = Some("s3cret-key".into());
    let ing = Running::start(cfg).await;
    let chans = channels(1);
    // In the URL, a key ends up in proxy and access logs: refused.
    let (status, _) = send(
        reqwest::Method::POST,
        format!(
            "http://{}/channels/{}?access_token=s3cret-key",
            ing.http, chans[0]
        ),
        None,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = send(
        reqwest::Method::POST,
        format!("http://{}/channels/twitch/{}", ing.http, chans[0]),
        Some("s3cret-key"),
    )
    .await;
    assert_eq!(status, 202);
    ing.stop().await;
}

#[tokio::test]
async fn the_channel_cap_refuses_one_more_and_emptied_connections_close() {
    let fake = FakeIrc::start().await;
    let (_dir, spool) = spool_dir();
    let chans = channels(6);
    let mut cfg = config(
        &fake,
        &rabbit::amqp_url(),
        &unique("test-ing-cap"),
        &[],
        &spool,
    );
    cfg.ingestor_api_key = Some("k".into());
    cfg.platforms.twitch.twitch_max_channels = 6;
    cfg.platforms.twitch.twitch_channels_per_connection = 2;
    let ing = Running::start(cfg).await;
    let base = format!("http://{}", ing.http);
    for c in &chans {
        let (status, _) = send(
            reqwest::Method::POST,
            format!("{base}/channels/twitch/{c}"),
            Some("k"),
        )
        .await;
        assert_eq!(status, 202);
    }
    let (status, body) = send(
        reqwest::Method::POST,
        format!("{base}/channels/twitch/one_too_many"),
        Some("k"),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (409, Some("channel_limit"))
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("TWITCH_MAX_CHANNELS"),
        "{body}"
    );
    let refs: Vec<&str> = chans.iter().map(String::as_str).collect();
    fake.wait_joined(&refs, 30).await;
    fake.wait_connections(3, 30).await;
    // Back down to 2 channels: the connections left without one close.
    for c in &chans[2..] {
        let (status, _) = send(
            reqwest::Method::DELETE,
            format!("{base}/channels/twitch/{c}"),
            Some("k"),
        )
        .await;
        assert_eq!(status, 202);
    }
    eventually(30, "emptied IRC connections closed", || async {
        (fake.connections() == 1).then_some(())
    })
    .await;
    let (_, list) = send(
        reqwest::Method::GET,
        format!("{base}/channels/twitch"),
        None,
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    let (_, ready) = send(reqwest::Method::GET, format!("{base}/readyz"), None).await;
    assert_eq!(ready["sources"][0]["channel_limit"], 6);
    assert_eq!(
        ready["sources"][0]["channel_limit_reason"],
        "TWITCH_MAX_CHANNELS"
    );
    ing.stop().await;
}
