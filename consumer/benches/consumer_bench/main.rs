//! Benchmarks of the consumer, against the real RabbitMQ and a real SQLite
//! file or PostgreSQL database (figures in docs/benchmarks.md):
//!
//! ```sh
//! # store throughput: events committed and acked per second
//! cargo bench -p consumer --bench consumer_bench -- store --events 500000
//! cargo bench -p consumer --bench consumer_bench -- store --events 500000 --postgres
//! # REST history latency on 5 million events (see history.rs)
//! cargo bench -p consumer --bench consumer_bench -- history --events 5000000 --postgres
//! # WebSocket fan-out: N clients on one channel, events at a fixed rate
//! cargo bench -p consumer --bench consumer_bench -- fanout --clients 1000 --rate 100 --seconds 30
//! # slow clients: N clients that never read while M events of ~4 KB flow
//! cargo bench -p consumer --bench consumer_bench -- slow --clients 200 --events 15000 --size 4000
//! # a purge of 1 million rows while ingesting 1,000 events/s (see purge.rs)
//! cargo bench -p consumer --bench consumer_bench -- purge
//! ```
//!
//! `store` first writes the events into the store alone (`write_batch`,
//! no broker), then pre-loads two queues with them: a bare amqplib
//! consumer drains one (the broker's delivery ceiling, measured by code
//! that is not under test), then the consumer starts in-process on the
//! other and is timed from start until every event is committed and acked.
//! `fanout` runs the consumer binary as a child process (so its memory can
//! be measured on its own), connects the clients from this process,
//! publishes at the given rate with the publish time in each message, and
//! measures publish-to-client latency. `slow` runs the binary the same
//! way, connects clients that subscribe and then stop reading, publishes
//! as fast as the broker confirms, and reports the consumer's peak memory
//! (VmHWM) and open file descriptors, then lets the clients read and counts
//! how many were closed with 4000.

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use common::amqp::{OutgoingMessage, Publisher, Topology};
use futures::StreamExt;
use lapin::options::QueueDeleteOptions;
use testkit::events;
use testkit::pg::StoreDb;
use testkit::process::{Echo, ServiceProcess};

mod history;
mod purge;
mod raw_client;
use testkit::rabbit::{self, test_topology, unique};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_util::sync::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "chatbus consumer benchmarks")]
struct Args {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Subcommand, Debug)]
enum Bench {
    /// Store throughput: events committed and acked per second.
    Store {
        /// Events to pre-load and consume.
        #[arg(long, default_value_t = 500_000)]
        events: usize,
        /// CONSUMER_BATCH_SIZE (the consumer's default).
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
        /// CONSUMER_PREFETCH (the consumer's default).
        #[arg(long, default_value_t = 2000)]
        prefetch: u16,
        /// Only the store alone (no broker).
        #[arg(long)]
        alone: bool,
        /// PostgreSQL (a fresh database on CHATBUS_TEST_PG_URL's server,
        /// dropped afterwards) instead of SQLite.
        #[arg(long)]
        postgres: bool,
    },
    /// REST history: query latency on a large table (loaded first).
    History(history::HistoryArgs),
    /// A purge of a million rows while ingesting: ingest latency and stalls.
    Purge(purge::PurgeArgs),
    /// WebSocket fan-out: clients on one channel, events at a fixed rate.
    Fanout {
        /// WebSocket clients subscribed to the channel.
        #[arg(long, default_value_t = 1000)]
        clients: usize,
        /// Events per second published to the channel.
        #[arg(long, default_value_t = 100)]
        rate: u32,
        /// How long to publish.
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        /// CONSUMER_BATCH_WAIT of the consumer (how long a batch may wait
        /// to fill; also how many events reach a client per write).
        #[arg(long, default_value = "20ms")]
        batch_wait: String,
        /// The WebSocket client the benchmark runs.
        #[arg(long, value_enum, default_value_t = ClientKind::Raw)]
        client: ClientKind,
    },
    /// Slow clients: clients that never read while events flow; the
    /// consumer's peak memory and descriptors.
    Slow {
        /// WebSocket clients that subscribe and then stop reading.
        #[arg(long, default_value_t = 200)]
        clients: usize,
        /// Events published to their channel.
        #[arg(long, default_value_t = 15_000)]
        events: usize,
        /// Bytes of text per event.
        #[arg(long, default_value_t = 4000)]
        size: usize,
        /// CONSUMER_WS_SEND_QUEUE_BYTES of the consumer (unset: its
        /// default).
        #[arg(long)]
        send_queue_bytes: Option<usize>,
    },
}

fn main() -> anyhow::Result<()> {
    // `cargo bench` appends `--bench`; it is not ours.
    let args = Args::parse_from(std::env::args().filter(|a| a != "--bench"));
    // The purge bench reads the purge's debug log lines.
    let phases = if matches!(args.bench, Bench::Purge(_)) {
        Some(purge::init_logging())
    } else {
        testkit::init_logging();
        None
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match args.bench {
            Bench::Store {
                events,
                batch_size,
                prefetch,
                alone,
                postgres,
            } => store(events, batch_size, prefetch, alone, postgres).await,
            Bench::History(args) => history::run(args).await,
            Bench::Purge(args) => purge::run(args, phases.unwrap_or_default()).await,
            Bench::Fanout {
                clients,
                rate,
                seconds,
                batch_wait,
                client,
            } => fanout(clients, rate, seconds, &batch_wait, client).await,
            Bench::Slow {
                clients,
                events,
                size,
                send_queue_bytes,
            } => slow(clients, events, size, send_queue_bytes).await,
        }
    })
}

/// The store alone, no broker: `n` events written with `write_batch` in
/// batches of `batch_size`, into a fresh database at `url`. Returns
/// events per second.
async fn store_alone(url: &str, n: usize, batch_size: usize) -> anyhow::Result<f64> {
    let store = consumer::store::open(url, &consumer::store::StoreOptions::default()).await?;
    let channels = ["alpha", "beta", "gamma", "delta", "epsilon"];
    let mut took = Duration::ZERO;
    let mut written = 0;
    while written < n {
        let count = 10_000.min(n - written);
        let encoded = consumer::store::encode(events::twitch_messages(&channels, count));
        let batch = consumer::store::new_events(&encoded);
        let started = Instant::now();
        for chunk in batch.chunks(batch_size) {
            let outcome = store.write_batch(chunk).await?;
            anyhow::ensure!(outcome.stored.len() == chunk.len(), "every event stored");
        }
        took += started.elapsed();
        written += count;
    }
    store.close().await;
    Ok(n as f64 / took.as_secs_f64())
}

/// Deletes the bench's topology, the consumer's queue and its commit
/// announcements' exchange.
async fn delete_bus_objects(conn: &lapin::Connection, topology: &Topology, queue: &str) {
    let commits = consumer::commit_signal::exchange_for(queue);
    rabbit::delete_consumer_objects(conn, topology, queue, &commits).await;
}

/// Rows in `events` of `db`, and the database's size in bytes.
pub(crate) async fn count_and_size(db: &StoreDb) -> anyhow::Result<(i64, u64)> {
    match db {
        StoreDb::Sqlite(dir) => {
            let pool = sqlx::SqlitePool::connect(&db.url()).await?;
            let n = sqlx::query_scalar("SELECT COUNT(*) FROM events")
                .fetch_one(&pool)
                .await?;
            pool.close().await;
            let size = std::fs::read_dir(dir.path())?
                .filter_map(|e| e.ok()?.metadata().ok())
                .map(|m| m.len())
                .sum();
            Ok((n, size))
        }
        StoreDb::Postgres(pg) => {
            let pool = sqlx::PgPool::connect(&pg.url).await?;
            let n = sqlx::query_scalar("SELECT COUNT(*) FROM events")
                .fetch_one(&pool)
                .await?;
            let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
                .fetch_one(&pool)
                .await?;
            pool.close().await;
            Ok((n, u64::try_from(size).unwrap_or(0)))
        }
    }
}

async fn store(
    n: usize,
    batch_size: usize,
    prefetch: u16,
    alone: bool,
    postgres: bool,
) -> anyhow::Result<()> {
    {
        let db = StoreDb::new(postgres).await;
        let rate = store_alone(&db.url(), n, batch_size).await;
        db.finish().await;
        let rate = rate?;
        println!(
            "store alone ({}, write_batch, {batch_size} per transaction, no broker): {rate:.0} events/s",
            if postgres { "PostgreSQL" } else { "SQLite" }
        );
        if alone {
            return Ok(());
        }
    }
    let topology = test_topology("bench-store");
    let queue = unique("bench-store-q");
    rabbit::declare_consumer_queue(&topology, &queue).await;
    // The same messages also go to a second queue, drained by a bare
    // amqplib consumer first: the broker's delivery ceiling, measured by
    // code that is not under test.
    let ceiling_queue = unique("bench-store-ceiling-q");
    rabbit::declare_consumer_queue(&topology, &ceiling_queue).await;
    let db = StoreDb::new(postgres).await;
    let db_url = db.url();

    let conn = rabbit::connect("chatbus-bench-publisher").await;
    let publisher = Publisher::open(&conn, &topology, "chatbus-bench").await?;
    let channels = ["alpha", "beta", "gamma", "delta", "epsilon"];
    let started = Instant::now();
    let mut bytes = 0usize;
    for chunk in 0..n.div_ceil(10_000) {
        let count = 10_000.min(n - chunk * 10_000);
        let messages: Vec<_> = events::twitch_messages(&channels, count)
            .iter()
            .map(OutgoingMessage::from_event)
            .collect::<Result<_, _>>()?;
        bytes += messages.iter().map(|m| m.body.len()).sum::<usize>();
        publisher.publish_all(&messages, 1024).await?;
    }
    let publish = started.elapsed();
    println!(
        "pre-loaded {n} events ({:.0} bytes each) in {:.1} s ({:.0} events/s confirmed)",
        bytes as f64 / n as f64,
        publish.as_secs_f64(),
        n as f64 / publish.as_secs_f64()
    );

    let ceiling =
        testkit::ceiling::consume(&rabbit::amqp_url(), &ceiling_queue, n, prefetch, batch_size)
            .await;
    println!(
        "delivery ceiling (bare amqplib consumer, prefetch {prefetch}, one ack per {batch_size}): {:.0} events/s, {:.1} µs CPU per event",
        ceiling.rate, ceiling.cpu_us_per_message
    );
    {
        let ch = conn.create_channel().await?;
        ch.queue_delete(ceiling_queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }

    let config = consumer::Config {
        consumer_http_addr: "127.0.0.1:0".into(),
        amqp_url: rabbit::amqp_url(),
        database_url: db_url.clone(),
        consumer_queue: queue.clone(),
        consumer_batch_size: batch_size,
        consumer_prefetch: prefetch,
        consumer_ws_send_queue: batch_size.max(1024),
        rust_log: "warn".into(),
        ..consumer::Config::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let shutdown = CancellationToken::new();
    let metrics = common::telemetry::metrics_handle();
    let started = Instant::now();
    let task = tokio::spawn(consumer::run_with_topology(
        config,
        topology.clone(),
        listener,
        shutdown.clone(),
    ));
    let mut last_report = Instant::now();
    loop {
        let text = metrics.render();
        let acked = testkit::metrics::sample_sum(&text, "chatbus_consumer_acked_total") as usize;
        if acked >= n {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            println!(
                "  {acked} acked after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
        if task.is_finished() {
            bail!("the consumer stopped early: {:?}", task.await);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let took = started.elapsed();
    let text = metrics.render();
    shutdown.cancel();
    task.await??;

    let (stored, size) = count_and_size(&db).await?;
    let kind = db.kind();
    db.finish().await;
    if stored != n as i64 {
        bail!("stored {stored}, expected {n}");
    }
    let batches = testkit::metrics::sample_sum(&text, "chatbus_consumer_batch_events_count");
    let commit_sum = testkit::metrics::sample_sum(&text, "chatbus_consumer_commit_seconds_sum");
    let rate = n as f64 / took.as_secs_f64();
    println!(
        "store ({kind}): {n} events committed and acked in {:.2} s = {:.0} events/s, {:.0} % of the delivery ceiling \
         ({batches:.0} batches, {:.1} events and {:.1} ms per commit on average; \
         database {:.0} MB)",
        took.as_secs_f64(),
        rate,
        100.0 * rate / ceiling.rate,
        n as f64 / batches.max(1.0),
        1000.0 * commit_sum / batches.max(1.0),
        size as f64 / 1e6
    );
    publisher.close().await;
    common::amqp::close(&conn, "bench over").await;
    Ok(())
}

/// Resident set size of `pid`, bytes.
fn rss(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("VmRSS")?;
    Ok(kb * 1024)
}

fn now_micros() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros(),
    )
    .unwrap_or(0)
}

/// Bytes a tungstenite bench client reads per call. Its default (128 KiB,
/// zeroed before every read) would make the clients, not the server, the
/// bottleneck.
const CLIENT_READ_BUFFER: usize = 4 * 1024;

/// What precedes the publish time (µs since the epoch) in a frame.
const SENT_AT: &[u8] = b"\"text\":\"bench ";

/// What one client saw.
#[derive(Default)]
struct ClientResult {
    latencies_us: Vec<u32>,
    closed: Option<u16>,
}

impl ClientResult {
    /// Records the latency of the event in `frame`, if it is one.
    fn record(&mut self, sent_at: &memchr::memmem::Finder<'_>, frame: &[u8]) {
        let now = now_micros();
        if let Some(at) = sent_at.find(frame)
            && let Some(sent) = frame[at + SENT_AT.len()..]
                .split(|b| *b == b' ')
                .next()
                .and_then(|v| std::str::from_utf8(v).ok()?.parse::<u64>().ok())
        {
            let us = now.saturating_sub(sent);
            self.latencies_us
                .push(u32::try_from(us).unwrap_or(u32::MAX));
        }
    }
}

/// Which WebSocket client the fan-out benchmark runs.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ClientKind {
    /// `raw_client`: parses frames in place; the default, as it leaves
    /// the shared cores to the consumer.
    Raw,
    /// tokio-tungstenite, as the benchmark used before.
    Tungstenite,
}

/// One connected, subscribed bench client.
enum BenchClient {
    Raw(raw_client::RawClient),
    Tungstenite(
        Box<
            tokio_tungstenite::WebSocketStream<
                tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
            >,
        >,
    ),
}

impl BenchClient {
    /// Connects and waits for the welcome and subscribed frames.
    async fn connect(kind: ClientKind, addr: &str, path: &str) -> anyhow::Result<Self> {
        match kind {
            ClientKind::Raw => {
                let mut client = raw_client::RawClient::connect(addr, path).await?;
                let deadline = tokio::time::sleep(Duration::from_secs(30));
                tokio::pin!(deadline);
                let mut frames = 0;
                match client
                    .read_texts(&mut deadline, |_| {
                        frames += 1;
                        frames < 2
                    })
                    .await?
                {
                    raw_client::Ended::Done => Ok(Self::Raw(client)),
                    _ => bail!("closed before it was subscribed"),
                }
            }
            ClientKind::Tungstenite => {
                // See CLIENT_READ_BUFFER.
                let config = WebSocketConfig::default().read_buffer_size(CLIENT_READ_BUFFER);
                let url = format!("ws://{addr}{path}");
                let (mut ws, _) =
                    tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
                for _ in 0..2 {
                    ws.next().await.context("closed early")??;
                }
                Ok(Self::Tungstenite(Box::new(ws)))
            }
        }
    }

    /// Reads until `expected` events came, the server closed or `limit`
    /// passed.
    async fn receive(self, expected: usize, limit: Duration) -> ClientResult {
        // Built once per client: a search set up per frame cost the
        // clients more than the scan itself.
        let sent_at = memchr::memmem::Finder::new(SENT_AT);
        let mut result = ClientResult {
            latencies_us: Vec::with_capacity(expected),
            closed: None,
        };
        // One timer for the whole run: a timeout per read would put a
        // million timer-wheel inserts a second on the shared cores.
        let deadline = tokio::time::sleep(limit);
        tokio::pin!(deadline);
        match self {
            Self::Raw(mut client) => {
                let ended = client
                    .read_texts(&mut deadline, |frame| {
                        result.record(&sent_at, frame);
                        result.latencies_us.len() < expected
                    })
                    .await;
                if let Ok(raw_client::Ended::Closed(code)) = ended {
                    result.closed = Some(code);
                }
            }
            Self::Tungstenite(mut ws) => {
                while result.latencies_us.len() < expected {
                    let msg = tokio::select! {
                        biased;
                        next = ws.next() => match next {
                            Some(Ok(msg)) => msg,
                            Some(Err(_)) | None => break,
                        },
                        () = &mut deadline => break,
                    };
                    match msg {
                        Message::Text(text) => result.record(&sent_at, text.as_bytes()),
                        Message::Close(frame) => {
                            result.closed = Some(frame.map_or(1005, |f| u16::from(f.code)));
                            break;
                        }
                        _ => {}
                    }
                }
                let _ = ws.close(None).await;
            }
        }
        result
    }
}

async fn fanout(
    clients: usize,
    rate: u32,
    seconds: u64,
    batch_wait: &str,
    client: ClientKind,
) -> anyhow::Result<()> {
    let exchange = unique("bench-fanout");
    let topology = Topology::named(&exchange);
    let queue = unique("bench-fanout-q");
    rabbit::declare_consumer_queue(&topology, &queue).await;
    let dir = tempfile::tempdir()?;
    let db_url = format!("sqlite://{}", dir.path().join("fanout.sqlite").display());

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_consumer"));
    cmd.env_clear()
        .current_dir(dir.path())
        .env("AMQP_URL", rabbit::amqp_url())
        .env("CHAT_EXCHANGE", &exchange)
        .env("CONSUMER_QUEUE", &queue)
        .env("DATABASE_URL", &db_url)
        .env("CONSUMER_HTTP_ADDR", "127.0.0.1:0")
        .env("CONSUMER_BATCH_WAIT", batch_wait)
        .env("RUST_LOG", "warn,consumer=info");
    allow_connections(&mut cmd, clients);
    let mut consumer = ServiceProcess::spawn(cmd, "consumer listening", Echo::Print("consumer"))?;
    let pid = consumer.id();
    let addr = consumer.addr.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss(pid)?;

    // Connect every client (in waves) and wait for each to be subscribed.
    let path = "/ws?sub=b&patterns=chat.twitch.bench";
    let expected = (u64::from(rate) * seconds) as usize;
    let connect_started = Instant::now();
    let mut sockets = Vec::with_capacity(clients);
    for wave in 0..clients.div_ceil(250) {
        let count = 250.min(clients - wave * 250);
        let batch = futures::future::join_all(
            (0..count).map(|_| BenchClient::connect(client, &addr, path)),
        )
        .await;
        for socket in batch {
            sockets.push(socket?);
        }
    }
    println!(
        "{clients} {client:?} clients connected and subscribed in {:.1} s",
        connect_started.elapsed().as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after = rss(pid)?;

    let readers: Vec<_> = sockets
        .into_iter()
        .map(|socket| tokio::spawn(socket.receive(expected, Duration::from_secs(seconds + 30))))
        .collect();

    let conn = rabbit::connect("chatbus-bench-publisher").await;
    let publisher = Arc::new(Publisher::open(&conn, &topology, "chatbus-bench").await?);
    let cpu_before = testkit::metrics::process_stats(pid).1;
    let own_cpu_before = testkit::metrics::process_stats(std::process::id()).1;
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut confirms = futures::stream::FuturesUnordered::new();
    for _ in 0..expected {
        tick.tick().await;
        let mut event = events::message("twitch", "bench", 0);
        event.text = Some(format!(
            "bench {} héllo 👋 this is a chat line",
            now_micros()
        ));
        let message = OutgoingMessage::from_event(&event)?;
        confirms.push(publisher.send(&message).await?.wait());
        while let Some(Some(r)) = futures::FutureExt::now_or_never(confirms.next()) {
            r?;
        }
    }
    while let Some(r) = confirms.next().await {
        r?;
    }
    let publishing = started.elapsed();
    let mut results = Vec::with_capacity(clients);
    for reader in readers {
        results.push(reader.await?);
    }
    let window = started.elapsed();
    let cpu = testkit::metrics::process_stats(pid).1 - cpu_before;
    let own_cpu = testkit::metrics::process_stats(std::process::id()).1 - own_cpu_before;
    let rss_end = rss(pid)?;

    let delivered: usize = results.iter().map(|r| r.latencies_us.len()).sum();
    let lagged = results.iter().filter(|r| r.closed == Some(4000)).count();
    let short = results
        .iter()
        .filter(|r| r.latencies_us.len() < expected)
        .count();
    let mut all: Vec<f64> = results
        .into_iter()
        .flat_map(|r| r.latencies_us)
        .map(|us| f64::from(us) / 1000.0)
        .collect();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| testkit::metrics::percentile(&all, p);
    println!(
        "fanout: {clients} {client:?} clients, {rate} events/s for {seconds} s ({expected} events, published in {:.1} s), CONSUMER_BATCH_WAIT={batch_wait}",
        publishing.as_secs_f64()
    );
    println!(
        "  delivered {delivered} of {} ({:.0} events/s to clients over {:.1} s)",
        expected * clients,
        delivered as f64 / window.as_secs_f64(),
        window.as_secs_f64()
    );
    println!(
        "  latency publish -> client: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
        pct(0.50),
        pct(0.90),
        pct(0.99),
        pct(0.999),
        pct(1.0)
    );
    println!("  clients that fell behind (closed 4000): {lagged}; clients missing events: {short}");
    println!(
        "  consumer RSS: {:.1} MB idle, {:.1} MB with the clients connected, {:.1} MB at the end \
         = {:.1} KB per connected client",
        rss_before as f64 / 1e6,
        rss_after as f64 / 1e6,
        rss_end as f64 / 1e6,
        (rss_after.saturating_sub(rss_before)) as f64 / clients as f64 / 1024.0
    );
    println!(
        "  CPU over {:.1} s: consumer {:.1} s ({:.0}% of one core), benchmark clients + publisher {:.1} s ({:.0}%)",
        window.as_secs_f64(),
        cpu,
        100.0 * cpu / window.as_secs_f64(),
        own_cpu,
        100.0 * own_cpu / window.as_secs_f64()
    );

    consumer.terminate(30).await?;
    delete_bus_objects(&conn, &topology, &queue).await;
    publisher.close().await;
    common::amqp::close(&conn, "bench over").await;
    Ok(())
}

/// Lets `clients` connections in, all from this one address.
fn allow_connections(cmd: &mut Command, clients: usize) {
    let total = clients.max(10_000).to_string();
    cmd.env("CONSUMER_WS_MAX_CONNECTIONS", &total)
        .env("CONSUMER_WS_MAX_PER_ADDRESS", &total);
}

/// Open file descriptors of `pid`.
fn open_files(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

async fn slow(
    clients: usize,
    n: usize,
    size: usize,
    send_queue_bytes: Option<usize>,
) -> anyhow::Result<()> {
    let exchange = unique("bench-slow");
    let topology = Topology::named(&exchange);
    let queue = unique("bench-slow-q");
    rabbit::declare_consumer_queue(&topology, &queue).await;
    let dir = tempfile::tempdir()?;
    let db_url = format!("sqlite://{}", dir.path().join("slow.sqlite").display());

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_consumer"));
    cmd.env_clear()
        .current_dir(dir.path())
        .env("AMQP_URL", rabbit::amqp_url())
        .env("CHAT_EXCHANGE", &exchange)
        .env("CONSUMER_QUEUE", &queue)
        .env("DATABASE_URL", &db_url)
        .env("CONSUMER_HTTP_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn,consumer=info");
    allow_connections(&mut cmd, clients);
    if let Some(bytes) = send_queue_bytes {
        cmd.env("CONSUMER_WS_SEND_QUEUE_BYTES", bytes.to_string());
    }
    let mut consumer = ServiceProcess::spawn(cmd, "consumer listening", Echo::Print("consumer"))?;
    let pid = consumer.id();
    let addr = consumer.addr.clone();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_idle, files_idle) = (rss(pid)?, open_files(pid));

    let path = "/ws?sub=b&patterns=chat.twitch.slow";
    let mut sockets = Vec::with_capacity(clients);
    for wave in 0..clients.div_ceil(250) {
        let count = 250.min(clients - wave * 250);
        let batch = futures::future::join_all(
            (0..count).map(|_| BenchClient::connect(ClientKind::Raw, &addr, path)),
        )
        .await;
        for socket in batch {
            sockets.push(socket?);
        }
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rss_connected, files_connected) = (rss(pid)?, open_files(pid));
    println!("{clients} clients connected and subscribed; from now on they do not read");

    // Publish as fast as the broker confirms; sample the descriptors
    // meanwhile.
    let conn = rabbit::connect("chatbus-bench-publisher").await;
    let publisher = Publisher::open(&conn, &topology, "chatbus-bench").await?;
    let text = "x".repeat(size);
    let started = Instant::now();
    let mut files_peak = files_connected;
    let mut bytes = 0;
    for chunk in 0..n.div_ceil(1000) {
        let count = 1000.min(n - chunk * 1000);
        let messages: Vec<_> = (0..count)
            .map(|i| {
                let mut event = events::message("twitch", "slow", chunk * 1000 + i);
                // "bench <µs> ": what `ClientResult::record` counts.
                event.text = Some(format!("bench {} {text}", now_micros()));
                OutgoingMessage::from_event(&event)
            })
            .collect::<Result<_, _>>()?;
        bytes += messages.iter().map(|m| m.body.len()).sum::<usize>();
        publisher.publish_all(&messages, 1024).await?;
        files_peak = files_peak.max(open_files(pid));
    }
    let published = started.elapsed();
    // Until every event is stored and published to the hub.
    let metrics_url = addr.clone();
    loop {
        files_peak = files_peak.max(open_files(pid));
        let stored =
            testkit::metrics::scrape(&metrics_url, "chatbus_consumer_live_events_total").await;
        if stored >= n as f64 {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("only {stored} of {n} events reached the hub");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let through = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    files_peak = files_peak.max(open_files(pid));
    let lagged = testkit::metrics::scrape(&metrics_url, "chatbus_consumer_ws_lagged_total").await;
    let (peak_mib, _) = testkit::metrics::process_stats(pid);
    let rss_end = rss(pid)?;

    // Now the clients read: what the socket buffers hold, then a close.
    let read_started = Instant::now();
    let readers: Vec<_> = sockets
        .into_iter()
        .map(|socket| tokio::spawn(socket.receive(n, Duration::from_secs(60))))
        .collect();
    let mut results = Vec::with_capacity(clients);
    for reader in readers {
        results.push(reader.await?);
    }
    let read_for = read_started.elapsed();
    let closed_4000 = results.iter().filter(|r| r.closed == Some(4000)).count();
    let closed_other = results
        .iter()
        .filter(|r| r.closed.is_some_and(|c| c != 4000))
        .count();
    let got_all = results.iter().filter(|r| r.latencies_us.len() == n).count();
    let mut read: Vec<usize> = results.iter().map(|r| r.latencies_us.len()).collect();
    read.sort_unstable();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (rss_after, files_after) = (rss(pid)?, open_files(pid));

    println!(
        "slow: {clients} clients that do not read, {n} events of {:.0} bytes ({:.0} MB) \
         published in {:.1} s, all through the hub after {:.1} s, \
         CONSUMER_WS_SEND_QUEUE_BYTES={}",
        bytes as f64 / n as f64,
        bytes as f64 / 1e6,
        published.as_secs_f64(),
        through.as_secs_f64(),
        send_queue_bytes.map_or_else(|| "default".to_owned(), |b| b.to_string())
    );
    println!(
        "  consumer RSS: {:.1} MB idle, {:.1} MB with the clients connected, \
         peak (VmHWM) {:.1} MB, {:.1} MB once every event was through, {:.1} MB after the clients left",
        rss_idle as f64 / 1e6,
        rss_connected as f64 / 1e6,
        peak_mib * 1.048_576,
        rss_end as f64 / 1e6,
        rss_after as f64 / 1e6
    );
    println!(
        "  consumer open files: {files_idle} idle, {files_connected} with the clients, \
         {files_peak} at most while publishing, {files_after} after the clients left"
    );
    println!(
        "  kicked as too slow (chatbus_consumer_ws_lagged_total): {lagged:.0}; \
         clients closed with 4000: {closed_4000}, with another code: {closed_other}, \
         without a close frame: {}, with every event: {got_all}",
        clients - closed_4000 - closed_other
    );
    println!(
        "  events each client read before its close: min {}, median {}, max {} \
         (read for {:.1} s)",
        read.first().copied().unwrap_or(0),
        read.get(read.len() / 2).copied().unwrap_or(0),
        read.last().copied().unwrap_or(0),
        read_for.as_secs_f64()
    );

    consumer.terminate(30).await?;
    delete_bus_objects(&conn, &topology, &queue).await;
    publisher.close().await;
    common::amqp::close(&conn, "bench over").await;
    Ok(())
}
