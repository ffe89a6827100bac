//! Several consumers against one broker and one database: the shared queue
//! splits the storing, every instance serves every event live.

use std::time::Duration;

use common::urlcode::encode as urlencode;
use serde_json::json;
use testkit::rabbit::Management;

use crate::helpers::{TestApp, WsClient, count, count_distinct, cursors, ids, message};

#[tokio::test]
async fn two_instances_store_each_event_once_and_both_serve_every_event_live() {
    // Small prefetch and batches, so the broker spreads the work; no
    // safety-net poll, so the other instance's commits can only come from
    // the commit announcements.
    let tweak = |c: &mut consumer::Config| {
        c.consumer_prefetch = 50;
        c.consumer_batch_size = 50;
        c.consumer_live_poll_interval = Duration::from_secs(3600);
    };
    let a = TestApp::spawn_with(tweak).await;
    let b = a.spawn_peer(tweak).await;

    let mut clients = Vec::new();
    for app in [&a, &b] {
        let (mut ws, _) = WsClient::connect_welcomed(&app.ws_url("")).await;
        ws.subscribe(json!({"sub": "all", "patterns": ["chat.#"]}))
            .await;
        clients.push(ws);
    }
    // Wait until both instances consume, so neither gets everything.
    let mgmt = Management::main();
    let queue_path = format!("/api/queues/%2F/{}", urlencode(&a.queue));
    testkit::eventually(30, "two consumers on the shared queue", || async {
        let v = mgmt.get_json(&queue_path).await.ok()?;
        (v["consumers"].as_u64() == Some(2)).then_some(())
    })
    .await;

    let channels = ["m1", "m2", "m3"];
    let events: Vec<_> = (0..3000)
        .map(|n| message(channels[n % 3], "u", &format!("n{n}")))
        .collect();
    for chunk in events.chunks(500) {
        a.publish(chunk).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut received = Vec::new();
    for ws in &mut clients {
        received.push(ws.events("all", 3000, &mut Vec::new()).await);
    }
    let pool = a.db().await;
    assert_eq!(count(&pool).await, 3000, "each event stored once");
    assert_eq!(count_distinct(&pool).await, 3000);

    let mut want = ids(&received[0]);
    want.sort();
    let mut published: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
    published.sort();
    assert_eq!(want, published, "instance A's client saw every event");
    // Both instances deliver the same sequence: the store's cursor order,
    // with no gap and no duplicate, whichever instance stored an event.
    assert_eq!(cursors(&received[0]), cursors(&received[1]));
    assert_eq!(ids(&received[0]), ids(&received[1]));
    let c = cursors(&received[0]);
    assert!(c.windows(2).all(|w| w[0] < w[1]));
    let stored: Vec<i64> = sqlx::query_scalar("SELECT seq FROM events ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(c, stored);
    for ws in &mut clients {
        ws.assert_quiet(300).await;
    }

    // Both really did store a share: each consumer's channel acked some.
    // (The management API samples statistics every few seconds.)
    testkit::eventually(30, "both consumers acked deliveries", || async {
        let queue = mgmt.get_json(&queue_path).await.ok()?;
        let mut acks = Vec::new();
        for consumer in queue["consumer_details"].as_array()? {
            let channel = consumer["channel_details"]["name"].as_str()?;
            let stats = mgmt
                .get_json(&format!("/api/channels/{}", urlencode(channel)))
                .await
                .ok()?;
            acks.push(stats["message_stats"]["ack"].as_u64().unwrap_or(0));
        }
        (acks.len() == 2 && acks.iter().all(|n| *n > 0)).then_some(())
    })
    .await;
    a.stop().await;
    b.stop().await;
}
