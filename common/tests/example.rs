//! The runnable example subscriber prints events a test publishes.

use std::process::Stdio;

use common::amqp::{Publisher, Topology};
use testkit::rabbit::{self, unique};
use testkit::{events, within};
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn example_subscriber_prints_published_twitch_events() {
    let exchange = unique("test-example");
    let mut child = tokio::process::Command::new(env!("CARGO"))
        .args(["run", "-q", "-p", "common", "--example", "subscribe", "--"])
        .args([
            "--bind",
            "chat.twitch.*",
            "--exchange",
            &exchange,
            "--max",
            "2",
        ])
        .env("AMQP_URL", rabbit::amqp_url())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("cargo run the example");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = within(300, "example subscribed", lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert!(ready.starts_with("subscribed to chat.twitch.*"), "{ready}");

    let conn = rabbit::connect("test-example-publisher").await;
    let topology = Topology::named(&exchange);
    let publisher = Publisher::open(&conn, &topology, "chatbus-test")
        .await
        .unwrap();
    let youtube = events::message("youtube", "elsewhere", 0);
    let first = events::message("twitch", "somechannel", 1);
    let second = events::message("twitch", "other", 2);
    for e in [&youtube, &first, &second] {
        publisher.publish(e).await.unwrap();
    }

    let mut printed = Vec::new();
    while let Some(line) = within(30, "example output", lines.next_line())
        .await
        .unwrap()
    {
        printed.push(line);
    }
    let status = within(30, "example exits after --max 2", child.wait())
        .await
        .unwrap();
    assert!(status.success());
    assert_eq!(printed.len(), 2, "{printed:?}");
    assert_eq!(
        printed[0],
        format!(
            "chat.twitch.somechannel message User1: {}",
            first.text.unwrap()
        )
    );
    assert_eq!(
        printed[1],
        format!("chat.twitch.other message User2: {}", second.text.unwrap())
    );
    rabbit::delete_topology(&conn, &topology).await;
}
