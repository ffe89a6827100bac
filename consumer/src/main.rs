//! `consumer`: persist chat events and serve them over HTTP/WebSocket.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use common::shutdown::{CancellationToken, cancel_on_signal};

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
    let config: consumer::Config = match common::config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("consumer: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = common::telemetry::init(config.log_format, &config.rust_log) {
        eprintln!("consumer: {e:#}");
        return ExitCode::from(2);
    }
    let shutdown = CancellationToken::new();
    if let Err(e) = cancel_on_signal(shutdown.clone()) {
        tracing::error!(error = %e, "cannot install signal handlers");
        return ExitCode::FAILURE;
    }
    let listener = match common::http::bind(&config.consumer_http_addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    match consumer::run(config, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("consumer failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
