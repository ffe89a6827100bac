//! Publish chat events in batches with publisher confirms: the way any Rust
//! service puts events on the bus at the broker's speed.
//!
//! ```sh
//! AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f \
//!   cargo run -p common --example publish -- --channel somechannel --count 1000
//! ```
//!
//! `Publisher::send_batch` queues a whole batch on the channel before any of
//! it is written, so lapin writes many messages per socket write; the
//! returned `PendingBatch` reports each message's outcome (confirmed,
//! nacked, or not sent because the connection failed) in order. Keep a few
//! batches in flight for throughput (`Publisher::publish_batch` does), and
//! re-send what failed on a new connection (run the publishing as a
//! `common::amqp::Session` under `amqp::reconnect_loop`, as the ingestor does).

use chrono::Utc;
use clap::Parser;
use common::amqp::{self, ConnectOptions, OutgoingMessage, Publisher, Topology};
use common::schema::{ChatEvent, EventBody, MessageDetails};
use common::shutdown::CancellationToken;

#[derive(Parser, Debug)]
#[command(about = "Publish test chat events to the chatbus exchange")]
pub(crate) struct Args {
    /// Channel the events are for (routing key chat.example.<channel>).
    #[arg(long, default_value = "example")]
    pub(crate) channel: String,
    /// How many events.
    #[arg(long, default_value_t = 1000)]
    pub(crate) count: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 250)]
    pub(crate) batch: usize,
    /// Exchange to publish to.
    #[arg(long, env = "CHAT_EXCHANGE", default_value = "chat")]
    pub(crate) exchange: String,
    /// Broker URL.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub(crate) amqp_url: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let confirmed = run(&args, &mut std::io::stdout()).await?;
    anyhow::ensure!(confirmed == args.count, "only {confirmed} confirmed");
    Ok(())
}

/// Publishes `args.count` events in batches and writes a line per batch to
/// `out`; returns how many the broker confirmed.
///
/// # Errors
/// When the broker cannot be reached or the exchange cannot be declared.
pub(crate) async fn run(
    args: &Args,
    out: &mut (impl std::io::Write + Send),
) -> anyhow::Result<usize> {
    let cancel = CancellationToken::new();
    let conn = amqp::connect(
        &ConnectOptions::new(&args.amqp_url, "chatbus-example-publish"),
        &cancel,
    )
    .await?;
    let publisher = Publisher::open(&conn, &Topology::named(&args.exchange), "example").await?;
    let messages = (0..args.count)
        .map(|n| {
            let now = Utc::now();
            let mut event = ChatEvent::new(
                uuid::Uuid::new_v4().to_string(),
                "example",
                args.channel.as_str(),
                now,
                now,
                EventBody::Message(MessageDetails::default()),
            );
            event.text = Some(format!("hello {n}"));
            OutgoingMessage::from_event(&event)
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Queue one batch while the broker confirms the previous ones.
    let mut in_flight = std::collections::VecDeque::new();
    let mut confirmed = 0;
    for batch in messages.chunks(args.batch.max(1)) {
        in_flight.push_back(publisher.send_batch(batch).await);
        if in_flight.len() > 3
            && let Some(oldest) = in_flight.pop_front()
        {
            confirmed += report(oldest.wait().await, out)?;
        }
    }
    for pending in in_flight {
        confirmed += report(pending.wait().await, out)?;
    }
    publisher.close().await;
    amqp::close(&conn, "bye").await;
    Ok(confirmed)
}

/// Writes a batch's outcome; returns how many were confirmed.
fn report(
    outcomes: Vec<Result<(), amqp::AmqpError>>,
    out: &mut impl std::io::Write,
) -> std::io::Result<usize> {
    let ok = outcomes.iter().filter(|o| o.is_ok()).count();
    match outcomes.iter().find_map(|o| o.as_ref().err()) {
        None => writeln!(out, "batch of {}: all confirmed", outcomes.len())?,
        Some(e) => writeln!(
            out,
            "batch of {}: {ok} confirmed, first failure: {e}",
            outcomes.len()
        )?,
    }
    Ok(ok)
}
