//! A bot in a few lines: answers `!ping` with `pong` in the same channel,
//! on every platform chatbus reads, through the bus (no second Twitch
//! connection, no OAuth of its own, no rate limits to guess).
//!
//! ```sh
//! cargo run -p common --example echo_bot
//! ```
//!
//! The ingestor must take commands for the platforms (`COMMANDS_ALLOW`,
//! docs/commands.md); each answer's receipt is printed.

use clap::Parser;
use common::amqp::commands::CommandClient;
use common::amqp::{self, ConnectOptions, Subscriber, Topology};
use common::command::ReceiptStatus;
use common::shutdown::{CancellationToken, cancel_on_signal};

#[derive(Parser, Debug, Clone)]
#[command(about = "Answer !ping with pong on every platform")]
pub(crate) struct Args {
    /// Broker URL.
    #[arg(
        long,
        env = "AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    pub(crate) amqp_url: String,
    /// The chat exchange.
    #[arg(long, env = "CHAT_EXCHANGE", default_value = "chat")]
    pub(crate) exchange: String,
    /// The command exchange.
    #[arg(long, env = "COMMANDS_EXCHANGE", default_value = "chat.commands")]
    pub(crate) commands_exchange: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    cancel_on_signal(cancel.clone())?;
    run(Args::parse(), cancel).await
}

/// Answers `!ping` until `cancel`.
pub(crate) async fn run(args: Args, cancel: CancellationToken) -> anyhow::Result<()> {
    let conn = amqp::connect(&ConnectOptions::new(&args.amqp_url, "echo-bot"), &cancel).await?;
    let commands = CommandClient::open(&conn, &args.commands_exchange, "echo-bot").await?;
    let mut chat = Subscriber::builder("")
        .bind("chat.*.*")
        .exclusive(true)
        .auto_delete(true)
        .durable(false)
        .build(&conn, &Topology::named(&args.exchange))
        .await?;
    println!("echo bot ready: say !ping in any channel chatbus reads");
    loop {
        let delivery = tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            d = chat.next() => match d { Some(d) => d?, None => return Ok(()) },
        };
        delivery.ack().await?;
        if delivery.event.text.as_deref().map(str::trim) != Some("!ping") {
            continue;
        }
        // Each answer waits for its receipt on its own task.
        let (commands, event) = (commands.clone(), delivery.event);
        tokio::spawn(async move {
            let mut receipt = commands.reply(&event, "pong").await?;
            // Twitch drops a text the account sent in the channel within
            // 30 s (`msg_duplicate`): vary it once rather than retry as is.
            if receipt.status == ReceiptStatus::Dropped
                && receipt.reason.as_deref() == Some("msg_duplicate")
            {
                let text = format!("pong ({})", event.sent_at.format("%H:%M:%S"));
                receipt = commands.reply(&event, &text).await?;
            }
            println!(
                "{} #{}: {:?} {:?}",
                event.platform, event.channel, receipt.status, receipt.reason
            );
            anyhow::Ok(())
        });
    }
}
