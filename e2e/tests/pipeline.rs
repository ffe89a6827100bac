//! The whole pipeline over real sockets: fake Twitch IRC -> ingestor ->
//! RabbitMQ -> consumer -> WebSocket client and REST.

use std::collections::BTreeMap;

use common::schema::{EventBody, EventKind};
use e2e::{Stack, StackOptions, WsClient, privmsgs};

#[tokio::test]
async fn every_message_reaches_the_websocket_and_the_store_once_in_order_with_moderation() {
    let stack = Stack::start(StackOptions::default()).await;
    let mut ws = WsClient::connect(stack.consumer.http).await;
    ws.subscribe("all", &["chat.twitch.*".to_owned()], Some(0))
        .await;
    // The JOINs produced one room_state per channel; take them first.
    let initial = ws.events(stack.channels.len(), 30).await;
    assert!(
        initial
            .iter()
            .all(|(_, e)| e.kind() == EventKind::RoomState)
    );

    let lines = privmsgs(&stack.channels, 3_000, "e2e");
    assert_eq!(stack.fake.send_lines(&lines), lines.len());
    // Moderation: delete one message, time out user3 (who wrote many).
    let victim = "e2e-9"; // channel 0 (9 % 3), user2
    let ch0 = &stack.channels[0];
    let now = chrono::Utc::now().timestamp_millis();
    stack.fake.send_to_channel(
        ch0,
        &format!("@login=user2;room-id=1;target-msg-id={victim};tmi-sent-ts={now} :tmi.twitch.tv CLEARMSG #{ch0} :Kappa héllo 9"),
    );
    stack.fake.send_to_channel(
        ch0,
        &format!("@ban-duration=600;room-id=1;target-user-id=3;tmi-sent-ts={} :tmi.twitch.tv CLEARCHAT #{ch0} :user3", now + 1),
    );

    let live = ws.events(3_002, 120).await;
    // Exactly once, in order within each channel, on the live stream.
    let mut per_channel: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut cursors = Vec::new();
    for (cursor, e) in &live {
        cursors.push(*cursor);
        if e.kind() == EventKind::Message {
            let n: usize = e.id.trim_start_matches("e2e-").parse().unwrap();
            per_channel.entry(e.channel.as_str()).or_default().push(n);
        }
    }
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "cursor order, no duplicates"
    );
    let total: usize = per_channel.values().map(Vec::len).sum();
    assert_eq!(total, 3_000);
    for (i, ch) in stack.channels.iter().enumerate() {
        let want: Vec<usize> = (0..3_000).filter(|n| n % 3 == i).collect();
        assert_eq!(per_channel[ch.as_str()], want, "order in {ch}");
    }
    let kinds: Vec<EventKind> = live
        .iter()
        .map(|(_, e)| e.kind())
        .filter(|k| *k != EventKind::Message)
        .collect();
    assert_eq!(
        kinds,
        [EventKind::MessageDelete, EventKind::Timeout],
        "moderation on the live stream"
    );

    // The store: every message once, in order, with moderation applied.
    for (i, ch) in stack.channels.iter().enumerate() {
        let stored = stack.stored(ch).await;
        let ids: Vec<usize> = stored
            .iter()
            .filter(|s| s.event.kind() == EventKind::Message)
            .map(|s| s.event.id.trim_start_matches("e2e-").parse().unwrap())
            .collect();
        let want: Vec<usize> = (0..3_000).filter(|n| n % 3 == i).collect();
        assert_eq!(ids, want, "stored once, in order, in {ch}");
        if i == 0 {
            let deleted = stored.iter().find(|s| s.event.id == victim).unwrap();
            assert_eq!(
                deleted.moderation["action"], "deleted",
                "{:?}",
                deleted.moderation
            );
            let timed_out: Vec<_> = stored
                .iter()
                .filter(|s| s.event.author.as_ref().is_some_and(|a| a.login == "user3"))
                .collect();
            assert!(!timed_out.is_empty());
            assert!(
                timed_out
                    .iter()
                    .all(|s| s.moderation["action"] == "timed_out"),
                "user3's messages are marked"
            );
            let t = stored
                .iter()
                .find(|s| s.event.kind() == EventKind::Timeout)
                .unwrap();
            assert!(
                matches!(&t.event.body, EventBody::Timeout(d) if d.duration_secs == 600 && d.user.login == "user3")
            );
        }
    }
    stack.stop().await;
}
