//! Flood benchmark: the fake Twitch IRC server sends PRIVMSGs taken from the
//! real corpus as fast as the ingestor takes them to the ingestor binary,
//! which publishes them with confirms into a durable queue on the local
//! RabbitMQ.
//!
//! ```sh
//! cargo bench -p ingestor --bench flood -- --channels 10 --messages 200000
//! cargo bench -p ingestor --bench flood -- --channels 1000 --messages 200000
//! cargo bench -p ingestor --bench flood -- --channels 10 --rate 1000 --seconds 20
//! # against the 3-node cluster of scripts/rabbitmq-cluster.sh, quorum queues
//! cargo bench -p ingestor --bench flood -- --channels 10 --messages 200000 --cluster
//! ```
//!
//! **`--cluster`**: the ingestor gets all three nodes (`AMQP_URL` as a
//! comma list; it connects to node 1), the queues are quorum queues (so a
//! confirm means the message is on a majority of nodes), and the ceiling
//! publisher sends to node 1 as well. The cluster is started if it is not
//! running.
//!
//! **Flood** (the default): the fake keeps at most `--window` (20,000)
//! lines sent and not yet in the queue. Reports confirmed messages per
//! second (first line sent to last message in the durable queue, read with
//! a passive declare), the ingestor's CPU per message (utime + stime over
//! the flood), its system calls per message (`perf stat` on the syscall
//! tracepoints, when perf is installed) and its peak RSS (VmHWM), and
//! checks the queue holds every message.
//!
//! **The broker's ceiling** is measured by code that is not under test:
//! `testkit/ceiling/publish.mjs`, a bare amqplib (Node.js) publisher with
//! confirms, sending the ingestor's own payloads (its JSON, routing keys
//! and properties, pre-built) into a fresh durable queue with as many
//! confirms in flight as the ingestor (`PUBLISH_MAX_IN_FLIGHT`). It runs
//! once before and once after the ingestor, each after RabbitMQ has gone
//! idle, and the ingestor's rate is reported as a share of their mean.
//!
//! **Latency** (`--rate N`): the fake sends N lines a second for
//! `--seconds`, each carrying its send time; a consumer on the queue
//! measures fake-write to delivery (so it includes the broker's delivery
//! to a consumer, on top of IRC -> queue).

use std::time::{Duration, Instant};

use common::amqp::{QueueType, Subscriber, Topology};
use testkit::fake_irc::FakeIrc;
use testkit::rabbit::{self, unique};

/// Where the bench publishes: the main broker, or the 3-node cluster.
struct Broker {
    /// Node the setup connection and the ceiling publisher use.
    url: String,
    /// The ingestor's `AMQP_URL` (every node of a cluster).
    ingestor_url: String,
    queue_type: QueueType,
}

fn broker() -> &'static Broker {
    static BROKER: std::sync::OnceLock<Broker> = std::sync::OnceLock::new();
    BROKER.get_or_init(|| {
        if std::env::args().any(|a| a == "--cluster") {
            let cluster = testkit::cluster::Cluster::ensure();
            Broker {
                url: testkit::cluster::Cluster::node_url(1),
                ingestor_url: cluster.urls(),
                queue_type: QueueType::Quorum,
            }
        } else {
            Broker {
                url: rabbit::amqp_url(),
                ingestor_url: rabbit::amqp_url(),
                queue_type: QueueType::Classic,
            }
        }
    })
}

/// A durable queue bound to `chat.#` on a fresh topology (a quorum queue
/// on the cluster); nobody consumes it during the run.
async fn bench_queue(conn: &lapin::Connection, prefix: &str) -> (Topology, String) {
    let mut topology = Topology::named(&unique(prefix));
    topology.replicated = broker().queue_type == QueueType::Quorum;
    let queue = unique(&format!("{prefix}-q"));
    drop(
        Subscriber::builder(&queue)
            .bind("chat.#")
            .queue_type(broker().queue_type)
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
    let rate: f64 = testkit::cli_arg("--rate", 0.0);
    if rate > 0.0 {
        latency(n_channels, rate, testkit::cli_arg("--seconds", 20.0)).await;
    } else {
        flood(n_channels, testkit::cli_arg("--messages", 200_000)).await;
    }
}

/// Starts the ingestor binary against `fake`, publishing to `exchange`.
fn spawn_ingestor(
    fake: &FakeIrc,
    exchange: &str,
    channels: &[String],
    spool: &std::path::Path,
    port: u16,
) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_ingestor"))
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("AMQP_URL", &broker().ingestor_url)
        .env("CHAT_EXCHANGE", exchange)
        .env("INGESTOR_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("TWITCH_IRC_ADDR", fake.addr().to_string())
        .env("TWITCH_IRC_TLS", "false")
        .env("TWITCH_CHANNELS", channels.join(","))
        .env("TWITCH_MAX_CHANNELS", "100000")
        // A verified bot's JOIN limit, so 1,000 channels join in seconds.
        .env("TWITCH_JOIN_LIMIT", "2000")
        .env("TWITCH_JOIN_WINDOW", "10s")
        .env("SPOOL_DIR", spool.join("spool"))
        .current_dir(spool)
        // Tuning under test, passed through when set.
        .envs(testkit::ingestor_tuning_env())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the ingestor (build it first: cargo bench builds it)")
}

async fn flood(n_channels: usize, n_messages: usize) {
    let window: f64 = testkit::cli_arg("--window", 20_000.0);
    let fake = FakeIrc::start().await;
    let conn = rabbit::connect_to(&broker().url, "bench-setup").await;
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let channels: Vec<String> = (0..n_channels).map(|i| format!("b{tag}_{i}")).collect();
    eprintln!("generating {n_messages} lines...");
    let lines = testkit::corpus::flood_privmsgs(&channels, n_messages, "bench");

    let payloads = ingestor_payloads(&lines);
    let sample = &payloads[..payloads.len().min(5_000)];
    broker_idle().await;
    let ceiling_before = node_ceiling(&conn, sample, n_messages).await;
    broker_idle().await;

    let (topology, queue) = bench_queue(&conn, "bench-flood").await;
    let spool = tempfile::tempdir().unwrap();
    let port = testkit::free_port();
    let mut child = spawn_ingestor(&fake, &topology.exchange, &channels, spool.path(), port);
    let pid = child.id().unwrap();

    let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
    fake.wait_joined(&refs, 600).await;
    let roomstates = channels.len() as f64;
    testkit::within(120, "ROOMSTATEs confirmed", async {
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
    let perf = testkit::perf::SyscallCounter::attach(pid);
    let start = Instant::now();
    let mut sent = 0;
    for chunk in lines.chunks(2_000) {
        while sent as f64 + roomstates - in_durable_queue().await > window {
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
        if start.elapsed() > Duration::from_secs(1800) {
            panic!("only {queued} of {want} in the queue after 30 min");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let elapsed = start.elapsed();
    let syscalls = perf
        .map(testkit::perf::SyscallCounter::stop)
        .unwrap_or_default();
    let (_, cpu_after) = testkit::metrics::process_stats(pid);
    // The queue can hold the last message a moment before its confirm
    // reaches the ingestor and is counted.
    testkit::eventually(30, "the ingestor counting every confirm", || async {
        (metric(port, "chatbus_ingestor_events_confirmed_total").await >= want).then_some(())
    })
    .await;
    let disconnects = metric(port, "chatbus_ingestor_irc_disconnects_total").await;
    let (rss_mib, _) = testkit::metrics::process_stats(pid);
    let dropped = metric(port, "chatbus_ingestor_events_dropped_total").await;
    child.start_kill().unwrap();
    let _ = child.wait().await;
    delete_bench_queue(&conn, &topology, &queue).await;

    let rate = lines.len() as f64 / elapsed.as_secs_f64();
    broker_idle().await;
    let ceiling_after = node_ceiling(&conn, sample, n_messages).await;
    let ceiling = f64::midpoint(ceiling_before.rate, ceiling_after.rate);
    let n = lines.len() as f64;
    let cpu_us = (cpu_after - cpu_before) * 1e6 / n;
    let per = |name: &str| syscalls.get(name).copied().unwrap_or(0) as f64 / n;
    let hot = ["sendto", "write", "writev", "futex"]
        .iter()
        .map(|s| per(s))
        .sum::<f64>();
    println!();
    println!(
        "| channels | messages | mean body | confirmed msg/s | ceiling before / after (mean) | share | CPU per msg | ceiling's CPU per msg | syscalls per msg (sendto + write + writev + futex) | peak RSS | in queue / dropped / IRC drops |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {} | {} | {:.0} B | **{:.0}** | {:.0} / {:.0} ({:.0}) | **{:.0} %** | **{:.1} µs** | {:.1} µs | **{:.3}** ({:.3} + {:.3} + {:.3} + {:.3}) | {:.0} MiB | {} / {} / {} |",
        channels.len(),
        lines.len(),
        testkit::ceiling::mean_body_bytes(&payloads),
        rate,
        ceiling_before.rate,
        ceiling_after.rate,
        ceiling,
        100.0 * rate / ceiling,
        cpu_us,
        f64::midpoint(
            ceiling_before.cpu_us_per_message,
            ceiling_after.cpu_us_per_message
        ),
        hot,
        per("sendto"),
        per("write"),
        per("writev"),
        per("futex"),
        rss_mib,
        in_queue,
        dropped,
        disconnects,
    );
    eprintln!(
        "(sent in {:.1} s, all confirmed in {:.1} s; RSS before the flood {rss_before:.0} MiB; other syscalls per msg: read {:.3}, recvfrom {:.3}, epoll_wait {:.3})",
        sent_at.as_secs_f64(),
        elapsed.as_secs_f64(),
        per("read"),
        per("recvfrom"),
        per("epoll_wait"),
    );
}

/// Sends `rate` lines a second for `seconds`, each with its send time in
/// its text, and measures send -> delivery from the queue.
async fn latency(n_channels: usize, rate: f64, seconds: f64) {
    let fake = std::sync::Arc::new(FakeIrc::start().await);
    let conn = rabbit::connect("bench-setup").await;
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let channels: Vec<String> = (0..n_channels).map(|i| format!("l{tag}_{i}")).collect();
    let topology = Topology::named(&unique("bench-latency"));
    let mut sub = Subscriber::builder(unique("bench-latency-q"))
        .bind("chat.#")
        .prefetch(1000)
        .auto_delete(true)
        .durable(false)
        .build(&conn, &topology)
        .await
        .unwrap();
    let spool = tempfile::tempdir().unwrap();
    let port = testkit::free_port();
    let mut child = spawn_ingestor(&fake, &topology.exchange, &channels, spool.path(), port);
    let pid = child.id().unwrap();
    let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
    fake.wait_joined(&refs, 600).await;
    // Skip the ROOMSTATEs.
    for _ in 0..channels.len() {
        let d = sub.next().await.unwrap().unwrap();
        d.ack().await.unwrap();
    }
    let total = (rate * seconds) as usize;
    let epoch = Instant::now();
    let (_, cpu_before) = testkit::metrics::process_stats(pid);
    let sender = {
        let fake = fake.clone();
        let channels = channels.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sent = 0usize;
            while sent < total {
                tick.tick().await;
                let due = ((epoch.elapsed().as_secs_f64() * rate) as usize).min(total);
                let lines: Vec<String> = (sent..due)
                    .map(|i| {
                        let ch = &channels[i % channels.len()];
                        let at = epoch.elapsed().as_nanos();
                        format!(
                            "@badge-info=;badges=;color=#1E90FF;display-name=U;emotes=;id=lat-{i};mod=0;room-id=1;subscriber=0;tmi-sent-ts=1594556065407;turbo=0;user-id=7;user-type= :u!u@u.tmi.twitch.tv PRIVMSG #{ch} :t={at}"
                        )
                    })
                    .collect();
                fake.send_lines(&lines);
                sent = due;
            }
        })
    };
    let mut latencies = Vec::with_capacity(total);
    testkit::within(
        (seconds as u64) * 3 + 60,
        "every message delivered",
        async {
            while latencies.len() < total {
                let d = sub.next().await.unwrap().unwrap();
                let now = epoch.elapsed().as_nanos();
                if let Some(at) = d
                    .event
                    .text
                    .as_deref()
                    .and_then(|t| t.strip_prefix("t="))
                    .and_then(|t| t.parse::<u128>().ok())
                {
                    latencies.push((now - at) as f64 / 1e6);
                }
                d.ack().await.unwrap();
            }
        },
    )
    .await;
    sender.await.unwrap();
    let (rss, cpu_after) = testkit::metrics::process_stats(pid);
    child.start_kill().unwrap();
    let _ = child.wait().await;
    rabbit::delete_topology(&conn, &topology).await;
    latencies.sort_by(f64::total_cmp);
    let q = |p: f64| testkit::metrics::percentile(&latencies, p);
    println!();
    println!(
        "| channels | rate | messages | IRC -> consumer p50 / p90 / p99 / max | ingestor CPU per msg | peak RSS |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {} | {:.0} msg/s | {} | {:.2} / {:.2} / **{:.2}** / {:.2} ms | {:.1} µs | {:.0} MiB |",
        channels.len(),
        rate,
        latencies.len(),
        q(0.5),
        q(0.9),
        q(0.99),
        latencies[latencies.len() - 1],
        (cpu_after - cpu_before) * 1e6 / total as f64,
        rss,
    );
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
    use ingestor::platforms::twitch::normalise::{Normalised, Normaliser};

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

/// The broker's ceiling: the Node.js amqplib publisher sends `count`
/// messages cycling through `messages` into a fresh durable queue.
async fn node_ceiling(
    conn: &lapin::Connection,
    messages: &[common::amqp::OutgoingMessage],
    count: usize,
) -> testkit::ceiling::Ceiling {
    let (topology, queue) = bench_queue(conn, "bench-ceiling").await;
    eprintln!("amqplib ceiling publisher: {count} messages...");
    let ceiling = testkit::ceiling::run(
        &broker().url,
        &topology.exchange,
        messages,
        count,
        in_flight_max(),
    )
    .await;
    let channel = conn.create_channel().await.unwrap();
    let in_queue = rabbit::queue_depth(&channel, &queue).await as usize;
    delete_bench_queue(conn, &topology, &queue).await;
    assert_eq!(in_queue, count, "the ceiling queue holds every message");
    eprintln!(
        "ceiling: {:.0} msg/s, {:.1} µs CPU per message",
        ceiling.rate, ceiling.cpu_us_per_message
    );
    ceiling
}

/// The ingestor's `PUBLISH_MAX_IN_FLIGHT` (its default unless set).
fn in_flight_max() -> usize {
    std::env::var("PUBLISH_MAX_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| ingestor::Config::default().publish_max_in_flight)
}
