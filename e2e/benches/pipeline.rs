//! The pipeline performance report: fake Twitch IRC -> ingestor -> RabbitMQ
//! -> consumer -> store and WebSocket, all on this machine.
//!
//! ```sh
//! cargo bench -p e2e --bench pipeline
//! cargo bench -p e2e --bench pipeline -- --messages 200000 --seconds 20
//! # two consumers competing on the queue, sharing one PostgreSQL database
//! cargo bench -p e2e --bench pipeline -- --postgres --consumers 2
//! ```
//!
//! 1. Throughput: a flood of `--messages` PRIVMSGs as fast as the fake server
//!    can send; time until the consumer has committed every one.
//! 2. Latency at 1,000 and 10,000 messages/s for `--seconds` each: time from
//!    the fake server writing a line to a WebSocket client receiving it.
//! 3. Memory: peak RSS (VmHWM) and CPU seconds of each service process.
//!
//! The broker's ceiling, measured first by code not under test: the bare
//! amqplib publisher (`testkit/ceiling`) sends the events the ingestor
//! would publish for the flood, with confirms, into a durable queue. The
//! throughput is reported as a share of it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions, WsClient, WsRead, process_stats};
use testkit::metrics::percentile;

async fn throughput(stack: &Stack, n: usize) -> (f64, f64) {
    let before = stack
        .consumers_metric("chatbus_consumer_events_stored_total")
        .await;
    let flood = testkit::corpus::flood_privmsgs(&stack.channels, n, "tp");
    let start = Instant::now();
    for chunk in flood.chunks(5_000) {
        stack.fake.send_lines(chunk);
        tokio::task::yield_now().await;
    }
    loop {
        let stored = stack
            .consumers_metric("chatbus_consumer_events_stored_total")
            .await
            - before;
        if stored >= n as f64 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(1800),
            "only {stored} of {n} stored after 30 min"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    (secs, n as f64 / secs)
}

/// Wall-clock microseconds since the epoch.
fn wall_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

/// Latencies of one run, in ms, each sorted: end to end, and split at the
/// event's `received_at` (stamped by the ingestor when it read the line)
/// into fake -> ingestor and ingestor -> WebSocket client. All three come
/// from the wall clock, which the processes share on this machine.
struct Latencies {
    total: Vec<f64>,
    to_ingestor: Vec<f64>,
    to_client: Vec<f64>,
}

/// Commits of a consumer's `chatbus_consumer_commit_seconds` histogram
/// that took at most `le` seconds (`None`: all of them), on its `/metrics`
/// page (NaN if the page could not be read).
fn commits_within(page: Option<&str>, le: Option<&str>) -> f64 {
    let name = match le {
        Some(le) => format!("chatbus_consumer_commit_seconds_bucket{{le=\"{le}\"}}"),
        None => "chatbus_consumer_commit_seconds_count".to_owned(),
    };
    page.map_or(f64::NAN, |page| testkit::metrics::sample_sum(page, &name))
}

async fn latency(stack: &Stack, rate: u64, seconds: u64, tag: &str) -> Latencies {
    let total = (rate * seconds) as usize;
    let mut ws = WsClient::connect(stack.consumer.http).await;
    ws.subscribe("lat", &["chat.twitch.*".into()], None).await;
    let prefix = format!("{tag}-");
    let receiver = tokio::spawn(async move {
        // message number -> (arrival, the ingestor's received_at), in µs
        let mut received: HashMap<usize, (i64, i64)> = HashMap::with_capacity(total);
        while received.len() < total {
            match ws.read(60).await {
                WsRead::Frame(f) if f["type"] == "event" => {
                    let now = wall_us();
                    if let Some(n) = f["event"]["id"]
                        .as_str()
                        .and_then(|id| id.strip_prefix(&prefix))
                        .and_then(|n| n.parse().ok())
                    {
                        let ingested = f["event"]["received_at"]
                            .as_str()
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                            .expect("every event carries received_at")
                            .timestamp_micros();
                        received.insert(n, (now, ingested));
                    }
                }
                WsRead::Frame(_) => {}
                WsRead::Closed(c) => panic!("WebSocket closed: {c:?}"),
            }
        }
        received
    });
    let batch = (rate / 100).max(1) as usize; // every 10 ms
    let all = testkit::corpus::flood_privmsgs(&stack.channels, total, tag);
    let mut sent_at: Vec<i64> = Vec::with_capacity(total);
    let start = Instant::now();
    for (i, chunk) in all.chunks(batch).enumerate() {
        let due = start + Duration::from_millis(10 * i as u64);
        tokio::time::sleep_until(due.into()).await;
        let now = wall_us();
        stack.fake.send_lines(chunk);
        sent_at.extend(std::iter::repeat_n(now, chunk.len()));
    }
    let received = tokio::time::timeout(Duration::from_secs(seconds * 10 + 60), receiver)
        .await
        .expect("every message reached the WebSocket client")
        .unwrap();
    // One leg of every message, in ms, sorted.
    let leg = |f: &dyn Fn(i64, i64, i64) -> i64| {
        let mut v: Vec<f64> = received
            .iter()
            .map(|(n, &(arrived, ingested))| f(sent_at[*n], ingested, arrived) as f64 / 1000.0)
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    Latencies {
        total: leg(&|sent, _, arrived| arrived - sent),
        to_ingestor: leg(&|sent, ingested, _| ingested - sent),
        to_client: leg(&|_, ingested, arrived| arrived - ingested),
    }
}

/// The broker's publish ceiling for the flood's events: the bare amqplib
/// publisher with confirms into a fresh durable queue.
async fn ceiling(channels: &[String], n: usize) -> f64 {
    use common::amqp::{OutgoingMessage, Subscriber, Topology};
    use ingestor::platforms::twitch::normalise::{Normalised, Normaliser};
    let normaliser = Normaliser::new(true);
    let now = chrono::Utc::now();
    let payloads: Vec<OutgoingMessage> = testkit::corpus::flood_privmsgs(channels, 5_000, "ceil")
        .iter()
        .filter_map(|l| match normaliser.normalise_text(l, now)? {
            Normalised::Event(e) => OutgoingMessage::from_event(&e).ok(),
            _ => None,
        })
        .collect();
    let conn = testkit::rabbit::connect("bench-pipeline-ceiling").await;
    let topology = Topology::named(&testkit::rabbit::unique("bench-pipeline-ceiling"));
    let queue = testkit::rabbit::unique("bench-pipeline-ceiling-q");
    Subscriber::builder(&queue)
        .bind("chat.#")
        .expires(Duration::from_secs(3600))
        .build(&conn, &topology)
        .await
        .unwrap()
        .close()
        .await;
    eprintln!("broker ceiling: amqplib publisher, {n} messages ...");
    let c = testkit::ceiling::run(
        &testkit::rabbit::amqp_url(),
        &topology.exchange,
        &payloads,
        n,
        ingestor::Config::default().publish_max_in_flight,
    )
    .await;
    testkit::rabbit::delete_topology(&conn, &topology).await;
    let ch = conn.create_channel().await.unwrap();
    let _ = ch
        .queue_delete(
            queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await;
    common::amqp::close(&conn, "ceiling measured").await;
    // Let the broker finish deleting the queue before the pipeline runs.
    tokio::time::sleep(Duration::from_secs(5)).await;
    c.rate
}

#[tokio::main]
async fn main() {
    let n: usize = testkit::cli_arg("--messages", 200_000);
    let seconds: u64 = testkit::cli_arg("--seconds", 20);
    let consumers: usize = testkit::cli_arg("--consumers", 1);
    let database = if std::env::args().any(|a| a == "--postgres") {
        Some(testkit::pg::TestDatabase::create().await)
    } else {
        None
    };
    assert!(
        consumers == 1 || database.is_some(),
        "several consumers share a database: add --postgres"
    );
    let store = if database.is_some() {
        "PostgreSQL"
    } else {
        "SQLite"
    };
    let stack = Stack::start(StackOptions {
        database_url: database.as_ref().map(|d| d.url.clone()),
        consumers,
        channels: 10,
        // Tuning under test is passed through when set.
        ingestor_env: std::iter::once(("INGEST_INCLUDE_RAW".to_owned(), "true".to_owned()))
            .chain(testkit::ingestor_tuning_env())
            .collect(),
        ..Default::default()
    })
    .await;
    let ceiling = ceiling(&stack.channels, n).await;
    eprintln!("throughput: {n} messages ...");
    let (secs, rate) = throughput(&stack, n).await;
    println!(
        "\n| scenario | messages | time | messages/s | broker ceiling (amqplib publisher, same payloads) | share |\n| --- | ---: | ---: | ---: | ---: | ---: |"
    );
    println!(
        "| IRC -> store ({store}, {consumers} consumer(s)), flood over 10 channels | {n} | {secs:.1} s | **{rate:.0}** | {:.0} | **{:.0} %** |",
        ceiling,
        100.0 * rate / ceiling
    );

    println!(
        "\n| offered rate | messages | p50 | p99 | max |\n| ---: | ---: | ---: | ---: | ---: |"
    );
    let mut splits = Vec::new();
    let mut commits = Vec::new();
    for rate in [1_000, 10_000] {
        eprintln!("latency at {rate}/s for {seconds}s ...");
        let before = testkit::metrics::page(stack.consumer.http).await;
        let l = latency(&stack, rate, seconds, &format!("lat{rate}")).await;
        commits.push((
            rate,
            before,
            testkit::metrics::page(stack.consumer.http).await,
        ));
        println!(
            "| {rate}/s | {} | {:.1} ms | {:.1} ms | {:.1} ms |",
            l.total.len(),
            percentile(&l.total, 0.5),
            percentile(&l.total, 0.99),
            l.total.last().unwrap()
        );
        splits.push((rate, l));
    }
    println!(
        "\n| offered rate | leg (split at the ingestor's received_at) | p50 | p99 | max |\n| ---: | --- | ---: | ---: | ---: |"
    );
    for (rate, l) in &splits {
        for (leg, v) in [
            ("fake server -> ingestor", &l.to_ingestor),
            ("ingestor -> WebSocket client", &l.to_client),
        ] {
            println!(
                "| {rate}/s | {leg} | {:.1} ms | {:.1} ms | {:.1} ms |",
                percentile(v, 0.5),
                percentile(v, 0.99),
                v.last().unwrap()
            );
        }
    }

    // Where a slow delivery can come from: the first consumer's commits
    // (store write and ack) during each phase, by duration, from its
    // chatbus_consumer_commit_seconds histogram.
    println!(
        "\n| offered rate | consumer 1's commits | over 50 ms | over 100 ms | over 250 ms | over 500 ms |\n| ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for (rate, before, after) in &commits {
        let in_phase = |le: Option<&str>| {
            commits_within(after.as_deref(), le) - commits_within(before.as_deref(), le)
        };
        let total = in_phase(None);
        let over = |le: &str| total - in_phase(Some(le));
        println!(
            "| {rate}/s | {total:.0} | {:.0} | {:.0} | {:.0} | {:.0} |",
            over("0.05"),
            over("0.1"),
            over("0.25"),
            over("0.5")
        );
    }

    println!("\n| process | peak RSS | CPU s |\n| --- | ---: | ---: |");
    let (rss, cpu) = process_stats(stack.ingestor.pid().unwrap());
    println!("| ingestor | {rss:.0} MiB | {cpu:.1} |");
    for (i, service) in stack.consumers().enumerate() {
        let (rss, cpu) = process_stats(service.pid().unwrap());
        println!("| consumer {} | {rss:.0} MiB | {cpu:.1} |", i + 1);
    }
    stack.stop().await;
    if let Some(database) = database {
        database.drop_now().await;
    }
}
