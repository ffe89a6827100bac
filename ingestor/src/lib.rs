//! The chatbus ingestor: joins platform chats, normalises every event into a
//! `ChatEvent` and publishes it to the `chat` exchange.

pub mod config;

use anyhow::Context;
use common::amqp::{self, ConnectOptions, Topology};
use common::shutdown::CancellationToken;
use tokio::net::TcpListener;
use warp::Filter;

pub use config::Config;

/// Runs the ingestor until `shutdown` is cancelled.
///
/// # Errors
/// When the broker cannot be reached or the topology cannot be declared.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = common::telemetry::metrics_handle();
    let conn = amqp::connect(
        &ConnectOptions::new(&config.amqp_url, "chatbus-ingestor"),
        &shutdown,
    )
    .await
    .context("connecting to RabbitMQ")?;
    let channel = conn.create_channel().await.context("opening a channel")?;
    Topology::named(&config.chat_exchange)
        .declare(&channel)
        .await
        .context("declaring the topology")?;
    let routes = common::http::healthz().or(common::http::metrics(metrics));
    tracing::info!(addr = %listener.local_addr()?, "ingestor listening");
    common::http::serve(routes, listener, shutdown).await;
    let _ = conn.close(200, "shutdown".into()).await;
    Ok(())
}
