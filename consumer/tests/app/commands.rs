//! `POST /api/commands` against the real RabbitMQ: what the write token
//! publishes on the commands exchange, the receipt a responder (playing the
//! ingestor) sends back, and what is refused without publishing.

use std::time::Duration;

use common::Secret;
use common::command::{ReceiptStatus, command_routing_key};
use serde_json::json;
use testkit::rabbit::unique;

use crate::helpers::{CommandResponder, TestApp, post_command};

const READ: &str = "read-token-for-tests";
const WRITE: &str = "write-token-for-tests";

/// A consumer that may send, on an exchange of its own.
async fn sending_app(exchange: &str) -> TestApp {
    let exchange = exchange.to_owned();
    let app = TestApp::spawn_with(move |c| {
        c.consumer_api_token = Some(Secret::new(READ));
        c.consumer_command_token = Some(Secret::new(WRITE));
        c.consumer_commands_exchange = exchange;
    })
    .await;
    app.wait_consuming().await;
    app
}

#[tokio::test]
async fn a_command_posted_with_the_write_token_is_published_and_answered_with_its_receipt() {
    let exchange = unique("test-commands");
    let channel = format!("cmd_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let yt_channel = format!("UCcmd{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    // The responder declares the exchange as the consumer does; bound
    // before the consumer starts, so nothing races the binding.
    let responder = CommandResponder::start(
        &exchange,
        &[
            command_routing_key("twitch", &channel),
            command_routing_key("youtube", &yt_channel),
        ],
        |c| match c.platform.as_str() {
            "youtube" => (ReceiptStatus::Dropped, Some("msg_duplicate".into())),
            _ => (ReceiptStatus::Sent, None),
        },
    )
    .await;
    let app = sending_app(&exchange).await;

    // One send: on the exchange with the routing key and body of the
    // contract, and its receipt in the answer.
    let (status, receipt) = post_command(
        &app,
        Some(WRITE),
        &json!({"platform": "twitch", "channel": channel, "kind": "send", "text": "hello from the page"}),
    )
    .await;
    assert_eq!(status, 200, "{receipt}");
    let seen = responder.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].routing_key, command_routing_key("twitch", &channel));
    let body = &seen[0].body;
    assert_eq!(body["schema_version"], 1);
    assert_eq!(body["platform"], "twitch");
    assert_eq!(body["channel"], channel.as_str());
    assert_eq!(body["kind"], "send");
    assert_eq!(body["text"], "hello from the page");
    assert_eq!(receipt["id"], body["id"], "the receipt of that command");
    assert_eq!(receipt["status"], "sent");
    assert_eq!(
        receipt["platform_message_id"],
        format!("pm-{}", seen[0].command.id)
    );

    // A moderation: the fields of its kind, on the wire as given.
    let (status, receipt) = post_command(
        &app,
        Some(WRITE),
        &json!({"platform": "twitch", "channel": channel, "kind": "timeout",
                "user_id": "u-42", "seconds": 600, "reason": "calm down"}),
    )
    .await;
    assert_eq!((status, &receipt["status"]), (200, &json!("sent")));
    let body = &responder.seen()[1].body;
    assert_eq!(body["kind"], "timeout");
    assert_eq!(body["user_id"], "u-42");
    assert_eq!(body["seconds"], 600);
    assert_eq!(body["reason"], "calm down");

    // One text to two channels on two platforms: one command each, the
    // receipts in the targets' order.
    let (status, receipts) = post_command(
        &app,
        Some(WRITE),
        &json!({"targets": [{"platform": "youtube", "channel": yt_channel},
                            {"platform": "twitch", "channel": channel}],
                "text": "to both"}),
    )
    .await;
    assert_eq!(status, 200, "{receipts}");
    let receipts = receipts.as_array().expect("a list of receipts");
    assert_eq!(receipts.len(), 2);
    assert_eq!(receipts[0]["status"], "dropped");
    assert_eq!(receipts[0]["reason"], "msg_duplicate");
    assert_eq!(receipts[1]["status"], "sent");
    let seen = responder.seen();
    assert_eq!(seen.len(), 4);
    let mut keys: Vec<_> = seen[2..].iter().map(|s| s.routing_key.clone()).collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            command_routing_key("twitch", &channel),
            command_routing_key("youtube", &yt_channel)
        ]
    );
    assert!(seen[2..].iter().all(|s| s.body["text"] == "to both"));
    let youtube = seen[2..]
        .iter()
        .find(|s| s.command.platform == "youtube")
        .unwrap();
    assert_eq!(receipts[0]["id"], youtube.body["id"]);

    responder.stop(&exchange).await;
    app.stop().await;
}

#[tokio::test]
async fn without_the_write_token_nothing_is_published_and_bad_bodies_are_400() {
    let exchange = unique("test-commands");
    let channel = format!("cmd_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let responder = CommandResponder::start(
        &exchange,
        &[command_routing_key("twitch", &channel)],
        |_| (ReceiptStatus::Sent, None),
    )
    .await;
    let app = sending_app(&exchange).await;
    let send = json!({"platform": "twitch", "channel": channel, "kind": "send", "text": "hi"});

    // The read token reads, and never writes; nor does no token, nor the
    // write token in the URL (only the header counts).
    let (status, _) = app
        .get_json(&format!("/api/channels?access_token={READ}"))
        .await;
    assert_eq!(status, 200, "the read token reads");
    for token in [Some(READ), None, Some("nope")] {
        let (status, answer) = post_command(&app, token, &send).await;
        assert_eq!(status, 401, "{token:?}: {answer}");
        assert_eq!(answer["error"], "unauthorized");
    }
    let res = reqwest::Client::new()
        .post(app.url(&format!("/api/commands?access_token={WRITE}")))
        .json(&send)
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        401,
        "the write token is not taken from the URL"
    );

    // Bad bodies: 400 with the reason, or 413 when too large.
    for (body, code, needle) in [
        (
            json!({"platform": "twitch"}),
            "invalid_command",
            "`channel` is required",
        ),
        (
            json!({"platform": "twitch", "channel": channel, "kind": "send", "text": "  "}),
            "invalid_command",
            "`text` is empty",
        ),
        (
            json!({"platform": "twitch", "channel": channel, "kind": "timeout", "user_id": "u", "seconds": 0}),
            "invalid_command",
            "1 to 1209600 seconds",
        ),
        (
            json!({"targets": [{"platform": "twitch", "channel": channel}, {"platform": "", "channel": "x"}], "text": "hi"}),
            "invalid_command",
            "`platform` is empty",
        ),
        (json!([1, 2]), "invalid_body", "not a command"),
    ] {
        let (status, answer) = post_command(&app, Some(WRITE), &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"], code, "{body}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(needle), "{body}: {message}");
    }
    let res = reqwest::Client::new()
        .post(app.url("/api/commands"))
        .bearer_auth(WRITE)
        .header("content-type", "application/json")
        .body("{\"text\": \"".to_owned() + &"x".repeat(20_000) + "\"}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413, "the body is limited");

    // None of these reached the exchange (a command published before the
    // answer would have been taken by now).
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(responder.seen().is_empty(), "{:?}", responder.seen());

    // And a command no sender's queue is bound for comes back from the
    // broker: rejected, no_sender.
    let (status, receipt) = post_command(
        &app,
        Some(WRITE),
        &json!({"platform": "twitch", "channel": "nobody_listens_here", "kind": "send", "text": "hello?"}),
    )
    .await;
    assert_eq!(status, 200, "{receipt}");
    assert_eq!(receipt["status"], "rejected");
    assert_eq!(receipt["reason"], "no_sender");
    assert!(responder.seen().is_empty());

    responder.stop(&exchange).await;
    app.stop().await;
}

#[tokio::test]
async fn sending_is_unavailable_while_the_broker_is_away_and_works_again_on_the_new_connection() {
    let exchange = unique("test-commands");
    let channel = format!("cmd_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let responder = CommandResponder::start(
        &exchange,
        &[command_routing_key("twitch", &channel)],
        |_| (ReceiptStatus::Sent, None),
    )
    .await;
    let proxy = testkit::proxy::TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let url = proxy.url(&testkit::rabbit::amqp_url());
    let commands_exchange = exchange.clone();
    let app = TestApp::spawn_with(move |c| {
        c.amqp_url = url;
        c.consumer_command_token = Some(Secret::new(WRITE));
        c.consumer_commands_exchange = commands_exchange;
    })
    .await;
    app.wait_consuming().await;
    let send = json!({"platform": "twitch", "channel": channel, "kind": "send", "text": "hi"});
    assert_eq!(
        post_command(&app, Some(WRITE), &send).await.1["status"],
        "sent"
    );

    proxy.cut();
    testkit::eventually(30, "the consumer noticing the broker is away", || async {
        (app.get_json("/readyz").await.1["consuming"] == false).then_some(())
    })
    .await;
    let (status, answer) = post_command(&app, Some(WRITE), &send).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"], "commands_unavailable");

    proxy.restore();
    app.wait_consuming().await;
    let (status, receipt) = post_command(&app, Some(WRITE), &send).await;
    assert_eq!(
        (status, &receipt["status"]),
        (200, &json!("sent")),
        "{receipt}"
    );
    assert_eq!(responder.seen().len(), 2, "the one sent while away was not");

    responder.stop(&exchange).await;
    app.stop().await;
}
