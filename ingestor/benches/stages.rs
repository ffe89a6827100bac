//! Where the ingestor's CPU goes per message, stage by stage, in one
//! process: parse (twitch-irc), normalise, encode (JSON + AMQP
//! properties) and the spool record, timed in memory (the spool writes to
//! a temporary directory); then the publish: every message through
//! common's batch publisher (over lapin) into a durable queue on the local
//! RabbitMQ with confirms, on a runtime shaped like the ingestor's (its
//! default worker threads and `PUBLISH_MAX_IN_FLIGHT`), timed as the
//! process's CPU (user + system: lapin's I/O thread and the kernel's
//! socket work count).
//!
//! ```sh
//! cargo bench -p ingestor --bench stages
//! ```

use std::time::{Duration, Instant};

use common::amqp::OutgoingMessage;
use ingestor::platforms::twitch::normalise::{Normalised, Normaliser};
use twitch_irc::message::IRCMessage;

/// The ingestor binary's allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let n: usize = testkit::cli_arg("--messages", 200_000);
    let channels: Vec<String> = (0..10).map(|i| format!("stage_{i}")).collect();
    let lines = testkit::corpus::flood_privmsgs(&channels, n, "stage");
    let normaliser = Normaliser::new(true);
    let now = chrono::Utc::now();

    let dir = tempfile::tempdir().unwrap();
    let (mut spool, _) = ingestor::spool::Spool::open(dir.path(), 1 << 40, 1 << 30).unwrap();
    let mut parse = Duration::ZERO;
    let mut normalise = Duration::ZERO;
    let mut encode = Duration::ZERO;
    let mut properties = Duration::ZERO;
    let mut spool_append = Duration::ZERO;
    let mut seq = 0u64;
    // Batches of 100, as one busy socket read carries: each stage's data
    // is still in cache for the next, as in the ingestor.
    for chunk in lines.chunks(100) {
        let t = Instant::now();
        let parsed: Vec<IRCMessage> = chunk
            .iter()
            .map(|l| IRCMessage::parse(l).unwrap())
            .collect();
        parse += t.elapsed();

        let t = Instant::now();
        let events: Vec<_> = parsed
            .iter()
            .zip(chunk)
            .map(
                |(m, l)| match normaliser.normalise_line(l, m, now).unwrap() {
                    Normalised::Event(e) => *e,
                    _ => unreachable!(),
                },
            )
            .collect();
        normalise += t.elapsed();

        let t = Instant::now();
        let messages: Vec<OutgoingMessage> = events
            .iter()
            .map(|e| OutgoingMessage::from_event(e).unwrap())
            .collect();
        encode += t.elapsed();

        let t = Instant::now();
        for m in &messages {
            std::hint::black_box(m.properties("chatbus-ingestor").unwrap());
        }
        properties += t.elapsed();

        let t = Instant::now();
        let records: Vec<(u64, &OutgoingMessage)> = messages
            .iter()
            .map(|m| {
                seq += 1;
                (seq, m)
            })
            .collect();
        spool.append(&records).unwrap();
        spool_append += t.elapsed();
    }

    // The publish itself: see the module docs.
    let defaults = ingestor::Config::default();
    let rt = ingestor::runtime(&defaults).unwrap();
    let (publish_cpu, publish_rate) = rt.block_on(async {
        use common::amqp::{Publisher, Subscriber, Topology};
        let conn = testkit::rabbit::connect("bench-stages").await;
        let topology = Topology::named(&testkit::rabbit::unique("bench-stages"));
        let queue = testkit::rabbit::unique("bench-stages-q");
        Subscriber::builder(&queue)
            .bind("chat.#")
            .expires(std::time::Duration::from_secs(600))
            .build(&conn, &topology)
            .await
            .unwrap()
            .close()
            .await;
        let publisher = Publisher::open(&conn, &topology, "chatbus-ingestor")
            .await
            .unwrap();
        let messages: Vec<OutgoingMessage> = lines
            .iter()
            .map(|l| {
                let m = IRCMessage::parse(l).unwrap();
                match normaliser.normalise_line(l, &m, now).unwrap() {
                    Normalised::Event(e) => OutgoingMessage::from_event(&e).unwrap(),
                    _ => unreachable!(),
                }
            })
            .collect();
        if let Ok(pause) = std::env::var("STAGES_PAUSE_BEFORE_PUBLISH") {
            // Time to attach a profiler to the publish alone.
            eprintln!("publishing in {pause} s (pid {})", std::process::id());
            tokio::time::sleep(std::time::Duration::from_secs(pause.parse().unwrap())).await;
        }
        let (_, cpu0) = testkit::metrics::process_stats(std::process::id());
        let t = Instant::now();
        let outcomes = publisher
            .publish_batch(&messages, defaults.publish_max_in_flight)
            .await;
        let wall = t.elapsed();
        let (_, cpu1) = testkit::metrics::process_stats(std::process::id());
        assert!(outcomes.iter().all(Result::is_ok));
        testkit::rabbit::delete_topology(&conn, &topology).await;
        let ch = conn.create_channel().await.unwrap();
        let _ = ch
            .queue_delete(
                queue.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
        (cpu1 - cpu0, messages.len() as f64 / wall.as_secs_f64())
    });

    let per = |d: std::time::Duration| d.as_secs_f64() * 1e6 / n as f64;
    println!("| stage | µs per message |");
    println!("| --- | ---: |");
    println!("| parse (twitch-irc IRCMessage) | {:.2} |", per(parse));
    println!("| normalise to ChatEvent | {:.2} |", per(normalise));
    println!("| encode JSON body | {:.2} |", per(encode));
    println!("| AMQP properties | {:.2} |", per(properties));
    println!(
        "| spool append (100 per write) | {:.2} |",
        per(spool_append)
    );
    println!(
        "| total before publishing | {:.2} |",
        per(parse + normalise + encode + properties + spool_append)
    );
    println!(
        "| publish with confirms (common's batch publisher over lapin, {} worker thread(s), {} in flight), process CPU, {publish_rate:.0} msg/s | {:.2} |",
        defaults.ingestor_worker_threads,
        defaults.publish_max_in_flight,
        publish_cpu * 1e6 / n as f64
    );
}
