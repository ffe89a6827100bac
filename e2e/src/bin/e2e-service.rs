//! `e2e-service ingestor|consumer`: what the real binaries' `main` does
//! (config from the environment and `.env`, logging, signals, bind, run)
//! for the process-level tests and the benchmark.

use std::process::ExitCode;

use common::shutdown::{CancellationToken, cancel_on_signal};

#[tokio::main]
async fn main() -> ExitCode {
    let role = std::env::args().nth(1).unwrap_or_default();
    let shutdown = CancellationToken::new();
    if let Err(e) = cancel_on_signal(shutdown.clone()) {
        eprintln!("e2e-service: {e}");
        return ExitCode::FAILURE;
    }
    let result = match role.as_str() {
        "ingestor" => {
            let config: ingestor::Config = match common::config::load(None) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            let _ = common::telemetry::init(config.log_format, &config.rust_log);
            match common::http::bind(&config.ingestor_http_addr).await {
                Ok(listener) => ingestor::run(config, listener, shutdown).await,
                Err(e) => Err(e),
            }
        }
        "consumer" => {
            let config: consumer::Config = match common::config::load(None) {
                Ok(c) => c,
                Err(e) => return config_error(&e),
            };
            let _ = common::telemetry::init(config.log_format, &config.rust_log);
            match common::http::bind(&config.consumer_http_addr).await {
                Ok(listener) => consumer::run(config, listener, shutdown).await,
                Err(e) => Err(e),
            }
        }
        other => {
            eprintln!("usage: e2e-service ingestor|consumer (got `{other}`)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("e2e-service {role}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(e: &common::config::ConfigError) -> ExitCode {
    eprintln!("e2e-service: {e}");
    ExitCode::from(2)
}
