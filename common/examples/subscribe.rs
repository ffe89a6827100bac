//! Subscribe to chat events and print them: the smallest useful consumer of
//! the chatbus toolkit.
//!
//! ```sh
//! AMQP_URL=amqp://guest:guest@127.0.0.1:5672/%2f \
//!   cargo run -p common --example subscribe -- --bind 'chat.twitch.*'
//! ```
//!
//! It declares a temporary queue (deleted when it exits), binds it to the
//! patterns, prints one line per event and acks it.

use clap::Parser;
use common::amqp::{self, ConnectOptions, Subscriber, Topology};
use common::shutdown::{CancellationToken, cancel_on_signal};

#[derive(Parser, Debug)]
#[command(about = "Print chat events from the chatbus exchange")]
pub(crate) struct Args {
    /// Binding pattern (repeatable): chat.twitch.*, chat.*.somechannel, chat.#
    #[arg(long = "bind", default_value = "chat.twitch.*")]
    pub(crate) bindings: Vec<String>,
    /// Exchange to bind to.
    #[arg(long, env = "CHAT_EXCHANGE", default_value = "chat")]
    pub(crate) exchange: String,
    /// Broker URL.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub(crate) amqp_url: String,
    /// Exit after this many events.
    #[arg(long)]
    pub(crate) max: Option<usize>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone())?;
    run(args, &mut std::io::stdout(), cancel).await
}

/// Subscribes as `args` say and writes one line per event to `out` until
/// `cancel` (or `args.max` events).
///
/// # Errors
/// When the broker cannot be reached or the subscription fails.
pub(crate) async fn run(
    args: Args,
    out: &mut (impl std::io::Write + Send),
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let conn = amqp::connect(
        &ConnectOptions::new(&args.amqp_url, "chatbus-example-subscribe"),
        &cancel,
    )
    .await?;
    let mut sub = Subscriber::builder("")
        .bind_all(&args.bindings)
        .durable(false)
        .exclusive(true)
        .auto_delete(true)
        .prefetch(100)
        .build(&conn, &Topology::named(&args.exchange))
        .await?;
    writeln!(
        out,
        "subscribed to {} on exchange {} (queue {})",
        args.bindings.join(", "),
        args.exchange,
        sub.queue()
    )?;
    out.flush()?;

    let mut printed = 0;
    loop {
        let delivery = tokio::select! {
            () = cancel.cancelled() => break,
            d = sub.next() => match d {
                Some(d) => d?,
                None => break,
            },
        };
        let e = &delivery.event;
        let who = e.author.as_ref().map_or("-", |a| a.display_name.as_str());
        writeln!(
            out,
            "{} {} {}: {}",
            delivery.routing_key,
            e.kind(),
            who,
            e.text.as_deref().unwrap_or("")
        )?;
        out.flush()?;
        delivery.ack().await?;
        printed += 1;
        if args.max.is_some_and(|max| printed >= max) {
            break;
        }
    }
    sub.close().await;
    amqp::close(&conn, "bye").await;
    Ok(())
}
