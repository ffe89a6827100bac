//! From the broker into the store: batches, idempotency, poison.

use common::amqp::OutgoingMessage;
use common::amqp::{header_str, headers};
use lapin::BasicProperties;
use testkit::events;
use testkit::rabbit::{drain_queue, passive_declare};

use crate::helpers::{TestApp, count, count_distinct, message};

#[tokio::test]
async fn ten_thousand_events_over_five_channels_are_stored_once_and_republishing_adds_nothing() {
    let app = TestApp::spawn().await;
    let channels = ["one", "two", "three", "four", "Five.Weird"];
    let events = events::twitch_messages(&channels, 10_000);
    app.publish(&events).await;
    assert_eq!(app.wait_stored(10_000, 120).await, 10_000);

    // The same 10,000 again, then one new event as a marker: the queue is
    // FIFO and consumed in order, so once the marker is stored every
    // republished event has been through the store.
    app.publish(&events).await;
    let marker = message("one", "marker", "after the republish");
    app.publish(std::slice::from_ref(&marker)).await;
    let pool = app.db().await;
    testkit::eventually(120, "the marker is stored", || async {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_id = ?1")
            .bind(&marker.id)
            .fetch_one(&pool)
            .await
            .unwrap();
        (n == 1).then_some(())
    })
    .await;
    assert_eq!(
        count(&pool).await,
        10_001,
        "republishing stored nothing new"
    );
    assert_eq!(count_distinct(&pool).await, 10_001);
    // ... because they were recognised as duplicates, not refused; and
    // every delivery was acked.
    let metrics = testkit::eventually(10, "every delivery acked", || async {
        let text = reqwest::get(app.url("/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        (testkit::metrics::sample_sum(&text, "chatbus_consumer_acked_total") == 20_001.0)
            .then_some(text)
    })
    .await;
    assert_eq!(
        testkit::metrics::sample_sum(&metrics, "chatbus_consumer_duplicates_total"),
        10_000.0
    );
    assert_eq!(
        testkit::metrics::sample_sum(&metrics, "chatbus_consumer_events_stored_total"),
        10_001.0
    );
    assert_eq!(
        testkit::metrics::sample_sum(&metrics, "chatbus_consumer_dead_lettered_total"),
        0.0
    );

    // Every channel has its share, and every stored body is the one published.
    let (status, body) = app.get_json("/api/channels").await;
    assert_eq!(status, 200);
    let mut counts: Vec<(String, i64)> = body["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["channel"].as_str().unwrap().to_owned(),
                c["event_count"].as_i64().unwrap(),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [
            ("Five.Weird".to_owned(), 2000),
            ("four".to_owned(), 2000),
            ("one".to_owned(), 2001),
            ("three".to_owned(), 2000),
            ("two".to_owned(), 2000),
        ]
    );
    let sample = &events[7_777];
    let body: String = sqlx::query_scalar("SELECT body FROM events WHERE event_id = ?1")
        .bind(&sample.id)
        .fetch_one(&pool)
        .await
        .unwrap();
    let stored: common::ChatEvent = serde_json::from_str(&body).unwrap();
    assert_eq!(&stored, sample);
    app.stop().await;
}

#[tokio::test]
async fn poison_goes_to_the_dead_letter_queue_with_its_reason_and_the_consumer_keeps_going() {
    let app = TestApp::spawn().await;

    // A store-level refusal, installed in the real database: SQLite aborts
    // any insert of this one event id, as it would for a constraint the
    // event breaks. Only that event must be dead-lettered, not its batch.
    let refused = message("poison", "u", "the store will refuse me");
    {
        let rw = sqlx::SqlitePool::connect(&app.db_url).await.unwrap();
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE TRIGGER refuse_one BEFORE INSERT ON events WHEN new.event_id = '{}' \
             BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END",
            refused.id
        )))
        .execute(&rw)
        .await
        .unwrap();
        rw.close().await;
    }

    let json = BasicProperties::default().with_content_type("application/json".into());
    for body in [&b"{not json"[..], br#"{"schema_version": 99}"#] {
        app.publisher()
            .send_raw(
                &app.topology.exchange,
                "chat.twitch.poison",
                body,
                json.clone(),
            )
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
    let mut good: Vec<_> = (0..20)
        .map(|n| message("poison", "u", &format!("good {n}")))
        .collect();
    good.insert(10, refused.clone());
    app.publish(&good).await;

    // The consumer keeps going: every good event is stored.
    assert_eq!(app.wait_stored(20, 30).await, 20);
    let dead = drain_queue(app.connection(), &app.topology.dead_letter_queue, 3, 30).await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|m| {
            header_str(m.properties.headers().as_ref(), headers::DEAD_LETTER_REASON)
                .expect("reason header")
                .into_owned()
        })
        .collect();
    assert!(reasons[0].contains("invalid ChatEvent JSON"), "{reasons:?}");
    assert!(
        reasons[1].contains("schema_version") || reasons[1].contains("invalid ChatEvent JSON"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("the store refused the event")
            && reasons[2].contains("refused by the test trigger"),
        "{reasons:?}"
    );
    let refused_back: common::ChatEvent = serde_json::from_slice(&dead[2].data).unwrap();
    assert_eq!(refused_back.id, refused.id, "the original payload is kept");
    for m in &dead {
        let queue = header_str(m.properties.headers().as_ref(), headers::DEAD_LETTER_QUEUE);
        assert_eq!(queue.unwrap(), app.queue);
    }

    // Still consuming after all that.
    let after = message("poison", "u", "after the poison");
    app.publish(std::slice::from_ref(&after)).await;
    assert_eq!(app.wait_stored(21, 30).await, 21);
    // Nothing is left unacked or ready in the queue.
    let pool = app.db().await;
    assert_eq!(count_distinct(&pool).await, 21);
    app.stop().await;
}

#[tokio::test]
async fn retention_runs_on_its_timer_and_keeps_the_newest_per_channel() {
    let app = TestApp::spawn_with(|c| {
        c.consumer_retention_max_per_channel = Some(5);
        c.consumer_retention_interval = std::time::Duration::from_millis(100);
    })
    .await;
    let events: Vec<_> = (0..20)
        .map(|n| message(["keep_a", "keep_b"][n % 2], "u", &format!("n{n}")))
        .collect();
    app.publish(&events).await;
    let pool = app.db().await;
    testkit::eventually(30, "retention trimmed both channels to 5", || async {
        (count(&pool).await == 10).then_some(())
    })
    .await;
    let kept: Vec<String> = sqlx::query_scalar("SELECT event_id FROM events ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    let newest: Vec<String> = events[10..].iter().map(|e| e.id.clone()).collect();
    assert_eq!(kept, newest, "the newest five of each channel");
    app.stop().await;
}

#[tokio::test]
async fn events_that_break_their_envelope_are_dead_lettered_with_the_reason_and_never_stored() {
    let app = TestApp::spawn_with(|c| {
        c.consumer_max_event_bytes = 128 * 1024;
        c.consumer_max_text_bytes = 16 * 1024;
    })
    .await;
    let mut long_text = message("envelope", "u", &"x".repeat(16 * 1024 + 1));
    long_text.id = "long-text".into();
    let mut oversized = message("envelope", "u", "small text, large body");
    oversized.id = "oversized".into();
    oversized.raw = Some("r".repeat(130 * 1024));
    let mut upper = message("envelope", "u", "platform in capitals");
    upper.id = "upper".into();
    upper.platform = "TWITCH".into();
    let mut misrouted = message("envelope", "u", "my key says another channel");
    misrouted.id = "misrouted".into();
    let mut first_good = message("envelope", "u", "good before");
    first_good.id = "good-1".into();
    let mut last_good = message("envelope", "u", "good after");
    last_good.id = "good-2".into();

    let mut messages: Vec<OutgoingMessage> = [&first_good, &long_text, &oversized, &upper]
        .into_iter()
        .map(|e| OutgoingMessage::from_event(e).unwrap())
        .collect();
    let mut wrong_key = OutgoingMessage::from_event(&misrouted).unwrap();
    wrong_key.routing_key = "chat.twitch.someone_else".into();
    messages.push(wrong_key);
    messages.push(OutgoingMessage::from_event(&last_good).unwrap());
    app.publisher()
        .publish_all(&messages, 16)
        .await
        .expect("published");

    // The stream goes on: the good events are stored, the others not.
    assert_eq!(app.wait_stored(2, 30).await, 2);
    let dead = drain_queue(app.connection(), &app.topology.dead_letter_queue, 4, 30).await;
    let mut reasons = std::collections::BTreeMap::new();
    for m in &dead {
        let event: common::ChatEvent = serde_json::from_slice(&m.data).unwrap();
        let reason = header_str(m.properties.headers().as_ref(), headers::DEAD_LETTER_REASON)
            .expect("reason header")
            .into_owned();
        let queue = header_str(m.properties.headers().as_ref(), headers::DEAD_LETTER_QUEUE);
        assert_eq!(queue.unwrap(), app.queue);
        reasons.insert(event.id, reason);
    }
    let reason = |id: &str| reasons.get(id).map(String::as_str).unwrap_or_default();
    assert!(
        reason("long-text").contains("text is 16385 bytes")
            && reason("long-text").contains("CONSUMER_MAX_TEXT_BYTES"),
        "{reasons:?}"
    );
    assert!(
        reason("oversized").contains("CONSUMER_MAX_EVENT_BYTES"),
        "{reasons:?}"
    );
    assert!(
        reason("upper").contains("\"TWITCH\" is not a lowercase"),
        "{reasons:?}"
    );
    assert!(
        reason("misrouted").contains("chat.twitch.someone_else")
            && reason("misrouted").contains("chat.twitch.envelope"),
        "{reasons:?}"
    );
    let pool = app.db().await;
    let stored: Vec<String> = sqlx::query_scalar("SELECT event_id FROM events ORDER BY seq")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(stored, ["good-1", "good-2"]);
    let metrics = reqwest::get(app.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        testkit::metrics::sample_sum(&metrics, "chatbus_consumer_dead_lettered_total"),
        4.0
    );

    // Still consuming; nothing came back to the queue or the dead letters.
    let after = message("envelope", "u", "after");
    app.publish(std::slice::from_ref(&after)).await;
    assert_eq!(app.wait_stored(3, 30).await, 3);
    let channel = app.connection().create_channel().await.unwrap();
    let dead_now = passive_declare(&channel, &app.topology.dead_letter_queue)
        .await
        .unwrap();
    assert_eq!(dead_now, 0);
    // (Acked just after the commit the wait saw.)
    testkit::eventually(10, "the queue empty", || async {
        (passive_declare(&channel, &app.queue).await.unwrap() == 0).then_some(())
    })
    .await;
    app.stop().await;
}
