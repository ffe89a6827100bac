//! The chatbus auth-server: an OAuth2 authorization-code flow that obtains
//! platform tokens and keeps them refreshed in the token store.

pub mod config;

use common::shutdown::CancellationToken;
use tokio::net::TcpListener;
use warp::Filter;

pub use config::Config;

/// Runs the auth-server until `shutdown` is cancelled.
///
/// # Errors
/// When the listener fails.
pub async fn run(
    _config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = common::telemetry::metrics_handle();
    let routes = common::http::healthz().or(common::http::metrics(metrics));
    tracing::info!(addr = %listener.local_addr()?, "auth-server listening");
    common::http::serve(routes, listener, shutdown).await;
    Ok(())
}
