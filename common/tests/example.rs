//! The runnable examples, run in-process (built with the test targets;
//! nothing is compiled at run time).

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::amqp::{Publisher, Topology};
use testkit::rabbit::{self, unique};
use testkit::{events, within};

#[path = "../examples/subscribe.rs"]
#[allow(dead_code)]
mod subscribe;

#[path = "../examples/publish.rs"]
#[allow(dead_code)]
mod publish;

/// What an example writes, readable by the test while it runs.
#[derive(Clone, Default)]
struct Output(Arc<Mutex<Vec<u8>>>);

impl Write for Output {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Output {
    fn lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.0.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test]
async fn example_subscriber_prints_published_twitch_events() {
    let exchange = unique("test-example");
    let args = subscribe::Args {
        bindings: vec!["chat.twitch.*".into()],
        exchange: exchange.clone(),
        amqp_url: rabbit::amqp_url(),
        max: Some(2),
    };
    let output = Output::default();
    let example = {
        let mut out = output.clone();
        tokio::spawn(async move {
            subscribe::run(args, &mut out, tokio_util::sync::CancellationToken::new()).await
        })
    };
    testkit::eventually(30, "example subscribed", || async {
        output
            .lines()
            .first()
            .is_some_and(|l| l.starts_with("subscribed to chat.twitch.*"))
            .then_some(())
    })
    .await;

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
    within(30, "example exits after --max 2", example)
        .await
        .unwrap()
        .unwrap();
    let printed = output.lines();
    assert_eq!(printed.len(), 3, "{printed:?}");
    assert_eq!(
        printed[1],
        format!(
            "chat.twitch.somechannel message User1: {}",
            first.text.unwrap()
        )
    );
    assert_eq!(
        printed[2],
        format!("chat.twitch.other message User2: {}", second.text.unwrap())
    );
    rabbit::delete_topology(&conn, &topology).await;
}

#[tokio::test]
async fn example_publisher_gets_every_batch_confirmed() {
    let exchange = unique("test-example-pub");
    let args = publish::Args {
        channel: "somechannel".into(),
        count: 1_000,
        batch: 250,
        exchange: exchange.clone(),
        amqp_url: rabbit::amqp_url(),
    };
    let mut output = Output::default();
    let confirmed = within(60, "example publishes", publish::run(&args, &mut output))
        .await
        .unwrap();
    assert_eq!(confirmed, 1_000);
    assert_eq!(
        output.lines(),
        vec!["batch of 250: all confirmed"; 4],
        "one line per batch"
    );
    let conn = rabbit::connect("test-example-pub-cleanup").await;
    rabbit::delete_topology(&conn, &Topology::named(&exchange)).await;
}
