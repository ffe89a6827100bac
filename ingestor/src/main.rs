//! `ingestor`: platform chat to the `chat` exchange.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Join platform chats and publish every event to RabbitMQ.
#[derive(Parser, Debug)]
#[command(name = "ingestor", version, about)]
struct Cli {
    /// Config file (TOML, YAML or JSON). Environment variables override it.
    #[arg(long, env = "CHATBUS_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    common::service::serve::<ingestor::Config, _, _>(cli.config.as_deref(), ingestor::run).await
}
