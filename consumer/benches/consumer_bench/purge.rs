//! A purge of a million rows while the consumer ingests:
//!
//! ```sh
//! cargo bench -p consumer --bench consumer_bench -- purge
//! cargo bench -p consumer --bench consumer_bench -- purge --postgres
//! ```
//!
//! Fills a fresh store with `write_batch` (batches of 1,000, nothing else
//! running) with `--rows` chat messages over 100 channels, `--subject-rows`
//! of them by one user, the subject, spread evenly among the others (who
//! are 1,000 authors); 1 % of the others' messages are replies to the
//! subject's latest message (the purge redacts them). Texts are 40–80
//! bytes of words. The store is then closed (a truncating checkpoint) and
//! reopened.
//!
//! The ingest load is what the consumer does with a steady stream: events
//! arrive at `--rate` per second; a batch closes `--batch-wait-ms` after its
//! first event arrived (or at `--batch-size` events, or at once when the
//! previous write ran late and events piled up) and is written with
//! `write_batch`, as `CONSUMER_BATCH_WAIT`/`CONSUMER_BATCH_SIZE` make the
//! consumer do (the broker is left out: it is not what a purge slows).
//! Recorded: each batch's write time, each event's latency from arrival to
//! commit, and the gaps between consecutive commits (a "stall" is a gap
//! over 300 ms).
//!
//! First `--seconds` of that load alone (the baseline), then the same load
//! while `Store::purge` removes the subject; the purge's phases come from
//! its debug log lines (`purge phase done`), so each long gap is put in
//! the phase it happened in.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use common::ChatEvent;
use common::privacy::Subject;
use common::schema::{PLATFORM_TWITCH, ReplyParent};
use consumer::store::{EventFilter, EventQuery, Store, StoreOptions};
use rand::{Rng, SeedableRng, rngs::StdRng};
use testkit::events;
use testkit::metrics::percentile;
use testkit::pg::StoreDb;
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub(crate) struct PurgeArgs {
    /// Events in the store before the purge.
    #[arg(long, default_value_t = 1_200_000)]
    rows: usize,
    /// How many of them the subject wrote (all are purged).
    #[arg(long, default_value_t = 1_000_000)]
    subject_rows: usize,
    /// Events per second ingested meanwhile.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// How long a batch waits to fill, ms (CONSUMER_BATCH_WAIT's default).
    #[arg(long, default_value_t = 20)]
    batch_wait_ms: u64,
    /// Most events in a batch (CONSUMER_BATCH_SIZE's default).
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
    /// Seconds of the baseline (ingest alone).
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// PostgreSQL (a fresh database on CHATBUS_TEST_PG_URL's server,
    /// dropped afterwards) instead of SQLite.
    #[arg(long)]
    postgres: bool,
}

const CHANNELS: usize = 100;
const AUTHORS: usize = 1_000;
const SUBJECT_ID: &str = "777777";
const SUBJECT_LOGIN: &str = "subject";
/// A gap between commits longer than this is a stall (the issue's target).
const STALL: Duration = Duration::from_millis(300);

/// Words of 2–6 letters, the texts' vocabulary.
fn word(n: usize) -> String {
    const SYLLABLES: [&str; 12] = [
        "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "ze", "pa", "do", "fi",
    ];
    let mut out = String::new();
    let mut n = n % 1728;
    for _ in 0..3 {
        out.push_str(SYLLABLES[n % 12]);
        n /= 12;
        if n == 0 {
            break;
        }
    }
    out
}

/// A chat line of 40–80 bytes.
fn text(rng: &mut StdRng, n: usize) -> String {
    let len = rng.random_range(40..=80);
    let mut t = format!("msg {n}");
    while t.len() < len {
        t.push(' ');
        t.push_str(&word(rng.random_range(0..1728)));
    }
    t.truncate(len);
    t
}

/// A message of author `a` (`None`: the subject) in channel `c`.
fn chat(rng: &mut StdRng, n: usize, c: usize, a: Option<usize>) -> ChatEvent {
    let mut e = events::message(PLATFORM_TWITCH, &format!("chan{c}"), n);
    if let Some(author) = e.author.as_mut() {
        let (id, login) = match a {
            Some(a) => (format!("{}", 1000 + a), format!("user{a}")),
            None => (SUBJECT_ID.to_owned(), SUBJECT_LOGIN.to_owned()),
        };
        author.display_name.clone_from(&login);
        author.id = id;
        author.login = login;
    }
    e.text = Some(text(rng, n));
    e
}

/// Fills the store; returns the replies that quote the subject.
async fn fill(store: &Arc<dyn Store>, args: &PurgeArgs) -> anyhow::Result<usize> {
    let mut rng = StdRng::seed_from_u64(3);
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut replies = 0;
    let mut last_subject: Option<(String, String)> = None;
    let mut written = 0;
    while written < args.rows {
        let count = 10_000.min(args.rows - written);
        let batch: Vec<ChatEvent> = (written..written + count)
            .map(|n| {
                // Evenly spread: row n is the subject's when the running
                // share crosses an integer.
                let by_subject =
                    (n + 1) * args.subject_rows / args.rows > n * args.subject_rows / args.rows;
                let c = n % CHANNELS;
                if by_subject {
                    let e = chat(&mut rng, n, c, None);
                    last_subject = Some((e.id.clone(), e.text.clone().unwrap_or_default()));
                    return e;
                }
                let a = rng.random_range(0..AUTHORS);
                let mut e = chat(&mut rng, n, c, Some(a));
                if rng.random_range(0..100) == 0
                    && let Some((id, text)) = &last_subject
                {
                    e.reply_to = Some(ReplyParent {
                        message_id: id.clone(),
                        user_id: Some(SUBJECT_ID.into()),
                        user_login: Some(SUBJECT_LOGIN.into()),
                        display_name: Some(SUBJECT_LOGIN.into()),
                        text: Some(text.clone()),
                        thread_message_id: None,
                    });
                    e.text = Some(format!("@{SUBJECT_LOGIN} {}", e.text.unwrap_or_default()));
                    replies += 1;
                }
                e
            })
            .collect();
        let encoded = consumer::store::encode(batch);
        let new = consumer::store::new_events(&encoded);
        for chunk in new.chunks(1_000) {
            let outcome = store.write_batch(chunk).await?;
            anyhow::ensure!(outcome.stored.len() == chunk.len(), "every event stored");
        }
        written += count;
        if last_report.elapsed() > Duration::from_secs(30) {
            eprintln!(
                "  filled {written} in {:.0} s",
                started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    println!(
        "filled {} events ({} by the subject, {replies} replies quoting them) over {CHANNELS} channels and {AUTHORS} other authors in {:.0} s ({:.0} events/s, write_batch of 1,000)",
        args.rows,
        args.subject_rows,
        started.elapsed().as_secs_f64(),
        args.rows as f64 / started.elapsed().as_secs_f64()
    );
    Ok(replies)
}

/// One batch written by the ingest load.
struct Batch {
    /// When its write began and ended.
    began: Instant,
    done: Instant,
    /// Its events' latencies, arrival to commit.
    latencies: Vec<Duration>,
}

/// The ingest load of the module docs until `stop`; the batches it wrote.
async fn ingest(
    store: Arc<dyn Store>,
    args: Arc<PurgeArgs>,
    seed: u64,
    stop: CancellationToken,
) -> anyhow::Result<Vec<Batch>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let every = Duration::from_secs_f64(1.0 / f64::from(args.rate));
    let wait = Duration::from_millis(args.batch_wait_ms);
    let start = Instant::now();
    let arrival = |i: usize| start + every * u32::try_from(i).unwrap_or(u32::MAX);
    let mut next = 0usize;
    let mut batches = Vec::new();
    while !stop.is_cancelled() {
        let first = arrival(next);
        let close = (first + wait).min(arrival(next + args.batch_size - 1));
        tokio::time::sleep_until(close.into()).await;
        let now = Instant::now();
        let arrived = (now.duration_since(start).as_nanos() / every.as_nanos()) as usize + 1;
        let end = arrived.min(next + args.batch_size).max(next + 1);
        let batch: Vec<ChatEvent> = (next..end)
            .map(|n| {
                let a = rng.random_range(0..AUTHORS);
                chat(&mut rng, 10_000_000 + n, n % CHANNELS, Some(a))
            })
            .collect();
        let encoded = consumer::store::encode(batch);
        let new = consumer::store::new_events(&encoded);
        let began = Instant::now();
        let outcome = store.write_batch(&new).await?;
        let done = Instant::now();
        anyhow::ensure!(outcome.stored.len() == new.len(), "every event stored");
        batches.push(Batch {
            began,
            done,
            latencies: (next..end)
                .map(|i| done.duration_since(arrival(i)))
                .collect(),
        });
        next = end;
    }
    Ok(batches)
}

/// A phase of the purge as its log lines tell (`purge phase done`).
#[derive(Debug, Clone)]
pub(crate) struct Phase {
    at: Instant,
    fields: Vec<(String, String)>,
}

impl Phase {
    fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Keeps the consumer's `purge …` debug lines, with when they came.
#[derive(Clone, Default)]
pub(crate) struct PhaseLog(Arc<Mutex<Vec<Phase>>>);

impl PhaseLog {
    fn take(&self) -> Vec<Phase> {
        std::mem::take(&mut *self.0.lock().expect("phase log"))
    }
}

struct Fields(Vec<(String, String)>);

impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.push((
            field.name().to_owned(),
            format!("{value:?}").trim_matches('"').into(),
        ));
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for PhaseLog {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if !event.metadata().target().starts_with("consumer::store") {
            return;
        }
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        let is_purge = fields
            .0
            .iter()
            .any(|(k, v)| k == "message" && v.starts_with("purge "));
        if is_purge {
            self.0.lock().expect("phase log").push(Phase {
                at: Instant::now(),
                fields: fields.0,
            });
        }
    }
}

/// Installs the log subscriber: RUST_LOG (default `warn`) to stderr, and
/// the purge's debug lines to the returned log.
pub(crate) fn init_logging() -> PhaseLog {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let log = PhaseLog::default();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(tracing_subscriber::EnvFilter::new(filter)),
        )
        // Unfiltered (it keeps only the purge's lines itself): behind a
        // per-layer filter of its own, some of them never reached it.
        .with(log.clone())
        .try_init();
    log
}

/// The index of the span of `spans` (name, from, to, steps) that overlaps
/// `from..to` most.
fn phase_of(
    spans: &[(String, Instant, Instant, String)],
    from: Instant,
    to: Instant,
) -> Option<usize> {
    spans
        .iter()
        .enumerate()
        .map(|(i, (_, a, b, _))| {
            let overlap = (*b).min(to).saturating_duration_since((*a).max(from));
            (overlap, i)
        })
        .filter(|(overlap, _)| !overlap.is_zero())
        .max()
        .map(|(_, i)| i)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The figures of the batches written between `from` and `to`.
struct Figures {
    batches: usize,
    events: usize,
    write: Vec<f64>,
    latency: Vec<f64>,
    /// The longest gaps between commits: (gap, when it ended).
    gaps: Vec<(Duration, Instant)>,
}

fn figures(batches: &[Batch], from: Instant, to: Instant) -> Figures {
    let mut f = Figures {
        batches: 0,
        events: 0,
        write: Vec::new(),
        latency: Vec::new(),
        gaps: Vec::new(),
    };
    let mut previous: Option<Instant> = None;
    for b in batches {
        let last = previous.replace(b.done);
        // A batch counts when its write overlaps the window.
        if b.done < from || b.began > to {
            continue;
        }
        f.batches += 1;
        f.events += b.latencies.len();
        f.write.push(ms(b.done.duration_since(b.began)));
        f.latency.extend(b.latencies.iter().map(|d| ms(*d)));
        if let Some(last) = last {
            f.gaps.push((b.done.duration_since(last), b.done));
        }
    }
    f.write.sort_by(f64::total_cmp);
    f.latency.sort_by(f64::total_cmp);
    f.gaps.sort_by_key(|g| std::cmp::Reverse(g.0));
    f
}

impl Figures {
    fn row(&self, name: &str) -> String {
        let longest = self.gaps.first().map_or(0.0, |g| ms(g.0));
        format!(
            "| {name} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {longest:.0} |",
            self.batches,
            self.events,
            percentile(&self.write, 0.5),
            percentile(&self.write, 0.99),
            self.write.last().copied().unwrap_or(0.0),
            percentile(&self.latency, 0.5),
            percentile(&self.latency, 0.99),
            self.latency.last().copied().unwrap_or(0.0),
        )
    }
}

pub(crate) async fn run(args: PurgeArgs, log: PhaseLog) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.subject_rows <= args.rows,
        "--subject-rows is more than --rows"
    );
    let db = StoreDb::new(args.postgres).await;
    let result = measure(&db, Arc::new(args), &log).await;
    db.finish().await;
    result
}

async fn measure(db: &StoreDb, args: Arc<PurgeArgs>, log: &PhaseLog) -> anyhow::Result<()> {
    let options = StoreOptions::default();
    let store = consumer::store::open(&db.url(), &options).await?;
    let replies = fill(&store, &args).await?;
    store.close().await;
    drop(store);
    let (rows, size) = crate::count_and_size(db).await?;
    println!(
        "{}: {rows} events, database {:.0} MB; ingest {} events/s, batches closed {} ms after their first event (at most {}), write_batch",
        db.kind(),
        size as f64 / 1e6,
        args.rate,
        args.batch_wait_ms,
        args.batch_size
    );
    let store = consumer::store::open(&db.url(), &options).await?;

    // The baseline: the load alone.
    let stop = CancellationToken::new();
    let load = tokio::spawn(ingest(store.clone(), args.clone(), 1, stop.clone()));
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    stop.cancel();
    let baseline_batches = load.await??;
    let first = baseline_batches
        .first()
        .map_or_else(Instant::now, |b| b.began);
    let baseline = figures(&baseline_batches, first, Instant::now());

    // The same load while the subject is purged.
    let stop = CancellationToken::new();
    let load = tokio::spawn(ingest(store.clone(), args.clone(), 2, stop.clone()));
    tokio::time::sleep(Duration::from_secs(2)).await;
    log.take();
    let subject = Subject::User {
        platform: PLATFORM_TWITCH.into(),
        user_id: SUBJECT_ID.into(),
    };
    let began = Instant::now();
    let report = store.purge(&subject, "bench").await;
    let ended = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let batches = load.await??;
    let report = report?;
    let phases = log.take();
    let during = figures(&batches, began, ended);

    let left = store
        .query(&EventQuery {
            filter: EventFilter {
                user: Some(SUBJECT_LOGIN.into()),
                ..EventFilter::default()
            },
            limit: 1,
            ..EventQuery::default()
        })
        .await?;
    anyhow::ensure!(left.is_empty(), "the subject still has events");
    store.close().await;

    let took = ended.duration_since(began);
    println!(
        "purge of {SUBJECT_LOGIN} ({} rows of {rows}): deleted {}, redacted {} (of {replies} replies), {} chunks, {:.1} s ({:.0} rows/s)",
        args.subject_rows,
        report.deleted,
        report.redacted,
        report.chunks,
        took.as_secs_f64(),
        report.deleted as f64 / took.as_secs_f64()
    );
    println!();
    println!(
        "| ingest | batches | events | write p50 ms | write p99 ms | write max ms | event p50 ms | event p99 ms | event max ms | longest gap between commits ms |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!("{}", baseline.row(&format!("alone ({} s)", args.seconds)));
    println!(
        "{}",
        during.row(&format!("during the purge ({:.0} s)", took.as_secs_f64()))
    );
    println!();

    // The phases, one after the other, from the purge's log lines.
    let mut spans = Vec::new();
    let mut from = began;
    for p in &phases {
        if p.get("message") == Some("purge phase done") {
            let name = p.get("phase").unwrap_or("?").to_owned();
            spans.push((name, from, p.at, p.get("steps").unwrap_or("?").to_owned()));
            from = p.at;
        }
    }
    spans.push(("audit".into(), from, ended, "1".into()));
    let slowest = phases
        .iter()
        .find(|p| p.get("message") == Some("purge slowest chunk"))
        .and_then(|p| p.get("ms"))
        .unwrap_or("?");
    println!("purge phases (from its log lines):");
    for (name, from, to, steps) in &spans {
        // A gap belongs to the phase it overlaps most.
        let in_phase: Vec<&(Duration, Instant)> = during
            .gaps
            .iter()
            .filter(|g| {
                phase_of(&spans, g.1 - g.0, g.1).is_some_and(|i| std::ptr::eq(&spans[i].0, name))
            })
            .collect();
        let longest = in_phase.first().map_or(0.0, |g| ms(g.0));
        let stalls = in_phase.iter().filter(|g| g.0 > STALL).count();
        println!(
            "  {name}: {:.1} s, {steps} steps{}; longest gap between commits {longest:.0} ms, {stalls} over {} ms",
            to.duration_since(*from).as_secs_f64(),
            if name == "delete" {
                format!(" (slowest chunk {slowest} ms)")
            } else {
                String::new()
            },
            STALL.as_millis()
        );
    }
    for p in phases
        .iter()
        .filter(|p| p.get("message") == Some("purge vacuum full done"))
    {
        println!(
            "    VACUUM (FULL) {}: {} ms",
            p.get("table").unwrap_or("?"),
            p.get("ms").unwrap_or("?")
        );
    }
    // The 30 longest, in the order they came.
    let mut stalls: Vec<&(Duration, Instant)> = during
        .gaps
        .iter()
        .filter(|g| g.0 > STALL)
        .take(30)
        .collect();
    stalls.sort_by_key(|g| g.1);
    if !stalls.is_empty() {
        println!(
            "the {} longest stalls over {} ms (s after the purge began: ms): {}",
            stalls.len(),
            STALL.as_millis(),
            stalls
                .iter()
                .map(|g| format!(
                    "{:.1}: {:.0}",
                    (g.1 - g.0).duration_since(began).as_secs_f64(),
                    ms(g.0)
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let p99_base = percentile(&baseline.write, 0.99);
    let p99 = percentile(&during.write, 0.99);
    let longest = during.gaps.first().map_or(Duration::ZERO, |g| g.0);
    println!(
        "target: write p99 within 2x the baseline ({p99:.1} ms vs {p99_base:.1} ms: {}); no stall over {} ms (longest {:.0} ms: {})",
        if p99 <= 2.0 * p99_base {
            "met"
        } else {
            "missed"
        },
        STALL.as_millis(),
        ms(longest),
        if longest <= STALL { "met" } else { "missed" }
    );
    Ok(())
}
