//! Stream status and unknown kinds: an event of a kind this build does not
//! know is stored and served back as it came (REST and WebSocket), a
//! malformed one is still dead-lettered, and `GET /api/channels` gives each
//! channel's newest live state from its stored status events.

use chrono::{Duration, Utc};
use common::amqp::{header_str, headers};
use common::schema::{EventBody, StreamDetails, StreamOfflineDetails};
use common::{ChatEvent, schema::PLATFORM_TWITCH};
use lapin::BasicProperties;
use serde_json::{Value, json};
use testkit::rabbit::drain_queue;

use crate::helpers::{TestApp, WsClient, message, on_both_stores};

on_both_stores!(
    an_unknown_kind_is_stored_and_served_back_unchanged,
    channels_show_each_channels_newest_live_state,
);

fn future_event(channel: &str) -> Value {
    let mut json = serde_json::to_value(message(channel, "u", "hello from the future")).unwrap();
    json["id"] = format!("future-{}", uuid::Uuid::new_v4()).into();
    json["kind"] = "some_future_kind".into();
    json["details"] = json!({"level": 3, "nested": {"list": [1, "two", null]}, "ok": true});
    json
}

async fn publish_raw(app: &TestApp, routing_key: &str, body: &[u8]) {
    let props = BasicProperties::default().with_content_type("application/json".into());
    app.publisher()
        .send_raw(&app.topology.exchange, routing_key, body, props)
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
}

async fn an_unknown_kind_is_stored_and_served_back_unchanged(backend: &str) {
    let app = TestApp::spawn_on(backend).await;
    let channel = "future_chan";
    let future = future_event(channel);
    let malformed: Vec<Value> = [json!("ban"), json!(7), json!("Not A Kind")]
        .into_iter()
        .map(|kind| {
            let mut bad = future_event(channel);
            bad["kind"] = kind;
            bad["details"] = json!({"user": 5});
            bad
        })
        .collect();
    let key = format!("chat.twitch.{channel}");
    for bad in &malformed {
        publish_raw(&app, &key, &serde_json::to_vec(bad).unwrap()).await;
    }
    publish_raw(&app, &key, &serde_json::to_vec(&future).unwrap()).await;
    app.publish(&[message(channel, "u", "a known kind after it")])
        .await;
    assert_eq!(app.wait_stored(2, 30).await, 2);

    // REST: the one event, and in a page, as published.
    let id = future["id"].as_str().unwrap();
    let (status, one) = app.get_json(&format!("/api/events/twitch/{id}")).await;
    assert_eq!(status, 200, "{one}");
    assert_eq!(one["event"], future);
    let (status, page) = app
        .get_json(&format!("/api/events?channel={channel}&order=asc"))
        .await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"][0]["event"], future);

    // WebSocket: history, then live.
    let (mut ws, _) = WsClient::connect_welcomed(&app.ws_url("")).await;
    ws.subscribe(json!({"sub": "f", "channels": [format!("twitch:{channel}")], "last": 10}))
        .await;
    let mut others = Vec::new();
    let history = ws.events("f", 2, &mut others).await;
    assert_eq!(history[0]["event"], future);
    let live = future_event(channel);
    publish_raw(&app, &key, &serde_json::to_vec(&live).unwrap()).await;
    let got = ws.events("f", 1, &mut others).await;
    assert_eq!(got[0]["event"], live);

    // The malformed ones were dead-lettered, with the decoder's reason.
    let dead = drain_queue(app.connection(), &app.topology.dead_letter_queue, 3, 30).await;
    assert_eq!(dead.len(), 3);
    for m in &dead {
        let reason = header_str(m.properties.headers().as_ref(), headers::DEAD_LETTER_REASON)
            .expect("reason header");
        assert!(reason.contains("invalid ChatEvent JSON"), "{reason}");
    }
    app.stop().await;
}

fn status(channel: &str, minutes: i64, body: EventBody) -> ChatEvent {
    let at = Utc::now() - Duration::minutes(60 - minutes);
    let mut e = ChatEvent::new(
        format!("{}:{channel}:{minutes}", body.kind_name()),
        PLATFORM_TWITCH,
        channel,
        at,
        at,
        body,
    );
    e.channel_id = Some("42".into());
    e
}

fn live(viewers: u64, title: &str) -> StreamDetails {
    StreamDetails {
        stream_id: Some("s1".into()),
        title: Some(title.into()),
        category: Some("Celeste".into()),
        viewer_count: Some(viewers),
        started_at: Some(Utc::now() - Duration::minutes(60)),
    }
}

async fn channels_show_each_channels_newest_live_state(backend: &str) {
    let app = TestApp::spawn_on(backend).await;
    app.publish(&[
        status("on_air", 0, EventBody::StreamOnline(live(10, "first"))),
        message("on_air", "u", "hi"),
        status("on_air", 5, EventBody::StreamUpdate(live(250, "second"))),
        message("on_air", "u", "after the update"),
        message("never_live", "u", "no status here"),
    ])
    .await;
    app.wait_stored(5, 30).await;

    let state = |body: &Value, channel: &str| {
        body["channels"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["channel"] == channel)
            .unwrap_or_else(|| panic!("{channel} listed: {body}"))["stream"]
            .clone()
    };
    let (status_code, body) = app.get_json("/api/channels").await;
    assert_eq!(status_code, 200);
    let on_air = state(&body, "on_air");
    assert_eq!(on_air["live"], true, "{on_air}");
    assert_eq!(on_air["viewer_count"], 250);
    assert_eq!(on_air["title"], "second");
    assert_eq!(on_air["category"], "Celeste");
    assert!(on_air["started_at"].is_string());
    assert!(state(&body, "never_live").is_null());

    app.publish(&[status(
        "on_air",
        9,
        EventBody::StreamOffline(StreamOfflineDetails::default()),
    )])
    .await;
    app.wait_stored(6, 30).await;
    let (_, body) = app.get_json("/api/channels").await;
    let on_air = state(&body, "on_air");
    assert_eq!(on_air["live"], false, "{on_air}");
    assert!(on_air["viewer_count"].is_null());
    app.stop().await;
}
