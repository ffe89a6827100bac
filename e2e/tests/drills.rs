//! Fault drills over the whole pipeline. Each checks that nothing is lost
//! and that the system recovers by itself. They are named `fault_*`, so
//! nextest runs them one at a time (.config/nextest.toml); each uses its own
//! exchange, queue, database and spool, and takes the broker away only for
//! itself (a TCP proxy) or on the fault-drill node.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use common::amqp::{Publisher, Topology, header_str, headers};
use common::schema::EventKind;
use e2e::{Stack, StackOptions, Stored, WsClient, WsRead, privmsgs};
use testkit::proxy::TcpProxy;
use testkit::rabbit::{self, drain_queue};
use testkit::{eventually, within};

/// The ids `<tag>-<n>` of stored messages, per channel, in cursor order.
fn message_numbers(stored: &[Stored], tag: &str) -> Vec<usize> {
    stored
        .iter()
        .filter(|s| s.event.kind() == EventKind::Message && s.event.id.starts_with(tag))
        .map(|s| s.event.id[tag.len() + 1..].parse().unwrap())
        .collect()
}

/// Asserts the store holds every `<tag>-<n>`, n < total, exactly once and in
/// order within each channel.
async fn assert_stored_once_in_order(stack: &Stack, tag: &str, total: usize) {
    let channels = stack.channels.len();
    for (i, ch) in stack.channels.iter().enumerate() {
        let got = message_numbers(&stack.stored(ch).await, tag);
        let want: Vec<usize> = (0..total).filter(|n| n % channels == i).collect();
        if got != want {
            // (Stack's Drop prints the services' logs of a failing drill.)
            let missing: Vec<_> = want.iter().filter(|n| !got.contains(n)).take(10).collect();
            panic!(
                "{ch}: stored {} of {} ({} entries), e.g. missing {missing:?}",
                got.iter().collect::<BTreeSet<_>>().len(),
                want.len(),
                got.len()
            );
        }
    }
}

/// Waits until the store holds `n` messages with ids `<tag>-*`.
async fn wait_stored(stack: &Stack, tag: &str, n: usize, secs: u64) {
    let http = stack.consumer.http;
    testkit::within(
        secs,
        &format!("the store reaching {n} `{tag}` messages"),
        async {
            loop {
                let stored = e2e::stored_events(http, "kind=message").await;
                let count = stored
                    .iter()
                    .filter(|s| s.event.id.starts_with(tag))
                    .map(|s| &s.event.id)
                    .collect::<BTreeSet<_>>()
                    .len();
                if count >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        },
    )
    .await;
}

/// Sends lines in batches with a pause between them (a steady flow).
async fn flow(fake: &testkit::fake_irc::FakeIrc, lines: &[String], batch: usize, pause: Duration) {
    for chunk in lines.chunks(batch) {
        assert_eq!(fake.send_lines(chunk), chunk.len());
        tokio::time::sleep(pause).await;
    }
}

#[tokio::test]
async fn fault_broker_restarts_under_load() {
    let broker = testkit::fault::FaultBroker::ensure();
    let stack = Stack::start(StackOptions {
        ingestor_amqp_url: broker.amqp_url().into(),
        consumer_amqp_url: broker.amqp_url().into(),
        ..Default::default()
    })
    .await;
    let mut ws = WsClient::connect(stack.consumer.http).await;
    ws.subscribe("all", &["chat.#".into()], None).await;
    let reader = ws.collect("load-", 6_000, 300);

    let lines = privmsgs(&stack.channels, 6_000, "load");
    let restart = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        tokio::task::spawn_blocking(move || {
            broker.stop_app();
            std::thread::sleep(Duration::from_secs(5));
            broker.start_app();
            broker
        })
        .await
        .unwrap()
    };
    let ((), _broker) = tokio::join!(
        flow(&stack.fake, &lines, 60, Duration::from_millis(100)),
        restart
    );
    wait_stored(&stack, "load", 6_000, 180).await;
    assert_stored_once_in_order(&stack, "load", 6_000).await;
    // The WebSocket client, connected throughout, saw each message once.
    let live = reader.await.unwrap();
    let ids: BTreeSet<&str> = live
        .iter()
        .map(|(_, e)| e.id.as_str())
        .filter(|i| i.starts_with("load-"))
        .collect();
    assert_eq!(ids.len(), 6_000);
    assert!(
        live.windows(2).all(|w| w[0].0 < w[1].0),
        "no duplicate on the live stream"
    );
    assert!(
        stack
            .ingestor
            .metric("chatbus_ingestor_amqp_reconnects_total")
            .await
            >= 1.0
    );
    stack.stop().await;
}

#[tokio::test]
async fn fault_consumer_killed_and_restarted_mid_stream() {
    let mut stack = Stack::start(StackOptions::default()).await;
    let mut ws = WsClient::connect(stack.consumer.http).await;
    ws.subscribe("all", &["chat.#".into()], Some(0)).await;
    let lines = privmsgs(&stack.channels, 6_000, "kill");
    let (first, rest) = lines.split_at(2_000);
    flow(&stack.fake, first, 100, Duration::from_millis(20)).await;
    // Mid-stream: the next batches are in flight when the consumer dies.
    let (fake, consumer) = (&stack.fake, &mut stack.consumer);
    let sender = async {
        flow(fake, rest, 100, Duration::from_millis(20)).await;
    };
    let killer = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut received = Vec::new();
        // Read what arrives until the socket drops with the process.
        loop {
            match ws.read(30).await {
                WsRead::Frame(f) if f["type"] == "event" => {
                    received.push(f["cursor"].as_u64().unwrap())
                }
                WsRead::Frame(_) => {}
                WsRead::Closed(_) => break,
            }
            if received.len() == 500 {
                consumer.kill9().await;
            }
        }
        received
    };
    let ((), received) = tokio::join!(sender, killer);
    stack.consumer.restart().await;

    wait_stored(&stack, "kill", 6_000, 180).await;
    assert_stored_once_in_order(&stack, "kill", 6_000).await;
    // Resuming from the last cursor seen gives exactly the rest.
    let last = *received.last().expect("some events before the kill");
    let mut ws = WsClient::connect(stack.consumer.http).await;
    ws.subscribe("all", &["chat.#".into()], Some(last)).await;
    let all = e2e::stored_events(stack.consumer.http, "platform=twitch").await;
    let missed: Vec<u64> = all.iter().map(|s| s.cursor).filter(|c| *c > last).collect();
    let resumed = ws.events(missed.len(), 60).await;
    assert_eq!(
        resumed.iter().map(|(c, _)| *c).collect::<Vec<_>>(),
        missed,
        "exactly the missed events"
    );
    stack.stop().await;
}

#[tokio::test]
async fn fault_ingestor_killed_with_a_spool_and_restarted() {
    // The ingestor reaches the broker through a proxy this drill cuts.
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let mut stack = Stack::start(StackOptions {
        ingestor_amqp_url: proxy.url(&rabbit::amqp_url()),
        ingestor_env: vec![("OUTBOX_MEMORY_EVENTS".into(), "200".into())],
        ..Default::default()
    })
    .await;
    eventually(30, "room states stored", || async {
        (e2e::stored_events(stack.consumer.http, "kind=room_state")
            .await
            .len()
            == stack.channels.len())
        .then_some(())
    })
    .await;
    proxy.cut();
    let lines = privmsgs(&stack.channels, 4_000, "spool");
    flow(&stack.fake, &lines, 200, Duration::from_millis(10)).await;
    eventually(60, "all 4,000 in the spool", || async {
        let r = stack.ingestor.get_json("/readyz").await;
        (r["outbox_unconfirmed"].as_u64()? >= 4_000).then_some(())
    })
    .await;
    // The channel state is saved every second; let it catch up so the
    // restart knows what it was reading.
    let state = stack.dir.path().join("spool/channels.json");
    eventually(10, "channel state saved", || async {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).ok()?).ok()?;
        let seen = v["channels"]
            .as_object()?
            .values()
            .filter(|c| c["last_seen"].is_string())
            .count();
        (seen == stack.channels.len()).then_some(())
    })
    .await;
    stack.ingestor.kill9().await;
    proxy.restore();
    stack.ingestor.restart().await;
    wait_stored(&stack, "spool", 4_000, 180).await;
    assert_stored_once_in_order(&stack, "spool", 4_000).await;
    // The restart re-joined the channels; a gap per channel marks the time
    // the ingestor was away.
    let gaps = eventually(30, "restart gaps stored", || async {
        let gaps = e2e::stored_events(stack.consumer.http, "kind=gap").await;
        (gaps.len() == stack.channels.len()).then_some(gaps)
    })
    .await;
    for g in &gaps {
        let common::schema::EventBody::Gap(d) = &g.event.body else {
            unreachable!()
        };
        assert_eq!(d.reason, "ingestor_restart");
        assert!(d.started_at < d.ended_at);
    }
    stack.stop().await;
}

#[tokio::test]
async fn fault_irc_connection_drops_and_twitch_asks_to_reconnect() {
    let stack = Stack::start(StackOptions::default()).await;
    let mut ws = WsClient::connect(stack.consumer.http).await;
    ws.subscribe("all", &["chat.#".into()], None).await;
    let gaps_expected = 2 * stack.channels.len();
    let reader = ws.collect("irc-", 3_000, 300);
    let lines = privmsgs(&stack.channels, 3_000, "irc");
    let refs: Vec<&str> = stack.channels.iter().map(String::as_str).collect();
    flow(&stack.fake, &lines[..1_000], 100, Duration::from_millis(10)).await;
    wait_stored(&stack, "irc", 1_000, 60).await;
    stack.fake.drop_connections();
    eventually(60, "re-joined after the drop", || async {
        (stack.fake.received_command("JOIN").len() >= 2 * refs.len()
            && refs
                .iter()
                .all(|c| stack.fake.joined_channels().contains(*c)))
        .then_some(())
    })
    .await;
    flow(
        &stack.fake,
        &lines[1_000..2_000],
        100,
        Duration::from_millis(10),
    )
    .await;
    wait_stored(&stack, "irc", 2_000, 60).await;
    stack.fake.send_reconnect();
    eventually(60, "re-joined after RECONNECT", || async {
        (stack.fake.received_command("JOIN").len() >= 3 * refs.len()
            && refs
                .iter()
                .all(|c| stack.fake.joined_channels().contains(*c)))
        .then_some(())
    })
    .await;
    flow(&stack.fake, &lines[2_000..], 100, Duration::from_millis(10)).await;
    wait_stored(&stack, "irc", 3_000, 60).await;
    assert_stored_once_in_order(&stack, "irc", 3_000).await;

    let gaps = e2e::stored_events(stack.consumer.http, "kind=gap").await;
    let mut reasons: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for g in &gaps {
        if let common::schema::EventBody::Gap(d) = &g.event.body {
            reasons
                .entry(d.reason.clone())
                .or_default()
                .insert(g.event.channel.clone());
        }
    }
    let all: BTreeSet<String> = stack.channels.iter().cloned().collect();
    assert_eq!(
        reasons.get("disconnect"),
        Some(&all),
        "a gap per channel for the drop"
    );
    assert_eq!(
        reasons.get("reconnect_requested"),
        Some(&all),
        "a gap per channel for RECONNECT"
    );
    // Live clients see the gaps too (each before the messages after it).
    let live = reader.await.unwrap();
    assert_eq!(
        live.iter()
            .filter(|(_, e)| e.kind() == EventKind::Gap)
            .count(),
        gaps_expected
    );
    assert_eq!(
        live.iter()
            .filter(|(_, e)| e.kind() == EventKind::Message)
            .count(),
        3_000
    );
    stack.stop().await;
}

#[tokio::test]
async fn fault_slow_websocket_clients_are_dropped_and_resume_while_fast_ones_keep_up() {
    let stack = Stack::start(StackOptions {
        channels: 2,
        consumer_env: vec![
            ("CONSUMER_BATCH_SIZE".into(), "50".into()),
            ("CONSUMER_WS_SEND_QUEUE".into(), "100".into()),
        ],
        ..Default::default()
    })
    .await;
    let mut fast = WsClient::connect(stack.consumer.http).await;
    fast.subscribe("all", &["chat.#".into()], None).await;
    let fast = fast.collect("ws-", 5_000, 300);
    let mut slow = WsClient::connect(stack.consumer.http).await;
    slow.subscribe("all", &["chat.#".into()], None).await;
    // The slow client reads nothing while 5,000 messages flow.
    let lines = privmsgs(&stack.channels, 5_000, "ws");
    flow(&stack.fake, &lines, 250, Duration::from_millis(20)).await;
    let got = fast.await.unwrap();
    assert!(got.windows(2).all(|w| w[0].0 < w[1].0));
    assert_eq!(
        got.iter()
            .map(|(_, e)| e.id.as_str())
            .filter(|i| i.starts_with("ws-"))
            .collect::<BTreeSet<_>>()
            .len(),
        5_000
    );

    // The slow one finds what was queued for it, then a close with a reason.
    let mut seen = Vec::new();
    let close = within(60, "the slow client is closed", async {
        loop {
            match slow.read(30).await {
                WsRead::Frame(f) if f["type"] == "event" => {
                    seen.push(f["cursor"].as_u64().unwrap())
                }
                WsRead::Frame(_) => {}
                WsRead::Closed(c) => return c,
            }
        }
    })
    .await;
    let (code, reason) = close.expect("a close frame with a reason");
    assert!(!reason.is_empty(), "close code {code} says why");
    assert!(seen.len() < 5_000, "it was dropped, not served everything");
    // It resumes from its last cursor and gets exactly what it missed.
    let last = seen.last().copied().unwrap_or(0);
    let mut again = WsClient::connect(stack.consumer.http).await;
    again.subscribe("all", &["chat.#".into()], Some(last)).await;
    let missed: Vec<u64> = got.iter().map(|(c, _)| *c).filter(|c| *c > last).collect();
    let resumed = again.events(missed.len(), 60).await;
    assert_eq!(resumed.iter().map(|(c, _)| *c).collect::<Vec<_>>(), missed);
    assert!(
        stack
            .consumer
            .metric("chatbus_consumer_ws_lagged_total")
            .await
            >= 1.0
    );
    stack.stop().await;
}

#[tokio::test]
async fn fault_a_flood_of_poison_messages_is_dead_lettered_and_the_flow_goes_on() {
    let stack = Stack::start(StackOptions::default()).await;
    let conn = rabbit::connect("e2e-poisoner").await;
    let topology = Topology::named(&stack.exchange);
    let publisher = Publisher::open(&conn, &topology, "e2e-poison")
        .await
        .unwrap();
    let lines = privmsgs(&stack.channels, 3_000, "good");
    let poison = async {
        let key = format!("chat.twitch.{}", stack.channels[0]);
        for i in 0..1_000 {
            let body: Vec<u8> = match i % 4 {
                0 => b"{not json".to_vec(),
                1 => br#"{"schema_version": 7, "id": "x"}"#.to_vec(),
                2 => vec![0xff, 0xfe, 0x00],
                _ => format!("[{i}]").into_bytes(),
            };
            let props =
                lapin::BasicProperties::default().with_content_type("application/json".into());
            publisher
                .send_raw(&stack.exchange, &key, &body, props)
                .await
                .unwrap()
                .wait()
                .await
                .unwrap();
        }
    };
    let ((), ()) = tokio::join!(
        flow(&stack.fake, &lines, 100, Duration::from_millis(20)),
        poison
    );
    wait_stored(&stack, "good", 3_000, 120).await;
    assert_stored_once_in_order(&stack, "good", 3_000).await;
    let dead = drain_queue(&conn, &topology.dead_letter_queue, 1_000, 60).await;
    assert_eq!(dead.len(), 1_000);
    assert!(dead.iter().all(|m| {
        header_str(m.properties.headers().as_ref(), headers::DEAD_LETTER_REASON)
            .is_some_and(|r| !r.is_empty())
    }));
    // The toolkit's subscriber dead-letters what it cannot decode.
    assert_eq!(
        stack
            .consumer
            .metric("chatbus_amqp_dead_lettered_total")
            .await,
        1_000.0
    );
    stack.stop().await;
}

#[tokio::test]
async fn fault_the_disk_spool_fills_up_and_the_drops_are_counted_and_reported() {
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let stack = Stack::start(StackOptions {
        channels: 1,
        ingestor_amqp_url: proxy.url(&rabbit::amqp_url()),
        // Room for a few hundred events.
        ingestor_env: vec![
            ("SPOOL_MAX_BYTES".into(), "300000".into()),
            ("SPOOL_SEGMENT_BYTES".into(), "65536".into()),
        ],
        ..Default::default()
    })
    .await;
    eventually(30, "room state stored", || async {
        (!e2e::stored_events(stack.consumer.http, "kind=room_state")
            .await
            .is_empty())
        .then_some(())
    })
    .await;
    proxy.cut();
    let lines = privmsgs(&stack.channels, 3_000, "full");
    flow(&stack.fake, &lines, 300, Duration::from_millis(10)).await;
    // Every line has been either kept (it waits in the outbox, unconfirmed)
    // or dropped; only then is the drop count final. (Received is counted
    // before the spool append, so it alone is not enough.)
    let dropped = eventually(60, "every line kept or dropped", || async {
        let r = stack.ingestor.get_json("/readyz").await;
        let kept = r["outbox_unconfirmed"].as_u64()?;
        let dropped = r["events_dropped"].as_u64()?;
        (dropped > 0 && kept + dropped >= 3_000).then_some(dropped)
    })
    .await;
    assert_eq!(
        stack
            .ingestor
            .metric("chatbus_ingestor_events_dropped_total")
            .await,
        dropped as f64
    );
    let log = std::fs::read_to_string(stack.dir.path().join("ingestor-1.log")).unwrap();
    let logged = log.matches("DROPPED an event").count() as u64;
    assert!(
        logged >= dropped,
        "each drop is logged: {logged} lines for {dropped} drops"
    );
    // The broker comes back: everything that was not dropped arrives.
    proxy.restore();
    let kept = 3_000 - dropped as usize;
    wait_stored(&stack, "full", kept, 120).await;
    let stored = stack.stored(&stack.channels[0]).await;
    assert_eq!(
        message_numbers(&stored, "full").len(),
        kept,
        "stored + dropped = sent"
    );
    stack.stop().await;
}

/// A Kick `chat.message.sent` delivery, signed by the fake Kick's key, as
/// Kick sends it again on every retry (same id, timestamp and signature).
fn kick_delivery(i: usize, broadcaster: u64) -> (String, String, Vec<u8>) {
    let id = format!("kickdrill-{i}");
    let body = serde_json::to_vec(&serde_json::json!({
        "message_id": id,
        "replies_to": null,
        "broadcaster": {"is_anonymous": false, "user_id": broadcaster, "username": "DrillLounge",
            "is_verified": false, "profile_picture": null, "channel_slug": "drilllounge", "identity": null},
        "sender": {"is_anonymous": false, "user_id": 7000 + i, "username": format!("viewer{i}"),
            "is_verified": false, "profile_picture": null, "channel_slug": format!("viewer{i}"), "identity": null},
        "content": format!("drill message {i}"),
        "emotes": [],
        "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }))
    .unwrap();
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    (id, ts, body)
}

#[tokio::test]
async fn fault_an_ingestor_killed_mid_webhooks_gets_kicks_retries_and_stores_each_once() {
    use testkit::fake_kick::FakeKick;
    const BROADCASTER: u64 = 424_242;
    const N: usize = 300;
    let kick = FakeKick::start().await;
    kick.add_channel("drilllounge", BROADCASTER);
    let hooks = testkit::free_port();
    let mut stack = Stack::start(StackOptions {
        channels: 1,
        ingestor_env: vec![
            ("WEBHOOK_HTTP_ADDR".into(), format!("127.0.0.1:{hooks}")),
            ("KICK_CHANNELS".into(), "drilllounge".into()),
            ("KICK_CLIENT_ID".into(), "drill-client".into()),
            ("KICK_CLIENT_SECRET".into(), "drill-secret".into()),
            ("KICK_API_URL".into(), kick.url()),
            ("KICK_OAUTH_URL".into(), kick.url()),
        ],
        ..Default::default()
    })
    .await;
    eventually(30, "the Kick channel subscribed", || async {
        (!kick.subscriptions().is_empty()).then_some(())
    })
    .await;
    let url = format!("http://127.0.0.1:{hooks}/hooks/kick");
    let deliveries: Vec<_> = (0..N).map(|i| kick_delivery(i, BROADCASTER)).collect();
    // Kick's side: each delivery is sent until it is answered 200 (a
    // refused connection or a reset while the ingestor is down is retried).
    let sender = {
        let url = url.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut attempts = 0usize;
            for (id, ts, body) in deliveries {
                let signature = FakeKick::sign(&id, &ts, &body);
                loop {
                    attempts += 1;
                    let answer = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("Kick-Event-Message-Id", &id)
                        .header("Kick-Event-Subscription-Id", "01DRILL")
                        .header("Kick-Event-Message-Timestamp", &ts)
                        .header("Kick-Event-Signature", &signature)
                        .header("Kick-Event-Type", "chat.message.sent")
                        .header("Kick-Event-Version", "1")
                        .body(body.clone())
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                    if answer.is_ok_and(|r| r.status().as_u16() == 200) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            attempts
        })
    };
    // kill -9 mid-stream, then back.
    eventually(60, "a third of the deliveries stored", || async {
        let stored = e2e::stored_events(stack.consumer.http, "platform=kick").await;
        (stored.len() >= N / 3).then_some(())
    })
    .await;
    stack.ingestor.kill9().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stack.ingestor.restart().await;
    let attempts = within(120, "every delivery answered 200", sender)
        .await
        .unwrap();
    assert!(
        attempts > N,
        "some deliveries were retried ({attempts} attempts)"
    );
    let stored = eventually(60, "every delivery stored", || async {
        let stored = e2e::stored_events(stack.consumer.http, "platform=kick").await;
        let ids: BTreeSet<String> = stored
            .iter()
            .filter(|s| s.event.id.starts_with("kickdrill-"))
            .map(|s| s.event.id.clone())
            .collect();
        (ids.len() >= N).then_some(stored)
    })
    .await;
    let drill: Vec<&Stored> = stored
        .iter()
        .filter(|s| s.event.id.starts_with("kickdrill-"))
        .collect();
    assert_eq!(drill.len(), N, "each delivery stored once");
    assert!(
        drill.iter().all(|s| s.event.text.as_deref()
            == Some(format!("drill message {}", &s.event.id[10..]).as_str())),
        "with its exact text"
    );
    stack.stop().await;
}
