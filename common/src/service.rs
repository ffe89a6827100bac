//! Running a service the same way in every binary: load the configuration
//! (exit code 2 and a message naming the key when it is wrong), install
//! logging and the SIGINT/SIGTERM handler, bind the HTTP listener, run until
//! shut down, and map the outcome to an exit code (1 on failure, 2 for a
//! permanent one: bad configuration, a refused login, a topology conflict).

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::ServiceConfig;
use crate::shutdown::cancel_on_signal;
use crate::telemetry::LogFormat;

/// What the runner needs to know about a service's configuration.
pub trait ServiceSettings: ServiceConfig {
    /// The service's name, for messages (`consumer`, `ingestor` ...).
    const NAME: &'static str;
    /// Log format and filter.
    fn logging(&self) -> (LogFormat, &str);
    /// The HTTP address to listen on.
    fn http_addr(&self) -> &str;
}

/// Loads the configuration from defaults, `file` and the environment, and
/// installs logging.
///
/// # Errors
/// The exit code to return (2) after printing why, when the configuration
/// or the log filter is unusable.
pub fn load<C: ServiceSettings>(file: Option<&Path>) -> Result<C, ExitCode> {
    let config: C = crate::config::load(file).map_err(|e| {
        eprintln!("{}: {e}", C::NAME);
        ExitCode::from(2)
    })?;
    let (format, filter) = config.logging();
    crate::telemetry::init(format, filter).map_err(|e| {
        eprintln!("{}: {e:#}", C::NAME);
        ExitCode::from(2)
    })?;
    Ok(config)
}

/// Runs a loaded service: signal handler, listener on its HTTP address,
/// `run(config, listener, shutdown)`; exit code 0 on a clean shutdown, 1 on
/// failure (logged).
pub async fn run<C, F, Fut>(config: C, run: F) -> ExitCode
where
    C: ServiceSettings,
    F: FnOnce(C, TcpListener, CancellationToken) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let shutdown = CancellationToken::new();
    if let Err(e) = cancel_on_signal(shutdown.clone()) {
        tracing::error!(error = %e, "cannot install signal handlers");
        return ExitCode::FAILURE;
    }
    let listener = match crate::http::bind(config.http_addr()).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    match run(config, listener, shutdown).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if crate::amqp::is_permanent(&e) => {
            // Retrying cannot help: a person must act.
            tracing::error!("{} stopped: {e:#}", C::NAME);
            ExitCode::from(2)
        }
        Err(e) => {
            tracing::error!("{} failed: {e:#}", C::NAME);
            ExitCode::FAILURE
        }
    }
}
