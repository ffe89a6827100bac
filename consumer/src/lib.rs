//! The chatbus consumer: persists every event from the `chat` exchange and
//! serves it live and as history.
//!
//! ```text
//! queue CONSUMER_QUEUE --[ingest]--> store (SQLite or PostgreSQL) --[live_feed]--> hub --> WebSocket sessions
//!      (shared by all instances)       |   ^                  ^
//!                                      |   '---- REST API     '-- commit announcements from other instances
//!                                      '-- retention
//! ```
//!
//! * [`ingest`]: subscribe, batch, commit, ack, dead-letter.
//! * [`store`]: the [`store::Store`] trait and its SQLite and PostgreSQL implementations.
//! * [`live_feed`] and [`hub`]: every committed event, in cursor order, to
//!   every matching live subscription, through bounded per-client queues.
//! * [`commit_signal`]: how instances sharing a store learn of each
//!   other's commits.
//! * [`ws`], [`api`], [`web`]: the HTTP surface; [`commands`]: sending
//!   and moderating from the page (`POST /api/commands`).
//! * [`retention`]: deletes by age and by count per channel.
//! * [`privacy`]: opt-outs, self-service `!optout`, purges, and their
//!   announcements; the admin API and `consumer privacy …`.
//! * [`privacy_live`]: follows the privacy stream (`PRIVACY_STREAM`): the
//!   opt-out list ([`common::amqp::privacy::PrivacyFeed`]) and each purge
//!   or opt-out sent to the live clients, which remove what it covers.

pub mod api;
pub mod commands;
pub mod commit_signal;
pub mod config;
pub mod hub;
pub mod ingest;
pub mod live_feed;
pub mod privacy;
pub mod privacy_live;
pub mod retention;
pub mod selector;
pub mod store;
pub mod web;
pub mod ws;

use std::sync::Arc;

use anyhow::Context;
use common::amqp::{CommandTopology, Topology};
use common::shutdown::{CancellationToken, supervise};
use tokio::net::TcpListener;
use warp::Filter;

pub use config::Config;

use crate::hub::Hub;
use crate::live_feed::LiveFeed;
use crate::store::{RetentionPolicy, StoreOptions};
use crate::ws::{WsContext, WsSettings};

/// The whole `main` of the consumer binary: loads the configuration
/// (defaults, `file`, the environment), installs logging, and runs on a
/// multi-threaded runtime until a signal. Exit code 0 on a clean stop, 1 on
/// failure, 2 for bad configuration or a permanent error.
pub fn main_with(file: Option<&std::path::Path>) -> std::process::ExitCode {
    let config = match common::service::load::<Config>(file) {
        Ok(config) => config,
        Err(code) => return code,
    };
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(common::service::run(config, run)),
        Err(e) => {
            eprintln!("consumer: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Runs the consumer until `shutdown` is cancelled: opens the store, starts
/// ingest (which connects to RabbitMQ in the background, retrying), the live
/// feed and retention, and serves HTTP on `listener`.
///
/// # Errors
/// When the store cannot be opened, or a task fails.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let topology = Topology {
        // Several broker addresses: a cluster (see `ingest`).
        replicated: common::amqp::ConnectOptions::new(&config.amqp_url, "")
            .urls()
            .len()
            > 1,
        ..Topology::named(&config.chat_exchange)
    };
    run_with_topology(config, topology, listener, shutdown).await
}

/// [`run`] with an explicit exchange topology instead of the one named by
/// `CHAT_EXCHANGE`. Tests use it to run against their own auto-deleting
/// exchanges; the consumer's queue then also expires as the topology's
/// queues do.
///
/// # Errors
/// As [`run`].
pub async fn run_with_topology(
    config: Config,
    topology: Topology,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = common::telemetry::metrics_handle();
    let instance = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let store = store::open(
        &config.database_url,
        &StoreOptions {
            max_connections: config.database_max_connections,
            moderation_lookback: config.consumer_moderation_lookback,
            search: config.search_limits(),
        },
    )
    .await
    .context("opening the store")?;
    let hub = Hub::new();
    let (feed_handle, feed) = LiveFeed::start(
        store.clone(),
        hub.clone(),
        config.consumer_live_poll_interval,
        config.consumer_batch_size,
    )
    .await
    .context("reading the store's head")?;

    let status = Arc::new(ingest::IngestStatus::default());
    // Sending from the page: the client lives on ingest's connection. Its
    // exchanges delete themselves when the chat topology's do (tests).
    let commands = Arc::new(commands::Commands::new(CommandTopology {
        auto_delete: topology.auto_delete,
        queue_expires: topology.queue_expires,
        replicated: topology.replicated,
        ..CommandTopology::named(&config.consumer_commands_exchange)
    }));
    let command_token = config.command_token();
    if config.rabbitmq_policies {
        let mut policies = topology.policies();
        policies.push(topology.queue_policy(&config.consumer_queue));
        common::amqp::management::spawn_policies(
            &config.amqp_url,
            config.rabbitmq_management_url.as_deref(),
            policies,
            shutdown.clone(),
        );
    }
    // The privacy stream: its feed (opt-outs, purge horizons) is the
    // consumer's to honour; its purges and opt-outs go to the live clients.
    let privacy_ops = privacy::Privacy::new(
        store.clone(),
        privacy::Announce {
            amqp_url: config.amqp_url.clone(),
            stream: config.privacy_stream().map(str::to_owned),
            topology: topology.clone(),
        },
        shutdown.clone(),
    );
    let privacy = privacy_live::start(
        privacy_live::connect_options(&config.amqp_url, &instance),
        config.privacy_stream(),
        hub.clone(),
        Some(privacy_ops.clone()),
        shutdown.clone(),
    );
    let (self_service, optout_inbox, optout_attempts) =
        privacy::SelfService::new(privacy_ops.clone());
    let mut tasks = vec![
        supervise("live feed", shutdown.clone(), feed.run(shutdown.clone())),
        supervise(
            "self-service opt-out",
            shutdown.clone(),
            self_service.clone().run(optout_attempts, shutdown.clone()),
        ),
        supervise(
            "ingest",
            shutdown.clone(),
            ingest::run(
                ingest::IngestSettings {
                    amqp_url: config.amqp_url.clone(),
                    topology,
                    queue: config.consumer_queue.clone(),
                    queue_type: config.consumer_queue_type,
                    bindings: config.consumer_bindings.clone(),
                    prefetch: config.consumer_prefetch,
                    batch_size: config.consumer_batch_size,
                    batch_wait: config.consumer_batch_wait,
                    limits: ingest::EventLimits {
                        max_event_bytes: config.consumer_max_event_bytes,
                        max_text_bytes: config.consumer_max_text_bytes,
                    },
                    instance: instance.clone(),
                    commands: command_token.is_some().then(|| commands.clone()),
                    self_service: Some(optout_inbox),
                },
                store.clone(),
                feed_handle,
                status.clone(),
                shutdown.clone(),
            ),
        ),
    ];
    if let Some(task) = privacy.task {
        tasks.push(supervise("privacy stream", shutdown.clone(), task));
    }
    let policy = RetentionPolicy {
        max_age: config.consumer_retention_max_age,
        max_per_channel: config.consumer_retention_max_per_channel,
    };
    if policy.is_active() {
        tasks.push(supervise(
            "retention",
            shutdown.clone(),
            retention::run(
                store.clone(),
                policy,
                config.consumer_retention_interval,
                shutdown.clone(),
            ),
        ));
    }

    ws::admission::prepare_open_file_limit(config.consumer_ws_max_connections);
    let token = config.api_token();
    let ws = ws::route(
        Arc::new(WsContext {
            store: store.clone(),
            hub,
            settings: WsSettings {
                send_queue: config.consumer_ws_send_queue,
                send_queue_bytes: config.consumer_ws_send_queue_bytes,
                max_subscriptions: config.consumer_ws_max_subscriptions,
                max_frame_bytes: config.consumer_ws_max_frame_bytes,
                ping_interval: config.consumer_ws_ping_interval,
                write_timeout: config.consumer_ws_write_timeout,
                max_history: config.consumer_ws_max_history,
            },
            shutdown: shutdown.clone(),
            privacy: privacy.feed.clone(),
            admission: ws::admission::Admission::new(
                config.consumer_ws_max_connections,
                config.consumer_ws_max_per_address,
            ),
        }),
        token.clone(),
    );
    let readyz = warp::path!("readyz").and(warp::get()).map(move || {
        let body = status.readiness();
        let code = if body.ready {
            warp::http::StatusCode::OK
        } else {
            warp::http::StatusCode::SERVICE_UNAVAILABLE
        };
        warp::reply::with_status(warp::reply::json(&body), code)
    });
    let routes = common::http::healthz()
        .or(readyz)
        .or(common::http::metrics(metrics))
        .or(ws)
        .or(commands::routes(commands, command_token))
        .or(privacy::routes(
            privacy_ops,
            self_service,
            config.privacy_token(),
        ))
        .or(api::routes(store.clone(), token))
        .or(web::routes());
    tracing::info!(
        addr = %listener.local_addr()?,
        instance = %instance,
        queue = %config.consumer_queue,
        "consumer listening"
    );
    common::http::serve(routes, listener, shutdown.clone()).await;
    shutdown.cancel();

    let mut result = Ok(());
    for task in tasks {
        let outcome = task.await.context("a task panicked").and_then(|r| r);
        if let Err(e) = outcome
            && result.is_ok()
        {
            result = Err(e);
        }
    }
    store.close().await;
    result
}
