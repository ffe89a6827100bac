//! Webhook ingest benchmark: signed Kick deliveries (`chat.message.sent`,
//! RSA-2048 PKCS#1 v1.5 signatures made by the fake Kick's key) POSTed to
//! the ingestor binary's webhook listener, published with confirms into a
//! durable queue on the local RabbitMQ.
//!
//! ```sh
//! cargo bench -p ingestor --bench webhooks -- --deliveries 20000 --concurrency 32 --rate 100 --seconds 30
//! ```
//!
//! * **Throughput**: `--deliveries` pre-signed deliveries from
//!   `--concurrency` keep-alive HTTP connections as fast as they are
//!   answered; the rate is deliveries / (first POST to the last event in the
//!   durable queue, read with a passive declare). The broker's ceiling is
//!   the flood bench's: the bare amqplib publisher (testkit/ceiling) sending
//!   the very events the ingestor published (read back from the queue,
//!   re-encoded as the ingestor encodes them) into a fresh durable queue.
//! * **Latency**: `--rate` deliveries a second for `--seconds`, one at a
//!   time; each POST's round trip (request sent to its `200`, which the
//!   listener answers once the event is in the outbox) is the time to
//!   queued.

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::amqp::{OutgoingMessage, Subscriber, Topology};
use serde_json::json;
use testkit::fake_kick::FakeKick;
use testkit::rabbit::{self, unique};

const BROADCASTER: u64 = 555_000_111;

fn delivery(i: usize) -> (String, String, Vec<u8>, String) {
    let id = format!("bench-{}-{i}", uuid::Uuid::new_v4().simple());
    let body = serde_json::to_vec(&json!({
        "message_id": id,
        "replies_to": null,
        "broadcaster": {"is_anonymous": false, "user_id": BROADCASTER, "username": "BenchLounge",
            "is_verified": true, "profile_picture": null, "channel_slug": "benchlounge", "identity": null},
        "sender": {"is_anonymous": false, "user_id": 1000 + i % 500, "username": format!("viewer{}", i % 500),
            "is_verified": false, "profile_picture": null, "channel_slug": format!("viewer{}", i % 500),
            "identity": {"username_color": "#FF5733", "badges": [{"text": "Subscriber", "type": "subscriber", "count": 3}]}},
        "content": format!("bench message {i} with a few words of chat in it [emote:37226:KEKW]"),
        "emotes": [],
        "created_at": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }))
    .unwrap();
    let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let signature = FakeKick::sign(&id, &ts, &body);
    (id, ts, body, signature)
}

async fn post(
    client: &reqwest::Client,
    url: &str,
    (id, ts, body, signature): &(String, String, Vec<u8>, String),
) -> u16 {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("Kick-Event-Message-Id", id)
        .header("Kick-Event-Subscription-Id", "01BENCH")
        .header("Kick-Event-Message-Timestamp", ts)
        .header("Kick-Event-Signature", signature)
        .header("Kick-Event-Type", "chat.message.sent")
        .header("Kick-Event-Version", "1")
        .body(body.clone())
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1e3
}

#[tokio::main]
async fn main() {
    let n: usize = testkit::cli_arg("--deliveries", 20_000);
    let concurrency: usize = testkit::cli_arg("--concurrency", 32);
    let rate: f64 = testkit::cli_arg("--rate", 100.0);
    let seconds: f64 = testkit::cli_arg("--seconds", 30.0);

    let fake = FakeKick::start().await;
    fake.add_channel("benchlounge", BROADCASTER);
    let conn = rabbit::connect("bench-webhooks").await;
    let exchange = unique("bench-hooks");
    let topology = Topology::named(&exchange);
    let queue = unique("bench-hooks-q");
    let sub = Subscriber::builder(&queue)
        .bind("chat.#")
        .prefetch(1000)
        .build(&conn, &topology)
        .await
        .unwrap();
    sub.close().await;
    let dir = tempfile::tempdir().unwrap();
    let (admin, hooks) = (testkit::free_port(), testkit::free_port());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingestor"))
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("AMQP_URL", rabbit::amqp_url())
        .env("CHAT_EXCHANGE", &exchange)
        .env("RABBITMQ_POLICIES", "false")
        .env("INGESTOR_HTTP_ADDR", format!("127.0.0.1:{admin}"))
        .env("WEBHOOK_HTTP_ADDR", format!("127.0.0.1:{hooks}"))
        .env("SPOOL_DIR", dir.path().join("spool"))
        .env("TWITCH_IRC_ADDR", "127.0.0.1:9")
        .env("TWITCH_IRC_TLS", "false")
        .env("KICK_CHANNELS", "benchlounge")
        .env("KICK_CLIENT_ID", "bench-client")
        .env("KICK_CLIENT_SECRET", "bench-secret")
        .env("KICK_API_URL", fake.url())
        .env("KICK_OAUTH_URL", fake.url())
        .current_dir(dir.path())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the ingestor (cargo bench builds it)");
    let url = format!("http://127.0.0.1:{hooks}/hooks/kick");
    testkit::eventually(60, "the ingestor subscribed the Kick channel", || async {
        (!fake.subscriptions().is_empty()).then_some(())
    })
    .await;

    eprintln!("signing {n} deliveries...");
    let deliveries: Arc<Vec<_>> = Arc::new((0..n).map(delivery).collect());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .unwrap();
    // Warm up (the public key fetch, the first connection).
    let warm = delivery(n + 1);
    assert_eq!(
        post(&client, &url, &warm).await,
        200,
        "the warm-up delivery"
    );
    let probe = conn.create_channel().await.unwrap();
    while rabbit::queue_depth(&probe, &queue).await < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (_, cpu_before) = testkit::metrics::process_stats(child.id().unwrap());

    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (client, url, deliveries, next) = (
                client.clone(),
                url.clone(),
                deliveries.clone(),
                next.clone(),
            );
            tokio::spawn(async move {
                let mut refused = 0;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(d) = deliveries.get(i) else {
                        return refused;
                    };
                    if post(&client, &url, d).await != 200 {
                        refused += 1;
                    }
                }
            })
        })
        .collect();
    let mut refused = 0;
    for w in workers {
        refused += w.await.unwrap();
    }
    let answered = start.elapsed();
    let want = u32::try_from(n + 1).unwrap();
    while rabbit::queue_depth(&probe, &queue).await < want {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    let (rss_mib, cpu_after) = testkit::metrics::process_stats(child.id().unwrap());
    let hook_rate = n as f64 / elapsed.as_secs_f64();

    // Latency at `rate`, one delivery at a time.
    let paced: Vec<_> = (0..(rate * seconds) as usize)
        .map(|i| delivery(n + 10 + i))
        .collect();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut took = Vec::with_capacity(paced.len());
    for d in &paced {
        tick.tick().await;
        let t = Instant::now();
        assert_eq!(post(&client, &url, d).await, 200);
        took.push(t.elapsed());
    }
    took.sort();
    let _ = child.kill().await;

    // The ceiling: the events the ingestor published, re-encoded as it
    // encodes them, from the bare amqplib publisher.
    let mut sub = Subscriber::builder(&queue)
        .bind("chat.#")
        .prefetch(1000)
        .build(&conn, &topology)
        .await
        .unwrap();
    let mut sample: Vec<OutgoingMessage> = Vec::new();
    while sample.len() < 5_000.min(n) {
        let d = sub.next().await.unwrap().unwrap();
        sample.push(OutgoingMessage::from_event(&d.event).unwrap());
        d.ack().await.unwrap();
    }
    sub.close().await;
    let ceiling_topology = Topology::named(&unique("bench-hooks-ceiling"));
    let ceiling_queue = unique("bench-hooks-ceiling-q");
    let csub = Subscriber::builder(&ceiling_queue)
        .bind("chat.#")
        .build(&conn, &ceiling_topology)
        .await
        .unwrap();
    csub.close().await;
    let ceiling = testkit::ceiling::run(
        &rabbit::amqp_url(),
        &ceiling_topology.exchange,
        &sample,
        n,
        common::amqp::DEFAULT_MAX_IN_FLIGHT,
    )
    .await;

    println!(
        "| deliveries | concurrency | all answered | in the queue | deliveries/s | refused | ceiling msg/s | share | ingestor CPU per delivery | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {concurrency} | {:.2} s | {:.2} s | {hook_rate:.0} | {refused} | {:.0} | {:.0} % | {:.0} µs | {rss_mib:.0} MiB |",
        answered.as_secs_f64(),
        elapsed.as_secs_f64(),
        ceiling.rate,
        100.0 * hook_rate / ceiling.rate,
        (cpu_after - cpu_before) * 1e6 / n as f64,
    );
    println!(
        "latency at {rate}/s over {seconds} s ({} deliveries): request to 200 (in the outbox) p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        took.len(),
        percentile(&took, 0.5),
        percentile(&took, 0.99),
        took.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    // Clean up.
    let ch = conn.create_channel().await.unwrap();
    for q in [&queue, &ceiling_queue] {
        let _ = ch.queue_delete(q.as_str().into(), Default::default()).await;
    }
    rabbit::delete_topology(&conn, &topology).await;
    rabbit::delete_topology(&conn, &ceiling_topology).await;
}
