//! Flood benchmark: the fake Twitch IRC server sends PRIVMSGs taken from the
//! real corpus as fast as it can to the ingestor binary, which publishes
//! them with confirms into a durable queue on the local RabbitMQ.
//!
//! ```sh
//! cargo bench -p ingestor --bench flood -- --channels 10 --messages 500000
//! cargo bench -p ingestor --bench flood -- --channels 1000 --messages 500000
//! ```
//!
//! The fake server sends as fast as the ingestor takes lines, keeping at
//! most `--window` (default 20,000) sent and not yet confirmed. An unbounded
//! flood measures twitch-irc's PING timeout instead: it pings every 30 s and
//! drops a connection whose PONG is 5 s late, and the PONG queues behind
//! every line already sent (with 1,000 channels, 450 channels' connections
//! were dropped and rejoined mid-flood, losing the lines in flight).
//!
//! Reports confirmed messages per second (first line sent -> last message
//! in the durable queue, read with a passive declare), the ingestor's peak RSS (VmHWM)
//! and CPU seconds (utime + stime), and checks the queue really holds every
//! message.
//!
//! The broker's ceiling: a bare lapin publisher (one channel, no outbox,
//! no spool, no IRC) sends the same payloads (the ChatEvent JSON the
//! ingestor publishes, with the same routing keys and properties) into a
//! fresh durable queue with pipelined confirms, as many unconfirmed as the
//! ingestor allows (`PUBLISH_MAX_IN_FLIGHT`, default 2,048). It runs once
//! before and once after the ingestor, and the ingestor's rate is reported
//! as a share of their mean: the broker's rate drifts between runs (it
//! ranged from 9,238 to 12,410 msg/s in one day on the same machine), and one ceiling
//! run next to one ingestor run decided too much. Before each of the three
//! runs the benchmark waits until RabbitMQ is idle: deleting the previous
//! run's queue of 500,000 persistent messages keeps it busy for a while.

use std::time::{Duration, Instant};

use common::amqp::{Subscriber, Topology};
use testkit::fake_irc::FakeIrc;
use testkit::rabbit::{self, unique};

/// A durable queue bound to `chat.#` on a fresh topology; nobody consumes
/// it during the run.
async fn bench_queue(conn: &lapin::Connection, prefix: &str) -> (Topology, String) {
    let topology = Topology::named(&unique(prefix));
    let queue = unique(&format!("{prefix}-q"));
    drop(
        Subscriber::builder(&queue)
            .bind("chat.#")
            .expires(Duration::from_secs(3600))
            .build(conn, &topology)
            .await
            .unwrap(),
    );
    (topology, queue)
}

async fn delete_bench_queue(conn: &lapin::Connection, topology: &Topology, queue: &str) {
    rabbit::delete_topology(conn, topology).await;
    let ch = conn.create_channel().await.unwrap();
    let _ = ch
        .queue_delete(queue.into(), lapin::options::QueueDeleteOptions::default())
        .await;
}

async fn metric(port: u16, name: &str) -> f64 {
    testkit::metrics::scrape(format!("127.0.0.1:{port}"), name).await
}

#[tokio::main]
async fn main() {
    let n_channels: usize = testkit::cli_arg("--channels", 10);
    let n_messages: usize = testkit::cli_arg("--messages", 500_000);
    let window: f64 = testkit::cli_arg("--window", 20_000.0);
    let fake = FakeIrc::start().await;
    let conn = rabbit::connect("bench-setup").await;
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let channels: Vec<String> = (0..n_channels).map(|i| format!("b{tag}_{i}")).collect();
    eprintln!("generating {n_messages} lines...");
    let lines = testkit::corpus::flood_privmsgs(&channels, n_messages, "bench");

    let payloads = ingestor_payloads(&lines);
    broker_idle().await;
    let ceiling_before = bare_lapin_ceiling(&conn, &payloads).await;
    broker_idle().await;

    let (topology, queue) = bench_queue(&conn, "bench-flood").await;
    let spool = tempfile::tempdir().unwrap();
    let port = testkit::free_port();

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingestor"))
        .env_clear()
        // twitch-irc logs an error for every corpus line its typed parser
        // rejects (old lines without badge-info); chatbus parses them fine.
        .env("RUST_LOG", "warn,twitch_irc=off")
        .env("AMQP_URL", rabbit::amqp_url())
        .env("CHAT_EXCHANGE", &topology.exchange)
        .env("INGESTOR_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("TWITCH_IRC_ADDR", fake.addr().to_string())
        .env("TWITCH_IRC_TLS", "false")
        .env("TWITCH_CHANNELS", channels.join(","))
        // A verified bot's JOIN limit, so 1,000 channels join in seconds.
        .env("TWITCH_JOIN_LIMIT", "2000")
        .env("TWITCH_JOIN_WINDOW", "10s")
        .env("SPOOL_DIR", spool.path().join("spool"))
        .current_dir(spool.path())
        // Tuning under test, passed through when set.
        .envs(testkit::ingestor_tuning_env())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the ingestor (build it first: cargo bench builds it)");
    let pid = child.id().unwrap();

    let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
    fake.wait_joined(&refs, 300).await;
    let roomstates = channels.len() as f64;
    testkit::within(60, "ROOMSTATEs confirmed", async {
        while metric(port, "chatbus_ingestor_events_confirmed_total").await < roomstates {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;

    let bytes: usize = lines.iter().map(|l| l.len() + 2).sum();
    let (rss_before, cpu_before) = testkit::metrics::process_stats(pid);
    eprintln!(
        "flooding {} lines ({:.0} MB) over {} channels...",
        lines.len(),
        bytes as f64 / 1e6,
        channels.len()
    );
    // Progress is read from the queue itself (a passive declare on the
    // broker), not from the ingestor's /metrics: with 1,000 channels each
    // scrape renders thousands of series, CPU the ingestor would be charged.
    let probe = conn.create_channel().await.unwrap();
    let in_durable_queue = || async { f64::from(rabbit::queue_depth(&probe, &queue).await) };
    let no_disconnects = || async {
        let disconnects = metric(port, "chatbus_ingestor_irc_disconnects_total").await;
        assert!(
            disconnects == 0.0,
            "{disconnects} IRC disconnects during the flood: lines were lost; try a smaller --window"
        );
    };
    let start = Instant::now();
    let mut sent = 0;
    let mut polls = 0u64;
    for chunk in lines.chunks(2_000) {
        // At most --window lines sent and not yet confirmed: twitch-irc
        // pings every 30 s and drops a connection whose PONG is 5 s late,
        // and the fake's PONG queues behind every line already sent.
        while sent as f64 + roomstates - in_durable_queue().await > window {
            polls += 1;
            if polls.is_multiple_of(50) {
                no_disconnects().await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        sent += fake.send_lines(chunk);
    }
    let sent_at = start.elapsed();

    assert_eq!(sent, lines.len(), "every line reached a connection");
    let want = roomstates + lines.len() as f64;
    let in_queue = loop {
        let queued = in_durable_queue().await;
        if queued >= want {
            break queued;
        }
        polls += 1;
        if polls.is_multiple_of(50) {
            no_disconnects().await;
        }
        if start.elapsed() > Duration::from_secs(1800) {
            panic!("only {queued} of {want} in the queue after 30 min");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = start.elapsed();
    no_disconnects().await;
    // The queue can hold the last message a moment before its confirm
    // reaches the ingestor and is counted.
    testkit::eventually(30, "the ingestor counting every confirm", || async {
        (metric(port, "chatbus_ingestor_events_confirmed_total").await >= want).then_some(())
    })
    .await;
    let (rss_mib, cpu_after) = testkit::metrics::process_stats(pid);
    let dropped = metric(port, "chatbus_ingestor_events_dropped_total").await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    delete_bench_queue(&conn, &topology, &queue).await;

    let rate = lines.len() as f64 / elapsed.as_secs_f64();
    broker_idle().await;
    let ceiling_after = bare_lapin_ceiling(&conn, &payloads).await;
    let ceiling = f64::midpoint(ceiling_before, ceiling_after);
    println!();
    println!(
        "| channels | messages | sent in | all confirmed in | confirmed msg/s | peak RSS | CPU s (ingestor) | in queue | dropped |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {} | {} | {:.1} s | {:.1} s | {:.0} | {:.0} MiB | {:.1} | {} | {} |",
        channels.len(),
        lines.len(),
        sent_at.as_secs_f64(),
        elapsed.as_secs_f64(),
        rate,
        rss_mib,
        cpu_after - cpu_before,
        in_queue,
        dropped,
    );
    println!();
    println!(
        "| bare lapin publisher (same payloads) | before | after | mean | ingestor's share of the mean |"
    );
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| 1 channel, {} confirms in flight | {:.0} | {:.0} | {:.0} | {:.0} % |",
        in_flight_max(),
        ceiling_before,
        ceiling_after,
        ceiling,
        100.0 * rate / ceiling
    );
    eprintln!("(RSS before the flood: {rss_before:.0} MiB)");
}

/// Waits (at most a minute) until the local RabbitMQ nodes (every
/// `beam.smp`) use under 10 % of a core over a second.
async fn broker_idle() {
    let beam_cpu = || -> f64 {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter(|pid| {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "beam.smp")
            })
            .map(|pid| testkit::metrics::process_stats(pid).1)
            .sum()
    };
    let started = Instant::now();
    let mut before = beam_cpu();
    while started.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = beam_cpu();
        if now - before < 0.1 {
            eprintln!(
                "RabbitMQ idle after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            return;
        }
        before = now;
    }
    eprintln!("RabbitMQ still busy after 60 s; measuring anyway");
}

/// What the ingestor publishes for `lines`, as it is configured in this
/// bench (its defaults: the raw line included in each event).
fn ingestor_payloads(lines: &[String]) -> Vec<common::amqp::OutgoingMessage> {
    use ingestor::twitch::normalise::{Normalised, Normaliser};

    let normaliser = Normaliser::new(ingestor::Config::default().ingest_include_raw);
    let now = chrono::Utc::now();
    let messages: Vec<_> = lines
        .iter()
        .filter_map(|line| {
            let msg = twitch_irc::message::IRCMessage::parse(line).ok()?;
            match normaliser.normalise(&msg, now).ok()? {
                Normalised::Event(event) => common::amqp::OutgoingMessage::from_event(&event).ok(),
                _ => None,
            }
        })
        .collect();
    assert_eq!(messages.len(), lines.len(), "every flood line normalises");
    messages
}

/// Confirmed messages per second of a bare lapin publisher sending
/// `messages` into a fresh durable queue.
async fn bare_lapin_ceiling(
    conn: &lapin::Connection,
    messages: &[common::amqp::OutgoingMessage],
) -> f64 {
    use futures::stream::{FuturesOrdered, StreamExt};
    use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};

    let in_flight_max = in_flight_max();
    let (topology, queue) = bench_queue(conn, "bench-ceiling").await;
    let exchange = &topology.exchange;
    let channel = conn.create_channel().await.unwrap();
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .unwrap();
    eprintln!("bare lapin publisher: {} messages...", messages.len());
    let start = Instant::now();
    let mut in_flight = FuturesOrdered::new();
    for m in messages {
        let confirm = channel
            .basic_publish(
                exchange.as_str().into(),
                m.routing_key.as_str().into(),
                BasicPublishOptions::default(),
                &m.body,
                m.properties(ingestor::publisher::APP_ID).unwrap(),
            )
            .await
            .unwrap();
        in_flight.push_back(confirm);
        while in_flight.len() >= in_flight_max {
            let ack = in_flight.next().await.unwrap().unwrap();
            assert!(ack.is_ack(), "broker nacked");
        }
    }
    while let Some(ack) = in_flight.next().await {
        assert!(ack.unwrap().is_ack(), "broker nacked");
    }
    let elapsed = start.elapsed();
    // Every confirmed message is in the queue.
    let in_queue = rabbit::queue_depth(&channel, &queue).await as usize;
    delete_bench_queue(conn, &topology, &queue).await;
    assert_eq!(
        in_queue,
        messages.len(),
        "the ceiling queue holds every message"
    );
    messages.len() as f64 / elapsed.as_secs_f64()
}

/// The ingestor's `PUBLISH_MAX_IN_FLIGHT` (its default unless set).
fn in_flight_max() -> usize {
    std::env::var("PUBLISH_MAX_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| ingestor::Config::default().publish_max_in_flight)
}
