//! REST history latency on a large table:
//!
//! ```sh
//! cargo bench -p consumer --bench consumer_bench -- history --events 5000000 --postgres
//! cargo bench -p consumer --bench consumer_bench -- history --events 5000000
//! ```
//!
//! Loads `--events` messages (spread over `--channels` channels and 1,000
//! authors, each text holding two words of a 2,000-word vocabulary) into a
//! fresh database with `write_batch`, starts the consumer in-process on it
//! (its REST API on 127.0.0.1, its queue on the local RabbitMQ, empty), and
//! times `--requests` sequential `GET /api/events` of each kind from one
//! client: the newest page, a channel's page at a random depth (`before`),
//! an author's page at a random depth, a one-word search, and a one-word
//! search in one channel. Every page asks for 100 events.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use common::schema::PLATFORM_TWITCH;
use rand::{Rng, SeedableRng, rngs::StdRng};
use testkit::events;
use testkit::metrics::percentile;
use testkit::rabbit::{self, test_topology, unique};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use testkit::pg::StoreDb;

#[derive(Args, Debug)]
pub(crate) struct HistoryArgs {
    /// Events in the table.
    #[arg(long, default_value_t = 5_000_000)]
    events: usize,
    /// Channels they are spread over.
    #[arg(long, default_value_t = 100)]
    channels: usize,
    /// Requests of each kind.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    /// PostgreSQL (a fresh database on CHATBUS_TEST_PG_URL's server,
    /// dropped afterwards) instead of SQLite.
    #[arg(long)]
    postgres: bool,
}

/// Builds one request's query string.
type QueryFn = Box<dyn Fn(&mut StdRng) -> String>;

const VOCABULARY: usize = 2_000;
const AUTHORS: usize = 1_000;

/// A pronounceable word for `n` (`n` < `VOCABULARY`): the search terms.
fn word(n: usize) -> String {
    const SYLLABLES: [&str; 16] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "qu", "bé", "do", "fi", "gu",
        "hä",
    ];
    let mut out = String::new();
    let mut n = n + VOCABULARY;
    while n > 0 {
        out.push_str(SYLLABLES[n % 16]);
        n /= 16;
    }
    out
}

async fn load(url: &str, args: &HistoryArgs) -> anyhow::Result<()> {
    let store = consumer::store::open(url, &consumer::store::StoreOptions::default()).await?;
    let channels: Vec<String> = (0..args.channels).map(|c| format!("chan{c}")).collect();
    let mut rng = StdRng::seed_from_u64(7);
    let started = Instant::now();
    let mut written = 0;
    let mut last_report = Instant::now();
    while written < args.events {
        let count = 50_000.min(args.events - written);
        let batch: Vec<_> = (written..written + count)
            .map(|n| {
                let mut e = events::message(PLATFORM_TWITCH, &channels[n % channels.len()], n);
                let author = rng.random_range(0..AUTHORS);
                if let Some(a) = e.author.as_mut() {
                    a.login = format!("user{author}");
                    a.id = format!("{}", 1000 + author);
                }
                e.text = Some(format!(
                    "message {n} {} {}",
                    word(rng.random_range(0..VOCABULARY)),
                    word(rng.random_range(0..VOCABULARY))
                ));
                e
            })
            .collect();
        let encoded = consumer::store::encode(batch);
        let new = consumer::store::new_events(&encoded);
        for chunk in new.chunks(5_000) {
            store.write_batch(chunk).await?;
        }
        written += count;
        if last_report.elapsed() > Duration::from_secs(30) {
            println!(
                "  loaded {written} in {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    store.close().await;
    println!(
        "loaded {} events in {:.0} s ({:.0} events/s, write_batch of 5,000)",
        args.events,
        started.elapsed().as_secs_f64(),
        args.events as f64 / started.elapsed().as_secs_f64()
    );
    Ok(())
}

pub(crate) async fn run(args: HistoryArgs) -> anyhow::Result<()> {
    let db = StoreDb::new(args.postgres).await;
    let result = measure(&db, &args).await;
    db.finish().await;
    result
}

async fn measure(db: &StoreDb, args: &HistoryArgs) -> anyhow::Result<()> {
    load(&db.url(), args).await?;
    let (rows, size) = crate::count_and_size(db).await?;
    println!(
        "{}: {rows} events, database {:.0} MB",
        db.kind(),
        size as f64 / 1e6
    );

    let topology = test_topology("bench-history");
    let queue = unique("bench-history-q");
    let config = consumer::Config {
        consumer_http_addr: "127.0.0.1:0".into(),
        amqp_url: rabbit::amqp_url(),
        database_url: db.url(),
        consumer_queue: queue.clone(),
        rust_log: "warn".into(),
        ..consumer::Config::default()
    };
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(consumer::run_with_topology(
        config,
        topology,
        listener,
        shutdown.clone(),
    ));
    let client = reqwest::Client::new();
    let ready = Instant::now();
    loop {
        let ok = client
            .get(format!("{base}/api/events?limit=1"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        if ok {
            break;
        }
        anyhow::ensure!(
            ready.elapsed() < Duration::from_secs(60),
            "the consumer did not serve within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let head = rows as u64;
    let mut rng = StdRng::seed_from_u64(11);
    let channels = args.channels;
    let kinds: [(&str, QueryFn); 5] = [
        (
            "newest page, every channel",
            Box::new(|_| "limit=100".into()),
        ),
        (
            "a channel's page at a random depth",
            Box::new(move |r| {
                format!(
                    "channel=chan{}&before={}&limit=100",
                    r.random_range(0..channels),
                    r.random_range(1..=head)
                )
            }),
        ),
        (
            "an author's page at a random depth",
            Box::new(move |r| {
                format!(
                    "user=user{}&before={}&limit=100",
                    r.random_range(0..AUTHORS),
                    r.random_range(1..=head)
                )
            }),
        ),
        (
            "search one word",
            Box::new(|r| format!("q={}&limit=100", word(r.random_range(0..VOCABULARY)))),
        ),
        (
            "search one word in one channel",
            Box::new(move |r| {
                format!(
                    "q={}&channel=chan{}&limit=100",
                    word(r.random_range(0..VOCABULARY)),
                    r.random_range(0..channels)
                )
            }),
        ),
    ];
    println!(
        "{} sequential requests of each kind, 100 events a page (ms):",
        args.requests
    );
    println!("| query | p50 | p90 | p99 | max | events per page |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for (name, query) in &kinds {
        let mut took = Vec::with_capacity(args.requests);
        let mut returned = 0usize;
        // A few unmeasured requests first: connection and caches warm.
        for i in 0..args.requests + 20 {
            let url = format!("{base}/api/events?{}", query(&mut rng));
            let started = Instant::now();
            let response = client.get(&url).send().await?;
            let status = response.status();
            let body: serde_json::Value = response.json().await?;
            let elapsed = started.elapsed().as_secs_f64() * 1000.0;
            anyhow::ensure!(status.is_success(), "{url}: {status} {body}");
            if i >= 20 {
                took.push(elapsed);
                returned += body["events"].as_array().context("events")?.len();
            }
        }
        took.sort_by(f64::total_cmp);
        println!(
            "| {name} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0} |",
            percentile(&took, 0.5),
            percentile(&took, 0.9),
            percentile(&took, 0.99),
            took.last().copied().unwrap_or(0.0),
            returned as f64 / args.requests as f64
        );
    }
    shutdown.cancel();
    task.await??;
    Ok(())
}
