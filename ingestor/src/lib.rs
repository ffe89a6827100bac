//! The chatbus ingestor: joins Twitch channels over IRC, normalises every
//! event into a `ChatEvent` and publishes it to the `chat` exchange with
//! publisher confirms, through a disk-backed outbox so nothing read is lost
//! while the broker is away.
//!
//! ```text
//! twitch-irc (our transport) --> ingest (normalise, channel manager, gaps)
//!     --> outbox (spool on disk + memory cache) --> publisher (confirms) --> RabbitMQ
//! ```

pub mod admin;
pub mod channels;
pub mod config;
pub mod ingest;
pub mod outbox;
pub mod publisher;
pub mod spool;
pub mod twitch;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use common::amqp::{Backoff, ConnectOptions, Topology};
use common::shutdown::{CancellationToken, supervise};
use common::token_manager::{TokenManager, TokenManagerOptions};
use common::token_store::account_key;
use tokio::net::TcpListener;

pub use config::Config;

use crate::channels::{ChannelManager, PersistedChannels};
use crate::ingest::{Ingest, IrcStatus};
use crate::outbox::Outbox;
use crate::publisher::{BrokerStatus, PipelineOptions};
use crate::twitch::IrcJoinClient;
use crate::twitch::login::IngestorLogin;
use crate::twitch::normalise::Normaliser;
use crate::twitch::transport::{self, Backpressure, Endpoint, JoinLimiter};

/// Runs the ingestor until `shutdown` is cancelled or a task fails.
///
/// One ingestor per process: the IRC transport's endpoint is process-wide.
///
/// # Errors
/// When the spool cannot be opened, the configuration is unusable, or a
/// task fails (the others are then stopped).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = common::telemetry::metrics_handle();
    let (outbox, recovered) = Outbox::open(
        &config.spool_dir,
        config.spool_max_bytes,
        config.spool_segment_bytes,
        config.outbox_memory_events,
    )
    .with_context(|| format!("opening the spool in {}", config.spool_dir.display()))?;
    if recovered.records > 0 {
        tracing::info!(records = recovered.records, "recovered spooled events");
    }
    let outbox = Arc::new(outbox);

    let (connection_events, connection_rx) = tokio::sync::mpsc::unbounded_channel();
    let limiter = Arc::new(JoinLimiter::new(
        config.twitch_join_limit,
        config.twitch_join_window,
    ));
    let endpoint = Endpoint::parse(
        &config.twitch_irc_addr,
        config.twitch_irc_tls,
        config.irc_max_line_bytes,
    )?;
    let backpressure = Arc::new(Backpressure::new(config.ingest_max_backlog));
    transport::configure(endpoint, connection_events, limiter, backpressure.clone());

    let mut token_manager = None;
    let login = match &config.twitch_login {
        None => IngestorLogin::anonymous(),
        Some(login) => match config.oauth.twitch()? {
            Some(settings) => {
                // Only its own account: others in the store are not ours
                // to validate or refresh.
                let options = TokenManagerOptions {
                    only_account: Some(account_key(common::schema::PLATFORM_TWITCH, login)),
                    ..TokenManagerOptions::default()
                };
                let manager =
                    TokenManager::with_options(config.oauth.token_store(), settings, options);
                token_manager = Some(manager.clone());
                IngestorLogin::managed(manager, login)
            }
            None => {
                tracing::warn!(%login, "no TWITCH_CLIENT_ID: using the stored token as the auth-server keeps it fresh");
                IngestorLogin::Stored {
                    store: config.oauth.token_store(),
                    login: login.clone(),
                }
            }
        },
    };
    tracing::info!(login = login.login(), addr = %config.twitch_irc_addr, tls = config.twitch_irc_tls, "starting Twitch IRC");
    let login_handle = login.clone();
    let (messages, client) = twitch::client(login, config.twitch_channels_per_connection);
    let manager = Arc::new(ChannelManager::new(
        Box::new(IrcJoinClient(client.clone())),
        config.twitch_join_timeout,
    ));
    client.connect().await;
    // Channels from config, plus every channel wanted before a restart
    // (remembered in the spool directory; those get a restart gap). A
    // channel removed from TWITCH_CHANNELS stays joined until it is parted
    // through the admin API.
    for channel in config.initial_channels() {
        manager.join(&channel);
    }
    manager.restore(&PersistedChannels::load(&config.spool_dir));

    let broker = Arc::new(BrokerStatus::default());
    let irc = Arc::new(IrcStatus::default());
    let pipeline = PipelineOptions {
        connect: ConnectOptions::new(&config.amqp_url, "chatbus-ingestor").with_backoff(Backoff {
            initial: Duration::from_millis(200),
            max: config.amqp_reconnect_max_delay,
            max_attempts: None,
        }),
        topology: Topology::named(&config.chat_exchange),
        max_in_flight: config.publish_max_in_flight,
        confirm_timeout: config.publish_confirm_timeout,
    };

    let mut tasks = Vec::new();
    tasks.push(supervise(
        "publisher",
        shutdown.clone(),
        publisher::run(outbox.clone(), pipeline, broker.clone(), shutdown.clone()),
    ));
    let ingest = Ingest {
        normaliser: Normaliser::new(config.ingest_include_raw),
        manager: manager.clone(),
        outbox: outbox.clone(),
        irc: irc.clone(),
        login: login_handle,
        backpressure,
    };
    tasks.push(supervise(
        "ingest",
        shutdown.clone(),
        ingest.run(messages, connection_rx, shutdown.clone()),
    ));
    if let Some(tokens) = token_manager {
        let c = shutdown.clone();
        tasks.push(supervise("token-manager", shutdown.clone(), async move {
            tokens.run(c).await
        }));
    }
    {
        let (m, c) = (manager.clone(), shutdown.clone());
        tasks.push(supervise("join-watchdog", shutdown.clone(), async move {
            m.watchdog(c).await;
            Ok(())
        }));
    }
    {
        let (o, c, m, dir) = (
            outbox.clone(),
            shutdown.clone(),
            manager.clone(),
            config.spool_dir.clone(),
        );
        tasks.push(supervise("spool-sync", shutdown.clone(), async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut saved = PersistedChannels::default();
            loop {
                let stop = tokio::select! {
                    () = c.cancelled() => true,
                    _ = tick.tick() => false,
                };
                // fsyncs: off the async workers.
                let (o, m, dir) = (o.clone(), m.clone(), dir.clone());
                saved = tokio::task::spawn_blocking(move || {
                    o.sync();
                    let now = m.persisted();
                    if now == saved {
                        return saved;
                    }
                    match now.save(&dir) {
                        Ok(()) => now,
                        Err(e) => {
                            tracing::warn!(error = %e, "cannot save the channel state");
                            saved
                        }
                    }
                })
                .await?;
                if stop {
                    return Ok(());
                }
            }
        }));
    }
    let state = admin::AdminState {
        manager: manager.clone(),
        broker,
        irc,
        outbox: outbox.clone(),
        metrics,
        api_key: config.ingestor_api_key.clone(),
    };
    tracing::info!(addr = %listener.local_addr()?, "ingestor admin HTTP listening");
    {
        let c = shutdown.clone();
        tasks.push(supervise("http", shutdown.clone(), async move {
            common::http::serve(admin::routes(state), listener, c).await;
            Ok(())
        }));
    }

    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!("{e:#}");
                first_error.get_or_insert(e);
            }
            Err(join) => {
                first_error.get_or_insert(anyhow::anyhow!("task panicked: {join}"));
            }
        }
    }
    outbox.sync();
    let stats = outbox.stats();
    tracing::info!(
        unconfirmed = stats.unconfirmed,
        spool_bytes = stats.spool_bytes,
        "ingestor stopped"
    );
    first_error.map_or(Ok(()), Err)
}
