//! `GET /ws`: subscriptions, history then live, resume, slow clients,
//! bad frames, pings, auth.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use crate::helpers::{
    Frame, PrivacyStream, TestApp, WsClient, ban, cursors, ids, message, on_both_stores, purge,
    user_subject,
};

#[tokio::test]
async fn pattern_subscriptions_select_the_right_events() {
    let app = TestApp::spawn().await;
    let (mut ws, welcome) = WsClient::connect_welcomed(&app.ws_url("")).await;
    assert_eq!(welcome["protocol"], 1);
    assert_eq!(welcome["limits"]["max_subscriptions"], 16);

    let subs = [
        (
            "twitch",
            json!({"sub": "twitch", "patterns": ["chat.twitch.*"]}),
        ),
        (
            "alpha",
            json!({"sub": "alpha", "patterns": ["chat.*.alpha"]}),
        ),
        (
            "bans",
            json!({"sub": "bans", "patterns": ["chat.#"], "kinds": ["ban"]}),
        ),
        (
            "exact",
            json!({"sub": "exact", "channels": ["youtube:Beta.Odd"]}),
        ),
    ];
    for (name, request) in &subs {
        let subscribed = ws.subscribe(request.clone()).await;
        assert_eq!(subscribed["sub"], *name);
    }

    let mut published = Vec::new();
    for (platform, channel) in [
        ("twitch", "alpha"),
        ("twitch", "gamma"),
        ("youtube", "alpha"),
        ("youtube", "Beta.Odd"),
        ("youtube", "beta-odd"),
    ] {
        let mut e = message(channel, "u", &format!("{platform}/{channel}"));
        e.platform = platform.into();
        published.push(e);
    }
    published.push(ban("gamma", "u", Utc::now()));
    app.publish(&published).await;

    let expected: [(&str, Vec<usize>); 4] = [
        ("twitch", vec![0, 1, 5]),
        ("alpha", vec![0, 2]),
        ("bans", vec![5]),
        ("exact", vec![3]),
    ];
    let total: usize = expected.iter().map(|(_, v)| v.len()).sum();
    let mut others = Vec::new();
    let mut got = Vec::new();
    for _ in 0..total {
        let v = ws.json().await;
        if v["type"] == "event" {
            got.push(v);
        } else {
            others.push(v);
        }
    }
    assert!(others.is_empty(), "{others:?}");
    for (sub, indexes) in expected {
        let mine: Vec<Value> = got.iter().filter(|v| v["sub"] == sub).cloned().collect();
        let want: Vec<String> = indexes.iter().map(|i| published[*i].id.clone()).collect();
        assert_eq!(ids(&mine), want, "subscription {sub}");
        let c = cursors(&mine);
        assert!(c.windows(2).all(|w| w[0] < w[1]), "in cursor order");
    }
    ws.assert_quiet(300).await;

    // Unsubscribing stops that stream only.
    ws.send(json!({"type": "unsubscribe", "sub": "twitch"}))
        .await;
    ws.expect("unsubscribed").await;
    let e = message("alpha", "u", "after unsubscribe");
    app.publish(std::slice::from_ref(&e)).await;
    let v = ws.expect("event").await;
    assert_eq!(
        (v["sub"].as_str(), v["event"]["id"].as_str()),
        (Some("alpha"), Some(e.id.as_str()))
    );
    ws.assert_quiet(300).await;

    // Shutting down closes the connection with 1001 (reconnect and resume).
    let stopping = tokio::spawn(app.stop());
    let close = loop {
        if let Frame::Close(c) = ws.next().await {
            break c;
        }
    };
    assert_eq!(close.map(|c| c.0), Some(1001));
    stopping.await.unwrap();
}

on_both_stores!(
    history_then_live_has_no_gap_and_no_duplicate_while_publishing,
    resuming_from_a_cursor_gives_exactly_the_missed_events,
);

/// Publishes `n` messages to `channel` in small confirmed batches, a little
/// apart, so subscriptions start in the middle of the stream.
async fn publish_slowly(app: &TestApp, channel: &str, n: usize) -> Vec<String> {
    let mut ids = Vec::with_capacity(n);
    for chunk in 0..n / 20 {
        let batch: Vec<_> = (0..20)
            .map(|i| message(channel, "u", &format!("m{}", chunk * 20 + i)))
            .collect();
        ids.extend(batch.iter().map(|e| e.id.clone()));
        app.publish(&batch).await;
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    ids
}

async fn history_then_live_has_no_gap_and_no_duplicate_while_publishing(backend: &str) {
    let app = TestApp::spawn_on(backend).await;
    let channel = "boundary";
    let noise = message("elsewhere", "u", "not for these subscriptions");
    app.publish(std::slice::from_ref(&noise)).await;
    let publisher = publish_slowly(&app, channel, 2000);
    // Clients join at different moments while events flow: some ask for
    // the last 50, some for everything since the start.
    let joiners = async {
        // The first batch is stored before anyone joins, so every client
        // asking for the last 50 has history, however busy the machine is.
        app.wait_stored(1 + 20, 30).await;
        let mut clients = Vec::new();
        for i in 0..6 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let (mut ws, _) = WsClient::connect_welcomed(&app.ws_url("")).await;
            let request = if i % 2 == 0 {
                json!({"sub": "s", "channels": [format!("twitch:{channel}")], "last": 50})
            } else {
                json!({"sub": "s", "channels": [format!("twitch:{channel}")], "since": 0})
            };
            ws.subscribe(request).await;
            clients.push((i, ws));
        }
        clients
    };
    let (published, clients) = tokio::join!(publisher, joiners);
    let last_id = published.last().unwrap().clone();

    for (i, mut ws) in clients {
        let mut events = Vec::new();
        let mut live = None;
        testkit::within(60, "the last event", async {
            loop {
                let v = ws.json().await;
                match v["type"].as_str() {
                    Some("event") => {
                        let done = v["event"]["id"] == last_id.as_str();
                        events.push(v);
                        if done {
                            break;
                        }
                    }
                    Some("live") => live = Some(events.len()),
                    _ => panic!("unexpected {v}"),
                }
            }
        })
        .await;
        let got = ids(&events);
        let c = cursors(&events);
        assert!(
            c.windows(2).all(|w| w[0] < w[1]),
            "client {i}: cursors strictly increase"
        );
        let first = published.iter().position(|id| *id == got[0]).unwrap();
        assert_eq!(
            got,
            published[first..],
            "client {i}: exactly the events from its first one on, no gap, no duplicate"
        );
        let history = live.expect("a live frame");
        if i % 2 == 0 {
            assert!(history <= 50, "client {i}: at most the last 50 as history");
            assert!(
                history > 0,
                "client {i}: joined mid-stream, so there was history"
            );
        } else {
            assert_eq!(first, 0, "client {i}: since 0 starts at the first event");
        }
        ws.assert_quiet(200).await;
    }
    app.stop().await;
}

async fn resuming_from_a_cursor_gives_exactly_the_missed_events(backend: &str) {
    let app = TestApp::spawn_on(backend).await;
    let sub = json!({"sub": "r", "patterns": ["chat.twitch.resume"]});
    let (mut ws, _) = WsClient::connect_welcomed(&app.ws_url("")).await;
    ws.subscribe(sub.clone()).await;
    let first: Vec<_> = (0..30)
        .map(|n| message("resume", "u", &format!("a{n}")))
        .collect();
    app.publish(&first).await;
    let seen = ws.events("r", 30, &mut Vec::new()).await;
    let last_cursor = *cursors(&seen).last().unwrap();
    drop(ws);

    // Missed while disconnected, with other channels' events in between.
    let mut missed = Vec::new();
    for n in 0..40 {
        missed.push(message("resume", "u", &format!("b{n}")));
        app.publish(&[message("other", "u", "noise")]).await;
    }
    app.publish(&missed).await;
    app.wait_stored(30 + 40 + 40, 30).await;

    let (mut ws, _) = WsClient::connect_welcomed(&app.ws_url("")).await;
    let mut request = sub.clone();
    request["since"] = last_cursor.into();
    let subscribed = ws.subscribe(request).await;
    assert_eq!(subscribed["history"]["since"], last_cursor);
    let mut others = Vec::new();
    let replay = ws.events("r", 40, &mut others).await;
    assert_eq!(
        ids(&replay),
        missed.iter().map(|e| e.id.clone()).collect::<Vec<_>>()
    );
    let live = ws.expect("live").await;
    assert_eq!(live["cursor"], *cursors(&replay).last().unwrap());
    ws.assert_quiet(300).await;

    // And live continues after the replay.
    let next = message("resume", "u", "c0");
    app.publish(std::slice::from_ref(&next)).await;
    let v = ws.expect("event").await;
    assert_eq!(v["event"]["id"], next.id.as_str());

    // The query-string form resumes the same way.
    let url = app.ws_url(&format!(
        "?sub=q&patterns=chat.twitch.resume&since={last_cursor}"
    ));
    let (mut ws, _) = WsClient::connect_welcomed(&url).await;
    ws.expect("subscribed").await;
    let replay = ws.events("q", 41, &mut Vec::new()).await;
    assert_eq!(ids(&replay)[40], next.id);
    app.stop().await;
}

#[tokio::test]
async fn a_slow_client_is_disconnected_while_a_fast_one_keeps_receiving_and_can_resume() {
    let app = TestApp::spawn_with(|c| {
        // As small as allowed: one batch.
        c.consumer_ws_send_queue = c.consumer_batch_size;
        c.consumer_ws_write_timeout = Duration::from_secs(30);
    })
    .await;
    let request = json!({"sub": "s", "channels": ["twitch:firehose"]});
    // The slow client has a tiny receive buffer and never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let mut slow = WsClient::connect_over(&app.ws_url(""), stream).await;
    slow.send(json!({"type": "subscribe", "sub": "s", "channels": ["twitch:firehose"]}))
        .await;
    let (mut fast, _) = WsClient::connect_welcomed(&app.ws_url("")).await;
    fast.subscribe(request.clone()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    let big = "x".repeat(4000);
    let events: Vec<_> = (0..3000)
        .map(|n| message("firehose", "u", &format!("{n} {big}")))
        .collect();
    let publish = app.publish(&events);
    let mut others = Vec::new();
    let receive = fast.events("s", 3000, &mut others);
    let (_, got) = tokio::join!(publish, receive);
    assert_eq!(
        ids(&got),
        events.iter().map(|e| e.id.clone()).collect::<Vec<_>>()
    );
    assert_eq!(
        app.wait_stored(3000, 30).await,
        3000,
        "the consumer was not slowed"
    );

    // Now the slow client reads: some events, then a close that says why.
    let mut slow_events = Vec::new();
    let close = testkit::within(30, "the slow client's close", async {
        loop {
            match slow.next().await {
                Frame::Json(v) if v["type"] == "event" => slow_events.push(v),
                Frame::Json(_) => {}
                Frame::Close(c) => return c,
            }
        }
    })
    .await;
    let (code, reason) = close.expect("a close frame with a reason");
    assert_eq!(code, 4000);
    assert!(reason.contains("since="), "{reason}");
    assert!(
        slow_events.len() < 3000,
        "it fell behind: {}",
        slow_events.len()
    );

    // It resumes from the last cursor it got and receives exactly the rest.
    let resume_from = cursors(&slow_events).last().copied().unwrap_or(0);
    let (mut again, _) = WsClient::connect_welcomed(&app.ws_url("")).await;
    let mut request = request;
    request["since"] = resume_from.into();
    again.subscribe(request).await;
    let rest = again
        .events("s", 3000 - slow_events.len(), &mut Vec::new())
        .await;
    let mut all = ids(&slow_events);
    all.extend(ids(&rest));
    assert_eq!(all, events.iter().map(|e| e.id.clone()).collect::<Vec<_>>());
    assert!(testkit::metrics::scrape(app.addr, "chatbus_consumer_ws_lagged_total").await >= 1.0);
    app.stop().await;
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_connection_stays_usable() {
    let app = TestApp::spawn_with(|c| {
        c.consumer_ws_max_subscriptions = 2;
        c.consumer_ws_max_frame_bytes = 4096;
    })
    .await;
    let (mut ws, _) = WsClient::connect_welcomed(&app.ws_url("")).await;
    let cases: [(Message, &str); 8] = [
        (Message::text("not json"), "invalid_frame"),
        (Message::text("{\"type\":\"dance\"}"), "invalid_frame"),
        (
            Message::text("{\"type\":\"subscribe\"}"),
            "invalid_subscription",
        ),
        (
            Message::text("{\"type\":\"subscribe\",\"patterns\":[\"chat.tw*\"]}"),
            "invalid_pattern",
        ),
        (
            Message::text(
                "{\"type\":\"subscribe\",\"patterns\":[\"chat.#\"],\"kinds\":[\"nope\"]}",
            ),
            "invalid_kind",
        ),
        (
            Message::text("{\"type\":\"subscribe\",\"patterns\":[\"chat.#\"],\"last\":100000}"),
            "invalid_history",
        ),
        (
            Message::text("{\"type\":\"unsubscribe\",\"sub\":\"ghost\"}"),
            "unknown_subscription",
        ),
        (Message::binary(vec![1, 2, 3]), "invalid_frame"),
    ];
    for (message, code) in cases {
        ws.send_raw(message).await;
        let v = ws.expect("error").await;
        assert_eq!(v["code"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Limits on subscriptions per connection.
    ws.subscribe(json!({"sub": "a", "patterns": ["chat.#"]}))
        .await;
    ws.send(json!({"type": "subscribe", "sub": "a", "patterns": ["chat.#"]}))
        .await;
    assert_eq!(ws.expect("error").await["code"], "duplicate_subscription");
    ws.subscribe(json!({"sub": "b", "patterns": ["chat.#"]}))
        .await;
    ws.send(json!({"type": "subscribe", "sub": "c", "patterns": ["chat.#"]}))
        .await;
    let v = ws.expect("error").await;
    assert_eq!(
        (v["code"].as_str(), v["sub"].as_str()),
        (Some("too_many_subscriptions"), Some("c"))
    );

    // Still usable after all of that.
    ws.send(json!({"type": "ping", "id": 7})).await;
    assert_eq!(ws.expect("pong").await["id"], 7);
    let e = message("usable", "u", "still here");
    app.publish(std::slice::from_ref(&e)).await;
    let mut got = BTreeSet::new();
    for _ in 0..2 {
        let v = ws.expect("event").await;
        assert_eq!(v["event"]["id"], e.id.as_str());
        got.insert(v["sub"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, BTreeSet::from(["a".to_owned(), "b".to_owned()]));

    // Too large: an error frame, then close 1009. The server keeps serving.
    ws.send_raw(Message::text(format!(
        "{{\"type\":\"ping\",\"id\":\"{}\"}}",
        "x".repeat(8000)
    )))
    .await;
    let mut saw_error = false;
    let close = loop {
        match ws.next().await {
            Frame::Json(v) if v["type"] == "error" => {
                assert_eq!(v["code"], "frame_too_large");
                saw_error = true;
            }
            Frame::Json(_) => {}
            Frame::Close(c) => break c,
        }
    };
    assert!(saw_error);
    assert_eq!(close.map(|c| c.0), Some(1009));
    let (mut ws, _) = WsClient::connect_welcomed(&app.ws_url("")).await;
    ws.send(json!({"type": "ping"})).await;
    ws.expect("pong").await;

    // A plain GET is told to upgrade; a bad query string is a 400.
    let res = reqwest::get(app.url("/ws")).await.unwrap();
    assert_eq!(res.status(), 426);
    let bad = tokio_tungstenite::connect_async(app.ws_url("?patterns=chat.tw*")).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(res)) = bad else {
        panic!("expected an HTTP error, got {bad:?}");
    };
    assert_eq!(res.status(), 400);
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_closes_gets_the_closing_handshake_back() {
    let app = TestApp::spawn().await;
    let (mut ws, _) = WsClient::connect_welcomed(&app.ws_url("")).await;
    ws.subscribe(json!({"sub": "s", "patterns": ["chat.#"]}))
        .await;
    ws.send_raw(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "bye".into(),
    })))
    .await;
    // A close frame back, not a dropped connection (which browsers report
    // as 1006, not clean).
    match ws.next().await {
        Frame::Close(Some((code, _))) => assert_eq!(code, 1000),
        other => panic!("expected the server's close frame, got {other:?}"),
    }
    app.stop().await;
}

#[tokio::test]
async fn the_server_pings_and_drops_a_client_that_stays_silent() {
    let app =
        TestApp::spawn_with(|c| c.consumer_ws_ping_interval = Duration::from_millis(200)).await;
    let mut ws = WsClient::connect(&app.ws_url("")).await;
    // Reading answers the server's pings (tungstenite pongs), so the
    // connection stays up ping after ping (a stalled machine may skip a
    // tick, so the pings are counted, not timed).
    testkit::within(10, "three pings", async {
        use futures::StreamExt;
        let mut pings = 0;
        while pings < 3 {
            match ws.inner().next().await {
                Some(Ok(Message::Ping(_))) => pings += 1,
                Some(Ok(_)) => {}
                other => panic!("the connection ended after {pings} pings: {other:?}"),
            }
        }
    })
    .await;
    ws.send(json!({"type": "ping"})).await;
    ws.expect("pong").await;

    // A client that reads nothing answers no ping and is dropped.
    let mut silent = WsClient::connect(&app.ws_url("")).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    testkit::within(5, "the silent client is dropped", async {
        while !matches!(silent.next().await, Frame::Close(_)) {}
    })
    .await;
    let closed = "chatbus_consumer_ws_closed_total{reason=\"ping_timeout\"}";
    assert!(testkit::metrics::scrape(app.addr, closed).await >= 1.0);
    app.stop().await;
}

#[tokio::test]
async fn the_bearer_token_guards_the_api_and_the_websocket() {
    let app = TestApp::spawn_with(|c| c.consumer_api_token = Some("s3cret".into())).await;
    let client = reqwest::Client::new();
    for path in ["/api/channels", "/api/events", "/api/events/twitch/x"] {
        let res = client.get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 401, "{path}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
        let res = client
            .get(app.url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "{path}");
    }
    let ok = client
        .get(app.url("/api/channels"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);

    let refused = tokio_tungstenite::connect_async(app.ws_url("")).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(res)) = refused else {
        panic!("expected 401, got {refused:?}");
    };
    assert_eq!(res.status(), 401);
    let (mut ws, _) = WsClient::connect_welcomed(&app.ws_url("?access_token=s3cret")).await;
    ws.send(json!({"type": "ping"})).await;
    ws.expect("pong").await;
    // The page itself, health and metrics stay open.
    for path in ["/", "/overlay", "/healthz", "/metrics"] {
        assert_eq!(
            client.get(app.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    app.stop().await;
}

/// The HTTP error a refused upgrade got: status and JSON body.
async fn refused_upgrade(url: &str) -> (u16, Value) {
    let result = tokio_tungstenite::connect_async(url).await;
    let Err(tokio_tungstenite::tungstenite::Error::Http(res)) = result else {
        panic!("expected an HTTP error, got {result:?}");
    };
    let body = res.body().as_deref().unwrap_or_default();
    (
        res.status().as_u16(),
        serde_json::from_slice(body).expect("a JSON error body"),
    )
}

#[tokio::test]
async fn a_since_beyond_the_head_or_above_2_pow_53_is_refused_with_an_error() {
    let app = TestApp::spawn().await;
    let (mut ws, _) = WsClient::connect_welcomed(&app.ws_url("")).await;
    // Nothing stored yet: every cursor is beyond the head.
    ws.send(json!({"type": "subscribe", "sub": "e", "patterns": ["chat.#"], "since": 5}))
        .await;
    let v = ws.expect("error").await;
    assert_eq!(
        (v["code"].as_str(), v["sub"].as_str()),
        (Some("cursor_beyond_head"), Some("e"))
    );
    assert!(v["message"].as_str().unwrap().contains("empty"), "{v}");

    let events: Vec<_> = (0..3)
        .map(|n| message("head", "u", &format!("{n}")))
        .collect();
    app.publish(&events).await;
    app.wait_stored(3, 30).await;
    let (_, page) = app.get_json("/api/events?limit=1").await;
    let head = page["events"][0]["cursor"].as_i64().unwrap();

    for (since, code) in [
        (json!(9_223_372_036_854_775_807_i64), "invalid_cursor"),
        (json!(9_007_199_254_740_992_i64), "invalid_cursor"),
        (json!("9007199254740992"), "invalid_cursor"),
        (json!(head + 1), "cursor_beyond_head"),
        (json!(9_007_199_254_740_991_i64), "cursor_beyond_head"),
    ] {
        ws.send(json!({"type": "subscribe", "sub": "x", "patterns": ["chat.#"], "since": since}))
            .await;
        let v = ws.expect("error").await;
        assert_eq!(
            (v["code"].as_str(), v["sub"].as_str()),
            (Some(code), Some("x")),
            "{since}: {v}"
        );
        if code == "cursor_beyond_head" {
            let message = v["message"].as_str().unwrap();
            assert!(message.contains(&format!("({head})")), "{message}");
        }
    }
    // The head itself is fine: nothing to replay, then live.
    let subscribed = ws
        .subscribe(json!({"sub": "h", "channels": ["twitch:head"], "since": head}))
        .await;
    assert_eq!(subscribed["history"]["since"], head);
    assert_eq!(ws.expect("live").await["cursor"], head);
    let next = message("head", "u", "next");
    app.publish(std::slice::from_ref(&next)).await;
    assert_eq!(ws.expect("event").await["event"]["id"], next.id.as_str());

    // The query-string form is refused before the upgrade.
    let beyond = app.ws_url(&format!("?patterns=chat.%23&since={}", head + 100));
    let (status, body) = refused_upgrade(&beyond).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("cursor_beyond_head"))
    );
    let huge = app.ws_url("?patterns=chat.%23&since=9223372036854775807");
    let (status, body) = refused_upgrade(&huge).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_cursor"))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_once_its_backlog_passes_the_byte_cap() {
    const CAP: usize = 256 * 1024;
    let app = TestApp::spawn_with(|c| {
        // Bytes, not events, must be what fires: the event cap is far off.
        c.consumer_ws_send_queue = 100_000;
        c.consumer_ws_send_queue_bytes = CAP;
        c.consumer_ws_write_timeout = Duration::from_secs(60);
    })
    .await;
    let request = json!({"sub": "s", "channels": ["twitch:bytes"]});
    // The slow client has small socket buffers and does not read.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let mut slow = WsClient::connect_over(&app.ws_url(""), stream).await;
    slow.send(json!({"type": "subscribe", "sub": "s", "channels": ["twitch:bytes"]}))
        .await;
    let (mut fast, _) = WsClient::connect_welcomed(&app.ws_url("")).await;
    fast.subscribe(request.clone()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;

    // 2000 events of about 4 KB: 8 MB, 32 times the cap.
    let big = "x".repeat(4000);
    let events: Vec<_> = (0..2000)
        .map(|n| message("bytes", "u", &format!("{n} {big}")))
        .collect();
    let publish = app.publish(&events);
    let mut others = Vec::new();
    let receive = fast.events("s", 2000, &mut others);
    let (_, got) = tokio::join!(publish, receive);
    assert_eq!(
        ids(&got),
        events.iter().map(|e| e.id.clone()).collect::<Vec<_>>()
    );
    testkit::eventually(30, "the slow client kicked", || async {
        let lagged = testkit::metrics::scrape(app.addr, "chatbus_consumer_ws_lagged_total").await;
        (lagged >= 1.0).then_some(())
    })
    .await;

    // It reads now: what was already in the socket buffers and the
    // session's last copy, then a close that says why.
    let mut slow_events = Vec::new();
    let close = testkit::within(60, "the slow client's close", async {
        loop {
            match slow.next().await {
                Frame::Json(v) if v["type"] == "event" => slow_events.push(v),
                Frame::Json(_) => {}
                Frame::Close(c) => return c,
            }
        }
    })
    .await;
    let (code, reason) = close.expect("a close frame with a reason");
    assert_eq!(code, 4000);
    assert!(reason.contains("since="), "{reason}");
    assert!(
        slow_events.len() < 2000,
        "it fell behind: {}",
        slow_events.len()
    );
    // In order, without gaps, up to where it fell behind.
    assert_eq!(ids(&slow_events)[..], ids(&got)[..slow_events.len()]);
    app.stop().await;
}

/// A WebSocket connection to `app` from the local address `from`.
async fn connect_from(app: &TestApp, from: [u8; 4]) -> Result<WsClient, (u16, Value)> {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(std::net::SocketAddr::from((from, 0))).unwrap();
    let stream = socket.connect(app.addr).await.unwrap();
    let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
    match tokio_tungstenite::client_async(app.ws_url(""), stream).await {
        Ok((inner, _)) => Ok(WsClient::from_stream(inner)),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => {
            let body = res.body().as_deref().unwrap_or_default();
            Err((
                res.status().as_u16(),
                serde_json::from_slice(body).expect("a JSON error body"),
            ))
        }
        Err(e) => panic!("WebSocket connect: {e}"),
    }
}

#[tokio::test]
async fn connections_are_capped_per_address_and_in_total_and_freed_on_close() {
    let app = TestApp::spawn_with(|c| {
        c.consumer_ws_max_connections = 5;
        c.consumer_ws_max_per_address = 3;
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..3 {
        let mut ws = connect_from(&app, [127, 0, 0, 1]).await.expect("admitted");
        ws.expect("welcome").await;
        open.push(ws);
    }
    // A fourth from the same address: 503 before the upgrade.
    let (status, body) = connect_from(&app, [127, 0, 0, 1]).await.err().unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "too_many_connections_from_address");
    assert!(body["message"].as_str().unwrap().contains('3'), "{body}");
    // Other addresses fill the total.
    for _ in 0..2 {
        let mut ws = connect_from(&app, [127, 0, 0, 2]).await.expect("admitted");
        ws.expect("welcome").await;
        open.push(ws);
    }
    let (status, body) = connect_from(&app, [127, 0, 0, 3]).await.err().unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "too_many_connections");
    // The rest of the server still answers.
    let (status, _) = app.get_json("/api/channels").await;
    assert_eq!(status, 200);

    // A connection that closes gives its place back.
    let mut first = open.remove(0);
    first.inner().close(None).await.unwrap();
    drop(first);
    let mut again = testkit::eventually(10, "a place freed", || async {
        connect_from(&app, [127, 0, 0, 1]).await.ok()
    })
    .await;
    again.expect("welcome").await;
    assert!(
        connect_from(&app, [127, 0, 0, 3]).await.is_err(),
        "full again"
    );
    assert!(testkit::metrics::scrape(app.addr, "chatbus_consumer_ws_refused_total").await >= 3.0);
    drop(open);
    drop(again);
    app.stop().await;
}

#[tokio::test]
async fn a_purge_on_the_privacy_stream_reaches_each_subscribed_client_once_as_a_privacy_frame() {
    use common::privacy::{PrivacyAction, PrivacyNotice};

    let stream = PrivacyStream::new().await;
    let app = TestApp::spawn_with(|c| c.privacy_stream = stream.name.clone()).await;
    let channel = format!("forget_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    app.publish(&[message(&channel, "leaver", "soon gone")])
        .await;
    app.wait_stored(1, 30).await;

    // One client with history, one with two subscriptions, one with none.
    let (mut history, _) = WsClient::connect_welcomed(&app.ws_url("")).await;
    history
        .subscribe(json!({"sub": "h", "channels": [format!("twitch:{channel}")], "last": 10}))
        .await;
    history.events("h", 1, &mut Vec::new()).await;
    history.expect("live").await;
    let (mut two, _) = WsClient::connect_welcomed(&app.ws_url("")).await;
    two.subscribe(json!({"sub": "a", "channels": [format!("twitch:{channel}")]}))
        .await;
    two.subscribe(json!({"sub": "b", "patterns": ["chat.youtube.*"]}))
        .await;
    let (mut idle, _) = WsClient::connect_welcomed(&app.ws_url("")).await;

    let notice = purge(user_subject("leaver"));
    stream.publish(&notice).await;
    for ws in [&mut history, &mut two] {
        let frame = ws.expect("privacy").await;
        assert_eq!(frame["action"], "purge");
        assert_eq!(
            frame["subject"],
            json!({"type": "user", "platform": "twitch", "user_id": "id-leaver"})
        );
        assert_eq!(frame["notice_id"], notice.id.as_str());
        assert!(frame["horizon"].is_string(), "{frame}");
        assert!(
            frame.get("sub").is_none(),
            "a frame of the connection: {frame}"
        );
        assert!(frame.get("text").is_none());
    }
    two.assert_quiet(300).await;
    idle.assert_quiet(100).await;

    // Notices decided before the consumer started (replayed from the
    // stream) and opt-ins are not sent; an opt-out is.
    let mut old = purge(user_subject("long_ago"));
    old.at -= chrono::Duration::hours(1);
    stream.publish(&old).await;
    stream
        .publish(&PrivacyNotice::new(
            PrivacyAction::OptIn,
            Some(user_subject("back")),
            "test",
        ))
        .await;
    let opt_out = PrivacyNotice::new(PrivacyAction::OptOut, Some(user_subject("leaver")), "test");
    stream.publish(&opt_out).await;
    let frame = history.expect("privacy").await;
    assert_eq!(frame["action"], "opt_out");
    assert_eq!(frame["notice_id"], opt_out.id.as_str());
    assert!(frame.get("horizon").is_none(), "{frame}");

    app.stop().await;
    stream.delete().await;
}
