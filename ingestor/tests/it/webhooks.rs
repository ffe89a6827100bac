//! The webhook listener and a generic signed source against the real
//! RabbitMQ: a good delivery is published once with its exact text (retries
//! are answered 200 and not published again); every bad one gets its status
//! and publishes nothing.

use std::time::Duration;

use serde_json::Value;
use testkit::fake_irc::FakeIrc;
use testkit::rabbit::{self, unique};

use crate::helpers::*;

const SECRET: &str = "relay-secret-0123456789abcdef";

/// A signed `POST /hooks/<source>` at `at` (Unix seconds).
async fn post(
    base: &str,
    source: &str,
    at: i64,
    signature: Option<String>,
    body: Vec<u8>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/hooks/{source}"))
        .header("content-type", "application/json")
        .header("x-chatbus-timestamp", at.to_string())
        .body(body);
    if let Some(signature) = signature {
        req = req.header("x-chatbus-signature", signature);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A request that must be refused: what it is, the status it gets, the
/// source it goes to, its timestamp, signature and body.
type Bad = (
    &'static str,
    u16,
    &'static str,
    i64,
    Option<String>,
    Vec<u8>,
);

fn signed(at: i64, body: &[u8]) -> Option<String> {
    Some(ingestor::webhooks::signature(
        SECRET.as_bytes(),
        &at.to_string(),
        body,
    ))
}

#[tokio::test]
async fn a_signed_hook_is_published_once_and_every_bad_request_publishes_nothing() {
    let fake = FakeIrc::start().await;
    let exchange = unique("test-hooks");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let (dir, spool) = spool_dir();
    let secret_file = dir.path().join("relay.secret");
    std::fs::write(&secret_file, format!("{SECRET}\n")).unwrap();
    let mut cfg = config(&fake, &rabbit::amqp_url(), &exchange, &[], &spool);
    cfg.webhook_http_addr = Some("127.0.0.1:0".into());
    cfg.webhook_sources = vec![format!("relay:{}", secret_file.display())];
    cfg.webhook_max_body_bytes = 4096;
    let ing = Running::start(cfg).await;
    let (_, ready) = ing.get("/readyz").await;
    let ready: Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(ready["webhooks"]["sources"][0], "relay", "{ready}");
    let base = format!("http://{}", ready["webhooks"]["addr"].as_str().unwrap());

    let now = chrono::Utc::now().timestamp();
    let event = |n: usize| {
        let mut e = testkit::events::message("relay", "lounge", n);
        e.text = Some(format!("hook {n}: héllo 👋 \"quoted\""));
        serde_json::to_vec(&e).unwrap()
    };
    let bad_ones: Vec<Bad> = vec![
        ("unsigned", 401, "relay", now, None, event(1)),
        (
            "another secret",
            401,
            "relay",
            now,
            Some(ingestor::webhooks::signature(
                b"not-the-secret-at-all",
                &now.to_string(),
                &event(2),
            )),
            event(2),
        ),
        (
            "a signature of another body",
            401,
            "relay",
            now,
            signed(now, &event(3)),
            event(4),
        ),
        (
            "stale (10 minutes old)",
            401,
            "relay",
            now - 600,
            signed(now - 600, &event(5)),
            event(5),
        ),
        (
            "an unknown source",
            404,
            "nobody",
            now,
            signed(now, &event(6)),
            event(6),
        ),
        (
            "not JSON",
            400,
            "relay",
            now,
            signed(now, b"{not json"),
            b"{not json".to_vec(),
        ),
        (
            "too large",
            413,
            "relay",
            now,
            signed(now, &[b' '; 10_000]),
            vec![b' '; 10_000],
        ),
    ];
    for (what, status, source, at, signature, body) in bad_ones {
        let (got, answer) = post(&base, source, at, signature, body).await;
        assert_eq!(got, status, "{what}: {answer}");
    }
    // A validly signed event that claims to be another platform's.
    let twitch = serde_json::to_vec(&testkit::events::message("twitch", "lounge", 7)).unwrap();
    let (got, answer) = post(&base, "relay", now, signed(now, &twitch), twitch).await;
    assert_eq!(
        (got, answer["error"].as_str()),
        (400, Some("wrong_platform")),
        "{answer}"
    );

    // A good delivery, retried three times, and a second one.
    let first = event(10);
    let first_id = serde_json::from_slice::<Value>(&first).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for attempt in 0..4 {
        let (got, answer) = post(&base, "relay", now, signed(now, &first), first.clone()).await;
        assert_eq!(got, 200, "{answer}");
        assert_eq!(answer["id"], first_id.as_str());
        assert_eq!(
            answer["duplicate"],
            attempt > 0,
            "attempt {attempt}: {answer}"
        );
    }
    let second = event(11);
    let (got, _) = post(&base, "relay", now, signed(now, &second), second).await;
    assert_eq!(got, 200);

    // The sink keeps order: anything a bad request had published would
    // arrive before the second good event.
    let got = tap
        .collect_until(30, "both good events", |g| {
            g.iter()
                .any(|d| d.event.text.as_deref() == Some("hook 11: héllo 👋 \"quoted\""))
        })
        .await;
    let texts: Vec<&str> = got.iter().filter_map(|d| d.event.text.as_deref()).collect();
    assert_eq!(
        texts,
        [
            "hook 10: héllo 👋 \"quoted\"",
            "hook 11: héllo 👋 \"quoted\""
        ]
    );
    assert_eq!(got[0].event.id, first_id);
    assert_eq!(got[0].event.platform, "relay");
    assert_eq!(got[0].routing_key, "chat.relay.lounge");
    assert!(
        tap.drain_quiet(Duration::from_millis(500)).await.is_empty(),
        "the retries published nothing"
    );
    assert_eq!(
        ing.metric("chatbus_ingestor_webhook_duplicates_total")
            .await,
        3.0
    );
    ing.stop().await;
    tap.cleanup().await;
}
