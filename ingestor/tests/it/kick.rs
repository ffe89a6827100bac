//! The Kick platform against the fake Kick and the real RabbitMQ: signed
//! deliveries on `POST /hooks/kick` are published once with their exact
//! text, every bad one gets its status and publishes nothing, and the
//! event subscriptions follow the wanted channels (and come back after Kick
//! drops them).

use std::time::Duration;

use serde_json::{Value, json};
use testkit::fake_irc::FakeIrc;
use testkit::fake_kick::FakeKick;
use testkit::rabbit::{self, unique};

use crate::helpers::*;

const BROADCASTER: u64 = 123_456_789;

fn chat_body(message_id: &str, text: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "message_id": message_id,
        "replies_to": null,
        "broadcaster": {"is_anonymous": false, "user_id": BROADCASTER, "username": "Lounge",
            "is_verified": true, "profile_picture": "https://example.com/b.jpg", "channel_slug": "lounge", "identity": null},
        "sender": {"is_anonymous": false, "user_id": 987_654_321, "username": "Sender_Name", "is_verified": false,
            "profile_picture": "https://example.com/s.jpg", "channel_slug": "sender_name",
            "identity": {"username_color": "#FF5733", "badges": [{"text": "Subscriber", "type": "subscriber", "count": 3}]}},
        "content": text,
        "emotes": [],
        "created_at": "2025-01-14T16:08:06Z"
    }))
    .unwrap()
}

/// A delivery that must be refused: what it is, the status it gets, its
/// message id, timestamp, body and signature (`None`: signed properly).
type Bad = (&'static str, u16, String, String, Vec<u8>, Option<String>);

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn start(
    fake: &FakeKick,
    exchange: &str,
    spool: &std::path::Path,
    irc: &FakeIrc,
) -> (Running, String) {
    let mut cfg = config(irc, &rabbit::amqp_url(), exchange, &[], spool);
    cfg.webhook_http_addr = Some("127.0.0.1:0".into());
    cfg.webhook_max_body_bytes = 65_536;
    cfg.ingestor_api_key = Some("kick-admin-key".into());
    cfg.platforms.kick = ingestor::platforms::kick::Settings {
        kick_channels: vec!["Lounge".into()],
        kick_client_id: Some("fake-client".into()),
        kick_client_secret: common::Secret::new("fake-secret"),
        kick_api_url: fake.url(),
        kick_oauth_url: fake.url(),
        kick_reconcile_interval: Duration::from_millis(300),
        kick_status_interval: Duration::from_millis(200),
        ..Default::default()
    };
    let ing = Running::start(cfg).await;
    let ready: Value = testkit::eventually(20, "the webhook listener is up", || async {
        let (_, body) = ing.get("/readyz").await;
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["webhooks"]["addr"].is_string() && v["webhooks"]["platforms"][0] == "kick").then_some(v)
    })
    .await;
    let url = format!(
        "http://{}/hooks/kick",
        ready["webhooks"]["addr"].as_str().unwrap()
    );
    (ing, url)
}

async fn subscribed_all(fake: &FakeKick) {
    let want = ingestor::platforms::kick::EVENTS.len();
    testkit::eventually(
        20,
        "every Kick event subscribed for the channel",
        || async {
            let subs = fake.subscriptions();
            (subs.len() == want && subs.iter().all(|s| s.broadcaster_user_id == BROADCASTER))
                .then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn kick_a_signed_chat_message_is_published_once_and_bad_deliveries_publish_nothing() {
    let irc = FakeIrc::start().await;
    let fake = FakeKick::start().await;
    fake.add_channel("lounge", BROADCASTER);
    let exchange = unique("test-kick");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let (_dir, spool) = spool_dir();
    let (ing, url) = start(&fake, &exchange, &spool, &irc).await;
    subscribed_all(&fake).await;

    let text = "héllo 👋 \"quoted\" [emote:37226:KEKW]";
    let body = chat_body("kick-msg-1", text);
    let ts = now();
    let stale = (chrono::Utc::now() - chrono::Duration::minutes(11))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let other = chat_body("kick-msg-2", "other");
    let bad: Vec<Bad> = vec![
        (
            "a signature of another body",
            401,
            "01BAD1".into(),
            ts.clone(),
            body.clone(),
            Some(FakeKick::sign("01BAD1", &ts, &other)),
        ),
        (
            "garbage signature",
            401,
            "01BAD2".into(),
            ts.clone(),
            body.clone(),
            Some("AAAA".into()),
        ),
        (
            "stale (11 minutes old)",
            401,
            "01BAD3".into(),
            stale.clone(),
            body.clone(),
            None,
        ),
        (
            "not JSON",
            400,
            "01BAD4".into(),
            ts.clone(),
            b"{not json".to_vec(),
            None,
        ),
    ];
    for (what, status, id, at, body, signature) in bad {
        let (got, answer) =
            FakeKick::deliver(&url, "chat.message.sent", &id, &at, body, signature).await;
        assert_eq!(got, status, "{what}: {answer}");
    }
    // 10 MB: refused before it is read (413, or the connection closed).
    let (got, answer) = FakeKick::deliver(
        &url,
        "chat.message.sent",
        "01BAD5",
        &ts,
        vec![b' '; 10 * 1024 * 1024],
        None,
    )
    .await;
    assert!(got == 413 || got == 0, "10 MB: {got} {answer}");
    // A validly signed delivery for a broadcaster not read here.
    let mut stranger: Value =
        serde_json::from_slice(&chat_body("kick-msg-3", "elsewhere")).unwrap();
    stranger["broadcaster"]["user_id"] = json!(42);
    stranger["broadcaster"]["channel_slug"] = json!("elsewhere");
    let (got, answer) = FakeKick::deliver(
        &url,
        "chat.message.sent",
        "01STRANGER",
        &ts,
        serde_json::to_vec(&stranger).unwrap(),
        None,
    )
    .await;
    assert_eq!(
        (got, answer["dropped"].as_str()),
        (200, Some("not_subscribed")),
        "{answer}"
    );

    // The good delivery, retried three times (the same message id).
    for attempt in 0..4 {
        let (got, answer) =
            FakeKick::deliver(&url, "chat.message.sent", "01GOOD", &ts, body.clone(), None).await;
        assert_eq!(got, 200, "{answer}");
        assert_eq!(
            answer["duplicate"],
            attempt > 0,
            "attempt {attempt}: {answer}"
        );
    }
    // A replayed message id with a fresh signature is still a duplicate.
    let (got, answer) = FakeKick::deliver(
        &url,
        "chat.message.sent",
        "01GOOD",
        &now(),
        body.clone(),
        None,
    )
    .await;
    assert_eq!((got, &answer["duplicate"]), (200, &json!(true)), "{answer}");
    let (got, _) = FakeKick::deliver(
        &url,
        "chat.message.sent",
        "01SECOND",
        &ts,
        chat_body("kick-msg-4", "second"),
        None,
    )
    .await;
    assert_eq!(got, 200);

    let got = tap
        .collect_until(30, "both good events", |g| {
            g.iter().any(|d| d.event.text.as_deref() == Some("second"))
        })
        .await;
    let texts: Vec<&str> = got
        .iter()
        .filter(|d| d.event.platform == "kick")
        .filter_map(|d| d.event.text.as_deref())
        .collect();
    assert_eq!(texts, [text, "second"]);
    let first = got.iter().find(|d| d.event.id == "kick-msg-1").unwrap();
    assert_eq!(first.routing_key, "chat.kick.lounge");
    assert_eq!(first.event.channel_id.as_deref(), Some("123456789"));
    assert_eq!(first.event.author.as_ref().unwrap().login, "sender_name");
    assert!(
        tap.drain_quiet(Duration::from_millis(500))
            .await
            .iter()
            .all(|d| d.event.platform != "kick"),
        "the retries and bad deliveries published nothing"
    );
    assert_eq!(
        ing.metric("chatbus_ingestor_webhook_duplicates_total")
            .await,
        4.0
    );
    ing.stop().await;
    tap.cleanup().await;
    fake.stop();
}

#[tokio::test]
async fn kick_subscriptions_follow_joins_and_parts_and_come_back_after_kick_drops_them() {
    let irc = FakeIrc::start().await;
    let fake = FakeKick::start().await;
    fake.add_channel("lounge", BROADCASTER);
    fake.add_channel("second", 777);
    let exchange = unique("test-kick-subs");
    let (_dir, spool) = spool_dir();
    let (ing, _url) = start(&fake, &exchange, &spool, &irc).await;
    subscribed_all(&fake).await;
    let (_, channels) = ing.get("/channels").await;
    assert!(channels.contains("\"lounge\""), "{channels}");

    fake.drop_subscriptions();
    subscribed_all(&fake).await;

    // A runtime join subscribes; a part unsubscribes.
    let admin = format!("http://{}", ing.http);
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{admin}/channels/kick/second"))
        .bearer_auth("kick-admin-key")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let want = ingestor::platforms::kick::EVENTS.len();
    testkit::eventually(20, "the joined channel is subscribed", || async {
        (fake
            .subscriptions()
            .iter()
            .filter(|s| s.broadcaster_user_id == 777)
            .count()
            == want)
            .then_some(())
    })
    .await;
    let res = client
        .delete(format!("{admin}/channels/kick/second"))
        .bearer_auth("kick-admin-key")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    testkit::eventually(20, "the parted channel is unsubscribed", || async {
        fake.subscriptions()
            .iter()
            .all(|s| s.broadcaster_user_id != 777)
            .then_some(())
    })
    .await;
    assert!(fake.tokens_issued() >= 1);
    ing.stop().await;
    fake.stop();
}

/// A token-store entry of a Kick account.
fn stored(login: &str, user_id: u64, token: &str, scopes: &[&str]) -> Value {
    json!({
        "platform": "kick",
        "login": login,
        "user_id": user_id.to_string(),
        "access_token": token,
        "refresh_token": format!("refresh-{token}"),
        "expires_at": "2099-01-01T00:00:00Z",
        "scopes": scopes,
        "obtained_at": "2026-01-01T00:00:00Z",
        "status": "valid"
    })
}

/// Until the ingestor consumes `queue` (a command published before would
/// find no sender).
async fn wait_for_consumer(conn: &lapin::Connection, queue: &str) {
    testkit::eventually(20, "the ingestor consumes its command queue", || async {
        let ch = conn.create_channel().await.ok()?;
        let declared = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await;
        let consumed = matches!(&declared, Ok(q) if q.consumer_count() > 0);
        if declared.is_ok() {
            common::amqp::close_channel(&ch, "checked").await;
        }
        consumed.then_some(())
    })
    .await;
}

#[tokio::test]
async fn kick_commands_send_through_the_bus_are_read_back_and_need_their_scope() {
    use common::amqp::commands::CommandClient;
    use common::command::{CommandAction, ReceiptStatus};

    let irc = FakeIrc::start().await;
    let fake = FakeKick::start().await;
    fake.add_channel("lounge", BROADCASTER);
    fake.add_user(
        "chatbot",
        4242,
        "kick-tok-chatbot",
        &["chat:write", "moderation:ban"],
    );
    fake.add_user("noscope", 4343, "kick-tok-noscope", &["user:read"]);
    let exchange = unique("test-kick-cmd");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let (dir, spool) = spool_dir();
    let store = dir.path().join("tokenStore.json");
    let accounts = json!({"version": 1, "accounts": {
        "kick:chatbot": stored("chatbot", 4242, "kick-tok-chatbot", &["chat:write", "moderation:ban"]),
        "kick:noscope": stored("noscope", 4343, "kick-tok-noscope", &["user:read"]),
    }});
    std::fs::write(&store, serde_json::to_vec_pretty(&accounts).unwrap()).unwrap();
    std::fs::set_permissions(&store, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    let mut cfg = config(&irc, &rabbit::amqp_url(), &exchange, &[], &spool);
    cfg.webhook_http_addr = Some("127.0.0.1:0".into());
    cfg.oauth.token_store_path = store;
    // As from the environment: KICK_CLIENT_ID/SECRET configure the Kick
    // OAuth provider too (the sender's token manager).
    cfg.oauth.kick_client_id = "fake-client".into();
    cfg.oauth.kick_client_secret = common::Secret::new("fake-secret");
    cfg.oauth.kick_token_url = format!("{}/oauth/token", fake.url());
    cfg.oauth.kick_validate_url = format!("{}/public/v1/users", fake.url());
    cfg.commands_exchange = unique("test-kick-commands");
    cfg.commands_queue = format!("{}.ingestor", cfg.commands_exchange);
    cfg.commands_allow = vec!["kick:chatbot:moderate".into(), "kick:noscope".into()];
    cfg.platforms.kick = ingestor::platforms::kick::Settings {
        kick_channels: vec!["lounge".into()],
        kick_client_id: Some("fake-client".into()),
        kick_client_secret: common::Secret::new("fake-secret"),
        kick_api_url: fake.url(),
        kick_oauth_url: fake.url(),
        kick_reconcile_interval: Duration::from_millis(300),
        kick_status_interval: Duration::from_millis(200),
        kick_sender: Some("chatbot".into()),
        ..Default::default()
    };
    let ing = Running::start(cfg.clone()).await;
    let ready: Value = testkit::eventually(20, "the webhook listener is up", || async {
        let (_, body) = ing.get("/readyz").await;
        let v: Value = serde_json::from_str(&body).ok()?;
        (v["webhooks"]["addr"].is_string() && v["webhooks"]["platforms"][0] == "kick").then_some(v)
    })
    .await;
    fake.deliver_to(&format!(
        "http://{}/hooks/kick",
        ready["webhooks"]["addr"].as_str().unwrap()
    ));
    subscribed_all(&fake).await;
    let conn = rabbit::connect_to(&rabbit::amqp_url(), "test-kick-commands").await;
    wait_for_consumer(&conn, &cfg.commands_queue).await;
    let commands = CommandClient::open(&conn, &cfg.commands_exchange, "test")
        .await
        .unwrap();
    let send = |text: &str| CommandAction::Send {
        text: text.into(),
        reply_to: None,
    };

    // Sent, with Kick's message id, and read back from the webhook.
    let r = testkit::within(
        60,
        "a receipt",
        commands.execute(commands.command("kick", "lounge", send("hello kick 👋"))),
    )
    .await
    .unwrap();
    assert_eq!(r.status, ReceiptStatus::Sent, "{r:?}");
    let message_id = r.platform_message_id.clone().expect("Kick's message id");
    let posted = fake.chat();
    assert_eq!(
        posted,
        [json!({"broadcaster_user_id": BROADCASTER, "content": "hello kick 👋", "type": "user"})]
    );
    let got = tap
        .collect_until(30, "the sent message read back", |d| {
            d.iter().any(|d| d.event.id == message_id)
        })
        .await;
    let echoed = got.iter().find(|d| d.event.id == message_id).unwrap();
    assert_eq!(echoed.routing_key, "chat.kick.lounge");
    assert_eq!(echoed.event.text.as_deref(), Some("hello kick 👋"));
    assert_eq!(echoed.event.author.as_ref().unwrap().login, "chatbot");

    // A timeout: Kick's ban with a duration in minutes.
    let r = testkit::within(
        60,
        "a receipt",
        commands.execute(commands.command(
            "kick",
            "lounge",
            CommandAction::Timeout {
                user_id: "777".into(),
                seconds: 90,
                reason: Some("calm down".into()),
            },
        )),
    )
    .await
    .unwrap();
    assert_eq!(r.status, ReceiptStatus::Sent, "{r:?}");
    assert_eq!(
        fake.moderation(),
        [
            json!({"call": "ban", "body": {"broadcaster_user_id": BROADCASTER, "user_id": 777,
            "duration": 2, "reason": "calm down"}})
        ]
    );

    // A token without chat:write: rejected naming the scope, nothing posted.
    let mut c = commands.command("kick", "lounge", send("not me"));
    c.account = Some("noscope".into());
    let r = testkit::within(60, "a receipt", commands.execute(c))
        .await
        .unwrap();
    assert_eq!(r.status, ReceiptStatus::Rejected, "{r:?}");
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .starts_with("missing_scope: chat:write"),
        "{r:?}"
    );
    assert_eq!(fake.chat().len(), 1);

    ing.stop().await;
    tap.cleanup().await;
    let ch = conn.create_channel().await.unwrap();
    let _ = ch
        .queue_delete(cfg.commands_queue.as_str().into(), Default::default())
        .await;
    let _ = ch
        .exchange_delete(cfg.commands_exchange.as_str().into(), Default::default())
        .await;
    fake.stop();
}

#[tokio::test]
async fn kick_status_comes_from_webhooks_and_polling_each_transition_once_with_viewers() {
    use common::schema::{EventBody, EventKind};
    let irc = FakeIrc::start().await;
    let fake = FakeKick::start().await;
    fake.add_channel("lounge", BROADCASTER);
    let exchange = unique("test-kick-status");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    tap.include_status();
    let (_dir, spool) = spool_dir();
    let (ing, url) = start(&fake, &exchange, &spool, &irc).await;
    subscribed_all(&fake).await;
    let status = |d: &[common::amqp::Delivery]| -> Vec<(EventKind, Option<u64>)> {
        d.iter()
            .filter(|d| d.event.kind_name().starts_with("stream_"))
            .map(|d| {
                let viewers = match &d.event.body {
                    EventBody::StreamOnline(s) | EventBody::StreamUpdate(s) => s.viewer_count,
                    _ => None,
                };
                (d.event.kind(), viewers)
            })
            .collect()
    };
    // The first look: offline.
    let got = tap
        .collect_until(20, "the initial state", |d| !status(d).is_empty())
        .await;
    assert_eq!(status(&got), [(EventKind::StreamOffline, None)]);
    // Live, seen by polling (no webhook came): online with its viewers.
    fake.set_live(BROADCASTER, 10, "Live now");
    let got = tap
        .collect_until(20, "online", |d| !status(d).is_empty())
        .await;
    assert_eq!(status(&got), [(EventKind::StreamOnline, Some(10))]);
    // More viewers: one update.
    fake.set_live(BROADCASTER, 25, "Live now");
    let got = tap
        .collect_until(20, "an update", |d| !status(d).is_empty())
        .await;
    assert_eq!(status(&got), [(EventKind::StreamUpdate, Some(25))]);
    // The end by webhook, then by polling: published once.
    let ended = serde_json::to_vec(&json!({
        "broadcaster": {"is_anonymous": false, "user_id": BROADCASTER, "username": "Lounge",
            "is_verified": true, "profile_picture": null, "channel_slug": "lounge", "identity": null},
        "is_live": false, "title": "Live now",
        "started_at": "2026-12-04T10:00:00Z", "ended_at": "2026-12-04T12:00:00Z"
    }))
    .unwrap();
    let (code, _) = FakeKick::deliver(
        &url,
        "livestream.status.updated",
        "01ENDED",
        &now(),
        ended,
        None,
    )
    .await;
    assert_eq!(code, 200);
    fake.set_offline(BROADCASTER);
    let calls = fake.livestream_calls();
    testkit::eventually(20, "two more polls", || async {
        (fake.livestream_calls() >= calls + 2).then_some(())
    })
    .await;
    let rest = tap.drain_quiet(Duration::from_millis(500)).await;
    assert_eq!(status(&rest), [(EventKind::StreamOffline, None)], "once");
    ing.stop().await;
    tap.cleanup().await;
}
