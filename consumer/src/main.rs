//! `consumer`: persist chat events and serve them over HTTP/WebSocket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Persist every chat event from RabbitMQ and serve it live and as history.
#[derive(Parser, Debug)]
#[command(name = "consumer", version, about)]
struct Cli {
    /// Config file (TOML, YAML or JSON). Environment variables override it.
    #[arg(long, env = "CHATBUS_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Opt-outs and purges (docs/privacy.md), with the service's
    /// configuration, while it runs.
    Privacy {
        #[command(subcommand)]
        command: consumer::privacy::cli::Command,
    },
}

/// mimalloc, as the ingestor: decoding and fan-out allocate per event.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match &cli.command {
        None => consumer::main_with(cli.config.as_deref()),
        Some(Command::Privacy { command }) => {
            match common::service::load::<consumer::Config>(cli.config.as_deref()) {
                Ok(config) => consumer::privacy::cli::run(&config, command),
                Err(code) => code,
            }
        }
    }
}
