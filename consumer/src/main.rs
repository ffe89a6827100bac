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

/// mimalloc, as the ingestor: decoding and fan-out allocate per event.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    consumer::main_with(cli.config.as_deref())
}
