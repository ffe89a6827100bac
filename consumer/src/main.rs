//! `consumer`: persist chat events and serve them over HTTP/WebSocket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Persist every chat event from RabbitMQ and serve it live and as history.
#[derive(Parser, Debug)]
#[command(name = "consumer", version, about)]
struct Cli {
    /// Config file (TOML, YAML or JSON). Environment variables override it.
    #[arg(long, env = "CHATBUS_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    common::service::serve::<consumer::Config, _, _>(cli.config.as_deref(), consumer::run).await
}
