//! `auth-server`: OAuth2 authorization-code flow into the token store.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use common::shutdown::{CancellationToken, cancel_on_signal};

/// Obtain OAuth tokens for chat platforms and keep them refreshed in the token store.
#[derive(Parser, Debug)]
#[command(name = "auth-server", version, about)]
struct Cli {
    /// Config file (TOML, YAML or JSON). Environment variables override it.
    #[arg(long, env = "CHATBUS_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config: auth_server::Config = match common::config::load(cli.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("auth-server: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = common::telemetry::init(config.log_format, &config.rust_log) {
        eprintln!("auth-server: {e:#}");
        return ExitCode::from(2);
    }
    let shutdown = CancellationToken::new();
    if let Err(e) = cancel_on_signal(shutdown.clone()) {
        tracing::error!(error = %e, "cannot install signal handlers");
        return ExitCode::FAILURE;
    }
    let listener = match common::http::bind(&config.auth_http_addr).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    match auth_server::run(config, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("auth-server failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}
